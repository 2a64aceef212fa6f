"""Training speed of the paper's network on this machine, with and without oneDNN.

Each configuration runs in a fresh process (TF_ENABLE_ONEDNN_OPTS is read when TensorFlow
loads) and times one epoch of model.fit over random chunks after a warm-up epoch.

    .venv/bin/python benchmarks/train_throughput.py [--input-sizes 128,256] [--images 100]
"""

import argparse
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import sys, time, numpy as np
sys.path.insert(0, {repo!r})
import keras
from model.network import PAPER_WIDTHS, build_network
s, n = {size}, {images}
net = build_network(s, PAPER_WIDTHS, seed=0)
net.compile(optimizer="adam", loss="binary_crossentropy")
x = np.random.default_rng(0).random((n, s, s, 1)).astype("float32"); y = (np.arange(n) % 2).astype("float32")
net.fit(x[:50], y[:50], batch_size=25, epochs=1, verbose=0)
t = time.monotonic(); net.fit(x, y, batch_size=25, epochs=1, verbose=0); seconds = time.monotonic() - t
print(n / seconds)
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input-sizes", default="128,256")
    parser.add_argument("--images", type=int, default=100)
    args = parser.parse_args()
    print(f"{'input px':>8} {'oneDNN':>6} {'images/s':>9}")
    for size in (int(s) for s in args.input_sizes.split(",")):
        for onednn in ("1", "0"):
            env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=onednn, TF_CPP_MIN_LOG_LEVEL="3")
            out = subprocess.run([sys.executable, "-c", CHILD.format(repo=REPO, size=size, images=args.images)], env=env, check=True, capture_output=True, text=True).stdout
            print(f"{size:>8} {'on' if onednn == '1' else 'off':>6} {float(out.strip().splitlines()[-1]):9.1f}")


if __name__ == "__main__":
    main()

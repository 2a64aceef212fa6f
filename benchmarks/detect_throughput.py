"""Detection speed and memory against raster size.

Runs the worker's detect on synthetic HiRISE-like scenes of growing size, each in a fresh
process, and prints wall time, chunks per second (network and overall) and peak resident
memory. Flat memory means the peak stays put while the raster grows.

    .venv/bin/python benchmarks/detect_throughput.py [--model FILE] [--sizes 2048x2048,4096x4096,8192x8192]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {repo!r})
from model.inference import DetectOptions, detect
t = time.monotonic()
d = detect({raster!r}, {model!r}, DetectOptions(batch_size={batch}))
wall = time.monotonic() - t
print(json.dumps({{"chunks": d.summary["chunks"], "wall_s": wall, "network_chunks_per_s": d.summary["chunks_per_s"],
                  "device": d.summary["device"], "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="")
    parser.add_argument("--sizes", default="2048x2048,4096x4096,8192x8192")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    print(f"{'raster':>12} {'MPix':>6} {'chunks':>6} {'wall s':>7} {'chunks/s':>8} {'network chunks/s':>16} {'peak RSS MB':>11}  device")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            width, height = (int(v) for v in size.split("x"))
            raster = os.path.join(tmp, f"scene_{size}.tif")
            subprocess.run([sys.executable, "-m", "model", "sample-scene", raster, "--width", str(width), "--height", str(height)], cwd=REPO, env=env, check=True, capture_output=True)
            code = CHILD.format(repo=REPO, raster=raster, model=args.model, batch=args.batch_size)
            out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True, capture_output=True, text=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            print(f"{size:>12} {width * height / 1e6:6.1f} {row['chunks']:6d} {row['wall_s']:7.1f} {row['chunks'] / row['wall_s']:8.2f} {row['network_chunks_per_s']:16.2f} {row['peak_rss_mb']:11.0f}  {row['device']}")
            os.remove(raster)


if __name__ == "__main__":
    main()

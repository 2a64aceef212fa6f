"""The network's inference on this CPU: Keras/TensorFlow options against ONNX Runtime and OpenVINO (issue 10, item 3).

The same real chunks (HiRISE browse crops from ../shared/data, at the model's input size and
normalised as detect does) go through each configuration in a fresh process, since thread and
oneDNN settings hold for a whole process: Keras's predict_on_batch at batch sizes 1-64, under
XLA (jit_compile), with fewer threads and with oneDNN off; the logit network exported to ONNX
(Keras 3's model.export, format "onnx") under ONNX Runtime and OpenVINO (float32, and OpenVINO's
own default precision, bfloat16 on CPUs that have it), exported and checked by model/runtime.py;
one row scores through model.runtime.logit_scorer, as detect does. Each row gives chunks/s (best of the
repeats, after one untimed warm-up batch) and how far its calibrated probabilities lie from
Keras's at batch 16 on the same chunks.

On a machine others are using, the load changes from one process to the next; --paired instead
runs Keras, ONNX Runtime (as detect runs it) and OpenVINO float32 in one process at batch 16,
taking turns pass by pass, so all three see the same load.

    nice -n 19 .venv/bin/python benchmarks/runtimes.py [--model FILE] [--chunks 128] [--repeats 2] [--paired] [--json FILE]
"""

import argparse
import glob
import importlib.util
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from model import calibration, modelfile  # noqa: E402
from model.preprocess import network_input, resize  # noqa: E402

TERRAIN_TILES = os.path.join(REPO, "..", "shared", "data", "hirise-terrain", "tiles", "*.jpg")
MATCH = 1e-4  # the largest probability difference from Keras a runtime may have to be used

EXPORT_CHILD = r"""
import sys
sys.path.insert(0, {repo!r})
from model import modelfile, runtime
from model.network import logit_model
record = runtime.exported_onnx(runtime.KerasScorer(logit_model(modelfile.load({model!r})[0])))
assert record["matches"], record
"""

RUN_CHILD = r"""
import json, sys, time
sys.path.insert(0, {repo!r})
import numpy as np
config = json.loads(sys.argv[1])
images = np.load(config["chunks"])[..., None]
batch = config["batch"]
batches = [images[i : i + batch] for i in range(0, len(images), batch)]
runtime, threads = config["runtime"], config.get("threads", 0)
if runtime == "keras":
    import tensorflow as tf
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    from model import modelfile
    from model.network import logit_model
    scorer = logit_model(modelfile.load(config["model"])[0])
    if config.get("xla"):
        compiled = tf.function(lambda x: scorer(x, training=False), jit_compile=True)
        run = lambda x: compiled(x).numpy()
    else:
        run = scorer.predict_on_batch
elif runtime == "detect":
    from model import modelfile, runtime as chosen
    run = chosen.logit_scorer(modelfile.load(config["model"])[0])
    assert run.name == "ONNX Runtime", run.note
elif runtime == "onnxruntime":
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(config["onnx"], options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    run = lambda x: session.run(None, {{name: x}})[0]
else:
    import openvino
    properties = {{"INFERENCE_NUM_THREADS": threads}} if threads else {{}}
    if config.get("precision"):
        properties["INFERENCE_PRECISION_HINT"] = config["precision"]
    compiled = openvino.Core().compile_model(config["onnx"], "CPU", properties)
    request = compiled.create_infer_request()
    run = lambda x: request.infer([x])[0]
run(batches[0])  # building graphs and kernels is start-up, not speed
best = 0.0
for _ in range(config["repeats"]):
    t = time.monotonic()
    logits = np.concatenate([np.asarray(run(b), np.float64).reshape(-1) for b in batches])
    best = max(best, len(images) / (time.monotonic() - t))
print(json.dumps({{"chunks_per_s": best, "logits": logits.tolist()}}))
"""


PAIRED_CHILD = r"""
import json, sys, time
sys.path.insert(0, {repo!r})
import numpy as np
import openvino
from model import modelfile, runtime
from model.network import logit_model
config = json.loads(sys.argv[1])
images = np.load(config["chunks"])[..., None]
batches = [images[i : i + 16] for i in range(0, len(images), 16)]
network = modelfile.load(config["model"])[0]
request = openvino.Core().compile_model(config["onnx"], "CPU", {{"INFERENCE_PRECISION_HINT": "f32"}}).create_infer_request()
runs = {{"Keras": runtime.KerasScorer(logit_model(network)), "ONNX Runtime": runtime.logit_scorer(network), "OpenVINO f32": lambda x: request.infer([x])[0]}}
for run in runs.values():
    run(batches[0])
seconds = dict.fromkeys(runs, 0.0)
for _ in range(config["repeats"]):
    for name, run in runs.items():
        t = time.monotonic()
        for batch in batches:
            run(batch)
        seconds[name] += time.monotonic() - t
print(json.dumps({{name: config["repeats"] * len(images) / s for name, s in seconds.items()}}))
"""


def openvino_installed() -> bool:
    """OpenVINO is measured where it is installed (`.venv/bin/pip install openvino`); the worker does not use it."""
    return importlib.util.find_spec("openvino") is not None


def configurations():
    """(label, config) in table order; the first is the reference the others are compared with."""
    rows = [("Keras predict_on_batch, batch 16", {"runtime": "keras", "batch": 16})]
    rows += [(f"Keras predict_on_batch, batch {b}", {"runtime": "keras", "batch": b}) for b in (1, 8, 32, 64)]
    rows += [(f"Keras XLA jit_compile, batch {b}", {"runtime": "keras", "batch": b, "xla": True}) for b in (16, 64)]
    rows += [("Keras, 1 thread, batch 16", {"runtime": "keras", "batch": 16, "threads": 1})]
    rows += [("Keras, oneDNN off, batch 16", {"runtime": "keras", "batch": 16, "env": {"TF_ENABLE_ONEDNN_OPTS": "0"}})]
    rows += [(f"ONNX Runtime, batch {b}", {"runtime": "onnxruntime", "batch": b}) for b in (1, 16, 64)]
    rows += [("ONNX Runtime as detect runs it, batch 16", {"runtime": "detect", "batch": 16})]
    rows += [("ONNX Runtime, 1 thread, batch 16", {"runtime": "onnxruntime", "batch": 16, "threads": 1})]
    if openvino_installed():
        rows += [(f"OpenVINO f32, batch {b}", {"runtime": "openvino", "batch": b, "precision": "f32"}) for b in (1, 16, 64)]
        rows += [("OpenVINO f32, 1 thread, batch 16", {"runtime": "openvino", "batch": 16, "precision": "f32", "threads": 1})]
        rows += [("OpenVINO default precision, batch 16", {"runtime": "openvino", "batch": 16})]
    return rows


def real_chunks(count: int, input_size: int) -> np.ndarray:
    """(count, input_size, input_size) float32 network inputs from real HiRISE crops."""
    from osgeo import gdal

    paths = sorted(glob.glob(TERRAIN_TILES))
    if len(paths) < count:
        raise SystemExit(f"needs {count} crops in {os.path.dirname(TERRAIN_TILES)}; found {len(paths)}")
    images = []
    for path in paths[:: len(paths) // count][:count]:
        crop = gdal.Open(path).ReadAsArray().astype(np.float32)
        data = resize(crop, input_size)
        images.append(network_input(data, np.ones(data.shape, bool)))
    return np.stack(images)


def run_child(code: str, cache: str, argument: str = "", env_extra=None) -> str:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", HIRISEICE_CACHE_DIR=cache, **(env_extra or {}))
    done = subprocess.run([sys.executable, "-c", code] + ([argument] if argument else []), cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{done.stderr[-3000:]}")
    return done.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="", help="model file (default: the bundled model)")
    parser.add_argument("--chunks", type=int, default=128, help="chunks per pass, rounded up to a multiple of 64 so every batch is full")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--paired", action="store_true", help="Keras, ONNX Runtime and OpenVINO taking turns in one process, batch 16")
    parser.add_argument("--json", default=os.path.join(REPO, "build", "runtimes.json"))
    args = parser.parse_args()
    if not openvino_installed():
        print("OpenVINO is not installed in this venv, so its rows are left out (.venv/bin/pip install openvino adds them; the worker does not use it)")
        if args.paired:
            raise SystemExit("--paired takes turns with OpenVINO: install it first (.venv/bin/pip install openvino)")
    model = modelfile.resolve_model_path(args.model)
    metadata = modelfile.read_metadata(model)
    chunks = -(-args.chunks // 64) * 64
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        chunk_file = os.path.join(tmp, "chunks.npy")
        np.save(chunk_file, real_chunks(chunks, metadata["input_size"]))
        run_child(EXPORT_CHILD.format(repo=REPO, model=model), tmp)
        onnx = glob.glob(os.path.join(tmp, "onnx", "*.onnx"))[0]
        print(f"{chunks} real chunks at {metadata['input_size']} px, model {metadata['name']} {metadata['version']}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        if args.paired:
            config = {"chunks": chunk_file, "model": model, "onnx": onnx, "repeats": args.repeats}
            speeds = json.loads(run_child(PAIRED_CHILD.format(repo=REPO), tmp, json.dumps(config)).strip().splitlines()[-1])
            for name, speed in speeds.items():
                print(f"{name + ', batch 16, taking turns':<40} {speed:8.2f} {speed / speeds['Keras']:10.2f}")
            with open(args.json, "w") as handle:
                json.dump({"model": model, "chunks": chunks, "repeats": args.repeats, "load_average_after": os.getloadavg(), "paired_chunks_per_s": speeds}, handle, indent=1)
            return
        print(f"{'configuration':<40} {'chunks/s':>8} {'x Keras 16':>10} {'max |dp|':>9}  match")
        reference = None
        for label, config in configurations():
            config = dict(config, chunks=chunk_file, model=model, onnx=onnx, repeats=args.repeats)
            out = run_child(RUN_CHILD.format(repo=REPO), tmp, json.dumps(config), config.get("env"))
            measured = json.loads(out.strip().splitlines()[-1])
            probabilities = calibration.apply(np.asarray(measured["logits"]), metadata.get("calibration"))
            if reference is None:
                reference = (measured["chunks_per_s"], probabilities)
            difference = float(np.max(np.abs(probabilities - reference[1])))
            row = {"configuration": label, **{k: v for k, v in config.items() if k in ("runtime", "batch", "xla", "threads", "precision", "env")}, "chunks_per_s": measured["chunks_per_s"], "max_probability_difference": difference}
            rows.append(row)
            print(f"{label:<40} {row['chunks_per_s']:8.2f} {row['chunks_per_s'] / reference[0]:10.2f} {difference:9.1e}  {'yes' if difference <= MATCH else 'NO'}", flush=True)
    with open(args.json, "w") as handle:
        json.dump({"model": model, "chunks": chunks, "cpus": os.cpu_count(), "load_average_after": os.getloadavg(), "rows": rows}, handle, indent=1)
    print(f"JSON: {args.json}")


if __name__ == "__main__":
    main()

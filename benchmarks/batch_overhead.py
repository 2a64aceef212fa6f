"""What each image of a batch costs beyond its network: detect on many small images, one after another.

Two tables (README, Performance, "Many images: the warm worker"):
- in QGIS's process, as the toolbox's batch and processing.run run detect: the worker's job for each
  image, a worker started per image (HIRISEICE_WARM_WORKER=0) against the warm worker QGIS keeps;
- through scripts/qgis_process, one process per image as a shell loop runs it: a worker per image
  against the session worker (HIRISEICE_SESSION_WORKER), beside a native algorithm for QGIS's own start.

The images are the demo's sample scene (12 chunks of 1024 px), written once; the bundled model (or
--model), its ONNX export made before the first timed image. Run with QGIS's Python:

    QT_QPA_PLATFORM=offscreen nice -n 19 /usr/bin/python3 benchmarks/batch_overhead.py [--images 10] [--model FILE]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from qgis_side import REPO, qgis_application, sample_scene

sys.path.insert(0, REPO)


def in_process(scene: str, model: str, images: int, warm: bool) -> list:
    """Seconds of each image's worker job, as detect runs it inside QGIS."""
    from processing_provider import worker

    os.environ["HIRISEICE_WARM_WORKER"] = "1" if warm else "0"
    seconds = []
    for _ in range(images):
        started = time.monotonic()
        worker.run_worker(["detect", scene] + (["--model", model] if model else []))
        seconds.append(time.monotonic() - started)
    worker.close_warm_workers()
    return seconds


def through_qgis_process(arguments: list, images: int, env: dict) -> list:
    """Seconds of each scripts/qgis_process run."""
    seconds = []
    for _ in range(images):
        started = time.monotonic()
        done = subprocess.run(["bash", os.path.join(REPO, "scripts", "qgis_process"), "run"] + arguments, env=env, capture_output=True, text=True)
        seconds.append(time.monotonic() - started)
        if done.returncode:
            raise SystemExit(f"qgis_process failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return seconds


def row(name: str, seconds: list) -> str:
    later = seconds[1:]
    return f"| {name} | {statistics.mean(seconds):.2f} s | {seconds[0]:.2f} s | {min(later):.2f}-{max(later):.2f} s |"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10, help="images in each batch (2 or more)")
    parser.add_argument("--model", default="", help="model file (default: the bundled model)")
    args = parser.parse_args()
    if args.images < 2:
        parser.error("--images must be 2 or more: the first image and the later ones are told apart")
    with qgis_application(), tempfile.TemporaryDirectory() as folder:
        scene = sample_scene(os.path.join(folder, "scene.tif"))
        from processing_provider import worker

        worker.run_worker(["detect", scene] + (["--model", args.model] if args.model else []))  # the model's export, made once
        worker.close_warm_workers()
        print(f"{args.images} detects of a sample scene (12 chunks), {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        print("\nin QGIS's process (the worker's job of each image):\n")
        print("| | per image | first image | later images |\n| --- | --- | --- | --- |")
        print(row("a worker per image (HIRISEICE_WARM_WORKER=0)", in_process(scene, args.model, args.images, warm=False)))
        print(row("warm worker", in_process(scene, args.model, args.images, warm=True)))

        env = dict(os.environ, HIRISEICE_QGIS_CONFIG_PATH=os.path.join(folder, "profile"), XDG_RUNTIME_DIR=os.path.join(folder, "runtime"))
        os.makedirs(env["XDG_RUNTIME_DIR"], mode=0o700)
        env.pop("HIRISEICE_WARM_WORKER")
        detect = ["hiriseice:detect", "--", f"INPUT={scene}", f"OUTPUT={os.path.join(folder, 'chunks.gpkg')}"] + ([f"MODEL={args.model}"] if args.model else [])
        print("\nthrough scripts/qgis_process, one process per image:\n")
        print("| | per image | first image | later images |\n| --- | --- | --- | --- |")
        print(row("a worker per image", through_qgis_process(detect, args.images, env)))
        print(row("HIRISEICE_SESSION_WORKER=10", through_qgis_process(detect, args.images, dict(env, HIRISEICE_SESSION_WORKER="10"))))
        native = ["native:rasterlayerstatistics", "--", f"INPUT={scene}", "BAND=1", f"OUTPUT_HTML_FILE={os.path.join(folder, 'statistics.html')}"]
        print(row("QGIS's own start (a native algorithm)", through_qgis_process(native, args.images, env)))
        subprocess.run(["pkill", "-f", "--", f"--listen {env['XDG_RUNTIME_DIR']}"], check=False)


if __name__ == "__main__":
    main()

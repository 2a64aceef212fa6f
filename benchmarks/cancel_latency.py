"""How long a cancelled detection takes to stop: from feedback.cancel() until the QGIS side of the
worker (processing_provider.worker.WorkerRun) has killed the worker and returned. This was a
wall-clock assertion in tests/test_processing_detect.py; timings belong here, not in tests.

Scores a sample scene with overlapping chunks, one per network call, and cancels as soon as the
worker reports progress. Run with QGIS's Python (Debian's /usr/bin/python3):

    /usr/bin/python3 benchmarks/cancel_latency.py [--model FILE] [--repeat 3]
"""

import argparse
import os
import sys
import tempfile
import threading
import time

from qgis_side import REPO, qgis_application, sample_scene

sys.path.insert(0, REPO)


def cancel_once_scoring(arguments, timeout: float = 300.0):
    """(seconds from start to the first progress, seconds from cancel to the run's end)."""
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    from processing_provider.worker import WorkerRun

    feedback = QgsProcessingFeedback()
    failure = []

    def run():
        try:
            WorkerRun(arguments, feedback).run()
        except QgsProcessingException as exc:
            failure.append(str(exc))

    thread = threading.Thread(target=run)
    started = time.monotonic()
    thread.start()
    while feedback.progress() <= 0 and thread.is_alive() and time.monotonic() - started < timeout:
        time.sleep(0.02)
    cancelled = time.monotonic()
    feedback.cancel()
    thread.join()
    stopped = time.monotonic()
    if not failure or "Cancelled" not in failure[0]:
        raise SystemExit(f"the run was not cancelled while scoring: {failure}")
    return cancelled - started, stopped - cancelled


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="", help="model file (default: the bundled model)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with qgis_application(), tempfile.TemporaryDirectory() as folder:
        scene = sample_scene(os.path.join(folder, "scene.tif"), "--width", "2048", "--height", "2048")
        arguments = ["detect", scene, "--chunk-size", "256", "--stride", "16", "--batch-size", "1"] + (["--model", args.model] if args.model else [])
        print(f"{'run':>3} {'start to progress s':>19} {'cancel to stopped s':>19}")
        for number in range(1, args.repeat + 1):
            to_progress, to_stop = cancel_once_scoring(arguments)
            print(f"{number:>3} {to_progress:19.2f} {to_stop:19.2f}")


if __name__ == "__main__":
    main()

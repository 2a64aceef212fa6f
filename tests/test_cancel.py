"""Cancel, as the toolbox's Cancel button does it (feedback.cancel() from another thread): in the
chunk algorithm while it exports, and before the worker starts (during training:
tests/test_processing_train.py). Each run ends in
one QgsProcessingException saying so, with no output, no partial file and no worker left."""

import os

import pytest

import helpers
import qgis_support as qs

CHUNK = helpers.TINY_CHUNK_SIZE


def test_cancel_while_chunks_are_exported_removes_them(qgis_app, make_raster, tmp_path):
    from qgis.core import QgsProcessingException

    raster = make_raster(name="wide.tif", width=2048, height=1024, seed=2)
    exports, output = tmp_path / "exports", tmp_path / "grid.gpkg"
    exports.mkdir()
    feedback = qs.recording_feedback()
    thread, seen = qs.cancel_when(feedback, lambda: len(os.listdir(exports)) >= 5)
    try:
        with pytest.raises(QgsProcessingException) as raised:
            qs.run_algorithm("hiriseice:chunk", {"INPUT": raster.path, "CHUNK_SIZE": 16, "EXPORT_FOLDER": str(exports), "OUTPUT": str(output)}, feedback=feedback)
    finally:
        thread.join()
    assert 0 < seen["progress"] < 100
    assert "Cancelled by the user" in str(raised.value) and "removed" in str(raised.value)
    assert os.listdir(exports) == [] and not output.exists()


def chunk_stopped_by(signal_name: str, raster, exports, output) -> str:
    """hiriseice:chunk through qgis_process, sent the signal once it has exported 5 chunks; its output."""
    import signal
    import subprocess
    import time

    before = set(os.listdir(exports))
    process = subprocess.Popen(["bash", str(qs.QGIS_PROCESS), "run", "hiriseice:chunk", "--", f"INPUT={raster.path}", "CHUNK_SIZE=16",
                                f"EXPORT_FOLDER={exports}", f"OUTPUT={output}"], env=qs.qgis_process_environment(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while len(set(os.listdir(exports)) - before) < 5 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        process.send_signal(getattr(signal, signal_name))
        out, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    return process.returncode, out


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_a_signal_to_qgis_process_while_chunks_are_exported_removes_them(make_raster, tmp_path, signal_name):
    """Only a run's worker window turned SIGTERM and SIGHUP into a clean stop: chunk, which starts no worker, died
    silently and left its exported GeoTIFFs and a partial one. Ctrl-C (SIGINT) was left to qgis_process, which
    cancels at the run's next line only."""
    raster = make_raster(name="wide.tif", width=2048, height=1024, seed=2)
    exports, output = tmp_path / "exports", tmp_path / "grid.gpkg"
    exports.mkdir()
    returncode, out = chunk_stopped_by(signal_name, raster, exports, output)
    assert returncode == 1 and "Traceback" not in out, out[-3000:]
    assert f"ERROR:\tStopped by {signal_name}: no output was written, and those there before are as they were." in out, out[-3000:]
    assert os.listdir(exports) == [] and not output.exists()


def test_a_rerun_stopped_midway_leaves_the_earlier_export_whole(qgis_app, make_raster, tmp_path):
    """The rerun overwrote the earlier export's first chunks, then deleted them when stopped, and said the files
    there before were as they were (217 of 256 left)."""
    raster = make_raster(name="wide.tif", width=512, height=256, seed=2)
    exports, output = tmp_path / "exports", tmp_path / "grid.gpkg"
    exports.mkdir()
    qs.run_algorithm("hiriseice:chunk", {"INPUT": raster.path, "CHUNK_SIZE": 16, "EXPORT_FOLDER": str(exports), "OUTPUT": str(output)})
    earlier = {name: (exports / name).read_bytes() for name in os.listdir(exports)}
    assert len(earlier) == 512
    returncode, out = chunk_stopped_by("SIGTERM", raster, exports, tmp_path / "again.gpkg")
    assert returncode == 1 and "Stopped by SIGTERM" in out, out[-3000:]
    assert {name: (exports / name).read_bytes() for name in os.listdir(exports)} == earlier


def test_cancel_before_the_worker_starts_starts_none(qgis_app, tiny_model, make_raster, tmp_path):
    from qgis.core import QgsProcessingException

    raster = make_raster(name="scene.tif", width=256, height=256, seed=3)
    output = tmp_path / "chunks.gpkg"
    feedback = qs.recording_feedback()
    feedback.cancel()  # pressed while the parameters were being checked
    with pytest.raises(QgsProcessingException) as raised:
        qs.run_algorithm("hiriseice:detect", {"INPUT": raster.path, "MODEL": tiny_model.path, "CHUNK_SIZE": CHUNK, "OUTPUT": str(output)}, feedback=feedback)
    assert "Cancelled before the worker started" in str(raised.value)
    assert qs.processes_with(raster.path) == [] and not output.exists()


def test_a_detect_whose_worker_falls_silent_is_stopped_with_the_fix(tiny_model, make_raster, tmp_path):
    """Detect had no limit once its job had started: a worker stopped mid-run (here by SIGSTOP, as a read that never
    returns leaves it) held qgis_process, and the night's batch behind it, until someone killed it."""
    import signal
    import threading
    import time

    raster = make_raster(name="silent.tif", width=1024, height=1024, seed=4)
    output = tmp_path / "chunks.gpkg"
    worker = f"--jsonl detect {raster.path}"  # the worker's command line, not qgis_process's
    stopped = []

    def stop_the_worker_once_it_runs():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not qs.processes_with(worker):
            time.sleep(0.01)
        for pid in qs.processes_with(worker):
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)

    watcher = threading.Thread(target=stop_the_worker_once_it_runs)
    watcher.start()
    started = time.monotonic()
    run = qs.qgis_process("run", "hiriseice:detect", "--", f"INPUT={raster.path}", f"MODEL={tiny_model.path}", f"CHUNK_SIZE={CHUNK}",
                          f"OUTPUT={output}", env={"HIRISEICE_SILENCE_SECONDS": "5"}, timeout=240)
    watcher.join()
    assert stopped, "the worker was never seen running"
    assert run.returncode == 1 and "Traceback" not in run.stdout, run.stdout[-3000:]
    assert "The worker said nothing for 5 s while detecting" in run.stdout and "HIRISEICE_SILENCE_SECONDS sets this limit" in run.stdout, run.stdout[-3000:]
    assert "The worker was stopped and no output was written." in run.stdout
    assert time.monotonic() - started < 120
    assert qs.wait_until_gone(worker) == [] and not output.exists() and not qs.files_named_partial(tmp_path)

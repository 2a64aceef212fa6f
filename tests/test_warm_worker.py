"""The warm worker: ``python -m model --jsonl serve`` runs job after job with the model kept loaded,
and the QGIS client keeps one such process between detect runs (processing_provider/worker.py).

The real worker and the session's tiny model throughout; the client tests run hiriseice:detect
through processing.run in this offscreen QGIS and find the warm worker's pid in the command line
each run reports ("job N of the warm worker, pid P").
"""

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time

import numpy as np
import pytest

import helpers
import qgis_support as qs

CHUNK = helpers.TINY_CHUNK_SIZE
WARM_PID = re.compile(r"job (\d+) of the warm worker, pid (\d+)")


def alive(pid: int) -> bool:
    """A live, non-zombie process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def gone_within(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


# --- the engine: python -m model --jsonl serve ----------------------------------------------------


def serve(python, jobs, timeout=300) -> subprocess.CompletedProcess:
    """The serve command fed these stdin lines (dicts as JSON, strings as they are), then EOF."""
    lines = [line if isinstance(line, str) else json.dumps(line) for line in jobs]
    return subprocess.run([python, "-m", "model", "--jsonl", "serve"], input="\n".join(lines) + "\n", cwd=str(helpers.REPO_ROOT),
                          env=helpers.worker_env(), capture_output=True, text=True, timeout=timeout)


# The summary's fields that differ between two runs of one job: when it was scored, and how fast.
WHEN_AND_HOW_FAST = ("runtime_s", "chunks_per_s", "scored_at")


def messages_of(job_id, stdout: str):
    return [m for m in map(json.loads, stdout.splitlines()) if m.get("id") == job_id]


def test_serve_runs_jobs_as_the_one_shot_command_and_keeps_serving_after_an_error(worker_python, tiny_model, make_raster, tmp_path):
    scene = make_raster(name="served.tif", width=256, height=192, seed=4, icy_chunk_size=CHUNK, icy_pattern=helpers.checkerboard)
    empty = helpers.write_geotiff(tmp_path / "all_zero.tif", np.zeros((128, 192), np.uint16), "UInt16", helpers.default_geotransform(192, 128),
                                  helpers.mars_equirectangular_wkt())
    detect = ["--model", tiny_model.path, "--chunk-size", CHUNK]
    done = serve(worker_python, [
        {"id": "first", "command": "detect", "arguments": [scene.path, "--out", str(tmp_path / "first.gpkg")] + detect},
        {"id": 2, "command": "detect", "arguments": [empty] + detect},
        "not a job",
        {"id": 3, "command": "train", "arguments": ["job.json"]},
        {"id": 4, "command": "detect", "arguments": [scene.path, "--no-such-option"]},
        {"id": 5, "command": "detect", "arguments": [scene.path] + detect},
    ])
    assert done.returncode == 0, done.stderr[-3000:]

    ends = {job: messages_of(job, done.stdout)[-1] for job in ("first", 2, 3, 4, 5)}
    assert {job: (end["type"], end["status"]) for job, end in ends.items()} == {"first": ("done", 0), 2: ("done", 2), 3: ("done", 2), 4: ("done", 2), 5: ("done", 0)}
    assert all(messages_of(job, done.stdout)[0]["type"] == "started" for job in ends)
    errors = {job: [m for m in messages_of(job, done.stdout) if m["type"] == "error"] for job in (2, 3, 4)}
    assert [len(e) for e in errors.values()] == [1, 1, 1], errors
    assert "No chunk of" in errors[2][0]["message"] and "MIN_VALID" in errors[2][0]["message"]
    assert "not 'train'" in errors[3][0]["message"]
    assert "--no-such-option" in errors[4][0]["message"]
    untagged = [m for m in map(json.loads, done.stdout.splitlines()) if "id" not in m]
    assert [m["type"] for m in untagged] == ["error"] and "Not a job" in untagged[0]["message"]

    one_shot = helpers.run_worker(worker_python, "detect", scene.path, *detect).check().result
    for job in ("first", 5):
        result = [m for m in messages_of(job, done.stdout) if m["type"] == "result"]
        assert len(result) == 1
        assert [c["probability"] for c in result[0]["chunks"]] == [c["probability"] for c in one_shot["chunks"]]
        assert {k: v for k, v in result[0]["summary"].items() if k not in WHEN_AND_HOW_FAST} == \
               {k: v for k, v in one_shot["summary"].items() if k not in WHEN_AND_HOW_FAST}
    assert len(qs.read_ogr(tmp_path / "first.gpkg", "chunks").rows) == len(one_shot["chunks"])


def test_serve_needs_jsonl(worker_python):
    done = subprocess.run([worker_python, "-m", "model", "serve"], input="", cwd=str(helpers.REPO_ROOT), env=helpers.worker_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--jsonl serve" in done.stderr


def test_serve_listen_answers_each_connection_removes_a_failed_job_s_partial_outputs_and_ends_when_idle(worker_python, tiny_model, make_raster):
    """serve --listen (the session worker): jobs over a Unix socket as over stdin, one connection after
    another; a failed job has its partial outputs removed (as one whose client left: test_session_worker.py);
    idle, it ends and removes its socket."""
    import socket
    import tempfile

    scene = make_raster(name="listened.tif", width=256, height=192, seed=4, icy_chunk_size=CHUNK, icy_pattern=helpers.checkerboard)
    folder = tempfile.mkdtemp(prefix="hiriseice-serve-")
    path = os.path.join(folder, "w.sock")
    server = subprocess.Popen([worker_python, "-m", "model", "--jsonl", "serve", "--listen", path, "--idle-minutes", "0.05"],
                              cwd=str(helpers.REPO_ROOT), env=helpers.worker_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert oct(os.stat(path).st_mode & 0o777) == "0o600"
        detect = ["--model", tiny_model.path, "--chunk-size", CHUNK]
        partial = os.path.join(folder, ".left.partial.gpkg")
        answers = []
        for job in ({"id": 1, "command": "detect", "arguments": [scene.path] + detect},
                    {"id": 2, "command": "detect", "arguments": [scene.path + ".missing"] + detect, "partial_outputs": [partial]}):
            open(partial, "w").close()  # as a job's half-written output
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.connect(path)
                stream = client.makefile("rw", encoding="utf-8")
                stream.write(json.dumps(job) + "\n")
                stream.flush()
                lines = []
                while not lines or lines[-1]["type"] != "done":  # the connection stays open for more jobs
                    lines.append(json.loads(stream.readline()))
                answers.append(lines)
                stream.close()
                client.shutdown(socket.SHUT_RDWR)
                time.sleep(0.2)
        one_shot = helpers.run_worker(worker_python, "detect", scene.path, *detect).check().result
        (result,) = [m for m in answers[0] if m["type"] == "result"]
        assert [c["probability"] for c in result["chunks"]] == [c["probability"] for c in one_shot["chunks"]]
        assert answers[0][-1] == {"type": "done", "status": 0, "id": 1}
        assert [m["type"] for m in answers[1]] == ["started", "error", "done"] and answers[1][-1]["status"] == 2
        assert not os.path.exists(partial), "a failed job's partial output was left"
        server.wait(60)
        assert server.returncode == 0 and not os.path.exists(path), server.stderr.read()[-3000:]
    finally:
        if server.poll() is None:
            server.kill()
        shutil.rmtree(folder, ignore_errors=True)


def test_serve_listen_on_a_path_it_cannot_bind_says_so(worker_python):
    done = subprocess.run([worker_python, "-m", "model", "--jsonl", "serve", "--listen", "/nonexistent-folder/w.sock"], cwd=str(helpers.REPO_ROOT),
                          env=helpers.worker_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "serve cannot listen on /nonexistent-folder/w.sock (No such file or directory)" in json.loads(done.stdout)["message"]


# --- the client: hiriseice:detect in this QGIS -----------------------------------------------------


@pytest.fixture
def worker_module(qgis_app):
    """processing_provider.worker with no warm worker left over from another test, and none left after this one."""
    module = qs.plugin_module("processing_provider.worker")
    module.close_warm_workers()
    yield module
    module.close_warm_workers()


def detect(tiny_model, raster_path, out, feedback=None, **overrides):
    """processing.run hiriseice:detect; (results, the warm worker's (job, pid) or None for a run of its own)."""
    parameters = {"INPUT": raster_path, "MODEL": tiny_model.path, "CHUNK_SIZE": CHUNK, "OUTPUT": str(out)}
    parameters.update(overrides)
    results = qs.run_algorithm("hiriseice:detect", parameters, feedback=feedback)
    return results, warm_job_of(results["_feedback"])


def warm_job_of(feedback):
    """(job, pid) of the warm worker that ran the run (the last one named: a hung one is replaced), or None."""
    found = [m for m in map(WARM_PID.search, feedback.commands) if m]
    return (int(found[-1].group(1)), int(found[-1].group(2))) if found else None


def probabilities(gpkg):
    return [(r["chunk_id"], r["probability"], r["class"], r["review_rank"]) for r in qs.read_ogr(gpkg).rows]


def test_detects_in_one_qgis_share_the_warm_worker_and_match_runs_of_their_own(worker_module, tiny_model, make_raster, tmp_path, monkeypatch):
    first = make_raster(name="first.tif", width=256, height=192, seed=1, icy_chunk_size=CHUNK, icy_pattern=helpers.checkerboard)
    second = make_raster(name="second.tif", width=192, height=256, seed=2)
    _, (job_a, pid_a) = detect(tiny_model, first.path, tmp_path / "warm_first.gpkg")
    results, (job_b, pid_b) = detect(tiny_model, second.path, tmp_path / "warm_second.gpkg")
    assert pid_a == pid_b and (job_a, job_b) == (1, 2)
    assert alive(pid_a), "the warm worker did not wait for the next run"
    assert any(" -m model --jsonl detect " in c for c in results["_feedback"].commands)

    monkeypatch.setenv(worker_module.WARM_ENV_VAR, "0")
    for raster, name in ((first, "first"), (second, "second")):
        _, warm = detect(tiny_model, raster.path, tmp_path / f"cold_{name}.gpkg")
        assert warm is None
        assert probabilities(tmp_path / f"warm_{name}.gpkg") == probabilities(tmp_path / f"cold_{name}.gpkg")
    assert alive(pid_a), "a run of its own touched the warm worker"


def test_switched_off_by_the_environment_or_the_setting(worker_module, tiny_model, make_raster, tmp_path, monkeypatch):
    from qgis.core import QgsSettings

    raster = make_raster(name="alone.tif", width=128, height=128, seed=3)
    monkeypatch.setenv(worker_module.WARM_ENV_VAR, "0")
    results, warm = detect(tiny_model, raster.path, tmp_path / "by_env.gpkg")
    assert warm is None and worker_module._warm_workers == {}
    assert any(" -m model --jsonl detect " in c for c in results["_feedback"].commands)

    monkeypatch.delenv(worker_module.WARM_ENV_VAR)
    QgsSettings().setValue(worker_module.WARM_SETTINGS_KEY, False)
    try:
        _, warm = detect(tiny_model, raster.path, tmp_path / "by_setting.gpkg")
        assert warm is None and worker_module._warm_workers == {}
    finally:
        QgsSettings().remove(worker_module.WARM_SETTINGS_KEY)
    _, warm = detect(tiny_model, raster.path, tmp_path / "on_again.gpkg")
    assert warm is not None


def test_cancel_during_a_warm_run_stops_the_worker_and_the_next_run_starts_a_new_one(worker_module, tiny_model, make_raster, tmp_path):
    from qgis.core import QgsProcessingException

    small = make_raster(name="small.tif", width=128, height=128, seed=5)
    _, (_, pid) = detect(tiny_model, small.path, tmp_path / "before.gpkg")
    # 121 x 121 overlapping chunks scored one per network call: minutes of work, cancelled early.
    big = make_raster(name="big.tif", width=1024, height=1024, seed=9)
    out_folder = tmp_path / "out"
    out_folder.mkdir()
    feedback = qs.recording_feedback()
    timer, seen = qs.cancel_when(feedback, lambda: feedback.progress() > 0, lambda: {"alive": alive(pid)})
    try:
        with pytest.raises(QgsProcessingException) as raised:
            detect(tiny_model, big.path, out_folder / "cancelled.gpkg", feedback=feedback, STRIDE=8, BATCH_SIZE=1, REPORT=str(out_folder / "cancelled.html"))
    finally:
        timer.join()
    assert 0 < seen["progress"] < 50 and seen["alive"], seen
    assert warm_job_of(feedback) == (2, pid), "the cancelled run was not a job of the warm worker"
    assert "Cancelled" in str(raised.value) and "no output was written" in str(raised.value)
    assert gone_within(pid), "the warm worker outlived the cancel"
    assert os.listdir(out_folder) == []

    _, (job, new_pid) = detect(tiny_model, small.path, tmp_path / "after.gpkg")
    assert new_pid != pid and job == 1
    assert probabilities(tmp_path / "after.gpkg") == probabilities(tmp_path / "before.gpkg")


def scoring_interrupted(tiny_model, raster_path, output, act):
    """A dense detect of raster_path (one chunk a network call: minutes of work) with act() called from another thread
    once it scores; (the run's QgsProcessingException, its feedback)."""
    from qgis.core import QgsProcessingException

    feedback = qs.recording_feedback()

    def act_once_it_scores():
        deadline = time.monotonic() + 180
        while feedback.progress() <= 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        act()

    thread = threading.Thread(target=act_once_it_scores)
    thread.start()
    try:
        with pytest.raises(QgsProcessingException) as raised:
            detect(tiny_model, raster_path, output, feedback=feedback, STRIDE=8, BATCH_SIZE=1)
    finally:
        thread.join()
    return raised.value, feedback


def test_a_warm_run_stopped_by_the_plugin_unloading_says_so_not_cancelled(worker_module, tiny_model, make_raster, tmp_path):
    """A reload, update or uninstall during a toolbox detect stops the warm worker; the run said 'Cancelled; no output
    was written.', though nobody had pressed Cancel."""
    from qgis.core import QgsApplication

    big = make_raster(name="big.tif", width=1024, height=1024, seed=9)
    provider = QgsApplication.processingRegistry().providerById("hiriseice")
    error, feedback = scoring_interrupted(tiny_model, big.path, tmp_path / "stopped.gpkg", provider.unload)  # what QGIS calls as it unloads the plugin
    assert warm_job_of(feedback) is not None, "the run was not a job of the warm worker"
    assert str(error) == ("Stopped because the HiRISE Ice Patches plugin was unloaded (reloaded, updated, disabled or uninstalled): the worker "
                          "was stopped and no output was written. Run it again.")
    assert not (tmp_path / "stopped.gpkg").exists()


def test_a_killed_warm_worker_is_replaced(worker_module, tiny_model, make_raster, tmp_path):
    raster = make_raster(name="scene.tif", width=128, height=128, seed=6)
    _, (_, pid) = detect(tiny_model, raster.path, tmp_path / "one.gpkg")
    os.kill(pid, signal.SIGKILL)  # between runs
    assert gone_within(pid)
    _, (job, second_pid) = detect(tiny_model, raster.path, tmp_path / "two.gpkg")
    assert second_pid != pid and job == 1

    # In a run: that run reports the crash with the worker's error output; the next one works.
    big = make_raster(name="big.tif", width=1024, height=1024, seed=9)
    error, _feedback = scoring_interrupted(tiny_model, big.path, tmp_path / "killed.gpkg", lambda: os.kill(second_pid, signal.SIGKILL))
    assert "The worker crashed (SIGKILL)" in str(error) and "Last lines of its error output" in str(error)
    _, (job, third_pid) = detect(tiny_model, raster.path, tmp_path / "three.gpkg")
    assert third_pid not in (pid, second_pid) and job == 1
    assert probabilities(tmp_path / "three.gpkg") == probabilities(tmp_path / "one.gpkg")


def test_a_hung_warm_worker_is_replaced(worker_module, tiny_model, make_raster, tmp_path, monkeypatch):
    raster = make_raster(name="scene.tif", width=128, height=128, seed=7)
    _, (_, pid) = detect(tiny_model, raster.path, tmp_path / "one.gpkg")
    monkeypatch.setattr(worker_module, "ANSWER_SECONDS", 2.0)
    os.kill(pid, signal.SIGSTOP)
    try:
        results, (job, new_pid) = detect(tiny_model, raster.path, tmp_path / "two.gpkg")
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    assert new_pid != pid and job == 1
    assert any(f"warm worker (pid {pid}) did not take the job" in i for i in results["_feedback"].infos)
    assert gone_within(pid)
    assert probabilities(tmp_path / "two.gpkg") == probabilities(tmp_path / "one.gpkg")


def test_an_engine_error_in_one_job_does_not_stop_the_next(worker_module, tiny_model, make_raster, tmp_path):
    from qgis.core import QgsProcessingException

    raster = make_raster(name="scene.tif", width=128, height=128, seed=8)
    _, (_, pid) = detect(tiny_model, raster.path, tmp_path / "one.gpkg")
    empty = helpers.write_geotiff(tmp_path / "all_zero.tif", np.zeros((128, 192), np.uint16), "UInt16", helpers.default_geotransform(192, 128),
                                  helpers.mars_equirectangular_wkt())
    feedback = qs.recording_feedback()
    with pytest.raises(QgsProcessingException) as raised:
        detect(tiny_model, empty, tmp_path / "empty.gpkg", feedback=feedback, REPORT=str(tmp_path / "empty.html"))
    message = str(raised.value)
    assert "No chunk of" in message and message[:60] not in feedback.text  # said once
    assert warm_job_of(feedback) == (2, pid)
    assert not (tmp_path / "empty.gpkg").exists() and qs.files_named_partial(tmp_path) == []

    _, (job, same_pid) = detect(tiny_model, raster.path, tmp_path / "two.gpkg")
    assert (job, same_pid) == (3, pid)
    assert probabilities(tmp_path / "two.gpkg") == probabilities(tmp_path / "one.gpkg")

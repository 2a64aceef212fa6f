"""The session worker (HIRISEICE_SESSION_WORKER): separate qgis_process runs of a shell's loop share
one warm worker over a Unix socket; bad input fails its run alone; the worker ends by itself."""

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

if not sys.platform.startswith("win"):
    import fcntl

import pytest
from osgeo import ogr

import helpers
import qgis_support as qs

pytestmark = pytest.mark.skipif(sys.platform.startswith("win"), reason="the session worker needs Unix sockets")

# Runs that share the worker follow each other within IDLE_MINUTES even on a loaded machine (6 s had been too short
# there, and a run started a second worker); the runtime fixture stops what is left. ENDS_IDLE_MINUTES is waited out.
IDLE_MINUTES = 2.0
ENDS_IDLE_MINUTES = 0.05


def detect(tiny_model, raster, output, runtime, session=str(IDLE_MINUTES)):
    env = {"XDG_RUNTIME_DIR": str(runtime)}
    if session:
        env["HIRISEICE_SESSION_WORKER"] = session
    return qs.qgis_process("run", "hiriseice:detect", "--", f"INPUT={raster}", f"MODEL={tiny_model.path}",
                           f"CHUNK_SIZE={helpers.TINY_CHUNK_SIZE}", f"OUTPUT={output}", env=env)


def probabilities(path):
    dataset = ogr.Open(str(path))
    layer = dataset.GetLayer(0)
    return sorted((feature.GetGeometryRef().Centroid().ExportToWkt(), round(feature.GetField("probability"), 6)) for feature in layer)


def session_pid(out: str, started: bool) -> int:
    marker = "Started the session worker (pid " if started else "(a job of the session worker, pid "
    assert out.count(marker) == 1, out[-3000:]
    return int(out.split(marker, 1)[1].split(")", 1)[0])


@pytest.fixture
def runtime():
    """A short XDG_RUNTIME_DIR of the test's own (a Unix socket's path holds at most 107 bytes)."""
    folder = tempfile.mkdtemp(prefix="hiriseice-rt-")
    yield pathlib.Path(folder)
    for pid in qs.processes_with(f"--listen {folder}"):
        os.kill(pid, signal.SIGTERM)
    qs.wait_until_gone(f"--listen {folder}")
    shutil.rmtree(folder, ignore_errors=True)


def test_qgis_process_runs_share_one_session_worker_that_ends_by_itself(tiny_model, tmp_path, runtime):
    raster = helpers.generate_raster(tmp_path, name="scene.tif", width=256, height=256, seed=5).path

    alone = detect(tiny_model, raster, tmp_path / "alone.gpkg", runtime, session="")
    assert alone.returncode == 0 and "session worker" not in alone.stdout, alone.stdout[-3000:]

    first = detect(tiny_model, raster, tmp_path / "first.gpkg", runtime)
    assert first.returncode == 0, first.stdout[-3000:]
    pid = session_pid(first.stdout, started=True)
    assert "ResourceWarning" not in first.stdout, first.stdout[:3000]  # Python's, on the worker left running by design
    second = detect(tiny_model, raster, tmp_path / "second.gpkg", runtime)
    assert second.returncode == 0, second.stdout[-3000:]
    assert session_pid(second.stdout, started=False) == pid and "Started the session worker" not in second.stdout
    assert probabilities(tmp_path / "first.gpkg") == probabilities(tmp_path / "second.gpkg") == probabilities(tmp_path / "alone.gpkg")

    # Bad input fails its own run only, and leaves nothing; the worker serves the next run.
    damaged = tmp_path / "damaged.tif"
    with open(raster, "rb") as handle:
        damaged.write_bytes(handle.read()[:6000])
    out_folder = tmp_path / "bad"
    out_folder.mkdir()
    bad = detect(tiny_model, damaged, out_folder / "chunks.gpkg", runtime)
    assert bad.returncode == 1 and bad.stdout.count("ERROR:") == 1 and "Traceback" not in bad.stdout, bad.stdout[-3000:]
    assert "is damaged" in bad.stdout and os.listdir(out_folder) == []
    third = detect(tiny_model, raster, tmp_path / "third.gpkg", runtime)
    assert third.returncode == 0 and session_pid(third.stdout, started=False) == pid, third.stdout[-3000:]

    # A worker idle for its limit ends and removes its socket (one of a runtime folder of its own).
    idle = runtime / "idle"
    idle.mkdir(mode=0o700)
    last = detect(tiny_model, raster, tmp_path / "last.gpkg", idle, session=str(ENDS_IDLE_MINUTES))
    assert last.returncode == 0 and session_pid(last.stdout, started=True), last.stdout[-3000:]
    assert qs.wait_until_gone(f"--listen {idle}", seconds=60 * ENDS_IDLE_MINUTES + 20) == [], "the session worker did not end when idle"
    folder = idle / f"hiriseice-{os.getuid()}"
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    assert not [name for name in os.listdir(folder) if name.endswith(".sock")]


def test_a_run_that_finds_the_session_worker_busy_runs_a_worker_of_its_own(tiny_model, tmp_path, runtime):
    """A second qgis_process at the same time does not wait for the first's job: it holds the lock."""
    raster = helpers.generate_raster(tmp_path, name="scene.tif", width=256, height=256, seed=5).path
    first = detect(tiny_model, raster, tmp_path / "first.gpkg", runtime)
    assert first.returncode == 0, first.stdout[-3000:]
    pid = session_pid(first.stdout, started=True)
    folder = runtime / f"hiriseice-{os.getuid()}"
    (lock_path,) = [folder / name for name in os.listdir(folder) if name.endswith(".lock")]
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a run in progress holds it
        busy = detect(tiny_model, raster, tmp_path / "busy.gpkg", runtime)
    assert busy.returncode == 0, busy.stdout[-3000:]
    assert "The session worker is busy with another run; this run starts a worker of its own." in busy.stdout
    assert "of the session worker, pid" not in busy.stdout
    assert probabilities(tmp_path / "busy.gpkg") == probabilities(tmp_path / "first.gpkg")
    assert qs.processes_with(f"--listen {runtime}") == [pid]


def test_sigterm_mid_job_stops_the_job_not_the_session_worker(tiny_model, tmp_path, runtime):
    """The client goes away mid-job: its job stops at its next line and removes its partial outputs;
    the worker, its model loaded, serves the next run."""
    raster = helpers.generate_raster(tmp_path, name="big.tif", width=1024, height=1024, seed=9).path
    out_folder = tmp_path / "out"
    out_folder.mkdir()
    environment = dict(os.environ, HIRISEICE_QGIS_CONFIG_PATH=qs.qgis_process_config(), XDG_RUNTIME_DIR=str(runtime),
                       HIRISEICE_SESSION_WORKER=str(IDLE_MINUTES))
    environment.pop("QGIS_CUSTOM_CONFIG_PATH", None)
    # 14641 overlapping chunks, one per network call: minutes of work.
    process = subprocess.Popen(["bash", str(qs.QGIS_PROCESS), "run", "hiriseice:detect", "--", f"INPUT={raster}", f"MODEL={tiny_model.path}",
                                f"CHUNK_SIZE={helpers.TINY_CHUNK_SIZE}", "STRIDE=8", "BATCH_SIZE=1", f"OUTPUT={out_folder / 'chunks.gpkg'}",
                                f"REPORT={out_folder / 'report.html'}"], env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not qs.processes_with(f"--listen {runtime}") and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3.0)  # into the scoring
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1 and out.count("ERROR:\tStopped by SIGTERM: its job in the session worker was stopped and no output was written.") == 1 and "Traceback" not in out, out[-3000:]
    (pid,) = qs.processes_with(f"--listen {runtime}")
    time.sleep(1.0)  # the job's next line breaks, and it removes its partial outputs
    assert os.listdir(out_folder) == []
    after = detect(tiny_model, helpers.generate_raster(tmp_path, name="small.tif", width=256, height=256, seed=5).path, tmp_path / "after.gpkg", runtime)
    assert after.returncode == 0 and session_pid(after.stdout, started=False) == pid, after.stdout[-3000:]


def test_a_hung_session_worker_is_replaced(tiny_model, tmp_path, runtime):
    """A worker that takes no job (stopped here with SIGSTOP) is killed after ANSWER_SECONDS, and a new
    one runs the job."""
    raster = helpers.generate_raster(tmp_path, name="scene.tif", width=256, height=256, seed=5).path
    first = detect(tiny_model, raster, tmp_path / "first.gpkg", runtime)
    assert first.returncode == 0, first.stdout[-3000:]
    hung = session_pid(first.stdout, started=True)
    os.kill(hung, signal.SIGSTOP)
    try:
        second = detect(tiny_model, raster, tmp_path / "second.gpkg", runtime)
    finally:
        if qs.processes_with(f"--listen {runtime}").count(hung):
            os.kill(hung, signal.SIGKILL)
    assert second.returncode == 0, second.stdout[-3000:]
    assert "The session worker did not take the job; starting a new one." in second.stdout
    replacement = session_pid(second.stdout, started=True)
    assert replacement != hung and qs.processes_with(f"--listen {runtime}") == [replacement]
    assert probabilities(tmp_path / "second.gpkg") == probabilities(tmp_path / "first.gpkg")


def test_a_job_whose_client_leaves_while_it_writes_replaces_no_output(tiny_model, tmp_path, runtime):
    """Cancelled in the session worker once scored: the job sends no line while it writes its
    probability raster and report, so it had renamed both over the user's earlier ones, while QGIS
    said no output was written. Now a line before each rename breaks, and nothing is replaced."""
    import json
    import socket

    from model import files

    raster = helpers.generate_raster(tmp_path, name="scene.tif", width=512, height=512, seed=9).path
    report, probability = tmp_path / "report.html", tmp_path / "probability.tif"
    report.write_text("OLD REPORT")
    probability.write_bytes(b"OLD RASTER")
    listen = runtime / "session.sock"
    worker = subprocess.Popen([helpers.worker_python_path(), "-m", "model", "--jsonl", "serve", "--listen", str(listen), "--idle-minutes", "1"],
                              cwd=str(helpers.REPO_ROOT), env=helpers.worker_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def job(identifier, command, arguments, partial_outputs=(), leave_when=None):
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(str(listen))
        stream = client.makefile("rw", encoding="utf-8", newline="\n")
        stream.write(json.dumps({"id": identifier, "command": command, "arguments": arguments, "partial_outputs": list(partial_outputs)}) + "\n")
        stream.flush()
        messages = []
        for line in stream:
            messages.append(json.loads(line))
            if messages[-1]["type"] == "done" or (leave_when and leave_when(messages[-1])):
                break
        stream.close()
        client.close()
        return messages

    try:
        deadline = time.monotonic() + 60
        while not listen.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        outputs = [str(report), str(probability)]
        finished = []  # the scoring's last progress, then the job's own just before it writes its outputs: QGIS's cancel comes then

        def writing_begins(message):
            finished.extend([1] if message["type"] == "progress" and message["fraction"] >= 1.0 else [])
            return len(finished) == 2

        left = job(1, "detect", [raster, "--model", tiny_model.path, "--chunk-size", str(helpers.TINY_CHUNK_SIZE), "--report", outputs[0],
                                 "--probability-raster", outputs[1]], [files.partial_path(path) for path in outputs], leave_when=writing_begins)
        assert left[-1] == {"type": "progress", "fraction": 1.0, "id": 1}
        after = job(2, "info", [])  # served once the first job has ended
    finally:
        worker.terminate()
        worker.wait(30)
    assert after[-1]["type"] == "done" and after[-1]["status"] == 0
    assert report.read_text() == "OLD REPORT" and probability.read_bytes() == b"OLD RASTER"
    assert not [name for name in os.listdir(tmp_path) if ".partial" in name]


def test_a_client_that_sends_no_job_does_not_hold_the_session_worker(tmp_path, runtime, monkeypatch):
    """It had kept the worker from every other run until that run's timeout replaced the worker."""
    import json
    import socket
    import threading

    from model import session

    monkeypatch.setattr(session, "FIRST_LINE_SECONDS", 0.5)
    listen = runtime / "session.sock"
    answered = []

    def run_line(line, stream):
        answered.append(json.loads(line)["id"])
        stream.write(json.dumps({"type": "done", "status": 0}) + "\n")
        stream.flush()
        return 0

    server = threading.Thread(target=session.serve_socket, args=(str(listen), 5.0, run_line), daemon=True)
    server.start()
    deadline = time.monotonic() + 10
    while not listen.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.connect(str(listen))  # and says nothing
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(str(listen))
    client.settimeout(10)
    client.sendall(b'{"id": 7, "command": "info", "arguments": []}\n')
    reply = client.makefile("r").readline()
    client.close()
    silent.close()
    assert json.loads(reply) == {"type": "done", "status": 0} and answered == [7]


def holds_open(pid: int, path: str) -> bool:
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == path for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def signal_once_reading(process, runtime, raster: str, signum) -> list:
    """Sends signum to the session worker once its job holds the raster open (it is reading), while the qgis_process
    run goes on; the pids it went to."""
    sent = []
    deadline = time.monotonic() + 120
    while not sent and time.monotonic() < deadline and process.poll() is None:
        for pid in qs.processes_with(f"--listen {runtime}"):
            if holds_open(pid, raster):
                os.kill(pid, signum)
                sent.append(pid)
        time.sleep(0.01)
    return sent


def start_dense_detect(tiny_model, raster: str, output, environment) -> subprocess.Popen:
    """A detect of many overlapping chunks, one network call each (minutes of work), through qgis_process."""
    return subprocess.Popen(["bash", str(qs.QGIS_PROCESS), "run", "hiriseice:detect", "--", f"INPUT={raster}", f"MODEL={tiny_model.path}",
                             f"CHUNK_SIZE={helpers.TINY_CHUNK_SIZE}", "STRIDE=8", "BATCH_SIZE=1", f"OUTPUT={output}"],
                            env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_a_session_worker_that_falls_silent_mid_job_is_stopped_not_left_holding_its_memory(tiny_model, tmp_path, runtime):
    """Silence closed the connection only: the job, stuck in its read, kept the worker (and its model and
    GDAL cache) alive, and no idle limit ends a busy worker; some later run had to find it unresponsive."""
    raster = helpers.generate_raster(tmp_path, name="big.tif", width=1024, height=1024, seed=9).path
    out_folder = tmp_path / "out"
    out_folder.mkdir()
    environment = qs.qgis_process_environment({"XDG_RUNTIME_DIR": str(runtime), "HIRISEICE_SESSION_WORKER": str(IDLE_MINUTES),
                                               "HIRISEICE_SILENCE_SECONDS": "5"})
    process = start_dense_detect(tiny_model, raster, out_folder / "chunks.gpkg", environment)
    try:
        stopped = signal_once_reading(process, runtime, raster, signal.SIGSTOP)  # a read that never returns, as on a share that stopped answering
        out, _ = process.communicate(timeout=120)
        left_running = qs.wait_until_gone(f"--listen {runtime}")
    finally:
        if process.poll() is None:
            process.kill()
        for pid in qs.processes_with(f"--listen {runtime}"):
            os.kill(pid, signal.SIGKILL)  # the old code's worker, stopped and left
    assert stopped, "the session worker was never seen reading the raster: " + out[-3000:]
    assert process.returncode == 1 and "Traceback" not in out, out[-3000:]
    assert "The worker said nothing for 5 s while detecting" in out, out[-3000:]
    assert "The session worker was stopped (the next run starts another) and no output was written." in out, out[-3000:]
    assert left_running == [] and os.listdir(out_folder) == []


def test_a_session_worker_killed_mid_job_is_said_to_have_ended_with_what_to_do(tiny_model, tmp_path, runtime):
    """kill -9 of the session worker mid-job read 'The worker stopped unexpectedly (exit status 1) ... (empty)': neither true nor
    a way on."""
    raster = helpers.generate_raster(tmp_path, name="big.tif", width=1024, height=1024, seed=9).path
    environment = qs.qgis_process_environment({"XDG_RUNTIME_DIR": str(runtime), "HIRISEICE_SESSION_WORKER": str(IDLE_MINUTES)})
    process = start_dense_detect(tiny_model, raster, tmp_path / "chunks.gpkg", environment)
    try:
        killed = signal_once_reading(process, runtime, raster, signal.SIGKILL)
        out, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert killed, out[-3000:]
    assert process.returncode == 1 and "Traceback" not in out, out[-3000:]
    assert f"ERROR:\tThe session worker (pid {killed[0]}) ended without a word: it was killed (out of memory?) or crashed during this job. " \
           "Run again: the next run starts a new one, and keeps this log as " in out, out[-3000:]
    assert not (tmp_path / "chunks.gpkg").exists() and not qs.files_named_partial(tmp_path)
    # The rerun the message asks for keeps the dead worker's log for a bug report: it had been wiped as the next worker started
    (log,) = [os.path.join(folder, name) for folder, _, names in os.walk(runtime) for name in names if name.endswith(".sock.log")]
    with open(log, "a", encoding="utf-8") as handle:
        handle.write("the dead worker's last words\n")
    again = subprocess.run(["bash", str(qs.QGIS_PROCESS), "run", "hiriseice:detect", "--", f"INPUT={raster}", f"MODEL={tiny_model.path}",
                            f"CHUNK_SIZE={helpers.TINY_CHUNK_SIZE}", f"OUTPUT={tmp_path / 'again.gpkg'}"], env=environment, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    with open(log + ".1", encoding="utf-8") as handle:
        assert handle.read().endswith("the dead worker's last words\n")


def test_changing_only_the_idle_minutes_keeps_the_one_session_worker(qgis_app, monkeypatch):
    """HIRISEICE_SESSION_WORKER=10 and then =11 started a second worker beside the first, each holding 220 MB until its own idle end."""
    session_worker = qs.plugin_module("processing_provider.session_worker")
    monkeypatch.setenv("HIRISEICE_SESSION_WORKER", "10")
    first = session_worker.session_socket(sys.executable)
    monkeypatch.setenv("HIRISEICE_SESSION_WORKER", "11")
    assert session_worker.session_socket(sys.executable) == first
    monkeypatch.setenv("GDAL_CACHEMAX", "64")  # what the results depend on still asks for a worker of its own
    assert session_worker.session_socket(sys.executable) != first


def test_a_runtime_folder_this_user_cannot_write_is_passed_over(qgis_app, monkeypatch, tmp_path):
    """An XDG_RUNTIME_DIR of another user (kept by su) or missing on a compute node ended a run with a PermissionError traceback."""
    from qgis.core import QgsProcessingException

    session_worker = qs.plugin_module("processing_provider.session_worker")
    short = pathlib.Path(tempfile.mkdtemp(prefix="hi-", dir="/tmp"))
    (tmp_path / "a_file").write_text("")
    try:
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "a_file"))  # no folder can be made in it, even by root
        monkeypatch.setattr(tempfile, "tempdir", str(short))
        assert session_worker.session_socket(sys.executable).startswith(str(short) + os.sep)
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "a_file"))
        monkeypatch.setattr(session_worker, "SHARED_TEMPORARY", str(tmp_path / "a_file"))
        with pytest.raises(QgsProcessingException, match="The session worker's socket cannot be made in .*a_file .*set XDG_RUNTIME_DIR or TMPDIR"):
            session_worker.session_socket(sys.executable)
    finally:
        shutil.rmtree(short)


def test_the_socket_fits_in_bytes_not_letters(qgis_app, monkeypatch):
    """An XDG_RUNTIME_DIR of 58 letters, most of them Cyrillic, is 103 bytes: it passed a check of 60 letters, and the
    session worker stopped before it listened ('AF_UNIX path too long'); a long TMPDIR beside it was never measured."""
    session_worker = qs.plugin_module("processing_provider.session_worker")
    deep = pathlib.Path(tempfile.mkdtemp(prefix="ж" * 45, dir="/tmp"))
    short = pathlib.Path(tempfile.mkdtemp(prefix="hi-", dir="/tmp"))
    try:
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(deep))
        monkeypatch.setattr(tempfile, "tempdir", str(short))
        path = session_worker.session_socket(sys.executable)
        assert len(os.fsencode(path)) <= 107 and path.startswith(str(short) + os.sep), path
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(short))
        assert session_worker.session_socket(sys.executable).startswith(str(short) + os.sep)
    finally:
        shutil.rmtree(short)
        shutil.rmtree(deep)

"""The plugin's side of the worker protocol (processing_provider/worker.py) against workers that
misbehave: lines that are not the protocol, a crash by a signal, an exit 0 without a result. Each
worker here is a real program (a shell script in place of the worker's Python), so the client's
pipes, exit statuses and signals are the real ones."""

import stat

import pytest

import qgis_support as qs


def misbehaving_worker(folder, body: str) -> str:
    """An executable that the client starts as `<it> -m model --jsonl <arguments>`."""
    path = folder / "python"
    path.write_text("#!/bin/bash\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.fixture
def run_with(qgis_app, monkeypatch, tmp_path):
    """run_with(script) -> (result or the exception, feedback): run_worker with that worker."""
    from qgis.core import QgsProcessingException

    worker = qs.plugin_module("processing_provider.worker")
    monkeypatch.setenv("HIRISEICE_WARM_WORKER", "0")

    def run(body: str, partial_outputs=()):
        monkeypatch.setenv(worker.ENV_VAR, misbehaving_worker(tmp_path, body))
        feedback = console_recording_feedback()
        try:
            return worker.run_worker(["info"], feedback, partial_outputs), feedback
        except QgsProcessingException as exc:
            return exc, feedback

    return run


def console_recording_feedback():
    feedback = qs.recording_feedback()
    feedback.console = []
    plain = feedback.pushConsoleInfo

    def push_console_info(text):
        feedback.console.append(text)
        plain(text)

    feedback.pushConsoleInfo = push_console_info
    return feedback


def test_lines_that_are_not_the_protocol_are_logged_and_the_result_still_arrives(run_with):
    result, feedback = run_with(
        "echo 'a library printing to stdout'\n"
        "echo '{\"no\": \"type\"}'\n"
        "echo '{\"type\": \"progress\", \"fraction\": 0.5}'\n"
        "echo '{\"type\": \"result\", \"answer\": 42}'"
    )
    assert result == {"answer": 42}
    assert feedback.console == ["a library printing to stdout", '{"no": "type"}']
    assert feedback.progress() == pytest.approx(50.0) and feedback.errors == []


def test_a_crash_names_the_signal_with_the_tail_of_stderr_and_removes_partial_outputs(run_with, tmp_path):
    partial = tmp_path / ".report.html.partial"
    partial.write_text("half a report")
    exc, feedback = run_with(
        "echo '{\"type\": \"progress\", \"fraction\": 0.2}'\n"
        "echo 'fatal: the network ran out of memory' >&2\n"
        "kill -SEGV $$",
        partial_outputs=[str(partial)],
    )
    message = str(exc)
    assert message.startswith("The worker crashed (SIGSEGV).") and "fatal: the network ran out of memory" in message
    assert not partial.exists() and feedback.errors == []


def test_what_a_worker_put_in_place_before_it_died_is_removed_and_nothing_else(run_with, tmp_path):
    """Stopped on Windows (killed at once, no cleanup of its own) or killed outright, a worker had left the probability raster
    it had put in place while "no output was written" was said. It names each such file; another file of that name it never
    named (another run's) stays."""
    raster, report = tmp_path / "p.tif", tmp_path / "r.html"
    raster.write_text("this run's raster")
    report.write_text("another run's report")
    exc, _feedback = run_with(f"echo '{{\"type\": \"written\", \"path\": \"{raster}\"}}'\nkill -KILL $$")
    assert str(exc).startswith("The worker crashed (SIGKILL)")
    assert not raster.exists() and report.read_text() == "another run's report"
    raster.write_text("this run's raster")  # and a run that succeeds keeps what it wrote
    result, _feedback = run_with(f"echo '{{\"type\": \"written\", \"path\": \"{raster}\"}}'\necho '{{\"type\": \"result\", \"answer\": 1}}'")
    assert result == {"answer": 1} and raster.exists()


def test_an_abort_with_nothing_on_stderr_is_said_to_be_memory_most_often(run_with):
    """Under a memory limit (prlimit --as) the worker died by SIGABRT without a word, and the message said only that."""
    exc, _feedback = run_with("echo '{\"type\": \"progress\", \"fraction\": 0.2}'\nkill -ABRT $$")
    assert str(exc).startswith("The worker crashed (SIGABRT). With nothing on its error output this is most often memory: close other programs, "
                               "lower BATCH_SIZE"), str(exc)
    exc, _feedback = run_with("echo 'a failed assertion in a library' >&2\nkill -ABRT $$")  # a reason given: it is quoted, not guessed at
    assert "most often memory" not in str(exc) and "a failed assertion in a library" in str(exc)


def test_a_worker_that_cannot_start_for_want_of_file_handles_is_told_the_limit_not_an_install(qgis_app, monkeypatch, tmp_path):
    """prlimit --nofile=20 had read "cannot be started ([Errno 24] Too many open files)" and then how to install the worker."""
    import os
    import resource

    from qgis.core import QgsProcessingException

    worker = qs.plugin_module("processing_provider.worker")
    monkeypatch.setenv("HIRISEICE_WARM_WORKER", "0")
    monkeypatch.setenv(worker.ENV_VAR, misbehaving_worker(tmp_path, "echo never started"))  # made before the descriptors run out
    feedback = console_recording_feedback()
    with pytest.raises(QgsProcessingException, match="finished without a result"):  # every module the run needs imported while files open
        worker.run_worker(["info"], feedback)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # every descriptor number below the limit taken (the limit caps the numbers, and a gap below it would give the pipes room)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(int(fd) for fd in os.listdir("/proc/self/fd")) + 8, hard))
    fillers = []
    try:
        while True:
            try:
                fillers.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                break
        with pytest.raises(QgsProcessingException) as raised:
            worker.run_worker(["info"], feedback)
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert "cannot be started: too many files are open" in str(raised.value) and "ulimit -n" in str(raised.value), str(raised.value)
    assert "Reinstall" not in str(raised.value)


def test_a_crashed_survey_says_its_finished_images_stay_and_a_rerun_resumes(qgis_app):
    """A survey killed in the night had said only "crashed (SIGKILL) (out of memory?)" and forty lines of Dask."""
    WorkerRun = qs.plugin_module("processing_provider.worker").WorkerRun
    assert WorkerRun(["survey", "--rasters", "jp2/"]).crash_message(-9).startswith(
        "The worker crashed (SIGKILL) (out of memory? `journalctl -k | grep -i 'killed process'` or `dmesg` says whether the system ended it "
        "for memory). The images it had finished stay in its GeoPackage, and a rerun resumes after them.")
    assert "rerun" not in WorkerRun(["detect", "scene.tif"]).crash_message(-9)


def test_a_mistyped_worker_path_is_named_not_offered_an_install(qgis_app, monkeypatch, tmp_path):
    """A worker Python path with a typo had been told "not set up yet" and offered a 700 MB install."""
    plugin = qs.plugin_module("plugin.plugin").IcePatchesPlugin
    worker = qs.plugin_module("processing_provider.worker")
    typo = str(tmp_path / "bin" / "pyhton")
    monkeypatch.setenv(worker.ENV_VAR, typo)
    assert plugin._worker_missing() == f"the worker Python given by the environment variable {worker.ENV_VAR} ({typo}) cannot be started."


def test_an_exit_without_a_result_is_not_taken_for_success(run_with):
    exc, _ = run_with("echo '{\"type\": \"log\", \"message\": \"working\"}'\nexit 0")
    assert str(exc).startswith("The worker finished without a result.")


# TensorFlow's and matplotlib's start-up lines as a training worker printed them, before its first epoch
STARTUP_NOISE = r"""WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796691067.685260   31466 port.cc:153] oneDNN custom operations are on. You may see slightly different numerical results.
/venv/lib/python3.11/site-packages/matplotlib/projections/__init__.py:63: UserWarning: Unable to import Axes3D. This may be due to multiple versions.
  warnings.warn("Unable to import Axes3D. This may be due to multiple versions of "
E0000 00:00:1796691073.420883   31466 node_def_util.cc:682] NodeDef mentions attribute use_unbounded_threadpool which is not in the op definition
E0000 00:00:1796691073.908498   31466 meta_optimizer.cc:967] remapper failed: INVALID_ARGUMENT: Mutation::Apply error: fanout exists"""


def test_tensorflows_start_up_notices_are_not_shown_as_a_crashs_cause(run_with):
    """A killed training showed only these harmless lines as its 'last lines of error output', which read like the cause."""
    exc, _ = run_with("cat >&2 <<'EOF'\n" + STARTUP_NOISE + "\nEOF\necho 'RuntimeError: the real trouble' >&2\nexit 3")
    assert str(exc).endswith("Last lines of its error output:\nRuntimeError: the real trouble"), str(exc)


def test_an_error_status_without_a_message_says_so(run_with):
    exc, _ = run_with("echo 'Traceback (most recent call last): ...' >&2\nexit 3")
    assert str(exc).startswith("The worker stopped unexpectedly (exit status 3).") and "Traceback" in str(exc)


def test_the_engines_error_message_is_passed_on_alone(run_with):
    exc, feedback = run_with("echo '{\"type\": \"error\", \"code\": \"raster\", \"message\": \"The raster is damaged. Download it again.\"}'\nexit 2")
    assert str(exc) == "The raster is damaged. Download it again." and feedback.errors == []


def test_an_engine_module_gone_mid_run_is_blamed_on_the_plugin_folder_not_the_venv(qgis_app):
    """A plugin uninstalled while a training ran: 'lacks the package model ... Reinstall' sent the user to rebuild a 700 MB venv."""
    worker = qs.plugin_module("processing_provider.worker")
    said = worker.python_unfit("  File \"model/trainingjob.py\", line 257\nModuleNotFoundError: No module named 'model.report'", "/venv/bin/python")
    assert said.startswith("The plugin's own engine module model.report was missing to the worker: the plugin was updated or uninstalled"), said
    assert "lacks the package numpy:" in worker.python_unfit("ModuleNotFoundError: No module named 'numpy.core'", "/usr/bin/python3")


def test_a_python_too_old_for_the_engine_is_told_the_versions_the_installer_takes(qgis_app):
    """The message said 'Python 3.11 or 3.12' after the installer had come to take 3.13 as well."""
    worker = qs.plugin_module("processing_provider.worker")
    setup = qs.plugin_module("plugin.worker_setup")
    said = worker.python_unfit("  File \"model/__main__.py\", line 3\nSyntaxError: invalid syntax", "/usr/bin/python2")
    versions = f"{'.'.join(map(str, setup.OLDEST_PYTHON))} to {'.'.join(map(str, setup.NEWEST_PYTHON))}"
    assert f"Its Python (/usr/bin/python2) cannot read the engine's code: the worker needs Python {versions}." in said and versions == "3.11 to 3.13", said

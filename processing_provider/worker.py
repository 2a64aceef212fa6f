"""The client side of the worker: find the worker's Python, run ``python -m model --jsonl ...``
in it, relay its JSON lines to a QgsProcessingFeedback and hand back its result.

TensorFlow never enters the QGIS process (it aborts QGIS: DEVELOPERS.md), so everything that
needs the network runs in this subprocess. The protocol is model/protocol.py: one JSON object
per stdout line, ``progress`` / ``log`` / ``result`` / ``error``; other lines are logged and
otherwise ignored. stderr is kept (its tail) to explain a worker that dies.
"""

import collections
import contextlib
import json
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from qgis.core import QgsProcessingException, QgsProcessingFeedback, QgsSettings

from .engine import PLUGIN_FOLDER, files

partial_path = files.partial_path

ENV_VAR = "HIRISEICE_WORKER_PYTHON"
SETTINGS_KEY = "hiriseice/worker_python"

# How often the run loop looks at feedback.isCanceled(), and how long a cancelled worker gets
# to stop on SIGINT before its whole process group is killed.
POLL_SECONDS = 0.1
GRACE_SECONDS = 0.5
STDERR_LINES = 60

IS_WINDOWS = sys.platform.startswith("win")
PLUGIN_VENV = "the plugin's own environment"


# Only QgsProcessingException itself reaches the user as a clean message: QGIS reports a
# subclass of it as a Python error with a traceback. So all failures below raise it directly.


def default_worker_python() -> str:
    if IS_WINDOWS:
        return os.path.join(PLUGIN_FOLDER, ".venv", "Scripts", "python.exe")
    return os.path.join(PLUGIN_FOLDER, ".venv", "bin", "python")


def worker_candidates() -> List[Tuple[str, str]]:
    """(where it came from, path) in the order they are tried; empty entries are left out."""
    candidates = []
    from_env = os.environ.get(ENV_VAR, "").strip()
    if from_env:
        candidates.append((f"environment variable {ENV_VAR}", from_env))
    from_settings = str(QgsSettings().value(SETTINGS_KEY, "") or "").strip()
    if from_settings:
        candidates.append((f"QGIS setting {SETTINGS_KEY}", from_settings))
    candidates.append((PLUGIN_VENV, default_worker_python()))
    return candidates


def _usable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def how_to_install() -> str:
    return (
        f"Run scripts/install in the plugin folder ({PLUGIN_FOLDER}); it creates .venv/ with TensorFlow 2.21. "
        f"Or set the QGIS setting {SETTINGS_KEY} (menu HiRISE Ice Patches > Worker settings…) or the environment "
        f"variable {ENV_VAR} to a Python that has TensorFlow 2.21, Keras 3 and GDAL."
    )


def locate_worker() -> str:
    """The worker Python: the environment variable's or the setting's where one is given, else the plugin venv.

    A Python the user named explicitly but that is not there is an error, not a silent fall-back:
    the user meant that one.
    """
    for origin, path in worker_candidates():
        path = os.path.expanduser(path)
        if _usable(path):
            return path
        problem = "is not executable" if os.path.exists(path) else "does not exist"
        if origin != PLUGIN_VENV:
            raise QgsProcessingException(
                f"The worker Python given by the {origin} ({path}) {problem}. Correct it, or clear it to use the plugin's own "
                f".venv. " + how_to_install()
            )
        raise QgsProcessingException(
            f"HiRISE Ice Patches needs a separate Python with TensorFlow (the 'worker') and found none: {path} {problem}. " + how_to_install()
        )


def worker_environment() -> Dict[str, str]:
    env = dict(os.environ)
    # QGIS's own Python settings (PYTHONHOME on Windows/macOS builds, startup scripts) must not
    # leak into another interpreter; the worker imports only the plugin folder's model package.
    for name in ("PYTHONHOME", "PYTHONSTARTUP", "PYTHONEXECUTABLE"):
        env.pop(name, None)
    env["PYTHONPATH"] = PLUGIN_FOLDER
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def _remove_quietly(paths: Iterable[str]) -> None:
    for path in paths:
        try:
            if path and os.path.isfile(path):
                os.remove(path)
        except OSError:
            pass


def _start(command: Sequence[str]) -> subprocess.Popen:
    kwargs = dict(
        cwd=PLUGIN_FOLDER,
        env=worker_environment(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        encoding="utf-8",
        errors="replace",
        bufsize=1,
    )
    if IS_WINDOWS:
        kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
    else:
        kwargs["start_new_session"] = True  # its own process group, killed as a whole on cancel
    return subprocess.Popen(list(command), **kwargs)


# Signals that end QGIS or qgis_process without Python's KeyboardInterrupt (Ctrl-C already has one).
# The worker runs in its own session, so without a handler it outlives us with its partial files.
TERMINATING_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class TerminatedBySignal(Exception):
    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)


def _raise_terminated(signum, frame):
    raise TerminatedBySignal(signum)


@contextlib.contextmanager
def terminating_signals_raise():
    """Inside the block SIGTERM and SIGHUP raise TerminatedBySignal, so the run's cleanup kills the
    worker and removes its partial files. Python lets only the main thread (qgis_process's) set
    handlers; elsewhere (QGIS's task threads) the block changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _raise_terminated) for signum in TERMINATING_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _stop(process: subprocess.Popen) -> None:
    """SIGINT to the worker's process group, SIGKILL after GRACE_SECONDS; returns within ~1 s."""
    if process.poll() is not None:
        return
    try:
        if IS_WINDOWS:
            process.kill()
        else:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                pass
            # Also when the worker itself already left: children of it may still run.
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    except (ProcessLookupError, PermissionError, OSError):
        pass
    try:
        process.wait(1.0)
    except subprocess.TimeoutExpired:
        process.kill()


class WorkerRun:
    """One run of the worker. Use run_worker() unless you need the pieces."""

    def __init__(self, arguments: Sequence, feedback: Optional[QgsProcessingFeedback] = None, partial_outputs: Sequence[str] = ()):
        self.arguments = [str(a) for a in arguments]
        self.feedback = feedback or QgsProcessingFeedback()
        self.partial_outputs = list(partial_outputs)
        self.result: Optional[Dict] = None
        self.error: Optional[Dict] = None
        self.stderr_tail: "collections.deque[str]" = collections.deque(maxlen=STDERR_LINES)

    def command(self) -> List[str]:
        return [locate_worker(), "-m", "model", "--jsonl"] + self.arguments

    def _handle(self, line: str) -> None:
        text = line.strip()
        if not text:
            return
        try:
            message = json.loads(text)
        except ValueError:
            message = None
        if not isinstance(message, dict) or "type" not in message:
            # Something that is not the protocol (a library printing to stdout): log it, go on.
            self.feedback.pushConsoleInfo(text)
            return
        kind = message.get("type")
        if kind == "progress":
            try:
                self.feedback.setProgress(100.0 * min(1.0, max(0.0, float(message.get("fraction", 0.0)))))
            except (TypeError, ValueError):
                pass
        elif kind == "log":
            self.feedback.pushInfo(str(message.get("message", "")))
        elif kind == "warning":
            self.feedback.pushWarning(str(message.get("message", "")))
        elif kind == "result":
            self.result = {k: v for k, v in message.items() if k != "type"}
        elif kind == "error":
            self.error = message
        # Other kinds (future protocol additions) are ignored on purpose.

    def run(self) -> Dict:
        feedback = self.feedback
        command = self.command()
        feedback.pushCommandInfo(" ".join(shlex.quote(c) for c in command))
        if feedback.isCanceled():
            raise QgsProcessingException("Cancelled before the worker started; no output was written.")
        with terminating_signals_raise():
            try:
                return self._run_started(command)
            except TerminatedBySignal as exc:
                _remove_quietly(self.partial_outputs)
                raise QgsProcessingException(f"Stopped by {exc}: the worker was stopped and no output was written.") from None

    def _run_started(self, command: List[str]) -> Dict:
        feedback = self.feedback
        try:
            process = _start(command)
        except OSError as exc:
            raise QgsProcessingException(f"The worker Python '{command[0]}' cannot be started ({exc}). " + how_to_install()) from None

        lines: "queue.Queue[Optional[str]]" = queue.Queue()

        def pump_stdout():
            try:
                for line in process.stdout:
                    lines.put(line)
            except (OSError, ValueError):
                pass
            finally:
                lines.put(None)

        def pump_stderr():
            try:
                for line in process.stderr:
                    self.stderr_tail.append(line.rstrip("\n"))
            except (OSError, ValueError):
                pass

        readers = [threading.Thread(target=pump_stdout, name="hiriseice-worker-stdout", daemon=True),
                   threading.Thread(target=pump_stderr, name="hiriseice-worker-stderr", daemon=True)]
        exited_at = None
        try:
            for reader in readers:
                reader.start()
            while True:
                if feedback.isCanceled():
                    _stop(process)
                    _remove_quietly(self.partial_outputs)
                    raise QgsProcessingException("Cancelled by the user: the worker was stopped and no output was written.")
                try:
                    line = lines.get(timeout=POLL_SECONDS)
                except queue.Empty:
                    # A grandchild can keep stdout open after the worker itself has gone.
                    if process.poll() is not None:
                        exited_at = exited_at or time.monotonic()
                        if time.monotonic() - exited_at > 5.0:
                            break
                    continue
                if line is None:
                    break
                self._handle(line)
            returncode = process.wait()
        finally:
            if process.poll() is None:  # an exception above, e.g. from a feedback slot
                _stop(process)
            for reader in readers:
                if reader.ident is not None:
                    reader.join(1.0)
            for stream in (process.stdout, process.stderr):
                try:
                    stream.close()
                except OSError:
                    pass

        if self.error is not None:
            _remove_quietly(self.partial_outputs)
            raise QgsProcessingException(str(self.error.get("message") or self.error.get("code") or "The worker reported an error."))
        if returncode != 0 or self.result is None:
            _remove_quietly(self.partial_outputs)
            raise QgsProcessingException(self.crash_message(returncode))
        return self.result

    def crash_message(self, returncode: int) -> str:
        tail = "\n".join(self.stderr_tail) or "(nothing on stderr)"
        if returncode == 0:
            head = "The worker finished without a result."
        elif returncode < 0:
            try:
                name = signal.Signals(-returncode).name
            except ValueError:
                name = f"signal {-returncode}"
            why = " (out of memory?)" if name == "SIGKILL" else ""
            head = f"The worker crashed ({name}){why}."
        else:
            head = f"The worker stopped unexpectedly (exit status {returncode})."
        hint = ""
        if any(f"No module named '{name}" in tail for name in ("tensorflow", "keras", "numpy", "osgeo")):
            hint = " Its Python lacks a package. " + how_to_install()
        return f"{head}{hint} Last lines of its error output:\n{tail}"


def run_worker(arguments: Sequence, feedback: Optional[QgsProcessingFeedback] = None, partial_outputs: Sequence[str] = ()) -> Dict:
    """Run ``<worker python> -m model --jsonl <arguments>`` and return its result message.

    Raises QgsProcessingException with the engine's own message on an input problem, with the
    tail of stderr when the worker crashes, when feedback is cancelled (after killing the
    worker), and when there is no worker Python. partial_outputs are files
    removed after a failure (the engine's half-written temporaries).
    """
    return WorkerRun(arguments, feedback, partial_outputs).run()

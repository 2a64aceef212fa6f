"""The client side of the worker: find the worker's Python, run ``python -m model --jsonl ...``
in it, relay its JSON lines to a QgsProcessingFeedback and hand back its result.

Detect runs in a warm worker (WarmWorker: ``python -m model --jsonl serve``), kept by this QGIS
process between algorithm runs, one per worker Python: the toolbox's batch and processing.run in
a loop pay for TensorFlow and the model once. It is started on first use, stopped on cancel (the
next run starts a fresh one), replaced when it died or does not answer, and stopped when QGIS
exits or the provider unloads. qgis_process runs one algorithm per process, so there each detect
starts its own, unless HIRISEICE_SESSION_WORKER asks for one shared by the runs of a shell's loop
(session_worker.py). HIRISEICE_WARM_WORKER=0 (or the QGIS setting hiriseice/warm_worker = false)
switches the warm worker off.

TensorFlow never enters the QGIS process (it aborts QGIS: DEVELOPERS.md), so everything that
needs the network runs in this subprocess. The protocol is model/protocol.py: one JSON object
per stdout line, ``progress`` / ``log`` / ``result`` / ``error``; other lines are logged and
otherwise ignored. stderr is kept (its tail) to explain a worker that dies.
"""

import atexit
import collections
import contextlib
import errno
import json
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple

from qgis.core import Qgis, QgsApplication, QgsProcessingException, QgsProcessingFeedback, QgsSettings

from .engine import ENGINE_VERSION, PLUGIN_FOLDER, errors, files, worker_pythons_text

partial_path = files.partial_path

ENV_VAR = "HIRISEICE_WORKER_PYTHON"
SETTINGS_KEY = "hiriseice/worker_python"
WARM_ENV_VAR = "HIRISEICE_WARM_WORKER"
WARM_SETTINGS_KEY = "hiriseice/warm_worker"
# The commands run in the warm worker: those that load the network (model/__main__.py serves these).
WARM_COMMANDS = ("detect",)

# How often the run loop looks at feedback.isCanceled(), and how long a cancelled worker gets
# to stop on SIGINT before its whole process group is killed.
POLL_SECONDS = 0.1
GRACE_SECONDS = 0.5
STDERR_LINES = 60
# TensorFlow's start-up notices (oneDNN, CPU features, its graph optimiser's routine complaints, absl's banner; matplotlib's about
# Debian's 3D toolkit beside the venv's), printed before any
# work and harmless: kept out of the error output a crash shows, where a geologist took them for its cause.
TENSORFLOW_NOISE = re.compile(r"^(?:[IWE]\d{4} [\d:.]+\s+\d+ (?:port|node_def_util|meta_optimizer|cpu_feature_guard|cpu_allocator_impl)\.cc:\d+\]"
                              r"|WARNING: All log messages before absl::InitializeLog|To enable the following instructions"
                              r"|This TensorFlow binary is optimized|.*UserWarning: Unable to import Axes3D|\s+warnings\.warn\(\"Unable to import Axes3D)")
# An idle warm worker answers a job at once; one that has not within this time is hung and replaced.
ANSWER_SECONDS = 30.0
# A detect whose worker says nothing for this long is stopped: every chunk read and scored says how far it
# got, so silence is a read that never returns (a share that stopped answering, a VRT source that waits, a
# stopped process). Longer than the one silent phase by design, a model's first export for ONNX Runtime
# (runtime.EXPORT_TIMEOUT_SECONDS, 15 min), as long as the survey's limit per image. HIRISEICE_SILENCE_SECONDS
# sets it; 0: no limit.
SILENCE_SECONDS = 1800.0

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


# Written into a worker venv while the installer fills it, removed once the new worker passed its
# check: a venv an install left unfinished (pip failed, QGIS closed) is no worker.
INSTALLING_MARKER = "hiriseice-installing"


def unfinished_install(python: str) -> bool:
    """Whether ``python`` is that of a venv whose install did not finish (INSTALLING_MARKER)."""
    folder = os.path.dirname(os.path.dirname(os.path.abspath(python)))  # <venv>/bin/python, <venv>\Scripts\python.exe
    return os.path.isfile(os.path.join(folder, INSTALLING_MARKER))


def _usable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK) and not unfinished_install(path)


def how_to_install() -> str:
    # a plugin folder others installed (read-only to this user) takes no .venv
    in_checkout = (f"In a checkout of the plugin's source on Debian or Ubuntu, `bash scripts/install` ({PLUGIN_FOLDER}) creates .venv/ there instead "
                   "(a plugin installed from a zip loses that folder at its next upgrade). ") if not (os.path.isdir(PLUGIN_FOLDER) and files.write_refused_in(PLUGIN_FOLDER)) else ""
    return (
        "In the QGIS desktop: menu HiRISE Ice Patches > Worker settings… > Reinstall… installs it (a venv with TensorFlow 2.21). "
        "It lives in your QGIS profile and outlives the plugin's upgrades. "
        + in_checkout +
        f"Or set the QGIS setting {SETTINGS_KEY} (Worker settings…) or the environment "
        f"variable {ENV_VAR} to a Python that has TensorFlow 2.21, Keras 3 and GDAL."
    )


def not_started_message(python: str, exc: OSError) -> str:
    """Why the worker Python could not be started, and the fix: a limit reached is no missing install."""
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        return (f"The worker Python '{python}' cannot be started: too many files are open ({exc.strerror}). Raise the open-files limit "
                "(ulimit -n, e.g. 4096) or close other programs, and run again.")
    if exc.errno in (errno.ENOMEM, errno.EAGAIN):
        return (f"The worker Python '{python}' cannot be started: the system has no memory or processes to spare ({exc.strerror}). "
                "Close other programs (or raise ulimit -u / -v), and run again.")
    return f"The worker Python '{python}' cannot be started ({exc}). " + how_to_install()


def locate_worker() -> str:
    """The worker Python: the environment variable's or the setting's where one is given, else the plugin venv.

    A Python the user named explicitly but that is not there is an error, not a silent fall-back:
    the user meant that one.
    """
    for origin, path in worker_candidates():
        path = os.path.expanduser(path)
        if _usable(path):
            return path
        problem = ("belongs to a worker whose install did not finish (reinstall it)" if os.path.isfile(path) and unfinished_install(path)
                   else "is not executable" if os.path.exists(path) else "does not exist")
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
    if env.get("HIRISEICE_CACHE_DIR"):  # meant from where QGIS was started: the worker runs in the plugin folder, which an update replaces
        env["HIRISEICE_CACHE_DIR"] = os.path.abspath(env["HIRISEICE_CACHE_DIR"])
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def _start(command: Sequence[str], stdin=subprocess.DEVNULL) -> subprocess.Popen:
    kwargs = dict(
        cwd=PLUGIN_FOLDER,
        env=dict(worker_environment(), HIRISEICE_CLIENT_PID=str(os.getpid())),  # whose death the worker watches for
        stdin=stdin,
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
# SIGINT too: qgis_process's own handler cancels only at the run's next progress or log line, so Ctrl-C waited on
# a hung read (a survey's image on a dead network drive) for its 30 minutes.
TERMINATING_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP", "SIGINT") if hasattr(signal, name))


# What a survey stopped midway leaves
SURVEY_KEEPS = "the images it had finished stay in its GeoPackage, and a rerun resumes after them"


class TerminatedBySignal(Exception):
    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)


def _raise_terminated(signum, frame):
    raise TerminatedBySignal(signum)


@contextlib.contextmanager
def terminating_signals_raise():
    """Inside the block SIGTERM, SIGHUP and SIGINT raise TerminatedBySignal, so the run's cleanup kills the
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


def read_lines(stream, lines: "queue.Queue[Optional[str]]", name: str) -> threading.Thread:
    """A started thread that puts the stream's lines on `lines`, and None at its end (a worker's
    stdout, or a session worker's connection)."""

    def pump():
        try:
            for line in stream:
                lines.put(line)
        except (OSError, ValueError):
            pass
        finally:
            lines.put(None)

    reader = threading.Thread(target=pump, name=name, daemon=True)
    reader.start()
    return reader


def _pump(process: subprocess.Popen, lines: "queue.Queue[Optional[str]]", stderr_tail: "collections.deque[str]") -> List[threading.Thread]:
    """Started threads that put the worker's stdout lines on `lines` (None at its end) and keep the tail of its stderr."""

    def pump_stderr():
        try:
            for line in process.stderr:
                if not TENSORFLOW_NOISE.match(line):
                    stderr_tail.append(line.rstrip("\n"))
        except (OSError, ValueError):
            pass

    stderr_reader = threading.Thread(target=pump_stderr, name="hiriseice-worker-stderr", daemon=True)
    stderr_reader.start()
    return [read_lines(process.stdout, lines, "hiriseice-worker-stdout"), stderr_reader]


def _close_pipes(process: subprocess.Popen, readers: Sequence[threading.Thread]) -> None:
    for reader in readers:
        reader.join(1.0)
    for stream in (process.stdin, process.stdout, process.stderr):
        try:
            if stream is not None:
                stream.close()
        except OSError:
            pass


def silence_seconds() -> float:
    try:
        return max(0.0, float(os.environ.get("HIRISEICE_SILENCE_SECONDS", SILENCE_SECONDS)))
    except ValueError:
        return SILENCE_SECONDS


class WorkerSaid(QgsProcessingException):
    """The error the worker itself reported, with its code ("labels", "raster", "memory"…: model/errors.py): a message in
    words, with its fix, rather than a crash."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


class WorkerUnresponsive(Exception):
    """A warm worker that did not take its job (hung, or gone before it read it)."""


class WorkerRun:
    """One run of the worker in a process of its own. Use run_worker() unless you need the pieces."""

    STOPPED = "the worker was stopped"  # what cancel and SIGTERM did, for their message

    def __init__(self, arguments: Sequence, feedback: Optional[QgsProcessingFeedback] = None, partial_outputs: Sequence[str] = ()):
        self.arguments = [str(a) for a in arguments]
        self.feedback = feedback or QgsProcessingFeedback()
        self.partial_outputs = list(partial_outputs)
        self.result: Optional[Dict] = None
        self.error: Optional[Dict] = None
        self.stderr_tail: "collections.deque[str]" = collections.deque(maxlen=STDERR_LINES)
        self.job_id = None  # a warm worker's lines carry their job's id; a one-shot worker's none
        self.answered = False
        self.silence_limit = silence_seconds() if self.arguments[:1] == ["detect"] else 0.0
        self.status: Optional[int] = None  # a warm worker's job ends with its exit status
        self.python = ""  # the worker Python, once located

    def command(self, python: str) -> List[str]:
        return [python, "-m", "model", "--jsonl"] + self.arguments

    @property
    def left_behind(self) -> str:
        """What a stopped run leaves, for its message: a survey keeps each image it finished."""
        if self.arguments and self.arguments[0] == "survey":
            return SURVEY_KEEPS
        return "no output was written"

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
        if message.get("id") != self.job_id:
            return  # not this run's job
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
            self.result = {k: v for k, v in message.items() if k not in ("type", "id")}
        elif kind == "error":
            self.error = message
        elif kind == "started":
            self.answered = True
        elif kind == "done":
            self.status = int(message.get("status", 1))
        elif kind == "written" and message.get("path"):  # put in place by the worker: removed with the partial files if the run fails
            self.partial_outputs.append(str(message["path"]))
        # Other kinds (future protocol additions) are ignored on purpose.

    def run(self) -> Dict:
        self.python = locate_worker()
        with terminating_signals_raise():
            try:
                returncode = self._execute(self.python)
            except TerminatedBySignal as exc:
                files.remove_quietly(self.partial_outputs)
                raise QgsProcessingException(f"Stopped by {exc}: {self.STOPPED} and {self.left_behind}.") from None
        if self.error is not None:
            files.remove_quietly(self.partial_outputs)
            raise WorkerSaid(str(self.error.get("message") or self.error.get("code") or "The worker reported an error."), str(self.error.get("code") or ""))
        if returncode != 0 or self.result is None:
            files.remove_quietly(self.partial_outputs)
            raise QgsProcessingException(self.crash_message(returncode))
        return self.result

    def _announce(self, command_text: str) -> None:
        # the versions a pasted log needs to be a bug report (Check worker, or `python -m model info`, gives the worker's packages)
        self.feedback.pushInfo(f"HiRISE Ice Patches {ENGINE_VERSION} on QGIS {Qgis.version()}; the worker's command:")
        self.feedback.pushCommandInfo(command_text)
        if self.feedback.isCanceled():
            raise QgsProcessingException("Cancelled before the worker started; no output was written.")

    def _execute(self, python: str) -> int:
        """Runs the command in a worker of its own; its exit status."""
        command = self.command(python)
        self._announce(" ".join(shlex.quote(c) for c in command))
        try:
            process = _start(command)
        except OSError as exc:
            raise QgsProcessingException(not_started_message(command[0], exc)) from None
        lines: "queue.Queue[Optional[str]]" = queue.Queue()
        readers = []
        try:
            readers = _pump(process, lines, self.stderr_tail)  # its threads may not start (no memory for their stacks)
            self._relay(process, lines)
            return process.wait()
        except RuntimeError as exc:
            if not errors.out_of_memory(exc):
                raise
            raise QgsProcessingException("QGIS ran out of memory to follow the worker (it could not start a thread). Close other programs "
                                         "or layers, and run again; no output was written.") from None
        finally:
            if process.poll() is None:  # an exception above, e.g. from a feedback slot
                _stop(process)
            _close_pipes(process, readers)

    def _relay(self, process: subprocess.Popen, lines: "queue.Queue[Optional[str]]", answer_within: Optional[float] = None) -> None:
        """Hands the worker's lines to _handle until its stdout ends or its job is done. Cancel stops the
        worker and removes the partial outputs; no "started" line within answer_within seconds raises
        WorkerUnresponsive."""
        sent_at = heard_at = time.monotonic()
        exited_at = None
        while self.status is None:
            if self.feedback.isCanceled():
                self._stop_worker(process)
                files.remove_quietly(self.partial_outputs)
                raise QgsProcessingException(f"Cancelled by the user: {self.STOPPED} and {self.left_behind}.")
            try:
                line = lines.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if answer_within is not None and not self.answered and time.monotonic() - sent_at > answer_within:
                    raise WorkerUnresponsive() from None
                if self.silence_limit and time.monotonic() - heard_at > self.silence_limit and process.poll() is None:
                    self._stop_silent_worker(process)
                    files.remove_quietly(self.partial_outputs)
                    raise QgsProcessingException(
                        f"The worker said nothing for {self.silence_limit:g} s while detecting, where every chunk says how far it got: a read "
                        f"that never returns (a network share that stopped answering, a VRT whose source waits) or a stopped process. "
                        f"{self.STOPPED[0].upper()}{self.STOPPED[1:]} and {self.left_behind}. Check that the raster reads (gdalinfo -checksum), "
                        "then run again; HIRISEICE_SILENCE_SECONDS sets this limit (0: none)."
                    ) from None
                # A grandchild can keep stdout open after the worker itself has gone.
                if process.poll() is not None:
                    exited_at = exited_at or time.monotonic()
                    if time.monotonic() - exited_at > 5.0:
                        return
                continue
            if line is None:
                return
            heard_at = time.monotonic()
            self._handle(line)

    def _stop_worker(self, process) -> None:
        """Cancel: the worker process (its whole group) stops."""
        _stop(process)

    def _stop_silent_worker(self, process) -> None:
        """Silence: a worker stuck in a read is no use to any later job either, so it stops too."""
        _stop(process)

    def crash_message(self, returncode: int) -> str:
        tail = "\n".join(self.stderr_tail) or "(nothing on stderr)"
        if returncode == 0:
            head = "The worker finished without a result."
        elif returncode < 0:
            try:
                name = signal.Signals(-returncode).name
            except ValueError:
                name = f"signal {-returncode}"
            # the system's log names what the kernel's out-of-memory killer ended
            why = (" (out of memory? `journalctl -k | grep -i 'killed process'` or `dmesg` says whether the system ended it for memory)"
                   if name == "SIGKILL" and sys.platform.startswith("linux") else " (out of memory?)" if name == "SIGKILL" else "")
            head = f"The worker crashed ({name}){why}."
            if name == "SIGABRT" and not self.stderr_tail:
                # under a memory limit (ulimit -v, a container's) a library aborts a thread's start before anything is said
                head += (" With nothing on its error output this is most often memory: close other programs, lower BATCH_SIZE (or give a "
                         "survey fewer WORKERS) or raise the memory limit of the process (ulimit -v), and run again.")
        else:
            head = f"The worker stopped unexpectedly (exit status {returncode})."
        unfit = python_unfit(tail, self.python)
        if unfit:
            return f"{head} {unfit}"
        if errors.out_of_memory(tail):
            return (f"{head} It ran out of memory: close other programs, lower BATCH_SIZE (or give a survey fewer WORKERS), and run again. "
                    f"Its error output ends: {tail.splitlines()[-1].strip()}")
        hint = f" {self.left_behind[0].upper()}{self.left_behind[1:]}." if self.arguments and self.arguments[0] == "survey" else ""
        return f"{head}{hint} Last lines of its error output:\n{tail}"


def python_unfit(tail: str, python: str) -> str:
    """Why the worker Python cannot run the engine, read from the end of its error output; '' when that is not why it stopped."""
    missing = re.search(r"No module named '([\w.]+)", tail)
    if missing and missing.group(1).split(".")[0] == "model":  # the engine's own: the plugin folder changed under the run
        return (f"The plugin's own engine module {missing.group(1)} was missing to the worker: the plugin was updated or uninstalled while "
                "the run went on. Run it again (no output it had not finished is to be trusted).")
    if missing:  # a Python that is not the worker's venv (QGIS's own, most often): its traceback says no more than this
        return (f"Its Python ({python}) lacks the package {missing.group(1).split('.')[0]}: it is not the worker's venv, or that venv is "
                f"incomplete. {how_to_install()} Its error output ends: {tail.splitlines()[-1].strip()}")
    if "SyntaxError" in tail:  # a Python 2, or a Python 3 too old for the engine's code
        return (f"Its Python ({python}) cannot read the engine's code: the worker needs Python {worker_pythons_text()}. {how_to_install()} "
                f"Its error output ends: {tail.splitlines()[-1].strip()}")
    return ""


# --- the warm worker ------------------------------------------------------------------------


class WarmWorker:
    """``<python> -m model --jsonl serve``: one worker process that runs job after job, one JSON line
    each on its stdin, with TensorFlow and the model kept loaded (model/__main__.py: serve)."""

    def __init__(self, python: str):
        self.python = python
        self.process = _start([python, "-m", "model", "--jsonl", "serve"], stdin=subprocess.PIPE)
        self.lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self.stderr_tail: "collections.deque[str]" = collections.deque(maxlen=STDERR_LINES)
        self.readers = _pump(self.process, self.lines, self.stderr_tail)
        self.jobs = 0
        self.busy = False
        self.closed_because = ""  # why close_warm_workers stopped it, for the run it was serving

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def send(self, arguments: Sequence[str]) -> int:
        """Sends a job; its id."""
        self.jobs += 1
        job = {"id": self.jobs, "command": arguments[0], "arguments": list(arguments[1:])}
        try:
            self.process.stdin.write(json.dumps(job) + "\n")
            self.process.stdin.flush()
        except (OSError, ValueError):
            pass  # a worker gone shows as the end of its stdout
        return self.jobs

    def stop(self) -> None:
        _stop(self.process)
        _close_pipes(self.process, self.readers)


_warm_workers: Dict[str, WarmWorker] = {}
_warm_lock = threading.Lock()


def warm_worker_enabled() -> bool:
    """HIRISEICE_WARM_WORKER where set, else the QGIS setting hiriseice/warm_worker; on unless 0/false/no/off."""
    value = os.environ.get(WARM_ENV_VAR)
    if value is None:
        value = QgsSettings().value(WARM_SETTINGS_KEY, "true")
    return str(value).strip().lower() not in ("0", "false", "no", "off")


def uses_warm_worker(arguments: Sequence) -> bool:
    return bool(arguments) and str(arguments[0]) in WARM_COMMANDS and warm_worker_enabled() and QgsApplication.platform() != "qgis_process"


def _check_out_warm_worker(python: str) -> Optional[WarmWorker]:
    """This Python's warm worker, started where there is none or it died; None while it runs another job."""
    with _warm_lock:
        worker = _warm_workers.get(python)
        if worker is not None and worker.busy:
            return None
        if worker is not None and not worker.alive():
            worker.stop()
            worker = None
        if worker is None:
            try:
                worker = WarmWorker(python)
            except OSError as exc:
                raise QgsProcessingException(not_started_message(python, exc)) from None
            _warm_workers[python] = worker
        worker.busy = True
        return worker


def _check_in_warm_worker(worker: WarmWorker, keep: bool) -> None:
    with _warm_lock:
        worker.busy = False
        if keep:
            return
        if _warm_workers.get(worker.python) is worker:
            del _warm_workers[worker.python]
    worker.stop()


def close_warm_workers(because: str = "QGIS closed") -> None:
    """Stops every warm worker (QGIS exits, the provider unloads); a run still in one fails, saying because."""
    with _warm_lock:
        workers = list(_warm_workers.values())
        _warm_workers.clear()
    for worker in workers:
        worker.closed_because = because
        worker.stop()


atexit.register(close_warm_workers)


class WarmRun(WorkerRun):
    """One run as a job of the warm worker; a run of its own while that worker is busy with another."""

    def _execute(self, python: str) -> int:
        worker = _check_out_warm_worker(python)
        if worker is None:
            return super()._execute(python)
        if worker.jobs:
            try:
                return self._execute_in(worker, reused=True)
            except WorkerUnresponsive:
                self.feedback.pushInfo(f"The warm worker (pid {worker.pid}) did not take the job; starting a new one.")
                worker = _check_out_warm_worker(python)
                if worker is None:
                    return super()._execute(python)
        return self._execute_in(worker, reused=False)

    def _execute_in(self, worker: WarmWorker, reused: bool) -> int:
        """The job's exit status. WorkerUnresponsive where a reused worker did not take the job (hung, or
        gone since the last): it did nothing, so a new worker can run it. A worker just started gets no
        time limit (its Python starts first) and its death is this run's crash."""
        keep = True  # until the job is sent the worker is as good as it was
        try:
            self.stderr_tail = worker.stderr_tail
            self._announce(" ".join(shlex.quote(c) for c in self.command(worker.python)) + f"  (job {worker.jobs + 1} of the warm worker, pid {worker.pid})")
            keep = False  # a job that does not end cleanly leaves the worker in an unknown state: stop it
            self.job_id = worker.send(self.arguments)
            self._relay(worker.process, worker.lines, ANSWER_SECONDS if reused else None)
            if worker.closed_because and self.status != 0:  # not the user's cancel, which the worker took its stop for
                self.error = {"code": "stopped", "message": f"Stopped because {worker.closed_because}: {self.STOPPED} and {self.left_behind}. Run it again."}
                return 2
            if self.status is None:  # its stdout ended: the worker died
                if reused and not self.answered:
                    raise WorkerUnresponsive()
                return worker.process.wait()
            keep = self.status in (0, 2) and worker.alive()
            return self.status
        finally:
            _check_in_warm_worker(worker, keep)


def run_worker(arguments: Sequence, feedback: Optional[QgsProcessingFeedback] = None, partial_outputs: Sequence[str] = ()) -> Dict:
    """Run ``<worker python> -m model --jsonl <arguments>`` and return its result message; detect as a
    job of the warm worker (uses_warm_worker), or in qgis_process of the session worker (session_worker.py).

    Raises QgsProcessingException with the engine's own message on an input problem, with the
    tail of stderr when the worker crashes, when feedback is cancelled (after killing the
    worker), and when there is no worker Python. partial_outputs are files
    removed after a failure (the engine's half-written temporaries).
    """
    from .session_worker import SessionRun, uses_session_worker  # it builds on this module's runs

    run = SessionRun if uses_session_worker(arguments) else WarmRun if uses_warm_worker(arguments) else WorkerRun
    return run(arguments, feedback, partial_outputs).run()

"""The session worker, the client side: one warm worker shared by separate qgis_process runs.

qgis_process runs one algorithm per process, so the QGIS desktop's warm worker (worker.WarmRun)
cannot outlive it. With HIRISEICE_SESSION_WORKER set to a number of minutes (or on), detect in
qgis_process hands its job to ``python -m model --jsonl serve --listen SOCKET`` (model/session.py),
started by the first run, found by the next over a Unix socket in a folder only this user may
open, and ending by itself after that many minutes without a job. A run that finds it busy (a
second qgis_process at the same time) runs a worker of its own; one that finds it hung replaces it.
The socket's name depends on the worker Python, the plugin folder, the engine's code and the
environment the worker gets (but HIRISEICE_SESSION_WORKER's own minutes), so a changed plugin or setting never meets an old worker.
Not on Windows (no Unix sockets there for Python): each run starts its own worker as before.
"""

import collections
import contextlib
import hashlib
import json
import os
import queue
import shlex
import signal
import subprocess
import tempfile
import time
import warnings
from typing import Optional

from qgis.core import QgsApplication, QgsProcessingException

from .engine import PLUGIN_FOLDER
from .worker import (ANSWER_SECONDS, IS_WINDOWS, STDERR_LINES, WARM_COMMANDS, WorkerRun, WorkerUnresponsive, not_started_message, python_unfit,
                     read_lines, worker_environment)

SESSION_ENV_VAR = "HIRISEICE_SESSION_WORKER"
DEFAULT_IDLE_MINUTES = 10.0
# A worker Python imports the engine before it listens: well under a second here.
LISTEN_SECONDS = 30.0
SOCKET_PATH_BYTES = 107  # a Unix socket's path: 108 bytes with the NUL that ends it
# The environment a worker's results depend on; the rest (PWD, a shell's own variables) may change
# from one run of a loop to the next without needing another worker.
WORKER_VARIABLES = ("HIRISEICE_", "GDAL_", "CPL_", "PROJ_", "TF_", "OMP_", "ORT_", "PYTHON", "PATH", "LD_", "DYLD_", "HOME", "XDG_CACHE_HOME")

if not IS_WINDOWS:
    import fcntl
    import socket


def idle_minutes() -> float:
    """HIRISEICE_SESSION_WORKER as minutes: a number, or on/true/yes for DEFAULT_IDLE_MINUTES; 0 (off) otherwise."""
    value = os.environ.get(SESSION_ENV_VAR, "").strip().lower()
    if value in ("on", "true", "yes"):
        return DEFAULT_IDLE_MINUTES
    try:
        return max(0.0, float(value))
    except ValueError:
        return 0.0


def uses_session_worker(arguments) -> bool:
    return (not IS_WINDOWS and bool(arguments) and str(arguments[0]) in WARM_COMMANDS
            and QgsApplication.platform() == "qgis_process" and idle_minutes() > 0)


# The system's temporary folder, the last place tried for the socket's folder.
SHARED_TEMPORARY = "/tmp"


def session_socket(python: str) -> str:
    """This user's socket for this worker Python, plugin, engine code and worker environment: under
    XDG_RUNTIME_DIR, else the temporary folder, else /tmp, the first where its path fits a socket's
    107 bytes (counted in bytes: a Cyrillic folder name takes two for each letter)."""
    engine = os.path.join(PLUGIN_FOLDER, "model")
    stamps = sorted((name, os.stat(os.path.join(root, name)).st_mtime_ns) for root, _dirs, names in os.walk(engine)
                    for name in names if name.endswith(".py"))
    # not the session option itself: a loop that changed only the idle minutes had started a second worker beside the first
    environment = sorted((name, value) for name, value in worker_environment().items() if name.startswith(WORKER_VARIABLES) and name != SESSION_ENV_VAR)
    key = hashlib.sha1(json.dumps([python, PLUGIN_FOLDER, stamps, environment]).encode()).hexdigest()[:12]
    private, name = f"hiriseice-{os.getuid()}", f"worker-{key}.sock"
    runtimes = [runtime for runtime in (os.environ.get("XDG_RUNTIME_DIR"), tempfile.gettempdir(), SHARED_TEMPORARY) if runtime]
    fitting = [runtime for runtime in runtimes if len(os.fsencode(os.path.join(runtime, private, name))) <= SOCKET_PATH_BYTES]
    if not fitting:
        raise QgsProcessingException(f"The session worker's socket would lie too deep for a Unix socket (107 bytes) in {', '.join(runtimes)}: "
                                     f"set TMPDIR to a short folder, or unset {SESSION_ENV_VAR}.")
    refused = []
    for runtime in fitting:  # one this user cannot write (another user's XDG_RUNTIME_DIR kept by su, a node's missing one) is passed over
        folder = os.path.join(runtime, private)
        try:
            os.makedirs(folder, mode=0o700, exist_ok=True)
            break
        except OSError as exc:
            refused.append(f"{runtime} ({exc.strerror or exc})")
    else:
        raise QgsProcessingException(f"The session worker's socket cannot be made in {', '.join(refused)}: set XDG_RUNTIME_DIR or TMPDIR to a "
                                     f"folder you can write to, or unset {SESSION_ENV_VAR}.")
    status = os.stat(folder)
    if status.st_uid != os.getuid() or status.st_mode & 0o077:
        raise QgsProcessingException(f"{folder} is not this user's private folder, so the session worker cannot use it: "
                                     f"remove it, or unset {SESSION_ENV_VAR}.")
    return os.path.join(folder, name)


class _Connection:
    """What WorkerRun._relay needs of a worker: poll() (a session worker outlives the run) and lines."""

    def __init__(self, connection: "socket.socket"):
        self.connection = connection
        self.stream = connection.makefile("rw", encoding="utf-8", newline="\n")
        self.lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self.reader = read_lines(self.stream, self.lines, "hiriseice-session-worker")

    def poll(self) -> Optional[int]:
        return None

    def send(self, job: dict) -> None:
        try:
            self.stream.write(json.dumps(job) + "\n")
            self.stream.flush()
        except OSError:
            pass  # a worker gone shows as the end of its lines

    def close(self) -> None:
        """Ends the connection: a job still running stops at its next line and removes its partial outputs."""
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        for closing in (self.stream, self.connection):
            try:
                closing.close()
            except OSError:
                pass
        self.reader.join(1.0)


class SessionRun(WorkerRun):
    """One detect as a job of the session worker; a worker of its own while another run holds it."""

    STOPPED = "its job in the session worker was stopped"
    ended_midway: Optional[int] = None  # the pid of a session worker that ended during this run's job

    def _execute(self, python: str) -> int:
        path = self.socket_path = session_socket(python)
        with open(path + ".lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                self.feedback.pushInfo("The session worker is busy with another run; this run starts a worker of its own.")
                self.STOPPED = WorkerRun.STOPPED
                return super()._execute(python)
            connection = self._connect(path)
            if connection is not None:
                try:
                    return self._execute_in(connection, path, reused=True)
                except WorkerUnresponsive:
                    self.feedback.pushInfo("The session worker did not take the job; starting a new one.")
                    _kill(path)
            with warnings.catch_warnings():
                # Python warns of a child left running when its Popen goes; the session worker outlives this run by design.
                warnings.simplefilter("ignore", ResourceWarning)
                connection = self._start(python, path)
            return self._execute_in(connection, path, reused=False)

    @staticmethod
    def _connect(path: str) -> Optional[_Connection]:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            client.connect(path)
        except OSError:  # none there, or one that has just ended
            client.close()
            return None
        return _Connection(client)

    def _start(self, python: str, path: str) -> _Connection:
        _unlink(path)  # the socket of a worker that did not end cleanly
        minutes = idle_minutes()
        # the last worker's log moves aside, not over: the rerun an error asks for had wiped the traceback it pointed to
        with contextlib.suppress(OSError):
            os.replace(path + ".log", path + ".log.1")
        with open(path + ".log", "w", encoding="utf-8") as log:
            try:
                process = subprocess.Popen([python, "-m", "model", "--jsonl", "serve", "--listen", path, "--idle-minutes", str(minutes)],
                                           cwd=PLUGIN_FOLDER, env=worker_environment(), stdin=subprocess.DEVNULL, stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as exc:
                raise QgsProcessingException(not_started_message(python, exc)) from None
        with open(path + ".pid", "w", encoding="utf-8") as pid_file:
            pid_file.write(str(process.pid))
        self.feedback.pushInfo(f"Started the session worker (pid {process.pid}); it ends after {minutes:g} min without a job.")
        deadline = time.monotonic() + LISTEN_SECONDS
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise QgsProcessingException(f"The session worker stopped before it listened (exit status {process.returncode}). "
                                             f"Last lines of its log ({path}.log):\n{_tail(path)}\nUnset {SESSION_ENV_VAR} to run each detect on its own.")
            connection = self._connect(path)
            if connection is not None:
                return connection
            time.sleep(0.05)
        _kill(path)
        raise QgsProcessingException(f"The session worker did not listen within {LISTEN_SECONDS:g} s; it was stopped. Unset {SESSION_ENV_VAR} "
                                     "to run each detect on its own.")

    def _execute_in(self, connection: _Connection, path: str, reused: bool) -> int:
        """The job's exit status; WorkerUnresponsive where a reused worker did not take it (it did nothing)."""
        try:
            pid = _pid(path)
            self._announce(" ".join(shlex.quote(c) for c in self.command(self.python)) + f"  (a job of the session worker, pid {pid})")
            self.job_id = f"{os.getpid()}-{time.time_ns()}"
            connection.send({"id": self.job_id, "command": self.arguments[0], "arguments": self.arguments[1:],
                             "partial_outputs": self.partial_outputs})
            self._relay(connection, connection.lines, ANSWER_SECONDS if reused else None)
            if self.status is None:  # its lines ended: the worker died
                if reused and not self.answered:
                    raise WorkerUnresponsive()
                _wait_gone(pid, path)  # so that its last words are in its log
                self.stderr_tail = collections.deque(_tail(path).splitlines(), maxlen=STDERR_LINES)
                self.ended_midway = pid
                return 1
            return self.status
        finally:
            connection.close()

    def crash_message(self, returncode: int) -> str:
        """The session worker is no child of this run: how it ended is not known here, only that it did, and its log."""
        pid = self.ended_midway
        if pid is None or python_unfit("\n".join(self.stderr_tail), self.python):
            return super().crash_message(returncode)
        said = "\n".join(self.stderr_tail)
        how = "failed: its log ends in a traceback" if "Traceback" in said else "ended without a word: it was killed (out of memory?) or crashed"
        return (f"The session worker (pid {pid}) {how} during this job. Run again: the next run starts a new one, and keeps this log as "
                f"{self.socket_path}.log.1 for a bug report. Last lines of its log ({self.socket_path}.log):\n" + (said or "(empty)"))

    def _stop_worker(self, process) -> None:
        """Cancel ends the connection, not the session worker: the job stops, the worker waits for the next."""
        if not isinstance(process, _Connection):  # a worker of its own, the session worker being busy
            return super()._stop_worker(process)
        process.close()

    def _stop_silent_worker(self, process) -> None:
        """Silence: the session worker's job is stuck in a read that a closed connection does not end, and
        would hold the worker's memory until some later run found it unresponsive; it is stopped now."""
        if not isinstance(process, _Connection):
            return super()._stop_silent_worker(process)
        process.close()
        _kill(self.socket_path)
        self.STOPPED = "the session worker was stopped (the next run starts another)"


def _pid(path: str) -> Optional[int]:
    try:
        with open(path + ".pid", encoding="utf-8") as pid_file:
            return int(pid_file.read().strip())
    except (OSError, ValueError):
        return None


def _kill(path: str) -> None:
    """Stops a hung session worker (its whole process group) and removes its socket."""
    pid = _pid(path)
    if pid is not None and _serves(pid, path):
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
    _unlink(path)


def _serves(pid: int, path: str) -> bool:
    """Whether process pid is the session worker of this socket (not a process that took its pid since)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            command = handle.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except FileNotFoundError:
        if os.path.isdir("/proc"):
            return False  # no such process
        done = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True)  # macOS: no /proc
        command = done.stdout
    except OSError:
        return False
    return f"--listen {path}" in command


def _wait_gone(pid: Optional[int], path: str, seconds: float = 2.0) -> None:
    deadline = time.monotonic() + seconds
    while pid is not None and _serves(pid, path) and time.monotonic() < deadline:
        time.sleep(0.05)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _tail(path: str, lines: int = STDERR_LINES) -> str:
    try:
        with open(path + ".log", encoding="utf-8", errors="replace") as log:
            return "\n".join(log.read().splitlines()[-lines:]) or "(empty)"
    except OSError:
        return "(no log)"

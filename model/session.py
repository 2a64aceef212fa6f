"""The session worker: serve's jobs over a local socket, so that separate processes (a shell's
``qgis_process`` loop with HIRISEICE_SESSION_WORKER set) share one warm worker.

``python -m model --jsonl serve --listen PATH --idle-minutes M`` binds PATH (a Unix socket only
its user may open), answers each connection's job lines exactly as serve answers stdin's, one
connection at a time, and exits, removing PATH, after M minutes without one. A client that goes
away mid-job (cancelled, killed) breaks the job's next line: the job stops, its partial outputs
are removed, and the worker waits for the next connection with its model still loaded.
"""

import os
import socket
from typing import Callable, TextIO

from .errors import EngineError

# How long a connection may stay silent before a job line: the plugin sends its job at once.
FIRST_LINE_SECONDS = 30.0


def serve_socket(path: str, idle_seconds: float, run_line: Callable[[str, TextIO], int]) -> None:
    if not idle_seconds > 0:  # 0 would make the socket non-blocking, and its first wait for a client an error
        raise EngineError(f"serve --listen needs --idle-minutes above 0 (the worker ends after that long without a job), not {idle_seconds / 60:g}.")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous_umask = os.umask(0o177)  # the socket: its owner alone may connect
    try:
        listener.bind(path)
    except OSError as exc:
        listener.close()
        raise EngineError(f"serve cannot listen on {path} ({exc.strerror or exc}): give a socket path in a folder you can write to, "
                          "not an existing file, at most 107 bytes long.") from None
    finally:
        os.umask(previous_umask)
    own_inode = os.stat(path).st_ino
    listener.listen(8)
    listener.settimeout(idle_seconds)
    try:
        while True:
            try:
                connection, _address = listener.accept()
            except socket.timeout:
                return
            with connection:
                # a client that connects and sends no job would hold the worker from every other run
                connection.settimeout(FIRST_LINE_SECONDS)
                stream = connection.makefile("rw", encoding="utf-8", newline="\n")
                try:
                    for line in stream:
                        connection.settimeout(None)  # a job may take hours
                        if line.strip():
                            run_line(line, stream)
                        connection.settimeout(FIRST_LINE_SECONDS)
                except OSError:
                    pass  # the client left mid-job (run_line removed its partial outputs), or sent nothing in time
                finally:
                    try:
                        stream.close()
                    except OSError:
                        pass
    finally:
        listener.close()
        try:
            if os.stat(path).st_ino == own_inode:  # not a successor's socket at the same path
                os.unlink(path)
        except OSError:
            pass

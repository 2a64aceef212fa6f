"""A Ctrl-C that the worker ignores for a moment, and one its orphan watch sends then: kept, not lost.

A local survey ignores SIGINT while it starts Dask's worker processes, which inherit that through exec
and so never see the terminal's Ctrl-C to the whole process group (the survey stops them itself). The
orphan watch's own SIGINT, sent in that moment, is held here and raised as the moment ends: lost, it had
left a survey whose client had died writing on into the GeoPackage that the user's rerun then opened.
"""

import contextlib
import os
import signal
import threading

_lock = threading.Lock()
_ignoring = False
_held = False


def interrupt_main() -> None:
    """SIGINT to this process, as a cancel; held while SIGINT is ignored. (A signal, unlike
    _thread.interrupt_main, wakes a main thread waiting on Dask.)"""
    global _held
    with _lock:
        if _ignoring:
            _held = True
            return
        os.kill(os.getpid(), signal.SIGINT)


@contextlib.contextmanager
def ignoring_ctrl_c():
    """SIGINT ignored in the block, and an interrupt_main held meanwhile raised after it. Main thread only
    (signals can be set nowhere else); elsewhere the block runs as it is."""
    global _ignoring, _held
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with _lock:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        _ignoring = True
    try:
        yield
    finally:
        with _lock:
            signal.signal(signal.SIGINT, previous)
            _ignoring, held, _held = False, _held, False
    if held:
        raise KeyboardInterrupt

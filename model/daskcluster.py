"""The Dask cluster a survey runs on: a local one of worker processes, or an existing scheduler's, whose
workers are checked for what surveying needs. Dask is imported only inside the functions: the engine imports without it."""

import contextlib
import logging
from typing import Dict, List, Optional, Set, Tuple

from . import interrupts
from .protocol import Reporter, SilentReporter
from .raster import usable_cores
from .surveystore import SurveyError


@contextlib.contextmanager
def dask_client(scheduler: str = "", workers: int = 0, reporter: Reporter = None):
    """(Dask client, TensorFlow threads per worker, the workers checked as it started): an existing
    cluster's scheduler when given, else a LocalCluster of `workers` processes (0: one per core), one
    task at a time each."""
    from distributed import Client, LocalCluster

    reporter = reporter or SilentReporter()
    if scheduler:
        with _dask_logs_quiet(), _scheduler_client(scheduler) as client:  # quiet until the client is closed too
            reporter.log(f"Dask cluster at {scheduler}: {len(client.scheduler_info()['workers'])} workers")
            yield client, 0, check_workers(client, scheduler)
        return
    cores = usable_cores()
    workers = workers or cores
    # LocalCluster's nanny restarts a worker that dies; its tasks are rescheduled. Its processes never
    # see the terminal's Ctrl-C, which reaches their whole process group: the survey stops them itself. The
    # dashboard, never shown, takes a free port: another cluster's 8787 made Dask warn. Quiet: a Ctrl-C
    # as the client waited on the cluster made Dask's loop print a traceback before the survey's line.
    with _dask_logs_quiet():
        if not reporter.jsonl:  # a terminal's user: a client (QGIS, qgis_process) stops the worker itself
            reporter.log(f"starting a local Dask cluster of {workers} worker processes (a Ctrl-C meanwhile is not heard: press it again once it has started)")
        cluster = _started_local_cluster(LocalCluster, workers)
        with cluster, Client(cluster) as client:
            reporter.log(f"local Dask cluster: {workers} worker processes on {cores} cores ({cluster.scheduler_address})")
            yield client, max(1, cores // workers), set(client.scheduler_info().get("workers") or ())


def _started_local_cluster(local_cluster, workers: int):
    """The cluster, started with SIGINT ignored; closed again where the client died meanwhile (interrupts.py)."""
    cluster = None
    try:
        with interrupts.ignoring_ctrl_c():
            cluster = local_cluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=logging.ERROR)
    except KeyboardInterrupt:
        if cluster is not None:
            cluster.close()
        raise
    return cluster


# How long a scheduler has to answer as one (Dask's own timeout does not cover its handshake), and
# how long a survey waits once the workers it had are all gone (for workers yet to start, it waits on).
SCHEDULER_ANSWER_S = 45.0
NO_WORKER_S = 300.0
START_WORKERS = ("start workers with the plugin's worker Python and its folder on PYTHONPATH (README, Survey many images: "
                 "PYTHONPATH=<plugin folder> <plugin>/.venv/bin/dask worker ADDRESS)")


@contextlib.contextmanager
def _scheduler_client(scheduler: str):
    """A client of the scheduler at ``scheduler``, or SurveyError saying why not: an address of another
    form, nothing there, or something there that is no Dask scheduler (its dashboard's port, a web server)."""
    import threading

    from distributed import Client
    from distributed.comm import parse_address

    fix = ("Start the cluster first (dask scheduler / dask worker, or dask-jobqueue), check the address (a scheduler listens on "
           "tcp://HOST:8786; 8787 is its dashboard), or leave the scheduler empty for a local cluster.")
    try:
        scheme, _location = parse_address(scheduler)
        known = scheme in ("tcp", "tls", "ucx", "inproc", "ws", "wss")
    except (ValueError, TypeError):
        known = False
    if not known or ":" not in scheduler.split("://", 1)[-1]:
        raise SurveyError(f"The Dask scheduler address {scheduler!r} is not one: give it as tcp://HOST:PORT. {fix}")
    made: Dict[str, object] = {}

    def connect() -> None:
        try:
            made["client"] = Client(scheduler, timeout="30s")
        except BaseException as exc:  # noqa: BLE001 - said below; a stranger's reply may end in anything (a 3 EiB allocation)
            made["error"] = exc

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(SCHEDULER_ANSWER_S)
    if "client" not in made:
        error = made.get("error")
        why = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no reason given'}" if error else \
            f"something answers there, but not as a Dask scheduler, within {SCHEDULER_ANSWER_S:g} s"
        raise SurveyError(f"No Dask scheduler answers at {scheduler} ({why}). {fix}")
    with made["client"] as client:
        yield client


# What a worker needs to survey, by module; a worker's Python lacking one fails every image alike.
WORKER_MODULES = ("model", "tensorflow", "keras", "osgeo")


def check_workers(client, scheduler: str, workers: Optional[List[str]] = None, surveyed: str = "Nothing was surveyed.") -> Set[str]:
    """The workers asked (``workers``, default every one connected); SurveyError where one's Python
    lacks what surveying needs. Asked with a builtin, which a worker without the plugin can still unpack."""
    probe = f"[name for name in {WORKER_MODULES!r} if __import__('importlib.util').util.find_spec(name) is None]"
    try:
        missing = client.run(eval, probe, workers=workers)
    except Exception:  # noqa: BLE001 - workers gone meanwhile: the survey's own watch says so
        return set(workers or ())
    lacking = {worker: names for worker, names in missing.items() if names}
    if lacking:
        worker, names = next(iter(lacking.items()))
        which = (f"{len(lacking)} of the {len(missing)} Dask workers at {scheduler} cannot survey: their" if workers is None else
                 f"{len(lacking)} Dask worker(s) that joined the cluster at {scheduler} cannot survey: their")
        raise SurveyError(f"{which} Python lacks {', '.join(names)} (worker {worker}). {START_WORKERS[0].upper() + START_WORKERS[1:]}. {surveyed}")
    return set(missing)


@contextlib.contextmanager
def _dask_logs_quiet():
    """Dask's client logs nothing below CRITICAL inside the block: a lost scheduler made it print its
    reconnection attempts and two tracebacks before the survey's own one line (SurveyError)."""
    names = [name for name in logging.root.manager.loggerDict if name.split(".")[0] in ("distributed", "asyncio", "tornado")]
    loggers = [logging.getLogger(name) for name in sorted(set(names) | {"distributed", "asyncio", "tornado"})]  # Dask's config sets some apart
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)

def lost_cluster_errors() -> Tuple[type, ...]:
    """What waiting on the survey's futures raises when the scheduler goes away."""
    from asyncio import CancelledError as AsyncioCancelled
    from concurrent.futures import CancelledError

    from distributed.client import FuturesCancelledError
    from distributed.comm.core import CommClosedError

    return FuturesCancelledError, CancelledError, AsyncioCancelled, CommClosedError, OSError  # OSError: Dask's timed-out reconnection


class ClusterLost(Exception):
    """The scheduler went away while the survey waited on it (the cause is Dask's own error)."""

"""A survey: detect over many rasters on a Dask cluster, into one GeoPackage.

Inputs: raster files, folders of rasters, and footprint layers made by hiriseice:find (each
footprint's JP2, by the file name of its jp2_url, in the images folder: where hiriseice:download
put it). Every image is one Dask task (``survey_image``) that runs ``inference.detect`` with the
worker process's warm model; only the process that started the survey (the client) writes the
GeoPackage, as results come in, one SQLite transaction per image. A killed survey therefore
keeps every image written so far, and a rerun skips the images already done with the same
model (name and version) and retries the others; a failed image is recorded in the run table,
not fatal. Dask reschedules the task of a worker that dies; an image that kills workers
repeatedly is recorded as failed.

The images come from surveyinputs.py, the GeoPackage's layers and their one writer are surveystore.py's,
the cluster daskcluster.py's. Every layer is in Mars geographic coordinates (longitudes as find's
footprints have them: _to_survey_crs), since every HiRISE RDR has its own projection.

Dask and TensorFlow are imported only inside the functions that need them: the client needs
no TensorFlow, and this module imports without Dask.
"""

import dataclasses
import math
import os
import time
from collections import Counter
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

from osgeo import gdal, ogr, osr

from . import daskcluster, files, modelfile, products, rules
from .daskcluster import START_WORKERS, ClusterLost, check_workers, dask_client, lost_cluster_errors
from .errors import EngineError
from .footprint import valid_wkt
from .gdalstate import gdal_exceptions
from .georeference import crs_transform
from .inference import DetectOptions, detect
from .protocol import Reporter, SilentReporter
from .raster import north_up_view
from .surveyinputs import survey_images
from .surveystore import DONE, FAILED, SURVEY_CRS_WKT, SurveyError, SurveyImage, SurveyStore
from .warm import warm_model

# How long one image may take before the survey gives it up (minutes; 0: no limit). A whole RED
# observation takes a minute or two on one core; a read that never ends (a network drive that hangs)
# would otherwise hold the overnight batch until morning.
IMAGE_MINUTES = 30.0
# How often the survey looks for images past their limit (seconds).
WATCH_S = 5.0
# The Dask event topic under which a worker says it starts an image.
STARTED_TOPIC = "hiriseice-survey-started"

# --- the task each Dask worker runs --------------------------------------------------------

class _WarningsKept(SilentReporter):
    def __init__(self):
        super().__init__()
        self.warnings: List[str] = []

    def warning(self, message: str) -> None:
        self.warnings.append(message)


def survey_image(image: SurveyImage, model_path: str, options: DetectOptions, tensorflow_threads: int = 0, model: Tuple[str, str] = ("", "")) -> Dict:
    """Detect on one image with the worker's warm model, which must still be ``model`` (name, version: the one the
    survey started with and records); its rows in the survey's CRS. Never raises for a bad image: the outcome
    says DONE or FAILED with the message."""
    started = time.monotonic()
    _say_started()
    reporter = _WarningsKept()
    try:
        loaded = warm_model(model_path, tensorflow_threads)
        now = (loaded[1]["name"], str(loaded[1]["version"]))
        if model[0] and now != model:  # a model saved over the file mid-survey: one table would hold two models' scores under one name
            return _failed(image, f"the model file {model_path} now holds {now[0]} {now[1]}, not the {model[0]} {model[1]} this survey started with "
                                  "(a model was saved over it): the image was not scored. Run the survey again to go on with the new model, "
                                  "or give the old one's file", started, [])
        with gdal_exceptions(), north_up_view(image.path, options.band, reporter.log) as raster:
            detection = detect(raster, model_path, options, reporter, loaded=loaded)
            read = detection.raster
            corners = [gdal.ApplyGeoTransform(read["geotransform"], x, y) for x in (0, read["width"]) for y in (0, read["height"])]
            to_survey = _to_survey_crs(image.path, read["crs_wkt"], corners)
            chunks = [dict(chunk, wkt=to_survey(chunk["wkt"])) for chunk in detection.chunks]
            summary = dict(detection.summary, footprint_wkt=to_survey(detection.summary["footprint_wkt"]) if detection.summary.get("footprint_wkt") else "")
    except EngineError as exc:
        return _failed(image, str(exc), started, reporter.warnings)
    except ImportError:  # the worker's Python, not the image: every image would fail alike (_outcome_of stops the survey)
        raise
    except Exception as exc:  # one image's unforeseen failure must not end a survey of hundreds
        return _failed(image, f"unexpected {type(exc).__name__}: {exc}", started, reporter.warnings)
    return {"image": image, "status": DONE, "error": "", "chunks": chunks, "summary": summary, "runtime_s": round(time.monotonic() - started, 2), "warnings": reporter.warnings}


def _say_started() -> None:
    """Tell the scheduler that this worker starts its task (STARTED_TOPIC, the task's key): the survey's clock
    for the image's time limit. A worker may hold its next image before it starts it, so being on a worker
    is not having started."""
    from distributed import get_worker

    try:
        worker = get_worker()
    except ValueError:  # run outside a Dask worker
        return
    worker.log_event(STARTED_TOPIC, worker.get_current_task())


def _failed(image: SurveyImage, message: str, started: float, warnings: List[str]) -> Dict:
    return {"image": image, "status": FAILED, "error": message, "chunks": [], "summary": None, "runtime_s": round(time.monotonic() - started, 2), "warnings": warnings}


def _to_survey_crs(path: str, crs_wkt: str, corners):
    """WKT in the raster's CRS -> WKT in SURVEY_CRS_WKT, with longitudes as find gives a footprint's
    (products): east, each feature's western edge in [0, 360) and unwrapped eastward from it, so that no
    chunk of an image that straddles 0 or 180 deg is cut into a ring round the planet. Each feature, not
    the image: QGIS asks for the features of a map's extent in [0, 360), and a chunk of an image across
    the prime meridian that lay wholly past 360 was never drawn over its image."""
    try:
        transform = crs_transform(crs_wkt, SURVEY_CRS_WKT)
    except RuntimeError as exc:
        raise SurveyError(
            f"'{path}' cannot be placed in the survey's Mars coordinates ({str(exc).splitlines()[0]}): its CRS "
            f"({osr.SpatialReference(wkt=crs_wkt).GetName()}) is not a Mars CRS. "
            "Assign the product's Mars CRS (gdal_edit.py -a_srs, or Raster > Projections > Assign Projection)."
        ) from None

    longitudes = [transform.TransformPoint(*corner)[0] for corner in corners]
    west = products.western_edge(longitudes)
    # a chunk's corner may bulge a little west of the image's corners (a polar map's curved meridians)
    start = west - 1.0

    def convert(wkt: str) -> str:
        geometry = ogr.CreateGeometryFromWkt(wkt)
        geometry.Transform(transform)
        _longitudes_from(geometry, start)
        west_edge = geometry.GetEnvelope()[0]
        if not 0.0 <= west_edge < 360.0:
            _longitudes_from(geometry, start - 360.0 * math.floor(west_edge / 360.0))
        return valid_wkt(geometry)

    return convert


def _longitudes_from(geometry, start: float) -> None:
    """Every longitude of the geometry moved by whole turns into [start, start + 360), to 1e-9 deg (0.06 mm): as
    the WKT writes it (15 digits), so that a western edge of 359.99999999999994 is not checked as below 360 and
    written as 360."""
    for index in range(geometry.GetGeometryCount()):
        _longitudes_from(geometry.GetGeometryRef(index), start)
    for index in range(geometry.GetPointCount()):
        longitude = round(start + (geometry.GetX(index) - start) % 360.0, 9) + 0.0  # + 0.0: no -0
        geometry.SetPoint_2D(index, longitude, geometry.GetY(index))


def survey(sources: Sequence[str], out: str, model_path: str = "", options: Optional[DetectOptions] = None, scheduler: str = "", workers: int = 0,
           images_folder: str = "", reporter: Optional[Reporter] = None, image_minutes: float = IMAGE_MINUTES) -> Dict:
    """Run the survey and return its counts: images, skipped (done before with this model), done, failed.
    An image still running after image_minutes (0: no limit) is given up as failed and its worker restarted."""
    from distributed.scheduler import KilledWorker

    options = options or DetectOptions()
    reporter = reporter or SilentReporter()
    if workers < 0:
        raise SurveyError(f"The number of workers must be 0 (one per core) or more, not {workers}.")
    if not image_minutes >= 0:
        raise SurveyError(f"The time limit per image must be 0 (none) or more minutes, not {image_minutes}.")
    rules.check_thresholds(options.icy_threshold, options.hard_low)
    rules.check_category_rule(options.category_rule)
    model_path = modelfile.resolve_model_path(model_path)
    metadata = modelfile.read_metadata(model_path)
    name, version = metadata["name"], str(metadata["version"])
    images = survey_images(sources, images_folder, reporter.warning)
    # a survey that fails before it records an image (a scheduler address that answers nothing) leaves no empty GeoPackage it made
    made_here, finished_run = not os.path.exists(out), False
    store = SurveyStore(out, reporter.warning)
    try:
        chunk_size = options.chunk_size or int(metadata["chunk_size"])  # as QGIS gives it, resolved: both resume one survey
        try:
            store.keep_settings(dataclasses.replace(options, chunk_size=chunk_size, stride=options.stride or chunk_size),
                                "" if options.chunk_size else f"model {name} {version}")
            done_before = store.done_with(name, version) - store.follow_moved_files(images)
            replaced = store.scored_by_other_models([image.image_id for image in images if image.image_id not in done_before], name, version)
        except RuntimeError as exc:  # held by another program as the survey starts: nothing surveyed yet, nothing to wait for
            raise SurveyError(f"{store.path} cannot be read and written now ({str(exc).splitlines()[0]}): another program holds it (a layer of it "
                              "being edited in QGIS, a database browser). Close it there, or save its edits, and run again.") from None
        todo = [image for image in images if image.image_id not in done_before]
        if replaced:
            reporter.warning(f"{sum(replaced.values())} image(s) of {store.path} were scored with another model ("
                             + ", ".join(f"{model}: {count}" for model, count in replaced.items()) + f"); this run replaces their rows with "
                             f"{name} {version}'s, keeping the labels given to their chunks. Survey into another GeoPackage to keep both models' "
                             "results side by side.")
        reporter.log(f"{len(images)} images: {len(images) - len(todo)} already done with model {name} {version}, {len(todo)} to survey into {store.path}")
        counts = {"images": len(images), "skipped": len(images) - len(todo), DONE: 0, FAILED: 0}
        if todo:
            with dask_client(scheduler, workers, reporter) as (client, tensorflow_threads, checked):
                # A local cluster's workers share the cores: each reads its raster on its share only.
                task_options = dataclasses.replace(options, readers=tensorflow_threads) if tensorflow_threads else options
                futures = {client.submit(survey_image, image, model_path, task_options, tensorflow_threads, (name, version), pure=False): image for image in todo}
                kept = "The images recorded before are kept; run the survey again to resume it."
                try:
                    outcomes = _outcomes(client, futures, 60.0 * image_minutes, KilledWorker, reporter.warning, scheduler, checked)
                    for finished, (future, outcome) in enumerate(outcomes, start=1):
                        store.record(outcome, name, version)
                        counts[outcome["status"]] += 1
                        _report_outcome(reporter, outcome, finished, len(todo))
                        reporter.progress(finished / len(todo))
                        del futures[future]  # recorded: its result leaves the worker (held, they grew by MBs an image)
                except RuntimeError as exc:
                    if scheduler and "deserializ" in str(exc).lower():  # the scheduler unpacks the tasks: it needs the engine too
                        raise SurveyError(
                            f"The Dask scheduler at {scheduler} could not unpack the survey's tasks (its log says why, e.g. No module named "
                            f"'model'): start it with the plugin folder on PYTHONPATH, as its workers (README, Survey many images). {kept}"
                        ) from None
                    raise
                except ClusterLost as lost:
                    where = f"the Dask scheduler at {scheduler}" if scheduler else "the local Dask cluster"
                    raise SurveyError(f"Lost {where} mid-survey ({type(lost.args[0]).__name__}). {'Restart the cluster: t' if scheduler else 'T'}he images "
                                      "recorded before are kept; run the survey again to resume it.") from None
        else:
            reporter.progress(1.0)
        finished_run = True
    finally:
        store.close()
        if made_here and not store.recorded and not finished_run:
            files.remove_quietly([out, out + "-wal", out + "-shm"])
    reporter.log(f"survey: {counts[DONE]} done, {counts[FAILED]} failed, {counts['skipped']} skipped (done before) of {counts['images']} images in {os.path.abspath(out)}")
    return dict(counts, out=os.path.abspath(out), model_name=name, model_version=version)


def _outcomes(client, futures: Dict, limit_s: float, killed_worker, warn: Callable[[str], None] = lambda message: None, scheduler: str = "",
              checked: Optional[Set[str]] = None) -> Iterator:
    """(future, outcome) of each image as it ends. An image a worker has run for more than limit_s
    (0: no limit) is given up: its task is cancelled and its worker restarted, since nothing stops a
    read that never returns but the process it runs in. Each attempt's time counts from when the
    survey first hears that a worker started it (_say_started), within WATCH_S: an image whose
    worker died (out of memory) is tried again by Dask, and its retry gets a clock of its own, which
    does not run while it waits for a worker. A cluster whose workers are all gone for NO_WORKER_S (daskcluster)
    stops the survey (its tasks would wait for ever); one that never had a worker is waited for, with a
    warning (a batch queue may start them hours later); each worker that joins a scheduler's cluster is
    checked as those at the start were; a scheduler gone raises ClusterLost."""
    from distributed import wait

    pending = set(futures)
    clocks: Dict[str, Tuple[float, str]] = {}  # key -> (when its attempt was first seen started, on which worker)
    attempts: Dict[str, int] = {}  # key -> its starts heard of so far
    without_workers: List[Optional[float]] = [None]  # since when no worker has been connected
    seen = set(client.scheduler_info().get("workers") or ()) if checked is None else set(checked)  # checked as the survey started
    start_them = START_WORKERS if scheduler else "its worker processes did not start again (too little memory? give fewer --workers)"

    def given_up() -> List[Tuple[object, float, str]]:
        """(future, since when it ran, what became of its worker) of each image past its time limit, cancelled."""
        workers = set(client.scheduler_info().get("workers") or ())
        if scheduler and workers - seen:
            check_workers(client, scheduler, sorted(workers - seen), "The images recorded before are kept; run the survey again to resume it.")
        if workers:
            without_workers[0] = None
        elif without_workers[0] is None:
            without_workers[0] = time.monotonic()
            waits = f"waits {daskcluster.NO_WORKER_S / 60:g} min for one" if seen else "waits for one (a batch queue may take a while)"
            warn(f"No Dask worker is connected: the survey {waits}; {start_them}.")
        elif seen and time.monotonic() - without_workers[0] > daskcluster.NO_WORKER_S:
            raise SurveyError(f"The Dask workers were all gone for {daskcluster.NO_WORKER_S / 60:g} min, so {len(pending)} images were left: {start_them}. "
                              "The images recorded before are kept; run the survey again to resume it.")
        seen.update(workers)
        if not limit_s:
            return []
        now = time.monotonic()
        starts = Counter(key for _time, key in client.get_events(STARTED_TOPIC))
        running = {key: worker for worker, keys in client.processing().items() for key in keys}
        expired = []
        for future in list(pending):
            key = future.key
            if starts[key] > attempts.get(key, 0) and key in running:  # an attempt has started: the first, or a retry
                attempts[key], clocks[key] = starts[key], (now, running[key])
            if key not in running or clocks.get(key, (0.0, running[key]))[1] != running[key]:
                clocks.pop(key, None)  # back with the scheduler, or on another worker: no attempt of it runs yet
            if key not in clocks or now - clocks[key][0] <= limit_s:
                continue
            pending.discard(future)
            future.cancel()
            try:
                client.restart_workers([running[key]])
                restarted = " and its worker restarted"
            except Exception as exc:  # a cluster without nannies: the worker stays busy, the survey goes on without it
                restarted = f"; its worker could not be restarted ({exc}) and the survey went on without it"
            expired.append((future, clocks[key][0], restarted))
        return expired

    while pending:
        try:
            try:
                done, pending = wait(pending, timeout=WATCH_S, return_when="FIRST_COMPLETED")
            except TimeoutError:  # none ended within WATCH_S
                done = set()
            ended = [(future, _outcome_of(future, futures[future], killed_worker)) for future in done]
            expired = given_up() if pending else []
        except lost_cluster_errors() as exc:  # asked of a scheduler that is gone
            raise ClusterLost(exc) from None
        yield from ended
        for future, since, restarted in expired:
            yield future, _failed(futures[future], f"still running after {limit_s / 60:g} min, so it was given up{restarted} (a file that never "
                                  "finishes reading: a network drive that hangs, a damaged file?). Check it, or give a longer time limit.", since, [])


def _outcome_of(future, image: SurveyImage, killed_worker) -> Dict:
    try:
        return future.result()
    except killed_worker:
        return _failed(image, "the Dask workers running this image died each time they tried it (out of memory?); the other images went on. "
                              "Give each worker more memory (dask worker --memory-limit, dask-jobqueue's memory=) or run fewer workers per node, "
                              "then run the survey again: failed images are retried", time.monotonic(), [])
    except ImportError as exc:
        raise SurveyError(f"A Dask worker's Python cannot survey ({exc}): {START_WORKERS}. The images recorded before are kept; run the survey "
                          "again to resume it.") from None


def _report_outcome(reporter: Reporter, outcome: Dict, finished: int, total: int) -> None:
    image = outcome["image"]
    for warning in outcome["warnings"]:
        reporter.warning(f"{image.image_id}: {warning}")
    if outcome["status"] == DONE:
        s = outcome["summary"]
        reporter.log(f"[{finished}/{total}] {image.image_id}: {s['category']} - {s['icy_chunks']} icy of {s['chunks']} chunks, mean p {s['mean_probability']:g} ({outcome['runtime_s']} s)")
    else:
        reporter.warning(f"[{finished}/{total}] {image.image_id} failed: {outcome['error']}")

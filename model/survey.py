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

Layers, all in Mars geographic coordinates (products.MARS_GEOGCS_WKT, longitudes as find's
footprints have them: _to_survey_crs), since every HiRISE RDR has its own projection: ``chunks``
(schema.DETECTION_FIELDS), ``summary`` (schema.SUMMARY_FIELDS, the valid footprint),
``footprints`` (schema.FOOTPRINT_FIELDS: the category of model/rules.py) and the table ``runs`` (schema.RUN_FIELDS).

Dask and TensorFlow are imported only inside the functions that need them: the client needs
no TensorFlow, and this module imports without Dask.
"""

import contextlib
import dataclasses
import datetime
import logging
import math
import os
import re
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

from osgeo import gdal, ogr, osr

from . import files, interrupts, modelfile, products, rules
from .download import DownloadItem, downloaded_jp2s
from .errors import EngineError
from .gdalstate import gdal_exceptions, gdal_messages
from .georeference import crs_transform
from .footprint import valid_wkt
from .inference import DetectOptions, detect
from .pdslabel import pixels_label
from .protocol import Reporter, SilentReporter
from .raster import RASTER_SUFFIXES, image_id_of, north_up_view, usable_cores
from .schema import DETECTION_FIELDS, FOOTPRINT_FIELDS, RUN_FIELDS, SUMMARY_FIELDS
from .vector import KEPT_FID, add_missing_fields, add_rows, check_rows, create_layer, new_geopackage
from .warm import warm_model

SURVEY_CRS_WKT = products.MARS_GEOGCS_WKT

DONE = "done"
FAILED = "failed"

# How long one image may take before the survey gives it up (minutes; 0: no limit). A whole RED
# observation takes a minute or two on one core; a read that never ends (a network drive that hangs)
# would otherwise hold the overnight batch until morning.
IMAGE_MINUTES = 30.0
# How often the survey looks for images past their limit (seconds).
WATCH_S = 5.0
# The Dask event topic under which a worker says it starts an image.
STARTED_TOPIC = "hiriseice-survey-started"
# How long an image's rows wait for a GeoPackage another program holds (QGIS reading it while a batch
# runs, a database browser's open transaction), trying again every LOCK_RETRY_S: GDAL gives up after 5 s,
# which had ended an overnight survey with a traceback.
LOCK_PATIENCE_S = 600.0
LOCK_RETRY_S = 2.0

LAYERS = (
    ("chunks", ogr.wkbPolygon, DETECTION_FIELDS),
    ("summary", ogr.wkbMultiPolygon, SUMMARY_FIELDS),
    ("footprints", ogr.wkbMultiPolygon, FOOTPRINT_FIELDS),
    ("runs", ogr.wkbNone, RUN_FIELDS),
)

# hiriseice:find's layers, and the CSV of `python -m model.catalog --csv` (the same products and their jp2_url, without QGIS)
FOOTPRINT_SUFFIXES = (".gpkg", ".shp", ".geojson", ".json", ".fgb", ".sqlite", ".csv")
# The settings an image's rows depend on (DetectOptions' names; the command line's and QGIS's): a survey
# resumed at another chunk size had put chunks of 256 and 1024 px in one layer without a word. Kept in
# the GeoPackage's table SETTINGS_TABLE (a survey made before it gets one with the settings of its next run).
GRID_SETTINGS = (("chunk_size", "CHUNK_SIZE"), ("stride", "STRIDE"), ("min_valid", "MIN_VALID"), ("icy_threshold", "ICY_THRESHOLD"),
                 ("hard_low", "HARD_LOW"), ("band", "BAND"), ("category_rule", "CATEGORY_RULE"), ("tta", "TTA"))
SETTINGS_TABLE = "settings"


class SurveyError(EngineError):
    code = "survey"


@dataclass(frozen=True)
class SurveyImage:
    image_id: str
    path: str


# --- inputs --------------------------------------------------------------------------------


def _sql_text(text: Optional[str]) -> str:
    """``text`` inside an SQL string literal ('' for each ')."""
    return (text or "").replace("'", "''")


def _same_file_or_copy(first: str, second: str) -> bool:
    try:
        if os.path.samefile(first, second):
            return True
        printed = fingerprint(first)
        return printed is not None and printed == fingerprint(second)
    except OSError:
        return False


def fingerprint(path: str, sample: int = 1 << 16) -> Optional[str]:
    """A raster file's size and a digest of its first and last ``sample`` bytes, where headers, tiles and their index differ
    between any two images: a copy of the file has the same, another date of a site under its name another; None where it
    cannot be read."""
    import hashlib

    try:
        size = os.path.getsize(path)
        digest = hashlib.sha1()
        with open(path, "rb") as handle:
            digest.update(handle.read(sample))
            handle.seek(max(0, size - sample))
            digest.update(handle.read(sample))
    except OSError:
        return None
    # where GDAL also reads its georeference (an .aux.xml holds a CRS assigned in QGIS): a change there moves every chunk
    sidecars, found = hashlib.sha1(), False
    for sidecar in georeference_sidecars(path):
        try:
            with open(sidecar, "rb") as handle:
                held = handle.read(1 << 20)
        except OSError:
            continue
        if sidecar.endswith(".aux.xml"):  # its georeference only: QGIS writes statistics there as it opens an image
            held = b"".join(match.group(0) for match in PAM_GEOREFERENCE.finditer(held))
        if held:
            sidecars.update(os.path.basename(sidecar).encode("utf-8", "surrogateescape") + b"\0" + held)
            found = True
    return f"{size}:{digest.hexdigest()}|{sidecars.hexdigest() if found else 'no sidecars'}"  # '|': a record that counts sidecars


# What of a GDAL .aux.xml places the raster: its CRS, geotransform and ground control points.
PAM_GEOREFERENCE = re.compile(rb"<(SRS|GeoTransform|GCPList)\b.*?</\1>", re.S)


def georeference_sidecars(path: str) -> List[str]:
    """The files beside a raster GDAL may read its georeference from: .aux.xml, .aux, .prj, and world files (.tfw for .tif,
    .j2w for .jp2, .wld, or 'w' appended)."""
    stem, extension = os.path.splitext(path)
    names = {path + ".aux.xml", stem + ".aux", stem + ".prj", stem + ".wld"}
    if len(extension) > 2:
        names |= {stem + extension[:2] + extension[-1] + "w", path + "w"}
    return sorted(names)


def same_fingerprint(recorded: Optional[str], now: Optional[str]) -> bool:
    """Whether a raster is as recorded: by its file and the sidecars of its georeference, or by its file alone where the record
    was made before sidecars counted (a survey of an earlier version would otherwise survey every such image again)."""
    if recorded is None or now is None:
        return recorded == now
    return recorded == now if "|" in recorded else recorded == now.split("|", 1)[0]


def _same_place(recorded, wkt: Optional[str]) -> bool:
    """Whether a recorded chunk's geometry and a new chunk's WKT are the same window on the ground (within a millionth of its size)."""
    if recorded is None or not wkt:
        return False
    old, new = recorded.GetEnvelope(), ogr.CreateGeometryFromWkt(wkt).GetEnvelope()  # (min x, max x, min y, max y)
    size = max(old[1] - old[0], old[3] - old[2], 1e-9)
    return all(abs(a - b) <= 1e-6 * size for a, b in zip(old, new))


def survey_images(sources: Sequence[str], images_folder: str = "", warn: Callable[[str], None] = lambda message: None) -> List[SurveyImage]:
    """The images of the survey, in the order given, each once.

    A source is a raster file, a folder (its raster files, not its subfolders; hidden files such
    as download's partial files are left out) or a footprint layer from hiriseice:find, whose
    JP2s are looked for in images_folder (default: the layer's own folder); those not downloaded
    are left out with a ``warn``ing (download.downloaded_jp2s).
    """
    images: Dict[str, SurveyImage] = {}
    files_seen: Dict[str, str] = {}  # the file itself (links followed) -> the path it was first given by
    for source in sources:
        for path in _paths_of(source, images_folder, warn):
            if not files.is_utf8(path):  # the GeoPackage's text cannot hold its name: writing its rows ended every run of the survey
                warn(f"{files.shown(path)} is left out: its name is not UTF-8 text, which the survey's "
                     "GeoPackage must record. Rename it (e.g. with only letters, digits, '_' and '-') and run the survey again.")
                continue
            image = SurveyImage(image_id_of(path), os.path.abspath(path))
            real = files.path_key(os.path.realpath(path))
            if real in files_seen and files_seen[real] != image.path:
                warn(f"{image.path} is the same file as {files_seen[real]} (a link, or another path to it): it is surveyed once.")
                continue
            files_seen[real] = image.path
            earlier = images.get(image.image_id)
            if earlier and earlier.path != image.path:
                raise SurveyError(
                    f"Two rasters have the image ID {image.image_id} ({earlier.path} and {image.path}); a survey keys its rows by it. "
                    "Survey one of them, or rename the other."
                )
            images[image.image_id] = image
    if not images:
        raise SurveyError(f"No raster to survey in {', '.join(sources) or 'the input'}. Give raster files, folders of rasters, or footprints from hiriseice:find.")
    return list(images.values())


def _paths_of(source: str, images_folder: str, warn: Callable[[str], None]) -> Iterator[str]:
    if os.path.isdir(source):
        names = sorted(n for n in os.listdir(source) if n.lower().endswith(RASTER_SUFFIXES) and not n.lower().endswith(".lbl") and not n.startswith("."))
        yield from (_through_label(os.path.join(source, n)) for n in names)
    elif source.lower().endswith(FOOTPRINT_SUFFIXES) and os.path.isfile(source):
        folder = images_folder or os.path.dirname(os.path.abspath(source))
        yield from downloaded_jp2s(footprint_jp2_paths(source, folder), folder, warn)
    elif os.path.exists(source):
        yield _through_label(source)
    else:
        raise SurveyError(f"'{source}' does not exist. Give raster files, folders of rasters, or footprints from hiriseice:find.")


def _through_label(path: str) -> str:
    """A PDS3 image's raw pixels (.IMG) by the label beside it (a folder of PDS products had failed every image); any other raster as it is."""
    return pixels_label(path) or path


def footprint_jp2_paths(path: str, images_folder: str) -> List[str]:
    """The local JP2 of every footprint of a hiriseice:find layer: where hiriseice:download put it in images_folder."""
    with gdal_exceptions():
        try:
            ds = gdal.OpenEx(path, gdal.OF_VECTOR)
        except RuntimeError as exc:
            raise SurveyError(f"'{path}' is not a vector file GDAL can read ({exc}). Give the footprints written by hiriseice:find "
                              "(or python -m model.catalog --csv).") from None
    for index in range(ds.GetLayerCount()):
        layer = ds.GetLayer(index)
        if layer.GetLayerDefn().GetFieldIndex("jp2_url") >= 0:
            urls = [feature.GetField("jp2_url") for feature in layer]
            return [os.path.join(images_folder, DownloadItem(url).name) for url in urls if url]
    raise SurveyError(f"'{path}' has no layer with a jp2_url field. Give the footprints written by hiriseice:find, or the downloaded rasters themselves.")


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


# --- the one writer ------------------------------------------------------------------------


class SurveyStore:
    """The survey's GeoPackage, written by the client only, one transaction per image; one survey at a
    time (a claim on a lock file beside it, which the system releases if the survey dies)."""

    def __init__(self, path: str, warn: Callable[[str], None] = lambda message: None):
        special = files.special_file_message(os.path.abspath(path), "survey's GeoPackage")
        if special:  # SQLite would wait on it for ever
            raise SurveyError(special)
        refused = files.not_a_place_to_write(path, "The survey's GeoPackage (--out)")  # a URL
        if refused:
            raise SurveyError(refused)
        self.path = os.path.abspath(path)
        self.warn = warn
        self.recorded = 0
        folder = os.path.dirname(self.path)
        with contextlib.suppress(OSError):
            os.makedirs(folder, exist_ok=True)
        if not os.access(folder, os.W_OK):  # SQLite writes its journal beside the file too
            raise SurveyError(f"The folder {folder} of the survey's GeoPackage cannot be written to (missing or read-only). Choose a folder you can write to.")
        too_long = files.name_too_long(self.path, survey=True)
        if too_long:
            raise SurveyError(f"The survey's GeoPackage {self.path} cannot be written: {too_long}. Choose a shorter file name.")
        self._claim = files.Claim(self.path + ".survey-lock", f"Another survey is writing {self.path}. Wait for it to finish (a rerun then resumes it), "
                                  "or choose another GeoPackage.", SurveyError)
        try:
            with gdal_exceptions():
                if not os.path.exists(self.path):
                    # made whole under a partial name: a survey stopped while its layers were created left a
                    # GeoPackage that every rerun refused as "not a survey's"
                    partial = files.partial_path(self.path)
                    files.remove_quietly([partial])
                    try:
                        created = new_geopackage(partial)
                    except OSError as exc:
                        files.remove_quietly([partial])  # SQLite may have made the file before it failed
                        raise SurveyError(files.write_failure("The survey's GeoPackage", self.path, exc)) from None
                    try:
                        with gdal_messages():  # the reason goes into the one message below, not line by line
                            self._create_layers(created)
                            created = None
                            check_rows(partial, {name: 0 for name, _, _ in LAYERS})
                    except RuntimeError as exc:  # a disk full or gone read-only: no half-made survey for reruns to refuse
                        created = None
                        files.remove_quietly([partial])
                        raise SurveyError(files.write_failure("The survey's GeoPackage", self.path, exc)) from None
                    files.commit(partial, self.path)
                self.ds = self._open_existing()
        except BaseException:
            self._claim.close()
            raise

    def _connect(self):
        return gdal.OpenEx(self.path, gdal.OF_VECTOR | gdal.OF_UPDATE, allowed_drivers=["GPKG"])

    def _open_existing(self):
        try:
            ds = self._connect()
        except RuntimeError as exc:
            raise SurveyError(f"'{self.path}' exists but is not a GeoPackage this survey can update ({exc}). Choose a new file, or the survey's own GeoPackage to resume it.") from None
        missing = [name for name, _, _ in LAYERS if ds.GetLayerByName(name) is None]
        if missing:
            raise SurveyError(f"'{self.path}' is a GeoPackage but not a survey's (no layer {', '.join(missing)}). Choose a new file, or the survey's own GeoPackage to resume it.")
        crs = ds.GetLayerByName("chunks").GetSpatialRef()
        if crs is None or not (crs.IsGeographic() and abs(crs.GetSemiMajor() - osr.SpatialReference(wkt=SURVEY_CRS_WKT).GetSemiMajor()) < 1.0):
            # not a survey's CRS of any version: another program replaced the table (Detect into the survey's file)
            raise SurveyError(f"'{self.path}' holds a 'chunks' table in {crs.GetName() if crs is not None else 'no CRS'}, which no survey writes: "
                              "another program replaced it. Survey into a new GeoPackage (its images are surveyed again), and keep this one as it is.")
        if crs.GetName() != osr.SpatialReference(wkt=SURVEY_CRS_WKT).GetName():
            # before 2026-12-06 a survey wrote longitudes -180 to 180: new chunks at 0 to 360 beside them fall outside what
            # QGIS asks of the layer west of 180 deg E, so they were neither drawn nor found by training
            raise SurveyError(f"'{self.path}' was surveyed by an earlier version of the plugin, in a CRS of longitudes -180 to 180 "
                              f"({crs.GetName()}); this version writes 0 to 360 east, and the two cannot share "
                              "its layers. Survey into a new GeoPackage (its images are surveyed again), and keep this one as it is.")
        try:  # the fields added since a survey of an earlier version (chunks' model_name and model_version, the summary's chunk_size,
            # stride and tta, the runs' fingerprint), NULL in its rows, so that it resumes
            for name, _, fields in LAYERS:
                add_missing_fields(ds.GetLayerByName(name), fields)
        except RuntimeError as exc:  # a read-only survey of an earlier version
            raise SurveyError(files.write_failure(f"The fields this version adds to the survey {self.path}", self.path, exc)) from None
        # each image's rows are read and replaced by image_id: without an index every image scanned every table (0.3 s an image at
        # 600,000 chunks), and a survey slowed as it grew; one that cannot be made (a full disk) only costs that time
        for name, _, _ in LAYERS:
            with contextlib.suppress(RuntimeError):
                ds.ExecuteSQL(f'CREATE INDEX IF NOT EXISTS "{name}_image_id" ON "{name}" (image_id)')
        return ds

    @staticmethod
    def _create_layers(ds) -> None:
        for name, geometry_type, fields in LAYERS:
            create_layer(ds, name, SURVEY_CRS_WKT, geometry_type, fields)

    def keep_settings(self, options: DetectOptions, sized_by: str = "") -> None:
        """Records the run's GRID_SETTINGS, or refuses a run whose settings differ from those recorded; ``sized_by`` names
        the model whose own chunk size CHUNK_SIZE 0 took, where it did."""
        given = {name: str(getattr(options, name)) for name, _ in GRID_SETTINGS}
        with gdal_exceptions():
            table = self.ds.GetLayerByName(SETTINGS_TABLE)
            if table is None:
                table = self.ds.CreateLayer(SETTINGS_TABLE, None, ogr.wkbNone)
                for field_name in ("setting", "value"):
                    table.CreateField(ogr.FieldDefn(field_name, ogr.OFTString))
            recorded = {feature.GetField("setting"): feature.GetField("value") for feature in table}
            if recorded and self.ds.GetLayerByName("runs").GetFeatureCount() == 0:  # no image recorded with them: a new start
                self.ds.ExecuteSQL(f'DELETE FROM "{SETTINGS_TABLE}"')
                recorded = {}
            changed = [(label, recorded[name], given[name]) for name, label in GRID_SETTINGS if name in recorded and recorded[name] != given[name]]
            if changed:
                raise SurveyError(
                    f"{self.path} was surveyed with {', '.join(f'{label} {old}' for label, old, _ in changed)}; this run asks for "
                    f"{', '.join(f'{label} {new}' for label, _, new in changed)}"
                    + (f" (CHUNK_SIZE 0: the chunk size {sized_by} was made for)" if sized_by else "")
                    + ". Its chunks and categories would not compare with those of the images done before: run it with the same settings "
                    "to resume it, or survey into a new GeoPackage."
                )
            self.ds.StartTransaction()
            for name, _ in GRID_SETTINGS:
                if name not in recorded:
                    feature = ogr.Feature(table.GetLayerDefn())
                    feature.SetField("setting", name)
                    feature.SetField("value", given[name])
                    table.CreateFeature(feature)
            self.ds.CommitTransaction()

    def follow_moved_files(self, images: Sequence["SurveyImage"]) -> Set[str]:
        """The IDs of images whose raster is not the one surveyed before under that ID, to survey again: its file changed
        in place, or it is gone and another raster is under its name (by the fingerprints recorded; a survey of an earlier
        version has none). The runs of images found under another path (the survey's folder moved, or copied to a
        colleague) are given their new path. SurveyError where the file surveyed before still exists beside another raster
        under its name: a later date of a site saved under the same file name had been skipped as done, or, with another
        model, had replaced the earlier one's rows."""
        recorded = {f.GetField("image_id"): (f.GetField("image"), f.GetField("fingerprint")) for f in self.ds.GetLayerByName("runs")}
        moved, again = [], set()
        for image in images:
            before, printed = recorded.get(image.image_id, (None, None))
            if not before:
                continue
            if before == image.path:
                if printed and not same_fingerprint(printed, fingerprint(image.path)):
                    again.add(image.image_id)
                    self.warn(f"{image.path} changed since it was surveyed (another size, content or georeference): it is surveyed again.")
                continue
            now = fingerprint(image.path)
            same = same_fingerprint(printed, now) if printed else (not os.path.exists(before) or _same_file_or_copy(before, image.path))
            if not same and os.path.exists(before):
                raise SurveyError(
                    f"Two different rasters have the image ID {image.image_id}: {before}, surveyed before into {self.path}, and {image.path}, "
                    "which is not a copy of it; a survey keys its rows by it, so the second would pass for the first. Give each file its own "
                    "name (its product ID), or survey the second into another GeoPackage.")
            if not same:
                again.add(image.image_id)
                self.warn(f"{before}, surveyed before as {image.image_id}, is gone, and {image.path} under that name is another raster: it is "
                          "surveyed, replacing the earlier rows (labels are kept only where its chunks lie on the same ground). Give each date "
                          "of a site its own file name to keep both.")
            moved.append((image, now))
        if moved:
            self.ds.StartTransaction()
            for image, now in moved:
                self.ds.ExecuteSQL(f"UPDATE runs SET image = '{_sql_text(image.path)}', fingerprint = '{_sql_text(now)}' WHERE image_id = '{_sql_text(image.image_id)}'")
            self.ds.CommitTransaction()
        return again

    def scored_by_other_models(self, image_ids: Iterable[str], model_name: str, model_version: str) -> Dict[str, int]:
        """{"name version": images} of ``image_ids`` recorded done with another model than this one."""
        wanted = set(image_ids)
        others: Dict[str, int] = {}
        for feature in self.ds.GetLayerByName("runs"):
            if feature.GetField("image_id") in wanted and feature.GetField("status") == DONE and \
                    (feature.GetField("model_name"), feature.GetField("model_version")) != (model_name, model_version):
                key = f"{feature.GetField('model_name')} {feature.GetField('model_version')}"
                others[key] = others.get(key, 0) + 1
        return others

    def done_with(self, model_name: str, model_version: str) -> Set[str]:
        """The image IDs already done with this model."""
        return {f.GetField("image_id") for f in self.ds.GetLayerByName("runs")
                if f.GetField("status") == DONE and f.GetField("model_name") == model_name and f.GetField("model_version") == model_version}

    def record(self, outcome: Dict, model_name: str, model_version: str) -> None:
        """Replace the image's rows (an earlier failure, or another model's) with this outcome; while
        another program holds the file, tried again for LOCK_PATIENCE_S (the failed transaction is
        undone by closing the connection: GDAL forgets one whose COMMIT SQLite still holds open)."""
        waited_since = None
        while True:
            try:
                with gdal_exceptions():
                    if self.ds is None:
                        self.ds = self._connect()
                    self._write(outcome, model_name, model_version)
                self.recorded += 1
                return
            except RuntimeError as exc:
                self._disconnect()
                kept = f"The {self.recorded} image(s) recorded before in this run are kept, with those of earlier runs; run the survey again to resume it."
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise SurveyError(f"{files.write_failure('The survey', self.path, exc)} {kept}") from None
                now = time.monotonic()
                if waited_since is None:
                    waited_since = now
                    self.warn(f"{self.path} is held by another program (a layer of it being edited or read in QGIS, a database browser): "
                              f"waiting up to {LOCK_PATIENCE_S / 60:.0f} minutes to record {outcome['image'].image_id}.")
                elif now - waited_since > LOCK_PATIENCE_S:
                    raise SurveyError(f"{self.path} stayed held by another program for {LOCK_PATIENCE_S / 60:.0f} minutes, so "
                                      f"{outcome['image'].image_id} could not be recorded. Close it there (or save its edits). {kept}") from None
                time.sleep(LOCK_RETRY_S)

    def _disconnect(self) -> None:
        """Closes the connection, which undoes what the failed transaction left; the next record opens it again."""
        with gdal_exceptions(), contextlib.suppress(RuntimeError), gdal_messages():  # closing what the lock cut short repeats its failure
            self.ds = None

    def _write(self, outcome: Dict, model_name: str, model_version: str) -> None:
        image: SurveyImage = outcome["image"]
        quoted = _sql_text(image.image_id)
        self.ds.StartTransaction()
        try:
            # the labels a geologist gave this image's chunks (a survey's layer is a review layer too) outlive its rescoring:
            # the grid is the survey's own (keep_settings), so a chunk_id is the same window, where it lies on the same ground
            # (not where the file was moved and another of its name put in its place)
            # Each chunk on the same ground keeps its feature id too: edits QGIS holds unsaved for it (labels given while the
            # survey ran) are saved onto the same chunk, where a new id had left them on a row that was gone. Its label, and the
            # fields of the geologist's own (train reads one as LABEL_FIELD), are kept; two rows of one chunk (pasted) that disagree
            # keep neither, rather than whichever was read last.
            own = self._fields_of_ones_own()
            marks, kept, clashing, elsewhere = {}, {}, set(), 0
            windows = {chunk["chunk_id"]: chunk["wkt"] for chunk in outcome["chunks"]}
            carried = ["label"] + own
            columns = ", ".join(f'"{name}"' for name in carried)
            recorded = self.ds.ExecuteSQL(f"SELECT fid, chunk_id, geom, {columns} FROM chunks WHERE image_id = '{quoted}'")
            if recorded is not None:
                for feature in recorded:
                    chunk_id = feature.GetField("chunk_id")
                    values = {name: value for name in carried if (value := feature.GetField(name)) is not None}
                    if not _same_place(feature.GetGeometryRef(), windows.get(chunk_id)):
                        elsewhere += bool(values)
                        continue
                    kept.setdefault(chunk_id, feature.GetFID())
                    if values and marks.get(chunk_id, values) != values:
                        clashing.add(chunk_id)
                    elif values:
                        marks[chunk_id] = values
                self.ds.ReleaseResultSet(recorded)
            for chunk_id in clashing:
                marks.pop(chunk_id, None)
            if elsewhere:
                self.warn(f"{image.image_id}: {elsewhere} label(s) recorded for its chunks lie on other ground than its chunks now do (another "
                          "file of that name was surveyed before): they are not carried over.")
            if clashing:
                self.warn(f"{image.image_id}: chunk(s) {', '.join(str(c) for c in sorted(clashing))} had two rows with different labels (features "
                          "pasted over the survey's own?): rescored, they keep neither. Label them again.")
            for name, _, _ in LAYERS:
                self.ds.ExecuteSQL(f"DELETE FROM \"{name}\" WHERE image_id = '{quoted}'")
            summary = outcome["summary"]
            self._add("chunks", [{**chunk, "label": None, **marks.get(chunk["chunk_id"], {}), KEPT_FID: kept.get(chunk["chunk_id"])}
                                 for chunk in outcome["chunks"]], "wkt", [(name, None) for name in own])
            if summary:
                self._add("summary", [summary], "footprint_wkt")
                self._add("footprints", [summary], "footprint_wkt")
            self._add("runs", [{
                "image": image.path, "image_id": image.image_id, "status": outcome["status"], "error": outcome["error"],
                "model_name": model_name, "model_version": model_version, "runtime_s": outcome["runtime_s"],
                "chunks": len(outcome["chunks"]),
                "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "fingerprint": fingerprint(image.path),
            }], None)
        except BaseException:
            with contextlib.suppress(RuntimeError):  # a lock may have cut the transaction short already
                self.ds.RollbackTransaction()
            raise
        self.ds.CommitTransaction()

    def _add(self, name: str, rows: Iterable[Dict], geometry_key: Optional[str], more_fields: Sequence = ()) -> None:
        add_rows(self.ds.GetLayerByName(name), tuple(next(f for n, _, f in LAYERS if n == name)) + tuple(more_fields), rows, geometry_key)

    def _fields_of_ones_own(self) -> List[str]:
        """The chunk table's fields no survey writes: the geologist's own (a field of labels read by train's LABEL_FIELD, notes)."""
        definition = self.ds.GetLayerByName("chunks").GetLayerDefn()
        written = {name for name, _ in DETECTION_FIELDS}
        return [name for name in (definition.GetFieldDefn(i).GetName() for i in range(definition.GetFieldCount())) if name not in written]

    def close(self) -> None:
        self.ds = None
        self._claim.close()


# --- the client ----------------------------------------------------------------------------


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
            yield client, 0, _check_workers(client, scheduler)
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


def _check_workers(client, scheduler: str, workers: Optional[List[str]] = None, surveyed: str = "Nothing was surveyed.") -> Set[str]:
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


def _lost_cluster_errors() -> Tuple[type, ...]:
    """What waiting on the survey's futures raises when the scheduler goes away."""
    from asyncio import CancelledError as AsyncioCancelled
    from concurrent.futures import CancelledError

    from distributed.client import FuturesCancelledError
    from distributed.comm.core import CommClosedError

    return FuturesCancelledError, CancelledError, AsyncioCancelled, CommClosedError, OSError  # OSError: Dask's timed-out reconnection


class ClusterLost(Exception):
    """The scheduler went away while the survey waited on it (the cause is Dask's own error)."""


def _outcomes(client, futures: Dict, limit_s: float, killed_worker, warn: Callable[[str], None] = lambda message: None, scheduler: str = "",
              checked: Optional[Set[str]] = None) -> Iterator:
    """(future, outcome) of each image as it ends. An image a worker has run for more than limit_s
    (0: no limit) is given up: its task is cancelled and its worker restarted, since nothing stops a
    read that never returns but the process it runs in. Each attempt's time counts from when the
    survey first hears that a worker started it (_say_started), within WATCH_S: an image whose
    worker died (out of memory) is tried again by Dask, and its retry gets a clock of its own, which
    does not run while it waits for a worker. A cluster whose workers are all gone for NO_WORKER_S
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
            _check_workers(client, scheduler, sorted(workers - seen), "The images recorded before are kept; run the survey again to resume it.")
        if workers:
            without_workers[0] = None
        elif without_workers[0] is None:
            without_workers[0] = time.monotonic()
            waits = f"waits {NO_WORKER_S / 60:g} min for one" if seen else "waits for one (a batch queue may take a while)"
            warn(f"No Dask worker is connected: the survey {waits}; {start_them}.")
        elif seen and time.monotonic() - without_workers[0] > NO_WORKER_S:
            raise SurveyError(f"The Dask workers were all gone for {NO_WORKER_S / 60:g} min, so {len(pending)} images were left: {start_them}. "
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
        except _lost_cluster_errors() as exc:  # asked of a scheduler that is gone
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

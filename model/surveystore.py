"""The survey's GeoPackage and what it records of each image: its tables (LAYERS, in SURVEY_CRS_WKT), the grid
settings a survey keeps to, each raster's fingerprint, and the one writer (SurveyStore), which only the survey's
client runs: one SQLite transaction per image, so that a killed survey keeps every image written so far."""

import contextlib
import datetime
import os
import re
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Set

from osgeo import gdal, ogr, osr

from . import files, products
from .errors import EngineError
from .gdalstate import gdal_exceptions, gdal_messages
from .inference import DetectOptions
from .schema import DETECTION_FIELDS, FOOTPRINT_FIELDS, RUN_FIELDS, SUMMARY_FIELDS
from .vector import KEPT_FID, add_missing_fields, add_rows, check_rows, create_layer, new_geopackage

SURVEY_CRS_WKT = products.MARS_GEOGCS_WKT

DONE = "done"
FAILED = "failed"
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

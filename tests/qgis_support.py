"""Support for the tests of the QGIS side (Processing algorithms, qgis_process, plugin).

Everything here is real: algorithms run through ``processing.run`` in the offscreen QGIS of
the ``qgis_app`` fixture, outputs are read back with OGR and sqlite3, and ``scripts/qgis_process``
is the real command line. Nothing here imports TensorFlow.
"""

import atexit
import functools
import glob
import importlib
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from osgeo import ogr

REPO_ROOT = Path(__file__).resolve().parent.parent
PLUGIN_PACKAGE = "hirise_ice_patches"
QGIS_PROCESS = REPO_ROOT / "scripts" / "qgis_process"

# Written out, not imported from model/schema.py, so a change of the schema fails these tests.
DETECTION_FIELD_NAMES = [
    "image_id", "chunk_id", "probability", "class", "label", "review_rank",
    "row", "col", "x_off", "y_off", "width", "height", "valid_fraction", "centre_valid_fraction", "model_name", "model_version",
]
GRID_FIELD_NAMES = [
    "image_id", "chunk_id", "row", "col", "x_off", "y_off", "width", "height", "valid_fraction", "centre_valid_fraction",
]
SUMMARY_FIELD_NAMES = [
    "image_id", "chunks", "icy_chunks", "hard_chunks", "mean_probability", "max_probability",
    "category", "model_name", "model_version", "runtime_s", "chunk_size", "stride", "tta",
    "icy_threshold", "hard_low", "category_rule", "min_valid", "dropped_chunks", "weights_sha256", "engine_version", "scored_at",
]
HISTORY_FIELD_NAMES = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "val_precision", "val_recall", "val_auc"]


def plugin_module(name: str):
    """A module of the plugin as QGIS imports it (package hirise_ice_patches; needs qgis_app)."""
    return importlib.import_module(f"{PLUGIN_PACKAGE}.{name}")


# --- running algorithms ---------------------------------------------------------------------


def recording_feedback():
    """A real QgsProcessingFeedback that also keeps what the algorithm said (thread-safe)."""
    from qgis.core import QgsProcessingFeedback

    class RecordingFeedback(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.lock = threading.Lock()
            self.infos: List[str] = []
            self.errors: List[str] = []
            self.warnings: List[str] = []
            self.commands: List[str] = []

        def pushInfo(self, text):  # noqa: N802 (QGIS's names)
            with self.lock:
                self.infos.append(text)
            super().pushInfo(text)

        def reportError(self, text, fatalError=False):  # noqa: N802,N803
            with self.lock:
                self.errors.append(text)
            super().reportError(text, fatalError)

        def pushWarning(self, text):  # noqa: N802
            with self.lock:
                self.warnings.append(text)
            super().pushWarning(text)

        def pushCommandInfo(self, text):  # noqa: N802
            with self.lock:
                self.commands.append(text)
            super().pushCommandInfo(text)

        @property
        def text(self) -> str:
            with self.lock:
                return "\n".join(self.commands + self.infos + self.warnings + self.errors)

    return RecordingFeedback()


def cancel_when(feedback, ready, observe=dict, seconds: float = 180):
    """Cancel `feedback` from another thread, as the toolbox's Cancel button does, once ready() holds
    (or at the deadline). Returns (the started thread, what it saw then: "progress" and observe()'s items)."""
    seen = {}

    def watch():
        deadline = time.monotonic() + seconds
        while not ready() and time.monotonic() < deadline:
            time.sleep(0.02)
        seen.update(observe(), progress=feedback.progress())
        feedback.cancel()

    thread = threading.Thread(target=watch)
    thread.start()
    return thread, seen


def run_algorithm(algorithm: str, parameters: Dict, context=None, feedback=None) -> Dict:
    """processing.run(...) with a recording feedback; the results dict gets it as '_feedback'."""
    import processing

    feedback = feedback or recording_feedback()
    results = processing.run(algorithm, parameters, context=context, feedback=feedback)
    results = dict(results)
    results["_feedback"] = feedback
    return results


def processing_error(algorithm: str, parameters: Dict, context=None) -> str:
    """The message of the QgsProcessingException the algorithm must raise (fails the test otherwise)."""
    from qgis.core import QgsProcessingException

    feedback = recording_feedback()
    try:
        results = run_algorithm(algorithm, parameters, context=context, feedback=feedback)
    except QgsProcessingException as exc:
        return str(exc)
    raise AssertionError(f"{algorithm} did not fail; results {results}\nlog:\n{feedback.text}")


def gpkg_destination(path, table: str) -> str:
    """A feature-sink destination naming a table in a GeoPackage (several outputs in one file)."""
    return f"ogr:dbname='{path}' table=\"{table}\" (geom)"


# --- the chunk grid, computed independently of model/grid.py ------------------------------------


def window_starts(length, size, stride):
    """Window starts along one axis: every stride pixels, as long as the previous window has not reached the end
    and the next one is at least an eighth of a chunk wide."""
    starts = [0]
    while starts[-1] + size < length and length - (starts[-1] + stride) >= max(1, size // 8):
        starts.append(starts[-1] + stride)
    return starts


def expected_grid(width, height, size, stride=None):
    """{(row, col, x_off, y_off, w, h)} of the documented grid, computed here from scratch."""
    stride = stride or size
    xs, ys = window_starts(width, size, stride), window_starts(height, size, stride)
    return {(r, c, x, y, min(size, width - x), min(size, height - y)) for r, y in enumerate(ys) for c, x in enumerate(xs)}



# --- reading outputs back -------------------------------------------------------------------


@dataclass
class OgrTable:
    name: str
    field_names: List[str]
    field_types: Dict[str, str]
    rows: List[Dict]  # attributes, plus "_wkt" (None without geometry)
    srs_proj4: Optional[str]
    srs_wkt: Optional[str]


def read_ogr(path, layer_name: Optional[str] = None) -> OgrTable:
    """A vector table read with OGR (an oracle independent of QGIS)."""
    ds = ogr.Open(str(path))
    assert ds is not None, f"OGR cannot open {path}"
    layer = ds.GetLayerByName(layer_name) if layer_name else ds.GetLayer(0)
    assert layer is not None, f"{path} has no layer {layer_name!r} (layers: {[ds.GetLayer(i).GetName() for i in range(ds.GetLayerCount())]})"
    definition = layer.GetLayerDefn()
    names = [definition.GetFieldDefn(i).GetName() for i in range(definition.GetFieldCount())]
    types = {definition.GetFieldDefn(i).GetName(): definition.GetFieldDefn(i).GetTypeName() for i in range(definition.GetFieldCount())}
    rows = []
    for feature in layer:
        row = {name: (feature.GetField(name) if feature.IsFieldSetAndNotNull(name) else None) for name in names}
        geometry = feature.GetGeometryRef()
        row["_wkt"] = geometry.ExportToWkt() if geometry is not None else None
        rows.append(row)
    srs = layer.GetSpatialRef()
    return OgrTable(layer.GetName(), names, types, rows, srs.ExportToProj4() if srs else None, srs.ExportToWkt() if srs else None)


def layer_styles(path) -> List[Dict]:
    """Rows of a GeoPackage's layer_styles table (empty when there is none)."""
    con = sqlite3.connect(str(path))
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "layer_styles" not in tables:
            return []
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute("SELECT f_table_name, styleName, useAsDefault, styleQML FROM layer_styles")]
    finally:
        con.close()


def normalised_proj(proj: str) -> List[str]:
    """A PROJ string's parameters, sorted, without +type=crs (how QGIS and OGR differ in writing one)."""
    return sorted(token for token in proj.split() if token != "+type=crs")


def outer_ring(wkt: str):
    geometry = ogr.CreateGeometryFromWkt(wkt)
    if geometry.GetGeometryType() in (ogr.wkbMultiPolygon, ogr.wkbMultiPolygon25D):
        assert geometry.GetGeometryCount() == 1, wkt
        geometry = geometry.GetGeometryRef(0)
    ring = geometry.GetGeometryRef(0)
    return [ring.GetPoint_2D(i) for i in range(ring.GetPointCount())]


def assert_ring_equal(actual, expected, tolerance: float, what: str = "ring") -> None:
    assert len(actual) == len(expected), f"{what}: {actual} != {expected}"
    for (ax, ay), (ex, ey) in zip(actual, expected):
        assert abs(ax - ex) <= tolerance and abs(ay - ey) <= tolerance, f"{what}: {actual} != {expected}"


def drawn_share(layer_source: str, crs_proj: str, extent, size: int = 64) -> float:
    """The share of a map, in the CRS given by a PROJ string over extent (xmin, ymin, xmax, ymax), that QGIS
    draws of the layer in solid red: what a geologist sees of a layer over an image in the image's CRS."""
    from qgis.core import (QgsCoordinateReferenceSystem, QgsFillSymbol, QgsMapRendererSequentialJob, QgsMapSettings,
                           QgsRectangle, QgsSingleSymbolRenderer, QgsVectorLayer)
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtGui import QColor

    layer = QgsVectorLayer(layer_source, "drawn", "ogr")
    assert layer.isValid(), layer_source
    layer.setRenderer(QgsSingleSymbolRenderer(QgsFillSymbol.createSimple({"color": "255,0,0", "outline_style": "no"})))
    settings = QgsMapSettings()
    settings.setLayers([layer])
    settings.setDestinationCrs(QgsCoordinateReferenceSystem.fromProj(crs_proj))
    settings.setOutputSize(QSize(size, size))
    settings.setExtent(QgsRectangle(*extent))
    settings.setFlag(QgsMapSettings.Antialiasing, False)  # no half-red seams between neighbouring chunks
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    image = job.renderedImage()
    red = sum(1 for x in range(size) for y in range(size) if QColor(image.pixel(x, y)).getRgb()[:3] == (255, 0, 0))
    return red / float(size * size)


def files_named_partial(folder) -> List[str]:
    """The engine's temporary outputs (.name.partial.ext) left in a folder, and GDAL's sidecars of them."""
    return sorted(glob.glob(os.path.join(str(folder), "**", "*.partial*"), recursive=True) + glob.glob(os.path.join(str(folder), "**", ".*.partial*"), recursive=True))


def real_file(georef_data, name: str, folder) -> Path:
    """A private copy of a real HiRISE file (../shared/data stays untouched: QGIS and GDAL write
    .aux.xml statistics beside the rasters they open). Skips when the file is absent."""
    import pytest

    source = Path(georef_data) / name
    if not source.is_file():
        pytest.skip(f"real HiRISE file {source} is absent")
    target = Path(folder) / "real" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


@contextmanager
def read_only_folder(folder):
    """Make `folder` unwritable for the duration: immutable for root (whom mode bits do not stop), else mode 0555."""
    folder = Path(folder)
    as_root = os.geteuid() == 0
    if as_root:
        subprocess.run(["chattr", "+i", str(folder)], check=True)
    else:
        folder.chmod(0o555)
    try:
        yield folder
    finally:
        if as_root:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        else:
            folder.chmod(0o755)


@contextmanager
def held_file(path):
    """Make the file `path` one that can be neither renamed nor replaced for the duration, as Windows holds a file
    another program has open (a layer in QGIS): immutable, which needs root (mode bits do not stop a rename)."""
    import pytest

    if os.geteuid() != 0:
        pytest.skip("making a file that cannot be replaced (chattr +i) needs root")
    subprocess.run(["chattr", "+i", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


# --- processes ---------------------------------------------------------------------------------


def processes_with(marker: str) -> List[int]:
    """Live (non-zombie) processes whose command line contains marker."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode("utf-8", "replace")
            with open(f"/proc/{entry}/stat", "rb") as handle:
                state = handle.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in command and state != b"Z":
            found.append(int(entry))
    return found


def wait_until_gone(marker: str, seconds: float = 10.0) -> List[int]:
    """Processes with marker still alive after up to `seconds` (a killed group takes a moment to be reaped)."""
    deadline = time.monotonic() + seconds
    while True:
        alive = processes_with(marker)
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def native_tensorflow_loaded() -> List[str]:
    """Shared objects of TensorFlow mapped into this process."""
    with open("/proc/self/maps", encoding="utf-8", errors="replace") as handle:
        return sorted({line.split()[-1] for line in handle if re.search(r"tensorflow|_pywrap_tf", line)})


# --- no worker ---------------------------------------------------------------------------------


@contextmanager
def no_worker(monkeypatch, folder):
    """A QGIS where the worker's Python cannot be found, as in a plugin installed without scripts/install.

    HIRISEICE_WORKER_PYTHON and the QGIS setting hiriseice/worker_python are unset and the plugin's
    own .venv is looked for in `folder` (an empty folder) instead of the checkout, whose .venv
    exists on a developer's machine. Yields the path of the missing plugin venv Python.
    """
    from qgis.core import QgsSettings

    worker = plugin_module("processing_provider.worker")
    monkeypatch.delenv(worker.ENV_VAR, raising=False)
    monkeypatch.setattr(worker, "PLUGIN_FOLDER", str(folder))
    missing = worker.default_worker_python()
    settings = QgsSettings()
    saved = settings.value(worker.SETTINGS_KEY, None)
    settings.remove(worker.SETTINGS_KEY)
    try:
        yield missing
    finally:
        if saved is not None:
            QgsSettings().setValue(worker.SETTINGS_KEY, saved)


# --- qgis_process ------------------------------------------------------------------------------


def _temporary_folder(prefix: str) -> str:
    """A folder removed when the test process ends (shared by modules, so no tmp_path)."""
    folder = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, folder, True)
    return folder


@functools.lru_cache(maxsize=1)
def qgis_process_config() -> str:
    """One isolated QGIS profile folder per test process for scripts/qgis_process."""
    return _temporary_folder("hiriseice-qgis-process-")


def qgis_process(*args, env: Optional[Dict[str, str]] = None, timeout: float = 300, cwd=REPO_ROOT) -> subprocess.CompletedProcess:
    """scripts/qgis_process ARGS, headless, in its own profile, started in cwd; stdout and stderr merged into .stdout.
    A run past `timeout` seconds (e.g. one waiting on a dialog nobody sees) fails the test."""
    return subprocess.run(
        ["bash", str(QGIS_PROCESS)] + [str(a) for a in args],
        cwd=str(cwd), env=qgis_process_environment(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
    )


def qgis_process_environment(env: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """This process's environment for scripts/qgis_process, in the test process's own QGIS profile, with env on top."""
    environment = dict(os.environ)
    environment["HIRISEICE_QGIS_CONFIG_PATH"] = qgis_process_config()
    environment.pop("QGIS_CUSTOM_CONFIG_PATH", None)
    environment.update(env or {})
    return environment


@dataclass
class QgisProcessDetect:
    process: subprocess.CompletedProcess
    output: str
    report: str
    raster: str


@functools.lru_cache(maxsize=4)
def qgis_process_detect(model_path: str, raster_path: str) -> QgisProcessDetect:
    """`scripts/qgis_process run hiriseice:detect` once per (model, raster) and test process (shared by modules)."""
    folder = _temporary_folder("hiriseice-qp-detect-")
    output = os.path.join(folder, "detected.gpkg")
    report = os.path.join(folder, "report.html")
    done = qgis_process(
        "run", "hiriseice:detect", "--", f"INPUT={raster_path}", f"MODEL={model_path}", "CHUNK_SIZE=64", f"OUTPUT={output}", f"REPORT={report}"
    )
    return QgisProcessDetect(done, output, report, raster_path)


# --- the plugin installed without its worker ---------------------------------------------------

PLUGIN_FILES = ("__init__.py", "metadata.txt", "LICENSE", "model", "plugin", "processing_provider", "resources")


def plugin_without_worker(folder) -> Path:
    """A plugins folder holding hirise_ice_patches as a user gets it from the plugin zip, before
    scripts/install: the checkout's files (linked), no .venv. Returns the plugins folder."""
    plugins = Path(folder) / "plugins"
    target = plugins / PLUGIN_PACKAGE
    target.mkdir(parents=True)
    for name in PLUGIN_FILES:
        if (REPO_ROOT / name).exists():
            (target / name).symlink_to(REPO_ROOT / name)
    assert not (target / ".venv").exists()
    return plugins


def environment_without_worker(plugins: Path, config: Path) -> Dict[str, str]:
    """What scripts/qgis_process sets up, for a plugins folder of our choosing and no worker anywhere."""
    from qgis.PyQt.QtCore import QSettings

    ini = config / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True, exist_ok=True)
    settings = QSettings(str(ini), QSettings.IniFormat)
    settings.setValue(f"PythonPlugins/{PLUGIN_PACKAGE}", True)
    settings.sync()
    env = dict(os.environ)
    runtime = config / "xdg-runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env.update(
        QGIS_PLUGINPATH=str(plugins), QGIS_CUSTOM_CONFIG_PATH=str(config), QT_QPA_PLATFORM="offscreen", XDG_RUNTIME_DIR=str(runtime),
    )
    for name in ("PYTHONPATH", "HIRISEICE_WORKER_PYTHON"):
        env.pop(name, None)
    return env


# --- the generated detection scene shared by the detect and qgis_process tests ------------------


def detect_scene(session_raster):
    """320 x 200 px in a custom Mars equirectangular WKT; 64-px chunks give a 4 x 5 grid whose last row is 8 px high."""
    import helpers

    return session_raster(name="detect_scene.tif", width=320, height=200, icy_chunk_size=64, icy_pattern=helpers.checkerboard, seed=3)

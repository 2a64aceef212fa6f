"""Shared fixtures: paths, the worker Python, real HiRISE data, generated rasters, a tiny model
trained in this session, and a QGIS application with the plugin's provider.

The tests run in Debian's Python (QGIS's bindings). TensorFlow is never imported here: it
aborts QGIS. Anything that needs it runs in the worker (tests/helpers.py: run_worker).
"""

import importlib
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO_ROOT = Path(__file__).resolve().parent.parent
# The repository root is the parent of the `model` package (and the plugin folder itself).
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import helpers  # noqa: E402  (tests/ is on sys.path: pytest's rootdir-less conftest import)

SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
PLUGIN_PACKAGE = "hirise_ice_patches"


# Skips that leave a part of the product untested: the worker, real HiRISE data, a GDAL driver.
# A fresh clone may lack them; CI (CI=true) must not, so there such a skip is a failure.
MUST_RUN_ON_CI = re.compile(r"worker Python|worker's GDAL|real HiRISE|real georeferenced|absent from the shared data|has no \w+ driver")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") != "true" or not report.skipped or not isinstance(report.longrepr, tuple):
        return
    reason = report.longrepr[2]
    if MUST_RUN_ON_CI.search(reason):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, where it must run: {reason}"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def worker_python() -> str:
    """The worker's interpreter (HIRISEICE_WORKER_PYTHON, default <repo>/.venv/bin/python)."""
    python = helpers.worker_python_path()
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        pytest.skip(f"worker Python {python} not found: run scripts/install (it makes .venv with TensorFlow), or set HIRISEICE_WORKER_PYTHON")
    return python


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real HiRISE data); absent in a user's fresh clone."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real HiRISE data not available ({SHARED_DATA} is absent; it is not part of the repository)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def georef_data(shared_data) -> Path:
    folder = shared_data / "hirise-georef"
    if not folder.is_dir():
        pytest.skip(f"real georeferenced HiRISE files not available ({folder} is absent)")
    return folder


@pytest.fixture
def make_raster(tmp_path):
    """Factory of generated HiRISE-like GeoTIFFs in this test's tmp_path (see helpers.generate_raster).

    make_raster(width=256, height=256, data_type="UInt16" | "Byte", nodata=0 | None | value,
                crs="mars" | None | WKT, rotated_border=False, band_count=1, seed=0, name=...)
    """
    counter = [0]

    def make(**kwargs) -> helpers.GeneratedRaster:
        counter[0] += 1
        kwargs.setdefault("name", f"raster{counter[0]}.tif")
        return helpers.generate_raster(tmp_path, **kwargs)

    return make


@pytest.fixture(scope="session")
def session_raster(tmp_path_factory):
    """Same factory, for rasters shared by a whole session (e.g. the detection scene)."""
    folder = tmp_path_factory.mktemp("rasters")

    def make(**kwargs) -> helpers.GeneratedRaster:
        return helpers.generate_raster(folder, **kwargs)

    return make


# --- the tiny model -----------------------------------------------------------------------


@dataclass
class TrainingScene:
    raster: helpers.GeneratedRaster
    labels: List[Dict]  # one labelled polygon per chunk (mode "chunks")


def training_scene(folder, name="train_scene.tif", seed=11) -> TrainingScene:
    """384 x 384 px, 6 x 6 chunks of 64 px; the checkerboard's chunks hold a bright blob and are labelled icy."""
    raster = helpers.generate_raster(
        folder, name=name, width=384, height=384, data_type="UInt16", nodata=0, seed=seed,
        icy_chunk_size=helpers.TINY_CHUNK_SIZE, icy_pattern=helpers.checkerboard,
    )
    labels = helpers.chunk_labels(raster, helpers.TINY_CHUNK_SIZE, lambda row, col: 1 if helpers.checkerboard(row, col) else 0)
    return TrainingScene(raster, labels)


@dataclass
class TinyModel:
    path: str
    job: Dict
    job_path: str
    scene: TrainingScene
    run: helpers.WorkerRun
    report: str

    @property
    def result(self) -> Dict:
        return self.run.result

    @property
    def metadata(self) -> Dict:
        from model import modelfile

        return modelfile.read_metadata(self.path)


@pytest.fixture(scope="session")
def training_data(tmp_path_factory) -> TrainingScene:
    return training_scene(tmp_path_factory.mktemp("training"))


@pytest.fixture(scope="session")
def tiny_model(worker_python, training_data, tmp_path_factory) -> TinyModel:
    """A model trained in this session by `python -m model train` (widths [4, 8, 8, 16], 32 px input, 64 px chunks, 2 epochs)."""
    folder = tmp_path_factory.mktemp("tiny_model")
    path = str(folder / "tiny.hiriseice")
    report = str(folder / "training.html")
    job = helpers.tiny_job(training_data.raster.path, training_data.labels, path, report=report)
    job_path = helpers.write_job(folder / "job.json", job)
    run = helpers.run_worker(worker_python, "train", job_path).check()
    return TinyModel(path, job, job_path, training_data, run, report)


TWO_SCALE = r"""
import sys
from model import modelfile
from model.network import architecture, build_network, multi_scale_from
network, meta = modelfile.load(sys.argv[1])
size, widths = meta["input_size"], meta["architecture"]["widths"]
coarse = build_network(size // 2, widths)
coarse.set_weights(network.get_weights())
meta["architecture"] = architecture(size, widths, [2, 1])
modelfile.save(multi_scale_from({2: coarse, 1: network}, size, widths), meta, sys.argv[2], replay=modelfile.load_replay(sys.argv[1]))
"""


@pytest.fixture(scope="session")
def tiny_two_scale_model(worker_python, tiny_model, tmp_path_factory) -> str:
    """The tiny model's weights reading each chunk at two scales (model/network.py multi_scale_from):
    32 px, and 16 px averaged from them."""
    path = str(tmp_path_factory.mktemp("tiny_two_scale") / "two_scale.hiriseice")
    done = helpers.run_worker_snippet(worker_python, TWO_SCALE, tiny_model.path, path)
    assert done.returncode == 0, done.stderr[-3000:]
    return path


# --- QGIS ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def qgis_app(tmp_path_factory):
    """A headless QgsApplication with Processing and the plugin's provider ('hiriseice') registered.

    The plugin is imported as the package hirise_ice_patches, as QGIS imports it: a temporary
    folder on sys.path holds a link of that name to the repository root.
    """
    try:
        from qgis.core import QgsApplication
    except ImportError as exc:
        pytest.skip(f"QGIS's Python bindings are not importable ({exc}): run scripts/install (python3-qgis)")
    # Keep this QGIS out of the user's profile (scripts/test sets its own folder).
    os.environ.setdefault("QGIS_CUSTOM_CONFIG_PATH", str(tmp_path_factory.mktemp("qgis-profile")))
    if not os.environ.get("XDG_RUNTIME_DIR"):
        runtime = tempfile.mkdtemp(prefix="xdg-runtime-")
        os.chmod(runtime, 0o700)
        os.environ["XDG_RUNTIME_DIR"] = runtime

    app = QgsApplication.instance()
    if app is None:
        app = QgsApplication([], False)
        app.initQgis()
    processing_plugins = "/usr/share/qgis/python/plugins"
    if processing_plugins not in sys.path and os.path.isdir(processing_plugins):
        sys.path.append(processing_plugins)
    from processing.core.Processing import Processing

    Processing.initialize()

    links = tmp_path_factory.mktemp("plugin_link")
    (links / PLUGIN_PACKAGE).symlink_to(REPO_ROOT, target_is_directory=True)
    sys.path.insert(0, str(links))
    provider_module = importlib.import_module(f"{PLUGIN_PACKAGE}.processing_provider.provider")
    registry = QgsApplication.processingRegistry()
    provider = registry.providerById("hiriseice")
    if provider is None:
        provider = provider_module.IcePatchesProvider()
        assert registry.addProvider(provider), "QGIS refused to register the hiriseice provider"
    yield app
    registry.removeProvider(provider)
    sys.path.remove(str(links))


@pytest.fixture
def small_disk(tmp_path):
    """make(kilobytes): a folder on a tmpfs of that size, a disk that is or becomes full."""
    mounted = []

    def make(kilobytes: int):
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kilobytes}k", "tmpfs", str(folder)], capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f"a full disk is simulated with a small tmpfs, which this user cannot mount: {done.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield make
    for folder in mounted:
        subprocess.run(["umount", "--lazy", str(folder)], check=False)

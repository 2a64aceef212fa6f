"""scripts/package: the ZIP that QGIS's "Install from ZIP" takes, unpacked into a fresh QGIS profile
with QGIS's own installer code and loaded there as QGIS loads plugins, offscreen."""

import configparser
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import helpers

REPO = helpers.REPO_ROOT
PACKAGE = "hirise_ice_patches"
QGIS_PYTHON = "/usr/share/qgis/python"


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("package") / "hirise_ice.zip"
    done = subprocess.run(["nice", "-n", "19", sys.executable, str(REPO / "scripts" / "package"), "--output", str(output)],
                          capture_output=True, text=True, timeout=300, cwd=str(REPO))
    assert done.returncode == 0, done.stderr
    assert str(output) in done.stdout and "Install from ZIP" in done.stdout
    return output


def names(package: Path):
    with zipfile.ZipFile(package) as archive:
        assert archive.testzip() is None
        return archive.namelist()


def test_one_top_folder_and_no_developer_files(package):
    listed = names(package)
    assert listed[0] == f"{PACKAGE}/"
    assert all(n.startswith(f"{PACKAGE}/") for n in listed)
    files = {n[len(PACKAGE) + 1:] for n in listed if not n.endswith("/")}
    for forbidden in (r"^tests/", r"^benchmarks/", r"^\.ci/", r"^build/", r"(^|/)\.venv/", r"(^|/)\.git(/|$)", r"__pycache__", r"\.pyc$", r"\.pytest_cache",
                      r"^scripts/(test|package|train_default_model|default_model\.py|model_card\.py)$", r"\.aux\.xml$"):
        assert not [f for f in files if re.search(forbidden, f)], forbidden
    for needed in ("__init__.py", "metadata.txt", "LICENSE", "README.md", "CHANGELOG.md", "requirements-worker.txt", "scripts/install",
                   "docs/default-model.md", "docs/retraining.md", "docs/performance.md",
                   "resources/models/default.hiriseice", "resources/models/MODEL_CARD.md", "resources/styles/chunks.qml", "resources/icons/hiriseice.svg"):
        assert needed in files, needed
    # Every module the plugin and the worker import is there.
    for folder in ("plugin", "processing_provider", "model"):
        tracked = subprocess.run(["git", "-C", str(REPO), "ls-files", folder], capture_output=True, text=True, check=True).stdout.split()
        assert {t for t in tracked if t.endswith(".py") and (REPO / t).exists()} <= files, folder
    with zipfile.ZipFile(package) as archive:
        assert archive.read(f"{PACKAGE}/resources/models/default.hiriseice") == (REPO / "resources/models/default.hiriseice").read_bytes()


def test_every_link_of_the_documents_leads_to_a_file_of_the_package(package):
    """The README sends readers to docs/ for the measurements, and both ship in the ZIP: a link
    to a file the ZIP lacks, or to a path that moved, would lead nowhere."""
    files = {n[len(PACKAGE) + 1:] for n in names(package) if not n.endswith("/")}
    documents = ["README.md"] + sorted(f for f in files if f.startswith("docs/") and f.endswith(".md"))
    assert len(documents) >= 4
    for document in documents:
        text = (REPO / document).read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            resolved = os.path.normpath(os.path.join(os.path.dirname(document), target))
            assert resolved in files, f"{document} links to {target}, which the package does not hold"


def test_packaged_metadata(package):
    with zipfile.ZipFile(package) as archive:
        text = archive.read(f"{PACKAGE}/metadata.txt").decode("utf-8")
    parser = configparser.ConfigParser()  # as QGIS reads it (qgis.utils.findPlugins): with interpolation
    parser.read_string(text)
    general = {key: parser.get("general", key) for key in parser.options("general")}  # every value readable
    source = configparser.ConfigParser(interpolation=None)
    source.read(REPO / "metadata.txt", encoding="utf-8")
    for key in ("name", "version", "about", "description", "icon", "qgisminimumversion", "repository"):
        assert general[key] == source.get("general", key), key
    assert general["qgismaximumversion"] == "4.99" and "supportsqt6" not in general
    for key in ("repository", "tracker", "homepage"):
        assert re.match(r"https://", general[key]) and ".invalid" not in general[key] and ".example" not in general[key], key
    # The changelog is CHANGELOG.md's, every entry, the current version first.
    changelog = general["changelog"]
    assert changelog.startswith(general["version"])
    entries = [line[2:].strip() for line in (REPO / "CHANGELOG.md").read_text(encoding="utf-8").splitlines() if line.startswith("- ")]
    assert entries and all(entry in changelog for entry in entries)
    assert len(general["about"]) > 300 and "Worker settings… > Reinstall…" in general["about"]


def test_untracked_work_in_the_checkout_is_left_out_and_new_source_goes_in(tmp_path):
    """Following the README's examples in a checkout leaves rasters, layers, models and reports beside
    the plugin: they had gone into the ZIP (55 MB). An uncommitted new module still ships."""
    checkout = tmp_path / "checkout"
    subprocess.run(["git", "clone", "-q", str(REPO), str(checkout)], check=True)
    (checkout / "scripts" / "package").write_bytes((REPO / "scripts" / "package").read_bytes())  # this checkout's script, committed or not
    for name in ("scene.tif", "mine.hiriseice", "labels.gpkg", "train.html", "model/scratch.tif"):
        (checkout / name).write_bytes(b"a user's work")
    (checkout / "model" / "new_module.py").write_text("NEW = 1\n", encoding="utf-8")
    output = tmp_path / "hirise_ice.zip"
    done = subprocess.run(["nice", "-n", "19", sys.executable, str(checkout / "scripts" / "package"), "--output", str(output)],
                          capture_output=True, text=True, timeout=300, cwd=str(checkout))
    assert done.returncode == 0, done.stderr
    files = set(names(output))
    assert f"{PACKAGE}/model/new_module.py" in files
    assert not {f"{PACKAGE}/{name}" for name in ("scene.tif", "mine.hiriseice", "labels.gpkg", "train.html", "model/scratch.tif")} & files
    assert ("Left out: 5 untracked file(s) that are not the plugin's source (labels.gpkg, mine.hiriseice, model/scratch.tif, scene.tif, train.html); "
            "commit one to ship it.") in done.stdout, done.stdout


def test_package_refuses_placeholder_urls(tmp_path):
    """The checks run before anything is written: a copy of the script beside a placeholder metadata.txt."""
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    for name in ("__init__.py", "LICENSE", "CHANGELOG.md", "resources/icons/hiriseice.svg", "resources/models/MODEL_CARD.md", "scripts/package"):
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        (checkout / name).write_bytes((REPO / name).read_bytes())
    (checkout / "resources/models/default.hiriseice").write_bytes(b"stand-in")
    metadata = (REPO / "metadata.txt").read_text(encoding="utf-8")
    (checkout / "metadata.txt").write_text(re.sub(r"(?m)^tracker=.*$", "tracker=https://example.invalid/issues", metadata), encoding="utf-8")
    subprocess.run(["git", "init", "-q", str(checkout)], check=True)
    subprocess.run(["git", "-C", str(checkout), "add", "-A"], check=True)
    output = checkout / "build" / "hirise_ice.zip"
    done = subprocess.run([sys.executable, str(checkout / "scripts" / "package"), "--output", str(output)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "tracker is a placeholder (https://example.invalid/issues)" in done.stderr
    assert not output.exists() and not output.with_name(output.name + ".partial").exists()


LOAD_SCRIPT = r'''
import json, os, sys
sys.path.append("/usr/share/qgis/python/plugins")
from qgis.core import QgsApplication

app = QgsApplication([], True)
app.initQgis()
import qgis.utils

plugins_folder = sys.argv[1]
sys.path.insert(0, plugins_folder)
qgis.utils.plugin_paths = [plugins_folder]
qgis.utils.updateAvailablePlugins()


from gui_session import make_iface  # tests/ is on PYTHONPATH: the stand-in for the QGIS main window's iface

qgis.utils.iface = make_iface()
out = {"available": list(qgis.utils.available_plugins), "name": qgis.utils.pluginMetadata("hirise_ice_patches", "name")}
out["loaded"] = qgis.utils.loadPlugin("hirise_ice_patches")
out["started"] = qgis.utils.startPlugin("hirise_ice_patches")
import hirise_ice_patches
out["package_file"] = hirise_ice_patches.__file__
provider = QgsApplication.processingRegistry().providerById("hiriseice")
out["algorithms"] = sorted(a.id() for a in provider.algorithms()) if provider else None
out["menus"] = [a.text() for a in qgis.utils.iface.window.menuBar().actions()]
from hirise_ice_patches.processing_provider.common import checked_model
path, metadata = checked_model("")
out["default_model"] = path
out["default_model_chunk_size"] = metadata.get("chunk_size")

# An algorithm that needs no worker, run through Processing from the installed copy.
from processing.core.Processing import Processing
import processing
from osgeo import gdal, osr
Processing.initialize()
raster = os.path.join(sys.argv[2], "small.tif")
dataset = gdal.GetDriverByName("GTiff").Create(raster, 96, 64, 1, gdal.GDT_Byte)
dataset.SetGeoTransform([0, 1, 0, 0, 0, -1])
srs = osr.SpatialReference()
srs.ImportFromEPSG(32633)
dataset.SetProjection(srs.ExportToWkt())
dataset.GetRasterBand(1).Fill(100)
dataset = None
result = processing.run("hiriseice:chunk", {"INPUT": raster, "CHUNK_SIZE": 32, "OUTPUT": os.path.join(sys.argv[2], "grid.gpkg")})
from qgis.core import QgsVectorLayer
grid = QgsVectorLayer(result["OUTPUT"], "grid", "ogr")
out["chunks"] = grid.featureCount()
out["unloaded"] = qgis.utils.unloadPlugin("hirise_ice_patches")
out["provider_after_unload"] = QgsApplication.processingRegistry().providerById("hiriseice") is not None
print("RESULT " + json.dumps(out))
sys.stdout.flush()
app.exitQgis()
'''


def test_installed_from_the_zip_into_a_fresh_profile_it_loads(package, tmp_path):
    if not os.path.isdir(QGIS_PYTHON):
        pytest.skip(f"QGIS's Python folder {QGIS_PYTHON} is absent")
    sys.path.insert(0, QGIS_PYTHON)
    try:
        from pyplugin_installer.unzip import unzip
    finally:
        sys.path.remove(QGIS_PYTHON)
    config = tmp_path / "config"
    plugins = config / "profiles" / "default" / "python" / "plugins"
    # What QgsPluginInstaller.installFromZipFile does: the plugin's folder from the shortest metadata.txt, then QGIS's unzip.
    with zipfile.ZipFile(package) as archive:
        plugin_name = os.path.split(sorted(n for n in archive.namelist() if n.endswith("metadata.txt"))[0])[0]
    assert plugin_name == PACKAGE
    unzip(str(package), str(plugins))
    installed = plugins / PACKAGE
    assert (installed / "metadata.txt").is_file() and not (installed / ".venv").exists() and not (installed / "tests").exists()
    # QGIS's unzip writes no execute bits, so the packaged scripts (scripts/demo, the README's main job) call one another through bash.
    shell_scripts = [path for path in (installed / "scripts").iterdir() if path.read_text(encoding="utf-8", errors="replace").startswith("#!/usr/bin/env bash")]
    assert shell_scripts and not any(os.access(path, os.X_OK) for path in shell_scripts)
    for path in shell_scripts:
        for line in path.read_text(encoding="utf-8").splitlines():
            for called in re.findall(r'"\$REPO/scripts/([\w.-]+)"', line):
                if not called.endswith(".py"):
                    assert re.search(r'\bbash "\$REPO/scripts/' + re.escape(called), line), f"{path.name} runs {called} without bash: {line}"

    script = tmp_path / "load.py"
    script.write_text(LOAD_SCRIPT, encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    runtime = tmp_path / "xdg-runtime"
    runtime.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HIRISEICE_WORKER_PYTHON")}
    env.update(QT_QPA_PLATFORM="offscreen", QGIS_CUSTOM_CONFIG_PATH=str(config), XDG_RUNTIME_DIR=str(runtime), PYTHONPATH=str(REPO / "tests"))
    done = subprocess.run(["nice", "-n", "19", sys.executable, str(script), str(plugins), str(work)], env=env, capture_output=True, text=True, timeout=300, cwd=str(work))
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"exit {done.returncode}\nstdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    out = json.loads(lines[-1][len("RESULT "):])
    assert out["available"] == [PACKAGE] and out["name"] == "HiRISE Ice Patches"
    assert out["loaded"] is True and out["started"] is True
    assert Path(out["package_file"]).resolve() == (installed / "__init__.py").resolve()  # the installed copy, not the checkout
    assert out["algorithms"] == ["hiriseice:chunk", "hiriseice:detect", "hiriseice:download", "hiriseice:find", "hiriseice:survey", "hiriseice:train"]
    assert "HiRISE &Ice Patches" in out["menus"]  # Alt+I opens it
    assert Path(out["default_model"]).resolve() == (installed / "resources" / "models" / "default.hiriseice").resolve()
    assert out["default_model_chunk_size"]
    assert out["chunks"] == 6  # 96 x 64 px in 32-px chunks
    assert out["unloaded"] is True and out["provider_after_unload"] is False

"""The plugin as a user meets it, in a GUI QGIS (offscreen here; the same under Xvfb).

tests/gui_scripts/tour.py loads the real plugin on a stand-in iface (tests/gui_session.py: QgisApp is
not available from Python), opens the Processing toolbox, runs Detect on the sample scene from its
dialog (Run pressed, the real worker and default model), checks the styled layers, drives the review
dock with key presses and renders the report. Screenshots go to build/screenshots/ (kept as artefacts).
"""

import subprocess

import pytest

import gui_session
import helpers
import qgis_support as qs
from conftest import SHARED_DATA
from model import modelfile

SHOTS = qs.REPO_ROOT / "build" / "screenshots"
# resources/styles/chunks.qml: the class bounds of the chunk style.
CHUNK_CLASS_BOUNDS = [(0.0, 0.2), (0.2, 0.4), (0.4, 0.5), (0.5, 0.6), (0.6, 0.8), (0.8, 1.0)]
# What Detect names its loaded outputs after: the scene and the bundled model.
_DEFAULT = modelfile.read_metadata(modelfile.default_model_path())
BY_DEFAULT_MODEL = f", ESP_SAMPLE_0950_RED ({_DEFAULT['name']} {_DEFAULT['version']})"


@pytest.fixture(scope="module")
def tour(tmp_path_factory, worker_python):
    folder = tmp_path_factory.mktemp("tour")
    scene = folder / "ESP_SAMPLE_0950_RED.tif"
    # real HiRISE terrain where ../shared is beside the checkout (as the demo's), so the screenshots show real ground
    terrain = [arg for name in ("hirise-terrain", "hirise-terrain-v1") if (SHARED_DATA / name).is_dir() for arg in ("--terrain", str(SHARED_DATA / name))]
    made = subprocess.run([worker_python, "-m", "model", "sample-scene", str(scene)] + (terrain if len(terrain) == 4 else []),
                          cwd=str(qs.REPO_ROOT), env=helpers.worker_env(), capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-3000:]
    plugins = qs.plugin_without_worker(folder)
    env = qs.environment_without_worker(plugins, folder / "config")
    env["HIRISEICE_WORKER_PYTHON"] = worker_python  # the worker is set up: no installer offer
    SHOTS.mkdir(parents=True, exist_ok=True)
    out = gui_session.run_script("tour.py", [plugins, scene, folder, SHOTS], env, folder, timeout=900)
    return {"out": out, "folder": folder}


def test_toolbox_lists_the_plugin(tour):
    out = tour["out"]
    assert "HiRISE &Ice Patches" in out["menus"] and out["first_use_offer"] is None  # Alt+I opens it
    toolbox = [t.strip() for t in out["toolbox"]]
    provider = toolbox.index("HiRISE Ice Patches")
    assert {"Detection", "Training", "Detect ice patches", "Train ice-patch model", "Chunk grid of a HiRISE image"} <= set(toolbox[provider:])


def test_detect_from_its_dialog_on_the_sample_scene(tour):
    out = tour["out"]
    assert out["detect_finished"]
    ok, results = out["detect"]
    assert ok and results["CHUNKS"] == "12" and results["REPORT"].endswith("report.html")
    # each output named after its image and model, so that runs on other images or with other models are told apart
    assert sorted(out["layers"]) == ["ESP_SAMPLE_0950_RED", f"Ice probability of chunks{BY_DEFAULT_MODEL}", f"Image summary{BY_DEFAULT_MODEL}"]
    assert out["chunk_count"] == 12 and all(0.0 <= p <= 1.0 for p in out["probabilities"].values())
    assert out["chunk_fields"][1:6] == ["image_id", "chunk_id", "probability", "class", "label"]


def test_detect_with_every_output_at_its_default_loads_styled_temporary_layers(tour):
    """A first run from the toolbox leaves OUTPUT and SUMMARY as temporary layers: both load styled, and
    the dialog does not end with "The following layers were not correctly generated"."""
    out = tour["out"]
    assert out["defaults_finished"]
    assert "Algorithm 'Detect ice patches' finished" in out["defaults_log"] and "not correctly generated" not in out["defaults_log"]
    assert out["defaults_layers"] == [[f"Ice probability of chunks{BY_DEFAULT_MODEL}", "memory", "graduatedSymbol"], [f"Image summary{BY_DEFAULT_MODEL}", "memory", "categorizedSymbol"]]


def test_result_is_styled_and_active(tour):
    out = tour["out"]
    assert out["active_layer"] == f"Ice probability of chunks{BY_DEFAULT_MODEL}"  # what the review dock and Mark icy act on
    assert out["chunk_renderer"] == "graduatedSymbol" and out["chunk_class_attribute"] == "probability"
    classes = sorted(out["chunk_classes"])
    assert [(low, high) for low, high, _, _ in classes] == CHUNK_CLASS_BOUNDS
    assert [label.split("  ", 1)[1] for _, _, label, _ in classes] == ["not icy", "not icy", "hard to identify", "hard to identify", "icy", "icy"]
    assert classes[0][3] == 0 and all(0 < alpha < 255 for *_, alpha in classes[1:])  # not icy unfilled, none opaque
    assert out["chunk_labels_on"] and out["summary_renderer"] == "categorizedSymbol"


def test_review_dock_labels_with_keys(tour):
    out = tour["out"]
    assert out["dock_layer"] == f"Ice probability of chunks{BY_DEFAULT_MODEL}" and out["dock_order"] == "review_rank"
    by_rank = {rank: int(chunk) for chunk, rank in out["ranks"].items()}
    assert out["reviewed"] == [by_rank[r] for r in (1, 2, 3, 4, 5)]
    # Keys 1, 0, U, N (skip), 1 on ranks 1-5.
    expected = {chunk: None for chunk in out["ranks"]}
    expected.update({str(by_rank[1]): 1, str(by_rank[2]): 0, str(by_rank[3]): -1, str(by_rank[5]): 1})
    assert out["labels"] == expected
    assert "<b>2</b> icy, <b>1</b> not icy, <b>1</b> unclear; 8 not labelled" in out["counts"]
    assert out["saved"]
    stored = {str(row["chunk_id"]): row["label"] for row in qs.read_ogr(tour["folder"] / "chunks.gpkg").rows}
    assert stored == expected


def test_report_renders(tour):
    text = tour["out"]["report_text"]
    assert text.startswith("Ice patches in ESP_SAMPLE_0950_RED") and "Quicklook" in text and "Most likely icy chunks" in text


@pytest.mark.parametrize("name", ["toolbox.png", "detect_dialog.png", "detect_dialog_log.png", "styled_result.png", "canvas.png", "review_dock.png", "report.png"])
def test_screenshots_are_pictures(tour, name):
    from osgeo import gdal

    image = gdal.Open(str(SHOTS / name))
    assert image is not None and image.RasterXSize >= 250 and image.RasterYSize >= 250, name
    assert image.GetRasterBand(1).ReadAsArray().std() > 10, name  # not a blank window

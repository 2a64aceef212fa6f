"""The labelling review dock (plugin/review_dock.py), driven with QTest key presses.

The chunk layer is a GeoPackage written by the engine's own writer (model/vector.py, the fields of
model/schema.py), with review ranks from model/review.py, over a generated raster; QGIS reads it
with its OGR provider. Widgets need a QgsApplication with its GUI, so the dock runs in a fresh
Debian Python (offscreen); the widget-free functions run in the session's QGIS too.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

import helpers
import qgis_support as qs

# Probabilities of the 3 x 4 grid, chunk_id = row * 4 + col.
PROBABILITIES = [0.02, 0.58, 0.97, 0.10, 0.45, 0.63, 0.05, 0.88, 0.51, 0.30, 0.71, 0.40]
COLUMNS, CHUNK = 4, 64


def write_detect_output(folder, with_summary=True):
    """A detect-shaped GeoPackage (tables chunks and summary) over a generated raster; the chunk
    with review_rank 1 is already labelled icy. Returns (raster, gpkg path, chunks)."""
    from model import modelfile, review, vector
    from model.schema import SUMMARY_FIELDS

    raster = helpers.generate_raster(folder, "ESP_054321_0950_RED.tif", width=COLUMNS * CHUNK, height=3 * CHUNK)
    rows = [i // COLUMNS for i in range(len(PROBABILITIES))]
    cols = [i % COLUMNS for i in range(len(PROBABILITIES))]
    ranks = review.review_ranks(PROBABILITIES, rows, cols)
    chunks = []
    for i, p in enumerate(PROBABILITIES):
        x_off, y_off = cols[i] * CHUNK, rows[i] * CHUNK
        chunks.append({
            "image_id": "ESP_054321_0950_RED", "chunk_id": i, "probability": p, "class": "icy" if p >= 0.6 else ("hard to identify" if p >= 0.4 else "not icy"),
            "label": 1 if ranks[i] == 1 else None, "review_rank": int(ranks[i]), "row": rows[i], "col": cols[i], "x_off": x_off, "y_off": y_off,
            "width": CHUNK, "height": CHUNK, "valid_fraction": 1.0, "centre_valid_fraction": 1.0,
            "wkt": helpers.window_wkt(raster.geotransform, x_off, y_off, CHUNK, CHUNK),
        })
    default = modelfile.read_metadata(modelfile.default_model_path())
    summary = dict.fromkeys((name for name, _ in SUMMARY_FIELDS), None)
    summary.update(image_id="ESP_054321_0950_RED", chunks=len(chunks), model_name=default["name"], model_version=default["version"], category="good", footprint_wkt=None)
    summaries = [summary] if with_summary else []
    gpkg = folder / "detect.gpkg"
    vector.write_geopackage(str(gpkg), raster.crs_wkt, chunks, summaries)
    return raster, gpkg, chunks


def by_rank(chunks):
    return [c["chunk_id"] for c in sorted(chunks, key=lambda c: c["review_rank"])]


# --- the functions without widgets, in the session's QGIS -------------------------------------------


@pytest.fixture
def dock_module(qgis_app):
    return qs.plugin_module("plugin.review_dock")


@pytest.fixture
def detect_layers(qgis_app, tmp_path):
    from qgis.core import QgsProject, QgsRasterLayer, QgsVectorLayer

    raster, gpkg, chunks = write_detect_output(tmp_path)
    project = QgsProject()
    chunk_layer = QgsVectorLayer(f"{gpkg}|layername=chunks", "Ice probability of chunks", "ogr")
    summary = QgsVectorLayer(f"{gpkg}|layername=summary", "Image summary", "ogr")
    image = QgsRasterLayer(raster.path, "ESP_054321_0950_RED")
    other = QgsRasterLayer(helpers.generate_raster(tmp_path, "ESP_999999_0950_RED.tif").path, "ESP_999999_0950_RED")
    assert chunk_layer.isValid() and summary.isValid() and image.isValid() and other.isValid()
    project.addMapLayers([chunk_layer, summary, image, other])
    yield project, chunk_layer, chunks, image
    project.removeAllMapLayers()


def chunk_ids(layer, fids):
    return [layer.getFeature(fid)["chunk_id"] for fid in fids]


def test_orders(dock_module, detect_layers):
    _, layer, chunks, _ = detect_layers
    assert dock_module.is_chunk_layer(layer)
    assert chunk_ids(layer, dock_module.review_order(layer, "review_rank")) == by_rank(chunks)
    by_probability = chunk_ids(layer, dock_module.review_order(layer, "probability"))
    assert by_probability == sorted(range(len(PROBABILITIES)), key=lambda i: -PROBABILITIES[i])
    assert by_probability[0] == 2
    assert chunk_ids(layer, dock_module.review_order(layer, "position")) == list(range(len(PROBABILITIES)))
    with pytest.raises(ValueError, match="order is one of"):
        dock_module.review_order(layer, "random")


def test_a_layer_of_several_images_is_reviewed_one_image_after_another_on_its_own_raster(dock_module, qgis_app, tmp_path):
    """A survey's layer of three dates of a site: review_rank and chunk_id count within each image, so the walk had put the
    dates' chunk 0 (and their rank-1 chunks) in a row, while the map showed whichever raster lay on top."""
    from qgis.core import QgsFeature, QgsProject, QgsRasterLayer, QgsVectorLayer

    layer = QgsVectorLayer("Polygon?field=image_id:string&field=chunk_id:integer&field=review_rank:integer&field=probability:double"
                           "&field=label:integer", "survey chunks", "memory")
    rows = [(image, chunk, rank, 0.1 * rank) for image in ("ESP_037868_1800_RED", "ESP_037156_1800_RED") for chunk, rank in ((0, 2), (1, 1))]
    features = []
    for values in rows:
        feature = QgsFeature(layer.fields())
        feature.setAttributes(list(values) + [None])
        features.append(feature)
    assert layer.dataProvider().addFeatures(features)
    by_fid = {f.id(): (f["image_id"][4:10], f["chunk_id"]) for f in layer.getFeatures()}
    assert [by_fid[i] for i in dock_module.review_order(layer)] == [("037156", 1), ("037156", 0), ("037868", 1), ("037868", 0)]
    assert [by_fid[i] for i in dock_module.review_order(layer, "position")] == [("037156", 0), ("037156", 1), ("037868", 0), ("037868", 1)]
    project = QgsProject()
    rasters = [QgsRasterLayer(helpers.generate_raster(tmp_path, f"{name}.tif").path, name) for name in ("ESP_037156_1800_RED", "ESP_037868_1800_RED")]
    project.addMapLayers([layer] + rasters)
    shown = dock_module.show_only_its_image(layer, "ESP_037868_1800_RED", project)
    assert shown is rasters[1]
    assert [project.layerTreeRoot().findLayer(r.id()).itemVisibilityChecked() for r in rasters] == [False, True]
    assert dock_module.show_only_its_image(layer, "ESP_037156_1800_RED", project) is rasters[0]
    assert [project.layerTreeRoot().findLayer(r.id()).itemVisibilityChecked() for r in rasters] == [True, False]
    project.removeMapLayer(rasters[1].id())  # one image's raster alone: nothing to choose between, nothing hidden
    assert dock_module.show_only_its_image(layer, "ESP_037156_1800_RED", project) is None
    assert project.layerTreeRoot().findLayer(rasters[0].id()).itemVisibilityChecked()
    # the chunk's own raster not loaded: the other date's is hidden, not passed off as its pixels
    assert dock_module.show_only_its_image(layer, "ESP_037868_1800_RED", project) is None
    assert not project.layerTreeRoot().findLayer(rasters[0].id()).itemVisibilityChecked()
    project.removeAllMapLayers()


def test_the_model_is_read_from_a_shapefiles_cut_field_names_and_never_from_another_chunk_layer(dock_module, qgis_app):
    """A shapefile writes model_version as 'model_vers'; and a loaded chunk layer of another model had counted as one more
    summary, so a layer's chunks were said to be scored with 'several models'."""
    from qgis.core import QgsFeature, QgsProject, QgsVectorLayer

    def layer_of(fields, rows, name):
        made = QgsVectorLayer("Polygon?" + "&".join(f"field={f}:string" for f in fields), name, "memory")
        features = []
        for row in rows:
            feature = QgsFeature(made.fields())
            feature.setAttributes(list(row))
            features.append(feature)
        assert made.dataProvider().addFeatures(features)
        return made

    shapefile = layer_of(["image_id", "chunk_id", "label", "model_name", "model_vers"], [("ESP_1", "0", "1", "retrained", "2")], "from a shapefile")
    project = QgsProject()
    project.addMapLayer(shapefile)
    assert dock_module.scored_with(shapefile, project) == [("retrained", "2")]
    unnamed = layer_of(["image_id", "chunk_id", "label"], [("ESP_1", "0", "1")], "chunks naming no model")
    other_chunks = layer_of(["image_id", "chunk_id", "model_name", "model_version"], [("ESP_1", "0", "hiriseice-default", "1")], "another model's chunks")
    summary = layer_of(["image_id", "model_name", "model_version"], [("ESP_1", "retrained", "2")], "summary")
    project.addMapLayers([unnamed, other_chunks, summary])
    assert dock_module.scored_with(unnamed, project) == [("retrained", "2")]
    # a survey of an earlier version resumed with another model: its old rows name none, and their summary names theirs
    resumed = layer_of(["image_id", "chunk_id", "model_name", "model_version"], [("ESP_2", "0", "round3", "3"), ("ESP_1", "0", None, None)], "resumed")
    project.addMapLayer(resumed)
    assert dock_module.scored_with(resumed, project) == [("round3", "3"), ("retrained", "2")]
    project.removeAllMapLayers()


def test_order_puts_missing_values_last(dock_module):
    from qgis.core import QgsFeature, QgsVectorLayer

    layer = QgsVectorLayer("Polygon?crs=EPSG:4326&field=chunk_id:integer&field=probability:double&field=label:integer&field=review_rank:integer", "old", "memory")
    features = []
    for chunk_id, p, rank in ((0, 0.2, 3), (1, None, None), (2, 0.9, 1), (3, 0.5, 2)):
        f = QgsFeature(layer.fields())
        f.setAttributes([chunk_id, p, None, rank])
        features.append(f)
    assert layer.dataProvider().addFeatures(features)
    assert chunk_ids(layer, dock_module.review_order(layer, "review_rank")) == [2, 3, 0, 1]
    assert chunk_ids(layer, dock_module.review_order(layer, "probability")) == [2, 3, 0, 1]
    no_rank = QgsVectorLayer("Polygon?crs=EPSG:4326&field=chunk_id:integer&field=probability:double&field=label:integer", "older", "memory")
    with pytest.raises(ValueError, match="no review_rank field"):
        dock_module.review_order(no_rank, "review_rank")
    assert not dock_module.is_chunk_layer(QgsVectorLayer("Polygon?crs=EPSG:4326&field=chunk_id:integer", "grid", "memory"))


def test_label_values_and_counts(dock_module, detect_layers):
    _, layer, _, _ = detect_layers
    assert [dock_module.label_value(v) for v in (1, 0, -1, 1.0, "icy", "not icy", "unclear", None, "", 2, "maybe")] == [1, 0, -1, 1, 1, 0, -1, None, None, None, None]
    # The dock read only the words the toolbar writes: a geologist's own yes / no were "not labelled" there (and Retrain
    # stayed off) while training read them as labels. Both read them alike now.
    written = ("yes", "No", "ice", "TRUE", "f", "no ice", "not_icy", "hard to identify", "?", "NULL", float("nan"), "-1")
    assert [dock_module.label_value(v) for v in written] == [1, 0, 1, 1, 0, 0, 0, -1, -1, None, None, -1]
    assert dock_module.label_counts(layer) == {1: 1, 0: 0, -1: 0, None: len(PROBABILITIES) - 1}


def test_retrain_parameters(dock_module, detect_layers, tmp_path):
    from model import modelfile

    project, layer, _, image = detect_layers
    parameters = dock_module.retrain_parameters(layer, project)
    assert os.path.realpath(parameters.pop("BASE_MODEL")) == os.path.realpath(modelfile.default_model_path())
    # The new model beside the chunk layer's file, not a temporary one gone when QGIS closes; never over a file there.
    folder = os.path.dirname(layer.source().split("|")[0])
    assert parameters.pop("OUTPUT_MODEL") == os.path.join(folder, "detect_retrained.hiriseice")
    assert parameters.pop("REPORT") == os.path.join(folder, "detect_retrained.html")
    assert parameters == {"LABELS": [layer.id()], "LABEL_FIELD": "label", "RASTERS": [image.id()]}
    open(os.path.join(folder, "detect_retrained.hiriseice"), "wb").close()
    assert dock_module.retrain_parameters(layer, project)["OUTPUT_MODEL"] == os.path.join(folder, "detect_retrained_1.hiriseice")
    os.remove(os.path.join(folder, "detect_retrained.hiriseice"))
    # Beside Detect's default (temporary) output the model would be deleted with it when QGIS closes: the user chooses.
    from qgis.core import QgsProcessingUtils, QgsVectorLayer

    temporary_folder = tempfile.mkdtemp(dir=QgsProcessingUtils.tempFolder())
    temporary_copy = os.path.join(temporary_folder, "OUTPUT.gpkg")
    shutil.copy(layer.source().split("|")[0], temporary_copy)
    temporary = QgsVectorLayer(f"{temporary_copy}|layername=chunks", "OUTPUT", "ogr")
    assert temporary.isValid()
    assert not {"OUTPUT_MODEL", "REPORT"} & set(dock_module.retrain_parameters(temporary, project))
    # Every key is a parameter of the algorithm the button opens.
    from qgis.core import QgsApplication

    algorithm = QgsApplication.processingRegistry().algorithmById(dock_module.TRAIN_ALGORITHM)
    assert set(parameters) | {"BASE_MODEL"} <= {p.name() for p in algorithm.parameterDefinitions()}
    # The summary in the layer's own file names the model, loaded or not; with no raster loaded, none is given.
    for candidate in list(project.mapLayers().values()):
        if candidate is not layer:
            project.removeMapLayer(candidate.id())
    alone = dock_module.retrain_parameters(layer, project)
    assert os.path.realpath(alone["BASE_MODEL"]) == os.path.realpath(modelfile.default_model_path()) and alone["RASTERS"] == []
    # Without any summary, no base model is guessed, and the dock says why.
    bare_folder = tmp_path / "bare"
    bare_folder.mkdir()
    _, bare_gpkg, _ = write_detect_output(bare_folder, with_summary=False)
    bare = QgsVectorLayer(f"{bare_gpkg}|layername=chunks", "chunks", "ogr")
    project.addMapLayer(bare)
    assert "BASE_MODEL" not in dock_module.retrain_parameters(bare, project)
    assert dock_module.base_model_advice(bare, project) == dock_module.NO_BASE_MODEL


def test_the_base_model_is_the_one_the_layers_own_summary_names(dock_module, qgis_app, tmp_path):
    """A survey's chunks, scored with a retrained round, beside a Detect output of the same image with the bundled model in
    the project: the first summary in project order (the Detect's) had named the bundled model as BASE_MODEL, and a summary
    naming a model whose file was elsewhere had been said to be missing."""
    from qgis.core import QgsProject, QgsVectorLayer

    from model import modelfile

    detect_folder, survey_folder = tmp_path / "detect", tmp_path / "survey"
    detect_folder.mkdir()
    survey_folder.mkdir()
    _, detect_gpkg, _ = write_detect_output(detect_folder)
    _, survey_gpkg, _ = write_detect_output(survey_folder)
    round2 = survey_folder / "round2.hiriseice"
    shutil.copy(modelfile.default_model_path(), round2)
    meta = modelfile.read_metadata(str(round2))
    modelfile.store_metadata(str(round2), dict(meta, name="round2", version="20261207T183034Z"))
    summary = QgsVectorLayer(f"{survey_gpkg}|layername=summary", "survey summary", "ogr")
    assert summary.startEditing() and summary.changeAttributeValues(next(summary.getFeatures()).id(), {
        summary.fields().lookupField("model_name"): "round2", summary.fields().lookupField("model_version"): "20261207T183034Z"}) and summary.commitChanges()
    project = QgsProject()
    chunks = QgsVectorLayer(f"{survey_gpkg}|layername=chunks", "survey chunks", "ogr")
    project.addMapLayers([QgsVectorLayer(f"{detect_gpkg}|layername=summary", "Image summary", "ogr"), chunks])
    assert dock_module.scored_with(chunks, project) == [("round2", "20261207T183034Z")]
    assert dock_module.retrain_parameters(chunks, project)["BASE_MODEL"] == str(round2)
    # chunks that record their model (Detect and the survey since 2026-12-07) are taken at their word, whatever summary is loaded
    bare_folder = tmp_path / "recorded"
    bare_folder.mkdir()
    _, recorded_gpkg, _ = write_detect_output(bare_folder, with_summary=False)
    recorded = QgsVectorLayer(f"{recorded_gpkg}|layername=chunks", "chunks that say their model", "ogr")
    fields = recorded.fields()
    assert recorded.startEditing()
    for feature in recorded.getFeatures():
        recorded.changeAttributeValues(feature.id(), {fields.lookupField("model_name"): "round2", fields.lookupField("model_version"): "20261207T183034Z"})
    assert recorded.commitChanges()
    project.addMapLayer(recorded)
    assert dock_module.scored_with(recorded, project) == [("round2", "20261207T183034Z")]
    project.removeMapLayer(recorded.id())
    os.remove(round2)  # kept elsewhere by a colleague: the dock names it
    assert "BASE_MODEL" not in dock_module.retrain_parameters(chunks, project)
    assert dock_module.base_model_advice(chunks, project).startswith(
        "These chunks were scored with round2 20261207T183034Z, whose file is neither beside the layer nor the bundled default model")
    project.removeAllMapLayers()


def test_retrain_parameters_beside_a_layer_in_a_folder_named_with_a_pipe(dock_module, qgis_app, tmp_path):
    """Its source "/d/a|b/detect.gpkg|layername=chunks" had been cut at the first '|', so the new model was not
    offered beside the layer (no such file "/d/a") and would have been a temporary one."""
    from qgis.core import QgsProject, QgsRasterLayer, QgsVectorLayer

    folder = tmp_path / "survey|spring"
    folder.mkdir()
    raster, gpkg, _ = write_detect_output(folder)
    project = QgsProject()
    layer = QgsVectorLayer(f"{gpkg}|layername=chunks", "Ice probability of chunks", "ogr")
    summary = QgsVectorLayer(f"{gpkg}|layername=summary", "Image summary", "ogr")
    image = QgsRasterLayer(raster.path, "ESP_054321_0950_RED")
    assert layer.isValid() and summary.isValid() and image.isValid()
    project.addMapLayers([layer, summary, image])
    parameters = dock_module.retrain_parameters(layer, project)
    assert parameters["OUTPUT_MODEL"] == str(folder / "detect_retrained.hiriseice")
    assert parameters["REPORT"] == str(folder / "detect_retrained.html")
    assert parameters["RASTERS"] == [image.id()]
    project.removeAllMapLayers()


# --- the dock, driven by key presses, in a fresh QGIS with a GUI --------------------------------------

DOCK_SCRIPT = r'''
import json, os, sys
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis.gui import QgsMapCanvas
from qgis.PyQt.QtCore import QObject, Qt, pyqtSignal
from qgis.PyQt.QtGui import QColor
from qgis.PyQt.QtTest import QTest
from qgis.PyQt.QtWidgets import QMainWindow
try:
    from qgis.PyQt.QtGui import QAction
except ImportError:
    from qgis.PyQt.QtWidgets import QAction

app = QgsApplication([], True)
app.initQgis()
plugins, gpkg, raster_path, shots = sys.argv[1:5]
sys.path.insert(0, plugins)
from hirise_ice_patches.plugin import review_dock
from hirise_ice_patches.processing_provider import styling


class Iface(QObject):
    """The part of QgisInterface the dock uses: a real map canvas in a real main window."""
    currentLayerChanged = pyqtSignal(object)

    def __init__(self):
        super().__init__()
        self.window = QMainWindow()
        self.canvas = QgsMapCanvas(self.window)
        self.window.setCentralWidget(self.canvas)
        self.layer = None

    def mapCanvas(self):
        return self.canvas

    def activeLayer(self):
        return self.layer

    def setActiveLayer(self, layer):
        self.layer = layer
        self.currentLayerChanged.emit(layer)


project = QgsProject.instance()
chunks = QgsVectorLayer(f"{gpkg}|layername=chunks", "Ice probability of chunks", "ogr")
summary = QgsVectorLayer(f"{gpkg}|layername=summary", "Image summary", "ogr")
image = QgsRasterLayer(raster_path, "ESP_054321_0950_RED")
project.addMapLayers([image, summary, chunks])
styling.apply_style(chunks, styling.CHUNKS_QML)
iface = Iface()
iface.canvas.setDestinationCrs(chunks.crs())
iface.canvas.setLayers([chunks, image])
iface.canvas.setSelectionColor(QColor(255, 255, 0, 255))  # QGIS's default
iface.window.resize(1000, 560)
iface.layer = chunks
opened = []
dock = review_dock.ReviewDock(iface, iface.window, open_dialog=opened.append)
iface.window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
# A one-key QGIS shortcut on the main window must not take the dock's keys.
stolen = []
thief = QAction("Steals N", iface.window)
thief.setShortcut("N")
thief.triggered.connect(lambda: stolen.append(1))
iface.window.addAction(thief)
iface.window.show()
iface.window.activateWindow()
QTest.qWaitForWindowExposed(iface.window)
dock.widget().setFocus()
app.processEvents()

out = {"steps": []}
count_labels = review_dock.label_counts  # the whole layer's counts, read afresh

def chunk_of(fid):
    return chunks.getFeature(fid)["chunk_id"] if fid is not None else None

def labels():
    return {str(f["chunk_id"]): review_dock.label_value(f["label"]) for f in chunks.getFeatures()}

def step(name):
    fid = dock.current_id()
    extent = iface.canvas.extent()
    box = chunks.getFeature(fid).geometry().boundingBox()
    out["steps"].append({
        "name": name, "chunk": chunk_of(fid), "shown": dock.chunk_label.text(), "image": dock.image_label.text(), "probability": dock.probability_label.text(),
        "class": dock.class_label.text(), "position": dock.position_label.text(), "counts": dock.counts_label.text(),
        "selected": [chunk_of(i) for i in chunks.selectedFeatureIds()], "extent_contains": extent.contains(box),
        "extent_over_chunk": [extent.width() / box.width(), extent.height() / box.height()],
        "centre_offset": [abs(extent.center().x() - box.center().x()) / box.width(), abs(extent.center().y() - box.center().y()) / box.height()],
        "outline_is_chunk": dock.outline is not None and dock.outline.isVisible() and dock.outline.asGeometry().boundingBox() == box,
        "counts_right": dock.counts == count_labels(chunks),
    })

out["order"] = [chunk_of(fid) for fid in dock.order_ids]
step("start")
panel, combo = dock.widget(), dock.order_box
# Each label key moves one chunk between two counts: on a survey's 600,000 chunks reading them whole took 4-6 s a key.
whole_reads = []
review_dock.label_counts = lambda layer, *kept: whole_reads.append(1) or count_labels(layer, *kept)
for name, widget, key, modifier in (
    ("1", panel, Qt.Key.Key_1, Qt.KeyboardModifier.NoModifier),
    ("0 on the order box", combo, Qt.Key.Key_0, Qt.KeyboardModifier.NoModifier),
    ("U", panel, Qt.Key.Key_U, Qt.KeyboardModifier.NoModifier),
    ("P", panel, Qt.Key.Key_P, Qt.KeyboardModifier.NoModifier),
    ("Left", panel, Qt.Key.Key_Left, Qt.KeyboardModifier.NoModifier),
    ("Right", panel, Qt.Key.Key_Right, Qt.KeyboardModifier.NoModifier),
    ("N", panel, Qt.Key.Key_N, Qt.KeyboardModifier.NoModifier),
    ("Ctrl+1", panel, Qt.Key.Key_1, Qt.KeyboardModifier.ControlModifier),
    ("0", panel, Qt.Key.Key_0, Qt.KeyboardModifier.NoModifier),
):
    QTest.keyClick(widget, key, modifier)
    app.processEvents()
    step(name)
review_dock.label_counts = count_labels
out["whole_counts_while_labelling"] = len(whole_reads)
out["labels"] = labels()
stack = chunks.undoStack()
out["undo_texts"] = [stack.text(i) for i in range(stack.count())]
out["stolen"] = len(stolen)
dock.grab().save(os.path.join(shots, "review_dock.png"))
iface.canvas.refresh()
iface.canvas.waitWhileRendering()
app.processEvents()
iface.window.grab().save(os.path.join(shots, "review_dock_in_window.png"))
# Ctrl+Z in the dock undoes its layer's last label, whichever layer is active (QGIS's Edit > Undo takes the active one's).
iface.setActiveLayer(image)
QTest.keyClick(panel, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
app.processEvents()
iface.setActiveLayer(chunks)
out["labels_after_undo"] = labels()
out["counts_after_undo"] = dock.counts_label.text()
out["counts_right_after_undo"] = dock.counts == count_labels(chunks)
# Marking every chunk at once and undoing it: one refresh each, not one per chunk (a whole-layer count each time).
counted = []
count_labels = review_dock.label_counts
review_dock.label_counts = lambda layer, *kept: counted.append(1) or count_labels(layer, *kept)
chunks.selectAll()
review_dock.mark_selected(chunks, 1)
app.processEvents()
stack.undo()
app.processEvents()
review_dock.label_counts = count_labels
out["counts_for_two_bulk_changes"] = len(counted)
out["counts_right_after_bulk_changes"] = dock.counts == count_labels(chunks)
# A chunk deleted and its deletion undone: the dock walks it again.
walked = [len(dock.order_ids)]
chunks.deleteFeature(dock.order_ids[-1])
app.processEvents()
walked.append(len(dock.order_ids))
stack.undo()
app.processEvents()
walked.append(len(dock.order_ids))
out["walked_after_delete_and_undo"] = walked
label_index = chunks.fields().lookupField("label")
top = max(chunks.getFeatures(), key=lambda f: f["probability"])
was = top["label"]
chunks.changeAttributeValue(top.id(), label_index, 1)  # the most probable chunk labelled: a new order must not start there
app.processEvents()
out["labels_at_reorder"] = labels()
dock.set_order("probability")
app.processEvents()
out["probability_order"] = [chunk_of(fid) for fid in dock.order_ids]
step("order by probability")
chunks.changeAttributeValue(top.id(), label_index, was)
app.processEvents()
dock.set_order("position")
out["position_order"] = [chunk_of(fid) for fid in dock.order_ids]
QTest.mouseClick(dock.retrain_button, Qt.MouseButton.LeftButton)
out["opened"] = opened
out["expected_parameters"] = review_dock.retrain_parameters(chunks, project)
out["raster_id"], out["layer_id"] = image.id(), chunks.id()
# Another chunk layer made active is reviewed; a raster made active leaves the dock as it was.
iface.setActiveLayer(image)
out["after_raster_active"] = dock.layer.id() if dock.layer else None
out["saved"] = chunks.commitChanges()
app.processEvents()
out["counts_after_save"] = dock.counts_label.text()
chunks.setSubsetString("chunk_id >= 6")  # a filter: the dock walks only what the map shows
app.processEvents()
out["walked_with_filter"] = sorted(chunk_of(fid) for fid in dock.order_ids)
chunks.setSubsetString("")
app.processEvents()
out["counts_right_after_save"] = dock.counts == count_labels(chunks)
# A label edited before the counts are read whole (a new order reads them), then changed again: moved from the edit's count.
chunks.startEditing()
first = dock.order_ids[0]
chunks.changeAttributeValue(first, label_index, 0)
app.processEvents()
dock.set_order("review_rank")
app.processEvents()
chunks.changeAttributeValue(first, label_index, -1)
app.processEvents()
out["counts_right_after_an_edit_counted_then_changed"] = dock.counts == count_labels(chunks)
chunks.rollBack()
app.processEvents()
out["counts_right_after_rollback"] = dock.counts == count_labels(chunks)
out["selection_alpha_shown"] = iface.canvas.selectionColor().alpha()
dock.hide()
out["selection_alpha_hidden"] = iface.canvas.selectionColor().alpha()
# Closed, the dock follows no layer: the geologist's selection and map stay as they are.
second = QgsVectorLayer(f"{gpkg}|layername=chunks", "Another chunk layer", "ogr")
project.addMapLayer(second)
chunks.selectByIds([f.id() for f in chunks.getFeatures()][:3])
app.processEvents()  # the map widget grows into the dock's room
extent = iface.canvas.extent()
iface.setActiveLayer(second)
iface.setActiveLayer(chunks)
app.processEvents()
out["selected_while_closed"] = len(chunks.selectedFeatureIds())
out["map_kept_while_closed"] = iface.canvas.extent() == extent
iface.setActiveLayer(second)
dock.show()
dock.adopt_active_layer()
app.processEvents()
out["reviewed_on_reopening"] = dock.layer.name() if dock.layer else None
# Labels changed and saved in one turn of the event loop (a script's edit block); a chunk added and labelled twice unsaved.
# On a copy of the file, whose labels the tests above read.
import shutil
copied = gpkg.replace("detect.gpkg", "copied.gpkg")
shutil.copyfile(gpkg, copied)
reviewed = QgsVectorLayer(f"{copied}|layername=chunks", "The copy", "ogr")
project.addMapLayer(reviewed)
dock.set_layer(reviewed)
app.processEvents()
index = reviewed.fields().lookupField("label")
reviewed.startEditing()
for feature in list(reviewed.getFeatures())[:3]:
    reviewed.changeAttributeValue(feature.id(), index, 0)
reviewed.commitChanges()
app.processEvents()
out["counts_right_after_changes_saved_at_once"] = dock.counts == count_labels(reviewed)
from qgis.core import QgsFeature
reviewed.startEditing()
added = QgsFeature(reviewed.getFeature(dock.order_ids[0]))
added.setId(-1)
added["label"] = 1
reviewed.addFeature(added)
app.processEvents()
reviewed.changeAttributeValue(added.id(), index, 0)
app.processEvents()
out["counts_right_after_an_added_chunk_relabelled"] = dock.counts == count_labels(reviewed)
reviewed.rollBack()
app.processEvents()
# Another program rewrites the file (a survey rescoring the image): the chunk shown is gone, and new ones come
from osgeo import ogr
gone, walked_before = dock.current_id(), len(dock.order_ids)
written = ogr.Open(copied, update=1)
written.ExecuteSQL(f"DELETE FROM chunks WHERE fid = {gone}")
table = written.GetLayerByName("chunks")
for _ in range(2):
    row = table.GetFeature(dock.order_ids[1])
    row.SetFID(-1)
    table.CreateFeature(row)
written = None
out["gone_still_read"] = reviewed.getFeature(gone).isValid()
QTest.keyClick(dock.widget(), Qt.Key.Key_1)
app.processEvents()
out["gone_message"] = dock.message_label.text()
out["gone_not_labelled"] = not reviewed.isEditable() or not reviewed.editBuffer().changedAttributeValues()
reviewed.reload()  # View > Refresh
app.processEvents()
out["walked_after_the_file_changed"] = [walked_before, len(dock.order_ids)]
# Keyboard use: Tab reaches every button, Retrain too (it had no key and no focus), while a click leaves the keys where they were
buttons = [*dock.buttons.values(), dock.previous_button, dock.next_button, dock.retrain_button]
out["buttons_tab_not_click"] = all(b.focusPolicy() & Qt.FocusPolicy.TabFocus and not b.focusPolicy() & Qt.FocusPolicy.ClickFocus for b in buttons)
# In a German QGIS the probability reads as QGIS writes it in the table and the form
from qgis.PyQt.QtCore import QLocale
QLocale.setDefault(QLocale(QLocale.Language.German, QLocale.Country.Germany))
dock._refresh()
out["probability_in_german"] = dock.probability_label.text()
QLocale.setDefault(QLocale.c())
# Two geologists' layers merged: a chunk's other rows are shown with the one in view, and a disagreement is named
from qgis.core import QgsFeature, QgsGeometry
merged = QgsVectorLayer("Polygon?crs=EPSG:4326&field=image_id:string&field=chunk_id:integer&field=probability:double&field=label:integer"
                        "&field=x_off:integer&field=y_off:integer&field=width:integer&field=height:integer", "merged", "memory")
# the last row is chunk 1 of another detect run, on a 128-px grid: other ground, though its chunk_id is the same
rows = [("A", 1, 0.5, 1, 64, 64), ("A", 1, 0.5, 0, 64, 64), ("A", 2, 0.3, 1, 128, 64), ("A", 2, 0.3, 1, 128, 64), ("A", 3, 0.2, None, 192, 64),
        ("A", 1, 0.4, 0, 128, 128)]
features = []
for image, chunk, p, label, x_off, side in rows:
    feature = QgsFeature(merged.fields())
    feature.setGeometry(QgsGeometry.fromWkt(f"POLYGON(({x_off} 0,{x_off + side} 0,{x_off + side} {side},{x_off} {side},{x_off} 0))"))
    feature.setAttributes([image, chunk, p, label, x_off, 0, side, side])
    features.append(feature)
merged.dataProvider().addFeatures(features)
QgsProject.instance().addMapLayer(merged)
dock.set_layer(merged)
dock.set_order("position")
out["merged_rows"] = []
for position in (0, 2, 3, 5):
    dock.position = position
    dock._refresh()
    out["merged_rows"].append(dock.current_label.text())
dock.release()
print("RESULT " + json.dumps(out))
sys.stdout.flush()
app.exitQgis()
'''


@pytest.fixture(scope="module")
def dock_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("review_dock")
    raster, gpkg, chunks = write_detect_output(folder)
    plugins = qs.plugin_without_worker(folder)
    env = qs.environment_without_worker(plugins, folder / "config")
    shots = folder / "screenshots"
    shots.mkdir()
    script = folder / "dock.py"
    script.write_text(DOCK_SCRIPT, encoding="utf-8")
    done = subprocess.run([sys.executable, str(script), str(plugins), str(gpkg), raster.path, str(shots)], env=env, capture_output=True, text=True, timeout=180, cwd=str(folder))
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"exit {done.returncode}\nstdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    return {"out": json.loads(lines[-1][len("RESULT "):]), "gpkg": gpkg, "chunks": chunks, "shots": shots}


def test_dock_starts_at_the_first_unlabelled_chunk_in_review_order(dock_run):
    out, chunks = dock_run["out"], dock_run["chunks"]
    ranked = by_rank(chunks)
    assert out["order"] == ranked
    start = out["steps"][0]
    assert start["chunk"] == ranked[1]  # rank 1 was labelled already
    assert start["shown"] == str(ranked[1]) and start["position"] == f"2 of {len(chunks)}"
    assert start["image"] == "ESP_054321_0950_RED"
    assert start["probability"] == f"{PROBABILITIES[ranked[1]]:.3f}"
    assert start["class"] == chunks[ranked[1]]["class"]
    assert "<b>1</b> icy, <b>0</b> not icy, <b>0</b> unclear; 11 not labelled" in start["counts"]


def test_keys_label_and_move_in_order(dock_run):
    out, chunks = dock_run["out"], dock_run["chunks"]
    r = by_rank(chunks)
    steps = {s["name"]: s["chunk"] for s in out["steps"]}
    # Each label moves to the next chunk; P/Left go back, N/Right forward; Ctrl+1 is not a review key.
    assert [steps[k] for k in ("1", "0 on the order box", "U", "P", "Left", "Right", "N", "Ctrl+1", "0")] == [r[2], r[3], r[4], r[3], r[2], r[3], r[4], r[4], r[5]]
    expected = {str(i): None for i in range(len(chunks))}
    expected.update({str(r[0]): 1, str(r[1]): 1, str(r[2]): 0, str(r[3]): -1, str(r[4]): 0})
    assert out["labels"] == expected
    last = [s for s in out["steps"] if s["name"] == "0"][0]
    assert "<b>2</b> icy, <b>2</b> not icy, <b>1</b> unclear; 7 not labelled" in last["counts"]
    assert "(unsaved edits)" in last["counts"]
    assert out["stolen"] == 0  # the main window's one-key shortcut N did not fire
    # each key moved one chunk between two counts, which stayed those of the whole layer
    assert out["whole_counts_while_labelling"] == 0 and all(step["counts_right"] for step in out["steps"]), out["steps"]


def test_each_label_is_one_undo_command(dock_run):
    out, chunks = dock_run["out"], dock_run["chunks"]
    r = by_rank(chunks)
    assert out["undo_texts"] == ["Mark 1 chunk(s) icy", "Mark 1 chunk(s) not icy", "Mark 1 chunk(s) unclear", "Mark 1 chunk(s) not icy"]
    assert out["labels_after_undo"][str(r[4])] is None and out["labels_after_undo"][str(r[2])] == 0
    assert "<b>2</b> icy, <b>1</b> not icy, <b>1</b> unclear; 8 not labelled" in out["counts_after_undo"]
    assert out["counts_for_two_bulk_changes"] == 0 and out["counts_right_after_undo"] and out["counts_right_after_bulk_changes"]
    assert out["walked_after_delete_and_undo"] == [12, 11, 12]


def test_map_follows_the_chunk_with_a_margin_and_selects_it(dock_run):
    for step in dock_run["out"]["steps"]:
        assert step["selected"] == [step["chunk"]], step["name"]
        assert step["extent_contains"], step["name"]
        # One chunk of margin each side: at least 3 chunks across, more only along the canvas's longer side.
        assert min(step["extent_over_chunk"]) == pytest.approx(3.0, rel=0.02) and max(step["extent_over_chunk"]) < 6, step
        assert max(step["centre_offset"]) < 0.01, step["name"]
        assert step["outline_is_chunk"], step["name"]
    # The opaque default selection colour would hide the chunk: translucent while the dock shows, restored after.
    assert dock_run["out"]["selection_alpha_shown"] < 60 and dock_run["out"]["selection_alpha_hidden"] == 255


def test_other_orders(dock_run):
    out = dock_run["out"]
    assert out["probability_order"] == sorted(range(len(PROBABILITIES)), key=lambda i: -PROBABILITIES[i])
    # A new order starts at its first chunk still to label, as the review of a layer does, not at its first chunk
    first_to_label = next(chunk for chunk in out["probability_order"] if out["labels_at_reorder"][str(chunk)] is None)
    assert out["labels_at_reorder"][str(out["probability_order"][0])] is not None  # the first is labelled: the case that matters
    assert out["steps"][-1]["name"] == "order by probability" and out["steps"][-1]["chunk"] == first_to_label
    assert out["position_order"] == list(range(len(PROBABILITIES)))


def test_retrain_button_passes_the_layer_its_raster_and_model(dock_run):
    from model import modelfile

    out = dock_run["out"]
    assert out["opened"] == [out["expected_parameters"]]
    parameters = dict(out["expected_parameters"])
    assert os.path.realpath(parameters.pop("BASE_MODEL")) == os.path.realpath(modelfile.default_model_path())
    assert parameters.pop("OUTPUT_MODEL").endswith("_retrained.hiriseice") and parameters.pop("REPORT").endswith("_retrained.html")
    assert parameters == {"LABELS": [out["layer_id"]], "LABEL_FIELD": "label", "RASTERS": [out["raster_id"]]}
    assert out["after_raster_active"] == out["layer_id"]


def test_labels_saved_to_the_geopackage(dock_run):
    out = dock_run["out"]
    assert out["saved"]
    stored = {row["chunk_id"]: row["label"] for row in qs.read_ogr(dock_run["gpkg"], "chunks").rows}
    assert stored == {int(k): v for k, v in out["labels_after_undo"].items()}


def test_the_dock_follows_saves_and_filters_and_a_closed_dock_follows_nothing(dock_run):
    """Found by review: "(unsaved edits)" stayed after a save; a filter left the dock stepping to hidden chunks; and a
    closed dock, seeing another chunk layer made active, replaced a selection of three chunks with one (which Mark
    icy then labelled) and moved the map."""
    out = dock_run["out"]
    assert out["saved"] and "unsaved edits" not in out["counts_after_save"], out["counts_after_save"]
    assert out["counts_right_after_save"] and out["counts_right_after_an_edit_counted_then_changed"] and out["counts_right_after_rollback"]
    assert out["walked_with_filter"] == list(range(6, 12))
    assert out["selected_while_closed"] == 3 and out["map_kept_while_closed"]
    assert out["reviewed_on_reopening"] == "Another chunk layer"
    assert out["counts_right_after_changes_saved_at_once"] and out["counts_right_after_an_added_chunk_relabelled"]


def test_a_chunk_gone_from_the_file_is_not_labelled_and_new_chunks_come_after_a_refresh(dock_run):
    """A survey rescoring an image rewrote its rows while the dock showed one: each label key raised a KeyError and put a label
    that could never be saved into the edit buffer; chunks the survey added were never offered ("That was the last chunk")."""
    out = dock_run["out"]
    assert out["gone_message"].startswith("This chunk's row is gone from the file") and out["gone_not_labelled"], (out["gone_message"], out["gone_still_read"], out["gone_not_labelled"])
    assert out["walked_after_the_file_changed"][1] == out["walked_after_the_file_changed"][0] + 1  # one gone, two come


def test_a_chunks_other_rows_in_a_merged_layer_are_shown_and_a_disagreement_named(dock_run):
    """Two geologists' layers merged showed each chunk twice, with nothing to say that its rows disagreed. Rows are one chunk
    where they lie on the same pixels, as training reads them: chunk 1 of a run at another chunk size is other ground."""
    disputed, other_grid, alike, single = dock_run["out"]["merged_rows"]
    assert disputed == "icy (1); 1 other row(s) of this chunk: not icy (they disagree: training leaves it out until they agree)"
    assert other_grid == "not icy (0)"
    assert alike == "icy (1); 1 other row(s) of this chunk: icy" and single == "not labelled"


def test_every_button_is_reached_by_tab_and_numbers_follow_the_locale(dock_run):
    out = dock_run["out"]
    assert out["buttons_tab_not_click"]
    assert out["probability_in_german"].count(",") == 1 and "." not in out["probability_in_german"]


def test_screenshots_are_pictures(dock_run):
    from osgeo import gdal

    for name in ("review_dock.png", "review_dock_in_window.png"):
        image = gdal.Open(str(dock_run["shots"] / name))
        assert image is not None and image.RasterXSize > 200 and image.RasterYSize > 200
        assert image.GetRasterBand(1).ReadAsArray().std() > 10, name  # text and map, not a blank

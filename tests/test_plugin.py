"""The plugin itself: what the QGIS plugin repository requires of metadata.txt, the labelling
tool on real layers, the provider without a worker, and the GUI glue (classFactory, initGui,
toolbar, unload) in a fresh QGIS with a minimal stand-in for the QGIS main window's iface."""

import configparser
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

import qgis_support as qs
from model import labels as engine_labels

REPO = qs.REPO_ROOT
GPL_COMPATIBLE = {"GPL-2.0-or-later", "GPL-2.0+", "GPL-3.0-or-later", "GPL-3.0+", "GPL-3.0-only", "GPL-2.0-only", "MIT", "BSD-2-Clause", "BSD-3-Clause", "Apache-2.0", "LGPL-2.1-or-later", "LGPL-3.0-or-later"}


# --- metadata.txt ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def metadata():
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keys are case-sensitive (qgisMinimumVersion)
    assert parser.read(REPO / "metadata.txt", encoding="utf-8")
    return parser["general"]


def test_metadata_has_what_the_plugin_repository_requires(metadata):
    for key in ("name", "qgisMinimumVersion", "description", "about", "version", "author", "email", "repository", "tracker", "homepage", "category", "icon", "experimental", "license", "tags", "changelog"):
        assert metadata.get(key, "").strip(), f"metadata.txt lacks {key}"
    assert metadata["name"] == "HiRISE Ice Patches"
    assert metadata["qgisMinimumVersion"] == "3.22"
    # QGIS 4 and plugins.qgis.org read qgisMaximumVersion alone; both dropped supportsQt6 (tests/test_qt6.py checks the code).
    assert metadata["qgisMaximumVersion"] == "4.99" and "supportsQt6" not in metadata
    assert "\n" not in metadata["description"].strip() and len(metadata["about"]) > len(metadata["description"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", metadata["version"])
    assert re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", metadata["email"])
    for key in ("repository", "tracker", "homepage"):
        assert re.match(r"https?://", metadata[key]) and not re.search(r"\.(invalid|example)(/|$)", metadata[key]), key
    assert metadata["category"] in {"Raster", "Vector", "Database", "Web", "Analysis", "Plugins"}
    assert metadata["experimental"] in {"True", "False"} and metadata["deprecated"] in {"True", "False"}
    assert metadata["hasProcessingProvider"] == "yes"
    assert metadata["license"] in GPL_COMPATIBLE
    assert "Worker settings… > Reinstall…" in metadata["about"]  # says how to get the worker


def test_metadata_icon_is_an_svg_in_the_plugin(metadata):
    icon = REPO / metadata["icon"]
    assert icon.is_file()
    assert ET.parse(icon).getroot().tag.endswith("svg")


def test_licence_file_matches_the_metadata(metadata):
    text = (REPO / "LICENSE").read_text(encoding="utf-8", errors="replace")
    assert "GNU GENERAL PUBLIC LICENSE" in text and "Version 2" in text
    assert metadata["license"].startswith("GPL-2.0")


def test_metadata_version_is_the_engines(metadata):
    import model

    assert metadata["version"] == model.__version__
    assert metadata["changelog"].startswith(metadata["version"])


# --- labelling.mark_selected ---------------------------------------------------------------------------


@pytest.fixture
def labelling(qgis_app):
    return qs.plugin_module("plugin.labelling")


def chunk_layer(field_type=None, name="chunks", with_label=True, count=6):
    """A real memory layer like a detect output: chunk_id and an empty label field."""
    from qgis.core import QgsFeature, QgsField, QgsGeometry, QgsVectorLayer

    types = qs.plugin_module("processing_provider.styling").QVARIANT_TYPES
    layer = QgsVectorLayer("Polygon?crs=EPSG:4326", name, "memory")
    fields = [QgsField("chunk_id", types["int"])]
    if with_label:
        fields.append(QgsField("label", types[field_type or "int"]))
    layer.dataProvider().addAttributes(fields)
    layer.updateFields()
    features = []
    for i in range(count):
        feature = QgsFeature(layer.fields())
        feature.setGeometry(QgsGeometry.fromWkt(f"POLYGON (({i} 0, {i + 1} 0, {i + 1} 1, {i} 1, {i} 0))"))
        feature.setAttributes([i] + ([None] if with_label else []))
        features.append(feature)
    assert layer.dataProvider().addFeatures(features)
    return layer


def labels_by_chunk(layer):
    from qgis.core import NULL

    return {f["chunk_id"]: (None if f["label"] == NULL else f["label"]) for f in layer.getFeatures()}


def ids_of(layer, chunk_ids):
    return [f.id() for f in layer.getFeatures() if f["chunk_id"] in chunk_ids]


def test_mark_selected_writes_the_label_in_one_undo_command(labelling):
    layer = chunk_layer()
    layer.selectByIds(ids_of(layer, {0, 2, 3}))
    assert labelling.mark_selected(layer, labelling.ICY) == 3
    assert layer.isEditable()
    assert labels_by_chunk(layer) == {0: 1, 1: None, 2: 1, 3: 1, 4: None, 5: None}
    stack = layer.undoStack()
    assert stack.count() == 1 and "3 chunk(s) icy" in stack.text(0)
    stack.undo()
    assert set(labels_by_chunk(layer).values()) == {None}
    stack.redo()
    layer.selectByIds(ids_of(layer, {1}))
    assert labelling.mark_selected(layer, labelling.NOT_ICY) == 1
    layer.selectByIds(ids_of(layer, {3, 4}))
    assert labelling.mark_selected(layer, labelling.UNCLEAR) == 2
    assert stack.count() == 3
    assert layer.commitChanges(), layer.commitErrors()
    stored = labels_by_chunk(layer)
    assert stored == {0: 1, 1: 0, 2: 1, 3: -1, 4: -1, 5: None}
    # What the tool writes is what training reads: 1 icy, 0 not icy, -1 and NULL left out.
    assert {k: engine_labels.parse_label(v) for k, v in stored.items()} == {0: 1, 1: 0, 2: 1, 3: None, 4: None, 5: None}


def test_nothing_selected_changes_nothing(labelling):
    layer = chunk_layer()
    assert labelling.mark_selected(layer, labelling.ICY) == 0
    assert not layer.isEditable() and layer.undoStack().count() == 0
    assert set(labels_by_chunk(layer).values()) == {None}


def test_text_and_real_label_fields(labelling):
    words = chunk_layer("text")
    words.selectByIds(ids_of(words, {0}))
    labelling.mark_selected(words, labelling.NOT_ICY)
    words.selectByIds(ids_of(words, {1}))
    labelling.mark_selected(words, labelling.UNCLEAR)
    assert [labels_by_chunk(words)[i] for i in (0, 1)] == ["not icy", "unclear"]
    assert [engine_labels.parse_label(labels_by_chunk(words)[i]) for i in (0, 1)] == [0, None]
    reals = chunk_layer("real")
    reals.selectAll()
    labelling.mark_selected(reals, labelling.ICY)
    assert set(labels_by_chunk(reals).values()) == {1.0}


def test_a_boolean_label_field_takes_true_false_and_null(labelling):
    """Words written into a Boolean field had all read back True (or all False in a GeoPackage)."""
    layer = chunk_layer("bool")
    for chunk, value in ((0, labelling.ICY), (1, labelling.NOT_ICY), (2, labelling.UNCLEAR)):
        layer.selectByIds(ids_of(layer, {chunk}))
        assert labelling.mark_selected(layer, value) == 1
    assert layer.commitChanges(), layer.commitErrors()
    stored = labels_by_chunk(layer)
    assert [stored[i] for i in range(3)] == [True, False, None]
    assert [engine_labels.parse_label(stored[i]) for i in range(3)] == [1, 0, None]


def test_a_virtual_label_field_is_refused_before_editing(labelling):
    from qgis.core import QgsField

    layer = chunk_layer(with_label=False, name="computed")
    assert layer.addExpressionField("1", QgsField("label", qs.plugin_module("processing_provider.styling").QVARIANT_TYPES["int"]))
    layer.selectAll()
    with pytest.raises(labelling.LabellingError, match="The 'label' field of 'computed' is computed \\(a virtual field\\)"):
        labelling.mark_selected(layer, labelling.ICY)
    assert not layer.isEditable() and layer.undoStack().count() == 0


def test_layer_without_label_field(labelling):
    layer = chunk_layer(with_label=False, name="plain grid")
    layer.selectAll()
    with pytest.raises(labelling.LabellingError) as raised:
        labelling.mark_selected(layer, labelling.ICY)
    message = str(raised.value)
    assert "'plain grid' has no 'label' field" in message and "add an integer field 'label'" in message
    assert not layer.isEditable()


def test_not_a_chunk_layer_and_bad_values(labelling, make_raster):
    from qgis.core import QgsRasterLayer

    with pytest.raises(labelling.LabellingError, match="Select a chunk layer"):
        labelling.mark_selected(None, labelling.ICY)
    with pytest.raises(labelling.LabellingError, match="Select a chunk layer"):
        labelling.mark_selected(QgsRasterLayer(make_raster().path, "raster"), labelling.ICY)
    layer = chunk_layer()
    layer.selectAll()
    with pytest.raises(labelling.LabellingError, match=r"1 \(icy\), 0 \(not icy\) or -1 \(unclear\), not 2"):
        labelling.mark_selected(layer, 2)


def test_read_only_layer(labelling, tmp_path):
    from qgis.core import QgsProject, QgsVectorFileWriter, QgsVectorLayer

    layer = chunk_layer(name="locked")
    layer.setReadOnly(True)
    layer.selectAll()
    with pytest.raises(labelling.LabellingError, match=r"'locked' cannot be edited .* Save it as a GeoPackage where you can write, and label that\."):
        labelling.mark_selected(layer, labelling.ICY)
    # A GeoPackage in a folder one cannot write to had been told "Save it as a GeoPackage first".
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    written = QgsVectorFileWriter.writeAsVectorFormatV3(chunk_layer(), str(tmp_path / "chunks.gpkg"), QgsProject.instance().transformContext(), options)
    assert written[0] == QgsVectorFileWriter.NoError, written
    stored = QgsVectorLayer(str(tmp_path / "chunks.gpkg"), "stored", "ogr")
    stored.setReadOnly(True)
    stored.selectAll()
    with pytest.raises(labelling.LabellingError, match=r"'stored' cannot be edited .* Save a copy where you can write \(Export > Save Features As…, a GeoPackage\)"):
        labelling.mark_selected(stored, labelling.ICY)


def test_labels_saved_in_a_geopackage(labelling, make_raster, tmp_path):
    """The chunk grid written by hiriseice:chunk, given a label field, labelled and saved, read back with OGR."""
    from qgis.core import QgsField, QgsVectorLayer

    types = qs.plugin_module("processing_provider.styling").QVARIANT_TYPES
    raster = make_raster(width=128, height=128)
    gpkg = tmp_path / "grid.gpkg"
    qs.run_algorithm("hiriseice:chunk", {"INPUT": raster.path, "CHUNK_SIZE": 64, "OUTPUT": str(gpkg)})
    layer = QgsVectorLayer(str(gpkg), "grid", "ogr")
    assert layer.dataProvider().addAttributes([QgsField("label", types["int"])])
    layer.updateFields()
    layer.selectByIds([f.id() for f in layer.getFeatures() if f["row"] == 0])
    assert labelling.mark_selected(layer, labelling.ICY) == 2
    assert layer.commitChanges(), layer.commitErrors()
    del layer
    stored = {(r["row"], r["col"]): r["label"] for r in qs.read_ogr(gpkg).rows}
    assert stored == {(0, 0): 1, (0, 1): 1, (1, 0): None, (1, 1): None}


def test_labels_on_a_temporary_layer_are_told_to_save_the_layer_first(labelling, make_raster):
    """Processing's default output lives in its temporary folder: saving its edits (the advice) and the project lost every
    label once QGIS closed."""
    from qgis.core import QgsProcessingUtils, QgsVectorLayer

    raster = make_raster(width=128, height=128)
    results = qs.run_algorithm("hiriseice:chunk", {"INPUT": raster.path, "CHUNK_SIZE": 64, "OUTPUT": "TEMPORARY_OUTPUT"})
    temporary = results["OUTPUT"] if isinstance(results["OUTPUT"], QgsVectorLayer) else QgsVectorLayer(results["OUTPUT"], "grid", "ogr")
    assert os.path.realpath(temporary.source().split("|")[0]).startswith(os.path.realpath(QgsProcessingUtils.tempFolder())) or temporary.providerType() == "memory"
    assert labelling.how_to_keep_labels(temporary).startswith("This layer is temporary, gone when QGIS closes: save it to a file first")
    assert labelling.how_to_keep_labels(QgsVectorLayer(raster.path, "not temporary", "ogr")) == "Save the layer's edits to keep them."


# --- the provider without a worker -----------------------------------------------------------------------


def test_provider_lists_its_algorithms_with_help_without_a_worker(qgis_app, monkeypatch, tmp_path):
    from qgis.core import QgsProcessingException

    provider_module = qs.plugin_module("processing_provider.provider")
    worker = qs.plugin_module("processing_provider.worker")
    with qs.no_worker(monkeypatch, tmp_path / "plugin-without-venv"):
        with pytest.raises(QgsProcessingException):
            worker.locate_worker()
        provider = provider_module.IcePatchesProvider()
        provider.refreshAlgorithms()
        algorithms = {a.id(): a for a in provider.algorithms()}
    assert provider.id() == "hiriseice" and provider.name() == "HiRISE Ice Patches" and os.path.isfile(provider.svgIconPath())
    assert sorted(algorithms) == ["hiriseice:chunk", "hiriseice:detect", "hiriseice:download", "hiriseice:find", "hiriseice:survey", "hiriseice:train"]
    for algorithm in algorithms.values():
        assert algorithm.displayName() and algorithm.group() and os.path.isfile(algorithm.svgIconPath())
        text = algorithm.shortHelpString()
        assert len(text) > 300 and "<p>" in text
        for parameter in algorithm.parameterDefinitions():
            assert parameter.description(), f"{algorithm.id()} {parameter.name()} has no description"
        assert algorithm.createInstance().name() == algorithm.name()
    assert "scripts/install" in algorithms["hiriseice:detect"].shortHelpString()
    assert "scripts/install" in algorithms["hiriseice:train"].shortHelpString()
    assert "neither TensorFlow nor the worker" in algorithms["hiriseice:chunk"].shortHelpString()


def test_detect_help_describes_the_chunk_style(qgis_app):
    """The help's words for the colours follow the style's classes (processing_provider/styling.py, resources/styles/chunks.qml)."""
    from qgis.core import QgsVectorLayer

    styling = qs.plugin_module("processing_provider.styling")
    help_text = qs.plugin_module("processing_provider.detect_algorithm").DetectAlgorithm().shortHelpString()
    layer = QgsVectorLayer("Polygon?crs=EPSG:4326&field=probability:double", "chunks", "memory")
    assert styling.apply_style(layer, styling.CHUNKS_QML)
    ranges = {(r.lowerValue(), r.upperValue()): r.symbol().color() for r in layer.renderer().ranges()}
    # Not icy: no fill below 0.2, a faint tint from 0.2 to 0.4.
    assert ranges[(0.0, 0.2)].alpha() == 0 and 0 < ranges[(0.2, 0.4)].alpha() < 60
    assert "not icy</i> chunks are left unfilled" in help_text
    # Hard to identify: pale green (0.4-0.5) to pale yellow (0.5-0.6), light colours.
    green, yellow = ranges[(0.4, 0.5)], ranges[(0.5, 0.6)]
    assert green.green() > green.red() > green.blue() and yellow.red() > yellow.green() > yellow.blue() and min(green.lightness(), yellow.lightness()) > 180
    assert "hard to identify</i> ones are pale green to pale yellow" in help_text
    # Icy: orange from 0.6, red from 0.8, never opaque.
    orange, red = ranges[(0.6, 0.8)], ranges[(0.8, 1.0)]
    assert orange.red() > orange.green() > orange.blue() and red.red() > 200 and red.green() < 80
    assert "<i>icy</i> ones orange (0.6) to red (0.8 and above)" in help_text
    assert max(c.alpha() for c in ranges.values()) < 255 and "No fill is opaque" in help_text
    # The class edge reads without its hue: dark enough to stand 3 : 1 against mid-grey terrain (WCAG's contrast for graphics), dashed
    # where hard to identify. In the fill's own light colour it had stood 1.0-1.9 : 1, invisible in greyscale and to red-green colour blindness.
    from qgis.PyQt.QtCore import Qt
    from qgis.PyQt.QtGui import QColor

    def luminance(colour):
        linear = [c / 255 / 12.92 if c <= 10 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in (colour.red(), colour.green(), colour.blue())]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    grey = luminance(QColor(162, 162, 162))
    edges = {}
    for class_range in layer.renderer().ranges():
        edge = class_range.symbol().symbolLayer(0)
        edges[(class_range.lowerValue(), class_range.upperValue())] = (edge.strokeStyle(), QColor(edge.strokeColor()))
    for key, pen in (((0.4, 0.5), Qt.DashLine), ((0.5, 0.6), Qt.DashLine), ((0.6, 0.8), Qt.SolidLine), ((0.8, 1.0), Qt.SolidLine)):
        assert edges[key][0] == pen and (grey + 0.05) / (luminance(edges[key][1]) + 0.05) >= 3.0, key
    assert "edged by a dark dashed line" in help_text and "bolder dark solid line" in help_text
    # the image summary's categories differ by pen as well as colour: good and bad had printed as one grey
    summary = QgsVectorLayer("MultiPolygon?crs=EPSG:4326&field=category:string", "summary", "memory")
    assert styling.apply_style(summary, styling.SUMMARY_QML)
    pens = []
    for category in summary.renderer().categories():
        pens.append(category.symbol().symbolLayer(0).strokeStyle())
    assert len(pens) == 4 and len(set(pens)) == 4
    assert "blue (not icy) to red" not in help_text


# --- the chunk layer is the active layer after Detect ----------------------------------------------------


class _Iface:
    """What QGIS's main window does with layers that Processing loads: each added layer becomes
    the active one (QgisApp::autoSelectAddedLayer), and setActiveLayer changes it."""

    def __init__(self, project):
        self.layer = None
        project.layersAdded.connect(self._added)

    def _added(self, layers):
        self.layer = layers[0]

    def activeLayer(self):  # noqa: N802
        return self.layer

    def setActiveLayer(self, layer):  # noqa: N802
        self.layer = layer
        return True


def test_chunk_layer_is_active_after_processing_loads_detect_outputs(qgis_app, monkeypatch):
    """QGIS's own Processing post-processing loads Detect's two outputs as after a run from the
    dialog; the summary is loaded last, yet the chunk layer (what Mark icy acts on) ends active."""
    import qgis.utils
    from processing.gui.Postprocessing import handleAlgorithmResults
    from qgis.core import QgsProcessingContext, QgsProcessingFeedback, QgsProject, QgsVectorLayer

    styling = qs.plugin_module("processing_provider.styling")
    detect = qs.plugin_module("processing_provider.detect_algorithm").DetectAlgorithm()
    project = QgsProject.instance()
    iface = _Iface(project)
    monkeypatch.setattr(qgis.utils, "iface", iface)
    context = QgsProcessingContext()
    context.setProject(project)
    loaded = {}
    for output, name, qml in (("OUTPUT", "Ice probability of chunks", styling.CHUNKS_QML), ("SUMMARY", "Image summary", styling.SUMMARY_QML)):
        layer = QgsVectorLayer("Polygon?crs=EPSG:4326&field=probability:double&field=label:integer&field=category:string", name, "memory")
        context.temporaryLayerStore().addMapLayer(layer)
        context.addLayerToLoadOnCompletion(layer.id(), QgsProcessingContext.LayerDetails(name, project, output))
        styling.set_post_processor(context, layer.id(), qml)
        loaded[output] = layer.id()
    try:
        assert list(context.layersToLoadOnCompletion())[-1] == loaded["SUMMARY"]  # QGIS loads the summary last
        assert handleAlgorithmResults(detect, context, QgsProcessingFeedback())
        assert iface.activeLayer().id() == loaded["SUMMARY"]  # what QGIS alone leaves active
        qgis_app.processEvents()
        assert iface.activeLayer().id() == loaded["OUTPUT"]
        assert iface.activeLayer().renderer().type() == "graduatedSymbol"  # styled too
        # A chunk layer removed before the event loop turns is skipped, not an error.
        styling.make_active_when_loaded(project.mapLayer(loaded["SUMMARY"]))
        project.removeMapLayer(loaded["SUMMARY"])
        qgis_app.processEvents()
        assert iface.activeLayer().id() == loaded["OUTPUT"]
    finally:
        project.removeAllMapLayers()


# --- the GUI glue in a fresh QGIS --------------------------------------------------------------------------

GUI_SCRIPT = r'''
import json, sys
from qgis.core import QgsApplication, QgsFeature, QgsField, QgsGeometry, QgsVectorLayer
from qgis.PyQt.QtCore import QCoreApplication, QEvent, Qt
from qgis.PyQt.QtTest import QTest
from qgis.PyQt.QtWidgets import QDockWidget, QPushButton, QToolBar

app = QgsApplication([], True)
app.initQgis()
sys.path.insert(0, sys.argv[1])
import hirise_ice_patches
from hirise_ice_patches.processing_provider.styling import QVARIANT_TYPES


from gui_session import make_iface  # tests/ is on PYTHONPATH: the stand-in for the QGIS main window's iface

def layer(with_label=True):
    vl = QgsVectorLayer("Polygon?crs=EPSG:4326", "chunks", "memory")
    vl.dataProvider().addAttributes([QgsField("chunk_id", QVARIANT_TYPES["int"]), QgsField("probability", QVARIANT_TYPES["real"])] + ([QgsField("label", QVARIANT_TYPES["int"])] if with_label else []))
    vl.updateFields()
    for i in range(3):
        f = QgsFeature(vl.fields())
        f.setGeometry(QgsGeometry.fromWkt(f"POLYGON (({i} 0, {i + 1} 0, {i + 1} 1, {i} 1, {i} 0))"))
        f.setAttributes([i, 0.3 * i] + ([None] if with_label else []))
        vl.dataProvider().addFeatures([f])
    return vl


def last_message(iface):
    item = iface.bar.currentItem()
    return item.text() if item is not None else None


def flush():
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    app.processEvents()


iface = make_iface()
plugin = hirise_ice_patches.classFactory(iface)
out = {"class": type(plugin).__name__}
plugin.initGui()
# QGIS registers every action of its main window with the shortcuts manager once the plugins restored at startup are
# loaded: an action the plugin then deletes without unregistering it crashed Settings > Keyboard Shortcuts
from qgis.gui import QgsGui
QgsGui.shortcutsManager().registerAllChildActions(iface.window)
ours = {a.text() for a in plugin.actions}
registry = QgsApplication.processingRegistry()
out["algorithms"] = sorted(a.id() for a in registry.providerById("hiriseice").algorithms())
out["help"] = {a.id(): len(a.shortHelpString()) for a in registry.providerById("hiriseice").algorithms()}
bar = iface.window.menuBar()
out["menus"] = [a.text() for a in bar.actions()]
menu_action = [a for a in bar.actions() if a.text() == "HiRISE &Ice Patches"][0]
menu = menu_action.menu()
# A menu bar draws a menu's icon instead of its title: the title must show, so no icon.
out["menu_icon"] = not menu_action.icon().isNull() or not menu.icon().isNull()
out["menu_actions"] = [a.text() for a in menu.actions() if not a.isSeparator()]
toolbars = [t for t in iface.window.findChildren(QToolBar) if t.windowTitle() == "HiRISE Ice Patches"]
out["toolbar_actions"] = [a.text() for t in toolbars for a in t.actions()]
out["shortcuts"] = dict(iface.shortcuts)
out["install_offers"] = len(iface.bar.findChildren(QPushButton, "hiriseice_install_worker"))
mark_icy = [a for t in toolbars for a in t.actions() if a.text() == "Mark &icy"][0]

iface.layer = layer()
iface.layer.selectByIds([f.id() for f in iface.layer.getFeatures() if f["chunk_id"] in (0, 2)])
mark_icy.trigger()
out["labels"] = {str(f["chunk_id"]): (f["label"] if f["label"] in (0, 1, -1) else None) for f in iface.layer.getFeatures()}
out["after_mark"] = last_message(iface)
iface.layer.removeSelection()
mark_icy.trigger()
out["nothing_selected"] = last_message(iface)
iface.layer = layer(with_label=False)
iface.layer.selectAll()
mark_icy.trigger()
out["no_label_field"] = last_message(iface)
# The marking keys with the toolbar hidden: a shortcut fires only from an action on a visible widget.
for toolbar in toolbars:
    toolbar.hide()
iface.layer = layer()
iface.layer.selectByIds([f.id() for f in iface.layer.getFeatures() if f["chunk_id"] == 1])
iface.window.show()
iface.window.activateWindow()
app.processEvents()
QTest.keyClick(iface.window, Qt.Key.Key_0, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier)
app.processEvents()
out["key_with_toolbar_hidden"] = {str(f["chunk_id"]): (f["label"] if f["label"] in (0, 1, -1) else None) for f in iface.layer.getFeatures()}
for toolbar in toolbars:
    toolbar.show()

# The review dock: toggled by its action, on the right, reviewing the active chunk layer.
iface.layer = layer()
iface.window.show()
review = [a for t in toolbars for a in t.actions() if a.text() == "&Review labels"][0]
review.trigger()
app.processEvents()
docks = [d for d in iface.window.findChildren(QDockWidget) if d.objectName() == "HiriseIceReviewDock"]
out["dock"] = {"count": len(docks), "visible": docks[0].isVisible(), "checked": review.isChecked(), "area": int(iface.window.dockWidgetArea(docks[0])),
               "layer": docks[0].layer is iface.layer, "order": docks[0].order(), "chunk": docks[0].chunk_label.text()}
docks[0].close()
app.processEvents()
out["dock_closed_unchecks"] = not review.isChecked()
review.trigger()
app.processEvents()
out["dock_reopened"] = docks[0].isVisible() and len([d for d in iface.window.findChildren(QDockWidget) if d.objectName() == "HiriseIceReviewDock"]) == 1
# Its key (Ctrl+Shift+K) with the focus elsewhere (the map, a table) brings the keys back to the open dock, where they act; with
# them in the dock, hides it
from qgis.PyQt.QtWidgets import QApplication, QLineEdit
elsewhere = QLineEdit(iface.window)
elsewhere.show()
iface.window.activateWindow()
elsewhere.setFocus()
app.processEvents()
keys = [a for a in iface.window.actions() if a.objectName() == "hiriseice_review_keys"][0]
keys.trigger()
app.processEvents()
focused = QApplication.focusWidget()
out["review_key_brings_focus"] = [docks[0].isVisible(), review.isChecked(), focused is not None and docks[0].isAncestorOf(focused)]
keys.trigger()
app.processEvents()
out["review_key_again_hides"] = [docks[0].isVisible(), review.isChecked()]
keys.trigger()
app.processEvents()
out["review_key_shows"] = docks[0].isVisible() and review.isChecked()

plugin.unload()
out["shortcut_manager_after_unload"] = sorted(a.text() for a in QgsGui.shortcutsManager().listActions() if a.text() in ours)
flush()
out["shortcut_manager_after_deletion"] = len([a.text() for a in QgsGui.shortcutsManager().listActions()])  # a dangling action crashes here
out["menus_after_unload"] = [a.text() for a in bar.actions()]
out["toolbars_after_unload"] = len([t for t in iface.window.findChildren(QToolBar) if t.windowTitle() == "HiRISE Ice Patches"])
out["provider_after_unload"] = registry.providerById("hiriseice") is not None
out["shortcuts_after_unload"] = dict(iface.shortcuts)
out["docks_after_unload"] = len([d for d in iface.window.findChildren(QDockWidget) if d.objectName() == "HiriseIceReviewDock"])
out["install_offers_after_unload"] = len(iface.bar.findChildren(QPushButton, "hiriseice_install_worker"))
print("RESULT " + json.dumps(out))
sys.stdout.flush()
app.exitQgis()
'''


def test_plugin_gui_loads_marks_and_unloads_without_a_worker(qgis_app, tmp_path):
    plugins = qs.plugin_without_worker(tmp_path)
    env = qs.environment_without_worker(plugins, tmp_path / "config")
    script = tmp_path / "gui.py"
    script.write_text(GUI_SCRIPT, encoding="utf-8")
    done = subprocess.run([sys.executable, str(script), str(plugins)], env=dict(env, PYTHONPATH=str(qs.REPO_ROOT / "tests")), capture_output=True, text=True,
                          timeout=120, cwd=str(tmp_path))
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"exit {done.returncode}\nstdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    out = json.loads(lines[-1][len("RESULT "):])
    assert out["class"] == "IcePatchesPlugin"
    assert out["algorithms"] == ["hiriseice:chunk", "hiriseice:detect", "hiriseice:download", "hiriseice:find", "hiriseice:survey", "hiriseice:train"]
    assert all(length > 300 for length in out["help"].values())
    assert out["menus"] == ["Settings", "HiRISE &Ice Patches", "Help"]  # before the first right standard menu; Alt+I opens it
    assert out["menu_icon"] is False
    # each item with an access key of its own, for keyboard use
    assert out["menu_actions"] == ["&Detect ice patches…", "&Train ice-patch model…", "&Chunk grid…", "Mark &icy", "Mark &not icy", "Mark &unclear",
                                   "&Review labels", "Check &worker", "Worker &settings…"]
    assert out["toolbar_actions"] == ["Mark &icy", "Mark &not icy", "Mark &unclear", "&Review labels"]
    assert out["shortcuts"] == {"Mark &icy": "Ctrl+Alt+1", "Mark &not icy": "Ctrl+Alt+0", "Mark &unclear": "Ctrl+Alt+U", "Review labels (keys)": "Ctrl+Shift+K"}
    assert out["labels"] == {"0": 1, "1": None, "2": 1}
    assert "2 chunk(s)" in out["after_mark"] and "marked icy" in out["after_mark"] and "This layer is temporary, gone when QGIS closes: save it to a file first" in out["after_mark"]  # a memory layer
    assert "Nothing is selected" in out["nothing_selected"]
    assert "has no 'label' field" in out["no_label_field"]
    assert out["key_with_toolbar_hidden"] == {"0": None, "1": 0, "2": None}
    # No worker needed for the dock; a layer without review_rank is ordered by probability.
    assert out["dock"] == {"count": 1, "visible": True, "checked": True, "area": 2, "layer": True, "order": "probability", "chunk": "2"}
    assert out["dock_closed_unchecks"] and out["dock_reopened"]
    assert out["review_key_brings_focus"] == [True, True, True] and out["review_key_again_hides"] == [False, False] and out["review_key_shows"]
    assert out["docks_after_unload"] == 0
    assert (out["install_offers"], out["install_offers_after_unload"]) == (1, 0)  # no worker: offered once, and gone with the plugin
    assert out["menus_after_unload"] == ["Settings", "Help"]
    assert out["toolbars_after_unload"] == 0
    assert out["provider_after_unload"] is False
    assert out["shortcuts_after_unload"] == {}
    assert out["shortcut_manager_after_unload"] == [] and out["shortcut_manager_after_deletion"] >= 0


CHECK_THEN_UNLOAD_SCRIPT = r'''
import json, sys
from qgis.core import QgsApplication

app = QgsApplication([], True)
app.initQgis()
sys.path.insert(0, sys.argv[1])
import hirise_ice_patches
import hirise_ice_patches.plugin.plugin as glue
from gui_session import make_iface, wait_until

boxes = []


class Boxes:  # records the boxes the plugin asks for: a modal box offscreen waits for ever
    @staticmethod
    def information(parent, title, text):
        boxes.append(("information", title))

    @staticmethod
    def warning(parent, title, text):
        boxes.append(("warning", title))


glue.QMessageBox = Boxes
tasks = QgsApplication.taskManager()
plugin = hirise_ice_patches.classFactory(make_iface())
plugin.initGui()
out = {}
plugin.check_worker()
out["checked"] = wait_until(app, lambda: bool(boxes), 120) and list(boxes)
plugin.check_worker()
plugin.unload()
wait_until(app, lambda: tasks.countActiveTasks() == 0, 120)
wait_until(app, lambda: len(boxes) > 1, 3)
out["after_unload"] = boxes[1:]
print("RESULT " + json.dumps(out))
sys.stdout.flush()
app.exitQgis()
'''


def test_a_worker_check_still_running_when_the_plugin_is_unloaded_opens_no_box(qgis_app, worker_python, tmp_path):
    """Check worker, then a reload, an update or disabling the plugin: about ten seconds later the unloaded plugin opened
    its 'worker' box anyway."""
    plugins = qs.plugin_without_worker(tmp_path)
    env = dict(qs.environment_without_worker(plugins, tmp_path / "config"), HIRISEICE_WORKER_PYTHON=worker_python, PYTHONPATH=str(qs.REPO_ROOT / "tests"))
    script = tmp_path / "check.py"
    script.write_text(CHECK_THEN_UNLOAD_SCRIPT, encoding="utf-8")
    done = subprocess.run([sys.executable, str(script), str(plugins)], env=env, capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"exit {done.returncode}\nstdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    out = json.loads(lines[-1][len("RESULT "):])
    assert out["checked"] == [["information", "HiRISE Ice Patches: worker"]]  # the check itself answers
    assert out["after_unload"] == []


def test_a_worker_whose_install_did_not_finish_is_no_worker(qgis_app, monkeypatch, tmp_path):
    """Reinstall clears the venv, then pip fails (offline): its python was still there, and the plugin took it
    for a working worker, offered no install and failed at detect instead."""
    from qgis.core import QgsProcessingException

    worker = qs.plugin_module("processing_provider.worker")
    python = tmp_path / "hiriseice-worker" / "bin" / "python"
    python.parent.mkdir(parents=True)
    os.symlink(sys.executable, python)
    monkeypatch.setenv(worker.ENV_VAR, str(python))
    assert worker.locate_worker() == str(python)
    (tmp_path / "hiriseice-worker" / worker.INSTALLING_MARKER).write_text("")
    with pytest.raises(QgsProcessingException, match="belongs to a worker whose install did not finish \\(reinstall it\\)"):
        worker.locate_worker()

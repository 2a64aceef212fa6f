"""A user's tour of the plugin in a GUI QGIS: the toolbox, Detect run from its dialog on the sample
scene, the styled result on the map, the review dock driven by key presses, and the report.

Arguments: plugins folder, sample scene (GeoTIFF), output folder, screenshot folder.
"""

import base64
import json
import os
import sys

import gui_session
from qgis.core import QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QSize, Qt
from qgis.PyQt.QtGui import QImage
from qgis.PyQt.QtTest import QTest
from qgis.PyQt.QtWidgets import QTextBrowser, QTextEdit

plugins, scene, work, shots = sys.argv[1:5]
app, iface = gui_session.start_qgis()
sys.path.insert(0, plugins)
sys.path.append("/usr/share/qgis/python/plugins")
from processing.core.Processing import Processing  # noqa: E402

Processing.initialize()
import processing  # noqa: E402
from processing.gui.ProcessingToolbox import ProcessingToolbox  # noqa: E402

import hirise_ice_patches  # noqa: E402
from hirise_ice_patches.plugin import review_dock  # noqa: E402

out = {}
iface.window.resize(1280, 800)
iface.window.show()
QTest.qWaitForWindowExposed(iface.window)
plugin = hirise_ice_patches.classFactory(iface)
plugin.initGui()
out["menus"] = [a.text() for a in iface.window.menuBar().actions()]
out["first_use_offer"] = iface.bar.currentItem().text() if iface.bar.currentItem() else None  # none: the worker is set

image = QgsRasterLayer(scene, os.path.splitext(os.path.basename(scene))[0])
QgsProject.instance().addMapLayer(image)
iface.canvas.setDestinationCrs(image.crs())
iface.canvas.setExtent(image.extent())

# The Processing toolbox, the plugin's provider opened.
toolbox = ProcessingToolbox()
iface.window.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, toolbox)
iface.window.resizeDocks([toolbox], [330], Qt.Orientation.Horizontal)
tree = toolbox.algorithmTree
model = tree.model()


def tree_texts(parent, depth=0):
    texts = []
    for row in range(model.rowCount(parent)):
        index = model.index(row, 0, parent)
        texts.append("  " * depth + model.data(index))
        if depth == 0 and model.data(index) == "HiRISE Ice Patches":
            tree.expandRecursively(index)
        texts += tree_texts(index, depth + 1)
    return texts


tree.collapseAll()
out["toolbox"] = tree_texts(tree.rootIndex())
iface.canvas.refresh()
iface.canvas.waitWhileRendering()
app.processEvents()
gui_session.save_grab(iface.window, shots, "toolbox.png")

# Detect from its dialog, as a user runs it: parameters filled in, Run pressed, not exec().
chunks_path, summary_path, report = (os.path.join(work, name) for name in ("chunks.gpkg", "summary.gpkg", "report.html"))
dialog = processing.createAlgorithmDialog("hiriseice:detect", {"INPUT": image.id(), "OUTPUT": chunks_path, "SUMMARY": summary_path, "REPORT": report})
dialog.resize(1000, 720)
dialog.show()
app.processEvents()
gui_session.save_grab(dialog, shots, "detect_dialog.png")
finished = []
dialog.algorithmFinished.connect(lambda ok, results: finished.append((ok, {k: str(v) for k, v in results.items()})))
QTest.mouseClick(dialog.runButton(), Qt.MouseButton.LeftButton)
out["detect_finished"] = gui_session.wait_until(app, lambda: finished, 600)
out["detect"] = finished[0] if finished else None
app.processEvents()
gui_session.save_grab(dialog, shots, "detect_dialog_log.png")
dialog.close()
toolbox.close()

# The styled result on the map.
layers = {layer.name(): layer for layer in QgsProject.instance().mapLayers().values()}
out["layers"] = sorted(layers)
chunks = iface.activeLayer()
out["active_layer"] = chunks.name() if chunks else None
renderer = chunks.renderer()
out["chunk_renderer"] = renderer.type()
out["chunk_classes"] = [[r.lowerValue(), r.upperValue(), r.label(), r.symbol().color().alpha()] for r in renderer.ranges()]
out["chunk_class_attribute"] = renderer.classAttribute()
out["chunk_labels_on"] = chunks.labelsEnabled()
summary = [layer for name, layer in layers.items() if "summary" in name.lower()]
out["summary_renderer"] = summary[0].renderer().type() if summary else None
out["chunk_fields"] = chunks.fields().names()
out["chunk_count"] = chunks.featureCount()
out["probabilities"] = {str(f["chunk_id"]): f["probability"] for f in chunks.getFeatures()}
iface.canvas.setExtent(image.extent())
iface.canvas.refresh()
iface.canvas.waitWhileRendering()
app.processEvents()
iface.canvas.saveAsImage(os.path.join(shots, "canvas.png"))
gui_session.save_grab(iface.window, shots, "styled_result.png")

# The review dock, opened from the toolbar and driven with keys.
plugin.review_action.trigger()
app.processEvents()
dock = plugin.review_dock
out["dock_layer"] = dock.layer.name() if dock.layer else None
out["dock_order"] = dock.order()
start = dock.current_id()
out["reviewed"] = []
for key in (Qt.Key.Key_1, Qt.Key.Key_0, Qt.Key.Key_U, Qt.Key.Key_N, Qt.Key.Key_1):
    out["reviewed"].append(chunks.getFeature(dock.current_id())["chunk_id"])
    QTest.keyClick(dock.widget(), key)
    app.processEvents()
out["labels"] = {str(f["chunk_id"]): review_dock.label_value(f["label"]) for f in chunks.getFeatures()}
out["ranks"] = {str(f["chunk_id"]): f["review_rank"] for f in chunks.getFeatures()}
out["counts"] = dock.counts_label.text()
iface.canvas.refresh()
iface.canvas.waitWhileRendering()
app.processEvents()
gui_session.save_grab(iface.window, shots, "review_dock.png")
out["saved"] = chunks.commitChanges()


class ReportBrowser(QTextBrowser):
    """Shows the report's charts, embedded as data: URLs (a QTextBrowser loads only files itself)."""

    def loadResource(self, kind, url):  # noqa: N802 (Qt's name)
        text = url.toString()
        if text.startswith("data:image/") and ";base64," in text:
            return QImage.fromData(base64.b64decode(text.split(",", 1)[1]))
        return super().loadResource(kind, url)


browser = ReportBrowser()
browser.resize(QSize(1000, 2300))  # the summary and the quicklook in one picture
with open(report, encoding="utf-8") as handle:
    browser.setHtml(handle.read())
browser.show()
app.processEvents()
out["report_text"] = browser.toPlainText()[:3000]
gui_session.save_grab(browser, shots, "report.png")

# Detect again with every output at its default (temporary layers), as a first run from the toolbox is.
before = set(QgsProject.instance().mapLayers())
dialog = processing.createAlgorithmDialog("hiriseice:detect", {"INPUT": image.id()})
dialog.show()
app.processEvents()
finished_with_defaults = []
dialog.algorithmFinished.connect(lambda ok, results: finished_with_defaults.append(ok))
QTest.mouseClick(dialog.runButton(), Qt.MouseButton.LeftButton)
out["defaults_finished"] = gui_session.wait_until(app, lambda: finished_with_defaults, 120)
app.processEvents()
out["defaults_log"] = "\n".join(widget.toPlainText() for widget in dialog.findChildren(QTextEdit))
added = [QgsProject.instance().mapLayer(layer_id) for layer_id in set(QgsProject.instance().mapLayers()) - before]
out["defaults_layers"] = sorted([layer.name(), layer.providerType(), layer.renderer().type()] for layer in added)
dialog.close()

QgsProject.instance().removeAllMapLayers()
plugin.unload()
print("RESULT " + json.dumps(out))
sys.stdout.flush()
app.exitQgis()

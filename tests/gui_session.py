"""A QGIS GUI session for the tests of dialogs and the whole plugin, run as a fresh process.

QgisApp (QGIS's main window) is not available from Python in 3.22, so `Iface` is the part of
QgisInterface the plugin and Processing's dialogs use, on real Qt and QGIS objects: a main window,
a map canvas fed by QGIS's own layer-tree bridge, a message bar, docks and toolbars. It is set as
qgis.utils.iface before Processing's GUI modules import it. The scripts in tests/gui_scripts print
one line `RESULT <json>` that `run_script` returns.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

TESTS = Path(__file__).resolve().parent
SCRIPTS = TESTS / "gui_scripts"


def run_script(name: str, arguments: List[str], env: Dict[str, str], cwd, timeout: float) -> Dict:
    """tests/gui_scripts/<name> in Debian's Python with a GUI QgsApplication; its RESULT as a dict."""
    env = dict(env, PYTHONPATH=str(TESTS))
    done = subprocess.run([sys.executable, str(SCRIPTS / name)] + [str(a) for a in arguments], env=env, capture_output=True, text=True, timeout=timeout, cwd=str(cwd))
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"exit {done.returncode}\nstdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
    return json.loads(lines[-1][len("RESULT "):])


# --- inside the GUI process -------------------------------------------------------------------------


def start_qgis():
    """A QgsApplication with its GUI and a stand-in iface set as qgis.utils.iface; returns (app, iface)."""
    import qgis.utils
    from qgis.core import QgsApplication

    app = QgsApplication([], True)
    app.initQgis()
    iface = make_iface()
    qgis.utils.iface = iface
    return app, iface


def make_iface():
    from qgis.core import QgsProject
    from qgis.gui import QgsBrowserGuiModel, QgsLayerTreeMapCanvasBridge, QgsMapCanvas, QgsMessageBar
    from qgis.PyQt.QtCore import QObject, QSize, pyqtSignal
    from qgis.PyQt.QtWidgets import QMainWindow, QVBoxLayout, QWidget

    class Iface(QObject):
        currentLayerChanged = pyqtSignal(object)

        def __init__(self):
            super().__init__()
            self.window = QMainWindow()
            self.window.setWindowTitle("QGIS")
            self.window.menuBar().addMenu("Settings")
            self.help = self.window.menuBar().addMenu("Help")
            central = QWidget(self.window)
            layout = QVBoxLayout(central)
            layout.setContentsMargins(0, 0, 0, 0)
            self.bar = QgsMessageBar(central)
            self.canvas = QgsMapCanvas(central)
            layout.addWidget(self.bar)
            layout.addWidget(self.canvas, 1)
            self.window.setCentralWidget(central)
            project = QgsProject.instance()
            self.bridge = QgsLayerTreeMapCanvasBridge(project.layerTreeRoot(), self.canvas)
            self.browser = QgsBrowserGuiModel(self)
            self.layer = None
            self.shortcuts = {}
            project.layersAdded.connect(self._added)  # QgisApp::autoSelectAddedLayer

        def _added(self, layers):
            if layers:
                self.setActiveLayer(layers[0])

        def mainWindow(self):  # noqa: N802 (QgisInterface's names)
            return self.window

        def mapCanvas(self):  # noqa: N802
            return self.canvas

        def browserModel(self):  # noqa: N802
            return self.browser

        def messageBar(self):  # noqa: N802
            return self.bar

        def activeLayer(self):  # noqa: N802
            return self.layer

        def setActiveLayer(self, layer):  # noqa: N802
            self.layer = layer
            self.currentLayerChanged.emit(layer)
            return True

        def addDockWidget(self, area, dock):  # noqa: N802
            self.window.addDockWidget(area, dock)

        def removeDockWidget(self, dock):  # noqa: N802
            self.window.removeDockWidget(dock)

        def iconSize(self, dockedToolbar=False):  # noqa: N802,N803 (Processing's toolbox asks)
            return QSize(16, 16) if dockedToolbar else QSize(24, 24)

        def firstRightStandardMenu(self):  # noqa: N802
            return self.help

        def addToolBar(self, name):  # noqa: N802
            return self.window.addToolBar(name)

        def registerMainWindowAction(self, action, shortcut):  # noqa: N802
            from qgis.gui import QgsGui

            action.setShortcut(shortcut)
            self.shortcuts[action.text()] = shortcut
            return QgsGui.shortcutsManager().registerAction(action, shortcut)  # as QGIS's own iface does

        def unregisterMainWindowAction(self, action):  # noqa: N802
            from qgis.gui import QgsGui

            QgsGui.shortcutsManager().unregisterAction(action)
            return self.shortcuts.pop(action.text(), None) is not None

    return Iface()


def wait_until(app, condition, seconds: float) -> bool:
    """Turns the event loop until condition() or the time is up (QProcess and task signals need it)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        app.processEvents()
        time.sleep(0.02)
    return True


def save_grab(widget, folder, name: str) -> str:
    path = os.path.join(str(folder), name)
    assert widget.grab().save(path), path
    return path

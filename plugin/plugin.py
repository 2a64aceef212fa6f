"""The QGIS plugin: Processing provider, the "HiRISE Ice Patches" menu and the labelling toolbar."""

import os

from qgis.core import Qgis, QgsApplication, QgsProcessingException, QgsProcessingFeedback, QgsTask
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QApplication, QMenu, QMessageBox, QPushButton

try:
    from qgis.PyQt.QtGui import QAction  # Qt6 (QGIS 4), and Qt5 builds of recent QGIS 3
except ImportError:
    from qgis.PyQt.QtWidgets import QAction  # Qt5 (QGIS 3.22)

from .labelling import ICY, NAMES, NOT_ICY, UNCLEAR, LabellingError, how_to_keep_labels, mark_selected
from .review_dock import REVIEW_SHORTCUT, ReviewDock
from .worker_dialogs import WorkerInstaller, WorkerSettingsDialog, describe_worker

try:
    from ..processing_provider import worker
    from ..processing_provider.provider import IcePatchesProvider
except ImportError:  # plugin imported as a top-level package
    from processing_provider import worker
    from processing_provider.provider import IcePatchesProvider

PLUGIN_FOLDER = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TITLE = "HiRISE Ice Patches"
# The menu with its access key (Alt+I, free in QGIS's menu bar in English and German), and its items with theirs.
MENU_TITLE = "HiRISE &Ice Patches"


def _icon(name: str) -> QIcon:
    return QIcon(os.path.join(PLUGIN_FOLDER, "resources", "icons", name))


class IcePatchesPlugin:
    # (value, text, icon, default shortcut); shortcuts can be changed in Settings > Keyboard Shortcuts.
    MARK_ACTIONS = [
        (ICY, "Mark &icy", "mark_icy.svg", "Ctrl+Alt+1"),
        (NOT_ICY, "Mark &not icy", "mark_not_icy.svg", "Ctrl+Alt+0"),
        (UNCLEAR, "Mark &unclear", "mark_unclear.svg", "Ctrl+Alt+U"),
    ]

    def __init__(self, iface):
        self.iface = iface
        self.provider = None
        self.menu = None
        self.toolbar = None
        self.actions = []
        self.shortcut_actions = []
        self.check_task = None
        self.review_action = None
        self.review_dock = None
        self.installer = None
        self.settings_dialog = None
        self.installer_message = None  # the message bar's offer to install the worker, while it shows

    # --- Processing -----------------------------------------------------------------------------

    def initProcessing(self):  # noqa: N802 (QGIS's name; qgis_process calls it for hasProcessingProvider=yes)
        if self.provider is None:
            self.provider = IcePatchesProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    # --- GUI ------------------------------------------------------------------------------------

    def initGui(self):  # noqa: N802
        self.initProcessing()
        window = self.iface.mainWindow()
        self.menu = QMenu(MENU_TITLE, window)
        self.menu.setObjectName("HiriseIcePatchesMenu")
        # No icon on the menu itself: a menu bar draws a menu's icon instead of its title.
        for text, algorithm in (("&Detect ice patches…", "detect"), ("&Train ice-patch model…", "train"), ("&Chunk grid…", "chunk")):
            self._menu_action(text, lambda checked=False, a=algorithm: self.open_algorithm(a), "hiriseice.svg" if algorithm == "detect" else None)
        self.menu.addSeparator()
        self.review_action = self._menu_action("&Review labels", self.toggle_review, "review.svg")
        self.review_action.setObjectName("hiriseice_review")
        self.review_action.setCheckable(True)
        self.review_action.setToolTip(f"Review labels: step through the chunks of the active detect layer, zoomed, and label each with one key (1, 0, U) "
                                      f"({REVIEW_SHORTCUT}: shows the dock, or brings the keys back to it)")
        # a key of its own, apart from the toggle: a click on the toggle hides the dock, the key first gives it the keys
        review_keys = QAction("Review labels (keys)", window)
        review_keys.setObjectName("hiriseice_review_keys")
        review_keys.triggered.connect(self.review_by_keys)
        self.iface.registerMainWindowAction(review_keys, REVIEW_SHORTCUT)
        window.addAction(review_keys)
        self.shortcut_actions.append(review_keys)
        self.actions.append(review_keys)
        self.menu.addSeparator()
        self._menu_action("Check &worker", self.check_worker)
        self._menu_action("Worker &settings…", self.worker_settings)
        window.menuBar().insertMenu(self.iface.firstRightStandardMenu().menuAction(), self.menu)

        self.toolbar = self.iface.addToolBar(TITLE)
        self.toolbar.setObjectName("HiriseIcePatchesToolbar")
        self.toolbar.setToolTip(f"{TITLE}: label the selected chunks")
        for value, text, icon, shortcut in self.MARK_ACTIONS:
            action = QAction(_icon(icon), text, window)
            action.setObjectName(f"hiriseice_mark_{NAMES[value].replace(' ', '_')}")
            action.setToolTip(f"{text.replace('&', '')}: write {value} into the 'label' field of the selected chunks ({shortcut})")
            action.triggered.connect(lambda checked=False, v=value: self.mark(v))
            self.iface.registerMainWindowAction(action, shortcut)
            window.addAction(action)  # its shortcut works while the toolbar is hidden too
            self.toolbar.addAction(action)
            self.menu.insertAction(self.review_action, action)
            self.shortcut_actions.append(action)
            self.actions.append(action)
        self.toolbar.addAction(self.review_action)
        self._offer_installer_on_first_use()

    def _menu_action(self, text, slot, icon=None) -> QAction:
        action = QAction(_icon(icon), text, self.iface.mainWindow()) if icon else QAction(text, self.iface.mainWindow())
        action.triggered.connect(slot)
        self.menu.addAction(action)
        self.actions.append(action)
        return action

    def unload(self):
        for dialog in (self.installer, self.settings_dialog):
            if dialog is not None:
                dialog.close()
                dialog.deleteLater()
        self.installer = self.settings_dialog = None
        if self.installer_message is not None:
            try:
                self.iface.messageBar().popWidget(self.installer_message)
            except RuntimeError:  # closed by the user, and deleted
                pass
            self.installer_message = None
        if self.review_dock is not None:
            self.review_dock.release()
            self.iface.removeDockWidget(self.review_dock)
            self.review_dock.deleteLater()
            self.review_dock = None
        for action in self.shortcut_actions:
            self.iface.mainWindow().removeAction(action)
        self.shortcut_actions = []
        if self.toolbar is not None:
            self.iface.mainWindow().removeToolBar(self.toolbar)
            self.toolbar.deleteLater()
            self.toolbar = None
        if self.menu is not None:
            self.iface.mainWindow().menuBar().removeAction(self.menu.menuAction())
            self.menu.deleteLater()
            self.menu = None
        for action in self.actions:
            # QGIS registers every action of its main window once the plugins of the last session are loaded: one
            # left registered when deleted crashes Settings > Keyboard Shortcuts
            self.iface.unregisterMainWindowAction(action)
            action.deleteLater()
        self.actions = []
        self.review_action = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
        if self.check_task is not None:  # after the menu is gone, which tells its answer that no box is wanted
            self.check_task.cancel()
            self.check_task = None

    # --- actions --------------------------------------------------------------------------------

    def open_algorithm(self, name: str):
        import processing

        missing = self._worker_missing() if name in ("detect", "train") else ""
        reason = ", which is not set up yet." if missing == "not set up" else f": {missing} Correct it in Worker settings…, or install the worker."
        if missing and self.offer_installer(f"'{name}' runs the neural network in the worker{reason}"):
            return
        processing.execAlgorithmDialog(f"hiriseice:{name}")

    def toggle_review(self, checked: bool = True):
        """Shows or hides the review dock (made on first use, on the right)."""
        if self.review_dock is None:
            if not checked:
                return
            self.review_dock = ReviewDock(self.iface, self.iface.mainWindow())
            self.iface.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.review_dock)
            self.review_dock.visibilityChanged.connect(self._review_visibility)
        self.review_dock.setVisible(checked)  # shown again, it takes up the active chunk layer (ReviewDock._visibility_changed)
        if checked:
            self.review_dock.raise_()
            self.review_dock.widget().setFocus()

    def review_by_keys(self):
        """REVIEW_SHORTCUT: shows the review dock; where it is open but the keys are elsewhere (the map, a table), brings them
        back to it, since its keys act only where it has the focus; where it has them, hides it."""
        focused = QApplication.focusWidget()
        if self.review_dock is not None and self.review_dock.isVisible() and not (focused is not None and self.review_dock.isAncestorOf(focused)):
            self.review_dock.raise_()
            self.review_dock.widget().setFocus()
        else:
            self.review_action.trigger()

    def _review_visibility(self, visible: bool):
        if self.review_action is not None and self.review_action.isChecked() != visible:
            self.review_action.setChecked(visible)

    def mark(self, value: int):
        bar = self.iface.messageBar()
        layer = self.iface.activeLayer()
        try:
            changed = mark_selected(layer, value)
        except LabellingError as exc:
            bar.pushMessage(TITLE, str(exc), Qgis.MessageLevel.Warning, 6)
            return
        if not changed:
            bar.pushMessage(TITLE, f"Nothing is selected in '{layer.name()}'. Select chunks (Select Features tool), then mark them.", Qgis.MessageLevel.Info, 4)
            return
        bar.pushMessage(
            TITLE, f"{changed} chunk(s) of '{layer.name()}' marked {NAMES[value]} (label = {value}). {how_to_keep_labels(layer)}", Qgis.MessageLevel.Success, 3
        )

    def check_worker(self):
        try:
            python = worker.locate_worker()
        except QgsProcessingException as exc:
            self.offer_installer(str(exc))
            return
        self.iface.messageBar().pushMessage(TITLE, f"Checking the worker {python} (starting TensorFlow takes a few seconds)…", Qgis.MessageLevel.Info, 5)
        self.check_task = QgsTask.fromFunction(f"{TITLE}: checking the worker", _worker_info, on_finished=self._worker_checked)
        QgsApplication.taskManager().addTask(self.check_task)

    def _worker_checked(self, exception, result=None):
        if self.menu is None:  # unloaded (a reload, an update) while the worker was checked
            return
        self.check_task = None
        window = self.iface.mainWindow()
        if exception is not None:
            QMessageBox.warning(window, f"{TITLE}: worker", f"The worker does not work:\n\n{exception}\n\n{worker.how_to_install()}")
            return
        QMessageBox.information(window, f"{TITLE}: worker", describe_worker(result))

    # --- the worker's setup ----------------------------------------------------------------------

    @staticmethod
    def _worker_missing() -> str:
        """"" with a worker; without one, "not set up" or, where a worker Python was named (a setting, the
        environment variable) and is not there, why, naming it: a mistyped path had been offered a 700 MB install."""
        try:
            worker.locate_worker()
        except QgsProcessingException:
            origin, path = worker.worker_candidates()[0]
            return "not set up" if origin == worker.PLUGIN_VENV else f"the worker Python given by the {origin} ({path}) cannot be started."
        return ""

    def _offer_installer_on_first_use(self):
        """Without a worker, one message with a button (not a dialog: QGIS is still starting)."""
        missing = self._worker_missing()
        if not missing:
            return
        bar = self.iface.messageBar()
        item = bar.createMessage(TITLE, "The worker (a Python with TensorFlow) that detection and training need is "
                                 + ("not set up." if missing == "not set up" else f"not there: {missing}"))
        button = QPushButton("Install the worker…", item)
        button.setObjectName("hiriseice_install_worker")
        button.clicked.connect(lambda checked=False: self.open_installer())
        item.layout().addWidget(button)
        bar.pushWidget(item, Qgis.MessageLevel.Warning, 0)
        self.installer_message = item

    def offer_installer(self, reason: str) -> bool:
        """Asks whether to install the worker now; True when the installer was opened."""
        answer = QMessageBox.question(
            self.iface.mainWindow(), f"{TITLE}: no worker",
            f"{reason}\n\nInstall the worker now? (A Python environment with TensorFlow, about 700 MB of downloads; QGIS stays usable.)",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.Yes,
        )
        if answer != QMessageBox.StandardButton.Yes:
            return False
        self.open_installer()
        return True

    def open_installer(self) -> WorkerInstaller:
        if self.installer is None:
            self.installer = WorkerInstaller(self.iface.mainWindow())
            self.installer.installed.connect(self._worker_installed)
        self.installer.show()
        self.installer.raise_()
        return self.installer

    def _worker_installed(self, python: str):
        if self.settings_dialog is not None:
            self.settings_dialog.path_edit.setText(python)
            self.settings_dialog.show_in_use()
        self.iface.messageBar().pushMessage(TITLE, f"Worker installed: {python}. Detection and training are ready.", Qgis.MessageLevel.Success, 8)

    def worker_settings(self) -> WorkerSettingsDialog:
        if self.settings_dialog is None:
            self.settings_dialog = WorkerSettingsDialog(self.iface.mainWindow(), open_installer=self.open_installer)
        self.settings_dialog.show()
        self.settings_dialog.raise_()
        return self.settings_dialog


class _TaskFeedback(QgsProcessingFeedback):
    """Cancelling the task in QGIS's task manager stops the worker too."""

    def __init__(self, task):
        super().__init__()
        self.task = task

    def isCanceled(self):  # noqa: N802
        return self.task.isCanceled() or super().isCanceled()


def _worker_info(task):
    """Runs in a QgsTask: the worker's `info` command (versions, device, default model)."""
    return worker.run_worker(["info"], _TaskFeedback(task))

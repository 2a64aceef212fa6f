"""The worker's installer and Worker settings in a GUI QGIS without a worker, driven non-modally.

Arguments: plugins folder, work folder, a small requirements file, the real worker Python, screenshot folder.
"""

import json
import os
import sys

import gui_session
from qgis.core import QgsSettings
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtTest import QTest
from qgis.PyQt.QtWidgets import QPushButton

plugins, work, requirements, real_worker, shots = sys.argv[1:6]
app, iface = gui_session.start_qgis()
sys.path.insert(0, plugins)
import hirise_ice_patches  # noqa: E402
from hirise_ice_patches.plugin import worker_dialogs  # noqa: E402
from hirise_ice_patches.processing_provider import worker  # noqa: E402

out = {}
iface.window.resize(1000, 600)
iface.window.show()
plugin = hirise_ice_patches.classFactory(iface)
plugin.initGui()
app.processEvents()

# First use: no worker anywhere, so a message with a button offers the installer.
offers = [b for b in iface.bar.findChildren(QPushButton) if b.objectName() == "hiriseice_install_worker"]
out["offer_buttons"] = len(offers)
out["offer_text"] = iface.bar.currentItem().text() if iface.bar.currentItem() else None
offers[0].click()
app.processEvents()
out["installer_opened"] = plugin.installer is not None and plugin.installer.isVisible()
out["installer_bases"] = [plugin.installer.base_box.itemText(i) for i in range(plugin.installer.base_box.count())]
out["installer_folder"] = plugin.installer.folder
plugin.installer.close()


def run(installer, base, folder, seconds=300):
    installer.base_box.setEditText(base)
    installer.folder_edit.setText(folder)
    values = []
    installer.progress.valueChanged.connect(values.append)
    installer.install_button.click()
    busy = {"stop_enabled": installer.stop_button.isEnabled(), "install_enabled": installer.install_button.isEnabled()}
    finished = gui_session.wait_until(app, lambda: installer.succeeded is not None, seconds)
    installer.progress.valueChanged.disconnect(values.append)
    return {"finished": finished, "succeeded": installer.succeeded, "message": installer.message, "progress": values, "log": installer.log.toPlainText(),
            "busy": busy, "idle_install_enabled": installer.install_button.isEnabled()}


# A real install from Debian's Python into a new venv, with a small requirements file: the check then
# finds no TensorFlow, says so, and the setting is left alone.
installer = worker_dialogs.WorkerInstaller(iface.window, requirements=requirements)
installer.show()
venv = os.path.join(work, "worker-venv")
out["install"] = run(installer, "/usr/bin/python3", venv)
out["setting_after_failed_check"] = QgsSettings().value(worker.SETTINGS_KEY, None)
gui_session.save_grab(installer, shots, "installer.png")
# Reinstall into the same folder starts afresh (venv --clear).
out["reinstall"] = run(installer, "/usr/bin/python3", venv)
# A folder with other files in it is refused before anything runs.
crowded = os.path.join(work, "crowded")
os.makedirs(crowded)
open(os.path.join(crowded, "notes.txt"), "w").close()
out["crowded"] = run(installer, "/usr/bin/python3", crowded)
out["crowded_files"] = sorted(os.listdir(crowded))
# Something that is not a Python.
out["not_python"] = run(installer, "/bin/true", os.path.join(work, "never"))
out["never_made"] = os.path.exists(os.path.join(work, "never"))
installer.close()

# Worker settings: Test the real worker, a missing path, Save, Reset and Reinstall.
dialog = plugin.worker_settings()
app.processEvents()
out["settings_visible"] = dialog.isVisible()
dialog.path_edit.setText(real_worker)
dialog.test_button.click()
out["test_button_busy"] = not dialog.test_button.isEnabled()
out["test_finished"] = gui_session.wait_until(app, lambda: dialog.check is None, 240)
out["test_real"] = dialog.result.toPlainText()
gui_session.save_grab(dialog, shots, "worker_settings.png")
dialog.path_edit.setText(os.path.join(work, "no", "python"))
dialog.test_button.click()
out["test_missing"] = dialog.result.toPlainText()
dialog.path_edit.setText(real_worker)
# Enter in the path saves it: it had "clicked" Browse…, the first button after the field, and nothing was saved
others = [dialog.browse_button, dialog.test_button, dialog.reset_button, dialog.reinstall_button]
dialog.path_edit.setFocus()
app.processEvents()
out["enter_saves"] = dialog.save_button.isDefault() and not any(button.isDefault() for button in others)
if out["enter_saves"]:  # else Enter would open Browse's file dialog, which waits for ever here
    QTest.keyClick(dialog.path_edit, Qt.Key.Key_Return)
    app.processEvents()
out["saved_setting"] = QgsSettings().value(worker.SETTINGS_KEY, None)
out["in_use_after_save"] = dialog.in_use.text()
out["located_after_save"] = worker.locate_worker()
# Enter on a button reached with Tab presses that button, as Space does: it had pressed Save, the default, whatever had the focus
dialog.reset_button.setFocus()
app.processEvents()
QTest.keyClick(dialog.reset_button, Qt.Key.Key_Return)
app.processEvents()
out["setting_after_reset"] = QgsSettings().value(worker.SETTINGS_KEY, None)
out["field_after_reset"] = dialog.path_edit.text()
out["in_use_after_reset"] = dialog.in_use.text()
dialog.reinstall_button.click()
app.processEvents()
out["reinstall_opens_installer"] = plugin.installer is not None and plugin.installer.isVisible()
plugin.unload()
print("RESULT " + json.dumps(out))
sys.stdout.flush()
app.exitQgis()

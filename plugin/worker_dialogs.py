"""The worker's dialogs: the installer (venv, pinned pip packages, a check) and Worker settings.

Every command runs in a QProcess, so QGIS stays responsive while pip downloads TensorFlow. Only the
GUI plugin opens these dialogs; Processing algorithms never do (qgis_process would wait on them).
"""

import os
import platform
from typing import Callable, Dict, List, Optional

from qgis.core import QgsApplication, QgsProcessingException, QgsSettings
from qgis.PyQt.QtCore import QObject, QProcess, QProcessEnvironment, Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QComboBox, QDialog, QFileDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QPlainTextEdit, QProgressBar, QPushButton, QVBoxLayout,
)

from . import worker_setup

try:
    from ..model import modelfile
    from ..processing_provider import worker
except ImportError:  # plugin imported as a top-level package
    from model import modelfile
    from processing_provider import worker

TITLE = "HiRISE Ice Patches"
REQUIREMENTS = os.path.join(worker.PLUGIN_FOLDER, "requirements-worker.txt")
CHECK_ARGUMENTS = ["-m", "model", "--jsonl", "info"]


def default_install_folder() -> str:
    """Outside the plugin folder, which a plugin update replaces: in the QGIS profile, or on Windows in
    %LOCALAPPDATA%, whose path is short enough for TensorFlow's deepest files (the profile's is not,
    for a user name of 8 letters or more)."""
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        return os.path.join(os.environ["LOCALAPPDATA"], "hiriseice-worker")
    return os.path.join(QgsApplication.qgisSettingsDirPath(), "hiriseice-worker")


def windows_long_paths_enabled() -> bool:
    try:
        import winreg

        with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, r"SYSTEM\CurrentControlSet\Control\FileSystem") as key:
            return bool(winreg.QueryValueEx(key, "LongPathsEnabled")[0])
    except (ImportError, OSError):
        return False


def clean_environment(for_worker: bool) -> Dict[str, str]:
    """The worker's environment (engine on PYTHONPATH), or for venv and pip the same without it."""
    environment = worker.worker_environment()
    if not for_worker:
        environment.pop("PYTHONPATH", None)
    return environment


def describe_worker(info: dict) -> str:
    lines = [
        f"Worker Python: {info.get('executable')} (Python {info.get('python')})",
        f"Engine {info.get('engine')}, TensorFlow {info.get('tensorflow')}, Keras {info.get('keras')}, NumPy {info.get('numpy')}, GDAL {info.get('gdal')}, "
        f"ONNX Runtime {info.get('onnxruntime') or 'not installed (Keras scores)'}",
        f"Compute device: {info.get('device')}",
    ]
    model = info.get("model") or {}
    if model:
        lines.append(f"Default model: {modelfile.describe(model)}")
    return "\n".join(lines)


def save_worker_python(python: str) -> None:
    """The setting names the worker Python; the plugin's own venv needs no setting."""
    settings = QgsSettings()
    if not python or os.path.normcase(os.path.abspath(python)) == os.path.normcase(worker.default_worker_python()):
        settings.remove(worker.SETTINGS_KEY)
    else:
        settings.setValue(worker.SETTINGS_KEY, python)


class LineProcess(QObject):
    """One command in a QProcess, stdout and stderr merged: `line` for each line it prints,
    `finished(ok, output)` at its end (ok: exit status 0; output: all it printed)."""

    line = pyqtSignal(str)
    finished = pyqtSignal(bool, str)

    def __init__(self, program: str, arguments: List[str], environment: Dict[str, str], parent=None):
        super().__init__(parent)
        self.process = QProcess(self)
        self.process.setProgram(program)
        self.process.setArguments(arguments)
        self.process.setWorkingDirectory(worker.PLUGIN_FOLDER)
        qt_environment = QProcessEnvironment()
        for name, value in environment.items():
            qt_environment.insert(name, value)
        self.process.setProcessEnvironment(qt_environment)
        self.process.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
        self.process.readyReadStandardOutput.connect(self._read)
        self.process.finished.connect(self._finished)
        self.process.errorOccurred.connect(self._failed_to_start)
        self.lines: List[str] = []
        self._partial = ""

    def start(self):
        self.process.start()

    def stop(self):
        if self.process.state() != QProcess.ProcessState.NotRunning:
            self.process.kill()
            self.process.waitForFinished(3000)

    def _read(self):
        text = self._partial + bytes(self.process.readAllStandardOutput()).decode("utf-8", "replace")
        *complete, self._partial = text.replace("\r", "\n").split("\n")
        for line in complete:
            if line.strip():
                self.lines.append(line)
                self.line.emit(line)

    def _finished(self, exit_code, exit_status):
        self._read()
        if self._partial.strip():
            self.lines.append(self._partial)
            self.line.emit(self._partial)
        self._partial = ""
        self.finished.emit(exit_status == QProcess.ExitStatus.NormalExit and exit_code == 0, "\n".join(self.lines))

    def _failed_to_start(self, error):
        if error == QProcess.ProcessError.FailedToStart:
            message = f"{self.process.program()} cannot be started ({self.process.errorString()})."
            self.lines.append(message)
            self.line.emit(message)
            self.finished.emit(False, "\n".join(self.lines))


def worker_check(python: str, parent=None) -> LineProcess:
    """`python -m model --jsonl info` for the given Python (not started): TensorFlow, Keras, GDAL and the engine import."""
    return LineProcess(python, CHECK_ARGUMENTS, clean_environment(for_worker=True), parent)


def check_outcome(python: str, ok: bool, output: str):
    """(info, None) for a working worker, else (None, what is wrong)."""
    info, error = worker_setup.worker_answer(output)
    if info is not None and ok and info.get("tensorflow"):
        return info, None
    tail = "\n".join(output.splitlines()[-12:]) or "(it printed nothing)"
    return None, error or f"{python} is not a working worker. Its last lines:\n{tail}"


class WorkerInstaller(QDialog):
    """Makes the worker venv: checks the chosen Python, makes a venv (--system-site-packages, for its
    GDAL), pip installs the pinned requirements, checks the worker, and saves it as the worker Python."""

    installed = pyqtSignal(str)
    STEPS = {"probe": (0.0, 0.02), "venv": (0.02, 0.1), "pip": (0.1, 0.9), "check": (0.9, 1.0)}

    def __init__(self, parent=None, requirements: str = REQUIREMENTS, folder: Optional[str] = None, base_pythons: Optional[List[worker_setup.BasePython]] = None):
        super().__init__(parent)
        self.setObjectName("HiriseIceWorkerInstaller")
        self.setWindowTitle(f"{TITLE}: install the worker")
        self.requirements = requirements
        self.current: Optional[LineProcess] = None
        self.step = ""
        self.succeeded: Optional[bool] = None
        self.message = ""

        intro = QLabel(
            "The neural network runs in a separate Python with TensorFlow 2.21 (the worker). This makes a virtual "
            "environment from a Python on this computer and installs the pinned packages into it (about 700 MB of "
            "downloads), then checks that it works. QGIS stays usable meanwhile."
        )
        intro.setWordWrap(True)
        self.base_box = QComboBox()
        self.base_box.setEditable(True)
        for base in worker_setup.base_python_candidates() if base_pythons is None else base_pythons:
            self.base_box.addItem(base.path)
            self.base_box.setItemData(self.base_box.count() - 1, base.origin, Qt.ItemDataRole.ToolTipRole)
        base_row = QHBoxLayout()
        base_row.addWidget(self.base_box, 1)
        base_row.addWidget(self._button("Browse…", self._browse_base))
        self.folder_edit = QLineEdit(folder or default_install_folder())
        folder_row = QHBoxLayout()
        folder_row.addWidget(self.folder_edit, 1)
        folder_row.addWidget(self._button("Browse…", self._browse_folder))
        form = QFormLayout()
        form.addRow("Make it from", base_row)
        form.addRow("Into the folder", folder_row)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setFormat("%p%")
        self.status = QLabel("Choose a Python (QGIS's own has GDAL) and press Install.")
        self.status.setWordWrap(True)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(5000)
        self.install_button = self._button("Install", self.install)
        self.stop_button = self._button("Stop", self.stop)
        self.stop_button.setEnabled(False)
        self.close_button = self._button("Close", self.close)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        for button in (self.install_button, self.stop_button, self.close_button):
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(form)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.log, 1)
        layout.addLayout(buttons)
        self.resize(760, 560)

    def _button(self, text: str, slot: Callable) -> QPushButton:
        button = QPushButton(text)
        button.clicked.connect(lambda checked=False: slot())
        return button

    def _browse_base(self):
        path, _ = QFileDialog.getOpenFileName(self, f"A Python {'.'.join(map(str, worker_setup.OLDEST_PYTHON))} to {'.'.join(map(str, worker_setup.NEWEST_PYTHON))} (with GDAL) to make the worker from")
        if path:
            self.base_box.setEditText(path)

    def _browse_folder(self):
        path = QFileDialog.getExistingDirectory(self, "Folder for the worker's environment", os.path.dirname(self.folder_edit.text()))
        if path:
            self.folder_edit.setText(path)

    # --- the steps -------------------------------------------------------------------------------

    @property
    def base_python(self) -> str:
        return self.base_box.currentText().strip()

    @property
    def folder(self) -> str:
        return os.path.abspath(os.path.expanduser(self.folder_edit.text().strip()))

    @property
    def new_python(self) -> str:
        return worker_setup.venv_python(self.folder)

    def install(self):
        self.succeeded = None
        self.log.clear()
        self._set_running(True)
        self._run("probe", f"Checking {self.base_python}", self.base_python, ["-c", worker_setup.PROBE], False, self._probed)

    def stop(self):
        if self.current is not None:
            self.current.finished.disconnect()
            self.current.stop()
            self.current = None
            self._fail(f"Stopped during '{self.step}'. Press Install to start again; the folder is reused.")

    def closeEvent(self, event):  # noqa: N802 (Qt's name)
        self.stop()
        super().closeEvent(event)

    def _run(self, step: str, title: str, program: str, arguments: List[str], for_worker: bool, then: Callable[[bool, str], None]):
        self.step = step
        self._set_fraction(0.0)
        self.status.setText(title + "…")
        shown = " ".join("<probe script>" if "\n" in argument else argument for argument in arguments)
        self.log.appendPlainText(f"$ {program} {shown}")
        self.current = LineProcess(program, arguments, clean_environment(for_worker), self)
        self.current.line.connect(self.log.appendPlainText)
        self.current.finished.connect(lambda ok, output: self._step_done(then, ok, output))
        self.current.start()

    def _step_done(self, then, ok: bool, output: str):
        self.current = None
        then(ok, output)

    def _set_fraction(self, fraction: float):
        start, end = self.STEPS[self.step]
        self.progress.setValue(round(1000 * (start + (end - start) * fraction)))

    def _probed(self, ok: bool, output: str):
        answer = worker_setup.parse_probe(output) if ok else None
        if answer is None:
            return self._fail(f"{self.base_python} does not run as a Python. Choose another one.")
        problem = worker_setup.probe_problem(answer)
        if problem:
            return self._fail(problem)
        self.log.appendPlainText(f"Python {'.'.join(map(str, answer['version']))}, GDAL {answer['gdal']}")
        self.machine, self.macos = answer.get("machine") or platform.machine(), answer.get("macos") or ""
        folder = self.folder
        if os.name == "nt":
            problem = worker_setup.windows_path_problem(os.path.abspath(folder), windows_long_paths_enabled())
            if problem:
                return self._fail(problem)
        if os.path.isdir(folder) and os.listdir(folder) and not os.path.isfile(os.path.join(folder, "pyvenv.cfg")):
            return self._fail(f"{folder} holds other files. Choose an empty or new folder for the worker.")
        clear = ["--clear"] if os.path.isfile(os.path.join(folder, "pyvenv.cfg")) else []  # Reinstall starts afresh
        if clear:
            worker.close_warm_workers("the worker is being reinstalled")  # a warm worker running from this venv holds its files (Windows locks them)
        self._run("venv", f"Making the virtual environment {folder}", self.base_python, ["-m", "venv", "--system-site-packages"] + clear + [folder], False, self._venv_made)

    def _venv_made(self, ok: bool, output: str):
        if not ok or not os.path.isfile(self.new_python):
            return self._fail(f"Python could not make the virtual environment {self.folder}: see the log.")
        # until the check passes this venv is no worker (worker.unfinished_install), so a failed pip leaves none half-made in use
        open(os.path.join(self.folder, worker.INSTALLING_MARKER), "w").close()
        with open(self.requirements, encoding="utf-8") as handle:
            text = worker_setup.requirements_for_machine(handle.read(), machine=self.machine, macos=self.macos)
        pinned = os.path.join(self.folder, "hiriseice-requirements.txt")
        with open(pinned, "w", encoding="utf-8") as handle:
            handle.write(text)
        progress = worker_setup.PipProgress(worker_setup.requirement_names(text))
        arguments = ["-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--progress-bar", "off", "-r", pinned]
        self._run("pip", "Installing the pinned packages (TensorFlow is large: minutes)", self.new_python, arguments, False, self._pip_done)
        self.current.line.connect(lambda line: self._set_fraction(progress.feed(line)))

    def _pip_done(self, ok: bool, output: str):
        if not ok:
            return self._fail("pip could not install the packages: see the end of the log (network, proxy or disk space?).")
        self._set_fraction(1.0)
        self._run("check", "Checking the new worker (starting TensorFlow takes a few seconds)", self.new_python, CHECK_ARGUMENTS, True, self._checked)

    def _checked(self, ok: bool, output: str):
        info, problem = check_outcome(self.new_python, ok, output)
        if info is None:
            return self._fail(f"The new environment does not work as the worker: {problem}")
        self._set_fraction(1.0)
        os.remove(os.path.join(self.folder, worker.INSTALLING_MARKER))
        save_worker_python(self.new_python)
        self.succeeded = True
        self.message = f"The worker is installed and set: {self.new_python}\n{describe_worker(info)}"
        self.status.setText(self.message)
        self.log.appendPlainText(self.message)
        self._set_running(False)
        self.installed.emit(self.new_python)

    def _fail(self, message: str):
        self.succeeded = False
        self.message = message
        self.status.setText(message)
        self.log.appendPlainText(message)
        self._set_running(False)

    def _set_running(self, running: bool):
        self.install_button.setEnabled(not running)
        self.stop_button.setEnabled(running)
        self.base_box.setEnabled(not running)
        self.folder_edit.setEnabled(not running)


class WorkerSettingsDialog(QDialog):
    """The worker Python's path with Browse, Test (the worker check), Reset (the default) and Reinstall."""

    def __init__(self, parent=None, open_installer: Optional[Callable[[], None]] = None):
        super().__init__(parent)
        self.setObjectName("HiriseIceWorkerSettings")
        self.setWindowTitle(f"{TITLE}: worker settings")
        self.open_installer = open_installer
        self.check: Optional[LineProcess] = None
        self.path_edit = QLineEdit(str(QgsSettings().value(worker.SETTINGS_KEY, "") or ""))
        self.path_edit.setPlaceholderText(f"default: {worker.default_worker_python()}")
        path_row = QHBoxLayout()
        path_row.addWidget(self.path_edit, 1)
        self.browse_button = self._button("Browse…", self.browse, path_row)
        self.in_use = QLabel()
        self.in_use.setWordWrap(True)
        self.result = QPlainTextEdit()
        self.result.setReadOnly(True)
        self.result.setPlaceholderText("Test starts the worker and shows its TensorFlow, Keras and GDAL versions.")
        buttons = QHBoxLayout()
        self.test_button = self._button("Test", self.test, buttons)
        self.reset_button = self._button("Reset", self.reset, buttons)
        self.reinstall_button = self._button("Reinstall…", self.reinstall, buttons)
        buttons.addStretch(1)
        self.save_button = self._button("Save", self.save, buttons)
        self.save_button.setDefault(True)
        self._button("Close", self.close, buttons)
        form = QFormLayout()
        form.addRow("Worker Python", path_row)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.in_use)
        layout.addWidget(self.result, 1)
        layout.addLayout(buttons)
        self.resize(720, 340)
        self.show_in_use()

    def _button(self, text: str, slot: Callable, row) -> QPushButton:
        button = QPushButton(text)
        button.clicked.connect(lambda checked=False: slot())
        row.addWidget(button)
        return button

    @property
    def python(self) -> str:
        return os.path.expanduser(self.path_edit.text().strip()) or worker.default_worker_python()

    def show_in_use(self):
        try:
            text = f"In use now: {worker.locate_worker()}"
        except QgsProcessingException as exc:  # names the path at fault: the environment variable's may not be this setting's
            text = f"In use now: none. {exc}"
        if os.environ.get(worker.ENV_VAR):
            text += f"\nThe environment variable {worker.ENV_VAR} takes precedence over this setting."
        self.in_use.setText(text)

    def browse(self):
        path, _ = QFileDialog.getOpenFileName(self, "Python of the worker (with TensorFlow 2.21)", os.path.dirname(self.python))
        if path:
            self.path_edit.setText(path)

    def test(self):
        if self.check is not None:
            return
        python = self.python
        if not os.path.isfile(python):
            self.result.setPlainText(f"{python} does not exist. Browse to a worker Python, or Reinstall.")
            return
        self.result.setPlainText(f"Starting {python} -m model info (TensorFlow takes a few seconds)…")
        self.test_button.setEnabled(False)
        self.check = worker_check(python, self)
        self.check.finished.connect(lambda ok, output: self._tested(python, ok, output))
        self.check.start()

    def _tested(self, python: str, ok: bool, output: str):
        self.check = None
        self.test_button.setEnabled(True)
        info, problem = check_outcome(python, ok, output)
        self.result.setPlainText(f"Works.\n{describe_worker(info)}" if info is not None else f"Does not work: {problem}")

    def reset(self):
        self.path_edit.clear()
        save_worker_python("")
        self.show_in_use()
        self.result.setPlainText(f"Reset: the worker is looked for at {worker.default_worker_python()} (the plugin's own .venv).")

    def save(self):
        save_worker_python(self.path_edit.text().strip())
        self.show_in_use()
        self.result.setPlainText(f"Saved. {self.in_use.text()}")

    def reinstall(self):
        if self.open_installer is not None:
            self.open_installer()

    def closeEvent(self, event):  # noqa: N802 (Qt's name)
        if self.check is not None:
            self.check.stop()
        super().closeEvent(event)

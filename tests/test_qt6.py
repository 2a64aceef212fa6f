"""QGIS 3.22 to 4.x: no Qt5-only spellings in the code, and what does not need QGIS works under PyQt6.

QGIS 4 runs on Qt6 and PyQt6, where enums are scoped (Qt.AlignmentFlag.AlignLeft, not Qt.AlignLeft),
exec_() is gone, QVariant has no type constants, QRegExp and QtWebKit do not exist and QAction lives
in QtGui. QGIS ships scripts/pyqt5_to_pyqt6/pyqt5_to_pyqt6.py to rewrite plugins; these tests hold
the code to what that script would leave unchanged, from both sides:

- under this QGIS (3.22, PyQt5), every ``Name.member`` whose Name is a class imported from qgis.*
  is looked up: an enum member reached without its enum's name is an unscoped enum (the script's
  rule, by introspection, for Qt's classes and QGIS's alike), plus a list of textual rules;
- in a throwaway venv with PyQt6 from PyPI, every name imported from qgis.PyQt and every attribute
  chain on it (Qt.AlignmentFlag.AlignLeft, QEvent.Type.DeferredDelete, QVariant.Int, ...) must exist
  in PyQt6, every .py file parses, and every module of model/ imports with qgis and PyQt5 blocked.

A line may keep a Qt5-only spelling behind a version check when it carries the comment
``# qt5-spelling-ok: <why>`` (QGIS 3.22's QgsField takes only QVariant types, for example).
"""

import ast
import io
import json
import os
import re
import subprocess
import sys
import tokenize
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

import helpers

REPO = helpers.REPO_ROOT
# tests/ run against this machine's QGIS (3.22) and are not shipped in the plugin ZIP: outside the scan.
SKIPPED_FOLDERS = {".venv", "build", ".git", "__pycache__", ".pytest_cache", "demo-output", "tests"}
PRAGMA = "qt5-spelling-ok:"
VENV = REPO / "build" / "pyqt6-venv"
PYQT6_REQUIREMENT = "PyQt6>=6.5"

# Lines owned by other work in progress, each (path, text found on the line, rule); the test fails
# when one of them is fixed (remove it here) or when anything else is found. Keep this empty.
PENDING: List[Tuple[str, str, str]] = []

QVARIANT_TYPES = ("Invalid|Bool|Int|UInt|LongLong|ULongLong|Double|Char|Map|List|String|StringList|ByteArray|BitArray|Date|Time|"
                  "DateTime|Url|Locale|Rect|RectF|Size|SizeF|Line|LineF|Point|PointF|RegExp|RegularExpression|Hash|EasingCurve|Uuid|"
                  "Font|Pixmap|Brush|Color|Palette|Image|Polygon|Region|Bitmap|Cursor|KeySequence|Pen|TextLength|TextFormat|Transform|"
                  "Icon|SizePolicy|UserType")

# (rule, pattern on code without strings and comments, what to write instead)
TEXT_RULES: List[Tuple[str, str, str]] = [
    ("exec_", r"\bexec_\s*\(|\bdef\s+exec_\b", "exec()"),
    ("PyQt5 import", r"^\s*(from|import)\s+PyQt5\b", "import from qgis.PyQt"),
    ("PyQt6 import", r"^\s*(from|import)\s+PyQt6\b", "import from qgis.PyQt"),
    ("bare sip import", r"^\s*(import\s+sip\b|from\s+sip\s+import)", "from qgis.PyQt import sip"),
    ("qgis.PyQt.Qt module", r"\bqgis\.PyQt\.Qt\b", "qgis.PyQt.QtCore, QtGui or QtWidgets"),
    ("QRegExp", r"\bQRegExp(Validator)?\b", "QRegularExpression (QRegularExpressionValidator)"),
    ("qApp", r"\bqApp\b", "QApplication.instance()"),
    ("QDesktopWidget", r"\bQDesktopWidget\b|\.desktop\(\s*\)", "QScreen (QApplication.primaryScreen())"),
    ("QtWebKit", r"\bQtWebKit(Widgets)?\b|\bQWeb(View|Page|Settings)\b", "QTextBrowser or the system browser"),
    ("QVariant.Type", r"\bQVariant\.Type\b", "QMetaType.Type (QGIS >= 3.38)"),
    ("QVariant type constant", rf"\bQVariant\.({QVARIANT_TYPES})\b", "QMetaType.Type.* (QGIS >= 3.38), behind a version check"),
    ("QVariant() as NULL", r"\bQVariant\(\s*\)", "qgis.core.NULL"),
    ("activated[str]", r"\.activated\[\s*str\s*\]", "textActivated"),
    ("QFontMetrics.width", r"fontMetrics\(\s*\)\.width\(|\bQFontMetrics(F)?\([^)]*\)\.width\(", "horizontalAdvance()"),
    ("removed Qt enum", r"\bQt\.(MidButton|TextColorRole|BackgroundColorRole)\b", "Qt.MouseButton.MiddleButton, Qt.ItemDataRole.ForegroundRole/BackgroundRole"),
    ("compiled resources", r"\bresources_rc\b", "icons and .ui files loaded by path"),
    ("unscoped processing flag", r"(?<!\.Flag)\.Flag(Optional|Advanced|Hidden|IsModelOutput)\b", ".Flag.FlagOptional (QgsProcessingParameterDefinition.Flag.*)"),
]


def python_files() -> List[Path]:
    files = sorted(p for p in REPO.rglob("*.py") if not SKIPPED_FOLDERS.intersection(p.relative_to(REPO).parts))
    assert len(files) > 20, f"only {len(files)} Python files under {REPO}: the scan would pass vacuously"
    return files


def code_lines(source: str) -> Dict[int, str]:
    """{line number: the line's code, strings and comments left out}; lines carrying the pragma are dropped."""
    lines: Dict[int, List[str]] = {}
    waived = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            if PRAGMA in token.string:
                waived.add(token.start[0])
            continue
        text = "''" if token.type == tokenize.STRING else token.string
        lines.setdefault(token.start[0], []).append(text)
    return {number: " ".join(parts) for number, parts in lines.items() if number not in waived}


def waived_lines(source: str) -> set:
    return {token.start[0] for token in tokenize.generate_tokens(io.StringIO(source).readline) if token.type == tokenize.COMMENT and PRAGMA in token.string}


def text_findings(source: str) -> Iterator[Tuple[int, str, str]]:
    """(line, rule, offending text) for TEXT_RULES."""
    for number, line in sorted(code_lines(source).items()):
        # tokens are joined with spaces: undo it around dots, brackets and calls for the patterns
        line = re.sub(r"\s*([.(\[\]])\s*", r"\1", line)
        for rule, pattern, _ in TEXT_RULES:
            match = re.search(pattern, line)
            if match:
                yield number, rule, match.group(0).strip()


# --- unscoped enums, by introspection under this QGIS (as the pyqt5_to_pyqt6 script does under QGIS 4) ---


def _is_enum_member(value) -> bool:
    import enum

    return isinstance(value, enum.Enum) or type(type(value)).__name__ in ("enumtype", "EnumType", "EnumMeta")


def imported_qgis_names(tree: ast.AST) -> Dict[str, object]:
    """{local name: object} for every `from qgis.X import Name` anywhere in the file that resolves here."""
    import importlib

    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.split(".")[0] == "qgis":
            try:
                module = importlib.import_module(node.module)
            except ImportError:
                continue
            for alias in node.names:
                if hasattr(module, alias.name):
                    names[alias.asname or alias.name] = getattr(module, alias.name)
    return names


def enum_findings(source: str, filename: str = "<source>") -> Iterator[Tuple[int, str, str]]:
    """(line, 'unscoped enum', 'Class.Member -> Class.Enum.Member') for each enum member reached without its enum."""
    tree = ast.parse(source, filename=filename)
    names = imported_qgis_names(tree)
    waived = waived_lines(source)
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in names):
            continue
        owner = names[node.value.id]
        if not isinstance(owner, type) or node.lineno in waived:
            continue
        try:
            value = getattr(owner, node.attr)
        except AttributeError:
            continue
        if isinstance(value, type) or not _is_enum_member(value) or type(value) is owner:
            continue
        yield node.lineno, "unscoped enum", f"{node.value.id}.{node.attr} -> {_scoped_spelling(owner, node.value.id, node.attr, value)}"


def _scoped_spelling(owner, owner_name: str, attr: str, value) -> str:
    """Class.Enum.member where that exists; else the enum's home in Qgis (QGIS moved many there)."""
    from qgis.core import Qgis

    enum_name = type(value).__name__
    if hasattr(getattr(owner, enum_name, None), attr):
        return f"{owner_name}.{enum_name}.{attr}"
    name = getattr(value, "name", attr)
    if getattr(Qgis, enum_name, None) is type(value) and hasattr(type(value), name):
        return f"Qgis.{enum_name}.{name}"
    return f"{owner_name}.{enum_name}.{attr} (check it exists)"


def all_findings() -> List[Tuple[str, int, str, str]]:
    found = []
    for path in python_files():
        source = path.read_text(encoding="utf-8")
        relative = path.relative_to(REPO).as_posix()
        for number, rule, text in list(text_findings(source)) + list(enum_findings(source, relative)):
            found.append((relative, number, rule, text))
    return found


@pytest.fixture(scope="module")
def qgis_classes():
    try:
        import qgis.core  # noqa: F401
        import qgis.PyQt.QtWidgets  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"QGIS's Python bindings are not importable ({exc}): the enum rule looks QGIS's classes up")


# Every rule must fire on its own example: the scan cannot pass because a rule is dead.
QT5_EXAMPLES = {
    "exec_": "dialog.exec_()\n",
    "PyQt5 import": "from PyQt5.QtCore import Qt\n",
    "PyQt6 import": "import PyQt6.QtCore\n",
    "bare sip import": "import sip\n",
    "qgis.PyQt.Qt module": "from qgis.PyQt.Qt import Qt\n",
    "QRegExp": "from qgis.PyQt.QtCore import QRegExp\n",
    "qApp": "from qgis.PyQt.QtWidgets import qApp\nqApp.processEvents()\n",
    "QDesktopWidget": "width = QApplication.desktop().width()\n",
    "QtWebKit": "from qgis.PyQt.QtWebKitWidgets import QWebView\n",
    "QVariant.Type": "def f(kind: QVariant.Type): pass\n",
    "QVariant type constant": "field = QgsField('n', QVariant.Int)\n",
    "QVariant() as NULL": "value = QVariant()\n",
    "activated[str]": "combo.activated[str].connect(slot)\n",
    "QFontMetrics.width": "w = label.fontMetrics().width('x')\n",
    "removed Qt enum": "button = Qt.MidButton\n",
    "compiled resources": "from . import resources_rc\n",
    "unscoped processing flag": "parameter.setFlags(parameter.flags() | self.FlagOptional)\n",
}


def test_every_text_rule_fires_on_its_example():
    assert set(QT5_EXAMPLES) == {rule for rule, _, _ in TEXT_RULES}
    for rule, example in QT5_EXAMPLES.items():
        assert rule in {found_rule for _, found_rule, _ in text_findings(example)}, f"rule '{rule}' missed: {example!r}"


def test_strings_comments_and_scoped_spellings_are_not_findings(qgis_classes):
    source = (
        '"""Docs may say exec_() and Qt.AlignLeft."""\n'
        "from qgis.core import Qgis, QgsProcessingParameterNumber, QgsMapLayerType\n"
        "from qgis.PyQt.QtCore import Qt, QEvent\n"
        "# dialog.exec_() in a comment\n"
        "dialog.exec()\n"
        "a = Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop\n"
        "b = QgsProcessingParameterNumber.Type.Integer\n"
        "c = Qgis.MessageLevel.Warning, QEvent.Type.DeferredDelete, QgsMapLayerType.VectorLayer\n"
        "d = Qgis.QGIS_VERSION_INT, Qt.AlignmentFlag\n"
        "e = QVariant.Int  # qt5-spelling-ok: QGIS < 3.38 branch\n"
    )
    assert list(text_findings(source)) == []
    assert list(enum_findings(source)) == []


def test_unscoped_enums_of_qt_and_qgis_classes_are_found(qgis_classes):
    source = (
        "from qgis.core import Qgis, QgsProcessingParameterNumber, QgsWkbTypes, QgsVectorDataProvider\n"
        "from qgis.PyQt.QtCore import Qt, QEvent\n"
        "from qgis.PyQt.QtWidgets import QMessageBox, QSizePolicy\n"
        "x = (Qt.AlignLeft, QEvent.DeferredDelete, QMessageBox.Yes, QSizePolicy.Expanding)\n"
        "y = (Qgis.Warning, QgsProcessingParameterNumber.Integer, QgsWkbTypes.Polygon, QgsVectorDataProvider.ChangeAttributeValues)\n"
        "from qgis.core import QgsCoordinateTransform\n"
        "z = QgsCoordinateTransform.ReverseTransform\n"
    )
    found = sorted(text for _, _, text in enum_findings(source))
    assert found == sorted([
        "Qt.AlignLeft -> Qt.AlignmentFlag.AlignLeft", "QEvent.DeferredDelete -> QEvent.Type.DeferredDelete",
        "QMessageBox.Yes -> QMessageBox.StandardButton.Yes", "QSizePolicy.Expanding -> QSizePolicy.Policy.Expanding",
        "Qgis.Warning -> Qgis.MessageLevel.Warning", "QgsProcessingParameterNumber.Integer -> QgsProcessingParameterNumber.Type.Integer",
        "QgsWkbTypes.Polygon -> QgsWkbTypes.Type.Polygon", "QgsVectorDataProvider.ChangeAttributeValues -> QgsVectorDataProvider.Capability.ChangeAttributeValues",
        "QgsCoordinateTransform.ReverseTransform -> Qgis.TransformDirection.Reverse",
    ])


def test_no_qt5_only_spellings_in_the_code(qgis_classes):
    found = all_findings()
    pending = [f for f in found if any(f[0] == path and text in f[3] and f[2] == rule for path, text, rule in PENDING)]
    fixed = [p for p in PENDING if not any(f[0] == p[0] and p[1] in f[3] and f[2] == p[2] for f in found)]
    unexpected = [f for f in found if f not in pending]
    assert not unexpected, "Qt5-only spellings (QGIS 4 runs Qt6):\n" + "\n".join(f"{path}:{line}: {rule}: {text}" for path, line, rule, text in unexpected)
    assert not fixed, f"fixed, so remove from PENDING: {fixed}"


# --- PyQt6 from PyPI ---------------------------------------------------------------------------------

NETWORK_TROUBLE = ("Temporary failure in name resolution", "Failed to establish a new connection", "NewConnectionError",
                   "Network is unreachable", "Could not fetch URL", "ConnectTimeoutError", "ProxyError", "No route to host")


def _run(command: List[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["nice", "-n", "19"] + command, capture_output=True, text=True, timeout=timeout, cwd=str(REPO))


@pytest.fixture(scope="module")
def pyqt6_python() -> str:
    """A venv under build/ with PyQt6 from PyPI (made once, then reused); skipped only when PyPI cannot be reached.

    It sees the system's site-packages (numpy, GDAL for model/); qgis and PyQt5, also there, are
    blocked inside every check.
    """
    python = VENV / "bin" / "python"
    if python.exists() and _run([str(python), "-c", "import PyQt6.QtCore"], 60).returncode == 0:
        return str(python)
    made = _run(["/usr/bin/python3", "-m", "venv", "--clear", "--system-site-packages", str(VENV)], 300)
    assert made.returncode == 0, f"could not make {VENV}: {made.stderr[-2000:]}"
    installed = _run([str(python), "-m", "pip", "install", "--disable-pip-version-check", PYQT6_REQUIREMENT], 900)
    if installed.returncode != 0:
        output = installed.stdout + installed.stderr
        if any(sign in output for sign in NETWORK_TROUBLE):
            pytest.skip(f"PyPI is unreachable, so PyQt6 cannot be installed: {output.strip().splitlines()[-1]}")
        pytest.fail(f"pip install {PYQT6_REQUIREMENT} failed:\n{output[-3000:]}")
    return str(python)


CHECKER = r'''
import ast, importlib, importlib.abc, json, sys, traceback

BLOCKED = {"qgis", "PyQt5", "sip", "tensorflow", "keras"}


class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: Qt6 check)", name=name)
        return None


import PyQt6.QtCore, PyQt6.QtGui, PyQt6.QtWidgets  # Qt6 first
sys.meta_path.insert(0, Block())
job = json.load(open(sys.argv[1]))
out = {"pyqt6": PyQt6.QtCore.PYQT_VERSION_STR, "qt": PyQt6.QtCore.QT_VERSION_STR, "unparsable": [], "missing": [], "imported": [], "needs_tensorflow": [], "import_errors": []}

for path in job["files"]:
    try:
        ast.parse(open(path, encoding="utf-8").read(), filename=path)
    except SyntaxError as exc:
        out["unparsable"].append(f"{path}:{exc.lineno}: {exc.msg}")

# What QGIS's qgis.PyQt shims add on top of PyQt6 (python/PyQt/PyQt6/*.py).
SHIM = {"QtCore": {"NULL"}}


def resolve(module, chain):
    if module == "":
        obj = importlib.import_module("PyQt6")
    else:
        obj = importlib.import_module("PyQt6." + module)
    for i, part in enumerate(chain):
        if i == 0 and part in SHIM.get(module, ()):
            return True
        if i == 0 and module == "" and part not in dir(obj):
            try:
                obj = importlib.import_module("PyQt6." + part)
                continue
            except ImportError:
                return False
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


groups = {}
for check in job["names"]:
    ok = resolve(check["module"], check["chain"])
    if check["group"] is None:
        if not ok:
            out["missing"].append(check["where"] + ": " + ".".join(["qgis.PyQt" + ("." + check["module"] if check["module"] else "")] + check["chain"]))
    else:
        groups.setdefault(check["group"], []).append((ok, check))
for group, checks in groups.items():
    if not any(ok for ok, _ in checks):
        out["missing"].append(" or ".join(c["where"] + ": " + ".".join(["qgis.PyQt." + c["module"]] + c["chain"]) for _, c in checks))

sys.path.insert(0, job["repo"])
for name in job["modules"]:
    try:
        importlib.import_module(name)
        out["imported"].append(name)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] in ("tensorflow", "keras"):
            out["needs_tensorflow"].append(name)
        else:
            out["import_errors"].append(f"{name}: {exc}")
    except Exception:
        out["import_errors"].append(f"{name}: {traceback.format_exc(limit=3)}")
print("RESULT " + json.dumps(out))
'''


def pyqt_names(path: Path) -> Iterator[dict]:
    """Each name imported from qgis.PyQt and each attribute chain on it, as {module, chain, where, group}.

    Imports inside one try/except ImportError are alternatives (Qt6's QtGui.QAction, else Qt5's
    QtWidgets.QAction): one of them must resolve. Attribute chains are checked where the name was
    imported outside such a group.
    """
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(path))
    waived = waived_lines(source)
    relative = path.relative_to(REPO).as_posix()
    group_of = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
            h.type is None or any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError", "AttributeError", "Exception") for n in ast.walk(h.type))
            for h in node.handlers
        ):
            for part in node.body + [s for h in node.handlers for s in h.body]:
                if isinstance(part, ast.ImportFrom):
                    group_of[id(part)] = f"{relative}:{node.lineno}"
    bound = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and (node.module == "qgis.PyQt" or node.module.startswith("qgis.PyQt.")):
            module = node.module[len("qgis.PyQt."):] if node.module != "qgis.PyQt" else ""
            group = group_of.get(id(node))
            for alias in node.names:
                yield {"module": module, "chain": [alias.name], "where": f"{relative}:{node.lineno}", "group": f"{group}:{alias.name}" if group else None}
                if group is None:
                    bound[alias.asname or alias.name] = (module, alias.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.lineno not in waived:
            chain, inner = [], node
            while isinstance(inner, ast.Attribute):
                chain.insert(0, inner.attr)
                inner = inner.value
            if isinstance(inner, ast.Name) and inner.id in bound:
                module, name = bound[inner.id]
                yield {"module": module, "chain": [name] + chain, "where": f"{relative}:{node.lineno}", "group": None}


def model_modules() -> List[str]:
    names = []
    for path in sorted((REPO / "model").rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts[-1] != "__main__":
            names.append(".".join(parts))
    return names


def run_checker(python: str, tmp_path: Path, files: List[Path], names: List[dict], modules: List[str]) -> dict:
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"files": [str(f) for f in files], "names": names, "modules": modules, "repo": str(REPO)}), encoding="utf-8")
    script = tmp_path / "check_qt6.py"
    script.write_text(CHECKER, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "QT_API")}
    done = subprocess.run(["nice", "-n", "19", python, str(script), str(job)], capture_output=True, text=True, timeout=600, cwd=str(tmp_path), env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"exit {done.returncode}\nstdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def test_checker_catches_qt5_names_under_pyqt6(pyqt6_python, tmp_path):
    """The PyQt6 check itself: Qt5-only names and unscoped enums fail, scoped ones and try/except fallbacks pass."""
    sample = REPO / "build" / "qt6-sample" / "sample.py"
    sample.parent.mkdir(parents=True, exist_ok=True)
    sample.write_text(
        "from qgis.PyQt.QtCore import Qt, QVariant, QEvent, QRegExp\n"
        "from qgis.PyQt.QtWidgets import QAction\n"
        "try:\n    from qgis.PyQt.QtGui import QAction\nexcept ImportError:\n    from qgis.PyQt.QtWidgets import QAction\n"
        "a = Qt.AlignLeft, Qt.AlignmentFlag.AlignLeft, QEvent.Type.DeferredDelete, QEvent.DeferredDelete, QVariant.Int\n"
        "b = QVariant.Double  # qt5-spelling-ok: QGIS 3.22 branch\n",
        encoding="utf-8",
    )
    try:
        out = run_checker(pyqt6_python, tmp_path, [sample], list(pyqt_names(sample)), [])
    finally:
        sample.unlink()
    missing = sorted(m.split(": ", 1)[1] for m in out["missing"])
    assert missing == sorted([
        "qgis.PyQt.QtCore.QRegExp", "qgis.PyQt.QtWidgets.QAction",
        "qgis.PyQt.QtCore.Qt.AlignLeft", "qgis.PyQt.QtCore.QEvent.DeferredDelete", "qgis.PyQt.QtCore.QVariant.Int",
    ]), out["missing"]


def test_the_code_under_pyqt6(pyqt6_python, tmp_path):
    files = python_files()
    names = [check for path in files for check in pyqt_names(path)]
    assert any(c["chain"][:2] == ["Qt", "AlignmentFlag"] or c["chain"][:1] == ["QIcon"] for c in names), "no qgis.PyQt use found: the check would pass vacuously"
    modules = model_modules()
    out = run_checker(pyqt6_python, tmp_path, files, names, modules)
    assert out["pyqt6"].startswith("6.")
    assert out["unparsable"] == []
    assert out["missing"] == [], "names that PyQt6 lacks:\n" + "\n".join(out["missing"])
    assert out["import_errors"] == [], "model/ modules that do not import without qgis under PyQt6:\n" + "\n".join(out["import_errors"])
    # Only the modules that load TensorFlow at import are left to the worker's venv (DEVELOPERS.md).
    assert set(out["needs_tensorflow"]) <= {"model.network", "model.training", "model.inference", "model.calibration", "model.__main__"}, out["needs_tensorflow"]
    assert {"model.grid", "model.rules", "model.modelfile", "model.protocol", "model.chunking", "model.raster"} <= set(out["imported"])
    assert len(out["imported"]) + len(out["needs_tensorflow"]) == len(modules)

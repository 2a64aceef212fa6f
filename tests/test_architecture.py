"""Architecture guardrails (DEVELOPERS.md): the engine never imports QGIS; what QGIS imports never
loads TensorFlow (it aborts QGIS: libprotobuf clash).

Static checks parse the sources with ast (every import, wherever it sits, and
importlib.import_module / __import__ calls with a literal name); dynamic checks import the
modules in fresh interpreters and look at sys.modules.
"""

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

import helpers

REPO = helpers.REPO_ROOT
MODEL = REPO / "model"

# Modules of model/ that QGIS's Python imports (directly or through processing_provider/engine.py).
QGIS_IMPORTABLE = ["grid", "rules", "modelfile", "chunking", "raster", "preprocess", "errors", "protocol", "labels",
                   "splitting", "calibration", "metrics", "vector", "report"]
QT_ROOTS = {"qgis", "PyQt5", "PyQt6", "PySide2", "PySide6", "sip"}
TF_ROOTS = {"tensorflow", "keras", "tf_keras", "tensorboard"}


def python_files(folder: Path) -> List[Path]:
    files = sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)
    assert files, f"no Python files under {folder}: the guardrail would pass vacuously"
    return files


def imports(path: Path, module_level_only: bool = False) -> Iterator[Tuple[int, str, int]]:
    """(line, dotted name, relative level) for each import in the file; `from x import a` gives x.a.

    module_level_only skips function bodies (run on call, not on import); class bodies and
    module-level if/try blocks run on import, so they count.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if module_level_only and nested:
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield child.lineno, alias.name, 0
            elif isinstance(child, ast.ImportFrom):
                # from x import a, b -> x.a, x.b (a may be a module); from . import a -> a
                prefix = f"{child.module}." if child.module else ""
                for alias in child.names:
                    yield child.lineno, prefix + alias.name, child.level
            elif isinstance(child, ast.Call):
                func = child.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name in ("import_module", "__import__") and child.args and isinstance(child.args[0], ast.Constant) and isinstance(child.args[0].value, str):
                    yield child.lineno, child.args[0].value, 0
            yield from visit(child, nested)

    yield from visit(tree, False)


def root(name: str) -> str:
    return name.split(".")[0]


def test_the_import_scanner_sees_every_kind_of_import(tmp_path):
    """The guardrails below are only as good as this scanner."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os, qgis.core\n"
        "from PyQt5 import QtCore\n"
        "from . import network\n"
        "from .training import run\n"
        "try:\n    import keras\nexcept ImportError:\n    pass\n"
        "class A:\n    import tensorflow as tf\n"
        "def f():\n    import tensorflow\n    importlib.import_module('keras.layers')\n"
        "__import__('tensorboard')\n",
        encoding="utf-8",
    )
    everything = {(name, level) for _, name, level in imports(sample)}
    assert everything == {("os", 0), ("qgis.core", 0), ("PyQt5.QtCore", 0), ("network", 1), ("training.run", 1), ("keras", 0),
                          ("tensorflow", 0), ("keras.layers", 0), ("tensorboard", 0)}
    top = {(name, level) for _, name, level in imports(sample, module_level_only=True)}
    assert top == everything - {("keras.layers", 0)}  # tensorflow stays: the class body imports it too


def test_engine_never_imports_qgis_or_qt():
    violations = [f"{p.relative_to(REPO)}:{line} imports {name}" for p in python_files(MODEL) for line, name, level in imports(p)
                  if level == 0 and root(name) in QT_ROOTS]
    assert not violations, "model/ must stay free of QGIS and Qt (it runs in the worker):\n" + "\n".join(violations)


def test_the_algorithms_never_import_the_gui_glue():
    """processing_provider/ runs in qgis_process, where plugin/ (menus, toolbar, dock) has no place; the styling its
    outputs need sits beside it. It had imported plugin.styling, and plugin imported it back."""
    violations = [f"{p.relative_to(REPO)}:{line} imports {name}" for p in python_files(REPO / "processing_provider") for line, name, level in imports(p)
                  if (level == 0 and root(name) == "plugin") or (level >= 2 and name.split(".")[0] == "plugin")]
    assert not violations, "processing_provider/ may import qgis and model/ only:\n" + "\n".join(violations)


def imports_training_data(name: str, level: int) -> bool:
    parts = name.split(".")
    return parts[:2] == ["model", "trainingdata"] if level == 0 else "trainingdata" in parts


def test_detection_never_imports_the_training_data_generator():
    """DEVELOPERS.md: model/trainingdata is apart from the inference engine. The worker's command line
    (model/__main__.py) alone reaches it, for its demo-scene commands."""
    sources = [p for p in python_files(MODEL) if "trainingdata" not in p.parts and p.name != "__main__.py"]
    sources += python_files(REPO / "processing_provider") + python_files(REPO / "plugin")
    violations = [f"{p.relative_to(REPO)}:{line} imports {'.' * level}{name}" for p in sources for line, name, level in imports(p)
                  if imports_training_data(name, level)]
    assert not violations, "detection imports the training-data generator:\n" + "\n".join(violations)


def engine_module(name: str, level: int, importer: str = "") -> str:
    """The model/ module an import refers to ('' if none): model.x.y, or .x / ..model.x relative ones."""
    parts = name.split(".")
    if level == 0:
        return parts[1] if parts[0] == "model" and len(parts) > 1 and (MODEL / f"{parts[1]}.py").is_file() else ("__init__" if parts == ["model"] else "")
    if importer == "model" and level == 1:  # inside model/: from .x import y, from . import x
        return parts[0] if (MODEL / f"{parts[0]}.py").is_file() else "__init__"
    if parts[0] == "model":  # from ..model import x (from processing_provider/ or plugin/)
        return parts[1] if len(parts) > 1 and (MODEL / f"{parts[1]}.py").is_file() else "__init__"
    return ""


def module_level_engine_imports(module: str) -> List[Tuple[str, str]]:
    """Absolute imports that importing model.<module> runs, following model/'s own imports."""
    seen, found, todo = set(), [], [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = MODEL / f"{name}.py"
        for line, imported, level in imports(path, module_level_only=True):
            inner = engine_module(imported, level, "model")
            if inner:
                todo.append(inner)
            elif level == 0:
                found.append((f"model/{name}.py:{line}", imported))
    return found


def qgis_side_engine_modules() -> List[str]:
    """model/ modules that processing_provider/ and plugin/ import, anywhere in their code."""
    used = set()
    for folder in ("processing_provider", "plugin"):
        for path in python_files(REPO / folder):
            for _, name, level in imports(path):
                module = engine_module(name, level)
                if module and module != "__init__":
                    used.add(module)
    return sorted(used)


def test_the_engine_import_tracer_follows_relative_imports():
    modules = {where.split(":")[0] for where, _ in module_level_engine_imports("labels")}
    # labels -> .chunking -> .raster -> osgeo; .preprocess -> numpy; grid -> dataclasses
    assert {"model/labels.py", "model/chunking.py", "model/raster.py", "model/grid.py", "model/preprocess.py"} <= modules
    assert any(name == "osgeo.gdal" for _, name in module_level_engine_imports("chunking"))
    # from . import calibration, metrics (training.py)
    assert {"model/calibration.py", "model/metrics.py"} <= {where.split(":")[0] for where, _ in module_level_engine_imports("training")}


QGIS_IMPORTED = sorted(set(QGIS_IMPORTABLE) | set(qgis_side_engine_modules()))


@pytest.mark.parametrize("module", QGIS_IMPORTED)
def test_qgis_importable_engine_modules_do_not_import_tensorflow_at_module_level(module):
    assert (MODEL / f"{module}.py").is_file(), f"model/{module}.py is gone: update QGIS_IMPORTABLE"
    violations = [f"{where} imports {name}" for where, name in module_level_engine_imports(module) if root(name) in TF_ROOTS]
    assert not violations, f"model.{module} is imported by QGIS; TensorFlow/Keras must only be imported inside functions:\n" + "\n".join(violations)


@pytest.mark.parametrize("folder", ["processing_provider", "plugin"])
def test_qgis_side_never_imports_tensorflow_anywhere(folder):
    files = python_files(REPO / folder)
    violations = [f"{p.relative_to(REPO)}:{line} imports {name}" for p in files for line, name, level in imports(p)
                  if level == 0 and root(name) in TF_ROOTS]
    assert not violations, f"{folder}/ runs inside QGIS and must never import TensorFlow/Keras:\n" + "\n".join(violations)


REPORT_HEAVY = """print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras", "qgis"))))\n"""
IMPORT_CHECK = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
""" + REPORT_HEAVY


def test_qgis_importable_modules_load_in_qgis_python_without_tensorflow():
    """In Debian's Python (QGIS's): they import at all, and pull in neither TensorFlow nor QGIS."""
    done = subprocess.run([sys.executable, "-c", IMPORT_CHECK] + [f"model.{m}" for m in QGIS_IMPORTED], cwd=str(REPO), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []


def test_qgis_importable_modules_do_not_load_tensorflow_where_it_is_installed(worker_python):
    """The same import in the worker, where TensorFlow is importable: a module-level import would show
    in sys.modules. Control: Keras imported afterwards in the same process is seen."""
    modules = [f"model.{m}" for m in QGIS_IMPORTED]
    code = IMPORT_CHECK + "import keras\n" + REPORT_HEAVY
    done = subprocess.run([worker_python, "-c", code] + modules, cwd=str(REPO), env=helpers.worker_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, "the worker cannot import the engine and Keras (run scripts/install):\n" + done.stderr[-3000:]
    before, after = (json.loads(line) for line in done.stdout.splitlines()[-2:])
    assert before == []
    assert "tensorflow" in after and "keras" in after


def test_the_plugin_package_imports_nothing_heavy_at_module_level():
    """QGIS imports <plugin>/__init__.py for metadata and classFactory: no qgis, no TensorFlow at import."""
    names = {root(name) for _, name, level in imports(REPO / "__init__.py", module_level_only=True) if level == 0}
    assert not names & (QT_ROOTS | TF_ROOTS), names

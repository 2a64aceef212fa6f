"""What the benchmarks run with QGIS's Python share: the worker's Python, QGIS started headless, a sample scene."""

import contextlib
import os
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def worker_python() -> str:
    return os.environ.get("HIRISEICE_WORKER_PYTHON") or os.path.join(REPO, ".venv", "bin", "python")


@contextlib.contextmanager
def qgis_application():
    """QGIS started without a display, its worker the plugin's venv (or HIRISEICE_WORKER_PYTHON)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ["HIRISEICE_WORKER_PYTHON"] = worker_python()
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    try:
        yield app
    finally:
        app.exitQgis()


def sample_scene(path: str, *options: str) -> str:
    """The demo's sample scene (python -m model sample-scene) at path."""
    subprocess.run([worker_python(), "-m", "model", "sample-scene", path, *options], cwd=REPO, check=True, capture_output=True)
    return path

"""HiRISE Ice Patches engine.

Plain Python, no QGIS: raster windows through GDAL, the chunk grid, preprocessing, the
network, training, inference, the image rules and model files. Modules that need
TensorFlow (``network``, ``inference``, ``training``) import it themselves, so the rest
can be used from QGIS's own Python, where TensorFlow must never be loaded.

Command line: ``python -m model --help`` (run from the plugin folder with the worker venv).
"""

__version__ = "0.1.0"

# The worker's Python, oldest and newest: what the pinned TensorFlow 2.21 stack of requirements-worker.txt has
# wheels for (numpy 1.26.4 up to 3.12, 2.2.6 on 3.13; onnxruntime, tornado, importlib_metadata and lazy-importer need 3.11).
WORKER_PYTHONS = ((3, 11), (3, 13))


def worker_pythons_text() -> str:
    """'3.11 to 3.13'."""
    return " to ".join(".".join(str(part) for part in version) for version in WORKER_PYTHONS)

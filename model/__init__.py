"""HiRISE Ice Patches engine.

Plain Python, no QGIS: raster windows through GDAL, the chunk grid, preprocessing, the
network, training, inference, the image rules and model files. Modules that need
TensorFlow (``network``, ``inference``, ``training``) import it themselves, so the rest
can be used from QGIS's own Python, where TensorFlow must never be loaded.

Command line: ``python -m model --help`` (run from the plugin folder with the worker venv).
"""

__version__ = "0.1.0"

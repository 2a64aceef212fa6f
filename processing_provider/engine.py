"""The parts of the engine (model/) that QGIS's own Python may import, and where the plugin lives.

Only modules that never import TensorFlow at import time come through here (TensorFlow inside QGIS aborts
it: see DEVELOPERS.md). Inside QGIS the plugin folder is the package ``hirise_ice_patches``;
tests and scripts may instead put the plugin folder on sys.path and import
``processing_provider`` as a top-level package, hence the fallback.

Engine code that runs in-process is wrapped in ``gdal_exceptions()``: GDAL raises there, as
model/ expects, and returns to QGIS's mode afterwards.
"""

import os

try:
    from ..model import (__version__ as ENGINE_VERSION, catalog, chunking, download, errors, files, gdalstate, georeference, grid, imagechecks, labels, modelfile,
                         network, ode, productindex, products, protocol, raster, rules, schema, survey, surveystore, training, worker_pythons_text)
except ImportError:  # processing_provider imported as a top-level package
    from model import (__version__ as ENGINE_VERSION, catalog, chunking, download, errors, files, gdalstate, georeference, grid, imagechecks, labels,  # noqa: F401
                       modelfile, network, ode, productindex, products, protocol, raster, rules, schema, survey, surveystore, training, worker_pythons_text)

gdal_exceptions = gdalstate.gdal_exceptions

PLUGIN_FOLDER = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ICONS_FOLDER = os.path.join(PLUGIN_FOLDER, "resources", "icons")


def icon_path(name: str) -> str:
    return os.path.join(ICONS_FOLDER, name)

"""The parts of the engine (model/) that QGIS's own Python may import, and where the plugin lives.

Only modules that never import TensorFlow come through here (TensorFlow inside QGIS aborts
it: see DEVELOPERS.md). Inside QGIS the plugin folder is the package ``hirise_ice_patches``;
tests and scripts may instead put the plugin folder on sys.path and import
``processing_provider`` as a top-level package, hence the fallback.

model/raster.py switches GDAL's Python bindings to exceptions when it is imported. In the
QGIS process that switch is global and other plugins may rely on GDAL returning None, so
the previous mode is restored after the import and the engine gets exceptions only while
it runs (``gdal_exceptions``).
"""

import contextlib
import os

from osgeo import gdal

_previous_mode = gdal.GetUseExceptions()
try:
    from ..model import __version__ as ENGINE_VERSION, chunking, errors, grid, modelfile, raster, rules
except ImportError:  # processing_provider imported as a top-level package
    from model import __version__ as ENGINE_VERSION, chunking, errors, grid, modelfile, raster, rules  # noqa: F401
finally:
    if not _previous_mode:
        gdal.DontUseExceptions()

PLUGIN_FOLDER = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ICONS_FOLDER = os.path.join(PLUGIN_FOLDER, "resources", "icons")
STYLES_FOLDER = os.path.join(PLUGIN_FOLDER, "resources", "styles")


def icon_path(name: str) -> str:
    return os.path.join(ICONS_FOLDER, name)


@contextlib.contextmanager
def gdal_exceptions():
    """GDAL raises, as model/ expects, inside this block only."""
    previous = gdal.GetUseExceptions()
    gdal.UseExceptions()
    try:
        yield
    finally:
        if not previous:
            gdal.DontUseExceptions()

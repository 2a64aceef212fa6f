"""Where a QGIS layer's data lies: the file of its source string."""

import os

from qgis.core import QgsProviderRegistry


def source_path(source: str) -> str:
    """The file of a layer's source: a vector source without its "|layername=..." options, as QGIS's OGR provider
    reads it, so a '|' in a folder's or file's own name stays ("/d/a|b/c.gpkg|layername=c" is "/d/a|b/c.gpkg").
    A source that is itself a file or folder is that file (a raster named 'scene|b.tif'); a file inside an archive
    keeps its /vsizip/ address, as GDAL opens it."""
    if os.path.exists(source):
        return source
    registry = QgsProviderRegistry.instance()
    parts = registry.decodeUri("ogr", source)
    return registry.encodeUri("ogr", {key: parts[key] for key in ("path", "vsiPrefix", "vsiSuffix") if key in parts}) or source

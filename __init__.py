"""HiRISE Ice Patches QGIS plugin.

QGIS imports this package and calls classFactory. Nothing at module level imports qgis,
so the worker (``python -m model`` from this folder) can live beside it.
"""


def classFactory(iface):  # noqa: N802 (QGIS's name)
    from .plugin.plugin import IcePatchesPlugin

    return IcePatchesPlugin(iface)

"""GDAL's process-wide settings changed for one block only: whether it raises, where its messages go,
how large its block cache is. Inside QGIS other plugins share the same GDAL, so nothing is switched for good."""

import contextlib
from typing import List

from osgeo import gdal


@contextlib.contextmanager
def gdal_exceptions():
    """GDAL raises inside this block and returns to its previous mode after it.

    The engine expects exceptions, but the mode is global to GDAL's Python bindings, and
    inside QGIS other plugins may rely on GDAL returning None, so nothing switches it for good.
    """
    previous = gdal.GetUseExceptions()
    gdal.UseExceptions()
    try:
        yield
    finally:
        if not previous:
            gdal.DontUseExceptions()


@contextlib.contextmanager
def gdal_returning_none():
    """GDAL returns None on failure inside this block (gdal_exceptions' opposite)."""
    previous = gdal.GetUseExceptions()
    gdal.DontUseExceptions()
    try:
        yield
    finally:
        if previous:
            gdal.UseExceptions()


@contextlib.contextmanager
def block_cache(limit_bytes: int):
    """GDAL's block cache held to ``limit_bytes`` inside this block, unless the user set
    GDAL_CACHEMAX (an explicit choice wins). Yields a line for the log saying which."""
    if gdal.GetConfigOption("GDAL_CACHEMAX"):
        yield f"GDAL block cache: {gdal.GetCacheMax() >> 20} MB (GDAL_CACHEMAX as set)"
        return
    previous = gdal.GetCacheMax()
    gdal.SetCacheMax(int(limit_bytes))
    try:
        yield f"GDAL block cache: {int(limit_bytes) >> 20} MB (a row of chunks; GDAL_CACHEMAX overrides)"
    finally:
        gdal.SetCacheMax(previous)


@contextlib.contextmanager
def gdal_messages():
    """GDAL's warnings and errors in this thread inside the block, collected instead of printed."""
    said: List[str] = []
    gdal.PushErrorHandler(lambda _class, _number, message: said.append(str(message)))
    try:
        yield said
    finally:
        gdal.PopErrorHandler()

"""The image's valid-data footprint (its rotated outline) as a polygon.

Detect used to read the whole image once more, decimated, just for this outline: on a GeoTIFF
without overviews that second pass decodes every block again and took 4.3 s of a 9.3 s detect
(benchmarks/scene.py, half-size RED). The chunk grid already reads every pixel's validity at
the network's scale, so ValidityMosaic collects those masks as they are read and the outline
comes from them; only a grid with gaps between its chunks (stride > chunk) reads the overview.
"""

import math
from typing import Optional

import numpy as np
from osgeo import gdal, ogr, osr

from .gdalstate import gdal_messages
from .grid import ring_wkt, window_ring

# The outline's mask is at most this many pixels on its longer side: finer than a chunk, and
# polygonised in milliseconds.
FOOTPRINT_MAX_SIDE = 512
# The mosaic the reads are pasted into is at most this many pixels on its longer side, so its
# memory stays flat whatever the image's size (a few MB).
MOSAIC_MAX_SIDE = 4 * FOOTPRINT_MAX_SIDE
# Specks of valid data in the no-data border (a lossy product's noise) and pinholes in the image, of at most
# this many mask pixels, join what surrounds them: a real RED's outline had been 142 parts and 35 holes. A real
# part of the image, however small beside the whole, is larger than a speck (a share of the mask had sieved one).
SPECK_PIXELS = 16


def footprint_from_mask(valid: np.ndarray, geotransform, width: int, height: int, crs_wkt: str, pixel: Optional[float] = None) -> str:
    """Polygonise a (decimated) validity mask of a width x height raster, each of its pixels `pixel`
    raster pixels on a side (by default it spans the raster exactly), into a simplified (multi)polygon
    in map coordinates, without specks and pinholes (SPECK_PIXELS), within the raster (a mask whose last pixels reach past it is cut at its edge);
    '' when nothing is valid."""
    out_h, out_w = valid.shape
    g = geotransform
    sx, sy = (pixel, pixel) if pixel else (width / out_w, height / out_h)
    small_gt = (g[0], g[1] * sx, g[2] * sy, g[3], g[4] * sx, g[5] * sy)
    mem = gdal.GetDriverByName("MEM").Create("", out_w, out_h, 1, gdal.GDT_Byte)
    mem.SetGeoTransform(small_gt)
    if crs_wkt:
        mem.SetProjection(crs_wkt)
    band = mem.GetRasterBand(1)
    band.WriteArray(valid.astype(np.uint8))
    gdal.SieveFilter(band, None, band, SPECK_PIXELS + 1, 4)  # 4-connected, as Polygonize
    if valid.any() and not band.ReadAsArray().any():  # an image all specks: its specks are its outline
        band.WriteArray(valid.astype(np.uint8))
    vector = ogr.GetDriverByName("Memory").CreateDataSource("")
    srs = osr.SpatialReference(wkt=crs_wkt) if crs_wkt else None
    layer = vector.CreateLayer("footprint", srs, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("valid", ogr.OFTInteger))
    gdal.Polygonize(band, band, layer, 0)
    union = ogr.Geometry(ogr.wkbMultiPolygon)
    for feature in layer:
        union.AddGeometry(feature.GetGeometryRef())
    if union.GetGeometryCount() == 0:
        return ""
    merged = union.UnionCascaded()
    tolerance = float(np.hypot(small_gt[1], small_gt[4]))
    outline = merged.SimplifyPreserveTopology(tolerance)
    if out_w * sx > width or out_h * sy > height:
        outline = outline.Intersection(ogr.CreateGeometryFromWkt(ring_wkt(window_ring(g, 0, 0, width, height))))
    return valid_wkt(outline)


def valid_wkt(polygon) -> str:
    """The (multi)polygon's WKT, valid as read back: each part of an outline is simplified alone, and WKT's
    15 digits move a vertex, so parts that touched could overlap by 1e-17 m2, and QGIS's processing refused
    the summary as a clip or intersect mask ("invalid geometry"). Such a one is repaired by a zero buffer."""
    wkt = polygon.ExportToWkt()
    read_back = ogr.CreateGeometryFromWkt(wkt)
    with gdal_messages():  # GEOS's "Self-intersection at or near point" warning: the repair below answers it
        if read_back.IsValid():
            return wkt
    return read_back.Buffer(0).ExportToWkt()


class ValidityMosaic:
    """Validity masks read at `factor` raster pixels per pixel (the network's scale), pasted where
    they lie, into one mask of the whole image (coarser where the image is larger than
    MOSAIC_MAX_SIDE at that scale); complete once the reads have covered it."""

    def __init__(self, raster_width: int, raster_height: int, factor: float):
        self.raster_width, self.raster_height = raster_width, raster_height
        self.factor = max(float(factor), max(raster_width, raster_height) / MOSAIC_MAX_SIDE)
        self.valid = np.zeros((math.ceil(raster_height / self.factor), math.ceil(raster_width / self.factor)), bool)
        self.seen = np.zeros(self.valid.shape, bool)

    def paste(self, x_off: int, y_off: int, width: int, height: int, valid: np.ndarray) -> None:
        """valid: the mask of the raster window (x_off, y_off, width, height), read at this
        mosaic's scale or finer; it is resampled by nearest neighbour onto the mosaic pixels the
        window covers, so windows that end at the raster's edge cover the mosaic's last, partial pixel."""
        rows, cols = self.valid.shape
        top, bottom = self._span(y_off, height, self.raster_height, rows)
        left, right = self._span(x_off, width, self.raster_width, cols)
        if bottom <= top or right <= left or not valid.size:
            return
        ys = np.arange(bottom - top) * valid.shape[0] // (bottom - top)
        xs = np.arange(right - left) * valid.shape[1] // (right - left)
        self.valid[top:bottom, left:right] = valid[np.ix_(ys, xs)]
        self.seen[top:bottom, left:right] = True

    def _span(self, offset: int, size: int, raster_size: int, cells: int):
        start = min(cells, int(round(offset / self.factor)))
        end = cells if offset + size >= raster_size else min(cells, int(round((offset + size) / self.factor)))
        return start, end

    @property
    def complete(self) -> bool:
        return bool(self.seen.all())

    def footprint_wkt(self, geotransform, crs_wkt: str, max_side: int = FOOTPRINT_MAX_SIDE) -> Optional[str]:
        """The outline from the pasted masks, reduced to at most max_side pixels by the majority of
        each block; None while some of the image was never read."""
        if not self.complete:
            return None
        rows, cols = self.valid.shape
        block = max(1, math.ceil(max(rows, cols) / max_side))
        padded = np.zeros((math.ceil(rows / block) * block, math.ceil(cols / block) * block), np.float32)
        padded[:rows, :cols] = self.valid
        share = padded.reshape(padded.shape[0] // block, block, padded.shape[1] // block, block).mean(axis=(1, 3))
        pixel = block * self.factor  # raster pixels per pixel of the reduced mask
        return footprint_from_mask(share >= 0.5, geotransform, self.raster_width, self.raster_height, crs_wkt, pixel)

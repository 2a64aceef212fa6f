"""Shrinking a window to the network's scale by averaging, as GDAL would: whole factors summed here in
numpy (twice as fast as GDAL's resampler, and exact), other factors by GDAL; and whether a band's
overviews may be read for chunks at all."""

from typing import Optional, Tuple

import numpy as np
from osgeo import gdal, gdal_array


# Overview-friendly decimation that keeps a few-pixel bright patch visible, unlike nearest.
RESAMPLING = gdal.GRIORA_Average
# Pixel types whose whole-factor average block_mean computes itself.
WHOLE_AVERAGE_TYPES = (gdal.GDT_Byte, gdal.GDT_UInt16, gdal.GDT_Int16, gdal.GDT_UInt32, gdal.GDT_Int32)
# A larger window (a whole image's overview) is left to GDAL, which never holds it at full resolution.
MAX_AVERAGED_HERE_PIXELS = 4096 * 4096


def whole_shrink(size: Tuple[int, int], out_size: Tuple[int, int]) -> Optional[Tuple[int, int]]:
    """The whole factors (x, y) by which a window of ``size`` shrinks to ``out_size``; None unless
    both are whole and it shrinks at all."""
    factors = tuple(s // o if o and s % o == 0 else 0 for s, o in zip(size, out_size))
    return factors if all(factors) and factors != (1, 1) else None


def averaged_by_gdal(data: np.ndarray, nodata: float, out_width: int, out_height: int) -> np.ndarray:
    """GDAL's average of pixels already in memory, ``nodata`` left out: shrinks by factors that are not whole."""
    pixels = gdal_array.OpenArray(data)
    pixels.GetRasterBand(1).SetNoDataValue(nodata)
    return pixels.GetRasterBand(1).ReadAsArray(buf_xsize=out_width, buf_ysize=out_height, buf_type=gdal.GDT_Float32, resample_alg=RESAMPLING)


# JPEG2000 resolution levels are the wavelet's low-pass images: averages, whatever the file.
RESOLUTION_LEVEL_DRIVERS = ("JP2OpenJPEG", "JPEG2000", "JP2ECW", "JP2KAK", "JP2MrSID")
# Probe of overviews: this many overview pixels square at the image's centre.
OVERVIEW_PROBE_PIXELS = 64


def overviews_not_to_read(band, file_type: str) -> str:
    """Why a band's overviews (not a JPEG2000's resolution levels) must not be read for chunks, or "":
    they pick pixels or do not match the image (overview_fault), or they are a float file's
    (``file_type``: RasterInfo's, so not a north-up view's own, which is float whatever it views), whose
    averages took NaN and ISIS3's special values in with the pixels around them (the engine reads those
    for what they are)."""
    if band.GetOverviewCount() == 0:
        return ""
    if file_type in ("Float32", "Float64"):
        return "are a float band's, whose averages spread no-data and saturated values over their neighbours"
    fault = overview_fault(band)
    if fault == "picks":
        return ("pick pixels instead of averaging them (built by nearest neighbour, the default of QGIS's pyramids; "
                "rebuild them with gdaladdo -r average)")
    if fault == "stale":
        return ("do not show the image's own pixels (left from another file of the same name, or built before the image "
                "was changed: QGIS draws the image from them too); delete them or rebuild them with gdaladdo -r average")
    return ""


def overview_fault(band) -> str:
    """What is wrong with the band's first overview (not a JPEG2000's resolution level:
    RESOLUTION_LEVEL_DRIVERS) for reading chunks: "picks" where it was made by picking one pixel of
    each block (nearest neighbour) rather than by averaging them, which makes a small bright patch
    vanish or flicker with the grid; "stale" where it is not this image's at all (an external .ovr left
    beside a file replaced under the same name made plain terrain score as ice); "" where it will do.
    A GeoTIFF keeps no record of how its overviews were built, so a window at the centre of the overview
    is compared with both, made here from full resolution: it is the nearer one, and like one of them."""
    if band.GetOverviewCount() == 0:
        return ""
    overview = band.GetOverview(0)
    rx, ry = band.XSize / overview.XSize, band.YSize / overview.YSize
    if rx < 1.5 or ry < 1.5 or abs(overview.YSize - band.YSize / rx) > 1.5 + 0.01 * overview.YSize:
        # not smaller than the image, or of another shape than a level of it (GDAL rounds each side up to a
        # whole pixel): a larger image's .ovr left beside a crop or a smaller image under its name
        return "stale"
    columns, rows = min(OVERVIEW_PROBE_PIXELS, overview.XSize), min(OVERVIEW_PROBE_PIXELS, overview.YSize)
    ox, oy = (overview.XSize - columns) // 2, (overview.YSize - rows) // 2
    # each overview pixel's source pixels, as GDAL counts them
    x_edges = np.minimum(np.floor(np.arange(ox, ox + columns + 1) * rx).astype(int), band.XSize)
    y_edges = np.minimum(np.floor(np.arange(oy, oy + rows + 1) * ry).astype(int), band.YSize)
    pixels = band.ReadAsArray(int(x_edges[0]), int(y_edges[0]), int(x_edges[-1] - x_edges[0]), int(y_edges[-1] - y_edges[0]))
    found = overview.ReadAsArray(ox, oy, columns, rows)
    if pixels is None or found is None:
        return ""
    pixels = pixels.astype(np.float64)
    x_edges, y_edges = x_edges - x_edges[0], y_edges - y_edges[0]
    summed = np.pad(pixels, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    box = summed[np.ix_(y_edges[1:], x_edges[1:])] - summed[np.ix_(y_edges[:-1], x_edges[1:])] - summed[np.ix_(y_edges[1:], x_edges[:-1])] + summed[np.ix_(y_edges[:-1], x_edges[:-1])]
    averaged = box / np.outer(np.diff(y_edges), np.diff(x_edges))
    # which pixel of its window an overview pixel copies: the rules in use (GDAL's has changed over versions)
    def picks_at(shift: float, rounding):
        index_y = rounding((np.arange(oy, oy + rows) + shift) * ry).astype(int) - int(np.floor(oy * ry))
        index_x = rounding((np.arange(ox, ox + columns) + shift) * rx).astype(int) - int(np.floor(ox * rx))
        return pixels[np.ix_(index_y.clip(0, pixels.shape[0] - 1), index_x.clip(0, pixels.shape[1] - 1))]

    picks = [picks_at(0.0, np.floor), picks_at(0.0, np.round), picks_at(0.5, np.floor)]
    found = found.astype(np.float64)
    nodata = band.GetNoDataValue() or 0
    valid = np.isfinite(averaged) & np.isfinite(found) & (found != nodata) & np.all([pick != nodata for pick in picks], axis=0)
    if valid.sum() < 16:  # no image at the centre: nothing to judge by
        return ""
    if not _like_one_of(found[valid], [averaged[valid]] + [pick[valid] for pick in picks]):
        return "stale"
    if not min(np.abs(pick - averaged)[valid].mean() for pick in picks) > 0.5:  # smooth ground: either would do
        return ""
    picked = min(float(np.abs(found - pick)[valid].mean()) for pick in picks) < float(np.abs(found - averaged)[valid].mean())
    return "picks" if picked else ""


def _like_one_of(found: np.ndarray, candidates) -> bool:
    """Whether an overview's pixels follow one of the ways of making them from the image: correlated
    with it (any resampling of the same ground is, GDAL's gauss of white noise by 0.41 at the least seen;
    another image's by chance alone), or, on ground too smooth to correlate, at its level."""
    for candidate in candidates:
        if found.std() > 1.0 and candidate.std() > 1.0:
            if np.corrcoef(found, candidate)[0, 1] > 0.3:
                return True
        elif abs(found.mean() - candidate.mean()) <= 2.0 + 0.05 * abs(candidate.mean()):
            return True
    return False


def averaged_here(band) -> bool:
    """Whether the engine may read this band's windows at full resolution and average them itself,
    as GDAL would: no overview or JPEG2000 level for GDAL to read from instead (far cheaper than full
    resolution), and no mask beyond the declared no-data, which the engine leaves out as GDAL does."""
    return band.GetOverviewCount() == 0 and band.GetMaskFlags() in (gdal.GMF_ALL_VALID, gdal.GMF_NODATA)


def block_mean(data: np.ndarray, factors: Tuple[int, int], nodata: Optional[float]) -> np.ndarray:
    """Float32 mean of each factors[0] x factors[1] block of ``data``, leaving out pixels equal to
    ``nodata`` as GDAL's average does (a block of no-data alone stays ``nodata``). Exact, where
    GDAL rounds an integer band's averages to whole DNs; twice as fast as GDAL's resampler, which
    took as long as decoding the pixels."""
    fx, fy = factors
    missing = None if nodata is None else data == nodata
    if missing is not None and missing.all():  # outside an RDR's footprint: a third of its chunks
        return np.full((data.shape[0] // fy, data.shape[1] // fx), nodata, np.float32)
    # float32 sums 16-bit DNs exactly while they stay under 2**24
    accumulator = np.float64 if data.itemsize >= 4 or fx * fy > 256 else np.float32
    total = _block_sum(data, fx, fy, accumulator)
    if missing is None or not missing.any():
        mean = total / (fx * fy)
    else:
        missing_count = _block_sum(missing.view(np.uint8), fx, fy, np.uint16 if fx * fy < 65536 else np.uint32)
        if nodata:
            total -= missing_count * accumulator(nodata)
        count = fx * fy - missing_count.astype(accumulator)
        mean = np.divide(total, count, out=np.full_like(total, nodata), where=count > 0)
    return mean.astype(np.float32, copy=False)


def _block_sum(data: np.ndarray, fx: int, fy: int, dtype) -> np.ndarray:
    """Sum of each fx x fy block, by strided slices: numpy adds whole rows at a time that way."""
    rows = data[0::fy].astype(dtype)
    for offset in range(1, fy):
        rows += data[offset::fy]
    total = rows[:, 0::fx].copy()
    for offset in range(1, fx):
        total += rows[:, offset::fx]
    return total

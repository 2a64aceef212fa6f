"""Property-based tests (hypothesis) of the chunk grid and the reader on random small rasters:
every GDAL pixel type the engine reads (integers and floats), with and without a no-data value, north-up, south-up, rotated and
skewed geotransforms, odd sizes.

- With STRIDE = CHUNK every valid pixel lies in exactly one kept chunk, with its own value, and
  no invalid pixel is counted.
- Every chunk polygon is its pixel window through the geotransform, as GDAL maps it.
"""

import math
import uuid

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from osgeo import gdal

import helpers
from model.chunking import iter_chunks
from model.grid import chunk_grid, chunk_wkt, map_to_pixel, pixel_to_map
from model.imagechecks import PIXEL_TYPES
from model.raster import RasterSource

# The pixel types the engine reads that this GDAL knows (Int8 came with GDAL 3.7); floats hold the same whole DNs.
DATA_TYPES = [name for name in PIXEL_TYPES if gdal.GetDataTypeByName(name) != gdal.GDT_Unknown]
NUMPY_OF = {"Byte": np.uint8, "Int8": np.int8, "UInt16": np.uint16, "Int16": np.int16, "UInt32": np.uint32, "Int32": np.int32,
            "UInt64": np.uint64, "Int64": np.int64, "Float32": np.float32, "Float64": np.float64}
PROPERTIES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def geotransforms(draw):
    """North-up, south-up, rotated or skewed, at HiRISE-like to browse-like pixel sizes."""
    pixel = draw(st.sampled_from([0.25, 0.5, 1.0, 6.0]))
    x0 = draw(st.floats(-3e6, 3e6, allow_nan=False))
    y0 = draw(st.floats(-3e6, 3e6, allow_nan=False))
    kind = draw(st.sampled_from(["north-up", "south-up", "rotated", "skewed"]))
    if kind == "north-up":
        return (x0, pixel, 0.0, y0, 0.0, -pixel)
    if kind == "south-up":
        return (x0, pixel, 0.0, y0, 0.0, pixel)
    angle = math.radians(draw(st.floats(-80, 80).filter(lambda a: abs(a) > 0.5)))
    if kind == "rotated":
        return (x0, pixel * math.cos(angle), pixel * math.sin(angle), y0, pixel * math.sin(angle), -pixel * math.cos(angle))
    return (x0, pixel, pixel * math.tan(angle) * 0.3, y0, 0.0, -pixel)


@st.composite
def rasters(draw):
    """(data, data type, no-data value or None, geotransform): DNs in 0-1000, some 0 (the RDR border
    value, always no-data) and, where declared, some at the no-data value."""
    data_type = draw(st.sampled_from(DATA_TYPES))
    width = draw(st.integers(1, 97))
    height = draw(st.integers(1, 97))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    top = 120 if data_type in ("Byte", "Int8") else 1000
    data = rng.integers(1, top, (height, width))
    data[rng.random((height, width)) < draw(st.sampled_from([0.0, 0.1, 0.6]))] = 0
    nodata = draw(st.sampled_from([None, 0, 7, top - 1]))
    if nodata is not None:
        data[rng.random((height, width)) < 0.1] = nodata
    return data.astype(NUMPY_OF[data_type]), data_type, nodata, draw(geotransforms())


def write_in_memory(data, data_type, nodata, geotransform) -> str:
    path = f"/vsimem/grid_properties_{uuid.uuid4().hex}.tif"
    dataset = gdal.GetDriverByName("GTiff").Create(path, data.shape[1], data.shape[0], 1, gdal.GetDataTypeByName(data_type))
    dataset.SetGeoTransform(geotransform)
    dataset.SetProjection(helpers.mars_equirectangular_wkt())
    band = dataset.GetRasterBand(1)
    if nodata is not None:
        band.SetNoDataValue(nodata)
    band.WriteArray(data)
    dataset = None
    return path


@PROPERTIES
@given(raster=rasters(), chunk_size=st.integers(8, 64))
def test_every_valid_pixel_lies_in_exactly_one_chunk_with_its_own_value(raster, chunk_size):
    data, data_type, nodata, geotransform = raster
    valid = (data != 0) if nodata is None else (data != 0) & (data != nodata)
    path = write_in_memory(data, data_type, nodata, geotransform)
    try:
        coverage = np.zeros(data.shape, int)
        values = np.zeros(data.shape, np.float64)
        with RasterSource(path) as source:
            # read at full resolution (input size = chunk size), so a chunk's pixels are the raster's
            for sample in iter_chunks(source, chunk_size, chunk_size, 0.0, chunk_size):
                w = sample.window
                window_valid = sample.valid[: w.height, : w.width]
                assert not sample.valid[w.height:, :].any() and not sample.valid[:, w.width:].any(), "padding counted as image"
                coverage[w.y_off: w.y_off + w.height, w.x_off: w.x_off + w.width] += window_valid
                values[w.y_off: w.y_off + w.height, w.x_off: w.x_off + w.width] += np.where(window_valid, sample.data[: w.height, : w.width], 0.0)
    finally:
        gdal.Unlink(path)
    # but for a final sliver, narrower than an eighth of a chunk, which is left unscored
    scored = np.zeros(data.shape, bool)
    scored[: data.shape[0] - _sliver(data.shape[0], chunk_size), : data.shape[1] - _sliver(data.shape[1], chunk_size)] = True
    np.testing.assert_array_equal(coverage, (valid & scored).astype(int))
    np.testing.assert_array_equal(values[valid & scored], data[valid & scored].astype(np.float64))


def _sliver(length: int, chunk_size: int) -> int:
    """The pixels past the last whole chunk, where they are fewer than an eighth of a chunk and not the only chunk."""
    rest = length % chunk_size
    return rest if length > chunk_size and rest < max(1, chunk_size // 8) else 0


@PROPERTIES
@given(geotransform=geotransforms(), width=st.integers(1, 500), height=st.integers(1, 500), chunk_size=st.integers(1, 200),
       stride_share=st.sampled_from([0.25, 0.5, 1.0, 1.5]))
def test_chunk_polygons_are_their_pixel_windows_as_gdal_maps_them(geotransform, width, height, chunk_size, stride_share):
    stride = max(1, int(chunk_size * stride_share))
    tolerance = 1e-9 * max(1.0, *(abs(v) for v in geotransform))
    windows = list(chunk_grid(width, height, chunk_size, stride))
    assert [w.chunk_id for w in windows] == list(range(len(windows)))
    for w in windows:
        assert 0 <= w.x_off < width and 0 <= w.y_off < height and 1 <= w.width <= chunk_size and 1 <= w.height <= chunk_size
        assert w.x_off + w.width <= width and w.y_off + w.height <= height
        ring = [tuple(float(v) for v in point.split()) for point in chunk_wkt(geotransform, w)[len("POLYGON (("):-2].split(", ")]
        expected = helpers.window_ring_gdal(geotransform, w.x_off, w.y_off, w.width, w.height)
        np.testing.assert_allclose(ring, expected, rtol=0, atol=tolerance)
    if stride <= chunk_size:  # no gaps: the windows cover the raster but for a final sliver under an eighth of a chunk
        covered = np.zeros((height, width), bool)
        for w in windows:
            covered[w.y_off: w.y_off + w.height, w.x_off: w.x_off + w.width] = True
        rows, cols = np.flatnonzero(covered.any(axis=1)), np.flatnonzero(covered.any(axis=0))
        assert covered[: rows[-1] + 1, : cols[-1] + 1].all()
        assert height - 1 - rows[-1] < max(1, chunk_size // 8) and width - 1 - cols[-1] < max(1, chunk_size // 8)


@PROPERTIES
@given(geotransform=geotransforms(), x=st.floats(-1e4, 1e4), y=st.floats(-1e4, 1e4))
def test_map_to_pixel_inverts_pixel_to_map(geotransform, x, y):
    back = map_to_pixel(geotransform, *pixel_to_map(geotransform, x, y))
    assert back == (pytest.approx(x, abs=1e-6), pytest.approx(y, abs=1e-6))

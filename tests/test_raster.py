"""model.raster and model.chunking on real HiRISE files and generated rasters: geometry against
GDAL's own geotransform math, the no-data rule, band handling, scaling and windowed reads."""

import json
import math
import os
import threading

import numpy as np
import pytest
from osgeo import gdal, gdal_array, ogr, osr

from model import averaging, chunking, gdalstate, georeference, imagechecks, preprocess
from model.errors import DamagedRasterError, NoValidChunksError, RasterError
from model.grid import chunk_grid, chunk_wkt, pixel_to_map
from model import raster
from model.raster import RasterSource

import helpers

# Real files of ../shared/data/hirise-georef and the chunk size that gives each a grid of several chunks.
REAL_RASTERS = {
    "ESP_037156_1800_RED.byte.tif": 64,  # GeoTIFF, Mars equirectangular, rotated footprint, DN-0 border (undeclared)
    "PSP_002118_1510_1m_o_forPDS_cropped.cub": 16,  # ISIS3, equirectangular, ~28.5 S
    "PSP_002118_1510_25cm_o_forPDS_cropped.cub": 16,
    "PSP_009404_2635_RED_NLstretch_1m_o_forPDS_cropped.cub": 16,  # ISIS3, polar stereographic, 83.5 N
    "PSP_009404_2635_RED_NLstretch_25cm_o_forPDS_cropped.cub": 16,
    "ESP_042252_1930_3-BAND_COLOR_2m_o_cropped.cub": 16,  # 3 bands, every pixel no-data
}
COLOR_CUBE = "ESP_042252_1930_3-BAND_COLOR_2m_o_cropped.cub"
RED_TIF = "ESP_037156_1800_RED.byte.tif"


def real_file(folder, name) -> str:
    path = folder / name
    if not path.is_file():
        pytest.skip(f"{path} is absent from the shared data")
    return str(path)


def open_gdal(path):
    ds = gdal.Open(str(path))
    assert ds is not None, gdal.GetLastErrorMsg()
    return ds


def read_band(path, index=1) -> np.ndarray:
    ds = open_gdal(path)  # kept alive while its band is read (GDAL's bindings would crash otherwise)
    data = ds.GetRasterBand(index).ReadAsArray()
    ds = None
    return data


def truth_fractions(valid: np.ndarray, window, fraction=0.5):
    """(whole, centre) valid shares of a window at full resolution, computed here from the mask."""
    part = valid[window.y_off : window.y_off + window.height, window.x_off : window.x_off + window.width]
    cw, ch = max(1, int(round(window.width * fraction))), max(1, int(round(window.height * fraction)))
    left, top = (window.width - cw) // 2, (window.height - ch) // 2
    return float(part.mean()), float(part[top : top + ch, left : left + cw].mean())


def crs_equivalent(a: osr.SpatialReference, b: osr.SpatialReference, points) -> bool:
    """Same projected coordinates: a -> b is the identity on the given points (to a micrometre)."""
    a, b = a.Clone(), b.Clone()
    for srs in (a, b):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    transform = osr.CoordinateTransformation(a, b)
    return all(np.allclose(transform.TransformPoint(x, y)[:2], (x, y), atol=1e-6, rtol=0) for x, y in points)


def assert_same_crs(got: osr.SpatialReference, want: osr.SpatialReference, gt, width, height):
    """Equirectangular CRSs come back identical; a polar stereographic 'variant A, k = 1' comes back from
    WKT1 as the equivalent 'variant B, standard parallel 90', so there the coordinates must agree."""
    corners = helpers.window_ring_gdal(gt, 0, 0, width, height)[:4]
    assert crs_equivalent(want, got, corners) and crs_equivalent(got, want, corners)
    assert got.GetAttrValue("SPHEROID|1") == want.GetAttrValue("SPHEROID|1")  # the Mars radius
    if want.GetAttrValue("PROJECTION") == "Equirectangular":
        assert got.IsSame(want)


# --- real HiRISE files ----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REAL_RASTERS))
def test_real_raster_info_and_chunk_polygons_are_gdals(georef_data, name):
    path = real_file(georef_data, name)
    ds = open_gdal(path)
    gt = ds.GetGeoTransform()
    with RasterSource(path) as source:
        info = source.info
        assert (info.width, info.height, info.band_count) == (ds.RasterXSize, ds.RasterYSize, ds.RasterCount)
        assert info.geotransform == tuple(gt)
        assert_same_crs(osr.SpatialReference(wkt=info.crs_wkt), ds.GetSpatialRef(), gt, ds.RasterXSize, ds.RasterYSize)
        assert info.image_id == os.path.splitext(name)[0]
    chunk = REAL_RASTERS[name]
    for chunk_size, stride in [(chunk, chunk), (chunk + 1, chunk // 2 + 3)]:  # incl. an overlapping grid with partial edges
        windows = list(chunk_grid(ds.RasterXSize, ds.RasterYSize, chunk_size, stride))
        assert len(windows) > 4
        for w in windows:
            helpers.assert_rings_equal(helpers.ring_of_geometry(chunk_wkt(gt, w)), helpers.window_ring_gdal(gt, w.x_off, w.y_off, w.width, w.height))


@pytest.mark.parametrize("name", sorted(REAL_RASTERS))
def test_real_raster_chunk_layer_from_the_worker(georef_data, worker_python, tmp_path, name):
    """`python -m model chunk --out`: polygons equal GDAL's windows, and the CRS survives the GeoPackage."""
    path = real_file(georef_data, name)
    ds = open_gdal(path)
    gt, srs = ds.GetGeoTransform(), ds.GetSpatialRef()
    out = tmp_path / "chunks.gpkg"
    run = helpers.run_worker(worker_python, "chunk", path, "--chunk-size", REAL_RASTERS[name], "--min-valid", 0.0, "--out", out).check()
    reported = {c["chunk_id"]: c for c in run.result["chunks"]}
    vector = ogr.Open(str(out))
    layer = vector.GetLayerByName("chunks")
    assert_same_crs(layer.GetSpatialRef(), srs, gt, ds.RasterXSize, ds.RasterYSize)
    assert layer.GetFeatureCount() == len(reported)
    for feature in layer:
        w = reported[feature.GetField("chunk_id")]
        assert (feature.GetField("x_off"), feature.GetField("y_off"), feature.GetField("width"), feature.GetField("height")) == (w["x_off"], w["y_off"], w["width"], w["height"])
        helpers.assert_rings_equal(helpers.ring_of_geometry(feature.GetGeometryRef().ExportToWkt()), helpers.window_ring_gdal(gt, w["x_off"], w["y_off"], w["width"], w["height"]))


def test_real_red_product_border_chunks_dropped_interior_kept(georef_data):
    """ESP_037156_1800: the rotated footprint's DN-0 border (no no-data declared) drops chunks; the interior is kept."""
    path = real_file(georef_data, RED_TIF)
    dn = read_band(path)
    valid = dn != 0
    assert 0.2 < (~valid).mean() < 0.4  # the border is there
    with RasterSource(path) as source:
        assert source.info.nodata is None
        # full resolution: the engine's shares are exactly the mask's
        kept = {s.window.chunk_id: s for s in chunking.iter_chunks(source, 64, 64, chunking.DEFAULT_MIN_VALID, input_size=64)}
        expected = set()
        for w in chunk_grid(source.info.width, source.info.height, 64, 64):
            whole, centre = truth_fractions(valid, w)
            if centre >= chunking.DEFAULT_MIN_VALID and whole > 0:
                expected.add(w.chunk_id)
            if w.chunk_id in kept:
                assert kept[w.chunk_id].valid_fraction == pytest.approx(whole)
                assert kept[w.chunk_id].centre_valid_fraction == pytest.approx(centre)
        assert set(kept) == expected
        assert 0 < len(expected) < chunking.chunk_count(source, 64, 64)
        # decimated 4x, as the network reads it: interior chunks kept, chunks outside the footprint dropped
        decimated = {s.window.chunk_id for s in chunking.iter_chunks(source, 64, 64, chunking.DEFAULT_MIN_VALID, input_size=16)}
        for w in chunk_grid(source.info.width, source.info.height, 64, 64):
            whole, centre = truth_fractions(valid, w)
            if centre == 1.0:
                assert w.chunk_id in decimated, w
            if centre == 0.0:
                assert w.chunk_id not in decimated, w


@pytest.mark.parametrize("name", [n for n in REAL_RASTERS if n.endswith(".cub") and n != COLOR_CUBE])
def test_real_isis_cubes_no_data_is_gdals_mask(georef_data, name):
    """ISIS3 cubes: the engine's validity equals GDAL's own mask band; chunks are kept by their centre."""
    path = real_file(georef_data, name)
    ds = open_gdal(path)
    band = ds.GetRasterBand(1)
    dn = band.ReadAsArray()
    mask = band.GetMaskBand().ReadAsArray() != 0
    assert 0 < (~mask).sum() < mask.size  # these crops hold some no-data
    with RasterSource(path) as source:
        assert source.info.nodata == 0
        data, valid = source.read(0, 0, 50, 50, 50, 50)
        assert np.array_equal(valid, mask)
        assert np.array_equal(data, np.where(mask, dn, 0).astype(np.float32))
        samples = {s.window.chunk_id: s for s in chunking.iter_chunks(source, 16, 16, chunking.DEFAULT_MIN_VALID, input_size=16)}
    windows = list(chunk_grid(50, 50, 16, 16))
    assert len(windows) == 16  # 4 x 4 chunks, the last row and column 2 px
    expected = {w.chunk_id for w in windows if truth_fractions(mask, w)[1] >= chunking.DEFAULT_MIN_VALID and truth_fractions(mask, w)[0] > 0}
    assert set(samples) == expected and expected
    for chunk_id, sample in samples.items():
        w = sample.window
        assert sample.centre_valid_fraction == pytest.approx(truth_fractions(mask, w)[1])
        assert np.array_equal(sample.data[: w.height, : w.width], data[w.y_off : w.y_off + w.height, w.x_off : w.x_off + w.width])


def test_real_all_no_data_color_cube_has_no_chunks(georef_data):
    path = real_file(georef_data, COLOR_CUBE)
    with RasterSource(path) as source:
        assert source.info.band_count == 3 and source.info.bands == (1, 2, 3)
        data, valid = source.read(0, 0, source.info.width, source.info.height, source.info.width, source.info.height)
        assert not valid.any() and not data.any()
        assert list(chunking.iter_chunks(source, 16, 16, 0.0)) == []
        assert list(chunking.iter_chunks(source, 1024, 1024, 0.0)) == []


def test_real_all_no_data_color_cube_detect_fails_clearly(georef_data, worker_python, tiny_model, tmp_path):
    """Through the worker CLI: exit status 2, one JSON error line naming the problem, no output written."""
    path = real_file(georef_data, COLOR_CUBE)
    out, report = tmp_path / "chunks.gpkg", tmp_path / "report.html"
    # 16-px chunks: the 40 x 50 px cube is smaller than one of the model's 64-px chunks, refused as such first.
    run = helpers.run_worker(worker_python, "detect", path, "--model", tiny_model.path, "--chunk-size", 16, "--out", out, "--report", report)
    assert run.returncode == 2, run.stderr[-3000:]
    messages = run.messages
    assert [m["type"] for m in messages].count("error") == 1 and messages[-1]["type"] == "error"
    error = messages[-1]
    assert error["code"] == NoValidChunksError.code
    assert COLOR_CUBE in error["message"] and "no-data" in error["message"] and "MIN_VALID" in error["message"]
    assert not out.exists() and not report.exists()
    assert os.listdir(tmp_path) == []


# --- generated rasters: the no-data rule ----------------------------------------------------


@pytest.mark.parametrize("nodata", [0, None], ids=["declared", "undeclared"])
def test_rotated_border_chunks_dropped_interior_kept(make_raster, nodata):
    r = make_raster(width=512, height=448, rotated_border=True, nodata=nodata)
    with RasterSource(r.path) as source:
        windows = list(chunk_grid(r.width, r.height, 64, 64))
        full = {s.window.chunk_id for s in chunking.iter_chunks(source, 64, 64, 0.95, input_size=64)}
        decimated = {s.window.chunk_id for s in chunking.iter_chunks(source, 64, 64, 0.95, input_size=16)}
    expected = {w.chunk_id for w in windows if truth_fractions(r.valid, w)[1] >= 0.95}
    assert full == expected
    inside = {w.chunk_id for w in windows if truth_fractions(r.valid, w)[1] == 1.0}
    outside = {w.chunk_id for w in windows if truth_fractions(r.valid, w)[1] == 0.0}
    assert inside and outside  # the scene has both
    assert inside <= decimated and not (outside & decimated)


def min_valid_raster(make_raster):
    """256 x 64 px, four 64-px chunks whose central 32 x 32 region is 50 %, ~98 %, 973/1024 and 972/1024 valid."""
    r = make_raster(width=256, height=64, nodata=None, seed=5)
    dn = r.bands[0].copy()
    rng = np.random.default_rng(0)
    dn[16:48, 16:32] = 0  # chunk 0: left half of the centre
    for chunk, zeros in ((1, 20), (2, 51), (3, 52)):  # isolated DN-0 pixels (clipped shadow) in the centre
        cells = rng.choice(32 * 32, zeros, replace=False)
        dn[16 + cells // 32, chunk * 64 + 16 + cells % 32] = 0
    helpers.write_geotiff(r.path, dn, "UInt16", r.geotransform, r.crs_wkt)
    return r


@pytest.mark.parametrize(
    "min_valid, kept",
    [(0.0, {0, 1, 2, 3}), (0.5, {0, 1, 2, 3}), (0.51, {1, 2, 3}), (0.95, {1, 2}), (0.9502, {1}), (0.99, set()), (1.0, set())],
)
def test_min_valid_is_the_share_of_valid_pixels_in_the_chunk_centre(make_raster, min_valid, kept):
    r = min_valid_raster(make_raster)
    with RasterSource(r.path) as source:
        samples = list(chunking.iter_chunks(source, 64, 64, min_valid, input_size=64))
    assert {s.window.chunk_id for s in samples} == kept
    centres = {s.window.chunk_id: s.centre_valid_fraction for s in samples}
    for chunk_id, share in {0: 0.5, 1: 1004 / 1024, 2: 973 / 1024, 3: 972 / 1024}.items():
        if chunk_id in centres:
            assert centres[chunk_id] == pytest.approx(share)


def test_a_chunk_with_no_valid_pixel_is_dropped_even_at_min_valid_zero(make_raster):
    r = make_raster(width=128, height=64, nodata=None)
    dn = r.bands[0].copy()
    dn[:, 64:] = 0
    helpers.write_geotiff(r.path, dn, "UInt16", r.geotransform, r.crs_wkt)
    with RasterSource(r.path) as source:
        assert [s.window.chunk_id for s in chunking.iter_chunks(source, 64, 64, 0.0, input_size=32)] == [0]


@pytest.mark.parametrize("chunk_size, stride, min_valid, words", [(4, 4, 0.5, "too small"), (64, 0, 0.5, "stride"), (64, 64, 1.5, "MIN_VALID"), (64, 64, -0.1, "MIN_VALID")])
def test_bad_grid_parameters_are_explained(make_raster, chunk_size, stride, min_valid, words):
    r = make_raster(width=128, height=128)
    with RasterSource(r.path) as source, pytest.raises(RasterError, match=words):
        next(chunking.iter_chunks(source, chunk_size, stride, min_valid))


def test_declared_no_data_and_dn_0_are_both_invalid(make_raster):
    r = make_raster(width=96, height=80, nodata=1000)
    dn = r.bands[0].copy()
    dn[5:9, 10:30] = 1000
    dn[40:44, 50:70] = 0
    helpers.write_geotiff(r.path, dn, "UInt16", r.geotransform, r.crs_wkt, nodata=1000)
    with RasterSource(r.path) as source:
        assert source.info.nodata == 1000
        data, valid = source.read(0, 0, 96, 80, 96, 80)
    assert np.array_equal(valid, (dn != 0) & (dn != 1000))
    assert np.array_equal(data, np.where(valid, dn, 0).astype(np.float32))


# --- bands, data types, scale ----------------------------------------------------------------


def test_multi_band_rasters_are_the_mean_of_their_bands_and_invalid_where_any_band_is(make_raster):
    r = make_raster(width=64, height=48, data_type="Byte", band_count=3, nodata=None)
    bands = [b.copy() for b in r.bands]
    bands[1][10:12, 20:40] = 0  # no data in the middle band only
    helpers.write_geotiff(r.path, bands, "Byte", r.geotransform, r.crs_wkt)
    stack = np.stack([b.astype(np.float64) for b in bands])
    with RasterSource(r.path) as source:
        assert source.info.bands == (1, 2, 3)
        data, valid = source.read(0, 0, 64, 48, 64, 48)
    expected_valid = (stack != 0).all(axis=0)
    assert np.array_equal(valid, expected_valid)
    assert np.allclose(data[valid], stack.mean(axis=0)[valid], atol=1e-4)
    assert not data[~valid].any()
    with RasterSource(r.path, band=2) as source:
        assert source.info.bands == (2,)
        data, valid = source.read(0, 0, 64, 48, 64, 48)
    assert np.array_equal(valid, bands[1] != 0)
    assert np.array_equal(data, bands[1].astype(np.float32))


def test_the_log_says_which_bands_a_multi_band_raster_is_scored_from(make_raster):
    one, three = make_raster(width=32, height=32), make_raster(width=32, height=32, band_count=3)
    with RasterSource(one.path) as a, RasterSource(three.path) as b, RasterSource(three.path, band=2) as c:
        said = [source.info.bands_read for source in (a, b, c)]
    assert said == ["", ", read as the mean of bands 1, 2, 3 (BAND picks one)", ", band 2 read"]


def _with_alpha(path, bands, alpha, data_type="UInt16"):
    """bands plus a last band marked as transparency, as gdalwarp -dstalpha writes it."""
    helpers.write_geotiff(path, list(bands) + [alpha], data_type, helpers.default_geotransform(*alpha.shape[::-1]), helpers.mars_equirectangular_wkt())
    ds = gdal.Open(str(path), gdal.GA_Update)
    ds.GetRasterBand(len(bands) + 1).SetColorInterpretation(gdal.GCI_AlphaBand)
    ds = None
    return str(path)


@pytest.mark.parametrize("factor", [1, 4])
def test_a_transparency_band_is_no_brightness_and_its_transparent_pixels_are_no_data(tmp_path, factor):
    """A reprojected image's alpha band (gdalwarp -dstalpha) is left out of the band mean, and where it
    is transparent the pixels are no-data even when they hold DNs; the log says so."""
    rng = np.random.default_rng(2)
    gray = rng.integers(100, 1000, size=(64, 64))
    alpha = np.full((64, 64), 65535)
    alpha[:, :16] = 0  # transparent: the DNs below are not the image
    path = _with_alpha(tmp_path / "warped.tif", [gray], alpha)
    with RasterSource(path) as source:
        assert source.info.bands == (1,) and source.info.alpha_band == 2
        assert source.info.bands_read == ", band 1 read; band 2 is transparency, its transparent pixels no-data"
        data, valid = source.read(0, 0, 64, 64, 64 // factor, 64 // factor)
    cut = 16 // factor
    assert not valid[:, :cut].any() and valid[:, cut:].all() and not data[:, :cut].any()
    want = gray.astype(np.float64).reshape(64 // factor, factor, 64 // factor, factor).mean(axis=(1, 3))
    assert np.abs(data[:, cut:] - want[:, cut:]).max() <= 0.5
    colour = _with_alpha(tmp_path / "colour.tif", [gray, gray + 10, gray + 20], alpha)
    with RasterSource(colour) as source:
        assert source.info.bands == (1, 2, 3)
        assert source.info.bands_read == ", read as the mean of bands 1, 2, 3 (BAND picks one); band 4 is transparency, its transparent pixels no-data"
        data, valid = source.read(0, 0, 64, 64, 64, 64)
    assert not valid[:, :16].any() and np.allclose(data[:, 16:], gray[:, 16:] + 10)


@pytest.mark.parametrize("band", [-1, 4])
def test_a_band_that_does_not_exist_is_explained(make_raster, band):
    r = make_raster(width=32, height=32, band_count=3)
    with pytest.raises(RasterError, match=r"Band .* does not exist .* 3 band\(s\)"):
        RasterSource(r.path, band=band)


@pytest.mark.parametrize("input_size", [64, 32, 16, 10])
def test_8_bit_and_16_bit_rasters_read_the_same_after_normalisation(make_raster, tmp_path, input_size):
    """Exactly the same at full resolution. Decimated, GDAL averages integer bands in their own type and
    rounds to whole DNs, so the 8-bit read may differ from the 10-bit one by up to half an 8-bit DN."""
    byte = make_raster(width=200, height=136, data_type="Byte", nodata=0, rotated_border=True, seed=3)
    ten_bit = byte.bands[0].astype(np.uint16) * 4  # the same scene in a 10-bit RED product's DNs
    path16 = helpers.write_geotiff(tmp_path / "ten_bit.tif", ten_bit, "UInt16", byte.geotransform, byte.crs_wkt, nodata=0)
    with RasterSource(byte.path) as source8, RasterSource(path16) as source16:
        assert (source8.info.data_type, source16.info.data_type) == ("Byte", "UInt16")
        for w in chunk_grid(200, 136, 64, 64):
            d8, v8 = source8.read_chunk(w, 64, input_size)
            d16, v16 = source16.read_chunk(w, 64, input_size)
            assert np.array_equal(v8, v16)
            if not v8.any():
                continue
            n8, n16 = preprocess.normalise(d8, v8), preprocess.normalise(d16, v16)
            assert n8.min() >= 0.0 and n8.max() <= 1.0 and not n8[~v8].any() and not n16[~v16].any()
            if input_size == 64:
                assert np.allclose(n8, n16, atol=1e-6)
            else:
                assert np.abs(d8 - d16 / 4)[v8].max() <= 0.5 + 1e-4
                assert np.abs(n8 - n16)[v8].mean() < 0.02


def test_read_chunk_equals_numpy_slices_of_the_whole_raster(make_raster):
    """Full resolution: the window itself; half resolution: 2 x 2 means; edge chunks padded with no-data."""
    r = make_raster(width=200, height=150, nodata=None, seed=9)
    full = r.bands[0].astype(np.float64)
    with RasterSource(r.path) as source:
        for w in chunk_grid(200, 150, 64, 64):
            window = full[w.y_off : w.y_off + w.height, w.x_off : w.x_off + w.width]
            data, valid = source.read_chunk(w, 64, 64)
            assert data.shape == valid.shape == (64, 64)
            assert np.array_equal(data[: w.height, : w.width], window)
            assert valid[: w.height, : w.width].all()
            assert not valid[w.height :, :].any() and not valid[:, w.width :].any() and not data[w.height :, :].any()

            data, valid = source.read_chunk(w, 64, 32)
            h2, w2 = w.height // 2, w.width // 2  # every window size here is even
            means = window.reshape(h2, 2, w2, 2).mean(axis=(1, 3))
            assert np.abs(data[:h2, :w2] - means).max() <= 1e-3
            assert valid[:h2, :w2].all() and not valid[h2:, :].any() and not valid[:, w2:].any()


class RecordingDataset:
    """Observes the real GDAL dataset: records every ReadAsArray call and passes it on unchanged."""

    def __init__(self, ds, calls):
        self._ds, self._calls = ds, calls

    def GetRasterBand(self, index):  # noqa: N802 (GDAL's name)
        return RecordingBand(self._ds.GetRasterBand(index), self._calls)

    def __getattr__(self, name):
        return getattr(self._ds, name)


class RecordingBand:
    def __init__(self, band, calls):
        self._band, self._calls = band, calls

    def ReadAsArray(self, xoff, yoff, win_xsize, win_ysize, **kwargs):  # noqa: N802
        self._calls.append((xoff, yoff, win_xsize, win_ysize, kwargs.get("buf_xsize"), kwargs.get("buf_ysize")))
        return self._band.ReadAsArray(xoff, yoff, win_xsize, win_ysize, **kwargs)

    def __getattr__(self, name):
        return getattr(self._band, name)


def test_chunk_reads_are_windowed(make_raster):
    """Memory stays flat: each chunk is one windowed read per band (at full resolution where the engine
    averages it itself, else decimated by GDAL), never the whole raster."""
    r = make_raster(width=320, height=256, band_count=2, rotated_border=True)
    calls = []
    with RasterSource(r.path) as source:
        source._ds = RecordingDataset(source._ds, calls)
        samples = list(chunking.iter_chunks(source, 64, 64, 0.0, input_size=16))
    windows = list(chunk_grid(320, 256, 64, 64))
    assert samples
    assert len(calls) == 2 * len(windows)
    assert sorted(set(c[:4] for c in calls)) == sorted((w.x_off, w.y_off, w.width, w.height) for w in windows)
    assert all(c[4] is None or (c[4] <= 16 and c[5] <= 16) for c in calls)


def _block_means(data: np.ndarray, fx: int, fy: int, nodata) -> np.ndarray:
    """The reference: float64 mean of each block's pixels other than nodata, NaN where there is none."""
    h, w = data.shape
    blocks = data.astype(np.float64).reshape(h // fy, fy, w // fx, fx)
    if nodata is not None:
        blocks = np.where(blocks == nodata, np.nan, blocks)
    with np.errstate(invalid="ignore"), __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore", RuntimeWarning)
        return np.nanmean(blocks, axis=(1, 3))


@pytest.mark.parametrize("data_type, nodata, low, high", [("UInt16", 0, 1, 1023), ("UInt16", 65535, 0, 4095), ("UInt16", None, 0, 1023), ("Byte", 0, 1, 255), ("Int16", -1, -300, 300), ("Int32", None, -70000, 70000)])
@pytest.mark.parametrize("factors", [(2, 2), (4, 4), (4, 2)])
def test_whole_factor_reads_are_exact_block_means_where_gdal_rounds(tmp_path, data_type, nodata, low, high, factors):
    """Shrunk by whole factors, integer pixels are averaged by the engine: each block's exact mean
    leaving out the declared no-data, a block of no-data alone invalid. GDAL's resampler gives the same
    to within its rounding to whole DNs, and the same validity."""
    rng = np.random.default_rng(5)
    data = rng.integers(low, high + 1, size=(64, 96))
    if nodata is not None:
        data[rng.random(data.shape) < 0.2] = nodata  # scattered no-data
        data[:8, :8] = nodata  # whole blocks of it
    path = helpers.write_geotiff(tmp_path / "image.tif", data, data_type, helpers.default_geotransform(96, 64), helpers.mars_equirectangular_wkt(), nodata)
    fx, fy = factors
    out_w, out_h = 96 // fx, 64 // fy
    with RasterSource(path) as source:
        assert averaging.averaged_here(source._ds.GetRasterBand(1))
        got, valid = source.read(0, 0, 96, 64, out_w, out_h)
        gdals = source._ds.GetRasterBand(1).ReadAsArray(0, 0, 96, 64, buf_xsize=out_w, buf_ysize=out_h, buf_type=gdal.GDT_Float32, resample_alg=averaging.RESAMPLING)
        if nodata is not None:  # a window of no-data alone
            corner, corner_valid = source.read(0, 0, 8, 8, 8 // fx, 8 // fy)
            assert corner.shape == (8 // fy, 8 // fx) and not corner.any() and not corner_valid.any()
    want = _block_means(data, fx, fy, nodata)
    want_valid = ~np.isnan(want) & (want != 0) & (want != (nodata if nodata is not None else 0))  # the no-data rule
    assert np.array_equal(valid, want_valid)
    assert np.abs(got[valid] - want[valid]).max() <= 1e-3 * max(1, np.abs(want[valid]).max() / 1e3)
    assert not got[~valid].any()
    gdal_valid = (gdals != 0) & (gdals != (nodata if nodata is not None else 0))
    rounded_onto_no_data = np.minimum(np.abs(want), np.abs(want - (nodata or 0))) <= 0.5  # signed DNs only
    assert not (valid != gdal_valid)[~rounded_onto_no_data].any()
    both = valid & gdal_valid
    assert np.abs(got[both] - gdals[both]).max() <= 0.5
    if nodata is not None and (fx, fy) == (2, 2):
        assert not valid[:4, :4].any()


def test_gdal_averages_where_it_has_overviews_or_a_mask(tmp_path):
    """The engine averages only where it gives what GDAL would: pixels read at full resolution with no
    mask beyond no-data. Overviews (or JPEG2000 levels) are far cheaper to read than full resolution,
    and a mask band is GDAL's to honour. Floats are averaged here, their special pixels left out."""
    data = np.random.default_rng(3).integers(1, 1024, size=(128, 128))
    gt, wkt = helpers.default_geotransform(128, 128), helpers.mars_equirectangular_wkt()

    def averaged_here(path) -> bool:
        ds = gdal.Open(str(path))  # held: a band outlives its dataset in Python only to crash
        return averaging.averaged_here(ds.GetRasterBand(1))

    plain = helpers.write_geotiff(tmp_path / "plain.tif", data, "UInt16", gt, wkt, 0)
    assert averaged_here(plain)
    floats = helpers.write_geotiff(tmp_path / "float.tif", data, "Float32", gt, wkt, 0)
    assert averaged_here(floats)
    with_overviews = helpers.write_geotiff(tmp_path / "overviews.tif", data, "UInt16", gt, wkt, 0)
    ds = gdal.Open(with_overviews, gdal.GA_Update)
    ds.BuildOverviews("AVERAGE", [2, 4])
    ds = None
    assert not averaged_here(with_overviews)
    masked = helpers.write_geotiff(tmp_path / "masked.tif", data, "UInt16", gt, wkt)
    ds = gdal.Open(masked, gdal.GA_Update)
    ds.CreateMaskBand(gdal.GMF_PER_DATASET)
    mask = np.full((128, 128), 255, np.uint8)
    mask[:, :40] = 0
    ds.GetRasterBand(1).GetMaskBand().WriteArray(mask)
    ds = None
    assert not averaged_here(masked)
    for path in (floats, with_overviews, masked):
        with RasterSource(path) as source:
            got, _ = source.read(0, 0, 128, 128, 32, 32)
            gdals = source._ds.GetRasterBand(1).ReadAsArray(0, 0, 128, 128, buf_xsize=32, buf_ysize=32, buf_type=gdal.GDT_Float32, resample_alg=averaging.RESAMPLING)
        if path == floats:  # averaged here: the same means, summed in another order
            assert np.allclose(got, gdals, rtol=1e-6, atol=0), path
        else:
            assert np.array_equal(got, gdals), path


@pytest.mark.parametrize("size, out_size, factors", [((1024, 1024), (256, 256), (4, 4)), ((1024, 512), (256, 256), (4, 2)), ((64, 64), (64, 64), None), ((1000, 1000), (256, 256), None), ((96, 64), (48, 0), None)])
def test_only_a_shrink_by_whole_factors_is_averaged_by_the_engine(size, out_size, factors):
    assert averaging.whole_shrink(size, out_size) == factors


def test_footprint_follows_the_valid_area(make_raster):
    r = make_raster(width=512, height=384, rotated_border=True)
    with RasterSource(r.path) as source:
        footprint = ogr.CreateGeometryFromWkt(source.footprint_wkt(max_side=256))
    pixel_area = abs(r.geotransform[1] * r.geotransform[5])
    assert footprint.GetArea() == pytest.approx(r.valid.sum() * pixel_area, rel=0.03)
    whole = ogr.CreateGeometryFromWkt(helpers.window_wkt(r.geotransform, 0, 0, r.width, r.height))
    assert whole.Buffer(1.0).Contains(footprint)


# --- what is not a usable raster ---------------------------------------------------------------


def test_a_raster_without_crs_is_refused_with_the_fix(make_raster):
    r = make_raster(width=64, height=64, crs=None)
    with pytest.raises(RasterError) as caught:
        RasterSource(r.path)
    assert "no coordinate reference system" in str(caught.value) and "Assign" in str(caught.value) and r.path in str(caught.value)
    with RasterSource(r.path, require_georeferencing=False) as source:
        assert source.info.crs_wkt == ""


def test_a_raster_placed_by_ground_control_points_alone_is_placed_by_their_affine_fit(make_raster, tmp_path):
    r = make_raster(width=64, height=48)
    # 0.5 m pixels turned by 30 degrees: an affine transform the GCPs fit exactly
    turn, size = np.radians(30.0), 0.5
    gt = (1000.0, size * np.cos(turn), size * np.sin(turn), -2000.0, size * np.sin(turn), -size * np.cos(turn))
    corners = [pixel_to_map(gt, px, py) for px, py in ((0, 0), (64, 0), (0, 48), (64, 48))]
    path = helpers.gcp_copy(r.path, tmp_path / "gcps.tif", corners, helpers.mars_equirectangular_wkt())
    assert gdal.Open(path).GetGeoTransform(can_return_null=True) is None  # GDAL alone would give pixel coordinates
    with RasterSource(path) as source:
        assert np.allclose(source.info.geotransform, gt, atol=1e-6)
        assert source.info.crs_wkt and osr.SpatialReference(source.info.crs_wkt).IsSame(osr.SpatialReference(helpers.mars_equirectangular_wkt()))
        first = next(chunk_grid(64, 48, 32, 32))
        polygon = ogr.CreateGeometryFromWkt(chunk_wkt(source.info.geotransform, first))
        assert np.allclose(polygon.GetGeometryRef(0).GetPoint_2D(0), corners[0], atol=1e-6)


def test_ground_control_points_that_need_a_warp_are_refused_with_the_fix(make_raster, tmp_path):
    r = make_raster(width=64, height=48)
    corners = [(0.0, 0.0), (32.0, 0.0), (0.0, -24.0), (40.0, -30.0)]  # the last corner pulled: no affine transform fits
    path = helpers.gcp_copy(r.path, tmp_path / "warped.tif", corners, helpers.mars_equirectangular_wkt())
    with pytest.raises(RasterError) as caught:
        RasterSource(path)
    assert "4 ground control points" in str(caught.value) and "Warp it first" in str(caught.value) and path in str(caught.value)


def test_a_crs_without_a_geotransform_is_refused_rather_than_placed_in_pixel_coordinates(tmp_path):
    path = str(tmp_path / "no_geotransform.tif")
    dataset = gdal.GetDriverByName("GTiff").Create(path, 64, 64, 1, gdal.GDT_UInt16)
    dataset.SetProjection(helpers.mars_equirectangular_wkt())
    dataset.GetRasterBand(1).Fill(500)
    dataset = None
    with pytest.raises(RasterError) as caught:
        RasterSource(path)
    assert "no geotransform" in str(caught.value) and "Georeferencer" in str(caught.value)
    with RasterSource(path, require_georeferencing=False) as source:  # its pixels stay readable (a report's quicklook)
        assert source.info.geotransform == georeference.PIXEL_GRID


@pytest.mark.parametrize("geotransform, damage", [((1000.0, 0.0, 0.0, 2000.0, 0.0, 0.0), "its pixels have no size"),
                                                   ((1000.0, 0.5, 0.25, 2000.0, 0.5, 0.25), "its pixels have no size"),
                                                   ((float("nan"), 0.5, 0.0, 2000.0, 0.0, -0.5), "not every value is a number"),
                                                   ((1000.0, float("inf"), 0.0, 2000.0, 0.0, -0.5), "not every value is a number")])
def test_a_damaged_geotransform_is_refused_rather_than_placed_nowhere(tmp_path, geotransform, damage):
    path = helpers.write_geotiff(tmp_path / "damaged.tif", np.full((64, 64), 500), "UInt16", geotransform, helpers.mars_equirectangular_wkt())
    with pytest.raises(RasterError) as caught:
        RasterSource(path)
    assert "has a damaged geotransform (" in str(caught.value) and damage in str(caught.value) and "Download the product again" in str(caught.value)
    with RasterSource(path, require_georeferencing=False) as source:  # its pixels stay readable, placed nowhere
        assert source.info.geotransform == georeference.PIXEL_GRID and source.info.crs_wkt == ""
    assert georeference.geotransform_damage(helpers.default_geotransform(64, 64)) == ""


@pytest.mark.parametrize("geotransform, off", [((1e15, 0.5, 0.0, 1e15, 0.0, -0.5), "its origin at latitude 1.687"),
                                                (None, "pixels of 3.9e-12 m"), ((0.0, 1e12, 0.0, 0.0, 0.0, -1e12), "pixels of 1e+12 m")])
def test_an_image_placed_off_mars_is_refused_with_the_fix(tmp_path, geotransform, off):
    """An origin at 1e15 m put the report's centre at latitude 16,870,604,858 deg, and pixels of 4e-12 m or 1e12 m were
    scored (the latter warned of only as a browse image's): a damaged georeference, refused as one."""
    geotransform = geotransform or (0.0, 3.9e-12, 0.0, 0.0, 0.0, -3.9e-12)
    path = helpers.write_geotiff(tmp_path / "off.tif", np.full((64, 64), 500), "UInt16", geotransform, helpers.mars_equirectangular_wkt())
    with pytest.raises(RasterError) as caught:
        RasterSource(path)
    assert f"is georeferenced where no map of Mars can place it ({off}" in str(caught.value) and "georeference this file again" in str(caught.value)
    # in degrees too: pixels of 1e9 deg from latitude 0 (an origin on the map) had put the report's centre at latitude -5.12e11
    geographic = osr.SpatialReference(wkt=helpers.mars_equirectangular_wkt()).CloneGeogCS().ExportToWkt()
    assert georeference.placement_damage((10.0, 1e9, 0.0, 0.0, 0.0, -1e9), geographic).startswith("pixels of 5.9")
    assert georeference.placement_damage((10.0, 1e-5, 0.0, -50.0, 0.0, -1e-5), geographic) == ""  # 0.6 m pixels, in degrees
    assert georeference.placement_damage(helpers.default_geotransform(64, 64), helpers.mars_equirectangular_wkt()) == ""
    wkt, gt = helpers.south_polar_stereographic(150.0)  # near the pole, turned: placed all the same
    assert georeference.placement_damage(gt, wkt) == ""


def test_a_raster_without_crs_fails_the_worker_with_exit_status_2(make_raster, worker_python):
    r = make_raster(width=64, height=64, crs=None)
    run = helpers.run_worker(worker_python, "chunk", r.path, "--chunk-size", 32)
    assert run.returncode == 2
    assert run.messages == [run.errors[0]] and run.errors[0]["code"] == RasterError.code and "Assign" in run.errors[0]["message"]


@pytest.mark.parametrize("content, said", [(b"not a raster\n", "exists but is not a raster GDAL can read"), (b"", r"is empty \(0 bytes\): a download or copy"),
                                           (b"II*\x00garbage", "is damaged: GDAL cannot read its header")], ids=["text", "empty", "broken-tiff"])
def test_a_file_gdal_cannot_read_is_explained(tmp_path, content, said):
    path = tmp_path / "layer.tif"
    path.write_bytes(content)
    mode = gdal.GetUseExceptions()
    with pytest.raises(RasterError, match=said):
        RasterSource(str(path))
    assert gdal.GetUseExceptions() == mode  # the engine leaves GDAL's global error mode as it found it


def test_a_named_pipe_is_refused_rather_than_read_for_ever(tmp_path):
    os.mkfifo(tmp_path / "ESP_000001_1000_RED.tif")
    with pytest.raises(RasterError, match="is a named pipe, not a file: reading it would wait for whatever writes into it"):
        RasterSource(str(tmp_path / "ESP_000001_1000_RED.tif"))


def test_a_truncated_file_opens_but_its_reads_say_it_is_damaged(make_raster, tmp_path):
    whole = make_raster(width=256, height=256)
    cut = tmp_path / "cut.tif"
    cut.write_bytes(open(whole.path, "rb").read()[: os.path.getsize(whole.path) // 2])
    with RasterSource(str(cut)) as source:
        assert source.read(0, 0, 64, 64, 64, 64)[1].all()  # the first tiles survived the cut
        with pytest.raises(DamagedRasterError, match=r"is damaged: .*IReadBlock failed.*download it again"):
            source.overview()


@pytest.mark.parametrize("data_type", [gdal.GDT_CInt16, gdal.GDT_CFloat32])
def test_complex_pixels_are_refused(tmp_path, data_type):
    path = str(tmp_path / "values.tif")
    dataset = gdal.GetDriverByName("GTiff").Create(path, 16, 16, 1, data_type)
    dataset.SetProjection(helpers.mars_equirectangular_wkt())
    dataset = None
    with pytest.raises(RasterError, match=r"holds complex values .*not the DNs or I/F of a HiRISE image"):
        RasterSource(path)


@pytest.mark.parametrize("name, data_type, unit, refused", [
    ("DTEEC_002118_1510_003405_1510_A01.tif", gdal.GDT_Float32, "", "so its name says"),
    ("crater-DEM.tif", gdal.GDT_Int16, "", "so its name says"),
    ("heights.tif", gdal.GDT_Float32, "meters", "its values are in meters"),
    ("heights.tif", gdal.GDT_Float32, "km", "its values are in km"),
    ("ESP_011605_1170_RED.cal.tif", gdal.GDT_Float32, "", ""),  # I/F from ISIS3
    ("ESP_011605_1170_RED.tif", gdal.GDT_Float64, "", ""),
    ("DEMOCRITUS_RED.tif", gdal.GDT_UInt16, "", ""),  # DEM inside a word is not an elevation model's name
])
def test_an_elevation_model_is_refused_and_a_float_image_read(tmp_path, name, data_type, unit, refused):
    path = str(tmp_path / name)
    dataset = gdal.GetDriverByName("GTiff").Create(path, 16, 16, 1, data_type)
    dataset.SetGeoTransform(helpers.default_geotransform(16, 16))
    dataset.SetProjection(helpers.mars_equirectangular_wkt())
    dataset.GetRasterBand(1).SetUnitType(unit)
    dataset = None
    if refused:
        with pytest.raises(RasterError, match=rf"is an elevation model \({refused}.*read them as brightness"):
            RasterSource(path)
    else:
        RasterSource(path).close()


def test_isis_special_pixels_of_a_float_image_are_read_for_what_they_mean(tmp_path):
    """ISIS3 marks null and saturated pixels next to -3.4e38 and GDAL declares only the null one: the
    null and NaN are no-data, a saturated pixel reads as the brightest measured pixel of its window,
    and none is averaged into a decimated read."""
    values = np.full((16, 16), 0.12, np.float32)
    values[12, 12] = 0.3  # the brightest measured pixel
    values[0, 0] = helpers.ISIS_NULL  # the declared no-data
    values[0, 5] = helpers.ISIS_HIGH_INSTRUMENT_SATURATION
    values[9, 9] = np.nan
    path = helpers.write_geotiff(tmp_path / "cube.tif", [values], "Float32", helpers.default_geotransform(16, 16),
                                 helpers.mars_equirectangular_wkt(), nodata=helpers.ISIS_NULL)
    with RasterSource(path) as source:
        data, valid = source.read(0, 0, 16, 16, 16, 16)
        assert (~valid).sum() == 2 and not valid[0, 0] and not valid[9, 9]
        assert data[0, 5] == np.float32(0.3) and data[12, 12] == np.float32(0.3)
        assert np.allclose(data[valid & (data < 0.2)], 0.12) and (valid & (data < 0.2)).sum() == 16 * 16 - 4
        for out_size in (4, 5):  # whole factors, and GDAL's average of the pixels read: never a special one averaged in
            data, valid = source.read(0, 0, 16, 16, out_size, out_size)
            assert valid.all() and data.min() == pytest.approx(0.12) and data.max() < 0.3


@pytest.mark.parametrize("data_type, base, null, low, high", [
    ("Int16", 500, -32768, (-32767, -32766), (-32765, -32764)),  # representation and instrument saturation
    ("UInt16", 500, 0, (1, 2), (65534, 65535)),
    ("Byte", 120, 0, (), (255,)),
])
def test_isis_special_pixels_of_an_integer_cube_are_read_for_what_they_mean(tmp_path, data_type, base, null, low, high):
    """An integer ISIS3 cube keeps the ends of its type for its special pixels; GDAL declares only the
    null. The null is no-data; a saturated pixel was measured beyond the sensor's range, so it reads as
    the darkest or brightest measured pixel of its window. None is averaged in as a DN at the type's end
    (before: a saturated pixel of a signed cube read as the darkest DN there is)."""
    width = height = 48
    values = np.full((height, width), base, dtype=gdal_array.GDALTypeCodeToNumericTypeCode(gdal.GetDataTypeByName(data_type)))
    values[6:8, 6:8] = base + 40  # the brightest measured pixels
    values[1, 2] = values[30:34, 2] = null
    for index, special in enumerate(low + high):
        values[12 + 2 * index, 20:24] = special
    path = str(tmp_path / "cube.cub")
    mem = gdal.GetDriverByName("MEM").Create("", width, height, 1, gdal.GetDataTypeByName(data_type))
    mem.SetGeoTransform(helpers.default_geotransform(width, height))
    mem.SetProjection(helpers.mars_equirectangular_wkt())
    mem.GetRasterBand(1).WriteArray(values)
    gdal.GetDriverByName("ISIS3").CreateCopy(path, mem)
    mem = None
    with RasterSource(path) as source:
        data, valid = source.read(0, 0, width, height, width, height)
        assert (~valid).sum() == 5 and not valid[1, 2] and not valid[30:34, 2].any()
        assert np.isin(values, low).sum() == 0 or (data[np.isin(values, low)] == base).all()
        assert (data[np.isin(values, high)] == base + 40).all()
        for out_size in (12, 16, 10):  # factors 4 and 3 averaged here, 4.8 by GDAL from the pixels read
            data, valid = source.read(0, 0, width, height, out_size, out_size)
            assert valid.all()
            assert data.min() >= base - 1e-3 and data.max() <= base + 40 + 1e-3
        data, valid = source.read(0, 0, width, height, 12, 12)
        assert data[(12 + 2 * len(low)) // 4, 5] > base + 5  # the first high-saturated run, read bright


@pytest.mark.parametrize("width, height, refused", [(1, 1, "smaller"), (63, 63, "smaller"), (64, 1, "strip"), (1, 64, "strip"), (7, 640, "strip"),
                                                    (8, 640, ""), (64, 8, ""), (200, 120, "")])
def test_an_image_smaller_than_one_chunk_both_ways_or_a_sliver_is_refused(width, height, refused):
    said = {"smaller": rf"is {width} x {height} px, smaller than one chunk \(64 x 64 px\)",
            "strip": rf"is {width} x {height} px, a strip narrower than an eighth of a chunk \(8 px at CHUNK_SIZE 64\)"}
    if refused:
        with pytest.raises(RasterError, match=said[refused]):
            imagechecks.check_holds_a_chunk("x.tif", width, height, 64)
    else:
        imagechecks.check_holds_a_chunk("x.tif", width, height, 64)


LOCAL_CRS = 'LOCAL_CS["arbitrary",UNIT["metre",1],AXIS["Easting",EAST],AXIS["Northing",NORTH]]'


def test_only_a_crs_off_mars_is_warned_about():
    earth = osr.SpatialReference()
    earth.ImportFromEPSG(4326)
    assert "radius 6378 km (WGS 84), not on Mars" in imagechecks.not_mars_warning("e.tif", earth.ExportToWkt())
    polar_sphere = osr.SpatialReference()
    polar_sphere.SetGeogCS("Mars polar", "D_Mars", "Mars", 3376200.0, 0.0)
    for wkt in (helpers.mars_equirectangular_wkt(), polar_sphere.ExportToWkt(), ""):
        assert imagechecks.not_mars_warning("m.tif", wkt) == ""
    assert "a local CRS (arbitrary) that lies on no body" in imagechecks.not_mars_warning("l.tif", LOCAL_CRS)
    assert georeference.north_turn(LOCAL_CRS, helpers.default_geotransform(64, 64), 64, 64) is None  # no north to turn
    with pytest.raises(RuntimeError, match="PROJ finds no transformation from arbitrary"):
        georeference.crs_transform(LOCAL_CRS, helpers.mars_equirectangular_wkt())


def _paletted(path, entry):
    """A Byte GeoTIFF on Mars whose band has a 256-entry colour table, entry(index) -> RGB."""
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), 64, 64, 1, gdal.GDT_Byte)
    dataset.SetGeoTransform(helpers.default_geotransform(64, 64))
    dataset.SetProjection(helpers.mars_equirectangular_wkt())
    table = gdal.ColorTable()
    for index in range(256):
        table.SetColorEntry(index, (*entry(index), 255))
    dataset.GetRasterBand(1).SetRasterColorTable(table)
    dataset.GetRasterBand(1).WriteArray(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64))
    dataset = None
    return str(path)


def test_only_a_palette_in_colour_is_warned_about(tmp_path):
    coloured = _paletted(tmp_path / "coloured.tif", lambda i: (i, 255 - i, (7 * i) % 256))
    grey_ramp = _paletted(tmp_path / "grey.tif", lambda i: (i, i, i))
    grey_reversed = _paletted(tmp_path / "reversed.tif", lambda i: (255 - i, 255 - i, 255 - i))
    plain = helpers.generate_raster(tmp_path, width=64, height=64, data_type="Byte").path
    warned = {}
    for path in (coloured, grey_ramp, grey_reversed, plain):
        with raster.RasterSource(path) as source:
            warned[os.path.basename(path)] = imagechecks.palette_warning(path, source.info)
    assert "holds palette indices with a colour table, not brightness" in warned["coloured.tif"]
    assert "gdal_translate -expand gray" in warned["coloured.tif"]
    assert "not brightness" in warned["reversed.tif"]  # brighter with a lower index: the order misleads
    assert warned["grey.tif"] == "" and warned[os.path.basename(plain)] == ""


def test_only_pixels_far_coarser_than_hirise_are_warned_about():
    mars = helpers.mars_equirectangular_wkt()
    for metres in (0.25, 0.5, 1.0, 2.0):
        assert imagechecks.coarse_pixel_warning("r.tif", mars, metres, 1024) == ""
    warning = imagechecks.coarse_pixel_warning("browse.tif", mars, 25.0, 1024)
    assert "'browse.tif' has 25 m pixels, coarser than any HiRISE map product (0.25-2 m), so each 1024-px chunk spans 25.6 km" in warning
    assert "detect on the full-resolution product (RDR)" in warning
    geographic = osr.SpatialReference()
    geographic.SetGeogCS("Mars 2000", "D_Mars_2000", "Mars_2000_IAU_IAG", 3396190.0, 169.894447)
    assert imagechecks.coarse_pixel_warning("g.tif", geographic.ExportToWkt(), 5e-6, 1024) == ""  # 0.30 m at the equator
    assert "has 593 m pixels" in imagechecks.coarse_pixel_warning("g.tif", geographic.ExportToWkt(), 0.01, 1024)
    assert imagechecks.coarse_pixel_warning("n.tif", "", 100.0, 1024) == ""


def test_only_pixels_far_longer_one_way_on_the_ground_are_warned_about():
    """Degrees of longitude shrink with latitude: an image reprojected to them at HiRISE's latitudes
    is squashed when read as square pixels. Square pixels, in metres or in degrees at the equator, are not."""
    geographic = osr.SpatialReference()
    geographic.SetGeogCS("Mars 2000", "D_Mars_2000", "Mars_2000_IAU_IAG", 3396190.0, 169.894447)
    degrees = geographic.ExportToWkt()
    step = 1e-5  # 0.59 m of latitude
    at = lambda latitude: (10.0, step, 0.0, latitude + 1000 * step, 0.0, -step)  # noqa: E731 (2000 rows centred on it)
    warning = imagechecks.squashed_pixel_warning("geo.tif", degrees, at(-55.0), 3000, 2000)
    assert "'geo.tif' has pixels 0.34 m wide and 0.593 m tall on the ground at -55.0 deg latitude (1.74 to 1)" in warning
    assert "gdalwarp -t_srs '+proj=eqc +lat_ts=-55 +R=3396190' -tr 0.34 0.34 IN.tif OUT.tif" in warning
    assert imagechecks.squashed_pixel_warning("geo.tif", degrees, at(0.0), 3000, 2000) == ""
    mars = helpers.mars_equirectangular_wkt()
    assert imagechecks.squashed_pixel_warning("r.tif", mars, helpers.default_geotransform(3000, 2000), 3000, 2000) == ""
    assert "(2.00 to 1)" in imagechecks.squashed_pixel_warning("r.tif", mars, (0.0, 0.5, 0.0, 0.0, 0.0, -1.0), 3000, 2000)
    assert imagechecks.squashed_pixel_warning("r.tif", mars, (0.0, 0.5, 0.0, 0.0, 0.0, -0.55), 3000, 2000) == ""  # within 15 per cent
    assert imagechecks.squashed_pixel_warning("n.tif", "", (0.0, 0.5, 0.0, 0.0, 0.0, -1.0), 3000, 2000) == ""


@pytest.mark.parametrize("longitude, turned", [(0.0, 0.0), (10.0, 10.0), (30.0, 30.0), (150.0, 150.0), (240.0, -120.0)])
def test_north_at_the_centre_of_a_polar_stereographic_image_turns_with_its_longitude(longitude, turned):
    """HiRISE maps poleward of 65 deg in polar stereographic on the 0 meridian: north is up only there. A
    small turn passes, a moderate one is warned about, one beyond 45 deg refused like a south-up file."""
    wkt, gt = helpers.south_polar_stereographic(longitude)
    turn = georeference.north_turn(wkt, gt, 256, 256)
    assert turn.degrees == pytest.approx(turned, abs=0.5) and turn.latitude == pytest.approx(-67.0, abs=0.01)
    assert turn.longitude == pytest.approx(longitude, abs=0.01)
    warning = georeference.north_turn_warning("p.tif", wkt, gt, 256, 256)
    if abs(turned) <= 15:
        assert warning == ""
        georeference.check_north_up("p.tif", gt, wkt, 256, 256)
        return
    side = "clockwise" if turned > 0 else "anticlockwise"
    assert f"At the centre of 'p.tif' (-67.0 deg, {longitude:.1f} deg E) north points {abs(turned):.0f} deg {side} from the image's up" in warning
    fix = f"gdalwarp -t_srs '+proj=stere +lat_0=-90 +lon_0={longitude:.3f} +k=1 +R=3396190 +units=m' IN.tif OUT.tif"
    assert fix in warning
    if abs(turned) <= 45:
        georeference.check_north_up("p.tif", gt, wkt, 256, 256)
    else:
        with pytest.raises(RasterError, match="would see it turned that far") as refused:
            georeference.check_north_up("p.tif", gt, wkt, 256, 256)
        assert fix in str(refused.value)


@pytest.mark.parametrize("central_meridian, centre_longitude, expected_longitude", [(180.0, 0.0, 0.0), (180.0, 0.01, 0.01), (0.0, 350.0, 350.0)])
def test_north_is_up_in_an_equirectangular_map_beyond_its_antimeridian(tmp_path, central_meridian, centre_longitude, expected_longitude):
    """An image across its CRS's antimeridian (eastings beyond pi R), or an ISIS3 map of longitudes 0-360 on
    meridian 0, is north-up: it was taken for a polar map turned 90 deg and read through a warped view
    (3 of 6 chunks dropped, or "no chunk has image data")."""
    srs = osr.SpatialReference()
    srs.SetGeogCS("Mars 2000 sphere", "D_Mars_2000_Sphere", "Mars_2000_Sphere", 3396190.0, 0.0)
    srs.SetEquirectangular2(0.0, central_meridian, 0.0, 0.0, 0.0)
    easting = np.radians(centre_longitude - central_meridian + (360.0 if centre_longitude < central_meridian else 0.0)) * 3396190.0
    northing = np.radians(-40.0) * 3396190.0
    geotransform = (easting - 512 * 0.5, 0.5, 0.0, northing + 512 * 0.5, 0.0, -0.5)
    turn = georeference.north_turn(srs.ExportToWkt(), geotransform, 1024, 1024)
    assert turn.degrees == pytest.approx(0.0, abs=0.01) and turn.map_degrees == pytest.approx(0.0, abs=0.01)
    assert turn.latitude == pytest.approx(-40.0, abs=0.01) and turn.longitude == pytest.approx(expected_longitude, abs=0.01)
    path = helpers.write_geotiff(tmp_path / "across.tif", [helpers.textured(1024, 1024, np.random.default_rng(2), 200, 900)], "UInt16",
                                 geotransform, srs.ExportToWkt())
    with raster.north_up_view(path, 0, lambda message: pytest.fail(f"said {message!r}")) as read:
        assert read == path  # read as it is, not through a view


def test_the_warned_reprojection_puts_north_up(tmp_path):
    """The command the warning gives makes north point up at the image's centre."""
    wkt, gt = helpers.south_polar_stereographic(150.0)
    turned = helpers.write_geotiff(tmp_path / "turned.tif", np.full((256, 256), 500), "UInt16", gt, wkt)
    with pytest.raises(RasterError) as refused:
        georeference.check_north_up(turned, gt, wkt, 256, 256)
    target = str(refused.value).split("gdalwarp -t_srs '")[1].split("'")[0]
    warped = gdal.Warp(str(tmp_path / "north_up.tif"), turned, dstSRS=target)
    turn = georeference.north_turn(warped.GetProjection(), warped.GetGeoTransform(), warped.RasterXSize, warped.RasterYSize)
    assert abs(turn.degrees) < 0.5
    warped = None


def test_a_far_turned_raster_is_read_through_a_north_up_view_that_is_gone_afterwards(tmp_path):
    wkt, gt = helpers.south_polar_stereographic(150.0)
    turned = helpers.write_geotiff(tmp_path / "turned.tif", np.full((256, 256), 500), "UInt16", gt, wkt)
    said = []
    with raster.north_up_view(turned, log=said.append) as view:
        assert view.startswith("/vsimem/hiriseice/") and view.endswith("/turned.vrt")
        with RasterSource(view) as source:
            info = source.info
        assert abs(georeference.north_turn(info.crs_wkt, info.geotransform, info.width, info.height).degrees) < 0.5
        assert info.image_id == "turned"
    assert gdal.VSIStatL(view) is None
    assert len(said) == 1 and "north points 150 deg clockwise" in said[0] and "+lon_0=150.000" in said[0]
    north_up = helpers.write_geotiff(tmp_path / "north_up.tif", np.full((256, 256), 500), "UInt16", helpers.default_geotransform(256, 256), helpers.mars_equirectangular_wkt())
    for path in (north_up, str(tmp_path / "missing.tif")):  # as it is: north up, or for detect to name what is wrong
        with raster.north_up_view(path, log=said.append) as view:
            assert view == path
    assert len(said) == 1


def test_a_north_up_view_reads_chunks_at_the_network_scale_as_the_block_means_of_the_ground(tmp_path):
    """Upside down in HiRISE's polar map at 180 deg E, 250 px (no whole number of 4-px cells): the view is
    the ground, north-up, grown to whole 16-px cells, and a chunk read at a quarter of its pixels comes
    from an overview warped straight to that scale whose cells fall on the ground's 4 x 4 blocks."""
    rng = np.random.default_rng(5)
    ground = rng.integers(100, 900, (250, 250)).astype(np.uint16)
    on_its_meridian, gt = helpers.south_polar_stereographic(180.0, width=250, height=250, central_meridian=180.0)
    hirise_map, _ = helpers.south_polar_stereographic(180.0, width=250, height=250)
    x0, pixel, _, y0, _, negative_height = gt
    product = helpers.write_geotiff(tmp_path / "ESP_000007_1130_RED.tif", ground[::-1, ::-1], "UInt16",
                                    (-x0 - 250 * pixel, pixel, 0.0, -y0 - 250 * negative_height, 0.0, negative_height), hirise_map)
    with raster.north_up_view(product) as view, RasterSource(view) as source:
        band = source._ds.GetRasterBand(1)
        assert (source._ds.RasterXSize, source.info.width, band.DataType, source.info.data_type) == (256, 250, gdal.GDT_Float32, "UInt16")
        assert band.GetOverviewCount() == len(raster.VIEW_OVERVIEW_FACTORS)
        assert source.info.geotransform == pytest.approx(gt, abs=1e-6)
        for x_off, y_off in ((0, 0), (64, 96), (96, 64)):
            data, valid = source.read(x_off, y_off, 128, 128, 32, 32)
            want = ground[y_off:y_off + 128, x_off:x_off + 128].astype(np.float64).reshape(32, 4, 32, 4).mean(axis=(1, 3))
            assert valid.all() and np.abs(data - want).max() < 1e-3


def test_north_is_up_in_the_equirectangular_maps_of_hirise_and_unknown_without_a_crs():
    gt = helpers.default_geotransform(300, 200)
    assert georeference.north_turn(helpers.mars_equirectangular_wkt(), gt, 300, 200).degrees == pytest.approx(0.0, abs=1e-6)
    assert georeference.north_turn("", gt, 300, 200) is None


MARS_RADIUS_M = 3396190.0


@pytest.mark.parametrize("crs, x, y, pixel, step", [
    ("IAU_2015:49900", -10.0, -50.0, 1e-4, 1e-4),  # longitude east: x grows to the right
    ("IAU_2015:49901", 10.0, -50.0, 1e-4, -1e-4),  # longitude west: x, the west longitude, shrinks to the right
    ("IAU_2015:49911", MARS_RADIUS_M * math.radians(10.0), MARS_RADIUS_M * math.radians(-50.0), 6.0, -6.0),  # westing
])
def test_a_crs_counting_longitude_west_places_the_image_where_qgis_draws_it(crs, x, y, pixel, step):
    """QGIS draws x as the east-west axis in every CRS. GDAL's traditional order swaps only latitude-first CRSs that
    count longitude east, so an image in IAU_2015:49901 (Ographic, longitude west) had its latitude read from x: the survey
    put a 10 deg W, 50 deg S image at 50 deg E, 10 deg N. The report's centre and north's longitude count east."""
    from model.products import MARS_GEOGCS_WKT

    srs = osr.SpatialReference()
    assert srs.SetFromUserInput(crs) == 0
    wkt = srs.ExportToWkt()
    gt = (x - 128 * step, step, 0.0, y + 128 * pixel, 0.0, -pixel)
    centre = georeference.image_centre({"geotransform": gt, "width": 256, "height": 256, "crs_wkt": wkt})
    assert (centre["lon"] % 360.0, centre["lat"]) == (pytest.approx(350.0, abs=1e-3), pytest.approx(-50.0, abs=1e-3))
    survey = georeference.crs_transform(wkt, MARS_GEOGCS_WKT).TransformPoint(*gdal.ApplyGeoTransform(gt, 128, 128))
    assert (survey[0] % 360.0, survey[1]) == (pytest.approx(350.0, abs=1e-3), pytest.approx(-50.0, abs=1e-3))
    turn = georeference.north_turn(wkt, gt, 256, 256)
    assert (turn.degrees, turn.longitude) == (pytest.approx(0.0, abs=0.1), pytest.approx(350.0, abs=1e-3))


def _empty_geotiff(path, width, height, data_type, block_height):
    """A sparse tiled GeoTIFF: GDAL writes no tile of it, so any size is cheap."""
    options = ["TILED=YES", "BLOCKXSIZE=256", f"BLOCKYSIZE={block_height}", "SPARSE_OK=TRUE"]
    ds = gdal.GetDriverByName("GTiff").Create(str(path), width, height, 1, data_type, options)
    ds.SetGeoTransform([0, 1, 0, 0, 0, -1])
    ds.SetProjection(helpers.mars_equirectangular_wkt())
    ds = None
    return str(path)


def test_the_block_cache_holds_one_row_of_chunks(tmp_path):
    path = _empty_geotiff(tmp_path / "wide.tif", 40_000, 3_000, gdal.GDT_UInt16, 256)
    with RasterSource(path) as source:
        assert source.grid_cache_bytes(1024, 256) == (1024 + 256) * 40_000 * 2
    with RasterSource(_empty_geotiff(tmp_path / "narrow.tif", 2_000, 3_000, gdal.GDT_UInt16, 256)) as source:
        assert source.grid_cache_bytes(1024, 256) == raster.BLOCK_CACHE_FLOOR
    path = _empty_geotiff(tmp_path / "huge.tif", 400_000, 3_000, gdal.GDT_UInt16, 256)
    with RasterSource(path) as source:
        assert source.grid_cache_bytes(1024, 256) == raster.BLOCK_CACHE_CEILING


def test_the_block_cache_holds_one_row_of_chunks_at_the_level_read(tmp_path):
    """With overviews the decimated reads come from the coarsest level no coarser than the chunks'
    decimation: a row of chunks there is what the grid can reuse, not one at full resolution."""
    path = _empty_geotiff(tmp_path / "huge.tif", 400_000, 3_000, gdal.GDT_UInt16, 256)
    ds = gdal.Open(path, gdal.GA_Update)
    ds.BuildOverviews("NONE", [2, 4, 8])
    block = [ds.GetRasterBand(1).GetOverview(i).GetBlockSize()[1] for i in range(3)]
    ds = None
    with RasterSource(path) as source:
        assert source.grid_cache_bytes(1024, 256) == (256 + block[1]) * 100_000 * 2  # 4x: the 4x level
        assert source.grid_cache_bytes(1024, 384) == (512 + block[0]) * 200_000 * 2  # 2.7x: the 2x level
        assert source.grid_cache_bytes(1024, 1024) == raster.BLOCK_CACHE_CEILING  # full resolution


def test_the_block_cache_is_set_for_the_run_and_restored_unless_the_user_chose():
    before = gdal.GetCacheMax()
    with gdalstate.block_cache(40 << 20) as note:
        assert gdal.GetCacheMax() == 40 << 20 and "40 MB (a row of chunks" in note
    assert gdal.GetCacheMax() == before
    gdal.SetConfigOption("GDAL_CACHEMAX", "64")
    try:
        with gdalstate.block_cache(40 << 20) as note:
            assert gdal.GetCacheMax() == before and "GDAL_CACHEMAX as set" in note
    finally:
        gdal.SetConfigOption("GDAL_CACHEMAX", None)


def test_each_reading_thread_gets_its_own_handle(tmp_path):
    assert raster.reading_threads() == min(raster.MAX_READERS, os.cpu_count() // 2 + 1) >= 1
    with RasterSource(_empty_geotiff(tmp_path / "tiled.tif", 2_000, 3_000, gdal.GDT_UInt16, 256)) as source:
        with source.handles(2) as (first, second):
            assert first is source and second is not source and second.info == source.info
            assert second.read(0, 0, 64, 64, 16, 16)[0].shape == (16, 16)
        assert second._ds is None and source._ds is not None  # the extra handle closed, the source still open


def test_chunks_read_by_two_threads_come_in_grid_order_as_one_reads_them(make_raster):
    from model.footprint import ValidityMosaic

    r = make_raster(width=700, height=520, rotated_border=True, nodata=0, seed=4)
    runs = []
    with RasterSource(r.path) as source:
        for readers in (1, 2):
            mosaic = ValidityMosaic(700, 520, 2.0)
            runs.append(([(s.window, s.valid_fraction, s.data.tobytes(), s.valid.tobytes()) for s in chunking.iter_chunks(source, 64, 32, 0.95, 32, mosaic, readers)], mosaic))
    (one, mosaic_one), (two, mosaic_two) = runs
    assert len(one) > 100 and one == two
    assert np.array_equal(mosaic_one.valid, mosaic_two.valid) and mosaic_one.seen.all()


def test_each_reader_takes_neighbouring_windows_in_runs(make_raster):
    """Two readers deal the windows in runs of READ_RUN (neighbours share a north-up view's overview blocks),
    and the windows still come back in order."""
    taken = []
    windows = list(range(9))

    def read(window):
        taken.append((window, threading.current_thread().name))
        return window

    assert [w for w, _ in raster.read_in_order(windows, [read, read])] == windows
    by = dict(taken)
    assert {by[w] for w in (0, 1)} == {"window-reader-0"} and {by[w] for w in (2, 3)} == {"window-reader-1"}
    assert by[4] == "window-reader-0" and by[8] == "window-reader-0"


PDS3_LABEL = """PDS_VERSION_ID = PDS3
RECORD_TYPE = FIXED_LENGTH
RECORD_BYTES = 128
FILE_RECORDS = 64
^IMAGE = ("{image}", 1)
OBJECT = IMAGE
  LINES = 64
  LINE_SAMPLES = 64
  SAMPLE_TYPE = MSB_UNSIGNED_INTEGER
  SAMPLE_BITS = 16
  BANDS = 1
END_OBJECT = IMAGE
END
"""


def test_a_pds3_image_is_read_through_its_label_and_its_damage_names_the_image(tmp_path):
    """The raw .IMG given alone is told to give the .LBL beside it; a cut .IMG is the file named damaged, not the label."""
    pixels = np.random.default_rng(3).integers(1, 1000, (64, 64)).astype(">u2").tobytes()
    (tmp_path / "whole.IMG").write_bytes(pixels)
    (tmp_path / "whole.LBL").write_text(PDS3_LABEL.format(image="whole.IMG"))
    with pytest.raises(RasterError, match=r"'.*whole\.IMG' holds raw pixels that GDAL reads only through their PDS label: give '.*whole\.LBL' instead"):
        RasterSource(str(tmp_path / "whole.IMG"), require_georeferencing=False)
    (tmp_path / "cut.IMG").write_bytes(pixels[: len(pixels) // 2])
    (tmp_path / "cut.LBL").write_text(PDS3_LABEL.format(image="cut.IMG"))
    with gdalstate.gdal_exceptions(), RasterSource(str(tmp_path / "cut.LBL"), require_georeferencing=False) as source:
        with pytest.raises(DamagedRasterError, match=r"'.*cut\.IMG' \(which '.*cut\.LBL' reads\) is damaged"):
            source.read(0, 0, 64, 64, 64, 64)


@pytest.mark.parametrize("out_side", [64, 16], ids=["read at full scale", "read shrunk"])
def test_an_internal_mask_is_no_data_at_every_scale(tmp_path, out_side):
    """A GeoTIFF with a mask of its own (GDAL_TIFF_INTERNAL_MASK): GDAL applies it to shrunk reads
    only, so at full scale the masked half had been read as image."""
    path = str(tmp_path / "masked.tif")
    with gdalstate.gdal_exceptions():
        gdal.SetConfigOption("GDAL_TIFF_INTERNAL_MASK", "YES")
        try:
            dataset = gdal.GetDriverByName("GTiff").Create(path, 64, 64, 1, gdal.GDT_UInt16)
            dataset.SetGeoTransform(helpers.default_geotransform(64, 64))
            dataset.SetProjection(helpers.mars_equirectangular_wkt())
            dataset.GetRasterBand(1).WriteArray(np.full((64, 64), 500, np.uint16))
            dataset.CreateMaskBand(gdal.GMF_PER_DATASET)
            mask = np.full((64, 64), 255, np.uint8)
            mask[:, :32] = 0
            dataset.GetRasterBand(1).GetMaskBand().WriteArray(mask)
            dataset = None
        finally:
            gdal.SetConfigOption("GDAL_TIFF_INTERNAL_MASK", None)
        with RasterSource(path) as source:
            data, valid = source.read(0, 0, 64, 64, out_side, out_side)
    assert valid.mean() == 0.5 and not valid[:, : out_side // 2].any()
    assert (data[valid] == 500).all() and (data[~valid] == 0).all()


@pytest.mark.parametrize("resampling, skipped", [("NEAREST", True), ("MODE", True), ("AVERAGE", False), ("GAUSS", False), ("BILINEAR", False)])
def test_overviews_that_pick_pixels_are_not_read(tmp_path, resampling, skipped):
    """QGIS's pyramids and gdaladdo build overviews by nearest neighbour unless told otherwise, and a
    GeoTIFF keeps no record of it: read from them, a 2-px bright patch vanished from its chunk."""
    scene = helpers.generate_raster(tmp_path, name=f"{resampling}.tif", width=1025, height=1023, seed=4)  # odd: GDAL's non-whole ratios
    pixels = scene.bands[0].copy()
    pixels[500:502, 500:502] = 1000
    helpers.write_geotiff(scene.path, [pixels], "UInt16", scene.geotransform, scene.crs_wkt)
    with gdalstate.gdal_exceptions():
        with RasterSource(scene.path) as source:
            plain, _ = source.read(256, 256, 512, 512, 64, 64)
        dataset = gdal.Open(scene.path, gdal.GA_Update)
        dataset.BuildOverviews(resampling, [2, 4, 8])
        dataset = None
        with RasterSource(scene.path) as source:
            read, _ = source.read(256, 256, 512, 512, 64, 64)
            assert bool(source.info.overviews_skipped) == skipped
            assert ("its overviews pick pixels instead of averaging them" in source.info.bands_read) == skipped
            with source.handles(3) as handles:  # the reading threads' handles take the first's verdict
                assert all(np.array_equal(handle.read(256, 256, 512, 512, 64, 64)[0], read) for handle in handles[1:])
                assert all(handle.info.overviews_skipped == source.info.overviews_skipped for handle in handles[1:])
    assert np.array_equal(read, plain) == skipped  # else read from the overviews


@pytest.mark.parametrize("replacement", ["same size", "a smaller crop"])
def test_overviews_left_from_another_image_are_not_read(tmp_path, replacement):
    """An external .ovr left beside a file replaced under the same name is no overview of it: read for
    chunks, another image's pyramid made plain terrain score as ice (4 of 4 chunks, mean p 1.0); one left
    by a larger image (replaced by a crop of it) was not even compared, its first level being the crop's size."""
    side = 1024 if replacement == "same size" else 2048
    scene = helpers.generate_raster(tmp_path, name="replaced.tif", width=side, height=side, seed=4)
    with gdalstate.gdal_exceptions():
        dataset = gdal.Open(scene.path)  # read-only: the overviews go to replaced.tif.ovr
        dataset.BuildOverviews("AVERAGE", [2, 4, 8])
        dataset = None
        with RasterSource(scene.path) as source:
            assert not source.info.overviews_skipped  # its own overviews are read
        other = helpers.textured(1024, 1024, np.random.default_rng(7), 200, 500).astype(np.uint16)
        if replacement == "same size":
            dataset = gdal.Open(scene.path, gdal.GA_Update)  # new pixels under the same name; the .ovr stays
            dataset.GetRasterBand(1).WriteArray(other)
            dataset = None
        else:
            crop = helpers.write_geotiff(tmp_path / "crop.tif", [other], "UInt16", scene.geotransform, scene.crs_wkt)
            os.replace(crop, scene.path)  # as mv or a download leaves it; the .ovr stays
        assert os.path.exists(scene.path + ".ovr")
        with RasterSource(scene.path) as source:
            read, _ = source.read(256, 256, 512, 512, 64, 64)
            assert "its overviews do not show the image's own pixels" in source.info.bands_read
    os.remove(scene.path + ".ovr")
    with gdalstate.gdal_exceptions(), RasterSource(scene.path) as source:
        assert np.array_equal(read, source.read(256, 256, 512, 512, 64, 64)[0])  # read from the image itself


def test_a_connection_string_names_the_file_it_reads():
    """GeoPackage tables and NetCDF variables are given as DRIVER:file:name, NetCDF's file in quotes (the
    message listing a file's rasters gave one that was then 'does not exist'); a drive letter is no driver."""
    assert raster.connection_file("GPKG:/data/mosaics.gpkg:red") == "/data/mosaics.gpkg"
    assert raster.connection_file('NETCDF:"/data/two vars.nc":red') == "/data/two vars.nc"
    assert raster.connection_file("C:/data/ESP_011605_1170_RED.tif") == ""
    assert raster.connection_file("/data/ESP_011605_1170_RED.tif") == ""
    assert raster.image_id_of("GPKG:/data/mosaics.gpkg:red") == "mosaics_red"


def test_ground_control_points_that_only_a_warp_fits_are_refused_not_turned(tmp_path):
    """Read without its required georeferencing, such a file is a pixel grid: its CRS once made it
    look south-up, and the north-up view warped it by the GCPs without a word."""
    path = str(tmp_path / "gcps.tif")
    srs = osr.SpatialReference(wkt=helpers.mars_equirectangular_wkt()).CloneGeogCS()
    with gdalstate.gdal_exceptions():
        dataset = gdal.GetDriverByName("GTiff").Create(path, 64, 64, 1, gdal.GDT_UInt16)
        dataset.GetRasterBand(1).WriteArray(np.full((64, 64), 300, np.uint16))
        corners = [(0, 0, 10.0, -50.0), (64, 0, 10.2, -50.05), (0, 64, 9.9, -50.3), (64, 64, 10.4, -50.2)]  # no affine fit
        dataset.SetGCPs([gdal.GCP(lon, lat, 0, col, row) for col, row, lon, lat in corners], srs.ExportToWkt())
        dataset = None
    with raster.north_up_view(path, 0, lambda message: pytest.fail(f"said {message!r}")) as read:
        assert read == path
    with pytest.raises(RasterError, match="ground control points that no shift, scale and rotation fits"):
        RasterSource(path)


def test_the_overviews_of_a_float_band_are_not_read(tmp_path):
    """GDAL's average overviews of I/F had spread a NaN and an ISIS3 saturated value over their blocks: holes,
    where the engine reads those pixels for what they are (no-data, and the brightest measured)."""
    path = str(tmp_path / "iof.tif")
    pixels = np.full((64, 64), 0.05, np.float32)
    pixels[10, 10] = np.nan
    pixels[40, 40] = raster.ISIS_SATURATED[gdal.GDT_Float32][1][0]
    with gdalstate.gdal_exceptions():
        dataset = gdal.GetDriverByName("GTiff").Create(path, 64, 64, 1, gdal.GDT_Float32)
        dataset.SetGeoTransform(helpers.default_geotransform(64, 64))
        dataset.SetProjection(helpers.mars_equirectangular_wkt())
        dataset.GetRasterBand(1).WriteArray(pixels)
        dataset.BuildOverviews("AVERAGE", [2, 4])
        dataset = None
        with RasterSource(path) as source:
            data, valid = source.read(0, 0, 64, 64, 16, 16)
            note = source.info.bands_read
    assert valid.all() and data[10, 10] == pytest.approx(0.05, abs=1e-6), "every block holds measured pixels"
    assert "its overviews are a float band's" in note


STRETCH_IN_ITS_OWN_TYPE = r"""
import json, sys
import numpy as np
from model.preprocess import normalise, to_uint8
rng = np.random.default_rng(0)
differ = 0
for _ in range(200):
    image = (rng.gamma(2.0, 150.0, (64, 64)) + rng.normal(0.0, 3.0, (64, 64))).astype(np.float32)
    low, high = np.percentile(image, [1.0, 99.5])
    expected = np.round(np.clip((image - np.float32(low)) / np.float32(high - low), 0.0, 1.0) * 255).astype(np.uint8)
    differ += int((to_uint8(normalise(image, np.ones(image.shape, bool))) != expected).sum())
print(json.dumps({"numpy": np.__version__, "differ": differ}))
"""


@pytest.mark.parametrize("promotion", ["legacy", "weak"])
def test_a_chunk_is_stretched_in_its_own_float_type_under_numpy_1_and_2(worker_python, promotion):
    """numpy 2 (the worker's on Python 3.13) promotes float32 data minus a float64 percentile to float64, and 2 of these
    819,200 pixels became another 8-bit value than numpy 1 gives and the models were trained on. numpy 1.26 takes numpy 2's
    rule ("weak" promotion, NEP 50) from NPY_PROMOTION_STATE; numpy 2 has no other."""
    import subprocess

    environment = dict(helpers.worker_env(), NPY_PROMOTION_STATE=promotion)
    done = subprocess.run([worker_python, "-c", STRETCH_IN_ITS_OWN_TYPE], cwd=str(helpers.REPO_ROOT), env=environment, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    said = json.loads(done.stdout.strip().splitlines()[-1])
    assert said["differ"] == 0, said


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU sets are Linux's")
def test_a_process_limited_to_one_core_reads_and_surveys_on_one():
    """Under `taskset -c 0` a laptop's detect read on two threads and a survey started a Dask worker per core of the machine."""
    import subprocess
    import sys

    snippet = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
               "from model.raster import reading_threads, usable_cores; print(usable_cores(), reading_threads())")
    done = subprocess.run([sys.executable, "-c", snippet], cwd=str(helpers.REPO_ROOT), capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["1", "1"], done.stderr[-2000:]


def test_a_missing_raster_is_diagnosed_for_the_command_line_as_for_qgis(tmp_path):
    """The command line and the survey had only 'does not exist. Check the path or load the layer again.', QGIS advice;
    QGIS named the broken link and its target."""
    link = tmp_path / "ESP_1_RED.tif"
    link.symlink_to(tmp_path / "unmounted" / "ESP_1_RED.tif")
    with pytest.raises(RasterError, match=r"is a symbolic link to '.*unmounted/ESP_1_RED.tif', which cannot be found. Mount or reconnect the drive"):
        raster.RasterSource(str(link))
    with pytest.raises(RasterError, match=r"cannot be found: there is no file 'gone.tif' in "):
        raster.RasterSource(str(tmp_path / "gone.tif"))
    with pytest.raises(RasterError, match=r"is a folder, not a raster file. Give one file in it, or survey the whole folder"):
        raster.RasterSource(str(tmp_path))
    with pytest.raises(RasterError, match=r"^No raster was given \(its path is empty\)"):  # an unset $IMAGE: not the current folder
        raster.RasterSource("")
    # a connection string names its file, which is what cannot be found
    with pytest.raises(RasterError, match=rf"^'GPKG:{tmp_path}/mosaics.gpkg:red' reads the file '{tmp_path}/mosaics.gpkg', which cannot be found: there is no file"):
        raster.RasterSource(f"GPKG:{tmp_path}/mosaics.gpkg:red")


@pytest.mark.parametrize("pixel, said", [(0.25, " (256 m at 0.25 m/px)"), (25.0, " (25.6 km at 25 m/px)"), (1000.0, " (1,024 km at 1,000 m/px)")])
def test_the_ground_size_of_a_chunk_reads_as_a_geologist_writes_it(pixel, said):
    """A coarse mosaic's chunks had been '1.281e+04 m', then '1.02e+03 km at 1e+03 m/px'."""
    assert imagechecks.ground_size(helpers.mars_equirectangular_wkt(), pixel, 1024) == said

"""The image outline detect reports comes from the chunk reads, not from a second pass over the
image, and matches the outline a decimated read of the whole image gives."""

import numpy as np
import pytest
from osgeo import ogr

import helpers
from model import chunking
from model.footprint import ValidityMosaic
from model.raster import RasterSource


def _outline_from_reads(path, chunk_size, stride, input_size, min_valid=0.95):
    with RasterSource(path) as source:
        mosaic = ValidityMosaic(source.info.width, source.info.height, chunk_size / input_size)
        kept = list(chunking.iter_chunks(source, chunk_size, stride, min_valid, input_size, mosaic))
        chunking.paste_unscored_edges(source, mosaic, chunk_size, stride, input_size)  # as detect does
        return mosaic, kept, source.footprint_wkt(), source.info


@pytest.mark.parametrize("chunk_size, stride, input_size", [(64, 64, 16), (96, 48, 32), (100, 100, 32)])
def test_the_outline_from_the_chunk_reads_matches_the_whole_image_read(make_raster, chunk_size, stride, input_size):
    r = make_raster(width=520, height=390, rotated_border=True)
    mosaic, kept, overview_wkt, info = _outline_from_reads(r.path, chunk_size, stride, input_size)
    assert kept and len(kept) < len(list(chunking.chunk_grid(r.width, r.height, chunk_size, stride)))  # border chunks were read, then dropped
    from_reads = ogr.CreateGeometryFromWkt(mosaic.footprint_wkt(info.geotransform, info.crs_wkt))
    from_overview = ogr.CreateGeometryFromWkt(overview_wkt)
    pixel_area = abs(r.geotransform[1] * r.geotransform[5])
    assert from_reads.GetArea() == pytest.approx(r.valid.sum() * pixel_area, rel=0.03)
    assert from_reads.SymDifference(from_overview).GetArea() < 0.04 * from_overview.GetArea()


def test_a_grid_with_gaps_leaves_the_outline_to_the_whole_image_read(make_raster):
    r = make_raster(width=256, height=256, rotated_border=True)
    mosaic, _, _, info = _outline_from_reads(r.path, 64, 96, 16, min_valid=0.0)
    assert not mosaic.complete
    assert mosaic.footprint_wkt(info.geotransform, info.crs_wkt) is None


def test_an_image_without_valid_pixels_has_no_outline():
    mosaic = ValidityMosaic(64, 64, 4)
    mosaic.paste(0, 0, 64, 64, mosaic.valid[:16, :16].copy())
    assert mosaic.complete and mosaic.footprint_wkt((0, 1, 0, 0, 0, -1), "") == ""


def test_detect_reports_the_outline_on_every_route(worker_python, tiny_model, make_raster, tmp_path):
    """Per chunk, off the score map, and with gaps between the chunks (the whole-image read)."""
    r = make_raster(width=384, height=320, rotated_border=True)
    with RasterSource(r.path) as source:
        expected = ogr.CreateGeometryFromWkt(source.footprint_wkt())
    for extra in (["--scoring", "chunk"], ["--stride", 32, "--scoring", "map"], ["--stride", 96]):
        run = helpers.run_worker(worker_python, "detect", r.path, "--model", tiny_model.path, *extra).check()
        got = ogr.CreateGeometryFromWkt(run.result["summary"]["footprint_wkt"])
        assert got.SymDifference(expected).GetArea() < 0.04 * expected.GetArea(), extra


def test_the_mosaic_stays_small_on_a_whole_observation():
    """A 20,000 x 50,000 RED read at 1024 -> 128 px would be a 2,500 x 6,250 mask; it is kept coarser."""
    mosaic = ValidityMosaic(20000, 50000, 1024 / 128)
    assert max(mosaic.valid.shape) <= 2048 and mosaic.valid.nbytes + mosaic.seen.nbytes < 4e6
    window = np.ones((128, 128), bool)
    for y in range(0, 50000, 1024):
        for x in range(0, 20000, 1024):
            mosaic.paste(x, y, min(1024, 20000 - x), min(1024, 50000 - y), window[: round(min(1024, 50000 - y) / 8), : round(min(1024, 20000 - x) / 8)])
    outline = ogr.CreateGeometryFromWkt(mosaic.footprint_wkt((0, 1, 0, 0, 0, -1), ""))
    assert outline.GetArea() == pytest.approx(20000 * 50000, rel=1e-3)


def test_the_outline_of_an_image_whose_size_is_no_multiple_of_the_reading_scale_ends_at_its_edge(make_raster):
    """The mosaic's last pixel east and south reaches past the image (here 3 of 4 raster pixels): the outline
    ran up to 3.5 m past a real image's edge, and the summary's footprint with it."""
    r = make_raster(width=521, height=391, nodata=None)
    mosaic, _, _, info = _outline_from_reads(r.path, 64, 64, 16, min_valid=0.0)
    outline = ogr.CreateGeometryFromWkt(mosaic.footprint_wkt(info.geotransform, info.crs_wkt))
    (x0, pixel, _, y0, _, negative_height) = r.geotransform
    west, east, south, north = outline.GetEnvelope()
    assert (west, north) == pytest.approx((x0, y0)) and (east, south) == pytest.approx((x0 + 521 * pixel, y0 + 391 * negative_height))
    assert outline.GetArea() == pytest.approx(521 * 391 * abs(pixel * negative_height))


@pytest.mark.parametrize("input_size", [256, 32])
def test_the_outline_of_a_real_product_is_a_valid_polygon_as_written(georef_data, tmp_path, input_size):
    """Each part of an outline is simplified alone and WKT's 15 digits move its vertices: the outline of this real RED
    product at 128-px chunks had parts overlapping by 1e-17 m2 once written, and QGIS's processing refused the summary
    as a clip mask ("invalid geometry")."""
    source = georef_data / "ESP_037156_1800_RED.byte.tif"
    if not source.is_file():
        pytest.skip(f"{source} is absent from the shared data")
    copy = tmp_path / source.name  # read from a copy: GDAL may leave an .aux.xml beside what it opens
    copy.write_bytes(source.read_bytes())
    mosaic, _kept, whole, info = _outline_from_reads(str(copy), 128, 128, input_size)
    written = mosaic.footprint_wkt(info.geotransform, info.crs_wkt)
    read_back = ogr.CreateGeometryFromWkt(written)
    assert read_back.IsValid(), written[:200]
    assert read_back.GetArea() == pytest.approx(ogr.CreateGeometryFromWkt(whole).GetArea(), rel=0.05)


def test_the_unscored_edge_sliver_pastes_its_own_no_data_into_the_outline(tmp_path):
    """The 6-px sliver east of the last chunk column is read for the outline alone: read with its width and height
    swapped, a sliver whose top quarter is no-data was pasted as valid all down, and the outline covered the no-data."""
    pixels = np.full((256, 262), 500, np.uint16)
    pixels[:64, 256:] = 0  # the sliver's top quarter: no-data
    path = helpers.write_geotiff(tmp_path / "sliver.tif", pixels, "UInt16", helpers.default_geotransform(262, 256), helpers.mars_equirectangular_wkt(), nodata=0)
    mosaic, _kept, _whole, _info = _outline_from_reads(path, 64, 64, 16)
    column = mosaic.valid[:, -1]  # the sliver, at the reading scale (4 px a mosaic pixel)
    assert not column[:16].any() and column[16:].all(), column.astype(int).tolist()


def test_specks_in_the_border_and_pinholes_leave_the_outline_one_polygon():
    """A lossy product's noise left valid specks in the no-data border and pinholes in the image: a real RED's outline
    was 142 parts with 35 holes, drawn as specks in the map's border. Two real halves of an image both stay."""
    from model.footprint import footprint_from_mask

    valid = np.zeros((200, 300), bool)
    valid[40:160, 50:250] = True
    rng = np.random.default_rng(3)
    for y, x in rng.integers(0, 30, size=(25, 2)):
        valid[y, x] = valid[199 - y, 299 - x] = True  # specks in the border
    valid[39, 49] = valid[160, 250] = True  # specks touching the image at a corner only: apart, as Polygonize sees them
    valid[100, 100] = valid[80:82, 200:202] = False  # pinholes
    outline = ogr.CreateGeometryFromWkt(footprint_from_mask(valid, (0, 1, 0, 0, 0, -1), 300, 200, ""))
    assert ogr.GT_Flatten(outline.GetGeometryType()) == ogr.wkbPolygon and outline.GetGeometryCount() == 1, outline.ExportToWkt()[:300]
    assert outline.GetArea() == pytest.approx(120 * 200, rel=0.01)

    halves = np.zeros((200, 300), bool)
    halves[20:180, 10:140] = halves[20:180, 160:290] = True
    outline = ogr.CreateGeometryFromWkt(footprint_from_mask(halves, (0, 1, 0, 0, 0, -1), 300, 200, ""))
    assert outline.GetGeometryCount() == 2 and outline.GetArea() == pytest.approx(2 * 160 * 130, rel=0.01)

    # a real part of 11 x 11 mask pixels beside a large one stays (a share of the mask had sieved it), and an image whose
    # data is all one small part keeps it as its outline
    big = np.zeros((512, 512), bool)
    big[50:450, 50:450] = True
    big[480:491, 480:491] = True
    outline = ogr.CreateGeometryFromWkt(footprint_from_mask(big, (0, 1, 0, 0, 0, -1), 512, 512, ""))
    assert outline.GetGeometryCount() == 2 and outline.GetArea() == pytest.approx(400 * 400 + 11 * 11)
    lone = np.zeros((512, 512), bool)
    lone[100:103, 100:103] = True
    assert ogr.CreateGeometryFromWkt(footprint_from_mask(lone, (0, 1, 0, 0, 0, -1), 512, 512, "")).GetArea() == pytest.approx(9)

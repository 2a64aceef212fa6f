"""hiriseice:chunk through processing.run: the chunk grid in-process (no worker, no TensorFlow)
on generated GeoTIFFs and on the real ISIS3 cubes, with the grid computed independently here."""

import math
import os

import numpy as np
import pytest
from osgeo import gdal, ogr, osr

import helpers
from model import raster
import qgis_support as qs

REAL_CUBES = [
    "PSP_002118_1510_1m_o_forPDS_cropped.cub",
    "PSP_002118_1510_25cm_o_forPDS_cropped.cub",
    "PSP_009404_2635_RED_NLstretch_1m_o_forPDS_cropped.cub",
    "PSP_009404_2635_RED_NLstretch_25cm_o_forPDS_cropped.cub",
]
REAL_COLOR = "ESP_042252_1930_3-BAND_COLOR_2m_o_cropped.cub"


def run_chunk(raster_path, output, **parameters):
    values = {"INPUT": str(raster_path), "CHUNK_SIZE": 64, "OUTPUT": str(output)}
    values.update(parameters)
    results = qs.run_algorithm("hiriseice:chunk", values)
    return results, qs.read_ogr(output)


def windows_of(table):
    return {(r["row"], r["col"], r["x_off"], r["y_off"], r["width"], r["height"]) for r in table.rows}


def check_grid_layer(table, raster_path, image_id):
    """Fields, ids, and every polygon = its pixel window through the raster's geotransform, in the raster's CRS."""
    assert table.field_names == qs.GRID_FIELD_NAMES
    ds = gdal.Open(str(raster_path))
    geotransform = ds.GetGeoTransform()
    for row in table.rows:
        assert row["image_id"] == image_id
        expected = helpers.window_ring_gdal(geotransform, row["x_off"], row["y_off"], row["width"], row["height"])
        qs.assert_ring_equal(qs.outer_ring(row["_wkt"]), expected, 1e-6 * abs(geotransform[1]), f"chunk {row['chunk_id']}")
    raster_srs = osr.SpatialReference(wkt=ds.GetProjection())
    assert qs.normalised_proj(table.srs_proj4) == qs.normalised_proj(raster_srs.ExportToProj4())


# --- generated rasters ---------------------------------------------------------------------------


def test_counts_and_partial_last_row_and_column(qgis_app, make_raster, tmp_path):
    raster = make_raster(width=300, height=200, seed=1)
    results, table = run_chunk(raster.path, tmp_path / "grid.gpkg")
    check_grid_layer(table, raster.path, "raster1")
    windows = windows_of(table)
    assert windows == qs.expected_grid(300, 200, 64)
    assert results["CHUNKS"] == len(table.rows) == 20  # 5 columns x 4 rows
    assert {w[4] for w in windows if w[1] == 4} == {300 - 4 * 64}  # last column 44 px wide
    assert {w[5] for w in windows if w[0] == 3} == {200 - 3 * 64}  # last row 8 px high
    assert all(r["chunk_id"] == r["row"] * 5 + r["col"] for r in table.rows)
    assert all(r["valid_fraction"] == 1.0 and r["centre_valid_fraction"] == 1.0 for r in table.rows)
    # The grid style is stored with the data.
    styles = qs.layer_styles(tmp_path / "grid.gpkg")
    assert [(s["styleName"], s["useAsDefault"]) for s in styles] == [("HiRISE chunk grid", 1)]


def test_the_log_gives_the_chunks_ground_size_and_the_edge_pixels_in_no_chunk(qgis_app, make_raster, tmp_path):
    """Both had been said nowhere: a 0.5 m product's 64-px chunks are 32 m, and a 4-px sliver is in no chunk."""
    raster = make_raster(width=260, height=196, seed=1)
    results, table = run_chunk(raster.path, tmp_path / "grid.gpkg")
    assert len(table.rows) == 12  # 4 x 3: the slivers are not chunks
    log = results["_feedback"].text
    assert "12 grid chunks of 64 px (32 m at 0.5 m/px), stride 64" in log
    assert "4 px along the east edge and 4 px along the south edge lie in no chunk: a partial chunk narrower than an eighth of one (8 px) is not scored" in log


def test_stride_overlap(qgis_app, make_raster, tmp_path):
    raster = make_raster(width=160, height=96, seed=2)
    results, table = run_chunk(raster.path, tmp_path / "overlap.gpkg", STRIDE=32)
    check_grid_layer(table, raster.path, "raster1")
    assert windows_of(table) == qs.expected_grid(160, 96, 64, 32)
    assert [(r["x_off"], r["width"]) for r in sorted(table.rows, key=lambda r: r["chunk_id"]) if r["row"] == 0] == [(0, 64), (32, 64), (64, 64), (96, 64)]
    assert results["CHUNKS"] == 8
    # Neighbours overlap by half a chunk: 32 x 64 pixels of 0.5 m.
    by_position = {(r["row"], r["col"]): ogr.CreateGeometryFromWkt(r["_wkt"]) for r in table.rows}
    assert by_position[(0, 0)].Intersection(by_position[(0, 1)]).GetArea() == pytest.approx(32 * 64 * 0.25)
    assert by_position[(0, 0)].Intersection(by_position[(1, 0)]).GetArea() == pytest.approx(64 * 32 * 0.25)


def test_stride_larger_than_the_chunk_leaves_gaps_but_no_empty_window(qgis_app, make_raster, tmp_path):
    raster = make_raster(width=300, height=128, seed=3)
    results, table = run_chunk(raster.path, tmp_path / "gaps.gpkg", STRIDE=100)
    assert windows_of(table) == qs.expected_grid(300, 128, 64, 100) == {(r, c, 100 * c, 100 * r, 64, min(64, 128 - 100 * r)) for r in range(2) for c in range(3)}
    assert results["CHUNKS"] == 6
    assert all(r["chunk_id"] == r["row"] * 3 + r["col"] for r in table.rows), "chunk_id counts a column that does not exist"
    assert "6 of 6 chunks hold data" in results["_feedback"].text
    warned = [w for w in results["_feedback"].warnings if "STRIDE 100 is larger than the chunk size 64" in w]
    assert len(warned) == 1 and "a strip of 36 px" in warned[0] and "about 59% of the image" in warned[0], results["_feedback"].warnings
    covered, _ = run_chunk(raster.path, tmp_path / "covered.gpkg", STRIDE=64)
    assert not [w for w in covered["_feedback"].warnings if "STRIDE" in w]


@pytest.mark.parametrize(
    "min_valid, dropped",
    [(0.95, {(0, 0), (1, 0), (2, 0), (1, 2)}), (0.5, {(0, 0), (1, 0), (2, 0)}), (0.0, {(0, 0), (1, 0), (2, 0)})],
)
def test_min_valid_drops_chunks_with_no_data_around_their_centre(qgis_app, tmp_path, min_valid, dropped):
    path = helpers.write_geotiff(tmp_path / "holes.tif", helpers.no_data_layout(), "UInt16", helpers.default_geotransform(256, 192), helpers.mars_equirectangular_wkt(), nodata=0)
    results, table = run_chunk(path, tmp_path / "kept.gpkg", MIN_VALID=min_valid)
    check_grid_layer(table, path, "holes")
    kept = {(r["row"], r["col"]) for r in table.rows}
    assert kept == {(r, c) for r in range(3) for c in range(4)} - dropped
    assert results["CHUNKS"] == len(kept)
    rows = {(r["row"], r["col"]): r for r in table.rows}
    ring_chunk = rows[(0, 3)]
    assert ring_chunk["centre_valid_fraction"] == 1.0
    assert ring_chunk["valid_fraction"] == pytest.approx(48 * 48 / 64 / 64, abs=1e-4)
    if (1, 2) in rows:
        assert rows[(1, 2)]["centre_valid_fraction"] == pytest.approx(0.5, abs=1e-4)
        assert rows[(1, 2)]["valid_fraction"] == pytest.approx(1 - 32 * 16 / 64 / 64, abs=1e-4)


def test_rotated_footprint_border_chunks(qgis_app, make_raster, tmp_path):
    """A rotated RDR-like footprint: border chunks go, and the kept chunks' shares match the mask computed here."""
    raster = make_raster(width=384, height=320, rotated_border=True, seed=5)
    _, strict = run_chunk(raster.path, tmp_path / "strict.gpkg", MIN_VALID=0.95)
    _, loose = run_chunk(raster.path, tmp_path / "loose.gpkg", MIN_VALID=0.0)
    strict_ids = {r["chunk_id"] for r in strict.rows}
    loose_ids = {r["chunk_id"] for r in loose.rows}
    assert strict_ids < loose_ids <= set(range(30))
    for row in loose.rows:
        x, y = row["x_off"], row["y_off"]
        whole = raster.valid[y: y + 64, x: x + 64].mean()
        centre = raster.valid[y + 16: y + 48, x + 16: x + 48].mean()
        assert row["valid_fraction"] == pytest.approx(whole, abs=0.02)
        assert row["centre_valid_fraction"] == pytest.approx(centre, abs=0.02)
        assert (row["chunk_id"] in strict_ids) == (row["centre_valid_fraction"] >= 0.95)
    # The corners of the raster lie outside the footprint.
    assert not {0, 5, 24, 29} & strict_ids


def test_a_rotated_raster_is_chunked_over_all_its_pixels(qgis_app, make_raster, tmp_path):
    """QGIS shows such a raster warped north-up; the chunks must still be the file's own pixel grid
    (issue 9: only 68.5 % of a rotated image was scored), each polygon its window through the
    file's geotransform."""
    x0, pixel, _, y0, _, _ = helpers.default_geotransform(300, 200)
    c, s = math.cos(math.radians(15)), math.sin(math.radians(15))
    raster = make_raster(width=300, height=200, geotransform=(x0, pixel * c, pixel * s, y0, pixel * s, -pixel * c), seed=9)
    results, table = run_chunk(raster.path, tmp_path / "grid.gpkg")
    assert windows_of(table) == qs.expected_grid(300, 200, 64) and results["CHUNKS"] == 20
    check_grid_layer(table, raster.path, "raster1")


def test_a_south_up_raster_is_chunked_as_detect_reads_it_north_up(qgis_app, make_raster, tmp_path):
    """Detect reads a file stored south-up through a north-up view of its own map; Chunk cuts the same
    grid: every chunk over all the pixels, each polygon its window of the north-up twin."""
    north_up = make_raster(width=300, height=200, seed=9)
    x0, pixel, _, y0, _, _ = north_up.geotransform
    flipped = helpers.write_geotiff(tmp_path / "raster_south_up.tif", gdal.Open(north_up.path).ReadAsArray()[::-1], "UInt16",
                                    (x0, pixel, 0.0, y0 - 200 * pixel, 0.0, pixel), north_up.crs_wkt)
    results, table = run_chunk(flipped, tmp_path / "grid.gpkg", EXPORT_FOLDER=str(tmp_path / "chunks"))
    assert windows_of(table) == qs.expected_grid(300, 200, 64) and results["CHUNKS"] == 20
    check_grid_layer(table, north_up.path, "raster_south_up")
    # exported from the view as the file's own UInt16 pixels, and with none of the view's own metadata
    check_exported_chunks(tmp_path / "chunks", north_up.path, table, "raster_south_up")
    first = gdal.Open(str(tmp_path / "chunks" / "raster_south_up_r000_c000.tif"))
    assert first.GetRasterBand(1).DataType == gdal.GDT_UInt16 and not first.GetMetadata(raster.VIEW_DOMAIN)
    # the worker's command line cuts the same grid (it had numbered the chunks from the file's south edge)
    helpers.run_worker(helpers.worker_python_path(), "chunk", flipped, "--chunk-size", 64, "--out", tmp_path / "cli.gpkg").check()
    check_grid_layer(qs.read_ogr(tmp_path / "cli.gpkg"), north_up.path, "raster_south_up")


@pytest.mark.parametrize("algorithm", ["hiriseice:chunk", "hiriseice:detect"])
def test_a_south_up_raster_in_an_iau_crs_keeps_its_crs_in_the_geopackage(qgis_app, make_raster, tiny_model, tmp_path, algorithm):
    """A turned raster's layers took the north-up view's CRS as QGIS read it, IAU_2015:49910 for a file written with
    that code, and a GeoPackage with an IAU CRS reopens in QGIS 3.22 without one: the map lost Mars."""
    from qgis.core import QgsVectorLayer

    iau = osr.SpatialReference()
    iau.SetFromUserInput("IAU_2015:49910")
    north_up = make_raster(width=300, height=200, seed=9)
    x0, pixel, _, y0, _, _ = north_up.geotransform
    flipped = helpers.write_geotiff(tmp_path / "raster_south_up.tif", gdal.Open(north_up.path).ReadAsArray()[::-1], "UInt16",
                                    (x0, pixel, 0.0, y0 - 200 * pixel, 0.0, pixel), iau.ExportToWkt())
    out = tmp_path / "layers.gpkg"
    parameters = {"INPUT": flipped, "CHUNK_SIZE": 64, "OUTPUT": str(out)}
    if algorithm == "hiriseice:detect":
        parameters.update(MODEL=tiny_model.path, SUMMARY=qs.gpkg_destination(out, "summary"))
    qs.run_algorithm(algorithm, parameters)
    for name in ["layers"] + (["summary"] if algorithm == "hiriseice:detect" else []):
        layer = QgsVectorLayer(f"{out}|layername={name}", name, "ogr")
        assert layer.isValid() and layer.crs().isValid(), (name, layer.crs().toWkt())
        assert "+R=3396190" in layer.crs().toProj() and "+proj=eqc" in layer.crs().toProj(), layer.crs().toProj()


@pytest.mark.parametrize("code", ["IAU_2015:49910", "IAU_2015:49900"])
def test_a_raster_given_an_iau_code_is_chunked_in_its_crs(qgis_app, make_raster, tmp_path, code):
    """gdal_translate -a_srs IAU_2015:49910, as the refusal of a raster without a CRS advises, writes a VRT whose WKT
    carries the IAU code; QGIS 3.22 cannot look that up ('crs not found') and the raster was refused as having no CRS."""
    srs = osr.SpatialReference()
    srs.SetFromUserInput(code)
    raster = make_raster(width=256, height=192, seed=5)
    if srs.IsGeographic():  # the same pixels placed in degrees near 50 deg S
        ds = gdal.Open(raster.path, gdal.GA_Update)
        ds.SetGeoTransform((20.0, 1e-4, 0.0, -50.0, 0.0, -1e-4))
        ds = None
    given = tmp_path / "given_a_code.vrt"
    gdal.Translate(str(given), raster.path, format="VRT", outputSRS=code)
    assert 'AUTHORITY["IAU"' in gdal.Open(str(given)).GetProjection()
    results, table = run_chunk(given, tmp_path / "grid.gpkg")
    assert results["CHUNKS"] == 12
    check_grid_layer(table, given, "given_a_code")


def test_a_header_claiming_far_more_pixels_than_any_hirise_product_is_refused_as_detect_refuses_it(qgis_app, make_raster, tmp_path):
    """detect refused a damaged header's claim of 2e9 px square at once; chunk built its grid of windows for ever."""
    raster = make_raster(width=128, height=128)
    claims = tmp_path / "claims.vrt"
    gdal.Translate(str(claims), raster.path, format="VRT")
    text = claims.read_text(encoding="utf-8")
    claims.write_text(text.replace('rasterXSize="128" rasterYSize="128"', 'rasterXSize="2000000000" rasterYSize="2000000000"'), encoding="utf-8")
    assert gdal.Open(str(claims)).RasterXSize == 2000000000
    message = qs.processing_error("hiriseice:chunk", {"INPUT": str(claims), "CHUNK_SIZE": 64, "OUTPUT": str(tmp_path / "grid.gpkg")})
    assert "claims 2,000,000,000 x 2,000,000,000 px" in message and "its header is damaged" in message
    assert not (tmp_path / "grid.gpkg").exists()


def check_exported_chunks(folder, raster_path, table, image_id):
    """One GeoTIFF per kept chunk (plus GDAL's sidecars of it): its pixels and mask are the source
    window's, its geotransform starts at the chunk's corner, its CRS is the source's."""
    source = gdal.Open(str(raster_path))
    expected_names = {f"{image_id}_r{r['row']:03d}_c{r['col']:03d}.tif" for r in table.rows}
    names = set(os.listdir(folder))
    assert {n for n in names if n.endswith(".tif")} == expected_names
    assert all(n in expected_names or (n.rsplit(".", 1)[0] in expected_names and n.endswith((".msk", ".aux.xml"))) or n[: -len(".aux.xml")] in expected_names for n in names), names
    assert qs.files_named_partial(folder) == []
    source_srs = osr.SpatialReference(wkt=source.GetProjection())
    g = source.GetGeoTransform()
    for row in table.rows:
        chunk = gdal.Open(os.path.join(folder, f"{image_id}_r{row['row']:03d}_c{row['col']:03d}.tif"))
        assert (chunk.RasterXSize, chunk.RasterYSize, chunk.RasterCount) == (row["width"], row["height"], source.RasterCount)
        cg = chunk.GetGeoTransform()
        corner = gdal.ApplyGeoTransform(list(g), row["x_off"], row["y_off"])
        assert cg[0] == pytest.approx(corner[0], abs=1e-6 * abs(g[1])) and cg[3] == pytest.approx(corner[1], abs=1e-6 * abs(g[1]))
        assert cg[1:3] == pytest.approx(g[1:3]) and cg[4:6] == pytest.approx(g[4:6])
        assert osr.SpatialReference(wkt=chunk.GetProjection()).IsSame(source_srs)
        window = (row["x_off"], row["y_off"], row["width"], row["height"])
        for b in range(1, source.RasterCount + 1):
            np.testing.assert_array_equal(chunk.GetRasterBand(b).ReadAsArray(), source.GetRasterBand(b).ReadAsArray(*window))
            np.testing.assert_array_equal(chunk.GetRasterBand(b).GetMaskBand().ReadAsArray(), source.GetRasterBand(b).GetMaskBand().ReadAsArray(*window))


def test_export_folder_writes_georeferenced_chunks(qgis_app, make_raster, tmp_path):
    raster = make_raster(name="export_me.tif", width=200, height=140, seed=6)
    folder = tmp_path / "chunks"
    results, table = run_chunk(raster.path, tmp_path / "grid.gpkg", EXPORT_FOLDER=str(folder))
    assert results["EXPORT_FOLDER"] == str(folder)
    assert len(table.rows) == 12  # 4 columns (last 8 px, an eighth of a chunk) x 3 rows (last 12 px)
    check_exported_chunks(folder, raster.path, table, "export_me")


def test_an_export_that_cannot_replace_an_earlier_chunk_leaves_that_export_whole(qgis_app, make_raster, tmp_path):
    """On Windows a chunk GeoTIFF open as a layer in QGIS cannot be replaced: the rename had escaped as a traceback
    with the folder left mixed, the chunks before it new and the rest old."""
    raster = make_raster(name="again.tif", width=128, height=128, seed=6)
    folder = tmp_path / "chunks"
    run_chunk(raster.path, tmp_path / "grid.gpkg", EXPORT_FOLDER=str(folder))
    before = {name: gdal.Open(str(folder / name)).ReadAsArray() for name in sorted(os.listdir(folder))}
    make_raster(name="again.tif", width=128, height=128, seed=7)  # the same file, rewritten
    held = folder / sorted(before)[1]
    with qs.held_file(held):
        message = qs.processing_error("hiriseice:chunk", {"INPUT": raster.path, "CHUNK_SIZE": 64, "EXPORT_FOLDER": str(folder), "OUTPUT": str(tmp_path / "grid2.gpkg")})
    assert f"The chunk GeoTIFF {held} could not be replaced (Operation not permitted): another program holds it open" in message, message
    assert "The chunks exported there before were left as they were" in message
    assert sorted(os.listdir(folder)) == sorted(before) and qs.files_named_partial(folder) == []
    for name, pixels in before.items():
        np.testing.assert_array_equal(gdal.Open(str(folder / name)).ReadAsArray(), pixels)
    run_chunk(raster.path, tmp_path / "grid3.gpkg", EXPORT_FOLDER=str(folder))  # released, it is replaced
    assert not np.array_equal(gdal.Open(str(held)).ReadAsArray(), before[held.name])


def test_an_export_folder_that_is_a_file_or_read_only_is_refused_before_any_chunk(qgis_app, make_raster, tmp_path):
    """One message, where a FileExistsError or PermissionError traceback ended the run."""
    from model import files
    from model.errors import EngineError

    raster = make_raster(width=256, height=256)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("field notes\n")
    message = qs.processing_error("hiriseice:chunk", {"INPUT": raster.path, "CHUNK_SIZE": 64, "EXPORT_FOLDER": str(a_file), "OUTPUT": str(tmp_path / "grid.gpkg")})
    assert f"EXPORT_FOLDER is '{a_file}', which is a file, not a folder." in message, message
    assert a_file.read_text() == "field notes\n" and not (tmp_path / "grid.gpkg").exists()
    locked = tmp_path / "locked"
    locked.mkdir()
    with qs.read_only_folder(locked):
        message = qs.processing_error("hiriseice:chunk", {"INPUT": raster.path, "CHUNK_SIZE": 64, "EXPORT_FOLDER": str(locked / "tiles"), "OUTPUT": str(tmp_path / "grid.gpkg")})
        assert f"EXPORT_FOLDER cannot be written to '{locked / 'tiles'}'" in message and "Choose a folder you can write to." in message, message
        with pytest.raises(EngineError, match="FOLDER cannot be written to"):  # Download's folder is checked the same way
            files.check_folder(str(locked), "FOLDER")


def test_chunk_works_without_the_worker(qgis_app, make_raster, tmp_path, monkeypatch):
    from qgis.core import QgsProcessingException

    worker = qs.plugin_module("processing_provider.worker")
    raster = make_raster(width=128, height=128, seed=7)
    with qs.no_worker(monkeypatch, tmp_path / "plugin-without-venv"):
        with pytest.raises(QgsProcessingException, match="scripts/install"):
            worker.locate_worker()  # there really is no worker now
        results, table = run_chunk(raster.path, tmp_path / "grid.gpkg", EXPORT_FOLDER=str(tmp_path / "chunks"))
    assert results["CHUNKS"] == 4 and windows_of(table) == qs.expected_grid(128, 128, 64)
    assert len(os.listdir(tmp_path / "chunks")) == 4
    assert results["_feedback"].commands == []  # no process was started


def test_no_statistics_file_beside_the_input(qgis_app, tmp_path):
    """QGIS computes a UInt16 layer's statistics as it loads it, and GDAL saved them as .aux.xml
    beside the raster when the layer closed."""
    import gc

    from qgis.core import QgsProcessingContext

    archive = tmp_path / "archive"
    archive.mkdir()
    raster = helpers.generate_raster(archive, name="scene.tif", width=128, height=128, data_type="UInt16")
    context = QgsProcessingContext()
    qs.run_algorithm("hiriseice:chunk", {"INPUT": raster.path, "CHUNK_SIZE": 64, "OUTPUT": str(tmp_path / "grid.gpkg")}, context=context)
    del context  # closes the layer Processing loaded from the path
    gc.collect()
    assert os.listdir(archive) == ["scene.tif"]


def test_memory_output(qgis_app, make_raster):
    from qgis.core import QgsSingleSymbolRenderer, QgsVectorLayer

    raster = make_raster(width=128, height=64, seed=8)
    results = qs.run_algorithm("hiriseice:chunk", {"INPUT": raster.path, "CHUNK_SIZE": 64, "OUTPUT": "TEMPORARY_OUTPUT"})
    layer = results["OUTPUT"]
    assert isinstance(layer, QgsVectorLayer) and layer.providerType() == "memory" and layer.featureCount() == 2
    assert layer.fields().names() == qs.GRID_FIELD_NAMES
    assert isinstance(layer.renderer(), QgsSingleSymbolRenderer)


def test_a_grid_written_to_a_table_without_geometry_is_warned_about_and_one_losing_its_crs_refused(qgis_app, make_raster, tmp_path):
    """A CSV grid dropped every polygon without a word (detect warned); a GeoJSON grid was read back as Earth's WGS 84."""
    raster = make_raster(width=128, height=64, seed=8)
    results = qs.run_algorithm("hiriseice:chunk", {"INPUT": raster.path, "CHUNK_SIZE": 64, "OUTPUT": str(tmp_path / "grid.csv")})
    assert any(w.startswith("OUTPUT is a CSV file: it keeps the features' fields but not their polygons") for w in results["_feedback"].warnings), results["_feedback"].warnings
    said = qs.processing_error("hiriseice:chunk", {"INPUT": raster.path, "CHUNK_SIZE": 64, "OUTPUT": str(tmp_path / "grid.geojson")})
    assert f"OUTPUT is a GeoJSON file ({tmp_path / 'grid.geojson'}), which holds WGS 84 longitudes and latitudes only" in said, said
    assert not (tmp_path / "grid.geojson").exists()


# --- real ISIS3 cubes ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", REAL_CUBES)
def test_real_isis3_cube(qgis_app, georef_data, tmp_path, name):
    """50 x 50 px crops with a no-data border, 16-px chunks: a 4 x 4 grid whose last row and column are 2 px."""
    cube = qs.real_file(georef_data, name, tmp_path)
    image_id = name[: -len(".cub")]
    dataset = gdal.Open(str(cube))  # kept: a band outlives its dataset only in GDAL >= 3.8
    valid = dataset.GetRasterBand(1).ReadAsArray() != 0
    grid = qs.expected_grid(50, 50, 16)
    assert {w[4] for w in grid if w[1] == 3} == {2} and {w[5] for w in grid if w[0] == 3} == {2}

    results, every = run_chunk(cube, tmp_path / "every.gpkg", CHUNK_SIZE=16, MIN_VALID=0.0)
    check_grid_layer(every, cube, image_id)
    # MIN_VALID 0: every window holding any data, with its shares of valid pixels.
    assert windows_of(every) == {w for w in grid if valid[w[3]: w[3] + w[5], w[2]: w[2] + w[4]].any()}
    for row in every.rows:
        x, y, w, h = row["x_off"], row["y_off"], row["width"], row["height"]
        assert row["valid_fraction"] == pytest.approx(valid[y: y + h, x: x + w].mean(), abs=1e-3)
        if w == h == 16:
            assert row["centre_valid_fraction"] == pytest.approx(valid[y + 4: y + 12, x + 4: x + 12].mean(), abs=1e-3)
    assert results["CHUNKS"] == len(every.rows)

    # The default MIN_VALID drops the border chunks, and exports the others.
    folder = tmp_path / "chunks"
    results, kept = run_chunk(cube, tmp_path / "kept.gpkg", CHUNK_SIZE=16, EXPORT_FOLDER=str(folder))
    assert {r["chunk_id"] for r in kept.rows} == {r["chunk_id"] for r in every.rows if r["centre_valid_fraction"] >= 0.95}
    assert 0 < len(kept.rows) < len(every.rows)
    check_exported_chunks(folder, cube, kept, image_id)


def test_real_all_no_data_cube_gives_no_chunks(qgis_app, georef_data, tmp_path):
    cube = qs.real_file(georef_data, REAL_COLOR, tmp_path)
    results, table = run_chunk(cube, tmp_path / "none.gpkg", CHUNK_SIZE=16)
    assert results["CHUNKS"] == 0 and table.rows == []
    assert "0 of 12 chunks hold data" in results["_feedback"].text


def test_raster_without_crs(qgis_app, make_raster, tmp_path):
    raster = make_raster(name="no_crs.tif", crs=None)
    message = qs.processing_error("hiriseice:chunk", {"INPUT": raster.path, "CHUNK_SIZE": 64, "OUTPUT": str(tmp_path / "x.gpkg")})
    assert "no coordinate reference system" in message and "Assign" in message
    assert not (tmp_path / "x.gpkg").exists()

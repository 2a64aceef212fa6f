"""Bad inputs through the real command line, `scripts/qgis_process run hiriseice:detect`, as an
overnight batch meets them: each run ends with exit status 1 and one message that names the
problem and the fix, with no traceback, no output or partial file and no worker left running.
An Earth CRS is the exception: a warning, and the run goes on.
"""

import json
import os
import signal
import subprocess
import time
import zipfile

import numpy as np
import pytest
from osgeo import gdal, ogr, osr

import helpers
import qgis_support as qs

CHUNK = helpers.TINY_CHUNK_SIZE


def write_typed_geotiff(path, data_type: int, width: int = 128, height: int = 128, crs_wkt: str = None) -> str:
    """A GeoTIFF of any GDAL type (helpers.write_geotiff knows only HiRISE's integer ones)."""
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), width, height, 1, data_type)
    dataset.SetGeoTransform(helpers.default_geotransform(width, height))
    dataset.SetProjection(crs_wkt or helpers.mars_equirectangular_wkt())
    dataset.GetRasterBand(1).WriteArray(np.random.default_rng(0).uniform(100, 900, (height, width)))
    dataset = None
    return str(path)


def truncated_copy(source: str, target) -> str:
    """The first half of a file, as an interrupted download leaves it (its header still readable)."""
    with open(source, "rb") as handle:
        data = handle.read()
    with open(target, "wb") as handle:
        handle.write(data[: len(data) // 2])
    return str(target)


def run_detect(tiny_model, raster, folder, *extra, cwd=qs.REPO_ROOT):
    output, report = folder / "out" / "chunks.gpkg", folder / "out" / "report.html"
    output.parent.mkdir(exist_ok=True)
    done = qs.qgis_process(
        "run", "hiriseice:detect", "--", f"INPUT={raster}", f"MODEL={tiny_model.path}", f"CHUNK_SIZE={CHUNK}",
        f"OUTPUT={output}", f"REPORT={report}", *extra, cwd=cwd,
    )
    return done, output.parent


def assert_refused_cleanly(done, out_folder, message: str) -> str:
    """Exit 1, the message once as the only ERROR, nothing written, no worker left behind."""
    out = done.stdout
    assert done.returncode == 1, out[-3000:]
    assert "Traceback" not in out and "ERROR 1:" not in out, out[-3000:]
    assert out.count(message) == 1 and out.count("ERROR:") == 1, out[-3000:]
    assert os.listdir(out_folder) == [], os.listdir(out_folder)
    assert qs.wait_until_gone(str(out_folder)) == [], "a worker outlived the failed run"
    return out


def test_a_text_file_named_tif_is_not_a_raster_rather_than_not_found(tiny_model, tmp_path):
    fake = tmp_path / "ESP_000000_0000_RED.tif"
    fake.write_text("not a raster\n")
    done, out_folder = run_detect(tiny_model, fake, tmp_path)
    out = assert_refused_cleanly(done, out_folder, f"'{fake}' exists but is not a raster GDAL can read")
    assert "not found" not in out and "Give a HiRISE image: GeoTIFF, JP2 with its .LBL" in out


def test_a_bidirectional_control_in_a_refused_name_is_shown_escaped(tiny_model, tmp_path):
    """The plugin's own messages, as the worker's: U+202E in a name had turned the rest of the ERROR line right to left."""
    fake = tmp_path / "ESP_000000_0000\u202eFIT.tif"
    fake.write_text("not a raster\n")
    done, out_folder = run_detect(tiny_model, fake, tmp_path)
    escaped = str(fake).replace("\u202e", "\\u202e")
    out = assert_refused_cleanly(done, out_folder, f"'{escaped}' exists but is not a raster GDAL can read")
    assert not [line for line in out.splitlines() if "ERROR" in line and "\u202e" in line], out  # qgis_process's own echo of INPUT is QGIS's


@pytest.mark.parametrize("where", ["missing file", "missing folder", "folder"])
def test_a_path_that_is_no_file_says_what_is_there_rather_than_not_found(tiny_model, tmp_path, where):
    given = {"missing file": tmp_path / "ESP_000003_0000_RED.tif", "missing folder": tmp_path / "unmounted" / "ESP_000003_0000_RED.tif",
             "folder": tmp_path / "observations"}[where]
    if where == "folder":
        given.mkdir()
    expected = {"missing file": f"'{given}' cannot be found: there is no file 'ESP_000003_0000_RED.tif' in '{tmp_path}'. Check the name",
                "missing folder": f"'{given}' cannot be found: its folder '{tmp_path / 'unmounted'}' does not exist. Check the path",
                "folder": f"'{given}' is a folder, not a raster file. Give one file in it, or survey the whole folder (Survey many images, or the worker's survey command)."}[where]
    done, out_folder = run_detect(tiny_model, given, tmp_path)
    out = assert_refused_cleanly(done, out_folder, expected)
    assert "not found" not in out and " -m model " not in out


def test_a_missing_file_named_in_the_current_folder_is_told_where_it_was_looked_for(tiny_model, tmp_path):
    """A bare name with an extension is a file in the folder qgis_process was started in, not a layer's name: QGIS had said only "not found"."""
    done, out_folder = run_detect(tiny_model, "ESP_000003_0000_RED.tif", tmp_path, cwd=tmp_path)
    assert_refused_cleanly(done, out_folder, f"'{tmp_path / 'ESP_000003_0000_RED.tif'}' cannot be found: there is no file 'ESP_000003_0000_RED.tif' in '{tmp_path}'.")


def files_beside_an_intact_image(tmp_path, case: str):
    """(the path given, the message expected) for files whose fault GDAL's own words would blame on the image or hide."""
    whole = helpers.generate_raster(tmp_path, name="whole.tif", width=256, height=256).path
    if case == "cut overviews":  # an interrupted Build Pyramids beside an intact image
        gdal.Open(whole).BuildOverviews("AVERAGE", [2, 4])
        truncated_copy(whole + ".ovr", whole + ".cut")
        os.replace(whole + ".cut", whole + ".ovr")
        return whole, f"'{whole}.ovr' beside '{whole}' is damaged (GDAL cannot decode it"
    if case == "detached ISIS3 cube":
        label = str(tmp_path / "cube.lbl")
        gdal.Translate(label, whole, format="ISIS3", creationOptions=["DATA_LOCATION=EXTERNAL"])
        return str(tmp_path / "cube.cub"), f"'{tmp_path / 'cube.cub'}' holds raw pixels that GDAL reads only through their ISIS3 label: give '{label}' instead."
    if case == "two raster tables":
        package = str(tmp_path / "two.gpkg")
        for table, more in (("red", []), ("color", ["APPEND_SUBDATASET=YES"])):
            gdal.Translate(package, whole, format="GPKG", outputType=gdal.GDT_Byte, scaleParams=[[]], creationOptions=[f"RASTER_TABLE={table}"] + more)
        return package, f"'{package}' holds 2 rasters, not one image: give one of them, 'GPKG:{package}:red', 'GPKG:{package}:color'"
    if case == "link to an unmounted drive":
        os.symlink("/mnt/hirise_not_mounted/ESP_012345_1234_RED.tif", tmp_path / "link.tif")
        return str(tmp_path / "link.tif"), f"'{tmp_path / 'link.tif'}' is a symbolic link to '/mnt/hirise_not_mounted/ESP_012345_1234_RED.tif', which cannot be found."
    if case == "loop of links":
        os.symlink(tmp_path / "loop2.tif", tmp_path / "loop1.tif")
        os.symlink(tmp_path / "loop1.tif", tmp_path / "loop2.tif")
        return str(tmp_path / "loop1.tif"), f"'{tmp_path / 'loop1.tif'}' is a symbolic link in a loop of links that never reaches a file."
    (tmp_path / "zero.tif").write_bytes(b"")
    return str(tmp_path / "zero.tif"), f"'{tmp_path / 'zero.tif'}' is empty (0 bytes): a download or copy that never wrote anything."


@pytest.mark.parametrize("case", ["cut overviews", "detached ISIS3 cube", "two raster tables", "link to an unmounted drive", "loop of links", "empty file"])
def test_a_fault_beside_or_behind_the_image_is_named_with_its_fix(tiny_model, tmp_path, case):
    """GDAL's words blamed the image for a cut .ovr ("download it again", which left the same error), called a
    detached ISIS3 cube or an empty file no raster, a GeoPackage of two rasters one of none, and a broken link missing."""
    given, expected = files_beside_an_intact_image(tmp_path, case)
    done, out_folder = run_detect(tiny_model, given, tmp_path)
    assert_refused_cleanly(done, out_folder, expected)


def test_a_geopackage_raster_table_and_a_detached_isis3_label_are_detected(qgis_app, tiny_model, tmp_path):
    """A GeoPackage's raster table, a layer of the project (QGIS names it GPKG:file:table), was 'does not exist';
    an ISIS3 cube's own label was warned about as a damaged PDS3 label."""
    from qgis.core import QgsRasterLayer

    package, _ = files_beside_an_intact_image(tmp_path, "two raster tables")
    layer = QgsRasterLayer(f"GPKG:{package}:color", "color", "gdal")
    assert layer.isValid()
    results = qs.run_algorithm("hiriseice:detect", {"INPUT": layer, "MODEL": tiny_model.path, "CHUNK_SIZE": CHUNK, "OUTPUT": str(tmp_path / "table.gpkg")})
    assert results["CHUNKS"] == 16 and qs.read_ogr(tmp_path / "table.gpkg").rows[0]["image_id"] == "two_color"
    label = str(tmp_path / "cube.lbl")
    gdal.Translate(label, helpers.generate_raster(tmp_path, name="cube_source.tif", width=256, height=256).path, format="ISIS3",
                   creationOptions=["DATA_LOCATION=EXTERNAL"])
    done, _ = run_detect(tiny_model, label, tmp_path)
    assert done.returncode == 0 and "WARNING" not in done.stdout and "CHUNKS:\t16" in done.stdout, done.stdout[-3000:]


def test_a_truncated_geotiff_is_named_damaged(tiny_model, tmp_path):
    whole = helpers.generate_raster(tmp_path, name="whole.tif", width=256, height=256)
    cut = truncated_copy(whole.path, tmp_path / "ESP_000001_0000_RED.tif")
    done, out_folder = run_detect(tiny_model, cut, tmp_path)
    out = assert_refused_cleanly(done, out_folder, f"'{cut}' is damaged: GDAL opened it but cannot decode its pixels")
    assert "IReadBlock failed" in out and "download it again" in out
    assert " -m model --jsonl detect " in out  # QGIS loaded it; the engine found the damage


def test_a_geotiff_cut_inside_its_header_is_named_damaged_not_unplaced(tiny_model, tmp_path):
    """GDAL opens a file cut among its GeoTIFF tags with warnings only; the lost tags were blamed on the
    file ("no coordinate reference system"), and one cut made qgis_process abort with a traceback."""
    whole = helpers.generate_raster(tmp_path, name="whole.tif", width=256, height=256)
    cut = tmp_path / "ESP_000005_0000_RED.tif"
    cut.write_bytes(open(whole.path, "rb").read()[:400])
    done, out_folder = run_detect(tiny_model, cut, tmp_path)
    out = assert_refused_cleanly(done, out_folder, f"'{cut}' is damaged: GDAL opened it but cannot decode its pixels")
    assert "IO error during reading" in out and "download it again" in out and "coordinate reference system" not in out


def test_a_geotiff_cut_inside_its_first_directory_is_named_damaged_not_another_kind_of_file(tiny_model, tmp_path):
    """Cut after 36 bytes, a GeoTIFF does not open at all: it was called 'not a raster GDAL can read' with the advice to
    give a GeoTIFF, which the user had."""
    whole = helpers.generate_raster(tmp_path, name="whole.tif", width=256, height=256)
    cut = tmp_path / "ESP_000006_0000_RED.tif"
    cut.write_bytes(open(whole.path, "rb").read()[:36])
    done, out_folder = run_detect(tiny_model, cut, tmp_path)
    out = assert_refused_cleanly(done, out_folder, f"'{cut}' is damaged: GDAL cannot read its header")
    assert "download it again" in out and "not a raster GDAL can read" not in out


def test_a_vrt_whose_one_source_is_damaged_names_that_source(tiny_model, tmp_path):
    """The damage of a VRT's source had been blamed on the 1-kB VRT, with the advice to download it again."""
    whole = helpers.generate_raster(tmp_path, name="whole.tif", width=256, height=256)
    source = tmp_path / "ESP_000007_0000_RED.tif"
    source.write_bytes(open(whole.path, "rb").read()[:400])  # cut among its tags: GDAL opens it, warning
    vrt = tmp_path / "view.vrt"
    gdal.Translate(str(vrt), whole.path, format="VRT")
    vrt.write_text(vrt.read_text(encoding="utf-8").replace(str(whole.path), str(source)).replace("whole.tif", source.name), encoding="utf-8")
    done, out_folder = run_detect(tiny_model, vrt, tmp_path)
    assert done.returncode == 1 and f"'{source}' (which '{vrt}' reads) is damaged" in done.stdout, done.stdout[-3000:]


def assert_scored_as_the_same_ground(tiny_model, tmp_path, north_up: str, turned: str) -> qs.OgrTable:
    """Detect on a north-up raster and on the same ground stored turned: the turned one is read through a
    north-up view, and every chunk, its polygon and its probability, comes out as the north-up one's."""
    tables = []
    for name, raster in (("north_up", north_up), ("turned", turned)):
        folder = tmp_path / name
        folder.mkdir()
        done, out_folder = run_detect(tiny_model, raster, folder)
        assert done.returncode == 0 and "WARNING:" not in done.stdout, done.stdout[-3000:]
        tables.append(qs.read_ogr(out_folder / "chunks.gpkg"))
        if name == "turned":
            assert "It is read through a north-up view warped on the fly" in done.stdout, done.stdout[-3000:]
    want, got = ({row["chunk_id"]: row for row in table.rows} for table in tables)
    assert len(want) == (256 // CHUNK) ** 2 and want.keys() == got.keys()
    for chunk_id, row in want.items():
        assert got[chunk_id]["probability"] == pytest.approx(row["probability"], abs=1e-4)
        helpers.assert_rings_equal(helpers.ring_of_geometry(got[chunk_id]["_wkt"]), helpers.ring_of_geometry(row["_wkt"]), abs_tol=1e-6)
    return tables[1]


def test_a_south_up_raster_is_read_north_up_as_the_same_ground(tiny_model, tmp_path):
    """Rows running south to north (a positive pixel height) showed the network the terrain upside down (the
    same pixels scored 0.79 north-up and 0.21 so); detect now reads such a file through a north-up view of
    its own map."""
    north_up = helpers.generate_raster(tmp_path, name="north_up.tif", width=256, height=256)
    x0, pixel, _, y0, _, negative_height = helpers.default_geotransform(256, 256)
    flipped = helpers.write_geotiff(tmp_path / "ESP_000006_0000_RED.tif", gdal.Open(north_up.path).ReadAsArray()[::-1], "UInt16",
                                    (x0, pixel, 0.0, y0 + 256 * negative_height, 0.0, -negative_height), helpers.mars_equirectangular_wkt())
    assert_scored_as_the_same_ground(tiny_model, tmp_path, north_up.path, flipped)


def test_a_strip_narrower_than_a_chunk_is_told_so(tiny_model, tmp_path):
    strip = helpers.write_geotiff(tmp_path / "strip.tif", np.full((4 * CHUNK, 1), 500, np.uint16), "UInt16",
                                  helpers.default_geotransform(1, 4 * CHUNK), helpers.mars_equirectangular_wkt())
    done, out_folder = run_detect(tiny_model, strip, tmp_path)
    assert_refused_cleanly(done, out_folder, f"'{strip}' is 1 x {4 * CHUNK} px, a strip narrower than an eighth of a chunk ({CHUNK // 8} px at CHUNK_SIZE {CHUNK})")


def test_a_header_claiming_far_more_pixels_than_any_hirise_product_is_refused(tiny_model, worker_python, tmp_path):
    """A 2 kB file claiming 20,000,000 px square ended in a MemoryError (its grid of windows), or in qgis_process in
    advice to free half a terabyte of disk."""
    claim = tmp_path / "claims_too_much.tif"
    created = gdal.GetDriverByName("GTiff").Create(str(claim), 300_000, 100_000, 1, gdal.GDT_UInt16, ["TILED=YES", "SPARSE_OK=TRUE", "COMPRESS=DEFLATE"])
    created.SetGeoTransform(helpers.default_geotransform(300_000, 100_000))
    created.SetProjection(helpers.mars_equirectangular_wkt())
    created = None
    message = f"'{claim}' claims 300,000 x 100,000 px (30 gigapixels), far more than any HiRISE product"
    done, out_folder = run_detect(tiny_model, claim, tmp_path)
    assert_refused_cleanly(done, out_folder, message)
    run = helpers.run_worker(worker_python, "detect", claim, "--model", tiny_model.path)
    assert run.returncode == 2 and [m["message"] for m in run.errors][0].startswith(message), run.stdout[-2000:] + run.stderr[-2000:]


def test_a_truncated_jpeg2000_is_named_damaged(tiny_model, tmp_path):
    if gdal.GetDriverByName("JP2OpenJPEG") is None:
        pytest.skip(f"this GDAL ({gdal.__version__}) has no JP2OpenJPEG driver")
    whole = helpers.generate_raster(tmp_path, name="whole.tif", width=256, height=256)
    jp2 = tmp_path / "whole.JP2"
    assert gdal.Translate(str(jp2), whole.path, format="JP2OpenJPEG", creationOptions=["REVERSIBLE=YES", "QUALITY=100"]) is not None
    cut = truncated_copy(str(jp2), tmp_path / "ESP_000002_0000_RED.JP2")
    done, out_folder = run_detect(tiny_model, cut, tmp_path)
    out = assert_refused_cleanly(done, out_folder, f"'{cut}' is damaged: GDAL opened it but cannot decode its pixels")
    assert "download it again" in out


def test_a_vrt_whose_source_is_gone_names_the_missing_file(tiny_model, tmp_path):
    source = helpers.generate_raster(tmp_path, name="source.tif", width=256, height=256)
    vrt = str(tmp_path / "mosaic.vrt")
    assert gdal.BuildVRT(vrt, [source.path]) is not None
    os.remove(source.path)
    done, out_folder = run_detect(tiny_model, vrt, tmp_path)
    out = assert_refused_cleanly(done, out_folder, f"'{vrt}' refers to '{source.path}' for its pixels, and that file cannot be found.")
    assert "Put it back where the reference says (or rebuild the VRT)" in out and "download it again" not in out


def test_a_vrt_whose_source_is_no_raster_or_itself_is_told_so_not_to_download_again(tiny_model, tmp_path):
    source = helpers.generate_raster(tmp_path, name="source.tif", width=256, height=256)
    vrt = str(tmp_path / "mosaic.vrt")
    assert gdal.BuildVRT(vrt, [source.path]) is not None
    with open(source.path, "w", encoding="utf-8") as handle:
        handle.write("not a raster any more")
    done, out_folder = run_detect(tiny_model, vrt, tmp_path)
    out = assert_refused_cleanly(done, out_folder, f"'{vrt}' refers to '{source.path}' for its pixels, and that file is not a raster GDAL can read.")
    assert "download it again" not in out
    looped = tmp_path / "looped.vrt"
    looped.write_text(open(vrt, encoding="utf-8").read().replace(os.path.basename(source.path), "looped.vrt"), encoding="utf-8")
    done, out_folder = run_detect(tiny_model, str(looped), tmp_path)
    out = assert_refused_cleanly(done, out_folder, f"'{looped}' refers to itself for its pixels, directly or through another VRT. Rebuild it from the image files")
    assert "download it again" not in out


def test_complex_pixels_are_refused_before_the_worker(tiny_model, tmp_path):
    raster = write_typed_geotiff(tmp_path / "ESP_000000_0000_RED.tif", gdal.GDT_CFloat32)
    done, out_folder = run_detect(tiny_model, raster, tmp_path)
    assert_refused_cleanly(done, out_folder, f"'{raster}' holds complex values (CFloat32), not the DNs or I/F of a HiRISE image")
    assert " -m model " not in done.stdout  # found in seconds, before the worker's start


def test_an_elevation_model_is_refused_before_the_worker(tiny_model, tmp_path):
    raster = write_typed_geotiff(tmp_path / "DTEEC_000000_0000_000000_0000_A01.tif", gdal.GDT_Float32)
    done, out_folder = run_detect(tiny_model, raster, tmp_path)
    out = assert_refused_cleanly(done, out_folder, f"'{raster}' is an elevation model (so its name says; rename it if it is an image)")
    assert "the network would read them as brightness" in out and " -m model " not in out


def test_an_isis_float_cube_of_i_over_f_scores_as_its_dns_do(tiny_model, tmp_path):
    """An image processed in ISIS3 holds I/F as 32-bit floats, with its null and saturated pixels
    next to -3.4e38: read as they are, its chunks score as the DNs they came from, a saturated pixel
    as the brightest DN measured in its chunk."""
    scene = helpers.generate_raster(tmp_path, name="scene.tif", width=256, height=256, icy_chunk_size=CHUNK, icy_pattern=lambda r, c: (r + c) % 2 == 0)
    i_over_f = helpers.isis_i_over_f(scene.bands[0])
    i_over_f[:3, :3] = helpers.ISIS_HIGH_INSTRUMENT_SATURATION
    cube = helpers.write_geotiff(tmp_path / "ESP_000000_0000_RED.cal.tif", [i_over_f], "Float32", scene.geotransform, scene.crs_wkt, nodata=helpers.ISIS_NULL)
    dns = scene.bands[0].copy()
    first_chunk = dns[:CHUNK, :CHUNK]
    dns[:3, :3] = first_chunk[first_chunk > 0].max()
    dns_path = helpers.write_geotiff(tmp_path / "dns.tif", [dns], "UInt16", scene.geotransform, scene.crs_wkt, nodata=0)
    results = {}
    for name, raster in (("dns", dns_path), ("i_over_f", cube)):
        folder = tmp_path / name
        folder.mkdir()
        done, out_folder = run_detect(tiny_model, raster, folder)
        assert done.returncode == 0 and "Traceback" not in done.stdout, done.stdout[-3000:]
        results[name] = np.array([row["probability"] for row in qs.read_ogr(out_folder / "chunks.gpkg").rows])
    assert len(results["dns"]) == (256 // CHUNK) ** 2
    np.testing.assert_allclose(results["i_over_f"], results["dns"], atol=1e-3)


def test_a_one_pixel_raster_gets_no_category(tiny_model, tmp_path):
    raster = helpers.write_geotiff(tmp_path / "one.tif", np.full((1, 1), 500, np.uint16), "UInt16", helpers.default_geotransform(1, 1), helpers.mars_equirectangular_wkt())
    done, out_folder = run_detect(tiny_model, raster, tmp_path)
    out = assert_refused_cleanly(done, out_folder, f"'{raster}' is 1 x 1 px, smaller than one chunk ({CHUNK} x {CHUNK} px)")
    assert "CATEGORY:" not in out and "lower CHUNK_SIZE" in out


def assert_warned_once_and_run(tiny_model, tmp_path, raster, *phrases) -> str:
    """Detect on raster: exit 0, one warning holding every phrase, the 2 x 2 chunks written."""
    done, out_folder = run_detect(tiny_model, raster, tmp_path)
    out = done.stdout
    assert done.returncode == 0, out[-3000:]
    assert out.count("WARNING:") == 1 and all(phrase in out for phrase in phrases), out[-3000:]
    assert len(qs.read_ogr(out_folder / "chunks.gpkg").rows) == 4
    return out


def placed_scene(tmp_path, name: str, geotransform, crs_wkt: str) -> str:
    """A generated 128 x 128 scene written with the placement given."""
    return helpers.write_geotiff(tmp_path / name, helpers.generate_raster(tmp_path, width=128, height=128).bands, "UInt16", geotransform, crs_wkt)


@pytest.mark.parametrize("where", ["a VRT's source", "a file GDAL opens beside the image"])
def test_a_named_pipe_the_raster_reads_is_refused_rather_than_waited_on_for_ever(tiny_model, tmp_path, where):
    """QGIS's check of the layer parameter opened the VRT's source, or GDAL's .aux.xml beside the image, and waited
    for a writer that never came: qgis_process hung until killed, with no worker to time out."""
    if where == "a VRT's source":
        os.mkfifo(tmp_path / "pipe.tif")
        raster = tmp_path / "mosaic.vrt"
        raster.write_text('<VRTDataset rasterXSize="128" rasterYSize="128"><VRTRasterBand dataType="UInt16" band="1"><SimpleSource>'
                          '<SourceFilename relativeToVRT="1">pipe.tif</SourceFilename><SourceBand>1</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>')
        waited_on = tmp_path / "pipe.tif"
    else:
        raster = placed_scene(tmp_path, "ESP_000012_1000_RED.tif", helpers.default_geotransform(128, 128), helpers.mars_equirectangular_wkt())
        waited_on = f"{raster}.aux.xml"
        os.mkfifo(waited_on)
    done, out_folder = run_detect(tiny_model, raster, tmp_path)
    assert_refused_cleanly(done, out_folder, f"'{raster}' reads '{waited_on}', which is a named pipe, not a file: GDAL would wait on it for ever.")


def test_a_named_pipe_is_refused_cleanly_rather_than_waited_on_for_ever(tiny_model, tmp_path):
    """QGIS's own check of the layer parameter opened it, and waited for a writer that never came."""
    pipe = tmp_path / "ESP_000011_1000_RED.tif"
    os.mkfifo(pipe)
    done, out_folder = run_detect(tiny_model, pipe, tmp_path)
    assert_refused_cleanly(done, out_folder, f"'{pipe}' is a named pipe, not a file: reading it would wait for whatever writes into it")


def test_a_damaged_geotransform_is_refused_cleanly(tiny_model, tmp_path):
    """Pixels of no size (a header cut or written wrongly) used to end in a traceback of the QGIS side."""
    raster = placed_scene(tmp_path, "ESP_000010_1000_RED.tif", (1000.0, 0.0, 0.0, 2000.0, 0.0, 0.0), helpers.mars_equirectangular_wkt())
    done, out_folder = run_detect(tiny_model, raster, tmp_path)
    assert_refused_cleanly(done, out_folder, f"'{raster}' has a damaged geotransform (1000, 0, 0, 2000, 0, 0: its pixels have no size)")


def test_a_local_crs_is_a_warning_and_the_run_goes_on(tiny_model, tmp_path):
    """A local (engineering) CRS has no north and lies on no body: it ended in a traceback of the QGIS side."""
    local = 'LOCAL_CS["arbitrary",UNIT["metre",1],AXIS["Easting",EAST],AXIS["Northing",NORTH]]'
    raster = placed_scene(tmp_path, "local.tif", helpers.default_geotransform(128, 128), local)
    assert_warned_once_and_run(tiny_model, tmp_path, raster, "is georeferenced in a local CRS (arbitrary) that lies on no body", "assign its Mars CRS")


def test_an_earth_crs_is_a_warning_and_the_run_goes_on(tiny_model, tmp_path):
    wgs84 = osr.SpatialReference()
    wgs84.ImportFromEPSG(4326)
    at_equator = (10.0, 1e-5, 0.0, 64e-5, 0.0, -1e-5)  # square pixels on the ground: the one warning is the body's
    raster = placed_scene(tmp_path, "earth.tif", at_equator, wgs84.ExportToWkt())
    assert_warned_once_and_run(tiny_model, tmp_path, raster, "is georeferenced on a body of radius 6378 km (WGS 84), not on Mars (3396 km)", "assign its Mars CRS")


def test_an_image_in_degrees_at_hirise_latitudes_is_a_warning_and_the_run_goes_on(tiny_model, tmp_path):
    """Reprojected to Mars's latitude and longitude at -55 deg, a pixel is 1.74 times taller than wide
    on the ground: the network would see the ground squashed, and detect says so once."""
    mars_degrees = osr.SpatialReference()
    mars_degrees.SetGeogCS("Mars 2000", "D_Mars_2000", "Mars_2000_IAU_IAG", 3396190.0, 169.894447)
    raster = placed_scene(tmp_path, "degrees.tif", (10.0, 1e-5, 0.0, -55.0 + 64e-5, 0.0, -1e-5), mars_degrees.ExportToWkt())
    assert_warned_once_and_run(tiny_model, tmp_path, raster, "on the ground at -55.0 deg latitude (1.74 to 1)", "gdalwarp -t_srs")


def test_a_polar_stereographic_product_far_from_its_central_meridian_is_read_as_the_same_ground_north_up(tiny_model, tmp_path):
    """At 180 deg E in HiRISE's south polar stereographic map (central meridian 0) north points down: the product
    is the north-up map on the 180 meridian turned upside down (x, y -> -x, -y). Detect reads it through a
    north-up view on its own meridian and scores it as that north-up twin, chunk for chunk; the chunks lie in that map."""
    ground = gdal.Open(helpers.generate_raster(tmp_path, name="ground.tif", width=256, height=256).path).ReadAsArray()
    on_its_meridian, gt = helpers.south_polar_stereographic(180.0, width=256, height=256, central_meridian=180.0)
    twin = helpers.write_geotiff(tmp_path / "north_up_twin.tif", ground, "UInt16", gt, on_its_meridian)
    hirise_map, _ = helpers.south_polar_stereographic(180.0, width=256, height=256)
    x0, pixel, _, y0, _, negative_height = gt
    product = helpers.write_geotiff(tmp_path / "ESP_000007_1130_RED.tif", ground[::-1, ::-1], "UInt16",
                                    (-x0 - 256 * pixel, pixel, 0.0, -y0 - 256 * negative_height, 0.0, negative_height), hirise_map)
    chunks = assert_scored_as_the_same_ground(tiny_model, tmp_path, twin, product)
    assert "+lon_0=180" in chunks.srs_proj4


def test_a_polar_stereographic_product_near_its_central_meridian_is_a_warning_and_the_run_goes_on(tiny_model, tmp_path):
    """Turned 30 deg, the scene keeps its own grid (as any rotated raster): a warning says the network may miss some."""
    wkt, gt = helpers.south_polar_stereographic(30.0, width=128, height=128)
    raster = placed_scene(tmp_path, "polar.tif", gt, wkt)
    assert_warned_once_and_run(tiny_model, tmp_path, raster, "north points 30 deg clockwise from the image's up", "it may miss some")


def test_a_coloured_palette_is_a_warning_and_the_run_goes_on(tiny_model, tmp_path):
    """Palette indices of a coloured rendering are not brightness; detect says so once, and scores."""
    raster = tmp_path / "coloured.tif"
    dataset = gdal.GetDriverByName("GTiff").Create(str(raster), 128, 128, 1, gdal.GDT_Byte)
    dataset.SetGeoTransform(helpers.default_geotransform(128, 128))
    dataset.SetProjection(helpers.mars_equirectangular_wkt())
    table = gdal.ColorTable()
    for index in range(256):
        table.SetColorEntry(index, (index, 255 - index, (7 * index) % 256, 255))
    dataset.GetRasterBand(1).SetRasterColorTable(table)
    dataset.GetRasterBand(1).WriteArray(np.random.default_rng(0).integers(1, 256, (128, 128), dtype=np.uint8))
    dataset = None
    assert_warned_once_and_run(tiny_model, tmp_path, raster, "holds palette indices with a colour table, not brightness")


def test_a_raster_placed_by_ground_control_points_alone_gets_its_chunks_where_qgis_draws_it(tiny_model, tmp_path):
    """A Georeferencer's output saved without warping has GCPs and no geotransform: GDAL alone reads
    pixel coordinates, which put every chunk off the image in QGIS without a word."""
    corners = [(5000.0, -3000.0), (5064.0, -3000.0), (5000.0, -3064.0), (5064.0, -3064.0)]  # 0.5 m pixels
    raster = helpers.gcp_copy(helpers.generate_raster(tmp_path, width=128, height=128).path, tmp_path / "georeferenced_by_gcps.tif",
                              corners, helpers.mars_equirectangular_wkt())
    done, out_folder = run_detect(tiny_model, raster, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:]
    rows = qs.read_ogr(out_folder / "chunks.gpkg").rows
    envelope = ogr.Geometry(ogr.wkbMultiPolygon)
    for row in rows:
        envelope.AddGeometry(ogr.CreateGeometryFromWkt(row["_wkt"]))
    assert len(rows) == 4 and np.allclose(envelope.GetEnvelope(), (5000.0, 5064.0, -3064.0, -3000.0)), envelope.GetEnvelope()


def test_a_crs_without_a_geotransform_is_refused_before_the_worker(tiny_model, tmp_path):
    raster = tmp_path / "no_geotransform.tif"
    dataset = gdal.GetDriverByName("GTiff").Create(str(raster), 128, 128, 1, gdal.GDT_UInt16)
    dataset.SetProjection(helpers.mars_equirectangular_wkt())
    dataset.GetRasterBand(1).WriteArray(np.random.default_rng(0).integers(100, 900, (128, 128)))
    dataset = None
    done, out_folder = run_detect(tiny_model, raster, tmp_path)
    assert_refused_cleanly(done, out_folder, f"'{raster}' has a coordinate reference system but no geotransform")


def test_a_mars_crs_gives_no_warning(tiny_model, tmp_path):
    raster = helpers.generate_raster(tmp_path, width=128, height=128)
    done, _ = run_detect(tiny_model, raster.path, tmp_path)
    assert done.returncode == 0 and "WARNING:" not in done.stdout, done.stdout[-3000:]


def test_a_model_of_a_newer_format_asks_for_a_plugin_update(tiny_model, tmp_path):
    newer = tmp_path / "newer.hiriseice"
    with zipfile.ZipFile(tiny_model.path) as source, zipfile.ZipFile(newer, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "hiriseice.json":
                data = json.dumps(dict(json.loads(data), format_version=2)).encode("utf-8")
            target.writestr(item, data)
    raster = helpers.generate_raster(tmp_path, width=128, height=128)
    output = tmp_path / "out" / "chunks.gpkg"
    output.parent.mkdir()
    done = qs.qgis_process("run", "hiriseice:detect", "--", f"INPUT={raster.path}", f"MODEL={newer}", f"OUTPUT={output}")
    assert_refused_cleanly(done, output.parent, "uses model format version 2, newer than this plugin reads (1). Update the HiRISE Ice Patches plugin.")


def test_sigterm_to_qgis_process_stops_the_worker_and_leaves_nothing(tiny_model, tmp_path):
    """SIGTERM (a batch system's timeout, a logout) to qgis_process while the worker scores: the worker
    runs in its own session, so only qgis_process's handler can end it. (While it scores no partial output
    exists yet: the engine writes every output after scoring.)"""
    raster = helpers.generate_raster(tmp_path, name="big.tif", width=1024, height=1024, seed=9)
    out_folder = tmp_path / "out"
    out_folder.mkdir()
    report = out_folder / "report.html"

    def terminate(process):
        time.sleep(2.0)  # into the scoring
        process.send_signal(signal.SIGTERM)

    # 14641 overlapping chunks, one per network call: minutes of work.
    workers, returncode, out = detect_interrupted(str(report), terminate, f"INPUT={raster.path}", f"MODEL={tiny_model.path}", f"CHUNK_SIZE={CHUNK}",
                                                  "STRIDE=8", "BATCH_SIZE=1", f"OUTPUT={out_folder / 'chunks.gpkg'}", f"REPORT={report}")
    assert workers, "no worker was running when SIGTERM was sent"
    assert returncode == 1, out[-3000:]
    assert out.count("ERROR:\tStopped by SIGTERM: the worker was stopped and no output was written.") == 1, out[-3000:]
    assert "Traceback" not in out
    assert qs.wait_until_gone(str(report)) == [], "the worker outlived qgis_process"
    assert os.listdir(out_folder) == []


def detect_interrupted(marker: str, interrupt, *parameters, seconds: float = 300):
    """hiriseice:detect through qgis_process, with interrupt(process) called once its worker (a
    process whose command line holds marker) runs; returns (worker pids seen, exit status, output)."""
    environment = dict(os.environ, HIRISEICE_QGIS_CONFIG_PATH=qs.qgis_process_config())
    environment.pop("QGIS_CUSTOM_CONFIG_PATH", None)
    process = subprocess.Popen(["bash", str(qs.QGIS_PROCESS), "run", "hiriseice:detect", "--", *parameters],
                               env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        workers = wait_for_worker(marker, process)
        interrupt(process)
        out, _ = process.communicate(timeout=seconds)
    finally:
        if process.poll() is None:
            process.kill()
    return workers, process.returncode, out


def wait_for_worker(marker: str, process, seconds: float = 180):
    """The worker's pids once it runs: processes with the marker that run the engine. The
    wrapper's $(...) subshells carry its command line too, and under load one lived long enough
    to be taken for the worker (the disk then filled before detect's space check ran)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        workers = sorted(set(qs.processes_with(marker)) & set(qs.processes_with(" -m model ")))
        if workers:
            return workers
        time.sleep(0.2)
    return []


def test_a_disk_too_full_for_the_output_is_refused_before_the_worker(tiny_model, tmp_path, small_disk):
    raster = helpers.generate_raster(tmp_path, name="scene.tif", width=256, height=256, seed=3)
    out_folder = small_disk(64)
    done = qs.qgis_process("run", "hiriseice:detect", "--", f"INPUT={raster.path}", f"MODEL={tiny_model.path}", f"CHUNK_SIZE={CHUNK}",
                           f"OUTPUT={out_folder / 'chunks.gpkg'}")
    assert_refused_cleanly(done, out_folder, "Free some space or choose another destination; nothing was run or written.")
    assert "its disk has 0.07 MB free" in done.stdout


def test_a_disk_that_fills_while_the_worker_scores_fails_once_and_leaves_nothing(tiny_model, tmp_path, small_disk):
    raster = helpers.generate_raster(tmp_path, name="fills.tif", width=512, height=512, seed=5)
    disk = small_disk(3000)
    out_folder = disk / "out"
    out_folder.mkdir()
    def fill_the_disk(process):
        with open(disk / "filler", "wb") as filler, pytest.raises(OSError):
            while True:  # another program takes the last byte while the worker scores
                filler.write(b"\0" * 65536)
                filler.flush()

    workers, returncode, out = detect_interrupted(raster.path, fill_the_disk, f"INPUT={raster.path}", f"MODEL={tiny_model.path}", f"CHUNK_SIZE={CHUNK}",
                                                  "BATCH_SIZE=1", f"OUTPUT={out_folder / 'chunks.gpkg'}", f"REPORT={tmp_path / 'fills.html'}",
                                                  f"PROBABILITY_RASTER={tmp_path / 'fills_probability.tif'}")
    assert workers, "the worker had finished before the disk was filled"
    assert returncode == 1, out[-3000:]
    assert "Traceback" not in out and "ERROR 1:" not in out, out[-3000:]
    assert out.count("ERROR:") == 1 and "OUTPUT: the chunk layer could not be written" in out and "the file was removed." in out, out[-3000:]
    assert "This run's report and ice-probability raster were removed too" in out, out[-3000:]
    assert os.listdir(out_folder) == [] and not list(tmp_path.glob("fills.html")) and not list(tmp_path.glob("fills_probability.*"))


@pytest.mark.parametrize("parameter, name, what", [("REPORT", "r.html", "The detection report"),
                                                    ("PROBABILITY_RASTER", "p.tif", "The ice-probability raster")])
def test_a_full_disk_for_the_report_or_the_probability_raster_is_said_once_and_leaves_nothing(tiny_model, tmp_path, small_disk, parameter, name, what):
    raster = helpers.generate_raster(tmp_path, name="scene.tif", width=256, height=256, seed=3)
    disk = small_disk(64)
    with open(disk / "filler", "wb", buffering=0) as filler, pytest.raises(OSError):
        while True:  # another program has taken the disk
            filler.write(b"\0" * 4096)
    done = qs.qgis_process("run", "hiriseice:detect", "--", f"INPUT={raster.path}", f"MODEL={tiny_model.path}", f"CHUNK_SIZE={CHUNK}",
                           f"OUTPUT={tmp_path / 'chunks.gpkg'}", f"{parameter}={disk / name}")
    out = done.stdout
    assert done.returncode == 1, out[-3000:]
    assert "Traceback" not in out and "ERROR 1:" not in out and out.count("ERROR:") == 1, out[-3000:]
    assert f"{what} could not be written to {disk / name}: its disk is full (0.0 MB free). Free some space or choose another destination" in out, out[-3000:]
    assert os.listdir(disk) == ["filler"] and not (tmp_path / "chunks.gpkg").exists()


def test_a_geopackage_whose_rows_a_full_disk_kept_in_its_wal_is_not_taken_for_written(qgis_app, small_disk):
    """QGIS closed the layer as if SQLite had moved its rows from the -wal into the file: on a full disk it could
    not, detect said nothing (exit 0), and the .gpkg alone, copied or sent, was unreadable."""
    import sqlite3

    from processing_provider.destinations import checkpoint_failure

    disk = small_disk(200)
    path = str(disk / "chunks.gpkg")
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")  # the rows stay in the -wal until the last connection closes
    db.execute("CREATE TABLE chunks (data BLOB)")
    db.executemany("INSERT INTO chunks VALUES (?)", [(os.urandom(4000),) for _ in range(20)])
    db.commit()
    with open(disk / "filler", "wb", buffering=0) as filler, pytest.raises(OSError):
        while True:  # another program takes the rest of the disk
            filler.write(b"\0" * 4096)
    db.close()  # its checkpoint fails, silently
    assert os.path.getsize(path + "-wal") > 0
    assert "disk is full" in checkpoint_failure(path)


def test_the_room_asked_of_a_chunk_layers_disk_covers_sqlites_write_ahead_log(tiny_model, tmp_path, small_disk):
    """268 kB passed the check (256 kB and 1.5 kB a chunk) and ended in a GeoPackage whose rows stayed in its -wal."""
    raster = helpers.generate_raster(tmp_path, name="scene.tif", width=256, height=256, seed=3)
    disk = small_disk(300)
    done = qs.qgis_process("run", "hiriseice:detect", "--", f"INPUT={raster.path}", f"MODEL={tiny_model.path}", f"CHUNK_SIZE={CHUNK}",
                           f"OUTPUT={disk / 'chunks.gpkg'}", "SUMMARY=TEMPORARY_OUTPUT")
    out = done.stdout
    assert done.returncode == 1 and out.count("ERROR:") == 1 and "Traceback" not in out, out[-3000:]
    assert f"OUTPUT cannot be written to {disk / 'chunks.gpkg'}: its disk has 0.31 MB free and the 16 chunks need about 0.56 MB" in out, out[-3000:]
    assert os.listdir(disk) == []


@pytest.mark.parametrize("algorithm", ["chunk", "find"])
def test_a_full_disk_for_the_chunk_grid_or_the_footprints_is_said_once_and_leaves_nothing(tmp_path, small_disk, algorithm):
    """Chunk and Find wrote their layer without reading it back: on a full disk QGIS reported success, or GDAL's own
    errors and a half-made GeoPackage."""
    raster = helpers.generate_raster(tmp_path, name="scene.tif", width=256, height=256, seed=3)
    disk = small_disk(64)
    with open(disk / "filler", "wb", buffering=0) as filler, pytest.raises(OSError):
        while True:  # another program has taken the disk
            filler.write(b"\0" * 4096)
    inputs = [f"INPUT={raster.path}", f"CHUNK_SIZE={CHUNK}"] if algorithm == "chunk" else ["SOURCE=0", f"INDEX={qs.REPO_ROOT / 'resources' / 'index' / 'hirise_rdr_paper_window.csv.gz'}"]
    done = qs.qgis_process("run", f"hiriseice:{algorithm}", "--", *inputs, f"OUTPUT={disk / 'out.gpkg'}")
    out = done.stdout
    assert done.returncode == 1, out[-3000:]
    assert "Traceback" not in out and "ERROR 1:" not in out and out.count("ERROR:") == 1, out[-3000:]
    assert f"OUTPUT: the {'chunk grid' if algorithm == 'chunk' else 'footprint'} layer could not be written to {disk / 'out.gpkg'}" in out, out[-3000:]
    assert os.listdir(disk) == ["filler"]


def write_points(path) -> str:
    """A GeoPackage of points: a layer the label parameters cannot take."""
    from osgeo import ogr

    source = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = source.CreateLayer("points", geom_type=ogr.wkbPoint)
    feature = ogr.Feature(layer.GetLayerDefn())
    feature.SetGeometry(ogr.CreateGeometryFromWkt("POINT (10 -10)"))
    layer.CreateFeature(feature)
    source = None
    return str(path)


def write_damaged_geopackage(path) -> str:
    """An SQLite file named .gpkg without the GeoPackage tables, as a failed export leaves one."""
    import sqlite3

    with sqlite3.connect(str(path)) as db:
        db.execute("CREATE TABLE chunks (label INTEGER)")
    return str(path)


@pytest.mark.parametrize("case", ["missing raster in a list", "points as labels", "damaged labels"])
def test_train_names_the_layer_it_cannot_load_rather_than_an_incorrect_value(tmp_path, case):
    raster = helpers.generate_raster(tmp_path, name="scene.tif", width=256, height=256)
    missing = tmp_path / "ESP_000004_0000_RED.tif"
    rasters = f"{raster.path};{missing}" if case == "missing raster in a list" else raster.path
    if case == "points as labels":
        labels = write_points(tmp_path / "points.gpkg")
    elif case == "damaged labels":
        labels = write_damaged_geopackage(tmp_path / "labels.gpkg")
    else:
        labels = str(tmp_path / "labels.gpkg")
    out_folder = tmp_path / "out"
    out_folder.mkdir()
    done = qs.qgis_process(
        "run", "hiriseice:train", "--", f"RASTERS={rasters}", f"LABELS={labels}",
        f"OUTPUT_MODEL={out_folder / 'model.hiriseice'}", f"REPORT={out_folder / 'report.html'}",
    )
    expected = {"missing raster in a list": f"'{missing}' cannot be found: there is no file 'ESP_000004_0000_RED.tif' in '{tmp_path}'.",
                "points as labels": f"'{labels}' holds no polygon layer, and this parameter takes polygons",
                "damaged labels": f"'{labels}' exists but is not a vector layer GDAL can read."}[case]
    out = assert_refused_cleanly(done, out_folder, expected)
    assert "Incorrect parameter value" not in out and "Warning 1:" not in out and "mesh" not in out, out[-3000:]


def test_only_plain_paths_are_judged_before_qgis(qgis_app, tmp_path):
    """Sources QGIS opens in its own ways (a driver's prefix, /vsi paths, a project's layer
    names) are left to QGIS's check; a plain path to nothing is named."""
    from qgis.core import QgsProcessingContext, QgsProject

    algorithm = qs.plugin_module("processing_provider.algorithm")
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    for source in (f'NETCDF:"{tmp_path}/a.nc":ice', f"GPKG:{tmp_path}/a.gpkg:tiles", f"/vsizip/{tmp_path}/a.zip/a.tif", "scene", ""):
        assert algorithm.unloadable_layer_message(source, "raster", context) == "", source
    assert "cannot be found" in algorithm.unloadable_layer_message(f"{tmp_path}/a.tif", "raster", context)
    # A bare name with an extension is a file in the current folder, unless a layer of the project bears it
    assert algorithm.unloadable_layer_message("no_such_scene.tif", "raster", context).startswith(
        f"'{os.path.abspath('no_such_scene.tif')}' cannot be found: there is no file 'no_such_scene.tif' in '{os.getcwd()}'.")
    from qgis.core import QgsRasterLayer

    named = QgsRasterLayer(helpers.generate_raster(tmp_path, "named.tif").path, "no_such_scene.tif")
    QgsProject.instance().addMapLayer(named)
    try:
        assert algorithm.unloadable_layer_message("no_such_scene.tif", "raster", context) == ""
    finally:
        QgsProject.instance().removeMapLayer(named.id())
    assert "cannot be found" in algorithm.unloadable_layer_message(f"{tmp_path}/a.gpkg|layername=chunks", "polygon", context)


def test_an_output_named_without_an_extension_is_the_geopackage_qgis_writes(tiny_model, tmp_path):
    """QGIS writes OUTPUT=chunks as chunks.gpkg; the check that reads the layer back looked for 'chunks',
    called the run failed ("free some space") and left chunks.gpkg behind."""
    raster = helpers.generate_raster(tmp_path, name="scene.tif", width=256, height=256)
    done = qs.qgis_process("run", "hiriseice:detect", "--", f"INPUT={raster.path}", f"MODEL={tiny_model.path}", f"CHUNK_SIZE={CHUNK}",
                           f"OUTPUT={tmp_path / 'chunks'}")
    assert done.returncode == 0 and "ERROR" not in done.stdout, done.stdout[-3000:]
    assert len(qs.read_ogr(tmp_path / "chunks.gpkg").rows) == (256 // CHUNK) ** 2 and not (tmp_path / "chunks").exists()


def file_outputs_cases():
    """(algorithm, its parameters with {tmp} and {raster}, the output in a missing folder)"""
    return [
        ("hiriseice:chunk", {"INPUT": "{raster}", "CHUNK_SIZE": CHUNK, "EXPORT_FOLDER": "{tmp}/exported", "OUTPUT": "{tmp}/missing/grid.gpkg"}, "OUTPUT"),
        ("hiriseice:train", {"RASTERS": ["{raster}"], "LABELS": [], "OUTPUT_MODEL": "{tmp}/m.hiriseice", "REPORT": "{tmp}/training.html",
                             "HISTORY": "{tmp}/missing/history.gpkg"}, "HISTORY"),
        ("hiriseice:find", {"OUTPUT": "{tmp}/missing/found.gpkg", "REPORT": "{tmp}/find.html", "REPORT_CSV": "{tmp}/find.csv"}, "OUTPUT"),
    ]


def test_a_table_asked_of_a_file_that_is_no_geopackage_is_refused_before_the_worker(tiny_model, tmp_path):
    raster = helpers.generate_raster(tmp_path, name="scene.tif", width=128, height=128, seed=3)
    (tmp_path / "notes.gpkg").write_text("my notes, not a GeoPackage")
    done = qs.qgis_process("run", "hiriseice:detect", "--", f"INPUT={raster.path}", f"MODEL={tiny_model.path}", f"CHUNK_SIZE={CHUNK}",
                           f"OUTPUT=ogr:dbname='{tmp_path / 'notes.gpkg'}' table=\"chunks\" (geom)", f"REPORT={tmp_path / 'r.html'}")
    assert done.returncode == 1 and done.stdout.count("ERROR:") == 1, done.stdout[-3000:]
    assert (f"OUTPUT cannot be written to {tmp_path / 'notes.gpkg'}: the file exists and is not a GeoPackage, so it cannot take the table 'chunks'. "
            "Choose another file, or name this one without a table to replace it; nothing was run or written.") in done.stdout
    assert (tmp_path / "notes.gpkg").read_text() == "my notes, not a GeoPackage" and not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("algorithm, parameters, parameter", file_outputs_cases(), ids=[case[0] for case in file_outputs_cases()])
def test_every_algorithm_checks_its_file_outputs_before_it_works(qgis_app, make_raster, tmp_path, algorithm, parameters, parameter):
    """Chunk exported its GeoTIFFs, train trained and find wrote its reports before their layer failed to be written."""
    raster = make_raster(width=128, height=128)
    work = tmp_path / "work"
    work.mkdir()
    resolved = {name: [v.format(tmp=work, raster=raster.path) for v in value] if isinstance(value, list) else
                value.format(tmp=work, raster=raster.path) if isinstance(value, str) else value for name, value in parameters.items()}
    message = qs.processing_error(algorithm, resolved)
    assert message.splitlines()[-1] == (f"{parameter} cannot be written to {resolved[parameter]}: the folder {work / 'missing'} does not exist. "
                       "Create it or choose another destination; nothing was run or written.")
    assert os.listdir(work) == []


def test_a_worker_python_without_the_workers_packages_is_told_in_one_message_not_a_traceback(tiny_model, tmp_path):
    """QGIS's own Python named as the worker (the likeliest wrong setting) gave the hint and then its 40-line traceback."""
    raster = helpers.generate_raster(tmp_path, name="scene.tif", width=128, height=128, seed=3)
    done = qs.qgis_process("run", "hiriseice:detect", "--", f"INPUT={raster.path}", f"MODEL={tiny_model.path}", f"CHUNK_SIZE={helpers.TINY_CHUNK_SIZE}",
                           f"OUTPUT={tmp_path / 'chunks.gpkg'}", env={"HIRISEICE_WORKER_PYTHON": "/usr/bin/python3"}, timeout=240)
    out = done.stdout
    assert done.returncode == 1 and "Traceback" not in out and 'File "' not in out, out[-3000:]
    assert "ERROR:\tThe worker stopped unexpectedly (exit status 1). Its Python (/usr/bin/python3) lacks the package " in out, out[-3000:]
    assert ": it is not the worker's venv, or that venv is incomplete. In the QGIS desktop: menu HiRISE Ice Patches > Worker settings…" in out
    assert "Its error output ends: ModuleNotFoundError: No module named '" in out and not (tmp_path / "chunks.gpkg").exists()


def test_an_output_that_is_a_pipe_or_a_url_is_refused_before_anything_is_written(tiny_model, tmp_path):
    """Outputs are written whole and renamed over their name: a report given /dev/null (a device) replaced the system's
    /dev/null with an HTML file when run as root, and a folder given as a URL was made below the current folder
    ('./http:/example.com/x'). Refused, for QGIS's outputs and for the worker's command line alike."""
    from model import files
    from model.errors import EngineError

    pipe = tmp_path / "report.html"
    os.mkfifo(pipe)
    done = qs.qgis_process("run", "hiriseice:detect", "--", f"INPUT={helpers.generate_raster(tmp_path, name='img.tif').path}", f"MODEL={tiny_model.path}",
                           f"CHUNK_SIZE={CHUNK}", f"OUTPUT={tmp_path / 'chunks.gpkg'}", f"REPORT={pipe}")
    assert done.returncode == 1 and f"REPORT is '{pipe}', a named pipe, not a file: writing there would replace it." in done.stdout, done.stdout[-2000:]
    assert "Traceback" not in done.stdout and os.path.exists(pipe) and not os.path.isfile(pipe) and not (tmp_path / "chunks.gpkg").exists()
    raster = helpers.generate_raster(tmp_path, name="grid.tif").path
    done = qs.qgis_process("run", "hiriseice:chunk", "--", f"INPUT={raster}", f"CHUNK_SIZE={CHUNK}", f"OUTPUT={tmp_path / 'grid.gpkg'}",
                           "EXPORT_FOLDER=http://example.com/x", cwd=str(tmp_path))
    assert done.returncode == 1 and "EXPORT_FOLDER is 'http://example.com/x', a URL" in done.stdout, done.stdout[-2000:]
    assert not (tmp_path / "http:").exists() and not (tmp_path / "grid.gpkg").exists()
    for check, value in ((files.check_destination, str(pipe)), (files.check_folder, "https://example.com/dl")):
        with pytest.raises(EngineError, match="nothing was run or written"):
            check(value, "--out")
    from model.surveystore import SurveyStore

    with pytest.raises(EngineError, match=r"The survey's GeoPackage \(--out\) is 'http://example.com/s.gpkg', a URL"):  # the command line's survey
        SurveyStore("http://example.com/s.gpkg")
    run = helpers.run_worker(helpers.worker_python_path(), "sample-scene", pipe, "--width", 256, "--height", 256)
    assert run.returncode != 0 and "a named pipe, not a file" in run.errors[0]["message"] and not os.path.isfile(pipe)


def test_damaged_compressed_pixels_that_gdal_decodes_into_garbage_are_named_damaged(tiny_model, tmp_path):
    """A JPEG tile with 256 bytes zeroed: GDAL only warns ('Corrupt JPEG data: premature end of data segment') and decodes
    garbage, which was scored as terrain (two chunks' probabilities doubled) with exit 0 and no word of it."""
    pixels = helpers.textured(256, 256, np.random.default_rng(5), 40, 220).astype(np.uint8)
    intact = str(tmp_path / "intact.tif")
    dataset = gdal.GetDriverByName("GTiff").Create(intact, 256, 256, 1, gdal.GDT_Byte, ["TILED=YES", "COMPRESS=JPEG", "BLOCKXSIZE=256", "BLOCKYSIZE=256"])
    dataset.SetGeoTransform(helpers.default_geotransform(256, 256))
    dataset.SetProjection(helpers.mars_equirectangular_wkt())
    dataset.GetRasterBand(1).WriteArray(pixels)
    dataset = None
    written = gdal.Open(intact)  # kept while its band is read: a band outliving its dataset crashes GDAL's bindings
    offset, size = (int(written.GetRasterBand(1).GetMetadataItem(f"BLOCK_{what}_0_0", "TIFF")) for what in ("OFFSET", "SIZE"))
    written = None
    data = bytearray(open(intact, "rb").read())
    data[offset + size // 2: offset + size // 2 + 256] = bytes(256)
    damaged = tmp_path / "ESP_000012_1000_RED.tif"
    damaged.write_bytes(bytes(data))
    done, out_folder = run_detect(tiny_model, damaged, tmp_path)
    assert_refused_cleanly(done, out_folder, f"'{damaged}' is damaged: GDAL opened it but cannot decode its pixels (JPEGLib:Corrupt JPEG data")

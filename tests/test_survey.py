"""hiriseice:survey and `python -m model survey` (model/survey.py): real Dask clusters in the worker's
Python, the session's tiny model, generated rasters. The survey must equal detect run image by
image, lose no image when a Dask worker is killed, skip what is done on a rerun and record a bad
raster as failed while the rest completes."""

import contextlib
import json
import os
import shutil
import subprocess
import sys

import pytest
from osgeo import gdal, ogr, osr

import helpers
import qgis_support as qs

# Different ice on each image, so the images' probabilities differ.
ICE_PATTERNS = [helpers.checkerboard, lambda row, col: True, lambda row, col: False, lambda row, col: row == col]
MARS_GEOGRAPHIC = 'GEOGCS["Mars (2015) - Sphere / Ocentric",DATUM["Mars (2015) - Sphere",SPHEROID["Mars (2015) - Sphere",3396190,0]],PRIMEM["Reference Meridian",0],UNIT["degree",0.0174532925199433]]'

SEQUENTIAL_DETECT = """
import json, sys
from model.inference import DetectOptions, detect
model, paths = sys.argv[1], sys.argv[2:]
out = {}
for path in paths:
    d = detect(path, model, DetectOptions())
    out[d.summary["image_id"]] = {"summary": {k: d.summary[k] for k in ("chunks", "icy_chunks", "hard_chunks", "mean_probability", "max_probability", "category")},
                                  "chunks": {c["chunk_id"]: [c["probability"], c["class"], c["review_rank"], c["wkt"]] for c in d.chunks},
                                  "crs_wkt": d.raster["crs_wkt"]}
print(json.dumps(out))
"""

KILL_A_BUSY_WORKER = """
import json, os, signal, sys, time
from distributed import Client, LocalCluster
from model import survey
from model.inference import DetectOptions
from model.protocol import Reporter

folder, out, model = sys.argv[1:4]
with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(cluster) as client:
    killed = []

    class KillOnFirstImage(Reporter):
        def log(self, message):
            super().log(message)
            if message.startswith("[1/") and not killed:
                pids = client.run(os.getpid)
                busy = [address for address, keys in client.processing().items() if keys]
                os.kill(pids[busy[0]], signal.SIGKILL)
                killed.append(pids[busy[0]])

    result = survey.survey([folder], out, model, DetectOptions(), scheduler=cluster.scheduler_address, reporter=KillOnFirstImage())
    for _ in range(100):  # the nanny starts a new worker in place of the killed one
        pids = client.run(os.getpid)
        if len(pids) == 2 and killed[0] not in pids.values():
            break
        time.sleep(0.1)
    print(json.dumps(dict(result, killed=killed, workers_after=sorted(pids.values()))))
"""


def free_port() -> int:
    """A TCP port on this machine that nothing listens on (for a Dask scheduler of the test's own)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_images(folder, count, first_seed=30):
    return [helpers.generate_raster(folder, name=f"ESP_0{first_seed + i}000_1234_RED.tif", width=384, height=384, nodata=0, seed=first_seed + i,
                                    icy_chunk_size=helpers.TINY_CHUNK_SIZE, icy_pattern=ICE_PATTERNS[i % len(ICE_PATTERNS)]) for i in range(count)]


def transformation(source_wkt, target_wkt):
    source, target = osr.SpatialReference(wkt=source_wkt), osr.SpatialReference(wkt=target_wkt)
    for srs in (source, target):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return osr.CoordinateTransformation(source, target)


def assert_same_place(got, want, what: str) -> None:
    """The same points, longitudes equal to 1e-9 deg up to whole turns."""
    assert len(got) == len(want), what
    for (gx, gy), (wx, wy) in zip(got, want):
        assert abs((gx - wx + 180.0) % 360.0 - 180.0) < 1e-9 and abs(gy - wy) < 1e-9, (what, (gx, gy), (wx, wy))


def assert_longitudes_as_find_gives_them(rows) -> None:
    """Each chunk as find draws a footprint: its western edge in [0, 360), the rest unwrapped eastward from
    it (past 360 across the prime meridian), in one piece."""
    for row in rows:
        longitudes = [x for x, _ in qs.outer_ring(row["_wkt"])]
        assert 0.0 <= min(longitudes) < 360.0 and max(longitudes) - min(longitudes) < 1.0, (min(longitudes), max(longitudes))


def run_survey(worker_python, *arguments):
    return helpers.run_worker(worker_python, "survey", *arguments, timeout=600).check().result


def rows_by_image(gpkg, layer):
    grouped = {}
    for row in qs.read_ogr(gpkg, layer).rows:
        grouped.setdefault(row["image_id"], []).append(row)
    return grouped


@pytest.fixture(scope="module")
def survey_folder(tmp_path_factory):
    """Four generated images and a damaged one."""
    folder = tmp_path_factory.mktemp("survey_images")
    images = make_images(folder, 4)
    (folder / "ESP_099999_1234_RED.tif").write_text("not a raster: an interrupted download")
    return folder, images


@pytest.fixture(scope="module")
def two_worker_survey(worker_python, tiny_model, survey_folder, tmp_path_factory):
    folder, _ = survey_folder
    out = tmp_path_factory.mktemp("survey_out") / "survey.gpkg"
    result = run_survey(worker_python, "--rasters", folder, "--out", out, "--model", tiny_model.path, "--workers", 2)
    return out, result


def test_two_workers_give_what_detect_gives_image_by_image(worker_python, tiny_model, survey_folder, two_worker_survey):
    _, images = survey_folder
    out, result = two_worker_survey
    assert (result["images"], result["done"], result["failed"], result["skipped"]) == (5, 4, 1, 0)
    done = helpers.run_worker_snippet(worker_python, SEQUENTIAL_DETECT, tiny_model.path, *[image.path for image in images])
    assert done.returncode == 0, done.stderr[-3000:]
    sequential = json.loads(done.stdout.splitlines()[-1])
    probabilities = {chunk[0] for image in sequential.values() for chunk in image["chunks"].values()}
    assert len(probabilities) > 50, "the chunks should not all score alike, or equal results would prove little"

    chunks, summaries, footprints = rows_by_image(out, "chunks"), rows_by_image(out, "summary"), rows_by_image(out, "footprints")
    assert set(chunks) == set(summaries) == set(footprints) == set(sequential)
    for image_id, expected in sequential.items():
        (summary,), (footprint,) = summaries[image_id], footprints[image_id]
        for key in ("chunks", "icy_chunks", "hard_chunks", "category"):
            assert summary[key] == expected["summary"][key], (image_id, key)
        assert summary["mean_probability"] == pytest.approx(expected["summary"]["mean_probability"], abs=2e-5)
        assert (footprint["category"], footprint["chunks"], footprint["icy_chunks"]) == (summary["category"], summary["chunks"], summary["icy_chunks"])
        assert summary["model_name"] == tiny_model.metadata["name"]

        got = {row["chunk_id"]: row for row in chunks[image_id]}
        assert set(got) == {int(k) for k in expected["chunks"]}
        to_mars = transformation(expected["crs_wkt"], MARS_GEOGRAPHIC)
        for chunk_id, (probability, chunk_class, review_rank, wkt) in expected["chunks"].items():
            row = got[int(chunk_id)]
            assert row["probability"] == pytest.approx(probability, abs=2e-5)
            assert (row["class"], row["review_rank"]) == (chunk_class, review_rank)
            corner = ogr.CreateGeometryFromWkt(wkt)
            corner.Transform(to_mars)
            assert_same_place(qs.outer_ring(row["_wkt"]), qs.outer_ring(corner.ExportToWkt()), f"{image_id} chunk {chunk_id}")
        assert_longitudes_as_find_gives_them(got.values())


def test_a_bad_raster_is_recorded_as_failed_and_the_rest_completes(two_worker_survey):
    out, _ = two_worker_survey
    runs = {row["image_id"]: row for row in qs.read_ogr(out, "runs").rows}
    assert len(runs) == 5
    bad = runs.pop("ESP_099999_1234_RED")
    assert bad["status"] == "failed" and "is not a raster GDAL can read" in bad["error"] and bad["chunks"] == 0
    assert {row["status"] for row in runs.values()} == {"done"} and all(row["chunks"] == 36 and row["runtime_s"] > 0 for row in runs.values())
    assert "ESP_099999_1234_RED" not in rows_by_image(out, "chunks")


def test_a_rerun_skips_what_is_done(worker_python, tiny_model, survey_folder, two_worker_survey, tmp_path):
    folder, _ = survey_folder
    out = tmp_path / "survey.gpkg"
    shutil.copyfile(two_worker_survey[0], out)
    before = {row["image_id"]: row for row in qs.read_ogr(out, "runs").rows}
    more = tmp_path / "more"
    more.mkdir()
    (new,) = make_images(more, 1, first_seed=60)

    result = run_survey(worker_python, "--rasters", folder, more, "--out", out, "--model", tiny_model.path, "--workers", 1)
    assert (result["images"], result["skipped"], result["done"], result["failed"]) == (6, 4, 1, 1)  # the failed image is tried again
    after = {row["image_id"]: row for row in qs.read_ogr(out, "runs").rows}
    for image_id, row in before.items():
        if row["status"] == "done":
            assert after[image_id] == row, f"{image_id} was done and must be left alone"
    assert after["ESP_060000_1234_RED"]["status"] == "done"
    chunks = rows_by_image(out, "chunks")
    assert {image_id: len(rows) for image_id, rows in chunks.items()} == {image_id: 36 for image_id in after if image_id != "ESP_099999_1234_RED"}
    assert len(qs.read_ogr(out, "runs").rows) == 6  # one row per image: the retried failure replaced its row

    # Once more: the five done are skipped, and the one bad file, tried again, fails again: nothing surveyed is an error
    again = helpers.run_worker(worker_python, "survey", "--rasters", folder, more, "--out", out, "--model", tiny_model.path, timeout=600)
    assert again.returncode == 2 and "None of the 1 images could be surveyed (5 done before were skipped)" in again.errors[0]["message"]
    assert len(qs.read_ogr(out, "runs").rows) == 6
    # Resumed at another chunk size, its chunks would not compare with the others': refused before any image
    other = helpers.run_worker(worker_python, "survey", "--rasters", folder, more, "--out", out, "--model", tiny_model.path, "--chunk-size", 32, timeout=600)
    assert other.returncode == 2 and other.errors[0]["message"] == (
        f"{out} was surveyed with CHUNK_SIZE 64, STRIDE 64; this run asks for CHUNK_SIZE 32, STRIDE 32. Its chunks and categories would not "
        "compare with those of the images done before: run it with the same settings to resume it, or survey into a new GeoPackage."), other.errors
    assert len(qs.read_ogr(out, "runs").rows) == 6


def test_a_killed_worker_loses_no_image(worker_python, tiny_model, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    images = make_images(folder, 6)
    out = tmp_path / "survey.gpkg"
    done = helpers.run_worker_snippet(worker_python, KILL_A_BUSY_WORKER, folder, out, tiny_model.path, timeout=600)
    assert done.returncode == 0, done.stderr[-5000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert len(result["killed"]) == 1 and result["killed"][0] not in result["workers_after"]
    assert (result["done"], result["failed"]) == (6, 0)
    chunks = rows_by_image(out, "chunks")
    assert sorted(chunks) == sorted(image.path.rsplit("/", 1)[1][:-4] for image in images)
    for rows in chunks.values():
        assert sorted(row["chunk_id"] for row in rows) == list(range(36))  # each image once, whole
    assert len(qs.read_ogr(out, "summary").rows) == 6


@pytest.mark.parametrize("as_given", ["a list", "one string, as qgis_process hands RASTERS=a.tif;b.tif over", "in folders whose names hold a ';'"])
def test_processing_survey(qgis_app, tiny_model, survey_folder, tmp_path, as_given):
    """A file whose own path holds a ';' was cut there, as if two were given, and was 'not found'."""
    _, images = survey_folder
    out = tmp_path / "survey.gpkg"
    rasters = [image.path for image in images[:2]]
    if as_given.startswith("in folders"):
        rasters = [os.path.join(shutil.copytree(os.path.dirname(path), tmp_path / f"semi;colon {i}"), os.path.basename(path)) for i, path in enumerate(rasters)]
    given = ";".join(rasters) if as_given.startswith("one string") else rasters
    results = qs.run_algorithm("hiriseice:survey", {"RASTERS": given, "MODEL": tiny_model.path, "WORKERS": 1, "OUTPUT": str(out)})
    assert (results["DONE"], results["FAILED"], results["SKIPPED"]) == (2, 0, 0)
    if as_given.startswith("in folders"):  # one such file alone
        alone = qs.run_algorithm("hiriseice:survey", {"RASTERS": rasters[0], "MODEL": tiny_model.path, "WORKERS": 1, "OUTPUT": str(tmp_path / "one.gpkg")})
        assert (alone["DONE"], alone["FAILED"], alone["SKIPPED"]) == (1, 0, 0)
    assert results["FOOTPRINTS_BY_CATEGORY"] == f"{out}|layername=footprints"
    from qgis.core import QgsVectorLayer

    for output, count in (("CHUNKS", 72), ("SUMMARY", 2), ("FOOTPRINTS_BY_CATEGORY", 2), ("RUNS", 2)):
        layer = QgsVectorLayer(results[output], output, "ogr")
        assert layer.isValid() and layer.featureCount() == count, output
    styled = {row["f_table_name"] for row in qs.layer_styles(out)}
    assert {"chunks", "summary", "footprints"} <= styled
    assert "2 done, 0 failed, 0 skipped" in results["_feedback"].text

    message = qs.processing_error("hiriseice:survey", {"MODEL": tiny_model.path, "OUTPUT": str(tmp_path / "nothing.gpkg")})
    assert "Nothing to survey: give RASTERS" in message and "Traceback" not in message


@pytest.mark.parametrize("table", ["summary", "chunks", "Chunks", None])
def test_detect_into_a_surveys_tables_is_refused_before_the_run(qgis_app, tiny_model, survey_folder, tmp_path, table):
    """Detect's summary into a survey's 'summary' left one row in the image's CRS, and the resumed survey wrote degrees into that
    layer in metres; into its 'chunks', every image's chunks were replaced, and the resume was refused for "an earlier version"."""
    from model.surveystore import SurveyStore

    _, images = survey_folder
    out = tmp_path / "survey.gpkg"
    SurveyStore(str(out)).close()
    before = out.read_bytes()
    destination = qs.gpkg_destination(out, table) if table else str(out)
    message = qs.processing_error("hiriseice:detect", {"INPUT": images[0].path, "MODEL": tiny_model.path, "OUTPUT": str(tmp_path / "c.gpkg"),
                                                      "SUMMARY": destination})
    assert f"{out} is a survey's GeoPackage (hiriseice:survey resumes from its tables)" in message and "nothing was run or written" in message, message
    assert out.read_bytes() == before and not (tmp_path / "c.gpkg").exists()
    # a table of one's own in that file is one's own to write again (the refusal had named one it then refused)
    destinations = qs.plugin_module("processing_provider.destinations")
    from osgeo import ogr

    written = ogr.Open(str(out), update=1)
    written.CreateLayer("chunks_2", geom_type=ogr.wkbPolygon)
    written = None
    destinations.check_not_into_a_survey(destinations.FileDestination("OUTPUT", str(out), "chunks_2", existed=True))
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match='table="chunks_3"'):  # a table not yet in the file is suggested
        destinations.check_not_into_a_survey(destinations.FileDestination("SUMMARY", str(out), "summary", existed=True))


def test_a_survey_without_the_mirror_is_started_and_resumed_from_qgis(qgis_app, tiny_model, survey_folder, tmp_path):
    """The survey had no TTA parameter: one started without the mirror (--no-tta) could not be resumed
    from QGIS, whose runs always asked for it."""
    _, images = survey_folder
    out = tmp_path / "survey.gpkg"
    given = {"RASTERS": [images[0].path], "MODEL": tiny_model.path, "WORKERS": 1, "TTA": False, "OUTPUT": str(out)}
    first = qs.run_algorithm("hiriseice:survey", given)
    assert (first["DONE"], first["SKIPPED"]) == (1, 0)
    assert {row["setting"]: row["value"] for row in qs.read_ogr(out, "settings").rows}["tta"] == "False"
    again = qs.run_algorithm("hiriseice:survey", dict(given, RASTERS=[images[0].path, images[1].path]))
    assert (again["DONE"], again["SKIPPED"]) == (1, 1)
    message = qs.processing_error("hiriseice:survey", dict(given, TTA=True))
    assert "was surveyed with TTA False; this run asks for TTA True" in message and "Traceback" not in message


def test_a_polar_product_at_180_east_is_surveyed_as_its_north_up_twin_in_one_piece(worker_python, tiny_model, tmp_path):
    """HiRISE's south polar product at 180 E is its north-up twin (the map on the 180 meridian) turned
    upside down: surveyed through its north-up view, it gives the twin's chunks, probabilities and places.
    Both straddle 180 E, where every chunk stays in one piece."""
    folder = tmp_path / "images"
    folder.mkdir()
    ground = make_images(tmp_path, 1)[0]
    pixels = gdal.Open(ground.path).ReadAsArray()
    twin_wkt, twin_gt = helpers.south_polar_stereographic(180.0, width=384, height=384, central_meridian=180.0)
    product_wkt, _ = helpers.south_polar_stereographic(180.0, width=384, height=384)
    x0, pixel, _, y0, _, negative_height = twin_gt
    helpers.write_geotiff(folder / "ESP_000021_1130_RED.tif", pixels, "UInt16", twin_gt, twin_wkt, nodata=0)
    helpers.write_geotiff(folder / "ESP_000022_1130_RED.tif", pixels[::-1, ::-1], "UInt16",
                          (-x0 - 384 * pixel, pixel, 0.0, -y0 - 384 * negative_height, 0.0, negative_height), product_wkt, nodata=0)
    out = tmp_path / "survey.gpkg"
    run_survey(worker_python, "--rasters", folder, "--out", out, "--model", tiny_model.path, "--workers", 1)
    assert [row["status"] for row in qs.read_ogr(out, "runs").rows] == ["done", "done"]
    chunks = rows_by_image(out, "chunks")
    twin, product = ({row["chunk_id"]: row for row in chunks[image_id]} for image_id in ("ESP_000021_1130_RED", "ESP_000022_1130_RED"))
    assert twin and twin.keys() == product.keys()
    for chunk_id, row in twin.items():
        assert product[chunk_id]["probability"] == pytest.approx(row["probability"], abs=2e-5)
        qs.assert_ring_equal(qs.outer_ring(product[chunk_id]["_wkt"]), qs.outer_ring(row["_wkt"]), 1e-9, f"chunk {chunk_id}")
    for rows in (twin.values(), product.values()):
        assert_longitudes_as_find_gives_them(rows)
        assert 179.0 < min(x for row in rows for x, _ in qs.outer_ring(row["_wkt"])) < 180.0


def test_a_polar_product_on_the_polar_radius_is_surveyed_where_it_lies(qgis_app, worker_python, tiny_model, tmp_path):
    """HiRISE's polar products are drawn on a sphere of Mars's polar radius, between which and the survey's
    sphere PROJ finds no transformation: such a product failed as 'not a Mars CRS'. Longitudes and
    latitudes are the same angles on either sphere. Nor did QGIS draw its chunks over it in its own CRS
    while the survey's CRS was IAU_2015:49900."""
    folder = tmp_path / "images"
    folder.mkdir()
    ground = make_images(tmp_path, 1)[0]
    wkt, gt = helpers.south_polar_stereographic(0.0, latitude=-67.0, width=384, height=384, radius=3376200.0)
    helpers.write_geotiff(folder / "ESP_000023_1130_RED.tif", gdal.Open(ground.path).ReadAsArray(), "UInt16", gt, wkt, nodata=0)
    out = tmp_path / "survey.gpkg"
    run_survey(worker_python, "--rasters", folder, "--out", out, "--model", tiny_model.path, "--workers", 1)
    assert [row["status"] for row in qs.read_ogr(out, "runs").rows] == ["done"], qs.read_ogr(out, "runs").rows
    corners = [point for row in rows_by_image(out, "chunks")["ESP_000023_1130_RED"] for point in qs.outer_ring(row["_wkt"])]
    assert all(-67.01 < lat < -66.99 for _, lat in corners) and all(min(lon % 360, 360 - lon % 360) < 0.01 for lon, _ in corners), corners[:4]
    x0, pixel, _, y0, _, negative_height = gt
    extent = (x0, y0 + 384 * negative_height, x0 + 384 * pixel, y0)
    assert qs.drawn_share(f"{out}|layername=chunks", osr.SpatialReference(wkt=wkt).ExportToProj4(), extent) > 0.9


def test_a_chunk_whose_western_edge_lies_on_the_prime_meridian_is_written_at_0_not_360():
    """A western edge of 359.99999999999994 passed the check for [0, 360) and was written as 360.0 (WKT's 15 digits):
    such a chunk lay past 360, where QGIS never asks for features. 22 of 600 chunks did, on random ground at 0 E."""
    import math
    import random

    from model.survey import _to_survey_crs

    random.seed(1)
    for central_meridian in (0, 180):
        srs = osr.SpatialReference()
        srs.ImportFromProj4(f"+proj=eqc +lon_0={central_meridian} +R=3396190 +units=m")
        prime_meridian = -3396190 * math.radians(central_meridian)
        for _ in range(300):
            x, y = prime_meridian + random.uniform(-3e-7, 3e-7), random.uniform(-3e6, 3e6)
            convert = _to_survey_crs("ESP_000001_1234_RED", srs.ExportToWkt(), [(x - 500, y), (x + 500, y), (x + 500, y - 10), (x - 500, y - 10)])
            written = convert(f"POLYGON(({x} {y},{x + 1000} {y},{x + 1000} {y - 10},{x} {y - 10},{x} {y}))")
            assert 0.0 <= min(lon for lon, _ in qs.outer_ring(written)) < 360.0, written


def test_one_file_reached_by_two_paths_is_surveyed_once_and_a_pds_image_by_its_label(tmp_path):
    """A link under another name had been surveyed twice (its chunks counted twice), the same file through a linked
    folder refused the whole survey, and a folder of PDS products (X.IMG beside X.LBL) failed every image."""
    from model.surveyinputs import survey_images

    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "ESP_000031_1234_RED.tif").write_bytes(b"pixels")
    os.symlink(folder / "ESP_000031_1234_RED.tif", folder / "copy_of_it.tif")
    os.symlink(folder, tmp_path / "linked")
    (folder / "PSP_000032_1234_RED.IMG").write_bytes(b"raw pixels")
    (folder / "PSP_000032_1234_RED.LBL").write_text("PDS_VERSION_ID = PDS3\n")
    said = []
    images = survey_images([str(folder), str(tmp_path / "linked" / "ESP_000031_1234_RED.tif")], warn=said.append)
    assert [(image.image_id, os.path.basename(image.path)) for image in images] == [
        ("ESP_000031_1234_RED", "ESP_000031_1234_RED.tif"), ("PSP_000032_1234_RED", "PSP_000032_1234_RED.LBL")]
    assert len(said) == 2 and all("(a link, or another path to it): it is surveyed once." in line for line in said), said


def test_the_catalogs_csv_is_footprints_to_survey(tmp_path, shared_data):
    """`python -m model.catalog --csv`, the documented find without QGIS, writes products with their jp2_url; given to the survey
    without QGIS, the CSV was taken for a raster, failed, and was retried on every run."""
    import subprocess
    import sys

    from model.download import DownloadItem
    from model.surveyinputs import survey_images

    index = shared_data / "hirise-index" / "hirise_rdr_index.csv.gz"
    if not index.is_file():
        pytest.skip(f"the product index is absent from the shared data ({index})")
    found = tmp_path / "found.csv"
    done = subprocess.run([sys.executable, "-m", "model.catalog", str(index), "--csv", str(found)], cwd=str(helpers.REPO_ROOT),
                          env=dict(os.environ, PYTHONPATH=str(helpers.REPO_ROOT)), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and found.is_file(), done.stderr[-2000:]
    import csv

    with open(found, newline="", encoding="utf-8") as handle:
        urls = [row["jp2_url"] for row in csv.DictReader(handle)][:3]
    assert len(urls) == 3
    for url in urls[:2]:  # two of them downloaded
        (tmp_path / DownloadItem(url).name).write_bytes(b"pixels")
    said = []
    images = survey_images([str(found)], warn=said.append)
    assert [os.path.basename(image.path) for image in images] == [DownloadItem(url).name for url in urls[:2]]
    assert any("are not in" in line and "not downloaded yet?" in line for line in said), said


def test_an_image_whose_name_is_not_utf8_is_left_out_and_the_rest_surveyed(worker_python, tiny_model, tmp_path):
    """Its name could not be written into the GeoPackage: the survey ended in a traceback before recording any image,
    and so did every rerun."""
    folder = tmp_path / "images"
    folder.mkdir()
    good = make_images(tmp_path, 1)[0]
    shutil.copyfile(good.path, folder / "ESP_000030_1234_RED.tif")
    shutil.copyfile(good.path, os.path.join(os.fsencode(folder), b"bad\xff\xfe.tif"))
    out = tmp_path / "survey.gpkg"
    run = helpers.run_worker(worker_python, "survey", "--rasters", folder, "--out", out, "--model", tiny_model.path, "--workers", 1, timeout=600).check()
    assert [(row["image_id"], row["status"]) for row in qs.read_ogr(out, "runs").rows] == [("ESP_000030_1234_RED", "done")]
    warnings = [m["message"] for m in run.messages if m["type"] == "warning"]
    assert any("bad\\xff\\xfe.tif is left out: its name is not UTF-8 text" in w and "Rename it" in w for w in warnings), warnings


def test_a_survey_geopackage_that_is_a_named_pipe_is_refused_not_waited_on(tmp_path):
    from model.surveystore import SurveyError, SurveyStore

    pipe = tmp_path / "survey.gpkg"
    os.mkfifo(pipe)
    with pytest.raises(SurveyError, match=r"is a named pipe, not a file: reading it would wait .* Give the survey's GeoPackage file itself\."):
        SurveyStore(str(pipe))


def test_labels_given_to_a_surveys_chunks_outlive_a_resurvey_with_another_model(qgis_app, worker_python, tiny_model, tmp_path):
    """Survey, label its chunks in the review dock, retrain, survey again: the new model's rows replaced the image's chunks,
    and with them every label, without a word; labels QGIS held unsaved meanwhile were then saved onto rows that were gone,
    and QGIS said they were saved."""
    from osgeo import ogr
    from qgis.core import QgsVectorLayer

    from model import modelfile

    folder = tmp_path / "images"
    folder.mkdir()
    make_images(folder, 1)
    out = tmp_path / "survey.gpkg"
    helpers.run_worker(worker_python, "survey", "--rasters", folder, "--out", out, "--model", tiny_model.path, "--workers", 1, timeout=300).check()
    dataset = ogr.Open(str(out), update=1)
    dataset.ExecuteSQL("UPDATE chunks SET label = 1 WHERE chunk_id IN (0, 5, 9)")
    dataset.ExecuteSQL("UPDATE chunks SET label = 0 WHERE chunk_id = 7")
    table = dataset.GetLayerByName("chunks")
    table.CreateField(ogr.FieldDefn("ice", ogr.OFTString))  # a field of the geologist's own, which train reads as LABEL_FIELD
    dataset.ExecuteSQL("UPDATE chunks SET ice = 'icy' WHERE chunk_id = 3")
    pasted = next(feature for feature in table if feature.GetField("chunk_id") == 9)  # a chunk pasted over its own, labelled otherwise
    pasted.SetFID(-1)
    pasted.SetField("label", 0)
    table.CreateFeature(pasted)
    dataset = None
    layer = QgsVectorLayer(f"{out}|layername=chunks", "chunks", "ogr")  # the geologist goes on labelling, unsaved
    ids = {feature["chunk_id"]: feature.id() for feature in layer.getFeatures()}
    assert layer.startEditing() and layer.changeAttributeValue(ids[2], layer.fields().lookupField("label"), 1)
    retrained = tmp_path / "retrained.hiriseice"
    shutil.copy(tiny_model.path, retrained)
    meta = modelfile.read_metadata(str(retrained))
    modelfile.store_metadata(str(retrained), dict(meta, version=meta["version"] + "-2"))
    run = helpers.run_worker(worker_python, "survey", "--rasters", folder, "--out", out, "--model", retrained, "--workers", 1, timeout=300).check()
    assert layer.commitChanges(), layer.commitErrors()
    del layer
    rows = qs.read_ogr(out, "chunks").rows
    assert {row["chunk_id"]: row["label"] for row in rows if row["label"] is not None} == {0: 1, 2: 1, 5: 1, 7: 0}
    assert {row["chunk_id"]: row["ice"] for row in rows if row["ice"] is not None} == {3: "icy"} and len(rows) == len({row["chunk_id"] for row in rows})
    assert any("chunk(s) 9 had two rows with different labels" in m["message"] for m in run.messages if m["type"] == "warning"), run.messages
    # said, not silent: the first model's results are gone from this GeoPackage
    assert (f"1 image(s) of {out} were scored with another model ({meta['name']} {meta['version']}: 1); this run replaces their rows with "
            f"{meta['name']} {meta['version']}-2's, keeping the labels given to their chunks") in [m["message"] for m in run.messages if m["type"] == "warning"][0]
    assert {row["model_version"] for row in qs.read_ogr(out, "runs").rows} == {meta["version"] + "-2"}


def test_a_later_image_saved_under_the_first_ones_name_is_refused_and_takes_no_labels(worker_python, tiny_model, tmp_path):
    """2026-04/crater_site.tif surveyed, then 2026-05/crater_site.tif (the site again, another window) into the same GeoPackage:
    with the same model it was skipped as done; with another, it replaced April's rows and took April's labels by chunk_id."""
    april, may, out = tmp_path / "2026-04", tmp_path / "2026-05", tmp_path / "survey.gpkg"
    origin = helpers.default_geotransform(384, 384)
    for folder, seed, shift in ((april, 30, 0.0), (may, 31, 100.0)):  # May's window 100 m east
        folder.mkdir()
        helpers.generate_raster(folder, name="crater_site.tif", width=384, height=384, nodata=0, seed=seed,
                                geotransform=(origin[0] + shift,) + tuple(origin[1:]))
    run_survey(worker_python, "--rasters", april, "--out", out, "--model", tiny_model.path, "--workers", 1)
    dataset = ogr.Open(str(out), update=1)
    dataset.ExecuteSQL("UPDATE chunks SET label = 1 WHERE chunk_id IN (0, 5)")
    dataset = None
    run = helpers.run_worker(worker_python, "survey", "--rasters", may, "--out", out, "--model", tiny_model.path, "--workers", 1, timeout=300)
    assert run.returncode == 2 and len(run.errors) == 1, run.stdout[-2000:]
    assert (f"Two different rasters have the image ID crater_site: {april / 'crater_site.tif'}, surveyed before into {out}, and "
            f"{may / 'crater_site.tif'}, which is not a copy of it" in run.errors[0]["message"]), run.errors
    assert [row["image"] for row in qs.read_ogr(out, "runs").rows] == [str(april / "crater_site.tif")]
    # a copy of the survey's folder (a colleague's, the original still there) resumes it, and its runs follow the copy
    copy = tmp_path / "shared copy"
    shutil.copytree(april, copy / "2026-04")
    shutil.copy(out, copy / "survey.gpkg")
    result = run_survey(worker_python, "--rasters", copy / "2026-04", "--out", copy / "survey.gpkg", "--model", tiny_model.path, "--workers", 1)
    assert result["skipped"] == 1 and result["done"] == 0, result
    assert [row["image"] for row in qs.read_ogr(copy / "survey.gpkg", "runs").rows] == [str(copy / "2026-04" / "crater_site.tif")]
    # April's file archived and May's surveyed under its name, with the same model: May is surveyed (it had been skipped as
    # done), and April's labels stay off its ground
    shutil.move(str(april), str(tmp_path / "archive"))
    run = helpers.run_worker(worker_python, "survey", "--rasters", may, "--out", out, "--model", tiny_model.path, "--workers", 1, timeout=300).check()
    assert run.result["done"] == 1 and run.result["skipped"] == 0, run.result
    warnings = " ".join(m["message"] for m in run.messages if m["type"] == "warning")
    assert f"{april / 'crater_site.tif'}, surveyed before as crater_site, is gone, and {may / 'crater_site.tif'} under that name is another raster" in warnings
    assert "crater_site: 2 label(s) recorded for its chunks lie on other ground than its chunks now do" in warnings, warnings
    assert [row["label"] for row in qs.read_ogr(out, "chunks").rows if row["label"] is not None] == []
    # May's file changed in place (cropped again): surveyed again, not skipped
    helpers.generate_raster(may, name="crater_site.tif", width=320, height=320, nodata=0, seed=32)
    run = helpers.run_worker(worker_python, "survey", "--rasters", may, "--out", out, "--model", tiny_model.path, "--workers", 1, timeout=300).check()
    assert run.result["done"] == 1, run.result
    # its georeference moved in a sidecar (a CRS assigned in QGIS goes to the .aux.xml): surveyed again, where it had been skipped
    # with its chunks left 38 km from where the image now lies
    shifted = may / "crater_site.tif.aux.xml"
    shifted.write_text(f"<PAMDataset><GeoTransform>{origin[0] + 500.0}, {origin[1]}, 0, {origin[3]}, 0, {origin[5]}</GeoTransform></PAMDataset>")
    run = helpers.run_worker(worker_python, "survey", "--rasters", may, "--out", out, "--model", tiny_model.path, "--workers", 1, timeout=300).check()
    assert run.result["done"] == 1 and run.result["skipped"] == 0, run.result
    assert any("changed since it was surveyed (another size, content or georeference)" in m["message"] for m in run.messages if m["type"] == "warning")
    run = helpers.run_worker(worker_python, "survey", "--rasters", may, "--out", out, "--model", tiny_model.path, "--workers", 1, timeout=300).check()
    assert run.result["skipped"] == 1, run.result  # and then done


def test_a_fingerprint_recorded_before_sidecars_counted_still_matches(tmp_path):
    """Recorded without its sidecars (a survey of an earlier version), a raster with an .aux.xml is the same raster: every such
    image would otherwise be surveyed again after an update."""
    from model.surveystore import fingerprint, same_fingerprint

    raster = helpers.generate_raster(tmp_path, name="scene.tif", width=64, height=64)
    without = fingerprint(raster.path)
    before = without.split("|")[0]  # as an earlier version recorded it
    # statistics QGIS writes as it opens the image are no change of the raster (the image had been surveyed again)
    (tmp_path / "scene.tif.aux.xml").write_text("<PAMDataset><PAMRasterBand band=\"1\"><Metadata><MDI key=\"STATISTICS_MEAN\">5</MDI></Metadata>"
                                               "</PAMRasterBand></PAMDataset>")
    assert fingerprint(raster.path) == without
    (tmp_path / "scene.tif.aux.xml").write_text("<PAMDataset><GeoTransform>1, 0.5, 0, 2, 0, -0.5</GeoTransform></PAMDataset>")
    now = fingerprint(raster.path)
    assert same_fingerprint(before, now) and not same_fingerprint(without, now) and same_fingerprint(now, fingerprint(raster.path))


def test_a_survey_of_the_version_before_the_model_fields_resumes_with_them(worker_python, tiny_model, tmp_path):
    """Chunks record their model and the summary its grid and mirror since 2026-12-07: a survey made before, without those
    fields, resumes, its new rows filled and its old ones NULL."""
    folder = tmp_path / "images"
    folder.mkdir()
    make_images(folder, 2)
    first, second = sorted(os.listdir(folder))
    out = tmp_path / "survey.gpkg"
    run_survey(worker_python, "--rasters", folder / first, "--out", out, "--model", tiny_model.path, "--workers", 1)
    dataset = ogr.Open(str(out), update=1)
    for table, names in (("chunks", ("model_name", "model_version")), ("summary", ("chunk_size", "stride", "tta"))):
        layer = dataset.GetLayerByName(table)
        for name in names:
            assert layer.DeleteField(layer.GetLayerDefn().GetFieldIndex(name)) == 0
    dataset = None
    result = run_survey(worker_python, "--rasters", folder, "--out", out, "--model", tiny_model.path, "--workers", 1)
    assert result["done"] == 1 and result["skipped"] == 1, result
    chunks = rows_by_image(out, "chunks")
    assert {row["model_name"] for row in chunks[second[:-4]]} == {modelfile_name(tiny_model)} and {row["model_name"] for row in chunks[first[:-4]]} == {None}
    summaries = {row["image_id"]: row for row in qs.read_ogr(out, "summary").rows}
    assert (summaries[second[:-4]]["chunk_size"], summaries[second[:-4]]["stride"], summaries[second[:-4]]["tta"]) == (64, 64, 1)
    assert summaries[first[:-4]]["chunk_size"] is None


def modelfile_name(tiny_model) -> str:
    from model import modelfile

    return modelfile.read_metadata(tiny_model.path)["name"]


def test_a_resume_refused_for_another_models_chunk_size_says_whose_it_is(worker_python, tiny_model, tmp_path):
    """CHUNK_SIZE left at 0 with a model tuned at another chunk size: the refusal said "this run asks for CHUNK_SIZE 32", a
    size the user never gave."""
    from model import modelfile

    folder = tmp_path / "images"
    folder.mkdir()
    make_images(folder, 1)
    out = tmp_path / "survey.gpkg"
    run_survey(worker_python, "--rasters", folder, "--out", out, "--model", tiny_model.path, "--workers", 1)
    other = tmp_path / "tuned_at_32.hiriseice"
    shutil.copy(tiny_model.path, other)
    meta = modelfile.read_metadata(str(other))
    modelfile.store_metadata(str(other), dict(meta, version=meta["version"] + "-32", chunk_size=32))
    run = helpers.run_worker(worker_python, "survey", "--rasters", folder, "--out", out, "--model", other, "--workers", 1, timeout=300)
    assert run.returncode == 2, run.stdout[-2000:]
    assert (f"this run asks for CHUNK_SIZE 32, STRIDE 32 (CHUNK_SIZE 0: the chunk size model {meta['name']} {meta['version']}-32 was made for)"
            in run.errors[0]["message"]), run.errors


def test_a_survey_of_an_earlier_version_is_not_resumed_into_another_crs(tmp_path):
    """Surveys before 2026-12-06 wrote longitudes -180 to 180; resumed, their layers got chunks at 0 to 360 east in the old CRS,
    and QGIS then neither drew the western ones nor handed them to training."""
    from osgeo import ogr, osr

    from model.surveystore import LAYERS, SurveyError, SurveyStore

    path = tmp_path / "old_survey.gpkg"
    dataset = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    old_crs = osr.SpatialReference()
    old_crs.SetFromUserInput("+proj=longlat +R=3396190 +no_defs")
    for name, geometry_type, _fields in LAYERS:
        dataset.CreateLayer(name, old_crs if geometry_type != ogr.wkbNone else None, geometry_type)
    dataset = None
    with pytest.raises(SurveyError, match=r"was surveyed by an earlier version of the plugin, in a CRS of longitudes -180 to 180 .* Survey into a new GeoPackage"):
        SurveyStore(str(path))
    SurveyStore(str(tmp_path / "new_survey.gpkg")).close()
    SurveyStore(str(tmp_path / "new_survey.gpkg")).close()  # this version's own, resumed
    # a chunks table another program replaced (Detect into the survey's file, in the image's CRS) is not blamed on a version
    dataset = ogr.Open(str(tmp_path / "new_survey.gpkg"), update=1)
    dataset.DeleteLayer(next(i for i in range(dataset.GetLayerCount()) if dataset.GetLayerByIndex(i).GetName() == "chunks"))
    projected = osr.SpatialReference(wkt=helpers.mars_equirectangular_wkt())
    dataset.CreateLayer("chunks", projected, ogr.wkbPolygon)
    dataset = None
    with pytest.raises(SurveyError, match=r"holds a 'chunks' table in Equirectangular Mars \(tests\), which no survey writes: another program replaced it\."):
        SurveyStore(str(tmp_path / "new_survey.gpkg"))


def test_a_survey_interrupted_says_its_finished_images_stay(worker_python, tiny_model, tmp_path):
    """Ctrl-C after two images had been recorded said "Cancelled; no output was written"."""
    import signal

    folder = tmp_path / "images"
    folder.mkdir()
    make_images(folder, 3)
    out = tmp_path / "survey.gpkg"
    command = [worker_python, "-m", "model", "--jsonl", "survey", "--rasters", str(folder), "--out", str(out), "--model", tiny_model.path, "--workers", "1"]
    survey = subprocess.Popen(command, cwd=str(qs.REPO_ROOT), env=helpers.worker_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        messages = []
        for line in survey.stdout:
            messages.append(json.loads(line))
            if messages[-1]["type"] == "progress" and messages[-1]["fraction"] > 0:  # an image recorded
                survey.send_signal(signal.SIGINT)
                break
        messages += [json.loads(line) for line in survey.stdout]
        assert survey.wait(timeout=60) == 130
    finally:
        survey.kill()
    assert messages[-1]["type"] == "error" and messages[-1]["message"] == (
        "Cancelled; the images it had finished stay in its GeoPackage, and a rerun resumes after them."), messages[-3:]
    assert qs.read_ogr(out, "runs").rows


HELD_INTERRUPT = """
import threading, time
import psutil
from distributed import LocalCluster
from model import daskcluster, interrupts


def interrupted_as_it_starts(**options):  # the orphan watch's SIGINT, sent while the cluster starts
    threading.Thread(target=interrupts.interrupt_main).start()
    return LocalCluster(**options)


said = []
try:
    cluster = daskcluster._started_local_cluster(interrupted_as_it_starts, 1)
    said.append("went on with the cluster")
except KeyboardInterrupt:
    said.append("interrupted once the cluster had started")
time.sleep(1)
said.append([" ".join(p.cmdline()) for p in psutil.Process().children(recursive=True) if "spawn_main" in " ".join(p.cmdline())])
print(said)
"""


def test_a_client_that_dies_while_the_local_cluster_starts_still_stops_the_survey(worker_python):
    """The cluster starts with SIGINT ignored (its processes must not see a terminal's Ctrl-C), and the orphan watch's SIGINT
    sent then was lost: a survey whose client had died in those seconds surveyed every image into the GeoPackage."""
    done = subprocess.run([worker_python, "-c", HELD_INTERRUPT], cwd=str(qs.REPO_ROOT), env=helpers.worker_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "['interrupted once the cluster had started', []]", done.stdout + done.stderr[-3000:]


def test_a_survey_whose_client_was_killed_stops_instead_of_writing_on(worker_python, tiny_model, tmp_path):
    """kill -9 of qgis_process had left its survey and the survey's Dask workers running, writing on into the
    GeoPackage while the user's rerun started a second survey of it."""
    import shlex
    import signal
    import time

    folder = tmp_path / "images"
    folder.mkdir()
    for seed in range(40):  # far more work than the seconds it has to stop in
        helpers.generate_raster(folder, name=f"ESP_0{100 + seed}000_1234_RED.tif", width=1024, height=1024, nodata=0, seed=100 + seed)
    command = " ".join(shlex.quote(str(part)) for part in [worker_python, "-m", "model", "--jsonl", "survey", "--rasters", folder, "--out",
                                                             tmp_path / "survey.gpkg", "--model", tiny_model.path, "--workers", "1"])
    client = subprocess.Popen(["bash", "-c", f"{command} > {tmp_path / 'lines.jsonl'} 2>/dev/null & echo $!; wait"], cwd=str(qs.REPO_ROOT),
                              env=helpers.worker_env(), stdout=subprocess.PIPE, text=True)
    survey_pid = int(client.stdout.readline())
    try:
        deadline = time.monotonic() + 120
        lines = tmp_path / "lines.jsonl"
        while not (lines.exists() and "progress" in lines.read_text()) and time.monotonic() < deadline:  # the survey has recorded an image
            time.sleep(0.5)
        client.send_signal(signal.SIGKILL)
        client.wait()
        gone_by = time.monotonic() + 6
        while time.monotonic() < gone_by and os.path.exists(f"/proc/{survey_pid}") and "zombie" not in _state(survey_pid):
            time.sleep(0.5)
        assert not os.path.exists(f"/proc/{survey_pid}") or "zombie" in _state(survey_pid), "the survey ran on after its client was killed"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(survey_pid, signal.SIGKILL)
    assert not os.path.exists(str(tmp_path / "survey.gpkg.survey-lock"))
    assert len(qs.read_ogr(tmp_path / "survey.gpkg", "runs").rows) < 40


def test_a_worker_whose_client_died_before_it_started_watching_stops(worker_python, tiny_model, tmp_path):
    """The worker watched for a change of its parent from the parent it saw as it started: a client killed in the worker's
    first second had already left it to init, which it then took for its client, and it ran on. The client now names itself."""
    import shlex

    raster = helpers.generate_raster(tmp_path, name="big.tif", width=1024, height=1024, seed=9)
    dead = next(pid for pid in range(4_000_000, 3_000_000, -1) if not os.path.exists(f"/proc/{pid}"))
    done = subprocess.run([worker_python, "-m", "model", "--jsonl", "detect", raster.path, "--model", tiny_model.path, "--chunk-size", str(helpers.TINY_CHUNK_SIZE),
                           "--stride", "8", "--batch-size", "1", "--out", str(tmp_path / "chunks.gpkg")], cwd=str(qs.REPO_ROOT),
                          env=dict(helpers.worker_env(), HIRISEICE_CLIENT_PID=str(dead)), capture_output=True, text=True, timeout=300)
    errors = [json.loads(line) for line in done.stdout.splitlines() if '"error"' in line]
    assert [e["code"] for e in errors] == ["cancelled"] and "Traceback" not in done.stderr, done.stdout[-2000:] + done.stderr[-2000:]
    assert not (tmp_path / "chunks.gpkg").exists()

    # a client alive behind a wrapper that runs the worker's Python without exec (conda run, a site's module script): it runs on
    small = helpers.generate_raster(tmp_path, name="small.tif", width=384, height=384, seed=9)
    wrapped = " ".join(shlex.quote(str(part)) for part in [worker_python, "-m", "model", "--jsonl", "detect", small.path, "--model", tiny_model.path, "--chunk-size",
                                                            helpers.TINY_CHUNK_SIZE, "--stride", 8, "--batch-size", 1, "--out", tmp_path / "wrapped.gpkg"])
    done = subprocess.run(["sh", "-c", f"{wrapped}; exit $?"], cwd=str(qs.REPO_ROOT), env=dict(helpers.worker_env(), HIRISEICE_CLIENT_PID=str(os.getpid())),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and (tmp_path / "wrapped.gpkg").exists(), done.stdout[-2000:] + done.stderr[-2000:]


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as handle:
            return next((line for line in handle if line.startswith("State:")), "").lower()
    except OSError:
        return ""


def test_a_cluster_whose_scheduler_lacks_the_engine_is_told_how_to_start_it(worker_python, tiny_model, tmp_path):
    """Its workers had the plugin on PYTHONPATH, its scheduler not: a traceback of 'Error during deserialization of the task graph'."""
    import time

    folder = tmp_path / "images"
    folder.mkdir()
    make_images(folder, 1)
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    bare = {key: value for key, value in helpers.worker_env().items() if key != "PYTHONPATH"}
    dask = os.path.join(os.path.dirname(worker_python), "dask")
    scheduler = subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], cwd=str(tmp_path), env=bare,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = subprocess.Popen([dask, "worker", address, "--nthreads", "1", "--no-dashboard"], cwd=str(tmp_path),
                              env=dict(bare, PYTHONPATH=str(qs.REPO_ROOT)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(3)
        run = helpers.run_worker(worker_python, "survey", "--rasters", folder, "--out", tmp_path / "survey.gpkg", "--model", tiny_model.path,
                                 "--scheduler", address, timeout=300)
    finally:
        for process in (worker, scheduler):
            process.kill()
            process.wait()
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-3000:]
    assert run.errors[0]["message"].startswith(f"The Dask scheduler at {address} could not unpack the survey's tasks (") and (
        "start it with the plugin folder on PYTHONPATH, as its workers") in run.errors[0]["message"], run.errors


def failed_outcome(number):
    from model.surveystore import FAILED, SurveyImage

    return {"image": SurveyImage(f"ESP_0000{number:02d}_1234_RED", f"/images/ESP_0000{number:02d}_1234_RED.tif"), "status": FAILED,
            "error": "unreadable", "chunks": [], "summary": None, "runtime_s": 0.1}


def test_a_geopackage_another_program_holds_is_waited_for_not_a_traceback(tmp_path):
    """A QGIS user reading the layers while the batch ran: GDAL gives up after 5 s, and the survey had
    ended with 'sqlite3_exec(COMMIT) failed: database is locked' and lost the images in flight."""
    import sqlite3
    import threading
    import time

    from model.surveystore import SurveyStore

    path = tmp_path / "survey.gpkg"
    said = []
    store = SurveyStore(str(path), said.append)
    held = threading.Event()

    def hold(seconds):
        reader = sqlite3.connect(str(path), isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM runs").fetchall()  # a read lock, as a viewer's open transaction
        held.set()
        time.sleep(seconds)
        reader.execute("COMMIT")
        reader.close()

    try:
        store.record(failed_outcome(1), "m", "1")
        holder = threading.Thread(target=hold, args=(8.0,))
        holder.start()
        held.wait()
        started = time.monotonic()
        store.record(failed_outcome(2), "m", "1")
        assert time.monotonic() - started > 5.0  # past GDAL's own patience
        holder.join()
        store.record(failed_outcome(3), "m", "1")
    finally:
        store.close()
    assert len(said) == 1 and said[0].startswith(f"{path} is held by another program") and "ESP_000002_1234_RED" in said[0], said
    rows = qs.read_ogr(path, "runs").rows
    assert sorted(row["image_id"] for row in rows) == ["ESP_000001_1234_RED", "ESP_000002_1234_RED", "ESP_000003_1234_RED"]
    assert sqlite3.connect(str(path)).execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert not os.path.exists(str(path) + ".survey-lock")


def test_settings_are_kept_once_an_image_is_recorded_with_them(tmp_path):
    """A first run stopped before any image (a wrong scheduler address) must not fix its settings for ever."""
    from model.inference import DetectOptions
    from model.surveystore import SurveyError, SurveyStore

    store = SurveyStore(str(tmp_path / "survey.gpkg"))
    try:
        store.keep_settings(DetectOptions(chunk_size=64, stride=64))
        store.keep_settings(DetectOptions(chunk_size=32, stride=32))  # nothing recorded yet: a new start
        store.record(failed_outcome(1), "m", "1")
        with pytest.raises(SurveyError, match=r"was surveyed with CHUNK_SIZE 32, STRIDE 32; this run asks for CHUNK_SIZE 64, STRIDE 64\."):
            store.keep_settings(DetectOptions(chunk_size=64, stride=64))
        store.keep_settings(DetectOptions(chunk_size=32, stride=32))
    finally:
        store.close()


def test_each_images_rows_are_found_by_an_index_in_a_new_and_an_earlier_survey(tmp_path):
    """Each image's rows are read and replaced by image_id: without an index every image scanned every table, 0.3 s an
    image in a survey of 600,000 chunks, so that a survey slowed as it grew."""
    import sqlite3

    from model.surveystore import LAYERS, SurveyStore

    path = tmp_path / "survey.gpkg"

    def plans():
        with contextlib.closing(sqlite3.connect(path)) as connection:
            return {name: " ".join(str(row[-1]) for row in connection.execute(f'EXPLAIN QUERY PLAN SELECT fid FROM "{name}" WHERE image_id = ?', ("x",)))
                    for name, _, _ in LAYERS}

    SurveyStore(str(path)).close()
    assert all(f"INDEX {name}_image_id (image_id=?)" in plan for name, plan in plans().items()), plans()
    with contextlib.closing(sqlite3.connect(path)) as connection:  # as a survey of an earlier version was made
        for name, _, _ in LAYERS:
            connection.execute(f'DROP INDEX "{name}_image_id"')
        connection.commit()
    assert all("SCAN" in plan for plan in plans().values())
    SurveyStore(str(path)).close()  # resumed
    assert all(f"INDEX {name}_image_id (image_id=?)" in plan for name, plan in plans().items()), plans()


def test_two_surveys_of_one_geopackage_are_refused_while_the_first_runs(tmp_path):
    """Two writers had both surveyed every image, each committing over the other."""
    from model.surveystore import SurveyError, SurveyStore

    path = tmp_path / "survey.gpkg"
    first = SurveyStore(str(path))
    try:
        with pytest.raises(SurveyError, match=r"Another survey is writing .*survey\.gpkg\. Wait for it to finish \(a rerun then resumes it\)"):
            SurveyStore(str(path))
    finally:
        first.close()
    SurveyStore(str(path)).close()  # free again once the first has closed


def test_a_full_disk_stops_the_survey_with_the_fix_and_keeps_what_was_recorded(tmp_path):
    """Writing past the file-size limit (as on a full disk) had ended with a traceback of sqlite3_exec(COMMIT)."""
    code = f"""
import resource, sys
sys.path.insert(0, {str(qs.REPO_ROOT)!r})
from model.surveystore import FAILED, SurveyError, SurveyImage, SurveyStore

def failed_outcome(number):
    return {{"image": SurveyImage(f"ESP_0000{{number:02d}}_1234_RED", "/images/x.tif"), "status": FAILED, "error": "unreadable", "chunks": [],
            "summary": None, "runtime_s": 0.1}}

store = SurveyStore(sys.argv[1])
store.record(failed_outcome(1), "m", "1")
size = __import__("os").path.getsize(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 4096, size + 4096))
outcome = failed_outcome(2)
outcome["error"] = "x" * 200000
try:
    store.record(outcome, "m", "1")
except SurveyError as exc:
    print(exc)
finally:
    store.close()
"""
    path = tmp_path / "survey.gpkg"
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stdout.startswith(f"The survey could not be written to {path}: ") and done.stdout.strip().endswith(
        "The 1 image(s) recorded before in this run are kept, with those of earlier runs; run the survey again to resume it."), done.stdout
    assert [row["image_id"] for row in qs.read_ogr(path, "runs").rows] == ["ESP_000001_1234_RED"]


def test_a_survey_in_which_every_image_failed_is_an_error_not_a_success(worker_python, tiny_model, tmp_path):
    """An overnight batch that surveyed nothing exits with an error; its runs table keeps each failure for the retry."""
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "ESP_000020_1000_RED.tif").write_text("not an image\n")
    out = tmp_path / "survey.gpkg"
    run = helpers.run_worker(worker_python, "survey", "--rasters", folder, "--out", out, "--model", tiny_model.path, "--workers", 1, timeout=600)
    assert run.returncode == 2, run.stdout[-3000:] + run.stderr[-3000:]
    errors = [m for m in run.messages if m["type"] == "error"]
    assert len(errors) == 1 and "None of the 1 images could be surveyed" in errors[0]["message"] and "failed images are retried" in errors[0]["message"]
    assert not [m for m in run.messages if m["type"] == "result"]
    assert [row["status"] for row in qs.read_ogr(out, "runs").rows] == ["failed"]


def test_a_resumed_survey_in_which_every_image_tried_failed_is_an_error_too(worker_python, tiny_model, tmp_path):
    """A rerun that surveyed nothing (the drive gone, the new downloads damaged) had exited 0 as soon as some
    images were done before."""
    folder = tmp_path / "images"
    folder.mkdir()
    make_images(folder, 1)
    out = tmp_path / "survey.gpkg"
    arguments = ("survey", "--rasters", folder, "--out", out, "--model", tiny_model.path, "--workers", 1)
    assert helpers.run_worker(worker_python, *arguments, timeout=600).returncode == 0
    (folder / "ESP_000020_1000_RED.tif").write_text("not an image\n")
    run = helpers.run_worker(worker_python, *arguments, timeout=600)
    assert run.returncode == 2, run.stdout[-3000:] + run.stderr[-3000:]
    errors = [m["message"] for m in run.messages if m["type"] == "error"]
    assert len(errors) == 1 and "None of the 1 images could be surveyed (1 done before were skipped)" in errors[0], errors


def test_an_image_in_a_local_crs_fails_with_the_fix_not_an_unexpected_error(worker_python, tiny_model, tmp_path):
    """A local CRS lies on no body, so the survey's Mars coordinates cannot take its chunks: it said 'unexpected TypeError'."""
    folder = tmp_path / "images"
    folder.mkdir()
    local = 'LOCAL_CS["arbitrary",UNIT["metre",1],AXIS["Easting",EAST],AXIS["Northing",NORTH]]'
    helpers.write_geotiff(folder / "ESP_000021_1000_RED.tif", helpers.generate_raster(tmp_path, width=128, height=128).bands, "UInt16",
                          helpers.default_geotransform(128, 128), local)
    out = tmp_path / "survey.gpkg"
    run = helpers.run_worker(worker_python, "survey", "--rasters", folder, "--out", out, "--model", tiny_model.path, "--workers", 1, timeout=600)
    assert run.returncode == 2, run.stdout[-3000:] + run.stderr[-3000:]
    error = qs.read_ogr(out, "runs").rows[0]["error"]
    assert "cannot be placed in the survey's Mars coordinates" in error and "Assign the product's Mars CRS" in error and "unexpected" not in error


HUNG_VRT = """<VRTDataset rasterXSize="384" rasterYSize="384">
  <SRS>+proj=eqc +R=3396190 +units=m</SRS>
  <GeoTransform>0, 0.25, 0, 0, 0, -0.25</GeoTransform>
  <VRTRasterBand dataType="UInt16" band="1">
    <SimpleSource><SourceFilename relativeToVRT="0">/vsisubfile/0_100000000,{pipe}</SourceFilename><SourceBand>1</SourceBand></SimpleSource>
  </VRTRasterBand>
</VRTDataset>
"""


def test_an_image_that_never_finishes_reading_is_given_up_and_the_batch_goes_on(qgis_app, tiny_model, tmp_path):
    """A VRT whose pixels come from a named pipe nobody writes, through a /vsi path that no check before the read
    follows, opens, then blocks its first read for ever, as a file on a hung network drive does: it stalled the survey
    until killed. Past IMAGE_MINUTES it is recorded as failed, its worker restarted, and the image after it done."""
    folder = tmp_path / "images"
    folder.mkdir()
    os.mkfifo(tmp_path / "pipe")
    (folder / "ESP_000001_1000_RED.vrt").write_text(HUNG_VRT.format(pipe=tmp_path / "pipe"))  # surveyed first, by the one worker
    make_images(folder, 1)
    out = tmp_path / "survey.gpkg"
    results = qs.run_algorithm("hiriseice:survey", {"FOLDER": str(folder), "MODEL": tiny_model.path, "WORKERS": 1, "IMAGE_MINUTES": 0.1, "OUTPUT": str(out)})
    assert (results["DONE"], results["FAILED"]) == (1, 1), results["_feedback"].text[-3000:]
    runs = {row["image_id"]: row for row in qs.read_ogr(out, "runs").rows}
    assert runs["ESP_000001_1000_RED"]["status"] == "failed" and "still running after 0.1 min, so it was given up and its worker restarted" in runs["ESP_000001_1000_RED"]["error"]
    assert runs["ESP_030000_1234_RED"]["status"] == "done"


def test_processing_survey_of_footprints_partly_downloaded_surveys_the_rest(qgis_app, tiny_model, survey_folder, tmp_path):
    """A download that failed for some footprints is normal: the rest is surveyed and the missing ones named;
    with none downloaded, one message says to run Download first."""
    from qgis.core import QgsFeature, QgsVectorLayer

    _, images = survey_folder
    names = [os.path.basename(image.path) for image in images[:2]]
    footprints = QgsVectorLayer("Polygon?crs=IAU_2015:49900&field=jp2_url:string", "footprints", "memory")
    features = []
    for name in names:
        feature = QgsFeature(footprints.fields())
        feature["jp2_url"] = f"https://hirise-pds.lpl.arizona.edu/PDS/RDR/{name}"
        features.append(feature)
    footprints.dataProvider().addFeatures(features)
    downloaded = tmp_path / "downloads"
    downloaded.mkdir()
    shutil.copyfile(images[0].path, downloaded / names[0])
    results = qs.run_algorithm("hiriseice:survey", {"FOOTPRINTS": footprints, "IMAGES_FOLDER": str(downloaded), "MODEL": tiny_model.path, "WORKERS": 1,
                                                     "OUTPUT": str(tmp_path / "survey.gpkg")})
    assert (results["DONE"], results["FAILED"]) == (1, 0)
    warned = [w for w in results["_feedback"].warnings if "1 of the 2 footprints' JP2s are not in" in w]
    assert len(warned) == 1 and names[1] in warned[0] and "Download them and run the survey again" in warned[0], results["_feedback"].warnings
    os.remove(downloaded / names[0])
    message = qs.processing_error("hiriseice:survey", {"FOOTPRINTS": footprints, "IMAGES_FOLDER": str(downloaded), "MODEL": tiny_model.path,
                                                       "OUTPUT": str(tmp_path / "none.gpkg")})
    assert "None of the 2 footprints' JP2s is in IMAGES_FOLDER" in message and "Run 'Download HiRISE products'" in message, message


def test_worker_survey_of_footprints_partly_downloaded_surveys_the_rest(worker_python, tiny_model, survey_folder, tmp_path):
    """The worker's command line, given find's footprints, does as the QGIS algorithm: the JP2s that
    arrived are surveyed, the missing ones named once in a warning; none arrived is an error."""
    _, images = survey_folder
    names = [os.path.basename(image.path) for image in images[:2]]
    footprints = tmp_path / "footprints.gpkg"
    source = ogr.GetDriverByName("GPKG").CreateDataSource(str(footprints))
    layer = source.CreateLayer("footprints", None, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("jp2_url", ogr.OFTString))
    for name in names:
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetField("jp2_url", f"https://hirise-pds.lpl.arizona.edu/PDS/RDR/{name}")
        layer.CreateFeature(feature)
    source = None
    downloaded = tmp_path / "downloads"
    downloaded.mkdir()
    shutil.copyfile(images[0].path, downloaded / names[0])
    arguments = ["survey", "--rasters", footprints, "--images-folder", downloaded, "--model", tiny_model.path, "--workers", 1]
    run = helpers.run_worker(worker_python, *arguments, "--out", tmp_path / "survey.gpkg", timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = [m for m in run.messages if m["type"] == "result"][0]
    assert (result["done"], result["failed"]) == (1, 0), result
    warned = [m["message"] for m in run.messages if m["type"] == "warning" and "footprints' JP2s are not in" in m["message"]]
    assert len(warned) == 1 and names[1] in warned[0], run.messages
    os.remove(downloaded / names[0])
    run = helpers.run_worker(worker_python, *arguments, "--out", tmp_path / "none.gpkg", timeout=600)
    errors = [m["message"] for m in run.messages if m["type"] == "error"]
    assert run.returncode == 2 and len(errors) == 1 and "None of the 2 footprints' JP2s is in" in errors[0] and "Download HiRISE products" in errors[0], run.messages
    assert not (tmp_path / "none.gpkg").exists()


RETRY_CLOCK = r"""
import json, os, sys, time
from distributed import Client, LocalCluster
from distributed.scheduler import KilledWorker
from model import survey, surveystore

marker = sys.argv[1]
survey.WATCH_S = 0.5


def dies_first(seconds):
    survey._say_started()
    if not os.path.exists(marker):  # its first worker dies under it (out of memory), once the survey has seen it run
        open(marker, "w").close()
        time.sleep(2.0)
        os._exit(1)
    time.sleep(seconds)
    return {"status": "done"}


def plain(seconds):
    survey._say_started()
    time.sleep(seconds)
    return {"status": "done"}


with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(cluster) as client:
    futures = {client.submit(dies_first, 4.0, pure=False): surveystore.SurveyImage("A", "a.tif"),
               client.submit(plain, 5.0, pure=False): surveystore.SurveyImage("B", "b.tif")}
    outcomes = {futures[future].image_id: outcome["status"] + (": " + outcome["error"] if outcome.get("error") else "")
                for future, outcome in survey._outcomes(client, futures, 6.0, KilledWorker)}
print(json.dumps(outcomes))
"""


def test_an_image_tried_again_after_its_worker_died_has_a_clock_of_its_own(worker_python, tmp_path):
    """The time limit had run from an image's first attempt: retried after its worker died, it was given
    up while it waited behind another image, and the restart killed that one too."""
    done = helpers.run_worker_snippet(worker_python, RETRY_CLOCK, tmp_path / "died-once")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"A": "done", "B": "done"}


def test_a_cancelled_survey_says_it_keeps_the_images_it_finished(qgis_app, tiny_model, tmp_path):
    """It had said "no output was written", with the images done before the cancel in its GeoPackage."""
    from qgis.core import QgsProcessingException

    folder = tmp_path / "images"
    folder.mkdir()
    make_images(folder, 4)
    out = tmp_path / "survey.gpkg"
    feedback = qs.recording_feedback()
    thread, _seen = qs.cancel_when(feedback, lambda: any(line.startswith("[1/4] ") for line in feedback.infos))
    try:
        with pytest.raises(QgsProcessingException) as raised:
            qs.run_algorithm("hiriseice:survey", {"FOLDER": str(folder), "MODEL": tiny_model.path, "WORKERS": 1, "OUTPUT": str(out)}, feedback=feedback)
    finally:
        thread.join()
    assert str(raised.value).endswith("Cancelled by the user: the worker was stopped and the images it had finished stay in its GeoPackage, "
                                      "and a rerun resumes after them."), str(raised.value)
    done = [row for row in qs.read_ogr(out, "runs").rows if row["status"] == "done"]
    assert 1 <= len(done) < 4


MODEL_SAVED_OVER = r"""
import json, sys
from model.inference import DetectOptions
from model.survey import survey_image
from model.surveystore import SurveyImage
raster, model_path, name, version = sys.argv[1:5]
image = SurveyImage("ESP_000001_1234_RED", raster)
outcomes = [survey_image(image, model_path, DetectOptions(), model=started) for started in ((name, version), (name, "an earlier version"))]
print(json.dumps([(o["status"], o["error"], len(o["chunks"])) for o in outcomes]))
"""


def test_an_image_whose_model_file_was_saved_over_mid_survey_is_not_scored_with_the_other_model(worker_python, tiny_model, survey_folder):
    """A survey reloads a model file that changes on disk: images after a retrained model was saved over it were scored with
    that one, while the runs table recorded all of them under the model the survey started with (and a resume skipped them)."""
    _, images = survey_folder
    name, version = tiny_model.metadata["name"], str(tiny_model.metadata["version"])
    done = helpers.run_worker_snippet(worker_python, MODEL_SAVED_OVER, images[0].path, tiny_model.path, name, version)
    assert done.returncode == 0, done.stderr[-3000:]
    (same_status, _, same_chunks), (other_status, error, other_chunks) = json.loads(done.stdout.strip().splitlines()[-1])
    assert same_status == "done" and same_chunks > 0
    assert other_status == "failed" and other_chunks == 0
    assert error == (f"the model file {tiny_model.path} now holds {name} {version}, not the {name} an earlier version this survey started with "
                     "(a model was saved over it): the image was not scored. Run the survey again to go on with the new model, or give the old one's file")


CLUSTERS_THAT_CANNOT_SURVEY = r"""
import json, os, signal, subprocess, sys, threading, time
from http.server import HTTPServer, SimpleHTTPRequestHandler
from model import daskcluster, survey, surveystore
from model.inference import DetectOptions
from model.protocol import Reporter

folder, out, model, dask, port, plugin = sys.argv[1:7]
daskcluster.SCHEDULER_ANSWER_S, daskcluster.NO_WORKER_S = 8.0, 6.0
bare = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
said, took = {}, {}


def start(*command, env=bare):
    return subprocess.Popen([dask, *command], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def attempt(case, scheduler, reporter=None, options=None):
    started = time.monotonic()
    try:
        survey.survey([folder], os.path.join(out, case + ".gpkg"), model, options or DetectOptions(), scheduler=scheduler, reporter=reporter or Reporter())
        said[case] = "surveyed"
    except surveystore.SurveyError as exc:
        said[case] = str(exc)
    took[case] = time.monotonic() - started


web = HTTPServer(("127.0.0.1", 0), SimpleHTTPRequestHandler)
threading.Thread(target=web.serve_forever, daemon=True).start()
attempt("not an address", "foo bar")
attempt("a web address", f"http://127.0.0.1:{web.server_port}")
attempt("a web server", f"tcp://127.0.0.1:{web.server_port}")

address = f"tcp://127.0.0.1:{port}"
scheduler = start("scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard", env=dict(bare, PYTHONPATH=plugin))
time.sleep(3)
worker = start("worker", address, "--nthreads", "1", "--no-dashboard", "--no-nanny")  # without the plugin on its path
time.sleep(4)
attempt("a worker without the plugin", address)
worker.kill()
worker.wait()
time.sleep(2)


class Warnings(Reporter):
    def warning(self, message):
        super().warning(message)
        said.setdefault("warnings", []).append(message)


queued = []  # a batch queue's worker, started a while after the survey
threading.Timer(8.0, lambda: queued.append(start("worker", address, "--nthreads", "1", "--no-dashboard", "--no-nanny",
                                                 env=dict(bare, PYTHONPATH=plugin)))).start()
attempt("workers from a queue", address, Warnings())


class KillTheWorker(Warnings):
    def log(self, message):
        super().log(message)
        if message.startswith("[1/"):
            queued[0].kill()


attempt("the workers gone", address, KillTheWorker(), DetectOptions(stride=8))  # seconds an image: two are left when the worker dies
worker = start("worker", address, "--nthreads", "1", "--no-dashboard", env=dict(bare, PYTHONPATH=plugin))
time.sleep(4)


class LoseTheScheduler(Reporter):
    def log(self, message):
        super().log(message)
        if message.startswith("[1/"):
            scheduler.kill()


attempt("the scheduler lost", address, LoseTheScheduler())
for process in [worker, scheduler] + queued:
    process.kill()
    process.wait()
print(json.dumps({"said": said, "took": took, "left": sorted(name for name in os.listdir(out) if name.endswith(".gpkg"))}))
"""


def test_a_cluster_that_cannot_survey_is_said_so_not_waited_on_for_ever(worker_python, tiny_model, tmp_path):
    """A cluster whose workers were all gone, or whose workers' Python lacks the plugin (they died at their first task),
    waited for ever in silence; a web server's port, or the dashboard's, waited past Dask's own timeout; 'foo bar' and an
    http:// address, and a scheduler killed mid-survey, ended in tracebacks. A cluster whose workers a batch queue starts
    later is waited for, with a warning."""
    folder = tmp_path / "images"
    folder.mkdir()
    make_images(folder, 3)
    port = free_port()
    dask = os.path.join(os.path.dirname(worker_python), "dask")
    done = helpers.run_worker_snippet(worker_python, CLUSTERS_THAT_CANNOT_SURVEY, folder, tmp_path, tiny_model.path, dask, port, qs.REPO_ROOT, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    said, took = result["said"], result["took"]
    assert said["not an address"].startswith("The Dask scheduler address 'foo bar' is not one: give it as tcp://HOST:PORT.")
    # a run that recorded no image leaves no GeoPackage of empty tables behind; one that recorded any keeps it to resume
    assert not {"not an address.gpkg", "a web address.gpkg", "a web server.gpkg"} & set(result["left"]), result["left"]
    assert {"workers from a queue.gpkg", "the workers gone.gpkg", "the scheduler lost.gpkg"} <= set(result["left"]), result["left"]
    assert said["a web address"].startswith("The Dask scheduler address 'http://127.0.0.1:")
    assert "(something answers there, but not as a Dask scheduler, within 8 s)" in said["a web server"] and took["a web server"] < 30, result
    assert "8787 is its dashboard" in said["a web server"]
    assert said["a worker without the plugin"].startswith(f"1 of the 1 Dask workers at tcp://127.0.0.1:{port} cannot survey: their Python lacks model"), said
    assert said["workers from a queue"] == "surveyed" and took["workers from a queue"] > 8, result
    assert said["warnings"][0].startswith("No Dask worker is connected: the survey waits for one (a batch queue may take a while); start workers"), said
    assert said["the workers gone"].startswith("The Dask workers were all gone for 0.1 min, so 2 images were left: start workers with the plugin's"), said
    assert said["warnings"][1].startswith("No Dask worker is connected: the survey waits 0.1 min for one; start workers"), said
    assert said["the scheduler lost"] == (f"Lost the Dask scheduler at tcp://127.0.0.1:{port} mid-survey ({said['the scheduler lost'].split('(')[1].split(')')[0]}). "
                                          "Restart the cluster: the images recorded before are kept; run the survey again to resume it."), said
    assert "Traceback" not in done.stderr and "Failed to reconnect" not in done.stderr, done.stderr[-3000:]


def test_ctrl_c_in_a_terminal_stops_a_local_survey_quietly_beside_another_clusters_dashboard(worker_python, tiny_model, tmp_path):
    """The terminal's Ctrl-C reached the local cluster's worker processes too, which printed four tracebacks (84 lines)
    before the survey's own one line; and a dashboard already on port 8787 (JupyterLab's Dask, another survey) made each
    survey print Dask's 'Port 8787 is already in use' warning, for a dashboard nobody sees."""
    import signal
    import socket
    import time

    folder = tmp_path / "images"
    folder.mkdir()
    make_images(folder, 20)
    dashboard = socket.socket()
    try:
        dashboard.bind(("127.0.0.1", 8787))
        dashboard.listen()
    except OSError:
        dashboard.close()
        dashboard = None  # held already by something else: the same case
    out = tmp_path / "survey.gpkg"
    command = [worker_python, "-m", "model", "survey", "--rasters", str(folder), "--out", str(out), "--model", tiny_model.path, "--workers", "1"]
    try:
        survey_run = subprocess.Popen(command, cwd=str(qs.REPO_ROOT), env=dict(helpers.worker_env(), PYTHONUNBUFFERED="1"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, start_new_session=True,
                                      preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as a terminal starts it (a background job ignores it)
        lines = []
        for line in iter(survey_run.stderr.readline, ""):  # its log, until the first image is recorded
            lines.append(line)
            if line.startswith("[1/"):
                break
        os.killpg(survey_run.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole foreground process group
        printed, errors = survey_run.communicate(timeout=120)
        time.sleep(1)
        again = helpers.run_worker(worker_python, "survey", "--rasters", folder, "--out", out, "--model", tiny_model.path, "--workers", 1, timeout=300)
    finally:
        if dashboard is not None:
            dashboard.close()
    said = "".join(lines) + printed + errors
    assert survey_run.returncode == 130 and "Traceback" not in said and "KeyboardInterrupt" not in said, said[-4000:]
    assert errors.strip().splitlines()[-1].startswith("error: Cancelled"), errors[-2000:]
    assert "Port 8787 is already in use" not in said + again.stderr, said[-2000:]
    result = again.check().result
    assert 1 <= result["skipped"] < 20 and result["skipped"] + result["done"] == 20 and result["failed"] == 0, result

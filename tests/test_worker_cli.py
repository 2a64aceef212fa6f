"""The worker's command line, `python -m model ...`, run as the plugin runs it: a real process in the
worker venv, JSON lines on stdout, real GeoPackage / GeoTIFF / HTML outputs checked with GDAL."""

import base64
import hashlib
import html
import io
import json
import os
import re
import shutil
import subprocess
import zipfile
from dataclasses import dataclass

import numpy as np
import pytest
from osgeo import gdal, ogr, osr

import model
from model import modelfile, report, review, rules
from model.errors import DamagedRasterError, EngineError, ModelFileError, RasterError
from model.grid import chunk_grid, grid_shape
from model.protocol import Reporter

import helpers
import qgis_support as qs

# What the geologist reads first, then the technical fields (issue 11).
CHUNK_FIELDS = ["image_id", "chunk_id", "probability", "class", "label", "review_rank",
                "row", "col", "x_off", "y_off", "width", "height", "valid_fraction", "centre_valid_fraction", "model_name", "model_version"]
SUMMARY_FIELDS = ["image_id", "chunks", "icy_chunks", "hard_chunks", "mean_probability", "max_probability", "category", "model_name", "model_version", "runtime_s",
                  "chunk_size", "stride", "tta", "icy_threshold", "hard_low", "category_rule", "min_valid", "dropped_chunks", "weights_sha256", "engine_version",
                  "scored_at", "observation_id", "solar_longitude", "incidence_angle", "centre_latitude", "scaling_factor", "scaling_offset", "nodata_dn",
                  "low_saturation_dn", "high_saturation_dn"]


@dataclass
class Detection:
    raster: helpers.GeneratedRaster
    run: helpers.WorkerRun
    gpkg: str
    report: str
    folder: str


@pytest.fixture(scope="module")
def scene(session_raster):
    """640 x 512 px 10-bit scene with a rotated footprint (DN 0 outside, declared) and bright blobs: 10 x 8 chunks of 64 px."""
    return session_raster(name="ESP_000001_1234_RED.tif", width=640, height=512, rotated_border=True, nodata=0, seed=21,
                          icy_chunk_size=64, icy_pattern=lambda row, col: (3 * row + col) % 4 == 0)


@pytest.fixture(scope="module")
def detection(scene, tiny_model, worker_python, tmp_path_factory) -> Detection:
    """One detect run, shared by the tests that read its outputs."""
    folder = tmp_path_factory.mktemp("detect")
    gpkg, report = str(folder / "chunks.gpkg"), str(folder / "report.html")
    run = helpers.run_worker(worker_python, "detect", scene.path, "--model", tiny_model.path, "--out", gpkg, "--report", report, "--batch-size", 8)
    return Detection(scene, run.check(), gpkg, report, str(folder))


def assert_progress_protocol(run: helpers.WorkerRun):
    messages = run.messages  # every line parses as JSON
    assert {m["type"] for m in messages} <= {"progress", "log", "written", "result"}
    assert all(os.path.isabs(m["path"]) for m in messages if m["type"] == "written")
    assert [m["type"] for m in messages].count("result") == 1 and messages[-1]["type"] == "result"
    fractions = [m["fraction"] for m in messages if m["type"] == "progress"]
    assert fractions, "no progress was reported"
    assert all(0.0 <= f <= 1.0 for f in fractions)
    assert fractions == sorted(fractions), f"progress went backwards: {fractions}"
    assert fractions[-1] == 1.0
    assert all(isinstance(m["message"], str) and m["message"] for m in messages if m["type"] == "log")
    assert "Traceback" not in run.stderr


def centre_share(valid, x_off, y_off, width, height):
    part = valid[y_off : y_off + height, x_off : x_off + width]
    cw, ch = max(1, round(width / 2)), max(1, round(height / 2))
    return part[(height - ch) // 2 : (height - ch) // 2 + ch, (width - cw) // 2 : (width - cw) // 2 + cw].mean()


# --- detect -----------------------------------------------------------------------------------


def test_detect_speaks_json_lines_with_increasing_progress_and_a_final_result(detection):
    assert_progress_protocol(detection.run)
    logs = " ".join(m["message"] for m in detection.run.messages if m["type"] == "log")
    assert "80 grid chunks of 64 px" in logs and os.path.abspath(detection.gpkg) in logs and os.path.abspath(detection.report) in logs
    # the report named as it is put in place, for the client to remove should the run fail after it
    assert [m["path"] for m in detection.run.messages if m["type"] == "written"] == [os.path.abspath(detection.report)]


def test_detect_result_chunks_are_the_grid_minus_no_data(detection, tiny_model):
    r = detection.raster
    result = detection.run.result
    chunks = result["chunks"]
    windows = {w.chunk_id: w for w in chunk_grid(r.width, r.height, 64, 64)}
    ids = [c["chunk_id"] for c in chunks]
    assert ids == sorted(set(ids))
    for c in chunks:
        w = windows[c["chunk_id"]]
        assert (c["row"], c["col"], c["x_off"], c["y_off"], c["width"], c["height"]) == (w.row, w.col, w.x_off, w.y_off, w.width, w.height)
        assert 0.0 <= c["probability"] <= 1.0
        assert c["class"] == rules.chunk_class(c["probability"])
        assert c["image_id"] == "ESP_000001_1234_RED"
        helpers.assert_rings_equal(helpers.ring_of_geometry(c["wkt"]), helpers.window_ring_gdal(r.geotransform, w.x_off, w.y_off, w.width, w.height))
    for w in windows.values():
        share = centre_share(r.valid, w.x_off, w.y_off, w.width, w.height)
        if share == 1.0:
            assert w.chunk_id in ids
        elif share == 0.0:
            assert w.chunk_id not in ids
    assert 0 < len(chunks) < len(windows)
    # Every chunk's review_rank, by model/review.py's rule on the probabilities the table shows.
    expected = review.review_ranks([c["probability"] for c in chunks], [c["row"] for c in chunks], [c["col"] for c in chunks], rules.ICY_THRESHOLD, 1)
    assert [c["review_rank"] for c in chunks] == expected.tolist()
    assert sorted(expected.tolist()) == list(range(1, len(chunks) + 1))
    assert result["raster"]["geotransform"] == list(r.geotransform) and (result["raster"]["width"], result["raster"]["height"]) == (640, 512)


def test_detect_summary_follows_the_image_rules(detection, tiny_model):
    result = detection.run.result
    s, probabilities = result["summary"], [c["probability"] for c in result["chunks"]]
    stats = rules.image_stats(probabilities)
    assert (s["chunks"], s["icy_chunks"], s["hard_chunks"]) == (stats.chunks, stats.icy_chunks, stats.hard_chunks)
    assert s["mean_probability"] == pytest.approx(stats.mean_probability, abs=1e-5)
    assert s["max_probability"] == pytest.approx(stats.max_probability, abs=1e-5)
    assert s["category"] == rules.image_category(stats)
    assert (s["grid_chunks"], s["dropped_chunks"], s["chunk_size"], s["stride"]) == (80, 80 - len(probabilities), 64, 64)
    metadata = tiny_model.metadata
    assert (s["model_name"], s["model_version"]) == (metadata["name"], metadata["version"])
    assert s["device"] == "CPU" or s["device"].startswith("GPU")
    assert (s["icy_threshold"], s["hard_low"]) == (0.6, 0.4)


def test_detect_geopackage_layers_fields_crs_and_polygons(detection, tiny_model):
    r = detection.raster
    result = detection.run.result
    ds = ogr.Open(detection.gpkg)
    assert ds is not None
    assert sorted(ds.GetLayer(i).GetName() for i in range(ds.GetLayerCount())) == ["chunks", "summary"]
    raster_srs = osr.SpatialReference(wkt=r.crs_wkt)

    layer = ds.GetLayerByName("chunks")
    assert layer.GetSpatialRef().IsSame(raster_srs)
    definition = layer.GetLayerDefn()
    assert [definition.GetFieldDefn(i).GetName() for i in range(definition.GetFieldCount())] == CHUNK_FIELDS
    assert ogr.GT_Flatten(layer.GetGeomType()) == ogr.wkbPolygon
    by_id = {c["chunk_id"]: c for c in result["chunks"]}
    assert layer.GetFeatureCount() == len(by_id)
    for feature in layer:
        c = by_id[feature.GetField("chunk_id")]
        for name in CHUNK_FIELDS:
            if name == "label":
                assert not feature.IsFieldSetAndNotNull("label")  # for the geologist to fill
            elif isinstance(c[name], float):
                assert feature.GetField(name) == pytest.approx(c[name])
            else:
                assert feature.GetField(name) == c[name]
        ring = helpers.ring_of_geometry(feature.GetGeometryRef().ExportToWkt())
        helpers.assert_rings_equal(ring, helpers.window_ring_gdal(r.geotransform, c["x_off"], c["y_off"], c["width"], c["height"]))

    summary = ds.GetLayerByName("summary")
    assert summary.GetSpatialRef().IsSame(raster_srs)
    definition = summary.GetLayerDefn()
    assert [definition.GetFieldDefn(i).GetName() for i in range(definition.GetFieldCount())] == SUMMARY_FIELDS
    assert summary.GetFeatureCount() == 1
    feature = summary.GetNextFeature()
    for name in SUMMARY_FIELDS:
        want = result["summary"][name]
        assert feature.GetField(name) == (pytest.approx(want) if isinstance(want, float) else want)
    # what a published count rests on, to reproduce it: thresholds, rule, the chunks left out, which weights, which version, when
    assert (feature.GetField("icy_threshold"), feature.GetField("hard_low"), feature.GetField("category_rule")) == (0.6, 0.4, "paper")
    weights = modelfile.read_metadata(tiny_model.path)["weights_sha256"]
    assert len(weights) == 64 and feature.GetField("weights_sha256") == weights
    assert feature.GetField("engine_version") == model.__version__ and feature.GetField("scored_at").endswith("+00:00")
    footprint = feature.GetGeometryRef()
    assert ogr.GT_Flatten(footprint.GetGeometryType()) == ogr.wkbMultiPolygon
    pixel_area = abs(r.geotransform[1] * r.geotransform[5])
    assert footprint.GetArea() == pytest.approx(r.valid.sum() * pixel_area, rel=0.05)
    assert not [name for name in os.listdir(detection.folder) if "partial" in name]


def test_detect_html_report(detection):
    text = open(detection.report, encoding="utf-8").read()
    s = detection.run.result["summary"]
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert f"<title>Ice patches in {s['image_id']}</title>" in text
    # the summary table
    assert "<h2>Summary</h2><table>" in text
    assert f"<tr><th>chunks scored</th><td>{s['chunks']}</td></tr>" in text
    assert f"<tr><th>category</th><td>{html.escape(s['category'])} (paper rule)</td></tr>" in text
    assert ("<tr><th>scored with</th><td>minimum valid share of a chunk&#x27;s centre 0.95; band automatic; east-west mirror averaged (TTA on)"
            "</td></tr>") in text
    assert f"<tr><th>chunks dropped for no-data</th><td>{s['dropped_chunks']}</td></tr>" in text
    # what the report was made from, by what and when: the report is the document a team keeps
    assert f"<tr><th>input file</th><td>{html.escape(detection.raster.path)}</td></tr>" in text
    assert f"<tr><th>scored</th><td>{s['scored_at']} (UTC) by HiRISE Ice Patches {model.__version__}</td></tr>" in text
    # the histogram: an inline SVG with one bar per probability bin
    assert "<img alt='histogram of chunk probabilities'" in text and "<svg" not in text
    # the quicklook: an embedded PNG GDAL can read, shaped like the scene
    match = re.search(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", text)
    assert match
    png = base64.b64decode(match.group(1))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    gdal.FileFromMemBuffer("/vsimem/quicklook.png", png)
    try:
        image = gdal.Open("/vsimem/quicklook.png")
        assert image is not None and image.RasterCount == 3
        assert image.RasterXSize / (image.RasterYSize - report.SCALE_STRIP_PX) == pytest.approx(640 / 512, rel=0.02)
        assert max(image.RasterXSize, image.RasterYSize) <= 900
        pixels = np.stack([image.GetRasterBand(i).ReadAsArray() for i in (1, 2, 3)])
        image = None
    finally:
        gdal.Unlink("/vsimem/quicklook.png")
    assert pixels.std() > 10  # a picture, not a blank
    # the top chunks table lists the most probable chunk first
    best = max(detection.run.result["chunks"], key=lambda c: c["probability"])
    top = text[text.index("<h2>Most likely icy chunks</h2>") :]
    assert re.search(rf"<tr><td>{best['chunk_id']}</td><td>{best['row']}</td><td>{best['col']}</td>", top)


def test_a_long_stretch_of_no_data_is_progress_and_a_gone_client_stops_the_worker(scene, tiny_model, worker_python, tmp_path):
    """A sparse mosaic (the scene in the corner of a VRT 19 times its side) had kept the worker silent for
    as long as it passed no-data: qgis_process acts on Ctrl-C only at a progress line, and a worker whose
    client was killed ran on, never writing the line that would have stopped it."""
    import subprocess
    import time

    side = 12288  # 36,864 chunks of 64 px, 80 of them on the scene
    x0, pixel, _, y0, _, _ = scene.geotransform
    mosaic = str(tmp_path / "sparse.vrt")
    gdal.BuildVRT(mosaic, [scene.path], outputBounds=(x0, y0 - side * pixel, x0 + side * pixel, y0), VRTNodata=0)
    run = helpers.run_worker(worker_python, "detect", mosaic, "--model", tiny_model.path, "--out", str(tmp_path / "sparse.gpkg")).check()
    assert_progress_protocol(run)
    fractions = [m["fraction"] for m in run.messages if m["type"] == "progress"]
    assert len([f for f in fractions if 0.1 < f < 0.9]) >= 2, fractions  # its data lies in the first 1 %
    command = [worker_python, "-m", "model", "--jsonl", "detect", mosaic, "--model", tiny_model.path, "--out", str(tmp_path / "gone.gpkg")]
    worker = subprocess.Popen(command, cwd=str(qs.REPO_ROOT), env=helpers.worker_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in worker.stdout:
            message = json.loads(line)
            if message["type"] == "progress" and 0.1 < message["fraction"] < 0.5:
                break
        worker.stdout.close()  # the client is gone
        closed_at = time.monotonic()
        worker.wait(timeout=30)
        assert time.monotonic() - closed_at < 5, "the worker ran on through the no-data after its client had gone"
    finally:
        worker.kill()
    assert not (tmp_path / "gone.gpkg").exists()


def test_detect_without_jsonl_prints_for_people(scene, tiny_model, worker_python):
    run = helpers.run_worker(worker_python, "detect", scene.path, "--model", tiny_model.path, "--min-valid", 0.99, jsonl=False).check()
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 1 and re.match(r"ESP_000001_1234_RED: (good|bad|hard to identify) - \d+ icy and \d+ hard of \d+ chunks, mean p [01](\.\d{1,5})?$", lines[0]), run.stdout


# --- info ---------------------------------------------------------------------------------------


def pinned_numpy(worker_python) -> str:
    """The numpy requirements-worker.txt pins for the worker's Python, its markers read as pip reads them there."""
    from packaging.requirements import Requirement

    version = subprocess.run([worker_python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True, text=True).stdout.strip()
    lines = (helpers.REPO_ROOT / "requirements-worker.txt").read_text(encoding="utf-8").splitlines()
    requirements = [Requirement(line.split("#", 1)[0]) for line in lines if line.startswith("numpy==")]
    (pin,) = [r for r in requirements if r.marker is None or r.marker.evaluate({"python_version": version, "python_full_version": version + ".0"})]
    return str(pin.specifier).lstrip("=")


def test_info_reports_versions_device_and_model(tiny_model, worker_python):
    run = helpers.run_worker(worker_python, "info", "--model", tiny_model.path).check()
    info = run.result
    assert info["engine"] == model.__version__
    assert re.match(r"\d+\.\d+", info["tensorflow"]) and re.match(r"\d+\.\d+", info["keras"]) and info["numpy"] == pinned_numpy(worker_python), info
    assert info["gdal"] == gdal.__version__  # the worker sees Debian's GDAL
    assert info["device"] == "CPU" or info["device"].startswith("GPU")
    assert info["model"] == modelfile.read_metadata(tiny_model.path)
    assert info["model_path"] == tiny_model.path
    # what scores the chunks where its export matches Keras, for a bug report; and the version without starting TensorFlow
    assert re.match(r"\d+\.\d+", info["onnxruntime"] or "") and re.match(r"\d+\.\d+", info["tf2onnx"] or ""), info
    version = subprocess.run([worker_python, "-m", "model", "--version"], cwd=str(qs.REPO_ROOT), capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith(f"HiRISE Ice Patches engine {model.__version__} (Python "), version.stdout + version.stderr


# --- chunk ----------------------------------------------------------------------------------------


def test_chunk_exports_georeferenced_geotiffs(scene, worker_python, tmp_path):
    folder = tmp_path / "export"
    gpkg = tmp_path / "grid.gpkg"
    run = helpers.run_worker(worker_python, "chunk", scene.path, "--chunk-size", 64, "--export-folder", folder, "--out", gpkg).check()
    assert_progress_protocol(run)
    chunks = run.result["chunks"]
    files = sorted(os.listdir(folder))
    assert files == sorted(f"ESP_000001_1234_RED_r{c['row']:03d}_c{c['col']:03d}.tif" for c in chunks)
    gt = scene.geotransform
    for c in chunks:
        path = str(folder / f"ESP_000001_1234_RED_r{c['row']:03d}_c{c['col']:03d}.tif")
        ds = gdal.Open(path)
        assert ds is not None
        assert (ds.RasterXSize, ds.RasterYSize) == (c["width"], c["height"])
        expected = (gt[0] + c["x_off"] * gt[1] + c["y_off"] * gt[2], gt[1], gt[2], gt[3] + c["x_off"] * gt[4] + c["y_off"] * gt[5], gt[4], gt[5])
        assert ds.GetGeoTransform() == pytest.approx(expected, rel=1e-14)
        assert ds.GetSpatialRef().IsSame(osr.SpatialReference(wkt=scene.crs_wkt))
        band = ds.GetRasterBand(1)
        assert band.GetNoDataValue() == 0 and gdal.GetDataTypeName(band.DataType) == "UInt16"
        data = band.ReadAsArray()
        ds = None
        assert np.array_equal(data, scene.bands[0][c["y_off"] : c["y_off"] + c["height"], c["x_off"] : c["x_off"] + c["width"]])
    vector = ogr.Open(str(gpkg))  # kept alive while its layer is used
    assert vector.GetLayerByName("chunks").GetFeatureCount() == len(chunks)


def test_chunk_with_an_overlapping_stride(scene, worker_python):
    run = helpers.run_worker(worker_python, "chunk", scene.path, "--chunk-size", 64, "--stride", 32, "--min-valid", 0.0).check()
    rows, cols = grid_shape(640, 512, 64, 32)
    windows = {w.chunk_id: w for w in chunk_grid(640, 512, 64, 32)}
    chunks = run.result["chunks"]
    assert (rows, cols) == (15, 19)
    assert len(chunks) < rows * cols  # the corners are outside the footprint
    for c in chunks:
        w = windows[c["chunk_id"]]
        assert (c["x_off"], c["y_off"], c["width"], c["height"]) == (w.x_off, w.y_off, w.width, w.height)


def test_a_bidirectional_control_in_a_name_is_shown_escaped_in_the_log_and_kept_in_the_outputs(scene, worker_python, tmp_path):
    """A file named with U+202E turned the rest of every log line naming it right to left (the Processing log, a terminal)."""
    import shutil

    raster = tmp_path / "scene\u202egnp.tif"
    shutil.copyfile(scene.path, raster)
    run = helpers.run_worker(worker_python, "chunk", raster, "--chunk-size", 64, "--out", tmp_path / "c.gpkg").check()
    lines = [m["message"] for m in run.messages if m["type"] in ("log", "warning")]
    assert any("scene\\u202egnp" in line for line in lines) and not any("\u202e" in line for line in lines), lines
    vector = ogr.Open(str(tmp_path / "c.gpkg"))  # kept alive while its layer is read
    ids = {feature.GetField("image_id") for feature in vector.GetLayerByName("chunks")}
    assert ids == {"scene\u202egnp"}  # the name itself, as the file has it


def test_every_character_that_breaks_or_rewrites_a_line_is_shown_escaped():
    """Python's splitlines, as QGIS's log and terminals, breaks at more than newlines: U+2028 and U+2029 too."""
    from model.protocol import shown

    breaking = "a\nb\rc\x0bd\x0ce\x1cf\x85g\u2028h\u2029i\x1b[2Jj\u202ek"
    assert len(breaking.splitlines()) > 1 and len(shown(breaking).splitlines()) == 1
    assert shown(breaking) == "a\\nb\\rc\\x0bd\\x0ce\\x1cf\\x85g\\u2028h\\u2029i\\x1b[2Jj\\u202ek"
    assert shown("tab\tkept") == "tab\tkept"


@pytest.mark.parametrize("jsonl", [True, False])
def test_a_newline_in_a_name_keeps_each_message_on_one_line(scene, worker_python, tmp_path, jsonl):
    """A file named with a newline broke every message naming it into two log lines, the second without its "warning:"."""
    import shutil

    raster = tmp_path / "scene\nsecond line.tif"
    shutil.copyfile(scene.path, raster)
    out = tmp_path / "c.gpkg"
    arguments = ["chunk", raster, "--chunk-size", 64, "--out", out]
    run = helpers.run_worker(worker_python, *arguments, jsonl=jsonl).check()
    lines = [m["message"] for m in run.messages if m["type"] in ("log", "warning")] if jsonl else run.stderr.replace("\r", "\n").splitlines()
    assert any("scene\\nsecond line" in line for line in lines), lines
    assert not any(line.startswith("second line") or "\n" in line for line in lines), lines
    vector = ogr.Open(str(out))  # kept alive while its layer is read
    assert {feature.GetField("image_id") for feature in vector.GetLayerByName("chunks")} == {"scene\nsecond line"}


def test_a_stride_over_the_chunk_is_warned_of_by_chunk_and_detect(scene, worker_python, tiny_model, tmp_path):
    """A sparse grid may be wanted, so it is not refused; but the strips it never looks at are said."""
    for command in (["chunk", scene.path], ["detect", scene.path, "--model", tiny_model.path, "--out", tmp_path / "sparse.gpkg"]):
        run = helpers.run_worker(worker_python, *command, "--chunk-size", 64, "--stride", 96).check()
        warned = [m["message"] for m in run.messages if m["type"] == "warning" and "STRIDE 96 is larger than the chunk size 64" in m["message"]]
        assert len(warned) == 1 and "a strip of 32 px" in warned[0], run.messages


def test_a_chunk_size_far_from_the_models_is_warned_of_in_the_log_and_the_report(scene, worker_python, tiny_model, tmp_path):
    """At a quarter of the default model's chunk size shaded regolith at 8 deg N had scored 0.99, and nothing said
    the network was reading the ground at four times the scale it learnt."""
    from model.chunking import scale_warning

    assert scale_warning(1024, 1024, 256) == scale_warning(600, 1024, 256) == scale_warning(2000, 1024, 256) == ""
    assert scale_warning(2048, 1024, 256) and scale_warning(512, 1024, 256)  # twice or half the model's chunk: warned of, as the help says
    assert scale_warning(256, 1024, 256).startswith("CHUNK_SIZE 256 makes the network read the ground at 4 times the scale it learnt (the model's "
                                                    "chunks are 1024 px, read at 256 px): ice and shade look larger to it")
    report = tmp_path / "small.html"
    run = helpers.run_worker(worker_python, "detect", scene.path, "--model", tiny_model.path, "--chunk-size", 32, "--report", report).check()
    warned = [m["message"] for m in run.messages if m["type"] == "warning" and m["message"].startswith("CHUNK_SIZE 32 makes the network read")]
    assert len(warned) == 1 and "at 2 times the scale it learnt" in warned[0], run.messages
    assert "<th>warning</th><td>CHUNK_SIZE 32 makes the network read the ground at 2 times" in report.read_text(encoding="utf-8")


def test_a_turned_polar_product_read_through_its_north_up_view_is_named_and_labelled_as_given(tiny_model, worker_python, tmp_path):
    """A polar product turned far from north-up is read through a view in GDAL's memory: its warnings named that view
    ('/vsimem/hiriseice/.../X.vrt'), and its PDS label, looked for beside the view, was never found, so the summary and
    the report went without the Ls and incidence the label gives."""
    wkt, gt = helpers.south_polar_stereographic(150.0, pixel=30.0, width=192, height=192)  # 30 m pixels: warned as coarse
    pixels = helpers.textured(192, 192, np.random.default_rng(3), 200, 900).astype(np.uint16)
    image = helpers.write_geotiff(tmp_path / "ESP_011111_1111_RED.tif", pixels, "UInt16", gt, wkt)
    (tmp_path / "ESP_011111_1111_RED.LBL").write_text(
        "PDS_VERSION_ID = PDS3\r\nGROUP = VIEWING_PARAMETERS\r\n  INCIDENCE_ANGLE = 60.5 <DEG>\r\n  SOLAR_LONGITUDE = 170.2 <DEG>\r\n"
        "END_GROUP = VIEWING_PARAMETERS\r\nEND\r\n")
    run = helpers.run_worker(worker_python, "detect", image, "--model", tiny_model.path, "--out", tmp_path / "turned.gpkg").check()
    assert any("north-up view" in m["message"] for m in run.messages if m["type"] == "log"), run.messages
    warned = [m["message"] for m in run.messages if m["type"] == "warning" and "coarser than any HiRISE map product" in m["message"]]
    assert len(warned) == 1 and warned[0].startswith(f"'{image}' has 30 m pixels"), run.messages
    assert "/vsimem" not in json.dumps(run.messages)
    summary = qs.read_ogr(tmp_path / "turned.gpkg", "summary").rows[0]
    assert (summary["solar_longitude"], summary["incidence_angle"]) == (pytest.approx(170.2), pytest.approx(60.5))


def test_chunks_of_another_file_of_the_same_name_are_not_replaced_unsaid(scene, worker_python, tmp_path):
    """Two dates of a site saved as 2026-04/crater_site.tif and 2026-05/crater_site.tif, exported into one folder: the second
    replaced the first's chunk GeoTIFFs of the same row and column without a word and left the rest mixed with its own."""
    folder = tmp_path / "chunks"
    dates = []
    for month in ("2026-04", "2026-05"):
        (tmp_path / month).mkdir()
        dates.append(tmp_path / month / "crater_site.tif")
        shutil.copyfile(scene.path, dates[-1])
    helpers.run_worker(worker_python, "chunk", dates[0], "--chunk-size", 64, "--export-folder", folder).check()
    before = {name: (folder / name).read_bytes() for name in os.listdir(folder)}
    assert gdal.Open(str(folder / sorted(before)[0])).GetMetadataItem("HIRISEICE_SOURCE") == str(dates[0])
    run = helpers.run_worker(worker_python, "chunk", dates[1], "--chunk-size", 64, "--export-folder", folder)
    assert run.returncode == 2 and len(run.errors) == 1, run.stdout[-2000:]
    assert (f"{folder} holds chunks of 'crater_site' cut from {dates[0]}, another file of that name: exporting {dates[1]} there would "
            "replace some of them") in run.errors[0]["message"], run.errors
    assert {name: (folder / name).read_bytes() for name in os.listdir(folder)} == before
    helpers.run_worker(worker_python, "chunk", dates[0], "--chunk-size", 64, "--export-folder", folder).check()  # the same file again: replaced


def test_chunks_of_another_grid_of_the_same_image_are_not_left_among_a_new_export(scene, worker_python, tmp_path):
    """Exported again at CHUNK_SIZE 32 into the folder of its 64-px chunks: those of the same row and column were replaced and
    the rest, a chunk the new grid left out among them, stayed beside the new ones without a word."""
    folder = tmp_path / "chunks"
    helpers.run_worker(worker_python, "chunk", scene.path, "--chunk-size", 64, "--export-folder", folder).check()
    before = {name: (folder / name).read_bytes() for name in os.listdir(folder)}
    assert gdal.Open(str(folder / sorted(before)[0])).GetMetadataItem("HIRISEICE_GRID") == "CHUNK_SIZE 64, STRIDE 64, MIN_VALID 0.95"
    run = helpers.run_worker(worker_python, "chunk", scene.path, "--chunk-size", 32, "--export-folder", folder)
    assert run.returncode == 2 and len(run.errors) == 1, run.stdout[-2000:]
    assert (f"{folder} holds chunks of '{os.path.splitext(os.path.basename(scene.path))[0]}' cut on another grid (CHUNK_SIZE 64, STRIDE 64, "
            "MIN_VALID 0.95; this run's CHUNK_SIZE 32, STRIDE 32, MIN_VALID 0.95)") in run.errors[0]["message"], run.errors
    assert {name: (folder / name).read_bytes() for name in os.listdir(folder)} == before
    helpers.run_worker(worker_python, "chunk", scene.path, "--chunk-size", 64, "--export-folder", folder).check()  # the same grid again: replaced


def test_chunk_export_of_an_isis_cube_keeps_its_mask_and_leaves_no_partial_files(georef_data, worker_python, tmp_path):
    cube = georef_data / "PSP_009404_2635_RED_NLstretch_25cm_o_forPDS_cropped.cub"
    if not cube.is_file():
        pytest.skip(f"{cube} is absent from the shared data")
    folder = tmp_path / "export"
    run = helpers.run_worker(worker_python, "chunk", cube, "--chunk-size", 16, "--min-valid", 0.5, "--export-folder", folder).check()
    assert run.result["chunks"]
    assert not [name for name in os.listdir(folder) if "partial" in name], sorted(os.listdir(folder))
    source = gdal.Open(str(cube))
    source_mask = source.GetRasterBand(1).GetMaskBand().ReadAsArray()
    for c in run.result["chunks"]:
        ds = gdal.Open(str(folder / f"{cube.stem}_r{c['row']:03d}_c{c['col']:03d}.tif"))
        mask = ds.GetRasterBand(1).GetMaskBand().ReadAsArray()
        ds = None
        assert np.array_equal(mask != 0, source_mask[c["y_off"] : c["y_off"] + c["height"], c["x_off"] : c["x_off"] + c["width"]] != 0)


# --- errors -------------------------------------------------------------------------------------


def assert_one_error(run: helpers.WorkerRun, code: str, *words):
    assert run.returncode == 2, f"exit status {run.returncode}\n{run.stderr[-3000:]}"
    messages = run.messages
    errors = [m for m in messages if m["type"] == "error"]
    assert len(errors) == 1 and messages[-1] is errors[-1], messages
    assert not [m for m in messages if m["type"] == "result"]
    assert errors[0]["code"] == code
    for word in words:
        assert word in errors[0]["message"], errors[0]["message"]
    assert "Traceback" not in run.stderr
    return errors[0]["message"]


def test_missing_raster(tiny_model, worker_python, tmp_path):
    missing = tmp_path / "ESP_999999_9999_RED.JP2"
    out = tmp_path / "out.gpkg"
    run = helpers.run_worker(worker_python, "detect", missing, "--model", tiny_model.path, "--out", out)
    assert_one_error(run, RasterError.code, str(missing), "cannot be found: there is no file")
    assert not out.exists()


FAILS_ON_THE_FOURTH_CHUNK = r"""
import sys
from model import __main__, inference

real, calls = inference.network_input, []


def fails_on_the_fourth(*args, **kwargs):  # a fault of the kind a geologist's file may trigger, injected where chunks are prepared
    calls.append(1)
    if len(calls) == 4:
        raise ValueError("injected fault")
    return real(*args, **kwargs)


inference.network_input = fails_on_the_fourth
sys.exit(__main__.main(sys.argv[1:]))
"""


def test_an_unforeseen_failure_mid_image_says_which_chunk_and_how_to_crop_around_it(scene, tiny_model, worker_python, tmp_path):
    """A traceback through read_batches and normalise, with no chunk, could not be cut down to a crop for the maintainers."""
    out = tmp_path / "out.gpkg"
    run = helpers.run_worker_snippet(worker_python, FAILS_ON_THE_FOURTH_CHUNK, "detect", scene.path, "--model", tiny_model.path, "--out", out)
    assert run.returncode != 0 and "ValueError: injected fault" in run.stderr, run.stderr[-3000:]
    note = [line for line in run.stderr.splitlines() if line.startswith("hiriseice: while reading")]
    assert len(note) == 1 and f"reading {scene.path} at chunk " in note[0] and "gdal_translate -srcwin " in note[0], run.stderr[-3000:]
    assert not out.exists()


def test_the_crop_of_an_unforeseen_failure_starts_on_the_grid():
    """A crop starting a chunk's width before it, at CHUNK_SIZE 1024 and STRIDE 768, put the failing chunk between the crop's
    own grid lines: detect on it read other windows than the one that failed."""
    from model.grid import ChunkWindow
    from model.inference import _placed

    for chunk_size, stride, x_off in ((1024, 768, 3 * 768), (1024, 1024, 2048), (1024, 512, 512), (256, 768, 768)):
        note = _placed(ValueError("x"), "reading", ChunkWindow(7, 1, 2, x_off, stride, chunk_size, chunk_size), "/data/a b.tif", chunk_size, stride).__notes__[0]
        x, y, width, height = map(int, re.search(r"-srcwin (\d+) (\d+) (\d+) (\d+) '/data/a b.tif' crop.tif", note).groups())
        assert x % stride == 0 and (x_off - x) % stride == 0 and y % stride == 0, note  # the chunk on the crop's grid
        assert x < x_off and x + width >= x_off + chunk_size and y + height >= stride + chunk_size, note  # with the chunk and a neighbour
        assert f"CHUNK_SIZE {chunk_size} and STRIDE {stride}" in note


def test_truncated_raster_is_an_input_error_not_a_crash(scene, tiny_model, worker_python, tmp_path):
    cut = tmp_path / "ESP_999998_9999_RED.tif"
    cut.write_bytes(open(scene.path, "rb").read()[: os.path.getsize(scene.path) // 2])
    out = tmp_path / "out.gpkg"
    run = helpers.run_worker(worker_python, "detect", cut, "--model", tiny_model.path, "--out", out)
    assert_one_error(run, DamagedRasterError.code, str(cut), "is damaged", "IReadBlock failed", "download it again")
    assert run.returncode == 2 and not out.exists()


def test_an_output_on_the_input_or_in_a_read_only_folder_stops_before_scoring(scene, tiny_model, worker_python, tmp_path):
    """One line and exit 2 before any chunk is scored: the image given again as --out was overwritten,
    and an unwritable folder ended in a traceback after the scoring, with a partial file left."""
    image = tmp_path / "ESP_999997_9999_RED.tif"
    image.write_bytes(open(scene.path, "rb").read())
    for option in ("--out", "--report", "--probability-raster"):
        run = helpers.run_worker(worker_python, "detect", image, "--model", tiny_model.path, option, image)
        assert_one_error(run, EngineError.code, f"{option} is '{image}', which this run reads as RASTER: writing it would destroy that file.")
        assert run.returncode == 2 and open(image, "rb").read() == open(scene.path, "rb").read()
    locked = tmp_path / "locked"
    locked.mkdir()
    with qs.read_only_folder(locked):
        run = helpers.run_worker(worker_python, "detect", image, "--model", tiny_model.path, "--out", locked / "chunks.gpkg")
        assert_one_error(run, EngineError.code, f"--out cannot be written to '{locked}'", "Choose a folder you can write to.")
        assert run.returncode == 2 and os.listdir(locked) == [] and not any(m["type"] == "progress" for m in run.messages)


def test_model_that_is_not_a_zip(scene, worker_python, tmp_path):
    bad = tmp_path / "model.hiriseice"
    bad.write_text("not a model")
    run = helpers.run_worker(worker_python, "detect", scene.path, "--model", bad)
    assert_one_error(run, ModelFileError.code, str(bad), "not a readable HiRISE Ice Patches model file")


def zip_of_garbage() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("config.json", b"garbage" * 100)
    return buffer.getvalue()


@pytest.mark.parametrize("garbage, said", [(b"garbage" * 100, "is not a Keras 3 archive"), (zip_of_garbage(), "cannot be loaded")], ids=["bytes", "a zip"])
def test_model_whose_network_is_garbage(scene, tiny_model, worker_python, tmp_path, garbage, said):
    """Valid metadata whose checksum matches a broken network member: no zip is said to be no Keras archive before Keras
    reads it; a zip of something else gets as far as Keras, and is explained."""
    bad = tmp_path / "corrupt.hiriseice"
    with zipfile.ZipFile(tiny_model.path) as source, zipfile.ZipFile(bad, "w") as target:
        metadata = json.loads(source.read(modelfile.METADATA_MEMBER))
        metadata["weights_sha256"] = hashlib.sha256(garbage).hexdigest()
        target.writestr(modelfile.METADATA_MEMBER, json.dumps(metadata))
        target.writestr(modelfile.KERAS_MEMBER, garbage)
    out, report = tmp_path / "out.gpkg", tmp_path / "report.html"
    run = helpers.run_worker(worker_python, "detect", scene.path, "--model", bad, "--out", out, "--report", report)
    assert_one_error(run, ModelFileError.code, str(bad), said, "retrain")
    assert not out.exists() and not report.exists()


def test_model_whose_network_fails_its_checksum(scene, tiny_model, worker_python, tmp_path):
    bad = tmp_path / "damaged.hiriseice"
    data = bytearray(open(tiny_model.path, "rb").read())
    with zipfile.ZipFile(tiny_model.path) as archive:
        info = archive.getinfo(modelfile.KERAS_MEMBER)
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + info.compress_size // 2
    for i in range(start, start + 32):
        data[i] ^= 0x5A
    bad.write_bytes(bytes(data))
    run = helpers.run_worker(worker_python, "detect", scene.path, "--model", bad)
    assert_one_error(run, ModelFileError.code, str(bad), "damaged")


def test_model_whose_network_was_replaced(scene, tiny_model, worker_python, tmp_path):
    """An intact zip whose network is not the one its metadata recorded."""
    bad = tmp_path / "swapped.hiriseice"
    with zipfile.ZipFile(tiny_model.path) as source, zipfile.ZipFile(bad, "w") as target:
        target.writestr(modelfile.METADATA_MEMBER, source.read(modelfile.METADATA_MEMBER))
        target.writestr(modelfile.KERAS_MEMBER, source.read(modelfile.KERAS_MEMBER) + b"\0")
    run = helpers.run_worker(worker_python, "detect", scene.path, "--model", bad)
    assert_one_error(run, ModelFileError.code, str(bad), "checksum")


def test_thresholds_in_the_wrong_order(scene, tiny_model, worker_python):
    run = helpers.run_worker(worker_python, "detect", scene.path, "--model", tiny_model.path, "--icy-threshold", 0.3, "--hard-low", 0.5)
    assert_one_error(run, EngineError.code, "ICY_THRESHOLD", "HARD_LOW")


def test_errors_without_jsonl_go_to_stderr(tmp_path, worker_python):
    missing = tmp_path / "nothing.tif"
    run = helpers.run_worker(worker_python, "chunk", missing, jsonl=False)
    assert run.returncode == 2 and run.stdout == ""
    assert f"error: '{missing}' cannot be found: there is no file" in run.stderr


# --- results, not only shapes ------------------------------------------------------------------

PLANTED = (1, 2)  # (row, col) of the one chunk given a bright patch


def chunk_probabilities(python, raster_path, model_path, *options) -> dict:
    run = helpers.run_worker(python, "detect", raster_path, "--model", model_path, *options).check()
    return {(c["row"], c["col"]): c["probability"] for c in run.result["chunks"]}


@pytest.fixture(scope="module")
def planted_pair(tiny_model, worker_python, tmp_path_factory):
    """The same terrain (4 x 4 chunks of 64 px) without and with an ice-like patch in chunk PLANTED."""
    folder = tmp_path_factory.mktemp("planted")
    plain = helpers.generate_raster(folder, name="plain.tif", width=256, height=256, seed=4)
    planted = helpers.generate_raster(folder, name="planted.tif", width=256, height=256, seed=4, icy_chunk_size=64, icy_pattern=lambda row, col: (row, col) == PLANTED)
    return planted, chunk_probabilities(worker_python, plain.path, tiny_model.path), chunk_probabilities(worker_python, planted.path, tiny_model.path)


def test_a_planted_patch_lifts_exactly_its_chunk(planted_pair):
    _, plain, planted = planted_pair
    assert len(plain) == 16 and plain.keys() == planted.keys()
    assert planted[PLANTED] > plain[PLANTED] + 1e-4, (plain[PLANTED], planted[PLANTED])
    assert {key: p for key, p in planted.items() if key != PLANTED} == {key: p for key, p in plain.items() if key != PLANTED}


@pytest.mark.parametrize("batch_size", [1, 5])
def test_probabilities_do_not_depend_on_the_batch_size(planted_pair, tiny_model, worker_python, batch_size):
    raster, _, by_sixteen = planted_pair
    batched = chunk_probabilities(worker_python, raster.path, tiny_model.path, "--batch-size", batch_size)
    assert batched.keys() == by_sixteen.keys()
    for key, p in by_sixteen.items():
        assert batched[key] == pytest.approx(p, abs=2e-5), key  # the last rounded digit may differ


def with_calibration(source: str, target, calibration) -> str:
    """A copy of a model file whose metadata carries `calibration` (the network is untouched)."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
        for item in original.infolist():
            data = original.read(item)
            if item.filename == modelfile.METADATA_MEMBER:
                data = json.dumps(dict(json.loads(data), calibration=calibration)).encode("utf-8")
            copy.writestr(item, data)
    return str(target)


def test_the_model_files_calibration_is_applied_to_the_raw_logit(planted_pair, tiny_model, worker_python, tmp_path):
    """An inverting Platt scaling, so a detection that skipped it could not pass."""
    raster = planted_pair[0]
    platt = {"method": "platt", "a": -2.0, "b": 0.5}
    raw = chunk_probabilities(worker_python, raster.path, with_calibration(tiny_model.path, tmp_path / "raw.hiriseice", None))
    calibrated = chunk_probabilities(worker_python, raster.path, with_calibration(tiny_model.path, tmp_path / "platt.hiriseice", platt))
    for key, p in raw.items():
        logit = np.log(p / (1.0 - p))  # p was rounded to 5 decimals: the logit to about 1e-4
        assert calibrated[key] == pytest.approx(1.0 / (1.0 + np.exp(-(platt["a"] * logit + platt["b"]))), abs=1e-4), key


# --- CI does not pass by skipping -------------------------------------------------------------


@pytest.mark.parametrize("ci, outcome", [("", "1 skipped"), ("true", "1 error")])  # the skip comes from a fixture: an error at setup
def test_a_test_skipped_for_want_of_the_worker_fails_under_ci(tmp_path, ci, outcome):
    """tests/conftest.py turns skips for a missing worker, real data or driver into failures under CI=true."""
    import subprocess
    import sys

    env = dict(os.environ, CI=ci, HIRISEICE_WORKER_PYTHON=str(tmp_path / "no" / "python"))
    test = "tests/test_raster.py::test_a_raster_without_crs_fails_the_worker_with_exit_status_2"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test], cwd=str(helpers.REPO_ROOT), env=env, capture_output=True, text=True, timeout=300)
    assert outcome in done.stdout and (done.returncode != 0) == bool(ci), done.stdout[-3000:]
    if ci:
        assert "skipped under CI=true, where it must run: " in done.stdout and "worker Python" in done.stdout


# --- the ice-probability raster (model/scoremap.py) ----------------------------------------------


def chunks_read_off_the_raster(p, chunks, spec, cell=16, cells=4, rescored=0):
    """Each chunk wholly on image data in the probability raster ``p`` (``cells`` x ``cells`` map
    cells of ``cell`` px): its calibrated mean logit there is its probability, but for at most
    ``rescored`` chunks (the map route's screen scored them alone again). Returns how many agree."""
    from model import calibration

    a, b = (spec["a"], spec["b"]) if spec else (1.0, 0.0)
    q = np.clip(p, 1e-7, 1 - 1e-7)
    logits = (np.log(q / (1 - q)) - b) / a
    agree = differ = 0
    for c in chunks:
        rows = slice(c["y_off"] // cell, c["y_off"] // cell + cells)
        cols = slice(c["x_off"] // cell, c["x_off"] // cell + cells)
        if (p[rows, cols] != -1).all() and p[rows, cols].shape == (cells, cells):
            if abs(float(calibration.apply([logits[rows, cols].mean()], spec)[0]) - c["probability"]) <= 1e-4:
                agree += 1
            else:
                differ += 1
    assert differ <= rescored, (differ, rescored)
    return agree


def test_probability_raster_is_georeferenced_and_its_chunk_means_are_the_chunk_probabilities(scene, tiny_model, worker_python, tmp_path):
    """--probability-raster: a Float32 GeoTIFF in the raster's CRS, cells of chunk/input * cell px from the raster's
    origin, covering it within one cell; the calibrated mean of its logits over a chunk is that chunk's probability."""
    path = tmp_path / "probability.tif"
    run = helpers.run_worker(worker_python, "detect", scene.path, "--model", tiny_model.path, "--probability-raster", path).check()
    assert run.result["probability_raster"] == str(path)
    from model.files import partial_path

    assert not os.path.exists(partial_path(str(path)))
    ds, source = gdal.Open(str(path)), gdal.Open(scene.path)
    assert osr.SpatialReference(wkt=ds.GetProjection()).IsSame(osr.SpatialReference(wkt=source.GetProjection()))
    cell = 64 / 32 * 8  # tiny model: 64-px chunks read at 32 px, 8-px cells
    g, s = ds.GetGeoTransform(), source.GetGeoTransform()
    assert g == pytest.approx((s[0], s[1] * cell, s[2] * cell, s[3], s[4] * cell, s[5] * cell))
    assert 0 <= ds.RasterXSize * cell - source.RasterXSize < cell and 0 <= ds.RasterYSize * cell - source.RasterYSize < cell
    # the model that scored it, and how: two models' rasters of one image tell apart
    assert ds.GetMetadata() == {"AREA_OR_POINT": "Area", "HIRISEICE_MODEL_NAME": tiny_model.metadata["name"],
                                "HIRISEICE_MODEL_VERSION": tiny_model.metadata["version"], "HIRISEICE_CHUNK_SIZE": "64", "HIRISEICE_TTA": "1"}
    band = ds.GetRasterBand(1)
    assert band.DataType == gdal.GDT_Float32 and band.GetNoDataValue() == -1
    p = band.ReadAsArray().astype(np.float64)
    inside = p != -1
    assert inside.any() and (~inside).any()  # the rotated footprint's border is no-data
    assert ((p[inside] >= 0) & (p[inside] <= 1)).all()
    assert chunks_read_off_the_raster(p, run.result["chunks"], tiny_model.metadata.get("calibration")) >= 5
    # No-data exactly where the image has none: a cell without a valid pixel (DN 0 or the declared no-data), also inside a kept chunk
    pixels = source.GetRasterBand(1).ReadAsArray()
    valid = (pixels != 0) & (pixels != (source.GetRasterBand(1).GetNoDataValue() or 0))
    side = int(cell)
    padded = np.zeros((ds.RasterYSize * side, ds.RasterXSize * side), bool)
    padded[:valid.shape[0], :valid.shape[1]] = valid
    share = padded.reshape(ds.RasterYSize, side, ds.RasterXSize, side).mean(axis=(1, 3))
    assert (p[share == 0] == -1).all() and (share[inside] > 0).all()


def test_a_probability_raster_covers_the_unscored_edge_sliver_as_no_data(tiny_model, worker_python, tmp_path):
    """With a sliver under an eighth of a chunk left unscored, the map ended short of the image: the raster lost its
    last column of cells, where it promises no-data."""
    raster = helpers.generate_raster(tmp_path, name="sliver.tif", width=4 * 64 + 4, height=256, nodata=None)
    path = tmp_path / "probability.tif"
    helpers.run_worker(worker_python, "detect", raster.path, "--model", tiny_model.path, "--probability-raster", path).check()
    ds = gdal.Open(str(path))
    cell = 64 / 32 * 8  # tiny model: 64-px chunks read at 32 px, 8-px cells
    assert (ds.RasterXSize, ds.RasterYSize) == (17, 16) and 0 <= ds.RasterXSize * cell - raster.width < cell
    p = ds.GetRasterBand(1).ReadAsArray()
    assert (p[:, -1] == -1).all() and (p[:, :-1] >= 0).all()


def test_probability_raster_of_the_dense_map_route(scene, tiny_model, worker_python, tmp_path):
    """At STRIDE = CHUNK / 2 the chunks come off the map the raster shows (but those its screen scored
    alone again): same check, overlapping chunks."""
    path = tmp_path / "dense.tif"
    run = helpers.run_worker(worker_python, "detect", scene.path, "--model", tiny_model.path, "--stride", 32, "--scoring", "map", "--probability-raster", path).check()
    assert run.result["summary"]["scoring"] == "map"
    dataset = gdal.Open(str(path))  # kept referenced: its band dies with it
    p = dataset.GetRasterBand(1).ReadAsArray().astype(np.float64)
    checked = chunks_read_off_the_raster(p, run.result["chunks"], tiny_model.metadata.get("calibration"), rescored=run.result["summary"]["rescored_chunks"])
    assert checked >= 10
    # The map scores tiles whose chunk MIN_VALID drops (the rotated footprint's border): their cells were painted, hot spots
    # along the border that no chunk supports. Every cell with a value lies under a kept chunk.
    cell = 64 // 32 * 8
    under = np.zeros(p.shape, bool)
    for chunk in run.result["chunks"]:
        under[chunk["y_off"] // cell: (chunk["y_off"] + 64) // cell, chunk["x_off"] // cell: (chunk["x_off"] + 64) // cell] = True
    assert ((p == -1) | under).all() and (under & (p != -1)).any()
    # ...nor the cells of a tile (a chunk of the STRIDE = CHUNK grid) of mostly no-data whose own chunk was dropped: it is
    # stretched on its few valid pixels, and lit plain terrain beside kept chunks between tiles. A tile dropped for its
    # centre alone, mostly valid, keeps its cells under kept chunks (blanked too, they had left holes there).
    kept = {(chunk["x_off"], chunk["y_off"]) for chunk in run.result["chunks"]}
    source = gdal.Open(scene.path)
    pixels = source.GetRasterBand(1).ReadAsArray()
    dropped = {(x, y): (pixels[y: y + 64, x: x + 64] != 0).mean() for y in range(0, source.RasterYSize, 64)
               for x in range(0, source.RasterXSize, 64) if (x, y) not in kept}
    tile = {(x, y): p[y // cell: (y + 64) // cell, x // cell: (x + 64) // cell] for x, y in dropped}
    assert all((tile[at] == -1).all() for at, valid in dropped.items() if valid < 0.45)
    mostly_valid = [at for at, valid in dropped.items() if valid > 0.55 and under[at[1] // cell, at[0] // cell:(at[0] + 64) // cell].any()]
    assert mostly_valid and all((tile[at] != -1).any() for at in mostly_valid), dropped


def test_a_log_line_during_progress_starts_a_line_of_its_own():
    """On a terminal the progress rewrites one line; a log or warning in between must not be glued to it."""
    stream = io.StringIO()
    reporter = Reporter(stream=stream)
    reporter.progress(0.3)
    reporter.log("halfway")
    reporter.progress(0.6)
    reporter.warning("careful")
    reporter.progress(1.0)
    reporter.log("done")
    assert stream.getvalue() == "\r 30.0%\nhalfway\n\r 60.0%\nwarning: careful\n\r100.0%\ndone\n"


def test_an_error_during_progress_starts_a_line_of_its_own():
    """A Ctrl-C at 5 % had printed '  5.0%error: Cancelled; ...' on one line."""
    stream = io.StringIO()
    reporter = Reporter(stream=stream)
    reporter.progress(0.05)
    reporter.error("cancelled", "Cancelled; no output was written.")
    assert stream.getvalue() == "\r  5.0%\nerror: Cancelled; no output was written.\n"


def test_a_probability_raster_whose_cells_do_not_tile_the_input_is_refused(scene, tiny_model, worker_python, tmp_path):
    """A model reading its chunks at 36 px has 8-px cells that do not tile them: its raster had been written
    with every other chunk half a cell off and the chunks' last cells overlapping."""
    job = dict(tiny_model.job, input_size=36, epochs=1, output_model=str(tmp_path / "m36.hiriseice"), report=None)
    helpers.run_worker(worker_python, "train", helpers.write_job(tmp_path / "job.json", job)).check()
    run = helpers.run_worker(worker_python, "detect", scene.path, "--model", job["output_model"], "--probability-raster", tmp_path / "p.tif")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert [m["message"] for m in run.errors] == [
        "This model reads a chunk at 36 px, not a multiple of its 8-px score-map cell, so its cells cannot be laid on the raster's grid and no probability "
        "raster can be written. Leave PROBABILITY_RASTER empty, or train a model whose input size is a multiple of 8."]
    assert not (tmp_path / "p.tif").exists()


@pytest.mark.parametrize("command", ["detect", "survey"])
def test_an_output_name_too_long_for_what_is_written_beside_it_is_refused_before_any_work(worker_python, tiny_model, make_raster, tmp_path, command):
    """A 240-byte GeoPackage name fits, its hidden partial copy's SQLite journal (or the survey's lock) does not: detect
    scored every chunk and the survey its images, then both ended in a traceback (OGR returned no data source)."""
    raster = make_raster(width=128, height=128)
    out = tmp_path / ("л" * 117 + ".gpkg")  # 239 bytes
    given = [raster.path, "--out", out] if command == "detect" else ["--rasters", raster.path, "--out", out, "--workers", 1]
    run = helpers.run_worker(worker_python, command, *given, "--model", tiny_model.path)
    errors = [m["message"] for m in run.errors]
    assert run.returncode != 0 and len(errors) == 1 and "Traceback" not in run.stderr, run.stdout[-2000:] + run.stderr[-3000:]
    assert "its name is 239 bytes long, and the files written beside it while it is made take up to" in errors[0] and "Choose a shorter file name" in errors[0], errors
    assert not [name for name in os.listdir(tmp_path) if ".gpkg" in name or "lock" in name]


@pytest.mark.parametrize("command", ["detect", "chunk"])
def test_a_raster_whose_name_is_not_utf8_is_told_to_be_renamed_not_called_unreadable(worker_python, tiny_model, make_raster, tmp_path, command):
    """A good GeoTIFF named in Latin-1 (b'caf\\xe9.tif') was 'not a raster GDAL can read (not a string)'."""
    raster = make_raster(width=128, height=128)
    latin = os.path.join(os.fsencode(str(tmp_path)), b"caf\xe9.tif")
    os.rename(os.fsencode(raster.path), latin)
    given = [os.fsdecode(latin)] + (["--model", tiny_model.path] if command == "detect" else ["--chunk-size", 64])
    run = helpers.run_worker(worker_python, command, *given)
    errors = [m["message"] for m in run.errors]
    assert run.returncode == 2 and len(errors) == 1, run.stdout[-2000:] + run.stderr[-2000:]
    assert errors[0] == (f"'{os.fsencode(str(tmp_path)).decode()}/caf\\xe9.tif': its name is not UTF-8 text, which GDAL's Python bindings cannot pass. "
                         "Rename it (e.g. with only letters, digits, '_' and '-') and run again."), errors


def test_only_the_files_an_output_really_has_beside_it_count_toward_its_name(tmp_path):
    """A 240-byte report name was refused for a SQLite journal and a survey lock that only GeoPackages and surveys have."""
    from model import files

    stem = "a" * 235
    assert files.name_too_long(str(tmp_path / (stem + ".html"))) == ""  # its partial copy, 249 bytes, fits
    assert "take up to 17 more, beyond this file system's 255 bytes" in files.name_too_long(str(tmp_path / (stem + ".gpkg")))
    assert files.name_too_long(str(tmp_path / ("b" * 240 + ".tif"))) == ""  # 253 bytes: a GeoTIFF has no journal
    assert "take up to 17 more" in files.name_too_long(str(tmp_path / ("d" * 240)), survey=True)  # a survey's output is a GeoPackage, journal and all


def test_names_are_measured_where_the_system_has_no_pathconf(tmp_path, monkeypatch):
    """os.pathconf is Unix only: on Windows every check of an output had failed with an AttributeError."""
    from model import files

    monkeypatch.delattr(os, "pathconf")
    assert files.name_too_long(str(tmp_path / ("a" * 235 + ".html"))) == ""
    assert "beyond this file system's 255 bytes" in files.name_too_long(str(tmp_path / ("a" * 235 + ".gpkg")))
    files.check_destination(str(tmp_path / "r.html"), "REPORT")


def test_an_output_that_cannot_be_replaced_says_what_holds_it(tmp_path):
    """On Windows a file open in another program (a probability raster loaded in QGIS) cannot be replaced: the run had
    ended, after all its work, with "Check that its folder is writable", in a folder that was."""
    from model import files
    from model.errors import EngineError

    held = tmp_path / "p.tif"
    held.write_bytes(b"the run before")
    with qs.held_file(held):
        with pytest.raises(EngineError) as failed:
            with files.writing(str(held), "The ice-probability raster") as partial:
                with open(partial, "w") as handle:
                    handle.write("this run")
    assert f"The ice-probability raster could not replace {held} (Operation not permitted), in a folder that takes files: another program holds" in str(failed.value)
    assert held.read_bytes() == b"the run before" and qs.files_named_partial(tmp_path) == []


OUT_OF_MEMORY = r"""
import resource, sys
from model import __main__ as worker
from model import inference, runtime  # noqa: F401 - loaded before the limit, as a worker has them
with open("/proc/self/status") as status:  # a few MB more than mapped now: too few for a thread's stack, or for TensorFlow
    mapped = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (mapped + int(sys.argv[1]) * 2 ** 20, resource.RLIM_INFINITY))
sys.exit(worker.main(sys.argv[2:]))
"""


@pytest.mark.parametrize("spare_mb, cause", [(8, "RuntimeError: can't start new thread"), (64, "ImportError: ")])
def test_a_worker_out_of_memory_says_so_with_the_fix_not_a_traceback(worker_python, tiny_model, make_raster, tmp_path, monkeypatch, spare_mb, cause):
    """A laptop's worker short of memory printed sixty lines of traceback ending in a MemoryError, a thread that could not
    start, or a library that could not be mapped, none of which said what to do."""
    monkeypatch.setenv("HIRISEICE_CACHE_DIR", str(tmp_path / "cache"))  # nothing exported: the network must be loaded
    raster = make_raster(width=helpers.TINY_CHUNK_SIZE * 4, height=helpers.TINY_CHUNK_SIZE * 3, seed=2)
    done = helpers.run_worker_snippet(worker_python, OUT_OF_MEMORY, spare_mb, "--jsonl", "detect", raster.path, "--model", tiny_model.path,
                                      "--out", tmp_path / "chunks.gpkg", timeout=600)
    errors = [m for m in map(json.loads, done.stdout.splitlines()) if m.get("type") == "error"]
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert len(errors) == 1 and errors[0]["code"] == "memory", errors
    assert errors[0]["message"].startswith(f"The worker ran out of memory ({cause}") and "Close other programs, lower BATCH_SIZE" in errors[0]["message"]
    assert not (tmp_path / "chunks.gpkg").exists()


@pytest.mark.parametrize("said", [
    # ONNX Runtime's arena, scoring a batch on a laptop short of memory (its Fail is a plain Exception)
    "[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running Conv node. Status Message: "
    "bfc_arena.cc:376 AllocateRawInternal Failed to allocate memory for requested buffer of size 134217728",
    # ONNX Runtime starting its thread pool (onnxruntime already loaded: a map runner after a logit runner)
    "pthread_create failed, error code: 12 error msg: Cannot allocate memory",
    "OOM when allocating tensor with shape[64,128,128,32]",  # TensorFlow
])
def test_the_ways_memory_runs_out_are_told_apart_from_other_failures(said):
    from model.errors import out_of_memory

    assert out_of_memory(Exception(said)) and out_of_memory(said)
    assert not out_of_memory(Exception("[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model from x.onnx failed: Protobuf parsing failed."))

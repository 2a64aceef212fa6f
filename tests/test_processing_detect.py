"""hiriseice:detect through processing.run: the real algorithm in an offscreen QGIS, the session's
tiny model scored by the real worker (TensorFlow in its own process), real GDAL files.

Generated scene: 320 x 200 px in a custom Mars equirectangular WKT, 64-px chunks -> a 4 x 5 grid
whose last row is 8 px high. Real scene: ESP_037156_1800_RED.byte.tif (274 x 661 px, rotated
footprint in a no-data border).
"""

import os
import pathlib
import sys
import zipfile

import numpy as np
import pytest
from osgeo import gdal, ogr, osr

import helpers
import qgis_support as qs
from model import review, rules

CHUNK = 64
SCENE_W, SCENE_H = 320, 200
REAL_RED = "ESP_037156_1800_RED.byte.tif"
REAL_COLOR = "ESP_042252_1930_3-BAND_COLOR_2m_o_cropped.cub"
# The summary's fields from a PDS3 label beside the image (NULL here: the scenes have none).
LABEL_FIELD_NAMES = ["observation_id", "solar_longitude", "incidence_angle", "centre_latitude", "scaling_factor", "scaling_offset",
                     "nodata_dn", "low_saturation_dn", "high_saturation_dn"]


def raster_proj4(path):
    srs = osr.SpatialReference(wkt=gdal.Open(path).GetProjection())
    return srs.ExportToProj4()


# --- module fixtures: each detect runs once ---------------------------------------------------


@pytest.fixture(scope="module")
def detect_scene(session_raster):
    scene = qs.detect_scene(session_raster)
    assert (scene.width, scene.height) == (SCENE_W, SCENE_H)
    return scene


@pytest.fixture(scope="module")
def gpkg_run(qgis_app, tiny_model, detect_scene, tmp_path_factory):
    """Chunks and summary into one GeoPackage, and the report."""
    folder = tmp_path_factory.mktemp("detect_gpkg")
    gpkg = folder / "detected.gpkg"
    report = folder / "report.html"
    results = qs.run_algorithm(
        "hiriseice:detect",
        {"INPUT": detect_scene.path, "MODEL": tiny_model.path, "CHUNK_SIZE": CHUNK, "OUTPUT": qs.gpkg_destination(gpkg, "chunks"),
         "SUMMARY": qs.gpkg_destination(gpkg, "summary"), "REPORT": str(report)},
    )
    return dict(results=results, gpkg=gpkg, report=report, chunks=qs.read_ogr(gpkg, "chunks"), summary=qs.read_ogr(gpkg, "summary"))


@pytest.fixture(scope="module")
def real_run(qgis_app, tiny_model, georef_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("detect_real")
    raster = qs.real_file(georef_data, REAL_RED, folder)
    gpkg = folder / "real.gpkg"
    report = folder / "real.html"
    results = qs.run_algorithm(
        "hiriseice:detect",
        {"INPUT": str(raster), "MODEL": tiny_model.path, "CHUNK_SIZE": CHUNK, "OUTPUT": qs.gpkg_destination(gpkg, "chunks"),
         "SUMMARY": qs.gpkg_destination(gpkg, "summary"), "REPORT": str(report)},
    )
    return dict(raster=str(raster), results=results, gpkg=gpkg, report=report, chunks=qs.read_ogr(gpkg, "chunks"), summary=qs.read_ogr(gpkg, "summary"))


# --- the chunk layer -----------------------------------------------------------------------------


def expected_review_ranks(rows, icy=rules.ICY_THRESHOLD, radius=1):
    """model/review.py's ranks for chunk rows in chunk order, as the worker ranked them."""
    ordered = sorted(rows, key=lambda r: r["chunk_id"])
    ranks = review.review_ranks([r["probability"] for r in ordered], [r["row"] for r in ordered], [r["col"] for r in ordered], icy, radius)
    return {r["chunk_id"]: int(rank) for r, rank in zip(ordered, ranks)}


def check_chunk_table(table, raster_path, image_id, icy=rules.ICY_THRESHOLD, hard_low=rules.HARD_LOW):
    assert table.field_names == qs.DETECTION_FIELD_NAMES
    assert table.field_types["probability"] == "Real" and table.field_types["class"] == "String"
    assert all(table.field_types[name] == "Integer" for name in ("chunk_id", "row", "col", "x_off", "y_off", "width", "height", "label", "review_rank"))
    assert sorted(r["review_rank"] for r in table.rows) == list(range(1, len(table.rows) + 1))
    assert {r["chunk_id"]: r["review_rank"] for r in table.rows} == expected_review_ranks(table.rows, icy)
    assert table.rows, "no chunk written"
    ds = gdal.Open(raster_path)
    geotransform = ds.GetGeoTransform()
    pixel = abs(geotransform[1])
    for row in table.rows:
        assert row["image_id"] == image_id
        assert row["label"] is None, "the label field is for the geologist and starts NULL"
        assert 0.0 <= row["probability"] <= 1.0
        assert row["class"] == rules.chunk_class(row["probability"], icy, hard_low), row
        assert 0.0 < row["valid_fraction"] <= 1.0 and 0.0 <= row["centre_valid_fraction"] <= 1.0
        expected = helpers.window_ring_gdal(geotransform, row["x_off"], row["y_off"], row["width"], row["height"])
        qs.assert_ring_equal(qs.outer_ring(row["_wkt"]), expected, 1e-6 * pixel, f"chunk {row['chunk_id']}")
    assert len({r["chunk_id"] for r in table.rows}) == len(table.rows)


def test_chunk_layer_fields_and_windows(gpkg_run, detect_scene):
    table = gpkg_run["chunks"]
    check_chunk_table(table, detect_scene.path, "detect_scene")
    windows = {(r["row"], r["col"], r["x_off"], r["y_off"], r["width"], r["height"]) for r in table.rows}
    assert windows == qs.expected_grid(SCENE_W, SCENE_H, CHUNK)
    assert len(windows) == 20 and {r["height"] for r in table.rows if r["row"] == 3} == {SCENE_H - 3 * CHUNK}
    assert all(r["chunk_id"] == r["row"] * 5 + r["col"] for r in table.rows)
    assert all(r["valid_fraction"] == 1.0 for r in table.rows)


def test_output_crs_is_the_rasters(gpkg_run, detect_scene, qgis_app):
    from qgis.core import QgsRasterLayer, QgsVectorLayer

    expected = qs.normalised_proj(raster_proj4(detect_scene.path))
    assert "+lat_ts=-55" in expected  # the custom WKT's standard parallel survived
    for table in (gpkg_run["chunks"], gpkg_run["summary"]):
        assert qs.normalised_proj(table.srs_proj4) == expected
    layer = QgsVectorLayer(f"{gpkg_run['gpkg']}|layername=chunks", "chunks", "ogr")
    raster = QgsRasterLayer(detect_scene.path, "scene")
    assert layer.isValid() and layer.crs().isValid()
    assert qs.normalised_proj(layer.crs().toProj()) == qs.normalised_proj(raster.crs().toProj())


def test_summary_matches_chunks_and_rules(gpkg_run, detect_scene):
    chunks, summary = gpkg_run["chunks"].rows, gpkg_run["summary"]
    assert summary.field_names == qs.SUMMARY_FIELD_NAMES + LABEL_FIELD_NAMES
    assert len(summary.rows) == 1
    s = summary.rows[0]
    probabilities = [c["probability"] for c in chunks]
    stats = rules.image_stats(probabilities)
    assert s["image_id"] == "detect_scene"
    assert (s["chunks"], s["icy_chunks"], s["hard_chunks"]) == (stats.chunks, stats.icy_chunks, stats.hard_chunks)
    assert s["icy_chunks"] == sum(c["class"] == rules.ICY for c in chunks)
    assert s["mean_probability"] == pytest.approx(stats.mean_probability, abs=1e-4)
    assert s["max_probability"] == pytest.approx(stats.max_probability, abs=1e-4)
    assert s["category"] == rules.image_category(stats)
    assert s["model_name"] == "tiny-test-model" and s["model_version"]
    # what the count rests on, kept with it in the GeoPackage a paper's table is made from
    assert (s["icy_threshold"], s["hard_low"], s["category_rule"], s["dropped_chunks"]) == (rules.ICY_THRESHOLD, rules.HARD_LOW, "paper", 0)
    assert len(s["weights_sha256"]) == 64 and s["engine_version"] and s["scored_at"].endswith("+00:00")
    results = gpkg_run["results"]
    assert (results["CATEGORY"], results["CHUNKS"], results["ICY_CHUNKS"]) == (s["category"], s["chunks"], s["icy_chunks"])
    assert results["MEAN_PROBABILITY"] == pytest.approx(s["mean_probability"])

    # The footprint: the whole (fully valid) raster, in the raster's CRS.
    from osgeo import ogr

    footprint = ogr.CreateGeometryFromWkt(s["_wkt"])
    extent = ogr.CreateGeometryFromWkt(helpers.polygon_wkt(helpers.window_ring_gdal(detect_scene.geotransform, 0, 0, SCENE_W, SCENE_H)))
    assert footprint.GetGeometryName() == "MULTIPOLYGON"
    assert footprint.Intersection(extent).GetArea() == pytest.approx(extent.GetArea(), rel=0.01)
    assert footprint.GetArea() == pytest.approx(extent.GetArea(), rel=0.01)
    for chunk in chunks:
        assert footprint.Contains(ogr.CreateGeometryFromWkt(chunk["_wkt"]).Centroid())


def test_report_is_written(gpkg_run):
    report = gpkg_run["report"]
    assert report.is_file() and gpkg_run["results"]["REPORT"] == str(report)
    text = report.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert "detect_scene" in text and gpkg_run["results"]["CATEGORY"] in text


def test_style_is_stored_in_the_geopackage(gpkg_run, qgis_app):
    from qgis.core import QgsCategorizedSymbolRenderer, QgsGraduatedSymbolRenderer, QgsVectorLayer

    styles = {row["f_table_name"]: row for row in qs.layer_styles(gpkg_run["gpkg"])}
    assert set(styles) == {"chunks", "summary"}
    assert all(row["useAsDefault"] for row in styles.values())
    assert 'type="graduatedSymbol"' in styles["chunks"]["styleQML"] and 'attr="probability"' in styles["chunks"]["styleQML"]

    # Re-opened like a user would (loads the default style from layer_styles).
    chunks = QgsVectorLayer(f"{gpkg_run['gpkg']}|layername=chunks", "reopened", "ogr")
    assert chunks.isValid()
    renderer = chunks.renderer()
    assert isinstance(renderer, QgsGraduatedSymbolRenderer) and renderer.classAttribute() == "probability"
    edges = {round(r.lowerValue(), 6) for r in renderer.ranges()} | {round(r.upperValue(), 6) for r in renderer.ranges()}
    assert {0.0, rules.HARD_LOW, rules.ICY_THRESHOLD, 1.0} <= edges
    # labels at each chunk's own centre: at the centre of its part on screen, a chunk of a dense grid off the canvas had put its
    # "icy" on a neighbour's ground
    assert chunks.labelsEnabled() and chunks.labeling().settings().centroidWhole
    # a season's survey drawn whole placed every chunk as an obstacle and tried every label: 17-46 s for 52,000 chunks, at every pan
    settings = chunks.labeling().settings()
    assert not settings.obstacleSettings().isObstacle() and settings.thinningSettings().minimumFeatureSize() >= 4.0
    form = chunks.editFormConfig()
    editable = [field.name() for index, field in enumerate(chunks.fields()) if not form.readOnly(index) and field.name() != "fid"]  # fid: the GeoPackage's key
    assert editable == ["label"], "the geologist fills only label; review_rank and the model's fields stay read-only"
    # a value the field calculator or the table writes that train cannot read (2, -5) is flagged where it is typed, not refused
    from qgis.core import QgsFieldConstraints

    label = chunks.fields().lookupField("label")
    constraints = chunks.fields().at(label).constraints()
    assert chunks.constraintExpression(label) == '"label" IS NULL OR "label" IN (1, 0, -1)'
    assert constraints.constraintStrength(QgsFieldConstraints.Constraint.ConstraintExpression) == QgsFieldConstraints.ConstraintStrength.ConstraintStrengthSoft
    summary = QgsVectorLayer(f"{gpkg_run['gpkg']}|layername=summary", "reopened", "ogr")
    assert isinstance(summary.renderer(), QgsCategorizedSymbolRenderer) and summary.renderer().classAttribute() == "category"
    # the paper's "bad" is an image with too few icy chunks to keep (0 or 1), not one without ice: the legend had said "no ice seen"
    assert {c.value(): c.label() for c in summary.renderer().categories()}["bad"] == "bad: too few icy chunks to keep"


# --- real HiRISE data --------------------------------------------------------------------------


def test_real_red_product(real_run):
    raster = real_run["raster"]
    ds = gdal.Open(raster)
    width, height = ds.RasterXSize, ds.RasterYSize
    table = real_run["chunks"]
    check_chunk_table(table, raster, "ESP_037156_1800_RED.byte")
    grid = qs.expected_grid(width, height, CHUNK)
    windows = {(r["row"], r["col"], r["x_off"], r["y_off"], r["width"], r["height"]) for r in table.rows}
    assert windows < grid, "chunks must come from the grid, and the no-data border must drop some"
    assert all(r["centre_valid_fraction"] >= 0.95 for r in table.rows)
    assert qs.normalised_proj(table.srs_proj4) == qs.normalised_proj(raster_proj4(raster))

    from osgeo import ogr

    s = real_run["summary"].rows[0]
    stats = rules.image_stats([r["probability"] for r in table.rows])
    assert s["chunks"] == len(table.rows) == real_run["results"]["CHUNKS"]
    assert s["category"] == rules.image_category(stats) == real_run["results"]["CATEGORY"]
    footprint = ogr.CreateGeometryFromWkt(s["_wkt"])
    extent = ogr.CreateGeometryFromWkt(helpers.polygon_wkt(helpers.window_ring_gdal(ds.GetGeoTransform(), 0, 0, width, height)))
    # The rotated footprint of the observation: inside the raster, well short of it.
    assert footprint.Difference(extent).GetArea() < 1e-3 * extent.GetArea()
    assert 0.2 * extent.GetArea() < footprint.GetArea() < 0.9 * extent.GetArea()
    assert real_run["report"].is_file()
    assert {row["f_table_name"] for row in qs.layer_styles(real_run["gpkg"])} == {"chunks", "summary"}


# --- memory outputs and several runs in one context ---------------------------------------------


def test_memory_output_and_two_runs_in_one_context(gpkg_run, detect_scene, qgis_app, tiny_model, make_raster, tmp_path):
    from qgis.core import QgsGraduatedSymbolRenderer, QgsProcessingContext, QgsProject, QgsVectorLayer

    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    other = make_raster(name="other_scene.tif", width=256, height=128, seed=5, icy_chunk_size=CHUNK, icy_pattern=lambda r, c: c == 1)
    first = qs.run_algorithm(
        "hiriseice:detect",
        {"INPUT": other.path, "MODEL": tiny_model.path, "CHUNK_SIZE": CHUNK, "OUTPUT": "TEMPORARY_OUTPUT", "SUMMARY": "TEMPORARY_OUTPUT", "REPORT": str(tmp_path / "first.html")},
        context=context,
    )

    # Thresholds between the probabilities the main run saw, so the second run's three classes all occur.
    ps = sorted({c["probability"] for c in gpkg_run["chunks"].rows})
    assert len(ps) >= 6, f"the tiny model gives too few distinct probabilities to place thresholds: {ps}"
    hard_low = (ps[len(ps) // 3 - 1] + ps[len(ps) // 3]) / 2
    icy = (ps[2 * len(ps) // 3 - 1] + ps[2 * len(ps) // 3]) / 2
    gpkg = tmp_path / "second.gpkg"
    second = qs.run_algorithm(
        "hiriseice:detect",
        {"INPUT": detect_scene.path, "MODEL": tiny_model.path, "CHUNK_SIZE": CHUNK, "ICY_THRESHOLD": icy, "HARD_LOW": hard_low,
         "OUTPUT": str(gpkg), "SUMMARY": "TEMPORARY_OUTPUT", "REPORT": str(tmp_path / "second.html")},
        context=context,
    )

    layer = first["OUTPUT"]
    assert isinstance(layer, QgsVectorLayer) and layer.isValid() and layer.providerType() == "memory"
    assert layer.fields().names() == qs.DETECTION_FIELD_NAMES
    assert isinstance(layer.renderer(), QgsGraduatedSymbolRenderer) and layer.renderer().classAttribute() == "probability"
    features = list(layer.getFeatures())
    assert sorted((f["row"], f["col"]) for f in features) == [(r, c) for r in range(2) for c in range(4)]
    assert {f["image_id"] for f in features} == {"other_scene"}
    assert qs.normalised_proj(layer.crs().toProj()) == qs.normalised_proj(raster_proj4(other.path))
    ring = [(p.x(), p.y()) for p in features[0].geometry().asPolygon()[0]]
    f0 = features[0]
    qs.assert_ring_equal(ring, helpers.window_ring_gdal(other.geotransform, f0["x_off"], f0["y_off"], f0["width"], f0["height"]), 1e-6)
    summary_layer = first["SUMMARY"]
    assert summary_layer.featureCount() == 1 and next(summary_layer.getFeatures())["image_id"] == "other_scene"
    assert first["CHUNKS"] == 8
    assert sorted(f["review_rank"] for f in features) == list(range(1, 9))

    table = qs.read_ogr(gpkg)
    classes = [r["class"] for r in table.rows]
    check_chunk_table(table, detect_scene.path, "detect_scene", icy=icy, hard_low=hard_low)
    assert set(classes) == {rules.ICY, rules.HARD, rules.NOT_ICY}, (icy, hard_low, [r["probability"] for r in table.rows])
    assert second["ICY_CHUNKS"] == classes.count(rules.ICY)
    assert next(second["SUMMARY"].getFeatures())["hard_chunks"] == classes.count(rules.HARD)
    # The first run's layer is untouched by the second.
    assert layer.isValid() and layer.featureCount() == 8 and {f["image_id"] for f in layer.getFeatures()} == {"other_scene"}


def test_review_rank_counts_overlapping_chunks_as_neighbours(qgis_app, tiny_model, make_raster, tmp_path):
    """At STRIDE = CHUNK / 2 a chunk two grid cells away still overlaps, so it is penalised too (radius 2)."""
    raster = make_raster(name="overlap_scene.tif", width=256, height=128, seed=5, icy_chunk_size=CHUNK, icy_pattern=lambda r, c: c == 1)
    gpkg = tmp_path / "overlap.gpkg"
    qs.run_algorithm(
        "hiriseice:detect",
        {"INPUT": raster.path, "MODEL": tiny_model.path, "CHUNK_SIZE": CHUNK, "STRIDE": CHUNK // 2, "OUTPUT": str(gpkg), "REPORT": str(tmp_path / "overlap.html")},
    )
    rows = qs.read_ogr(gpkg).rows
    assert len(rows) == 3 * 7
    expected = expected_review_ranks(rows, radius=2)
    assert expected != expected_review_ranks(rows, radius=1), "this scene cannot tell the radii apart"
    assert {r["chunk_id"]: r["review_rank"] for r in rows} == expected


# --- TensorFlow stays in the worker -------------------------------------------------------------


def test_tensorflow_never_enters_the_qgis_process(gpkg_run, worker_python, qgis_app):
    from qgis.core import QgsApplication, QgsVectorLayer

    # detect ran (gpkg_run) in this process; the network ran in the worker it started.
    commands = gpkg_run["results"]["_feedback"].commands
    assert any(" -m model --jsonl detect " in c for c in commands), commands
    assert not commands[0].startswith(sys.executable + " ")
    assert not [name for name in sys.modules if name == "tensorflow" or name.startswith(("tensorflow.", "keras", "tf_keras"))]
    assert qs.native_tensorflow_loaded() == []
    # And this QGIS is alive and working.
    assert QgsApplication.processingRegistry().algorithmById("hiriseice:detect") is not None
    assert QgsVectorLayer(f"{gpkg_run['gpkg']}|layername=chunks", "again", "ogr").featureCount() == 20


def test_detect_in_qgis_process_which_tensorflow_would_abort(tiny_model, detect_scene):
    """qgis_process links the system libprotobuf: TensorFlow loaded into it aborts it (DEVELOPERS.md)."""
    run = qs.qgis_process_detect(tiny_model.path, detect_scene.path)
    out = run.process.stdout
    assert run.process.returncode == 0, out[-4000:]
    assert "descriptor_database" not in out and "Aborted" not in out
    assert " -m model --jsonl detect " in out  # the network ran in the worker
    assert len(qs.read_ogr(run.output).rows) == 20
    assert os.path.isfile(run.report)


def test_chunk_size_0_is_the_models_own(gpkg_run, qgis_app, tiny_model, detect_scene, tmp_path):
    """CHUNK_SIZE 0 (the default) reads the chunk size from the model file: the tiny model's 64 px."""
    assert tiny_model.metadata["chunk_size"] == CHUNK
    gpkg = tmp_path / "model_size.gpkg"
    results = qs.run_algorithm("hiriseice:detect", {"INPUT": detect_scene.path, "MODEL": tiny_model.path, "CHUNK_SIZE": 0, "OUTPUT": str(gpkg)})
    assert f"--chunk-size {CHUNK} --stride {CHUNK} " in results["_feedback"].text
    rows = qs.read_ogr(gpkg).rows
    explicit = {r["chunk_id"]: (r["x_off"], r["y_off"], r["width"], r["height"], r["probability"]) for r in gpkg_run["chunks"].rows}
    assert {r["chunk_id"]: (r["x_off"], r["y_off"], r["width"], r["height"], r["probability"]) for r in rows} == explicit


def test_a_rotated_raster_is_scored_over_all_its_pixels_in_its_own_grid(qgis_app, tiny_model, make_raster, tmp_path):
    """Issue 9: QGIS warps a rotated raster north-up for display, and only 68.5 % of it was scored."""
    x0, pixel, _, y0, _, _ = helpers.default_geotransform(SCENE_W, SCENE_H)
    c, s = np.cos(np.radians(20)), np.sin(np.radians(20))
    raster = make_raster(width=SCENE_W, height=SCENE_H, geotransform=(x0, pixel * c, pixel * s, y0, pixel * s, -pixel * c), seed=4)
    gpkg = tmp_path / "rotated.gpkg"
    qs.run_algorithm("hiriseice:detect", {"INPUT": raster.path, "MODEL": tiny_model.path, "CHUNK_SIZE": CHUNK, "OUTPUT": str(gpkg)})
    rows = qs.read_ogr(gpkg).rows
    assert {(r["x_off"], r["y_off"], r["width"], r["height"]) for r in rows} == {w[2:] for w in qs.expected_grid(SCENE_W, SCENE_H, CHUNK)}
    geotransform = gdal.Open(raster.path).GetGeoTransform()
    for r in rows:
        expected = helpers.window_ring_gdal(geotransform, r["x_off"], r["y_off"], r["width"], r["height"])
        qs.assert_ring_equal(qs.outer_ring(r["_wkt"]), expected, 1e-6 * pixel, f"chunk {r['chunk_id']}")


# --- cancel --------------------------------------------------------------------------------------


def test_cancel_stops_the_worker_and_leaves_nothing(qgis_app, tiny_model, make_raster, tmp_path, monkeypatch):
    from qgis.core import QgsProcessingException

    # A worker of its own, found by the report path on its command line (the warm worker's cancel: test_warm_worker.py).
    monkeypatch.setenv("HIRISEICE_WARM_WORKER", "0")

    # 121 x 121 overlapping chunks scored one per network call: minutes of work, cancelled early.
    raster = make_raster(name="big_scene.tif", width=1024, height=1024, seed=9)
    out_folder = tmp_path / "out"
    out_folder.mkdir()
    output, report = out_folder / "cancelled.gpkg", out_folder / "cancelled.html"
    feedback = qs.recording_feedback()
    timer, state = qs.cancel_when(feedback, lambda: feedback.progress() > 0, lambda: {"workers": qs.processes_with(str(report))})
    try:
        with pytest.raises(QgsProcessingException) as raised:
            qs.run_algorithm(
                "hiriseice:detect",
                {"INPUT": raster.path, "MODEL": tiny_model.path, "CHUNK_SIZE": CHUNK, "STRIDE": 8, "BATCH_SIZE": 1,
                 "OUTPUT": str(output), "SUMMARY": qs.gpkg_destination(output, "summary"), "REPORT": str(report)},
                feedback=feedback,
            )
    finally:
        timer.join()
    assert 0 < state["progress"] < 50, f"cancelled at {state['progress']} %: the run was not cancelled while scoring"
    assert state["workers"], "no worker was running when the run was cancelled"
    assert "Cancelled" in str(raised.value) and "no output was written" in str(raised.value)
    assert not output.exists() and not report.exists()
    assert os.listdir(out_folder) == [], os.listdir(out_folder)
    assert qs.files_named_partial(out_folder) == []
    assert qs.wait_until_gone(str(report)) == [], "the worker outlived the cancel"


# --- bad inputs ---------------------------------------------------------------------------------


@pytest.fixture
def detect_error(qgis_app, tiny_model, detect_scene, tmp_path):
    """detect with the defaults below changed by **overrides; returns the exception's message and checks
    that nothing was written and that the feedback did not say it too (processing.run shows both)."""
    from qgis.core import QgsProcessingException

    def run(**overrides):
        parameters = {"INPUT": detect_scene.path, "MODEL": tiny_model.path, "CHUNK_SIZE": CHUNK, "OUTPUT": str(tmp_path / "bad.gpkg"), "REPORT": str(tmp_path / "bad.html")}
        parameters.update(overrides)
        feedback = qs.recording_feedback()
        with pytest.raises(QgsProcessingException) as raised:
            qs.run_algorithm("hiriseice:detect", parameters, feedback=feedback)
        message = str(raised.value)
        assert message[:60] not in feedback.text, feedback.text
        assert not (tmp_path / "bad.gpkg").exists() and not (tmp_path / "bad.html").exists()
        assert qs.files_named_partial(tmp_path) == []
        return message

    return run


def test_a_parameter_name_detect_lacks_or_a_number_out_of_range(qgis_app, tiny_model, detect_scene, tmp_path):
    """Stopped while QGIS checks the parameters (processing.run reports that check's message in the
    feedback too), before any worker or output."""
    from qgis.core import QgsProcessingException

    def message(**extra):
        parameters = {"INPUT": detect_scene.path, "MODEL": tiny_model.path, "CHUNK_SIZE": CHUNK, "OUTPUT": str(tmp_path / "bad.gpkg"), **extra}
        with pytest.raises(QgsProcessingException) as raised:
            qs.run_algorithm("hiriseice:detect", parameters, feedback=qs.recording_feedback())
        assert not (tmp_path / "bad.gpkg").exists() and not (tmp_path / "p.tif").exists()
        return str(raised.value)

    assert "hiriseice:detect has no parameter chunk_size. Did you mean CHUNK_SIZE?" in message(chunk_size=64)
    misspelt = message(PROBABILITY_RASTR=str(tmp_path / "p.tif"))
    assert "no parameter PROBABILITY_RASTR. Did you mean PROBABILITY_RASTER?" in misspelt and "qgis_process help hiriseice:detect" in misspelt
    assert "Did you mean" not in message(FLAVOUR="vanilla")
    # A number outside its range, or none at all, is told its range and default (QGIS: "Incorrect parameter value").
    assert "ICY_THRESHOLD (Icy at probability ≥) is 1.5; give a number from 0 to 1 (default 0.6)." in message(ICY_THRESHOLD=1.5)
    assert "BATCH_SIZE (Batch size (chunks per network call)) is 0; give a whole number from 1 (default 16)." in message(BATCH_SIZE=0)
    assert "CHUNK_SIZE (Chunk size (pixels; 0 = the model's)) is 'big'; give a whole number from 0 (default 0)." in message(CHUNK_SIZE="big")
    assert "CHUNK_SIZE (Chunk size (pixels; 0 = the model's)) is 64.5; give a whole number from 0" in message(CHUNK_SIZE=64.5)
    # Past a C int QGIS reads a whole number as 0: STRIDE=1e300 had run at the chunk size and BATCH_SIZE=2**31 at 0, exit 0.
    assert "BATCH_SIZE (Batch size (chunks per network call)) is 2147483648; give a whole number from 1 to 2147483647 (default 16)." in message(
        BATCH_SIZE=2 ** 31)
    assert "STRIDE" in message(STRIDE="1e300") and "to 2147483647" in message(STRIDE="1e300")
    # An option list's choices, by name where the command line gives names.
    rules = message(CATEGORY_RULE="lenient")
    assert "CATEGORY_RULE (Image category rule) is 'lenient'; give one of paper, " in rules and "(default paper)." in rules


def test_a_raster_with_neither_crs_nor_geotransform_is_told_both(detect_error, tmp_path):
    """Told only of the CRS, a geologist assigned one and was then refused for the geotransform."""
    from model.georeference import not_map_projected_message
    from model.raster import RasterError, RasterSource

    path = helpers.write_geotiff(tmp_path / "edr.tif", np.full((64, 64), 300, np.uint16), geotransform=None, crs_wkt=None)
    assert detect_error(INPUT=path).splitlines()[-1] == not_map_projected_message(path, "edr")
    assert "it is not map-projected (an EDR, or a copy that lost its georeferencing)" in not_map_projected_message(path)
    with pytest.raises(RasterError) as raised:  # the engine's own check, for the command line
        RasterSource(path)
    assert str(raised.value) == not_map_projected_message(path)


def test_raster_without_crs(detect_error, make_raster):
    raster = make_raster(name="no_crs.tif", crs=None)
    message = detect_error(INPUT=raster.path)
    assert "no coordinate reference system" in message and "Assign" in message and "no_crs" in message


def test_a_failed_run_leaves_the_results_of_earlier_runs_in_a_shared_context(qgis_app, tiny_model, detect_scene, make_raster):
    """Emptying a failed run's layers (below) must not take those of runs before it in the same context, as a script's
    loop or a batch sharing one keeps them. Run as a batch runs each row (Algorithm.run, the context kept)."""
    from qgis.core import QgsApplication, QgsProcessingContext, QgsProject

    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    registry, feedback = QgsApplication.processingRegistry(), qs.recording_feedback()
    first, ok = registry.createAlgorithmById("hiriseice:detect").run(
        {"INPUT": detect_scene.path, "MODEL": tiny_model.path, "CHUNK_SIZE": CHUNK, "OUTPUT": "TEMPORARY_OUTPUT"}, context, feedback)
    assert ok and context.temporaryLayerStore().mapLayer(first["OUTPUT"]) is not None
    _, ok = registry.createAlgorithmById("hiriseice:detect").run(
        {"INPUT": make_raster(name="no_crs_here.tif", crs=None).path, "MODEL": tiny_model.path, "OUTPUT": "TEMPORARY_OUTPUT"}, context, feedback)
    assert not ok and context.temporaryLayerStore().mapLayer(first["OUTPUT"]) is not None


def test_a_failed_run_leaves_its_input_closed(detect_error, make_raster):
    """QGIS 3.22 never frees a Python algorithm's exception, and with it the layers the run loaded: each failed image of a
    batch or a processing.run loop left its raster open for the life of QGIS (20 handles to one file after 100 runs)."""
    raster = make_raster(name="closed_after.tif", crs=None)
    for _ in range(3):
        detect_error(INPUT=raster.path)
    held = [name for name in os.listdir("/proc/self/fd") if os.path.realpath(f"/proc/self/fd/{name}") == os.path.realpath(raster.path)]
    assert held == []


def test_a_crs_kept_in_the_aux_xml_sidecar_is_the_rasters(qgis_app, tiny_model, make_raster, tmp_path):
    """A PNG saved by gdal_translate or QGIS keeps its CRS in .aux.xml: QGIS and the worker read it, and
    detect refused the file as having none (its layer is loaded without PAM). The sidecar stays as it was."""
    source = make_raster(width=2 * CHUNK, height=2 * CHUNK, data_type="Byte", name="source.tif")
    png = str(tmp_path / "browse.png")
    assert gdal.Translate(png, source.path, format="PNG", creationOptions=["WORLDFILE=YES"]) is not None
    sidecar = pathlib.Path(png + ".aux.xml")
    before = sidecar.read_text()
    assert "PROJCS" in before  # the CRS is in the sidecar alone
    out = tmp_path / "browse.gpkg"
    qs.run_algorithm("hiriseice:detect", {"INPUT": png, "MODEL": tiny_model.path, "CHUNK_SIZE": CHUNK, "OUTPUT": str(out)})
    chunks = qs.read_ogr(out)
    assert len(chunks.rows) == 4
    assert qs.normalised_proj(chunks.srs_proj4) == qs.normalised_proj(raster_proj4(source.path))
    assert sidecar.read_text() == before


def test_corrupt_model_file(detect_error, tmp_path):
    corrupt = tmp_path / "corrupt.hiriseice"
    corrupt.write_bytes(np.random.default_rng(1).bytes(4096))
    message = detect_error(MODEL=str(corrupt))
    assert "is not a readable HiRISE Ice Patches model file" in message and "corrupt" in message and str(corrupt) in message


def test_foreign_zip_as_model(detect_error, tmp_path):
    foreign = tmp_path / "holiday.hiriseice"
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("photo.txt", "not a model")
    message = detect_error(MODEL=str(foreign))
    assert "is not a HiRISE Ice Patches model file" in message and "hiriseice:train" in message


def test_missing_model_file(detect_error, tmp_path):
    missing = tmp_path / "nowhere" / "model.hiriseice"
    message = detect_error(MODEL=str(missing))
    assert "does not exist" in message and str(missing) in message and "train one" in message


def test_all_no_data_generated_raster(detect_error, tmp_path):
    path = helpers.write_geotiff(tmp_path / "all_zero.tif", np.zeros((128, 192), np.uint16), "UInt16", helpers.default_geotransform(192, 128), helpers.mars_equirectangular_wkt())
    message = detect_error(INPUT=path)
    assert "No chunk of" in message and "image data" in message and "MIN_VALID" in message


def test_all_no_data_turned_polar_product_is_named_as_given(detect_error, tmp_path):
    """A polar map turned far from north-up is read through a view in GDAL's memory: the refusal named
    that view ('/vsimem/hiriseice/...vrt'), a file the user never gave."""
    wkt, gt = helpers.south_polar_stereographic(150.0)
    path = helpers.write_geotiff(tmp_path / "polar_all_zero.tif", np.zeros((192, 192), np.uint16), "UInt16", gt, wkt)
    message = detect_error(INPUT=path)
    assert f"No chunk of '{path}' has image data" in message and "/vsimem" not in message


def test_a_turned_polar_products_chunks_lie_on_its_pixels_in_the_layers_crs(qgis_app, tiny_model, tmp_path):
    """A polar map turned far from north-up is scored through a north-up view on its own meridian: the chunk polygons are in
    that view's map, and the layer must carry the view's CRS. Under the file's own CRS they lay far off the image."""
    wkt, gt = helpers.south_polar_stereographic(150.0, width=192, height=192)
    pixels = helpers.textured(192, 192, np.random.default_rng(4), 200, 900).astype(np.uint16)
    image = helpers.write_geotiff(tmp_path / "polar_turned.tif", pixels, "UInt16", gt, wkt)
    out = tmp_path / "turned.gpkg"
    results = qs.run_algorithm("hiriseice:detect", {"INPUT": image, "MODEL": tiny_model.path, "CHUNK_SIZE": CHUNK, "OUTPUT": str(out), "TTA": False})
    assert "north-up view" in results["_feedback"].text
    table = qs.read_ogr(out)
    assert table.rows
    layer_srs, file_srs = osr.SpatialReference(wkt=table.srs_wkt), osr.SpatialReference(wkt=wkt)
    for srs in (layer_srs, file_srs):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    to_file = osr.CoordinateTransformation(layer_srs, file_srs)
    x0, y1 = gt[0], gt[3]
    x1, y0 = x0 + 192 * gt[1], y1 + 192 * gt[5]
    for row in table.rows:
        centroid = ogr.CreateGeometryFromWkt(row["_wkt"]).Centroid()
        x, y = to_file.TransformPoint(centroid.GetX(), centroid.GetY())[:2]
        assert x0 - 1 <= x <= x1 + 1 and y0 - 1 <= y <= y1 + 1, (row["chunk_id"], x, y, (x0, y0, x1, y1))


def test_all_no_data_real_color_cube(detect_error, georef_data, tmp_path):
    cube = qs.real_file(georef_data, REAL_COLOR, tmp_path)
    message = detect_error(INPUT=str(cube), CHUNK_SIZE=16)  # 40 x 50 px: smaller than one 64-px chunk
    assert "No chunk of" in message and "image data" in message


def test_icy_threshold_below_hard_low(detect_error):
    message = detect_error(ICY_THRESHOLD=0.3, HARD_LOW=0.5)
    assert "ICY_THRESHOLD (0.3) must not be below HARD_LOW (0.5)" in message and "0.6 and 0.4" in message


def test_chunk_size_too_small(detect_error):
    message = detect_error(CHUNK_SIZE=4)
    assert "chunk size of 4 px is too small" in message and "at least 8" in message


def test_no_worker_python(detect_error, monkeypatch, tmp_path):
    with qs.no_worker(monkeypatch, tmp_path / "plugin-without-venv") as missing:
        message = detect_error()
    assert "found none" in message and missing in message and "scripts/install" in message


def test_named_worker_python_missing_is_an_error_not_a_fallback(detect_error, monkeypatch, tmp_path):
    """The checkout's .venv exists, but the user named another Python: say so rather than quietly use .venv."""
    named = str(tmp_path / "elsewhere" / "bin" / "python")
    monkeypatch.setenv("HIRISEICE_WORKER_PYTHON", named)
    message = detect_error()
    assert "environment variable HIRISEICE_WORKER_PYTHON" in message and named in message and "does not exist" in message
    assert "scripts/install" in message


# --- qgis_process says each error once -----------------------------------------------------------


@pytest.fixture
def qgis_process_error(tmp_path):
    """scripts/qgis_process run hiriseice:detect with **parameters that must fail: its whole output (stdout and stderr)."""

    def run(**parameters):
        output, report = tmp_path / "never.gpkg", tmp_path / "never.html"
        arguments = [f"{name}={value}" for name, value in parameters.items()] + [f"OUTPUT={output}", f"REPORT={report}"]
        done = qs.qgis_process("run", "hiriseice:detect", "--", *arguments)
        assert done.returncode == 1, done.stdout[-3000:]
        assert "Traceback" not in done.stdout, done.stdout[-3000:]
        assert not output.exists() and not report.exists()
        return done.stdout

    return run


def assert_said_once(output: str, text: str):
    assert output.count(text) == 1, output[-3000:]
    assert output.count("ERROR:") == 1, output[-3000:]


def test_qgis_process_says_a_raster_without_crs_once(qgis_process_error, make_raster):
    output = qgis_process_error(INPUT=make_raster(name="no_crs.tif", crs=None).path, CHUNK_SIZE=CHUNK)
    assert_said_once(output, "has no coordinate reference system")


def test_qgis_process_says_a_corrupt_model_once(qgis_process_error, make_raster, tmp_path):
    corrupt = tmp_path / "corrupt.hiriseice"
    corrupt.write_bytes(np.random.default_rng(1).bytes(4096))
    output = qgis_process_error(INPUT=make_raster(name="scene.tif").path, MODEL=corrupt, CHUNK_SIZE=CHUNK)
    assert_said_once(output, "is not a readable HiRISE Ice Patches model file")


def test_qgis_process_says_a_worker_error_once(qgis_process_error, worker_python, tmp_path):
    """An error found by the worker (the raster holds no image data), relayed through the JSON protocol."""
    path = helpers.write_geotiff(tmp_path / "all_zero.tif", np.zeros((128, 192), np.uint16), "UInt16", helpers.default_geotransform(192, 128), helpers.mars_equirectangular_wkt())
    output = qgis_process_error(INPUT=path, CHUNK_SIZE=CHUNK)
    assert " -m model --jsonl detect " in output  # the worker ran and found it
    assert_said_once(output, "has image data around its centre")



# --- the ice-probability raster ------------------------------------------------------------------


def test_probability_raster_output_matches_the_inputs_georeferencing_and_is_styled(qgis_app, tiny_model, detect_scene, tmp_path):
    """PROBABILITY_RASTER: a raster in the input's CRS whose extent is the input's within one of its pixels,
    styled (transparent below 0.2, yellow to red) by the .qml beside it, which QGIS loads by default."""
    from qgis.core import QgsRasterLayer

    path = tmp_path / "ice_probability.tif"
    results = qs.run_algorithm(
        "hiriseice:detect",
        {"INPUT": detect_scene.path, "MODEL": tiny_model.path, "CHUNK_SIZE": CHUNK, "OUTPUT": str(tmp_path / "chunks.gpkg"), "PROBABILITY_RASTER": str(path)},
    )
    assert results["PROBABILITY_RASTER"] == str(path)
    assert "--probability-raster" in results["_feedback"].text
    out, source = QgsRasterLayer(str(path), "p"), QgsRasterLayer(detect_scene.path, "in")
    assert out.isValid() and source.isValid()
    assert out.crs() == source.crs()
    pixel_x, pixel_y = out.rasterUnitsPerPixelX(), out.rasterUnitsPerPixelY()
    a, b = out.extent(), source.extent()
    assert abs(a.xMinimum() - b.xMinimum()) < 1e-6 * pixel_x and abs(a.yMaximum() - b.yMaximum()) < 1e-6 * pixel_y
    assert 0 <= a.xMaximum() - b.xMaximum() < pixel_x and 0 <= b.yMinimum() - a.yMinimum() < pixel_y
    assert pixel_x == pytest.approx(source.rasterUnitsPerPixelX() * 16)
    assert os.path.isfile(tmp_path / "ice_probability.qml")
    renderer = out.renderer()  # the default style beside the file
    assert renderer.type() == "singlebandpseudocolor"
    # the chunk layer's classes and colours (a cell of 0.22 had been bright yellow, the colour of 'hard to identify' on the
    # chunks), and a legend that names them (it had been one continuous bar labelled 0 and 1)
    styling = qs.plugin_module("processing_provider.styling")
    chunk_colours = {round(r.upperValue(), 1): r.symbol().color().name() for r in styling.build_chunk_renderer().ranges()}
    shader = renderer.shader().rasterShaderFunction()
    items = shader.colorRampItemList()
    assert shader.colorRampType() == shader.Discrete and items[0].value == 0.2 and items[0].color.alpha() == 0
    assert items[0].color.name() == "#ffffff"  # the legend shows an item's colour without its alpha: the class not drawn is white, not blue
    assert {min(round(i.value, 1), 1.0): i.color.name() for i in items[1:]} == {k: v for k, v in chunk_colours.items() if k > 0.2}
    assert [i.label for i in items][1:3] == ["0.2 – 0.4  not icy", "0.4 – 0.5  hard to identify"]
    assert not shader.legendSettings().useContinuousLegend()
    dataset = gdal.Open(str(path))  # kept referenced: its band dies with it
    values = dataset.GetRasterBand(1).ReadAsArray()
    assert ((values == -1) | ((values >= 0) & (values <= 1))).all() and (values >= 0).any()


def test_with_other_thresholds_the_legends_name_each_chunk_as_its_class_does(qgis_app, tiny_model, detect_scene, tmp_path):
    """The styles' classes were the paper's whatever ICY_THRESHOLD and HARD_LOW: with 0.05 and 0.02 a chunk at p 0.058,
    'icy' in its class field and the report, was drawn see-through in the legend's '0.0 - 0.2 not icy'."""
    import re

    from qgis.core import QgsRasterLayer, QgsVectorLayer

    icy, hard = 0.05, 0.02
    gpkg, raster = tmp_path / "chunks.gpkg", tmp_path / "ice_probability.tif"
    qs.run_algorithm("hiriseice:detect", {"INPUT": detect_scene.path, "MODEL": tiny_model.path, "CHUNK_SIZE": CHUNK, "OUTPUT": str(gpkg),
                                          "PROBABILITY_RASTER": str(raster), "ICY_THRESHOLD": icy, "HARD_LOW": hard})
    chunks = QgsVectorLayer(f"{gpkg}|layername=chunks", "reopened", "ogr")  # with its stored default style
    ranges = chunks.renderer().ranges()
    for feature in chunks.getFeatures():
        shown = next(r for r in ranges if r.lowerValue() <= feature["probability"] <= r.upperValue())
        assert shown.label().endswith("  " + feature["class"]), (feature["probability"], feature["class"], shown.label())
        if feature["class"] == "icy":
            assert shown.symbol().color().alpha() >= 100
    assert {r.label() for r in ranges} >= {"0.0 – 0.02  not icy", "0.02 – 0.05  hard to identify", "0.05 – 0.2  icy"}
    # The raster's legend: each value up to an item's edge in that item's class, and icy values not see-through.
    items = re.findall(r'<item alpha="(\d+)" value="([^"]+)" label="([^"]+)"', (tmp_path / "ice_probability.qml").read_text(encoding="utf-8"))
    assert [(float(v), label.split("  ")[1].replace(" (not drawn)", "")) for _a, v, label in items][:3] == [
        (0.02, "not icy"), (0.05, "hard to identify"), (0.2, "icy")]
    assert all(int(alpha) > 0 for alpha, _v, label in items if "  icy" in label)
    assert QgsRasterLayer(str(raster), "p").renderer().type() == "singlebandpseudocolor"
    # The paper's thresholds keep the bundled styles, as they are.
    assert styling_module().threshold_styles(0.6, 0.4) == (styling_module().CHUNKS_QML, styling_module().PROBABILITY_QML)
    assert styling_module().chunk_classes(0.6, 0.4) == styling_module().CHUNK_CLASSES
    # thresholds above the paper's: what they call not icy is not filled like ice (it had kept the icy classes' opacity)
    high = styling_module().chunk_classes(0.7, 0.65)
    assert all(alpha <= 35 for _low, _high, text, alpha in high if text.endswith("  not icy")) and any(t.endswith("  not icy") for _l, _h, t, _a in high if _l >= 0.6)


def styling_module():
    return qs.plugin_module("processing_provider.styling")


def test_the_probability_raster_the_gui_loads_is_styled(qgis_app, tiny_model, detect_scene, tmp_path):
    """The dialog loads the output through the style post-processor, which styled vector layers only: the raster came
    grey and opaque over the image and the chunks (the .qml beside it is read only when a user opens the file)."""
    from qgis.core import QgsProcessingContext, QgsProject, QgsRasterLayer

    path = tmp_path / "ice_probability.tif"
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    parameters = {"INPUT": detect_scene.path, "MODEL": tiny_model.path, "CHUNK_SIZE": CHUNK, "OUTPUT": str(tmp_path / "chunks.gpkg"), "PROBABILITY_RASTER": str(path)}
    context.setLayersToLoadOnCompletion({str(path): QgsProcessingContext.LayerDetails("Ice probability", QgsProject.instance(), "PROBABILITY_RASTER")})
    qs.run_algorithm("hiriseice:detect", parameters, context=context)
    details = context.layerToLoadOnCompletionDetails(str(path))
    assert details.postProcessor() is not None
    os.remove(tmp_path / "ice_probability.qml")  # as the dialog loads it: without the style file beside it
    layer = QgsRasterLayer(str(path), "Ice probability")
    assert layer.renderer().type() == "singlebandgray"
    details.postProcessor().postProcessLayer(layer, context, qs.recording_feedback())
    assert layer.renderer().type() == "singlebandpseudocolor"


def test_the_layers_the_gui_loads_are_named_after_their_image_and_model(qgis_app, tiny_model, detect_scene, tmp_path):
    """Two models compared on one image, or one model over a batch, had loaded layers all named "Ice probability of chunks";
    a name the user chose is kept."""
    from qgis.core import QgsProcessingContext, QgsProject

    chunks, summary = str(tmp_path / "chunks.gpkg"), str(tmp_path / "summary.gpkg")
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    context.setLayersToLoadOnCompletion({
        chunks: QgsProcessingContext.LayerDetails("Ice probability of chunks", QgsProject.instance(), "OUTPUT"),
        summary: QgsProcessingContext.LayerDetails("my summary", QgsProject.instance(), "SUMMARY"),
    })
    parameters = {"INPUT": detect_scene.path, "MODEL": tiny_model.path, "CHUNK_SIZE": CHUNK, "OUTPUT": chunks, "SUMMARY": summary}
    qs.run_algorithm("hiriseice:detect", parameters, context=context)
    row = qs.read_ogr(chunks).rows[0]
    expected = f"Ice probability of chunks, {row['image_id']} ({row['model_name']} {row['model_version']})"
    assert context.layerToLoadOnCompletionDetails(chunks).name == expected
    assert row["model_name"] and row["model_version"] and row["image_id"]
    assert context.layerToLoadOnCompletionDetails(summary).name == "my summary"


def test_probability_raster_must_be_a_geotiff(detect_error, tmp_path):
    message = detect_error(PROBABILITY_RASTER=str(tmp_path / "p.png"))
    assert ".tif" in message


def test_a_probability_raster_whose_cells_the_stride_does_not_fall_on_is_refused(detect_error, tmp_path):
    """At a STRIDE off the 16-px cells the chunks' maps were pasted at the nearest cell, up to half a cell from
    where they lie, and the last chunks' cells were cut off the raster."""
    message = detect_error(STRIDE=40, PROBABILITY_RASTER=str(tmp_path / "p.tif"))
    assert "STRIDE 40 is not a multiple of the probability raster's cell (16 raster px at CHUNK_SIZE 64)" in message, message
    assert "Give a STRIDE whose chunks start on its cells (e.g. 64 or 32 or 16), or leave PROBABILITY_RASTER empty." in message, message
    # no example that is refused in turn: half of a 1001-px chunk falls between its cells too
    from model.errors import EngineError
    from model.inference import check_probability_raster

    with pytest.raises(EngineError, match=r"\(e\.g\. 1001\), or leave"):
        check_probability_raster({"name": "small_xception", "widths": [32, 64, 128, 192, 256]}, 1001, 500, 256)


def test_no_output_replaces_the_image_it_reads(qgis_app, tiny_model, make_raster, tmp_path):
    """An output named on the input image would destroy it (QGIS replaces an output file whole): refused
    while QGIS checks the parameters, the image untouched. A GeoPackage raster too."""
    from pathlib import Path

    from osgeo import gdal

    raster = make_raster(name="ESP_000010_1000_RED.tif")
    before = Path(raster.path).read_bytes()

    def message(**outputs):
        parameters = {"INPUT": raster.path, "MODEL": tiny_model.path, "CHUNK_SIZE": CHUNK, "OUTPUT": str(tmp_path / "chunks.gpkg"), **outputs}
        return qs.processing_error("hiriseice:detect", parameters)

    for output in ("PROBABILITY_RASTER", "REPORT"):
        said = message(**{output: raster.path})
        assert f"{output} would be written over {raster.path}, which this run reads as INPUT: writing it would destroy it." in said, said
    assert Path(raster.path).read_bytes() == before and not (tmp_path / "chunks.gpkg").exists()
    packaged = str(tmp_path / "ESP_000010_1000_RED.gpkg")
    assert gdal.Translate(packaged, raster.path, format="GPKG") is not None
    said = message(INPUT=packaged, OUTPUT=packaged)
    assert f"OUTPUT would be written over {packaged}, which this run reads as INPUT" in said, said
    assert gdal.Open(packaged).RasterXSize == raster.width


def test_a_model_file_without_its_extension_is_told_the_extension(qgis_app, tiny_model, detect_scene, tmp_path):
    from pathlib import Path

    renamed = tmp_path / "tuned"
    renamed.write_bytes(Path(tiny_model.path).read_bytes())
    said = qs.processing_error("hiriseice:detect", {"INPUT": detect_scene.path, "MODEL": str(renamed), "OUTPUT": str(tmp_path / "chunks.gpkg")})
    assert f"MODEL (Model file (empty = bundled default model)) is '{renamed}'; give a file name ending in .hiriseice." in said, said


def test_a_table_without_geometry_as_output_is_warned_about(qgis_app, tiny_model, detect_scene, tmp_path):
    """OUTPUT=chunks.csv is written (the fields a spreadsheet wants), with a warning that the polygons are not in it."""
    results = qs.run_algorithm("hiriseice:detect", {"INPUT": detect_scene.path, "MODEL": tiny_model.path, "CHUNK_SIZE": CHUNK,
                                                    "OUTPUT": str(tmp_path / "chunks.csv"), "SUMMARY": None})
    warned = [w for w in results["_feedback"].warnings if "OUTPUT is a CSV file: it keeps the features' fields but not their polygons" in w]
    assert len(warned) == 1 and "Give a .gpkg to keep them." in warned[0], results["_feedback"].warnings
    assert not [w for w in results["_feedback"].warnings if "style" in w], results["_feedback"].warnings  # no polygons to style: nothing to say
    assert (tmp_path / "chunks.csv").read_text().startswith("image_id,chunk_id,probability")


def test_a_shapefile_output_is_written_with_a_warning_that_it_cuts_field_names(qgis_app, tiny_model, detect_scene, tmp_path):
    """dBase cuts probability to probabilit, so the style and the review order would not find it."""
    results = qs.run_algorithm("hiriseice:detect", {"INPUT": detect_scene.path, "MODEL": tiny_model.path, "CHUNK_SIZE": CHUNK,
                                                    "OUTPUT": str(tmp_path / "chunks.shp"), "SUMMARY": None})
    warned = [w for w in results["_feedback"].warnings if "OUTPUT is a shapefile, which cuts field names to 10 characters" in w]
    assert len(warned) == 1 and "(probability as probabilit, review_rank as review_ran, valid_fraction as valid_frac and 2 more)" in warned[0]
    assert "probabilit" in qs.read_ogr(tmp_path / "chunks.shp").field_names
    again = qs.run_algorithm("hiriseice:detect", {"INPUT": detect_scene.path, "MODEL": tiny_model.path, "CHUNK_SIZE": CHUNK,
                                                  "OUTPUT": str(tmp_path / "chunks.shp"), "SUMMARY": None})
    # a shapefile holds one table: no advice to add one beside the others
    assert f"OUTPUT: replacing the file {tmp_path / 'chunks.shp'}, with its layer(s) chunks (QGIS replaces a file named without a table)" in again["_feedback"].infos


@pytest.mark.parametrize("name, kind, why", [
    ("chunks.kml", "KML file", "holds Earth longitudes and latitudes only"), ("chunks.gpx", "GPX file", "holds Earth longitudes and latitudes only"),
    ("chunks.geojson", "GeoJSON file", "holds WGS 84 longitudes and latitudes only (RFC 7946)"), ("chunks.gml", "GML file", "cannot record a Mars CRS"),
    ("chunks.tab", "MapInfo table", "cannot record a Mars CRS"), ("chunks.gxt", "Geoconcept file", "cannot record a Mars CRS"),
    ("chunks.txt", "Geoconcept file (QGIS's format for .txt)", "cannot record a Mars CRS"),  # it had failed after the run, leaving chunks.txt.gxt
    ("chunks.dxf", "DXF drawing", "holds drawings without the layer's fields")])
def test_an_output_in_a_format_that_loses_its_place_on_mars_is_refused_before_anything_runs(qgis_app, tiny_model, detect_scene, tmp_path, name, kind, why):
    """QGIS wrote every chunk into a KML without coordinates, and said only 'Cannot create transform'; a GeoJSON was read back
    as Earth's WGS 84 (and then refused as labels by train), a GML with no CRS, a MapInfo table on Earth's datum."""
    said = qs.processing_error("hiriseice:detect", {"INPUT": detect_scene.path, "MODEL": tiny_model.path, "CHUNK_SIZE": CHUNK,
                                                    "OUTPUT": str(tmp_path / name)})
    assert f"OUTPUT is a {kind} ({tmp_path / name}), which {why}" in said and said.endswith("Give a .gpkg (or a .fgb or .shp); nothing was run or written."), said
    assert os.listdir(tmp_path) == []


def test_a_plain_sqlite_output_is_refused_and_a_table_named_in_one_keeps_the_mars_crs(qgis_app, tiny_model, detect_scene, tmp_path):
    """A plain .sqlite was written without its CRS, with exit 0 and no warning."""
    said = qs.processing_error("hiriseice:detect", {"INPUT": detect_scene.path, "MODEL": tiny_model.path, "CHUNK_SIZE": CHUNK,
                                                    "OUTPUT": str(tmp_path / "chunks.sqlite")})
    assert f"OUTPUT is a plain SQLite file ({tmp_path / 'chunks.sqlite'}), which QGIS writes without the layer's Mars CRS" in said, said
    assert os.listdir(tmp_path) == []
    named = f"ogr:dbname='{tmp_path / 'chunks.sqlite'}' table=\"chunks\" (geom)"
    results = qs.run_algorithm("hiriseice:detect", {"INPUT": detect_scene.path, "MODEL": tiny_model.path, "CHUNK_SIZE": CHUNK, "OUTPUT": named, "SUMMARY": None})
    from qgis.core import QgsCoordinateReferenceSystem, QgsVectorLayer

    layer = QgsVectorLayer(f"{tmp_path / 'chunks.sqlite'}|layername=chunks", "chunks", "ogr")
    assert layer.featureCount() == results["CHUNKS"] > 0
    assert layer.crs() == QgsCoordinateReferenceSystem.fromWkt(gdal.Open(detect_scene.path).GetProjection())


@pytest.mark.parametrize("chunks", ["ice.shp", "ice.fgb"])
def test_a_chunk_layer_and_probability_raster_that_would_share_a_style_file_are_refused(qgis_app, tiny_model, detect_scene, tmp_path, chunks):
    """OUTPUT=ice.shp and PROBABILITY_RASTER=ice.tif shared ice.qml: the chunk style, saved last, became the raster's, grey."""
    said = qs.processing_error("hiriseice:detect", {"INPUT": detect_scene.path, "MODEL": tiny_model.path, "CHUNK_SIZE": CHUNK,
                                                    "OUTPUT": str(tmp_path / chunks), "PROBABILITY_RASTER": str(tmp_path / "ice.tif")})
    assert f"OUTPUT ({tmp_path / chunks}) and PROBABILITY_RASTER ({tmp_path / 'ice.tif'}) would share the style file {tmp_path / 'ice.qml'}" in said, said
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("output, said", [
    ("{folder}/-lead.gpkg", "GDAL refuses '-lead', the file's name, as QGIS names the layer: a GeoPackage layer's name may not begin with 'gpkg' or any of"),
    ("{folder}/#1.gpkg", "GDAL refuses '#1', the file's name, as QGIS names the layer"),
    ("{folder}/gpkg_run.gpkg", "GDAL refuses 'gpkg_run', the file's name, as QGIS names the layer"),
    ("{folder}/gpkg-.ice.gpkg", "Rename the file (e.g. 'ice.gpkg')"),
    ("ogr:dbname='{folder}/ice.gpkg' table=\"-chunks\" (geom)", "GDAL refuses the table '-chunks'"),
    ("ogr:dbname='{folder}/O'Neil/ice.gpkg' table=\"chunks\" (geom)", "whose file QGIS reads as '{folder}/O', without a vector format's extension. "
                                                                       "An apostrophe inside dbname='...' must be written \\'"),
    ("ogr:dbname='{folder}/run0.5.gpkg' table=\"chunks\" (geom)", "QGIS takes the format of an ogr: address from all after the file name's first dot ('5.gpkg')"),
    ("{folder}/run%20one.gpkg", "OUTPUT is the GeoPackage {folder}/run%20one.gpkg, whose path holds '%20': QGIS reads that as an escaped character"),
    ("ogr:{folder}/chunks", "OUTPUT is the address 'ogr:{folder}/chunks', whose file '{folder}/chunks' has no vector format's extension: give it one"),
    ("{folder}/{long}.gpkg", "its name is 247 bytes long, and the files written beside it while it is made take up to 17 more, beyond this file system's 255 bytes"),
], ids=["leading-dash", "leading-hash", "gpkg-prefix", "renamed-acceptably", "table", "apostrophe", "second-dot", "percent-escape", "ogr-path-without-extension", "long-name"])
def test_an_output_gdal_would_refuse_only_after_the_run_is_refused_before_it(qgis_app, tiny_model, detect_scene, tmp_path, output, said):
    """Each scored every chunk, then failed with 'the layer could not be created' and advice to close the file in another
    program: a GeoPackage layer named after a file beginning with '-', '#' or 'gpkg', an ogr: address cut at an apostrophe,
    a name whose partial copy's SQLite journal exceeds 255 bytes, a second dot in an ogr: address's file name; and a '%20' in
    a GeoPackage's path was written but never styled (QGIS cannot open it)."""
    long = "л" * 120 + "ab"  # 242 bytes: the output fits, its hidden partial copy's journal does not
    given = output.format(folder=tmp_path, long=long)
    message = qs.processing_error("hiriseice:detect", {"INPUT": detect_scene.path, "MODEL": tiny_model.path, "CHUNK_SIZE": CHUNK, "OUTPUT": given})
    assert said.format(folder=tmp_path) in message and "nothing was run" in message, message
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("address", ["ogr:dbname='{folder}/O\\'Neil/ice.gpkg' table=\"chunks\" (geom)", "ogr:{folder}/O'Neil/ice.gpkg"],
                         ids=["apostrophe-escaped", "ogr-path"])
def test_ogr_addresses_qgis_writes_are_good_outputs(qgis_app, tiny_model, detect_scene, tmp_path, address):
    """An apostrophe escaped as the URI asks; and ogr:PATH, without dbname=, which QGIS writes as that file (it was
    refused as the current folder, with advice about apostrophes)."""
    folder = tmp_path / "O'Neil"
    folder.mkdir()
    results = qs.run_algorithm("hiriseice:detect", {"INPUT": detect_scene.path, "MODEL": tiny_model.path, "CHUNK_SIZE": CHUNK,
                                                    "OUTPUT": address.format(folder=tmp_path)})
    assert os.listdir(folder) == ["ice.gpkg"] and results["CHUNKS"] > 0


# --- scoring parameters reach the worker -----------------------------------------------------------


def detected(path, model, **parameters):
    """{(row, col): probability} of Detect's chunks with these parameters."""
    gpkg = pathlib.Path(path).with_name("_".join(["detected"] + [f"{key}{value}" for key, value in sorted(parameters.items())]).replace(".", "_") + ".gpkg")
    qs.run_algorithm("hiriseice:detect", dict({"INPUT": str(path), "MODEL": model, "CHUNK_SIZE": CHUNK, "OUTPUT": qs.gpkg_destination(gpkg, "chunks")},
                                              **parameters))
    return {(row["row"], row["col"]): row["probability"] for row in qs.read_ogr(gpkg, "chunks").rows}


def worker_detected(worker_python, path, model, *arguments):
    chunks = helpers.run_worker(worker_python, "detect", path, "--model", model, "--chunk-size", CHUNK, *arguments).check().result["chunks"]
    return {(chunk["row"], chunk["col"]): chunk["probability"] for chunk in chunks}


def test_min_valid_is_the_share_detect_keeps_chunks_at(qgis_app, tiny_model, tmp_path):
    """A MIN_VALID changed in the dialog reached no test: Detect ignoring it (scoring at 0.95 whatever was asked) passed."""
    path = helpers.write_geotiff(tmp_path / "holes.tif", helpers.no_data_layout(), "UInt16", helpers.default_geotransform(256, 192),
                                 helpers.mars_equirectangular_wkt(), nodata=0)
    strict, loose = detected(path, tiny_model.path), detected(path, tiny_model.path, MIN_VALID=0.5)
    assert set(loose) - set(strict) == {(1, 2)}  # no-data in the left half of its centre
    assert all(strict[key] == pytest.approx(loose[key], abs=1e-6) for key in strict)


def test_the_mirror_box_is_the_workers_tta(qgis_app, tiny_model, worker_python, detect_scene):
    """Unticking 'Mirror test-time augmentation' reached no test: Detect passing --tta whatever was ticked passed."""
    mirrored, plain = detected(detect_scene.path, tiny_model.path), detected(detect_scene.path, tiny_model.path, TTA=False)
    assert mirrored == pytest.approx(worker_detected(worker_python, detect_scene.path, tiny_model.path, "--tta"), abs=1e-6)
    assert plain == pytest.approx(worker_detected(worker_python, detect_scene.path, tiny_model.path, "--no-tta"), abs=1e-6)
    assert max(abs(mirrored[key] - plain[key]) for key in plain) > 1e-3


def test_band_is_the_band_detect_scores(qgis_app, tiny_model, worker_python, tmp_path):
    """BAND reached no test of Detect: scoring band 1 whatever was asked passed; a band the raster lacks is refused first."""
    raster = helpers.generate_raster(tmp_path, name="three_bands.tif", width=256, height=192, band_count=3, seed=5)
    first, third = detected(raster.path, tiny_model.path, BAND=1), detected(raster.path, tiny_model.path, BAND=3)
    assert third == pytest.approx(worker_detected(worker_python, raster.path, tiny_model.path, "--band", 3), abs=1e-6)
    assert max(abs(first[key] - third[key]) for key in first) > 1e-3
    said = qs.processing_error("hiriseice:detect", {"INPUT": raster.path, "MODEL": tiny_model.path, "BAND": 4, "OUTPUT": str(tmp_path / "never.gpkg")})
    assert "Band 4 does not exist in 'three_bands', which has 3 band(s). Choose 1..3, or 0 for automatic." in said, said


def test_a_raster_whose_file_name_holds_a_pipe_is_that_file(qgis_app, tiny_model, detect_scene, tmp_path):
    """'scene|b.tif' had been cut at its "|" as a vector source's '|layername=' is, and refused as 'scene' not found."""
    import shutil

    raster = tmp_path / "pipe|scene.tif"
    shutil.copyfile(detect_scene.path, raster)
    results = qs.run_algorithm("hiriseice:detect", {"INPUT": str(raster), "MODEL": tiny_model.path, "CHUNK_SIZE": CHUNK, "OUTPUT": str(tmp_path / "c.gpkg")})
    assert results["CHUNKS"] > 0 and {row["image_id"] for row in qs.read_ogr(tmp_path / "c.gpkg", "c").rows} == {"pipe|scene"}

"""hiriseice:train through processing.run: labels from QGIS layers (reprojected by QGIS), a tiny
network trained by the real worker, the model file, history table and report read back.

The scene is the session's training scene (tests/conftest.py): 384 x 384 px, 6 x 6 chunks of
64 px, the checkerboard's chunks hold a bright blob. Its labels are made the way a geologist
makes them: detect, then mark the chunks with the plugin's labelling tool.
"""

import json
import math
import os
import re
import shutil
from pathlib import Path

import pytest
from osgeo import osr

import helpers
import qgis_support as qs
from model import modelfile

CHUNK = 64
TINY = {"CHUNK_SIZE": CHUNK, "INPUT_SIZE": 32, "WIDTHS": "4,8,8,16", "BATCH_SIZE": 8, "VALIDATION_FRACTION": 0.25,
        "LEARNING_RATE": 0.003, "PATIENCE": 5, "AUGMENT": 0, "SEED": 7}  # AUGMENT 0: none
UNCLEAR_CHUNK = (2, 2)  # marked -1: left out of training
BLOCKS = {f"train_scene/b{r}_{c}" for r in range(2) for c in range(2)}  # 3 x 3-chunk blocks of the 6 x 6 grid


def mars_geographic_wkt(raster_wkt: str) -> str:
    """Longitude/latitude on the raster's own Mars sphere: the planetary analogue of EPSG:4326."""
    return osr.SpatialReference(wkt=raster_wkt).CloneGeogCS().ExportToWkt()


def train(tmp_path, rasters, labels, epochs=2, **parameters):
    values = dict(TINY, RASTERS=rasters, LABELS=labels, EPOCHS=epochs, OUTPUT_MODEL=str(tmp_path / "model.hiriseice"),
                  HISTORY="TEMPORARY_OUTPUT", REPORT=str(tmp_path / "training.html"))
    values.update(parameters)
    return qs.run_algorithm("hiriseice:train", values)


def job_of(results) -> dict:
    """The job file the algorithm handed to the worker (its path is in the log)."""
    paths = [m.group(1) for text in results["_feedback"].infos for m in [re.match(r"Training job: (.+)$", text)] if m]
    assert len(paths) == 1, results["_feedback"].infos
    with open(paths[0], encoding="utf-8") as handle:
        return json.load(handle)


def memory_polygons(name, crs_wkt, geometries, fields=(), kind="Polygon"):
    """A real memory layer of polygons (kind: "PolygonZ" for 3D ones); fields: [(name, QVariant type)], geometries: [(QgsGeometry, attributes)]."""
    from qgis.core import QgsCoordinateReferenceSystem, QgsFeature, QgsField, QgsVectorLayer

    layer = QgsVectorLayer(kind, name, "memory")
    layer.setCrs(QgsCoordinateReferenceSystem.fromWkt(crs_wkt))
    provider = layer.dataProvider()
    provider.addAttributes([QgsField(n, t) for n, t in fields])
    layer.updateFields()
    features = []
    for geometry, attributes in geometries:
        feature = QgsFeature(layer.fields())
        feature.setGeometry(geometry)
        feature.setAttributes(list(attributes))
        features.append(feature)
    assert provider.addFeatures(features)
    layer.updateExtents()
    return layer


def chunk_geometry(raster, row, col, dx=0.0):
    from qgis.core import QgsGeometry

    wkt = helpers.window_wkt(raster.geotransform, col * CHUNK, row * CHUNK, CHUNK, CHUNK)
    geometry = QgsGeometry.fromWkt(wkt)
    geometry.translate(dx, 0.0)
    return geometry


# --- labels the geologist's way -------------------------------------------------------------------


@pytest.fixture(scope="module")
def detected(qgis_app, tiny_model, training_data, tmp_path_factory):
    """Detect on the training scene: the chunk layer with an empty label field."""
    folder = tmp_path_factory.mktemp("train_detect")
    gpkg = folder / "detected.gpkg"
    qs.run_algorithm("hiriseice:detect", {"INPUT": training_data.raster.path, "MODEL": tiny_model.path, "CHUNK_SIZE": CHUNK,
                                          "OUTPUT": str(gpkg), "SUMMARY": None, "REPORT": str(folder / "detect.html")})
    return gpkg


@pytest.fixture(scope="module")
def labelled_geographic(qgis_app, detected, training_data, tmp_path_factory):
    """The detect output labelled with plugin.labelling.mark_selected, then reprojected to Mars longitude/latitude."""
    import processing
    from qgis.core import QgsCoordinateReferenceSystem, QgsVectorLayer

    labelling = qs.plugin_module("plugin.labelling")
    folder = tmp_path_factory.mktemp("labels")
    labelled = folder / "labelled.gpkg"
    shutil.copyfile(detected, labelled)  # the unlabelled original serves test_labels_all_null
    layer = QgsVectorLayer(str(labelled), "labelled", "ogr")
    assert layer.isValid()
    by_position = {(f["row"], f["col"]): f.id() for f in layer.getFeatures()}
    assert len(by_position) == 36
    icy = [fid for (r, c), fid in by_position.items() if helpers.checkerboard(r, c) and (r, c) != UNCLEAR_CHUNK]
    not_icy = [fid for (r, c), fid in by_position.items() if not helpers.checkerboard(r, c) and (r, c) != UNCLEAR_CHUNK]
    for value, ids in ((labelling.ICY, icy), (labelling.NOT_ICY, not_icy), (labelling.UNCLEAR, [by_position[UNCLEAR_CHUNK]])):
        layer.selectByIds(ids)
        assert labelling.mark_selected(layer, value) == len(ids)
    assert layer.commitChanges(), layer.commitErrors()

    geographic = QgsCoordinateReferenceSystem.fromWkt(mars_geographic_wkt(training_data.raster.crs_wkt))
    assert geographic.isValid() and "+proj=longlat" in geographic.toProj()  # (QGIS 3.22's isGeographic() knows Earth only)
    out = folder / "labelled_lonlat.gpkg"
    result = processing.run("native:reprojectlayer", {"INPUT": layer, "TARGET_CRS": geographic, "OUTPUT": str(out)})
    reprojected = QgsVectorLayer(result["OUTPUT"], "labels in lon/lat", "ogr")
    assert reprojected.isValid() and "+proj=longlat" in reprojected.crs().toProj()
    extent = reprojected.extent()
    assert -180 <= extent.xMinimum() < extent.xMaximum() <= 180 and -90 <= extent.yMinimum() < extent.yMaximum() <= 90
    return reprojected


@pytest.fixture(scope="module")
def chunk_trained(qgis_app, labelled_geographic, training_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("train_chunks")
    # OUTPUT_MODEL without its extension, as a name typed in qgis_process: written as model.hiriseice; the raster given
    # twice, by its path and a link to it (read once), and its band named, as detect's BAND
    link = folder / "train_scene_link.tif"
    link.symlink_to(training_data.raster.path)
    results = train(folder, [training_data.raster.path, str(link)], [labelled_geographic], HISTORY=str(folder / "history.gpkg"), OUTPUT_MODEL=str(folder / "model"), BAND=1)
    return dict(results=results, folder=folder, metadata=modelfile.read_metadata(results["OUTPUT_MODEL"]), job=job_of(results))


def test_chunk_labels_from_a_reprojected_detect_output(chunk_trained, training_data):
    meta = chunk_trained["metadata"]
    assert chunk_trained["results"]["OUTPUT_MODEL"] == str(chunk_trained["folder"] / "model.hiriseice")
    assert not (chunk_trained["folder"] / "model").exists()
    assert any("OUTPUT_MODEL: written as" in text and "model.hiriseice" in text for text in chunk_trained["results"]["_feedback"].infos)
    assert (meta["input_size"], meta["chunk_size"], meta["architecture"]["widths"]) == (32, CHUNK, [4, 8, 8, 16])
    training = meta["training"]
    assert training["data"]["label_mode"] == "chunks"
    assert training["data"]["images"] == [{"image_id": "train_scene", "chunks": 35, "icy": 17, "left_out": "1 empty or marked unclear"}]  # UNCLEAR_CHUNK
    assert (training["chunks"], training["icy_chunks"]) == (35, 17)  # 36 chunks, the unclear one left out
    assert (training["epochs_run"], training["total_epochs"], training["seed"]) == (2, 2, 7)

    # The labels reached the worker in the raster's CRS, on the chunks they were drawn on.
    job = chunk_trained["job"]
    assert job["label_mode"] == "chunks" and len(job["rasters"]) == 1
    assert ("'train_scene_link' is the file of 'train_scene', given before in RASTERS; it is read once, with the labels drawn on either name."
            in chunk_trained["results"]["_feedback"].warnings)
    entry = job["rasters"][0]
    assert entry["band"] == 1
    assert entry["path"] == training_data.raster.path and len(entry["labels"]) == 36
    expected = {}
    for r in range(6):
        for c in range(6):
            label = -1 if (r, c) == UNCLEAR_CHUNK else int(helpers.checkerboard(r, c))
            expected[(c * CHUNK, r * CHUNK)] = (label, helpers.window_ring_gdal(training_data.raster.geotransform, c * CHUNK, r * CHUNK, CHUNK, CHUNK))
    gt = training_data.raster.geotransform
    for item in entry["labels"]:
        ring = qs.outer_ring(item["wkt"])
        xs, ys = [p[0] for p in ring], [p[1] for p in ring]
        corner = (round((min(xs) - gt[0]) / gt[1]), round((max(ys) - gt[3]) / gt[5]))
        label, expected_ring = expected.pop(corner)
        assert item["label"] == label
        qs.assert_ring_equal(sorted(ring[:-1]), sorted(expected_ring[:-1]), 1e-3, f"label polygon at {corner}")  # metres, after lon/lat and back
    assert expected == {}


def test_labels_drawn_on_a_files_second_name_are_read_on_it(qgis_app, labelled_geographic, training_data, tmp_path):
    """The link given first and the raster's own name second: the second name was dropped before its labels (whose image_id
    is that name) were read, and the run stopped with "no feature of the label layers lies over the rasters"."""
    link = tmp_path / "a_link.tif"
    link.symlink_to(training_data.raster.path)
    results = train(tmp_path, [str(link), training_data.raster.path], [labelled_geographic], epochs=1)
    job = job_of(results)
    assert len(job["rasters"]) == 1 and len(job["rasters"][0]["labels"]) == 36
    assert "'train_scene' is the file of 'a_link', given before in RASTERS; it is read once, with the labels drawn on either name." in results["_feedback"].warnings


def test_labels_are_read_on_a_raster_whose_name_ends_in_a_space(qgis_app, labelled_geographic, training_data, tmp_path):
    """'train_scene .tif': its ID 'train_scene ' was compared with the label's stripped image_id 'train_scene', so every label
    over it counted as drawn on another image and the run stopped with no label over the raster."""
    spaced = tmp_path / "train_scene .tif"
    shutil.copyfile(training_data.raster.path, spaced)
    results = train(tmp_path, [str(spaced)], [labelled_geographic], epochs=1)
    job = job_of(results)
    assert [entry["path"] for entry in job["rasters"]] == [str(spaced)] and len(job["rasters"][0]["labels"]) == 36


def test_labels_east_of_180_in_a_layer_that_lost_its_longitude_wrap_are_read(qgis_app, tmp_path):
    """A survey's chunk layer (0-360 east, +lon_wrap=180) saved as a shapefile keeps 182 E but loses the wrap: the layer was
    asked only for features near 178 W, and every label east of 180 was left out ("No label feature lies over ...")."""
    from qgis.core import QgsFeature, QgsGeometry, QgsProcessingContext, QgsRasterLayer, QgsVectorLayer

    centre = 182.05
    crs = helpers.mars_equirectangular_wkt(standard_parallel=-40.0, central_meridian=centre)
    raster = helpers.generate_raster(tmp_path, name="east.tif", width=128, height=128, crs=crs, geotransform=helpers.default_geotransform(128, 128, standard_parallel=-40.0))
    from qgis.core import QgsCoordinateReferenceSystem

    from model.products import MARS_GEOGCS_WKT

    layer = QgsVectorLayer("Polygon?field=label:integer", "saved as a shapefile", "memory")
    layer.setCrs(QgsCoordinateReferenceSystem.fromWkt(MARS_GEOGCS_WKT.split(",REMARK[")[0] + "]"))  # its .prj: the survey's CRS, the wrap lost
    degrees = 16 / (helpers.MARS_RADIUS_M * math.pi / 180)  # 16 m
    feature = QgsFeature(layer.fields())
    feature.setGeometry(QgsGeometry.fromWkt(f"POLYGON(({centre - degrees} -40.0002, {centre + degrees} -40.0002, {centre + degrees} -39.9998, "
                                            f"{centre - degrees} -39.9998, {centre - degrees} -40.0002))"))
    feature["label"] = 1
    assert layer.dataProvider().addFeatures([feature]) and layer.extent().xMinimum() > 180
    train = qs.plugin_module("processing_provider.train_algorithm").TrainAlgorithm()
    found, failures, _elsewhere = train._geometries_over(layer, QgsRasterLayer(raster.path, "east"), QgsProcessingContext(), qs.recording_feedback(), 0)[:3]
    assert len(found) == 1 and failures == 0, (found, failures)


def test_split_keeps_every_block_on_one_side(chunk_trained):
    split = chunk_trained["metadata"]["training"]["split"]
    train_groups, validation_groups = set(split["train_groups"]), set(split["validation_groups"])
    assert train_groups and validation_groups
    assert not train_groups & validation_groups
    assert train_groups | validation_groups == BLOCKS
    assert split["seen_groups"] == sorted(train_groups)  # what a later round continuing this model keeps out of its validation


def test_history_table_and_report(chunk_trained):
    results = chunk_trained["results"]
    table = qs.read_ogr(chunk_trained["folder"] / "history.gpkg")
    assert table.field_names == qs.HISTORY_FIELD_NAMES
    assert table.field_types["epoch"] == "Integer" and all(table.field_types[n] == "Real" for n in qs.HISTORY_FIELD_NAMES[1:])
    assert [r["epoch"] for r in table.rows] == [1, 2]
    for row in table.rows:
        assert row["_wkt"] is None
        assert all(isinstance(row[n], float) and math.isfinite(row[n]) for n in ("loss", "accuracy", "val_loss", "val_accuracy", "val_auc"))
        assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["val_accuracy"] <= 1.0 and row["loss"] > 0
    assert results["REPORT"] == str(chunk_trained["folder"] / "training.html")
    text = open(results["REPORT"], encoding="utf-8").read()
    assert text.startswith("<!DOCTYPE html>") and "data:image/png;base64," in text
    # The model's own metrics agree with the history's best epoch.
    metrics = chunk_trained["metadata"]["metrics"]
    best = min(table.rows, key=lambda r: r["val_loss"])
    assert metrics["best_epoch"] == best["epoch"] and metrics["best_val_loss"] == pytest.approx(best["val_loss"], rel=1e-5)
    # said in words, rounded like the lines around it (the log had ended with 'ece_calibrated: 0.0013198939443662683')
    said = [text for text in results["_feedback"].infos if text.startswith("Best epoch ")]
    assert said == [f"Best epoch {best['epoch']} (validation loss {metrics['best_val_loss']:.3f}); expected calibration error "
                    f"{metrics['ece_uncalibrated']:.3f} before calibration, {metrics['ece_calibrated']:.3f} after"], results["_feedback"].infos
    assert not [text for text in results["_feedback"].infos if text.startswith(("best_val_loss", "ece_"))]
    # trained from scratch, the log promises no comparison with a base model
    assert any(text.endswith("the metrics, the calibration and the report below judge what detect will give") for text in results["_feedback"].text.splitlines())


def test_retraining_honours_chunk_size_and_numbers_its_own_epochs(chunk_trained, labelled_geographic, training_data, tmp_path):
    base = chunk_trained["metadata"]
    results = train(tmp_path, [training_data.raster.path], [labelled_geographic], epochs=1, BASE_MODEL=chunk_trained["results"]["OUTPUT_MODEL"],
                    CHUNK_SIZE=128, INPUT_SIZE=64, WIDTHS="8,8,8", LEARNING_RATE=0, UNLABELLED=2, ANCHOR=0.005, NETWORK=1)  # CHUNK_SIZE honoured, INPUT_SIZE, WIDTHS and NETWORK the base's, the fine-tuning rate
    meta = modelfile.read_metadata(results["OUTPUT_MODEL"])
    assert [f["epoch"] for f in results["HISTORY"].getFeatures()] == [1]
    assert (meta["training"]["epochs_run"], meta["training"]["base_epochs"], meta["training"]["total_epochs"]) == (1, 2, 3)
    assert meta["training"]["learning_rate"] == 1e-4
    assert meta["base_model"] == {"name": base["name"], "version": base["version"], "chunk_size": CHUNK}
    assert (meta["input_size"], meta["chunk_size"], meta["architecture"]) == (base["input_size"], 128, base["architecture"])
    log = results["_feedback"].text
    assert "Continuing from" in log
    assert "NETWORK is for training from scratch: the base model's own network (small_xception) is kept." in log
    assert "WIDTHS is for training from scratch: the base model's own widths ([4, 8, 8, 16]) are kept." in log  # was silent
    assert "INPUT_SIZE is for training from scratch: the base model's own input size (32 px) is kept." in log
    job = job_of(results)
    assert job["unlabelled"] == 2.0  # every chunk is labelled: none drawn
    assert job["anchor"] == 0.005 and meta["training"]["anchor"] == 0.005
    assert "each step pulls the weights 0.5 % of the way back to the base model's" in log
    assert meta["training"]["unlabelled_chunks"] == 0 and "no unlabelled chunk of it to draw (every chunk with image data is labelled)" in log
    assert ("labels are 64-px chunks but CHUNK_SIZE is 128: each is read as detect reads a 64-px edge of a 128-px chunk (the rest of the input is no-data); "
            "set CHUNK_SIZE to 64 (or 0) to train at the labels' size; the model was trained at 64 px; it is tuned at 128 px and records chunk_size 128") in log
    assert re.search(r"base model: AUC \d\.\d{3} on these \d+ validation chunks .*; new model: AUC \d\.\d{3}", log)
    with open(results["REPORT"], encoding="utf-8") as handle:
        report = handle.read()
    assert "<h2>Base model against new model</h2>" in report
    assert "<th>pull back toward the base model per step (ANCHOR)</th><td>0.005</td>" in report


def test_a_network_from_imagenet_weights(labelled_geographic, training_data, tmp_path):
    """NETWORK 1: the EfficientNet-Lite0 trunk, started from its ImageNet weights, of the input size given."""
    results = train(tmp_path, [training_data.raster.path], [labelled_geographic], epochs=1, NETWORK=1, INPUT_SIZE=64, LEARNING_RATE=1e-4)
    meta = modelfile.read_metadata(results["OUTPUT_MODEL"])
    assert job_of(results)["trunk"] == "efficientnet_lite0"
    assert meta["architecture"] == {"name": "efficientnet_lite0", "input_size": 64}
    assert "the EfficientNet-Lite0 trunk starts from its ImageNet weights" in results["_feedback"].text


@pytest.fixture(scope="module")
def two_rasters(qgis_app, training_data, tmp_path_factory):
    """A second scene of other ground, 20 km east (other terrain, the same checkerboard of blobs), one label layer for both.
    (Over the same ground the two would be split as repeat images of one site, in blocks of that ground.)"""
    from qgis.PyQt.QtCore import QVariant

    folder = tmp_path_factory.mktemp("two_rasters")
    raster = training_data.raster
    east = (raster.geotransform[0] + 20_000.0,) + tuple(raster.geotransform[1:])
    second = helpers.generate_raster(folder, name="second_scene.tif", width=384, height=384, data_type="UInt16", nodata=0, seed=23, geotransform=east,
                                     icy_chunk_size=helpers.TINY_CHUNK_SIZE, icy_pattern=helpers.checkerboard)
    layer = memory_polygons("chunk labels", raster.crs_wkt, [(chunk_geometry(scene, r, c), [int(helpers.checkerboard(r, c))])
                                                              for scene in (raster, second) for r in range(6) for c in range(6)], [("label", QVariant.Int)])
    return raster, second, layer


def test_several_rasters_as_one_string_and_calibration_only_where_it_helps(two_rasters, tmp_path):
    """RASTERS=a.tif;b.tif as qgis_process hands it over (one string). Split by image, the validation image holds 18 chunks of
    each class: enough to fit Platt scaling, kept only if it lowers the validation ECE. Without REPORT (as qgis_process
    runs it when none is given) the report with the guard's numbers is still written, to a temporary file."""
    first, second, layer = two_rasters
    assert not os.path.exists(second.path + ".aux.xml")
    results = train(tmp_path, f"{first.path};{second.path}", [layer], VALIDATION_FRACTION=0.5, REPORT=None)
    assert not os.path.exists(second.path + ".aux.xml")  # QGIS's statistics of its layers went there beside the user's raster
    # From random weights on 72 labels: said (the review dock's Retrain had done it silently where it could not name the base)
    assert any(w.startswith("BASE_MODEL is empty, so the network starts from random weights and learns from your 72 label feature(s)") for w in results["_feedback"].warnings)
    job = job_of(results)
    assert [entry["path"] for entry in job["rasters"]] == [first.path, second.path] and all(len(e["labels"]) == 36 for e in job["rasters"])
    meta = modelfile.read_metadata(results["OUTPUT_MODEL"])
    assert meta["training"]["data"]["images"] == [{"image_id": "train_scene", "chunks": 36, "icy": 18}, {"image_id": "second_scene", "chunks": 36, "icy": 18}]
    validation = meta["training"]["split"]["validation_groups"]
    assert len(validation) == 1 and f"held out for validation: {validation[0]}" in results["_feedback"].text
    metrics = meta["metrics"]
    assert (metrics["validation_chunks"], metrics["validation_icy"]) == (36, 18)
    chosen = metrics["calibration"]
    assert f"calibration: {chosen['choice']} ({chosen['reason']})" in results["_feedback"].text
    if chosen["choice"] == "fitted":
        assert meta["calibration"]["method"] == "platt" and metrics["ece_calibrated"] < metrics["ece_uncalibrated"]
    else:
        assert chosen["choice"] == "none" and "would not lower" in chosen["reason"] and meta["calibration"] is None
        assert metrics["ece_calibrated"] == metrics["ece_uncalibrated"]
    assert not results["REPORT"].startswith(str(tmp_path))
    assert f"<th>held out for validation</th><td>{validation[0]}</td>" in Path(results["REPORT"]).read_text(encoding="utf-8")


def test_the_same_rasters_as_a_list(two_rasters, tmp_path):
    """A repeated RASTERS= (qgis_process) or a Python list: the same two rasters reach the worker."""
    from qgis.core import QgsApplication

    first, second, layer = two_rasters
    algorithm = QgsApplication.processingRegistry().createAlgorithmById("hiriseice:train")
    context = qs_context()
    for value in ([first.path, second.path], f"{first.path};{second.path}"):
        ok, message = algorithm.checkParameterValues(dict(TINY, RASTERS=value, LABELS=[layer], OUTPUT_MODEL=str(tmp_path / "m.hiriseice"), REPORT=str(tmp_path / "r.html")), context)
        assert ok, message
    assert not any(os.path.exists(raster.path + ".aux.xml") for raster in (first, second))


def qs_context():
    from qgis.core import QgsProcessingContext, QgsProject

    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    return context


@pytest.mark.parametrize("kind", ["Polygon", "PolygonZ"])
def test_outlines_with_exclusions(qgis_app, training_data, tmp_path, kind):
    """Ice-patch outlines (no label field): chunks holding one are icy; chunks touching an exclusion are left out.
    Drawn in 3D (a layer digitised with Z, a shapefile saved with -dim XYZ), every outline and exclusion had been
    dropped unread and each chunk trained as not icy."""
    from qgis.core import QgsGeometry, QgsPointXY

    raster = training_data.raster
    gt = raster.geotransform
    outlines = []
    for x_off, y_off, size in raster.icy_windows:
        cx, cy = gdal_point(gt, x_off + size / 2, y_off + size / 2)
        outlines.append((QgsGeometry.fromPointXY(QgsPointXY(cx, cy)).buffer(6 * gt[1], 12), []))
    assert len(outlines) == 18
    if kind == "PolygonZ":
        outlines = [(QgsGeometry.fromWkt(g.asWkt().replace("Polygon ((", "PolygonZ ((").replace(",", " 100,").replace("))", " 100))")), a) for g, a in outlines]
        assert all(g.constGet().is3D() for g, _ in outlines)
    outline_layer = memory_polygons("ice patches", raster.crs_wkt, outlines, kind=kind)
    excluded = [(5, 5), (2, 3)]  # one icy, one not
    squares = []
    for row, col in excluded:
        x0, y0 = gdal_point(gt, col * CHUNK + 20, row * CHUNK + 20)
        x1, y1 = gdal_point(gt, col * CHUNK + 40, row * CHUNK + 40)
        z = " 5" if kind == "PolygonZ" else ""
        squares.append((QgsGeometry.fromWkt(f"POLYGON{' Z' if z else ''} (({x0} {y0}{z}, {x1} {y0}{z}, {x1} {y1}{z}, {x0} {y1}{z}, {x0} {y0}{z}))"), []))
    exclusions = memory_polygons("exclusions", raster.crs_wkt, squares, kind=kind)
    results = train(tmp_path, [raster.path], [outline_layer], LABEL_MODE=1, EXCLUDE=[exclusions])
    meta = modelfile.read_metadata(results["OUTPUT_MODEL"])
    assert meta["training"]["data"]["label_mode"] == "outlines"
    assert (meta["training"]["chunks"], meta["training"]["icy_chunks"]) == (34, 17)
    assert "each of its outlines counts as an ice patch" in results["_feedback"].text
    assert "'train_scene': 18 label feature(s) over it (18 without a value, so ice as drawn), 2 exclusion polygon(s)" in results["_feedback"].text
    job = job_of(results)
    assert len(job["rasters"][0]["exclude"]) == 2 and len(job["rasters"][0]["labels"]) == 18
    assert os.path.isfile(results["REPORT"])


def gdal_point(gt, x, y):
    return gt[0] + x * gt[1] + y * gt[2], gt[3] + x * gt[4] + y * gt[5]


# --- bad inputs ----------------------------------------------------------------------------------


def check_failed(tmp_path, message_parts, **parameters):
    values = dict(TINY, EPOCHS=1, OUTPUT_MODEL=str(tmp_path / "bad.hiriseice"), HISTORY="TEMPORARY_OUTPUT", REPORT=str(tmp_path / "bad.html"))
    values.update(parameters)
    message = qs.processing_error("hiriseice:train", values)
    for part in message_parts:
        assert part in message, message
    assert not (tmp_path / "bad.hiriseice").exists() and not (tmp_path / "bad.html").exists()
    assert qs.files_named_partial(tmp_path) == []
    return message


def test_labels_all_null(qgis_app, detected, training_data, tmp_path):
    from qgis.core import QgsVectorLayer

    unlabelled = QgsVectorLayer(str(detected), "unlabelled", "ogr")
    check_failed(tmp_path, ["has an empty 'label'", "Fill it with 1 (icy) or 0 (not icy)"], RASTERS=[training_data.raster.path], LABELS=[unlabelled])


def test_single_class(qgis_app, training_data, tmp_path):
    from qgis.PyQt.QtCore import QVariant

    raster = training_data.raster
    layer = memory_polygons("all icy", raster.crs_wkt, [(chunk_geometry(raster, r, c), [1]) for r in range(6) for c in range(6)], [("label", QVariant.Int)])
    message = check_failed(tmp_path, ["All 36 labelled chunks are icy", "both icy and not icy", "Label some chunks of the other class"], RASTERS=[raster.path], LABELS=[layer])
    # the engine's worded error says its fix: no bug report asked for, no copy of the labels left in the temporary folder
    assert "kept as" not in message and "bug report" not in message, message


def test_a_crashed_training_keeps_its_job_for_a_bug_report(qgis_app, training_data, worker_python, tmp_path, monkeypatch):
    """The job a worker died on outlives QGIS's temporary folder (qgis_process deletes it as it exits), to run again or report.
    The worker is killed as the system's out-of-memory killer would, a few seconds into the run."""
    killed = tmp_path / "killed_worker"
    killed.write_text(f"#!/bin/sh\nexec timeout -s KILL 3 {worker_python} \"$@\"\n", encoding="utf-8")
    killed.chmod(0o755)
    monkeypatch.setenv("HIRISEICE_WORKER_PYTHON", str(killed))
    from qgis.PyQt.QtCore import QVariant

    raster = training_data.raster
    layer = memory_polygons("checkerboard", raster.crs_wkt, [(chunk_geometry(raster, r, c), [int(helpers.checkerboard(r, c))]) for r in range(6) for c in range(6)],
                            [("label", QVariant.Int)])
    message = check_failed(tmp_path, [], RASTERS=[raster.path], LABELS=[layer])
    kept = re.search(r"The training job is kept as (\S+\.json): attach it to a bug report", message)
    assert kept, message
    with open(kept.group(1), encoding="utf-8") as handle:
        assert json.load(handle)["rasters"][0]["labels"]
    os.remove(kept.group(1))


def test_two_geologists_layers_that_disagree_on_chunks_name_them_and_leave_them_out(qgis_app, training_data, tmp_path):
    """Anna labels every chunk; Bela the first row: one chunk the other way, one unclear (it had been trained on as Anna's icy or
    not icy without a word), one alike (kept once). The two disputed chunks are named with each layer's feature and label."""
    from qgis.PyQt.QtCore import QVariant

    raster = training_data.raster
    truth = {(r, c): (r + c) % 2 for r in range(6) for c in range(6)}
    anna = memory_polygons("anna", raster.crs_wkt, [(chunk_geometry(raster, r, c), [truth[r, c]]) for r, c in truth], [("label", QVariant.Int)])
    bela = memory_polygons("bela", raster.crs_wkt, [(chunk_geometry(raster, 0, 0), [1 - truth[0, 0]]), (chunk_geometry(raster, 0, 1), [-1]),
                                                    (chunk_geometry(raster, 0, 2), [truth[0, 2]])], [("label", QVariant.Int)])
    results = train(tmp_path, [raster.path], [anna, bela], epochs=1)
    name = {0: "not icy", 1: "icy"}
    disputed = [w for w in results["_feedback"].warnings if "are labelled differently by two label polygons" in w]
    assert len(disputed) == 1 and "2 chunk(s)" in disputed[0], results["_feedback"].warnings
    assert f"the chunk at pixel x 0, y 0 (feature 1 of 'anna' {name[truth[0, 0]]}, feature 1 of 'bela' {name[1 - truth[0, 0]]})" in disputed[0], disputed[0]
    assert f"the chunk at pixel x {CHUNK}, y 0 (feature 2 of 'anna' {name[truth[0, 1]]}, feature 2 of 'bela' unclear)" in disputed[0], disputed[0]
    assert "39 label polygons; left out: 1 repeating a chunk labelled alike, 4 on 2 chunk(s) whose labels disagree" in results["_feedback"].text
    meta = modelfile.read_metadata(results["OUTPUT_MODEL"])
    assert sum(image["chunks"] for image in meta["training"]["data"]["images"]) == 34
    # the report keeps what the log said of them: the log is gone with the Processing dialog
    with open(results["REPORT"], encoding="utf-8") as handle:
        report = handle.read()
    assert "Labels left out: train_scene: 1 repeating a chunk labelled alike, 4 on 2 chunk(s) whose labels disagree (icy, not icy or unclear)." in report


def test_a_failed_job_is_kept_for_its_user_only(qgis_app, tmp_path, monkeypatch):
    """On a shared machine a folder of the kept jobs' name may be another user's (made first, to collect them): the job, which
    names this user's files, is not copied there."""
    import getpass
    import tempfile

    kept_for = qs.plugin_module("processing_provider.train_algorithm")._kept_for_a_bug_report
    job = tmp_path / "hiriseice_train_abc.json"
    job.write_text("{}", encoding="utf-8")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "shared_tmp"))
    (tmp_path / "shared_tmp").mkdir()
    said = kept_for(str(job))
    folder = tmp_path / "shared_tmp" / f"hiriseice-failed-jobs-{getpass.getuser()}"
    assert str(folder / job.name) in said and (folder / job.name).read_text(encoding="utf-8") == "{}"
    (folder / job.name).unlink()
    if os.geteuid() != 0:
        pytest.skip("making the folder another user's needs root")
    os.chown(folder, 65534, 65534)  # as another user had made it
    assert kept_for(str(job)) == "" and not (folder / job.name).exists()


def test_labels_outside_the_raster(qgis_app, training_data, tmp_path):
    from qgis.PyQt.QtCore import QVariant

    raster = training_data.raster
    far = [(chunk_geometry(raster, r, c, dx=50_000.0), [int(helpers.checkerboard(r, c))]) for r in range(6) for c in range(6)]
    layer = memory_polygons("elsewhere", raster.crs_wkt, far, [("label", QVariant.Int)])
    check_failed(tmp_path, ["No feature of the label layers lies over the rasters", "CRS"], RASTERS=[raster.path], LABELS=[layer])


def test_raster_smaller_than_a_chunk(qgis_app, make_raster, tmp_path):
    from qgis.core import QgsGeometry
    from qgis.PyQt.QtCore import QVariant

    small = make_raster(name="small.tif", width=48, height=40)
    halves = [(QgsGeometry.fromWkt(helpers.window_wkt(small.geotransform, x, 0, 24, 40)), [label]) for x, label in ((0, 1), (24, 0))]
    layer = memory_polygons("halves", small.crs_wkt, halves, [("label", QVariant.Int)])
    check_failed(tmp_path, ["48 x 40 px, smaller than one 64-px chunk", "smaller CHUNK_SIZE"], RASTERS=[small.path], LABELS=[layer])


def test_label_field_missing(qgis_app, labelled_geographic, training_data, tmp_path):
    check_failed(tmp_path, ["has no field 'ice'", "Set LABEL_FIELD"], RASTERS=[training_data.raster.path], LABELS=[labelled_geographic], LABEL_FIELD="ice")


def test_an_unwritable_model_folder_fails_before_anything_is_read(qgis_app, training_data, tmp_path):
    """Found before the labels are read and the worker starts, and said once."""
    from qgis.core import QgsProcessingException

    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    feedback = qs.recording_feedback()
    values = dict(TINY, RASTERS=[training_data.raster.path], LABELS=[], EPOCHS=1, OUTPUT_MODEL=str(a_file / "m.hiriseice"), HISTORY="TEMPORARY_OUTPUT",
                  REPORT=str(tmp_path / "r.html"))
    with pytest.raises(QgsProcessingException) as caught:
        qs.run_algorithm("hiriseice:train", values, feedback=feedback)
    message = str(caught.value)
    assert message.splitlines()[-1] == (f"OUTPUT_MODEL cannot be written to {a_file / 'm.hiriseice'}: {a_file} is a file, not a folder. "
                       "Choose another destination; nothing was run or written.")
    assert feedback.text.count("cannot be written") == 1 and not feedback.commands  # processing.run's report of the refusal; no worker started


def test_labels_on_another_mars_sphere_are_left_out_of_that_image_with_one_line(qgis_app, training_data, labelled_geographic, tmp_path):
    """A polar product is drawn on Mars's polar radius; PROJ finds no transformation to it from another sphere's
    CRS, and QGIS printed "Cannot create transform" and left the coordinates as they were."""
    polar_wkt, polar_gt = helpers.south_polar_stereographic(30.0, width=384, height=384, radius=3376200.0)
    polar = helpers.write_geotiff(tmp_path / "polar.tif", training_data.raster.bands[0], "UInt16", polar_gt, polar_wkt, nodata=0)
    another = helpers.write_geotiff(tmp_path / "polar2.tif", training_data.raster.bands[0], "UInt16", polar_gt, polar_wkt, nodata=0)
    results = train(tmp_path, [training_data.raster.path, polar, another], [labelled_geographic], EPOCHS=1)
    # once for the layer and that CRS, not again for each image in it (a season's polar products had said it for every pair)
    said = [text for text in results["_feedback"].infos if "lies on another Mars sphere than" in text]
    assert len(said) == 1 and "than 'polar'" in said[0] and "its features are not used over images in that CRS" in said[0], results["_feedback"].infos
    assert "Cannot create transform" not in results["_feedback"].text
    assert {"No label feature lies over 'polar'; it is left out of training.", "No label feature lies over 'polar2'; it is left out of training."} <= set(results["_feedback"].warnings)


def test_a_label_value_not_understood_names_its_feature(qgis_app, training_data, tmp_path):
    from qgis.PyQt.QtCore import QVariant

    raster = training_data.raster
    values = ["1", "0", "maybe", "5"]  # every one named at once: a field calculator's results had been found one per run
    layer = memory_polygons("odd labels", raster.crs_wkt, [(chunk_geometry(raster, 0, c), [v]) for c, v in enumerate(values)], [("label", QVariant.String)])
    message = check_failed(tmp_path, [], RASTERS=[raster.path], LABELS=[layer])
    assert re.search(r"2 label value\(s\) are not understood: 'maybe' \(feature \d+ of 'odd labels'\), '5' \(feature \d+ of 'odd labels'\)\. Use 1 / 0", message), message


def test_labels_all_unclear_are_refused_before_the_worker_as_empty(qgis_app, training_data, tmp_path):
    """'unclear', -1 and '' leave a chunk out as NULL does, yet QGIS counted them as filled: a layer labelled all 'unclear'
    passed its check and failed only in the worker, with a message that did not name the label field. Those marked unclear
    are said to be, not empty: "fill it" had been the fix offered for chunks a geologist had looked at and marked."""
    from qgis.PyQt.QtCore import QVariant

    raster = training_data.raster
    layer = memory_polygons("unsure", raster.crs_wkt, [(chunk_geometry(raster, 0, c), [v]) for c, v in enumerate(["unclear", "-1", "", " ?"])],
                            [("label", QVariant.String)])
    message = check_failed(tmp_path, ["No label feature over the rasters", "says icy or not icy: 3 are marked unclear (-1), which training leaves out, "
                                      "and the rest have an empty 'label'", "Label some chunks 1 (icy) and some 0 (not icy)"], RASTERS=[raster.path], LABELS=[layer])
    assert "Fill it" not in message


def test_lines_points_and_empty_geometries_in_a_mixed_layer_are_not_read_as_labels(qgis_app, training_data, tmp_path):
    """A layer of mixed geometry (GeoJSON, CSV with WKT, an untyped GeoPackage) passes the polygon-layer check: a closed line
    drawn around ice was read as an outline that covers nothing, and its chunks trained as not icy, without a word. (A feature
    without geometry lies over no raster: the request for the raster's extent does not return it.)"""
    from osgeo import ogr as ogr_

    raster = training_data.raster
    path = str(tmp_path / "mixed.gpkg")
    ds = ogr_.GetDriverByName("GPKG").CreateDataSource(path)
    layer = ds.CreateLayer("mixed", osr.SpatialReference(wkt=raster.crs_wkt), ogr_.wkbUnknown)
    layer.CreateField(ogr_.FieldDefn("label", ogr_.OFTInteger))
    polygons = [chunk_geometry(raster, r, c).asWkt() for r in range(4) for c in range(4)]
    line = helpers.window_wkt(raster.geotransform, 5, 5, 20, 20).replace("POLYGON ((", "LINESTRING (").replace("POLYGON((", "LINESTRING(").replace("))", ")")
    for index, wkt in enumerate(polygons + [line, None]):
        feature = ogr_.Feature(layer.GetLayerDefn())
        feature.SetField("label", index % 2)
        if wkt:
            feature.SetGeometry(ogr_.CreateGeometryFromWkt(wkt))
        layer.CreateFeature(feature)
    ds = None
    from qgis.core import QgsVectorLayer

    mixed = QgsVectorLayer(f"{path}|layername=mixed", "mixed", "ogr")
    results = train(tmp_path, [raster.path], [mixed], EPOCHS=1)
    image = os.path.splitext(os.path.basename(raster.path))[0]
    said = [text for text in results["_feedback"].infos if text.startswith("'mixed': ")]
    assert said == [f"'mixed': 1 feature(s) near '{image}' not read as labels or exclusions: 1 lines or points, not polygons"], results["_feedback"].infos
    assert len(job_of(results)["rasters"][0]["labels"]) == 16


def test_layers_of_the_wrong_kind_in_a_list_are_refused_with_what_the_list_takes(qgis_app, training_data, labelled_geographic, tmp_path):
    """processing.run, a model or a batch row hands the lists layers, which QGIS does not check as it checks paths: a vector
    layer among RASTERS ended in "AttributeError: 'QgsVectorLayer' object has no attribute 'bandCount'"."""
    from qgis.core import QgsRasterLayer

    image = QgsRasterLayer(training_data.raster.path, "img")
    for parameters, said in (({"RASTERS": [labelled_geographic], "LABELS": [labelled_geographic]}, "RASTERS (")
                             , ({"RASTERS": [image], "LABELS": [image]}, "LABELS ("), ({"RASTERS": [image], "LABELS": [labelled_geographic], "EXCLUDE": [image]}, "EXCLUDE (")):
        message = check_failed(tmp_path, [said], **parameters)
        assert "Traceback" not in message and "AttributeError" not in message
        assert ("takes raster layers; 'labels in lon/lat' is a vector layer" if said == "RASTERS (" else "takes polygon layers; 'img' is a raster layer") in message, message


def test_a_history_named_txt_is_refused_before_training(qgis_app, training_data, labelled_geographic, tmp_path):
    """QGIS writes .txt as Geoconcept, which takes no table without a CRS: HISTORY=h.txt had trained, then left an empty
    h.txt.gxt and no history, with exit 0."""
    check_failed(tmp_path, ["HISTORY is a Geoconcept file"], RASTERS=[training_data.raster.path], LABELS=[labelled_geographic],
                 HISTORY=str(tmp_path / "h.txt"))
    assert not list(tmp_path.glob("h.txt*"))


def test_a_geopackage_layer_with_the_undefined_srs_is_taken_in_the_rasters_crs(qgis_app, training_data, tmp_path):
    """A GeoPackage written without a CRS gets srs_id 0, GDAL's 'Undefined geographic SRS' on Earth's ellipsoid: it was refused
    as 'a CRS of another body than Mars', where a shapefile without .prj is taken, with a warning, in the raster's CRS."""
    from osgeo import ogr

    raster = training_data.raster
    path = tmp_path / "no_crs.gpkg"
    dataset = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = dataset.CreateLayer("no_crs", None, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("label", ogr.OFTInteger))
    for row in range(6):
        for col in range(6):
            feature = ogr.Feature(layer.GetLayerDefn())
            feature.SetGeometry(ogr.CreateGeometryFromWkt(chunk_geometry(raster, row, col).asWkt()))
            feature.SetField("label", int(helpers.checkerboard(row, col)))
            layer.CreateFeature(feature)
    dataset = None
    results = train(tmp_path, [raster.path], [str(path)], epochs=1)
    assert "'no_crs' has no CRS QGIS can read; its coordinates are taken to be in the CRS of" in results["_feedback"].text
    assert modelfile.read_metadata(results["OUTPUT_MODEL"])["training"]["chunks"] == 36


def test_a_band_the_raster_lacks_is_refused_before_the_worker(qgis_app, labelled_geographic, training_data, tmp_path):
    check_failed(tmp_path, ["Band 3 does not exist in 'train_scene', which has 1 band(s). Choose 1..1, or 0 for automatic."],
                 RASTERS=[training_data.raster.path], LABELS=[labelled_geographic], BAND=3)


def test_a_corrupt_base_model_is_named_base_model(qgis_app, labelled_geographic, training_data, tmp_path):
    corrupt = tmp_path / "corrupt.hiriseice"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    message = check_failed(tmp_path, [str(corrupt), "(BASE_MODEL)", "leave BASE_MODEL empty to train from scratch"],
                           RASTERS=[training_data.raster.path], LABELS=[labelled_geographic], BASE_MODEL=str(corrupt))
    assert "MODEL empty for the bundled default model" not in message


def test_cancel_during_training_stops_the_worker_and_writes_no_model(qgis_app, training_data, tmp_path):
    from qgis.core import QgsProcessingException
    from qgis.PyQt.QtCore import QVariant

    raster = training_data.raster
    labels = memory_polygons("checkerboard", raster.crs_wkt, [(chunk_geometry(raster, r, c), [int(helpers.checkerboard(r, c))]) for r in range(6) for c in range(6)],
                             [("label", QVariant.Int)])
    out = tmp_path / "out"
    out.mkdir()
    feedback = qs.recording_feedback()
    thread, seen = qs.cancel_when(feedback, lambda: feedback.progress() > 0)  # the worker reports training steps as progress
    try:
        with pytest.raises(QgsProcessingException) as raised:
            qs.run_algorithm("hiriseice:train", dict(TINY, RASTERS=[raster.path], LABELS=[labels], EPOCHS=500, OUTPUT_MODEL=str(out / "never.hiriseice"),
                                                     HISTORY="TEMPORARY_OUTPUT", REPORT=str(out / "never.html")), feedback=feedback)
    finally:
        thread.join()
    assert 0 < seen["progress"] < 50, seen
    assert "Cancelled by the user: the worker was stopped" in str(raised.value)
    jobs = [m.group(1) for text in feedback.infos for m in [re.match(r"Training job: (.+)$", text)] if m]
    assert jobs and qs.wait_until_gone(jobs[0]) == [], "the training worker outlived the cancel"
    assert os.listdir(out) == [], os.listdir(out)


def test_no_output_replaces_the_labels_or_an_image_the_run_reads(detected, training_data, tmp_path):
    """The labels, drawn by hand over days, and the image are never written over (refused while QGIS
    checks the parameters, before any worker)."""
    labels = tmp_path / "labels.gpkg"
    shutil.copyfile(detected, labels)
    before = qs.read_ogr(labels)
    for output in ("OUTPUT_MODEL", "HISTORY", "REPORT"):
        message = qs.processing_error("hiriseice:train", dict(TINY, RASTERS=[training_data.raster.path], LABELS=[str(labels)], EPOCHS=1,
                                                               **{"OUTPUT_MODEL": str(tmp_path / "m.hiriseice"), output: str(labels)}))
        assert f"{output} would be written over {labels}, which this run reads as LABELS" in message and "nothing was run or written" in message, message
    assert qs.read_ogr(labels) == before and not (tmp_path / "m.hiriseice").exists()  # (QGIS's opening alone switches SQLite to WAL)
    message = qs.processing_error("hiriseice:train", dict(TINY, RASTERS=[training_data.raster.path], LABELS=[str(labels)], OUTPUT_MODEL=training_data.raster.path))
    assert f"OUTPUT_MODEL would be written over {training_data.raster.path}, which this run reads as RASTERS" in message


def test_a_model_child_or_a_batch_row_is_checked_as_a_single_run_is(detected, training_data, tmp_path):
    """QGIS 3.22 runs a graphical model's children and the toolbox's batch rows without checkParameterValues: HISTORY given
    the label GeoPackage replaced the labels with the history table, without a word. Run as they run it (Algorithm.run)."""
    from qgis.core import QgsApplication, QgsProcessingContext, QgsProject

    labels = tmp_path / "labels.gpkg"
    shutil.copyfile(detected, labels)
    before = qs.read_ogr(labels)
    algorithm = QgsApplication.processingRegistry().createAlgorithmById("hiriseice:train")
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    feedback = qs.recording_feedback()
    parameters = dict(TINY, RASTERS=[training_data.raster.path], LABELS=[str(labels)], EPOCHS=1, OUTPUT_MODEL=str(tmp_path / "m.hiriseice"), HISTORY=str(labels))
    results, ok = algorithm.run(parameters, context, feedback)
    assert not ok and f"HISTORY would be written over {labels}, which this run reads as LABELS" in feedback.text
    assert qs.read_ogr(labels) == before and not (tmp_path / "m.hiriseice").exists()


def test_no_output_replaces_another(detected, training_data, tmp_path):
    """A report named like the model file had replaced the trained model, and the run said both were saved."""
    for first, later, name in (("OUTPUT_MODEL", "REPORT", "m.hiriseice"), ("HISTORY", "REPORT", "h.csv")):
        same = str(tmp_path / name)
        values = dict(TINY, RASTERS=[training_data.raster.path], LABELS=[str(detected)], EPOCHS=1, OUTPUT_MODEL=str(tmp_path / "other.hiriseice"))
        message = qs.processing_error("hiriseice:train", dict(values, **{first: same, later: same}))
        assert message.splitlines()[-1] == (f"{first} and {later} are both {same}: the one written last would replace the other. "
                                            "Give each its own file name; nothing was run or written."), message
    # OUTPUT_MODEL named without its extension is written with it
    values = dict(TINY, RASTERS=[training_data.raster.path], LABELS=[str(detected)], EPOCHS=1, OUTPUT_MODEL=str(tmp_path / "m"), REPORT=str(tmp_path / "m.hiriseice"))
    assert qs.processing_error("hiriseice:train", values).splitlines()[-1].startswith(f"OUTPUT_MODEL and REPORT are both {tmp_path / 'm.hiriseice'}: ")
    assert os.listdir(tmp_path) == []


def test_label_layers_without_features_or_off_mars_are_told_so(qgis_app, detected, training_data, tmp_path):
    from qgis.core import QgsCoordinateReferenceSystem, QgsVectorLayer

    empty = QgsVectorLayer(f"Polygon?crs=wkt:{training_data.raster.crs_wkt}&field=label:integer", "nothing drawn", "memory")
    message = qs.processing_error("hiriseice:train", dict(TINY, RASTERS=[training_data.raster.path], LABELS=[empty], OUTPUT_MODEL=str(tmp_path / "m.hiriseice")))
    assert "The label layer(s) 'nothing drawn' hold no features. Label chunks first" in message, message
    earth = QgsVectorLayer(str(detected), "web mercator", "ogr")
    earth.setCrs(QgsCoordinateReferenceSystem("EPSG:3857"))  # a layer whose CRS was set wrongly in QGIS
    message = qs.processing_error("hiriseice:train", dict(TINY, RASTERS=[training_data.raster.path], LABELS=[earth], OUTPUT_MODEL=str(tmp_path / "m.hiriseice")))
    assert "The label layer 'web mercator' is in EPSG:3857, a CRS of another body than Mars" in message and "Set the layer's Mars CRS" in message, message
    assert not (tmp_path / "m.hiriseice").exists()


def test_a_measure_the_validation_chunks_leave_undefined_is_said_in_words_not_nan(qgis_app):
    """Precision is undefined where the new model calls no validation chunk icy: the log said 'precision nan'."""
    from hirise_ice_patches.processing_provider.train_algorithm import TrainAlgorithm

    feedback = qs.recording_feedback()
    TrainAlgorithm._log_metrics({"at_icy_threshold": {"accuracy": 0.667, "precision": math.nan, "recall": 0.0, "roc_auc": 0.25}}, feedback)
    assert feedback.infos == ["Validation at the icy threshold: accuracy 0.667, precision - (no chunk called icy), recall 0.000, roc_auc 0.250"]


def test_a_disk_without_room_for_the_history_is_refused_before_training(qgis_app, labelled_geographic, training_data, tmp_path, small_disk):
    """A full disk for HISTORY was found after the whole training, as 5.7 kB of SQLite's SQL."""
    disk = small_disk(64)
    said = qs.processing_error("hiriseice:train", dict(TINY, RASTERS=[training_data.raster.path], LABELS=[labelled_geographic], EPOCHS=1,
                                                       OUTPUT_MODEL=str(tmp_path / "model.hiriseice"), HISTORY=str(disk / "history.gpkg"),
                                                       REPORT=str(tmp_path / "training.html")))
    assert f"HISTORY cannot be written to {disk / 'history.gpkg'}: its disk has 0.07 MB free and a model file, its report and the history need about 104.86 MB" in said, said
    assert os.listdir(disk) == [] and not (tmp_path / "model.hiriseice").exists()


def test_chunk_labels_are_read_on_the_image_they_were_drawn_on_not_on_another_of_the_same_ground(qgis_app, labelled_geographic, training_data, tmp_path):
    """A label was given to every raster whose extent it met: a chunk labelled icy on one observation was taught as icy on a
    repeat image of the same site (where the frost may be gone), and the same ground sat in training and validation."""
    repeat = tmp_path / "ESP_099999_1055_RED.tif"  # the same ground, imaged again
    shutil.copyfile(training_data.raster.path, repeat)
    results = train(tmp_path, [training_data.raster.path, str(repeat)], [labelled_geographic], epochs=1)
    job = job_of(results)
    assert [entry["path"] for entry in job["rasters"]] == [training_data.raster.path], job["rasters"]
    said = [text for text in results["_feedback"].infos if text.startswith(f"'{repeat.stem}' ({repeat.stem}): ")]
    assert len(said) == 1 and "label feature(s) over its ground were drawn on other images, as their image_id says" in said[0], results["_feedback"].infos
    assert any(f"No label feature drawn on this image lies over '{repeat.stem}'" in warning for warning in results["_feedback"].warnings), results["_feedback"].warnings


def test_labels_of_another_image_only_are_said_to_want_that_images_raster(qgis_app, labelled_geographic, training_data, tmp_path):
    """Labels over a repeat image that were all drawn on the first: the run had stopped with 'No feature of the label layers lies
    over the rasters ... is each layer's CRS right?', when the fix is to give the first image's raster."""
    repeat = tmp_path / "ESP_099999_1055_RED.tif"
    shutil.copyfile(training_data.raster.path, repeat)
    said = qs.processing_error("hiriseice:train", dict(TINY, RASTERS=[str(repeat)], LABELS=[labelled_geographic], EPOCHS=1,
                                                       OUTPUT_MODEL=str(tmp_path / "m.hiriseice")))
    assert f"The label features over the rasters ('{repeat.stem}') were all drawn on other images, as their image_id says: train_scene. " \
           "Add those images' rasters to RASTERS" in said, said
    assert not (tmp_path / "m.hiriseice").exists()


def test_a_model_file_trained_over_is_named_in_a_warning(qgis_app, labelled_geographic, training_data, tmp_path):
    """Training into the file of the model that made earlier outputs replaced it without a word: those outputs then named a
    version no file held."""
    from model import modelfile

    first = train(tmp_path, [training_data.raster.path], [labelled_geographic], epochs=1)
    assert not [w for w in first["_feedback"].warnings if w.startswith("OUTPUT_MODEL:")]
    replaced = modelfile.describe(modelfile.read_metadata(str(tmp_path / "model.hiriseice")))
    second = train(tmp_path, [training_data.raster.path], [labelled_geographic], epochs=1)
    assert (f"OUTPUT_MODEL: {tmp_path / 'model.hiriseice'} holds {replaced}, which the new model replaces once it is written: the outputs "
            "made with it will name a model no file holds. Give another file name to keep it.") in second["_feedback"].warnings


def test_two_files_of_one_name_are_refused_as_each_others_labels(qgis_app, labelled_geographic, training_data, tmp_path):
    """Two dates of a site saved as 2026-04/train_scene.tif and 2026-05/train_scene.tif: the labels of each, whose image_id is
    that name, were read on both."""
    copies = []
    for month in ("2026-04", "2026-05"):
        (tmp_path / month).mkdir()
        copies.append(tmp_path / month / "train_scene.tif")
        shutil.copyfile(training_data.raster.path, copies[-1])
    said = qs.processing_error("hiriseice:train", dict(TINY, RASTERS=[str(c) for c in copies], LABELS=[labelled_geographic], EPOCHS=1,
                                                       OUTPUT_MODEL=str(tmp_path / "m.hiriseice")))
    assert f"'{copies[0]}' and '{copies[1]}' are two files with the same image ID 'train_scene' (their file name)" in said, said
    assert "Give each file its own name" in said and not (tmp_path / "m.hiriseice").exists()


def test_labels_in_a_geopackage_qgis_cannot_open_are_said_so(detected, training_data, tmp_path):
    """A '%41' in the labels' path: QGIS said only 'Incorrect parameter value for LABELS', and printed a mesh driver's complaint."""
    folder = tmp_path / "round%41"
    folder.mkdir()
    labels = folder / "labels.gpkg"
    shutil.copyfile(detected, labels)
    message = qs.processing_error("hiriseice:train", dict(TINY, RASTERS=[training_data.raster.path], LABELS=[str(labels)], EPOCHS=1,
                                                           OUTPUT_MODEL=str(tmp_path / "m.hiriseice")))
    assert f"The layer is the GeoPackage {labels}, whose path holds '%41': QGIS reads that as an escaped character and cannot open the file" in message, message

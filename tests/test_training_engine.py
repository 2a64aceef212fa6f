"""Training: `python -m model train` jobs in the worker (both label modes, retraining, determinism, bad
inputs), and in QGIS's Python the TensorFlow-free parts (train/validation splits, label values)."""

import json
import shutil
import math
import re

import numpy as np
from osgeo import gdal, ogr, osr
import pytest

from model import labels, modelfile, splitting
from model.errors import EngineError, LabelError, RasterError

import helpers

HISTORY_KEYS = {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "val_precision", "val_recall", "val_auc"}
CHUNK = helpers.TINY_CHUNK_SIZE


def square(raster, x, y, size):
    return helpers.window_wkt(raster.geotransform, x, y, size, size)


# --- mode "chunks" (the session's tiny model) ---------------------------------------------------


def test_chunk_mode_training_history_and_result(tiny_model):
    run = tiny_model.run
    messages = run.messages
    assert messages[-1]["type"] == "result" and not [m for m in messages if m["type"] == "error"]
    fractions = [m["fraction"] for m in messages if m["type"] == "progress"]
    assert fractions and fractions == sorted(fractions) and fractions[-1] == 1.0
    logs = [m["message"] for m in messages if m["type"] == "log"]
    assert "train_scene: 36 labelled chunks, 18 icy" in logs
    assert any(re.match(r"\d+ training chunks \(\d+ icy\), \d+ validation chunks \(\d+ icy\); split by \d+ of 4 groups", m) for m in logs)

    result = tiny_model.result
    assert result["model_path"] == tiny_model.path
    history = result["history"]
    assert [row["epoch"] for row in history] == [1, 2]
    for row in history:
        assert set(row) == HISTORY_KEYS
        assert all(math.isfinite(v) for v in row.values())
        assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["val_accuracy"] <= 1.0 and row["loss"] > 0
    m = result["metrics"]
    assert m["validation_chunks"] == 9 and 0 < m["validation_icy"] < 9  # one 3 x 3 block of the checkerboard
    assert m["best_epoch"] in (1, 2) and m["best_val_loss"] == pytest.approx(min(r["val_loss"] for r in history), rel=1e-6)
    for key in ("at_0.5", "at_icy_threshold"):
        c = m[key]
        assert c["true_positive"] + c["false_positive"] + c["true_negative"] + c["false_negative"] == 9
    assert sum(row["count"] for row in m["reliability"]) == 9


def test_training_report(tiny_model):
    text = open(tiny_model.report, encoding="utf-8").read()
    assert "<title>Training report: tiny-test-model</title>" in text
    assert text.count("data:image/png;base64,") == 3 and "<svg" not in text  # curves, confusion matrices, reliability diagram
    assert text.count("<h3>Validation confusion matrix, p ") == 2  # at 0.5 and at the icy threshold
    assert "<th>predicted icy</th>" in text and "<td>labelled icy</td>" in text
    assert "<th>where the ice lies</th><td>not taught: chunk labels only</td>" in text
    history_table = text[text.index("<h2>History</h2>") :]
    assert history_table.count("<tr><td>") == 2  # one row per epoch
    for column in ("epoch", "loss", "val_loss", "val_accuracy", "val_auc"):
        assert f"<th>{column}</th>" in history_table


def test_same_seed_same_metrics(tiny_model, worker_python, tmp_path):
    """The session's job run again: the same history and validation metrics, to float precision."""
    job = dict(tiny_model.job, output_model=str(tmp_path / "again.hiriseice"), report=None)
    again = helpers.run_worker(worker_python, "train", helpers.write_job(tmp_path / "job.json", job)).check().result
    first = tiny_model.result
    assert len(again["history"]) == len(first["history"])
    for a, b in zip(again["history"], first["history"]):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], abs=1e-5), key
    for key in ("validation_chunks", "validation_icy", "best_epoch"):
        assert again["metrics"][key] == first["metrics"][key]
    assert again["metrics"]["at_0.5"]["roc_auc"] == pytest.approx(first["metrics"]["at_0.5"]["roc_auc"], abs=1e-6)
    assert modelfile.read_metadata(job["output_model"])["training"]["split"] == tiny_model.metadata["training"]["split"]


def test_same_seed_same_fine_tuned_model(tiny_model, worker_python, tmp_path):
    """Continuing a base model twice with one seed gave two models (a chunk 0.92 by one, 0.42 by the other):
    the base's dropout layers were seeded from Python's unseeded random as it loaded."""
    histories = []
    for run in ("one", "two"):
        job = dict(tiny_model.job, base_model=tiny_model.path, epochs=2, output_model=str(tmp_path / f"{run}.hiriseice"), report=None)
        histories.append(helpers.run_worker(worker_python, "train", helpers.write_job(tmp_path / f"{run}.json", job)).check().result["history"])
    assert histories[0] == histories[1]
    one, two = (modelfile.read_metadata(str(tmp_path / f"{run}.hiriseice")) for run in ("one", "two"))
    assert one["calibration"] == two["calibration"] and one["metrics"] == two["metrics"]


def test_a_training_that_diverges_stops_with_the_fix_and_writes_no_model(tiny_model, worker_python, tmp_path):
    """A learning rate far too high: the loss becomes NaN in the first epoch, no epoch is better than
    another, and a model of NaN weights would have been written as if trained."""
    job = dict(tiny_model.job, output_model=str(tmp_path / "nan.hiriseice"), report=str(tmp_path / "nan.html"), learning_rate=1e6, epochs=3)
    run = helpers.run_worker(worker_python, "train", helpers.write_job(tmp_path / "job.json", job))
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert [m["message"] for m in run.errors] == ["Training diverged in epoch 1: its loss became nan (validation nan), so its weights mean nothing; "
                                                  "no model was written. Lower LEARNING_RATE (to a tenth) and run again."]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.json"]


def test_an_isis_float_copy_of_the_scene_trains_as_its_dns_do(tiny_model, worker_python, tmp_path):
    """The session's job on the scene as ISIS3 writes it (32-bit float I/F, null pixels next to
    -3.4e38): the same chunks, split and, to the 8-bit quantisation's ties, the same learning."""
    scene = tiny_model.scene.raster
    cube = helpers.write_geotiff(tmp_path / "train_scene.tif", [helpers.isis_i_over_f(scene.bands[0])], "Float32", scene.geotransform, scene.crs_wkt,
                                 nodata=helpers.ISIS_NULL)
    job = dict(tiny_model.job, rasters=[dict(tiny_model.job["rasters"][0], path=cube)], output_model=str(tmp_path / "cube.hiriseice"), report=None)
    run = helpers.run_worker(worker_python, "train", helpers.write_job(tmp_path / "job.json", job)).check()
    assert "train_scene: 36 labelled chunks, 18 icy" in [m["message"] for m in run.messages if m["type"] == "log"]
    first = tiny_model.result
    for key in ("validation_chunks", "validation_icy"):
        assert run.result["metrics"][key] == first["metrics"][key]
    for again, before in zip(run.result["history"], first["history"]):
        assert again["loss"] == pytest.approx(before["loss"], abs=0.01) and again["val_loss"] == pytest.approx(before["val_loss"], abs=0.01)


def test_training_on_an_image_in_degrees_warns_that_its_ground_is_squashed(tiny_model, worker_python, tmp_path):
    """The session's scene placed in Mars's latitude and longitude at -55 deg (its pixels 1.74 times
    taller than wide on the ground): the job trains, and says once what the network would learn."""
    scene = tiny_model.scene.raster
    degrees = osr.SpatialReference()
    degrees.SetGeogCS("Mars 2000", "D_Mars_2000", "Mars_2000_IAU_IAG", 3396190.0, 169.894447)
    step = 1e-5
    raster = helpers.write_geotiff(tmp_path / "degrees.tif", scene.bands, "UInt16", (0.0, step, 0.0, -55.0 + step * scene.height / 2, 0.0, -step), degrees.ExportToWkt())
    labels = [dict(label, wkt=_moved_wkt(label["wkt"], scene.geotransform, (0.0, step, 0.0, -55.0 + step * scene.height / 2, 0.0, -step)))
              for label in tiny_model.job["rasters"][0]["labels"]]
    job = dict(tiny_model.job, rasters=[dict(tiny_model.job["rasters"][0], path=raster, labels=labels)], output_model=str(tmp_path / "degrees.hiriseice"), report=None, epochs=1)
    run = helpers.run_worker(worker_python, "train", helpers.write_job(tmp_path / "job.json", job)).check()
    warnings = [m["message"] for m in run.messages if m["type"] == "warning"]
    assert len(warnings) == 1 and "on the ground at -55.0 deg latitude (1.74 to 1)" in warnings[0], warnings
    assert "degrees: 36 labelled chunks, 18 icy" in [m["message"] for m in run.messages if m["type"] == "log"]


def test_a_polar_product_turned_from_north_trains_as_its_north_up_twin(tiny_model, worker_python, tmp_path):
    """The session's scene as the north-up map on the 180 meridian, and as HiRISE's polar product there
    (the same ground turned x, y -> -x, -y), its labels in each one's own map as the QGIS side sends them:
    the product is read through its north-up view, the labels carried into it, and the job learns as on the
    twin. A file stored south-up goes the same way (its own map stored north-up)."""
    from model.labels import map_carrier

    scene = tiny_model.scene.raster
    pixel = scene.geotransform[1]
    twin_wkt, twin_gt = helpers.south_polar_stereographic(180.0, width=scene.width, height=scene.height, pixel=pixel, central_meridian=180.0)
    product_wkt, _ = helpers.south_polar_stereographic(180.0, width=scene.width, height=scene.height, pixel=pixel)
    x0, _, _, y0, _, negative_height = twin_gt
    product_gt = (-x0 - scene.width * pixel, pixel, 0.0, -y0 - scene.height * negative_height, 0.0, negative_height)
    pixels = gdal.Open(scene.path).ReadAsArray()
    twin = helpers.write_geotiff(tmp_path / "twin.tif", pixels, "UInt16", twin_gt, twin_wkt)
    product = helpers.write_geotiff(tmp_path / "ESP_000013_1130_RED.tif", pixels[::-1, ::-1], "UInt16", product_gt, product_wkt)
    twin_labels = [dict(label, wkt=_moved_wkt(label["wkt"], scene.geotransform, twin_gt)) for label in tiny_model.job["rasters"][0]["labels"]]
    into_product = map_carrier(twin_wkt, product_wkt)
    runs = {}
    for name, raster, drawn in (("twin", twin, twin_labels), ("product", product, [dict(label, wkt=into_product(label["wkt"])) for label in twin_labels])):
        job = dict(tiny_model.job, rasters=[dict(tiny_model.job["rasters"][0], path=raster, labels=drawn)], output_model=str(tmp_path / f"{name}.hiriseice"),
                   report=None, epochs=1)
        runs[name] = helpers.run_worker(worker_python, "train", helpers.write_job(tmp_path / f"{name}.json", job)).check()
    logs = [m["message"] for m in runs["product"].messages if m["type"] == "log"]
    assert any("north points 180 deg" in line and "north-up view" in line for line in logs), logs
    assert "ESP_000013_1130_RED: 36 labelled chunks, 18 icy" in logs
    twin_result, product_result = runs["twin"].result, runs["product"].result
    for key in ("validation_chunks", "validation_icy"):
        assert product_result["metrics"][key] == twin_result["metrics"][key]
    assert product_result["history"][0]["loss"] == pytest.approx(twin_result["history"][0]["loss"], abs=1e-5)
    assert product_result["history"][0]["val_loss"] == pytest.approx(twin_result["history"][0]["val_loss"], abs=1e-5)


def _moved_wkt(wkt: str, old_geotransform, new_geotransform) -> str:
    """A label polygon carried from one placement of the same pixels to another, vertex by vertex."""
    geometry = ogr.CreateGeometryFromWkt(wkt)
    ring = geometry.GetGeometryRef(0)
    inverse = gdal.InvGeoTransform(old_geotransform)
    for i in range(ring.GetPointCount()):
        px, py = gdal.ApplyGeoTransform(inverse, ring.GetX(i), ring.GetY(i))
        ring.SetPoint_2D(i, *gdal.ApplyGeoTransform(new_geotransform, px, py))
    return geometry.ExportToWkt()


def test_early_stopping_keeps_the_best_epoch_and_completes_the_progress(training_data, worker_python, tmp_path):
    """A learning rate far too high makes the validation loss climb: training stops after PATIENCE worse epochs."""
    output = tmp_path / "stopped.hiriseice"
    job = helpers.tiny_job(training_data.raster.path, training_data.labels, str(output), epochs=8, patience=1, learning_rate=5.0)
    run = helpers.run_worker(worker_python, "train", helpers.write_job(tmp_path / "job.json", job)).check()
    history = run.result["history"]
    losses = [row["val_loss"] for row in history]
    best = int(np.argmin(losses)) + 1
    assert len(history) < 8 and len(history) == best + 1  # stopped one epoch (PATIENCE) after the best
    assert run.result["metrics"]["best_epoch"] == best
    assert run.result["metrics"]["best_val_loss"] == pytest.approx(min(losses), rel=1e-6)
    assert modelfile.read_metadata(str(output))["training"]["best_epoch"] == best
    fractions = [m["fraction"] for m in run.messages if m["type"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


# --- mode "outlines" ----------------------------------------------------------------------------


def test_outline_mode_with_exclusions(training_data, worker_python, tmp_path):
    """Chunks holding an outline are icy, the rest not icy; chunks touching an exclusion polygon are left out."""
    raster = training_data.raster
    outlines = []
    for x, y, size in raster.icy_windows:  # a small outline around each bright blob, inside its chunk
        outlines.append({"wkt": square(raster, x + size // 2 - 6, y + size // 2 - 6, 12)})  # no label field: an ice patch
    outlines.append({"wkt": square(raster, 1 * CHUNK + 20, 0 * CHUNK + 20, 10), "label": 0})  # marked not icy: ignored
    exclude = [square(raster, 0 * CHUNK + 10, 0 * CHUNK + 10, 20),  # chunk (0, 0), icy
               square(raster, 3 * CHUNK + 30, 2 * CHUNK + 30, 8)]  # chunk (2, 3), not icy
    output = tmp_path / "outlines.hiriseice"
    job = helpers.tiny_job(raster.path, outlines, str(output), label_mode="outlines", epochs=1, report=str(tmp_path / "outlines.html"))
    job["rasters"][0]["exclude"] = exclude
    run = helpers.run_worker(worker_python, "train", helpers.write_job(tmp_path / "job.json", job)).check()
    assert "train_scene: 34 labelled chunks, 17 icy" in [m["message"] for m in run.messages if m["type"] == "log"]
    metadata = modelfile.read_metadata(str(output))
    assert metadata["training"]["data"] == {"label_mode": "outlines", "images": [{"image_id": "train_scene", "chunks": 34, "icy": 17}]}
    assert metadata["training"]["chunks"] == 34 and metadata["training"]["icy_chunks"] == 17
    assert [row["epoch"] for row in run.result["history"]] == [1]
    # the outlines also say where in each chunk the ice lies, and the score map's cells learn it
    assert "the score map's cells are taught where the ice lies too (weight 1)" in [m["message"] for m in run.messages if m["type"] == "log"]
    assert metadata["training"]["cell_weight"] == 1.0 and {"cells_loss", "val_cells_loss"} <= set(run.result["history"][0])
    assert "<th>where the ice lies</th><td>taught to each cell of the score map from the outlines (weight 1)</td>" in (tmp_path / "outlines.html").read_text(encoding="utf-8")


def test_outlines_label_whole_chunks_where_the_input_is_no_multiple_of_the_cells(training_data, worker_python, tmp_path):
    raster = training_data.raster
    outlines = [{"wkt": square(raster, x + size // 2 - 6, y + size // 2 - 6, 12)} for x, y, size in raster.icy_windows]
    output = tmp_path / "outlines36.hiriseice"
    job = helpers.tiny_job(raster.path, outlines, str(output), label_mode="outlines", epochs=1, input_size=36)
    run = helpers.run_worker(worker_python, "train", helpers.write_job(tmp_path / "job.json", job)).check()
    assert "the outlines label whole chunks only: the input size 36 px is not a multiple of the network's 8-px cells" in [m["message"] for m in run.messages if m["type"] == "log"]
    assert modelfile.read_metadata(str(output))["training"]["cell_weight"] is None


# --- retraining ---------------------------------------------------------------------------------


def test_retraining_continues_the_base_model(tiny_model, training_data, worker_python, tmp_path):
    base = tiny_model.metadata
    output = tmp_path / "retrained.hiriseice"
    # The job's input size and widths are ignored: a base model keeps its own; CHUNK_SIZE 0 is the labels' 64 px, the base's too.
    job = helpers.tiny_job(training_data.raster.path, training_data.labels, str(output), base_model=tiny_model.path, epochs=2,
                           name="retrained", input_size=48, chunk_size=0, widths=[16, 32, 64])
    del job["learning_rate"]  # the fine-tuning default
    run = helpers.run_worker(worker_python, "train", helpers.write_job(tmp_path / "job.json", job)).check()
    logs = [m["message"] for m in run.messages if m["type"] == "log"]
    assert any(m.startswith("continuing from tiny-test-model") and "after its 2 epochs (without a replay set)" in m for m in logs), logs
    assert "training at 64-px chunks (the label polygons' size)" in logs  # labels and base agree: nothing more to say
    assert not [m for m in logs if "CHUNK_SIZE is" in m or "the model was trained at" in m]
    history = run.result["history"]
    assert [row["epoch"] for row in history] == [1, 2]  # numbered for this run; the base's 2 epochs are in the metadata
    assert all(set(row) == HISTORY_KEYS for row in history)
    metadata = modelfile.read_metadata(str(output))
    assert metadata["base_model"] == {"name": base["name"], "version": base["version"], "chunk_size": CHUNK}
    training = metadata["training"]
    assert (training["base_epochs"], training["epochs_run"], training["total_epochs"]) == (2, 2, 4)
    assert training["learning_rate"] == 1e-4 and training["warmup_steps"] == 2  # 27 chunks in batches of 8: 4 steps an epoch, 8 in all; a fifth, rounded up
    assert training["frozen_batch_norm_layers"] == 6 and training["replay"] is None
    assert (metadata["input_size"], metadata["chunk_size"], metadata["architecture"], metadata["normalisation"]) == (
        base["input_size"], base["chunk_size"], base["architecture"], base["normalisation"])
    assert metadata["name"] == "retrained" and metadata["version"] >= base["version"]
    comparison = metadata["metrics"]["comparison"]
    assert comparison["validation"]["base"]["chunks"] == comparison["validation"]["new"]["chunks"] == metadata["metrics"]["validation_chunks"]
    assert comparison["replay"] is None and len(comparison["lines"]) == 1
    assert re.fullmatch(r"base model: AUC \d\.\d{3} on these 9 validation chunks \(accuracy .*\); new model: AUC \d\.\d{3} \(accuracy .*\)", comparison["lines"][0])
    assert comparison["lines"][0] in logs and comparison["verdict"] in logs
    assert metadata["metrics"]["calibration"]["choice"] == "kept the base model's" and metadata["calibration"] == base["calibration"]
    assert any(m.startswith("the validation chunks are scored as detect scores by default, each with its east-west mirror") for m in logs)


def test_the_guard_and_the_calibration_score_as_detect_does_with_the_mirror():
    """The guard, the calibration and the recorded metrics judged each chunk alone, while detect averages it with its
    east-west mirror by default: a round's guard read AUC 0.442 where its detect layer gave 0.408."""
    from model import fitting

    images = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4, 1)
    west_heavy = lambda x: x[:, :, :2].sum(axis=(1, 2, 3))  # noqa: E731 - a scorer that sees which side is which
    scores = fitting.as_detect_scores(west_heavy)(images)
    assert np.allclose(scores, (west_heavy(images) + west_heavy(images[:, :, ::-1])) / 2) and not np.allclose(scores, west_heavy(images))
    assert len(fitting.as_detect_scores(west_heavy)(images[:0])) == 0


def test_retraining_a_two_scale_model_adapts_both_trunks_and_keeps_its_scales(tiny_two_scale_model, training_data, worker_python, tmp_path):
    """A two-scale base (the default model's kind) is fine-tuned whole: both trunks' batch norm
    kept, its scales and input size kept."""
    base = modelfile.read_metadata(tiny_two_scale_model)
    output = tmp_path / "retrained.hiriseice"
    job = helpers.tiny_job(training_data.raster.path, training_data.labels, str(output), base_model=tiny_two_scale_model, epochs=1, chunk_size=0)
    run = helpers.run_worker(worker_python, "train", helpers.write_job(tmp_path / "job.json", job)).check()
    metadata = modelfile.read_metadata(str(output))
    assert metadata["architecture"] == base["architecture"] and metadata["architecture"]["scales"] == [2, 1]
    assert metadata["training"]["frozen_batch_norm_layers"] == 2 * 6  # six in each trunk
    assert len(run.result["history"]) == 1


# --- bad inputs ---------------------------------------------------------------------------------

BATCH = r"""
import contextlib, io, json, sys, traceback
from model.__main__ import main
out = {}
for path in sys.argv[1:]:
    stdout = io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout):
            rc = main(["--jsonl", "train", path])
    except BaseException:
        rc = "crash: " + traceback.format_exc()
    out[path] = {"rc": rc, "stdout": stdout.getvalue()}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def bad_jobs(training_data, worker_python, tmp_path_factory):
    """Each bad job through the worker's own main() (one worker start for all of them): {case: (rc, messages, output)}."""
    folder = tmp_path_factory.mktemp("bad_jobs")
    raster = training_data.raster
    small = helpers.generate_raster(folder, name="small.tif", width=48, height=48)
    far_away = [{"wkt": helpers.window_wkt(raster.geotransform, x + 5000, y - 7000, CHUNK, CHUNK), "label": item["label"]}
                for item, (x, y) in zip(training_data.labels, [(c * CHUNK, r * CHUNK) for r in range(6) for c in range(6)])]
    own_copy = folder / "ESP_000011_1000_RED.tif"
    shutil.copyfile(raster.path, own_copy)
    corner_block = [item for item, (r, c) in zip(training_data.labels, [(r, c) for r in range(6) for c in range(6)]) if r < 3 and c < 3]
    cases = {
        "no labels": dict(rasters=[{"path": raster.path, "labels": []}]),
        "single class": dict(rasters=[{"path": raster.path, "labels": [dict(item, label=1) for item in training_data.labels]}]),
        "labels outside the raster": dict(rasters=[{"path": raster.path, "labels": far_away}]),
        "outlines outside the raster": dict(label_mode="outlines", rasters=[{"path": raster.path, "labels": far_away}]),
        "raster smaller than a chunk": dict(rasters=[{"path": small.path, "labels": [{"wkt": square(small, 0, 0, 40), "label": 1}]}]),
        "unknown label value": dict(rasters=[{"path": raster.path, "labels": training_data.labels[:-1] + [dict(training_data.labels[-1], label="maybe")]}]),
        "unknown label mode": dict(label_mode="points"),
        "one block only": dict(rasters=[{"path": raster.path, "labels": corner_block}]),
        "no raster": dict(rasters=[]),
        "pull back past the base": dict(anchor=1.5),
        "the model over the image": dict(rasters=[{"path": str(own_copy), "labels": training_data.labels}], output_model=str(own_copy)),
        # hand-written jobs (the README documents the format): each had been a Python traceback
        "widths as the parameter writes them": dict(widths="4,8,8,16"),
        "epochs as text": dict(epochs="two"),
        "a raster without its path": dict(rasters=[{"labels": training_data.labels}]),
        "a label without its wkt": dict(rasters=[{"path": raster.path, "labels": [{"label": 1}]}]),
        "validation beyond the whole": dict(validation_fraction=1.5),
        "an unreadable label geometry": dict(rasters=[{"path": raster.path, "labels": training_data.labels[:-1] + [dict(training_data.labels[-1], wkt="PolygonZ ((0 0 1, 1 0 1, 1 1 1, 0 0 1))")]}]),
    }
    paths = {}
    for i, (case, changes) in enumerate(cases.items()):
        job = helpers.tiny_job(raster.path, training_data.labels, str(folder / f"model{i}.hiriseice"))
        job.update(changes)
        paths[case] = helpers.write_job(folder / f"job{i}.json", job)
    done = helpers.run_worker_snippet(worker_python, BATCH, *paths.values())
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    out = {}
    for case, path in paths.items():
        entry = results[path]
        assert not str(entry["rc"]).startswith("crash"), f"{case}: {entry['rc']}"
        messages = [json.loads(line) for line in entry["stdout"].splitlines()]
        out[case] = (entry["rc"], messages, folder / f"model{list(paths).index(case)}.hiriseice")
    return out


@pytest.mark.parametrize(
    "case, code, words",
    [
        ("no labels", LabelError.code, ["No label lies over any of the rasters"]),
        ("single class", LabelError.code, ["All 36 labelled chunks are icy", "both icy and not icy"]),
        ("labels outside the raster", LabelError.code, ["None of the 36 labelled polygons lies on image data", "CRS"]),
        ("outlines outside the raster", LabelError.code, ["None of the ice-patch outlines lies within train_scene"]),
        ("raster smaller than a chunk", RasterError.code, ["48 x 48 px, smaller than one 64-px chunk"]),
        ("unknown label value", LabelError.code, ["label value(s) are not understood: 'maybe'", "icy / not icy"]),
        ("unknown label mode", LabelError.code, ["Unknown label mode 'points'"]),
        ("one block only", LabelError.code, ["one image block", "no honest validation split"]),
        ("no raster", LabelError.code, ["No raster was given"]),
        ("pull back past the base", LabelError.code, ["ANCHOR", "is 1.5", "from 0 (none) to 1"]),
        ("the model over the image", EngineError.code, ["OUTPUT_MODEL is '", "ESP_000011_1000_RED.tif', which this run reads as RASTERS"]),
        ("widths as the parameter writes them", LabelError.code, ["The job cannot be run: widths '4,8,8,16' is not a list of whole numbers"]),
        ("epochs as text", LabelError.code, ["epochs 'two' is not a whole number", "model/trainingjob.py"]),
        ("a raster without its path", LabelError.code, ["rasters[0] has no path"]),
        ("a label without its wkt", LabelError.code, ["rasters[0].labels is not a list of objects each with a wkt"]),
        ("validation beyond the whole", LabelError.code, ["validation_fraction 1.5 is not a share between 0 and 1"]),
        ("an unreadable label geometry", LabelError.code, ["cannot be read as WKT ('PolygonZ ((0 0 1"]),
    ],
)
def test_bad_training_inputs_are_explained(bad_jobs, case, code, words):
    rc, messages, output = bad_jobs[case]
    assert rc == 2
    assert messages and messages[-1]["type"] == "error" and [m["type"] for m in messages].count("error") == 1
    assert not [m for m in messages if m["type"] == "result"]
    assert messages[-1]["code"] == code
    for word in words:
        assert word in messages[-1]["message"], messages[-1]["message"]
    assert not output.exists()


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe\x00", None])
def test_a_job_file_that_cannot_be_read_is_said_so(worker_python, tmp_path, content):
    path = tmp_path / "job.json"
    if content is not None:
        path.write_bytes(content)
    run = helpers.run_worker(worker_python, "train", path)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-3000:]
    assert [m["type"] for m in run.messages] == ["error"] and f"The job file {path} cannot be read" in run.messages[0]["message"]


def test_a_bad_job_fails_the_worker_process_with_exit_status_2(training_data, worker_python, tmp_path):
    """The same as above, as a real process: exit status 2 and exactly one JSON line, the error."""
    job = helpers.tiny_job(training_data.raster.path, [{"wkt": training_data.labels[0]["wkt"], "label": "perhaps"}], str(tmp_path / "m.hiriseice"))
    run = helpers.run_worker(worker_python, "train", helpers.write_job(tmp_path / "job.json", job))
    assert run.returncode == 2, run.stderr[-3000:]
    assert len(run.messages) == 1 and run.messages[0]["type"] == "error" and run.messages[0]["code"] == LabelError.code
    assert "1 label value(s) are not understood: 'perhaps'" in run.messages[0]["message"]
    assert "Traceback" not in run.stderr


# --- splits (no TensorFlow) ---------------------------------------------------------------------


def test_block_groups():
    assert splitting.block_groups(["a", "b", "a"], [0, 5, 9], [0, 5, 9]) == ["a", "b", "a"]  # several images: by image
    # ...unless icy (or not-icy) chunks lie in one image only: holding it out would leave the other side one kind
    said = []
    assert splitting.block_groups(["a", "b", "a", "b"], [0, 5, 9, 0], [0, 5, 9, 0], labels=[1, 0, 0, 0], log=said.append) == ["a/b0_0", "b/b1_1", "a/b3_3", "b/b0_0"]
    assert said and said[0].startswith("validation is held out in blocks of each image, not by whole observation")
    assert splitting.block_groups(["a", "b", "a", "b"], [0, 5, 9, 0], [0, 5, 9, 0], labels=[1, 0, 0, 1]) == ["a", "b", "a", "b"]
    # ...but two products of one observation (the same ground on other pixel grids) stay one group there
    products = ["ESP_011111_1234_RED", "ESP_011111_1234_COLOR", "ESP_022222_1234_RED"]
    assert splitting.block_groups(products, [0, 0, 0], [0, 0, 0], labels=[1, 0, 0]) == ["ESP_011111_1234", "ESP_011111_1234", "ESP_022222_1234_RED/b0_0"]
    assert splitting.block_groups(["a"] * 4, [0, 2, 3, 8], [0, 2, 5, 1]) == ["a/b0_0", "a/b0_0", "a/b1_1", "a/b2_0"]  # one image: 3 x 3 blocks


def test_two_products_of_one_observation_are_one_group():
    """The RED and COLOR products (or two tiles) of an observation show the same ground."""
    ids = ["ESP_011605_1170_RED", "ESP_011605_1170_COLOR", "ESP_011606_1170_RED", "scene_b"]
    assert splitting.block_groups(ids, [0, 5, 9, 1], [0, 5, 9, 1]) == ["ESP_011605_1170", "ESP_011605_1170", "ESP_011606_1170", "scene_b"]
    # both products of one observation alone: blocks of the ground they share (blocks of each product's own pixels put the
    # same ground on both sides of the split), where the chunks' places are known; else blocks of each, as for one image
    places = [(150.0, -20.0), (160.0, -30.0), (450.0, -20.0)]
    three = ids[:2] + ["ESP_011605_1170_RED"]
    assert splitting.block_groups(three, [0, 5, 0], [0, 5, 9], places=places, ground_block=300.0) == ["ESP_011605_1170/m0_-1", "ESP_011605_1170/m0_-1", "ESP_011605_1170/m1_-1"]
    assert splitting.block_groups(ids[:2], [0, 5], [0, 5]) == ["ESP_011605_1170_RED/b0_0", "ESP_011605_1170_COLOR/b1_1"]


def test_repeat_images_of_a_site_are_split_as_one_observation(tiny_model, worker_python, tmp_path):
    """Two observations of one site (another date; the second in another CRS, its false easting 1,000 km more) beside one of
    other ground: split by observation, validation had been scored on the site's other date, ground the model trained on."""
    scene = tiny_model.scene.raster
    entry = tiny_model.job["rasters"][0]
    moved = osr.SpatialReference(wkt=scene.crs_wkt)
    moved.SetProjParm(osr.SRS_PP_FALSE_EASTING, moved.GetProjParm(osr.SRS_PP_FALSE_EASTING, 0.0) + 1e6)

    def shifted(metres):
        return (scene.geotransform[0] + metres,) + tuple(scene.geotransform[1:])

    placements = {"ESP_011111_1235_RED": (scene.geotransform, scene.crs_wkt), "ESP_022222_1235_RED": (shifted(1e6), moved.ExportToWkt()),
                  "ESP_033333_1235_RED": (shifted(2e6), scene.crs_wkt)}  # the third 2,000 km away
    rasters = []
    for name, (geotransform, crs_wkt) in placements.items():
        path = helpers.write_geotiff(tmp_path / f"{name}.tif", scene.bands, "UInt16", geotransform, crs_wkt)
        rasters.append(dict(entry, path=path, labels=[dict(label, wkt=_moved_wkt(label["wkt"], scene.geotransform, geotransform)) for label in entry["labels"]]))
    out = tmp_path / "repeats.hiriseice"
    job = dict(tiny_model.job, rasters=rasters, output_model=str(out), report=None, epochs=1)
    run = helpers.run_worker(worker_python, "train", helpers.write_job(tmp_path / "job.json", job)).check()
    logs = [m["message"] for m in run.messages if m["type"] == "log"]
    assert "ESP_011111_1235, ESP_022222_1235 image the same ground (repeat images of a site): their chunks are split as one observation's" in logs, logs
    split = modelfile.read_metadata(str(out))["training"]["split"]
    assert sorted(split["train_groups"] + split["validation_groups"]) == ["ESP_011111_1235+ESP_022222_1235", "ESP_033333_1235"], split


def test_chunks_of_other_images_on_validation_ground_are_left_out_of_training():
    """Blocks of ground cut through the chunks of a repeat image laid half a chunk off the first's grid."""
    from model.splitting import Ground

    side = 1000.0  # metres; chunk centres along a parallel near the equator, 1 km = 1/3396.19 rad
    first = [(i * side, 0.0) for i in range(6)]
    repeat = [(i * side + side / 2, 0.0) for i in range(6)]
    lon = [math.degrees(x / splitting.MARS_RADIUS_M) for x, _ in first + repeat]
    ground = Ground.from_degrees(lon, [0.0] * 12, [side] * 12)
    validation = np.zeros(12, bool)
    validation[[2, 3]] = True  # two chunks of the first image
    kept = splitting.without_overlaps(~validation, validation, [("a" if i < 6 else "b", int(i % 6 * side), 0, 1, 1) for i in range(12)], ground)
    # the repeat's chunks whose centres lie within a side of chunk 2 or 3: at 1.5, 2.5 and 3.5 km
    assert np.flatnonzero(~validation & ~kept).tolist() == [7, 8, 9]
    assert splitting.observations_on_shared_ground(["A"] * 6 + ["B"] * 6, ground) == {"A": "A+B", "B": "A+B"}
    apart = Ground.from_degrees(lon[:6] + [x + 1.0 for x in lon[6:]], [0.0] * 12, [side] * 12)  # a degree, 59 km, east
    assert splitting.observations_on_shared_ground(["A"] * 6 + ["B"] * 6, apart) == {"A": "A", "B": "B"}


def _site_grid(n, lat0, lon0, offset_m=0.0, side=64.0):
    """Longitudes and latitudes of an n x n grid of chunk centres side metres apart, offset_m south-east."""
    per_metre = math.degrees(1.0 / splitting.MARS_RADIUS_M)
    lons = [lon0 + (c * side + offset_m) * per_metre / math.cos(math.radians(lat0)) for r in range(n) for c in range(n)]
    lats = [lat0 - (r * side + offset_m) * per_metre for r in range(n) for c in range(n)]
    return lons, lats


def _site_groups(parts, labels_of, ground_only=True):
    ids, lons, lats, rows, cols, labels = [], [], [], [], [], []
    for (site_lons, site_lats), name in parts:
        n = int(math.isqrt(len(site_lons)))
        ids += [name] * len(site_lons)
        lons += site_lons
        lats += site_lats
        rows += [i // n for i in range(len(site_lons))]
        cols += [i % n for i in range(len(site_lons))]
        labels += [labels_of(name, i) for i in range(len(site_lons))]
    ground = splitting.Ground.from_degrees(lons, lats, [64.0] * len(lons))
    return ids, rows, cols, labels, splitting.block_groups(ids, rows, cols, labels=labels, ground=ground)


def test_a_site_of_two_dates_beside_an_ice_free_control_is_split_in_blocks_of_its_ground():
    """Two dates of one icy site and a control image without ice: icy chunks lie in one observation (the site), so the split
    falls back to blocks, and the site had become one whole group holding every icy chunk (no icy chunk left to train on)."""
    parts = [(_site_grid(10, -40.0, 10.0), "ESP_011111_1400_RED"), (_site_grid(10, -40.0, 10.0, 10.0), "ESP_022222_1400_RED"),
             (_site_grid(10, -30.0, 100.0), "ESP_033333_1500_RED")]
    ids, _, _, labels, groups = _site_groups(parts, lambda name, i: int(i % 3 == 0 and "033333" not in name))
    site = {g for g, i in zip(groups, ids) if "033333" not in i}
    assert len(site) > 4 and all(g.startswith("ESP_011111_1400+ESP_022222_1400/m") for g in site)
    train, validation = splitting.split_groups(groups, labels, 0.2, 0)
    assert np.asarray(labels)[train].any() and np.asarray(labels)[validation].any()


def test_a_later_round_that_adds_a_date_or_labels_knows_the_ground_its_base_trained_on():
    """Round 1 on two dates of a site; round 2 adds a third date, or more labels of the first: the keys had become
    'A+B+C' and blocks laid from the labels' mean had moved, so none of round 1's ground was kept out of validation."""
    a, b = (_site_grid(12, -55.0, 200.0), "ESP_011111_1250_RED"), (_site_grid(12, -55.0, 200.0, 10.0), "ESP_022222_1250_RED")
    first = _site_groups([a, b], lambda name, i: i % 2)[4]
    ids, rows, cols, _, second = _site_groups([a, b, (_site_grid(12, -55.0, 200.0, 20.0), "ESP_033333_1250_RED")], lambda name, i: i % 2)
    seen = set(splitting.groups_seen_before(second, ids, rows, cols, set(first)))
    assert all(g in seen for g, i in zip(second, ids) if "033333" not in i)
    more = _site_groups([(_site_grid(16, -55.0, 200.0), "ESP_011111_1250_RED"), b], lambda name, i: i % 2)[4]
    assert [more[r * 16 + c] for r in range(12) for c in range(12)] == first[:144]  # the first date's round-1 chunks keep their blocks


def test_no_training_chunk_shares_pixels_with_a_validation_chunk():
    """Labels of detect's STRIDE = CHUNK/2 grid: blocks of 3 x 3 chunk sides cut through chunks that overlap."""
    side, stride = 1024, 512
    boxes = [("scene", c * stride, r * stride, side, side) for r in range(11) for c in range(11)]
    groups = splitting.block_groups([b[0] for b in boxes], [b[2] // side for b in boxes], [b[1] // side for b in boxes])
    labels = np.arange(len(boxes)) % 2
    train, validation = splitting.split_groups(groups, labels, 0.25, 3)
    kept = splitting.without_overlaps(train, validation, boxes)

    def overlapping(a, b):
        return a[0] == b[0] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3] and a[2] < b[2] + b[4] and b[2] < a[2] + a[4]

    leaks = [(i, j) for i in np.flatnonzero(train) for j in np.flatnonzero(validation) if overlapping(boxes[i], boxes[j])]
    assert leaks, "the blocks alone leak (the case this guards against)"
    assert not [(i, j) for i, j in leaks if kept[i]]
    dropped = set(np.flatnonzero(train & ~kept).tolist())
    assert dropped == {i for i, _ in leaks}  # no more than the leaking ones
    other_image = [("other", 0, 0, side, side)]
    assert splitting.without_overlaps(np.array([True]), np.array([False]), other_image).tolist() == [True]


def check_split(groups, labels, train, validation):
    groups, labels = np.asarray(groups), np.asarray(labels)
    assert train.dtype == bool and validation.dtype == bool
    assert np.array_equal(train, ~validation) and train.any() and validation.any()
    assert not set(groups[train]) & set(groups[validation]), "a group on both sides"


@pytest.mark.parametrize("seed", range(15))
def test_split_groups_never_puts_a_group_on_both_sides(seed):
    rng = np.random.default_rng(seed)
    n_groups = int(rng.integers(2, 12))
    groups = [f"img{int(g)}" for g in rng.integers(0, n_groups, 200)]
    if len(set(groups)) < 2:
        groups[0], groups[1] = "imgA", "imgB"
    labels = rng.integers(0, 2, 200)
    train, validation = splitting.split_groups(groups, labels, 0.2, seed)
    check_split(groups, labels, train, validation)


@pytest.mark.parametrize("seed", range(3))
def test_split_groups_leaves_a_group_for_training_when_one_group_is_most_of_the_chunks(seed):
    """One small image and one of 99 chunks: the validation share is reached only by taking the large one, and then
    (without the limit of all groups but one) the small one too, leaving nothing to train on."""
    groups = ["a small one"] + ["b large one"] * 99
    labels = [1] + [0, 1] * 49 + [0]
    train, validation = splitting.split_groups(groups, labels, 0.3, seed)
    check_split(groups, labels, train, validation)


@pytest.mark.parametrize("seed", range(10))
def test_split_groups_has_both_classes_on_both_sides_when_possible(seed):
    # six pure-class images: two icy, four not icy; a balanced split exists
    groups = [f"image{i}" for i in range(6) for _ in range(10)]
    labels = [1 if i < 2 else 0 for i in range(6) for _ in range(10)]
    train, validation = splitting.split_groups(groups, labels, 0.3, seed)
    check_split(groups, labels, train, validation)
    labels = np.asarray(labels)
    assert set(labels[train]) == {0, 1} and set(labels[validation]) == {0, 1}


def test_split_groups_validation_share_and_determinism():
    groups = [f"b{i // 4}" for i in range(100)]  # 25 blocks of 4
    labels = [i % 2 for i in range(100)]
    train, validation = splitting.split_groups(groups, labels, 0.2, 42)
    assert validation.sum() == 20
    again = splitting.split_groups(groups, labels, 0.2, 42)
    assert np.array_equal(again[1], validation)
    assert any(not np.array_equal(splitting.split_groups(groups, labels, 0.2, s)[1], validation) for s in range(1, 5))
    described = splitting.describe_split(groups, train, validation)
    assert len(described["validation_groups"]) == 5 and len(described["train_groups"]) == 20


def test_split_groups_when_no_balanced_split_exists():
    """Only one group holds icy chunks: a split is still returned, groups still whole."""
    groups = ["a"] * 5 + ["b"] * 5 + ["c"] * 5
    labels = [1] * 5 + [0] * 10
    train, validation = splitting.split_groups(groups, labels, 0.3, 0)
    check_split(groups, labels, train, validation)


def test_split_groups_needs_two_groups():
    with pytest.raises(ValueError, match="two groups"):
        splitting.split_groups(["a"] * 10, [0, 1] * 5, 0.2, 0)


def test_fixed_split_keeps_exactly_the_given_validation_groups():
    """Continuing a model on the same groups: its validation groups stay validation, whole."""
    groups = ["a", "a", "b", "c", "c", "c", "d"]
    labels = [0, 1, 0, 1, 0, 1, 0]
    train, validation = splitting.fixed_split(groups, ["c", "z"])  # "z": a group the new data lacks
    assert validation.tolist() == [False, False, False, True, True, True, False]
    check_split(groups, labels, train, validation)
    for validation_groups in ([], ["z"], ["a", "b", "c", "d"]):
        with pytest.raises(ValueError, match="both sides"):
            splitting.fixed_split(groups, validation_groups)


# --- label values (no TensorFlow) ----------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        (1, 1), (0, 0), (1.0, 1), (0.0, 0), (True, 1), (False, 0), (np.int64(1), 1), (np.float64(0.0), 0),
        ("1", 1), ("icy", 1), (" ICY ", 1), ("Ice", 1), ("yes", 1), ("Y", 1), ("true", 1), ("t", 1),
        ("0", 0), ("not icy", 0), ("Not_Icy", 0), ("no ice", 0), ("no", 0), ("N", 0), ("false", 0), ("f", 0), ("noticy", 0),
        (None, None), ("", None), ("  ", None), (-1, None), ("-1", None), ("unclear", None), ("NULL", None), ("none", None),
        ("hard to identify", None), ("?", None), (float("nan"), None),
        ("1.0", 1), (" 0.0 ", 0), ("-1.0", None),  # numbers as text, as a CSV whose NULLs made the column float writes them
    ],
)
def test_parse_label(value, expected):
    assert labels.parse_label(value) == expected


@pytest.mark.parametrize("value", [2, 0.5, -2, "maybe", "icy?", "2", "si", "0.5", "nan", "inf"])
def test_parse_label_rejects_what_it_cannot_read(value):
    with pytest.raises(LabelError) as caught:
        labels.parse_label(value)
    assert repr(value) in str(caught.value) and "1 / 0" in str(caught.value)


def test_training_learns_a_separable_task_to_auc_0_95_on_an_unseen_scene(worker_python, tmp_path):
    """Bright blobs in every other chunk (the checkerboard) of two training scenes; 12 epochs of the
    tiny network; then detect on a third scene of other terrain (another seed) it never saw."""
    from conftest import training_scene
    from model import metrics

    scenes = [training_scene(tmp_path, name=f"learn{seed}.tif", seed=seed) for seed in (21, 22)]
    job = helpers.tiny_job(scenes[0].raster.path, scenes[0].labels, str(tmp_path / "learned.hiriseice"), epochs=12, patience=12)
    job["rasters"].append({"path": scenes[1].raster.path, "band": 0, "labels": scenes[1].labels})
    helpers.run_worker(worker_python, "train", helpers.write_job(tmp_path / "job.json", job)).check()
    unseen = training_scene(tmp_path, name="unseen.tif", seed=23)
    chunks = helpers.run_worker(worker_python, "detect", unseen.raster.path, "--model", job["output_model"]).check().result["chunks"]
    truth = [int(helpers.checkerboard(c["row"], c["col"])) for c in chunks]
    assert len(chunks) == 36
    auc = metrics.roc_auc([c["probability"] for c in chunks], truth)
    print(f"AUC on the unseen scene: {auc:.3f}")
    assert auc >= 0.95


def test_a_second_round_keeps_the_chunks_its_base_trained_on_out_of_validation():
    """A second round with the first round's labels kept split anew: a quarter of its validation chunks were the base's training
    chunks, which early stopping, the calibration and the guard's base-against-new comparison then judged on."""
    from model import training
    from model.protocol import SilentReporter

    ids = [f"ESP_0{n}0000_1300_RED" for n in range(1, 9) for _ in range(10)]
    labels = np.array(([1] * 5 + [0] * 5) * 8)
    groups = splitting.block_groups(ids, [0] * 80, [0] * 80, labels=labels)
    earlier = ["ESP_010000_1300", "ESP_020000_1300", "ESP_030000_1300", "ESP_040000_1300"]  # round 1's training observations
    seen = splitting.groups_seen_before(groups, ids, [0] * 80, [0] * 80, earlier)
    assert seen == earlier
    for seed in range(10):
        options = training.TrainOptions(seed=seed, validation_fraction=0.3, not_for_validation=seen)
        train, validation = training._split(labels, groups, options, SilentReporter())
        assert not set(np.asarray(groups)[validation].tolist()) & set(earlier) and validation.any() and train.any()
    # A base that split one image in blocks, continued on two: its blocks still count.
    assert splitting.groups_seen_before(groups, ids, [0] * 80, [4] * 80, ["ESP_010000_1300_RED/b0_1"]) == ["ESP_010000_1300"]


def test_a_third_round_keeps_the_first_rounds_training_chunks_out_of_validation():
    """A model records only its direct base: a round continuing a round (on other images) that continued the first
    validated on the first round's training blocks, and its guard judged the new model on chunks its lineage trained on."""
    labelled = {"images": 1}  # how a model trained on a geologist's labels records its data (trainingjob's provenance)
    first = {"training": {"data": labelled, "split": splitting.with_lineage({"train_groups": ["A/b0_0", "A/b1_3"], "validation_groups": ["A/b2_0"]}, None)}}
    assert splitting.lineage_groups(first) == ["A/b0_0", "A/b1_3"]
    second = {"training": {"data": labelled, "split": splitting.with_lineage({"train_groups": ["B"], "validation_groups": ["C"]}, first)}}
    assert splitting.lineage_groups(second) == ["A/b0_0", "A/b1_3", "B"]
    assert splitting.groups_seen_before(["A/b0_0", "A/b2_0"], ["A", "A"], [0, 2 * splitting.BLOCK_CHUNKS], [0, 0], splitting.lineage_groups(second)) == ["A/b0_0"]
    # The bundled model (not trained on labels) hands no groups on: its terrain observations are no user's validation chunks.
    default = {"training": {"split": {"train_groups": ["ESP_011111_1111"]}}}
    assert splitting.with_lineage({"train_groups": ["B"]}, default)["seen_groups"] == ["B"]
    assert splitting.lineage_groups({"training": {"split": {"train_groups": ["Z"]}}}) == ["Z"]  # a model from before seen_groups

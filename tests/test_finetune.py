"""Fine-tuning a base model (issue 8): training reads what detection reads, the chunk size it is tuned
at, replay sets in model files, the lower learning rate with warm-up and frozen batch norm, the guard
that compares base and new model, calibration only where it helps, and the errors a geologist meets.

TensorFlow runs in one worker process for the whole module (finetune_runs); the rest runs here in
QGIS's Python without it.
"""

import json
import math
import zipfile

import numpy as np
import pytest
from osgeo import gdal, ogr

import helpers
from model import calibration, finetune, labels, modelfile, splitting
from model.chunking import iter_chunks
from model.errors import LabelError, ModelFileError, RasterError
from model.gdalstate import gdal_exceptions
from model.grid import chunk_wkt, pixel_bounds_of_map_points
from model.preprocess import DEFAULT_NORMALISATION, network_input, normalise, to_uint8
from model.protocol import Reporter
from model.raster import RasterSource

CHUNK = helpers.TINY_CHUNK_SIZE  # the tiny base model's 64 px
SMALL = 32  # the geologist's chunks in the fine-tuning scene


class Recorder(Reporter):
    def __init__(self):
        super().__init__()
        self.lines = []

    def log(self, message):
        self.lines.append(message)


def rotated_geotransform(angle_deg=30.0, pixel=0.5):
    a = math.radians(angle_deg)
    return (1000.0, pixel * math.cos(a), pixel * math.sin(a), -3.2e6, pixel * math.sin(a), -pixel * math.cos(a))


# --- training reads what detection reads (no TensorFlow) ----------------------------------------


@pytest.mark.parametrize("chunk_size, input_size, border", [(64, 32, False), (48, 48, False), (128, 32, True)])
def test_training_and_detection_read_identical_arrays(tmp_path, chunk_size, input_size, border):
    """Each chunk polygon that detect writes on a rotated raster (edge chunks; or a DN-0 border), read
    back by training, is byte for byte the chunk detection scores."""
    raster = helpers.generate_raster(tmp_path, width=300, height=280, geotransform=rotated_geotransform(), rotated_border=border,
                                     icy_chunk_size=64, icy_pattern=helpers.checkerboard)
    with gdal_exceptions(), RasterSource(raster.path) as source:
        detected = {(s.window.x_off, s.window.y_off): s for s in iter_chunks(source, chunk_size, chunk_size, 0.0, input_size)}
        polygons = [{"wkt": chunk_wkt(raster.geotransform, s.window), "label": i % 2} for i, s in enumerate(detected.values())]
        read = labels.chunks_from_polygons(source, polygons, chunk_size, input_size, DEFAULT_NORMALISATION)
    assert len(read) == len(detected) > 4
    if border:
        assert any(not s.valid.all() for s in detected.values())
    else:
        assert any(s.window.width < chunk_size for s in read) and any(s.window.height < chunk_size for s in read)
    for sample in read:
        scored = detected[(sample.window.x_off, sample.window.y_off)]
        assert (sample.window.width, sample.window.height) == (scored.window.width, scored.window.height)
        detection = normalise(scored.data, scored.valid, DEFAULT_NORMALISATION)
        assert sample.image.dtype == np.uint8 and sample.image.shape == (input_size, input_size)
        assert sample.image.tobytes() == to_uint8(detection).tobytes()
        # ...and the network is handed the very same floats: training's uint8 / 255, detection's network_input.
        fed_in_training = sample.image.astype(np.float32) / np.float32(255.0)
        assert np.array_equal(fed_in_training, network_input(scored.data, scored.valid, DEFAULT_NORMALISATION))


def test_every_label_polygon_left_out_is_counted_with_its_reason(tmp_path):
    """A geologist's count of labels should add up: 25 chunks went in where 32 had a value, and a chunk
    labelled both ways (two label layers over the same grid) trained as both."""
    raster = helpers.generate_raster(tmp_path, name="grid.tif", width=4 * SMALL, height=4 * SMALL, seed=3)
    items = helpers.chunk_labels(raster, SMALL, lambda r, c: (r + c) % 2)  # 16 chunks
    gt = raster.geotransform
    extra = [dict(items[0]), dict(items[1], label=1 - items[1]["label"]), dict(items[1]),  # a repeat; chunk 1 labelled both ways, thrice
             {"wkt": helpers.window_wkt(gt, 40, 40, 1, 1), "label": 1},  # a 1-px box
             {"wkt": helpers.window_wkt(gt, 10 * SMALL, 0, SMALL, SMALL), "label": 0},  # off the image
             {"wkt": items[2]["wkt"], "label": "unclear"}, {"wkt": items[3]["wkt"], "label": None}]
    exclusion = helpers.window_wkt(gt, 3 * SMALL + 4, 3 * SMALL + 4, 8, 8)  # inside the last chunk; its neighbours touch it only
    said, warned = [], []
    with RasterSource(raster.path) as source:
        read = labels.chunks_from_polygons(source, items + extra, SMALL, 16, DEFAULT_NORMALISATION, [exclusion], said.append, warned.append)
    # chunk 1 (both ways), chunk 2 (labelled, and also marked unclear: it had been trained on as labelled) and the excluded one
    assert len(read) == 16 - 3
    assert said == ["grid: 23 label polygons; left out: 1 empty or marked unclear, 1 off the image or on its no-data, 1 under 2 px, 1 in an exclusion polygon, "
                    "1 repeating a chunk labelled alike, 5 on 2 chunk(s) whose labels disagree (icy, not icy or unclear)"], said
    # each disputed chunk named with the labels given it, for the geologists to reconcile
    assert warned == [f"grid: 2 chunk(s) are labelled differently by two label polygons (two geologists' layers, or two rounds), so they are not trained on: "
                      f"the chunk at pixel x {SMALL}, y 0 (a polygon {'icy' if items[1]['label'] else 'not icy'}, a polygon {'not icy' if items[1]['label'] else 'icy'}, "
                      f"a polygon {'icy' if items[1]['label'] else 'not icy'}); the chunk at pixel x {2 * SMALL}, y 0 (a polygon "
                      f"{'icy' if items[2]['label'] else 'not icy'}, a polygon unclear). Agree on one label for each, and train again."], warned


def test_an_unclear_multipolygon_over_two_labelled_chunks_is_counted_once(tmp_path):
    """One 'unclear' feature of two parts, each on a chunk another layer labels: both chunks are disputed, and the feature is
    one label among them, not two; the log had said "left out: -1 empty or marked unclear"."""
    raster = helpers.generate_raster(tmp_path, name="grid.tif", width=4 * SMALL, height=4 * SMALL, seed=3)
    items = helpers.chunk_labels(raster, SMALL, lambda r, c: (r + c) % 2)  # 16 chunks
    first, second = (ogr.CreateGeometryFromWkt(items[i]["wkt"]) for i in (0, 1))
    both = ogr.Geometry(ogr.wkbMultiPolygon)
    both.AddGeometry(first)
    both.AddGeometry(second)
    said, warned = [], []
    with RasterSource(raster.path) as source:
        read = labels.chunks_from_polygons(source, items + [{"wkt": both.ExportToWkt(), "label": "unclear"}], SMALL, 16, DEFAULT_NORMALISATION, [],
                                           said.append, warned.append)
    assert len(read) == 16 - 2
    assert said == ["grid: 17 label polygons; left out: 3 on 2 chunk(s) whose labels disagree (icy, not icy or unclear)"], said
    assert len(warned) == 1 and warned[0].count("a polygon unclear") == 2, warned


def test_multipart_curved_and_self_crossing_chunk_labels_are_read_as_the_chunks_they_draw(tmp_path):
    """A multipolygon of chunks (0, 0) and (0, 3) was read as its bounding window, labelling chunks (0, 1) and (0, 2) between
    them; a curve polygon's window came from its arcs' control points (a circle: under 2 px); a chunk drawn as a bow-tie
    was never excluded (GEOS shares no area with a polygon that crosses itself)."""
    raster = helpers.generate_raster(tmp_path, name="grid.tif", width=4 * SMALL, height=4 * SMALL, seed=3)
    gt = raster.geotransform

    def ring(x_off, y_off):  # a chunk's ring in map coordinates
        return helpers.window_wkt(gt, x_off, y_off, SMALL, SMALL)[len("POLYGON "):]

    two_chunks = f"MULTIPOLYGON({ring(0, 0)},{ring(3 * SMALL, 0)})"
    x, y = gdal.ApplyGeoTransform(gt, 1.5 * SMALL, 2.5 * SMALL)  # the centre of chunk (2, 1)
    r = 0.5 * SMALL * gt[1]  # a circle filling it
    circle = f"CURVEPOLYGON(CIRCULARSTRING({x - r} {y},{x + r} {y},{x - r} {y}))"
    x0, y0 = gdal.ApplyGeoTransform(gt, 0, 3 * SMALL)
    x1, y1 = gdal.ApplyGeoTransform(gt, SMALL, 4 * SMALL)
    bow_tie = f"POLYGON(({x0} {y0},{x1} {y1},{x1} {y0},{x0} {y1},{x0} {y0}))"  # chunk (3, 0), its corners crossed
    items = [{"wkt": two_chunks, "label": 1}, {"wkt": circle, "label": 0}, {"wkt": bow_tie, "label": 1}]
    said = []
    with RasterSource(raster.path) as source:
        read = labels.label_windows(source, items, [helpers.window_wkt(gt, 0, 3 * SMALL, SMALL, SMALL)])
        chunks = labels.chunks_from_polygons(source, items, SMALL, 16, DEFAULT_NORMALISATION, (), said.append)
    assert sorted((w.x_off, w.y_off, w.width, w.height, label) for w, label in read.found) == [
        (0, 0, SMALL, SMALL, 1), (SMALL, 2 * SMALL, SMALL, SMALL, 0), (3 * SMALL, 0, SMALL, SMALL, 1)]
    assert read.excluded == 1 and read.split == 1
    assert len(chunks) == 4 and "grid: multipart label polygons read as one chunk per part (1 more chunks than features)" in said


def test_label_polygons_all_too_small_for_chunks_are_said_to_be_outlines_in_the_wrong_mode(tmp_path):
    raster = helpers.generate_raster(tmp_path, name="grid.tif", width=4 * SMALL, height=4 * SMALL, seed=3)
    boxes = [{"wkt": helpers.window_wkt(raster.geotransform, 10 * i, 10, 1, 1), "label": i % 2} for i in range(1, 6)]
    with RasterSource(raster.path) as source, pytest.raises(LabelError, match=r"All 5 labelled polygons over grid are under 2 px across, too small to be chunks\. "
                                                                               r".*choose LABEL_MODE=1 \(ice-patch outlines\)\.$"):
        labels.chunks_from_polygons(source, boxes, SMALL, 16, DEFAULT_NORMALISATION)


def test_a_chunk_polygon_on_a_rotated_raster_is_read_at_its_pixel_footprint(tmp_path):
    """The old reading took the polygon's map-space envelope: on a raster rotated 30 degrees a 64-px chunk became 87 px."""
    gt = rotated_geotransform()
    geometry = ogr.CreateGeometryFromWkt(helpers.window_wkt(gt, 64, 128, 64, 64))
    window = labels.polygon_window(geometry, gt, 300, 260)
    assert (window.x_off, window.y_off, window.width, window.height) == (64, 128, 64, 64)
    x0, x1, y0, y1 = geometry.GetEnvelope()
    envelope = pixel_bounds_of_map_points(gt, [(x0, y0), (x1, y0), (x1, y1), (x0, y1)])
    assert envelope[2] - envelope[0] > 85  # what the envelope would have read


def test_typical_side_is_the_detect_chunk_size():
    from model.grid import chunk_grid

    windows = list(chunk_grid(1000, 700, 256, 256))  # 3 x 3 full chunks and 7 smaller edge chunks
    assert labels.typical_side(windows) == 256


@pytest.mark.parametrize(
    "given, label_side, base, expected, words",
    [
        (0, 256, 1024, 256, "training at 256-px chunks (the label polygons' size); the model was trained at 1024 px; it is tuned at 256 px and records "
                            "chunk_size 256, so detect uses 256 by default"),
        (256, 256, 1024, 256, "training at 256-px chunks (CHUNK_SIZE); the model was trained at 1024 px; it is tuned at 256 px"),
        (1024, 256, 1024, 1024, "training at 1024-px chunks (CHUNK_SIZE); labels are 256-px chunks but CHUNK_SIZE is 1024: each is read as detect reads a "
                                "256-px edge of a 1024-px chunk"),
        (128, 256, None, 128, "training at 128-px chunks (CHUNK_SIZE); labels are 256-px chunks but CHUNK_SIZE is 128: each is read whole and shrunk to the input"),
        (0, None, 512, 512, "training at 512-px chunks (the base model's)"),  # outlines, continuing
        (0, 64, 64, 64, "training at 64-px chunks (the label polygons' size)"),
        (0, None, None, 1024, "training at 1024-px chunks (the default)"),  # outlines from scratch: the paper's
        (8, 8, None, 8, "training at 8-px chunks (CHUNK_SIZE)"),  # small chunks, asked for
    ],
)
def test_the_chunk_size_tuned_at_and_what_the_log_says(given, label_side, base, expected, words):
    reporter = Recorder()
    assert labels.tuned_chunk_size(given, [label_side] * 3 if label_side else [], base, 1024, reporter, 128) == expected
    assert len(reporter.lines) == 1 and reporter.lines[0].startswith(words), reporter.lines
    if "CHUNK_SIZE is" not in words and "trained at" not in words:
        assert reporter.lines[0] == words


def test_a_chunk_size_below_8_px_is_refused():
    with pytest.raises(RasterError, match="too small; use at least 8"):
        labels.tuned_chunk_size(5, [5], None, 1024, Recorder(), 128)


def test_label_polygons_far_smaller_than_the_input_are_taken_for_outlines_in_the_wrong_mode():
    """8-px boxes (outlines given as chunk polygons) had trained a model at 8-px chunks without a word,
    which detect then used on 32,896 chunks of a small scene."""
    with pytest.raises(LabelError, match=r"The label polygons are 8 px across, too small to be chunks: the network would read each at its 128-px input\. "
                                         r".*choose LABEL_MODE=1 \(ice-patch outlines\), or set CHUNK_SIZE"):
        labels.tuned_chunk_size(0, [8], None, 1024, Recorder(), 128)
    assert labels.tuned_chunk_size(0, [32], None, 1024, Recorder(), 128) == 32  # a quarter of the input: chunks still


def test_label_polygons_of_two_chunk_sizes_are_warned_about():
    """Round 1's 256-px chunks and round 2's 512-px ones given together: the 512-px polygons were read whole and shrunk,
    and the validation chunks among them judged the model at a scale detect never reads, without a word."""
    reporter = Recorder()
    reporter.warnings = []
    reporter.warning = reporter.warnings.append
    assert labels.tuned_chunk_size(0, [256] * 100 + [512] * 92 + [200] * 4, 1024, 1024, reporter, 128) == 256
    (warned,) = reporter.warnings
    assert warned.startswith("92 of the 196 label polygons are larger than the 256-px chunks trained at (92 of 512 px): each is read whole and shrunk")
    reporter.warnings.clear()
    labels.tuned_chunk_size(0, [256] * 100 + [200] * 4, None, 1024, reporter, 128)  # edge chunks, smaller: read as detect reads them
    labels.tuned_chunk_size(128, [256] * 10, None, 1024, reporter, 128)  # a whole layer larger: the log's note says it
    assert reporter.warnings == []


# --- replay and the guard's rules (no TensorFlow) ---------------------------------------------


def test_balanced_replay_draws():
    y = np.array([0] * 30 + [1] * 6)
    assert finetune.balanced_counts(y, 10) == (5, 5)
    assert finetune.balanced_counts(y, 20) == (14, 6)  # few icy: the rest not icy
    assert finetune.balanced_counts(y, 100) == (30, 6)  # capped by the set's size
    drawn = finetune.balanced_draw(y, 20, np.random.default_rng(0))
    assert len(set(drawn.tolist())) == 20 and y[drawn].sum() == 6


def test_replay_targets_blend_the_label_with_the_base_models_probability():
    labels, logits = np.array([1, 0, 1]), np.array([0.0, 2.0, -40.0])
    assert np.allclose(finetune.replay_targets(labels, logits, 0.0), labels)
    assert np.allclose(finetune.replay_targets(labels, logits, 1.0), [0.5, 1 / (1 + math.exp(-2.0)), 0.0])
    assert np.allclose(finetune.replay_targets(labels, logits, 0.5), [0.75, 0.5 / (1 + math.exp(-2.0)), 0.5])


def test_replay_split_keeps_both_classes_apart_and_whole():
    replay = {"images": np.zeros((50, 4, 4), np.uint8), "labels": np.array([1] * 20 + [0] * 30), "kinds": np.array(["ice"] * 20 + ["terrain"] * 30)}
    replay["images"][:, 0, 0] = np.arange(50)
    pool, held = finetune.split_replay(replay, 7)
    assert (held["labels"].sum(), len(held["labels"])) == (4, 10) and len(pool["labels"]) == 40
    assert not set(pool["images"][:, 0, 0].tolist()) & set(held["images"][:, 0, 0].tolist())


def scores(auc, chunks=20, fpr=0.1, icy=10, tpr=0.7):
    return {"chunks": chunks, "icy": icy, "roc_auc": auc, "accuracy": 0.8, "tpr": tpr, "fpr": fpr}


@pytest.mark.parametrize(
    "validation, replay, worse_on",
    [
        ((0.90, 0.95), None, []),
        ((0.90, 0.90), (0.97, 0.96), []),  # within the replay tolerance
        # below the base by less than the AUC's standard error on 10 + 10 chunks (0.076 at their mean): a fifth of labels wrong had called an
        # equally good model worse 4 times in 10
        ((0.90, 0.89), None, []),
        ((0.90, 0.70), None, ["on your 20 validation chunks (AUC 0.700 against 0.900, more than the 0.102 that so few chunks leave uncertain)"]),
        ((1.00, 0.99), None, []),  # a perfect base: its own standard error is 0, and one pair lost in 100 had been called worse
        ((0.90, 0.95), (0.97, 0.90), ["on 20 held-out examples of what the base model knew (AUC 0.900 against 0.970)"]),
        ((0.90, 0.80), (0.97, 0.90), ["on your 20 validation chunks", "and on 20 held-out examples"]),
        # the ranking holds, the whole score moves up: false alarms on what the base knew
        ((0.90, 0.95), (0.82, 0.84, 0.07, 0.10), []),
        # the set named whole: "those examples" had read as the validation chunks when their clause was the only one before it
        ((0.90, 0.95), (0.82, 0.84, 0.07, 0.17), ["base model on the ice-free ones of 20 held-out examples of what the base model knew (17% called icy against 7%)"]),
        # only ice-free examples held out (a small replay set): no AUC, but their false alarms still count
        ((0.90, 0.95), (math.nan, math.nan, 0.0, 1.0), ["on the ice-free ones of 20 held-out examples of what the base model knew (100% called icy against 0%)"]),
        # the ranking holds, the whole score moves down: ice the base knew is lost (a reader's noisy labels: 0.73 -> 0.60)
        ((0.90, 0.95), (0.91, 0.90, 0.0, 0.0, 0.73, 0.60), ["on the icy ones of 20 held-out examples of what the base model knew (60% called icy against 73%)"]),
        ((0.90, 0.95), (0.91, 0.90, 0.0, 0.0, 0.73, 0.65), []),  # within REPLAY_TPR_TOLERANCE
    ],
)
def test_the_guard_says_plainly_when_the_new_model_is_worse(validation, replay, worse_on):
    base_fpr, new_fpr = replay[2:4] if replay and len(replay) >= 4 else (0.1, 0.1)
    base_tpr, new_tpr = replay[4:] if replay and len(replay) == 6 else (0.7, 0.7)
    result = finetune.compare({"base": scores(validation[0]), "new": scores(validation[1])},
                              {"base": scores(replay[0], fpr=base_fpr, tpr=base_tpr), "new": scores(replay[1], fpr=new_fpr, tpr=new_tpr)} if replay else None)
    assert result["lines"][0].startswith(f"base model: AUC {validation[0]:.3f} on these 20 validation chunks (accuracy 0.80, TPR 0.70, FPR 0.10 at 0.5); new model: AUC {validation[1]:.3f}")
    within = 0 < validation[0] - validation[1] < 0.076
    assert len(result["lines"]) == 1 + bool(replay) + within, result["lines"]
    if within:
        assert result["lines"][1].startswith("the new model's AUC on your validation chunks is 0.010 below the base's, within the 0.0"), result["lines"]
    assert not result["doubtful"]
    assert result["worse"] == bool(worse_on)
    if worse_on:
        assert result["verdict"].startswith("The new model is WORSE than the base model ") and result["verdict"].endswith("; keep using the base model, or label more chunks.")
        for words in worse_on:
            assert words in result["verdict"]
    else:
        assert "WORSE" not in result["verdict"]


def test_the_guard_says_when_too_few_validation_chunks_judge():
    """3 validation chunks had read "AUC 1.000 ... The new model is not worse" without a word of doubt."""
    few = finetune.compare({"base": scores(0.9, chunks=3, icy=1), "new": scores(1.0, chunks=3, icy=1)}, None)
    assert few["verdict"] == ("The new model is not worse than the base model on these chunks. Your validation chunks hold only 1 icy and 2 not icy, "
                              "too few to judge by (fewer than 10 of each): label more chunks, of both kinds, for a sure judgement.")
    assert "too few" not in finetune.compare({"base": scores(0.9), "new": scores(0.95)}, None)["verdict"]
    # the edge: 9 of a class is too few, 10 enough
    assert "too few" in finetune.compare({"base": scores(0.9, chunks=19, icy=9), "new": scores(0.95, chunks=19, icy=9)}, None)["verdict"]
    assert "too few" not in finetune.compare({"base": scores(0.9, chunks=20, icy=10), "new": scores(0.95, chunks=20, icy=10)}, None)["verdict"]
    assert few["doubtful"] and not few["worse"]  # the plugin then says it as a warning, not among the log's lines


def test_the_guard_says_when_the_labels_and_the_base_disagree():
    """A reader's labels with 30 % flipped: the base ranked them at 0.56 and its own held-out examples at 0.91, and nothing said
    that the labels, or the ice, were unlike what it knew."""
    replay = {"base": scores(0.91), "new": scores(0.90)}
    noisy = finetune.compare({"base": scores(0.56), "new": scores(0.58)}, replay)
    assert noisy["doubtful"] and not noisy["worse"]
    assert ("The base model ranks your validation chunks at AUC 0.56 but its own held-out examples at 0.91: either your ice is unlike any it knew, "
            "or some labels are wrong.") in noisy["verdict"]
    assert not finetune.compare({"base": scores(0.80), "new": scores(0.85)}, replay)["doubtful"]
    assert not finetune.compare({"base": scores(0.56), "new": scores(0.58)}, {"base": scores(0.70), "new": scores(0.70)})["doubtful"]  # a base that knows little


def test_a_calibration_fit_that_loses_the_ice_the_base_knew_leaves_for_the_base_calibration():
    """Labels partly wrong make confident scores look miscalibrated, and the fit that lowers their ECE is flatter: a reader's
    fifth of 60 labels flipped chose a fit of a fifth of the base's slope 85 times in 100. The rehearsal's held-out icy
    examples, whose labels are right, decide: a fit calling fewer of them icy than the base's calibration leaves."""
    rng = np.random.default_rng(3)
    labels = np.array([0] * 40 + [1] * 40)
    logits = np.where(labels == 1, 2.0, -2.0) + rng.normal(0, 1.0, 80)
    base = {"method": "platt", "a": 1.2, "b": 0.0}
    flat = {"method": "platt", "a": 0.25, "b": -0.6}
    kept, why = finetune.keep_known_ice(flat, base, logits, labels)
    assert kept is base and why.startswith("a Platt fit to your validation chunks (slope 0.25, the base's 1.20) would call ") and "so the base's is kept" in why
    steep = {"method": "platt", "a": 1.0, "b": 0.1}
    assert finetune.keep_known_ice(steep, base, logits, labels) == (steep, None)
    assert finetune.keep_known_ice(flat, base, logits[labels == 0], labels[labels == 0]) == (flat, None)  # no icy example to judge by


def test_a_calibration_that_would_invert_the_scores_is_refused():
    """Validation chunks the network ranks backwards: a fit with a negative slope would call its icy scores ice-free."""
    rng = np.random.default_rng(5)
    y = np.array([0] * 30 + [1] * 30)
    logits = -4.0 * (y - 0.5) + rng.normal(0, 1.0, 60)
    base = {"method": "platt", "a": 1.0, "b": 0.0}
    chosen, record = finetune.choose_calibration(logits, y, base, "kept the base model's")
    assert chosen is base and record["choice"] == "kept the base model's" and "too near chance (or backwards)" in record["reason"]
    weakly = -0.6 * (y - 0.5) + rng.normal(0, 0.3, 60)  # ranked backwards, but only just: a fit's slope would be about -0.6
    chosen, record = finetune.choose_calibration(weakly, y, base, "kept the base model's")
    assert chosen is base and record["choice"] == "kept the base model's", record


def test_no_calibration_is_fitted_to_chunks_ranked_at_chance():
    """A reader's second round ranked its validation chunks at ROC AUC 0.50, yet a Platt fit 'lowered their ECE' (cross-validated)
    by flattening every score toward their share of ice: slope 0.30 against the base's 1.16, and known ice's recall fell 0.60 -> 0.20."""
    rng = np.random.default_rng(11)
    y = np.array([0] * 30 + [1] * 30)
    logits = 3.0 + rng.normal(0, 2.0, 60)  # over-confident and blind: every chunk scored icy, whatever it holds
    base = {"method": "platt", "a": 1.16, "b": 0.0}
    assert calibration.expected_calibration_error(calibration.cross_validated(logits, y), y) < calibration.expected_calibration_error(
        calibration.apply(logits, base), y)  # what had let the fit in
    chosen, record = finetune.choose_calibration(logits, y, base, "kept the base model's")
    assert chosen is base and record["reason"].startswith("the new model ranks these validation chunks at ROC AUC 0.")


def test_scores_that_are_not_numbers_have_no_roc_auc():
    from model import metrics

    assert math.isnan(metrics.roc_auc([math.nan] * 4, [0, 1, 0, 1])) and math.isnan(metrics.roc_auc([0.1, math.nan, 0.2, 0.3], [0, 1, 0, 1]))
    assert metrics.roc_auc([0.1, 0.9, 0.2, 0.8], [0, 1, 0, 1]) == 1.0


def test_calibration_is_fitted_only_where_it_helps():
    rng = np.random.default_rng(3)
    y = np.array([0] * 30 + [1] * 30)
    logits = 4.0 * (y - 0.5) + rng.normal(0, 1.0, 60)  # over-confident: Platt scaling helps
    chosen, record = finetune.choose_calibration(logits, y, None, "none")
    assert chosen["method"] == "platt" and record["choice"] == "fitted" and "lowers the validation ECE" in record["reason"]
    base = {"method": "platt", "a": 0.5, "b": 0.0}
    few = np.r_[np.arange(12), np.arange(30, 39)]  # 9 icy: too few
    chosen, record = finetune.choose_calibration(logits[few], y[few], base, "kept the base model's")
    assert chosen is base and record == {"choice": "kept the base model's", "reason": "9 icy and 12 not-icy validation chunks; a fit needs 10 of each"}
    already = calibration.fit_platt(logits, y)  # nothing left to improve
    chosen, record = finetune.choose_calibration(logits, y, already, "kept the base model's")
    assert chosen is already and record["choice"] == "kept the base model's" and "would not lower" in record["reason"]
    assert finetune.choose_calibration(logits, y, None, "none", allowed=False)[1]["choice"] == "none"


def test_a_fit_is_judged_on_chunks_it_was_not_fitted_on():
    rng = np.random.default_rng(9)
    y = np.array([0] * 21 + [1] * 21)
    logits = 3.0 * (y - 0.5) + rng.normal(0, 1.5, 42)  # 42 validation chunks of a round, as in the adaptation benchmark
    base = {"method": "platt", "a": 1.0, "b": 0.0}
    kept_ece = calibration.expected_calibration_error(calibration.apply(logits, base), y)
    in_sample = calibration.expected_calibration_error(calibration.apply(logits, calibration.fit_platt(logits, y)), y)
    assert in_sample < kept_ece  # judged on its own chunks, the fit would have replaced the base's
    chosen, record = finetune.choose_calibration(logits, y, base, "kept the base model's")
    assert chosen is base and record["reason"] == f"a Platt fit would not lower the validation ECE ({kept_ece:.3f}, fitted {calibration.expected_calibration_error(calibration.cross_validated(logits, y), y):.3f} cross-validated)"


def test_cross_validated_probabilities_come_from_fits_on_the_other_folds():
    rng = np.random.default_rng(5)
    y = np.array([0] * 12 + [1] * 8)
    logits = 2.0 * (y - 0.5) + rng.normal(0, 1.0, 20)
    out = calibration.cross_validated(logits, y, folds=4)
    fold = np.r_[np.arange(12) % 4, np.arange(8) % 4]  # each class dealt round the folds in order
    for k in range(4):
        held = fold == k
        assert np.allclose(out[held], calibration.apply(logits[held], calibration.fit_platt(logits[~held], y[~held])))


def test_a_fit_is_moved_to_the_survey_share_the_base_model_was_moved_to():
    rng = np.random.default_rng(4)
    y = np.array([0] * 30 + [1] * 30)
    logits = 4.0 * (y - 0.5) + rng.normal(0, 1.0, 60)
    fit = calibration.fit_platt(logits, y)
    base = calibration.with_prior({"method": "platt", "a": 0.3, "b": 0.0}, 0.5, 0.2)
    chosen, record = finetune.choose_calibration(logits, y, base, "kept the base model's")
    assert record["choice"] == "fitted" and "to the base model's survey share, 20%" in record["reason"]
    assert chosen["a"] == pytest.approx(fit["a"]) and chosen["b"] == pytest.approx(fit["b"] + np.log(0.25))
    assert finetune.survey_prior(chosen) == pytest.approx(0.2)
    # the base judged at these chunks' share: already this fit there, so it is kept as it is
    moved_fit = calibration.with_prior(fit, 0.5, 0.2)
    chosen, record = finetune.choose_calibration(logits, y, moved_fit, "kept the base model's")
    assert chosen is moved_fit and "would not lower" in record["reason"]


def test_a_damaged_replay_set_names_the_parameter(tmp_path):
    metadata = modelfile.new_metadata("m", 4, 8, DEFAULT_NORMALISATION, {}, {"icy": 0.6, "hard_low": 0.4}, replay_sha256="0" * 64)
    path = tmp_path / "base.hiriseice"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(modelfile.METADATA_MEMBER, json.dumps(metadata))
        archive.writestr(modelfile.KERAS_MEMBER, b"network")
        archive.writestr(modelfile.REPLAY_MEMBER, b"not the checksummed data")
    with pytest.raises(ModelFileError) as caught:
        modelfile.load_replay(str(path), "BASE_MODEL")
    assert "replay examples" in str(caught.value) and "checksum" in str(caught.value) and "leave BASE_MODEL empty to train from scratch" in str(caught.value)


def test_a_model_file_without_replay_set(tiny_model):
    assert modelfile.load_replay(tiny_model.path) is None
    assert "replay" not in tiny_model.metadata


# --- fine-tuning in the worker ------------------------------------------------------------------

WORKER = r"""
import contextlib, io, json, sys
import numpy as np
from model.training import prepare_tensorflow
prepare_tensorflow([4])  # tiny networks: oneDNN off before TensorFlow loads (DEVELOPERS.md)
from model import calibration, finetune, modelfile
from model.__main__ import main
from model.labels import chunks_from_polygons
from model.preprocess import DEFAULT_NORMALISATION
from model.raster import RasterSource

plan = json.load(open(sys.argv[1]))
# The base: the session's tiny model, given a replay set of its own training chunks.
network, meta = modelfile.load(plan["tiny"])
with RasterSource(plan["base_raster"]) as source:
    found = chunks_from_polygons(source, plan["base_labels"], meta["chunk_size"], meta["input_size"], DEFAULT_NORMALISATION)
y = np.array([f.label for f in found])
replay = {"images": np.stack([f.image for f in found]), "labels": y, "kinds": np.where(y == 1, "blob", "terrain")}
modelfile.save(network, meta, plan["base"], replay=replay)
# A second base that also carries false-alarm reference crops: the base raster's ice-free chunks once more.
reference = replay["images"][y == 0]
modelfile.save(network, meta, plan["base_with_reference"], replay={
    "images": np.concatenate([replay["images"], reference]), "labels": np.concatenate([y, np.zeros(len(reference), int)]),
    "kinds": np.concatenate([replay["kinds"], np.full(len(reference), finetune.REFERENCE_KIND)])})

out = {}
for case, job in plan["jobs"].items():
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        rc = main(["--jsonl", "train", job])
    out[case] = {"rc": rc, "messages": [json.loads(line) for line in stdout.getvalue().splitlines()]}

# Batch norm kept the base's statistics and scale; the other layers learned.
base_net, _ = modelfile.load(plan["base"])
tuned_net, _ = modelfile.load(plan["tuned"])
bn, other = [], []
for a, b in zip(base_net.layers, tuned_net.layers):
    same = all(np.array_equal(x, z) for x, z in zip(a.get_weights(), b.get_weights()))
    if a.get_weights():
        (bn if type(a).__name__ == "BatchNormalization" else other).append(same)
out["weights_unchanged"] = {"batch_norm": bn, "other": other}
# Metrics read a distilled target as the label it stands for.
from model.fitting import hard_label_metric
import keras
accuracy = hard_label_metric(keras.metrics.BinaryAccuracy, "accuracy")
accuracy.update_state(np.array([[0.75], [0.25], [0.6], [0.4]]), np.array([[0.9], [0.1], [0.2], [0.3]]))
out["hard_label_accuracy"] = float(accuracy.result())
# Pulled all the way back after every step, the anchored run ends where the base began.
anchored, _ = modelfile.load(plan["anchored"])
out["anchored_max_change"] = max(float(np.abs(x - z).max()) for a, b in zip(base_net.layers, anchored.layers) for x, z in zip(a.get_weights(), b.get_weights()))
# The held calibration's top tenth on the reference crops, against the base's (finetune.hold_reference_tail).
from model.network import logit_model
def tail(path):
    net, meta = modelfile.load(path)
    scores = calibration.log_odds(np.asarray(logit_model(net).predict(reference[..., None].astype(np.float32) / 255.0, verbose=0)).reshape(-1), meta["calibration"])
    return float(np.mean(np.quantile(scores, finetune.REFERENCE_TAIL)))
out["reference_tail"] = {"base": tail(plan["base_with_reference"]), "new": tail(plan["with_reference"])}
print(json.dumps(out))
"""


def job_for(folder, name, raster, items, **changes):
    job = helpers.tiny_job(raster.path, items, str(folder / f"{name}.hiriseice"), chunk_size=0, report=str(folder / f"{name}.html"))
    del job["learning_rate"]  # the defaults of a fine-tuning run
    job.update(changes)
    return helpers.write_job(folder / f"{name}.json", job)


def single_class_validation(folder):
    """Icy chunks in one 3 x 3-chunk block only, and a seed whose split validates on a block without any."""
    raster = helpers.generate_raster(folder, name="one_icy_block.tif", width=6 * SMALL, height=6 * SMALL, seed=9, icy_chunk_size=SMALL,
                                     icy_pattern=lambda r, c: helpers.checkerboard(r, c) and r < 3 and c < 3)
    items = helpers.chunk_labels(raster, SMALL, lambda r, c: int(helpers.checkerboard(r, c) and r < 3 and c < 3))
    y = [item["label"] for item in items]
    groups = splitting.block_groups(["one_icy_block"] * 36, [r for r in range(6) for _ in range(6)], [c for _ in range(6) for c in range(6)])
    for seed in range(50):
        train, validation = splitting.split_groups(groups, y, 0.25, seed)
        if not np.asarray(y)[validation].any():
            return raster, items, seed, sorted(set(np.asarray(groups)[validation].tolist()))
    raise AssertionError("no seed validates on a block without icy chunks")


@pytest.fixture(scope="module")
def finetune_runs(tiny_model, training_data, worker_python, tmp_path_factory):
    folder = tmp_path_factory.mktemp("finetune")
    base = folder / "base_with_replay.hiriseice"
    base_with_reference = folder / "base_with_reference.hiriseice"
    scene = helpers.generate_raster(folder, name="scene32.tif", width=6 * SMALL, height=6 * SMALL, seed=5, icy_chunk_size=SMALL, icy_pattern=helpers.checkerboard)
    scene_labels = helpers.chunk_labels(scene, SMALL, lambda r, c: int(helpers.checkerboard(r, c)))
    narrow = helpers.generate_raster(folder, name="narrow.tif", width=60, height=120, seed=6, icy_chunk_size=20, icy_pattern=helpers.checkerboard)
    narrow_labels = helpers.chunk_labels(narrow, 20, lambda r, c: int(helpers.checkerboard(r, c)))
    one_block, one_block_labels, seed, validation_blocks = single_class_validation(folder)
    a_file = folder / "a_file"
    a_file.write_text("not a folder")
    jobs = {
        "tuned": job_for(folder, "tuned", scene, scene_labels, base_model=str(base)),
        "anchored": job_for(folder, "anchored", scene, scene_labels, base_model=str(base), anchor=1.0),
        "with reference": job_for(folder, "with_reference", scene, scene_labels, base_model=str(base_with_reference)),
        "with unlabelled": job_for(folder, "unlabelled", scene, helpers.chunk_labels(scene, SMALL, lambda r, c: int(helpers.checkerboard(r, c)) if r < 4 else None),
                                   base_model=str(base), unlabelled=1.0),
        "broken": job_for(folder, "broken", scene, scene_labels, base_model=str(base), learning_rate=5.0),
        "narrow at 64 px": job_for(folder, "narrow64", narrow, narrow_labels, base_model=tiny_model.path, chunk_size=64),
        "narrow at 20 px": job_for(folder, "narrow20", narrow, narrow_labels, base_model=tiny_model.path, chunk_size=20),
        "single-class validation": job_for(folder, "oneclass", one_block, one_block_labels, seed=seed),
        "unwritable model": job_for(folder, "unwritable", scene, scene_labels, output_model=str(a_file / "m.hiriseice")),
        "unwritable report": job_for(folder, "unwritable_report", scene, scene_labels, report=str(a_file / "r.html")),
    }
    plan = {"tiny": tiny_model.path, "base": str(base), "base_raster": training_data.raster.path, "base_labels": training_data.labels,
            "tuned": str(folder / "tuned.hiriseice"), "anchored": str(folder / "anchored.hiriseice"), "jobs": jobs,
            "base_with_reference": str(base_with_reference), "with_reference": str(folder / "with_reference.hiriseice")}
    done = helpers.run_worker_snippet(worker_python, WORKER, helpers.write_job(folder / "plan.json", plan), timeout=900)
    assert done.returncode == 0, done.stderr[-5000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return dict(out=out, folder=folder, base=str(base), jobs=jobs, validation_blocks=validation_blocks, a_file=a_file)


def logs(run):
    return [m["message"] for m in run["messages"] if m["type"] == "log"]


def succeeded(finetune_runs, case):
    run = finetune_runs["out"][case]
    assert run["rc"] == 0 and run["messages"][-1]["type"] == "result", run["messages"][-3:]
    return run


def failed(finetune_runs, case):
    run = finetune_runs["out"][case]
    assert run["rc"] == 2 and [m["type"] for m in run["messages"]].count("error") == 1 and run["messages"][-1]["type"] == "error", run["messages"][-3:]
    return run["messages"][-1]


def test_tuned_at_the_label_chunks_size_and_recorded(finetune_runs):
    run = succeeded(finetune_runs, "tuned")
    assert ("training at 32-px chunks (the label polygons' size); the model was trained at 64 px; it is tuned at 32 px and records chunk_size 32, "
            "so detect uses 32 by default") in logs(run)
    metadata = modelfile.read_metadata(str(finetune_runs["folder"] / "tuned.hiriseice"))
    assert (metadata["chunk_size"], metadata["input_size"], metadata["base_model"]["chunk_size"]) == (SMALL, helpers.TINY_INPUT_SIZE, CHUNK)


def test_fine_tuning_lowers_the_rate_warms_up_and_keeps_batch_norm(finetune_runs):
    run = succeeded(finetune_runs, "tuned")
    training = modelfile.read_metadata(str(finetune_runs["folder"] / "tuned.hiriseice"))["training"]
    # 27 training chunks + 28 replay examples in batches of 8: 7 steps an epoch, 14 in all, a fifth of them rounded up
    assert (training["learning_rate"], training["warmup_steps"], training["frozen_batch_norm_layers"]) == (1e-4, 3, 6)
    assert "learning rate 0.0001, warmed up over 3 steps; 6 batch-norm layers keep the base model's statistics; each step pulls the weights 2 % of the way back to the base model's" in logs(run)
    unchanged = finetune_runs["out"]["weights_unchanged"]
    assert unchanged["batch_norm"] == [True] * 6
    assert not any(unchanged["other"])  # every convolution and the classifier moved
    assert [row["epoch"] for row in run["messages"][-1]["history"]] == [1, 2] and (training["base_epochs"], training["total_epochs"]) == (2, 4)


def test_replay_is_mixed_into_training_never_into_validation_and_carried_forward(finetune_runs, training_data):
    run = succeeded(finetune_runs, "tuned")
    # 36 replay examples (18 icy): 4 + 4 held out, 28 in the pool; three times the user's 27 training chunks wanted, the whole pool drawn
    assert ("replay: 28 of the base model's 28 replay examples (14 icy) in each epoch (all it carries, of the 81 the replay ratio asks for: your chunks weigh "
            "more in this round than the ratio meant), aimed 50% at the base model's own probability and 50% at their label;"
            " 8 more held out to check what it still knows") in logs(run)
    tuned = str(finetune_runs["folder"] / "tuned.hiriseice")
    metadata = modelfile.read_metadata(tuned)
    assert metadata["training"]["replay"] == {"per_epoch": 28, "pool": 28, "held_out": 8, "reference": 0}
    assert (metadata["training"]["replay_distillation"], metadata["training"]["anchor"]) == (finetune.REPLAY_DISTILLATION, finetune.ANCHOR_PULL)
    assert (metadata["metrics"]["validation_chunks"], metadata["training"]["chunks"]) == (9, 36)  # the user's chunks only
    assert metadata["replay"] == {"examples": 36, "icy": 18, "kinds": {"blob": 18, "terrain": 18}}
    base, carried = modelfile.load_replay(finetune_runs["base"]), modelfile.load_replay(tuned, "BASE_MODEL")
    for key in ("images", "labels", "kinds"):
        assert np.array_equal(base[key], carried[key]), key
    # the base's replay set is the tiny model's training chunks, read as training reads them
    with gdal_exceptions(), RasterSource(training_data.raster.path) as source:
        expected = labels.chunks_from_polygons(source, training_data.labels, CHUNK, helpers.TINY_INPUT_SIZE, DEFAULT_NORMALISATION)
    assert np.array_equal(base["images"], np.stack([s.image for s in expected])) and base["images"].dtype == np.uint8


def test_reference_crops_are_never_trained_on_and_hold_the_false_alarms(finetune_runs):
    run = succeeded(finetune_runs, "with reference")
    # the same 28 + 8 rehearsal examples as without a reference; its 18 crops only score
    assert ("replay: 28 of the base model's 28 replay examples (14 icy) in each epoch (all it carries, of the 81 the replay ratio asks for: your chunks weigh "
            "more in this round than the ratio meant), aimed 50% at the base model's own probability and 50% at their label;"
            " 8 more held out to check what it still knows; 18 real ice-free reference crops to hold its false alarms at the base model's") in logs(run)
    calibration_line = next(m for m in logs(run) if m.startswith("calibration: "))
    assert "real ice-free reference crops" in calibration_line and "the base model " in calibration_line
    metadata = modelfile.read_metadata(str(finetune_runs["folder"] / "with_reference.hiriseice"))
    assert metadata["training"]["replay"] == {"per_epoch": 28, "pool": 28, "held_out": 8, "reference": 18}
    assert metadata["replay"]["kinds"][finetune.REFERENCE_KIND] == 18  # carried forward for the next round
    assert "reference crops" in metadata["metrics"]["calibration"]["false_alarms"]
    tails = finetune_runs["out"]["reference_tail"]
    assert tails["new"] <= tails["base"] + 1e-6, tails


def test_a_round_that_scores_the_reference_higher_is_lowered_to_the_base_models_tail():
    base = np.random.default_rng(3).normal(-3.0, 1.0, 128)
    spec = {"method": "platt", "a": 1.5, "b": -0.5, "prior": {"fitted_share": 0.5, "prior": 0.2}}
    new_logits = (base + 0.8 - spec["b"]) / spec["a"]  # the new model's calibrated scores: the base's + 0.8
    held, said = finetune.hold_reference_tail(spec, new_logits, base)
    assert held["a"] == 1.5 and held["prior"] == spec["prior"] and math.isclose(held["b"], -0.5 - 0.8, abs_tol=1e-9)
    assert np.allclose(calibration.log_odds(new_logits, held), base)
    assert said.startswith("intercept lowered by 0.800 so that its highest scores on 128 real ice-free reference crops match the base model's:")
    assert said.endswith(f"the base model {int((base >= 0).sum())}")
    lower = (base - 0.3 - spec["b"]) / spec["a"]
    kept, said = finetune.hold_reference_tail(spec, lower, base)  # already below the base: untouched, never raised
    assert kept is spec and said == f"it calls {int((base - 0.3 >= 0).sum())} of 128 real ice-free reference crops icy, the base model {int((base >= 0).sum())}"
    none_held, _ = finetune.hold_reference_tail(None, base + 0.8, base)
    assert none_held["a"] == 1.0 and math.isclose(none_held["b"], -0.8, abs_tol=1e-9)


def test_reference_crops_stay_out_of_the_rehearsal():
    replay = {"images": np.arange(12, dtype=np.uint8)[:, None, None] * np.ones((1, 2, 2), np.uint8), "labels": np.r_[np.ones(4), np.zeros(8)].astype(int),
              "kinds": np.array(["blob"] * 4 + ["terrain"] * 4 + [finetune.REFERENCE_KIND] * 4)}
    mix = finetune.ReplayMix(replay, 6, seed=1)
    assert sorted(mix.reference[:, 0, 0].tolist()) == [8, 9, 10, 11]
    rehearsed = np.r_[mix.pool["images"][:, 0, 0], mix.held_out["images"][:, 0, 0]]
    assert sorted(rehearsed.tolist()) == list(range(8))
    assert mix.record()["reference"] == 4


def test_training_metrics_read_distilled_targets_as_their_labels(finetune_runs):
    assert finetune_runs["out"]["hard_label_accuracy"] == 0.75  # three of four on the right side of 0.5


def test_an_anchor_of_one_keeps_the_base_weights(finetune_runs):
    succeeded(finetune_runs, "anchored")
    assert finetune_runs["out"]["anchored_max_change"] < 1e-6
    assert modelfile.read_metadata(str(finetune_runs["folder"] / "anchored.hiriseice"))["training"]["anchor"] == 1.0


def test_unlabelled_chunks_of_the_image_are_aimed_at_the_base_models_probability(finetune_runs):
    """24 chunks labelled in the top four rows of a 6 x 6 grid; one unlabelled chunk per label is
    asked for, and the 12 of the last two rows are all there are."""
    lines = logs(succeeded(finetune_runs, "with unlabelled"))
    assert "scene32: 24 labelled chunks, 12 icy; 12 unlabelled 32-px chunks of it drawn" in lines
    assert any(line.startswith("unlabelled: 12 chunks of your images that you did not label, in each epoch, aimed at the base model's own probability (mean ") for line in lines)
    assert modelfile.read_metadata(str(finetune_runs["folder"] / "unlabelled.hiriseice"))["training"]["unlabelled_chunks"] == 12
    assert not any(line.startswith("unlabelled:") for line in logs(succeeded(finetune_runs, "tuned")))  # none by default


def test_unlabelled_chunks_never_overlap_a_label(tmp_path):
    from model.labels import label_windows, unlabelled_chunks
    from model.preprocess import DEFAULT_NORMALISATION
    from model.raster import RasterSource

    raster = helpers.generate_raster(tmp_path, name="grid.tif", width=4 * SMALL, height=4 * SMALL, seed=3)
    items = helpers.chunk_labels(raster, SMALL, lambda r, c: 1 if r == c else None)
    with RasterSource(raster.path) as source:
        labelled = [window for window, _ in label_windows(source, items).found]
        drawn = unlabelled_chunks(source, labelled, SMALL, 16, 0.5, DEFAULT_NORMALISATION, 100, np.random.default_rng(0))
        assert len(drawn) == 12 and all(image.shape == (16, 16) and image.dtype == np.uint8 for image in drawn)
        assert len(unlabelled_chunks(source, labelled, SMALL, 16, 0.5, DEFAULT_NORMALISATION, 5, np.random.default_rng(0))) == 5


def test_the_guard_scores_both_models_on_the_same_chunks(finetune_runs):
    run = succeeded(finetune_runs, "tuned")
    metrics = run["messages"][-1]["metrics"]
    comparison = metrics["comparison"]
    assert comparison["validation"]["base"]["chunks"] == comparison["validation"]["new"]["chunks"] == 9
    assert comparison["replay"]["base"]["chunks"] == comparison["replay"]["new"]["chunks"] == 8
    assert set(comparison["replay"]["new"]["called_icy_by_kind"]) == {"blob", "terrain"}
    assert comparison["lines"][0].startswith("base model: AUC ") and " on these 9 validation chunks " in comparison["lines"][0]
    assert " on 8 held-out examples of what it knew " in comparison["lines"][1]
    for line in comparison["lines"] + [comparison["verdict"]]:
        assert line in logs(run)
    metadata = modelfile.read_metadata(str(finetune_runs["folder"] / "tuned.hiriseice"))
    assert metadata["metrics"]["comparison"] == comparison
    report = open(finetune_runs["folder"] / "tuned.html", encoding="utf-8").read()
    assert "<h2>Base model against new model</h2>" in report and "held-out replay examples (what the base model knew)" in report
    assert "<th>calibration</th><td>kept the base model&#x27;s (" in report  # 9 validation chunks are too few to fit
    assert "<th>held out for validation</th><td>scene32/b" in report


def test_a_worse_model_is_called_worse(finetune_runs):
    run = succeeded(finetune_runs, "broken")  # learning rate 5: the weights blow up
    verdict = run["messages"][-1]["metrics"]["comparison"]["verdict"]
    assert verdict.startswith("The new model is WORSE than the base model on your 9 validation chunks (AUC ")
    assert "; keep using the base model, or label more chunks. Your validation chunks hold only " in verdict and verdict in logs(run)
    assert f"<b>{verdict}</b>" in open(finetune_runs["folder"] / "broken.html", encoding="utf-8").read()


def test_the_small_raster_advice_can_be_followed(finetune_runs):
    error = failed(finetune_runs, "narrow at 64 px")
    assert error["code"] == RasterError.code
    assert "narrow is 60 x 120 px, smaller than one 64-px chunk. Use a larger image or a smaller CHUNK_SIZE." in error["message"]
    run = succeeded(finetune_runs, "narrow at 20 px")  # the same base model, CHUNK_SIZE 20 honoured
    assert modelfile.read_metadata(str(finetune_runs["folder"] / "narrow20.hiriseice"))["chunk_size"] == 20
    assert any(m.startswith("training at 20-px chunks (CHUNK_SIZE); the model was trained at 64 px; it is tuned at 20 px") for m in logs(run))


def test_a_validation_set_of_one_class_stops_the_run(finetune_runs):
    error = failed(finetune_runs, "single-class validation")
    assert error["code"] == LabelError.code
    blocks = ", ".join(finetune_runs["validation_blocks"])
    assert f"The 9 validation chunks ({blocks}) are all not icy, so the model cannot be judged on them." in error["message"]
    assert "Label some icy chunks in other parts of the image" in error["message"] and "or give another raster" in error["message"]
    assert not (finetune_runs["folder"] / "oneclass.hiriseice").exists()


@pytest.mark.parametrize("case, parameter", [("unwritable model", "OUTPUT_MODEL"), ("unwritable report", "REPORT")])
def test_an_unwritable_output_fails_before_any_chunk_is_read(finetune_runs, case, parameter):
    run = finetune_runs["out"][case]
    assert run["rc"] == 2 and len(run["messages"]) == 1  # no log: nothing was read, nothing trained
    error = run["messages"][0]
    assert error["type"] == "error" and error["message"].startswith(f"{parameter} cannot be written to '{finetune_runs['a_file']}'")
    assert "Choose a folder you can write to." in error["message"]


def test_false_alarms_on_the_rehearsed_ice_free_examples_are_held_at_the_base_models_rate():
    rng = np.random.default_rng(4)
    base_p = np.r_[np.full(95, 0.1), np.full(5, 0.7)]  # the base calls 5 of 100 icy
    spec = {"method": "platt", "a": 2.0, "b": 0.0, "prior": {"fitted_share": 0.5, "prior": 0.2}}
    shifted = rng.normal(-1.0, 1.0, 100)  # the new model calls about 16 icy
    held, said = finetune.hold_false_alarms(spec, shifted, base_p)
    assert (calibration.apply(shifted, held) >= 0.5).sum() == 5 and held["a"] == 2.0 and held["prior"] == spec["prior"]
    assert said.startswith("intercept lowered by ") and "5 of the base model's 100 rehearsed ice-free examples" in said
    assert finetune.hold_false_alarms(spec, shifted - 5.0, base_p) == (spec, None)  # fewer than the base: untouched
    no_calibration, _ = finetune.hold_false_alarms(None, shifted, base_p)
    assert (calibration.sigmoid(no_calibration["a"] * shifted + no_calibration["b"]) >= 0.5).sum() == 5


def test_a_raster_given_twice_by_a_link_is_read_once_with_both_labels(tmp_path):
    """The same file by another path or a link had been a second raster: every chunk of it trained on twice, unsaid.
    Read once, the labels given with each path together, a chunk labelled under both counted once."""
    import io

    from model.trainingjob import distinct_rasters

    raster = helpers.generate_raster(tmp_path, name="scene.tif", width=4 * SMALL, height=4 * SMALL, seed=3)
    link = tmp_path / "link.tif"
    link.symlink_to(raster.path)
    first = [{"wkt": helpers.window_wkt(raster.geotransform, 0, 0, SMALL, SMALL), "label": 1}]
    second = first + [{"wkt": helpers.window_wkt(raster.geotransform, SMALL, 0, SMALL, SMALL), "label": 0}]
    log = io.StringIO()
    rasters = distinct_rasters([{"path": raster.path, "labels": first}, {"path": str(link), "labels": second},
                                {"path": str(link), "band": 1, "labels": first}], Reporter(stream=log))
    assert [(entry["path"], len(entry["labels"]), entry.get("band", 0)) for entry in rasters] == [(raster.path, 3, 0), (str(link), 1, 1)]
    assert f"{link} is the file of {raster.path}, given before: it is read once" in log.getvalue()
    with RasterSource(raster.path) as source:
        read = labels.label_windows(source, rasters[0]["labels"])
    assert len(read.found) == 2 and read.repeated == 1

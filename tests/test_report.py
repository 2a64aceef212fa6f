"""The HTML reports (model/report.py): matplotlib charts, drawn in the worker, embedded as PNG.

The reports are written by the worker's Python from known inputs (a generated Mars raster, chunks
with set probabilities, a training history and validation scores), so every number they show
can be checked; the figures are inspected as matplotlib objects (line data, axis limits, texts).
"""

import base64
import json
import re

import numpy as np
import pytest
from osgeo import gdal

import helpers

WRITE_REPORTS = r'''
import json, math, sys
sys.path.insert(0, "tests")
import numpy as np
import helpers
from model import calibration, metrics, report
from model.inference import Detection

folder, with_label = sys.argv[1], sys.argv[2] == "label"
import os
os.makedirs(folder, exist_ok=True)
# Centre at latitude -55, longitude 10 (equirectangular, standard parallel -55), 0.5 m pixels.
width, height, pixel = 640, 512, 0.5
x0 = helpers.MARS_RADIUS_M * math.cos(math.radians(-55.0)) * math.radians(10.0) - width / 2 * pixel
gt = list(helpers.default_geotransform(width, height, pixel))
gt[0] = x0
raster = helpers.generate_raster(folder, "ESP_012345_0950_RED.tif", width=width, height=height, geotransform=tuple(gt))
probabilities = [0.05, 0.2, 0.35, 0.45, 0.5, 0.62, 0.91, 0.15] * 10
chunks = []
for i, p in enumerate(probabilities):
    row, col = divmod(i, 10)
    chunks.append(dict(chunk_id=i, row=row, col=col, x_off=col * 64, y_off=row * 64, width=64, height=64, probability=p,
                       **{"class": "icy" if p >= 0.6 else ("hard to identify" if p >= 0.4 else "not icy")}))
summary = dict(image_id="ESP_012345_0950_RED", category="good", chunks=80, icy_chunks=20, hard_chunks=20, mean_probability=0.4, max_probability=0.91,
               dropped_chunks=0, chunk_size=64, stride=64, model_name="m", model_version="1", device="CPU", chunks_per_s=50.0, runtime_s=1.2,
               icy_threshold=0.6, hard_low=0.4, solar_longitude=None, incidence_angle=None, centre_latitude=None, category_rule="paper",
               min_valid=0.95, tta=True)
if with_label:
    summary.update(solar_longitude=215.3, incidence_angle=62.1, centre_latitude=-54.98)
detection = Detection(raster=dict(path=raster.path, image_id="ESP_012345_0950_RED", width=width, height=height, geotransform=gt, crs_wkt=raster.crs_wkt),
                      chunks=chunks, summary=summary)
metadata = {"name": "m", "version": "1", "training": {
    "data": "real HiRISE terrain (hirise-terrain: 868 crops) with ice of the families natural shade, stone field; no real ice labels",
    "families": ["natural shade", "stone field", "rendered caster"], "held_out_family": "crater wall", "split": {"train_groups": ["ESP_011425_1775"]}}}
report.detection_report(detection, f"{folder}/detect.html", metadata=metadata)
import dataclasses
coarse = "'ESP_012345_0950_RED.tif' has 25 m pixels, coarser than any HiRISE map product (0.25-2 m); the scores of this one say little."
report.detection_report(dataclasses.replace(detection, warnings=[coarse]), f"{folder}/detect_unknown_model.html")
from model import modelfile
report.detection_report(detection, f"{folder}/detect_default_model.html", metadata=modelfile.read_metadata(modelfile.default_model_path()))

history = [dict(epoch=e, loss=0.7 / e, accuracy=0.5 + 0.04 * e, val_loss=0.75 / e, val_accuracy=0.5 + 0.03 * e, val_precision=0.6, val_recall=0.6, val_auc=0.8) for e in range(1, 6)]
rng = np.random.default_rng(0)
y = rng.integers(0, 2, 200)
# Scores squeezed into 0.25..0.66: a badly calibrated model whose points sit far from y = x.
p = np.clip(0.25 + 0.41 * (0.3 * y + 0.7 * rng.random(200)), 0.25, 0.66)
evaluation = {"validation_chunks": 200, "validation_icy": int(y.sum()), "validation_groups": ["ESP_000001_1234"], "at_0.5": metrics.summary(p, y, 0.5),
              "at_icy_threshold": metrics.summary(p, y, 0.6), "ece_uncalibrated": 0.3, "ece_calibrated": calibration.expected_calibration_error(p, y),
              "calibration": {"choice": "none", "reason": "test"}, "reliability": calibration.reliability(p, y), "best_epoch": 4}
trained = {"name": "tuned", "version": "2", "input_size": 64, "chunk_size": 64, "base_model": {"name": "hiriseice-default", "version": "3", "chunk_size": 256},
           "training": {"epochs_run": 5, "data": {"label_mode": "chunks", "images": [{"image_id": "ESP_012345_0950_RED", "chunks": 80, "icy": 20}]}}}
report.training_report(history, evaluation, trained, f"{folder}/train.html")

def lines(ax):
    return [{"label": l.get_label(), "x": [float(v) for v in l.get_xdata()], "y": [float(v) for v in l.get_ydata()]} for l in ax.get_lines()]

def axes(figure):
    return [{"xlim": list(ax.get_xlim()), "ylim": list(ax.get_ylim()), "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(),
             "yticks": [float(t) for t in ax.get_yticks()], "lines": lines(ax), "texts": [t.get_text() for t in ax.texts]} for ax in figure.axes]

reliability = report.reliability_figure(evaluation["reliability"], evaluation["ece_calibrated"])
histogram = report.histogram_figure(probabilities, 0.6, 0.4)
curves = report.curves_figure(history, 4)
quick, labelled_all = report.quicklook_figure(raster.path, chunks)
print(json.dumps({
    "reliability": axes(reliability), "reliability_points": [(r["mean_predicted"], r["observed"]) for r in evaluation["reliability"] if r["count"]],
    "histogram": axes(histogram), "curves": axes(curves), "quicklook": axes(quick), "quicklook_all_labelled": labelled_all,
    "diagonal_label": report.DIAGONAL_LABEL, "ece": evaluation["ece_calibrated"], "matrix": evaluation["at_icy_threshold"],
}))
'''


@pytest.fixture(scope="module")
def reports(worker_python, tmp_path_factory):
    folder = tmp_path_factory.mktemp("reports")
    done = helpers.run_worker_snippet(worker_python, WRITE_REPORTS, folder, "label", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Axes3D" not in done.stderr and "Warning" not in done.stderr, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    texts = {name: (folder / f"{name}.html").read_text(encoding="utf-8") for name in ("detect", "detect_unknown_model", "detect_default_model", "train")}
    return {"folder": folder, "figures": figures, **texts}


def pngs(text):
    """The embedded images, decoded with GDAL: [(alt, band count, width, height, pixels)]."""
    out = []
    for alt, data in re.findall(r"<img alt='([^']*)' src='data:image/png;base64,([A-Za-z0-9+/=]+)'/>", text):
        raw = base64.b64decode(data)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n"
        gdal.FileFromMemBuffer("/vsimem/report.png", raw)
        try:
            image = gdal.Open("/vsimem/report.png")
            pixels = np.stack([image.GetRasterBand(i + 1).ReadAsArray() for i in range(image.RasterCount)])
            out.append((alt, image.RasterCount, image.RasterXSize, image.RasterYSize, pixels))
            image = None
        finally:
            gdal.Unlink("/vsimem/report.png")
    return out


def test_reports_are_one_file_with_png_plots_and_no_svg(reports):
    for name in ("detect", "train"):
        text = reports[name]
        assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
        assert "<svg" not in text and "<polyline" not in text
        assert not re.search(r"src=['\"](?!data:)", text), "every image is embedded"
    detect = pngs(reports["detect"])
    assert [alt for alt, *_ in detect] == ["scene with chunk grid and chunk IDs", "histogram of chunk probabilities"]
    train = pngs(reports["train"])
    assert [alt for alt, *_ in train] == ["loss and accuracy per epoch", "confusion matrix at the icy threshold", "reliability diagram"]
    for alt, bands, width, height, pixels in detect + train:
        assert bands == 3 and width >= 300 and height >= 250, alt
        assert pixels.std() > 10, f"{alt} is blank"


def test_quicklook_has_the_scene_shape_chunk_ids_and_a_scale_bar(reports):
    from model.report import SCALE_STRIP_PX

    alt, _, width, height, _ = pngs(reports["detect"])[0]
    assert width / (height - SCALE_STRIP_PX) == pytest.approx(640 / 512, rel=0.01) and width == pytest.approx(900, abs=1)
    quick = reports["figures"]["quicklook"][0]
    assert reports["figures"]["quicklook_all_labelled"] is True
    assert sorted(t for t in quick["texts"] if t.isdigit()) == sorted(str(i) for i in range(80))
    # 640 px of 0.5 m: the bar is the largest 1-2-5 length within a fifth of the width (64 m), in a strip of its own under the scene
    assert "50 m" not in quick["texts"] and reports["figures"]["quicklook"][1]["texts"] == ["50 m"]


def test_quicklook_labels_only_likely_chunks_when_chunks_are_small(reports, worker_python):
    code = r'''
import json, sys
sys.path.insert(0, "tests")
import helpers
from model import report
raster = helpers.generate_raster(sys.argv[1], "big.tif", width=2048, height=1024)
chunks = [dict(chunk_id=i, x_off=(i % 64) * 32, y_off=(i // 64) * 32, width=32, height=32, probability=0.7 if i in (5, 700) else 0.45 if i == 9 else 0.1) for i in range(64 * 32)]
figure, labelled_all = report.quicklook_figure(raster.path, chunks)
print(json.dumps([labelled_all, sorted(t.get_text() for t in figure.axes[0].texts if t.get_text().isdigit()), [t.get_text() for ax in figure.axes for t in ax.texts if not t.get_text().isdigit()]]))
'''
    done = helpers.run_worker_snippet(worker_python, code, reports["folder"])
    assert done.returncode == 0, done.stderr[-3000:]
    labelled_all, ids, others = json.loads(done.stdout.strip().splitlines()[-1])
    assert labelled_all is False and ids == ["5", "700", "9"]
    assert others == ["200 m"]  # 2048 px of 0.5 m: a fifth is 205 m


def test_quicklook_edges_tell_the_classes_apart_without_their_colours(reports, worker_python):
    """Hard to identify dashed and icy solid, both dark, as the map style draws them: only the colour had told them apart."""
    code = r'''
import json, sys
sys.path.insert(0, "tests")
import helpers
from model import report
raster = helpers.generate_raster(sys.argv[1], "classes.tif", width=192, height=64)
chunks = [dict(chunk_id=i, x_off=i * 64, y_off=0, width=64, height=64, probability=p) for i, p in enumerate((0.1, 0.5, 0.9))]
figure, _ = report.quicklook_figure(raster.path, chunks)
edges = [c for c in figure.axes[0].collections if all(f[3] == 0 for f in c.get_facecolors())][0]
print(json.dumps([[list(map(float, edges.get_edgecolors()[i][:3])), [d[1] is not None for d in edges.get_linestyles()][i]] for i in range(3)]))
'''
    done = helpers.run_worker_snippet(worker_python, code, reports["folder"])
    assert done.returncode == 0, done.stderr[-3000:]
    (not_icy, plain), (hard, hard_dashed), (icy, icy_dashed) = json.loads(done.stdout.strip().splitlines()[-1])
    assert not plain and hard_dashed and not icy_dashed
    assert max(hard) < 0.4 and max(icy) < 0.4 and max(not_icy) > 0.4


def test_histogram_has_axes_and_the_thresholds(reports):
    (ax,) = reports["figures"]["histogram"]
    assert ax["xlim"] == [0.0, 1.0] and ax["xlabel"] == "ice probability of the chunk" and ax["ylabel"] == "chunks"
    assert len(ax["yticks"]) >= 3  # a real y axis, not just a maximum
    marks = {line["label"]: line["x"] for line in ax["lines"]}
    assert marks == {"hard to identify from 0.4": [0.4, 0.4], "icy from 0.6": [0.6, 0.6]}


HISTOGRAM_BARS = r'''
import json
from model import report
figure = report.histogram_figure([0.6, 0.6, 0.6, 0.4, 0.35], 0.6, 0.4)
print(json.dumps([(float(patch.get_x()), float(patch.get_height())) for patch in figure.axes[0].patches if patch.get_height()]))
'''


def test_a_probability_on_a_threshold_is_counted_in_the_bar_from_it(worker_python, tmp_path):
    """np.histogram's edge at 0.6 is 0.6000000000000001: chunks at exactly 0.6, icy, stood in the bar below the icy line."""
    done = helpers.run_worker_snippet(worker_python, HISTOGRAM_BARS, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    bars = {round(left, 10): height for left, height in json.loads(done.stdout.strip().splitlines()[-1])}
    assert bars == {0.6: 3, 0.4: 1, 0.35: 1}


PNG_WITHOUT_A_TEMPORARY_FOLDER = """
import base64, sys, tempfile
import numpy as np
from osgeo import gdal
from model import report
tempfile.tempdir = sys.argv[1]  # a folder that is not there: as full or unwritable as a temporary folder gets
rgb = np.zeros((6, 10, 3), np.uint8)
rgb[:, :, 0] = 200
uri = report.png_data_uri(rgb)
gdal.FileFromMemBuffer("/vsimem/back.png", base64.b64decode(uri.split(",", 1)[1]))
back = gdal.Open("/vsimem/back.png")
print(back.RasterXSize, back.RasterYSize, int(back.GetRasterBand(1).ReadAsArray().min()))
"""


def test_the_reports_figures_need_no_temporary_folder(worker_python, tmp_path):
    """Each figure went through a temporary PNG file: a full temporary folder failed detect's report with a libpng traceback,
    after the whole image had been scored."""
    done = helpers.run_worker_snippet(worker_python, PNG_WITHOUT_A_TEMPORARY_FOLDER, tmp_path / "not-there")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["10", "6", "200"]


def test_reliability_diagram_diagonal_is_y_equals_x_on_fixed_axes(reports):
    """The old chart scaled its axes to the data (0.25-0.66) and drew its 'diagonal' corner to corner."""
    (ax,) = reports["figures"]["reliability"]
    assert ax["xlim"] == [0.0, 1.0] and ax["ylim"] == [0.0, 1.0]
    diagonal = [line for line in ax["lines"] if line["label"] == reports["figures"]["diagonal_label"]]
    assert len(diagonal) == 1
    (x0, x1), (y0, y1) = diagonal[0]["x"], diagonal[0]["y"]
    assert (x0, y0, x1, y1) == (0.0, 0.0, 1.0, 1.0)
    # The points are the bins' (mean predicted, observed), placed in data coordinates.
    points = [line for line in ax["lines"] if line["label"].startswith("validation chunks")][0]
    assert list(zip(points["x"], points["y"])) == [tuple(p) for p in reports["figures"]["reliability_points"]]
    assert 0.25 <= min(points["x"]) and max(points["x"]) <= 0.66
    assert ax["xlabel"] == "mean predicted probability" and ax["ylabel"] == "observed icy share"


def test_training_curves_and_confusion_matrix(reports):
    loss, accuracy = reports["figures"]["curves"]
    assert loss["ylabel"] == "binary cross-entropy" and accuracy["ylim"] == [0.0, 1.0]
    for ax in (loss, accuracy):
        labels = {line["label"]: line for line in ax["lines"]}
        assert labels["training"]["x"] == [1.0, 2.0, 3.0, 4.0, 5.0] and labels["kept epoch 4"]["x"] == [4.0, 4.0]
    assert loss["lines"][0]["y"] == pytest.approx([0.7 / e for e in range(1, 6)])
    text = reports["train"]
    m = reports["figures"]["matrix"]
    assert f"<tr><td>labelled icy</td><td>{m['true_positive']}</td><td>{m['false_negative']}</td></tr>" in text
    assert "<h2>Reliability diagram (validation, as written)</h2>" in text and "y = x" in text
    assert "<th>what the model has seen</th><td>Trained and validated on 80 labelled chunks (20 icy) of 1 image(s): ESP_012345_0950_RED. It continues hiriseice-default 3" in text


def test_the_image_warnings_stand_in_the_report_beside_its_category(reports):
    """A 25 m browse image's "the scores say little" was in the log only; the report gave its category bare."""
    assert ("<tr><th>warning</th><td>&#x27;ESP_012345_0950_RED.tif&#x27; has 25 m pixels, coarser than any HiRISE map product (0.25-2 m); "
            "the scores of this one say little.</td></tr>") in reports["detect_unknown_model"]
    assert "<th>warning</th>" not in reports["detect"]


def test_detection_report_texts(reports):
    text = reports["detect"]
    # The image's centre, computed back from the CRS (latitude -55, longitude 10 by construction).
    centre = re.search(r"<th>image centre</th><td>latitude (-?\d+\.\d+)°, longitude (-?\d+\.\d+)° E \(0-360, as Find and Survey give it\); x (-?[\d.]+), y (-?[\d.]+) \(Equirectangular Mars \(tests\)\)</td>", text)
    assert centre, text[:3000]
    assert float(centre.group(1)) == pytest.approx(-55.0, abs=1e-4) and float(centre.group(2)) == pytest.approx(10.0, abs=1e-4)
    assert "<tr><th>centre latitude (PDS label)</th><td>-54.980°</td></tr>" in text
    from model.report import _describe_centre  # west of the meridian: east longitudes from 0 to 360, as Find's footprints and Survey's rows
    assert "longitude 353.1500° E" in _describe_centre({"x": 0.0, "y": 0.0, "crs": "c", "lat": -50.0, "lon": -6.85})
    assert "<tr><th>solar longitude Ls</th><td>215.3° (southern spring)</td></tr>" in text
    assert "<tr><th>incidence angle</th><td>62.1°</td></tr>" in text
    # what the probabilities and the category rest on, beside them (two runs had differed in the rule and the mirror, unsaid)
    assert "<tr><th>category</th><td>good (paper rule)</td></tr>" in text
    assert "<tr><th>scored with</th><td>minimum valid share of a chunk&#x27;s centre 0.95; band automatic; east-west mirror averaged (TTA on)</td></tr>" in text
    scope = re.search(r"<th>what the model has seen</th><td>([^<]*)</td>", text).group(1)
    assert scope.startswith("Trained on real HiRISE terrain") and "no real ice labels" in scope
    assert "Ice families seen: natural shade, stone field, rendered caster; held out of its training: crater wall." in scope
    assert scope.endswith("It has not seen this image.")
    # Only chunks at or above the hard-to-identify threshold, most probable first.
    table = text[text.index("<h2>Most likely icy chunks</h2>"):]
    rows = re.findall(r"<tr><td>(\d+)</td><td>\d+</td><td>\d+</td><td>([\d.]+)</td>", table)
    assert len(rows) == 15 and all(float(p) >= 0.4 for _, p in rows)
    assert [float(p) for _, p in rows] == sorted((float(p) for _, p in rows), reverse=True) and rows[0] == ("6", "0.91")
    assert "40 in all" in table


def test_detection_report_says_how_faint_the_ice_is_that_the_measured_default_model_misses(reports, repo_root):
    """The bundled model's measurements on ice drawn ways it never trained on, by contrast, in one row;
    a model without such measurements has no row."""
    faint, plain = [], []
    for path in sorted((repo_root / "resources" / "models" / "unseen").glob("*.json")):
        for row in json.loads(path.read_text(encoding="utf-8"))["rows"]:
            bins = [b for b in row["as it is"]["by_contrast"].values() if b["count"]]
            faint.append(bins[0]["roc_auc"])
            plain.append(bins[-1]["roc_auc"])
    assert len(faint) == 3  # lee frost, frost lobes, cap remnants
    note = re.search(r"<th>faint ice</th><td>([^<]*)</td>", reports["detect_default_model"]).group(1)
    assert (f"On ice drawn 3 ways it never trained on (its model card), this model ranks patches less than 0.1 brighter than their surroundings "
            f"(on a 0-1 stretch) at ROC AUC {min(faint):.2f}-{max(faint):.2f} (0.5 is chance) and patches 0.4 or more brighter at {min(plain):.2f}-{max(plain):.2f}") in note
    assert note.endswith("a chunk it calls not icy may still hold faint ice.")
    assert "<th>faint ice</th>" not in reports["detect"] and "<th>faint ice</th>" not in reports["detect_unknown_model"]


def test_detection_report_without_label_or_known_model(reports, worker_python):
    text = reports["detect_unknown_model"]
    assert "<tr><th>solar longitude Ls</th><td>-</td></tr>" not in text  # said in words, not a dash
    assert "<th>what the model has seen</th><td>Not known for this model" in text
    done = helpers.run_worker_snippet(worker_python, WRITE_REPORTS, reports["folder"] / "nolabel", "nolabel")
    assert done.returncode == 0, done.stderr[-3000:]
    plain = (reports["folder"] / "nolabel" / "detect.html").read_text(encoding="utf-8")
    assert "<tr><th>solar longitude Ls</th><td>unknown (no PDS label beside the image)</td></tr>" in plain
    assert "incidence angle" not in plain and "centre latitude (PDS label)" not in plain
    # a label read that lacks SOLAR_LONGITUDE (a PDS3 .LBL given as the image) is not said to be absent
    from model.report import observation_rows

    rows = dict(observation_rows({"solar_longitude": None, "centre_latitude": -0.05, "observation_id": "ESP_000001_0000"}, None))
    assert rows["solar longitude Ls"] == "unknown (the PDS label gives no SOLAR_LONGITUDE)"


@pytest.mark.parametrize("ls, latitude, expected", [(10, -80, "southern autumn"), (100, -80, "southern winter"), (200, -80, "southern spring"), (300, -80, "southern summer"),
                                                     (10, 70, "northern spring"), (300, None, "northern winter, southern summer")])
def test_seasons(ls, latitude, expected):
    from model import report

    assert report.season(ls, latitude) == expected


def test_a_dense_grids_chunks_tile_the_quicklook_out_to_the_image_edge(reports, worker_python):
    """At STRIDE = CHUNK / 2 each point lay under up to four see-through fills, stacked into colours no legend swatch shows:
    each chunk is drawn over the ground nearest its centre, the outer chunks out to the image's edge, without overlap or gap;
    at CHUNK / 4 too, and around a chunk dropped inside the grid (a no-data border's) without overlap."""
    code = r'''
import json, sys
sys.path.insert(0, "tests")
import helpers
from model import grid, report
from matplotlib.collections import PatchCollection
raster = helpers.generate_raster(sys.argv[1], "dense.tif", width=640, height=384)
out = {}
for stride, dropped in ((64, None), (32, None), (64, (2, 3)), (32, (3, 5))):
    chunks = [dict(chunk_id=w.chunk_id, row=w.row, col=w.col, x_off=w.x_off, y_off=w.y_off, width=w.width, height=w.height, probability=0.1 + 0.8 * (w.chunk_id % 2))
              for w in grid.chunk_grid(640, 384, 128, stride) if (w.row, w.col) != dropped]
    figure, _ = report.quicklook_figure(raster.path, chunks, inset=grid.overlap_inset(128, stride))
    fills = next(c for c in figure.axes[0].collections if isinstance(c, PatchCollection) and c.get_facecolors()[:, 3].max() > 0)
    out[f"{stride} {dropped}"] = {"chunks": len(chunks), "boxes": [[float(v) for v in path.get_extents().bounds] for path in fills.get_paths()]}
print(json.dumps(out))
'''
    done = helpers.run_worker_snippet(worker_python, code, reports["folder"])
    assert done.returncode == 0, done.stderr[-3000:]
    for case, drawn in json.loads(done.stdout.strip().splitlines()[-1]).items():
        boxes = drawn["boxes"]
        assert len(boxes) == drawn["chunks"] > 20, case
        overlap = sum(max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])) * max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
                      for i, a in enumerate(boxes) for b in boxes[i + 1:])
        assert overlap == pytest.approx(0.0), case
        if case.endswith("None"):  # the whole grid: the 640 x 384 image covered, out to its edges
            assert sum(w * h for _x, _y, w, h in boxes) == pytest.approx(640 * 384), case
            assert min(x for x, _y, _w, _h in boxes) == 0 and max(x + w for x, _y, w, _h in boxes) == 640, case


def test_a_model_trained_on_blocks_of_an_image_says_so_in_that_images_report(tiny_model):
    """Retrained on one image's labels (split in blocks of it), detect's report on that image said "It has not seen this
    image": its training groups 'train_scene/b0_0' never matched the bare image ID, and the scores looked like an unseen test."""
    from model import modelfile
    from model.report import model_scope

    metadata = modelfile.read_metadata(tiny_model.path)
    assert all(group.startswith("train_scene/b") for group in metadata["training"]["split"]["train_groups"])
    assert model_scope(metadata, "train_scene").endswith(
        f"It trained on part of this image ({len(metadata['training']['split']['seen_groups'])} blocks of its labelled chunks): "
        "its scores here are no test on unseen ground.")
    assert model_scope(metadata, "ESP_099999_1055_RED").endswith("It has not seen this image.")
    # an image whose labelled chunks only validated it: its count had gone into "Trained on", beside "It has not seen this image"
    split = metadata["training"]["split"]
    assert split["train_chunks"] + split["validation_chunks"] == metadata["training"]["chunks"] and split["validation_chunks"] > 0
    assert f"{split['train_chunks']} trained it and {split['validation_chunks']} were held out to validate it." in model_scope(metadata, "train_scene")
    validated_only = json.loads(json.dumps(metadata))
    validated_only["training"]["split"].update(validation_groups=["ESP_011321_1335_RED"], seen_groups=split["seen_groups"])
    assert model_scope(validated_only, "ESP_011321_1335_RED").endswith(
        "It has not trained on this image: its labelled chunks of it were held out to validate it.")

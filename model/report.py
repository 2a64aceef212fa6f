"""Self-contained HTML reports (inline SVG charts, embedded PNG quicklook): no plotting library,
so the worker needs nothing beyond numpy and GDAL to write them, and QGIS's Results Viewer opens them."""

import base64
import html
import os
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from osgeo import gdal

from . import files
from .preprocess import normalise, DEFAULT_NORMALISATION
from .raster import RasterSource

STYLE = """
body{font-family:sans-serif;margin:1.5em;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #bbb;padding:3px 8px;text-align:left}
th{background:#eee}h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.4em}.note{color:#555;font-size:.9em}
"""

HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "precision", "recall", "auc")

# Probability colour ramp shared with resources/styles/chunks.qml: cool and faint for "not icy",
# warm and opaque for "icy".
RAMP = [(0.0, (43, 131, 186)), (0.4, (171, 221, 164)), (0.5, (255, 255, 191)), (0.6, (253, 174, 97)), (1.0, (215, 25, 28))]


def ramp_colour(p: float) -> Tuple[int, int, int]:
    for (p0, c0), (p1, c1) in zip(RAMP, RAMP[1:]):
        if p <= p1:
            t = 0.0 if p1 == p0 else (max(p, p0) - p0) / (p1 - p0)
            return tuple(int(round(a + t * (b - a))) for a, b in zip(c0, c1))
    return RAMP[-1][1]


def page(title: str, body: str) -> str:
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"


def table(rows: Sequence[Tuple[str, object]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def grid_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def svg_histogram(values: Sequence[float], bins: int = 20, width: int = 480, height: int = 200, marks: Sequence[float] = ()) -> str:
    counts, edges = np.histogram(np.asarray(values, float), bins=bins, range=(0.0, 1.0))
    top = max(int(counts.max()), 1)
    pad = 30
    bar_w = (width - 2 * pad) / bins
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}'>"]
    for i, c in enumerate(counts):
        h = (height - 2 * pad) * c / top
        r, g, b = ramp_colour((edges[i] + edges[i + 1]) / 2)
        parts.append(f"<rect x='{pad + i * bar_w:.1f}' y='{height - pad - h:.1f}' width='{bar_w - 1:.1f}' height='{h:.1f}' fill='rgb({r},{g},{b})' stroke='#555'/>")
    for m in marks:
        x = pad + m * (width - 2 * pad)
        parts.append(f"<line x1='{x:.1f}' x2='{x:.1f}' y1='{pad / 2}' y2='{height - pad}' stroke='#000' stroke-dasharray='4 3'/>")
    parts.append(f"<line x1='{pad}' x2='{width - pad}' y1='{height - pad}' y2='{height - pad}' stroke='#000'/>")
    for t in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        parts.append(f"<text x='{pad + t * (width - 2 * pad):.1f}' y='{height - pad + 14}' font-size='11' text-anchor='middle'>{t:.1f}</text>")
    parts.append(f"<text x='4' y='{pad - 8}' font-size='11'>max {top} chunks</text>")
    parts.append(f"<text x='{width / 2}' y='{height - 2}' font-size='11' text-anchor='middle'>ice probability</text></svg>")
    return "".join(parts)


def svg_lines(series: Dict[str, Sequence[float]], x_label: str, y_label: str, width: int = 480, height: int = 240, y_range: Optional[Tuple[float, float]] = None, diagonal: bool = False, xs: Optional[Dict[str, Sequence[float]]] = None) -> str:
    """Line chart of one or more series; xs gives x values per series (default 1..n)."""
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd"]
    all_y = [v for s in series.values() for v in s if v is not None and np.isfinite(v)]
    all_x = [v for name in series for v in (xs[name] if xs else range(1, len(series[name]) + 1))]
    if not all_y:
        return "<p>(no data)</p>"
    y0, y1 = y_range or (min(all_y), max(all_y))
    if y1 <= y0:
        y1 = y0 + 1.0
    x0, x1 = min(all_x), max(all_x)
    if x1 <= x0:
        x1 = x0 + 1.0
    pad = 40

    def px(x, y):
        return pad + (x - x0) / (x1 - x0) * (width - 2 * pad), height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad)

    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}'>"]
    parts.append(f"<rect x='{pad}' y='{pad}' width='{width - 2 * pad}' height='{height - 2 * pad}' fill='none' stroke='#999'/>")
    if diagonal:
        (ax, ay), (bx, by) = px(x0, y0), px(x1, y1)
        parts.append(f"<line x1='{ax:.1f}' y1='{ay:.1f}' x2='{bx:.1f}' y2='{by:.1f}' stroke='#999' stroke-dasharray='4 3'/>")
    for i, (name, values) in enumerate(series.items()):
        x_values = xs[name] if xs else range(1, len(values) + 1)
        points = [px(x, y) for x, y in zip(x_values, values) if y is not None and np.isfinite(y)]
        colour = colours[i % len(colours)]
        parts.append(f"<polyline fill='none' stroke='{colour}' stroke-width='2' points='{' '.join(f'{a:.1f},{b:.1f}' for a, b in points)}'/>")
        for a, b in points:
            parts.append(f"<circle cx='{a:.1f}' cy='{b:.1f}' r='2.5' fill='{colour}'/>")
        parts.append(f"<text x='{pad + 8}' y='{pad + 14 + 14 * i}' font-size='11' fill='{colour}'>{html.escape(name)}</text>")
    parts.append(f"<text x='{pad}' y='{height - pad + 14}' font-size='11'>{x0:g}</text><text x='{width - pad}' y='{height - pad + 14}' font-size='11' text-anchor='end'>{x1:g}</text>")
    parts.append(f"<text x='{pad - 4}' y='{pad + 4}' font-size='11' text-anchor='end'>{y1:.3g}</text><text x='{pad - 4}' y='{height - pad}' font-size='11' text-anchor='end'>{y0:.3g}</text>")
    parts.append(f"<text x='{width / 2}' y='{height - 6}' font-size='11' text-anchor='middle'>{html.escape(x_label)}</text>")
    parts.append(f"<text x='12' y='{height / 2}' font-size='11' transform='rotate(-90 12 {height / 2})' text-anchor='middle'>{html.escape(y_label)}</text></svg>")
    return "".join(parts)


def png_data_uri(rgb: np.ndarray) -> str:
    """Encode an (h, w, 3) uint8 array as a PNG data URI, through GDAL's PNG driver."""
    h, w, _ = rgb.shape
    mem = gdal.GetDriverByName("MEM").Create("", w, h, 3, gdal.GDT_Byte)
    for i in range(3):
        mem.GetRasterBand(i + 1).WriteArray(rgb[:, :, i])
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "quicklook.png")
        gdal.GetDriverByName("PNG").CreateCopy(path, mem)
        with open(path, "rb") as handle:
            data = handle.read()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def quicklook(raster_path: str, chunks: List[Dict], band: int = 0, max_side: int = 900) -> str:
    """The scene, decimated, with each scored chunk outlined and tinted by its probability."""
    with RasterSource(raster_path, band, require_crs=False) as source:
        data, valid, factor = source.overview(max_side)
    gray = (normalise(data, valid, DEFAULT_NORMALISATION) * 255).astype(np.uint8)
    rgb = np.repeat(gray[:, :, None], 3, axis=2).astype(np.float32)
    h, w = gray.shape
    for c in chunks:
        x0, y0 = int(c["x_off"] / factor), int(c["y_off"] / factor)
        x1, y1 = min(w, int(np.ceil((c["x_off"] + c["width"]) / factor))), min(h, int(np.ceil((c["y_off"] + c["height"]) / factor)))
        colour = np.array(ramp_colour(c["probability"]), np.float32)
        alpha = 0.55 * c["probability"]
        rgb[y0:y1, x0:x1] = (1 - alpha) * rgb[y0:y1, x0:x1] + alpha * colour
        for ys, xs in ((slice(y0, y0 + 1), slice(x0, x1)), (slice(y1 - 1, y1), slice(x0, x1)), (slice(y0, y1), slice(x0, x0 + 1)), (slice(y0, y1), slice(x1 - 1, x1))):
            rgb[ys, xs] = colour
    return png_data_uri(np.clip(rgb, 0, 255).astype(np.uint8))


def write_atomically(path: str, text: str) -> None:
    partial = files.prepare(path)
    with open(partial, "w", encoding="utf-8") as handle:
        handle.write(text)
    files.commit(partial, path)


def detection_report(detection, path: str, band: int = 0) -> None:
    s = detection.summary
    rows = [
        ("image", s["image_id"]),
        ("category", s["category"]),
        ("chunks scored", s["chunks"]),
        ("icy chunks (p >= %.2f)" % s["icy_threshold"], s["icy_chunks"]),
        ("hard to identify (%.2f <= p < %.2f)" % (s["hard_low"], s["icy_threshold"]), s["hard_chunks"]),
        ("mean probability", s["mean_probability"]),
        ("max probability", s["max_probability"]),
        ("chunks dropped for no-data", s["dropped_chunks"]),
        ("chunk size / stride (px)", f"{s['chunk_size']} / {s['stride']}"),
        ("model", f"{s['model_name']} {s['model_version']}"),
        ("device, network speed", f"{s['device']}, {s['chunks_per_s']} chunks/s"),
        ("runtime (s)", s["runtime_s"]),
    ]
    top = sorted(detection.chunks, key=lambda c: -c["probability"])[:15]
    body = (
        "<h2>Summary</h2>" + table(rows)
        + "<h2>Chunk probabilities</h2>" + svg_histogram([c["probability"] for c in detection.chunks], marks=(s["hard_low"], s["icy_threshold"]))
        + "<p class='note'>Dashed lines: the hard-to-identify and icy thresholds.</p>"
        + f"<h2>Quicklook</h2><img alt='scene with chunk grid' src='{quicklook(detection.raster['path'], detection.chunks, band)}'/>"
        + "<p class='note'>Chunks are tinted from blue (not icy) to red (icy); dropped no-data chunks are not drawn.</p>"
        + "<h2>Most likely icy chunks</h2>"
        + grid_table(("chunk_id", "row", "col", "probability", "class"), [(c["chunk_id"], c["row"], c["col"], c["probability"], c["class"]) for c in top])
    )
    write_atomically(path, page(f"Ice patches in {s['image_id']}", body))


def _comparison_section(comparison: Dict) -> str:
    """The guard's numbers (model/finetune.py: compare): base and new model on the same chunks."""
    sets = [("your validation chunks", comparison["validation"])]
    if comparison.get("replay"):
        sets.append(("held-out replay examples (what the base model knew)", comparison["replay"]))
    rows = [(name, scores["base"]["chunks"], *[scores[who][key] for key in ("roc_auc", "accuracy", "tpr", "fpr") for who in ("base", "new")]) for name, scores in sets]
    header = ("chunks scored", "count", "AUC base", "AUC new", "accuracy base", "accuracy new", "TPR base", "TPR new", "FPR base", "FPR new")
    verdict = html.escape(comparison["verdict"])
    body = f"<h2>Base model against new model</h2><p>{'<b>' + verdict + '</b>' if comparison['worse'] else verdict}</p>" + grid_table(header, rows)
    by_kind = (comparison.get("replay") or {}).get("base", {}).get("called_icy_by_kind")
    if by_kind:
        new = comparison["replay"]["new"]["called_icy_by_kind"]
        body += "<h3>Held-out replay examples called icy (p &gt;= 0.5), by kind</h3>" + grid_table(("kind", "base", "new"), [(k, v, new[k]) for k, v in by_kind.items()])
    return body + "<p class='note'>Rates at p &gt;= 0.5 with each model's own calibration; AUC does not depend on it.</p>"


def training_report(history: List[Dict], evaluation: Dict, metadata: Dict, path: str) -> None:
    """Loss and accuracy curves (the paper's Figure 3), validation confusion matrix, reliability
    diagram and, for a fine-tuned model, the base model's scores on the same chunks."""
    epochs = [row["epoch"] for row in history]
    xs = {name: epochs for name in ("loss", "val_loss", "accuracy", "val_accuracy")}
    curves = svg_lines({"loss": [r.get("loss") for r in history], "val_loss": [r.get("val_loss") for r in history]}, "epoch", "binary cross-entropy", xs=xs)
    accuracy = svg_lines({"accuracy": [r.get("accuracy") for r in history], "val_accuracy": [r.get("val_accuracy") for r in history]}, "epoch", "accuracy", y_range=(0.0, 1.0), xs=xs)
    reliability = [row for row in evaluation["reliability"] if row["count"]]
    diagram = svg_lines(
        {"observed icy share": [row["observed"] for row in reliability]},
        "mean predicted probability", "observed icy share", y_range=(0.0, 1.0), diagonal=True,
        xs={"observed icy share": [row["mean_predicted"] for row in reliability]},
    )
    confusion_blocks = ""
    for key, title in (("at_0.5", "p >= 0.5"), ("at_icy_threshold", "p >= icy threshold")):
        m = evaluation[key]
        confusion_blocks += f"<h3>Validation confusion matrix, {title}</h3>" + grid_table(
            ("", "predicted icy", "predicted not icy"),
            [("labelled icy", m["true_positive"], m["false_negative"]), ("labelled not icy", m["false_positive"], m["true_negative"])],
        ) + table([("precision", m["precision"]), ("recall", m["recall"]), ("false-positive rate", m["false_positive_rate"]), ("accuracy", m["accuracy"])])
    training = metadata.get("training", {})
    base = metadata.get("base_model")
    epochs_run = f"{training.get('epochs_run')}" + (f" after the base model's {training.get('base_epochs')} ({training.get('total_epochs')} in all)" if base else "")
    replay = training.get("replay")
    chosen = evaluation.get("calibration") or {}
    rows = [
        ("model", f"{metadata['name']} {metadata['version']}"),
        ("input / chunk size (px)", f"{metadata['input_size']} / {metadata['chunk_size']}"),
        ("base model", f"{base['name']} {base['version']} ({base.get('chunk_size')}-px chunks)" if base else "none (trained from scratch)"),
        ("epochs run", epochs_run),
        ("kept epoch (lowest validation loss)", evaluation["best_epoch"]),
        ("validation chunks (icy)", f"{evaluation['validation_chunks']} ({evaluation['validation_icy']})"),
        ("held out for validation", ", ".join(evaluation.get("validation_groups") or training.get("split", {}).get("validation_groups", []))),
        ("ROC AUC", evaluation["at_0.5"]["roc_auc"]),
        ("calibration", f"{chosen.get('choice', 'none')} ({chosen.get('reason', '')})"),
        ("expected calibration error uncalibrated / as written", f"{evaluation['ece_uncalibrated']:.3f} / {evaluation['ece_calibrated']:.3f}"),
        ("learning rate, warm-up steps, frozen batch-norm layers", f"{training.get('learning_rate')}, {training.get('warmup_steps', 0)}, {training.get('frozen_batch_norm_layers', 0)}"),
        ("replay examples per epoch (pool, held out)", f"{replay['per_epoch']} ({replay['pool']}, {replay['held_out']})" if replay else "none"),
        ("augmentation, seed", f"{training.get('augment')}, {training.get('seed')}"),
    ]
    body = (
        "<h2>Summary</h2>" + table(rows)
        + (_comparison_section(evaluation["comparison"]) if evaluation.get("comparison") else "")
        + "<h2>Loss</h2>" + curves + "<h2>Accuracy</h2>" + accuracy
        + confusion_blocks
        + "<h2>Reliability diagram (validation, as written)</h2>" + diagram
        + "<p class='note'>Points on the dashed diagonal mean that a chunk given probability p is icy a share p of the time.</p>"
        + "<h2>History</h2>" + grid_table(HISTORY_COLUMNS, [[row.get(k) for k in HISTORY_COLUMNS] for row in history])
    )
    write_atomically(path, page(f"Training report: {metadata['name']}", body))

"""Self-contained HTML reports: charts drawn by matplotlib (Agg, in the worker only) and embedded
as PNG data URIs, so one HTML file carries everything and QGIS's Results Viewer opens it.

matplotlib is imported inside the chart functions: QGIS's Python imports this module for RAMP
(processing_provider/styling.py) and must not need matplotlib for it.
"""

import base64
import html
import math
import os
import uuid
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from osgeo import gdal, osr

from . import files
from .georeference import image_centre
from .grid import overlap_inset
from .schema import LABEL_SUMMARY_FIELDS
from .splitting import lineage_groups
from .preprocess import normalise, DEFAULT_NORMALISATION
from .raster import RasterSource

STYLE = """
body{font-family:sans-serif;margin:1.5em;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #bbb;padding:3px 8px;text-align:left}
th{background:#eee}h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.4em}.note{color:#555;font-size:.9em}
img{max-width:100%;height:auto}
"""

HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "val_precision", "val_recall", "val_auc")

# Probability colour ramp shared with resources/styles/chunks.qml: cool and faint for "not icy",
# warm and opaque for "icy".
RAMP = [(0.0, (43, 131, 186)), (0.4, (171, 221, 164)), (0.5, (255, 255, 191)), (0.6, (253, 174, 97)), (1.0, (215, 25, 28))]

DPI = 100
DIAGONAL_LABEL = "perfect calibration (y = x)"
# The quicklook writes every chunk's ID when chunks are drawn at least this many pixels wide;
# smaller, only the icy and hard-to-identify chunks get theirs.
MIN_LABELLED_CHUNK_PX = 22
# At most this many IDs (the most probable), so a large image stays quick to draw and readable.
MAX_CHUNK_IDS = 500


def ramp_colour(p: float) -> Tuple[int, int, int]:
    for (p0, c0), (p1, c1) in zip(RAMP, RAMP[1:]):
        if p <= p1:
            t = 0.0 if p1 == p0 else (max(p, p0) - p0) / (p1 - p0)
            return tuple(int(round(a + t * (b - a))) for a, b in zip(c0, c1))
    return RAMP[-1][1]


def _rgb01(p: float) -> Tuple[float, float, float]:
    return tuple(c / 255.0 for c in ramp_colour(p))


# The share of its colour an icy or hard-to-identify chunk's edge keeps (the map style's too: processing_provider/styling.py): dark, so that the
# class reads without its hue, in greyscale print or to a colour-blind reader.
EDGE_SHADE = 0.35


def _chunk_edge(p: float, icy_threshold: float, hard_low: float) -> Dict:
    """A quicklook chunk's edge as the map draws it: icy bold and solid, hard to identify dashed, both dark; not icy thin, in its colour."""
    if p < hard_low:
        return {"edgecolor": _rgb01(p), "linewidth": 0.8}
    return {"edgecolor": tuple(EDGE_SHADE * c for c in _rgb01(p)), "linewidth": 1.2 if p >= icy_threshold else 1.0,
            "linestyle": "-" if p >= icy_threshold else (0, (3, 2))}


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
        return f"{value:.5g}"  # a mean of 0.60001 (good) must not read as 0.6 (not above the paper's 0.6)
    return str(value)


# --- matplotlib ---------------------------------------------------------------------------------


def new_figure(width_px: int, height_px: int):
    """A matplotlib Figure on an Agg canvas (no pyplot: no global state, nothing to close)."""
    import matplotlib

    matplotlib.use("Agg")
    with warnings.catch_warnings():
        # Debian's mpl_toolkits, seen through the venv's system site-packages, is older than the
        # venv's matplotlib; the 3-D axes it breaks are not used here.
        warnings.filterwarnings("ignore", message="Unable to import Axes3D")
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    figure = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def figure_rgb(figure) -> np.ndarray:
    """The figure rendered: (h, w, 3) uint8."""
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[:, :, :3].copy()


def png_data_uri(rgb: np.ndarray) -> str:
    """Encode an (h, w, 3) uint8 array as a PNG data URI, through GDAL's PNG driver, in memory (a full or
    unwritable temporary folder failed the report after the whole image was scored)."""
    h, w, _ = rgb.shape
    mem = gdal.GetDriverByName("MEM").Create("", w, h, 3, gdal.GDT_Byte)
    for i in range(3):
        mem.GetRasterBand(i + 1).WriteArray(rgb[:, :, i])
    path = f"/vsimem/hiriseice-figure-{uuid.uuid4().hex}.png"
    try:
        gdal.GetDriverByName("PNG").CreateCopy(path, mem)
        handle = gdal.VSIFOpenL(path, "rb")
        try:
            data = gdal.VSIFReadL(1, gdal.VSIStatL(path).size, handle)
        finally:
            gdal.VSIFCloseL(handle)
    finally:
        gdal.Unlink(path)
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure_img(figure, alt: str) -> str:
    return f"<img alt='{html.escape(alt, quote=True)}' src='{png_data_uri(figure_rgb(figure))}'/>"


def histogram_figure(probabilities: Sequence[float], icy_threshold: float, hard_low: float, bins: int = 20):
    """Chunks per probability bin, bars in the layer's colours, both thresholds marked."""
    p = np.asarray(probabilities, float)
    figure = new_figure(640, 300)
    ax = figure.add_axes([0.1, 0.17, 0.86, 0.72])
    # edges rounded, so that p = 0.6 falls in the bar from 0.6, as the icy threshold counts it (linspace's edge is 0.6000000000000001)
    counts, edges = np.histogram(p, bins=np.round(np.linspace(0.0, 1.0, bins + 1), 10))
    centres = (edges[:-1] + edges[1:]) / 2
    ax.bar(centres, counts, width=edges[1] - edges[0], color=[_rgb01(c) for c in centres], edgecolor="#555555", linewidth=0.6)
    ax.axvline(hard_low, color="#444444", linestyle="--", linewidth=1.2, label=f"hard to identify from {hard_low:g}")
    ax.axvline(icy_threshold, color="#b2182b", linestyle="--", linewidth=1.4, label=f"icy from {icy_threshold:g}")
    ax.set_xlim(0.0, 1.0)
    ax.set_xticks(np.linspace(0.0, 1.0, 11))
    ax.set_xlabel("ice probability of the chunk")
    ax.set_ylabel("chunks")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_title(f"{len(p)} chunks", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper center", fontsize=8, frameon=False)
    return figure


def curves_figure(history: List[Dict], best_epoch: Optional[int] = None):
    """Loss and accuracy per epoch, training and validation (the paper's Figure 3); the kept
    epoch marked."""
    figure = new_figure(900, 330)
    epochs = [row["epoch"] for row in history]
    panels = (("loss", "val_loss", "binary cross-entropy", None), ("accuracy", "val_accuracy", "accuracy", (0.0, 1.0)))
    for i, (train_key, val_key, y_label, y_range) in enumerate(panels):
        ax = figure.add_subplot(1, 2, i + 1)
        for key, colour, text in ((train_key, "#1f77b4", "training"), (val_key, "#d62728", "validation")):
            values = [_finite(row.get(key)) for row in history]
            ax.plot(epochs, values, marker="o", markersize=3, color=colour, label=text)
        ax.set_xlabel("epoch")
        ax.set_ylabel(y_label)
        ax.set_title(train_key, fontsize=10)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="#777777", linestyle=":", linewidth=1, label=f"kept epoch {best_epoch}")
        if y_range:
            ax.set_ylim(*y_range)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figure.subplots_adjust(left=0.08, right=0.98, bottom=0.15, top=0.9, wspace=0.25)
    return figure


def _finite(value) -> float:
    return float(value) if value is not None and math.isfinite(float(value)) else float("nan")


def confusion_figure(matrix: Dict, threshold: float):
    """The 2 x 2 validation confusion matrix as counts on a shaded grid."""
    figure = new_figure(380, 320)
    ax = figure.add_axes([0.3, 0.2, 0.62, 0.66])
    cells = np.array([[matrix["true_positive"], matrix["false_negative"]], [matrix["false_positive"], matrix["true_negative"]]])
    ax.imshow(cells, cmap="Blues", vmin=0, vmax=max(int(cells.max()), 1))
    for (r, c), n in np.ndenumerate(cells):
        ax.text(c, r, str(int(n)), ha="center", va="center", fontsize=14, color="white" if n > cells.max() / 2 else "black")
    ax.set_xticks([0, 1], ["icy", "not icy"])
    ax.set_yticks([0, 1], ["icy", "not icy"])
    ax.set_xlabel(f"predicted (p >= {threshold:g})")
    ax.set_ylabel("labelled")
    ax.set_title(f"validation, threshold {threshold:g}", fontsize=10)
    return figure


def reliability_figure(rows: List[Dict], ece: Optional[float] = None):
    """Observed icy share against mean predicted probability per bin, on fixed 0..1 axes with the
    y = x diagonal: points on it mean a chunk given probability p is icy a share p of the time."""
    figure = new_figure(440, 440)
    ax = figure.add_axes([0.15, 0.13, 0.8, 0.78])
    ax.plot([0.0, 1.0], [0.0, 1.0], linestyle="--", color="#777777", linewidth=1, label=DIAGONAL_LABEL)
    filled = [row for row in rows if row["count"]]
    if filled:
        xs = [row["mean_predicted"] for row in filled]
        ys = [row["observed"] for row in filled]
        ax.plot(xs, ys, color="#1f77b4", marker="o", clip_on=False, label="validation chunks, per 0.1 bin")
        for x, y, row in zip(xs, ys, filled):
            ax.annotate(str(row["count"]), (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7, color="#555555")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_aspect("equal")
    ticks = np.linspace(0.0, 1.0, 6)
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed icy share")
    ax.set_title("reliability" + (f" (ECE {ece:.3f})" if ece is not None else ""), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    return figure


def _nice_length(target: float) -> float:
    """1, 2 or 5 times a power of ten, at most `target`."""
    if target <= 0:
        return 0.0
    power = 10 ** math.floor(math.log10(target))
    return max(m * power for m in (1, 2, 5) if m * power <= target)


def _metres_per_unit(crs_wkt: str) -> Optional[float]:
    """Metres per map unit of a projected CRS; None without a CRS or for a geographic one."""
    if not crs_wkt:
        return None
    srs = osr.SpatialReference()
    if srs.ImportFromWkt(crs_wkt) != 0 or not srs.IsProjected():
        return None
    return srs.GetLinearUnits() or None


def scale_bar(width_px: int, geotransform: Sequence[float], crs_wkt: str) -> Tuple[float, str]:
    """(length in image pixels, its label) of a scale bar about a fifth of the image wide: in
    metres (or km) for a projected CRS, in pixels otherwise."""
    pixel = math.hypot(geotransform[1], geotransform[4]) if geotransform else 0.0
    metres = _metres_per_unit(crs_wkt)
    if metres and pixel > 0:
        length_m = _nice_length(width_px * pixel * metres / 5)
        text = f"{length_m / 1000:g} km" if length_m >= 1000 else f"{length_m:g} m"
        return length_m / (pixel * metres), text
    length = _nice_length(width_px / 5)
    return length, f"{length:g} px"


# The white strip under the quicklook that holds its scale bar (figure pixels): on the image, chunk IDs
# had stood over the bar's label ("128" beside "500 m" read as "1500 m").
SCALE_STRIP_PX = 36


def quicklook_figure(raster_path: str, chunks: List[Dict], band: int = 0, max_side: int = 900, icy_threshold: float = 0.6, hard_low: float = 0.4,
                     inset: float = 0.0):
    """The scene, decimated to at most max_side pixels, every scored chunk outlined and tinted by
    its probability and marked with its chunk_id, and under it a scale bar in a strip of its own.
    The scene is drawn at the image's aspect ratio with no margins (axes in full-resolution pixels,
    so chunks are placed by x_off, y_off)."""
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle
    import matplotlib.patheffects as effects

    with RasterSource(raster_path, band, require_georeferencing=False) as source:
        data, valid, factor = source.overview(max_side)
        info = source.info
    gray = normalise(data, valid, DEFAULT_NORMALISATION)
    h, w = gray.shape
    zoom = max_side / max(h, w)  # small scenes drawn larger, so chunk IDs stay legible
    out_w, out_h = max(1, int(round(w * zoom))), max(1, int(round(h * zoom)))
    figure = new_figure(out_w, out_h + SCALE_STRIP_PX)
    strip = SCALE_STRIP_PX / (out_h + SCALE_STRIP_PX)
    ax = figure.add_axes([0, strip, 1, 1 - strip])
    ax.imshow(gray, cmap="gray", vmin=0.0, vmax=1.0, extent=(0, info.width, info.height, 0), interpolation="nearest")
    ax.set_xlim(0, info.width)
    ax.set_ylim(info.height, 0)
    ax.set_axis_off()
    px_per_image_px = out_w / info.width
    fills, outlines = [], []
    last = (max((c["row"] for c in chunks), default=0), max((c["col"] for c in chunks), default=0)) if inset else (0, 0)
    for c in chunks:
        left, top, right, bottom = _drawn_window(c, inset, last)
        if right <= left or bottom <= top:
            continue
        corner, width, height = (left, top), right - left, bottom - top
        fills.append(Rectangle(corner, width, height, facecolor=_rgb01(c["probability"]) + (0.55 * c["probability"],), edgecolor="none"))
        outlines.append(Rectangle(corner, width, height, facecolor="none", **_chunk_edge(c["probability"], icy_threshold, hard_low)))
    ax.add_collection(PatchCollection(fills, match_original=True))
    ax.add_collection(PatchCollection(outlines, match_original=True))
    chunk_px = min((min(c["width"], c["height"]) for c in chunks), default=0) * px_per_image_px
    label_all = chunk_px >= MIN_LABELLED_CHUNK_PX
    size = float(np.clip(chunk_px * 0.28, 5, 9)) if label_all else 6.5
    halo = [effects.withStroke(linewidth=2, foreground="white")]
    named = [c for c in chunks if label_all or c["probability"] >= hard_low]
    if len(named) > MAX_CHUNK_IDS:
        named = sorted(named, key=lambda c: -c["probability"])[:MAX_CHUNK_IDS]
        label_all = False
    for c in named:
        ax.text(c["x_off"] + c["width"] / 2, c["y_off"] + c["height"] / 2, str(c["chunk_id"]), ha="center", va="center",
                fontsize=size, color="black", path_effects=halo, fontweight="bold" if c["probability"] >= icy_threshold else "normal")
    length, text = scale_bar(info.width, info.geotransform, info.crs_wkt)
    bar = figure.add_axes([0, 0, 1, strip])  # x in the image's pixels, as the scene's axes; y from 0 (bottom) to 1
    bar.set_xlim(0, info.width)
    bar.set_ylim(0, 1)
    bar.set_axis_off()
    x0 = info.width * 0.04
    bar.add_patch(Rectangle((x0, 0.2), length, 0.15, facecolor="black", edgecolor="black"))
    bar.text(x0 + length / 2, 0.45, text, ha="center", va="bottom", fontsize=9)
    return figure, label_all


def _drawn_window(chunk: Dict, inset: float, last: Tuple[int, int]) -> Tuple[float, float, float, float]:
    """(left, top, right, bottom) in image pixels where the quicklook draws a chunk: its footprint less ``inset``
    (grid.overlap_inset) on each side, but out to its own edge on the grid's outer rows and columns (``last``: the last row
    and column drawn), so that a dense grid's chunks tile the scene, each over the ground nearest its centre. A side facing a
    dropped chunk inside the grid stays inset: widened there, it had overlapped the dropped chunk's other neighbours."""
    x, y, w, h = chunk["x_off"], chunk["y_off"], chunk["width"], chunk["height"]
    if not inset:
        return x, y, x + w, y + h
    r, c = chunk["row"], chunk["col"]
    return (x + (0 if c == 0 else inset), y + (0 if r == 0 else inset),
            x + w - (0 if c == last[1] else inset), y + h - (0 if r == last[0] else inset))


def quicklook(raster_path: str, chunks: List[Dict], band: int = 0, max_side: int = 900) -> str:
    """The quicklook as a PNG data URI (see quicklook_figure)."""
    figure, _ = quicklook_figure(raster_path, chunks, band, max_side)
    return png_data_uri(figure_rgb(figure))


def write_atomically(path: str, text: str, what: str, before_commit: Optional[Callable[[], None]] = None) -> None:
    with files.writing(path, what, before_commit) as partial:
        with open(partial, "w", encoding="utf-8") as handle:
            handle.write(text)


# --- what the detection report says about the image and the model -------------------------------


def _describe_centre(centre: Optional[Dict]) -> str:
    if centre is None:
        return "unknown (no georeferencing)"
    where = f"x {centre['x']:.1f}, y {centre['y']:.1f}" + (f" ({centre['crs']})" if centre["crs"] else " (no CRS)")
    if centre["lat"] is None:
        return where
    return f"latitude {centre['lat']:.4f}°, longitude {centre['lon'] % 360:.4f}° E (0-360, as Find and Survey give it); {where}"


def season(solar_longitude: float, latitude: Optional[float]) -> str:
    """The hemisphere's season at Ls (Ls 0 = northern spring equinox)."""
    names = ["spring", "summer", "autumn", "winter"]
    quarter = int((solar_longitude % 360) // 90)
    if latitude is not None and latitude < 0:
        return f"southern {names[(quarter + 2) % 4]}"
    if latitude is not None:
        return f"northern {names[quarter]}"
    return f"northern {names[quarter]}, southern {names[(quarter + 2) % 4]}"


def observation_rows(summary: Dict, centre: Optional[Dict]) -> List[Tuple[str, object]]:
    """The image's place and, from its PDS label where there was one, Ls and the incidence angle."""
    rows = [("image centre", _describe_centre(centre))]
    latitude = summary.get("centre_latitude")
    if latitude is not None:
        rows.append(("centre latitude (PDS label)", f"{latitude:.3f}°"))
    elif centre is not None:
        latitude = centre["lat"]
    ls = summary.get("solar_longitude")
    label_read = any(summary.get(name) is not None for name, _ in LABEL_SUMMARY_FIELDS)  # a label was read, without Ls in it
    why_unknown = "the PDS label gives no SOLAR_LONGITUDE" if label_read else "no PDS label beside the image"
    rows.append(("solar longitude Ls", f"{ls:.1f}° ({season(ls, latitude)})" if ls is not None else f"unknown ({why_unknown})"))
    if summary.get("incidence_angle") is not None:
        rows.append(("incidence angle", f"{summary['incidence_angle']:.1f}°"))
    return rows


def model_scope(metadata: Optional[Dict], image_id: str = "") -> str:
    """One sentence on what the model has and has not seen, from its metadata's training record."""
    if not metadata:
        return "Not known for this model: its file was not available to the report (see its model card)."
    training = metadata.get("training") or {}
    data = training.get("data")
    parts = []
    if isinstance(data, str):
        parts.append(f"Trained on {data.rstrip('.')}.")
    elif isinstance(data, dict):
        images = data.get("images") or []
        chunks = sum(int(i.get("chunks", 0)) for i in images)
        icy = sum(int(i.get("icy", 0)) for i in images)
        names = ", ".join(str(i.get("image_id")) for i in images[:6]) + (f" and {len(images) - 6} more" if len(images) > 6 else "")
        split = training.get("split") or {}
        if "train_chunks" in split:  # the labelled chunks held out to validate it are no training chunks
            parts.append(f"Labelled chunks: {chunks} ({icy} icy) of {len(images)} image(s): {names}; {split['train_chunks']} trained it and "
                         f"{split['validation_chunks']} were held out to validate it.")
        else:
            parts.append(f"Trained and validated on {chunks} labelled chunks ({icy} icy) of {len(images)} image(s): {names}.")
        # what the log said of the labels it did not use (the log is gone with the Processing dialog; the report stays)
        left_out = [f"{i.get('image_id')}: {i['left_out']}" for i in images if i.get("left_out")]
        if left_out:
            parts.append(f"Labels left out: {'; '.join(left_out)}.")
    else:
        parts.append("Its training data is not recorded in the model file.")
    base = metadata.get("base_model")
    if base:
        parts.append(f"It continues {base.get('name')} {base.get('version')}, and has seen what that model saw.")
    families = training.get("families")
    if families:
        # what the model file records, not today's generator: detection never imports model/trainingdata
        held_out = training.get("held_out_family")
        parts.append(f"Ice families seen: {', '.join(families)}" + (f"; held out of its training: {held_out}." if held_out else "."))
    groups = lineage_groups(metadata)
    observation = "_".join(image_id.split("_")[:3]) if image_id else ""
    if observation and groups:
        # a group is an observation, repeat images of a site ("A+B"), or a block of them ("IMAGE/b0_1", "A+B/m2_3")
        def of_this_image(group: str) -> bool:
            return bool({observation, image_id} & set(group.split("/", 1)[0].split("+")))

        ours = [group for group in groups if of_this_image(group)]
        validated = [group for group in (training.get("split") or {}).get("validation_groups", []) if of_this_image(group)]
        if not ours and validated:
            parts.append("It has not trained on this image: its labelled chunks of it were held out to validate it.")
        elif not ours:
            parts.append("It has not seen this image.")
        elif any("/" not in group for group in ours):
            parts.append("This image was among its training images.")
        else:  # labels of one image are split in blocks: the model trained on some, validated on others
            parts.append(f"It trained on part of this image ({len(ours)} blocks of its labelled chunks): its scores here are no test on unseen ground.")
    return " ".join(parts)


def faint_ice_note(metadata: Optional[Dict]) -> Optional[str]:
    """What the measurements of ice drawn ways the model never trained on (resources/models/unseen,
    benchmarks/unseen_family.py) say it finds by the patch's contrast; None where none is of this model."""
    import glob
    import json

    from . import modelfile

    if not metadata or not {"name", "version", "chunk_size", "input_size"} <= metadata.keys():
        return None  # what modelfile.describe names a model by
    measurements = []
    for path in sorted(glob.glob(os.path.join(os.path.dirname(modelfile.default_model_path()), "unseen", "*.json"))):
        with open(path, encoding="utf-8") as handle:
            measurements.append(json.load(handle))
    faint, plain = [], []
    for _measured, row in modelfile.rows_measuring(metadata, measurements):
        bins = [b for b in (row.get("as it is") or {}).get("by_contrast", {}).values() if b["count"]]
        if len(bins) >= 2:
            faint.append(bins[0]["roc_auc"])
            plain.append(bins[-1]["roc_auc"])
    if not faint:
        return None
    return (f"On ice drawn {len(faint)} ways it never trained on (its model card), this model ranks patches less than 0.1 brighter than their "
            f"surroundings (on a 0-1 stretch) at ROC AUC {min(faint):.2f}-{max(faint):.2f} (0.5 is chance) and patches 0.4 or more brighter at "
            f"{min(plain):.2f}-{max(plain):.2f}: a chunk it calls not icy may still hold faint ice.")


def _default_metadata_if_used(summary: Dict) -> Optional[Dict]:
    """The bundled default model's metadata when the summary names it (name and version)."""
    from . import modelfile

    try:
        metadata = modelfile.read_metadata(modelfile.default_model_path())
    except Exception:  # noqa: BLE001 - no default model: the report just says so
        return None
    if metadata.get("name") == summary.get("model_name") and str(metadata.get("version")) == str(summary.get("model_version")):
        return metadata
    return None


def likely_icy_rows(chunks: List[Dict], hard_low: float, limit: int = 15) -> Tuple[List[Dict], bool]:
    """The chunks at or above the hard-to-identify threshold, most probable first (at most `limit`);
    when none reaches it, the five most probable, and False."""
    ranked = sorted(chunks, key=lambda c: (-c["probability"], c["chunk_id"]))
    above = [c for c in ranked if c["probability"] >= hard_low]
    if above:
        return above[:limit], True
    return ranked[:5], False


def scoring_settings(summary: Dict, band: int) -> str:
    """The settings besides the grid that a run's probabilities and category depend on, for the report; '' where unrecorded."""
    if "tta" not in summary:
        return ""
    return (f"minimum valid share of a chunk's centre {summary.get('min_valid', 'not recorded')}; band {band or 'automatic'}; "
            f"east-west mirror {'averaged (TTA on)' if summary['tta'] else 'not used (TTA off)'}")


def detection_report(detection, path: str, band: int = 0, metadata: Optional[Dict] = None, before_commit: Optional[Callable[[], None]] = None) -> None:
    """The detection report. `metadata`: the model file's metadata (for what it has seen); by
    default the bundled model's when the summary names it. `before_commit`: files.writing's."""
    s = detection.summary
    if metadata is None:
        metadata = _default_metadata_if_used(s)
    centre = image_centre(detection.raster)
    rows = [
        ("image", s["image_id"]),
        ("category", f"{s['category']} ({s['category_rule']} rule)" if s.get("category_rule") else s["category"]),
        ("chunks scored", s["chunks"]),
        (f"icy chunks (p >= {s['icy_threshold']:g})", s["icy_chunks"]),
        (f"hard to identify ({s['hard_low']:g} <= p < {s['icy_threshold']:g})", s["hard_chunks"]),
        ("mean probability", s["mean_probability"]),
        ("max probability", s["max_probability"]),
        ("chunks dropped for no-data", s["dropped_chunks"]),
        ("chunk size / stride (px)", f"{s['chunk_size']} / {s['stride']}"),
        *[("scored with", settings) for settings in [scoring_settings(s, band)] if settings],
        *[("warning", warning) for warning in detection.warnings],  # read with the category: a 25 m pixel's scores say little
        *observation_rows(s, centre),
        ("model", f"{s['model_name']} {s['model_version']}" + (f" (weights {metadata['weights_sha256'][:12]})" if (metadata or {}).get("weights_sha256") else "")),
        ("what the model has seen", model_scope(metadata, s["image_id"])),
        *[("faint ice", note) for note in [faint_ice_note(metadata)] if note],
        ("device, network speed", f"{s['device']}, {s['chunks_per_s']} chunks/s"),
        ("runtime (s)", s["runtime_s"]),
        ("input file", detection.raster["path"]),
        ("scored", f"{s['scored_at']} (UTC) by HiRISE Ice Patches {s['engine_version']}" if s.get("scored_at") else "-"),
    ]
    inset = overlap_inset(s["chunk_size"], s["stride"])
    quick, label_all = quicklook_figure(detection.raster["path"], detection.chunks, band, icy_threshold=s["icy_threshold"], hard_low=s["hard_low"], inset=inset)
    top, any_likely = likely_icy_rows(detection.chunks, s["hard_low"])
    top_note = (
        f"Chunks with p &gt;= {s['hard_low']:g} (icy and hard to identify), most probable first; {len([c for c in detection.chunks if c['probability'] >= s['hard_low']])} in all."
        if any_likely else f"No chunk reaches p = {s['hard_low']:g}: the five most probable are shown."
    )
    body = (
        "<h2>Summary</h2>" + table(rows)
        + "<h2>Quicklook</h2>" + figure_img(quick, "scene with chunk grid and chunk IDs")
        + "<p class='note'>Chunks are coloured from blue (not icy) to red (icy), filled the more strongly the more probable ice is, edged dark and solid "
        + "where icy and dark and dashed where hard to identify, and carry their chunk_id "
        + ("(all chunks)" if label_all else f"(only chunks with p &gt;= {s['hard_low']:g}, at most the {MAX_CHUNK_IDS} most probable: the others are too small to label at this scale)")
        + "; dropped no-data chunks are not drawn. Bold IDs: icy."
        + (f" The chunks overlap (stride {s['stride']} px, chunks {s['chunk_size']} px): each is drawn over the ground nearest its centre." if inset else "")
        + "</p>"
        + "<h2>Chunk probabilities</h2>" + figure_img(histogram_figure([c["probability"] for c in detection.chunks], s["icy_threshold"], s["hard_low"]), "histogram of chunk probabilities")
        + "<p class='note'>Dashed lines: the hard-to-identify and icy thresholds.</p>"
        + "<h2>Most likely icy chunks</h2>"
        + grid_table(("chunk_id", "row", "col", "probability", "class"), [(c["chunk_id"], c["row"], c["col"], c["probability"], c["class"]) for c in top])
        + f"<p class='note'>{top_note}</p>"
    )
    write_atomically(path, page(f"Ice patches in {s['image_id']}", body), "The detection report", before_commit)


def _comparison_section(comparison: Dict) -> str:
    """The guard's numbers (model/finetune.py: compare): base and new model on the same chunks."""
    sets = [("your validation chunks", comparison["validation"])]
    if comparison.get("replay"):
        sets.append(("held-out replay examples (what the base model knew)", comparison["replay"]))
    rows = [(name, scores["base"]["chunks"], *[scores[who][key] for key in ("roc_auc", "accuracy", "tpr", "fpr") for who in ("base", "new")]) for name, scores in sets]
    header = ("chunks scored", "count", "AUC base", "AUC new", "accuracy base", "accuracy new", "TPR base", "TPR new", "FPR base", "FPR new")
    verdict = html.escape(comparison["verdict"])
    body = f"<h2>Base model against new model</h2><p>{'<b>' + verdict + '</b>' if comparison['worse'] or comparison.get('doubtful') else verdict}</p>" + grid_table(header, rows)
    by_kind = (comparison.get("replay") or {}).get("base", {}).get("called_icy_by_kind")
    if by_kind:
        new = comparison["replay"]["new"]["called_icy_by_kind"]
        body += "<h3>Held-out replay examples called icy (p &gt;= 0.5), by kind</h3>" + grid_table(("kind", "base", "new"), [(k, v, new[k]) for k, v in by_kind.items()])
    return body + "<p class='note'>Rates at p &gt;= 0.5 with each model's own calibration; AUC does not depend on it.</p>"


def training_report(history: List[Dict], evaluation: Dict, metadata: Dict, path: str) -> None:
    """Loss and accuracy curves (the paper's Figure 3), validation confusion matrices, reliability
    diagram and, for a fine-tuned model, the base model's scores on the same chunks."""
    confusion_blocks = ""
    for key, title in (("at_0.5", "p >= 0.5"), ("at_icy_threshold", "p >= icy threshold")):
        m = evaluation[key]
        confusion_blocks += f"<h3>Validation confusion matrix, {title}</h3>" + grid_table(
            ("", "predicted icy", "predicted not icy"),
            [("labelled icy", m["true_positive"], m["false_negative"]), ("labelled not icy", m["false_positive"], m["true_negative"])],
        ) + table([("precision", m["precision"]), ("recall", m["recall"]), ("false-positive rate", m["false_positive_rate"]), ("accuracy", m["accuracy"])])
    at_icy = evaluation["at_icy_threshold"]
    confusion_blocks += figure_img(confusion_figure(at_icy, at_icy.get("threshold", metadata.get("thresholds", {}).get("icy", 0.6))), "confusion matrix at the icy threshold")
    training = metadata.get("training", {})
    base = metadata.get("base_model")
    epochs_run = f"{training.get('epochs_run')}" + (f" after the base model's {training.get('base_epochs')} ({training.get('total_epochs')} in all)" if base else "")
    replay = training.get("replay")
    chosen = evaluation.get("calibration") or {}
    rows = [
        ("model", f"{metadata['name']} {metadata['version']}"),
        ("input / chunk size (px)", f"{metadata['input_size']} / {metadata['chunk_size']}"),
        ("base model", f"{base['name']} {base['version']} ({base.get('chunk_size')}-px chunks)" if base else "none (trained from scratch)"),
        ("what the model has seen", model_scope(metadata)),
        ("epochs run", epochs_run),
        ("kept epoch (lowest validation loss)", evaluation["best_epoch"]),
        ("validation chunks (icy)", f"{evaluation['validation_chunks']} ({evaluation['validation_icy']})"),
        ("held out for validation", ", ".join(evaluation.get("validation_groups") or training.get("split", {}).get("validation_groups", []))),
        ("ROC AUC", evaluation["at_0.5"]["roc_auc"]),
        ("calibration", f"{chosen.get('choice', 'none')} ({chosen.get('reason', '')})" + (f"; {chosen['false_alarms']}" if chosen.get("false_alarms") else "")),
        ("expected calibration error uncalibrated / as written", f"{evaluation['ece_uncalibrated']:.3f} / {evaluation['ece_calibrated']:.3f}"
         + (f" (at {100 * evaluation['ece_icy_share']:.0f} % icy chunks, the share of a survey the calibration is meant for)"
            if evaluation.get("ece_icy_share") is not None and abs(evaluation["ece_icy_share"] - evaluation["validation_icy"] / max(evaluation["validation_chunks"], 1)) > 1e-9 else "")),
        ("learning rate, warm-up steps, frozen batch-norm layers", f"{training.get('learning_rate')}, {training.get('warmup_steps', 0)}, {training.get('frozen_batch_norm_layers', 0)}"),
        ("pull back toward the base model per step (ANCHOR)", f"{training['anchor']:g}" if training.get("anchor") is not None else "none (trained from scratch)"),
        ("replay examples per epoch (pool, held out, false-alarm reference)", f"{replay['per_epoch']} ({replay['pool']}, {replay['held_out']}, {replay.get('reference', 0)})" if replay else "none"),
        ("augmentation, seed", f"{training.get('augment')}, {training.get('seed')}"),
        ("where the ice lies", f"taught to each cell of the score map from the outlines (weight {training['cell_weight']:g})" if training.get("cell_weight")
         else "not taught: chunk labels only"),
    ]
    body = (
        "<h2>Summary</h2>" + table(rows)
        + (_comparison_section(evaluation["comparison"]) if evaluation.get("comparison") else "")
        + "<h2>Loss and accuracy</h2>" + figure_img(curves_figure(history, evaluation.get("best_epoch")), "loss and accuracy per epoch")
        + confusion_blocks
        + "<h2>Reliability diagram (validation, as written)</h2>"
        + figure_img(reliability_figure(evaluation["reliability"], evaluation.get("ece_calibrated")), "reliability diagram")
        + "<p class='note'>Points on the dashed diagonal y = x mean that a chunk given probability p is icy a share p of the time; "
        + "below it, fewer are icy than the model says; above it, more. The numbers are the chunks in each bin.</p>"
        + "<h2>History</h2>" + grid_table(HISTORY_COLUMNS, [[row.get(k) for k in HISTORY_COLUMNS] for row in history])
    )
    write_atomically(path, page(f"Training report: {metadata['name']}", body), "The training report")

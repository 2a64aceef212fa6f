"""Retraining from a geologist's label layers: the job the train algorithm sends the worker.

It checks the job, reads the labelled chunks of each raster exactly as detect reads them
(model/labels.py) and hands the arrays to model/training.py, which knows nothing of rasters, so
the network can be trained where GDAL is absent (a rented GPU machine, for the default model).

Job file keys: rasters [{path, band, labels [{wkt, label}], exclude [wkt]}] (geometries in the
raster's CRS; a raster turned far from north-up is read through its north-up view, the geometries
carried into that view's map: labels.north_up_rasters), label_mode "chunks" | "outlines", chunk_size (0 or absent: the label polygons'
size, else the base model's, else 1024), input_size, min_valid, base_model, epochs (0 or absent: 30, or 10 from a base model), batch_size,
validation_fraction, learning_rate (0 or absent: 1e-3, or 1e-4 from a base model), patience,
augment ("none" | "lighting" | "full"), seed, widths, trunk (network.TRUNKS; without a base model), name, output_model, report; from a base
model also replay_ratio, distill, anchor and unlabelled (finetune.py's REPLAY_RATIO, REPLAY_DISTILLATION,
ANCHOR_PULL, UNLABELLED_RATIO); with outlines, cell_weight (TrainOptions.cell_weight; 0: chunk labels only).
"""

import math
import os
from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from . import finetune, modelfile
from .chunking import DEFAULT_MIN_VALID
from .errors import EngineError, LabelError, RasterError
from .files import check_destination, path_key
from .fitting import make_deterministic
from .gdalstate import gdal_exceptions
from .georeference import check_north_up, north_turn_warning, to_east_degrees
from .grid import pixel_to_map
from .imagechecks import squashed_pixel_warning
from .network import TRUNKS, network_stride, score_map_side
from .preprocess import DEFAULT_NORMALISATION
from .protocol import Reporter, SilentReporter
from .splitting import BLOCK_CHUNKS, Ground, block_groups, groups_seen_before, lineage_groups, trained_on_labels, with_lineage
from .training import TrainOptions, prepare_tensorflow, train_arrays, trained_architecture


def _options_from_job(job: Dict) -> TrainOptions:
    defaults = TrainOptions()
    augment = job.get("augment", defaults.augment)
    if augment is True:
        augment = defaults.augment
    elif augment is False:
        augment = "none"
    return TrainOptions(
        epochs=int(job["epochs"]) if job.get("epochs") else None,  # 0 / absent: the default for the run
        batch_size=int(job.get("batch_size", defaults.batch_size)),
        validation_fraction=float(job.get("validation_fraction", defaults.validation_fraction)),
        learning_rate=float(job["learning_rate"]) if job.get("learning_rate") else None,  # 0 / absent: the default for the run
        patience=int(job.get("patience", defaults.patience)),
        augment=augment,
        seed=int(job.get("seed", defaults.seed)),
        input_size=int(job.get("input_size", defaults.input_size)),
        chunk_size=int(job.get("chunk_size") or 0),  # 0: decided by tuned_chunk_size
        widths=tuple(job.get("widths") or defaults.widths),
        trunk=job.get("trunk") or defaults.trunk,
        name=job.get("name") or os.path.splitext(os.path.basename(job["output_model"]))[0],
        distill=float(job["distill"]) if job.get("distill") is not None else finetune.REPLAY_DISTILLATION,
        replay_ratio=float(job["replay_ratio"]) if job.get("replay_ratio") is not None else finetune.REPLAY_RATIO,
        anchor=float(job["anchor"]) if job.get("anchor") is not None else finetune.ANCHOR_PULL,
        unlabelled=float(job["unlabelled"]) if job.get("unlabelled") is not None else finetune.UNLABELLED_RATIO,
        cell_weight=float(job["cell_weight"]) if job.get("cell_weight") is not None else defaults.cell_weight,
    )


def _job_inputs(job: Dict) -> Dict[str, list]:
    """{parameter: files} the job reads, which no output may replace."""
    return {"RASTERS": [entry["path"] for entry in job.get("rasters", [])], "BASE_MODEL": [job.get("base_model") or ""]}


_WHOLE_KEYS = ("epochs", "batch_size", "patience", "seed", "input_size", "chunk_size")
_NUMBER_KEYS = ("validation_fraction", "learning_rate", "distill", "replay_ratio", "anchor", "unlabelled", "cell_weight", "min_valid")


def _shape_problem(job) -> str:
    """What in a hand-written job file has the wrong shape ('' where nothing): each key named, as the job's format has it."""
    if not isinstance(job, dict):
        return f"the job is {type(job).__name__}, not an object of keys"

    def whole(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    number = modelfile.number
    wrong = [f"{key} {job[key]!r} is not a whole number" for key in _WHOLE_KEYS if job.get(key) is not None and not whole(job[key])]
    wrong += [f"{key} {job[key]!r} is not a number" for key in _NUMBER_KEYS if job.get(key) is not None and not number(job[key])]
    if job.get("widths") is not None and not (isinstance(job["widths"], list) and job["widths"] and all(whole(w) and w > 0 for w in job["widths"])):
        wrong.append(f"widths {job['widths']!r} is not a list of whole numbers of channels")
    if number(job.get("validation_fraction")) and not 0 < job["validation_fraction"] < 1:
        wrong.append(f"validation_fraction {job['validation_fraction']!r} is not a share between 0 and 1")
    rasters = job.get("rasters")
    if rasters is not None and not (isinstance(rasters, list) and all(isinstance(r, dict) for r in rasters)):
        wrong.append("rasters is not a list of objects")
    for index, entry in enumerate(rasters if isinstance(rasters, list) else []):
        if not isinstance(entry, dict):
            continue
        if not isinstance(entry.get("path"), str) or not entry.get("path"):
            wrong.append(f"rasters[{index}] has no path")
        if entry.get("band") is not None and not whole(entry["band"]):
            wrong.append(f"rasters[{index}].band {entry['band']!r} is not a whole number")
        labels = entry.get("labels", [])
        if not (isinstance(labels, list) and all(isinstance(item, dict) and isinstance(item.get("wkt"), str) for item in labels)):
            wrong.append(f"rasters[{index}].labels is not a list of objects each with a wkt")
        exclude = entry.get("exclude", [])
        if not (isinstance(exclude, list) and all(isinstance(item, str) for item in exclude)):
            wrong.append(f"rasters[{index}].exclude is not a list of WKT strings")
    return "; ".join(wrong)


def _check_job(job: Dict) -> str:
    """The job's label mode, once the job is complete and its outputs can be written: nothing has been read yet."""
    problem = _shape_problem(job)
    if problem:
        raise LabelError(f"The job cannot be run: {problem}. Write it as model/trainingjob.py describes (the train algorithm writes one).")
    if not job.get("output_model"):
        raise LabelError("No output model file was given (OUTPUT_MODEL).")
    mode = job.get("label_mode", "chunks")
    if mode not in ("chunks", "outlines"):
        raise LabelError(f"Unknown label mode {mode!r}; use 'chunks' (labelled chunk polygons) or 'outlines' (ice-patch outlines).")
    if not job.get("rasters"):
        raise LabelError("No raster was given. Choose the HiRISE images the labels belong to.")
    trunk = job.get("trunk")
    if trunk and trunk not in TRUNKS:
        raise LabelError(f"Unknown network trunk {trunk!r}; choose one of {', '.join(TRUNKS)}.")
    anchor = job.get("anchor")
    if anchor is not None and not 0.0 <= float(anchor) <= 1.0:
        raise LabelError(f"ANCHOR (the pull back toward the base model after each step) is {anchor}; give a share of the way from 0 (none) to 1 "
                         f"(all the way: nothing is learnt); the default is {finetune.ANCHOR_PULL}.")
    read = _job_inputs(job)
    check_destination(job["output_model"], "OUTPUT_MODEL", read)
    if job.get("report"):
        check_destination(job["report"], "REPORT", read)
    return mode


class JobChunks(NamedTuple):
    """The labelled chunks of a training job, as train_arrays takes them."""

    images: np.ndarray  # uint8 (n, s, s)
    labels: np.ndarray
    groups: List[str]  # the split's groups: observations, or blocks of one image (splitting.block_groups)
    positions: Tuple[List[int], List[int]]  # (rows, cols) of each chunk in label-chunk units, as the groups' blocks count them
    boxes: List[Tuple[str, int, int, int, int]]  # (image_id, x_off, y_off, width, height): no pixel on both sides
    provenance: Dict
    unlabelled: Optional[np.ndarray]  # uint8 chunks drawn without a label, or None
    cells: Optional[np.ndarray]  # each chunk's ice share of the score-map cells, where outlines say it, or None
    ground: Optional[Ground]  # where each chunk lies on Mars, across the images' CRSs; None where a CRS gives no longitudes


def chunks_on_the_ground(samples, transforms: Dict, crs_wkts: Dict) -> Optional[Ground]:
    """Each labelled chunk's centre and side on Mars (splitting.Ground), from its image's geotransform and CRS; None where
    an image's CRS has no longitudes (a local CRS) or PROJ cannot give them."""
    converters = {}
    centres, edges = [], []
    for sample in samples:
        if sample.image_id not in converters:
            converters[sample.image_id] = to_east_degrees(crs_wkts.get(sample.image_id, ""))
        convert = converters[sample.image_id]
        if convert is None:
            return None
        window, geotransform = sample.window, transforms[sample.image_id]
        middle = window.y_off + window.height / 2
        centres.append(convert(*pixel_to_map(geotransform, window.x_off + window.width / 2, middle)))
        edges.append(convert(*pixel_to_map(geotransform, window.x_off + window.width, middle)))  # the middle of its east side
    if not np.isfinite(np.array(centres + edges, float)).all():
        return None
    centre_points = Ground.from_degrees(*zip(*centres), np.zeros(len(centres))).points
    edge_points = Ground.from_degrees(*zip(*edges), np.zeros(len(edges))).points
    return Ground(centre_points, 2 * np.linalg.norm(centre_points - edge_points, axis=1))


def collect_job_chunks(job: Dict, options: TrainOptions, normalisation: Dict, reporter: Reporter, unlabelled_ratio: float = 0.0, cells: int = 0) -> JobChunks:
    """The labelled chunks of the job's rasters and label geometries; per image, unlabelled_ratio
    times its labelled chunks are drawn from the rest of its grid (labels.unlabelled_chunks).
    Outlines also say where in each chunk the ice lies: its share of cells x cells score-map cells."""
    from .labels import chunks_from_outlines, polygon_chunks, typical_side, unlabelled_chunks
    from .raster import RasterSource

    mode = job.get("label_mode", "chunks")
    if unlabelled_ratio and mode != "chunks":
        reporter.warning("UNLABELLED is for chunk-polygon labels: ice-patch outlines label every chunk of the grid they cover, so no chunk is "
                         "left unlabelled to keep at the base model's answers; it is not used.")
    rng = np.random.default_rng([options.seed, 9])
    samples, unlabelled = [], []
    used = []
    transforms, crs_wkts = {}, {}  # image_id: its geotransform and CRS, which place chunks of several images on their common ground
    for entry in job["rasters"]:
        with RasterSource(entry["path"], int(entry.get("band", 0))) as source:
            info = source.info
            if info.width < options.chunk_size or info.height < options.chunk_size:
                raise RasterError(
                    f"{info.image_id} is {info.width} x {info.height} px, smaller than one {options.chunk_size}-px chunk. Use a larger image or a smaller CHUNK_SIZE."
                )
            check_north_up(info.path, info.geotransform, info.crs_wkt, info.width, info.height)
            transforms[info.image_id], crs_wkts[info.image_id] = info.geotransform, info.crs_wkt
            # a model tuned on squashed or turned ground learns ice that the images it detects on do not show
            for warning in (squashed_pixel_warning(info.path, info.crs_wkt, info.geotransform, info.width, info.height),
                            north_turn_warning(info.path, info.crs_wkt, info.geotransform, info.width, info.height)):
                if warning:
                    reporter.warning(warning)
            if not entry.get("labels"):
                reporter.log(f"{info.image_id}: no labels over this image, skipped")
                continue
            left_out = ""
            if mode == "chunks":
                found, reading = polygon_chunks(source, entry["labels"], options.chunk_size, options.input_size, normalisation, entry.get("exclude", []),
                                                reporter.log, reporter.warning)
                left_out = reading.reasons_left_out()
            else:
                found = chunks_from_outlines(source, entry["labels"], entry.get("exclude", []), options.chunk_size, options.input_size, float(job.get("min_valid", DEFAULT_MIN_VALID)),
                                             normalisation, cells)
            icy = sum(s.label for s in found)
            note = ""
            if unlabelled_ratio and mode == "chunks":  # outlines label every grid chunk
                drawn = unlabelled_chunks(source, [s.window for s in found], options.chunk_size, options.input_size, float(job.get("min_valid", DEFAULT_MIN_VALID)),
                                          normalisation, int(np.ceil(unlabelled_ratio * len(found))), rng)
                unlabelled.extend(drawn)
                note = f"; {len(drawn)} unlabelled {options.chunk_size}-px chunks of it drawn" if drawn else "; no unlabelled chunk of it to draw (every chunk with image data is labelled)"
            reporter.log(f"{info.image_id}: {len(found)} labelled chunks, {icy} icy{note}")
            samples.extend(found)
            used.append({"image_id": info.image_id, "chunks": len(found), "icy": icy, **({"left_out": left_out} if left_out else {})})
    if not samples:
        raise LabelError("No label lies over any of the rasters. Check that the label layers belong to these images (CRS and extent) and that LABEL_FIELD is filled.")
    images = np.stack([s.image for s in samples])
    labels = np.array([s.label for s in samples], np.int32)
    # Spatial blocks of 3 x 3 labelled chunks, whatever CHUNK_SIZE reads them at.
    unit = typical_side([s.window for s in samples]) if mode == "chunks" else options.chunk_size
    positions = ([s.window.y_off // unit for s in samples], [s.window.x_off // unit for s in samples])
    places = [pixel_to_map(transforms[s.image_id], s.window.x_off + s.window.width / 2, s.window.y_off + s.window.height / 2) for s in samples]
    ground_block = BLOCK_CHUNKS * max(unit * math.hypot(gt[1], gt[4]) for gt in transforms.values())
    ground = chunks_on_the_ground(samples, transforms, crs_wkts)
    groups = block_groups([s.image_id for s in samples], *positions, labels=labels, log=reporter.log, places=places, ground_block=ground_block, ground=ground)
    boxes = [(s.image_id, s.window.x_off, s.window.y_off, s.window.width, s.window.height) for s in samples]
    shares = np.stack([s.cells for s in samples]) if mode == "outlines" and cells else None
    return JobChunks(images, labels, groups, positions, boxes, {"label_mode": mode, "images": used}, np.stack(unlabelled) if unlabelled else None, shares, ground)


def _score_map_cells(mode: str, options: TrainOptions, base, reporter: Reporter) -> int:
    """Cells across the score map that outlines can teach (0: none)."""
    if mode != "outlines" or options.cell_weight <= 0:
        return 0
    trained = trained_architecture(options, base[1] if base else None)
    side = score_map_side(options.input_size, trained)
    if not side:
        reporter.log(f"the outlines label whole chunks only: the input size {options.input_size} px is not a multiple of the network's {network_stride(trained)}-px cells")
    return side


def distinct_rasters(rasters: List[Dict], reporter: Reporter) -> List[Dict]:
    """A job's rasters with each file (and band) once, their labels and exclusions together: one given twice,
    by another path or a link, had trained on every chunk of it twice. Repeated labels are then counted once."""
    merged: Dict[Tuple[str, int], Dict] = {}
    for entry in rasters:
        key = (path_key(os.path.realpath(entry["path"])), int(entry.get("band", 0)))
        if key not in merged:
            merged[key] = dict(entry, labels=list(entry.get("labels", [])), exclude=list(entry.get("exclude", [])))
            continue
        kept = merged[key]
        reporter.warning(f"{entry['path']} is the file of {kept['path']}, given before: it is read once, with the labels given with each.")
        kept["labels"].extend(entry.get("labels", []))
        kept["exclude"].extend(entry.get("exclude", []))
    return list(merged.values())


@gdal_exceptions()
def run_job(job: Dict, reporter: Reporter = None) -> Dict:
    from .labels import label_window_sides, north_up_rasters, tuned_chunk_size
    # imported now, not when training ends: a plugin updated or uninstalled meanwhile had failed the run at its report
    from .report import training_report

    reporter = reporter or SilentReporter()
    mode = _check_job(job)
    options = _options_from_job(job)
    base = replay = None
    normalisation = DEFAULT_NORMALISATION
    if job.get("base_model"):
        prepare_tensorflow(modelfile.read_metadata(job["base_model"], "BASE_MODEL").get("architecture", {}).get("widths", []))
        make_deterministic(options.seed)  # before the load, which seeds the base's dropout layers from Python's random
        base = modelfile.load(job["base_model"], "BASE_MODEL")
        replay = modelfile.load_replay(job["base_model"], "BASE_MODEL")
        base_meta = base[1]
        options.input_size = base_meta["input_size"]  # the network's input and normalisation are the base's
        normalisation = base_meta["normalisation"]
        reporter.log(
            f"continuing from {modelfile.describe(base_meta)} after its {base_meta.get('training', {}).get('total_epochs', 0)} epochs "
            f"({'with' if replay is not None else 'without'} a replay set); the epochs below are numbered from 1 for this run"
        )
    with north_up_rasters(distinct_rasters(job["rasters"], reporter), reporter.log) as rasters:
        seen = dict(job, rasters=rasters)
        sides = label_window_sides(seen["rasters"]) if mode == "chunks" else []
        options.chunk_size = tuned_chunk_size(options.chunk_size, sides, base[1]["chunk_size"] if base else None, TrainOptions.chunk_size, reporter, options.input_size)
        chunks = collect_job_chunks(seen, options, normalisation, reporter, options.unlabelled if base else 0.0, _score_map_cells(mode, options, base, reporter))
    options.extra_metadata = {"data": chunks.provenance}
    if base and trained_on_labels(base[1]):  # an earlier round's, perhaps kept
        earlier = lineage_groups(base[1])
        options.not_for_validation = groups_seen_before(chunks.groups, [box[0] for box in chunks.boxes], *chunks.positions, earlier)
    outcome = train_arrays(chunks.images, chunks.labels, chunks.groups, options, reporter, base, replay=replay, unlabelled=chunks.unlabelled, cells=chunks.cells,
                           boxes=chunks.boxes, ground=chunks.ground)
    training_record = outcome["metadata"]["training"]
    training_record["split"] = with_lineage(training_record["split"], base[1] if base else None)
    try:
        modelfile.save(outcome["network"], outcome["metadata"], job["output_model"], replay)  # the base's replay set goes on
        if job.get("report"):
            training_report(outcome["history"], outcome["metrics"], outcome["metadata"], job["report"])
    except OSError as exc:
        raise EngineError(f"Could not write '{exc.filename or job['output_model']}' ({exc.strerror or exc}). Choose another OUTPUT_MODEL or REPORT.") from None
    reporter.log(f"model written to {job['output_model']}")
    return {"model_path": os.path.abspath(job["output_model"]), "history": outcome["history"], "metrics": outcome["metrics"]}

"""Training: labelled chunks in, a model file with its history, metrics and calibration out.

Used by hiriseice:train (through a JSON job, see run_job) and by scripts/train_default_model
(through train_arrays). Adam and binary cross-entropy as in the paper; the weights of the
epoch with the lowest validation loss are kept; class weights balance the ~20 % icy chunks;
Platt scaling on the validation chunks calibrates the probabilities.

Job file keys: rasters [{path, band, labels [{wkt, label}], exclude [wkt]}] (geometries in the
raster's CRS), label_mode "chunks" | "outlines", chunk_size, input_size, min_valid, base_model,
epochs, batch_size, validation_fraction, learning_rate, patience, augment ("none" |
"lighting" | "full"), seed, widths, name, output_model, report.
"""

import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from . import calibration, metrics, modelfile, rules
from .errors import CancelledError, LabelError, RasterError
from .network import PAPER_WIDTHS, architecture, build_network, logit_model
from .preprocess import DEFAULT_NORMALISATION
from .protocol import Reporter, SilentReporter
from .raster import gdal_exceptions
from .splitting import block_groups, describe_split, fixed_split, split_groups

AUGMENT_MODES = ("none", "lighting", "full")

# TensorFlow 2.20/2.21's oneDNN convolution back-propagation corrupts the heap (abort or
# segfault mid-fit) when a layer has fewer than 16 channels, as in the tiny test networks.
# The paper's widths are unaffected and train 1.6 times faster with oneDNN (benchmarks/train_throughput.py), so it is
# switched off only for narrow networks, and only before TensorFlow is first imported.
ONEDNN_MIN_WIDTH = 16


def prepare_tensorflow(widths: Sequence[int]) -> None:
    if widths and min(int(w) for w in widths) < ONEDNN_MIN_WIDTH:
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


@dataclass
class TrainOptions:
    epochs: int = 30
    batch_size: int = 25
    validation_fraction: float = 0.2
    learning_rate: float = 1e-3
    patience: int = 8
    # "lighting" keeps north-up geometry: ice hides on the poleward side of what shades it, so
    # only east-west mirrors and brightness/contrast changes are safe; "full" adds the
    # north-south flips and 90-degree rotations that scramble that cue.
    augment: str = "lighting"
    seed: int = 42
    input_size: int = 256
    chunk_size: int = 1024
    widths: Sequence[int] = PAPER_WIDTHS
    name: str = "hiriseice-model"
    calibrate: bool = True
    # Validation groups to keep (e.g. a base model's, so continuing never validates on chunks it
    # trained on); None splits anew.
    validation_groups: Optional[Sequence[str]] = None
    extra_metadata: Dict = field(default_factory=dict)


def augment_batch(images: np.ndarray, rng: np.random.Generator, mode: str) -> np.ndarray:
    """images: float32 (n, s, s, 1) in [0, 1], no-data at 0 (kept at 0)."""
    if mode == "none":
        return images
    out = images.copy()
    for i in range(len(out)):
        x = out[i, :, :, 0]
        if rng.random() < 0.5:
            x = x[:, ::-1]
        if mode == "full":
            if rng.random() < 0.5:
                x = x[::-1, :]
            x = np.rot90(x, int(rng.integers(4)))
        valid = x > 0
        contrast = rng.uniform(0.8, 1.2)
        brightness = rng.uniform(-0.08, 0.08)
        x = np.where(valid, np.clip((x - 0.5) * contrast + 0.5 + brightness, 1e-3, 1.0), 0.0)
        out[i, :, :, 0] = x
    return out


def _to_float(images_u8: np.ndarray) -> np.ndarray:
    return (images_u8.astype(np.float32) / 255.0)[..., None]


def train_arrays(images_u8: np.ndarray, labels: np.ndarray, groups: Sequence[str], options: TrainOptions, reporter: Reporter = None, base=None, should_stop=None) -> Dict:
    """Train on uint8 chunk images (n, s, s). base: (network, metadata) to continue training.

    Returns {"network", "metadata", "history", "metrics", "split"}.
    """
    prepare_tensorflow(base[1]["architecture"]["widths"] if base is not None else options.widths)
    import keras
    import tensorflow as tf

    reporter = reporter or SilentReporter()
    if options.augment not in AUGMENT_MODES:
        raise LabelError(f"AUGMENT must be one of {', '.join(AUGMENT_MODES)}, not {options.augment!r}.")
    labels = np.asarray(labels, np.int32)
    classes = set(labels.tolist())
    if len(labels) == 0:
        raise LabelError("There are no labelled chunks to train on. Label some chunks 1 (icy) or 0 (not icy).")
    if len(classes) < 2:
        only = "icy" if 1 in classes else "not icy"
        raise LabelError(f"All {len(labels)} labelled chunks are {only}; the network needs both icy and not icy examples. Label some chunks of the other class.")
    if options.validation_groups is not None:
        try:
            train_mask, val_mask = fixed_split(groups, options.validation_groups)
        except ValueError:
            raise LabelError(
                f"The {len(options.validation_groups)} validation groups given would leave no chunk for training or none for validation; give groups that hold some of the chunks, or none to split anew."
            ) from None
    else:
        try:
            train_mask, val_mask = split_groups(groups, labels, options.validation_fraction, options.seed)
        except ValueError:
            raise LabelError(
                "All labelled chunks lie in one image block, so no honest validation split is possible. Label chunks further apart, or give a second raster."
            ) from None
    split = describe_split(groups, train_mask, val_mask)
    reporter.log(
        f"{int(train_mask.sum())} training chunks ({int(labels[train_mask].sum())} icy), {int(val_mask.sum())} validation chunks "
        f"({int(labels[val_mask].sum())} icy); split by {len(split['validation_groups'])} of {len(split['train_groups']) + len(split['validation_groups'])} groups"
    )

    keras.utils.set_random_seed(options.seed)
    tf.config.experimental.enable_op_determinism()
    if base is not None:
        network, base_metadata = base
        epoch_offset = int(base_metadata.get("training", {}).get("total_epochs", 0))
    else:
        network = build_network(options.input_size, options.widths, seed=options.seed)
        base_metadata = None
        epoch_offset = 0
    network.compile(
        optimizer=keras.optimizers.Adam(options.learning_rate),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.Precision(name="precision"), keras.metrics.Recall(name="recall"), keras.metrics.AUC(name="auc")],
    )
    n_train = int(train_mask.sum())
    positives = int(labels[train_mask].sum())
    class_weight = {0: n_train / (2.0 * max(n_train - positives, 1)), 1: n_train / (2.0 * max(positives, 1))}

    train_x, train_y = images_u8[train_mask], labels[train_mask]
    val_x, val_y = _to_float(images_u8[val_mask]), labels[val_mask].astype(np.float32)
    batch_size = max(1, min(options.batch_size, n_train))
    steps = int(np.ceil(n_train / batch_size))

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.epoch = 0
            self.order = np.arange(n_train)
            self.on_epoch_end()

        def __len__(self):
            return steps

        def __getitem__(self, index):
            rng = np.random.default_rng([options.seed, self.epoch, index])
            chosen = self.order[index * batch_size : (index + 1) * batch_size]
            return augment_batch(_to_float(train_x[chosen]), rng, options.augment), train_y[chosen].astype(np.float32)

        def on_epoch_end(self):
            self.order = np.random.default_rng([options.seed, self.epoch]).permutation(n_train)
            self.epoch += 1

    history: List[Dict] = []
    state = {"best_loss": np.inf, "best_weights": None, "best_epoch": 0, "waited": 0}
    total_steps = options.epochs * steps

    class Monitor(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            reporter.progress((len(history) * steps + batch + 1) / total_steps)
            if should_stop is not None and should_stop():
                raise CancelledError()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            row = {"epoch": epoch_offset + epoch + 1}
            row.update({k: float(logs[k]) for k in ("loss", "accuracy", "val_loss", "val_accuracy") if k in logs})
            row.update({k: float(logs["val_" + k]) for k in ("precision", "recall", "auc") if "val_" + k in logs})
            history.append(row)
            val_loss = row.get("val_loss", np.inf)
            if val_loss < state["best_loss"]:
                state.update(best_loss=val_loss, best_weights=network.get_weights(), best_epoch=row["epoch"], waited=0)
            else:
                state["waited"] += 1
                if state["waited"] >= options.patience:
                    self.model.stop_training = True
            reporter.log(
                f"epoch {row['epoch']}: loss {row.get('loss', float('nan')):.4f} val_loss {val_loss:.4f} "
                f"val_accuracy {row.get('val_accuracy', float('nan')):.3f} val_auc {row.get('auc', float('nan')):.3f}"
            )

    started = time.monotonic()
    network.fit(Batches(), validation_data=(val_x, val_y), epochs=options.epochs, class_weight=class_weight, callbacks=[Monitor()], verbose=0, shuffle=False)
    reporter.progress(1.0)  # early stopping ends the epochs before the bar does
    if state["best_weights"] is not None:
        network.set_weights(state["best_weights"])
    reporter.log(f"kept epoch {state['best_epoch']} (lowest validation loss {state['best_loss']:.4f}); {time.monotonic() - started:.0f} s of training")

    val_logits = np.asarray(logit_model(network).predict(val_x, batch_size=batch_size, verbose=0)).reshape(-1)
    raw = calibration.sigmoid(val_logits)
    fitted = calibration.fit_platt(val_logits, val_y) if options.calibrate and len(set(val_y.tolist())) == 2 else None
    probabilities = calibration.apply(val_logits, fitted)
    evaluation = {
        "validation_chunks": int(len(val_y)),
        "validation_icy": int(val_y.sum()),
        "at_0.5": metrics.summary(probabilities, val_y, 0.5),
        "at_icy_threshold": metrics.summary(probabilities, val_y, rules.ICY_THRESHOLD),
        "ece_uncalibrated": calibration.expected_calibration_error(raw, val_y),
        "ece_calibrated": calibration.expected_calibration_error(probabilities, val_y),
        "reliability": calibration.reliability(probabilities, val_y),
        "best_epoch": state["best_epoch"],
        "best_val_loss": float(state["best_loss"]),
    }

    if base_metadata is not None:
        metadata = dict(base_metadata)
        metadata["version"] = modelfile.new_metadata("", 1, 1, {}, {}, {})["version"]
        metadata["name"] = options.name or base_metadata["name"]
        metadata["base_model"] = {"name": base_metadata["name"], "version": base_metadata["version"]}
    else:
        metadata = modelfile.new_metadata(
            options.name, options.input_size, options.chunk_size, DEFAULT_NORMALISATION, architecture(options.input_size, options.widths),
            {"icy": rules.ICY_THRESHOLD, "hard_low": rules.HARD_LOW},
        )
    metadata["calibration"] = fitted
    metadata["metrics"] = {k: v for k, v in evaluation.items() if k != "reliability"}
    metadata["training"] = dict(
        options.extra_metadata,
        epochs_run=len(history),
        total_epochs=epoch_offset + len(history),
        best_epoch=state["best_epoch"],
        batch_size=batch_size,
        learning_rate=options.learning_rate,
        augment=options.augment,
        seed=options.seed,
        chunks=int(len(labels)),
        icy_chunks=int(labels.sum()),
        split=split,
        class_weight=class_weight,
    )
    return {"network": network, "metadata": metadata, "history": history, "metrics": evaluation, "split": split}


def _options_from_job(job: Dict) -> TrainOptions:
    defaults = TrainOptions()
    augment = job.get("augment", defaults.augment)
    if augment is True:
        augment = defaults.augment
    elif augment is False:
        augment = "none"
    return TrainOptions(
        epochs=int(job.get("epochs", defaults.epochs)),
        batch_size=int(job.get("batch_size", defaults.batch_size)),
        validation_fraction=float(job.get("validation_fraction", defaults.validation_fraction)),
        learning_rate=float(job.get("learning_rate", defaults.learning_rate)),
        patience=int(job.get("patience", defaults.patience)),
        augment=augment,
        seed=int(job.get("seed", defaults.seed)),
        input_size=int(job.get("input_size", defaults.input_size)),
        chunk_size=int(job.get("chunk_size", defaults.chunk_size)),
        widths=tuple(job.get("widths") or defaults.widths),
        name=job.get("name") or os.path.splitext(os.path.basename(job["output_model"]))[0],
    )


def collect_job_chunks(job: Dict, options: TrainOptions, normalisation: Dict, reporter: Reporter):
    """(images uint8, labels, groups, provenance) from the job's rasters and label geometries."""
    from .chunking import DEFAULT_MIN_VALID
    from .labels import chunks_from_outlines, chunks_from_polygons
    from .raster import RasterSource

    mode = job.get("label_mode", "chunks")
    if mode not in ("chunks", "outlines"):
        raise LabelError(f"Unknown label mode {mode!r}; use 'chunks' (labelled chunk polygons) or 'outlines' (ice-patch outlines).")
    rasters = job.get("rasters") or []
    if not rasters:
        raise LabelError("No raster was given. Choose the HiRISE images the labels belong to.")
    samples = []
    used = []
    for entry in rasters:
        with RasterSource(entry["path"], int(entry.get("band", 0))) as source:
            info = source.info
            if info.width < options.chunk_size or info.height < options.chunk_size:
                raise RasterError(
                    f"{info.image_id} is {info.width} x {info.height} px, smaller than one {options.chunk_size}-px chunk. Use a larger image or a smaller CHUNK_SIZE."
                )
            if not entry.get("labels"):
                reporter.log(f"{info.image_id}: no labels over this image, skipped")
                continue
            if mode == "chunks":
                found = chunks_from_polygons(source, entry["labels"], options.chunk_size, options.input_size, normalisation)
            else:
                found = chunks_from_outlines(source, entry["labels"], entry.get("exclude", []), options.chunk_size, options.input_size, float(job.get("min_valid", DEFAULT_MIN_VALID)), normalisation)
            icy = sum(s.label for s in found)
            reporter.log(f"{info.image_id}: {len(found)} labelled chunks, {icy} icy")
            samples.extend(found)
            used.append({"image_id": info.image_id, "chunks": len(found), "icy": icy})
    if not samples:
        raise LabelError("No label lies over any of the rasters. Check that the label layers belong to these images (CRS and extent) and that LABEL_FIELD is filled.")
    images = np.stack([s.image for s in samples])
    labels = np.array([s.label for s in samples], np.int32)
    groups = block_groups([s.image_id for s in samples], [s.window.y_off // options.chunk_size for s in samples], [s.window.x_off // options.chunk_size for s in samples])
    return images, labels, groups, {"label_mode": mode, "images": used}


@gdal_exceptions()
def run_job(job: Dict, reporter: Reporter = None) -> Dict:
    reporter = reporter or SilentReporter()
    if not job.get("output_model"):
        raise LabelError("No output model file was given (OUTPUT_MODEL).")
    options = _options_from_job(job)
    base = None
    normalisation = DEFAULT_NORMALISATION
    if job.get("base_model"):
        prepare_tensorflow(modelfile.read_metadata(job["base_model"]).get("architecture", {}).get("widths", []))
        base = modelfile.load(job["base_model"])
        base_meta = base[1]
        options.input_size, options.chunk_size = base_meta["input_size"], base_meta["chunk_size"]
        normalisation = base_meta["normalisation"]
        reporter.log(f"continuing from {modelfile.describe(base_meta)}")
    images, labels, groups, provenance = collect_job_chunks(job, options, normalisation, reporter)
    options.extra_metadata = {"data": provenance}
    outcome = train_arrays(images, labels, groups, options, reporter, base)
    modelfile.save(outcome["network"], outcome["metadata"], job["output_model"])
    reporter.log(f"model written to {job['output_model']}")
    if job.get("report"):
        from .report import training_report

        training_report(outcome["history"], outcome["metrics"], outcome["metadata"], job["report"])
    return {"model_path": os.path.abspath(job["output_model"]), "history": outcome["history"], "metrics": {k: v for k, v in outcome["metrics"].items()}}

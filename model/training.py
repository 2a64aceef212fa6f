"""Training: labelled chunk arrays in, a network with its history, metrics and calibration out.

Used by hiriseice:train (model/trainingjob.py reads the label layers into arrays) and by
scripts/train_default_model. Nothing here reads a raster, and any Keras backend trains: the
default model can be trained on a GPU machine with JAX and no GDAL. Adam and binary
cross-entropy as in the paper; the weights of the epoch with the lowest validation loss are
kept; class weights balance the ~20 % icy chunks; Platt scaling on the validation chunks
calibrates the probabilities where they support it.
Continuing a base model (learning rate, batch norm, replay, the guard): model/finetune.py.
"""

import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import calibration, cells as cell_supervision, efficientnet, finetune, metrics, modelfile, rules
from .errors import CancelledError, LabelError
from .network import PAPER_WIDTHS, SMALL_XCEPTION, architecture, architecture_widths, build_from, cell_logits, logit_model
from .preprocess import DEFAULT_NORMALISATION
from .protocol import Reporter, SilentReporter
from .splitting import describe_split, fixed_split, split_groups

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
    # None: finetune.SCRATCH_EPOCHS (30), or FINE_TUNE_EPOCHS (10) when continuing a base model.
    epochs: Optional[int] = None
    batch_size: int = 25
    validation_fraction: float = 0.2
    # None: finetune.SCRATCH_LEARNING_RATE (1e-3), or FINE_TUNE_LEARNING_RATE (1e-4) when continuing a base model.
    learning_rate: Optional[float] = None
    patience: int = 8
    # "lighting" keeps north-up geometry: ice hides on the poleward side of what shades it, so
    # only east-west mirrors and brightness/contrast changes are safe; "full" adds the
    # north-south flips and 90-degree rotations that scramble that cue.
    augment: str = "lighting"
    seed: int = 42
    input_size: int = 256
    chunk_size: int = 1024
    widths: Sequence[int] = PAPER_WIDTHS
    # network.TRUNKS: the paper's small Xception of these widths, from random weights, or
    # EfficientNet-Lite0 from ImageNet's (widths unused). A base model keeps its own.
    trunk: str = SMALL_XCEPTION
    name: str = "hiriseice-model"
    calibrate: bool = True
    # Linear learning-rate warm-up over the first epoch (at most a fifth of the steps); None: when continuing a base model.
    warmup: Optional[bool] = None
    # Batch-norm layers in inference mode, keeping the base's statistics; None: when continuing a base model.
    freeze_batch_norm: Optional[bool] = None
    # Validation groups to keep (e.g. a base model's, so continuing never validates on chunks it
    # trained on); None splits anew.
    validation_groups: Optional[Sequence[str]] = None
    # Share of each replay example's target taken from the base model's own probability rather than
    # its label (finetune.REPLAY_DISTILLATION; 0: labels only).
    distill: float = finetune.REPLAY_DISTILLATION
    # Replay examples in each epoch per training chunk (finetune.REPLAY_RATIO).
    replay_ratio: float = finetune.REPLAY_RATIO
    # Share of the way back to the base's weights after each step (finetune.ANCHOR_PULL), when continuing.
    anchor: float = finetune.ANCHOR_PULL
    # Unlabelled chunks of the user's images per training chunk, aimed at the base model's own
    # probability (finetune.UNLABELLED_RATIO), when continuing.
    unlabelled: float = finetune.UNLABELLED_RATIO
    # Stop after the epoch that ends past this many minutes of training (None: no limit), e.g. a
    # rented GPU machine's lease; the best epoch so far is kept as always.
    max_minutes: Optional[float] = None
    # Weight of the score map's cell loss (model/cells.py) beside the chunk's, where the training
    # chunks' ice is outlined (train_arrays' ``cells``).
    cell_weight: float = 1.0
    extra_metadata: Dict = field(default_factory=dict)


def augment_batch(images: np.ndarray, rng: np.random.Generator, mode: str, cell_targets: Optional[np.ndarray] = None):
    """images: float32 (n, s, s, 1) in [0, 1], no-data at 0 (kept at 0). With ``cell_targets``
    (n, g, g, 2), returns (images, cell_targets) with every mirror and turn applied to both."""
    if mode == "none":
        return images if cell_targets is None else (images, cell_targets)
    out = images.copy()
    cells_out = None if cell_targets is None else cell_targets.copy()
    for i in range(len(out)):
        east_west = rng.random() < 0.5
        north_south, turns = (rng.random() < 0.5, int(rng.integers(4))) if mode == "full" else (False, 0)

        def moved(a):
            return np.rot90(a[::-1 if north_south else 1, ::-1 if east_west else 1], turns)

        x = moved(out[i, :, :, 0])
        valid = x > 0
        contrast = rng.uniform(0.8, 1.2)
        brightness = rng.uniform(-0.08, 0.08)
        out[i, :, :, 0] = np.where(valid, np.clip((x - 0.5) * contrast + 0.5 + brightness, 1e-3, 1.0), 0.0)
        if cells_out is not None:
            cells_out[i] = moved(cells_out[i])
    return out if cells_out is None else (out, cells_out)


def trained_architecture(options: TrainOptions, base_metadata: Optional[Dict]) -> Dict:
    """The architecture a run trains: the base model's, or the one options' input size and widths build."""
    return base_metadata["architecture"] if base_metadata is not None else architecture(options.input_size, options.widths, trunk=options.trunk)


def _to_float(images_u8: np.ndarray) -> np.ndarray:
    return (images_u8.astype(np.float32) / 255.0)[..., None]


def _split(labels: np.ndarray, groups: Sequence[str], options: TrainOptions) -> Tuple[np.ndarray, np.ndarray]:
    if options.validation_groups is not None:
        try:
            return fixed_split(groups, options.validation_groups)
        except ValueError:
            raise LabelError(
                f"The {len(options.validation_groups)} validation groups given would leave no chunk for training or none for validation; give groups that hold some of the chunks, or none to split anew."
            ) from None
    try:
        return split_groups(groups, labels, options.validation_fraction, options.seed)
    except ValueError:
        raise LabelError(
            "All labelled chunks lie in one image block, so no honest validation split is possible. Label chunks further apart, or give a second raster."
        ) from None


def _require_both_classes(labels: np.ndarray, masks: Dict[str, np.ndarray], split: Dict) -> None:
    """A side with one class cannot be trained on, or judged and calibrated on."""
    for side, mask in masks.items():
        present = set(labels[mask].tolist())
        if len(present) < 2:
            have, missing = ("icy", "not icy") if 1 in present else ("not icy", "icy")
            blocks = ", ".join(split[f"{'validation' if side == 'validation' else 'train'}_groups"])
            raise LabelError(
                f"The {int(mask.sum())} {side} chunks ({blocks}) are all {have}, so the model cannot be {'judged' if side == 'validation' else 'trained'} on them. "
                f"Label some {missing} chunks in other parts of the image (other blocks than these), or give another raster with {missing} chunks."
            )


def hard_label_metric(metric_class, name: str):
    """A Keras metric scored against the label a target stands for (>= 0.5: icy): a distilled
    replay example's target lies between its label and the base model's probability
    (finetune.replay_targets), and an accuracy against 0.75 or 0.25 would count it wrong."""
    import keras

    class HardLabel(metric_class):
        def update_state(self, y_true, y_pred, sample_weight=None):
            return super().update_state(keras.ops.cast(y_true >= 0.5, "float32"), y_pred, sample_weight)

    return HardLabel(name=name)


def train_arrays(images_u8: np.ndarray, labels: np.ndarray, groups: Sequence[str], options: TrainOptions, reporter: Reporter = None, base=None, should_stop=None,
                 replay: Optional[Dict] = None, unlabelled: Optional[np.ndarray] = None, cells: Optional[np.ndarray] = None) -> Dict:
    """Train on uint8 chunk images (n, s, s). base: (network, metadata) to fine-tune; replay: the
    base's replay set (modelfile.load_replay), mixed into every epoch, never into validation;
    unlabelled: uint8 chunks of the user's images without a label, each epoch aimed at the
    base's own probability for them (fine-tuning only); cells: (n, g, g) the share of each
    score-map cell that each chunk's ice covers, where it is known (model/cells.py).

    Returns {"network", "metadata", "history", "metrics", "split"}.
    """
    prepare_tensorflow(architecture_widths(trained_architecture(options, base[1] if base is not None else None)))
    import keras

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
    train_mask, val_mask = _split(labels, groups, options)
    split = describe_split(groups, train_mask, val_mask)
    _require_both_classes(labels, {"validation": val_mask, "training": train_mask}, split)
    reporter.log(
        f"{int(train_mask.sum())} training chunks ({int(labels[train_mask].sum())} icy), {int(val_mask.sum())} validation chunks "
        f"({int(labels[val_mask].sum())} icy); split by {len(split['validation_groups'])} of {len(split['train_groups']) + len(split['validation_groups'])} groups; "
        f"held out for validation: {', '.join(split['validation_groups'])}"
    )

    keras.utils.set_random_seed(options.seed)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    fine_tuning = base is not None
    if fine_tuning:
        network, base_metadata = base
        base_epochs = int(base_metadata.get("training", {}).get("total_epochs", 0))
    else:
        network = build_from(trained_architecture(options, None), seed=options.seed)
        if options.trunk == efficientnet.NAME:
            efficientnet.load_imagenet(network)
            reporter.log("the EfficientNet-Lite0 trunk starts from its ImageNet weights")
        base_metadata, base_epochs = None, 0
    learning_rate = options.learning_rate or (finetune.FINE_TUNE_LEARNING_RATE if fine_tuning else finetune.SCRATCH_LEARNING_RATE)
    epochs = options.epochs or (finetune.FINE_TUNE_EPOCHS if fine_tuning else finetune.SCRATCH_EPOCHS)
    warmup = fine_tuning if options.warmup is None else options.warmup
    anchor = options.anchor if fine_tuning else 0.0
    freeze = fine_tuning if options.freeze_batch_norm is None else options.freeze_batch_norm

    train_x, train_y = images_u8[train_mask], labels[train_mask]
    val_x, val_y = _to_float(images_u8[val_mask]), labels[val_mask].astype(np.float32)
    n_train = len(train_y)
    mix = finetune.ReplayMix(replay, int(round(options.replay_ratio * n_train)), options.seed) if replay is not None else None
    n_replay = mix.per_epoch if mix else 0
    pool_x = np.concatenate([train_x, mix.pool["images"]]) if n_replay else train_x
    pool_y = np.concatenate([train_y, mix.pool["labels"].astype(np.int32)]) if n_replay else train_y
    n_unlabelled = len(unlabelled) if fine_tuning and unlabelled is not None else 0
    unlabelled_start = len(pool_y)
    if n_unlabelled:  # their labels are unknown: the targets (set below) and weights are what they hold
        pool_x = np.concatenate([pool_x, unlabelled])
        pool_y = np.concatenate([pool_y, np.zeros(n_unlabelled, np.int32)])
    epoch_size = n_train + n_replay + n_unlabelled
    if mix:
        reporter.log(mix.describe(options.distill))
    batch_size = max(1, min(options.batch_size, epoch_size))
    steps = int(np.ceil(epoch_size / batch_size))
    labelled_size = n_train + n_replay
    positives = int(train_y.sum()) + (mix.icy if mix else 0)
    class_weight = {0: labelled_size / (2.0 * max(labelled_size - positives, 1)), 1: labelled_size / (2.0 * max(positives, 1))}
    pool_weights = np.where(pool_y == 1, class_weight[1], class_weight[0]).astype(np.float32)
    pool_weights[unlabelled_start:] = 1.0
    supervise_cells = cells is not None and options.cell_weight > 0
    if supervise_cells:  # examples without outlined ice (replay, unlabelled) teach no cell
        train_cells = cell_supervision.targets(cells[train_mask], train_y)
        pool_cells = np.concatenate([train_cells, cell_supervision.unsupervised(len(pool_y) - n_train, train_cells.shape[1])])
        val_cells = cell_supervision.targets(cells[val_mask], val_y)

    scorer = logit_model(network)  # shares the network's layers, so it scores the current weights

    def logits_of(images_u8_or_float):
        x = images_u8_or_float if images_u8_or_float.dtype == np.float32 else _to_float(images_u8_or_float)
        return np.asarray(scorer.predict(x, batch_size=batch_size, verbose=0)).reshape(-1) if len(x) else np.zeros(0)

    pool_targets = pool_y.astype(np.float32)
    if fine_tuning:  # scored before training changes the shared weights
        pool_logits = logits_of(mix.pool["images"]) if mix else None
        base_logits = {"validation": logits_of(val_x), "held_out": logits_of(mix.held_out["images"]) if mix else None,
                       "rehearsed_ice_free": pool_logits[mix.ice_free_mask()] if mix else None, "reference": logits_of(mix.reference) if mix else None}
        if n_replay and options.distill:
            pool_targets[n_train:unlabelled_start] = finetune.replay_targets(mix.pool["labels"], pool_logits, options.distill)
        if n_unlabelled:
            pool_targets[unlabelled_start:] = calibration.sigmoid(logits_of(unlabelled))
            reporter.log(finetune.describe_unlabelled(pool_targets[unlabelled_start:]))
    frozen = finetune.freeze_batch_norm(network) if freeze else 0
    warmup_steps = finetune.warmup_steps(steps, epochs) if warmup else 0
    rate = finetune.warmup_schedule(learning_rate, warmup_steps) if warmup else learning_rate
    reporter.log(f"learning rate {learning_rate:g}" + (f", warmed up over {warmup_steps} steps" if warmup else "") + (f"; {frozen} batch-norm layers keep the base model's statistics" if frozen else "")
                 + (f"; each step pulls the weights {100 * anchor:g} % of the way back to the base model's" if anchor else ""))
    chunk_metrics = [hard_label_metric(keras.metrics.BinaryAccuracy, "accuracy"), hard_label_metric(keras.metrics.Precision, "precision"),
                     hard_label_metric(keras.metrics.Recall, "recall"), hard_label_metric(keras.metrics.AUC, "auc")]
    if supervise_cells:  # the same layers and one pass, with the score map as a second output
        trainee = keras.Model(network.inputs, {"probability": network.output, "cells": cell_logits(network, trained_architecture(options, base_metadata))})
        trainee.compile(optimizer=keras.optimizers.Adam(rate), loss={"probability": keras.losses.BinaryCrossentropy(), "cells": cell_supervision.loss},
                        loss_weights={"probability": 1.0, "cells": options.cell_weight}, metrics={"probability": chunk_metrics})
        reporter.log(f"the score map's cells are taught where the ice lies too (weight {options.cell_weight:g})")
        validation_data = (val_x, {"probability": val_y, "cells": val_cells})
    else:
        trainee = network
        trainee.compile(optimizer=keras.optimizers.Adam(rate), loss=keras.losses.BinaryCrossentropy(), metrics=chunk_metrics)
        validation_data = (val_x, val_y)
    logged = "probability_" if supervise_cells else ""  # Keras prefixes a named output's logs
    history_keys = {k: logged + k for k in ("loss", "accuracy")}  # {history column: Keras log}
    history_keys.update({"val_" + k: "val_" + logged + k for k in ("loss", "accuracy")})
    history_keys.update({k: "val_" + logged + k for k in ("precision", "recall", "auc")})
    if supervise_cells:
        history_keys.update(cells_loss="cells_loss", val_cells_loss="val_cells_loss")

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.epoch = 0
            self.on_epoch_end()

        def __len__(self):
            return steps

        def __getitem__(self, index):
            rng = np.random.default_rng([options.seed, self.epoch, index])
            chosen = self.order[index * batch_size : (index + 1) * batch_size]
            if supervise_cells:
                x, cell_targets = augment_batch(_to_float(pool_x[chosen]), rng, options.augment, pool_cells[chosen])
                return x, {"probability": pool_targets[chosen], "cells": cell_targets}, {"probability": pool_weights[chosen], "cells": np.ones(len(chosen), np.float32)}
            return augment_batch(_to_float(pool_x[chosen]), rng, options.augment), pool_targets[chosen], pool_weights[chosen]

        def on_epoch_end(self):
            rng = np.random.default_rng([options.seed, self.epoch])
            members = np.arange(n_train)
            if n_replay:
                members = np.concatenate([members, n_train + mix.draw(rng)])
            members = np.concatenate([members, np.arange(unlabelled_start, unlabelled_start + n_unlabelled)])
            self.order = rng.permutation(members)
            self.epoch += 1

    history: List[Dict] = []
    state = {"best_loss": np.inf, "best_weights": None, "best_epoch": 0, "waited": 0}
    total_steps = epochs * steps

    class Monitor(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            reporter.progress((len(history) * steps + batch + 1) / total_steps)
            if should_stop is not None and should_stop():
                raise CancelledError()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            row = {"epoch": epoch + 1}
            row.update({k: float(logs[name]) for k, name in history_keys.items() if name in logs})
            history.append(row)
            val_loss = row.get("val_loss", np.inf)
            if val_loss < state["best_loss"]:
                state.update(best_loss=val_loss, best_weights=network.get_weights(), best_epoch=row["epoch"], waited=0)
            else:
                state["waited"] += 1
                if state["waited"] >= options.patience:
                    self.model.stop_training = True
            if options.max_minutes is not None and time.monotonic() - started > 60.0 * options.max_minutes:
                self.model.stop_training = True
                reporter.log(f"{options.max_minutes:g} min of training spent: stopping after epoch {row['epoch']}")
            reporter.log(
                f"epoch {row['epoch']}: loss {row.get('loss', float('nan')):.4f} val_loss {val_loss:.4f} "
                f"val_accuracy {row.get('val_accuracy', float('nan')):.3f} val_auc {row.get('auc', float('nan')):.3f}"
            )

    started = time.monotonic()
    callbacks = [Monitor()] + ([finetune.anchor_to_start(network, anchor)] if anchor else [])
    trainee.fit(Batches(), validation_data=validation_data, epochs=epochs, callbacks=callbacks, verbose=0, shuffle=False)
    reporter.progress(1.0)  # early stopping ends the epochs before the bar does
    if state["best_weights"] is not None:
        network.set_weights(state["best_weights"])
    reporter.log(f"kept epoch {state['best_epoch']} (lowest validation loss {state['best_loss']:.4f}); {time.monotonic() - started:.0f} s of training")

    val_logits = logits_of(val_x)
    base_calibration = base_metadata.get("calibration") if fine_tuning else None
    chosen, calibration_record = finetune.choose_calibration(val_logits, val_y, base_calibration, "kept the base model's" if fine_tuning else "none", options.calibrate)
    if fine_tuning and mix and len(mix.reference):
        chosen, held = finetune.hold_reference_tail(chosen, logits_of(mix.reference), calibration.log_odds(base_logits["reference"], base_calibration))
        calibration_record["false_alarms"] = held
    elif fine_tuning and mix:
        chosen, held = finetune.hold_false_alarms(chosen, logits_of(mix.ice_free()), calibration.apply(base_logits["rehearsed_ice_free"], base_calibration))
        if held:
            calibration_record["false_alarms"] = held
    reporter.log(f"calibration: {calibration_record['choice']} ({calibration_record['reason']})" + (f"; {calibration_record['false_alarms']}" if "false_alarms" in calibration_record else ""))
    probabilities = calibration.apply(val_logits, chosen)
    evaluation = {
        "validation_chunks": int(len(val_y)),
        "validation_icy": int(val_y.sum()),
        "validation_groups": split["validation_groups"],
        "at_0.5": metrics.summary(probabilities, val_y, 0.5),
        "at_icy_threshold": metrics.summary(probabilities, val_y, rules.ICY_THRESHOLD),
        "ece_uncalibrated": calibration.expected_calibration_error(calibration.sigmoid(val_logits), val_y),
        "ece_calibrated": calibration.expected_calibration_error(probabilities, val_y),
        "calibration": calibration_record,
        "reliability": calibration.reliability(probabilities, val_y),
        "best_epoch": state["best_epoch"],
        "best_val_loss": float(state["best_loss"]),
    }
    if fine_tuning:
        evaluation["comparison"] = finetune.guard(
            val_y, {"base": base_logits["validation"], "new": val_logits}, {"base": base_calibration, "new": chosen},
            mix, {"base": base_logits["held_out"], "new": logits_of(mix.held_out["images"])} if mix else None,
        )
        for line in evaluation["comparison"]["lines"] + [evaluation["comparison"]["verdict"]]:
            reporter.log(line)

    if fine_tuning:
        metadata = dict(base_metadata)
        metadata["version"] = modelfile.new_metadata("", 1, 1, {}, {}, {})["version"]
        metadata["name"] = options.name or base_metadata["name"]
        metadata["chunk_size"] = int(options.chunk_size)  # the size it was tuned at, which detect uses by default
        metadata["base_model"] = {"name": base_metadata["name"], "version": base_metadata["version"], "chunk_size": base_metadata["chunk_size"]}
    else:
        metadata = modelfile.new_metadata(
            options.name, options.input_size, options.chunk_size, DEFAULT_NORMALISATION, trained_architecture(options, None),
            {"icy": rules.ICY_THRESHOLD, "hard_low": rules.HARD_LOW},
        )
    metadata["calibration"] = chosen
    metadata["metrics"] = {k: v for k, v in evaluation.items() if k != "reliability"}
    metadata["training"] = dict(
        options.extra_metadata,
        epochs_run=len(history),
        base_epochs=base_epochs,
        total_epochs=base_epochs + len(history),
        best_epoch=state["best_epoch"],
        batch_size=batch_size,
        learning_rate=learning_rate,
        warmup_steps=warmup_steps,
        frozen_batch_norm_layers=frozen,
        replay=mix.record() if mix else None,
        replay_distillation=options.distill if mix else None,
        anchor=anchor if fine_tuning else None,
        unlabelled_chunks=n_unlabelled,
        augment=options.augment,
        cell_weight=options.cell_weight if supervise_cells else None,
        seed=options.seed,
        chunks=int(len(labels)),
        icy_chunks=int(labels.sum()),
        split=split,
        class_weight=class_weight,
    )
    return {"network": network, "metadata": metadata, "history": history, "metrics": evaluation, "split": split}

"""Training: labelled chunk arrays in, a network with its history, metrics and calibration out.

Used by hiriseice:train (model/trainingjob.py reads the label layers into arrays) and by
scripts/train_default_model. Nothing here reads a raster, and any Keras backend trains: the
default model can be trained on a GPU machine with JAX and no GDAL. Adam and binary
cross-entropy as in the paper; the weights of the epoch with the lowest validation loss are
kept; class weights balance the ~20 % icy chunks; Platt scaling on the validation chunks
calibrates the probabilities where they support it.
The Keras fit itself (batches, early stopping): model/fitting.py; continuing a base model
(learning rate, batch norm, replay, the guard): model/finetune.py.
"""

import os
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from . import calibration, cells as cell_supervision, efficientnet, finetune, fitting, metrics, modelfile, rules
from .errors import LabelError
from .network import PAPER_WIDTHS, SMALL_XCEPTION, architecture, architecture_widths, build_from
from .preprocess import DEFAULT_NORMALISATION
from .protocol import Reporter, SilentReporter
from .splitting import Ground, describe_split, fixed_split, split_groups, without_overlaps

AUGMENT_MODES = ("none", "lighting", "full")
# Training chunks of one kind fewer than this are warned of: a reader's round of 3 icy labels against 61 trained on one icy chunk,
# said only in a log line, and a new image's recall fell 0.77 -> 0.60.
FEW_OF_A_KIND = 5

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
    # Groups a base model trained on (an earlier round's labels, kept): split anew, they stay out of
    # validation where the split allows, so that the guard and early stopping judge on unseen chunks.
    not_for_validation: Sequence[str] = ()
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


def trained_architecture(options: TrainOptions, base_metadata: Optional[Dict]) -> Dict:
    """The architecture a run trains: the base model's, or the one options' input size and widths build."""
    return base_metadata["architecture"] if base_metadata is not None else architecture(options.input_size, options.widths, trunk=options.trunk)


def _split(labels: np.ndarray, groups: Sequence[str], options: TrainOptions, reporter: Reporter) -> Tuple[np.ndarray, np.ndarray]:
    seen = set(options.not_for_validation) & set(groups)
    if options.validation_groups is None and seen:
        try:
            train, validation = split_groups(groups, labels, options.validation_fraction, options.seed, ineligible=seen)
        except ValueError:
            train = validation = None
        if validation is not None and all(len(set(labels[mask].tolist())) == 2 for mask in (train, validation)):
            reporter.log(f"{len(seen)} of the groups were trained on by the base model (an earlier round's labels): kept out of validation")
            return train, validation
        reporter.warning(f"validation holds chunks the base model trained on ({len(seen)} groups of an earlier round's labels): without them "
                         "it would lack icy or not-icy chunks, so its scores, and the comparison with the base, flatter the new model. "
                         "Label some chunks of both kinds in new places.")
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


@dataclass
class TrainingPool:
    """What the epochs draw from, in this order: the user's training chunks, the base's replay
    pool (when any of it is replayed) and the unlabelled chunks. Targets are labels, except for
    replay examples aimed partly at the base's probability and unlabelled chunks aimed wholly at it."""

    images: np.ndarray  # uint8 (n, s, s)
    labels: np.ndarray
    targets: np.ndarray
    weights: np.ndarray
    n_train: int
    mix: Optional[finetune.ReplayMix]
    n_unlabelled: int
    class_weight: Dict[int, float]
    cells: Optional[np.ndarray] = None  # (n, g, g, 2) cell targets, where the chunks' ice is outlined

    @property
    def n_replay(self) -> int:
        return self.mix.per_epoch if self.mix else 0

    @property
    def unlabelled_start(self) -> int:
        return len(self.labels) - self.n_unlabelled

    @property
    def epoch_size(self) -> int:
        return self.n_train + self.n_replay + self.n_unlabelled

    def epoch_members(self, rng: np.random.Generator) -> np.ndarray:
        """Every training chunk, the replay examples drawn for this epoch and every unlabelled chunk, shuffled."""
        members = np.arange(self.n_train)
        if self.n_replay:
            members = np.concatenate([members, self.n_train + self.mix.draw(rng)])
        members = np.concatenate([members, np.arange(self.unlabelled_start, len(self.labels))])
        return rng.permutation(members)


def training_pool(train_x: np.ndarray, train_y: np.ndarray, options: TrainOptions, replay: Optional[Dict], unlabelled: Optional[np.ndarray],
                  train_cells: Optional[np.ndarray] = None) -> TrainingPool:
    """The pool of one run; class weights balance the labelled examples (the user's and the
    replayed), unlabelled chunks weigh 1. train_cells: the training chunks' cell targets
    (cells.targets) where their ice is outlined; replay and unlabelled examples teach no cell."""
    n_train = len(train_y)
    mix = finetune.ReplayMix(replay, int(round(options.replay_ratio * n_train)), options.seed) if replay is not None else None
    images, labels = train_x, train_y
    if mix and mix.per_epoch:
        images, labels = np.concatenate([images, mix.pool["images"]]), np.concatenate([labels, mix.pool["labels"].astype(np.int32)])
    n_unlabelled = len(unlabelled) if unlabelled is not None else 0
    if n_unlabelled:  # their labels are unknown: the targets (_aim_at_base) and weights are what they hold
        images, labels = np.concatenate([images, unlabelled]), np.concatenate([labels, np.zeros(n_unlabelled, np.int32)])
    labelled_size = n_train + (mix.per_epoch if mix else 0)
    positives = int(train_y.sum()) + (mix.icy if mix else 0)
    class_weight = {0: labelled_size / (2.0 * max(labelled_size - positives, 1)), 1: labelled_size / (2.0 * max(positives, 1))}
    weights = np.where(labels == 1, class_weight[1], class_weight[0]).astype(np.float32)
    weights[len(labels) - n_unlabelled:] = 1.0
    cells = None if train_cells is None else np.concatenate([train_cells, cell_supervision.unsupervised(len(labels) - n_train, train_cells.shape[1])])
    return TrainingPool(images, labels, labels.astype(np.float32), weights, n_train, mix, n_unlabelled, class_weight, cells)


def train_arrays(images_u8: np.ndarray, labels: np.ndarray, groups: Sequence[str], options: TrainOptions, reporter: Reporter = None, base=None, should_stop=None,
                 replay: Optional[Dict] = None, unlabelled: Optional[np.ndarray] = None, cells: Optional[np.ndarray] = None,
                 boxes: Optional[Sequence] = None, ground: Optional[Ground] = None) -> Dict:
    """Train on uint8 chunk images (n, s, s). base: (network, metadata) to fine-tune; replay: the
    base's replay set (modelfile.load_replay), mixed into every epoch, never into validation;
    unlabelled: uint8 chunks of the user's images without a label, each epoch aimed at the
    base's own probability for them (fine-tuning only); cells: (n, g, g) the share of each
    score-map cell that each chunk's ice covers, where it is known (model/cells.py); boxes:
    (image_id, x_off, y_off, width, height) per chunk, so that no training chunk shares pixels
    with a validation chunk; ground: where each lies on Mars, so that none shares ground with a validation chunk of another image.

    Returns {"network", "metadata", "history", "metrics", "split"}.
    """
    base_metadata = base[1] if base is not None else None
    prepare_tensorflow(architecture_widths(trained_architecture(options, base_metadata)))
    reporter = reporter or SilentReporter()
    labels = _checked_labels(labels, options)
    train_mask, val_mask = _split(labels, groups, options, reporter)
    if boxes is not None:
        kept = without_overlaps(train_mask, val_mask, boxes, ground)
        if int(train_mask.sum() - kept.sum()):
            reporter.log(f"{int(train_mask.sum() - kept.sum())} chunks share ground with validation chunks (an overlapping grid, or another image of the "
                         "site): left out of training")
        train_mask = kept
    split = describe_split(groups, train_mask, val_mask)
    _require_both_classes(labels, {"validation": val_mask, "training": train_mask}, split)
    reporter.log(
        f"{int(train_mask.sum())} training chunks ({int(labels[train_mask].sum())} icy), {int(val_mask.sum())} validation chunks "
        f"({int(labels[val_mask].sum())} icy); split by {len(split['validation_groups'])} of {len(split['train_groups']) + len(split['validation_groups'])} groups; "
        f"held out for validation: {', '.join(split['validation_groups'])}"
    )
    icy_chunks = int(labels[train_mask].sum())
    few = min(icy_chunks, int(train_mask.sum()) - icy_chunks)
    if few < FEW_OF_A_KIND:
        kind, other = ("icy", "not icy") if few == icy_chunks else ("not icy", "icy")
        cost = ", and may cost it some of what it knew" if base is not None else ""
        reporter.warning(f"Only {few} {kind} training chunk(s) against {int(train_mask.sum()) - few} {other}: so few teach the network little of them{cost}. "
                         f"Label {FEW_OF_A_KIND} or more {kind} chunks outside the validation groups, and train again.")
    fitting.make_deterministic(options.seed)
    fine_tuning = base is not None
    network = base[0] if fine_tuning else _network_from_scratch(options, reporter)
    recipe = fitting.Recipe.for_run(options, fine_tuning)

    val_x, val_y = fitting.to_float(images_u8[val_mask]), labels[val_mask].astype(np.float32)
    supervise_cells = cells is not None and options.cell_weight > 0
    train_cells = val_cells = None
    if supervise_cells:
        train_cells, val_cells = cell_supervision.targets(cells[train_mask], labels[train_mask]), cell_supervision.targets(cells[val_mask], val_y)
    pool = training_pool(images_u8[train_mask], labels[train_mask], options, replay, unlabelled if fine_tuning else None, train_cells)
    if pool.mix:
        reporter.log(pool.mix.describe(options.distill))
    batch_size = max(1, min(options.batch_size, pool.epoch_size))

    # shares the network's layers, so it scores the current weights; with the mirror, as detect scores by default
    logits_of = fitting.as_detect_scores(fitting.logit_scorer(network, batch_size))
    base_logits = _aim_at_base(pool, logits_of, val_x, options, reporter) if fine_tuning else None
    trainee = fitting.compiled(network, trained_architecture(options, base_metadata), recipe, pool, batch_size, options.cell_weight, reporter)
    history, best = fitting.fit(trainee, network, pool, (val_x, val_y, val_cells), batch_size, recipe, options, reporter, should_stop)

    val_logits = logits_of(val_x)
    reporter.log("the validation chunks are scored as detect scores by default, each with its east-west mirror (TTA): the metrics, the calibration "
                 + ("and the comparison with the base model below judge" if fine_tuning else "and the report below judge") + " what detect will give")
    held_out_logits = {"base": base_logits["held_out"], "new": logits_of(pool.mix.held_out["images"])} if fine_tuning and pool.mix else None
    chosen, calibration_record = _calibration(val_logits, val_y, base_metadata, pool.mix, base_logits, held_out_logits, logits_of, options, reporter)
    evaluation = _evaluation(val_logits, val_y, chosen, calibration_record, split, best)
    if fine_tuning:
        evaluation["comparison"] = finetune.guard(
            val_y, {"base": base_logits["validation"], "new": val_logits}, {"base": base_metadata.get("calibration"), "new": chosen}, pool.mix, held_out_logits,
        )
        for line in evaluation["comparison"]["lines"] + [evaluation["comparison"]["verdict"]]:
            reporter.log(line)
    metadata = _model_metadata(options, base_metadata, chosen, evaluation)
    metadata["training"] = _training_record(options, base_metadata, labels, split, pool, recipe, batch_size, history, best, supervise_cells)
    return {"network": network, "metadata": metadata, "history": history, "metrics": evaluation, "split": split}


def _checked_labels(labels, options: TrainOptions) -> np.ndarray:
    if options.augment not in AUGMENT_MODES:
        raise LabelError(f"AUGMENT must be one of {', '.join(AUGMENT_MODES)}, not {options.augment!r}.")
    labels = np.asarray(labels, np.int32)
    classes = set(labels.tolist())
    if len(labels) == 0:
        raise LabelError("There are no labelled chunks to train on. Label some chunks 1 (icy) or 0 (not icy).")
    if len(classes) < 2:
        only = "icy" if 1 in classes else "not icy"
        raise LabelError(f"All {len(labels)} labelled chunks are {only}; the network needs both icy and not icy examples. Label some chunks of the other class.")
    return labels


def _network_from_scratch(options: TrainOptions, reporter: Reporter):
    network = build_from(trained_architecture(options, None), seed=options.seed)
    if options.trunk == efficientnet.NAME:
        efficientnet.load_imagenet(network)
        reporter.log("the EfficientNet-Lite0 trunk starts from its ImageNet weights")
    return network


def _aim_at_base(pool: TrainingPool, logits_of, val_x: np.ndarray, options: TrainOptions, reporter: Reporter) -> Dict:
    """The base's logits on what the guard and the calibration compare against, scored before
    training changes the shared weights; replay and unlabelled targets aimed at its probabilities."""
    mix = pool.mix
    pool_logits = logits_of(mix.pool["images"]) if mix else None
    base_logits = {"validation": logits_of(val_x), "held_out": logits_of(mix.held_out["images"]) if mix else None,
                   "rehearsed_ice_free": pool_logits[mix.ice_free_mask()] if mix else None, "reference": logits_of(mix.reference) if mix else None}
    if pool.n_replay and options.distill:
        pool.targets[pool.n_train:pool.unlabelled_start] = finetune.replay_targets(mix.pool["labels"], pool_logits, options.distill)
    if pool.n_unlabelled:
        pool.targets[pool.unlabelled_start:] = calibration.sigmoid(logits_of(pool.images[pool.unlabelled_start:]))
        reporter.log(finetune.describe_unlabelled(pool.targets[pool.unlabelled_start:]))
    return base_logits


def _calibration(val_logits, val_y, base_metadata: Optional[Dict], mix, base_logits: Optional[Dict], held_out_logits: Optional[Dict], logits_of,
                 options: TrainOptions, reporter: Reporter):
    """(the chosen calibration, its record): a fit where it helps out of sample, else the base's
    (or none); when fine-tuning, its false alarms then held at the base's level, and a fit that would lose the base's
    held-out ice left for the base's calibration (finetune.keep_known_ice)."""
    fine_tuning = base_metadata is not None
    base_calibration = base_metadata.get("calibration") if fine_tuning else None
    chosen, record = finetune.choose_calibration(val_logits, val_y, base_calibration, "kept the base model's" if fine_tuning else "none", options.calibrate)
    if fine_tuning and mix:
        chosen, record = _held_at_the_base(chosen, record, base_calibration, mix, base_logits, held_out_logits, logits_of)
    reporter.log(f"calibration: {record['choice']} ({record['reason']})" + (f"; {record['false_alarms']}" if "false_alarms" in record else ""))
    return chosen, record


def _held_at_the_base(chosen, record: Dict, base_calibration: Optional[Dict], mix, base_logits: Dict, held_out_logits: Dict, logits_of):
    """The chosen calibration with its false alarms held at the base's level (on the reference crops, or for a base without them
    its rehearsed ice-free examples), and a fit that would lose the base's held-out ice left for the base's, held alike."""
    if len(mix.reference):
        reference_logits, base_reference = logits_of(mix.reference), calibration.log_odds(base_logits["reference"], base_calibration)

        def held(candidate):
            return finetune.hold_reference_tail(candidate, reference_logits, base_reference)
    else:
        ice_free_logits, base_ice_free = logits_of(mix.ice_free()), calibration.apply(base_logits["rehearsed_ice_free"], base_calibration)

        def held(candidate):
            return finetune.hold_false_alarms(candidate, ice_free_logits, base_ice_free)
    chosen, note = held(chosen)
    if record["choice"] == "fitted":
        kept, kept_note = held(base_calibration)
        chosen, vetoed = finetune.keep_known_ice(chosen, kept, held_out_logits["new"], mix.held_out["labels"])
        if vetoed:
            record, note = {"choice": "kept the base model's", "reason": vetoed}, kept_note
    if note:
        record["false_alarms"] = note
    return chosen, record


def _evaluation(val_logits, val_y, chosen, calibration_record: Dict, split: Dict, best: Dict) -> Dict:
    probabilities = calibration.apply(val_logits, chosen)
    # A calibration moved to a survey's share of icy chunks (calibration.with_prior) is judged at that share, as a survey meets
    # it: at the validation chunks' own (often half icy) it reads as miscalibrated by the change of prior alone.
    share = finetune.survey_prior(chosen)
    weights = calibration.prior_weights(val_y, share) if share and 0 < val_y.mean() < 1 else None
    return {
        "validation_chunks": int(len(val_y)),
        "validation_icy": int(val_y.sum()),
        "validation_groups": split["validation_groups"],
        "at_0.5": metrics.summary(probabilities, val_y, 0.5),
        "at_icy_threshold": metrics.summary(probabilities, val_y, rules.ICY_THRESHOLD),
        "ece_uncalibrated": calibration.expected_calibration_error(calibration.sigmoid(val_logits), val_y, weights=weights),
        "ece_calibrated": calibration.expected_calibration_error(probabilities, val_y, weights=weights),
        "ece_icy_share": float(share) if weights is not None else float(val_y.mean()),
        "calibration": calibration_record,
        "reliability": calibration.reliability(probabilities, val_y, weights=weights),
        "best_epoch": best["epoch"],
        "best_val_loss": float(best["loss"]),
    }


def _model_metadata(options: TrainOptions, base_metadata: Optional[Dict], chosen, evaluation: Dict) -> Dict:
    """A fine-tuned model keeps its base's metadata and records the chunk size it was tuned at,
    which detect then uses by default; a new model starts its own."""
    if base_metadata is not None:
        metadata = dict(base_metadata)
        metadata["version"] = modelfile.new_metadata("", 1, 1, {}, {}, {})["version"]
        metadata["name"] = options.name or base_metadata["name"]
        metadata["chunk_size"] = int(options.chunk_size)
        metadata["base_model"] = {"name": base_metadata["name"], "version": base_metadata["version"], "chunk_size": base_metadata["chunk_size"]}
    else:
        metadata = modelfile.new_metadata(
            options.name, options.input_size, options.chunk_size, DEFAULT_NORMALISATION, trained_architecture(options, None),
            {"icy": rules.ICY_THRESHOLD, "hard_low": rules.HARD_LOW},
        )
    metadata["calibration"] = chosen
    metadata["metrics"] = {k: v for k, v in evaluation.items() if k != "reliability"}
    return metadata


def _training_record(options: TrainOptions, base_metadata: Optional[Dict], labels: np.ndarray, split: Dict, pool: TrainingPool, recipe: fitting.Recipe,
                     batch_size: int, history, best: Dict, supervise_cells: bool) -> Dict:
    """How the model was trained, for its file and card: epochs counted from 1 for this run, the base's kept beside them."""
    fine_tuning = base_metadata is not None
    base_epochs = int(base_metadata.get("training", {}).get("total_epochs", 0)) if fine_tuning else 0
    return dict(
        options.extra_metadata,
        epochs_run=len(history),
        base_epochs=base_epochs,
        total_epochs=base_epochs + len(history),
        best_epoch=best["epoch"],
        batch_size=batch_size,
        learning_rate=recipe.learning_rate,
        warmup_steps=recipe.warmup_steps,
        frozen_batch_norm_layers=recipe.frozen_batch_norm_layers,
        replay=pool.mix.record() if pool.mix else None,
        replay_distillation=options.distill if pool.mix else None,
        anchor=recipe.anchor if fine_tuning else None,
        unlabelled_chunks=pool.n_unlabelled,
        augment=options.augment,
        cell_weight=options.cell_weight if supervise_cells else None,
        seed=options.seed,
        chunks=int(len(labels)),
        icy_chunks=int(labels.sum()),
        split=split,
        class_weight=pool.class_weight,
    )

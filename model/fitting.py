"""The Keras fit of a training run: the recipe (rate, warm-up, frozen batch norm, pull back),
batches drawn anew from the pool each epoch, early stopping on the validation loss with the best
epoch's weights kept, progress and cancel. model/training.py prepares what it fits.
Keras is imported inside the functions, after training.prepare_tensorflow."""

import math
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from . import cells as cell_supervision, finetune
from .errors import CancelledError, EngineError
from .network import cell_logits, logit_model
from .protocol import Reporter


def make_deterministic(seed: int) -> None:
    """The same seed gives the same weights, run after run (TensorFlow's deterministic ops)."""
    import keras

    keras.utils.set_random_seed(seed)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


@dataclass
class Recipe:
    """How a run trains. The last two are known once the network is compiled for it."""

    learning_rate: float
    epochs: int
    warmup: bool
    anchor: float
    freeze_batch_norm: bool
    warmup_steps: int = 0
    frozen_batch_norm_layers: int = 0

    @classmethod
    def for_run(cls, options, fine_tuning: bool) -> "Recipe":
        """The options' choices, each None or default resolved for training from scratch or continuing a base model."""
        return cls(
            learning_rate=options.learning_rate or (finetune.FINE_TUNE_LEARNING_RATE if fine_tuning else finetune.SCRATCH_LEARNING_RATE),
            epochs=options.epochs or (finetune.FINE_TUNE_EPOCHS if fine_tuning else finetune.SCRATCH_EPOCHS),
            warmup=fine_tuning if options.warmup is None else options.warmup,
            anchor=options.anchor if fine_tuning else 0.0,
            freeze_batch_norm=fine_tuning if options.freeze_batch_norm is None else options.freeze_batch_norm,
        )


def to_float(images_u8: np.ndarray) -> np.ndarray:
    """uint8 chunks (n, s, s) -> the network's float32 (n, s, s, 1) in [0, 1]."""
    return (images_u8.astype(np.float32) / 255.0)[..., None]


def logit_scorer(network, batch_size: int):
    """images (uint8 or the network's float32) -> the network's logits, with its current weights."""
    scorer = logit_model(network)

    def logits_of(images):
        x = images if images.dtype == np.float32 else to_float(images)
        return np.asarray(scorer.predict(x, batch_size=batch_size, verbose=0)).reshape(-1) if len(x) else np.zeros(0)

    return logits_of


def as_detect_scores(logits_of):
    """logits_of, scoring as detect does by default: the mean logit of each image and its east-west
    mirror (TTA). The guard, the calibration and the recorded metrics judged single images, while
    detect averages the two: a round's guard read AUC 0.442 where its detect layer gave 0.408."""
    def scores(images):
        if not len(images):
            return logits_of(images)
        return (logits_of(images) + logits_of(np.ascontiguousarray(images[:, :, ::-1]))) / 2.0

    return scores


def hard_label_metric(metric_class, name: str):
    """A Keras metric scored against the label a target stands for (>= 0.5: icy): a distilled
    replay example's target lies between its label and the base model's probability
    (finetune.replay_targets), and an accuracy against 0.75 or 0.25 would count it wrong."""
    import keras

    class HardLabel(metric_class):
        def update_state(self, y_true, y_pred, sample_weight=None):
            return super().update_state(keras.ops.cast(y_true >= 0.5, "float32"), y_pred, sample_weight)

    return HardLabel(name=name)


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


def steps_per_epoch(pool, batch_size: int) -> int:
    return int(np.ceil(pool.epoch_size / batch_size))


def compiled(network, architecture: Dict, recipe: Recipe, pool, batch_size: int, cell_weight: float, reporter: Reporter):
    """The model to fit: the network, or where the pool carries cell targets (outlined ice) the
    same layers with the score map as a second output, its loss weighed cell_weight, so one pass teaches both. Freezes the batch norm and sets
    the warm-up as the recipe says, and logs them."""
    import keras

    recipe.frozen_batch_norm_layers = finetune.freeze_batch_norm(network) if recipe.freeze_batch_norm else 0
    recipe.warmup_steps = finetune.warmup_steps(steps_per_epoch(pool, batch_size), recipe.epochs) if recipe.warmup else 0
    rate = finetune.warmup_schedule(recipe.learning_rate, recipe.warmup_steps) if recipe.warmup else recipe.learning_rate
    reporter.log(
        f"learning rate {recipe.learning_rate:g}" + (f", warmed up over {recipe.warmup_steps} steps" if recipe.warmup else "")
        + (f"; {recipe.frozen_batch_norm_layers} batch-norm layers keep the base model's statistics" if recipe.frozen_batch_norm_layers else "")
        + (f"; each step pulls the weights {100 * recipe.anchor:g} % of the way back to the base model's" if recipe.anchor else "")
    )
    chunk_metrics = [hard_label_metric(keras.metrics.BinaryAccuracy, "accuracy"), hard_label_metric(keras.metrics.Precision, "precision"),
                     hard_label_metric(keras.metrics.Recall, "recall"), hard_label_metric(keras.metrics.AUC, "auc")]
    if pool.cells is not None:
        trainee = keras.Model(network.inputs, {"probability": network.output, "cells": cell_logits(network, architecture)})
        trainee.compile(optimizer=keras.optimizers.Adam(rate), loss={"probability": keras.losses.BinaryCrossentropy(), "cells": cell_supervision.loss},
                        loss_weights={"probability": 1.0, "cells": cell_weight}, metrics={"probability": chunk_metrics})
        reporter.log(f"the score map's cells are taught where the ice lies too (weight {cell_weight:g})")
        return trainee
    network.compile(optimizer=keras.optimizers.Adam(rate), loss=keras.losses.BinaryCrossentropy(), metrics=chunk_metrics)
    return network


def _history_keys(supervise_cells: bool) -> Dict[str, str]:
    """{history column: Keras log name}; Keras prefixes a named output's logs."""
    logged = "probability_" if supervise_cells else ""
    keys = {k: logged + k for k in ("loss", "accuracy")}
    keys.update({"val_" + k: "val_" + logged + k for k in ("loss", "accuracy")})
    keys.update({"val_" + k: "val_" + logged + k for k in ("precision", "recall", "auc")})
    if supervise_cells:
        keys.update(cells_loss="cells_loss", val_cells_loss="val_cells_loss")
    return keys


def _batches(pool, augment: str, batch_size: int, seed: int):
    """A Keras dataset of the pool's epochs: each epoch its own draw and order, each batch its own
    augmentation, all from the seed."""
    import keras

    supervise_cells = pool.cells is not None

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.epoch = 0
            self.on_epoch_end()

        def __len__(self):
            return steps_per_epoch(pool, batch_size)

        def __getitem__(self, index):
            rng = np.random.default_rng([seed, self.epoch, index])
            chosen = self.order[index * batch_size : (index + 1) * batch_size]
            if supervise_cells:
                x, cell_targets = augment_batch(to_float(pool.images[chosen]), rng, augment, pool.cells[chosen])
                return x, {"probability": pool.targets[chosen], "cells": cell_targets}, {"probability": pool.weights[chosen], "cells": np.ones(len(chosen), np.float32)}
            return augment_batch(to_float(pool.images[chosen]), rng, augment), pool.targets[chosen], pool.weights[chosen]

        def on_epoch_end(self):
            self.order = pool.epoch_members(np.random.default_rng([seed, self.epoch]))
            self.epoch += 1

    return Batches()


def fit(trainee, network, pool, validation: Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]], batch_size: int, recipe: Recipe, options,
        reporter: Reporter, should_stop=None) -> Tuple[List[Dict], Dict]:
    """Fits until the epochs, the patience (epochs without a lower validation loss) or the
    minutes run out, then keeps the best epoch's weights; each batch augmented as options.augment says.
    Returns (a history row per epoch, {"epoch", "loss"} of the epoch kept)."""
    import keras

    supervise_cells = pool.cells is not None
    val_x, val_y, val_cells = validation
    validation_data = (val_x, {"probability": val_y, "cells": val_cells}) if supervise_cells else (val_x, val_y)
    history_keys = _history_keys(supervise_cells)
    steps = steps_per_epoch(pool, batch_size)
    history: List[Dict] = []
    best = {"loss": np.inf, "weights": None, "epoch": 0, "waited": 0}
    total_steps = recipe.epochs * steps
    started = time.monotonic()

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
            if not all(math.isfinite(row.get(key, 0.0)) for key in ("loss", "val_loss")):
                raise EngineError(f"Training diverged in epoch {row['epoch']}: its loss became {row.get('loss')} (validation {row.get('val_loss')}), "
                                  "so its weights mean nothing; no model was written. Lower LEARNING_RATE (to a tenth) and run again.")
            val_loss = row.get("val_loss", np.inf)
            if val_loss < best["loss"]:
                best.update(loss=val_loss, weights=network.get_weights(), epoch=row["epoch"], waited=0)
            else:
                best["waited"] += 1
                if best["waited"] >= options.patience:
                    self.model.stop_training = True
            if options.max_minutes is not None and time.monotonic() - started > 60.0 * options.max_minutes:
                self.model.stop_training = True
                reporter.log(f"{options.max_minutes:g} min of training spent: stopping after epoch {row['epoch']}")
            reporter.log(
                f"epoch {row['epoch']}: loss {row.get('loss', float('nan')):.4f} val_loss {val_loss:.4f} "
                f"val_accuracy {row.get('val_accuracy', float('nan')):.3f} val_auc {row.get('val_auc', float('nan')):.3f}"
            )

    callbacks = [Monitor()] + ([finetune.anchor_to_start(network, recipe.anchor)] if recipe.anchor else [])
    trainee.fit(_batches(pool, options.augment, batch_size, options.seed), validation_data=validation_data, epochs=recipe.epochs, callbacks=callbacks, verbose=0, shuffle=False)
    reporter.progress(1.0)  # early stopping ends the epochs before the bar does
    if best["weights"] is not None:
        network.set_weights(best["weights"])
    reporter.log(f"kept epoch {best['epoch']} (lowest validation loss {best['loss']:.4f}); {time.monotonic() - started:.0f} s of training")
    return history, {"epoch": best["epoch"], "loss": best["loss"]}

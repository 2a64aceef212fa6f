"""Fine-tuning a base model on a geologist's labels without forgetting what it knew.

Issue 8 measured one retraining round of the default model on 196 labelled 256-px chunks: the
whole network at the from-scratch rate (1e-3) forgot its hard negatives (false positives on
hard landforms rose from 9 % to 64 %, held-out AUC fell from 0.785 to 0.653) while its own
validation chunks reported AUC 0.86-0.89. So, when a base model is given:
- a ten times lower rate, warmed up linearly (Adam's first steps are its largest);
- the base's batch-norm statistics kept: a few hundred chunks of one image would replace
  statistics gathered over many observations;
- examples of what the base knew (the model file's replay set) mixed into every epoch, three
  for each of the user's chunks, aimed half at their label and half at the base's own
  probability (replay_targets);
- the calibration's intercept lowered, where needed, so that the new model calls real ice-free
  terrain it never trained on (the model file's reference crops) icy no more than the base did
  (hold_reference_tail), or, for a base without them, its rehearsed ice-free examples
  (hold_false_alarms);
- after each step, every weight pulled 2 % of the way back to the base's (anchor_to_start);
- optionally, unlabelled chunks of the user's images aimed at the base's probability for them;
- a guard that scores base and new model on the same chunks before the new one is written.
Whatever the start, calibration is fitted only where the validation chunks can support it.
TensorFlow is imported inside the functions that need it only.
"""

from typing import Dict, Optional, Tuple

import numpy as np

from . import calibration, metrics

SCRATCH_LEARNING_RATE = 1e-3
FINE_TUNE_LEARNING_RATE = 1e-4
# A fine-tuning round needs fewer epochs: the base already knows most of what it needs.
SCRATCH_EPOCHS = 30
FINE_TUNE_EPOCHS = 10
# The warm-up lasts the first epoch, or a fifth of all steps when that is shorter.
WARMUP_SHARE = 0.2
# Share of the replay set held out to measure what the new model still knows.
REPLAY_HELD_OUT = 0.2
# Platt scaling is fitted only on validation sets with this many chunks of each class,
MIN_CALIBRATION_CHUNKS = 10
# that the new model ranks at least this well: a fit to chunks ranked at chance lowers their ECE by
# flattening every score toward their share of ice (a reader's round ranked at 0.50 got slope 0.30,
# the base's 1.16, and its recall of known ice fell from 0.60 to 0.20).
MIN_CALIBRATION_AUC = 0.6
# AUC lost on the held-out replay examples that counts as forgetting: a few swapped pairs on a
# small held-out set move the AUC by about this much.
REPLAY_TOLERANCE = 0.02
# Rise in the share of those examples' ice-free ones called icy that counts as forgetting: the
# ranking can hold while the whole score shifts up (a narrow base's rehearsal AUC rose 0.824 ->
# 0.837 as its false alarms on real terrain doubled), and 5 points is the survey's whole budget.
REPLAY_FPR_TOLERANCE = 0.05
# Fall in the share of those examples' icy ones called icy that counts as forgetting: a reader's round on labels of which 30 %
# were flipped kept the rehearsal's AUC (0.911 -> 0.903) while its recall there fell 0.73 -> 0.60 and on a new image 0.77 -> 0.47,
# judged "not worse". A tenth is 3 of the 30 or so icy examples held out; clean labels moved it by none.
REPLAY_TPR_TOLERANCE = 0.10
# Below this AUC of the base on the user's validation chunks, while it ranks its own held-out examples far better, the labels
# and the base disagree: new ice unlike any it knew, or labels partly wrong (a reader's 30 % flipped: 0.56 against 0.91).
DISAGREEING_AUC = 0.65
# The next three, chosen by benchmarks/adaptation.py (docs/retraining.md, "Why these defaults"): with the
# shipped model as the base and 200 stone-field labels (three draws), one replay example per user
# chunk with hard targets lost 0.013-0.025 AUC on every other family; these three lost at most
# 0.008 and learnt the new kind within 0.006 as well (0.770 -> 0.792-0.798). From a base that
# never saw the new kind they learn a little less (0.770 -> 0.777-0.789, against 0.783-0.804).
# Replay examples in each epoch per training chunk of the user's.
REPLAY_RATIO = 3.0
# Share of the way back to the base's weights after each step (0: none; see anchor_to_start).
# 1 % until the two-scale default: from it, 200 stone-field labels (draws 7 and 8) lost natural
# shade 0.012 and 0.009 at 1 %, 0.007 and 0.007 at 2 %, and learnt the same within 0.003.
ANCHOR_PULL = 0.02
# Share of a replay example's target taken from the base's own probability (see replay_targets).
REPLAY_DISTILLATION = 0.5
# Unlabelled chunks of the user's images per labelled chunk, each aimed at the base's own
# probability for it in every epoch (0: none; see describe_unlabelled). At 2, with 200 stone-field
# labels (two draws), the other families lost at most 0.002 AUC against up to 0.011, and the new
# family learnt 0.007-0.013 less: a trade like the pull back's, so it is the user's choice.
UNLABELLED_RATIO = 0.0
# Replay examples of this kind are the false-alarm reference: real ice-free terrain crops of the
# base's validation observations, never trained on (neither by the base nor by a fine-tuning
# round), on which hold_reference_tail keeps a round's false alarms at the base's.
REFERENCE_KIND = "reference terrain"
# Quantiles of the reference's calibrated scores matched to the base's (their mean difference):
# the top quarter, where the base's operating point lies (it calls 2-4 % of real terrain icy). A
# count at p >= 0.5 alone rests on a handful of crops: on 256 of them it left a half-icy lee-frost
# round 2.4-6.5 % of held-out real terrain called icy; the top tenth (13 of 128 crops) 2.4-5.1 %;
# the top quarter 2.6-4.5 % (the base: 3.6 %; benchmarks/adaptation.py's model, docs/retraining.md).
REFERENCE_TAIL = np.linspace(0.75, 0.99, 10)


def warmup_steps(steps_per_epoch: int, epochs: int) -> int:
    return max(1, min(steps_per_epoch, int(np.ceil(WARMUP_SHARE * steps_per_epoch * epochs))))


def warmup_schedule(learning_rate: float, steps: int):
    """A Keras schedule rising linearly from learning_rate / steps to learning_rate over `steps` steps."""
    import keras

    class LinearWarmUp(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            return learning_rate * keras.ops.minimum(1.0, (keras.ops.cast(step, "float32") + 1.0) / steps)

        def get_config(self):
            return {"learning_rate": learning_rate, "steps": steps}

    return LinearWarmUp()


def freeze_batch_norm(network) -> int:
    """Batch-norm layers to inference mode (Keras 3: trainable=False keeps their moving statistics
    and scale), those of a multi-scale network's trunks too; the rest stays trainable. Returns
    how many were frozen."""
    import keras

    frozen = [layer for layer in _every_layer(network) if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in frozen:
        layer.trainable = False
    return len(frozen)


def thaw(network) -> None:
    """Every layer trainable again, frozen batch norm too: a saved network carries no fit's choices,
    and the next fit (freeze_batch_norm or not) makes its own."""
    for layer in _every_layer(network):
        layer.trainable = True


def _every_layer(model):
    import keras

    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _every_layer(layer)


def anchor_to_start(network, pull: float):
    """A Keras callback pulling every trainable weight back toward its value at the start of
    training by the share `pull` after each step (L2-SP as a decoupled decay): what the
    geologist's chunks do not keep moving returns to the base's."""
    import keras

    start = [variable.numpy().copy() for variable in network.trainable_variables]

    class AnchorToStart(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            for variable, origin in zip(network.trainable_variables, start):
                variable.assign(variable - pull * (variable - origin))

    return AnchorToStart()


def subset(replay: Dict, mask: np.ndarray) -> Dict:
    return {key: value[mask] for key, value in replay.items()}


def split_replay(replay: Dict, seed: int) -> Tuple[Dict, Dict]:
    """(examples to replay, examples held out for the guard), each class split alike."""
    labels = np.asarray(replay["labels"])
    rng = np.random.default_rng([seed, 8])
    held = np.zeros(len(labels), bool)
    for value in (0, 1):
        members = rng.permutation(np.flatnonzero(labels == value))
        held[members[: int(round(REPLAY_HELD_OUT * len(members)))]] = True
    return subset(replay, ~held), subset(replay, held)


def balanced_counts(labels: np.ndarray, count: int) -> Tuple[int, int]:
    """(not icy, icy) to draw: half each where the set allows, the rest from the other class."""
    available = [int((labels == 0).sum()), int((labels == 1).sum())]
    count = min(count, sum(available))
    icy = min(available[1], (count + 1) // 2)
    not_icy = min(available[0], count - icy)
    return not_icy, count - not_icy


def balanced_draw(labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of `count` examples without replacement, balanced as balanced_counts says."""
    wanted = balanced_counts(labels, count)
    return np.concatenate([rng.permutation(np.flatnonzero(labels == value))[:n] for value, n in zip((0, 1), wanted)])


class ReplayMix:
    """The base's replay set in one run: a pool of which `count` examples (REPLAY_RATIO times the
    user's training chunks), class-balanced, are drawn anew into each epoch, a held-out part on
    which the guard measures what the new model still knows, and the reference crops (if any),
    never trained on. Never in the user's validation."""

    def __init__(self, replay: Dict, count: int, seed: int):
        is_reference = np.asarray(replay["kinds"]).astype(str) == REFERENCE_KIND
        self.reference = subset(replay, is_reference)["images"]
        self.pool, self.held_out = split_replay(subset(replay, ~is_reference), seed)
        self.count = count
        self.icy = balanced_counts(self.pool["labels"], count)[1]
        self.per_epoch = sum(balanced_counts(self.pool["labels"], count))

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """Indices into the pool for one epoch."""
        return balanced_draw(self.pool["labels"], self.count, rng)

    def ice_free_mask(self) -> np.ndarray:
        return np.asarray(self.pool["labels"]) == 0

    def ice_free(self) -> np.ndarray:
        """The pool's ice-free examples: what hold_false_alarms keeps the base's rate on."""
        return self.pool["images"][self.ice_free_mask()]

    def describe(self, distill: float) -> str:
        targets = f", aimed {distill:.0%} at the base model's own probability and {1 - distill:.0%} at their label" if distill else ""
        reference = f"; {len(self.reference)} real ice-free reference crops to hold its false alarms at the base model's" if len(self.reference) else ""
        short = (f" (all it carries, of the {self.count} the replay ratio asks for: your chunks weigh more in this round than the ratio meant)"
                 if self.per_epoch < self.count else "")
        return (f"replay: {self.per_epoch} of the base model's {len(self.pool['labels'])} replay examples ({self.icy} icy) in each epoch{short}{targets}; "
                f"{len(self.held_out['labels'])} more held out to check what it still knows{reference}")

    def record(self) -> Dict:
        return {"per_epoch": self.per_epoch, "pool": int(len(self.pool["labels"])), "held_out": int(len(self.held_out["labels"])), "reference": int(len(self.reference))}


def describe_unlabelled(targets: np.ndarray) -> str:
    """The log line for the unlabelled chunks: most of a survey image is terrain the user did not
    label, and the base's answers there are what a survey of it will meet."""
    return (f"unlabelled: {len(targets)} chunks of your images that you did not label, in each epoch, aimed at the base model's own probability "
            f"(mean {np.mean(targets):.2f}; {int((targets >= 0.5).sum())} at 0.5 or more)")


def replay_targets(labels: np.ndarray, base_logits: np.ndarray, share: float) -> np.ndarray:
    """Soft targets for replay examples: (1 - share) x label + share x the base's probability.
    A label only says which side of 0.5 an example belongs; the base's probability also says how
    sure it was, which is what a survey's false alarms and the other families' ranking rest on."""
    return ((1.0 - share) * np.asarray(labels, np.float64) + share * calibration.sigmoid(base_logits)).astype(np.float32)


def score(probabilities: np.ndarray, labels: np.ndarray, kinds: Optional[np.ndarray] = None) -> Dict:
    """ROC AUC and accuracy / TPR / FPR at 0.5; with kinds, the share called icy of each kind."""
    s = metrics.summary(probabilities, labels, 0.5)
    out = {"chunks": int(len(labels)), "icy": int(np.sum(labels)), "roc_auc": s["roc_auc"], "accuracy": s["accuracy"], "tpr": s["recall"], "fpr": s["false_positive_rate"]}
    if kinds is not None:
        called = np.asarray(probabilities) >= 0.5
        out["called_icy_by_kind"] = {str(k): float(called[kinds == k].mean()) for k in sorted(set(kinds.tolist()))}
    return out


def survey_prior(calibration_record: Optional[Dict]) -> Optional[float]:
    """The share of icy chunks a calibration was moved to (calibration.with_prior), if any."""
    return ((calibration_record or {}).get("prior") or {}).get("prior")


def choose_calibration(logits: np.ndarray, labels: np.ndarray, fallback: Optional[Dict], fallback_name: str, allowed: bool = True) -> Tuple[Optional[Dict], Dict]:
    """(calibration, record): Platt scaling fitted on the validation chunks when they hold
    MIN_CALIBRATION_CHUNKS of each class, the new model ranks them at MIN_CALIBRATION_AUC or better,
    and the fit lowers their ECE out of sample (each chunk
    scored by a fit on the others, calibration.cross_validated); else the fallback (the base
    model's calibration, or none). Issue 8: a fit on 3 chunks raised ECE from 0.063 to 0.284. Judged
    in sample, a fit on 42 chunks of a stone-field round "lowered" their ECE 0.091 -> 0.086 with a
    slope of 0.51 (the base's 1.16): every kind's recall fell by half or more (natural shade 0.46 ->
    0.13) and the held-out ECE rose 0.132 -> 0.274.

    A fallback moved to a survey's share of icy chunks is compared at the validation chunks'
    share, and a fit that wins is moved to the survey's share: a geologist labels far more ice
    than a survey meets (the adaptation benchmark's 200 labels, half icy, called 26 % of real
    ice-free terrain icy with a fit left at their share)."""
    icy = int(labels.sum())
    if not allowed:
        return fallback, {"choice": fallback_name, "reason": "calibration switched off"}
    if min(icy, len(labels) - icy) < MIN_CALIBRATION_CHUNKS:
        return fallback, {"choice": fallback_name, "reason": f"{icy} icy and {len(labels) - icy} not-icy validation chunks; a fit needs {MIN_CALIBRATION_CHUNKS} of each"}
    ranked = metrics.roc_auc(logits, labels)
    if not ranked >= MIN_CALIBRATION_AUC:
        return fallback, {"choice": fallback_name, "reason": f"the new model ranks these validation chunks at ROC AUC {ranked:.2f}, too near chance "
                                                              f"(or backwards) for a fit to them to mean anything (a fit needs {MIN_CALIBRATION_AUC})"}
    share = icy / len(labels)
    prior = survey_prior(fallback)
    at_share = calibration.with_prior(fallback, prior, share) if prior else fallback
    kept_ece = calibration.expected_calibration_error(calibration.apply(logits, at_share), labels)
    fitted_ece = calibration.expected_calibration_error(calibration.cross_validated(logits, labels), labels)
    if not fitted_ece < kept_ece:
        return fallback, {"choice": fallback_name, "reason": f"a Platt fit would not lower the validation ECE ({kept_ece:.3f}, fitted {fitted_ece:.3f} cross-validated)"}
    fitted = calibration.fit_platt(logits, labels)
    if not fitted["a"] > 0:  # it would turn the network's order over: its high scores would mean no ice
        return fallback, {"choice": fallback_name, "reason": f"a Platt fit would invert the network's scores (slope {fitted['a']:.2f}): it ranks these validation chunks no better than chance"}
    reason = f"Platt scaling lowers the validation ECE from {kept_ece:.3f} to {fitted_ece:.3f} (cross-validated)"
    if prior:
        fitted = calibration.with_prior(fitted, share, prior)
        reason += f"; moved from these chunks' {share:.0%} icy to the base model's survey share, {prior:.0%}"
    return fitted, {"choice": "fitted", "reason": reason}


def keep_known_ice(fitted: Dict, kept: Optional[Dict], held_out_logits: np.ndarray, held_out_labels: np.ndarray) -> Tuple[Optional[Dict], Optional[str]]:
    """(calibration, why the fit was left): the fit to the user's validation chunks, unless it calls REPLAY_TPR_TOLERANCE
    fewer of the held-out rehearsal examples' icy ones icy than the base's calibration does on the same new logits (both
    after their false-alarm hold). Those examples' labels are right, the user's may not be: wrong labels make confident
    scores look miscalibrated, so the fit that lowers their ECE is a flatter one, and the noisier the labels the more often
    it won (a reader: a fifth of 60 labels flipped chose a fit 85 times in 100, its slope a fifth of the base's, and a new
    image's recall fell 0.70 -> 0.13)."""
    icy = np.asarray(held_out_labels) == 1
    if not icy.any():
        return fitted, None
    fit_recall = float((calibration.apply(held_out_logits[icy], fitted) >= 0.5).mean())
    kept_recall = float((calibration.apply(held_out_logits[icy], kept) >= 0.5).mean())
    if fit_recall >= kept_recall - REPLAY_TPR_TOLERANCE:
        return fitted, None
    return kept, (f"a Platt fit to your validation chunks (slope {fitted['a']:.2f}, the base's {(kept or calibration.identity())['a']:.2f}) would call "
                  f"{fit_recall:.0%} of {int(icy.sum())} held-out icy examples of what the base model knew icy, the base's calibration {kept_recall:.0%}: "
                  f"a fit to few labels, or to labels partly wrong, comes out flatter than the scores deserve, so the base's is kept")


def hold_false_alarms(chosen: Optional[Dict], new_logits: np.ndarray, base_probabilities: np.ndarray) -> Tuple[Optional[Dict], Optional[str]]:
    """(calibration, what was done): the chosen calibration with its intercept lowered, where
    needed, so that the new model calls no more of the base's rehearsed ice-free examples icy
    (p >= 0.5) than the base did. Learning a geologist's ice moves every score up a little: with
    a narrow base, 200 labels of a new kind doubled the false alarms on real terrain (8.5 % ->
    16.2 %); held on the rehearsal this way, 9.7 %, and the new kind's recall still rose 0.37 -> 0.44
    (benchmarks/adaptation.py). The guard checks the rehearsal's held-out part, not this pool."""
    spec = chosen or calibration.identity()
    scores = calibration.log_odds(new_logits, spec)
    allowed = int((np.asarray(base_probabilities) >= 0.5).sum())
    called = int((scores >= 0).sum())
    if called <= allowed:
        return chosen, None
    shift = calibration.shift_calling_at_most(scores, allowed)
    held = dict(spec, b=float(spec["b"]) + shift)
    return held, (f"intercept lowered by {-shift:.3f} so that {allowed} of the base model's {len(scores)} rehearsed ice-free examples are called icy,"
                  f" as by the base model (the new model called {called})")


def hold_reference_tail(chosen: Optional[Dict], new_logits: np.ndarray, base_scores: np.ndarray) -> Tuple[Optional[Dict], Optional[str]]:
    """(calibration, what was done): the chosen calibration with its intercept lowered, where
    needed, so that the top quarter of the new model's calibrated log-odds on the reference crops
    (REFERENCE_TAIL, on average) sits no higher than the base's (base_scores: its calibrated
    log-odds on them). A round's new ice moves real terrain's scores up too: a half-icy round
    of 200 lee-frost labels called 7.1 % of held-out real terrain icy (the base 3.6 %), and the
    count hold on rehearsed examples it had trained on never bound; held on the reference,
    3.6 % with the recall still up (0.22 -> 0.28), and 100 review_rank labels 9.3 % -> 6.1 %
    (benchmarks/adaptation.py, docs/retraining.md)."""
    spec = chosen or calibration.identity()
    scores = calibration.log_odds(new_logits, spec)
    excess = float(np.mean(np.quantile(scores, REFERENCE_TAIL) - np.quantile(base_scores, REFERENCE_TAIL)))
    before, base_calls = int((scores >= 0).sum()), int((np.asarray(base_scores) >= 0).sum())
    if excess <= 0:
        return chosen, f"it calls {before} of {len(scores)} real ice-free reference crops icy, the base model {base_calls}"
    held = dict(spec, b=float(spec["b"]) - excess)
    after = int((scores - excess >= 0).sum())
    return held, (f"intercept lowered by {excess:.3f} so that its highest scores on {len(scores)} real ice-free reference crops match the base model's:"
                  f" it calls {after} of them icy ({before} before), the base model {base_calls}")


def _rates(s: Dict) -> str:
    return f"accuracy {s['accuracy']:.2f}, TPR {s['tpr']:.2f}, FPR {s['fpr']:.2f} at 0.5"


def guard(labels: np.ndarray, logits: Dict, calibrations: Dict, mix: Optional[ReplayMix] = None, held_out_logits: Optional[Dict] = None) -> Dict:
    """Base and new model ({"base": ..., "new": ...} logits and calibrations) scored on the same
    validation chunks and, with a replay set, on its held-out examples; see compare."""
    validation = {who: score(calibration.apply(logits[who], calibrations[who]), labels) for who in ("base", "new")}
    replay = None
    if mix is not None:
        held = mix.held_out
        replay = {who: score(calibration.apply(held_out_logits[who], calibrations[who]), held["labels"], held["kinds"]) for who in ("base", "new")}
    return compare(validation, replay)


def compare(validation: Dict, replay: Optional[Dict]) -> Dict:
    """validation, replay: {"base": score, "new": score} (replay None without a replay set).

    Returns them with "lines" to log, "worse", "doubtful" (too few validation chunks, or labels the base disagrees with) and
    the "verdict" sentence. On the user's chunks the new model is worse only by more than their AUC's standard error: with a
    fifth of 30 labels wrong, an equally good model had been called worse 4 times in 10. What the base knew is judged on the
    held-out rehearsal examples, whose labels are right: their ranking, their false alarms and their recall."""
    base, new = validation["base"], validation["new"]
    lines = [f"base model: AUC {base['roc_auc']:.3f} on these {base['chunks']} validation chunks ({_rates(base)}); new model: AUC {new['roc_auc']:.3f} ({_rates(new)})"]
    worse, doubts = [], []
    # at the two AUCs' mean: at the base's alone a perfect base (its standard error 0) called one pair lost in 100 worse
    margin = metrics.roc_auc_standard_error((base["roc_auc"] + new["roc_auc"]) / 2, base["icy"], base["chunks"] - base["icy"])
    if new["roc_auc"] < base["roc_auc"] - margin:  # False where one class alone was validated (NaN)
        worse.append(f"on your {base['chunks']} validation chunks (AUC {new['roc_auc']:.3f} against {base['roc_auc']:.3f}, more than the "
                     f"{margin:.3f} that so few chunks leave uncertain)")
    elif new["roc_auc"] < base["roc_auc"]:
        lines.append(f"the new model's AUC on your validation chunks is {base['roc_auc'] - new['roc_auc']:.3f} below the base's, within the {margin:.3f} "
                     f"that {base['chunks']} chunks leave uncertain: not counted as worse")
    if replay is not None and replay["base"]["chunks"]:
        rb, rn = replay["base"], replay["new"]
        lines.append(f"base model: AUC {rb['roc_auc']:.3f} on {rb['chunks']} held-out examples of what it knew ({_rates(rb)}); new model: AUC {rn['roc_auc']:.3f} ({_rates(rn)})")
        if rn["roc_auc"] < rb["roc_auc"] - REPLAY_TOLERANCE:  # False where one class alone was held out (NaN)
            worse.append(f"on {rb['chunks']} held-out examples of what the base model knew (AUC {rn['roc_auc']:.3f} against {rb['roc_auc']:.3f})")
        if rn["fpr"] > rb["fpr"] + REPLAY_FPR_TOLERANCE:  # whenever ice-free examples were held out
            # named whole: after the validation clause alone, "those examples" had read as the user's validation chunks
            worse.append(f"on the ice-free ones of {rb['chunks']} held-out examples of what the base model knew ({rn['fpr']:.0%} called icy against {rb['fpr']:.0%})")
        if rn["tpr"] < rb["tpr"] - REPLAY_TPR_TOLERANCE:  # whenever icy examples were held out
            worse.append(f"on the icy ones of {rb['chunks']} held-out examples of what the base model knew ({rn['tpr']:.0%} called icy against {rb['tpr']:.0%})")
        if base["roc_auc"] < DISAGREEING_AUC and rb["roc_auc"] >= DISAGREEING_AUC + 0.2:
            doubts.append(f"The base model ranks your validation chunks at AUC {base['roc_auc']:.2f} but its own held-out examples at {rb['roc_auc']:.2f}: "
                          f"either your ice is unlike any it knew, or some labels are wrong. Look again at the labelled chunks it disagrees with "
                          f"most (the review dock, ordered by probability) before you rely on either model.")
    if worse:
        verdict = f"The new model is WORSE than the base model {' and '.join(worse)}; keep using the base model, or label more chunks."
    else:
        verdict = "The new model is not worse than the base model on these chunks."
    fewest = min(base["icy"], base["chunks"] - base["icy"])
    if fewest < MIN_CALIBRATION_CHUNKS:  # 3 validation chunks had read "AUC 1.000, not worse" without a word of doubt
        doubts.append(f"Your validation chunks hold only {base['icy']} icy and {base['chunks'] - base['icy']} not icy, too few to judge by "
                      f"(fewer than {MIN_CALIBRATION_CHUNKS} of each): label more chunks, of both kinds, for a sure judgement.")
    verdict = " ".join([verdict] + doubts)
    return {"validation": validation, "replay": replay, "lines": lines, "worse": bool(worse), "doubtful": bool(doubts), "verdict": verdict}

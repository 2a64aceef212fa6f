"""Train the bundled default model from real HiRISE terrain with ice of several families, and
measure how it transfers to a family it never saw.

Run through scripts/train_default_model (the worker venv's Python). The terrain is the real
HiRISE crops of ../shared/data/hirise-terrain and hirise-terrain-v1 (labelled by landform, none
for ice), split three ways by observation (training, validation for early stopping and
calibration, held-out test), with every hard landform among the test observations. Ice is planted
by the families of model/trainingdata/ice, look-alikes by model/trainingdata/lookalikes.

    scripts/train_default_model                                   # all families -> the default model
    scripts/train_default_model --hold-out "natural shade" --out build/lofo/natural-shade.hiriseice
    scripts/train_default_model --evaluate MODEL --json OUT.json  # measure any model on the test set
    scripts/train_default_model --evaluate MODEL --transfer 'build/lofo/*.json'  # rewrite the card
    scripts/train_default_model --combine COARSE FINE --out MODEL  # one two-scale model of two trained ones

A --hold-out run trains on the other families and scores the held-out one on the held-out
observations: the leave-one-family-out table that heads the model card.
"""

import argparse
import glob
import json
import math
import multiprocessing
import os
import shlex
import sys
import time
from typing import Dict, List, NamedTuple, Optional

# Examples are made by processes (--workers); numpy's BLAS threads on 256-px resampling matrices
# only fight them for the cores. With its default of one thread per core in three processes on
# 16 cores, a GPU machine had not made its test examples after 9 minutes; with one thread (and
# one recipe) it made those and 20,958 training examples in 2 minutes.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from model import calibration, finetune, metrics, modelfile  # noqa: E402
from model import efficientnet  # noqa: E402
from model.network import SMALL_XCEPTION, TRUNKS, architecture, architecture_widths, logit_model, score_map_side  # noqa: E402
from model.protocol import Reporter  # noqa: E402
from model.training import TrainOptions  # noqa: E402
from model.trainingdata import patches  # noqa: E402
from model.trainingdata.crops import load_tiles  # noqa: E402,F401 (the benchmarks read the crops through the recipe)
from model.trainingdata.examples import FAMILIES, LOOKALIKE_SHARES, make_example, to_input  # noqa: E402

SHARED = os.path.join(REPO, "..", "shared", "data")
TERRAIN_FOLDERS = ("hirise-terrain", "hirise-terrain-v1")
HARD_LANDFORMS = ("bright dune", "swiss cheese", "spider")
TEST_LOOKALIKES = [k for k in LOOKALIKE_SHARES if k != "plain"]
ATTRIBUTION = (
    "Terrain: 'Mars orbital image (HiRISE) labeled data set' versions 1 and 3, K. L. Wagstaff, S. Lu, G. Doran, "
    "L. Mandrake et al., NASA JPL, DOI 10.5281/zenodo.1048301 and 10.5281/zenodo.2538136 (HiRISE images: NASA/JPL/University of Arizona)."
)


def split_observations(tiles, seed, fraction=0.15):
    """(train, validation, test) observation sets: about ``fraction`` of the observations each for
    validation and test, and an observation of every hard landform in each of them first."""
    observations = sorted({t["observation"] for t in tiles})
    rng = np.random.default_rng(seed)
    rng.shuffle(observations)
    by_landform = {name: [o for o in observations if any(t["observation"] == o and t["landform"] == name for t in tiles)] for name in HARD_LANDFORMS}
    test, validation = set(), set()
    for name in HARD_LANDFORMS:
        holders = [o for o in by_landform[name] if o not in test and o not in validation]
        if len(holders) >= 2:
            test.add(holders[0])
            validation.add(holders[1])
    target = int(round(fraction * len(observations)))
    for observation in observations:
        if observation in test or observation in validation:
            continue
        if len(test) < target:
            test.add(observation)
        elif len(validation) < target:
            validation.add(observation)
    return set(observations) - test - validation, validation, test


def seen_observations(meta: Dict) -> set:
    """The observations a model, and every model it continues or joins, trained on or chose its epochs on."""
    training = meta.get("training", {})
    split = training.get("split", {})
    return set(training.get("seen_observations", [])) | set(split.get("train_groups", [])) | set(split.get("validation_groups", []))


# The bundled model's weights, whose ancestors' splits were checked by hand on 2026-12-07 (docs/default-model.md):
# none trained on or chose its epochs on a test observation of --seed 7.
AUDITED_LINEAGE = "83cd367e6b4c104731107a7a2a4deebe8642a7609dfbc83847819bff0a25fd57"


def refuse_models_that_saw(paths, test_obs, seed):
    """Stop where a model given to this run has trained on (or chosen its epochs on) a test observation of this split:
    its numbers there would be no held-out evidence, and a warm start would carry that test set into the new model."""
    for path in paths:
        meta = modelfile.read_metadata(path)
        seen = sorted(seen_observations(meta) & test_obs)
        if ("seen_observations" not in meta.get("training", {}) and len(meta.get("training", {}).get("commands", [])) > 1
                and meta.get("weights_sha256") != AUDITED_LINEAGE):
            print(f"warning: {path} continues an earlier model but was written before models recorded their lineage's observations: "
                  f"only its own split is checked against the test observations, not its ancestors'.", file=sys.stderr)
        if seen:
            sys.exit(f"error: {path}, or a model it continues, trained on or chose its epochs on {len(seen)} of the {len(test_obs)} test observations of "
                     f"--seed {seed} ({', '.join(seen[:4])}{', ...' if len(seen) > 4 else ''}), so no number measured on them would be held out. Give the "
                     f"--seed that model was made with (7 unless its training commands name another), or train from random weights.")


class Examples(NamedTuple):
    images: np.ndarray  # uint8 (n, input_size, input_size)
    labels: np.ndarray
    groups: np.ndarray  # observation IDs
    kinds: np.ndarray  # the ice family, the look-alike, or "real" (a crop as it is)
    landforms: np.ndarray
    size_px: np.ndarray  # largest planted patch (crop px); NaN without ice
    contrast: np.ndarray
    cells: Optional[np.ndarray] = None  # (n, g, g) the ice's share of each score-map cell, where made with --cell-weight

    def subset(self, keep):
        return Examples(*(None if field is None else field[keep] for field in self))


def _examples(rows):
    images, labels, groups, kinds, landforms, sizes, contrasts, cells = zip(*rows)
    return Examples(np.stack(images), np.array(labels, np.int32), np.array(groups), np.array(kinds), np.array(landforms),
                    np.array(sizes, float), np.array(contrasts, float), None if cells[0] is None else np.stack(cells))


def _row(tile, example):
    return (example["image"], example["label"], tile["observation"], example["kind"], tile["landform"], example["size_px"], example["contrast"],
            example.get("cells"))


def _at_input_size(base, input_size):
    """The base (network, metadata) taking input_size-px inputs. Its pooled head makes every weight
    independent of the input size, so the same weights start a network that reads the chunk finer."""
    network, meta = base
    if meta["input_size"] == input_size:
        return base
    from model.network import build_from

    rescaled_architecture = dict(meta["architecture"], input_size=int(input_size))
    rescaled = build_from(rescaled_architecture)
    rescaled.set_weights(network.get_weights())
    return rescaled, dict(meta, input_size=int(input_size), architecture=rescaled_architecture)


def build_training_set(tiles, variants, hard_variants, seed, input_size, workers=1, cells=0, twins=0.0):
    """``variants`` examples per crop (``hard_variants`` for hard landforms), alternately with ice of
    a random family and with a random look-alike, so the terrain itself is no cue; with ``cells``,
    each example's ice share of cells x cells score-map cells; with ``twins``, that share of the icy
    examples also gives its twin without the ice (an extra ice-free example). Each crop draws from
    its own seed, so ``workers`` processes make the same examples as one."""
    global _POOL
    _POOL = (tiles, variants, hard_variants, seed, input_size, cells, twins)
    if workers > 1:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            per_tile = pool.map(_tile_examples, range(len(tiles)), chunksize=16)
    else:
        per_tile = [_tile_examples(index) for index in range(len(tiles))]
    return _examples([row for rows in per_tile for row in rows])


_POOL = None  # build_training_set's arguments, inherited by its forked workers


def _tile_examples(index):
    tiles, variants, hard_variants, seed, input_size, cells, twins = _POOL
    tile = tiles[index]
    rng = np.random.default_rng([seed, index])
    rows = []
    for variant in range(hard_variants if tile["landform"] in HARD_LANDFORMS else variants):
        example = None
        while example is None:
            if variant % 2:
                family = str(rng.choice(list(FAMILIES)))
                example = make_example(tile["image"], rng, input_size, family=family, cells=cells, twin=bool(twins) and rng.random() < twins)
            else:
                example = make_example(tile["image"], rng, input_size, lookalike=str(rng.choice(list(LOOKALIKE_SHARES), p=list(LOOKALIKE_SHARES.values()))),
                                       cells=cells)
        rows.append(_row(tile, example))
        if "twin" in example:
            rows.append(_row(tile, example["twin"]))
    return rows


def build_test_set(tiles, seed, input_size):
    """Per held-out crop: the crop as it is, one example of every family that fits on it, and as many
    look-alikes (in turn), none degraded twice the same way."""
    rng = np.random.default_rng(seed)
    rows = []
    for index, tile in enumerate(tiles):
        valid = tile["image"] > 0
        rows.append((to_input(tile["image"], valid, input_size), 0, tile["observation"], "real", tile["landform"], np.nan, np.nan, None))
        for offset, family in enumerate(FAMILIES):
            example = make_example(tile["image"], rng, input_size, family=family)
            if example is not None:
                rows.append(_row(tile, example))
            lookalike = TEST_LOOKALIKES[(index * len(FAMILIES) + offset) % len(TEST_LOOKALIKES)]
            rows.append(_row(tile, make_example(tile["image"], rng, input_size, lookalike=lookalike)))
    return _examples(rows)


def predict_logits(network, images, layer: str = "logit"):
    """The logits of uint8 images at ``layer`` (a multi-scale network's ``logit_<scale>``: that network alone)."""
    import keras

    scorer = logit_model(network) if layer == "logit" else keras.Model(network.inputs, network.get_layer(layer).output)
    return np.asarray(scorer.predict((images.astype(np.float32) / 255.0)[..., None], batch_size=64, verbose=0)).reshape(-1)


def _rate(p, mask):
    return {"rate": float((p[mask] >= 0.5).mean()) if mask.any() else None, "count": int(mask.sum())}


def evaluate(network, meta, test: Examples) -> Dict:
    """Per family: ROC AUC (its icy examples against every ice-free one) with an interval from
    resampling whole observations, the ROC AUC against the real crops alone, and the recall at p >= 0.5; false-positive rates at p >= 0.5 on
    the real crops as they are (by hard landform) and on each look-alike; calibration."""
    logits = predict_logits(network, test.images)
    p = calibration.apply(logits, meta.get("calibration"))
    negative = test.labels == 0
    real = test.kinds == "real"
    families = {}
    for family in FAMILIES:
        icy = test.kinds == family
        both = icy | negative
        families[family] = {
            "count": int(icy.sum()),
            "roc_auc": metrics.roc_auc(p[both], test.labels[both]),
            "roc_auc_interval": metrics.bootstrap_roc_auc(p[both], test.labels[both], test.groups[both], resamples=400, seed=0),
            "recall_at_0.5": float((p[icy] >= 0.5).mean()),
            # against the real crops alone, as a geologist's ice-free chunks are
            "roc_auc_vs_real_terrain": metrics.roc_auc(p[icy | real], test.labels[icy | real]),
        }
    fpr = {"real ice-free terrain (not the hard landforms)": _rate(p, real & ~np.isin(test.landforms, HARD_LANDFORMS))}
    fpr.update({name: _rate(p, real & (test.landforms == name)) for name in HARD_LANDFORMS})
    fpr.update({f"planted: {kind}": _rate(p, test.kinds == kind) for kind in TEST_LOOKALIKES})
    return {
        "examples": int(len(p)),
        "icy": int(test.labels.sum()),
        "observations": len(set(test.groups.tolist())),
        "roc_auc_all_families": metrics.roc_auc(p, test.labels),
        "families": families,
        "false_positive_rate_at_0.5": fpr,
        "ece": calibration.expected_calibration_error(p, test.labels),
        "ece_uncalibrated": calibration.expected_calibration_error(calibration.sigmoid(logits), test.labels),
        **_ece_at_survey_share(p, test.labels, meta.get("calibration")),
        "reliability": calibration.reliability(p, test.labels),
        "by_size": by_size(p, test),
        "by_contrast": by_contrast(p, test),
    }


def _ece_at_survey_share(p, labels, fitted) -> Dict:
    """The ECE with the test examples weighted to the share of icy chunks the calibration was
    moved to (calibration.with_prior): the test set's own share differs, and at it a calibration
    meant for a survey reads as miscalibrated by the change of prior alone."""
    prior = finetune.survey_prior(fitted)
    if not prior:
        return {}
    return {"ece_at_survey_share": {"share": float(prior), "ece": calibration.expected_calibration_error(p, labels, weights=calibration.prior_weights(labels, prior))}}


def by_size(p, test: Examples, edges=(0, 12, 20, 40, 80, 400)):
    """Recall at p >= 0.5 of the icy examples by the size of their largest patch (crop px)."""
    rows = {}
    for low, high in zip(edges[:-1], edges[1:]):
        icy = (test.labels == 1) & (test.size_px >= low) & (test.size_px < high)
        if icy.any():
            rows[f"{low}-{high} px"] = {"count": int(icy.sum()), "recall": float((p[icy] >= 0.5).mean())}
    return rows


# Bands of the largest patch's contrast (on the 0-1 stretch) the ROC AUC is broken down by, here and in benchmarks/unseen_family.py.
CONTRAST_BINS = ((0.0, 0.1), (0.1, 0.2), (0.2, 0.4), (0.4, 1.0))


def auc_by_contrast(p, labels, icy, contrasts) -> Dict:
    """{'low-high': {count, roc_auc}} per contrast bin: the bin's examples of the ``icy`` mask against every ice-free one
    (roc_auc NaN where the bin is empty)."""
    rows = {}
    for low, high in CONTRAST_BINS:
        inside = icy & (contrasts >= low) & (contrasts < high)
        against = inside | (labels == 0)
        rows[f"{low}-{high}"] = {"count": int(inside.sum()), "roc_auc": metrics.roc_auc(p[against], labels[against]) if inside.any() else math.nan}
    return rows


def by_contrast(p, test: Examples):
    """Per family, the ROC AUC by its largest patch's contrast (over the brighter part of its surroundings,
    patches.paint_ice), bins without examples left out, so that faint ice missed in-family can be told from
    faint ice missed only in unseen families."""
    return {family: {band: row for band, row in auc_by_contrast(p, test.labels, test.kinds == family, test.contrast).items() if row["count"]}
            for family in FAMILIES}


def replay_set(train: Examples, count: int, seed: int):
    """A class-balanced sample of ``count`` examples of what the model learnt from, every family
    and look-alike in it, carried in the model file so that fine-tuning can rehearse it."""
    per_class = count // 2
    rng = np.random.default_rng(seed)
    chosen = []
    for label in (0, 1):
        kinds = sorted(set(train.kinds[train.labels == label].tolist()))
        for kind in kinds:
            members = np.flatnonzero((train.labels == label) & (train.kinds == kind))
            chosen.extend(rng.choice(members, min(len(members), per_class // len(kinds)), replace=False).tolist())
    keep = np.array(sorted(chosen))
    return {"images": train.images[keep], "labels": train.labels[keep], "kinds": train.kinds[keep]}


def validation_terrain(tiles, validation_obs) -> List[Dict]:
    """The validation observations' real crops, hard landforms aside: the ice-free terrain that the
    survey share's bound and the reference crops are taken from."""
    return [t for t in tiles if t["observation"] in validation_obs and t["landform"] not in HARD_LANDFORMS]


def reference_crops(tiles, validation_obs, count: int, seed: int, input_size: int) -> Dict:
    """``count`` real ice-free crops of the validation observations (hard landforms aside), as
    detect reads them: never trained on, by this model or by a fine-tuning round, so a round can
    hold its false alarms on them at this model's (finetune.hold_reference_tail)."""
    crops = validation_terrain(tiles, validation_obs)
    # In turns from each observation: one of them holds 285 of the 689 crops, and a plain random
    # draw leaned on its terrain (one draw of 128 held a half-icy round's false alarms at 5.1 %
    # where random draws of as many ranged 2.4-4.5 %).
    rng = np.random.default_rng([seed, 9])
    queues = [rng.permutation([i for i, t in enumerate(crops) if t["observation"] == name]).tolist() for name in sorted(validation_obs)]
    chosen = []
    while len(chosen) < min(count, len(crops)):
        chosen.extend(queue.pop() for queue in queues if queue)
    chosen = sorted(chosen[:count])
    return {"images": np.stack([to_input(crops[i]["image"], crops[i]["image"] > 0, input_size) for i in chosen]),
            "labels": np.zeros(len(chosen), np.int8), "kinds": np.full(len(chosen), finetune.REFERENCE_KIND)}


def carried_examples(train: Examples, tiles, validation_obs, args, seed: int) -> Dict:
    """What the model file carries for fine-tuning: a replay sample of what it learnt from and the reference crops."""
    replay, reference = replay_set(train, args.replay, seed), reference_crops(tiles, validation_obs, args.reference, seed, args.input_size)
    return {key: np.concatenate([replay[key], reference[key]]) for key in replay}


def _device() -> str:
    """What trained: the Keras backend and its device, e.g. "jax GPU (cuda:0)"."""
    import keras

    from model.runtime import compute_device

    return f"{keras.backend.backend()} {compute_device()}"


def card_path(out: str) -> str:
    """The shipped card for the shipped model; any other model's card beside it (MODEL.md)."""
    if os.path.abspath(out) == os.path.abspath(modelfile.default_model_path()):
        return os.path.join(REPO, "resources", "models", "MODEL_CARD.md")
    return os.path.splitext(out)[0] + ".md"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--terrain", action="append", default=None, help="terrain folder (repeatable; default: ../shared/data/hirise-terrain and hirise-terrain-v1)")
    parser.add_argument("--out", default=modelfile.default_model_path())
    parser.add_argument("--card", default="", help="where to write the card (default: the bundled card for the bundled model, else beside --out, "
                        "so that a trial run never rewrites the shipped model's card)")
    parser.add_argument("--json", default="", help="also write the test measurement here")
    parser.add_argument("--compare", default=os.path.join(REPO, "build", "previous-default.json"), help="the previous default's measurement (--evaluate --json) for the card, if present")
    parser.add_argument("--transfer", default=os.path.join(REPO, "resources", "models", "transfer", "*.json"), help="glob of the leave-one-family-out measurements for the card")
    parser.add_argument("--unseen", default=os.path.join(REPO, "resources", "models", "unseen", "*.json"),
                        help="benchmarks/unseen_family.py's measurements (a glob): their rows for this model head the card, if present")
    parser.add_argument("--hold-out", default="", choices=[""] + list(FAMILIES), help="train without this ice family (leave-one-family-out); writes no card")
    parser.add_argument("--input-size", type=int, default=None, help="network input in px for a 1024-px chunk (default: --evaluate's or --base's, else 128)")
    parser.add_argument("--widths", default="32,64,128,192,256")
    parser.add_argument("--trunk", default=SMALL_XCEPTION, choices=TRUNKS, help="the network's trunk without --base: the paper's small Xception of --widths, "
                        f"from random weights, or {efficientnet.NAME}, from ImageNet's (docs/default-model.md: A trunk that starts from ImageNet)")
    parser.add_argument("--base", default="", help="start from this model file's weights (its widths) instead of at random; "
                        "with another --input-size its weights start at that size, the chunk read at a finer scale")
    parser.add_argument("--variants", type=int, default=2, help="training examples per crop (half with ice)")
    parser.add_argument("--hard-variants", type=int, default=4, help="training examples per hard-landform crop")
    parser.add_argument("--workers", type=int, default=1, help="processes making the training examples (the same examples for any number)")
    parser.add_argument("--batch-size", type=int, default=TrainOptions.batch_size)
    parser.add_argument("--faint-share", type=float, default=patches.FAINT_SHARE,
                        help="share of the training examples' ice painted faint, only a little above the middle of its surroundings "
                             "(model/trainingdata/patches.py; the test set keeps %(default)s)")
    parser.add_argument("--twins", type=float, default=0.0, help="share of the icy training examples also given as their twin without the ice "
                        "(the same crop, distractors and degradation), so that only the ice tells the labels apart")
    parser.add_argument("--cell-weight", type=float, default=0.0, help="also teach each score-map cell whether the example's ice covers it, "
                        "with this weight beside the chunk's loss (model/cells.py; 0: chunk labels only)")
    parser.add_argument("--minutes", type=float, default=None, help="stop training after the epoch that ends past this many minutes (a rented machine's lease)")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--patience", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7, help="fixes the split and the test set")
    parser.add_argument("--data-seed", type=int, default=None)
    parser.add_argument("--limit", type=int, default=0, help="use only this many crops (quick trial runs; another split)")
    parser.add_argument("--train-share", type=float, default=1.0, help="train on this share of the training crops (same split and test set)")
    parser.add_argument("--replay", type=int, default=300, help="examples carried in the model file for fine-tuning (about 13 kB each)")
    parser.add_argument("--reference", type=int, default=128, help="real ice-free crops of the validation observations carried in the model file "
                        "to hold a fine-tuning round's false alarms (about 47 kB each)")
    parser.add_argument("--add-reference", metavar="MODEL", default="", help="only replace MODEL's reference crops with --reference new ones "
                        "(its weights, metadata and rehearsal examples untouched)")
    parser.add_argument("--evaluate", metavar="MODEL", default="", help="only measure this model file on the test set (JSON on stdout)")
    parser.add_argument("--rewrite", action="store_true", help="with --evaluate: write MODEL's weights to --out with this measurement, its calibration moved to "
                        "--icy-prior, a replay sample and the card")
    parser.add_argument("--store", action="store_true", help="with --evaluate: store the measurement in MODEL's metadata (its weights and replay set "
                        "untouched) and write --card from it")
    parser.add_argument("--combine", nargs=2, metavar=("COARSE", "FINE"), default=None,
                        help="write to --out one two-scale model of two models of the same widths, FINE reading the chunk at a multiple of COARSE's "
                        "input size: their logits averaged, calibrated on the validation observations, measured, with a replay sample and the card")
    parser.add_argument("--card-only", action="store_true", help="only write --card from --out's stored measurement and the transfer runs (no TensorFlow)")
    parser.add_argument("--icy-prior", type=float, default=0.2, help="share of icy chunks the calibration assumes (the paper's training set: 20 %%)")
    parser.add_argument("--max-false-alarms", type=float, default=0.05,
                        help="lower the assumed share until at most this share of the validation observations' real crops is called icy")
    args = parser.parse_args(argv)
    given = args.evaluate or args.base or (args.combine[1] if args.combine else "")
    args.input_size = args.input_size or (modelfile.read_metadata(given)["input_size"] if given else 128)
    folders = args.terrain or [os.path.join(SHARED, name) for name in TERRAIN_FOLDERS]
    missing = [f for f in folders if not os.path.isdir(os.path.join(f, "tiles"))]
    if missing:
        sys.exit(f"error: {', '.join(missing)} has no tiles/: the default model needs ../shared/data/hirise-terrain and hirise-terrain-v1")

    args.card = args.card or card_path(args.out)
    if args.card_only:
        meta = modelfile.read_metadata(args.out)
        _write_card(args.card, _card(args, meta, meta["metrics"]["test"]))
        return
    reporter = Reporter()
    started = time.monotonic()
    tiles = load_tiles(folders)
    if args.limit:
        tiles = tiles[:: max(1, len(tiles) // args.limit)][: args.limit]
    train_obs, validation_obs, test_obs = split_observations(tiles, args.seed)
    refuse_models_that_saw([path for path in [args.base, args.evaluate] + list(args.combine or []) if path], test_obs, args.seed)
    if args.add_reference:  # no test set needed
        replay, meta = modelfile.load_replay(args.add_reference), modelfile.read_metadata(args.add_reference)
        rehearsal = replay["kinds"] != finetune.REFERENCE_KIND
        reference = reference_crops(tiles, validation_obs, args.reference, args.seed, meta["input_size"])
        meta["training"]["commands"] = meta["training"].get("commands", []) + [shlex.join(["scripts/train_default_model"] + sys.argv[1:])]
        modelfile.store_replay(args.add_reference, {key: np.concatenate([replay[key][rehearsal], reference[key]]) for key in replay}, meta)
        reporter.log(f"{args.add_reference}: {len(reference['labels'])} reference crops of {len(validation_obs)} validation observations ({os.path.getsize(args.add_reference) / 1e6:.1f} MB)")
        return
    test_tiles = [t for t in tiles if t["observation"] in test_obs]
    test = build_test_set(test_tiles, args.seed + 1, args.input_size)
    reporter.log(f"{len(tiles)} crops of {len(train_obs) + len(validation_obs) + len(test_obs)} observations; test: {len(test_obs)} observations, {len(test.labels)} examples")
    if args.combine:
        network, meta = combine_scales(args.combine, tiles, validation_obs, args)
        _move_to_prior(meta, _survey_share(network, meta, tiles, validation_obs, args))
        measured = evaluate(network, meta, test)
        _write_json(args.json, measured)
        _remeasure(network, meta, measured, tiles, test_obs, validation_obs, args)
        reporter.log(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.1f} MB) in {(time.monotonic() - started) / 60:.1f} min")
        print(json.dumps({"families": {k: round(v["roc_auc"], 4) for k, v in measured["families"].items()},
                          "fpr": {k: v["rate"] for k, v in measured["false_positive_rate_at_0.5"].items()}, "ece": measured["ece"]}, indent=1))
        return
    if args.evaluate:
        from model.training import prepare_tensorflow

        prepare_tensorflow(architecture_widths(modelfile.read_metadata(args.evaluate)["architecture"]))
        network, meta = modelfile.load(args.evaluate)
        if args.rewrite:
            _move_to_prior(meta, _survey_share(network, meta, tiles, validation_obs, args))
        measured = evaluate(network, meta, test)
        _write_json(args.json, measured)
        if args.rewrite:
            _remeasure(network, meta, measured, tiles, test_obs, validation_obs, args)
        elif args.store:
            meta["metrics"]["test"] = measured
            modelfile.store_metadata(args.evaluate, meta)
            _write_card(args.card, _card(args, meta, measured))
        print(json.dumps({k: v for k, v in measured.items() if k not in ("reliability",)}, indent=1))
        return

    families = [f for f in FAMILIES if f != args.hold_out]
    data_seed = args.seed if args.data_seed is None else args.data_seed
    training_tiles = [t for t in tiles if t["observation"] not in test_obs]
    if args.train_share < 1.0:
        keep = np.random.default_rng(data_seed).random(len(training_tiles)) < args.train_share
        training_tiles = [t for t, kept in zip(training_tiles, keep) if kept]
    widths = tuple(architecture_widths(modelfile.read_metadata(args.base)["architecture"])) if args.base else (
        tuple(int(w) for w in args.widths.split(",")) if args.trunk == SMALL_XCEPTION else ())
    grid = score_map_side(args.input_size, modelfile.read_metadata(args.base)["architecture"] if args.base else architecture(args.input_size, widths, trunk=args.trunk))
    if args.cell_weight and not grid:
        sys.exit(f"error: --cell-weight needs an --input-size that is a whole number of score-map cells, not {args.input_size}")
    shipped_faint_share, patches.FAINT_SHARE = patches.FAINT_SHARE, args.faint_share  # training and validation examples only, not the test set
    try:
        pool = build_training_set(training_tiles, args.variants, args.hard_variants, data_seed, args.input_size, args.workers, grid if args.cell_weight else 0,
                                  args.twins)
    finally:
        patches.FAINT_SHARE = shipped_faint_share
    train = pool.subset(np.isin(pool.kinds, families) | (pool.labels == 0))
    reporter.log(f"made {len(train.labels)} training and validation examples ({int(train.labels.sum())} icy; families: {', '.join(families)}) in {time.monotonic() - started:.0f} s")

    from model.fitting import make_deterministic
    from model.training import prepare_tensorflow, train_arrays

    prepare_tensorflow(widths)
    make_deterministic(args.seed)  # before the base loads, which seeds its dropout layers from Python's random

    # a warm start learns the new data as a whole: its batch-norm statistics and weights move with it
    # (no pull back to the base's, which is for a user's few labels)
    base = _at_input_size(modelfile.load(args.base), args.input_size) if args.base else None

    options = TrainOptions(
        epochs=args.epochs, patience=args.patience, seed=args.seed, batch_size=args.batch_size, max_minutes=args.minutes, input_size=args.input_size, chunk_size=1024, widths=widths, trunk=args.trunk,
        name="hiriseice-default" if not args.hold_out else f"hiriseice-without-{args.hold_out.replace(' ', '-')}",
        augment="lighting", learning_rate=args.learning_rate, validation_groups=sorted(validation_obs), freeze_batch_norm=False, anchor=0.0, cell_weight=args.cell_weight,
        extra_metadata={
            "data": f"real HiRISE terrain ({', '.join(os.path.basename(f) for f in folders)}: {len(tiles)} crops) with ice of the families {', '.join(families)}; no real ice labels",
            "families": families,
            "held_out_family": args.hold_out or None,
            "attribution": ATTRIBUTION,
            "test_observations": sorted(test_obs),
            "device": _device(),
            "recipe": "scripts/train_default_model",
            # a warm start is reproduced by the base's own commands first
            "commands": (base[1]["training"].get("commands", []) if base else [])
            + [shlex.join(["scripts/train_default_model"] + (sys.argv[1:] if argv is None else list(argv)))],
            "examples": {"variants": args.variants, "hard_variants": args.hard_variants, "data_seed": data_seed, "faint_share": args.faint_share,
                         "twins": args.twins},
        },
    )
    outcome = train_arrays(train.images, train.labels, list(train.groups), options, reporter, base, cells=train.cells)
    network, meta = outcome["network"], outcome["metadata"]
    meta["training"]["seen_observations"] = sorted(seen_observations(meta) | (seen_observations(base[1]) if base else set()))
    _move_to_prior(meta, _survey_share(network, meta, tiles, validation_obs, args))
    measured = evaluate(network, meta, test)
    meta["metrics"]["test"] = measured
    meta["training"]["run_minutes"] = round((time.monotonic() - started) / 60.0, 1)
    train_only = train.subset(~np.isin(train.groups, sorted(validation_obs)))
    modelfile.save(network, meta, args.out, replay=carried_examples(train_only, tiles, validation_obs, args, data_seed))
    _write_json(args.json, dict(measured, held_out_family=args.hold_out or None, model=meta["name"], widths=list(widths),
                                 epochs=meta["training"]["epochs_run"], minutes=meta["training"]["run_minutes"]))
    if not args.hold_out:
        _write_card(args.card, _card(args, meta, measured))
    reporter.log(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.1f} MB) in {(time.monotonic() - started) / 60:.1f} min")
    print(json.dumps({"families": {k: round(v["roc_auc"], 4) for k, v in measured["families"].items()},
                      "fpr": {k: v["rate"] for k, v in measured["false_positive_rate_at_0.5"].items()}, "ece": measured["ece"]}, indent=1))


def combine_scales(paths, tiles, validation_obs, args):
    """(network, metadata) of the two-scale model of COARSE and FINE (model/network.py
    multi_scale_from), with Platt scaling fitted on examples of the validation observations, as a
    trained model's is. Each member is a model of this recipe, its commands and epochs kept."""
    from model.network import multi_scale_from
    from model.training import prepare_tensorflow

    metas = [modelfile.read_metadata(path) for path in paths]
    if any(meta["architecture"].get("name") != SMALL_XCEPTION for meta in metas):
        sys.exit("error: --combine joins two small Xceptions; a model of another trunk reads one scale")
    widths = metas[0]["architecture"]["widths"]
    coarse_size, fine_size = (meta["input_size"] for meta in metas)
    if metas[1]["architecture"]["widths"] != widths or any(meta["architecture"].get("scales") for meta in metas) or fine_size % coarse_size or fine_size == coarse_size:
        sys.exit("error: --combine needs two single-scale models of the same widths, FINE's input size a multiple of COARSE's")
    prepare_tensorflow(widths)
    (coarse, coarse_meta), (fine, fine_meta) = (modelfile.load(path) for path in paths)
    scale = fine_size // coarse_size
    network = multi_scale_from({scale: coarse, 1: fine}, fine_size, widths)
    seed = args.seed if args.data_seed is None else args.data_seed
    validation = build_training_set([t for t in tiles if t["observation"] in validation_obs], args.variants, args.hard_variants, seed, fine_size)
    logits = predict_logits(network, validation.images)
    chosen, record = finetune.choose_calibration(logits, validation.labels, None, "none")
    members = [
        {"scale": s, "input_size": m["input_size"], "name": m["name"], "version": m["version"], "epochs_run": m["training"]["epochs_run"],
         "best_epoch": m["training"]["best_epoch"], "learning_rate": m["training"]["learning_rate"], "run_minutes": m["training"].get("run_minutes", 0),
         "best_val_loss": m["metrics"]["best_val_loss"]}
        for s, m in ((scale, coarse_meta), (1, fine_meta))
    ]
    training = dict(fine_meta["training"], members=members, run_minutes=sum(m["run_minutes"] for m in members),
                    seen_observations=sorted(seen_observations(coarse_meta) | seen_observations(fine_meta)))
    meta = modelfile.new_metadata(
        "hiriseice-default", fine_size, fine_meta["chunk_size"], fine_meta["normalisation"], architecture(fine_size, widths, [scale, 1]), fine_meta["thresholds"],
        calibration=chosen, training=training,
        metrics={"validation_chunks": int(len(logits)), "validation_icy": int(validation.labels.sum()), "calibration": record, "best_val_loss": fine_meta["metrics"]["best_val_loss"],
                 "ece_uncalibrated": calibration.expected_calibration_error(calibration.sigmoid(logits), validation.labels),
                 "ece_calibrated": calibration.expected_calibration_error(calibration.apply(logits, chosen), validation.labels),
                 "validation_roc_auc": metrics.roc_auc(calibration.sigmoid(logits), validation.labels)},
    )
    return network, meta


def _measurements(pattern) -> List[Dict]:
    """The JSON measurements a glob names (leave-one-family-out runs, unseen families), each with its file."""
    return [json.load(open(path, encoding="utf-8")) | {"file": path} for path in sorted(glob.glob(pattern))]


def _fitted(meta):
    """(calibration as fitted on the validation chunks, their share of icy chunks): a calibration
    already moved to a survey's share (a rewrite, a warm start's kept one) is moved back."""
    spec = meta.get("calibration") or calibration.identity()
    moved = spec.get("prior")
    if moved:
        back = calibration.with_prior(spec, moved["prior"], moved["fitted_share"])
        back.pop("prior")
        return back, moved["fitted_share"]
    return spec, meta["metrics"]["validation_icy"] / meta["metrics"]["validation_chunks"]


def _survey_share(network, meta, tiles, validation_obs, args) -> Dict:
    """The share of icy chunks the calibration assumes: --icy-prior, lowered where that would call
    more than --max-false-alarms of the validation observations' real ice-free crops (hard
    landforms aside, as the test's false-alarm rate) icy at p >= 0.5. The operating point is set
    on validation observations, never on the test set."""
    fitted, share = _fitted(meta)
    crops = validation_terrain(tiles, validation_obs)
    images = np.stack([to_input(t["image"], t["image"] > 0, args.input_size) for t in crops])
    scores = calibration.log_odds(predict_logits(network, images), fitted)
    # Moving the share from `share` to `prior` adds logit(prior) - logit(share) to b (calibration.with_prior).
    highest_shift = calibration.shift_calling_at_most(scores, int(np.floor(args.max_false_alarms * len(scores))))
    bounded = float(calibration.sigmoid(np.log(share / (1.0 - share)) + highest_shift))
    prior = min(args.icy_prior, bounded)
    return {"prior": prior, "requested": args.icy_prior, "max_false_alarms": args.max_false_alarms, "validation_crops": len(crops)}


def _move_to_prior(meta, survey):
    """Calibration fitted on the (balanced) validation chunks, moved to a survey's share of icy
    chunks (_survey_share). One already moved (by fine-tuning from a base, or by an earlier
    rewrite) is moved back first (_fitted)."""
    fitted, share = _fitted(meta)
    meta["calibration"] = calibration.with_prior(fitted, share, survey["prior"])
    meta["calibration"]["prior"].update({k: v for k, v in survey.items() if k != "prior"})


def _remeasure(network, meta, measured, tiles, test_obs, validation_obs, args):
    """Write the model's weights to --out with this measurement, its ice families and a replay
    sample of this recipe's training crops, and its card (a model trained before the families
    existed, on the rendered caster alone, then says so)."""
    training = meta["training"]
    training.setdefault("families", ["rendered caster"])
    training["test_observations"] = sorted(test_obs)
    training["commands"] = training.get("commands", []) + [shlex.join(["scripts/train_default_model"] + sys.argv[1:])]
    meta["metrics"]["test"] = measured
    seed = args.seed if args.data_seed is None else args.data_seed
    pool = build_training_set([t for t in tiles if t["observation"] not in test_obs | validation_obs], args.variants, args.hard_variants, seed, args.input_size)
    modelfile.save(network, meta, args.out, replay=carried_examples(pool, tiles, validation_obs, args, seed))
    _write_card(args.card, _card(args, meta, measured))


def _card(args, meta, measured) -> str:
    from model_card import model_card

    return model_card(meta, measured, _measurements(args.transfer), list(HARD_LANDFORMS), ATTRIBUTION, _previous(args.compare), _measurements(args.unseen))


def _previous(path):
    return json.load(open(path, encoding="utf-8")) if path and os.path.isfile(path) else None


def _write_json(path, measured):
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(measured, handle, indent=1)


def _write_card(path, text):
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


if __name__ == "__main__":
    main()

"""Train the bundled default model from real HiRISE terrain with synthetic ice patches.

Run through scripts/train_default_model (the worker venv's Python). ../shared/data/hirise-terrain
holds 868 real HiRISE browse crops (227 px, 137 observations) labelled by landform, none for ice.
Half of the training examples get synthetic ice patches that follow the physical criteria
(model/py); negatives are the real terrain, the real CO2-ice landforms (spiders, swiss
cheese) and bright dunes, plus planted hot pixels, sunlit bright rocks, low-contrast and
CO2-frost-covered versions. Observations are split three ways (train / validation for early
stopping and calibration / held-out test for the model card), never by file.
"""

import argparse
import csv
import json
import os
import shlex
import sys
import time
from typing import List, NamedTuple

import numpy as np
from osgeo import gdal

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from model import calibration, metrics, modelfile  # noqa: E402
from model.trainingdata.ice.rendered_caster import implant_ice_patches  # noqa: E402
from model.trainingdata.lookalikes.bare_casters import implant_shadowing_features  # noqa: E402
from model.trainingdata.lookalikes.hot_pixels import implant_hot_pixels  # noqa: E402
from model.trainingdata.lookalikes.scene_conditions import apply_co2_frost, apply_low_contrast  # noqa: E402
from model.trainingdata.lookalikes.sunlit_rocks import implant_sunlit_bright_rocks  # noqa: E402
from model.network import logit_model  # noqa: E402
from model.preprocess import DEFAULT_NORMALISATION, normalise, resize, to_uint8  # noqa: E402
from model.protocol import Reporter  # noqa: E402
from model.training import TrainOptions, prepare_tensorflow, train_arrays  # noqa: E402

# Patch sizes are in tile pixels (227 px crops, shrunk to the network's input): below 8 px a
# patch shrinks to a few input pixels, near what the chunk-scale network can resolve.
MIN_PATCH_PX = 8
PATCH_CONTRAST = (0.08, 0.45)
TILE_PX = 227  # side of the hirise-terrain crops
PATCH_SIZE_BINS = (MIN_PATCH_PX, 12, 20, 40, 80)  # tile px; TILE_PX // 3 = 75 is the largest
PATCH_CONTRAST_BINS = (0.0, 0.15, 0.25, 0.35, 1.0)
HARD_LANDFORMS = {4: "bright dune", 6: "swiss cheese", 7: "spider"}
NEGATIVE_KINDS = ("plain", "hot pixels", "sunlit rocks", "bare shadowing features", "low contrast", "co2 frost")
NEGATIVE_SHARES = (0.35, 0.1, 0.2, 0.2, 0.075, 0.075)
ATTRIBUTION = (
    "Terrain: 'Mars orbital image (HiRISE) labeled data set version 3', K. L. Wagstaff, S. Lu, G. Doran, "
    "L. Mandrake, NASA JPL, DOI 10.5281/zenodo.2538136 (HiRISE images: NASA/JPL/University of Arizona)."
)


def load_tiles(folder):
    classes = {}
    with open(os.path.join(folder, "classmap.csv")) as handle:
        for row in csv.reader(handle):
            classes[int(row[0])] = row[1]
    tiles = []
    with open(os.path.join(folder, "labels.txt")) as handle:
        for line in handle:
            name, landform = line.split()
            image = gdal.Open(os.path.join(folder, "tiles", name)).ReadAsArray().astype(np.float32) / 255.0
            if image.ndim == 3:
                image = image.mean(axis=0)
            observation = "_".join(name.split("_")[:3])
            tiles.append({"name": name, "observation": observation, "landform": int(landform), "image": image})
    return tiles, classes


def split_observations(tiles, seed, test_fraction=0.15):
    observations = sorted({t["observation"] for t in tiles})
    rng = np.random.default_rng(seed)
    rng.shuffle(observations)
    n_test = max(1, int(round(test_fraction * len(observations))))
    test = set(observations[:n_test])
    return [t for t in tiles if t["observation"] not in test], [t for t in tiles if t["observation"] in test]


def make_example(tile, icy, rng, input_size):
    """One training example (uint8, input_size^2) from a real tile: an ice patch or a look-alike.

    Returns (image, kind, patch): patch is the most visible planted patch of an icy example
    ({"size_px", "contrast"} in tile pixels and reflectance), None for the others.
    """
    image = tile["image"]
    valid = image > 0
    kind = "ice"
    patch = None
    if icy:
        # Ice patches also appear on low-contrast and rock-strewn scenes; keep those cues apart from the label.
        if rng.random() < 0.2:
            image = implant_hot_pixels(image, rng, valid=valid)[0]
        if rng.random() < 0.2:
            image = implant_sunlit_bright_rocks(image, rng, valid=valid)[0]
        image, _, infos = implant_ice_patches(
            image, rng, valid=valid, min_size_px=MIN_PATCH_PX, contrast_range=PATCH_CONTRAST, return_info=True
        )
        largest = max(infos, key=lambda info: info["size_px"])
        patch = {"size_px": largest["size_px"], "contrast": max(info["contrast"] for info in infos)}
    else:
        kind = NEGATIVE_KINDS[int(rng.choice(len(NEGATIVE_KINDS), p=NEGATIVE_SHARES))]
        if kind == "hot pixels":
            image = implant_hot_pixels(image, rng, valid=valid)[0]
        elif kind == "sunlit rocks":
            image = implant_sunlit_bright_rocks(image, rng, valid=valid)[0]
        elif kind == "bare shadowing features":
            # The boulders and rims that implant_ice_patches draws where it finds no shadow, without
            # ice, so that a shadowing feature alone is no evidence of ice.
            image = implant_shadowing_features(image, rng, valid=valid)[0]
        elif kind == "low contrast":
            image = apply_low_contrast(image, rng)
        elif kind == "co2 frost":
            image = apply_co2_frost(image, rng)
    return to_input(image, valid, input_size), kind, patch


def to_input(image, valid, input_size):
    """A crop as the network sees a chunk: shrunk to its input size and stretched like every chunk (uint8)."""
    small_valid = resize(valid.astype(np.float32), input_size) > 0.5
    return to_uint8(normalise(resize(image, input_size), small_valid, DEFAULT_NORMALISATION))


class Examples(NamedTuple):
    images: np.ndarray  # uint8 (n, input_size, input_size)
    labels: np.ndarray
    groups: List[str]  # observation IDs
    kinds: np.ndarray  # "ice" or the negative's kind
    landforms: np.ndarray
    patch_size_px: np.ndarray  # of the largest planted patch, in tile pixels; NaN without ice
    patch_contrast: np.ndarray  # of the brightest planted patch; NaN without ice


def build_set(tiles, variants, seed, input_size, hard_variants=None):
    """variants examples per tile (hard_variants for the hard landforms), alternately with and
    without ice: half the examples hold ice, and the network sees the same terrain both ways, so
    the terrain itself is no cue."""
    rng = np.random.default_rng(seed)
    rows = []
    for tile in tiles:
        count = hard_variants if hard_variants and tile["landform"] in HARD_LANDFORMS else variants
        for variant in range(count):
            icy = bool(variant % 2) if count > 1 else bool(rng.random() < 0.5)
            image, kind, patch = make_example(tile, icy, rng, input_size)
            rows.append((image, int(icy), tile["observation"], kind, tile["landform"], patch or {"size_px": np.nan, "contrast": np.nan}))
    images, labels, groups, kinds, landforms, patches = zip(*rows)
    return Examples(
        np.stack(images), np.array(labels, np.int32), list(groups), np.array(kinds), np.array(landforms),
        np.array([p["size_px"] for p in patches]), np.array([p["contrast"] for p in patches]),
    )


def predict_logits(network, images):
    return np.asarray(logit_model(network).predict((images.astype(np.float32) / 255.0)[..., None], batch_size=32, verbose=0)).reshape(-1)


def predict(network, meta, images):
    return calibration.apply(predict_logits(network, images), meta["calibration"])


def rates_at_half(p, masks):
    """{name: {"rate", "count"}}: the share of each mask's examples scored p >= 0.5 (None for an empty mask)."""
    return {name: {"rate": float((p[mask] >= 0.5).mean()) if mask.any() else None, "count": int(mask.sum())} for name, mask in masks.items()}


def real_terrain_fpr(network, meta, tiles, input_size):
    """False-positive rate at p >= 0.5 on the real tiles as they are (no plants), by landform."""
    images = np.stack([to_input(tile["image"], tile["image"] > 0, input_size) for tile in tiles])
    landforms = np.array([tile["landform"] for tile in tiles])
    p = predict(network, meta, images)
    groups = {"all real ice-free terrain": np.ones(len(tiles), bool), "other terrain (not the hard landforms)": ~np.isin(landforms, list(HARD_LANDFORMS)),
              "hard landforms (spiders, swiss cheese, bright dunes)": np.isin(landforms, list(HARD_LANDFORMS))}
    groups.update({name: landforms == landform for landform, name in HARD_LANDFORMS.items()})
    return rates_at_half(p, groups)


def evaluate(network, meta, examples):
    logits = predict_logits(network, examples.images)
    p = calibration.apply(logits, meta["calibration"])
    labels, kinds, landforms = examples.labels, examples.kinds, examples.landforms
    negatives = labels == 0
    result = {
        "test_examples": int(len(labels)),
        "test_icy": int(labels.sum()),
        "roc_auc": metrics.roc_auc(p, labels),
        "roc_auc_interval": metrics.bootstrap_roc_auc(p, labels, examples.groups, seed=0),
        "at_0.5": metrics.summary(p, labels, 0.5),
        "at_0.6": metrics.summary(p, labels, 0.6),
        "ece": calibration.expected_calibration_error(p, labels),
        "ece_uncalibrated": calibration.expected_calibration_error(calibration.sigmoid(logits), labels),
        "reliability": calibration.reliability(p, labels),
    }
    hard = negatives & np.isin(landforms, list(HARD_LANDFORMS))
    plain = negatives & ~np.isin(landforms, list(HARD_LANDFORMS)) & (kinds == "plain")
    fpr = {
        "real ice-free terrain (no plants)": plain,
        "hard landforms (spiders, swiss cheese, bright dunes)": hard,
    }
    for landform, name in HARD_LANDFORMS.items():
        fpr[name] = negatives & (landforms == landform)
    for kind in NEGATIVE_KINDS[1:]:
        fpr[f"planted: {kind}"] = negatives & (kinds == kind)
    result["false_positive_rate_at_0.5"] = rates_at_half(p, fpr)
    result["by_patch"] = detection_by_patch(p, examples)
    return result


def measure(network, meta, test_set, test_tiles, train_tiles, input_size):
    """Everything the card reports: the held-out examples, and the real crops as they are of the
    held-out and of the validation observations."""
    test = evaluate(network, meta, test_set)
    test["real_terrain_fpr_at_0.5"] = real_terrain_fpr(network, meta, test_tiles, input_size)
    validation_observations = set(meta["training"]["split"]["validation_groups"])
    test["validation_real_terrain_fpr_at_0.5"] = real_terrain_fpr(network, meta, [t for t in train_tiles if t["observation"] in validation_observations], input_size)
    return test


def detection_by_patch(p, examples):
    """Recall at p >= 0.5 and ROC AUC (against every ice-free example) of the icy examples by
    the size and contrast of their planted patch: where the model's resolution ends."""
    negatives = examples.labels == 0
    rows = {}
    for name, values, edges in (("size", examples.patch_size_px, PATCH_SIZE_BINS), ("contrast", examples.patch_contrast, PATCH_CONTRAST_BINS)):
        for low, high in zip(edges[:-1], edges[1:]):
            icy = (examples.labels == 1) & (values >= low) & (values < high)
            if not icy.any():
                continue
            both = icy | negatives
            rows[f"{name} {low:g}-{high:g}"] = {
                "count": int(icy.sum()),
                "recall": float((p[icy] >= 0.5).mean()),
                "roc_auc": metrics.roc_auc(p[both], examples.labels[both]),
            }
    return rows


def model_card(meta, test):
    t = meta["training"]
    base = meta.get("base_model")
    commands = "\n".join(f"    {c}" for c in t.get("commands", []))
    continued = f", continuing {base['name']} {base['version']} with `--base`" if base else ""
    m = meta["metrics"]
    def fpr_rows(table):
        return "\n".join(f"| {name} | {v['count']} | {v['rate']:.3f} |" if v["rate"] is not None else f"| {name} | 0 | n/a |" for name, v in table.items())

    rel_rows = "\n".join(
        f"| {r['low']:.1f}-{r['high']:.1f} | {r['count']} | {r['mean_predicted']:.3f} | {r['observed']:.3f} |" for r in test["reliability"] if r["count"]
    )
    patch_rows = "\n".join(f"| {name} | {v['count']} | {v['recall']:.3f} | {v['roc_auc']:.3f} |" for name, v in test["by_patch"].items())
    a5 = test["at_0.5"]
    auc_ci = test["roc_auc_interval"]
    input_per_tile_px = meta["input_size"] / TILE_PX
    low_bin = f"size {PATCH_SIZE_BINS[0]:g}-{PATCH_SIZE_BINS[1]:g}"
    smallest = (
        f"the smallest planted patches, {PATCH_SIZE_BINS[0]}-{PATCH_SIZE_BINS[1]} px of a {TILE_PX}-px crop or "
        f"{PATCH_SIZE_BINS[0] * input_per_tile_px:.0f}-{PATCH_SIZE_BINS[1] * input_per_tile_px:.0f} input pixels, are found at recall {test['by_patch'][low_bin]['recall']:.2f}"
        if low_bin in test["by_patch"] else "no test example holds a patch that small"
    )
    examples = t.get("examples", {})
    made = (
        f"- In the last run each training tile was made into {examples['variants']} examples ({examples['hard_variants']} for the hard-landform tiles), half of them with ice"
        f" (seed {examples['data_seed']}), and every held-out tile into {examples['test_variants']}.\n" if examples else ""
    )
    only_validation = [name for name in HARD_LANDFORMS.values()
                       if test["validation_real_terrain_fpr_at_0.5"][name]["count"] and not test["real_terrain_fpr_at_0.5"][name]["count"]]
    shift = (
        f" The fit follows the validation observations, which hold {', '.join(only_validation) or 'terrain'} that the held-out ones lack;"
        " there it tempers the logits, so on the held-out set the scaled probabilities run below the observed icy share in"
        " the middle bins (the reliability table at the end). On such terrain that caution is wanted."
        if test["ece"] > test["ece_uncalibrated"] else ""
    )
    last_run = f"the last run {t['run_minutes']:.0f} min" if "run_minutes" in t else "in stages"
    notes = "".join(f"\n{note}" for note in t.get("notes", []))
    return f"""# Model card: {meta['name']} {meta['version']}

The default model of HiRISE Ice Patches: the paper's small Xception (Gergács & Kereszturi), written by
`scripts/train_default_model` (seed {t['seed']}, {last_run} on {t.get('device', 'CPU')}).

## What it was trained on - read this first
- **No real ice labels.** The terrain is real HiRISE imagery, but every ice patch it has seen is synthetic,
  planted by `model/py` following the physical criteria (brighter than the surroundings, on the
  poleward side of a shadowing feature, no shadow of its own, slightly diffuse edges, {MIN_PATCH_PX} px (of a 227-px crop) to a third of the
  chunk, contrast {PATCH_CONTRAST[0]}-{PATCH_CONTRAST[1]} above the local background). It is a starting point for the geologist's loop, not a validated detector:
  run `hiriseice:detect`, correct the `label` field (labelling toolbar), and retrain with `hiriseice:train`
  (BASE_MODEL = this file) on real labels.
- Terrain: {len(t['split']['train_groups'])} + {len(t['split']['validation_groups'])} observations for training and validation, and
  {len(t['test_observations'])} held-out observations for the test numbers below; 868 browse-resolution crops (227 px)
  of 137 observations in all. Terrain classes include spiders and swiss cheese (CO2-ice landforms) and bright
  dunes (shadow-casting bright features) as hard negatives; further negatives carry planted hot pixels,
  sunlit bright rocks (sharp edges, own shadow), bare boulders and rims with their shadows but no ice,
  low contrast and CO2 frost cover.
- {ATTRIBUTION} Derived weights only; no image is redistributed.
- Scale: the crops are browse-resolution images, coarser than full-resolution RDR chunks. Input is
  {meta['input_size']} px for a {meta['chunk_size']}-px chunk ({meta['chunk_size'] // meta['input_size']}x decimation, about {0.25 * meta['chunk_size'] / meta['input_size']:g} m per pixel on a 0.25 m product),
  chosen so the model trains on a 2-core CPU. Small, faint patches are where it fails: see *Where it misses*
  below ({smallest}). Train a 256-px model (`--input-size 256`) on a GPU for small patches.

## Training
- Adam (learning rate {t['learning_rate']}), binary cross-entropy, batch {t['batch_size']}, class weights {json.dumps({k: round(v, 3) for k, v in t['class_weight'].items()})},
  augmentation "{t['augment']}" (east-west mirrors and brightness/contrast only: north-south flips and rotations
  would move the shadowing feature off the equatorward side).
- {t['total_epochs']} epochs in all ({t['epochs_run']} in the last run{continued}), the weights of epoch {t['best_epoch']} kept
  (lowest validation loss of that run, {m['best_val_loss']:.4f}).
{made}- Split by observation ID: train, validation (early stopping and calibration), test (numbers below).

## Calibration
Platt scaling of the logit, p = sigmoid(a * logit + b), fitted by maximum likelihood on the validation
observations: a = {meta['calibration']['a']:.4f}, b = {meta['calibration']['b']:.4f}. Expected calibration error on the
validation set {m['ece_uncalibrated']:.3f} before and {m['ece_calibrated']:.3f} after; on the held-out test set {test['ece_uncalibrated']:.3f}
before and {test['ece']:.3f} after.{shift}

## Held-out test observations ({test['test_examples']} examples, {test['test_icy']} with ice)
| metric | value | target |
| --- | --- | --- |
| chunk ROC AUC | {test['roc_auc']:.4f} | >= 0.97 |
| 95 % interval, resampling whole observations | {auc_ci['low']:.3f}-{auc_ci['high']:.3f} | |
| accuracy at p >= 0.5 | {a5['accuracy']:.4f} | |
| precision / recall at p >= 0.5 | {a5['precision']:.3f} / {a5['recall']:.3f} | |
| precision / recall at p >= 0.6 (icy) | {test['at_0.6']['precision']:.3f} / {test['at_0.6']['recall']:.3f} | |
| expected calibration error | {test['ece']:.4f} | |

False-positive rate at p >= 0.5 (targets: <= 5 % on real ice-free terrain, <= 10 % on the hard landforms).
Every held-out crop as it is, without plants (the real terrain is ice-free):

| held-out real terrain | count | false-positive rate |
| --- | --- | --- |
{fpr_rows(test["real_terrain_fpr_at_0.5"])}

The held-out observations hold few of the rare hard landforms, so they are also measured on the validation
observations' crops (never trained on, but used to pick the epoch and fit the calibration):

| validation real terrain | count | false-positive rate |
| --- | --- | --- |
{fpr_rows(test["validation_real_terrain_fpr_at_0.5"])}

The ice-free examples of the test set, by what was planted on them:

| negatives | count | false-positive rate |
| --- | --- | --- |
{fpr_rows(test["false_positive_rate_at_0.5"])}

Where it misses: the icy test examples by the size (tile pixels of the {TILE_PX}-px crop; x {input_per_tile_px:.2f} gives
input pixels) and the contrast of their largest and brightest planted patch. Recall at p >= 0.5, and
ROC AUC of that group against every ice-free test example:

| planted patch | icy examples | recall | ROC AUC |
| --- | --- | --- | --- |
{patch_rows}

Reliability on the test set (calibrated):

| bin | count | mean predicted | observed icy share |
| --- | --- | --- | --- |
{rel_rows}

## Reproduce
Needs ../shared/data/hirise-terrain; run in order:
{commands}
The same commands give the same metrics within noise (op determinism is on; thread scheduling may still
move the last digit).{notes}
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--terrain", default=os.path.join(REPO, "..", "shared", "data", "hirise-terrain"))
    parser.add_argument("--out", default=modelfile.default_model_path())
    parser.add_argument("--card", default=os.path.join(REPO, "resources", "models", "MODEL_CARD.md"))
    parser.add_argument("--report", default=None, help="training report HTML (default: build/default-model-report.html)")
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--variants", type=int, default=2, help="examples made from each tile")
    parser.add_argument("--test-variants", type=int, default=6, help="held-out examples made from each test tile (half with ice)")
    parser.add_argument("--hard-variants", type=int, default=0, help="training examples made from each hard-landform tile "
                        "(spiders, swiss cheese, bright dunes; default: --variants): the rare look-alikes seen more often")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--patience", type=int, default=6)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--base", default="", help="continue training this model file (keep --seed: it fixes the split and the test set)")
    parser.add_argument("--data-seed", type=int, default=None, help="seed of the training examples' synthetic ice (default: --seed); "
                        "a new one gives fresh examples on the same tiles when continuing with --base")
    parser.add_argument("--limit", type=int, default=0, help="use only this many tiles (quick trial runs)")
    parser.add_argument("--widths", default="128,256,512,728,1024")
    parser.add_argument("--note", action="append", default=[], help="a sentence for the card's Reproduce section, kept by later runs that continue this model")
    parser.add_argument("--evaluate", metavar="MODEL", default="", help="only measure this model file on the held-out examples (JSON on stdout)")
    parser.add_argument("--rewrite-card", action="store_true", help="with --evaluate: write --card anew from the model and this measurement "
                        "(after a change of the card's text; the measurement must match the one stored in the model)")
    args = parser.parse_args(argv)
    if not os.path.isdir(os.path.join(args.terrain, "tiles")):
        sys.exit(f"error: {args.terrain} has no tiles/: the default model needs ../shared/data/hirise-terrain")

    reporter = Reporter()
    started = time.monotonic()
    tiles, _ = load_tiles(args.terrain)
    if args.limit:
        tiles = tiles[:: max(1, len(tiles) // args.limit)][: args.limit]
    train_tiles, test_tiles = split_observations(tiles, args.seed)
    reporter.log(f"{len(tiles)} tiles; {len(train_tiles)} for training/validation, {len(test_tiles)} held out")
    test_set = build_set(test_tiles, args.test_variants, args.seed + 1, args.input_size)
    if args.evaluate:
        prepare_tensorflow(modelfile.read_metadata(args.evaluate)["architecture"]["widths"])
        network, meta = modelfile.load(args.evaluate)
        test = measure(network, meta, test_set, test_tiles, train_tiles, args.input_size)
        if args.rewrite_card:
            recorded = meta["metrics"].get("test", {}).get("roc_auc")
            if recorded is None or abs(recorded - test["roc_auc"]) > 1e-6:
                sys.exit(f"error: {args.evaluate} scored ROC AUC {recorded} on its own held-out set and {test['roc_auc']} on this one; "
                         "give the options it was trained with (--seed, --test-variants, --input-size) or retrain")
            with open(args.card, "w", encoding="utf-8") as handle:
                handle.write(model_card(meta, test))
        print(json.dumps({k: v for k, v in test.items() if k != "reliability"}, indent=1))
        return
    data_seed = args.seed if args.data_seed is None else args.data_seed
    train_set = build_set(train_tiles, args.variants, data_seed, args.input_size, args.hard_variants)
    reporter.log(f"made {len(train_set.labels)} training/validation examples and {len(test_set.labels)} test examples in {time.monotonic() - started:.0f} s")

    # a base model brings its own widths (and oneDNN must know them before TensorFlow loads)
    widths = tuple(modelfile.read_metadata(args.base)["architecture"]["widths"]) if args.base else tuple(int(w) for w in args.widths.split(","))
    prepare_tensorflow(widths)
    import tensorflow as tf

    base = modelfile.load(args.base) if args.base else None
    previous_commands = base[1]["training"].get("commands", []) if base else []

    options = TrainOptions(
        epochs=args.epochs, patience=args.patience, seed=args.seed, input_size=args.input_size, chunk_size=1024,
        widths=widths, name="hiriseice-default", augment="lighting", learning_rate=args.learning_rate,
        # continuing keeps the base model's validation observations, never validating on what it trained on
        validation_groups=base[1]["training"]["split"]["validation_groups"] if base else None,
        extra_metadata={
            "data": "real HiRISE terrain (hirise-terrain, 868 crops, 137 observations) with synthetic ice patches; no real ice labels",
            "attribution": ATTRIBUTION,
            "test_observations": sorted({t["observation"] for t in test_tiles}),
            "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
            "recipe": "scripts/train_default_model",
            "commands": previous_commands + [shlex.join(["scripts/train_default_model"] + (sys.argv[1:] if argv is None else argv))],
            "notes": (base[1]["training"].get("notes", []) if base else []) + args.note,
            "examples": {"variants": args.variants, "hard_variants": args.hard_variants or args.variants, "test_variants": args.test_variants,
                         "data_seed": data_seed},
        },
    )
    outcome = train_arrays(train_set.images, train_set.labels, train_set.groups, options, reporter, base)
    network, meta = outcome["network"], outcome["metadata"]
    test = measure(network, meta, test_set, test_tiles, train_tiles, args.input_size)
    meta["metrics"]["test"] = {k: v for k, v in test.items() if k != "reliability"}
    seconds = time.monotonic() - started
    meta["training"]["run_minutes"] = round(seconds / 60.0, 1)
    modelfile.save(network, meta, args.out)
    with open(args.card, "w", encoding="utf-8") as handle:
        handle.write(model_card(meta, test))
    from model.report import training_report

    report = args.report or os.path.join(REPO, "build", "default-model-report.html")
    training_report(outcome["history"], outcome["metrics"], meta, report)
    reporter.log(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.1f} MB), {args.card} and {report} in {seconds / 60:.1f} min")
    print(json.dumps({"roc_auc": test["roc_auc"], "fpr_at_0.5": {k: v["rate"] for k, v in test["false_positive_rate_at_0.5"].items()}, "ece": test["ece"]}, indent=1))


if __name__ == "__main__":
    main()

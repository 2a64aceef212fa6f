"""How a model meets ice drawn a way no model here trained on: families written apart from
model/trainingdata (benchmarks/unseen/, one module each) from the paper's description only, and
never used for training.

Crops of the model's held-out observations (its card's ``test_observations``) are scored as they
are (ice-free) and with the family drawn on (icy), read as detect reads a chunk, with detect's
east-west mirror (TTA) and without.

    nice -n 19 .venv/bin/python benchmarks/unseen_family.py [--family NAME] [--model MODEL ...] [--mean] [--networks] [--json build/unseen_family.json]

Several --model compare models on the same examples (e.g. an earlier default from git history:
git show REV:resources/models/default.hiriseice > build/earlier.hiriseice). --networks also scores each
network of a multi-scale model alone, by its own pooled logit (``logit_<scale>``, uncalibrated): is
what the pair ranks the finer reading's doing, or the averaging's?
"""

import argparse
import json
import math
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "scripts"))

import default_model as recipe  # noqa: E402
from model import calibration, metrics, modelfile  # noqa: E402
from model.network import architecture_widths  # noqa: E402
from model.preprocess import DEFAULT_NORMALISATION  # noqa: E402
from model.trainingdata.examples import to_input  # noqa: E402
from unseen import cap_remnants  # noqa: E402
from unseen import frost_lobes  # noqa: E402
from unseen import lee_frost  # noqa: E402

FAMILIES = {"frost lobes": frost_lobes, "lee frost": lee_frost, "cap remnants": cap_remnants}

SIZE_BINS = ((0, 10), (10, 40), (40, 80), (80, 400))
# The largest patch's brightness above its surroundings (of the 0-1 stretch); the families draw 0.05-0.8.
# Below 0.1 a patch is hard to see by eye at browse scale; from 0.2 it is plain. The recipe's bins, so both tables compare.
CONTRAST_BINS = recipe.CONTRAST_BINS
# The draw of the examples and their bootstrap: the model card's rows and adaptation.py's use it.
SEED = 101
# The stretch detect gives a chunk (model.preprocess): the ice's rise is measured on the crop's own.
STRETCH_PERCENTILES = (DEFAULT_NORMALISATION["low_percentile"], DEFAULT_NORMALISATION["high_percentile"])


def ice_rise(plain: np.ndarray, icy: np.ndarray) -> float:
    """How much the drawn ice brightens its brightest pixels (the 99.9th percentile of the change), as a
    share of the crop's own stretch: what the network can see of it, however the family meant it to look.
    A family's nominal contrast can promise more than a soft, partial blend delivers."""
    low, high = np.percentile(plain[plain > 0], STRETCH_PERCENTILES)
    return float(np.clip(np.percentile(icy - plain, 99.9) / max(high - low, 1e-6), 0.0, 0.999))


def build_examples(tiles, seed: int, draw=frost_lobes.draw):
    """Every usable held-out crop as it is (label 0) and, where the family finds room, with its ice (label 1),
    at crop scale: (pictures, labels, observations, landforms, largest patch px, its contrast, the index of
    the crop as it is that each example was drawn on, the ice's rise in the crop's stretch)."""
    rng = np.random.default_rng(seed)
    pictures, labels, groups, landforms, sizes, contrasts, own_crop, rises = [], [], [], [], [], [], [], []
    for tile in tiles:
        image = tile["image"]
        if not (image > 0).all():
            continue  # image-edge crops: their no-data would be drawn on
        rows = [(image, 0, math.nan, math.nan, math.nan)]
        drawn = draw(image, rng)
        if drawn is not None:
            frosted, patches = drawn
            rows.append((frosted, 1, max(s for s, _ in patches), max(c for _, c in patches), ice_rise(image, frosted)))
        plain = len(pictures)
        for picture, label, size, contrast, rise in rows:
            own_crop.append(plain)
            pictures.append(picture)
            labels.append(label)
            groups.append(tile["observation"])
            landforms.append(tile["landform"])
            sizes.append(size)
            contrasts.append(contrast)
            rises.append(rise)
    return (pictures, np.array(labels), np.array(groups), np.array(landforms), np.array(sizes), np.array(contrasts), np.array(own_crop),
            np.array(rises))


def logits(network, meta, examples, mirror: bool = False, layer: str = "logit") -> np.ndarray:
    """The network's logits (at ``layer``) of the examples' pictures, read as detect reads a chunk; with
    mirror, the mean with their east-west mirrors (detect's TTA)."""
    images = np.stack([to_input(picture, picture > 0, meta["input_size"]) for picture in examples[0]])
    plain = recipe.predict_logits(network, images, layer)
    return (plain + recipe.predict_logits(network, np.ascontiguousarray(images[:, :, ::-1]), layer)) / 2 if mirror else plain


def score(path: str, examples, seed: int) -> dict:
    network, meta = modelfile.load(path)
    row = _measured(modelfile.describe(meta), lambda mirror: calibration.apply(logits(network, meta, examples, mirror), meta.get("calibration")), examples, seed)
    return dict(row, weights_sha256=meta.get("weights_sha256"))  # what the report matches its model by (modelfile.rows_measuring)


def score_networks(path: str, examples, seed: int) -> list:
    """A multi-scale model's networks, each alone by its own pooled logit (none for a single network)."""
    network, meta = modelfile.load(path)
    return [dict(_measured(f"{modelfile.describe(meta)}, its {meta['input_size'] // scale}-px network alone (uncalibrated)",
                           lambda mirror, scale=scale: calibration.sigmoid(logits(network, meta, examples, mirror, f"logit_{scale}")), examples, seed), path=path)
            for scale in meta["architecture"].get("scales") or []]


def score_mean(paths, examples, seed: int) -> dict:
    """The mean of the models' probabilities (an ensemble of them), measured as one model."""
    loaded = [modelfile.load(path) for path in paths]
    return _measured(f"mean of {len(paths)} models", lambda mirror: np.mean(
        [calibration.apply(logits(network, meta, examples, mirror), meta.get("calibration")) for network, meta in loaded], axis=0), examples, seed)


def _measured(name: str, probabilities, examples, seed: int) -> dict:
    """probabilities(mirror): the examples' probabilities, with detect's mirror or without."""
    _pictures, labels, groups, landforms, sizes, contrasts, own_crop, rises = examples
    row = {"model": name}
    ice_free_real = (labels == 0) & ~np.isin(landforms, recipe.HARD_LANDFORMS)
    for scoring, mirror in (("as it is", False), ("with the mirror (detect's default)", True)):
        p = probabilities(mirror)
        interval = metrics.bootstrap_roc_auc(p, labels, groups, seed=seed)
        icy = labels == 1
        by_size = {}
        for lo, hi in SIZE_BINS:
            inside = icy & (sizes >= lo) & (sizes < hi)
            by_size[f"{lo}-{hi} px"] = {"count": int(inside.sum()), "recall": float((p[inside] >= 0.5).mean()) if inside.any() else math.nan,
                                        "median_probability": float(np.median(p[inside])) if inside.any() else math.nan}
        # Each bin's icy crops against every ice-free one: is faint ice what the model misses? By the contrast
        # the family meant, and by how much its ice shows in the crop's stretch.
        by_contrast, by_rise = (_by_bins(p, labels, icy, values) for values in (contrasts, rises))
        row[scoring] = {"roc_auc": metrics.roc_auc(p, labels), "interval": interval, "recall": float((p[icy] >= 0.5).mean()),
                     "fpr_real_terrain": float((p[ice_free_real] >= 0.5).mean()),
                     "fpr_hard_landforms": {landform: float((p[(labels == 0) & (landforms == landform)] >= 0.5).mean())
                                            for landform in recipe.HARD_LANDFORMS if ((labels == 0) & (landforms == landform)).any()},
                     "ece": calibration.expected_calibration_error(p, labels), "by_size": by_size,
                     "by_contrast": by_contrast, "by_rise": by_rise, "own_crop": _against_own_crop(p, icy, own_crop)}
    return row


def _by_bins(p, labels, icy, values) -> dict:
    """ROC AUC and recall of the icy crops in each of CONTRAST_BINS of ``values``, against every crop as it is."""
    bins = recipe.auc_by_contrast(p, labels, icy, values)
    for (lo, hi), band in zip(CONTRAST_BINS, bins.values()):
        inside = icy & (values >= lo) & (values < hi)
        band["recall"] = float((p[inside] >= 0.5).mean()) if inside.any() else math.nan
    return bins


def _against_own_crop(p, icy, own_crop) -> dict:
    """Each icy crop against the same crop as it is: how often the ice raised its score, and by how much
    (median, in log-odds) beside the spread of the crops as they are. A model may respond to the ice on
    every crop and still rank it poorly against other crops, when that response is small beside how
    differently it scores plain terrain."""
    odds = np.log(np.clip(p, 1e-6, 1 - 1e-6) / np.clip(1 - p, 1e-6, 1))
    lift = odds[icy] - odds[own_crop[icy]]
    return {"raised": float((lift > 0).mean()), "median_lift": float(np.median(lift)), "spread_as_they_are": float(odds[~icy].std())}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=None, help="model file (repeatable; default: the bundled one)")
    parser.add_argument("--family", choices=sorted(FAMILIES), default="frost lobes", help="the family drawn (default: %(default)s)")
    parser.add_argument("--mean", action="store_true", help="also score the mean of the models' probabilities (an ensemble)")
    parser.add_argument("--networks", action="store_true", help="also score each network of a multi-scale model alone")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--json", default=os.path.join(REPO, "build", "unseen_family.json"))
    args = parser.parse_args()
    from model.training import prepare_tensorflow

    paths = args.model or [os.path.join(REPO, "resources", "models", "default.hiriseice")]
    first = modelfile.read_metadata(paths[0])
    prepare_tensorflow(architecture_widths(first["architecture"]))
    held_out = set(first["training"]["test_observations"])
    for path in paths[1:]:
        other = set(modelfile.read_metadata(path).get("training", {}).get("test_observations") or [])
        if other != held_out:
            print(f"note: {path} holds out other observations; some of these crops may be in its training set")
    tiles = [t for t in recipe.load_tiles([os.path.join(recipe.SHARED, name) for name in recipe.TERRAIN_FOLDERS]) if t["observation"] in held_out]
    examples = build_examples(tiles, args.seed, FAMILIES[args.family].draw)
    labels = examples[1]
    print(f"{len(held_out)} held-out observations: {int((labels == 0).sum())} crops as they are, {int(labels.sum())} with {args.family} drawn")
    rows = [dict(score(path, examples, args.seed), path=path) for path in paths]
    if args.mean:
        rows.append(dict(score_mean(paths, examples, args.seed), path=" ".join(paths)))
    if args.networks:
        rows += [row for path in paths for row in score_networks(path, examples, args.seed)]
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as handle:
        json.dump({"family": args.family, "seed": args.seed, "observations": sorted(held_out), "ice_free": int((labels == 0).sum()), "icy": int(labels.sum()), "rows": rows},
                  handle, indent=1, default=float)
    print("| model | scored | ROC AUC (95 % interval) | recall at 0.5 | real ice-free terrain called icy | hard landforms called icy | ECE | recall / median p: " +
          " / ".join(f"{lo}-{hi} px" for lo, hi in SIZE_BINS) + " | ROC AUC / recall by contrast: " + " / ".join(f"{lo}-{hi}" for lo, hi in CONTRAST_BINS) +
          " | ROC AUC / recall by the ice's rise in the crop's stretch (same bins)" +
          " | icy crops above their own crop as it is / median lift / spread of the crops as they are (log-odds) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        for name in ("as it is", "with the mirror (detect's default)"):
            r = row[name]
            sizes = " / ".join(f"{b['recall']:.2f} {b['median_probability']:.2f} ({b['count']})" for b in r["by_size"].values())
            contrasts, rises = (" / ".join(f"{b['roc_auc']:.3f} {b['recall']:.2f} ({b['count']})" for b in r[bins].values()) for bins in ("by_contrast", "by_rise"))
            hard = ", ".join(f"{k} {100 * v:.0f} %" for k, v in r["fpr_hard_landforms"].items())
            print(f"| {row['model']} | {name} | {r['roc_auc']:.3f} ({r['interval']['low']:.3f}-{r['interval']['high']:.3f}) | {r['recall']:.2f} | "
                  f"{100 * r['fpr_real_terrain']:.1f} % | {hard} | {r['ece']:.3f} | {sizes} | {contrasts} | {rises} | "
                  f"{100 * r['own_crop']['raised']:.0f} % / {r['own_crop']['median_lift']:.2f} / {r['own_crop']['spread_as_they_are']:.2f} |")


if __name__ == "__main__":
    main()

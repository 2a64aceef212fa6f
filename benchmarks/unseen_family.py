"""How a model meets ice drawn a way no model here trained on: a fifth family, written apart from
model/trainingdata and never used for training.

The family follows the paper's description only: bright, soft-edged frost on the shaded slopes
of the real terrain, below (poleward of) a sunlit rim. It shares no code with the training
families: the shade is found from the brightness falling off down-slope under a northern sun
(not from local darkness), a patch is a cluster of 1-5 overlapping lobes (not one shape), its
inner texture is smoothed noise, and it is blended toward a target brightness above its own
surroundings. Crops of the model's held-out observations (its card's ``test_observations``) are
scored as they are (ice-free) and with the family drawn on (icy), read as detect reads a chunk,
with detect's east-west mirror (TTA) and without.

    nice -n 19 .venv/bin/python benchmarks/unseen_family.py [--model MODEL ...] [--json build/unseen_family.json]

Several --model compare models on the same examples (e.g. an earlier default from git history:
git show REV:resources/models/default.hiriseice > build/earlier.hiriseice).
"""

import argparse
import json
import math
import os
import sys

import numpy as np
from scipy import ndimage

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "scripts"))

import default_model as recipe  # noqa: E402
from model import calibration, metrics, modelfile  # noqa: E402
from model.trainingdata.examples import to_input  # noqa: E402

SIZE_BINS = ((0, 10), (10, 40), (40, 80), (80, 400))


def slope_shade(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pixels on slopes turned away from a northern sun: dark, and darker than the ground a few
    pixels north of them (the sunlit rim above)."""
    smooth = ndimage.gaussian_filter(image, rng.uniform(1.0, 3.0))
    spread = float(smooth.std()) or 1e-3
    reach = int(rng.integers(3, 9))
    rim_above = np.full_like(smooth, -np.inf)
    rim_above[reach:] = smooth[:-reach]
    falls_off = (rim_above - smooth) > rng.uniform(0.4, 0.9) * spread
    dark = smooth < np.percentile(smooth, rng.uniform(30.0, 50.0))
    return ndimage.binary_opening(falls_off & dark, iterations=1)


def lobes(rng: np.random.Generator, size: float) -> np.ndarray:
    """A soft cluster of 1-5 overlapping elliptical lobes on a square canvas, peak 1."""
    half = int(math.ceil(size)) + 2
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float32)
    alpha = np.zeros_like(yy)
    edge = rng.uniform(0.05, 0.9)  # share of the radius over which the edge fades: sharp to very diffuse
    for _ in range(int(rng.integers(1, 6))):
        radius = size / 2 * rng.uniform(0.35, 1.0)
        aspect = rng.uniform(1.0, 3.5)
        angle = rng.normal(0.0, 0.5)  # mostly east-west, as slope shade runs under a northern sun
        cy, cx = rng.normal(0.0, size / 5, 2)
        u = ((xx - cx) * math.cos(angle) + (yy - cy) * math.sin(angle)) / radius
        v = (-(xx - cx) * math.sin(angle) + (yy - cy) * math.cos(angle)) / (radius / aspect)
        distance = np.sqrt(u * u + v * v)
        alpha = np.maximum(alpha, np.clip((1.0 - distance) / edge, 0.0, 1.0))
    return alpha


def draw_frost(image: np.ndarray, rng: np.random.Generator):
    """The crop with 1-3 frost patches on its slope shade, and the patches' (size px, contrast);
    None where the crop has no slope shade."""
    shade = slope_shade(image, rng)
    rows, cols = np.nonzero(shade)
    if len(rows) < 20:
        return None
    out = image.copy()
    side = min(image.shape)
    held = ndimage.gaussian_filter(shade.astype(np.float32), 2.0)
    patches = []
    for _ in range(int(rng.integers(1, 4))):
        size = float(math.exp(rng.uniform(math.log(4.0), math.log(side / 3.0))))
        j = int(rng.integers(len(rows)))
        alpha = lobes(rng, size)
        texture = ndimage.gaussian_filter(rng.random(alpha.shape).astype(np.float32), rng.uniform(0.5, 3.0))
        texture = (texture - texture.min()) / max(float(np.ptp(texture)), 1e-6)
        alpha = alpha * (1.0 - rng.uniform(0.0, 0.6) * texture)
        half = alpha.shape[0] // 2
        r0, c0 = rows[j] - half, cols[j] - half
        y0, x0 = max(r0, 0), max(c0, 0)
        y1, x1 = min(r0 + alpha.shape[0], image.shape[0]), min(c0 + alpha.shape[1], image.shape[1])
        if y1 - y0 < 2 or x1 - x0 < 2:
            continue
        a = alpha[y0 - r0:y1 - r0, x0 - c0:x1 - c0] * (0.3 + 0.7 * held[y0:y1, x0:x1])  # mostly inside the shade
        ring = out[max(y0 - half, 0):y1 + half, max(x0 - half, 0):x1 + half]
        contrast = float(math.exp(rng.uniform(math.log(0.05), math.log(0.8))))
        target = min(1.0, float(np.median(ring)) + contrast)
        region = out[y0:y1, x0:x1]
        out[y0:y1, x0:x1] = region + a * (target - region) * rng.uniform(0.7, 1.0)
        patches.append((size, contrast))
    return (np.clip(out, 0.0, 1.0), patches) if patches else None


def build_examples(tiles, seed: int):
    """Every usable held-out crop as it is (label 0) and, where it has slope shade, with frost (label 1),
    at crop scale: (pictures, labels, observations, landforms, largest patch px, its contrast)."""
    rng = np.random.default_rng(seed)
    pictures, labels, groups, landforms, sizes, contrasts = [], [], [], [], [], []
    for tile in tiles:
        image = tile["image"]
        if not (image > 0).all():
            continue  # image-edge crops: their no-data would be drawn on
        rows = [(image, 0, math.nan, math.nan)]
        drawn = draw_frost(image, rng)
        if drawn is not None:
            frosted, patches = drawn
            rows.append((frosted, 1, max(s for s, _ in patches), max(c for _, c in patches)))
        for picture, label, size, contrast in rows:
            pictures.append(picture)
            labels.append(label)
            groups.append(tile["observation"])
            landforms.append(tile["landform"])
            sizes.append(size)
            contrasts.append(contrast)
    return pictures, np.array(labels), np.array(groups), np.array(landforms), np.array(sizes), np.array(contrasts)


def score(path: str, examples, seed: int) -> dict:
    pictures, labels, groups, landforms, sizes, contrasts = examples
    network, meta = modelfile.load(path)
    images = np.stack([to_input(picture, picture > 0, meta["input_size"]) for picture in pictures])  # read as detect reads a chunk
    plain = recipe.predict_logits(network, images)
    mirrored = recipe.predict_logits(network, np.ascontiguousarray(images[:, :, ::-1]))
    row = {"model": modelfile.describe(meta)}
    ice_free_real = (labels == 0) & ~np.isin(landforms, recipe.HARD_LANDFORMS)
    for name, logits in (("as it is", plain), ("with the mirror (detect's default)", (plain + mirrored) / 2)):
        p = calibration.apply(logits, meta.get("calibration"))
        interval = metrics.bootstrap_roc_auc(p, labels, groups, seed=seed)
        icy = labels == 1
        by_size = {}
        for lo, hi in SIZE_BINS:
            inside = icy & (sizes >= lo) & (sizes < hi)
            by_size[f"{lo}-{hi} px"] = {"count": int(inside.sum()), "recall": float((p[inside] >= 0.5).mean()) if inside.any() else math.nan,
                                        "median_probability": float(np.median(p[inside])) if inside.any() else math.nan}
        row[name] = {"roc_auc": metrics.roc_auc(p, labels), "interval": interval, "recall": float((p[icy] >= 0.5).mean()),
                     "fpr_real_terrain": float((p[ice_free_real] >= 0.5).mean()),
                     "fpr_hard_landforms": {name_: float((p[(labels == 0) & (landforms == name_)] >= 0.5).mean())
                                            for name_ in recipe.HARD_LANDFORMS if ((labels == 0) & (landforms == name_)).any()},
                     "ece": calibration.expected_calibration_error(p, labels), "by_size": by_size}
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=None, help="model file (repeatable; default: the bundled one)")
    parser.add_argument("--seed", type=int, default=101)
    parser.add_argument("--json", default=os.path.join(REPO, "build", "unseen_family.json"))
    args = parser.parse_args()
    from model.training import prepare_tensorflow

    paths = args.model or [os.path.join(REPO, "resources", "models", "default.hiriseice")]
    first = modelfile.read_metadata(paths[0])
    prepare_tensorflow(first["architecture"]["widths"])
    held_out = set(first["training"]["test_observations"])
    for path in paths[1:]:
        other = set(modelfile.read_metadata(path).get("training", {}).get("test_observations") or [])
        if other != held_out:
            print(f"note: {path} holds out other observations; some of these crops may be in its training set")
    tiles = [t for t in recipe.load_tiles([os.path.join(recipe.SHARED, name) for name in recipe.TERRAIN_FOLDERS]) if t["observation"] in held_out]
    examples = build_examples(tiles, args.seed)
    labels = examples[1]
    print(f"{len(held_out)} held-out observations: {int((labels == 0).sum())} crops as they are, {int(labels.sum())} with frost drawn")
    rows = [dict(score(path, examples, args.seed), path=path) for path in paths]
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as handle:
        json.dump({"seed": args.seed, "observations": sorted(held_out), "ice_free": int((labels == 0).sum()), "icy": int(labels.sum()), "rows": rows},
                  handle, indent=1, default=float)
    print("| model | scored | ROC AUC (95 % interval) | recall at 0.5 | real ice-free terrain called icy | hard landforms called icy | ECE | recall / median p: " +
          " / ".join(f"{lo}-{hi} px" for lo, hi in SIZE_BINS) + " |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        for name in ("as it is", "with the mirror (detect's default)"):
            r = row[name]
            sizes = " / ".join(f"{b['recall']:.2f} {b['median_probability']:.2f} ({b['count']})" for b in r["by_size"].values())
            hard = ", ".join(f"{k} {100 * v:.0f} %" for k, v in r["fpr_hard_landforms"].items())
            print(f"| {row['model']} | {name} | {r['roc_auc']:.3f} ({r['interval']['low']:.3f}-{r['interval']['high']:.3f}) | {r['recall']:.2f} | "
                  f"{100 * r['fpr_real_terrain']:.1f} % | {hard} | {r['ece']:.3f} | {sizes} |")


if __name__ == "__main__":
    main()

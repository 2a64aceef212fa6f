"""Does scoring each chunk's east-west mirror too (detect's TTA) rank ice better?

The recipe's held-out observations and test set (scripts/default_model.py: every family of ice
and the look-alikes on real crops of observations it never trained on) scored by MODEL as it is,
mirrored east-west (the sun's side kept), and as the mean of the two logits, as detect's TTA
does: each family's ROC AUC, the share of real ice-free terrain called icy at 0.5, and ECE (also
with the calibration moved from the survey's share of icy chunks to the test set's).

    nice -n 19 .venv/bin/python benchmarks/mirror_tta.py [--model resources/models/default.hiriseice] [--json out.json]
"""

import argparse
import json
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "scripts"))

import default_model as recipe  # noqa: E402
from model import calibration, finetune, metrics, modelfile  # noqa: E402
from model.network import architecture_widths  # noqa: E402
from model.trainingdata.examples import FAMILIES  # noqa: E402


def measure(logits, calibration_record, test):
    p = calibration.apply(logits, calibration_record)
    ice_free = test.labels == 0
    real = (test.kinds == "real") & ~np.isin(test.landforms, recipe.HARD_LANDFORMS)
    row = {family: metrics.roc_auc(p[(test.kinds == family) | ice_free], test.labels[(test.kinds == family) | ice_free]) for family in FAMILIES}
    row.update(fpr_real_terrain=float((p[real] >= 0.5).mean()), ece=calibration.expected_calibration_error(p, test.labels))
    # The calibration assumes a survey's share of icy chunks; the test set holds far more ice. Moved
    # to the test set's share, ECE measures the shape of the calibration alone.
    prior = finetune.survey_prior(calibration_record)
    if prior:
        at_share = calibration.with_prior(calibration_record, prior, float(test.labels.mean()))
        row["ece_at_test_share"] = calibration.expected_calibration_error(calibration.apply(logits, at_share), test.labels)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=os.path.join(REPO, "resources", "models", "default.hiriseice"))
    parser.add_argument("--seed", type=int, default=7, help="the recipe's seed: the same split and test set")
    parser.add_argument("--json", default=os.path.join(REPO, "build", "mirror_tta.json"))
    args = parser.parse_args()
    from model.training import prepare_tensorflow

    prepare_tensorflow(architecture_widths(modelfile.read_metadata(args.model)["architecture"]))
    network, meta = modelfile.load(args.model)
    tiles = recipe.load_tiles([os.path.join(recipe.SHARED, name) for name in recipe.TERRAIN_FOLDERS])
    _train, _validation, test_obs = recipe.split_observations(tiles, args.seed)
    test = recipe.build_test_set([t for t in tiles if t["observation"] in test_obs], args.seed + 1, meta["input_size"])
    plain = recipe.predict_logits(network, test.images)
    mirrored = recipe.predict_logits(network, np.ascontiguousarray(test.images[:, :, ::-1]))
    rows = {name: measure(logits, meta.get("calibration"), test) for name, logits in (("as it is", plain), ("mirrored", mirrored), ("mean (TTA)", (plain + mirrored) / 2))}
    with open(args.json, "w", encoding="utf-8") as handle:
        json.dump({"model": modelfile.describe(meta), "examples": int(len(test.labels)), "rows": rows}, handle, indent=1)
    print(f"| scored | {' | '.join(FAMILIES)} | real terrain called icy | ECE | ECE at the test set's share |")
    print("| --- |" + " --- |" * (len(FAMILIES) + 3))
    for name, row in rows.items():
        at_share = f"{row['ece_at_test_share']:.3f}" if "ece_at_test_share" in row else ""
        print(f"| {name} | " + " | ".join(f"{row[f]:.3f}" for f in FAMILIES) + f" | {100 * row['fpr_real_terrain']:.1f} % | {row['ece']:.3f} | {at_share} |")


if __name__ == "__main__":
    main()

"""What the calibration's assumed share of icy chunks trades: false alarms, recall and ECE.

The recipe's held-out test set (scripts/default_model.py) scored once by MODEL; its Platt
calibration, as fitted on the validation observations, is moved to each assumed share
(calibration.with_prior) and measured: real ice-free terrain and hard landforms called icy at
p >= 0.5, recall of the planted ice, and ECE on the test set as it is and weighted to 50 % and
20 % icy. The ranking, and so the ROC AUC, is the same at every share.

    nice -n 19 .venv/bin/python benchmarks/icy_share.py [--model resources/models/default.hiriseice]
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
from model import calibration, finetune, modelfile  # noqa: E402
from model.network import architecture_widths  # noqa: E402


def at_share(logits, test, fitted, fitted_share, share):
    p = calibration.apply(logits, calibration.with_prior(fitted, fitted_share, share))
    real = test.kinds == "real"
    hard = np.isin(test.landforms, recipe.HARD_LANDFORMS)
    icy = test.labels == 1
    return {
        "share": share,
        "fpr_real_terrain": float(np.mean(p[real & ~hard] >= 0.5)),
        "hard_landforms_called_icy": int(np.sum(p[real & hard] >= 0.5)),
        "hard_landforms": int(np.sum(real & hard)),
        "recall": float(np.mean(p[icy] >= 0.5)),
        "ece": calibration.expected_calibration_error(p, test.labels),
        "ece_at_50": calibration.expected_calibration_error(p, test.labels, weights=calibration.prior_weights(test.labels, 0.5)),
        "ece_at_20": calibration.expected_calibration_error(p, test.labels, weights=calibration.prior_weights(test.labels, 0.2)),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=os.path.join(REPO, "resources", "models", "default.hiriseice"))
    parser.add_argument("--shares", default="0.2,0.25,0.3,0.35,0.4,0.5")
    parser.add_argument("--seed", type=int, default=7, help="the recipe's seed: the same split and test set")
    parser.add_argument("--json", default=os.path.join(REPO, "build", "icy_share.json"))
    args = parser.parse_args()
    from model.training import prepare_tensorflow

    meta = modelfile.read_metadata(args.model)
    prepare_tensorflow(architecture_widths(meta["architecture"]))
    tiles = recipe.load_tiles([os.path.join(recipe.SHARED, name) for name in recipe.TERRAIN_FOLDERS])
    _train, _validation, test_obs = recipe.split_observations(tiles, args.seed)
    test = recipe.build_test_set([t for t in tiles if t["observation"] in test_obs], args.seed + 1, meta["input_size"])
    network, meta = modelfile.load(args.model)
    logits = recipe.predict_logits(network, test.images)
    fitted, fitted_share = recipe._fitted(meta)
    shipped = finetune.survey_prior(meta.get("calibration"))
    rows = [at_share(logits, test, fitted, fitted_share, float(share)) for share in args.shares.split(",")]
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as handle:
        json.dump({"model": args.model, "shipped_share": shipped, "fitted_share": fitted_share, "examples": int(len(test.labels)),
                   "icy_share_of_test": float(test.labels.mean()), "rows": rows}, handle, indent=1)
    print(f"| assumed icy share | real terrain called icy | hard landforms | recall at 0.5 | ECE, test set as it is ({test.labels.mean():.0%} icy) "
          "| ECE weighted to 50 % icy | ECE weighted to 20 % icy |")
    print("| --- |" + " --- |" * 6)
    for row in rows:
        name = f"{row['share']:.2f}" + (" (shipped)" if shipped is not None and abs(row["share"] - shipped) < 1e-9 else "")
        print(f"| {name} | {100 * row['fpr_real_terrain']:.1f} % | {row['hard_landforms_called_icy']} of {row['hard_landforms']} | {row['recall']:.2f} "
              f"| {row['ece']:.3f} | {row['ece_at_50']:.3f} | {row['ece_at_20']:.3f} |")


if __name__ == "__main__":
    main()

"""Do two models reading the chunk at different scales rank ice better together than either alone?

The recipe's held-out test set (scripts/default_model.py) built once at each model's input size
(the same crops, the same planted ice), each model scored as detect scores (with the east-west
mirror), and the two combined as the mean of their calibrated logits: each family's ROC AUC, the
share of real ice-free terrain called icy at 0.5, and ECE (benchmarks/mirror_tta.py's measure).

    nice -n 19 .venv/bin/python benchmarks/two_scales.py --large build/exp/s256.hiriseice [--small resources/models/default.hiriseice]
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
from mirror_tta import measure  # noqa: E402
from model import calibration, modelfile  # noqa: E402
from model.trainingdata.examples import FAMILIES  # noqa: E402


def calibrated_logits(path, test_tiles, seed):
    """(logits with the mirror and the model's calibration applied, the test set at its input size)."""
    network, meta = modelfile.load(path)
    test = recipe.build_test_set(test_tiles, seed + 1, meta["input_size"])
    plain = recipe.predict_logits(network, test.images)
    mirrored = recipe.predict_logits(network, np.ascontiguousarray(test.images[:, :, ::-1]))
    p = np.clip(calibration.apply((plain + mirrored) / 2, meta.get("calibration")), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p)), test, f"{meta['input_size']} px"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", default=os.path.join(REPO, "resources", "models", "default.hiriseice"))
    parser.add_argument("--large", required=True)
    parser.add_argument("--seed", type=int, default=7, help="the recipe's seed: the same split and test set")
    parser.add_argument("--json", default=os.path.join(REPO, "build", "two_scales.json"))
    args = parser.parse_args()
    from model.training import prepare_tensorflow

    prepare_tensorflow(modelfile.read_metadata(args.small)["architecture"]["widths"])
    tiles = recipe.load_tiles([os.path.join(recipe.SHARED, name) for name in recipe.TERRAIN_FOLDERS])
    _train, _validation, test_obs = recipe.split_observations(tiles, args.seed)
    test_tiles = [t for t in tiles if t["observation"] in test_obs]
    small, test, small_name = calibrated_logits(args.small, test_tiles, args.seed)
    large, large_test, large_name = calibrated_logits(args.large, test_tiles, args.seed)
    if not (np.array_equal(test.labels, large_test.labels) and np.array_equal(test.kinds, large_test.kinds)):
        sys.exit("the two test sets differ: the models must share the recipe's seed")
    rows = {name: measure(logits, None, test) for name, logits in ((small_name, small), (large_name, large), ("both, mean logit", (small + large) / 2))}
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as handle:
        json.dump({"small": args.small, "large": args.large, "examples": int(len(test.labels)), "rows": rows}, handle, indent=1)
    print(f"| scored with the mirror | {' | '.join(FAMILIES)} | real terrain called icy | ECE |")
    print("| --- |" + " --- |" * (len(FAMILIES) + 2))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{row[f]:.3f}" for f in FAMILIES) + f" | {100 * row['fpr_real_terrain']:.1f} % | {row['ece']:.3f} |")


if __name__ == "__main__":
    main()

"""Dense grids from the score map against scoring each chunk alone, on held-out observations.

benchmarks/dense_grid.py plants ice with the scene generator's own code; here the terrain is
real: mosaics of the terrain crops of the observations the default model's recipe holds out
(scripts/default_model.py's split), each crop a 256-px cell, with ice of every family
(model/trainingdata/ice) planted in 256-px windows placed anywhere, so that patches land on cell
edges and corners as often as inside. Detect runs at CHUNK_SIZE 256 (one cell) with the bundled
model (or --model), at STRIDE 256, and at 128 and 64 on both routes. A chunk is icy when a planted group's
bounding box lies inside it, ice-free when none touches it (dense_grid.chunk_labels); reported:
pooled ROC AUC per stride and route, and per planted group whether the best dense chunk holding
it scores higher than the best STRIDE = CHUNK chunk touching it.

    nice -n 19 .venv/bin/python benchmarks/dense_grid_held_out.py [--scenes 8] [--model M.hiriseice] [--json out.json]
"""

import argparse
import json
import os
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "scripts"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import default_model as recipe  # noqa: E402
from dense_grid import chunk_labels, timed_detect  # noqa: E402
from model.metrics import roc_auc  # noqa: E402
from model.preprocess import resize  # noqa: E402
from model.trainingdata.examples import FAMILIES  # noqa: E402
from model.trainingdata.scene import mars_equirectangular_wkt  # noqa: E402

CELL = 256
ROWS, COLS = 6, 8
GROUPS_PER_SCENE = 10
RUNS = ((CELL, "chunk"), (CELL // 2, "chunk"), (CELL // 2, "map"), (CELL // 4, "chunk"), (CELL // 4, "map"))


def write_scene(path, tiles, rng):
    """A ROWS x COLS mosaic of held-out crops with GROUPS_PER_SCENE planted groups of ice, one
    family in turn; returns [{"bbox": (x0, y0, x1, y1), "family"}] in raster pixels."""
    from osgeo import gdal

    picks = rng.choice(len(tiles), ROWS * COLS, replace=False)
    image = np.zeros((ROWS * CELL, COLS * CELL), np.float32)
    for k, index in enumerate(picks):
        r, c = divmod(k, COLS)
        image[r * CELL : (r + 1) * CELL, c * CELL : (c + 1) * CELL] = np.clip(resize(tiles[index]["image"], CELL), 0, 1)
    families = list(FAMILIES)
    groups = []
    while len(groups) < GROUPS_PER_SCENE:
        family = families[len(groups) % len(families)]
        y, x = int(rng.integers(0, image.shape[0] - CELL)), int(rng.integers(0, image.shape[1] - CELL))
        window = image[y : y + CELL, x : x + CELL]
        try:
            planted, _mask, infos = FAMILIES[family](window, rng, window > 0)
        except ValueError:
            continue
        image[y : y + CELL, x : x + CELL] = planted
        r0 = min(i["bbox"][0] for i in infos)
        c0 = min(i["bbox"][1] for i in infos)
        r1 = max(i["bbox"][2] for i in infos)
        c1 = max(i["bbox"][3] for i in infos)
        groups.append({"bbox": (x + c0, y + r0, x + c1, y + r1), "family": family})
    ds = gdal.GetDriverByName("GTiff").Create(path, image.shape[1], image.shape[0], 1, gdal.GDT_Byte)
    ds.SetGeoTransform((0.0, 1.0, 0.0, 0.0, 0.0, -1.0))  # 1 m pixels, like the crops' scale
    ds.SetProjection(mars_equirectangular_wkt(-55.0))
    band = ds.GetRasterBand(1)
    band.SetNoDataValue(0)
    band.WriteArray(np.where(image > 0, np.clip(np.rint(image * 255), 1, 255), 0).astype(np.uint8))
    ds = None
    return groups


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="", help="a .hiriseice model file (default: the bundled model)")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    folders = [os.path.join(recipe.SHARED, name) for name in recipe.TERRAIN_FOLDERS if os.path.isdir(os.path.join(recipe.SHARED, name))]
    if not folders:
        sys.exit(f"no terrain crops under {recipe.SHARED}: this benchmark needs ../shared/data")
    tiles = recipe.load_tiles(folders)
    _train, _validation, test = recipe.split_observations(tiles, 7)  # the recipe's default seed
    tiles = [t for t in tiles if t["observation"] in test]
    print(f"{len(tiles)} crops of {len(test)} held-out observations; {args.scenes} scenes of {ROWS} x {COLS} crops", flush=True)
    rng = np.random.default_rng(args.seed)
    scores = {run: ([], []) for run in RUNS}
    found = {run: 0 for run in RUNS if run[0] < CELL}
    group_count = 0
    with tempfile.TemporaryDirectory() as tmp:
        for scene in range(args.scenes):
            raster = os.path.join(tmp, f"held_out_{scene}.tif")
            groups = write_scene(raster, tiles, rng)
            group_count += len(groups)
            patches = [{"bbox": g["bbox"]} for g in groups]
            chunks = {}
            for stride, route in RUNS:
                detection, _wall = timed_detect(raster, args.model, chunk_size=CELL, stride=stride, scoring=route)
                chunks[(stride, route)] = detection.chunks
                labels = chunk_labels(detection.chunks, patches)
                for c in detection.chunks:
                    if c["chunk_id"] in labels:
                        scores[(stride, route)][0].append(c["probability"])
                        scores[(stride, route)][1].append(labels[c["chunk_id"]])
            for g in groups:
                x0, y0, x1, y1 = g["bbox"]
                touching = [c["probability"] for c in chunks[(CELL, "chunk")] if x0 < c["x_off"] + c["width"] and x1 > c["x_off"] and y0 < c["y_off"] + c["height"] and y1 > c["y_off"]]
                for run in found:
                    holding = [c["probability"] for c in chunks[run] if c["x_off"] <= x0 and c["y_off"] <= y0 and c["x_off"] + c["width"] >= x1 and c["y_off"] + c["height"] >= y1]
                    found[run] += bool(holding) and max(holding) > max(touching, default=0.0)
            print(f"scene {scene}: done", flush=True)
    out = {"scenes": args.scenes, "groups": group_count, "runs": []}
    print(f"{'stride':>6} {'route':>5} {'labelled':>8} {'icy':>5} {'ROC AUC':>7} {'groups better held':>18}")
    for run in RUNS:
        p, y = scores[run]
        row = {"stride": run[0], "route": run[1], "labelled": len(y), "icy": int(sum(y)), "roc_auc": roc_auc(p, y), "groups_found": found.get(run)}
        out["runs"].append(row)
        better = f"{row['groups_found']} of {group_count}" if run in found else ""
        print(f"{run[0]:>6} {run[1]:>5} {row['labelled']:>8} {row['icy']:>5} {row['roc_auc']:>7.3f} {better:>18}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(out, handle, indent=1)


if __name__ == "__main__":
    main()

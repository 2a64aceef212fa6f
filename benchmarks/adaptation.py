"""One round of the paper's loop, simulated: does retraining on a geologist's labels teach the
model a kind of ice it never saw, without forgetting the rest?

The base model is a leave-one-family-out model of the default recipe (it never saw FAMILY). A
mosaic of 256-px cells (1 m pixels, a Mars CRS) is made from crops of the recipe's *training*
observations, half of them with FAMILY's ice; the base model detects on it at CHUNK_SIZE 256, and
the cells are labelled as a geologist would: N at random (50, 100, 200), and 100 in the base
model's review_rank order. Each set retrains the base once through the engine's training job with
the algorithm's defaults. Every model is scored on the recipe's held-out observations: the new
family's ROC AUC, the other families', and false positives on real ice-free terrain and the hard
landforms; before and after, with the wall time.

    .venv/bin/python benchmarks/adaptation.py --base build/models/without-natural-shade.hiriseice \
        --family "natural shade" [--labels 50,100,200] [--review 100] [--pool 400] \
        [--option learning_rate=3e-4 ...] [--recipe learning_rate=3e-4,epochs=20 ...] \
        [--draw 8] [--rounds 2 [--cumulative]] [--json build/adaptation.json]

FAMILY may also be a family of benchmarks/unseen/ (e.g. "lee frost"), which no model here trained on:
then --base is the default model itself and the new family is scored by benchmarks/unseen_family.py's
examples of the held-out crops.

--option sets a training job option (as the train algorithm's parameters do) for every run;
without it every run uses the defaults. Each --recipe (options joined by commas) repeats the runs
with those options as well, to compare fine-tuning recipes on the same labels and test set.
--rounds goes round the paper's loop: each further round labels as many cells of a new mosaic (a
new image of the same kind of ice), chosen the same way (at random, or in the review_rank order of
the model it retrains), and retrains the previous round's model; with --cumulative it gives the
earlier rounds' labels as well, as a geologist who keeps every labelled layer does.
--unlabelled-cells adds cells no label covers, few of them icy (--unlabelled-icy), as the rest of
a survey image is: what the training job's `unlabelled` option draws from.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "scripts"))

import default_model as recipe  # noqa: E402
from model import calibration, metrics, modelfile  # noqa: E402
from model.network import architecture_widths  # noqa: E402
from model.preprocess import resize  # noqa: E402
from model.protocol import SilentReporter  # noqa: E402
from model.trainingdata.examples import FAMILIES, LOOKALIKE_SHARES, LOOKALIKES  # noqa: E402
import unseen_family  # noqa: E402
from model.trainingdata.scene import mars_equirectangular_wkt  # noqa: E402

CELL = 256
COLUMNS = 20
ROOM_ATTEMPTS = 20  # crops tried for an icy cell: a family finds no room on some (no shade, a no-data edge)
OUTLINE_LIFT = 0.03  # brightening that a geologist's outline of the ice takes in (of the 0-1 stretch)
INSET = 2.0  # px: an exclusion polygon inside its cell, so that it does not touch the labelled cells beside it


def write_mosaic(tiles, family, count, seed, path, unlabelled=0, unlabelled_icy=0.0):
    """A GeoTIFF of ``count`` 256-px cells (1 m pixels), half with ``family``'s ice and half with a
    look-alike or nothing, then ``unlabelled`` more cells that no label will cover, a share
    ``unlabelled_icy`` of them icy (the rest of a survey image); returns [(cell polygon WKT,
    label)] of the first ``count`` cells, in cell order, and the WKT outlines of the ice (where the
    family brightened the crop), as a geologist in outline mode would draw them."""
    from osgeo import gdal

    rng = np.random.default_rng(seed)
    rows = (count + unlabelled + COLUMNS - 1) // COLUMNS
    canvas = np.zeros((rows * CELL, COLUMNS * CELL), np.uint8)
    ice = np.zeros(canvas.shape, np.uint8)
    labels = []
    chosen = rng.choice(len(tiles), count, replace=count > len(tiles))
    rest = np.random.default_rng([seed, 1])  # its own stream: the labelled cells stay those of a mosaic without the rest
    chosen = np.concatenate([chosen, rest.choice(len(tiles), unlabelled)]).astype(int)
    for index, tile_index in enumerate(chosen):
        image = resize(tiles[tile_index]["image"], CELL)
        valid = image > 0
        icy = index % 2 == 0 if index < count else bool(rest.random() < unlabelled_icy)
        placed = None
        for _attempt in range(ROOM_ATTEMPTS if icy else 0):
            placed = _ice(family, image, rng, valid)
            if placed is not None:
                break
            image = resize(tiles[int(rng.integers(len(tiles)))]["image"], CELL)  # no room for its ice here: another crop
            valid = image > 0
        icy = placed is not None
        if placed is None:
            kind = str(rng.choice(list(LOOKALIKE_SHARES), p=list(LOOKALIKE_SHARES.values())))
            placed = image if LOOKALIKES[kind] is None else _safe(LOOKALIKES[kind], image, rng, valid)
        r, c = divmod(index, COLUMNS)
        canvas[r * CELL:(r + 1) * CELL, c * CELL:(c + 1) * CELL] = np.where(valid, np.clip(np.round(placed * 254) + 1, 1, 255), 0)
        if icy:
            ice[r * CELL:(r + 1) * CELL, c * CELL:(c + 1) * CELL] = (placed - image > OUTLINE_LIFT) & valid
        if index < count:
            labels.append((_cell_wkt(index), int(icy)))
    dataset = gdal.GetDriverByName("GTiff").Create(path, canvas.shape[1], canvas.shape[0], 1, gdal.GDT_Byte, ["TILED=YES", "COMPRESS=DEFLATE"])
    dataset.SetGeoTransform((0.0, 1.0, 0.0, 0.0, 0.0, -1.0))
    dataset.SetProjection(mars_equirectangular_wkt(-50.0))
    dataset.GetRasterBand(1).SetNoDataValue(0)
    dataset.GetRasterBand(1).WriteArray(canvas)
    dataset = None
    return labels, _outlines(ice, mars_equirectangular_wkt(-50.0))


def _cell_wkt(index):
    """The polygon of the mosaic's cell ``index`` (map coordinates: 1 m pixels from (0, 0))."""
    r, c = divmod(index, COLUMNS)
    x0, y0 = c * CELL, -r * CELL
    return f"POLYGON(({x0} {y0},{x0 + CELL} {y0},{x0 + CELL} {y0 - CELL},{x0} {y0 - CELL},{x0} {y0}))"


def _outlines(ice, crs_wkt):
    """WKT polygons of the ice mask's patches (map coordinates of the mosaic's geotransform)."""
    from osgeo import gdal, ogr, osr

    mask = gdal.GetDriverByName("MEM").Create("", ice.shape[1], ice.shape[0], 1, gdal.GDT_Byte)
    mask.SetGeoTransform((0.0, 1.0, 0.0, 0.0, 0.0, -1.0))
    mask.GetRasterBand(1).WriteArray(ice)
    store = ogr.GetDriverByName("Memory").CreateDataSource("")  # held: its layer dies with it
    layer = store.CreateLayer("ice", osr.SpatialReference(crs_wkt), ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("ice", ogr.OFTInteger))
    gdal.Polygonize(mask.GetRasterBand(1), mask.GetRasterBand(1), layer, 0)
    return [feature.GetGeometryRef().ExportToWkt() for feature in layer if feature.GetField("ice") == 1]


def _ice(family, image, rng, valid):
    """The cell with ``family``'s ice (a training family, or one of benchmarks/unseen/ that no model
    here trained on), or None where it has no room."""
    if family in FAMILIES:
        try:
            return FAMILIES[family](image, rng, valid)[0]
        except ValueError:
            return None
    drawn = unseen_family.FAMILIES[family].draw(image, rng) if valid.all() else None  # an unseen family draws on whole crops
    return None if drawn is None else drawn[0]


def _safe(implant, image, rng, valid):
    try:
        return implant(image, rng, valid)
    except ValueError:
        return image


def review_order(mosaic, base, cells):
    """Indices of the first ``cells`` cells (those a label may cover) in the order of the base
    model's review_rank at CHUNK_SIZE 256."""
    from model.inference import DetectOptions, detect

    chunks = detect(mosaic, base, DetectOptions(chunk_size=CELL)).chunks
    ranked = sorted(chunks, key=lambda chunk: chunk["review_rank"])
    return [index for index in (chunk["row"] * COLUMNS + chunk["col"] for chunk in ranked) if index < cells]


class TrainingLog(SilentReporter):
    """The training job's log lines (epochs, guard, calibration) on stderr, without its progress bar."""

    def log(self, message):
        print(message, file=sys.stderr, flush=True)


def retrain(labelled, base, out, options, reporter, outlines=False):
    """labelled: [(mosaic path, (its cell labels, its ice outlines), the cells labelled)], one per
    image. With ``outlines``, the geologist outlines the ice instead (label mode "outlines") and
    the other cells of the mosaic are excluded."""
    from model.trainingjob import run_job

    if outlines:
        rasters = [{"path": mosaic, "labels": [{"wkt": wkt, "label": 1} for wkt in drawn[1]],
                    "exclude": [_inset(drawn[0][i][0]) for i in sorted(set(range(len(drawn[0]))) - set(cells))] + _unlabelled_cells(mosaic, len(drawn[0]))}
                   for mosaic, drawn, cells in labelled]
    else:
        rasters = [{"path": mosaic, "labels": [{"wkt": drawn[0][i][0], "label": drawn[0][i][1]} for i in cells]} for mosaic, drawn, cells in labelled]
    job = {"rasters": rasters, "label_mode": "outlines" if outlines else "chunks", "chunk_size": CELL, "base_model": base, "output_model": out, **options}
    started = time.monotonic()
    run_job(job, reporter)
    return time.monotonic() - started


def _inset(wkt):
    from osgeo import ogr

    return ogr.CreateGeometryFromWkt(wkt).Buffer(-INSET).ExportToWkt()


def _unlabelled_cells(mosaic, labelled_count):
    """Exclusions for the cells after the labelled pool (and the empty rest of the last row)."""
    from osgeo import gdal

    rows = gdal.Open(mosaic).RasterYSize // CELL
    return [_inset(_cell_wkt(index)) for index in range(labelled_count, rows * COLUMNS)]


def score(path, test, family, unseen_examples=None):
    """The model's measurement on the recipe's test set; for a family of benchmarks/unseen/, its AUC
    and recall on ``unseen_examples`` (unseen_family.build_examples of the held-out crops)."""
    network, meta = modelfile.load(path)
    measured = recipe.evaluate(network, meta, test)
    fpr = measured["false_positive_rate_at_0.5"]
    hard = [fpr[name] for name in recipe.HARD_LANDFORMS if fpr[name]["count"]]
    if family in FAMILIES:
        new = measured["families"][family]["roc_auc"], measured["families"][family]["recall_at_0.5"]
    else:  # as unseen_family.py's "as it is" row, on the network loaded here
        p, labels = calibration.apply(unseen_family.logits(network, meta, unseen_examples), meta.get("calibration")), unseen_examples[1]
        new = metrics.roc_auc(p, labels), float((p[labels == 1] >= 0.5).mean())
    return {
        "new_family_auc": new[0],
        "new_family_recall": new[1],
        "other_families_auc": {name: row["roc_auc"] for name, row in measured["families"].items() if name != family},
        "fpr_real_terrain": fpr["real ice-free terrain (not the hard landforms)"]["rate"],
        "fpr_hard_landforms": sum(h["rate"] * h["count"] for h in hard) / max(1, sum(h["count"] for h in hard)),
    }


def _option(text):
    key, _, value = text.partition("=")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def say(message):
    """Where the benchmark stands, on stderr (minutes pass between its rows, even at small settings)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True)
    parser.add_argument("--family", required=True, choices=list(FAMILIES) + sorted(unseen_family.FAMILIES),
                        help="the geologist's kind of ice: a training family (held out of --base) or one of benchmarks/unseen/")
    parser.add_argument("--labels", default="50,100,200")
    parser.add_argument("--review", type=int, default=100, help="chunks labelled in review_rank order (0: none)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="a training job option, e.g. learning_rate=3e-4")
    parser.add_argument("--recipe", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]", help="also run with these options (repeatable)")
    parser.add_argument("--log", action="store_true", help="print each retraining's log")
    parser.add_argument("--pool", type=int, default=400)
    parser.add_argument("--seed", type=int, default=7, help="the recipe's seed: the same split and test set")
    parser.add_argument("--draw", type=int, help="seed of the mosaic and the labels drawn from it (default: --seed); the split stays --seed's")
    parser.add_argument("--unlabelled-cells", type=int, default=0, help="cells after the pool that no label covers: the rest of a survey image")
    parser.add_argument("--unlabelled-icy", type=float, default=0.15, help="share of those cells with the family's ice")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of the loop, each on a new mosaic from the previous round's model")
    parser.add_argument("--cumulative", action="store_true", help="each round gives the earlier rounds' labels as well")
    parser.add_argument("--outlines", action="store_true", help="the chosen cells are labelled by outlining their ice (label mode \"outlines\") "
                        "instead of by a chunk label: training then also learns where in each chunk the ice lies")
    parser.add_argument("--work", default=os.path.join(REPO, "build", "adaptation"))
    parser.add_argument("--json", default=os.path.join(REPO, "build", "adaptation.json"))
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    from model.training import prepare_tensorflow

    prepare_tensorflow(architecture_widths(modelfile.read_metadata(args.base)["architecture"]))
    say("reading the terrain crops")
    tiles = recipe.load_tiles([os.path.join(recipe.SHARED, name) for name in recipe.TERRAIN_FOLDERS])
    train_obs, _validation, test_obs = recipe.split_observations(tiles, args.seed)
    say(f"{len(tiles)} crops; drawing the held-out test set of the base model's families and of {args.family}")
    test = recipe.build_test_set([t for t in tiles if t["observation"] in test_obs], args.seed + 1, modelfile.read_metadata(args.base)["input_size"])
    unseen_examples = None if args.family in FAMILIES else unseen_family.build_examples(
        [t for t in tiles if t["observation"] in test_obs], unseen_family.SEED, unseen_family.FAMILIES[args.family].draw)
    draw = args.seed if args.draw is None else args.draw
    train_tiles = [t for t in tiles if t["observation"] in train_obs]
    say(f"drawing {args.rounds} mosaic(s) of {args.pool} cells of {args.family} to label")
    mosaics = []  # one per round: (path, (its cell labels, its ice outlines)), each a new image of the family's ice
    for round_index in range(args.rounds):
        path = os.path.join(args.work, "mosaic.tif" if round_index == 0 else f"mosaic-round-{round_index + 1}.tif")
        mosaics.append((path, write_mosaic(train_tiles, args.family, args.pool, draw + 1000 * round_index, path, args.unlabelled_cells, args.unlabelled_icy)))

    def chosen_cells(how, count, round_index, model):
        if how == "random":
            return np.random.default_rng(draw + 1000 * round_index).permutation(len(mosaics[round_index][1][0]))[:count].tolist()
        return review_order(mosaics[round_index][0], model, args.pool)[:count]

    runs = [("random", int(n)) for n in args.labels.split(",")] + ([("review_rank", args.review)] if args.review else [])
    options = dict(_option(text) for text in args.option)
    recipes = [("", {})] + [(text, dict(_option(part) for part in text.split(","))) for text in args.recipe]
    say("scoring the base model")
    rows = [dict(run="base model, not retrained", labels=0, icy=0, minutes=0.0, **score(args.base, test, args.family, unseen_examples))]
    print(json.dumps(rows[-1]), flush=True)
    for recipe_name, recipe_options in recipes:
        for how, count in runs:
            model, labelled = args.base, []
            for round_index in range(args.rounds):
                path, drawn = mosaics[round_index]
                cells = chosen_cells(how, count, round_index, model)
                labelled = (labelled if args.cumulative else []) + [(path, drawn, cells)]
                name = " ".join(part for part in (f"{how} {count}", f"round {round_index + 1}" if args.rounds > 1 else "", recipe_name) if part)
                out = os.path.join(args.work, name.replace(" ", "-").replace(",", "_") + ".hiriseice")
                say(f"retraining on {name} label(s), then scoring the new model")
                seconds = retrain(labelled, model, out, {**options, **recipe_options}, TrainingLog() if args.log else SilentReporter(), args.outlines)
                rows.append(dict(run=name, labels=sum(len(c) for _, _, c in labelled), icy=sum(drawn[0][i][1] for _, drawn, c in labelled for i in c),
                                 minutes=round(seconds / 60, 1), **score(out, test, args.family, unseen_examples)))
                print(json.dumps(rows[-1]), flush=True)
                model = out
    with open(args.json, "w", encoding="utf-8") as handle:
        json.dump({"family": args.family, "base": args.base, "pool": args.pool, "draw": draw, "rounds": args.rounds, "cumulative": args.cumulative, "outlines": args.outlines, "unlabelled_cells": args.unlabelled_cells, "unlabelled_icy": args.unlabelled_icy, "options": options, "recipes": args.recipe, "rows": rows}, handle, indent=1)
    print(f"| run | labels (icy) | AUC {args.family} | recall | other families' AUC | FPR real terrain | FPR hard landforms | minutes |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        others = ", ".join(f"{v:.3f}" for v in row["other_families_auc"].values())
        print(f"| {row['run']} | {row['labels']} ({row['icy']}) | {row['new_family_auc']:.3f} | {row['new_family_recall']:.2f} | {others} | "
              f"{row['fpr_real_terrain']:.3f} | {row['fpr_hard_landforms']:.3f} | {row['minutes']} |")


if __name__ == "__main__":
    main()

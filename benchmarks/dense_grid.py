"""Dense grids from the score map (model/scoremap.py) against scoring every chunk alone.

On generated HiRISE-like scenes (model/trainingdata/scene.py) with the bundled default model:
1. time of detect per route and stride (STRIDE = CHUNK, CHUNK/2, CHUNK/4);
2. how far the map route's chunk logits lie from the per-chunk route's on the same chunks, split
   into the part due to normalisation (chunks cut from the stretched tiles, scored alone) and the
   part due to context (read off the tiles' score map);
3. ROC AUC of chunk probabilities against the planted patches (a chunk is icy when a patch's
   bounding box lies inside it, ice-free when none touches it, left out otherwise);
4. patches planted on a corner of the per-chunk grid: the best dense-grid chunk covering the
   patch against the four per-chunk grid chunks that share the corner (found when higher), and
   the per-chunk grid's maximum over the whole (ice-free but look-alike-laden) scene.

    nice -n 19 .venv/bin/python benchmarks/dense_grid.py [--size 4096x3072] [--seeds 0,1] [--corner-seeds 0,1,2,3,4] [--json out.json]
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from model import modelfile, scoremap  # noqa: E402
from model.metrics import roc_auc  # noqa: E402
from model.grid import chunk_grid  # noqa: E402
from model.inference import DetectOptions, detect  # noqa: E402
from model.preprocess import network_input  # noqa: E402
from model.raster import RasterSource  # noqa: E402
from model.trainingdata.scene import write_sample_scene  # noqa: E402


def chunk_labels(chunks, patches):
    """{chunk_id: 1 | 0}: 1 when a patch's bbox lies inside the chunk, 0 when none touches it."""
    labels = {}
    for c in chunks:
        x0, y0, x1, y1 = c["x_off"], c["y_off"], c["x_off"] + c["width"], c["y_off"] + c["height"]
        inside = touching = False
        for p in patches:
            px0, py0, px1, py1 = p["bbox"]
            if px0 >= x0 and py0 >= y0 and px1 <= x1 and py1 <= y1:
                inside = True
            if px0 < x1 and px1 > x0 and py0 < y1 and py1 > y0:
                touching = True
        if inside:
            labels[c["chunk_id"]] = 1
        elif not touching:
            labels[c["chunk_id"]] = 0
    return labels


def raw_logits(metadata, chunks):
    """The uncalibrated logits back from the rounded probabilities (for differences only)."""
    p = np.clip(np.array([c["probability"] for c in chunks], float), 1e-5, 1 - 1e-5)
    z = np.log(p / (1 - p))
    cal = metadata.get("calibration")
    return (z - cal["b"]) / cal["a"] if cal else z


def decomposition(raster, network, metadata, stride):
    """Mean |logit difference| on the same chunks: own stretch vs the tiles' stretch (chunks cut
    from the stretched tiles, scored alone), and chunks alone vs read off the tiles' score map."""
    from model.network import logit_model

    input_size, chunk_size = metadata["input_size"], metadata["chunk_size"]
    mapper = scoremap.ScoreMapper(network, metadata["architecture"])
    scorer = logit_model(network)
    with RasterSource(raster) as source:
        info = source.info
        geometry = scoremap.MapGeometry(info.width, info.height, chunk_size, stride, input_size, mapper.cell)
        tiles = scoremap.windows(geometry)
        height, width = max(t.y1 for t in tiles), max(t.x1 for t in tiles)
        raw, valid, canvas = np.zeros((height, width), np.float32), np.zeros((height, width), bool), np.zeros((height, width), np.float32)
        for t in tiles:
            d, v = scoremap.read_window(source, geometry, t)
            raw[t.y0 : t.y1, t.x0 : t.x1], valid[t.y0 : t.y1, t.x0 : t.x1] = d, v
            canvas[t.y0 : t.y1, t.x0 : t.x1] = network_input(d, v, metadata["normalisation"])
        score_map = scoremap.score_canvas(source, geometry, mapper, metadata["normalisation"])
        own, canvas_alone, canvas_conv = [], [], []
        for w in chunk_grid(info.width, info.height, chunk_size, stride):
            top, left = w.row * geometry.stride_net, w.col * geometry.stride_net
            d, v = raw[top : top + input_size, left : left + input_size], valid[top : top + input_size, left : left + input_size]
            if v.mean() < 0.5:
                continue
            own.append(network_input(d, v, metadata["normalisation"]))
            canvas_alone.append(canvas[top : top + input_size, left : left + input_size])
            canvas_conv.append(score_map.chunk_logit(w.row, w.col))
    a = np.asarray(scorer.predict_on_batch(np.stack(own)[..., None])).reshape(-1)
    b = np.asarray(scorer.predict_on_batch(np.stack(canvas_alone)[..., None])).reshape(-1)
    c = np.asarray(canvas_conv)
    return {"chunks": len(a), "normalisation_mad": float(np.abs(a - b).mean()), "context_mad": float(np.abs(b - c).mean()), "total_mad": float(np.abs(a - c).mean())}


def plant_on_corner(path, corner, seed, contrast=(0.2, 0.3)):
    """One ice patch centred near raster pixel `corner` (a per-chunk grid corner), written into the
    GeoTIFF; overviews rebuilt. Returns the patch's bbox (x0, y0, x1, y1)."""
    from osgeo import gdal

    from model.trainingdata.ice.rendered_caster import implant_ice_patches

    cx, cy = corner
    half = 192
    ds = gdal.Open(path, gdal.GA_Update)
    band = ds.GetRasterBand(1)
    dn = band.ReadAsArray(cx - half, cy - half, 2 * half, 2 * half).astype(np.float64)
    image = dn / 1023.0
    allowed = np.zeros(image.shape, bool)
    allowed[half - 80 : half + 80, half - 80 : half + 80] = dn[half - 80 : half + 80, half - 80 : half + 80] > 0
    new, _mask, infos = implant_ice_patches(image, np.random.default_rng(seed), count=1, min_size_px=24, max_size_fraction=0.2,
                                            contrast_range=contrast, valid=allowed, return_info=True)
    out = np.clip(np.rint(new * 1023), 1, 1023).astype(np.uint16)
    out[dn == 0] = 0
    band.WriteArray(out, cx - half, cy - half)
    ds.BuildOverviews("AVERAGE", [2, 4, 8, 16])
    ds = None
    r0, c0, r1, c1 = infos[0]["bbox"]
    return (cx - half + c0, cy - half + r0, cx - half + c1, cy - half + r1)


def print_scene(row):
    print(f"{'seed':>4} {'stride':>6} {'route':>5} {'chunks':>6} {'wall s':>7} {'AUC':>6} {'labelled':>8} {'icy':>4} {'logit MAD':>9} {'p MAD':>6}")
    for r in row["runs"]:
        mad = f"{r['logit_mad_vs_chunk']:9.3f} {r['p_mad_vs_chunk']:6.3f}" if "logit_mad_vs_chunk" in r else ""
        print(f"{row['seed']:>4} {r['stride']:>6} {r['route']:>5} {r['chunks']:>6} {r['wall_s']:>7.1f} {r['auc']:>6.3f} {r['labelled']:>8} {r['icy']:>4} {mad}")
    for stride, dec in row["decomposition"].items():
        print(f"     stride {stride}: logit MAD on {dec['chunks']} chunks: normalisation {dec['normalisation_mad']:.3f}, context {dec['context_mad']:.3f}, both {dec['total_mad']:.3f}")
    sys.stdout.flush()


def print_corner(e):
    print(f"patch on a per-chunk grid corner, seed {e['seed']} corner {e['corner']} bbox {e['patch_bbox']}: p max of the 4 per-chunk chunks sharing it "
          f"{e['per_chunk_sharing_corner_max']:.3f}, of the whole per-chunk grid {e['per_chunk_grid_max']:.3f}; best dense chunk covering it: "
          f"map route {e['dense_map_best_covering']}, per-chunk route {e['dense_chunk_best_covering']} -> {'found' if e['found'] else 'NOT found'}", flush=True)


def timed_detect(raster, model_path="", **options):
    """Detect with ``model_path`` (the bundled model when empty) and its wall time."""
    t = time.monotonic()
    d = detect(raster, model_path, DetectOptions(**options))
    return d, time.monotonic() - t


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="4096x3072")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--corner-seeds", default="0,1,2,3,4")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    network, metadata = modelfile.load("")
    print(f"model {modelfile.describe(metadata)}, scenes {args.size}", flush=True)
    chunk = metadata["chunk_size"]
    out = {"model": modelfile.describe(metadata), "size": args.size, "scenes": [], "corners": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in (int(s) for s in args.seeds.split(",") if s):
            raster = os.path.join(tmp, f"scene{seed}.tif")
            scene = write_sample_scene(raster, width=width, height=height, rng_seed=seed)
            row = {"seed": seed, "patches": len(scene["ice_patches"]), "runs": [], "decomposition": {}}
            per_chunk = {}
            for stride in (chunk, chunk // 2, chunk // 4):
                for route in ("chunk", "map"):
                    d, wall = timed_detect(raster, stride=stride, scoring=route)
                    labels = chunk_labels(d.chunks, scene["ice_patches"])
                    scored = [c for c in d.chunks if c["chunk_id"] in labels]
                    run = {"stride": stride, "route": route, "chunks": len(d.chunks), "wall_s": round(wall, 2),
                           "auc": roc_auc([c["probability"] for c in scored], [labels[c["chunk_id"]] for c in scored]),
                           "labelled": len(scored), "icy": int(sum(labels[c["chunk_id"]] for c in scored))}
                    per_chunk[(stride, route)] = d.chunks
                    row["runs"].append(run)
                a, b = per_chunk[(stride, "chunk")], per_chunk[(stride, "map")]
                ids = {c["chunk_id"] for c in a} & {c["chunk_id"] for c in b}
                a = [c for c in a if c["chunk_id"] in ids]
                b = [c for c in b if c["chunk_id"] in ids]
                row["runs"][-1]["logit_mad_vs_chunk"] = float(np.abs(raw_logits(metadata, a) - raw_logits(metadata, b)).mean())
                row["runs"][-1]["p_mad_vs_chunk"] = float(np.mean([abs(x["probability"] - y["probability"]) for x, y in zip(a, b)]))
                row["decomposition"][stride] = decomposition(raster, network, metadata, stride)
            out["scenes"].append(row)
            print_scene(row)
            os.remove(raster)
        # Patches on a corner of the per-chunk grid.
        for seed in (int(s) for s in args.corner_seeds.split(",") if s):
            raster = os.path.join(tmp, f"corner{seed}.tif")
            write_sample_scene(raster, width=3072, height=3072, rng_seed=100 + seed, ice=False)
            corner = (chunk, chunk) if seed % 2 == 0 else (2 * chunk, chunk)
            bbox = plant_on_corner(raster, corner, seed)
            coarse, _ = timed_detect(raster, scoring="chunk")
            sharing = [c["probability"] for c in coarse.chunks if c["x_off"] < corner[0] <= c["x_off"] + c["width"] and c["y_off"] < corner[1] <= c["y_off"] + c["height"]]
            entry = {"seed": seed, "corner": corner, "patch_bbox": bbox, "per_chunk_sharing_corner_max": max(sharing), "per_chunk_grid_max": max(c["probability"] for c in coarse.chunks)}
            for route in ("map", "chunk"):
                dense, _ = timed_detect(raster, stride=chunk // 2, scoring=route)
                covering = [c["probability"] for c in dense.chunks if c["x_off"] <= bbox[0] and c["y_off"] <= bbox[1] and c["x_off"] + c["width"] >= bbox[2] and c["y_off"] + c["height"] >= bbox[3]]
                entry[f"dense_{route}_best_covering"] = max(covering) if covering else None
            # Found: the dense grid's best chunk over the patch beats the per-chunk grid's chunks at that corner.
            entry["found"] = entry["dense_map_best_covering"] is not None and entry["dense_map_best_covering"] > entry["per_chunk_sharing_corner_max"]
            out["corners"].append(entry)
            print_corner(entry)
            os.remove(raster)

    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(out, handle, indent=1, default=str)


if __name__ == "__main__":
    main()

"""Detect on a whole HiRISE-like observation: speed, memory and the paper's way, in one run (issue 10).

Generates once and caches under build/bench-scenes/ a 20,000 x 50,000 scene like a RED RDR:
UInt16 holding 10-bit DNs (real HiRISE browse crops from ../shared/data tiled over it, or
smoothed noise where those are absent; with --terrain strip, the full-resolution strip of
../shared/data mirrored over it), a rotated footprint in a DN-0 border, a Mars
equirectangular CRS. It is written in strips as a tiled DEFLATE GeoTIFF, then as a lossless
JPEG2000 with resolution levels and 1024-px tiles like the real RDRs; the GeoTIFF also gets
external overviews under a hard-linked second name (no second copy of the pixels).

Then, the model's ONNX exports made once (as a machine's first detect does), and each detect in
a fresh worker-like process, per format: chunks, wall time (taking up the model, which with its
exports cached loads no TensorFlow, and again with it taken up, as a warm worker's later images), end-to-end chunks/s, the network alone on as many chunks from memory (same model, same batch, the runtime
detect uses: model/runtime.py, each chunk and its mirror as detect's default TTA), peak RSS,
GDAL's decimated reads with and without overviews / resolution levels and the engine's chunk
reads, STRIDE = CHUNK/2
against STRIDE = CHUNK (both scoring routes), and the paper's way: write every 1024-px chunk
to a file, then load and classify the files. --memory-4x adds detect on a 2 x 2 mosaic (VRT) of
the GeoTIFF, four times the area, for its peak RSS.

    nice -n 19 .venv/bin/python benchmarks/scene.py [--scale 0.25] [--terrain strip] [--model FILE] [--memory-4x] [--json FILE]
"""

import argparse
import glob
import json
import math
import os
import shutil
import subprocess
import sys
import time
from xml.sax.saxutils import escape

import numpy as np
from osgeo import gdal, osr

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from model import files  # noqa: E402
from model.averaging import RESAMPLING  # noqa: E402
from model.grid import chunk_grid  # noqa: E402
from model.raster import RasterSource  # noqa: E402

SCENE_DIR = os.path.join(REPO, "build", "bench-scenes")
FULL_SIZE = (20000, 50000)  # width, height of a RED observation
MARS_RADIUS_M = 3396190.0
PIXEL_M = 0.25
STANDARD_PARALLEL = -55.0
FOOTPRINT_ANGLE_DEG = 8.0
STRIP_ROWS = 1024
TERRAIN_TILES = os.path.join(REPO, "..", "shared", "data", "hirise-terrain*", "tiles", "*.jpg")
TILE_COUNT = 256
# --terrain strip: the full-resolution EDR strip (1024 x 4000 px) mirrored over the scene, so
# every seam continues the ground, unlike the crops' patchwork, whose brightness steps every 227
# px the model reads as ice in a quarter of the chunks (and the map route then rescores).
FULLRES_STRIP = os.path.join(REPO, "..", "shared", "data", "hirise-fullres", "PSP_002733_1880_EDR_fullres_sample.png")
TERRAINS = ("crops", "strip")
READ_SAMPLE = 200  # chunk windows timed per decimated-read measurement
# Each read measurement starts with GDAL's block cache emptied and then held to about what detect
# gives a row of chunks, so that no measurement reads blocks an earlier one left decoded.
READ_CACHE_BYTES = 64 << 20
TARGETS = {"end_to_end_over_network": 0.9, "peak_rss_mb": 1536.0, "stride_half_over_full": 1.3}

# VmHWM, not getrusage's ru_maxrss: Linux keeps ru_maxrss across fork and exec, so a child would
# report the benchmark's own peak (its GDAL cache after the decimated reads) as its own.
PEAK_RSS = r"""
def peak_rss_mb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
"""

DETECT_CHILD = PEAK_RSS + r"""
import json, sys, time
sys.path.insert(0, {repo!r})
from model.inference import DetectOptions, detect
from model.warm import warm_model
options = DetectOptions(batch_size={batch}, stride={stride}, scoring={scoring!r})
t = time.monotonic()
loaded = warm_model({model!r})  # as a worker keeps it; the exports are cached (EXPORT_CHILD), so no TensorFlow
d = detect({raster!r}, {model!r}, options, loaded=loaded)
wall = time.monotonic() - t
# Once more with the model in memory, as a warm worker scores every image after its first.
t = time.monotonic()
d = detect({raster!r}, {model!r}, options, loaded=loaded)
warm = time.monotonic() - t
print(json.dumps({{"chunks": d.summary["chunks"], "wall_s": wall, "warm_wall_s": warm, "detect_network_chunks_per_s": d.summary["chunks_per_s"],
                  "peak_rss_mb": peak_rss_mb(), "tensorflow_loaded": "tensorflow" in sys.modules}}))
"""

# Once per model and machine, before anything is timed: the ONNX exports detect finds by the
# model file's digest (model/runtime.py), for both routes.
EXPORT_CHILD = r"""
import json, sys
sys.path.insert(0, {repo!r})
from model import modelfile, runtime
metadata = modelfile.read_metadata({model!r})
saved = runtime.SavedNetwork({model!r}, metadata)
print(json.dumps({{"runtimes": [runtime.logit_scorer(saved).name, runtime.map_scorer(saved, metadata["architecture"]).name]}}))
"""

NETWORK_CHILD = r"""
import json, sys, time
sys.path.insert(0, {repo!r})
import numpy as np
from model import modelfile, runtime
from model.chunking import iter_chunks
from model.gdalstate import gdal_exceptions
from model.inference import DetectOptions
from model.preprocess import network_input
from model.raster import RasterSource
mirror = DetectOptions().tta  # as detect scores by default: each chunk and its east-west mirror
network, metadata = modelfile.load({model!r})
size, input_size = metadata["chunk_size"], metadata["input_size"]
images = []
with gdal_exceptions(), RasterSource({raster!r}) as source:
    for sample in iter_chunks(source, size, size, 0.95, input_size):
        images.append(network_input(sample.data, sample.valid, metadata["normalisation"]))
        if len(images) == 4 * {batch}:
            break
images = np.stack(images)[..., None]
order = np.arange({chunks}) % len(images)
batches = [images[order[i : i + {batch}]] for i in range(0, {chunks}, {batch})]
scorer = runtime.logit_scorer(network)  # what detect scores with
scorer(batches[0])  # building the graph is start-up, not the network's speed
t = time.monotonic()
for batch in batches:
    runtime.chunk_logits(scorer, batch, mirror)
print(json.dumps({{"network_chunks_per_s": {chunks} / (time.monotonic() - t), "runtime": scorer.name, "mirror": mirror}}))
"""

PAPER_CHILD = PEAK_RSS + r"""
import json, os, sys, time
sys.path.insert(0, {repo!r})
import tensorflow
import numpy as np
from model import modelfile, runtime
from model.chunking import ChunkExport, iter_chunks
from model.gdalstate import gdal_exceptions
from model.grid import chunk_grid
from model.preprocess import network_input
from model.raster import RasterSource
t = time.monotonic()
network, metadata = modelfile.load({model!r})
scorer = runtime.logit_scorer(network)  # the same runtime as detect: the comparison is of the pipelines
size, input_size = metadata["chunk_size"], metadata["input_size"]
with gdal_exceptions():
    with RasterSource({raster!r}) as source:
        info = source.info
    with ChunkExport({folder!r}) as export:
        for window in chunk_grid(info.width, info.height, size, size):
            export.add({raster!r}, window, info.image_id)
        paths = export.commit()
    written = time.monotonic()
    images, kept = [], 0
    for path in paths:
        with RasterSource(path) as chunk:
            for sample in iter_chunks(chunk, size, size, 0.95, input_size):
                images.append(network_input(sample.data, sample.valid, metadata["normalisation"]))
        if len(images) == {batch} or (path == paths[-1] and images):
            scorer(np.stack(images)[..., None])
            kept += len(images)
            images = []
end = time.monotonic()
megabytes = sum(os.path.getsize(p) for p in paths) / 1e6
print(json.dumps({{"files": len(paths), "chunks": kept, "write_s": written - t, "classify_s": end - written, "wall_s": end - t,
                  "files_mb": megabytes, "peak_rss_mb": peak_rss_mb()}}))
"""


def mars_equirectangular_wkt() -> str:
    """A HiRISE RDR's kind of CRS: equirectangular on the Mars sphere with a non-zero standard parallel."""
    srs = osr.SpatialReference()
    srs.SetGeogCS("Mars 2000 sphere", "D_Mars_2000_Sphere", "Mars_2000_Sphere", MARS_RADIUS_M, 0.0, "Reference_Meridian", 0.0)
    srs.SetEquirectangular2(0.0, 0.0, STANDARD_PARALLEL, 0.0, 0.0)
    srs.SetProjCS("Equirectangular MARS")
    srs.SetLinearUnits("metre", 1.0)
    return srs.ExportToWkt()


def scene_size(scale: float):
    return int(round(FULL_SIZE[0] * scale)), int(round(FULL_SIZE[1] * scale))


def scene_paths(scale: float, terrain: str = "crops") -> dict:
    width, height = scene_size(scale)
    stem = os.path.join(SCENE_DIR, f"ESP_BENCH_{width}x{height}{'' if terrain == 'crops' else '_' + terrain.upper()}_RED")
    return {"GeoTIFF": stem + ".tif", "GeoTIFF+overviews": stem + "_OVR.tif", "JPEG2000": stem + ".jp2", "4x mosaic (VRT)": stem + "_4X.vrt"}


def terrain_tiles(rng: np.random.Generator) -> np.ndarray:
    """(n, h, w) float32 real HiRISE crops in [0, 1], or smoothed noise where ../shared is absent."""
    paths = sorted(glob.glob(TERRAIN_TILES))
    if paths:
        chosen = rng.choice(len(paths), size=min(TILE_COUNT, len(paths)), replace=False)
        return np.stack([gdal.Open(paths[i]).ReadAsArray().astype(np.float32) / 255.0 for i in chosen])
    coarse = rng.random((TILE_COUNT, 30, 30)).astype(np.float32)
    return np.kron(coarse, np.ones((8, 8), np.float32))[:, :227, :227]


def mirrored_strip() -> np.ndarray:
    """The full-resolution strip and its mirrors, 2 x 2, in [0, 1]: tiled, it repeats without a seam."""
    if not os.path.exists(FULLRES_STRIP):
        raise SystemExit(f"--terrain strip needs {FULLRES_STRIP} (../shared/data beside the checkout)")
    strip = gdal.Open(FULLRES_STRIP).ReadAsArray().astype(np.float32) / 255.0
    return np.block([[strip, strip[:, ::-1]], [strip[::-1], strip[::-1, ::-1]]])


def footprint_rectangle(width: int, height: int):
    """Half-sides of the swath rectangle that, rotated by FOOTPRINT_ANGLE_DEG, fits the raster with a 1 % margin."""
    c, s = math.cos(math.radians(FOOTPRINT_ANGLE_DEG)), math.sin(math.radians(FOOTPRINT_ANGLE_DEG))
    box_w, box_h = 0.98 * width, 0.98 * height
    # w c + h s = box_w and w s + h c = box_h for the swath's width w and length h.
    det = c * c - s * s
    return (box_w * c - box_h * s) / det / 2.0, (box_h * c - box_w * s) / det / 2.0


def scene_strip(y0: int, rows: int, width: int, height: int, tiles: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rows y0..y0+rows of the scene as UInt16: tiles laid on a fixed grid, flipped and shifted in
    brightness per tile (crops, n x h x w), or one mirrored strip repeated (h x w), grain, 10-bit
    DNs 1..1023 inside the footprint and 0 outside."""
    y = np.arange(y0, y0 + rows)
    x = np.arange(width)
    if tiles.ndim == 2:
        values = tiles[(y % tiles.shape[0])[:, None], (x % tiles.shape[1])[None, :]]
        gain = 1.0
    else:
        tile = tiles.shape[1]
        tile_row, tile_col = y // tile, x // tile
        # Which crop, flip and gain each grid tile gets: a fixed function of its position, so strips agree.
        key = (tile_row[:, None] * 7919 + tile_col[None, :] * 104729) % 2147483647
        index = key % len(tiles)
        values = tiles[index, (y % tile)[:, None], (x % tile)[None, :]]
        flipped = (key // len(tiles)) % 2 == 1
        values = np.where(flipped, tiles[index, (y % tile)[:, None], (tile - 1 - x % tile)[None, :]], values)
        gain = 0.6 + 0.4 * ((key // 7) % 97) / 96.0
    dn = 80.0 + 700.0 * values * gain + rng.normal(0.0, 6.0, values.shape)
    half_w, half_h = footprint_rectangle(width, height)
    c, s = math.cos(math.radians(FOOTPRINT_ANGLE_DEG)), math.sin(math.radians(FOOTPRINT_ANGLE_DEG))
    u = (x[None, :] + 0.5 - width / 2.0) * c + (y[:, None] + 0.5 - height / 2.0) * s
    v = -(x[None, :] + 0.5 - width / 2.0) * s + (y[:, None] + 0.5 - height / 2.0) * c
    inside = (np.abs(u) <= half_w) & (np.abs(v) <= half_h)
    return np.where(inside, np.clip(np.round(dn), 1, 1023), 0).astype(np.uint16)


def write_geotiff(path: str, width: int, height: int, terrain: str = "crops") -> None:
    partial = files.prepare(path)
    ds = gdal.GetDriverByName("GTiff").Create(partial, width, height, 1, gdal.GDT_UInt16, ["TILED=YES", "COMPRESS=DEFLATE", "BIGTIFF=IF_SAFER"])
    ds.SetProjection(mars_equirectangular_wkt())
    top = MARS_RADIUS_M * math.radians(STANDARD_PARALLEL) + height / 2.0 * PIXEL_M
    ds.SetGeoTransform((-width / 2.0 * PIXEL_M, PIXEL_M, 0.0, top, 0.0, -PIXEL_M))
    band = ds.GetRasterBand(1)
    band.SetNoDataValue(0)
    rng = np.random.default_rng(7)
    tiles = terrain_tiles(rng) if terrain == "crops" else mirrored_strip()
    for y0 in range(0, height, STRIP_ROWS):
        band.WriteArray(scene_strip(y0, min(STRIP_ROWS, height - y0), width, height, tiles, rng), 0, y0)
        print(f"\r  {path}: {min(y0 + STRIP_ROWS, height)}/{height} rows", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    ds = None
    files.commit(partial, path)


def write_jpeg2000(source: str, path: str) -> None:
    """Lossless, 10 bits, 1024-px tiles and enough resolution levels to reach a chunk's input scale and beyond."""
    partial = files.prepare(path)
    # The CRS goes in the GeoJP2 box; GMLJP2 cannot describe an equirectangular projection.
    options = ["REVERSIBLE=YES", "QUALITY=100", "NBITS=10", "RESOLUTIONS=6", "BLOCKXSIZE=1024", "BLOCKYSIZE=1024", "PROGRESSION=RPCL", "GMLJP2=NO"]
    gdal.Translate(partial, source, format="JP2OpenJPEG", creationOptions=options, callback=gdal.TermProgress_nocb)
    files.commit(partial, path)
    if os.path.exists(partial + ".aux.xml"):  # the no-data value, which JPEG2000 cannot hold
        os.replace(partial + ".aux.xml", path + ".aux.xml")


def write_overviews(source: str, path: str) -> None:
    """``path`` is a hard link to the GeoTIFF with external overviews (path.ovr): the same pixels, found with and without them."""
    if os.path.exists(path):
        os.remove(path)
    os.link(source, path)
    ds = gdal.Open(path, gdal.GA_ReadOnly)
    gdal.SetConfigOption("COMPRESS_OVERVIEW", "DEFLATE")
    try:
        ds.BuildOverviews("AVERAGE", [2, 4, 8, 16, 32], callback=gdal.TermProgress_nocb)
    finally:
        gdal.SetConfigOption("COMPRESS_OVERVIEW", None)
    ds = None


def write_mosaic(source: str, path: str) -> None:
    """A 2 x 2 mosaic of the scene as a VRT: four times the area for the memory check, no copy of the pixels."""
    ds = gdal.Open(source)
    width, height = ds.RasterXSize, ds.RasterYSize
    tiles = "".join(
        f'<SimpleSource><SourceFilename relativeToVRT="1">{os.path.basename(source)}</SourceFilename><SourceBand>1</SourceBand>'
        f'<SrcRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/><DstRect xOff="{dx * width}" yOff="{dy * height}" xSize="{width}" ySize="{height}"/></SimpleSource>'
        for dy in (0, 1)
        for dx in (0, 1)
    )
    geotransform = ", ".join(repr(v) for v in ds.GetGeoTransform())
    with open(path, "w") as handle:
        handle.write(
            f'<VRTDataset rasterXSize="{2 * width}" rasterYSize="{2 * height}"><SRS>{escape(ds.GetProjection())}</SRS><GeoTransform>{geotransform}</GeoTransform>'
            f'<VRTRasterBand dataType="UInt16" band="1"><NoDataValue>0</NoDataValue>{tiles}</VRTRasterBand></VRTDataset>'
        )


def ensure_scene(scale: float, terrain: str = "crops") -> dict:
    paths = scene_paths(scale, terrain)
    os.makedirs(SCENE_DIR, exist_ok=True)
    width, height = scene_size(scale)
    steps = [
        ("GeoTIFF", lambda: write_geotiff(paths["GeoTIFF"], width, height, terrain)),
        ("JPEG2000", lambda: write_jpeg2000(paths["GeoTIFF"], paths["JPEG2000"])),
        ("GeoTIFF+overviews", lambda: write_overviews(paths["GeoTIFF"], paths["GeoTIFF+overviews"])),
        ("4x mosaic (VRT)", lambda: write_mosaic(paths["GeoTIFF"], paths["4x mosaic (VRT)"])),
    ]
    for name, make in steps:
        if not os.path.exists(paths[name]) or (name == "GeoTIFF+overviews" and not os.path.exists(paths[name] + ".ovr")):
            t = time.monotonic()
            make()
            print(f"  made {name}: {paths[name]} in {time.monotonic() - t:.0f} s", file=sys.stderr)
    return paths


def decimated_reads_per_s(path: str, chunk_size: int, input_size: int, use_overviews: bool) -> float:
    """Chunks/s of GDAL alone reading chunk windows at the network's scale, as model/raster.py does,
    over READ_SAMPLE windows spread through the grid; OVERVIEW_LEVEL=NONE hides overviews and resolution levels."""
    empty_block_cache()
    ds = gdal.OpenEx(path, gdal.OF_RASTER, open_options=[] if use_overviews else ["OVERVIEW_LEVEL=NONE"])
    band = ds.GetRasterBand(1)
    sample = read_sample(ds.RasterXSize, ds.RasterYSize, chunk_size)
    scale = input_size / chunk_size
    t = time.monotonic()
    for w in sample:
        band.ReadAsArray(w.x_off, w.y_off, w.width, w.height, buf_xsize=max(1, round(w.width * scale)), buf_ysize=max(1, round(w.height * scale)), buf_type=gdal.GDT_Float32, resample_alg=RESAMPLING)
    return len(sample) / (time.monotonic() - t)


def engine_reads_per_s(path: str, chunk_size: int, input_size: int) -> float:
    """Chunks/s of the engine's own chunk reads (model/raster.py: GDAL's levels where the file has
    them, else full-resolution windows it averages itself) over the same windows as decimated_reads_per_s."""
    empty_block_cache()
    with RasterSource(path) as source:
        sample = read_sample(source.info.width, source.info.height, chunk_size)
        t = time.monotonic()
        for w in sample:
            source.read_chunk(w, chunk_size, input_size)
        return len(sample) / (time.monotonic() - t)


def read_sample(width: int, height: int, chunk_size: int) -> list:
    """READ_SAMPLE chunk windows spread through the grid, the same for every read measurement."""
    windows = list(chunk_grid(width, height, chunk_size, chunk_size))
    return windows[:: max(1, len(windows) // READ_SAMPLE)][:READ_SAMPLE]


def empty_block_cache() -> None:
    gdal.SetCacheMax(0)
    gdal.SetCacheMax(READ_CACHE_BYTES)


def run_child(code: str) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def detect_run(raster: str, model: str, batch: int, stride, scoring: str = "chunk") -> dict:
    return run_child(DETECT_CHILD.format(repo=REPO, raster=raster, model=model, batch=batch, stride=stride, scoring=scoring))


def measure(paths: dict, model: str, batch: int, memory_4x: bool, metadata: dict) -> dict:
    chunk_size, input_size = metadata["chunk_size"], metadata["input_size"]
    half = chunk_size // 2
    run_child(EXPORT_CHILD.format(repo=REPO, model=model))
    rows = []
    for name in ("GeoTIFF", "GeoTIFF+overviews", "JPEG2000"):
        path = paths[name]
        print(f"  {name} ...", file=sys.stderr, flush=True)
        row = {"format": name, "file_mb": round(os.path.getsize(path) / 1e6 + (os.path.getsize(path + ".ovr") / 1e6 if os.path.exists(path + ".ovr") else 0.0))}
        row.update(detect_run(path, model, batch, None))
        row["end_to_end_chunks_per_s"] = row["chunks"] / row["wall_s"]
        row["warm_end_to_end_chunks_per_s"] = row["chunks"] / row["warm_wall_s"]
        row.update(run_child(NETWORK_CHILD.format(repo=REPO, raster=path, model=model, batch=batch, chunks=row["chunks"])))
        row["end_to_end_over_network"] = row["end_to_end_chunks_per_s"] / row["network_chunks_per_s"]
        row["warm_end_to_end_over_network"] = row["warm_end_to_end_chunks_per_s"] / row["network_chunks_per_s"]
        row["reads_per_s_with_levels"] = decimated_reads_per_s(path, chunk_size, input_size, True)
        row["reads_per_s_without_levels"] = decimated_reads_per_s(path, chunk_size, input_size, False)
        row["engine_reads_per_s"] = engine_reads_per_s(path, chunk_size, input_size)
        if name != "GeoTIFF+overviews":  # the stride costs the same whatever finds the decimated pixels
            for scoring in ("chunk", "map"):
                dense = detect_run(path, model, batch, half, scoring)
                row[f"stride_half_{scoring}"] = dense
                row[f"stride_half_over_full_{scoring}"] = dense["warm_wall_s"] / row["warm_wall_s"]
        rows.append(row)
    folder = os.path.join(SCENE_DIR, "paper-chunks")
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    print("  the paper's way ...", file=sys.stderr, flush=True)
    try:
        paper = run_child(PAPER_CHILD.format(repo=REPO, raster=paths["GeoTIFF"], model=model, batch=batch, folder=folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    paper["ours_speedup"] = paper["wall_s"] / rows[0]["wall_s"]
    result = {"formats": rows, "paper": paper}
    if memory_4x:
        print("  4x mosaic ...", file=sys.stderr, flush=True)
        big = detect_run(paths["4x mosaic (VRT)"], model, batch, None)
        big["rss_over_scene"] = big["peak_rss_mb"] / rows[0]["peak_rss_mb"]
        result["memory_4x"] = big
    return result


def targets(result: dict) -> list:
    """(target, measured, met) lines."""
    lines = []
    for row in result["formats"]:
        name = row["format"]
        lines.append((f"{name}: end-to-end >= {TARGETS['end_to_end_over_network']}x network-only (model loaded, as a warm worker)", f"{row['warm_end_to_end_over_network']:.2f}x (loading it too: {row['end_to_end_over_network']:.2f}x)", row["warm_end_to_end_over_network"] >= TARGETS["end_to_end_over_network"]))
        peak = max([row["peak_rss_mb"]] + [row[k]["peak_rss_mb"] for k in ("stride_half_chunk", "stride_half_map") if k in row])
        lines.append((f"{name}: peak RSS <= {TARGETS['peak_rss_mb']:.0f} MB", f"{peak:.0f} MB", peak <= TARGETS["peak_rss_mb"]))
        for scoring in ("chunk", "map"):
            key = f"stride_half_over_full_{scoring}"
            if key in row:
                lines.append((f"{name}: STRIDE=CHUNK/2 ({scoring} route) <= {TARGETS['stride_half_over_full']}x STRIDE=CHUNK", f"{row[key]:.2f}x", row[key] <= TARGETS["stride_half_over_full"]))
    if "memory_4x" in result:
        big = result["memory_4x"]
        lines.append(("4x area: peak RSS no more than the scene's (5 % slack)", f"{big['peak_rss_mb']:.0f} MB, {big['rss_over_scene']:.2f}x", big["rss_over_scene"] <= 1.05 and big["peak_rss_mb"] <= TARGETS["peak_rss_mb"]))
    return lines


def print_tables(scene: str, result: dict) -> None:
    print(f"\n{scene}")
    print("wall s: detect with loading the model / with the model loaded (a warm worker's later images); e2e ch/s and e2e/net: model loaded; S/2: model loaded")
    print(f"{'format':<18} {'MB':>6} {'chunks':>6} {'wall s':>11} {'e2e ch/s':>8} {'net ch/s':>8} {'e2e/net':>7} {'RSS MB':>6} {'reads/s lvl':>11} {'reads/s full':>12} {'engine':>7} {'S/2 chunk':>9} {'S/2 map':>7}")
    for r in result["formats"]:
        dense = "".join(f" {r[k]:8.2f}x" if k in r else f" {'-':>9}" for k in ("stride_half_over_full_chunk", "stride_half_over_full_map"))
        print(
            f"{r['format']:<18} {r['file_mb']:6d} {r['chunks']:6d} {r['wall_s']:5.1f} / {r['warm_wall_s']:3.1f} {r['warm_end_to_end_chunks_per_s']:8.2f} {r['network_chunks_per_s']:8.2f} "
            f"{r['warm_end_to_end_over_network']:7.2f} {r['peak_rss_mb']:6.0f} {r['reads_per_s_with_levels']:11.1f} {r['reads_per_s_without_levels']:12.1f} {r['engine_reads_per_s']:7.1f}{dense}"
        )
    p = result["paper"]
    print(
        f"paper's way (GeoTIFF): {p['files']} chunk files ({p['files_mb']:.0f} MB) written in {p['write_s']:.1f} s, {p['chunks']} loaded and classified in "
        f"{p['classify_s']:.1f} s: {p['wall_s']:.1f} s, {p['chunks'] / p['wall_s']:.2f} chunks/s, peak RSS {p['peak_rss_mb']:.0f} MB; detect is {p['ours_speedup']:.2f}x faster"
    )
    if "memory_4x" in result:
        b = result["memory_4x"]
        print(f"4x area (2 x 2 VRT mosaic): {b['chunks']} chunks in {b['wall_s']:.1f} s, peak RSS {b['peak_rss_mb']:.0f} MB ({b['rss_over_scene']:.2f}x the scene's)")
    print("targets:")
    for target, measured, met in targets(result):
        print(f"  {'met    ' if met else 'NOT met'}  {target}: {measured}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="side scale of the 20,000 x 50,000 scene (0.25: 5,000 x 12,500)")
    parser.add_argument("--model", default="", help="model file (default: the bundled model)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--memory-4x", action="store_true", help="also detect on a 2 x 2 mosaic of the scene for its peak RSS")
    parser.add_argument("--terrain", choices=TERRAINS, default="crops", help="what the scene is made of: real terrain crops in a patchwork (default), or the full-resolution strip mirrored")
    parser.add_argument("--json", default="", help="where to write the results (default: build/bench-scenes/results-<width>x<height>.json)")
    args = parser.parse_args()
    from model import modelfile

    model = modelfile.resolve_model_path(args.model)
    metadata = modelfile.read_metadata(model)
    paths = ensure_scene(args.scale, args.terrain)
    width, height = scene_size(args.scale)
    started = time.monotonic()
    result = measure(paths, model, args.batch_size, args.memory_4x, metadata)
    load = os.getloadavg()
    result.update({"scene": {"width": width, "height": height, "terrain": args.terrain, "paths": paths}, "model": model, "batch_size": args.batch_size, "cpus": os.cpu_count(), "load_average_after": load, "run_s": time.monotonic() - started})
    result["targets"] = [{"target": t, "measured": m, "met": bool(ok)} for t, m, ok in targets(result)]
    out = args.json or os.path.join(SCENE_DIR, f"results-{width}x{height}{'' if args.terrain == 'crops' else '-' + args.terrain}.json")
    with open(out, "w") as handle:
        json.dump(result, handle, indent=1)
    print_tables(f"{width} x {height} scene, batch {args.batch_size}, network on {result['formats'][0]['runtime']}, {os.cpu_count()} CPUs, load average after the run {load[0]:.1f}; JSON: {out}", result)


if __name__ == "__main__":
    main()

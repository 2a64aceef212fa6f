"""The score-map route (model/scoremap.py): geometry in this process; the network in the worker.

Where a window is exactly one chunk the map route (on ONNX Runtime) must give the per-chunk
route's logit on Keras (1e-4), for the session's tiny model and for the bundled default model
(the paper's widths)."""

import json

import numpy as np
import pytest

import helpers
from model import scoremap
from model.grid import CENTRE_FRACTION, chunk_grid
from model.preprocess import valid_fractions


def test_map_route_needs_chunks_on_cell_corners():
    # The paper's model: 1024-px chunks read at 128 px, 16-px cells = 128 raster px.
    assert scoremap.map_route_problem(1024, 512, 128, 16) == ""
    assert scoremap.map_route_problem(1024, 256, 128, 16) == ""
    assert scoremap.map_route_problem(1024, 1024, 128, 16) == ""
    assert "stride" in scoremap.map_route_problem(1024, 300, 128, 16)
    assert "stride" in scoremap.map_route_problem(1024, 64, 128, 16)
    assert "input" in scoremap.map_route_problem(1024, 512, 120, 16)


@pytest.mark.parametrize("size,stride", [((3000, 2100), 512), ((1024, 1024), 256), ((5000, 1100), 1024), ((1100, 700), 256), ((2900, 1500), 2048)])
def test_tiles_are_the_chunks_of_the_chunk_stride_grid_and_own_the_canvas_once(size, stride):
    g = scoremap.MapGeometry(size[0], size[1], 1024, stride, 128, 16)
    tiles = scoremap.windows(g)
    owned = np.zeros(g.canvas, int)
    for t in tiles:
        assert (t.y1 - t.y0, t.x1 - t.x0) == (128, 128) and (t.y0 * 8) % 1024 == 0 and (t.x0 * 8) % 1024 == 0
        assert all(v % g.cell == 0 for v in t.owned_y + t.owned_x)
        assert (t.owned_y[0], t.owned_x[0]) == (t.y0, t.x0) and t.owned_y[1] == min(t.y1, g.canvas[0]) and t.owned_x[1] == min(t.x1, g.canvas[1])
        owned[t.owned_y[0] : t.owned_y[1], t.owned_x[0] : t.owned_x[1]] += 1
    assert (owned == 1).all()
    # The map's cells reach every chunk of the grid, and its raster cells cover the raster.
    for w in chunk_grid(size[0], size[1], 1024, stride):
        rows, cols = g.chunk_cells(w.row, w.col)
        assert rows.stop <= g.cells[0] and cols.stop <= g.cells[1]
    rows, cols = g.raster_cells
    assert (rows - 1) * 128 < size[1] <= rows * 128 and (cols - 1) * 128 < size[0] <= cols * 128


@pytest.mark.parametrize("stride", [256, 512, 1024])
def test_chunk_validity_summed_over_tiles_equals_each_chunk_alone(stride):
    """A chunk spans up to four tiles; its counted valid fractions must be what
    preprocess.valid_fractions gives on the chunk's own footprint (the per-chunk route's rule)."""
    g = scoremap.MapGeometry(2900, 2300, 1024, stride, 128, 16)
    rng = np.random.default_rng(3)
    canvas = np.zeros(g.canvas, bool)
    h, w = int(round(2300 / g.factor)), int(round(2900 / g.factor))
    canvas[:h, :w] = rng.random((h, w)) > 0.3
    canvas[:80, :] = False  # a no-data band: chunks partly and wholly in it
    counts = scoremap.ChunkValidity(g)
    for t in scoremap.windows(g):
        counts.add(t.owned_y[0], t.owned_x[0], canvas[t.owned_y[0] : t.owned_y[1], t.owned_x[0] : t.owned_x[1]])
    whole, centre = counts.fractions()
    for c in chunk_grid(2900, 2300, 1024, stride):
        used = (max(1, int(round(c.height / g.factor))), max(1, int(round(c.width / g.factor))))
        top, left = c.row * g.stride_net, c.col * g.stride_net
        expected = valid_fractions(canvas[top : top + g.input_size, left : left + g.input_size], used, CENTRE_FRACTION)
        assert (whole[c.row, c.col], centre[c.row, c.col]) == pytest.approx(expected, abs=1e-12), (c, expected)


@pytest.mark.parametrize("width,height,tiles,cells", [(64, 64, 1, [4, 4]), (64, 40, 1, [4, 4]), (150, 100, 6, [8, 12])])
def test_tiles_equal_the_chunks_alone_tiny_model(worker_python, tiny_model, make_raster, width, height, tiles, cells):
    """At STRIDE = CHUNK every tile is a chunk: an image of one chunk, one padded with no-data, and
    3 x 2 chunks with partial ones at the right and bottom in a no-data border: same logits
    on every chunk with valid pixels."""
    raster = make_raster(width=width, height=height, rotated_border=width > 64, nodata=0, seed=3, icy_chunk_size=64, icy_pattern=lambda r, c: (r + c) % 2 == 0)
    out = helpers.one_window(worker_python, raster.path, tiny_model.path)
    assert out["windows"] == tiles and out["cells"] == cells and out["runtime"] == "ONNX Runtime"
    assert len(out["alone"]) >= min(tiles, 4) and np.abs(np.array(out["alone"]) - np.array(out["map"])).max() < 1e-4, out
    assert out["whole"][0] == pytest.approx(out["whole"][1]) and out["centre"][0] == pytest.approx(out["centre"][1])


JOINED = r"""
import json
import numpy as np
from model.network import build_network, logit_model, multi_scale_from
coarse, fine = build_network(16, (4, 8, 8, 16), seed=1), build_network(32, (4, 8, 8, 16), seed=2)
joined = multi_scale_from({2: coarse, 1: fine}, 32, (4, 8, 8, 16))
x = np.random.default_rng(0).random((5, 32, 32, 1)).astype(np.float32)
halved = x.reshape(5, 16, 2, 16, 2, 1).mean(axis=(2, 4))
members = [np.asarray(logit_model(n).predict_on_batch(i)).reshape(-1) for n, i in ((coarse, halved), (fine, x))]
print(json.dumps({"members": [m.tolist() for m in members], "joined": np.asarray(logit_model(joined).predict_on_batch(x)).reshape(-1).tolist()}))
"""


def test_a_two_scale_network_starts_as_the_mean_of_its_members(worker_python):
    """multi_scale_from: the coarse trunk reads the 2 x 2 averages of the input as the coarse model
    reads a chunk at half the size; the joined logit is the mean of the two models' logits."""
    done = helpers.run_worker_snippet(worker_python, JOINED)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    coarse, fine = np.array(out["members"])
    assert np.abs(coarse - fine).max() > 1e-3  # two different networks
    assert np.abs(np.array(out["joined"]) - (coarse + fine) / 2).max() < 1e-5


@pytest.mark.parametrize("width,height,tiles,cells", [(64, 64, 1, [2, 2]), (150, 100, 6, [4, 6])])
def test_tiles_equal_the_chunks_alone_two_scale_model(worker_python, tiny_two_scale_model, make_raster, width, height, tiles, cells):
    """A two-scale network's map has its coarse trunk's cells (twice the fine trunk's), and still
    gives each chunk its logit alone."""
    raster = make_raster(width=width, height=height, rotated_border=width > 64, nodata=0, seed=3, icy_chunk_size=64, icy_pattern=lambda r, c: (r + c) % 2 == 0)
    out = helpers.one_window(worker_python, raster.path, tiny_two_scale_model)
    assert out["windows"] == tiles and out["cells"] == cells and out["runtime"] == "ONNX Runtime"
    assert np.abs(np.array(out["alone"]) - np.array(out["map"])).max() < 1e-4, out


def test_tile_equals_the_chunk_alone_default_model(worker_python, tmp_path):
    """The bundled model (the paper's widths, 1024-px chunks read at 128 px) on a 1024-px scene with ice."""
    done = helpers.run_worker_snippet(
        worker_python,
        "import sys; from model.trainingdata.scene import write_sample_scene; write_sample_scene(sys.argv[1], width=1024, height=1024, rng_seed=5)",
        tmp_path / "one.tif",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = helpers.one_window(worker_python, str(tmp_path / "one.tif"), "")
    assert out["windows"] == 1 and out["cells"] == [8, 8] and out["runtime"] == "ONNX Runtime"
    assert abs(out["alone"][0] - out["map"][0]) < 1e-4, out


def test_detect_routes_agree_on_one_chunk_and_share_the_dense_grid(worker_python, tiny_model, make_raster, tmp_path):
    """Through the worker: on a one-chunk image both routes give the same probability; on a larger one at
    STRIDE = CHUNK / 2 they score the same chunks with the same valid fractions, and the default ('auto') takes the map."""
    one = make_raster(name="one.tif", width=64, height=64, seed=4, icy_chunk_size=64, icy_pattern=lambda r, c: True)
    results = {}
    for route in ("chunk", "map"):
        run = helpers.run_worker(worker_python, "detect", one.path, "--model", tiny_model.path, "--scoring", route).check()
        results[route] = run.result["chunks"]
    assert [c["probability"] for c in results["chunk"]] == pytest.approx([c["probability"] for c in results["map"]], abs=2e-5)

    scene = make_raster(name="dense.tif", width=320, height=200, rotated_border=True, nodata=0, seed=8, icy_chunk_size=64, icy_pattern=lambda r, c: (r + c) % 3 == 0)
    runs = {route: helpers.run_worker(worker_python, "detect", scene.path, "--model", tiny_model.path, "--stride", 32, *(("--scoring", route) if route else ())).check() for route in ("chunk", "")}
    runs["auto"] = runs.pop("")  # the default
    assert runs["auto"].result["summary"]["scoring"] == "map" and runs["chunk"].result["summary"]["scoring"] == "chunk"
    key = lambda c: (c["chunk_id"], c["x_off"], c["y_off"], c["width"], c["height"], c["valid_fraction"], c["centre_valid_fraction"])  # noqa: E731
    chunk, dense = runs["chunk"].result["chunks"], runs["auto"].result["chunks"]
    assert sorted(map(key, chunk)) == sorted(map(key, dense))
    p_chunk = np.array([c["probability"] for c in sorted(chunk, key=key)])
    p_map = np.array([c["probability"] for c in sorted(dense, key=key)])
    assert ((p_map > 0) & (p_map < 1)).all()
    # The chunks on the map's tiles are scored alone, and so are those between them that the screen sends back.
    on_tiles = np.array([c["x_off"] % 64 == 0 and c["y_off"] % 64 == 0 for c in sorted(dense, key=key)])
    same = np.abs(p_map - p_chunk) <= 2e-5
    rescored = runs["auto"].result["summary"]["rescored_chunks"]
    assert same[on_tiles].all() and (same & ~on_tiles).sum() >= rescored  # the screen at work: tests/test_default_model.py
    print(f"tiny model, 320 x 200 scene, stride 32: mean |p map - p chunk| = {np.abs(p_map - p_chunk).mean():.4f} on {len(p_map)} chunks")


KEPT_PIXELS = r"""
import json, sys
import numpy as np
from model import modelfile, scoremap
from model.grid import chunk_grid
from model.raster import RasterSource
raster, model_path = sys.argv[1], sys.argv[2]
network, meta = modelfile.load(model_path)
size, chunk = meta["input_size"], meta["chunk_size"]
mapper = scoremap.ScoreMapper(network, meta["architecture"])
with RasterSource(raster) as source:
    info = source.info
    g = scoremap.MapGeometry(info.width, info.height, chunk, chunk // 2, size, mapper.cell)
    m = scoremap.score_canvas(source, g, mapper, meta["normalisation"], keep_pixels=True)
    kept, read_again, largest = 0, 0, 0.0
    for window in chunk_grid(info.width, info.height, chunk, chunk // 2):
        pixels = m.pixels.chunk(window.row, window.col)
        if pixels is None:
            read_again += 1
            continue
        data, valid = source.read_chunk(window, chunk, size)
        assert (pixels[1] == valid).all(), window
        largest = max(largest, float(np.abs(pixels[0] - data).max()))
        kept += 1
print(json.dumps({"kept": kept, "read_again": read_again, "largest": largest}))
"""


def test_chunks_between_tiles_come_from_the_tiles_pixels_exactly_as_read(worker_python, tiny_model, make_raster):
    """The screen scores chunks between the map's tiles alone again from the pixels the tiles
    read: the same values as reading the chunk (an aligned average); a chunk over a tile cut by
    the raster's edge (read at a rounded scale) is read again."""
    scene = make_raster(name="kept.tif", width=300, height=200, rotated_border=True, nodata=0, seed=5)
    done = helpers.run_worker_snippet(worker_python, KEPT_PIXELS, scene.path, tiny_model.path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["kept"] >= 8 and out["read_again"] >= 4 and out["largest"] == 0.0, out


def test_probability_raster_leaves_cells_mostly_off_the_image_empty(worker_python, tiny_model, make_raster, tmp_path):
    """A cell 1 % on the image (the rest no-data border or past the raster's edge) was drawn whole at the
    probability the network gave its padding, icy orange above the white border; such cells are no-data."""
    from osgeo import gdal

    scene = make_raster(name="border.tif", width=300, height=200, rotated_border=True, nodata=0, seed=8, icy_chunk_size=64, icy_pattern=lambda r, c: (r + c) % 2 == 0)
    path = tmp_path / "p.tif"
    helpers.run_worker(worker_python, "detect", scene.path, "--model", tiny_model.path, "--stride", 32, "--probability-raster", str(path)).check()
    source, out = gdal.Open(scene.path), gdal.Open(str(path))  # kept referenced while their bands are read
    image = source.GetRasterBand(1).ReadAsArray() != 0
    values = out.GetRasterBand(1).ReadAsArray()
    cell = int(round(out.GetGeoTransform()[1] / source.GetGeoTransform()[1]))
    padded = np.zeros((values.shape[0] * cell, values.shape[1] * cell), bool)
    padded[: image.shape[0], : image.shape[1]] = image[: padded.shape[0], : padded.shape[1]]
    share = padded.reshape(values.shape[0], cell, values.shape[1], cell).mean(axis=(1, 3))
    slivers = (share > 0) & (share < 0.4)
    assert slivers.sum() >= 5 and (values[slivers] == scoremap.PROBABILITY_NODATA).all()
    assert (values[share >= 0.6] >= 0).mean() > 0.7  # the image is drawn (but where MIN_VALID drops every chunk over it)


STREAMED_RESCORING = r"""
import json, sys
import numpy as np
from model import calibration, inference, modelfile, scoremap
from model.grid import chunk_grid
from model.inference import DetectOptions, detect
from model.preprocess import network_input
from model.raster import RasterSource
raster, model_path, rescore_from = sys.argv[1], sys.argv[2], float(sys.argv[3])
inference.RESCORE_FROM = rescore_from
network, meta = modelfile.load(model_path)
size, chunk, cal = meta["input_size"], meta["chunk_size"], meta.get("calibration")
batch, out = 4, {}
held = [0]
paste = scoremap.TilePixels.paste
def counting_paste(self, tile, data, valid):
    paste(self, tile, data, valid)
    held[0] = max(held[0], len(self.rows))
scoremap.TilePixels.paste = counting_paste
for stride in (chunk // 2, chunk // 4):
    held[0] = 0
    options = DetectOptions(stride=stride, batch_size=batch)
    streamed = detect(raster, model_path, options, loaded=(network, meta))
    # The whole canvas scored first, then every chunk the screen sends back read from the raster and scored alone.
    mapper = scoremap.ScoreMapper(network, meta["architecture"], mirror=options.tta)
    with RasterSource(raster) as source:
        info = source.info
        g = scoremap.MapGeometry(info.width, info.height, chunk, stride, size, mapper.cell)
        m = scoremap.score_canvas(source, g, mapper, meta["normalisation"], batch_size=batch)
        expected, again = [], []
        for w in chunk_grid(info.width, info.height, chunk, stride):
            if not (m.centre[w.row, w.col] >= options.min_valid and m.whole[w.row, w.col] > 0):
                continue
            entry = [w.chunk_id, calibration.apply([m.chunk_logit(w.row, w.col)], cal)[0]]
            expected.append(entry)
            peak = calibration.apply([m.cut_peak_logit(w.row, w.col)], cal)[0]
            if not g.on_tile(w.row, w.col) and (entry[1] >= inference.RESCORE_FROM or peak >= inference.RESCORE_PEAK):
                again.append((entry, network_input(*source.read_chunk(w, chunk, size), meta["normalisation"])))
        logits = [logit for start in range(0, len(again), batch) for logit in scoremap.whole_chunk_logits(mapper(np.stack([image for _, image in again[start : start + batch]])))]
        for (entry, _), p in zip(again, calibration.apply(logits, cal)):
            entry[1] = p
    out[stride] = {"same": [[c["chunk_id"], c["probability"]] for c in streamed.chunks] == [[i, round(float(p), 5)] for i, p in expected],
                   "rescored": [streamed.summary["rescored_chunks"], len(again)], "tile_rows": -(-g.canvas[0] // size), "held": held[0]}
print(json.dumps(out))
"""


@pytest.mark.parametrize("rescore_from", [0.1, 0.0])
def test_chunks_scored_alone_as_their_tile_rows_are_read_match_the_whole_canvas(worker_python, tiny_model, make_raster, rescore_from):
    """Detect scores the chunks the screen sends back as soon as the rows of tiles under them are
    scored and then drops those rows: the same probabilities, bit for bit, as scoring the whole
    canvas first and reading each such chunk from the raster, while holding at most three rows of
    tiles. RESCORE_FROM 0 sends back every chunk between tiles, those over tiles cut by the raster's
    edge (read again) included."""
    scene = make_raster(name="streamed.tif", width=650, height=700, rotated_border=True, nodata=0, seed=11, icy_chunk_size=64, icy_pattern=lambda r, c: (r * 3 + c) % 4 == 0)
    done = helpers.run_worker_snippet(worker_python, STREAMED_RESCORING, scene.path, tiny_model.path, rescore_from)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    for stride, run in out.items():
        assert run["same"] and run["rescored"][0] == run["rescored"][1] > 0, (stride, run)
        assert run["tile_rows"] >= 10 and run["held"] <= 3, (stride, run)


def test_map_route_refused_where_chunks_miss_the_cells(worker_python, tiny_model, make_raster):
    scene = make_raster(name="odd.tif", width=200, height=128, seed=2)
    run = helpers.run_worker(worker_python, "detect", scene.path, "--model", tiny_model.path, "--stride", 20, "--scoring", "map")
    assert run.returncode == 2 and "score map" in run.errors[0]["message"] and "stride" in run.errors[0]["message"]
    # auto falls back to scoring each chunk alone
    run = helpers.run_worker(worker_python, "detect", scene.path, "--model", tiny_model.path, "--stride", 20).check()
    assert run.result["summary"]["scoring"] == "chunk"


def test_tta_is_invariant_to_an_east_west_mirror(worker_python, tiny_model, make_raster, tmp_path):
    """With the mirror averaged in (detect's default), an image and its east-west mirror give every chunk the
    same probability (the mirrored chunk's), and --no-tta changes the probabilities of at least one chunk."""
    from osgeo import gdal

    scene = make_raster(name="tta.tif", width=256, height=128, seed=9, icy_chunk_size=64, icy_pattern=lambda r, c: c in (0, 1))
    source = gdal.Open(scene.path)
    mirrored_path = str(tmp_path / "tta_mirrored.tif")
    copy = gdal.GetDriverByName("GTiff").CreateCopy(mirrored_path, source)
    copy.GetRasterBand(1).WriteArray(source.GetRasterBand(1).ReadAsArray()[:, ::-1])
    copy = source = None

    def probabilities(path, *extra):
        run = helpers.run_worker(worker_python, "detect", path, "--model", tiny_model.path, *extra).check()
        return {(c["row"], c["col"]): c["probability"] for c in run.result["chunks"]}

    plain, tta, mirrored_tta = probabilities(scene.path, "--no-tta"), probabilities(scene.path), probabilities(mirrored_path, "--tta")
    cols = 1 + max(col for _, col in tta)
    assert {(row, cols - 1 - col): p for (row, col), p in mirrored_tta.items()} == pytest.approx(tta, abs=2e-5)
    assert max(abs(plain[k] - tta[k]) for k in tta) > 1e-4
    # Within each chunk too: the probability raster of the mirror is the raster mirrored. A tile's mirrored map averaged in
    # unflipped keeps every chunk's mean (and the test above) but paints each cell with its mirror cell's value.
    maps = []
    for name, path in (("image", scene.path), ("mirror", mirrored_path)):
        written = str(tmp_path / f"{name}_probability.tif")
        helpers.run_worker(worker_python, "detect", path, "--model", tiny_model.path, "--probability-raster", written).check()
        maps.append(gdal.Open(written).ReadAsArray())
    assert np.abs(maps[0] - maps[1][:, ::-1]).max() < 1e-4 and np.abs(maps[0] - maps[0][:, ::-1]).max() > 1e-3


def test_min_valid_one_keeps_the_same_chunks_on_both_routes(worker_python, tiny_model, tmp_path):
    """MIN_VALID 1 (every centre pixel valid) on a raster without no-data: the per-chunk route kept all 49 chunks of the dense
    grid; a map route that dropped a chunk whose centre share equals MIN_VALID would have kept none (and failed)."""
    raster = helpers.generate_raster(tmp_path, name="full.tif", width=256, height=256, nodata=None)
    kept = {}
    for scoring in ("chunk", "map"):
        run = helpers.run_worker(worker_python, "detect", raster.path, "--model", tiny_model.path, "--stride", 32, "--scoring", scoring,
                                 "--min-valid", 1).check()
        kept[scoring] = sorted((c["x_off"], c["y_off"]) for c in run.result["chunks"])
    assert len(kept["chunk"]) == 49 and kept["map"] == kept["chunk"]


TWO_READERS = r"""
import json, sys
import numpy as np
from model import modelfile, scoremap
from model.footprint import ValidityMosaic
from model.raster import RasterSource
raster, model_path = sys.argv[1], sys.argv[2]
network, meta = modelfile.load(model_path)
size, chunk = meta["input_size"], meta["chunk_size"]
mapper = scoremap.ScoreMapper(network, meta["architecture"])
maps = []
with RasterSource(raster) as source:
    info = source.info
    g = scoremap.MapGeometry(info.width, info.height, chunk, chunk // 2, size, mapper.cell)
    for readers in (1, 2):
        mosaic = ValidityMosaic(info.width, info.height, chunk / size)
        maps.append((scoremap.score_canvas(source, g, mapper, meta["normalisation"], mosaic=mosaic, keep_pixels=True, readers=readers), mosaic))
(one, mosaic_one), (two, mosaic_two) = maps
same = lambda a, b: bool(np.array_equal(a, b, equal_nan=True))
print(json.dumps({"tiles": len(scoremap.windows(g)), "logits": same(one.logits, two.logits), "whole": same(one.whole, two.whole),
                  "centre": same(one.centre, two.centre), "mosaic": same(mosaic_one.valid, mosaic_two.valid) and same(mosaic_one.seen, mosaic_two.seen),
                  "pixels": one.pixels.rows.keys() == two.pixels.rows.keys() and all(same(a, b) for row in one.pixels.rows for a, b in zip(one.pixels.rows[row], two.pixels.rows[row]))}))
"""


def test_two_reading_threads_give_the_map_of_one(worker_python, tiny_model, make_raster):
    """Tiles read by two threads, each with its own handle, come back in order: the same map,
    validity, footprint mosaic and kept pixels as one reader's, bit for bit."""
    scene = make_raster(name="two-readers.tif", width=450, height=330, rotated_border=True, nodata=0, seed=8)
    done = helpers.run_worker_snippet(worker_python, TWO_READERS, scene.path, tiny_model.path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == {"tiles": 48, "logits": True, "whole": True, "centre": True, "mosaic": True, "pixels": True}, out


READERS_IN_DETECT = r"""
import io, json, sys
from model.inference import DetectOptions, detect
from model.protocol import Reporter
raster, model_path, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3])
out = {}
for stride in (chunk, chunk // 2):
    for readers in (1, 2):
        stream = io.StringIO()
        d = detect(raster, model_path, DetectOptions(stride=stride, readers=readers), Reporter(jsonl=True, stream=stream))
        logs = [m["message"] for m in map(json.loads, stream.getvalue().splitlines()) if m["type"] == "log"]
        out[f"{stride} {readers}"] = {"p": [c["probability"] for c in d.chunks], "route": d.summary["scoring"], "said": [line for line in logs if "read by" in line]}
print(json.dumps(out))
"""


def test_detect_reads_with_the_threads_it_is_given_and_gets_the_same_chunks(worker_python, tiny_model, make_raster):
    """DetectOptions.readers (a survey's local cluster gives each worker its share of the cores):
    the log says how many threads read, and both routes score the same chunks alike."""
    scene = make_raster(name="readers.tif", width=400, height=300, rotated_border=True, nodata=0, seed=6)
    chunk = 64  # the tiny model's chunk (conftest.tiny_model)
    done = helpers.run_worker_snippet(worker_python, READERS_IN_DETECT, scene.path, tiny_model.path, chunk)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    for stride, route in ((chunk, "chunk"), (chunk // 2, "map")):
        one, two = out[f"{stride} 1"], out[f"{stride} 2"]
        assert one["route"] == two["route"] == route and len(one["p"]) > 4 and one["p"] == two["p"], (stride, one, two)
        assert len(one["said"]) == 1 and "read by 1 thread(s)" in one["said"][0] and "read by 2 thread(s)" in two["said"][0]


def test_the_cut_peak_of_a_chunk_two_cells_across_is_its_highest_cell():
    """A model whose chunk is 2 score-map cells across (input 32, cell 16): the central half had been an
    empty slice, and every chunk between tiles below the rescoring screen crashed the map route."""
    geometry = scoremap.MapGeometry(128, 128, 64, 32, 32, 16)
    logits = np.arange(64, dtype=np.float32).reshape(8, 8)
    grid = np.ones((3, 3))
    score = scoremap.ScoreMap(geometry, logits, np.ones_like(logits), grid, grid)
    rows, cols = geometry.chunk_cells(1, 1)
    assert rows.stop - rows.start == 2 and score.cut_peak_logit(1, 1) == logits[rows, cols].max()


def test_the_cut_peak_follows_the_tile_edges_across_a_chunk_at_a_quarter_offset():
    """At STRIDE = CHUNK/4 a chunk a quarter off the tiles has their edge along its central half's border: a patch on a
    tile corner lit the cell beyond it, the central-half screen did not look there, and chunks holding the whole patch
    kept the map's 0.04-0.07 where alone they score 0.999 (the image's category changed with the route)."""
    geometry = scoremap.MapGeometry(2048, 2048, 1024, 256, 128, 16)  # 8 cells a tile, a chunk every 2 cells
    logits = np.full((16, 16), -6.0, np.float32)
    logits[8, 8] = 4.0  # tile (1, 1)'s corner cell, where a patch on the tiles' corner lights it
    grid = np.ones((5, 5))
    score = scoremap.ScoreMap(geometry, logits, np.ones_like(logits), grid, grid)
    rows, cols = geometry.chunk_cells(1, 1)  # cells 2-9: the tiles' edge between cells 7 and 8
    assert (rows.start, rows.stop) == (2, 10)
    assert logits[rows.start + 2: rows.stop - 2, cols.start + 2: cols.stop - 2].max() == -6.0  # its central half: nothing
    assert score.cut_peak_logit(1, 1) == 4.0
    assert score.cut_peak_logit(0, 0) == -np.inf  # on a tile: no edge crosses it
    logits[8, 8], logits[7, 7] = -6.0, 3.0  # the patch lit the cell before the edge instead (tile (0, 0)'s corner): seen too
    assert score.cut_peak_logit(1, 1) == 3.0
    wide = scoremap.ScoreMap(scoremap.MapGeometry(256, 256, 128, 64, 64, 8), np.arange(1024, dtype=np.float32).reshape(32, 32), np.ones((32, 32)), grid, grid)
    rows, cols = wide.geometry.chunk_cells(1, 1)  # cells 4-11, the edge between 7 and 8: rows and columns 7 and 8
    assert wide.cut_peak_logit(1, 1) == max(wide.logits[7:9, cols].max(), wide.logits[rows, 7:9].max()) == 11 * 32 + 8

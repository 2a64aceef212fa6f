"""Supervising the score map's cells where a training example's ice is outlined (model/cells.py):
the cells' ice shares, their targets, augmentation that moves them with the image, and training
that teaches the network's own map (in the worker)."""

import json
import math

import numpy as np
import pytest

from model import cells
from model.fitting import augment_batch
from model.trainingdata.examples import FAMILIES, LOOKALIKE_SHARES, ice_cells, make_example

import helpers


def test_ice_cells_are_the_share_of_each_cell_the_ice_covers():
    mask = np.zeros((200, 200), bool)
    mask[10:40, 160:190] = True  # north-east corner, 900 of 2500 pixels of that cell
    shares = ice_cells(mask, 64, 4)
    assert shares.shape == (4, 4)
    assert shares[0, 3] == pytest.approx(900 / 2500, abs=0.02)
    shares[0, 3] = 0
    assert shares.max() == 0


def test_examples_carry_cells_where_their_ice_lies_and_none_without_ice():
    rng = np.random.default_rng(3)
    image = np.clip(rng.normal(0.5, 0.1, (227, 227)), 0.05, 1).astype(np.float32)
    image[60:120, 60:120] *= 0.4  # shade for the families that need it
    icy = [e for e in (make_example(image, rng, 64, family=f, cells=4) for f in FAMILIES for _ in range(3)) if e is not None]
    assert icy and all(e["cells"].shape == (4, 4) and e["cells"].max() > 0 for e in icy)
    for lookalike in LOOKALIKE_SHARES:
        example = make_example(image, rng, 64, lookalike=lookalike, cells=4)
        assert not example["cells"].any()
    assert "cells" not in make_example(image, rng, 64, lookalike="plain")


def outlined_chunks(tmp_path, outlines, cells=0):
    """The labelled chunks of 256 px (read at 64) that ``outlines`` give a 512 x 512 raster of 0.5 m pixels, origin (1000, 2000)."""
    from osgeo import gdal

    from model.labels import chunks_from_outlines
    from model.preprocess import DEFAULT_NORMALISATION
    from model.raster import RasterSource
    from model.trainingdata.scene import mars_equirectangular_wkt

    path = str(tmp_path / "outlined.tif")
    dataset = gdal.GetDriverByName("GTiff").Create(path, 512, 512, 1, gdal.GDT_Byte)
    dataset.SetGeoTransform((1000.0, 0.5, 0.0, 2000.0, 0.0, -0.5))
    dataset.SetProjection(mars_equirectangular_wkt(-50.0))
    dataset.GetRasterBand(1).WriteArray(np.full((512, 512), 100, np.uint8))
    dataset = None
    with RasterSource(path) as source:
        return chunks_from_outlines(source, outlines, [], 256, 64, 0.5, DEFAULT_NORMALISATION, cells=cells)


def test_unlabelled_chunks_asked_of_outlines_are_said_not_to_be_used(tmp_path):
    """Outlines label every chunk of their grid: UNLABELLED was ignored there without a word."""
    import io

    from model.preprocess import DEFAULT_NORMALISATION
    from model.protocol import Reporter
    from model.training import TrainOptions
    from model.trainingjob import collect_job_chunks

    outlined_chunks(tmp_path, [])  # writes the raster
    job = {"label_mode": "outlines", "rasters": [{"path": str(tmp_path / "outlined.tif"),
                                                  "labels": [{"wkt": "POLYGON((1005 1995,1021 1995,1021 1979,1005 1979,1005 1995))", "label": 1}]}]}
    said = io.StringIO()
    found = collect_job_chunks(job, TrainOptions(chunk_size=256, input_size=64), DEFAULT_NORMALISATION, Reporter(stream=said), unlabelled_ratio=2.0)
    assert found.unlabelled is None and len(found.labels) == 4
    assert "warning: UNLABELLED is for chunk-polygon labels: ice-patch outlines label every chunk of the grid they cover" in said.getvalue()


def test_an_exclusion_or_unclear_outline_leaves_out_the_chunks_it_covers_not_those_touching_it(tmp_path):
    """An exclusion drawn exactly around chunk (0, 0) of the 2 x 2 grid left all four out in outline mode (its neighbours touch it),
    where chunk mode, the README and the help leave out only chunks sharing area with it."""
    around_first = "POLYGON((1000 2000,1128 2000,1128 1872,1000 1872,1000 2000))"  # chunk (0, 0): pixels 0-256
    inside_last = "POLYGON((1200 1800,1210 1800,1210 1790,1200 1790,1200 1800))"  # in chunk (1, 1)
    kept = outlined_chunks(tmp_path, [{"wkt": around_first, "label": -1}, {"wkt": inside_last, "label": 1}])
    assert sorted((c.window.x_off, c.window.y_off, c.label) for c in kept) == [(0, 256, 0), (256, 0, 0), (256, 256, 1)]


def test_outlines_give_each_chunk_the_share_of_its_cells_they_cover_and_an_edge_they_touch_is_no_ice(tmp_path):
    outlines = [{"wkt": "POLYGON((1005 1995,1021 1995,1021 1979,1005 1979,1005 1995))", "label": 1},  # pixels 10-42 of chunk (0, 0)
                {"wkt": "MULTIPOLYGON Z (((1200 1900 0,1210 1900 0,1210 1890 0,1200 1890 0,1200 1900 0)))", "label": 1},  # 144-164, 200-220 of (0, 1)
                {"wkt": "POLYGON((1010 1800,1020 1800,1020 1790,1010 1790,1010 1800))", "label": 0},  # not icy: no ice
                {"wkt": "POLYGON((1118 1850,1128 1850,1128 1845,1118 1845,1118 1850))", "label": 1}]  # (1, 0) up to the edge it shares with (1, 1)
    found = {(c.window.row, c.window.col): c for c in outlined_chunks(tmp_path, outlines, cells=8)}
    first = found[(0, 0)].cells
    assert first[0, 0] == pytest.approx(22 * 22 / 32 ** 2, abs=1e-4) and first[0, 1] == pytest.approx(10 * 22 / 32 ** 2, abs=1e-4)
    assert first[1, 1] == pytest.approx(10 * 10 / 32 ** 2, abs=1e-4) and np.count_nonzero(first) == 4
    assert np.argwhere(found[(0, 1)].cells > 0).tolist() == [[6, 4], [6, 5]]
    assert found[(1, 0)].label == 1 and np.argwhere(found[(1, 0)].cells > 0).tolist() == [[1, 7]]
    assert found[(1, 1)].label == 0 and not found[(1, 1)].cells.any()  # touched along its edge only


def test_an_outline_marked_unclear_leaves_its_chunks_out_and_an_empty_one_is_ice(tmp_path):
    square = "POLYGON(({x} {y},{x2} {y},{x2} {y2},{x} {y2},{x} {y}))"
    outlines = [{"wkt": square.format(x=1005, y=1995, x2=1021, y2=1979), "label": None},  # chunk (0, 0): left empty, so ice
                {"wkt": square.format(x=1200, y=1900, x2=1210, y2=1890), "label": -1},  # chunk (0, 1): unclear
                {"wkt": square.format(x=1010, y=1800, x2=1020, y2=1790), "label": "unclear"}]  # chunk (1, 0): unclear
    found = {(c.window.row, c.window.col): c.label for c in outlined_chunks(tmp_path, outlines)}
    assert found == {(0, 0): 1, (1, 1): 0}


def test_an_outline_that_crosses_itself_is_read_as_the_areas_it_encloses(tmp_path):
    """A hand-drawn bow-tie had stopped the run with a traceback: GEOS's union of it is nothing."""
    bow_tie = "POLYGON((1005 1995,1021 1979,1021 1995,1005 1979,1005 1995))"  # two triangles meeting at the square's centre
    found = {(c.window.row, c.window.col): c for c in outlined_chunks(tmp_path, [{"wkt": bow_tie, "label": 1}], cells=8)}
    assert found[(0, 0)].label == 1 and [c.label for c in found.values()].count(1) == 1
    assert found[(0, 0)].cells.sum() * 32 ** 2 == pytest.approx(16 * 32 / 2 * 2, rel=1e-3)  # two triangles of half a 32 x 16-px box


def test_a_curved_outline_teaches_the_cells_it_covers(tmp_path):
    """A circle drawn as a CURVEPOLYGON (a GeoPackage layer of curves) made its chunk icy, but its cells' targets were all 0:
    only plain polygons were kept for the ice, and the network was taught 'no ice here' in the very chunk it was told held ice."""
    circle = "CURVEPOLYGON(CIRCULARSTRING(1005 1987,1021 1987,1005 1987))"  # 16 m across, centred in pixels 10-42 of chunk (0, 0)
    found = {(c.window.row, c.window.col): c for c in outlined_chunks(tmp_path, [{"wkt": circle, "label": 1}], cells=8)}
    assert found[(0, 0)].label == 1 and [c.label for c in found.values()].count(1) == 1
    assert found[(0, 0)].cells.sum() * 32 ** 2 == pytest.approx(math.pi * 16 ** 2, rel=0.02)  # a 32-px circle's area, in px


def test_targets_teach_the_ice_cells_of_icy_examples_and_every_cell_of_ice_free_ones():
    shares = np.zeros((2, 2, 2), np.float32)
    shares[0, 0, 1] = 0.5
    shares[0, 1, 1] = 0.01
    made = cells.targets(shares, np.array([1, 0]))
    target, weight = made[..., 0], made[..., 1]
    assert weight[0].tolist() == [[0.0, 1.0], [0.0, pytest.approx(1 / 3)]] and (target[0][weight[0] > 0] == 1).all()
    assert (weight[1] == 1).all() and (target[1] == 0).all()
    assert not cells.unsupervised(3, 2).any()


def test_augmentation_mirrors_the_cells_with_the_image():
    images = np.full((16, 32, 32, 1), 0.5, np.float32)
    images[:, :8, :8, 0] = 1.0  # a bright north-west cell
    shares = np.zeros((16, 4, 4), np.float32)
    shares[:, 0, 0] = 1.0
    out, targets = augment_batch(images, np.random.default_rng(0), "lighting", cells.targets(shares, np.ones(16)))
    west = out[:, :8, :8, 0].mean(axis=(1, 2)) > out[:, :8, -8:, 0].mean(axis=(1, 2))
    assert 0 < west.sum() < 16  # some mirrored, some not
    assert (targets[west][:, 0, 0, 1] == 1).all() and (targets[~west][:, 0, -1, 1] == 1).all()
    unchanged = augment_batch(images, np.random.default_rng(0), "lighting")
    assert np.array_equal(unchanged, out)  # the images draw the same augmentation with or without cells


WORKER = r"""
import json, sys
import numpy as np
from model.training import prepare_tensorflow
prepare_tensorflow([4])
import keras
from model.network import architecture, build_multi_scale_network, build_network, cell_logits
from model.training import TrainOptions, train_arrays

out = {}
for name, network, arch in [("one scale", build_network(32, (4, 8, 8, 16), seed=1), architecture(32, (4, 8, 8, 16))),
                            ("two scales", build_multi_scale_network(32, (4, 8, 8, 16), (2, 1), seed=1), architecture(32, (4, 8, 8, 16), (2, 1)))]:
    keras.backend.clear_session()  # as in a worker that loaded the network: Keras names new layers from scratch
    both = keras.Model(network.inputs, [network.get_layer("logit").output, cell_logits(network, arch)])
    logit, cell_map = both.predict(np.random.default_rng(0).random((4, 32, 32, 1)).astype("float32"), verbose=0)
    out[name] = {"shape": list(cell_map.shape), "mean_gap": float(np.abs(logit.ravel() - cell_map.mean(axis=(1, 2, 3))).max())}

# A bright blob in one of 16 cells of every other chunk; the cells tell where it is.
rng = np.random.default_rng(1)
n = 160
images = rng.normal(120, 20, (n, 32, 32)).clip(1, 255)
labels = np.arange(n) % 2
shares = np.zeros((n, 4, 4), np.float32)
for i in np.nonzero(labels)[0]:
    r, c = rng.integers(0, 4, 2)
    images[i, r * 8 + 2:r * 8 + 6, c * 8 + 2:c * 8 + 6] = 250
    shares[i, r, c] = 0.25
groups = [f"g{i % 8}" for i in range(n)]
for weight in (0.0, 1.0):
    options = TrainOptions(epochs=6, batch_size=16, input_size=32, chunk_size=64, widths=(4, 8, 8, 16), learning_rate=3e-3, augment="lighting",
                           seed=3, calibrate=False, cell_weight=weight)
    done = train_arrays(images.astype(np.uint8), labels, groups, options, cells=shares)
    key = f"weight {weight:g}"
    out[key] = {"history": done["history"], "cell_weight": done["metadata"]["training"]["cell_weight"]}
    model = keras.Model(done["network"].inputs, cell_logits(done["network"], architecture(32, (4, 8, 8, 16))))
    maps = model.predict(images[labels == 1].astype("float32")[..., None] / 255.0, verbose=0)[..., 0]
    hottest = maps.reshape(len(maps), -1).argmax(axis=1)
    out[key]["hottest_is_the_blob"] = float(np.mean(hottest == shares[labels == 1].reshape(len(maps), -1).argmax(axis=1)))
print(json.dumps(out))
"""


def test_the_network_map_is_supervised_in_one_pass_and_points_at_the_ice(worker_python):
    done = helpers.run_worker_snippet(worker_python, WORKER, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    for name in ("one scale", "two scales"):  # the map on the network's own graph averages to its logit
        assert out[name]["mean_gap"] < 1e-5
    assert out["one scale"]["shape"] == [4, 4, 4, 1] and out["two scales"]["shape"] == [4, 2, 2, 1]
    supervised, plain = out["weight 1"], out["weight 0"]
    assert supervised["cell_weight"] == 1.0 and plain["cell_weight"] is None
    assert all("cells_loss" in row and "val_cells_loss" in row and "val_loss" in row for row in supervised["history"])
    assert supervised["history"][-1]["cells_loss"] < supervised["history"][0]["cells_loss"]
    print(f"hottest cell on the blob: {supervised['hottest_is_the_blob']:.2f} supervised, {plain['hottest_is_the_blob']:.2f} not")
    assert supervised["hottest_is_the_blob"] >= 0.8

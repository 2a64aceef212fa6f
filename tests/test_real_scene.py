"""The sample scene of real HiRISE crops that the demo detects on (model/trainingdata/real_scene.py)."""

from osgeo import gdal

import helpers
from model.trainingdata.crops import load_tiles
from model.trainingdata.examples import FAMILIES
from model.trainingdata.real_scene import write_real_terrain_scene


def test_real_terrain_scene_draws_every_family_on_crops_of_the_given_observations(shared_data, tmp_path):
    tiles = load_tiles([str(shared_data / "hirise-terrain")])
    observations = sorted({t["observation"] for t in tiles})[::4]
    path = tmp_path / "scene.tif"
    scene = write_real_terrain_scene(path, tiles, observations, columns=4, rows=2, chunk_size=256, rng_seed=3)

    chunks = scene["chunks"]
    assert [c["chunk_id"] for c in chunks] == list(range(8)) and len(scene["ice_chunks"]) == 4
    assert {c["family"] for c in chunks if c["chunk_id"] in scene["ice_chunks"]} == set(FAMILIES)
    assert all(c["patches"] for c in chunks if c["family"]) and not any(c["patches"] for c in chunks if not c["family"])
    assert {c["observation"] for c in chunks} <= set(observations)
    assert len({c["observation"] for c in chunks}) == 8  # one crop per observation while they last

    ds = gdal.Open(str(path))
    assert (ds.RasterXSize, ds.RasterYSize) == (1024, 512) and ds.GetRasterBand(1).GetNoDataValue() == 0
    assert "Mars" in ds.GetProjection() and ds.GetGeoTransform()[1] == 0.25
    dn = ds.ReadAsArray()
    assert dn[0, 0] == 0 and dn[-1, -1] == 0  # the rotated footprint's no-data corners
    inside = dn[200:300, 400:600]
    assert inside.min() >= 1 and inside.max() <= 1023 and inside.std() > 5  # 10-bit DNs of real texture


def test_sample_scene_names_what_a_terrain_folder_needs(worker_python, tmp_path):
    out = tmp_path / "scene.tif"
    run = helpers.run_worker(worker_python, "sample-scene", out, "--terrain", tmp_path)
    assert run.returncode == 2 and "is not a terrain folder" in run.stdout + run.stderr
    assert "Traceback" not in run.stderr and not out.exists()


def test_crops_of_one_name_in_both_terrain_folders_are_each_taken_once():
    """The two terrain folders hold 48 crops of one name (other pixels): choosing a scene's crops compared their dicts, pixel
    arrays and all, which raised for two crops of one name (a scene of more than about 64 chunks failed, "give both terrain folders")."""
    import numpy as np

    from model.trainingdata.real_scene import scene_crops

    rng = np.random.default_rng(0)
    crops = [{"name": f"ESP_0{n // 4:05d}_1000_RED-{n:04d}.jpg", "observation": f"ESP_0{n // 4:05d}_1000", "landform": "other",
              "image": rng.integers(1, 255, (8, 8), dtype=np.uint8)} for n in range(40)]
    namesakes = [dict(crop, image=crop["image"].copy()) for crop in crops]  # as load_tiles reads the second folder
    chosen = scene_crops(crops + namesakes, sorted({c["observation"] for c in crops}), 80, np.random.default_rng(1))
    assert len({id(c) for c in chosen}) == 80  # every crop once, both of each name

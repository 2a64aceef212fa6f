"""Tests of model/trainingdata: implants, negatives, terrain and the sample scene (real GDAL files)."""

import math
import os

import numpy as np
import pytest

gdal = pytest.importorskip("osgeo.gdal")
from osgeo import osr  # noqa: E402

from model.trainingdata import imaging, terrain  # noqa: E402
from model.trainingdata import scene as sample_scene  # noqa: E402
from model.trainingdata.ice.rendered_caster import implant_ice_patches  # noqa: E402
from model.trainingdata.lookalikes.bare_casters import implant_shadowing_features  # noqa: E402
from model.trainingdata.lookalikes.hot_pixels import implant_hot_pixels  # noqa: E402
from model.trainingdata.lookalikes.scene_conditions import apply_co2_frost, apply_low_contrast  # noqa: E402
from model.trainingdata.lookalikes.sunlit_rocks import implant_sunlit_bright_rocks  # noqa: E402


def _flat(shape=(128, 128), level=0.45, noise=0.01, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(level + noise * rng.standard_normal(shape), 0, 1).astype(np.float32)


def _image_with_boulder(shape=(160, 160), centre=(50, 80), radius=6, seed=0):
    """Flat ground with one bright boulder and its dark shadow cast south (down)."""
    img = _flat(shape, seed=seed)
    rr, cc = np.mgrid[0:shape[0], 0:shape[1]]
    cy, cx = centre
    body = (rr - cy) ** 2 + (cc - cx) ** 2 <= radius ** 2
    shadow = np.zeros(shape, dtype=bool)
    for t in range(1, 3 * radius):  # body swept downwards by 3 radii
        shadow |= (rr - cy - t) ** 2 + (cc - cx) ** 2 <= radius ** 2
    shadow &= ~body
    img[shadow] *= 0.3
    img[body] = 0.75
    return img, body, shadow


def _components(mask):
    """8-connected components of a small boolean mask, as lists of (row, col)."""
    seen = np.zeros_like(mask)
    comps = []
    for r, c in zip(*np.nonzero(mask)):
        if seen[r, c]:
            continue
        stack, comp = [(r, c)], []
        seen[r, c] = True
        while stack:
            y, x = stack.pop()
            comp.append((y, x))
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < mask.shape[0] and 0 <= xx < mask.shape[1] and mask[yy, xx] and not seen[yy, xx]:
                        seen[yy, xx] = True
                        stack.append((yy, xx))
        comps.append(comp)
    return comps


def _ring(mask, inner, outer):
    return imaging.dilate(mask, outer) & ~imaging.dilate(mask, inner)


# ---------------------------------------------------------------------------------------
# ice patches


def test_ice_patches_are_deterministic_and_leave_the_input_alone():
    img = terrain.make_terrain((128, 128), np.random.default_rng(5))
    before = img.copy()
    a, ma = implant_ice_patches(img, np.random.default_rng(42))
    b, mb = implant_ice_patches(img, np.random.default_rng(42))
    c, _ = implant_ice_patches(img, np.random.default_rng(43))
    assert np.array_equal(a, b) and np.array_equal(ma, mb)
    assert not np.array_equal(a, c)
    assert np.array_equal(img, before)
    assert a.dtype == np.float32 and a.shape == img.shape
    assert ma.dtype == bool and ma.shape == img.shape


@pytest.mark.parametrize("seed", range(12))
def test_ice_patches_are_brighter_than_their_surroundings(seed):
    rng = np.random.default_rng(seed)
    img = terrain.make_terrain((160, 160), rng)
    new, mask, info = implant_ice_patches(img, rng, count=3, return_info=True)
    assert 1 <= len(info) <= 3
    assert mask.any()
    assert 0.0 <= new.min() and new.max() <= 1.0
    for patch in info:
        r0, c0, r1, c1 = patch["bbox"]
        assert 0 <= r0 < r1 <= 160 and 0 <= c0 < c1 <= 160
        pm = np.zeros_like(mask)
        pm[r0:r1, c0:c1] = mask[r0:r1, c0:c1]
        ring = _ring(pm, 2, 5) & ~mask
        assert new[pm].mean() > new[ring].mean() + 0.1 * patch["contrast"], patch
        assert new[pm].mean() > np.median(new[ring]) + 0.1 * patch["contrast"], patch
        # the patch brightened the ground it lies on
        assert new[pm].mean() > img[pm].mean() + 0.02, patch
    # nothing changed far from the patches, apart from a synthesised shadowing feature
    far = ~imaging.dilate(mask, 12)
    if not any(p["synthesized_feature"] for p in info):
        assert np.array_equal(new[far], img[far])


def test_mask_is_within_bounds_and_matches_the_change():
    rng = np.random.default_rng(3)
    img = _flat((96, 120))
    new, mask, info = implant_ice_patches(img, rng, count=2, return_info=True)
    assert mask.shape == (96, 120) and mask.any()
    rows, cols = np.nonzero(mask)
    assert rows.min() >= 0 and rows.max() < 96 and cols.min() >= 0 and cols.max() < 120
    assert mask.sum() == sum(int(mask[p["bbox"][0]:p["bbox"][2], p["bbox"][1]:p["bbox"][3]].sum()) for p in info)
    for p in info:
        r0, c0, r1, c1 = p["bbox"]
        pm = mask[r0:r1, c0:c1]
        if p["synthesized_feature"]:  # its edge may lie over the new feature's shadow
            assert new[r0:r1, c0:c1][pm].mean() > img[r0:r1, c0:c1][pm].mean() + 0.5 * p["contrast"]
        else:
            assert np.all(new[r0:r1, c0:c1][pm] > img[r0:r1, c0:c1][pm])


def test_patch_lies_poleward_of_an_existing_shadow():
    img, body, shadow = _image_with_boulder()
    new, mask, info = implant_ice_patches(img, np.random.default_rng(0), count=1, return_info=True)
    assert len(info) == 1 and not info[0]["synthesized_feature"]
    srows, scols = np.nonzero(shadow)
    centre_r, centre_c = info[0]["centre"]
    # south of the darkest part of the shadow, near its poleward end, roughly below it
    assert centre_r > srows.mean()
    assert abs(centre_r - srows.max()) < 20
    assert scols.min() - 10 < centre_c < scols.max() + 10
    # the boulder itself is not covered, and the darkest part of the shadow stays dark
    assert not (mask & body).any()
    assert new[shadow].min() < 0.2


@pytest.mark.parametrize("seed", range(6))
def test_without_shadows_a_shadowing_feature_is_synthesised_north_of_the_patch(seed):
    img = _flat((160, 160), seed=seed)
    new, mask, info = implant_ice_patches(img, np.random.default_rng(seed), count=1, min_size_px=8,
                                            return_info=True)
    assert info[0]["synthesized_feature"]
    centre_r, centre_c = info[0]["centre"]
    # a new shadow appeared near the patch, and it lies north of the patch centre
    size = info[0]["size_px"]
    r0, r1 = int(max(0, centre_r - 3 * size - 20)), int(min(160, centre_r + 3 * size + 20))
    c0, c1 = int(max(0, centre_c - 3 * size - 20)), int(min(160, centre_c + 3 * size + 20))
    near = np.zeros_like(mask)
    near[r0:r1, c0:c1] = True
    shadow = near & ~mask & (new < 0.45 - 0.06)
    assert shadow.any() and not (img < 0.45 - 0.06).any()
    srows, scols = np.nonzero(shadow)
    assert srows.mean() < centre_r
    assert srows.min() < centre_r - 1
    assert info[0]["shadow"][0] < centre_r


@pytest.mark.parametrize("seed", range(8))
def test_patch_centre_is_poleward_of_the_shadow_it_was_placed_against(seed):
    rng = np.random.default_rng(100 + seed)
    img = terrain.make_terrain((200, 200), rng)
    new, mask, info = implant_ice_patches(img, rng, count=3, return_info=True)
    for p in info:
        assert p["centre"][0] > p["shadow"][0]
        # the shadow pixel is dark in the result (not covered by the patch)
        sr, sc = p["shadow"]
        assert not mask[sr, sc]


def test_patch_sizes_and_contrasts_vary():
    rng = np.random.default_rng(11)
    sizes, contrasts = [], []
    for _ in range(30):
        img = terrain.make_terrain((96, 96), rng)
        _, _, info = implant_ice_patches(img, rng, count=1, return_info=True)
        sizes.append(info[0]["size_px"])
        contrasts.append(info[0]["contrast"])
    assert min(sizes) < 8 and max(sizes) > 18
    assert max(sizes) <= 96 / 3 + 1e-6
    assert min(contrasts) < 0.1 and max(contrasts) > 0.15


def test_patch_edges_are_diffuse_not_sharp():
    # a large patch on a flat background: its boundary ramps over more than one pixel
    img = _flat((200, 200), noise=0.0)
    new, mask, info = implant_ice_patches(img, np.random.default_rng(2), count=1, min_size_px=40,
                                            max_size_fraction=0.3, contrast_range=(0.3, 0.3), return_info=True)
    inner = imaging.dilate(mask, 2) & ~mask  # just outside the mask
    partial = (new[inner] > 0.45 + 0.02) & (new[inner] < 0.45 + 0.28)
    assert partial.mean() > 0.3


def test_patches_respect_the_valid_mask():
    img = terrain.make_terrain((128, 128), np.random.default_rng(1))
    valid = np.zeros(img.shape, dtype=bool)
    valid[:, 64:] = True
    new, mask = implant_ice_patches(img, np.random.default_rng(4), count=3, valid=valid)
    assert mask.any() and not mask[:, :64].any()
    # a black no-data wedge is detected and avoided by default
    img2 = img.copy()
    wedge = np.add.outer(np.arange(128), np.arange(128)) < 70
    img2[wedge] = 0.0
    for seed in range(5):
        _, m2 = implant_ice_patches(img2, np.random.default_rng(seed), count=2)
        assert not (m2 & imaging.dilate(wedge, 1)).any()


def test_works_on_real_hirise_tiles_if_present():
    import glob

    tiles = sorted(glob.glob("/work/shared/data/hirise-terrain/tiles/*.jpg"))[:40:4]
    if not tiles:
        pytest.skip("no HiRISE tiles here")
    rng = np.random.default_rng(0)
    for path in tiles:
        img = gdal.Open(path).ReadAsArray().astype(np.float32) / 255.0
        new, mask, info = implant_ice_patches(img, rng, return_info=True)
        assert mask.any() and info
        assert new[mask].mean() > img[mask].mean()


def test_bad_arguments():
    img = _flat()
    with pytest.raises(TypeError):
        implant_ice_patches(img, 3)
    with pytest.raises(ValueError):
        implant_ice_patches(np.zeros((4, 4, 3), np.float32), np.random.default_rng(0))
    with pytest.raises(ValueError):
        implant_ice_patches(img, np.random.default_rng(0), contrast_range=(0.2, 0.1))


# ---------------------------------------------------------------------------------------
# negatives


@pytest.mark.parametrize("seed", range(5))
def test_hot_pixels_are_isolated_saturated_specks(seed):
    img = terrain.make_terrain((128, 128), np.random.default_rng(seed))
    new, mask = implant_hot_pixels(img, np.random.default_rng(seed), count=8)
    assert mask.any()
    comps = _components(mask)
    assert len(comps) >= 4
    for comp in comps:
        assert len(comp) <= 3
        cm = np.zeros_like(mask)
        for p in comp:
            cm[p] = True
        ring = imaging.dilate(cm, 1) & ~cm
        assert not (ring & mask).any()  # no other hot pixel touches this cluster
        assert np.array_equal(new[ring], img[ring])  # the neighbours are untouched
        assert new[cm].min() >= 0.9 and new[cm].min() > new[ring].max() + 0.1
    assert np.array_equal(new[~mask], img[~mask])
    again, mask2 = implant_hot_pixels(img, np.random.default_rng(seed), count=8)
    assert np.array_equal(new, again) and np.array_equal(mask, mask2)


def test_sunlit_rocks_are_sharp_and_cast_a_shadow_away_from_the_sun():
    img = _flat((160, 160), noise=0.005)
    new, mask, info = implant_sunlit_bright_rocks(img, np.random.default_rng(7), count=3,
                                                    size_range_px=(6, 10), return_info=True)
    assert mask.any() and len(info) == 3
    assert new[mask].mean() > 0.45 + 0.08
    _, shadow_dir = imaging.sun_vectors(imaging.DEFAULT_SUN_AZIMUTH_DEG)
    for rock in info:
        cy, cx = rock["centre"]
        sy, sx = rock["shadow"]
        # the shadow lies on the anti-sun side: south-south-east for the default sun
        assert (sy - cy) * shadow_dir[0] + (sx - cx) * shadow_dir[1] > 1.0
        assert sy > cy
        assert new[int(round(sy)), int(round(sx))] < 0.45 * 0.7
    # sharp edges: few intermediate pixels at the rock outline
    edge = imaging.dilate(mask, 1) & ~mask
    lit = new[edge] > 0.45 * 1.15
    assert lit.mean() < 0.35


def test_bare_shadowing_features_cast_shadows_away_from_the_sun():
    img = _flat((200, 200), noise=0.005)
    new, mask, info = implant_shadowing_features(img, np.random.default_rng(1), count=3, return_info=True)
    again, _ = implant_shadowing_features(img, np.random.default_rng(1), count=3)
    assert np.array_equal(new, again)
    assert mask.any() and info
    assert new[mask].mean() < 0.45 * 0.7
    for f in info:
        if f["shadow"] is not None:
            assert f["shadow"][0] > f["centre"][0]  # south of the feature for the default sun
    # landforms and shadows only: the scene got darker on the whole, not brighter
    assert new.mean() < img.mean()


def test_low_contrast_and_frost_versions():
    img = terrain.make_terrain((128, 128), np.random.default_rng(0))
    low = apply_low_contrast(img, np.random.default_rng(1))
    frost = apply_co2_frost(img, np.random.default_rng(1))
    assert low.std() < 0.6 * img.std()
    assert frost.mean() > img.mean() + 0.1
    assert low.dtype == frost.dtype == np.float32
    assert np.array_equal(low, apply_low_contrast(img, np.random.default_rng(1)))


# ---------------------------------------------------------------------------------------
# terrain


def test_terrain_is_deterministic_and_in_range():
    a = terrain.make_terrain((100, 140), np.random.default_rng(9))
    b = terrain.make_terrain((100, 140), np.random.default_rng(9))
    c = terrain.make_terrain((100, 140), np.random.default_rng(10))
    assert a.shape == (100, 140) and a.dtype == np.float32
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert 0.0 <= a.min() and a.max() <= 1.0
    assert 0.01 < a.std() < 0.3


def test_terrain_windows_join_seamlessly():
    t = terrain.Terrain(300, 300, np.random.default_rng(0), scale=1.0)
    whole = t.render(0, 300, 0, 300)
    top, bottom = t.render(0, 150, 0, 300), t.render(150, 300, 0, 300)
    joined = np.vstack([top, bottom])
    # identical up to the per-window sensor noise
    assert np.abs(joined - whole).max() < 12 * t.noise_sigma + 1e-6
    step = np.abs(joined[150] - joined[149]).mean()
    typical = np.abs(np.diff(joined, axis=0)).mean()
    assert step < 2.0 * typical


def test_terrain_has_shadows_on_the_anti_sun_side_of_craters():
    t = terrain.Terrain(256, 256, np.random.default_rng(3), scale=1.0, sun_elevation_deg=25.0)
    t.craters = {k: np.array(v, dtype=float) for k, v in
                 {"y": [128.0], "x": [128.0], "r": [40.0], "depth": [14.0], "rim": [2.0]}.items()}
    t.boulders = {k: v[:0] for k, v in t.boulders.items()}
    img = t.render(0, 256, 0, 256)
    # sun from the north-north-west: the north inner wall is in shadow, the south wall lit
    north = img[92:100, 120:136].mean()
    south = img[156:164, 120:136].mean()
    assert north < 0.6 * south


# ---------------------------------------------------------------------------------------
# georeferenced scene


def test_mars_equirectangular_wkt():
    wkt = sample_scene.mars_equirectangular_wkt(-55.0, 10.0)
    srs = osr.SpatialReference()
    assert srs.ImportFromWkt(wkt) == 0
    assert srs.IsProjected()
    assert srs.GetSemiMajor() == pytest.approx(3396190.0)
    assert srs.GetInvFlattening() == pytest.approx(0.0)
    assert srs.GetProjParm(osr.SRS_PP_STANDARD_PARALLEL_1) == pytest.approx(-55.0)
    assert srs.GetProjParm(osr.SRS_PP_CENTRAL_MERIDIAN) == pytest.approx(10.0)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("scene") / "scene.tif")
    info = sample_scene.write_sample_scene(path, width=2048, height=2048, rng_seed=3, latitude_deg=-60.0)
    return path, info


def test_scene_file_structure(scene):
    path, info = scene
    assert info["path"] == path and os.path.exists(path)
    assert not [f for f in os.listdir(os.path.dirname(path)) if "partial" in f]
    assert not os.path.exists(path + ".ovr")
    ds = gdal.Open(path)
    assert (ds.RasterXSize, ds.RasterYSize, ds.RasterCount) == (2048, 2048, 1)
    assert info["size"] == (2048, 2048)
    band = ds.GetRasterBand(1)
    assert band.DataType == gdal.GDT_UInt16
    assert band.GetNoDataValue() == 0
    assert ds.GetMetadata("IMAGE_STRUCTURE").get("COMPRESSION") == "DEFLATE"
    bx, by = band.GetBlockSize()
    assert bx < 2048 and by < 2048  # tiled
    assert band.GetOverviewCount() >= 2
    ov = band.GetOverview(band.GetOverviewCount() - 1)
    assert ov.XSize < 2048 // 4
    assert ov.ReadAsArray()[ov.YSize // 2, ov.XSize // 2] > 0
    gt = ds.GetGeoTransform()
    assert gt == pytest.approx(info["geotransform"])
    assert gt[1] == pytest.approx(0.25) and gt[5] == pytest.approx(-0.25)
    # centred on the requested latitude on the Mars sphere
    y_centre = gt[3] + gt[5] * 1024
    assert math.degrees(y_centre / 3396190.0) == pytest.approx(-60.0, abs=1e-3)
    srs = osr.SpatialReference()
    srs.ImportFromWkt(ds.GetProjection())
    expected = osr.SpatialReference()
    expected.ImportFromWkt(sample_scene.mars_equirectangular_wkt(-60.0))
    assert srs.IsSame(expected)
    assert srs.GetSemiMajor() == pytest.approx(3396190.0)
    assert srs.GetProjParm(osr.SRS_PP_STANDARD_PARALLEL_1) == pytest.approx(-60.0)


def test_scene_pixels(scene):
    path, info = scene
    a = gdal.Open(path).ReadAsArray()
    for r, c in ((0, 0), (0, -1), (-1, 0), (-1, -1)):
        assert a[r, c] == 0, (r, c)
    assert a[1024, 1024] > 0
    nodata = (a == 0).mean()
    assert 0.01 < nodata < 0.25
    valid = a[a > 0]
    assert valid.max() <= 1023 and valid.min() >= 1
    # the footprint is one convex region: each row's valid pixels are contiguous
    for r in range(0, 2048, 97):
        cols = np.nonzero(a[r] > 0)[0]
        if len(cols):
            assert cols[-1] - cols[0] + 1 == len(cols)


def test_scene_ice_patches_are_where_the_report_says(scene):
    path, info = scene
    patches = info["ice_patches"]
    assert patches
    ice_chunks = set(info["ice_chunks"])
    assert 1 <= len(ice_chunks) <= 4 - 1  # about half of the 4 chunks
    assert ice_chunks.isdisjoint(info["negative_chunks"])
    ds = gdal.Open(path)
    for p in patches:
        x0, y0, x1, y1 = p["bbox"]
        assert 0 <= x0 < x1 <= 2048 and 0 <= y0 < y1 <= 2048
        cr, cc = p["chunk"]
        assert p["chunk_id"] == cr * 2 + cc and p["chunk_id"] in ice_chunks
        assert cc * 1024 <= x0 and x1 <= (cc + 1) * 1024
        assert cr * 1024 <= y0 and y1 <= (cr + 1) * 1024
        # brighter than the ground around it, and inside the footprint
        m = 16
        wx0, wy0 = max(0, x0 - m), max(0, y0 - m)
        win = ds.ReadAsArray(wx0, wy0, min(2048, x1 + m) - wx0, min(2048, y1 + m) - wy0).astype(float)
        inner = win[y0 - wy0:y1 - wy0, x0 - wx0:x1 - wx0]
        assert (inner > 0).all()
        cx, cy = p["centre"]
        core = win[int(cy) - wy0 - 1:int(cy) - wy0 + 2, int(cx) - wx0 - 1:int(cx) - wx0 + 2]
        assert core.mean() > np.median(win[win > 0])


def test_scene_is_deterministic(tmp_path):
    a = sample_scene.write_sample_scene(str(tmp_path / "a.tif"), width=1024, height=768, rng_seed=5, chunk_size=512)
    b = sample_scene.write_sample_scene(str(tmp_path / "b.tif"), width=1024, height=768, rng_seed=5, chunk_size=512)
    c = sample_scene.write_sample_scene(str(tmp_path / "c.tif"), width=1024, height=768, rng_seed=6, chunk_size=512,
                             ice=False)
    da, db = gdal.Open(a["path"]).ReadAsArray(), gdal.Open(b["path"]).ReadAsArray()
    assert np.array_equal(da, db)
    assert a["ice_patches"] == b["ice_patches"]
    assert a["ice_patches"] and not c["ice_patches"] and not c["ice_chunks"]
    assert not np.array_equal(da, gdal.Open(c["path"]).ReadAsArray())


@pytest.mark.parametrize("side, size", [(227, 256), (150, 256), (1024, 256), (227, 128), (200, 97), (31, 8), (256, 256)])
def test_resize_equals_gdal_reading_into_a_buffer(side, size):
    """Training examples are resized in numpy (so they can be made without GDAL); a chunk is read
    by GDAL: both must give the network the same pixels."""
    from model.preprocess import resize

    image = np.random.default_rng(side + size).random((side, side)).astype(np.float32)
    mem = gdal.GetDriverByName("MEM").Create("", side, side, 1, gdal.GDT_Float32)
    mem.GetRasterBand(1).WriteArray(image)
    algorithm = gdal.GRIORA_Average if size <= side else gdal.GRIORA_Bilinear
    expected = mem.GetRasterBand(1).ReadAsArray(0, 0, side, side, buf_xsize=size, buf_ysize=size, buf_type=gdal.GDT_Float32, resample_alg=algorithm)
    np.testing.assert_array_equal(resize(image, size), expected)

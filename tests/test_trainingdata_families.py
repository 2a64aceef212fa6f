"""The ice families, the new look-alikes, the degradations and the example builder of
model/trainingdata: each places what it promises where its physics says (generated images)."""

import numpy as np
import pytest

pytest.importorskip("osgeo.gdal")

from model.trainingdata.degrade import degrade  # noqa: E402
from model.trainingdata.examples import FAMILIES, LOOKALIKES, make_example  # noqa: E402
from model.trainingdata.ice.crater_wall import implant_crater_wall_ice  # noqa: E402
from model.trainingdata.ice.natural_shade import implant_natural_shade_ice  # noqa: E402
from model.trainingdata.ice.stone_field import implant_stone_field_ice  # noqa: E402
from model.trainingdata.lookalikes.bright_lines import implant_bright_lines  # noqa: E402
from model.trainingdata.lookalikes.sunlit_bright import implant_sunlit_bright_patches  # noqa: E402
from model.trainingdata.shade import natural_shade, poleward_edge  # noqa: E402


def _ground(shape=(160, 160), seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(0.5 + 0.01 * rng.standard_normal(shape), 0, 1).astype(np.float32)


def _shaded_ground(seed=0):
    """Flat ground with one dark shaded area (rows 50-80, cols 40-120) and nothing drawn that casts it."""
    image = _ground(seed=seed)
    image[50:80, 40:120] *= 0.45
    shade = np.zeros(image.shape, bool)
    shade[50:80, 40:120] = True
    return image, shade


def _boulder_field(seed=0):
    """Ground with 40 small dark specks (the shadows of small boulders) in its upper left."""
    rng = np.random.default_rng(seed)
    image = _ground(seed=seed)
    for r, c in zip(rng.integers(20, 90, 40), rng.integers(20, 90, 40)):
        image[r:r + 2, c:c + 2] = 0.2
    return image


def test_natural_shade_finds_the_shaded_area_and_its_poleward_rim():
    image, truth = _shaded_ground()
    shade, darkness = natural_shade(image, np.ones(image.shape, bool), scale_px=12)
    assert shade[truth].mean() > 0.6 and shade[~truth].mean() < 0.05
    rim_rows = np.nonzero(poleward_edge(shade, darkness, 2))[0]
    assert rim_rows.min() >= 70  # the poleward (lower) part of the shade only


@pytest.mark.parametrize("seed", range(5))
def test_natural_shade_ice_lies_in_the_shade_brighter_and_draws_nothing_else(seed):
    image, truth = _shaded_ground(seed)
    out, mask, infos = implant_natural_shade_ice(image, np.random.default_rng(seed), count=1, return_info=True)
    assert mask.any() and infos
    near_shade = np.zeros_like(truth)
    near_shade[45:90, 30:130] = True
    # inside the shade or straddling its poleward edge (a very diffuse patch spills a little)
    assert near_shade[mask].mean() > 0.7
    assert 50 <= infos[0]["centre"][0] < 90
    assert (out[mask] > image[mask] + 0.02).mean() > 0.9
    assert np.all(out >= image - 1e-6)  # only ice brightens; no caster, no shadow is drawn
    assert 50 <= infos[0]["shade"][0] < 84 and 40 <= infos[0]["shade"][1] < 120


def test_natural_shade_ice_sits_at_the_poleward_rim_or_anywhere_inside_the_shade():
    image, truth = _shaded_ground()
    rows = [implant_natural_shade_ice(image, np.random.default_rng(seed), count=1, return_info=True)[2][0]["shade"][0] for seed in range(40)]
    assert all(50 <= row < 82 for row in rows)  # the shade, rows 50-79, give or take its smoothing
    rim = sum(row >= 70 for row in rows)
    assert 0 < len(rows) - rim and rim > len(rows) / 3  # the interior some of the time, the rim most often


def test_faint_ice_stands_above_the_middle_of_its_surroundings_but_need_not_outshine_them():
    from model.trainingdata.patches import paint_ice

    rng = np.random.default_rng(1)
    ground = np.clip(0.4 + 0.12 * rng.standard_normal((80, 80)), 0, 1).astype(np.float32)  # rough, half sunlit
    alpha = np.zeros((20, 20), np.float32)
    alpha[5:15, 5:15] = 1.0
    window = (30, 50, 30, 50)
    levels = {}
    for brightness in ("faint", "background", "outshine"):
        out = ground.copy()
        contrast = paint_ice(out, ground, np.ones(ground.shape, bool), window, alpha, 10.0, (0.05, 0.06), np.random.default_rng(2), brightness)
        levels[brightness] = float(np.median(out[35:45, 35:45]))
        assert np.all(out >= ground - 1e-6) and contrast > 0
    surroundings = np.percentile(ground[20:60, 20:60], (50, 85))
    assert surroundings[0] < levels["faint"] < surroundings[1] < levels["outshine"]
    assert levels["faint"] < levels["background"]  # no floor of 1.5 local standard deviations
    with pytest.raises(ValueError, match="brightness"):
        paint_ice(ground.copy(), ground, np.ones(ground.shape, bool), window, alpha, 10.0, (0.05, 0.06), rng, "glowing")


def test_some_patches_are_ragged_shapes_cut_from_noise():
    from model.trainingdata.patches import patch_shape

    shapes = [patch_shape(np.random.default_rng(seed), 30.0, 1.5, 0.0, 1.0)[0] for seed in range(30)]
    sizes = {shape.shape for shape in shapes}
    assert len(sizes) >= 2  # two kinds of canvas: the blob's and the noise patch's
    for shape in shapes:
        assert shape.max() == pytest.approx(1.0) and shape.min() >= 0.0
        centre = shape.shape[0] // 2
        assert shape[centre, centre] > 0.3


def test_natural_shade_ice_needs_shade():
    flat = np.full((96, 96), 0.5, np.float32)
    with pytest.raises(ValueError, match="shade"):
        implant_natural_shade_ice(flat, np.random.default_rng(0))


def test_families_are_deterministic_and_leave_their_input_alone():
    image, _ = _shaded_ground()
    before = image.copy()
    for implant in (implant_natural_shade_ice, implant_crater_wall_ice):
        a = implant(image, np.random.default_rng(3))[0]
        b = implant(image, np.random.default_rng(3))[0]
        assert np.array_equal(a, b)
    a = implant_stone_field_ice(_boulder_field(), np.random.default_rng(3))[0]
    assert np.array_equal(a, implant_stone_field_ice(_boulder_field(), np.random.default_rng(3))[0])
    assert np.array_equal(image, before)


@pytest.mark.parametrize("seed", range(4))
def test_stone_field_spots_are_small_many_and_in_the_lee_of_boulders(seed):
    image = _boulder_field(seed)
    out, mask, infos = implant_stone_field_ice(image, np.random.default_rng(seed), spots=12, return_info=True)
    assert len(infos) >= 5
    assert max(info["size_px"] for info in infos) <= 160 / 45.0 + 1e-6
    dark = image < 0.3
    for info in infos:
        r, c = (int(round(v)) for v in info["centre"])
        # a boulder's shadow lies just sunward (up) of the spot
        assert dark[max(r - 7, 0):r + 1, max(c - 4, 0):c + 5].any()


@pytest.mark.parametrize("seed", range(4))
def test_crater_wall_ice_is_a_long_thin_band_along_the_shade(seed):
    image, truth = _shaded_ground(seed)
    out, mask, infos = implant_crater_wall_ice(image, np.random.default_rng(seed), return_info=True)
    rows, cols = np.nonzero(mask)
    if not any(info["drawn_scarp"] for info in infos):
        assert (cols.max() - cols.min() + 1) > 1.5 * (rows.max() - rows.min() + 1)
        assert np.all(out >= image - 1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_sunlit_bright_patches_keep_away_from_shade(seed):
    image, truth = _shaded_ground(seed)
    image[100:140, 20:60] += 0.1  # a sunlit face
    out, mask, infos = implant_sunlit_bright_patches(image, np.random.default_rng(seed), return_info=True)
    assert mask.any()
    if infos[0]["kind"] == "sunlit bright patch":
        assert not (mask & truth).any()


def test_bright_lines_are_whole_or_partial_rows_or_columns():
    image = _ground()
    out, mask = implant_bright_lines(image, np.random.default_rng(1), count=1)
    rows, cols = np.nonzero(mask)
    assert len(set(rows.tolist())) <= 2 or len(set(cols.tolist())) <= 2
    assert np.all(out[mask] > image[mask] + 0.25)


def test_degrade_keeps_range_and_no_data():
    image = _ground()
    image[:, :20] = 0.0
    valid = image > 0
    for seed in range(12):
        out = degrade(image, valid, np.random.default_rng(seed))
        assert out.shape == image.shape and out.dtype == np.float32
        assert out.min() >= 0.0 and out.max() <= 1.0
        assert np.all(out[~valid] == 0.0)


def test_make_example_gives_the_network_input_with_its_label():
    image, _ = _shaded_ground()
    rng = np.random.default_rng(0)
    for family in FAMILIES:
        example = make_example(image, rng, 64, family=family)
        if example is not None:
            assert example["image"].shape == (64, 64) and example["image"].dtype == np.uint8
            assert example["label"] == 1 and example["kind"] == family
    for lookalike in LOOKALIKES:
        example = make_example(image, rng, 64, lookalike=lookalike)
        assert example["label"] == 0 and example["kind"] == lookalike


def test_make_example_on_real_terrain_if_present(shared_data):
    from osgeo import gdal

    tiles = sorted((shared_data / "hirise-terrain" / "tiles").glob("*.jpg"))[:20]
    rng = np.random.default_rng(0)
    made = {family: 0 for family in FAMILIES}
    for path in tiles:
        image = gdal.Open(str(path)).ReadAsArray().astype(np.float32) / 255.0
        for family in FAMILIES:
            made[family] += make_example(image, rng, 128, family=family) is not None
    assert all(count >= 15 for count in made.values()), made


def test_the_faint_share_is_the_share_of_patches_painted_faint(monkeypatch):
    """The recipe's --faint-share sets patches.FAINT_SHARE for the training examples it draws."""
    from model.trainingdata import patches

    rng = np.random.default_rng(0)
    for share in (0.0, 0.35, 1.0):
        monkeypatch.setattr(patches, "FAINT_SHARE", share)
        drawn = [patches.draw_brightness(rng, 0.5) for _ in range(2000)]
        assert drawn.count("faint") / len(drawn) == pytest.approx(share, abs=0.03)


def test_an_icy_examples_twin_differs_from_it_where_the_ice_lies():
    """--twins: the twin is the same part of the crop, with the same distractors and degradation,
    without the ice: its pixels follow the icy example's away from the ice, not at it."""
    from model.trainingdata.examples import TWIN_KIND

    image, _ = _shaded_ground()
    image = np.clip(image * np.linspace(0.4, 1.9, image.shape[1])[None, :], 0.01, 1).astype(np.float32)  # the stretch's ends far from the ice's
    rng = np.random.default_rng(2)
    compared = 0
    for family in FAMILIES:
        for _ in range(3):
            example = make_example(image, rng, 64, family=family, cells=8, twin=True)
            if example is None:
                continue
            twin = example["twin"]
            assert twin["label"] == 0 and twin["kind"] == TWIN_KIND and not twin["cells"].any()
            difference = np.abs(example["image"].astype(float) - twin["image"].astype(float)).reshape(8, 8, 8, 8).mean(axis=(1, 3))
            iced, bare = example["cells"] > 0.25, example["cells"] == 0
            if iced.any() and bare.any():
                assert difference[iced].mean() > 3 * difference[bare].mean() + 1, family
                compared += 1
    assert compared >= 6
    plain = None
    while plain is None:
        plain = make_example(image, rng, 64, family="crater wall")
    assert "twin" not in plain

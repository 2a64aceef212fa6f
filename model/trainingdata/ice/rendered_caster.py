"""Ice family "rendered caster": a patch at the poleward edge of a cast shadow.

The shadow is a real one found in the image when it is large enough, else a boulder or rim
segment drawn with its own shadow (model.trainingdata.relief). A network trained on this family
alone learns the drawn caster: the other families have none."""

import math
from typing import List, NamedTuple, Tuple

import numpy as np

from ..imaging import (DEFAULT_SUN_AZIMUTH_DEG, DEFAULT_SUN_ELEVATION_DEG, MASK_ALPHA, as_image, as_valid, check_rng,
                       dilate, loguniform, sun_vectors)
from ..patches import paint_ice, patch_shape, place_patch
from ..relief import draw_feature, feature_params
from ..shade import find_cast_shadows, shadow_extent


def implant_ice_patches(image, rng, count=None, sun_azimuth_deg=DEFAULT_SUN_AZIMUTH_DEG, min_size_px=3,
                        max_size_fraction=1.0 / 3.0, contrast_range=(0.04, 0.35), *,
                        sun_elevation_deg=DEFAULT_SUN_ELEVATION_DEG, valid=None, return_info=False):
    """Plant ``count`` (default: 1 to 3) residual ice patches; returns (new_image, mask).

    For each patch: look for shadowed pixels with a brighter (sunlit) feature on their sunward
    side, and put the patch at the poleward (lower) edge of that shadow, overlapping its
    lower part; where no usable shadow exists (or none large enough for the patch), first draw
    a boulder or rim segment with its cast shadow and place the patch poleward of it. Patches
    are irregular, elongated roughly along the shadowing landform, ``min_size_px`` to
    ``max_size_fraction`` of the shorter image side long (log-uniform, so small ones are
    common), ``contrast_range`` brighter than the local background (log-uniform: many are
    faint), with Gaussian-blurred edges and no shadow.

    ``valid`` (bool array) restricts patches and shadow search to valid pixels; by default
    everything but a near-black no-data border (``border_nodata_mask``). If the image has no
    room for ``count`` patches, fewer are planted (ValueError if none fits). ``mask`` marks
    the pixels whose blending weight exceeds 0.5. With
    ``return_info=True`` a third element lists one dict per patch: ``bbox`` (row0, col0,
    row1, col1; ends exclusive), ``centre`` (row, col: the mask centroid), ``shadow``
    (row, col of the shadow it was placed against: its darkest pixel, or the centroid of a
    synthesised shadow), ``size_px``, ``contrast`` (patch level minus local background) and
    ``synthesized_feature``.
    """
    check_rng(rng)
    out = as_image(image)
    h, w = out.shape
    valid = as_valid(valid, out.shape, out)
    if count is None:
        count = int(rng.integers(1, 4))
    count = int(count)
    if count < 1:
        raise ValueError("count must be at least 1")
    clo, chi = float(contrast_range[0]), float(contrast_range[1])
    if not (0.0 < clo <= chi):
        raise ValueError("contrast_range must be (low, high) with 0 < low <= high")
    scene = _Scene(out, valid, sun_azimuth_deg, sun_elevation_deg, min_size_px, max(float(min_size_px), min(h, w) * float(max_size_fraction)))
    mask = np.zeros((h, w), dtype=bool)
    infos: List[dict] = []
    for n in range(count):
        planted = _plant_one(scene, rng)
        if planted is None:
            if n == 0:
                raise ValueError("could not place an ice patch in a %dx%d image (too small or no valid room)" % (h, w))
            break
        window, a, size, shadow, synth = planted
        bbox, centre, contrast = _paint(scene, rng, window, a, size, (clo, chi), mask)
        scene.hold(window, a, shadow)
        infos.append({"bbox": bbox, "centre": centre, "shadow": (int(shadow.row), int(shadow.col)), "size_px": float(size),
                      "contrast": float(contrast), "synthesized_feature": bool(synth)})
    if return_info:
        return scene.out, mask, infos
    return scene.out, mask


class _Scene:
    """The image being planted, what was found in it once, and what the patches so far hold."""

    def __init__(self, out, valid, sun_azimuth_deg, sun_elevation_deg, min_size_px, max_size):
        self.out, self.orig, self.valid = out, out.copy(), valid
        self.sun_azimuth_deg, self.sun_elevation_deg = sun_azimuth_deg, sun_elevation_deg
        self.min_size_px, self.max_size, self.side = min_size_px, max_size, min(out.shape)
        _, self.shadow_dir = sun_vectors(sun_azimuth_deg)
        self.rows, self.cols, self.score, self.s, self.m, self.sd = find_cast_shadows(out, valid, sun_azimuth_deg)
        self.occupied = np.zeros(out.shape, dtype=bool)
        self.used_shadows: List[Tuple[int, int]] = []
        # the long axis of a patch follows the landform: perpendicular to the shadow direction
        self.along = math.atan2(self.shadow_dir[0], self.shadow_dir[1]) + math.pi / 2.0

    def hold(self, window, a, shadow):
        """A painted patch (its blending weights ``a`` over ``window``) and the shadow it fills are
        no longer free for the next patches."""
        wr0, wr1, wc0, wc1 = window
        self.occupied[wr0:wr1, wc0:wc1] |= dilate(a > 0.02, 2)
        self.used_shadows.append((shadow.row, shadow.col))


class _Shadow(NamedTuple):
    """The shadow a patch is placed against: a pixel of it (its darkest, or a drawn one's
    centroid), the column of its centre line and the row just below its poleward edge."""

    row: int
    col: int
    centre_col: float
    bottom: float


def _plant_one(scene: _Scene, rng):
    """Up to 45 attempts at one patch: the first 15 against real shadows, then beside drawn
    casters. Returns (window, alpha, size, shadow, synthesised) with any drawn caster already in
    scene.out, or None where no attempt fitted."""
    size = size0 = loguniform(rng, scene.min_size_px, scene.max_size)
    synth_failures = 0
    may_shrink = rng.random() < 0.6  # else a large patch gets a landform of its own size
    for attempt in range(45):
        synth = not (len(scene.rows) and attempt < 15)
        if not synth:
            found = _real_shadow(scene, rng, size, attempt, may_shrink)
            if found is None:
                continue
            shadow, size = found
        else:
            size = max(float(scene.min_size_px), size0 * 0.85 ** (synth_failures // 4))
            synth_failures += 1
        elongation = rng.uniform(1.3, 4.0) if size >= 6 else rng.uniform(1.0, 2.0)
        angle = scene.along + rng.normal(0.0, math.radians(25.0))
        sigma = rng.uniform(0.5, 1.1) + rng.uniform(0.02, 0.06) * size / elongation
        alpha, pr, pc = patch_shape(rng, size, elongation, angle, sigma)
        core_rows = np.nonzero((alpha > MASK_ALPHA).any(axis=1))[0]
        half_up = pr - core_rows[0]  # rows from the centre to the top of the patch
        work = None
        if synth:
            drawn = _drawn_caster(scene, rng, size, alpha, pr, pc, half_up)
            if drawn is None:
                continue
            work, shadow = drawn
        placed = _poleward_of(scene, rng, shadow, alpha, pr, pc, half_up, size / elongation)
        if placed is None:
            continue
        (wr0, wr1, wc0, wc1), a = placed
        if not synth and _on_lit_slope(scene, (wr0, wr1, wc0, wc1), a):
            continue
        if synth:
            scene.out = work  # commit the drawn caster
        return (wr0, wr1, wc0, wc1), a, size, shadow, synth
    return None


def _real_shadow(scene: _Scene, rng, size, attempt, may_shrink):
    """A real shadow in the image (preferring strongly shadowed pixels) large enough for the
    patch, and the patch's size: ice fills the shade, it does not spill over the plain. After a
    few misses the patch may shrink to a real shadow rather than get a drawn one. None: try again."""
    j = int(rng.choice(len(scene.rows), p=scene.score / scene.score.sum()))
    sr, sc, scentre, bottom, swidth, sdepth = shadow_extent(scene.s, scene.m, int(scene.rows[j]), int(scene.cols[j]), limit=scene.side // 3)
    if (sr, sc) in scene.used_shadows:
        return None
    fit = 0.9 * swidth + 0.5 * sdepth + 3.0
    if size > fit:
        if attempt < 4 or fit < scene.min_size_px or not may_shrink:
            return None
        size = fit
    return _Shadow(sr, sc, scentre, bottom), size


def _drawn_caster(scene: _Scene, rng, size, alpha, pr, pc, half_up):
    """A boulder or rim segment drawn with its shadow above where the patch will go, on a copy of
    the image: (that copy, the shadow), or None where it does not fit the valid, free ground."""
    h, w = scene.out.shape
    shadow_dir = scene.shadow_dir
    work = scene.out.copy()
    feat = feature_params(rng, size, scene.side, scene.along, scene.sun_elevation_deg)
    rx, ry, hpx = feat["rx"], feat["ry"], feat["height"]
    length = hpx / math.tan(math.radians(max(3.0, scene.sun_elevation_deg)))
    ext = max(rx, ry) + 2
    faint_r = np.nonzero((alpha > 0.02).any(axis=1))[0]
    faint_c = np.nonzero((alpha > 0.02).any(axis=0))[0]
    patch_h = faint_r[-1] - pr + half_up  # from the patch top to its faint bottom edge
    patch_w = max(pc - faint_c[0], faint_c[-1] - pc)
    need_below = ext + max(0.0, shadow_dir[0] * length) + patch_h + 4
    lo_r, hi_r = ext + 2, h - need_below
    lo_c = max(ext + 2 + max(0.0, -shadow_dir[1] * length), patch_w + 2)
    hi_c = min(w - ext - 2 - max(0.0, shadow_dir[1] * length), w - patch_w - 2)
    if hi_r <= lo_r or hi_c <= lo_c:
        return None
    fy, fx = rng.uniform(lo_r, hi_r), rng.uniform(lo_c, hi_c)
    res = draw_feature(work, feat, fy, fx, scene.sun_azimuth_deg, scene.sun_elevation_deg)
    if res is None:
        return None
    (fr0, fr1, fc0, fc1), body, shad = res
    sh = shad > 0.5
    if not sh.any():
        return None
    footprint = (body + shad) > 0.05
    if not scene.valid[fr0:fr1, fc0:fc1][footprint].all() or scene.occupied[fr0:fr1, fc0:fc1][footprint].any():
        return None
    srows, scols = np.nonzero(sh)
    sr = int(round(srows.mean())) + fr0
    sc = int(round(scols.mean())) + fc0
    col_hits = np.nonzero(sh[:, min(max(sc - fc0, 0), sh.shape[1] - 1)])[0]
    bottom = (col_hits.max() + 1 + fr0) if len(col_hits) else srows.max() + 1 + fr0
    return work, _Shadow(sr, sc, sc, bottom)


def _poleward_of(scene: _Scene, rng, shadow: _Shadow, alpha, pr, pc, half_up, width):
    """The patch at the poleward edge of the shadow, partly inside it, leaving the darkest part of
    the shadow (and the feature casting it) uncovered: (window, alpha in it), or None."""
    centre_row = max(shadow.bottom + rng.uniform(-0.4, 0.4) * half_up, shadow.row + 1.0 + half_up)
    centre_col = shadow.centre_col + rng.normal(0.0, 0.15 * max(width, 1.0))
    if centre_row <= shadow.row:
        return None
    return place_patch(scene.out.shape, scene.valid, scene.occupied, alpha, pr, pc, centre_row, centre_col)


def _on_lit_slope(scene: _Scene, window, a) -> bool:
    """Ice does not survive on sunlit faces: a patch mostly on bright slopes is refused."""
    wr0, wr1, wc0, wc1 = window
    pm = a > MASK_ALPHA
    lit = scene.s[wr0:wr1, wc0:wc1] > scene.m[wr0:wr1, wc0:wc1] + 0.5 * scene.sd[wr0:wr1, wc0:wc1]
    return bool(pm.any() and lit[pm].mean() > 0.3)


def _paint(scene: _Scene, rng, window, a, size, contrast_range, mask):
    """Paints the placed patch and marks it in the mask: (its bbox, its centre, its contrast)."""
    wr0, wr1, wc0, wc1 = window
    contrast = paint_ice(scene.out, scene.orig, scene.valid, window, a, size, contrast_range, rng)
    pm = a > MASK_ALPHA
    mask[wr0:wr1, wc0:wc1] |= pm
    prow, pcol = np.nonzero(pm)
    return ((int(prow.min() + wr0), int(pcol.min() + wc0), int(prow.max() + wr0 + 1), int(pcol.max() + wc0 + 1)),
            (float(prow.mean() + wr0), float(pcol.mean() + wc0)), contrast)

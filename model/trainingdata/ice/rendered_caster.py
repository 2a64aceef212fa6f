"""Ice family "rendered caster": a patch at the poleward edge of a cast shadow.

The shadow is a real one found in the image when it is large enough, else a boulder or rim
segment drawn with its own shadow (model.trainingdata.relief). A network trained on this family
alone learns the drawn caster: the other families have none."""

import math
from typing import List, Tuple

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
    side = min(h, w)
    max_size = max(float(min_size_px), side * float(max_size_fraction))
    clo, chi = float(contrast_range[0]), float(contrast_range[1])
    if not (0.0 < clo <= chi):
        raise ValueError("contrast_range must be (low, high) with 0 < low <= high")
    _, shadow_dir = sun_vectors(sun_azimuth_deg)
    orig = out.copy()
    rows, cols, score, s, m, sd = find_cast_shadows(out, valid, sun_azimuth_deg)
    occupied = np.zeros((h, w), dtype=bool)
    mask = np.zeros((h, w), dtype=bool)
    infos: List[dict] = []
    used_shadows: List[Tuple[int, int]] = []
    # the long axis of a patch follows the landform: perpendicular to the shadow direction
    along = math.atan2(shadow_dir[0], shadow_dir[1]) + math.pi / 2.0

    for n in range(count):
        placed = False
        size = loguniform(rng, min_size_px, max_size)
        size0 = size
        synth_failures = 0
        may_shrink = rng.random() < 0.6  # else a large patch gets a landform of its own size
        for attempt in range(45):
            # 1) a real shadow in the image (preferring strongly shadowed pixels) that is
            # large enough for the patch: ice fills the shade, it does not spill over the plain
            shadow_rc = None
            synth = not (len(rows) and attempt < 15)
            if not synth:
                j = int(rng.choice(len(rows), p=score / score.sum()))
                sr, sc, scentre, bottom, swidth, sdepth = shadow_extent(s, m, int(rows[j]), int(cols[j]),
                                                                         limit=side // 3)
                if (sr, sc) in used_shadows:
                    continue
                fit = 0.9 * swidth + 0.5 * sdepth + 3.0
                if size > fit:
                    # after a few misses, rather shrink the patch to a real shadow than invent one
                    if attempt < 4 or fit < min_size_px or not may_shrink:
                        continue
                    size = fit
                shadow_rc = (sr, sc)
            else:
                size = max(float(min_size_px), size0 * 0.85 ** (synth_failures // 4))
                synth_failures += 1
            elongation = rng.uniform(1.3, 4.0) if size >= 6 else rng.uniform(1.0, 2.0)
            angle = along + rng.normal(0.0, math.radians(25.0))
            sigma = rng.uniform(0.5, 1.1) + rng.uniform(0.02, 0.06) * size / elongation
            alpha, pr, pc = patch_shape(rng, size, elongation, angle, sigma)
            core_rows = np.nonzero((alpha > MASK_ALPHA).any(axis=1))[0]
            half_up = pr - core_rows[0]  # rows from the centre to the top of the patch
            # 2) otherwise synthesise a shadowing feature above where the patch goes
            if synth:
                work = out.copy()
                feat = feature_params(rng, size, side, along, sun_elevation_deg)
                rx, ry, hpx = feat["rx"], feat["ry"], feat["height"]
                length = hpx / math.tan(math.radians(max(3.0, sun_elevation_deg)))
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
                    continue
                fy, fx = rng.uniform(lo_r, hi_r), rng.uniform(lo_c, hi_c)
                res = draw_feature(work, feat, fy, fx, sun_azimuth_deg, sun_elevation_deg)
                if res is None:
                    continue
                (fr0, fr1, fc0, fc1), body, shad = res
                sh = shad > 0.5
                if not sh.any():
                    continue
                footprint = (body + shad) > 0.05
                if not valid[fr0:fr1, fc0:fc1][footprint].all() or occupied[fr0:fr1, fc0:fc1][footprint].any():
                    continue
                srows, scols = np.nonzero(sh)
                sr = int(round(srows.mean())) + fr0
                sc = int(round(scols.mean())) + fc0
                col_hits = np.nonzero(sh[:, min(max(sc - fc0, 0), sh.shape[1] - 1)])[0]
                bottom = (col_hits.max() + 1 + fr0) if len(col_hits) else srows.max() + 1 + fr0
                shadow_rc = (sr, sc)
                scentre = sc
            sr, sc = shadow_rc
            # the patch sits at the poleward edge of the shadow, partly inside it, but leaves
            # the darkest part of the shadow (and the feature casting it) uncovered
            centre_row = max(bottom + rng.uniform(-0.4, 0.4) * half_up, sr + 1.0 + half_up)
            centre_col = scentre + rng.normal(0.0, 0.15 * max(size / elongation, 1.0))
            if centre_row <= sr:
                continue
            placed_win = place_patch(out.shape, valid, occupied, alpha, pr, pc, centre_row, centre_col)
            if placed_win is None:
                continue
            (wr0, wr1, wc0, wc1), a = placed_win
            if not synth:
                # ice does not survive on sunlit faces: keep the patch off the bright slopes
                pm = a > MASK_ALPHA
                lit = s[wr0:wr1, wc0:wc1] > m[wr0:wr1, wc0:wc1] + 0.5 * sd[wr0:wr1, wc0:wc1]
                if pm.any() and lit[pm].mean() > 0.3:
                    continue
            if synth:
                out = work  # commit the synthesised feature
            contrast = paint_ice(out, orig, valid, (wr0, wr1, wc0, wc1), a, size, (clo, chi), rng)
            pm = a > MASK_ALPHA
            mask[wr0:wr1, wc0:wc1] |= pm
            occupied[wr0:wr1, wc0:wc1] |= dilate(a > 0.02, 2)
            used_shadows.append((sr, sc))
            prow, pcol = np.nonzero(pm)
            infos.append({
                "bbox": (int(prow.min() + wr0), int(pcol.min() + wc0),
                         int(prow.max() + wr0 + 1), int(pcol.max() + wc0 + 1)),
                "centre": (float(prow.mean() + wr0), float(pcol.mean() + wc0)),
                "shadow": (int(sr), int(sc)),
                "size_px": float(size),
                "contrast": float(contrast),
                "synthesized_feature": bool(synth),
            })
            placed = True
            break
        if not placed:
            if n == 0:
                raise ValueError("could not place an ice patch in a %dx%d image (too small or no valid room)" % (h, w))
            break
    if return_info:
        return out, mask, infos
    return out, mask

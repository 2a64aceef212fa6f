"""Look-alike: the rendered casters of the ice family, with their shadows and no ice."""

import math

import numpy as np

from ..imaging import DEFAULT_SUN_AZIMUTH_DEG, DEFAULT_SUN_ELEVATION_DEG, as_image, as_valid, check_rng, loguniform, sun_vectors
from ..relief import draw_feature, feature_params


def implant_shadowing_features(image, rng, count=None, sun_azimuth_deg=DEFAULT_SUN_AZIMUTH_DEG, size_range_px=None, *,
                               sun_elevation_deg=DEFAULT_SUN_ELEVATION_DEG, valid=None, return_info=False):
    """Boulders and rim segments / ledges with their cast shadows, but no ice (negatives).

    The same landforms ``implant_ice_patches`` synthesises where it finds no shadow, so a
    shadowing feature alone is no evidence of ice. ``size_range_px`` (default: 6 px to 1/3
    of the shorter side) is the length of the patch such a feature could shade. Returns
    (new_image, mask of the shadow pixels) (+ per-feature dicts with ``kind``, ``centre``,
    ``shadow`` (row, col of the shadow centroid)).
    """
    check_rng(rng)
    out = as_image(image)
    h, w = out.shape
    valid = as_valid(valid, out.shape, out)
    side = min(h, w)
    if size_range_px is None:
        size_range_px = (6.0, max(6.0, side / 3.0))
    if count is None:
        count = int(rng.integers(1, 4))
    _, shadow_dir = sun_vectors(sun_azimuth_deg)
    along = math.atan2(shadow_dir[0], shadow_dir[1]) + math.pi / 2.0
    mask = np.zeros((h, w), dtype=bool)
    occupied = np.zeros((h, w), dtype=bool)
    infos = []
    for _ in range(int(count)):
        for _try in range(20):
            size = loguniform(rng, size_range_px[0], size_range_px[1])
            feat = feature_params(rng, size, side, along, sun_elevation_deg)
            ext = max(feat["rx"], feat["ry"]) + 2
            if 2 * ext + 4 >= side:
                continue
            cy, cx = rng.uniform(ext + 1, h - ext - 1), rng.uniform(ext + 1, w - ext - 1)
            work = out.copy()
            res = draw_feature(work, feat, cy, cx, sun_azimuth_deg, sun_elevation_deg)
            if res is None:
                continue
            (r0, r1, c0, c1), body, shad = res
            footprint = (body + shad) > 0.05
            if not valid[r0:r1, c0:c1][footprint].all() or occupied[r0:r1, c0:c1][footprint].any():
                continue
            out = work
            sh = shad > 0.5
            mask[r0:r1, c0:c1] |= sh
            occupied[r0:r1, c0:c1] |= footprint
            srows, scols = np.nonzero(sh)
            shadow = (float(srows.mean() + r0), float(scols.mean() + c0)) if len(srows) else None
            infos.append({"kind": feat["kind"], "centre": (float(cy), float(cx)), "shadow": shadow})
            break
    if return_info:
        return out, mask, infos
    return out, mask

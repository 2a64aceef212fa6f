"""Look-alike: bright sharp-edged rocks that cast their own shadow on the anti-sun side."""

import math

import numpy as np

from ..imaging import DEFAULT_SUN_AZIMUTH_DEG, DEFAULT_SUN_ELEVATION_DEG, MASK_ALPHA, as_image, as_valid, check_rng, loguniform
from ..relief import render_feature


def implant_sunlit_bright_rocks(image, rng, count=None, sun_azimuth_deg=DEFAULT_SUN_AZIMUTH_DEG, size_range_px=None,
                                contrast_range=(0.12, 0.45), *, sun_elevation_deg=DEFAULT_SUN_ELEVATION_DEG,
                                valid=None, return_info=False):
    """Bright, sharp-edged rocks/patches that cast a shadow on the anti-sun side (hard negatives).

    ``size_range_px`` (default: 2 px to 1/12 of the shorter side) is the rock's long axis.
    Returns (new_image, mask of the rock bodies) (+ per-rock dicts with ``centre``,
    ``shadow`` (row, col of the shadow centroid) and ``size_px``).
    """
    check_rng(rng)
    out = as_image(image)
    h, w = out.shape
    valid = as_valid(valid, out.shape, out)
    side = min(h, w)
    if size_range_px is None:
        size_range_px = (2.0, max(4.0, side / 12.0))
    if count is None:
        count = int(rng.integers(1, 5))
    mask = np.zeros((h, w), dtype=bool)
    occupied = np.zeros((h, w), dtype=bool)
    infos = []
    for _ in range(int(count)):
        for _try in range(30):
            size = loguniform(rng, size_range_px[0], size_range_px[1])
            rx = max(1.0, size / 2.0)
            ry = max(0.8, rx / rng.uniform(1.0, 2.5))
            ang = rng.uniform(0, math.pi)
            hpx = min(rx, ry) * rng.uniform(0.7, 1.6)
            ext = rx + hpx / math.tan(math.radians(max(3.0, sun_elevation_deg))) + 3
            if 2 * ext + 2 >= side:
                continue
            cy, cx = rng.uniform(ext, h - ext), rng.uniform(ext, w - ext)
            r0, r1 = int(max(cy - ext, 0)), int(min(cy + ext + 1, h))
            c0, c1 = int(max(cx - ext, 0)), int(min(cx + ext + 1, w))
            if occupied[r0:r1, c0:c1].any() or not valid[r0:r1, c0:c1].all():
                continue
            bg = float(np.median(out[r0:r1, c0:c1]))
            level = min(bg + loguniform(rng, contrast_range[0], contrast_range[1]), 0.95)
            res = render_feature(out, (0, 0), cy, cx, ry, rx, ang, sun_azimuth_deg, sun_elevation_deg, hpx,
                                  level=level, shadow_factor=rng.uniform(0.2, 0.45), edge_px=0.35,
                                  penumbra_px=0.5, ambient=0.55)
            if res is None:
                continue
            (fr0, fr1, fc0, fc1), body, shad = res
            mask[fr0:fr1, fc0:fc1] |= body > MASK_ALPHA
            occupied[r0:r1, c0:c1] = True
            srows, scols = np.nonzero(shad > 0.5)
            shadow = (float(srows.mean() + fr0), float(scols.mean() + fc0)) if len(srows) else None
            infos.append({"centre": (float(cy), float(cx)), "shadow": shadow, "size_px": float(size)})
            break
    if return_info:
        return out, mask, infos
    return out, mask

"""Ice family "natural shade": a patch in the shade the real terrain already has, found from
the image itself; nothing is drawn but the ice.

The patch sits at the poleward rim of a shaded area, wholly inside the shade or straddling its
poleward edge, or (INTERIOR_SHARE of the images) anywhere inside the shade. Its size, elongation, edge softness (sharp to very diffuse), inner texture and
contrast are random; some patches take the outline of the shade they fill.
"""

import math

import numpy as np

from ..imaging import as_image, as_valid, box_mean, check_rng, dilate, loguniform
from ..patches import draw_brightness, patch_shape, plant
from ..shade import natural_shade, poleward_edge

CONTRAST = (0.05, 0.8)
INTERIOR_SHARE = 0.4
SHADE_STRENGTHS = (0.8, 0.5, 0.25)  # darkness a shade pixel needs (natural_shade), strongest first


def implant_natural_shade_ice(image, rng, count=None, *, min_size_px=4.0, max_size_fraction=1.0 / 3.0,
                              contrast_range=CONTRAST, valid=None, return_info=False):
    """Plant ``count`` (default 1 to 3) patches in the image's own shade; returns (image, mask)
    (+ per-patch info). ValueError when the image has no shade to hold one."""
    check_rng(rng)
    out = as_image(image)
    h, w = out.shape
    valid = as_valid(valid, out.shape, out)
    side = min(h, w)
    count = int(rng.integers(1, 4)) if count is None else int(count)
    orig = out.copy()
    candidates = None
    interior = rng.random() < INTERIOR_SHARE
    for strength in SHADE_STRENGTHS:
        shade, darkness = natural_shade(out, valid, max(6, side // int(rng.integers(8, 24))), strength)
        if interior:  # shade a few pixels from any lit ground
            edge = shade & ~dilate(~shade, max(2, side // 60))
        else:  # the poleward rim of shade with a body, not of a speck of noise
            edge = poleward_edge(shade, darkness, max(1, side // 100)) & dilate(shade & ~dilate(~shade, 1), 2)
        margin = max(2, side // 40)
        edge[:margin], edge[-margin:], edge[:, :margin], edge[:, -margin:] = False, False, False, False
        if edge.any():
            candidates = np.nonzero(edge)
            break
    if candidates is None:
        raise ValueError("no shade in this image to hold an ice patch")
    weights = np.clip(darkness[candidates], 0.05, None)
    weights = weights / weights.sum()
    soft_shade = box_mean(shade.astype(np.float32), 1)
    occupied = np.zeros((h, w), bool)
    mask = np.zeros((h, w), bool)
    infos = []
    for _ in range(count):
        for _attempt in range(30):
            j = int(rng.choice(len(weights), p=weights))
            r, c = int(candidates[0][j]), int(candidates[1][j])
            across, deep = _shade_extent(shade, r, c)
            # ice fills the shade; it does not spill far over the lit plain
            size = min(loguniform(rng, min_size_px, max(min_size_px, side * max_size_fraction)), max(min_size_px, 1.3 * across))
            elongation = max(rng.uniform(1.0, 4.0), size / max(2.0, deep))
            # shade rims run roughly east-west under a sun from the north
            angle = rng.normal(0.0, math.radians(30.0))
            sigma = loguniform(rng, 0.3, max(0.6, size / 4.0))
            alpha, pr, pc = patch_shape(rng, size, elongation, angle, sigma)
            half = max(1.0, 0.5 * size / elongation)
            centre = (r + rng.uniform(-1.0, 0.5) * half, c + rng.normal(0.0, 0.2 * size))
            if rng.random() < 0.35:
                alpha = _fill_shade(alpha, pr, pc, centre, soft_shade)
            info = plant(out, orig, valid, occupied, mask, alpha, pr, pc, centre, size, contrast_range, rng,
                         brightness=draw_brightness(rng, 0.5))
            if info is not None:
                infos.append(dict(info, shade=(r, c)))
                break
    if not infos:
        raise ValueError("no room for an ice patch in the shade of this image")
    return (out, mask, infos) if return_info else (out, mask)


def _shade_extent(shade, r, c):
    """(width of the shade along row ``r`` through column ``c``, depth of the shade above (r, c))."""
    row = shade[r]
    left = c - int(np.argmin(row[c::-1])) if not row[:c + 1].all() else 0
    right = c + int(np.argmin(row[c:])) if not row[c:].all() else len(row)
    column = shade[:r + 1, c][::-1]
    depth = int(np.argmin(column)) if not column.all() else r + 1
    return right - left, depth


def _fill_shade(alpha, pr, pc, centre, soft_shade):
    """The patch limited to the shade around it (ice fills the shade's outline), keeping its core."""
    h, w = soft_shade.shape
    r0, c0 = int(round(centre[0])) - pr, int(round(centre[1])) - pc
    window = np.zeros(alpha.shape, np.float32)
    rr0, cc0 = max(r0, 0), max(c0, 0)
    rr1, cc1 = min(r0 + alpha.shape[0], h), min(c0 + alpha.shape[1], w)
    if rr0 >= rr1 or cc0 >= cc1:
        return alpha
    window[rr0 - r0:rr1 - r0, cc0 - c0:cc1 - c0] = soft_shade[rr0:rr1, cc0:cc1]
    limited = alpha * np.maximum(window, 0.15)
    return limited / max(float(limited.max()), 1e-6)

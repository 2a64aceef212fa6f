"""Ice family "stone field": clusters of small bright spots, each in the lee (poleward shade)
of one of many small boulders, where the paper says most residual ice sits.

The boulders are the dark specks of the real terrain where a cluster has enough of them; where
it has too few, small boulders are drawn with their shadows to make up the field.
"""

import math

import numpy as np

from ..imaging import (DEFAULT_SUN_AZIMUTH_DEG, DEFAULT_SUN_ELEVATION_DEG, as_image, as_valid, box_mean, check_rng,
                       loguniform, sun_vectors)
from ..patches import draw_brightness, patch_shape, plant
from ..relief import render_feature

CONTRAST = (0.08, 0.7)


def _dark_specks(image, valid):
    """Pixels darker than their 9x9 neighbourhood by twice its spread: boulder shadows."""
    fill = np.where(valid, image, float(np.median(image[valid])) if valid.any() else 0.5).astype(np.float32)
    mean = box_mean(fill, 4)
    sd = np.sqrt(np.maximum(box_mean(fill * fill, 4) - mean * mean, 1e-8))
    speck = (mean - fill) > np.maximum(1.5 * sd, 0.04)
    local_min = fill <= box_mean(fill, 1) - 0.25 * sd
    return speck & local_min & valid


def implant_stone_field_ice(image, rng, *, spots=None, contrast_range=CONTRAST, valid=None,
                            sun_azimuth_deg=DEFAULT_SUN_AZIMUTH_DEG, sun_elevation_deg=DEFAULT_SUN_ELEVATION_DEG,
                            return_info=False):
    """Plant one field of ``spots`` (default 4 to 30) small ice spots; returns (image, mask)
    (+ per-spot info). ValueError when no field fits."""
    check_rng(rng)
    out = as_image(image)
    h, w = out.shape
    valid = as_valid(valid, out.shape, out)
    side = min(h, w)
    spots = int(rng.integers(4, 31)) if spots is None else int(spots)
    _, shadow_dir = sun_vectors(sun_azimuth_deg)
    radius = rng.uniform(side / 10.0, side / 3.5)
    specks = _dark_specks(out, valid)
    density = box_mean(specks.astype(np.float32), max(1, int(radius)))
    if specks.any():  # the field where the boulders are
        weights = density.ravel() / density.sum()
        index = int(rng.choice(len(weights), p=weights))
        centre = (index // w, index % w)
    else:
        centre = (rng.uniform(radius * 0.5, h - radius * 0.5), rng.uniform(radius * 0.5, w - radius * 0.5))
    rows, cols = np.nonzero(specks)
    near = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 < radius ** 2
    rows, cols = rows[near], cols[near]
    if len(rows) > spots:
        keep = rng.choice(len(rows), spots, replace=False)
        rows, cols = rows[keep], cols[keep]
    boulders = [(int(r), int(c)) for r, c in zip(rows, cols)]
    # too few real boulders: draw small ones with their shadows
    for _ in range(max(0, spots // 2 - len(boulders))):
        r, c = centre[0] + rng.uniform(-radius, radius), centre[1] + rng.uniform(-radius, radius)
        if not (3 <= r < h - 6 and 3 <= c < w - 6) or not valid[int(r), int(c)]:
            continue
        size = rng.uniform(0.8, max(1.0, side / 90.0))
        drawn = render_feature(out, (0, 0), r, c, size, size * rng.uniform(0.8, 1.2), rng.uniform(0, math.pi),
                               sun_azimuth_deg, sun_elevation_deg, size * rng.uniform(0.8, 1.5), gain=rng.uniform(0.95, 1.15))
        if drawn is not None:
            boulders.append((int(round(r + shadow_dir[0] * size * 1.5)), int(round(c + shadow_dir[1] * size * 1.5))))
    orig = out.copy()
    occupied = np.zeros((h, w), bool)
    mask = np.zeros((h, w), bool)
    infos = []
    field_contrast = (contrast_range[0], loguniform(rng, contrast_range[0] * 1.5, contrast_range[1]))
    for r, c in boulders:
        size = loguniform(rng, 1.5, max(2.0, side / 45.0))
        alpha, pr, pc = patch_shape(rng, size, rng.uniform(1.0, 2.2), rng.normal(0.0, 0.5), loguniform(rng, 0.3, 1.2))
        lee = rng.uniform(0.5, 2.0)
        spot = (r + shadow_dir[0] * lee + 0.5 * size, c + shadow_dir[1] * lee)
        info = plant(out, orig, valid, occupied, mask, alpha, pr, pc, spot, size, field_contrast, rng, brightness=draw_brightness(rng, 0.6))
        if info is not None:
            infos.append(info)
    if len(infos) < 2:
        raise ValueError("no room for a stone field in this image")
    return (out, mask, infos) if return_info else (out, mask)

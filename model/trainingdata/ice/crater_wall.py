"""Ice family "crater wall": thin bands along pole-facing crater walls and scarps.

Under a sun from the north, a pole-facing wall is a broad dark band; the ice lies along it as a
long, thin, curved and often broken streak. The wall is taken from the image's large-scale
shade; where there is none, a scarp is drawn (model.trainingdata.relief) and the band follows its shade.
"""

import math

import numpy as np

from ..imaging import (DEFAULT_SUN_AZIMUTH_DEG, DEFAULT_SUN_ELEVATION_DEG, as_image, as_valid, box_mean, check_rng,
                       gauss_blur, loguniform)
from ..patches import draw_brightness, plant
from ..relief import render_ridge
from ..shade import natural_shade, poleward_edge

CONTRAST = (0.05, 0.8)


def band_shape(rng, length, width, angle, curvature, broken):
    """A curved streak (rows, cols centred in the array): Gaussian across, tapered along,
    optionally broken into pieces by smooth noise. Returns (alpha, centre_row, centre_col)."""
    pad = int(math.ceil(length / 2 + abs(curvature) * (length / 2) ** 2 + 3 * width + 3))
    n = 2 * pad + 1
    y = (np.arange(n, dtype=np.float32) - pad)[:, None]
    x = (np.arange(n, dtype=np.float32) - pad)[None, :]
    ca, sa = math.cos(angle), math.sin(angle)
    u = x * ca + y * sa
    v = -x * sa + y * ca - curvature * u * u
    alpha = np.exp(-0.5 * (v / width) ** 2) * np.exp(-((2 * u / length) ** 6))
    if broken:
        noise = gauss_blur(rng.standard_normal((n, n)).astype(np.float32), max(1.5, length / 12.0))
        alpha *= np.clip((noise / max(float(noise.std()), 1e-6) + 0.6) * 1.5, 0.0, 1.0)
    alpha = alpha / max(float(alpha.max()), 1e-6)
    return alpha.astype(np.float32), pad, pad


def implant_crater_wall_ice(image, rng, *, contrast_range=CONTRAST, valid=None, sun_azimuth_deg=DEFAULT_SUN_AZIMUTH_DEG,
                            sun_elevation_deg=DEFAULT_SUN_ELEVATION_DEG, return_info=False):
    """Plant one or two bands of ice along pole-facing walls; returns (image, mask) (+ info)."""
    check_rng(rng)
    out = as_image(image)
    h, w = out.shape
    valid = as_valid(valid, out.shape, out)
    side = min(h, w)
    margin = side // 8
    for scale, strength in ((side // 6, 0.6), (side // 10, 0.4), (side // 16, 0.25)):
        shade, darkness = natural_shade(out, valid, max(8, scale), strength)
        edge = poleward_edge(shade, darkness, max(2, side // 60))
        edge[:margin], edge[-margin:], edge[:, :margin], edge[:, -margin:] = False, False, False, False
        if edge.any():
            break
    drawn = False
    if not edge.any() or rng.random() < 0.1:
        length = rng.uniform(0.3, 0.7) * side
        cy, cx = rng.uniform(0.3 * h, 0.6 * h), rng.uniform(0.35 * w, 0.65 * w)
        scarp = render_ridge(out, cy, cx, length / 2, rng.uniform(2.0, 6.0), rng.normal(0.0, 0.3), rng.uniform(-1.0, 1.0) / length,
                             rng.uniform(2.0, 5.0), sun_azimuth_deg, sun_elevation_deg, shadow_factor=rng.uniform(0.3, 0.6))
        if scarp is None:
            raise ValueError("no room for a scarp in this image")
        (r0, r1, c0, c1), _relief, shadow = scarp
        cast = np.zeros((h, w), bool)
        cast[r0:r1, c0:c1] = shadow > 0.5
        edge = poleward_edge(cast, np.full(cast.shape, -1.0, np.float32), 2)  # lit wherever it casts no shadow
        drawn = True
        if not edge.any():
            raise ValueError("the drawn scarp casts no shade")
    rows, cols = np.nonzero(edge)
    orig = out.copy()
    occupied = np.zeros((h, w), bool)
    mask = np.zeros((h, w), bool)
    infos = []
    for _ in range(int(rng.integers(1, 3))):
        for _attempt in range(20):
            j = int(rng.integers(len(rows)))
            length = rng.uniform(0.15, 0.6) * side
            width = loguniform(rng, 0.7, max(1.0, side / 40.0))
            # walls facing the pole run roughly east-west; crater walls bow northwards
            angle = rng.normal(0.0, math.radians(15.0))
            curvature = rng.uniform(0.0, 1.2) / length if rng.random() < 0.7 else rng.uniform(-0.6, 0.6) / length
            alpha, pr, pc = band_shape(rng, length, width, angle, curvature, broken=rng.random() < 0.5)
            if not drawn and rng.random() < 0.5:
                soft = box_mean(shade.astype(np.float32), 2)
                r0, c0 = int(rows[j]) - pr, int(cols[j]) - pc
                window = np.full(alpha.shape, 0.2, np.float32)
                rr0, cc0, rr1, cc1 = max(r0, 0), max(c0, 0), min(r0 + alpha.shape[0], h), min(c0 + alpha.shape[1], w)
                if rr0 < rr1 and cc0 < cc1:
                    window[rr0 - r0:rr1 - r0, cc0 - c0:cc1 - c0] = np.maximum(soft[rr0:rr1, cc0:cc1], 0.2)
                alpha = alpha * window
                alpha /= max(float(alpha.max()), 1e-6)
            info = plant(out, orig, valid, occupied, mask, alpha, pr, pc, (rows[j] - rng.uniform(0.0, 2.0) * width, cols[j]),
                         max(width * 3.0, 3.0), contrast_range, rng, brightness=draw_brightness(rng, 0.5))
            if info is not None:
                infos.append(dict(info, size_px=float(length), drawn_scarp=drawn))
                break
    if not infos:
        raise ValueError("no room for a band of ice along a wall in this image")
    return (out, mask, infos) if return_info else (out, mask)

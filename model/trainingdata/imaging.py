"""Image conventions and small numpy helpers shared by every generator of training data.

Images are 2-D float32 arrays in [0, 1]; functions return new arrays. Every random function
takes a ``numpy.random.Generator``. Images are north-up map projections of the southern
hemisphere, so *poleward* is south: down, increasing row. ``sun_azimuth_deg`` is the direction
*towards* the sun, clockwise from north; the default (330) casts shadows south-south-east.
"""

import math
from typing import Tuple

import numpy as np

DEFAULT_SUN_AZIMUTH_DEG = 330.0
DEFAULT_SUN_ELEVATION_DEG = 30.0
# A patch pixel is one whose blending weight (alpha) exceeds this.
MASK_ALPHA = 0.5


def check_rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError("rng must be a numpy.random.Generator (e.g. numpy.random.default_rng(seed)), "
                        "got %s" % type(rng).__name__)
    return rng


def as_image(image) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim != 2:
        raise ValueError("image must be a 2-D array, got shape %r" % (a.shape,))
    if a.shape[0] < 8 or a.shape[1] < 8:
        raise ValueError("image must be at least 8x8 pixels, got %r" % (a.shape,))
    a = a.astype(np.float32)
    if a.size and (float(np.nanmin(a)) < -1e-3 or float(np.nanmax(a)) > 1.001):
        raise ValueError("image values must lie in [0, 1] (got %.3g..%.3g): scale it first, e.g. DN / 255"
                         % (float(np.nanmin(a)), float(np.nanmax(a))))
    return np.clip(np.nan_to_num(a), 0.0, 1.0)


def border_nodata_mask(image, threshold: float = 0.012, grow_px: int = 2) -> np.ndarray:
    """Pixels of the no-data border of a map-projected image (True = no-data).

    Near-black pixels reachable from the image edge by a straight run of near-black pixels
    along their row or column (the wedges outside a rotated footprint), grown by ``grow_px``.
    Dark shadows inside the image are not affected.
    """
    a = np.asarray(image, dtype=np.float32)
    dark = a <= threshold
    out = np.zeros(a.shape, dtype=bool)
    for arr, res in ((dark, out), (dark.T, out.T)):
        # leading / trailing runs of dark pixels along each row
        lead = np.logical_and.accumulate(arr, axis=1)
        trail = np.logical_and.accumulate(arr[:, ::-1], axis=1)[:, ::-1]
        res |= lead | trail
    if grow_px > 0 and out.any():
        out = dilate(out, grow_px)
    return out


def as_valid(valid, shape, image=None) -> np.ndarray:
    if valid is None:
        if image is not None:
            return ~border_nodata_mask(image)
        return np.ones(shape, dtype=bool)
    v = np.asarray(valid, dtype=bool)
    if v.shape != tuple(shape):
        raise ValueError("valid mask shape %r differs from image shape %r" % (v.shape, tuple(shape)))
    return v


def box_mean(a: np.ndarray, r: int) -> np.ndarray:
    """Mean over a (2r+1)^2 window (edges reflected), via an integral image."""
    if r <= 0:
        return a.astype(np.float32)
    k = 2 * r + 1
    p = np.pad(a.astype(np.float64), r, mode="reflect" if min(a.shape) > r else "edge")
    c = np.zeros((p.shape[0] + 1, p.shape[1] + 1), dtype=np.float64)
    np.cumsum(p, axis=0, out=c[1:, 1:])
    np.cumsum(c[1:, 1:], axis=1, out=c[1:, 1:])
    s = c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]
    return (s / (k * k)).astype(np.float32)


def gauss_blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur for small arrays/sigmas (edge padding)."""
    if sigma <= 0.05:
        return a.astype(np.float32)
    r = max(1, int(math.ceil(3.0 * sigma)))
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    h, w = a.shape
    p = np.pad(a.astype(np.float32), ((r, r), (0, 0)), mode="edge")
    out = np.zeros((h, w), dtype=np.float32)
    for i in range(2 * r + 1):
        out += np.float32(k[i]) * p[i:i + h]
    p = np.pad(out, ((0, 0), (r, r)), mode="edge")
    out = np.zeros((h, w), dtype=np.float32)
    for i in range(2 * r + 1):
        out += np.float32(k[i]) * p[:, i:i + w]
    return out


def shift(a: np.ndarray, dr: int, dc: int) -> np.ndarray:
    """out[r, c] = a[r + dr, c + dc], edges clamped."""
    h, w = a.shape
    m = max(abs(dr), abs(dc))
    if m == 0:
        return a
    p = np.pad(a, m, mode="edge")
    return p[m + dr:m + dr + h, m + dc:m + dc + w]


def dilate(mask: np.ndarray, r: int) -> np.ndarray:
    if r <= 0:
        return mask.copy()
    return box_mean(mask.astype(np.float32), r) > 1e-6


def sun_vectors(sun_azimuth_deg: float) -> Tuple[np.ndarray, np.ndarray]:
    """(towards_sun, shadow_direction) as unit (drow, dcol) vectors."""
    az = math.radians(sun_azimuth_deg)
    to_sun = np.array([-math.cos(az), math.sin(az)])
    return to_sun, -to_sun


def loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    lo = max(lo, 1e-6)
    hi = max(hi, lo)
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))

"""Synthetic HiRISE-like imagery: ice-patch implants, look-alike negatives, terrain, sample scenes.

Pure numpy (GDAL/OSR only in the scene writer); never imports qgis or TensorFlow.

Conventions
-----------
* Images are 2-D float32 arrays with values in [0, 1]; every function returns a new array and
  never modifies its input.
* Every random function takes a ``numpy.random.Generator``; the same generator state gives
  the same output.
* Images are north-up map projections of the southern hemisphere, so *poleward* is south,
  i.e. down, i.e. increasing row.
* ``sun_azimuth_deg`` is the direction *towards* the sun, in degrees clockwise from north
  (up). The default (330, north-north-west, mid-afternoon at southern mid-latitudes in late
  spring) casts shadows towards the south-south-east (down, slightly right).

The physics the implants follow: residual water-ice patches survive in the shade after the
seasonal CO2 cap has retreated. A patch is brighter than its surroundings, lies on the
poleward side of a shadowing landform (boulder, crater rim, slope), inside or at the poleward
edge of its shadow, casts no shadow of its own and has slightly diffuse edges. Look-alikes
(hard negatives) are hot/saturated pixels, bright sunlit rocks (sharp edges, and a shadow on
the anti-sun side), low-contrast scenes and CO2-frost-covered scenes.
"""

import math
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

DEFAULT_SUN_AZIMUTH_DEG = 330.0
DEFAULT_SUN_ELEVATION_DEG = 30.0
MARS_RADIUS_M = 3396190.0
HIRISE_MAX_DN = 1023  # RED RDRs hold 10-bit data in UInt16
NODATA_DN = 0
# A patch pixel is one whose blending weight (alpha) exceeds this.
MASK_ALPHA = 0.5


# --------------------------------------------------------------------------------------
# small numpy helpers
# --------------------------------------------------------------------------------------

def _check_rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError("rng must be a numpy.random.Generator (e.g. numpy.random.default_rng(seed)), "
                        "got %s" % type(rng).__name__)
    return rng


def _as_image(image) -> np.ndarray:
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
        out = _dilate(out, grow_px)
    return out


def _as_valid(valid, shape, image=None) -> np.ndarray:
    if valid is None:
        if image is not None:
            return ~border_nodata_mask(image)
        return np.ones(shape, dtype=bool)
    v = np.asarray(valid, dtype=bool)
    if v.shape != tuple(shape):
        raise ValueError("valid mask shape %r differs from image shape %r" % (v.shape, tuple(shape)))
    return v


def _box_mean(a: np.ndarray, r: int) -> np.ndarray:
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


def _gauss_blur(a: np.ndarray, sigma: float) -> np.ndarray:
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


def _shift(a: np.ndarray, dr: int, dc: int) -> np.ndarray:
    """out[r, c] = a[r + dr, c + dc], edges clamped."""
    h, w = a.shape
    m = max(abs(dr), abs(dc))
    if m == 0:
        return a
    p = np.pad(a, m, mode="edge")
    return p[m + dr:m + dr + h, m + dc:m + dc + w]


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    if r <= 0:
        return mask.copy()
    return _box_mean(mask.astype(np.float32), r) > 1e-6


def _sun_vectors(sun_azimuth_deg: float) -> Tuple[np.ndarray, np.ndarray]:
    """(towards_sun, shadow_direction) as unit (drow, dcol) vectors."""
    az = math.radians(sun_azimuth_deg)
    to_sun = np.array([-math.cos(az), math.sin(az)])
    return to_sun, -to_sun


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    lo = max(lo, 1e-6)
    hi = max(hi, lo)
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


# --------------------------------------------------------------------------------------
# the rock / ridge primitive: a shaded dome with a cast shadow
# --------------------------------------------------------------------------------------

def _render_feature(img: np.ndarray, origin: Tuple[int, int], cy: float, cx: float, ry: float, rx: float,
                    angle: float, sun_azimuth_deg: float, sun_elevation_deg: float, height_px: float,
                    level: Optional[float] = None, gain: float = 1.0, shadow_factor: float = 0.35,
                    edge_px: float = 0.5, penumbra_px: float = 0.7, ambient: float = 0.25, max_rel: float = 1.6):
    """Draw an elliptical dome (boulder, or ridge/rim segment when elongated) and its cast shadow.

    ``img`` is a window of a larger image whose pixel (0, 0) is global pixel ``origin``;
    centre and sizes are global pixels. ``angle`` (radians) turns the ``rx`` axis from the
    column axis towards the row axis. ``level`` is the absolute brightness of a flat-lit
    body; when None the body is ``gain`` times the underlying terrain (seamless tiling).
    Modifies ``img`` in place and returns (bbox, body_alpha, shadow_alpha) where bbox is
    (r0, r1, c0, c1) in ``img`` coordinates, or None when the feature misses the window.
    """
    to_sun, shadow_dir = _sun_vectors(sun_azimuth_deg)
    elev = math.radians(max(3.0, min(85.0, sun_elevation_deg)))
    length = height_px / math.tan(elev)
    ext = max(rx, ry) + 2.0 + edge_px + penumbra_px
    gr0 = int(math.floor(min(cy - ext, cy + shadow_dir[0] * length - ext)))
    gr1 = int(math.ceil(max(cy + ext, cy + shadow_dir[0] * length + ext))) + 1
    gc0 = int(math.floor(min(cx - ext, cx + shadow_dir[1] * length - ext)))
    gc1 = int(math.ceil(max(cx + ext, cx + shadow_dir[1] * length + ext))) + 1
    oy, ox = origin
    h, w = img.shape
    r0, r1 = max(gr0 - oy, 0), min(gr1 - oy, h)
    c0, c1 = max(gc0 - ox, 0), min(gc1 - ox, w)
    if r0 >= r1 or c0 >= c1:
        return None
    dy = (np.arange(r0, r1, dtype=np.float32) + oy - cy)[:, None]
    dx = (np.arange(c0, c1, dtype=np.float32) + ox - cx)[None, :]
    ca, sa = math.cos(angle), math.sin(angle)
    # ellipse frame, normalised so the body is the unit disc
    u = (dx * ca + dy * sa) / rx
    v = (-dx * sa + dy * ca) / ry
    rho = np.sqrt(u * u + v * v)
    rmin = min(rx, ry)
    body = np.clip((1.0 - rho) * rmin / max(edge_px, 0.05) + 0.5, 0.0, 1.0)
    # cast shadow: the body swept along the shadow direction, tapering towards its tip
    su = (shadow_dir[1] * ca + shadow_dir[0] * sa) * length / rx
    sv = (-shadow_dir[1] * sa + shadow_dir[0] * ca) * length / ry
    seg2 = su * su + sv * sv
    if seg2 > 1e-9:
        t = np.clip((u * su + v * sv) / seg2, 0.0, 1.0)
    else:
        t = np.zeros_like(u)
    du, dv = u - t * su, v - t * sv
    dist = np.sqrt(du * du + dv * dv)
    radius = 1.0 - 0.35 * t
    shadow = np.clip((radius - dist) * rmin / max(penumbra_px, 0.05) + 0.5, 0.0, 1.0)
    shadow *= 1.0 - body
    # shading of a paraboloid dome h = height_px * (1 - rho^2), Lambert against the sun
    inb = rho < 1.0
    gx = np.where(inb, -2.0 * height_px * (u * ca / rx - v * sa / ry), 0.0)  # dh/dcol
    gy = np.where(inb, -2.0 * height_px * (u * sa / rx + v * ca / ry), 0.0)  # dh/drow
    az = math.radians(sun_azimuth_deg)
    se, sn, sz = math.cos(elev) * math.sin(az), math.cos(elev) * math.cos(az), math.sin(elev)
    ndots = (-gx * se + gy * sn + sz) / np.sqrt(gx * gx + gy * gy + 1.0)
    rel = np.clip(ndots / sz, 0.0, max_rel)
    shade = ambient + (1.0 - ambient) * rel
    win = img[r0:r1, c0:c1]
    under = win * (1.0 - shadow * (1.0 - shadow_factor))
    if level is None:
        body_val = win * gain * shade
    else:
        body_val = level * shade
    win[...] = np.clip(under * (1.0 - body) + body * body_val, 0.0, 1.0)
    return (r0, r1, c0, c1), body, shadow


def _render_ridge(img: np.ndarray, cy: float, cx: float, half_length: float, half_width: float, angle: float,
                  curvature: float, amplitude: float, sun_azimuth_deg: float, sun_elevation_deg: float,
                  shadow_factor: float = 0.35):
    """Shade a curved ridge (a crater-rim segment or ledge) into ``img`` in place.

    The ridge is a local height field (Gaussian cross-section, flat-topped taper along its
    length, bent by ``curvature``); the image is multiplied by its Lambert shading relative
    to flat ground, and by ``shadow_factor`` where the ridge casts a shadow (ray-marched).
    Returns (bbox, relief, shadow) like ``_render_feature``, or None off the image.
    """
    to_sun, shadow_dir = _sun_vectors(sun_azimuth_deg)
    elev = math.radians(max(3.0, min(85.0, sun_elevation_deg)))
    tan_el = math.tan(elev)
    length = amplitude / tan_el
    ext = max(half_length * 1.3, half_width * 3.0) + abs(curvature) * half_length ** 2 + 2.0
    h, w = img.shape
    r0 = max(0, int(math.floor(min(cy - ext, cy - ext + shadow_dir[0] * length))))
    r1 = min(h, int(math.ceil(max(cy + ext, cy + ext + shadow_dir[0] * length))) + 1)
    c0 = max(0, int(math.floor(min(cx - ext, cx - ext + shadow_dir[1] * length))))
    c1 = min(w, int(math.ceil(max(cx + ext, cx + ext + shadow_dir[1] * length))) + 1)
    if r0 >= r1 - 2 or c0 >= c1 - 2:
        return None
    dy = (np.arange(r0, r1, dtype=np.float32) - cy)[:, None]
    dx = (np.arange(c0, c1, dtype=np.float32) - cx)[None, :]
    ca, sa = math.cos(angle), math.sin(angle)
    u = dx * ca + dy * sa
    v = -dx * sa + dy * ca - curvature * u * u
    hf = amplitude * np.exp(-0.5 * (v / half_width) ** 2) * np.exp(-((u / half_length) ** 4))
    gy, gx = np.gradient(hf)
    az = math.radians(sun_azimuth_deg)
    se, sn, sz = math.cos(elev) * math.sin(az), math.cos(elev) * math.cos(az), math.sin(elev)
    rel = np.clip((-gx * se + gy * sn + sz) / np.sqrt(gx * gx + gy * gy + 1.0) / sz, 0.0, 1.35)
    shadow = np.zeros_like(hf)
    steps = int(math.ceil(length)) + 2
    for t in range(1, steps + 1):
        dr = int(round(to_sun[0] * t))
        dc = int(round(to_sun[1] * t))
        above = _shift(hf, dr, dc) - hf - t * tan_el
        np.maximum(shadow, np.clip(above / max(tan_el, 0.05) + 0.5, 0.0, 1.0), out=shadow)
    factor = rel * (1.0 - shadow) + shadow * shadow_factor
    win = img[r0:r1, c0:c1]
    win[...] = np.clip(win * factor, 0.0, 1.0)
    relief = (hf > 0.15 * amplitude).astype(np.float32)
    return (r0, r1, c0, c1), relief, shadow


# --------------------------------------------------------------------------------------
# ice patches
# --------------------------------------------------------------------------------------

def _patch_shape(rng: np.random.Generator, major: float, elongation: float, angle: float, sigma: float):
    """Irregular elongated blob, Gaussian-blurred. Returns (alpha, centre_row, centre_col)."""
    a = max(major / 2.0, 0.9)
    b = max(a / elongation, 0.75)
    pad = int(math.ceil(a * 1.35 + 3.0 * sigma + 2))
    n = 2 * pad + 1
    y = (np.arange(n, dtype=np.float32) - pad)[:, None]
    x = (np.arange(n, dtype=np.float32) - pad)[None, :]
    ca, sa = math.cos(angle), math.sin(angle)
    u = (x * ca + y * sa) / a
    v = (-x * sa + y * ca) / b
    rho = np.sqrt(u * u + v * v)
    theta = np.arctan2(v, u)
    boundary = np.ones_like(rho)
    for k in range(2, 7):
        amp = rng.uniform(0.0, 0.22 / (k - 0.8))
        boundary += amp * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
    # ragged edge: a little smooth noise on the boundary (only matters for larger patches)
    if n >= 12:
        noise = _gauss_blur(rng.standard_normal((n, n)).astype(np.float32), max(1.0, a / 6.0))
        noise /= max(float(noise.std()), 1e-6)
        boundary += 0.08 * noise
    inside = (rho < np.clip(boundary, 0.55, 1.6)).astype(np.float32)
    inside[pad, pad] = 1.0
    alpha = _gauss_blur(inside, sigma)
    alpha /= max(float(alpha.max()), 1e-6)  # small patches: an opaque core all the same
    return np.clip(alpha, 0.0, 1.0), pad, pad


def _find_shadows(img: np.ndarray, valid: np.ndarray, sun_azimuth_deg: float):
    """Candidate shadow pixels next to a brighter sunward feature.

    Returns (rows, cols, score, smoothed, local_mean, local_sd).
    """
    h, w = img.shape
    side = min(h, w)
    rs = max(1, side // 512)
    fill = img.copy()
    if not valid.all():
        fill[~valid] = float(np.median(img[valid])) if valid.any() else 0.5
    s = _box_mean(fill, rs)
    wr = int(np.clip(side // 12, 5, 64))
    m = _box_mean(s, wr)
    sd = np.sqrt(np.maximum(_box_mean(s * s, wr) - m * m, 1e-8))
    to_sun, _ = _sun_vectors(sun_azimuth_deg)
    step = max(1.0, side / 256.0)
    bright = None
    for d in (1.5, 2.5, 4.0, 6.0):
        dr = int(round(to_sun[0] * d * step))
        dc = int(round(to_sun[1] * d * step))
        sh = _shift(s, dr, dc)
        bright = sh if bright is None else np.maximum(bright, sh)
    thr = max(0.015, 0.02 * float(np.std(s[valid])) / 0.08) if valid.any() else 0.015
    low = np.percentile(s[valid], 25) if valid.any() else 0.0
    # a cast shadow is clearly darker than its surroundings, with a lit face on its sun side
    dark = (s < m - np.maximum(1.5 * sd, thr)) & (s < low) & (s < 0.85 * m)
    nb = (bright > s + np.maximum(2.0 * sd, 3 * thr)) & (bright > m + 0.3 * sd)
    margin = max(3, wr // 2)
    ok = _box_mean(valid.astype(np.float32), margin) > 0.999
    ok[:margin] = False
    ok[-margin:] = False
    ok[:, :margin] = False
    ok[:, -margin:] = False
    cand = dark & nb & ok
    rows, cols = np.nonzero(cand)
    score = ((m - s) / sd)[rows, cols]
    return rows, cols, score, s, m, sd


def _shadow_extent(s: np.ndarray, m: np.ndarray, r: int, c: int, limit: int):
    """Walk from a dark pixel through the shadow.

    Returns (darkest_row, darkest_col, centre_col, bottom_row, width, depth); the shadow is the
    run of pixels darker than halfway between the darkest pixel and the local mean."""
    h, w = s.shape
    # move to the darkest pixel nearby
    k = 2
    rr0, rr1, cc0, cc1 = max(r - k, 0), min(r + k + 1, h), max(c - k, 0), min(c + k + 1, w)
    sub = s[rr0:rr1, cc0:cc1]
    i = int(np.argmin(sub))
    r, c = rr0 + i // sub.shape[1], cc0 + i % sub.shape[1]
    thr = s[r, c] + 0.5 * (m[r, c] - s[r, c])
    down = r
    while down + 1 < h and down - r < limit and s[down + 1, c] < thr:
        down += 1
    up = r
    while up - 1 >= 0 and r - up < limit and s[up - 1, c] < thr:
        up -= 1
    left = c
    while left - 1 >= 0 and c - left < limit and s[r, left - 1] < thr:
        left -= 1
    right = c
    while right + 1 < w and right - c < limit and s[r, right + 1] < thr:
        right += 1
    return r, c, (left + right) // 2, down + 1, right - left + 1, down - up + 1


def _place_patch(shape, valid, occupied, alpha, pr, pc, centre_row, centre_col):
    """Window of the patch in image coordinates if it fits (inside, valid, not overlapping)."""
    h, w = shape
    ah, aw = alpha.shape
    r0 = int(round(centre_row)) - pr
    c0 = int(round(centre_col)) - pc
    core = alpha > 0.02
    rows = np.nonzero(core.any(axis=1))[0]
    cols = np.nonzero(core.any(axis=0))[0]
    if r0 + rows[0] < 1 or c0 + cols[0] < 1 or r0 + rows[-1] > h - 2 or c0 + cols[-1] > w - 2:
        return None
    # clip the alpha window to the image
    a0r, a0c = max(0, -r0), max(0, -c0)
    a1r, a1c = min(ah, h - r0), min(aw, w - c0)
    win = (r0 + a0r, r0 + a1r, c0 + a0c, c0 + a1c)
    a = alpha[a0r:a1r, a0c:a1c]
    sel = a > 0.02
    if not valid[win[0]:win[1], win[2]:win[3]][sel].all():
        return None
    if occupied[win[0]:win[1], win[2]:win[3]][sel].any():
        return None
    return win, a


def _feature_params(rng: np.random.Generator, size: float, side: int, along: float, sun_elevation_deg: float) -> dict:
    """A boulder or a rim segment / ledge able to shade a patch of length ``size``."""
    max_boulder = max(2.0, side / 100.0)
    if size >= 10 and (size * 0.12 > max_boulder or rng.random() < 0.5):  # rim segment / ledge
        rx = size * rng.uniform(0.5, 0.9)
        ry = max(1.0, rx / rng.uniform(3.0, 6.0))
        return {
            "kind": "ridge", "rx": rx, "ry": ry, "angle": along + rng.normal(0.0, math.radians(10.0)),
            # steep enough on its anti-sun flank to cast a shadow
            "height": ry * math.tan(math.radians(max(3.0, sun_elevation_deg))) * rng.uniform(1.8, 3.0),
            "curvature": rng.uniform(-0.5, 0.2) / rx,  # mostly bowed poleward, like a rim
            "shadow_factor": rng.uniform(0.25, 0.5),
        }
    rx = min(max(1.0, size * rng.uniform(0.12, 0.3)), max_boulder)
    return {
        "kind": "boulder", "rx": rx, "ry": rx * rng.uniform(0.7, 1.0), "angle": rng.uniform(0, math.pi),
        "height": rx * rng.uniform(0.6, 1.2), "gain": rng.uniform(0.95, 1.2), "edge": rng.uniform(0.5, 1.0),
        "shadow_factor": rng.uniform(0.25, 0.5),
    }


def _draw_feature(img: np.ndarray, feat: dict, cy: float, cx: float, sun_azimuth_deg: float,
                  sun_elevation_deg: float):
    if feat["kind"] == "ridge":
        return _render_ridge(img, cy, cx, feat["rx"], feat["ry"], feat["angle"], feat["curvature"], feat["height"],
                             sun_azimuth_deg, sun_elevation_deg, shadow_factor=feat["shadow_factor"])
    return _render_feature(img, (0, 0), cy, cx, feat["ry"], feat["rx"], feat["angle"], sun_azimuth_deg,
                           sun_elevation_deg, feat["height"], gain=feat["gain"], shadow_factor=feat["shadow_factor"],
                           edge_px=feat["edge"])


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
    _check_rng(rng)
    out = _as_image(image)
    h, w = out.shape
    valid = _as_valid(valid, out.shape, out)
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
    _, shadow_dir = _sun_vectors(sun_azimuth_deg)
    orig = out.copy()
    rows, cols, score, s, m, sd = _find_shadows(out, valid, sun_azimuth_deg)
    occupied = np.zeros((h, w), dtype=bool)
    mask = np.zeros((h, w), dtype=bool)
    infos: List[dict] = []
    used_shadows: List[Tuple[int, int]] = []
    # the long axis of a patch follows the landform: perpendicular to the shadow direction
    along = math.atan2(shadow_dir[0], shadow_dir[1]) + math.pi / 2.0

    for n in range(count):
        placed = False
        size = _loguniform(rng, min_size_px, max_size)
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
                sr, sc, scentre, bottom, swidth, sdepth = _shadow_extent(s, m, int(rows[j]), int(cols[j]),
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
            alpha, pr, pc = _patch_shape(rng, size, elongation, angle, sigma)
            core_rows = np.nonzero((alpha > MASK_ALPHA).any(axis=1))[0]
            half_up = pr - core_rows[0]  # rows from the centre to the top of the patch
            # 2) otherwise synthesise a shadowing feature above where the patch goes
            if synth:
                work = out.copy()
                feat = _feature_params(rng, size, side, along, sun_elevation_deg)
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
                res = _draw_feature(work, feat, fy, fx, sun_azimuth_deg, sun_elevation_deg)
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
            placed_win = _place_patch(out.shape, valid, occupied, alpha, pr, pc, centre_row, centre_col)
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
            # background: the brighter part of the surroundings (the shadow is not "background")
            rr0, rr1 = max(0, wr0 - int(size / 3) - 2), min(h, wr1 + int(size / 3) + 2)
            cc0, cc1 = max(0, wc0 - int(size / 3) - 2), min(w, wc1 + int(size / 3) + 2)
            neigh = orig[rr0:rr1, cc0:cc1][valid[rr0:rr1, cc0:cc1]]
            bg = float(np.percentile(neigh, 60)) if neigh.size else float(np.median(orig))
            # faint is fine, invisible is not: at least ~1.5 local standard deviations
            contrast = max(_loguniform(rng, clo, chi), min(1.5 * float(np.std(neigh)) if neigh.size else 0.0, chi))
            # ice outshines most of its neighbourhood, sunlit faces included
            p85 = float(np.percentile(neigh, 85)) if neigh.size else bg
            level = min(max(bg + contrast, p85 + 0.3 * contrast), 0.97)
            contrast = level - bg
            # the ice mutes but does not erase the relief and texture beneath it
            keep = rng.uniform(0.25, 0.7)
            tr = max(2, int(size / 4))
            t0r, t1r, t0c, t1c = max(0, wr0 - tr), min(h, wr1 + tr), max(0, wc0 - tr), min(w, wc1 + tr)
            big = out[t0r:t1r, t0c:t1c]
            texture = (big - _box_mean(big, tr))[wr0 - t0r:wr1 - t0r, wc0 - t0c:wc1 - t0c]
            # ...yet stays brighter than the ground around it, shadow included
            body = level + np.clip(keep * texture, -0.5 * contrast, 0.5 * contrast)
            if a.shape[0] >= 8:
                mottle = _gauss_blur(rng.standard_normal(a.shape).astype(np.float32), max(1.0, size / 10.0))
                mottle /= max(float(mottle.std()), 1e-6)
                body = body + 0.12 * contrast * mottle
            win = out[wr0:wr1, wc0:wc1]
            # ice only ever brightens the ground
            win[...] = np.clip(np.maximum(win, win * (1.0 - a) + a * body), 0.0, 1.0)
            pm = a > MASK_ALPHA
            mask[wr0:wr1, wc0:wc1] |= pm
            occupied[wr0:wr1, wc0:wc1] |= _dilate(a > 0.02, 2)
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


# --------------------------------------------------------------------------------------
# negatives
# --------------------------------------------------------------------------------------

_CLUSTERS = [
    [(0, 0)],
    [(0, 0), (0, 1)],
    [(0, 0), (1, 0)],
    [(0, 0), (1, 1)],
    [(0, 0), (0, 1), (1, 0)],
    [(0, 0), (0, 1), (0, 2)],
]


def implant_hot_pixels(image, rng, count=None, *, max_cluster_px=3, min_separation_px=4, valid=None,
                       return_info=False):
    """Isolated saturated (or nearly) single pixels and tiny clusters (hard negatives).

    ``count`` clusters (default: 1 to about one per 10,000 pixels, at most 12) of 1 to
    ``max_cluster_px`` pixels, at least ``min_separation_px`` apart; the pixels around a
    cluster are untouched. Returns (new_image, mask) (+ a list of cluster pixel lists).
    """
    _check_rng(rng)
    out = _as_image(image)
    h, w = out.shape
    valid = _as_valid(valid, out.shape, out)
    if count is None:
        count = int(rng.integers(1, max(2, min(12, h * w // 10000)) + 1))
    shapes = [c for c in _CLUSTERS if len(c) <= max(1, int(max_cluster_px))]
    weights = np.array([6.0 if len(c) == 1 else 1.0 for c in shapes])
    weights /= weights.sum()
    mask = np.zeros((h, w), dtype=bool)
    blocked = np.zeros((h, w), dtype=bool)
    clusters = []
    for _ in range(int(count)):
        for _try in range(50):
            shape = shapes[int(rng.choice(len(shapes), p=weights))]
            r, c = int(rng.integers(1, h - 3)), int(rng.integers(1, w - 3))
            pix = [(r + a, c + b) for a, b in shape]
            if any(blocked[p] or not valid[p] for p in pix):
                continue
            # a saturated pixel in a very bright neighbourhood would not be "isolated"
            nb = out[max(r - 1, 0):r + 4, max(c - 1, 0):c + 4]
            if nb.max() > 0.8:
                continue
            for p in pix:
                out[p] = 1.0 if rng.random() < 0.7 else rng.uniform(0.9, 1.0)
                mask[p] = True
            sep = int(min_separation_px)
            blocked[max(r - sep, 0):r + 2 + sep + 1, max(c - sep, 0):c + 2 + sep + 1] = True
            clusters.append(pix)
            break
    if return_info:
        return out, mask, clusters
    return out, mask


def implant_sunlit_bright_rocks(image, rng, count=None, sun_azimuth_deg=DEFAULT_SUN_AZIMUTH_DEG, size_range_px=None,
                                contrast_range=(0.12, 0.45), *, sun_elevation_deg=DEFAULT_SUN_ELEVATION_DEG,
                                valid=None, return_info=False):
    """Bright, sharp-edged rocks/patches that cast a shadow on the anti-sun side (hard negatives).

    ``size_range_px`` (default: 2 px to 1/12 of the shorter side) is the rock's long axis.
    Returns (new_image, mask of the rock bodies) (+ per-rock dicts with ``centre``,
    ``shadow`` (row, col of the shadow centroid) and ``size_px``).
    """
    _check_rng(rng)
    out = _as_image(image)
    h, w = out.shape
    valid = _as_valid(valid, out.shape, out)
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
            size = _loguniform(rng, size_range_px[0], size_range_px[1])
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
            level = min(bg + _loguniform(rng, contrast_range[0], contrast_range[1]), 0.95)
            res = _render_feature(out, (0, 0), cy, cx, ry, rx, ang, sun_azimuth_deg, sun_elevation_deg, hpx,
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


def implant_shadowing_features(image, rng, count=None, sun_azimuth_deg=DEFAULT_SUN_AZIMUTH_DEG, size_range_px=None, *,
                               sun_elevation_deg=DEFAULT_SUN_ELEVATION_DEG, valid=None, return_info=False):
    """Boulders and rim segments / ledges with their cast shadows, but no ice (negatives).

    The same landforms ``implant_ice_patches`` synthesises where it finds no shadow, so a
    shadowing feature alone is no evidence of ice. ``size_range_px`` (default: 6 px to 1/3
    of the shorter side) is the length of the patch such a feature could shade. Returns
    (new_image, mask of the shadow pixels) (+ per-feature dicts with ``kind``, ``centre``,
    ``shadow`` (row, col of the shadow centroid)).
    """
    _check_rng(rng)
    out = _as_image(image)
    h, w = out.shape
    valid = _as_valid(valid, out.shape, out)
    side = min(h, w)
    if size_range_px is None:
        size_range_px = (6.0, max(6.0, side / 3.0))
    if count is None:
        count = int(rng.integers(1, 4))
    _, shadow_dir = _sun_vectors(sun_azimuth_deg)
    along = math.atan2(shadow_dir[0], shadow_dir[1]) + math.pi / 2.0
    mask = np.zeros((h, w), dtype=bool)
    occupied = np.zeros((h, w), dtype=bool)
    infos = []
    for _ in range(int(count)):
        for _try in range(20):
            size = _loguniform(rng, size_range_px[0], size_range_px[1])
            feat = _feature_params(rng, size, side, along, sun_elevation_deg)
            ext = max(feat["rx"], feat["ry"]) + 2
            if 2 * ext + 4 >= side:
                continue
            cy, cx = rng.uniform(ext + 1, h - ext - 1), rng.uniform(ext + 1, w - ext - 1)
            work = out.copy()
            res = _draw_feature(work, feat, cy, cx, sun_azimuth_deg, sun_elevation_deg)
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


def apply_low_contrast(image, rng, factor_range=(0.15, 0.45)):
    """A washed-out (hazy / flat-lit) version of the scene: contrast reduced around its mean."""
    _check_rng(rng)
    out = _as_image(image)
    f = rng.uniform(*factor_range)
    mean = float(out.mean())
    haze = rng.uniform(-0.1, 0.15)
    res = np.clip(mean + haze + f * (out - mean), 0.0, 1.0)
    res += rng.normal(0.0, 0.004, out.shape).astype(np.float32)
    return np.clip(res, 0.0, 1.0).astype(np.float32)


def apply_co2_frost(image, rng):
    """A seasonal-CO2-frost-covered version: bright, low contrast, mottled, shadows partly filled."""
    _check_rng(rng)
    out = _as_image(image)
    h, w = out.shape
    level = rng.uniform(0.6, 0.85)
    keep = rng.uniform(0.2, 0.45)
    mean = float(out.mean())
    res = level + keep * (out - mean)
    mottle = np.zeros((h, w), dtype=np.float32)
    for s in (2.0, 6.0, 18.0):
        n = rng.standard_normal((h, w)).astype(np.float32)
        n = _box_mean(_box_mean(n, int(s)), int(s)) if s > 2 else _gauss_blur(n, 1.0)
        mottle += n / max(float(n.std()), 1e-6) / s ** 0.5
    res += rng.uniform(0.01, 0.04) * mottle
    return np.clip(res, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------
# terrain
# --------------------------------------------------------------------------------------

def _bspline_weights(f: np.ndarray):
    f2, f3 = f * f, f * f * f
    return ((1 - f) ** 3 / 6.0, (3 * f3 - 6 * f2 + 4) / 6.0, (-3 * f3 + 3 * f2 + 3 * f + 1) / 6.0, f3 / 6.0)


class _Noise:
    """Multi-octave lattice noise with cubic B-spline interpolation, evaluable on any window
    of a (height x width) canvas: windows of the same canvas join seamlessly.

    Octaves of spacing >= 4 * ``COARSE_STEP`` are summed on a grid of that step (aligned to
    the canvas, so still seamless) and B-spline-interpolated from it: one interpolation
    instead of one per octave."""

    COARSE_STEP = 8

    def __init__(self, height: int, width: int, rng: np.random.Generator, spacings: Sequence[float],
                 amplitudes: Sequence[float]):
        self.layers = []
        for s, a in zip(spacings, amplitudes):
            lat = rng.standard_normal((int(math.ceil(height / s)) + 8, int(math.ceil(width / s)) + 8), dtype=np.float32)
            self.layers.append((float(s), float(a), lat))

    @staticmethod
    def _weights(coords: np.ndarray, s: float):
        """Dense (len(coords) x lattice span) interpolation matrix and the span's first index."""
        pos = (coords.astype(np.float64) + 0.5) / s + 4.0
        i = np.floor(pos).astype(np.int64)
        wts = _bspline_weights(pos - i)
        base = int(i.min()) - 1
        mat = np.zeros((len(coords), int(i.max()) + 3 - base), dtype=np.float32)
        rows = np.arange(len(coords))
        for k in range(4):
            mat[rows, i - 1 + k - base] = wts[k]
        return mat, base

    @classmethod
    def _interp(cls, lat: np.ndarray, s: float, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        # separable: rows by a (sparse-as-dense) matrix product, columns likewise for coarse
        # lattices or by 4 gathers for fine ones
        wy, by = cls._weights(ys, s)
        rows = lat[by:by + wy.shape[1]]
        if s >= 8:
            wx, bx = cls._weights(xs, s)
            tmp = rows[:, bx:bx + wx.shape[1]] @ wx.T
        else:
            pos = (xs.astype(np.float64) + 0.5) / s + 4.0
            ix = np.floor(pos).astype(np.int64)
            wts = [x.astype(np.float32) for x in _bspline_weights(pos - ix)]
            tmp = wts[0][None, :] * rows[:, ix - 1]
            for k in (1, 2, 3):
                tmp += wts[k][None, :] * rows[:, ix - 1 + k]
        return wy @ tmp

    def window(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        ys = np.arange(r0, r1, dtype=np.float64)
        xs = np.arange(c0, c1, dtype=np.float64)
        out = np.zeros((r1 - r0, c1 - c0), dtype=np.float32)
        q = self.COARSE_STEP
        coarse = [(s, a, lat) for s, a, lat in self.layers if s >= 4 * q]
        for s, a, lat in self.layers:
            if s < 4 * q:
                out += np.float32(a) * self._interp(lat, s, ys, xs)
        if coarse:
            wy, by = self._weights(ys, q)
            wx, bx = self._weights(xs, q)
            # the coarse grid's node L lies at pixel coordinate (L - 4) * q - 0.5
            gy = (np.arange(by, by + wy.shape[1]) - 4.0) * q - 0.5
            gx = (np.arange(bx, bx + wx.shape[1]) - 4.0) * q - 0.5
            grid = np.zeros((len(gy), len(gx)), dtype=np.float32)
            for s, a, lat in coarse:
                grid += np.float32(a) * self._interp(lat, s, gy, gx)
            ny, nx, gr, gc = len(ys), len(xs), grid.shape[0], grid.shape[1]
            if gr * gc * nx + ny * gr * nx <= ny * gr * gc + ny * gc * nx:
                out += wy @ (grid @ wx.T)
            else:
                out += (wy @ grid) @ wx.T
        return out


class _Terrain:
    """A procedural Mars-like scene on a (height x width) canvas, rendered window by window."""

    def __init__(self, height: int, width: int, rng: np.random.Generator, scale: float = 1.0,
                 sun_azimuth_deg: float = DEFAULT_SUN_AZIMUTH_DEG, sun_elevation_deg: Optional[float] = None):
        self.h, self.w = int(height), int(width)
        self.scale = float(scale)
        self.sun_az = float(sun_azimuth_deg)
        self.sun_el = float(rng.uniform(20.0, 40.0) if sun_elevation_deg is None else sun_elevation_deg)
        big = max(self.h, self.w)
        spacings = []
        s = 2.0
        while s <= max(4.0, min(big, 512.0 * self.scale)):
            spacings.append(s)
            s *= 2.0
        # slopes of an octave ~ amplitude / spacing; hurst ~0.8-0.95 keeps all scales visible
        # an octave's slopes ~ 0.55 amplitude / spacing; hurst > 1 makes the relief smooth and
        # rolling, like Mars at this scale, and the total slope spread sets the scene contrast
        hurst = rng.uniform(0.95, 1.25)
        slope = _loguniform(rng, 0.04, 0.2)
        amp = slope / (0.55 * math.sqrt(sum(s ** (2 * hurst - 2) for s in spacings)))
        self.height_noise = _Noise(self.h, self.w, rng, spacings, [amp * s ** hurst for s in spacings])
        alb_sp = [s for s in spacings if s >= 8 * self.scale] or spacings[-1:]
        alb_amp = rng.uniform(0.015, 0.06)
        self.albedo_noise = _Noise(self.h, self.w, rng, alb_sp + [2.0],
                                   [alb_amp] * len(alb_sp) + [rng.uniform(0.01, 0.04)])
        self.level = rng.uniform(0.35, 0.55)
        self.ambient = rng.uniform(0.15, 0.3)
        self.noise_sigma = rng.uniform(0.004, 0.012)
        area_units = self.h * self.w / (256.0 * self.scale) ** 2
        # craters: power-law sizes
        density = _loguniform(rng, 8.0, 80.0)
        n = int(rng.poisson(density * area_units))
        rmin, rmax = 2.0 * self.scale, min(90.0 * self.scale, 0.35 * min(self.h, self.w))
        u = rng.random(n)
        radius = rmin * (1 - u * (1 - (rmin / rmax) ** 1.8)) ** (-1 / 1.8)
        fresh = rng.random(n)
        self.craters = {
            "y": rng.uniform(-20, self.h + 20, n), "x": rng.uniform(-20, self.w + 20, n), "r": radius,
            "depth": radius * (0.1 + 0.35 * fresh ** 2), "rim": radius * (0.02 + 0.05 * fresh),
        }
        # boulders
        bdensity = _loguniform(rng, 1.0, 80.0)
        nb = int(rng.poisson(bdensity * area_units))
        br = np.array([_loguniform(rng, 0.5, 1.8) * self.scale for _ in range(nb)])
        self.boulders = {
            "y": rng.uniform(0, self.h, nb), "x": rng.uniform(0, self.w, nb), "rx": br,
            "ry": br * rng.uniform(0.6, 1.0, nb), "angle": rng.uniform(0, math.pi, nb),
            "height": br * rng.uniform(0.5, 1.2, nb), "gain": rng.uniform(0.9, 1.2, nb),
            "shadow": rng.uniform(0.35, 0.6, nb),
        }
        self.noise_seed = int(rng.integers(0, 2 ** 62))

    def render(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        hh = self.height_noise.window(r0 - 1, r1 + 1, c0 - 1, c1 + 1)
        shadow = np.zeros((r1 - r0, c1 - c0), dtype=np.float32)
        to_sun, _ = _sun_vectors(self.sun_az)
        tan_el = math.tan(math.radians(self.sun_el))
        cr = self.craters
        reach = 3.0 * cr["r"]
        hit = np.nonzero((cr["y"] + reach >= r0 - 1) & (cr["y"] - reach <= r1 + 1) &
                         (cr["x"] + reach >= c0 - 1) & (cr["x"] - reach <= c1 + 1))[0]
        for i in hit:
            cy, cx, R, D, H = cr["y"][i], cr["x"][i], cr["r"][i], cr["depth"][i], cr["rim"][i]
            e = 3.0 * R
            a0, a1 = max(int(cy - e), r0 - 1), min(int(cy + e) + 2, r1 + 1)
            b0, b1 = max(int(cx - e), c0 - 1), min(int(cx + e) + 2, c1 + 1)
            if a0 >= a1 or b0 >= b1:
                continue
            dy = (np.arange(a0, a1, dtype=np.float32) + 0.5 - cy)[:, None]
            dx = (np.arange(b0, b1, dtype=np.float32) + 0.5 - cx)[None, :]
            d = np.sqrt(dy * dy + dx * dx) / R
            # parabolic bowl up to the rim, ejecta blanket falling off as r^-3, zero from 3 R
            outer = H * np.clip((np.maximum(d, 1.0) ** -3.0 - 1.0 / 27.0) / (1.0 - 1.0 / 27.0), 0.0, None)
            prof = np.where(d < 1.0, -D + (D + H) * d ** 2, outer)
            hh[a0 - (r0 - 1):a1 - (r0 - 1), b0 - (c0 - 1):b1 - (c0 - 1)] += prof.astype(np.float32)
            # analytic cast shadow of the sunward rim onto the crater interior
            s0, s1 = max(a0, r0), min(a1, r1)
            t0, t1 = max(b0, c0), min(b1, c1)
            if s0 >= s1 or t0 >= t1:
                continue
            py = (np.arange(s0, s1, dtype=np.float32) + 0.5 - cy)[:, None]
            px = (np.arange(t0, t1, dtype=np.float32) + 0.5 - cx)[None, :]
            rr2 = py * py + px * px
            inside = rr2 < R * R
            b = py * to_sun[0] + px * to_sun[1]
            t = -b + np.sqrt(np.maximum(b * b - (rr2 - R * R), 0.0))
            hp = -D + (D + H) * rr2 / (R * R)
            sh = np.clip(((H - hp) / tan_el - t) / (0.8 * self.scale) + 0.5, 0.0, 1.0) * inside
            sub = shadow[s0 - r0:s1 - r0, t0 - c0:t1 - c0]
            np.maximum(sub, sh, out=sub)
        # (in place where it matters: a scene strip is 1024 x width pixels)
        gy = hh[2:, 1:-1] - hh[:-2, 1:-1]  # 2 d/drow (southward)
        gx = hh[1:-1, 2:] - hh[1:-1, :-2]  # 2 d/dcol (eastward)
        del hh
        gy *= 0.5
        gx *= 0.5
        az, el = math.radians(self.sun_az), math.radians(self.sun_el)
        se, sn, sz = math.cos(el) * math.sin(az), math.cos(el) * math.cos(az), math.sin(el)
        # normal ~ (-dh/dx_east, -dh/dy_north, 1) with dh/dy_north = -dh/drow
        norm = gx * gx
        norm += gy * gy
        norm += 1.0
        np.sqrt(norm, out=norm)
        gx *= np.float32(-se / sz)
        gy *= np.float32(sn / sz)
        rel = gx
        rel += gy
        rel += np.float32(1.0)
        del gy
        rel /= norm  # Lambert shading relative to flat ground
        del norm
        np.clip(rel, 0.0, 2.2, out=rel)
        np.subtract(np.float32(1.0), shadow, out=shadow)
        rel *= shadow
        del shadow
        img = rel
        img *= np.float32(1.0 - self.ambient)
        img += np.float32(self.ambient)
        albedo = self.albedo_noise.window(r0, r1, c0, c1)
        albedo += np.float32(1.0)
        img *= albedo
        del albedo
        img *= np.float32(self.level)
        b = self.boulders
        m = 6.0 * self.scale + 8.0
        for i in np.nonzero((b["y"] >= r0 - m) & (b["y"] < r1 + m) & (b["x"] >= c0 - m) & (b["x"] < c1 + m))[0]:
            _render_feature(img, (r0, c0), b["y"][i], b["x"][i], b["ry"][i], b["rx"][i], b["angle"][i], self.sun_az,
                            self.sun_el, b["height"][i], gain=b["gain"][i], shadow_factor=b["shadow"][i],
                            edge_px=0.6, ambient=self.ambient)
        nrng = np.random.default_rng([self.noise_seed, r0, c0, r1, c1])
        noise = nrng.standard_normal(img.shape, dtype=np.float32)
        noise *= np.float32(self.noise_sigma)
        img += noise
        del noise
        return np.clip(img, 0.0, 1.0, out=img)


def make_terrain(shape, rng, *, scale=None, sun_azimuth_deg=DEFAULT_SUN_AZIMUTH_DEG, sun_elevation_deg=None):
    """Synthetic Mars-like terrain: fractal relief, albedo variation, craters with shaded rims
    and rim shadows, boulders with cast shadows, sensor noise. float32 in [0, 1].

    ``scale`` is pixels per "browse pixel": features are sized for a 256-px view at 1 (the
    default is ``min(shape) / 256``, at least 0.5), so a 1024-px chunk uses 4.
    """
    _check_rng(rng)
    h, w = int(shape[0]), int(shape[1])
    if h < 8 or w < 8:
        raise ValueError("terrain shape must be at least 8x8, got %r" % ((h, w),))
    if scale is None:
        scale = max(0.5, min(h, w) / 256.0)
    t = _Terrain(h, w, rng, scale=scale, sun_azimuth_deg=sun_azimuth_deg, sun_elevation_deg=sun_elevation_deg)
    return t.render(0, h, 0, w)


# --------------------------------------------------------------------------------------
# georeferenced sample scene
# --------------------------------------------------------------------------------------

def mars_equirectangular_wkt(latitude_deg: float, centre_lon_deg: float = 0.0) -> str:
    """WKT of a HiRISE-RDR-like Mars equirectangular CRS: sphere of radius 3396190 m,
    standard parallel at ``latitude_deg``, central meridian ``centre_lon_deg``."""
    from osgeo import osr

    srs = osr.SpatialReference()
    srs.SetGeogCS("GCS_Mars_2000_Sphere", "D_Mars_2000_Sphere", "Mars_2000_Sphere_IAU_IAG",
                  MARS_RADIUS_M, 0.0, "Reference_Meridian", 0.0)
    srs.SetEquirectangular2(0.0, float(centre_lon_deg), float(latitude_deg), 0.0, 0.0)
    srs.SetProjCS("Equirectangular Mars")
    srs.SetLinearUnits("metre", 1.0)
    return srs.ExportToWkt()


def _footprint_params(width: int, height: int, angle_deg: float):
    """Rotated swath rectangle whose corners touch the four raster edges."""
    th = math.radians(angle_deg)
    c, s = math.cos(th), math.sin(th)
    ca, sa = c, abs(s)
    den = ca * ca - sa * sa
    a = (width * ca - height * sa) / den  # swath width
    b = (height * ca - width * sa) / den  # swath length
    if a <= 0 or b <= 0:
        raise ValueError("footprint rotation %.1f deg is too large for a %dx%d raster" % (angle_deg, width, height))
    return a, b, c, s


def _footprint_mask(r0: int, r1: int, width: int, height: int, angle_deg: float, c0: int = 0,
                    c1: Optional[int] = None) -> np.ndarray:
    """True inside the swath footprint, for rows r0:r1 and columns c0:c1 of the raster."""
    a, b, c, s = _footprint_params(width, height, angle_deg)
    y = (np.arange(r0, r1, dtype=np.float32) + 0.5 - height / 2.0)[:, None]
    x = (np.arange(c0, width if c1 is None else c1, dtype=np.float32) + 0.5 - width / 2.0)[None, :]
    u = x * c + y * s
    v = -x * s + y * c
    return (np.abs(u) <= a / 2.0) & (np.abs(v) <= b / 2.0)


def write_sample_scene(path, width=4096, height=3072, rng_seed=0, pixel_size_m=0.25, latitude_deg=-55.0, ice=True,
                       *, chunk_size=1024, sun_azimuth_deg=DEFAULT_SUN_AZIMUTH_DEG, centre_lon_deg=0.0) -> Dict:
    """Write a georeferenced HiRISE-like RED GeoTIFF and describe what is in it.

    UInt16 holding 10-bit DN (1..1023), DN 0 = no-data (set as the band's nodata) outside a
    slightly rotated swath footprint, tiled + DEFLATE, with internal overviews; Mars
    equirectangular CRS (custom WKT, standard parallel = ``latitude_deg``). Written one
    ``chunk_size``-row strip at a time. With ``ice`` roughly half the ``chunk_size`` chunks
    (grid from pixel (0, 0), chunk id = row * columns + col) whose centre is inside the
    footprint get 1-3 ice patches; the other chunks get look-alikes instead: bare shadowing
    landforms (no ice), a few hot pixels and sunlit rocks.

    Returns a dict: ``path``, ``width``, ``height``, ``size`` (width, height),
    ``geotransform``, ``crs_wkt``, ``nodata``, ``pixel_size_m``, ``latitude_deg``,
    ``chunk_size``, ``ice_chunks`` (chunk ids), ``ice_patches`` (one dict per patch:
    ``bbox`` = (x0, y0, x1, y1) raster pixel columns/rows, ends exclusive, ``centre`` (x, y),
    ``chunk`` (row, col), ``chunk_id``, ``contrast``), ``negative_chunks``, ``seconds``.
    """
    import time

    from osgeo import gdal

    t_start = time.time()
    width, height, chunk_size = int(width), int(height), int(chunk_size)
    if width < 64 or height < 64:
        raise ValueError("scene must be at least 64x64 pixels")
    rng = np.random.default_rng(rng_seed)
    scale = max(1.0, chunk_size / 256.0)
    terrain = _Terrain(height, width, rng, scale=scale, sun_azimuth_deg=sun_azimuth_deg,
                       sun_elevation_deg=rng.uniform(22.0, 38.0))
    angle = float(rng.uniform(2.0, 5.0)) * (1 if rng.random() < 0.5 else -1)
    ncr, ncc = -(-height // chunk_size), -(-width // chunk_size)
    # chunks whose central half is inside the footprint can hold ice
    eligible = []
    for cr in range(ncr):
        for cc in range(ncc):
            y0, x0 = cr * chunk_size, cc * chunk_size
            ch, cw = min(chunk_size, height - y0), min(chunk_size, width - x0)
            if ch < 64 or cw < 64:
                continue
            fm = _footprint_mask(y0 + ch // 4, y0 + ch - ch // 4, width, height, angle, x0 + cw // 4, x0 + cw - cw // 4)
            if fm.all():
                eligible.append(cr * ncc + cc)
    ice_chunks = set()
    if ice and eligible:
        k = max(1, int(round(ncr * ncc / 2.0)))
        ice_chunks = set(int(i) for i in rng.permutation(eligible)[:k])

    wkt = mars_equirectangular_wkt(latitude_deg, centre_lon_deg)
    y_centre = MARS_RADIUS_M * math.radians(latitude_deg)
    gt = (-width / 2.0 * pixel_size_m, float(pixel_size_m), 0.0, y_centre + height / 2.0 * pixel_size_m, 0.0,
          -float(pixel_size_m))
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, ".%s.partial.tif" % os.path.basename(path))
    drv = gdal.GetDriverByName("GTiff")
    ds = drv.Create(tmp, width, height, 1, gdal.GDT_UInt16,
                    ["TILED=YES", "BLOCKXSIZE=512", "BLOCKYSIZE=512", "COMPRESS=DEFLATE", "PREDICTOR=2",
                     "ZLEVEL=4", "NUM_THREADS=ALL_CPUS", "BIGTIFF=IF_SAFER"])
    if ds is None:
        raise OSError("cannot create %s: %s" % (tmp, gdal.GetLastErrorMsg()))
    patches = []
    negatives = []
    try:
        ds.SetGeoTransform(gt)
        ds.SetProjection(wkt)
        ds.SetMetadata({"SYNTHETIC": "YES", "INSTRUMENT": "HiRISE-like RED (synthetic)",
                        "SUN_AZIMUTH_DEG": "%.1f" % sun_azimuth_deg, "SUN_ELEVATION_DEG": "%.1f" % terrain.sun_el,
                        "LATITUDE_DEG": "%.3f" % latitude_deg, "RNG_SEED": str(rng_seed)})
        band = ds.GetRasterBand(1)
        band.SetNoDataValue(NODATA_DN)
        band.SetDescription("RED")
        for cr in range(ncr):
            r0 = cr * chunk_size
            r1 = min(height, r0 + chunk_size)
            img = terrain.render(r0, r1, 0, width)
            valid = _footprint_mask(r0, r1, width, height, angle)
            for cc in range(ncc):
                c0 = cc * chunk_size
                c1 = min(width, c0 + chunk_size)
                cid = cr * ncc + cc
                sub, v = img[:, c0:c1], valid[:, c0:c1]
                if v.sum() < 64 * 64:
                    continue
                crng = np.random.default_rng([int(rng_seed) & 0xFFFFFFFF, cr, cc, 7])
                if cid in ice_chunks:
                    new, _m, infos = implant_ice_patches(
                        sub, crng, count=int(crng.integers(1, 4)), sun_azimuth_deg=sun_azimuth_deg,
                        min_size_px=max(3, chunk_size // 40), max_size_fraction=1.0 / 3.0,
                        contrast_range=(0.05, 0.3), sun_elevation_deg=terrain.sun_el, valid=v, return_info=True)
                    for inf in infos:
                        br0, bc0, br1, bc1 = inf["bbox"]
                        patches.append({
                            "bbox": (c0 + bc0, r0 + br0, c0 + bc1, r0 + br1),
                            "centre": (c0 + inf["centre"][1], r0 + inf["centre"][0]),
                            "chunk": (cr, cc), "chunk_id": cid, "contrast": inf["contrast"],
                            "size_px": inf["size_px"],
                        })
                else:
                    new, _m = implant_shadowing_features(
                        sub, crng, count=int(crng.integers(0, 3)), sun_azimuth_deg=sun_azimuth_deg,
                        size_range_px=(chunk_size / 40.0, chunk_size / 3.0), sun_elevation_deg=terrain.sun_el, valid=v)
                    new, _m = implant_hot_pixels(new, crng, count=int(crng.integers(1, 5)), valid=v)
                    new, _m = implant_sunlit_bright_rocks(
                        new, crng, count=int(crng.integers(1, 4)), sun_azimuth_deg=sun_azimuth_deg,
                        size_range_px=(2.0 * scale, 12.0 * scale), sun_elevation_deg=terrain.sun_el, valid=v)
                    negatives.append(cid)
                img[:, c0:c1] = new
            dn = np.clip(np.rint(img * HIRISE_MAX_DN), 1, HIRISE_MAX_DN).astype(np.uint16)
            dn[~valid] = NODATA_DN
            del img, valid
            band.WriteArray(dn, 0, r0)
            ds.FlushCache()  # compress and write this strip now: memory stays at one strip
        levels = []
        f = 2
        while min(width, height) // f >= 128:
            levels.append(f)
            f *= 2
        if levels:
            old_threads = gdal.GetConfigOption("GDAL_NUM_THREADS")
            gdal.SetConfigOption("GDAL_NUM_THREADS", old_threads or "ALL_CPUS")
            try:
                ds.BuildOverviews("AVERAGE", levels)
            finally:
                gdal.SetConfigOption("GDAL_NUM_THREADS", old_threads)
        ds.FlushCache()
        ds = None
        os.replace(tmp, path)
    except BaseException:
        ds = None
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return {
        "path": path, "width": width, "height": height, "size": (width, height), "geotransform": gt,
        "crs_wkt": wkt, "nodata": NODATA_DN, "pixel_size_m": float(pixel_size_m), "latitude_deg": float(latitude_deg),
        "chunk_size": chunk_size, "ice_chunks": sorted(ice_chunks), "ice_patches": patches,
        "negative_chunks": sorted(negatives), "footprint_angle_deg": angle, "seconds": time.time() - t_start,
    }

"""Ice-patch shapes, their placement and how ice brightens the ground: shared by every ice family."""

import math

import numpy as np

from .imaging import MASK_ALPHA, box_mean, dilate, gauss_blur, loguniform


# How bright ice is painted (paint_ice): clearly above the brighter part of its surroundings
# ("background"), also above most sunlit faces ("outshine"), or only a little above the middle of
# its surroundings, however textured they are ("faint": ice lit by the sky alone). "faint" keeps
# the network from learning that ice always stands out as the brightest thing around, which an
# independently drawn family showed it had (benchmarks/unseen_family.py).
BRIGHTNESS = ("background", "outshine", "faint")
FAINT_SHARE = 0.35
# Share of patches cut from smoothed noise (ragged, sometimes broken into pieces) rather than one blob.
NOISE_SHAPE_SHARE = 0.3


def draw_brightness(rng: np.random.Generator, outshine_share: float) -> str:
    """A patch's brightness mode: "faint" FAINT_SHARE of the time, else "outshine" or "background"."""
    if rng.random() < FAINT_SHARE:
        return "faint"
    return "outshine" if rng.random() < outshine_share else "background"


def patch_shape(rng: np.random.Generator, major: float, elongation: float, angle: float, sigma: float):
    """Irregular elongated blob (or, NOISE_SHAPE_SHARE of the time, a ragged patch cut from
    smoothed noise), Gaussian-blurred. Returns (alpha, centre_row, centre_col)."""
    if major >= 6.0 and rng.random() < NOISE_SHAPE_SHARE:
        return _noise_shape(rng, major, elongation, angle, sigma)
    a = max(major / 2.0, 0.9)
    b = max(a / elongation, 0.75)
    pad = int(math.ceil(a * 1.35 + 3.0 * sigma + 2))
    n = 2 * pad + 1
    u, v = _ellipse_coordinates(pad, a, b, angle)
    rho = np.sqrt(u * u + v * v)
    theta = np.arctan2(v, u)
    boundary = np.ones_like(rho)
    for k in range(2, 7):
        amp = rng.uniform(0.0, 0.22 / (k - 0.8))
        boundary += amp * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
    # ragged edge: a little smooth noise on the boundary (only matters for larger patches)
    if n >= 12:
        noise = gauss_blur(rng.standard_normal((n, n)).astype(np.float32), max(1.0, a / 6.0))
        noise /= max(float(noise.std()), 1e-6)
        boundary += 0.08 * noise
    return _softened(rho < np.clip(boundary, 0.55, 1.6), pad, sigma)


def _ellipse_coordinates(pad: int, a: float, b: float, angle: float):
    """(u, v) on a (2 pad + 1)-px square: distances along and across an ellipse of half-axes a, b
    turned by ``angle``, in units of those half-axes."""
    y = (np.arange(2 * pad + 1, dtype=np.float32) - pad)[:, None]
    x = (np.arange(2 * pad + 1, dtype=np.float32) - pad)[None, :]
    ca, sa = math.cos(angle), math.sin(angle)
    return (x * ca + y * sa) / a, (-x * sa + y * ca) / b


def _softened(inside: np.ndarray, pad: int, sigma: float):
    """A shape's blending weights: blurred by ``sigma``, its centre always in, peak 1 (small patches:
    an opaque core all the same). Returns (alpha, centre_row, centre_col)."""
    inside = inside.astype(np.float32)
    inside[pad, pad] = 1.0
    alpha = gauss_blur(inside, sigma)
    alpha /= max(float(alpha.max()), 1e-6)
    return np.clip(alpha, 0.0, 1.0), pad, pad


def _noise_shape(rng: np.random.Generator, major: float, elongation: float, angle: float, sigma: float):
    """Smoothed noise above a threshold inside a soft ellipse: a ragged patch, sometimes in pieces."""
    a = major / 2.0
    b = max(a / elongation, 1.5)
    pad = int(math.ceil(a * 1.2 + 3.0 * sigma + 2))
    n = 2 * pad + 1
    u, v = _ellipse_coordinates(pad, a, b, angle)
    rho = np.sqrt(u * u + v * v)
    noise = gauss_blur(rng.standard_normal((n, n)).astype(np.float32), max(1.0, b / rng.uniform(1.0, 3.0)))
    noise /= max(float(noise.std()), 1e-6)
    field = noise + 2.5 * (1.0 - rho)  # denser towards the middle
    return _softened(field > rng.uniform(0.8, 1.8), pad, sigma)


def place_patch(shape, valid, occupied, alpha, pr, pc, centre_row, centre_col):
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


def paint_ice(out, orig, valid, window, alpha, size, contrast_range, rng, brightness: str = "outshine") -> float:
    """Brighten ``out`` (in place) with an ice patch of blending weights ``alpha`` over
    ``window`` (row0, row1, col0, col1); returns the patch's contrast over its background.

    The level is drawn log-uniformly from ``contrast_range`` above the brighter part of the
    surroundings in ``orig`` (the image before any plant), never fainter than about 1.5 local
    standard deviations; "outshine" also outshines most of the neighbourhood, sunlit faces
    included; "faint" is drawn above the median of the surroundings with no such floor (BRIGHTNESS). The ice mutes
    but keeps the texture beneath it and only ever brightens.
    """
    if brightness not in BRIGHTNESS:
        raise ValueError(f"brightness must be one of {BRIGHTNESS}, got {brightness!r}")
    wr0, wr1, wc0, wc1 = window
    a = alpha
    h, w = out.shape
    clo, chi = contrast_range
    # background: the brighter part of the surroundings (the shadow is not "background")
    rr0, rr1 = max(0, wr0 - int(size / 3) - 2), min(h, wr1 + int(size / 3) + 2)
    cc0, cc1 = max(0, wc0 - int(size / 3) - 2), min(w, wc1 + int(size / 3) + 2)
    neigh = orig[rr0:rr1, cc0:cc1][valid[rr0:rr1, cc0:cc1]]
    bg = float(np.percentile(neigh, 50 if brightness == "faint" else 60)) if neigh.size else float(np.median(orig))
    # faint is fine, invisible is not: at least ~1.5 local standard deviations, except "faint"
    floor = min(1.5 * float(np.std(neigh)), chi) if neigh.size and brightness != "faint" else 0.0
    contrast = max(loguniform(rng, clo, chi), floor)
    p85 = float(np.percentile(neigh, 85)) if neigh.size and brightness == "outshine" else bg
    level = min(max(bg + contrast, p85 + 0.3 * contrast), 0.97)
    contrast = level - bg
    # the ice mutes but does not erase the relief and texture beneath it
    keep = rng.uniform(0.25, 0.7)
    tr = max(2, int(size / 4))
    t0r, t1r, t0c, t1c = max(0, wr0 - tr), min(h, wr1 + tr), max(0, wc0 - tr), min(w, wc1 + tr)
    big = out[t0r:t1r, t0c:t1c]
    texture = (big - box_mean(big, tr))[wr0 - t0r:wr1 - t0r, wc0 - t0c:wc1 - t0c]
    # ...yet stays brighter than the ground around it, shadow included
    body = level + np.clip(keep * texture, -0.5 * contrast, 0.5 * contrast)
    if a.shape[0] >= 8:
        mottle = gauss_blur(rng.standard_normal(a.shape).astype(np.float32), max(1.0, size / 10.0))
        mottle /= max(float(mottle.std()), 1e-6)
        body = body + 0.12 * contrast * mottle
    win = out[wr0:wr1, wc0:wc1]
    # ice only ever brightens the ground
    win[...] = np.clip(np.maximum(win, win * (1.0 - a) + a * body), 0.0, 1.0)
    return contrast


def plant(out, orig, valid, occupied, mask, alpha, pr, pc, centre, size, contrast_range, rng, brightness="outshine"):
    """Place ``alpha`` centred at ``centre`` (row, col) if it fits, paint the ice, and mark
    ``mask`` (the pixels above MASK_ALPHA) and ``occupied``, all in place. Returns the
    patch's info dict (``bbox``, ``centre``, ``size_px``, ``contrast``), or None."""
    placed = place_patch(out.shape, valid, occupied, alpha, pr, pc, centre[0], centre[1])
    if placed is None:
        return None
    (r0, r1, c0, c1), a = placed
    core = a > MASK_ALPHA
    if not core.any():
        return None
    contrast = paint_ice(out, orig, valid, (r0, r1, c0, c1), a, size, contrast_range, rng, brightness)
    mask[r0:r1, c0:c1] |= core
    occupied[r0:r1, c0:c1] |= dilate(a > 0.02, 1)
    rows, cols = np.nonzero(core)
    return {
        "bbox": (int(rows.min() + r0), int(cols.min() + c0), int(rows.max() + r0 + 1), int(cols.max() + c0 + 1)),
        "centre": (float(rows.mean() + r0), float(cols.mean() + c0)),
        "size_px": float(size),
        "contrast": float(contrast),
    }

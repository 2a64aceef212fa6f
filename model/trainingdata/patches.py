"""Ice-patch shapes, their placement and how ice brightens the ground: shared by every ice family."""

import math

import numpy as np

from .imaging import MASK_ALPHA, box_mean, dilate, gauss_blur, loguniform


def patch_shape(rng: np.random.Generator, major: float, elongation: float, angle: float, sigma: float):
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
        noise = gauss_blur(rng.standard_normal((n, n)).astype(np.float32), max(1.0, a / 6.0))
        noise /= max(float(noise.std()), 1e-6)
        boundary += 0.08 * noise
    inside = (rho < np.clip(boundary, 0.55, 1.6)).astype(np.float32)
    inside[pad, pad] = 1.0
    alpha = gauss_blur(inside, sigma)
    alpha /= max(float(alpha.max()), 1e-6)  # small patches: an opaque core all the same
    return np.clip(alpha, 0.0, 1.0), pad, pad


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


def paint_ice(out, orig, valid, window, alpha, size, contrast_range, rng, outshine: bool = True) -> float:
    """Brighten ``out`` (in place) with an ice patch of blending weights ``alpha`` over
    ``window`` (row0, row1, col0, col1); returns the patch's contrast over its background.

    The level is drawn log-uniformly from ``contrast_range`` above the brighter part of the
    surroundings in ``orig`` (the image before any plant), never fainter than about 1.5 local
    standard deviations; with ``outshine`` it also outshines most of the neighbourhood, sunlit
    faces included. The ice mutes but keeps the texture beneath it and only ever brightens.
    """
    wr0, wr1, wc0, wc1 = window
    a = alpha
    h, w = out.shape
    clo, chi = contrast_range
    # background: the brighter part of the surroundings (the shadow is not "background")
    rr0, rr1 = max(0, wr0 - int(size / 3) - 2), min(h, wr1 + int(size / 3) + 2)
    cc0, cc1 = max(0, wc0 - int(size / 3) - 2), min(w, wc1 + int(size / 3) + 2)
    neigh = orig[rr0:rr1, cc0:cc1][valid[rr0:rr1, cc0:cc1]]
    bg = float(np.percentile(neigh, 60)) if neigh.size else float(np.median(orig))
    # faint is fine, invisible is not: at least ~1.5 local standard deviations
    contrast = max(loguniform(rng, clo, chi), min(1.5 * float(np.std(neigh)) if neigh.size else 0.0, chi))
    p85 = float(np.percentile(neigh, 85)) if neigh.size and outshine else bg
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


def plant(out, orig, valid, occupied, mask, alpha, pr, pc, centre, size, contrast_range, rng, outshine=True):
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
    contrast = paint_ice(out, orig, valid, (r0, r1, c0, c1), a, size, contrast_range, rng, outshine)
    mask[r0:r1, c0:c1] |= core
    occupied[r0:r1, c0:c1] |= dilate(a > 0.02, 1)
    rows, cols = np.nonzero(core)
    return {
        "bbox": (int(rows.min() + r0), int(cols.min() + c0), int(rows.max() + r0 + 1), int(cols.max() + c0 + 1)),
        "centre": (float(rows.mean() + r0), float(cols.mean() + c0)),
        "size_px": float(size),
        "contrast": float(contrast),
    }

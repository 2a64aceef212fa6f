"""Where the terrain of an image is in shade: cast shadows next to a sunlit feature, and the
natural shade of the real terrain found from the image alone (no caster drawn)."""

import numpy as np

from .imaging import box_mean, shift, sun_vectors


def natural_shade(image, valid, scale_px: int, strength: float = 0.8):
    """(shade mask, darkness) of an image: pixels clearly darker than their surroundings.

    ``scale_px`` is the size of the shade sought (the local mean is taken over about six times it);
    darkness is (local mean - smoothed value) / local standard deviation. ``strength`` is the
    darkness a shade pixel needs; shade is also in the darker 40 % of the image.
    """
    fill = image.copy()
    if not valid.all():
        fill[~valid] = float(np.median(image[valid])) if valid.any() else 0.5
    smooth = box_mean(fill, max(1, scale_px // 4))
    mean = box_mean(smooth, max(3, 3 * scale_px))
    sd = np.sqrt(np.maximum(box_mean(smooth * smooth, max(3, 3 * scale_px)) - mean * mean, 1e-8))
    darkness = (mean - smooth) / np.maximum(sd, 0.01)
    low = np.percentile(smooth[valid], 40) if valid.any() else 0.0
    shade = (darkness > strength) & (smooth < low) & valid
    shade = box_mean(shade.astype(np.float32), 1) > 0.5  # drop single-pixel specks
    return shade & valid, darkness


def poleward_edge(shade, darkness, reach: int):
    """Shade pixels whose ground ``reach`` rows further poleward (down) is out of the shade and
    lit a little further on: the poleward rim of each shaded area, where the paper's ice sits."""
    below = shift(shade.astype(np.float32), reach, 0) > 0.5
    lit_below = shift(darkness, 2 * reach + 2, 0) < 0.0
    return shade & ~below & lit_below


def find_cast_shadows(img: np.ndarray, valid: np.ndarray, sun_azimuth_deg: float):
    """Candidate shadow pixels next to a brighter sunward feature.

    Returns (rows, cols, score, smoothed, local_mean, local_sd).
    """
    h, w = img.shape
    side = min(h, w)
    rs = max(1, side // 512)
    fill = img.copy()
    if not valid.all():
        fill[~valid] = float(np.median(img[valid])) if valid.any() else 0.5
    s = box_mean(fill, rs)
    wr = int(np.clip(side // 12, 5, 64))
    m = box_mean(s, wr)
    sd = np.sqrt(np.maximum(box_mean(s * s, wr) - m * m, 1e-8))
    to_sun, _ = sun_vectors(sun_azimuth_deg)
    step = max(1.0, side / 256.0)
    bright = None
    for d in (1.5, 2.5, 4.0, 6.0):
        dr = int(round(to_sun[0] * d * step))
        dc = int(round(to_sun[1] * d * step))
        sh = shift(s, dr, dc)
        bright = sh if bright is None else np.maximum(bright, sh)
    thr = max(0.015, 0.02 * float(np.std(s[valid])) / 0.08) if valid.any() else 0.015
    low = np.percentile(s[valid], 25) if valid.any() else 0.0
    # a cast shadow is clearly darker than its surroundings, with a lit face on its sun side
    dark = (s < m - np.maximum(1.5 * sd, thr)) & (s < low) & (s < 0.85 * m)
    nb = (bright > s + np.maximum(2.0 * sd, 3 * thr)) & (bright > m + 0.3 * sd)
    margin = max(3, wr // 2)
    ok = box_mean(valid.astype(np.float32), margin) > 0.999
    ok[:margin] = False
    ok[-margin:] = False
    ok[:, :margin] = False
    ok[:, -margin:] = False
    cand = dark & nb & ok
    rows, cols = np.nonzero(cand)
    score = ((m - s) / sd)[rows, cols]
    return rows, cols, score, s, m, sd


def shadow_extent(s: np.ndarray, m: np.ndarray, r: int, c: int, limit: int):
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

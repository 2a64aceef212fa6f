"""The fifth family, "frost lobes": bright, soft-edged frost on the shaded slopes of the real
terrain, below (poleward of) a sunlit rim. The shade is found from the brightness falling off
down-slope under a northern sun (not from local darkness), a patch is a cluster of 1-5 overlapping
lobes (not one shape), its inner texture is smoothed noise, and it is blended toward a target
brightness above its own surroundings. Shares no code with model/trainingdata."""

import math

import numpy as np
from scipy import ndimage


def slope_shade(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pixels on slopes turned away from a northern sun: dark, and darker than the ground a few
    pixels north of them (the sunlit rim above)."""
    smooth = ndimage.gaussian_filter(image, rng.uniform(1.0, 3.0))
    spread = float(smooth.std()) or 1e-3
    reach = int(rng.integers(3, 9))
    rim_above = np.full_like(smooth, -np.inf)
    rim_above[reach:] = smooth[:-reach]
    falls_off = (rim_above - smooth) > rng.uniform(0.4, 0.9) * spread
    dark = smooth < np.percentile(smooth, rng.uniform(30.0, 50.0))
    return ndimage.binary_opening(falls_off & dark, iterations=1)


def lobes(rng: np.random.Generator, size: float) -> np.ndarray:
    """A soft cluster of 1-5 overlapping elliptical lobes on a square canvas, peak 1."""
    half = int(math.ceil(size)) + 2
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float32)
    alpha = np.zeros_like(yy)
    edge = rng.uniform(0.05, 0.9)  # share of the radius over which the edge fades: sharp to very diffuse
    for _ in range(int(rng.integers(1, 6))):
        radius = size / 2 * rng.uniform(0.35, 1.0)
        aspect = rng.uniform(1.0, 3.5)
        angle = rng.normal(0.0, 0.5)  # mostly east-west, as slope shade runs under a northern sun
        cy, cx = rng.normal(0.0, size / 5, 2)
        u = ((xx - cx) * math.cos(angle) + (yy - cy) * math.sin(angle)) / radius
        v = (-(xx - cx) * math.sin(angle) + (yy - cy) * math.cos(angle)) / (radius / aspect)
        distance = np.sqrt(u * u + v * v)
        alpha = np.maximum(alpha, np.clip((1.0 - distance) / edge, 0.0, 1.0))
    return alpha


def draw(image: np.ndarray, rng: np.random.Generator):
    """The crop with 1-3 frost patches on its slope shade, and the patches' (size px, contrast);
    None where the crop has no slope shade."""
    shade = slope_shade(image, rng)
    rows, cols = np.nonzero(shade)
    if len(rows) < 20:
        return None
    out = image.copy()
    side = min(image.shape)
    held = ndimage.gaussian_filter(shade.astype(np.float32), 2.0)
    patches = []
    for _ in range(int(rng.integers(1, 4))):
        size = float(math.exp(rng.uniform(math.log(4.0), math.log(side / 3.0))))
        j = int(rng.integers(len(rows)))
        alpha = lobes(rng, size)
        texture = ndimage.gaussian_filter(rng.random(alpha.shape).astype(np.float32), rng.uniform(0.5, 3.0))
        texture = (texture - texture.min()) / max(float(np.ptp(texture)), 1e-6)
        alpha = alpha * (1.0 - rng.uniform(0.0, 0.6) * texture)
        half = alpha.shape[0] // 2
        r0, c0 = rows[j] - half, cols[j] - half
        y0, x0 = max(r0, 0), max(c0, 0)
        y1, x1 = min(r0 + alpha.shape[0], image.shape[0]), min(c0 + alpha.shape[1], image.shape[1])
        if y1 - y0 < 2 or x1 - x0 < 2:
            continue
        a = alpha[y0 - r0:y1 - r0, x0 - c0:x1 - c0] * (0.3 + 0.7 * held[y0:y1, x0:x1])  # mostly inside the shade
        ring = out[max(y0 - half, 0):y1 + half, max(x0 - half, 0):x1 + half]
        contrast = float(math.exp(rng.uniform(math.log(0.05), math.log(0.8))))
        target = min(1.0, float(np.median(ring)) + contrast)
        region = out[y0:y1, x0:x1]
        out[y0:y1, x0:x1] = region + a * (target - region) * rng.uniform(0.7, 1.0)
        patches.append((size, contrast))
    return (np.clip(out, 0.0, 1.0), patches) if patches else None

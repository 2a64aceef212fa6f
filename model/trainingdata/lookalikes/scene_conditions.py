"""Look-alike scenes: washed-out (hazy, flat-lit) and seasonal-CO2-frost-covered."""

import numpy as np

from ..imaging import as_image, box_mean, check_rng, gauss_blur


def apply_low_contrast(image, rng, factor_range=(0.15, 0.45)):
    """A washed-out (hazy / flat-lit) version of the scene: contrast reduced around its mean."""
    check_rng(rng)
    out = as_image(image)
    f = rng.uniform(*factor_range)
    mean = float(out.mean())
    haze = rng.uniform(-0.1, 0.15)
    res = np.clip(mean + haze + f * (out - mean), 0.0, 1.0)
    res += rng.normal(0.0, 0.004, out.shape).astype(np.float32)
    return np.clip(res, 0.0, 1.0).astype(np.float32)


def apply_co2_frost(image, rng):
    """A seasonal-CO2-frost-covered version: bright, low contrast, mottled, shadows partly filled."""
    check_rng(rng)
    out = as_image(image)
    h, w = out.shape
    level = rng.uniform(0.6, 0.85)
    keep = rng.uniform(0.2, 0.45)
    mean = float(out.mean())
    res = level + keep * (out - mean)
    mottle = np.zeros((h, w), dtype=np.float32)
    for s in (2.0, 6.0, 18.0):
        n = rng.standard_normal((h, w)).astype(np.float32)
        n = box_mean(box_mean(n, int(s)), int(s)) if s > 2 else gauss_blur(n, 1.0)
        mottle += n / max(float(n.std()), 1e-6) / s ** 0.5
    res += rng.uniform(0.01, 0.04) * mottle
    return np.clip(res, 0.0, 1.0).astype(np.float32)

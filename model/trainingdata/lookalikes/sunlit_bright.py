"""Look-alikes: bright patches where ice cannot survive, in full sun away from any shade
(sun-facing slopes, bright outcrops), and broad diffuse bright dust.

They are painted like ice (model.trainingdata.patches) so that brightness and softness alone are
no evidence: only a bright patch in shade is ice.
"""

import math

import numpy as np

from ..imaging import as_image, as_valid, box_mean, check_rng, dilate, loguniform
from ..patches import patch_shape, plant
from ..shade import natural_shade


def implant_sunlit_bright_patches(image, rng, count=None, *, contrast_range=(0.05, 0.6), valid=None, return_info=False):
    """Plant ``count`` (default 1 to 3) ice-like patches on sunlit ground at least a patch
    length from any shade, or one broad patch of bright dust; returns (image, mask) (+ info)."""
    check_rng(rng)
    out = as_image(image)
    h, w = out.shape
    valid = as_valid(valid, out.shape, out)
    side = min(h, w)
    orig = out.copy()
    occupied = np.zeros((h, w), bool)
    mask = np.zeros((h, w), bool)
    infos = []
    if rng.random() < 0.25:  # bright dust: large, faint and very diffuse
        size = rng.uniform(side / 5.0, side / 2.0)
        alpha, pr, pc = patch_shape(rng, size, rng.uniform(1.0, 2.5), rng.uniform(0, math.pi), size / rng.uniform(3.0, 6.0))
        info = plant(out, orig, valid, occupied, mask, alpha, pr, pc, (rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w),
                     size, (0.04, 0.15), rng, brightness="background")
        if info is None:
            raise ValueError("no room for bright dust in this image")
        infos.append(dict(info, kind="bright dust"))
        return (out, mask, infos) if return_info else (out, mask)
    shade, _ = natural_shade(out, valid, max(6, side // 16), strength=0.25)
    fill = np.where(valid, out, 0.0)
    lit = (box_mean(fill, 2) > box_mean(fill, max(4, side // 16))) & valid
    count = int(rng.integers(1, 4)) if count is None else int(count)
    for _ in range(count):
        size = loguniform(rng, 4.0, side / 4.0)
        far = lit & ~dilate(shade, int(size * 0.8) + 2)
        rows, cols = np.nonzero(far)
        if not len(rows):
            continue
        for _attempt in range(15):
            j = int(rng.integers(len(rows)))
            alpha, pr, pc = patch_shape(rng, size, rng.uniform(1.0, 3.5), rng.uniform(0, math.pi), loguniform(rng, 0.3, max(0.6, size / 4)))
            info = plant(out, orig, valid, occupied, mask, alpha, pr, pc, (rows[j], cols[j]), size, contrast_range, rng,
                         brightness="outshine" if rng.random() < 0.5 else "background")
            if info is not None:
                infos.append(dict(info, kind="sunlit bright patch"))
                break
    if not infos:
        raise ValueError("no sunlit ground away from shade in this image")
    return (out, mask, infos) if return_info else (out, mask)

"""Look-alike: isolated saturated pixels and tiny clusters (the paper's first model took them for ice)."""

import numpy as np

from ..imaging import as_image, as_valid, check_rng


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
    check_rng(rng)
    out = as_image(image)
    h, w = out.shape
    valid = as_valid(valid, out.shape, out)
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

"""Look-alike: bright transmission lines: one or a few whole or partial rows or columns lifted
towards saturation, as data-transmission errors leave them in HiRISE products."""

import numpy as np

from ..imaging import as_image, as_valid, check_rng


def implant_bright_lines(image, rng, count=None, *, valid=None):
    """``count`` (default 1 to 3) lines of 1-2 px; returns (image, mask)."""
    check_rng(rng)
    out = as_image(image)
    h, w = out.shape
    valid = as_valid(valid, out.shape, out)
    mask = np.zeros((h, w), bool)
    for _ in range(int(rng.integers(1, 4)) if count is None else int(count)):
        along_rows = rng.random() < 0.7  # detector lines run across the image
        length = h if not along_rows else w
        start = int(rng.integers(0, length // 2)) if rng.random() < 0.5 else 0
        stop = length if start == 0 or rng.random() < 0.5 else int(rng.integers(start + length // 4, length + 1))
        index = int(rng.integers(1, (h if along_rows else w) - 2))
        for k in range(int(rng.integers(1, 3))):
            line = (index + k, slice(start, stop)) if along_rows else (slice(start, stop), index + k)
            lifted = np.where(valid[line], np.clip(out[line] + rng.uniform(0.3, 1.0), 0.0, 1.0), out[line])
            out[line] = lifted
            mask[line] |= valid[line]
    return out, mask

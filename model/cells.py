"""Supervising the score map's cells where the ice of a training example is known.

A chunk label says only that ice is somewhere in the chunk, so a network can meet it with any cue
the example's maker left, near the ice or not. Where the maker knows the ice's outline (the
default model's generated examples), each cell of the score map is taught too: a cell the ice
covers must score icy, and every cell of an ice-free example must not. The cells the ice leaves in
an icy chunk are left free, since the chunk's own loss asks their mean to rise.
"""

import numpy as np

# Share of a cell the ice must cover for the whole weight of its target (less: proportionally less).
FULL_WEIGHT_SHARE = 0.03


def targets(shares: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(n, g, g, 2): each cell's target and weight, from the ice's share of each cell (n, g, g)."""
    shares = np.asarray(shares, np.float32)
    icy = np.broadcast_to(np.asarray(labels).reshape(-1, 1, 1) == 1, shares.shape)
    target = icy.astype(np.float32)
    weight = np.where(icy, np.clip(shares / FULL_WEIGHT_SHARE, 0.0, 1.0), 1.0)
    return np.stack([target, weight], axis=-1).astype(np.float32)


def unsupervised(count: int, cells: int) -> np.ndarray:
    """Targets that teach no cell, for examples whose ice is not outlined (a user's chunks, replay)."""
    return np.zeros((count, cells, cells, 2), np.float32)


def loss(y_true, y_pred):
    """Weighted cross-entropy of the cells' logits, per example."""
    import keras

    target, weight = y_true[..., :1], y_true[..., 1:]
    cross_entropy = keras.ops.binary_crossentropy(target, y_pred, from_logits=True)
    return keras.ops.sum(cross_entropy * weight, axis=(1, 2, 3)) / keras.ops.maximum(keras.ops.sum(weight, axis=(1, 2, 3)), 1.0)


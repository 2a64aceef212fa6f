"""Which chunk the geologist should label next: each detected chunk's review_rank (1 = first).

The rule:
  1. Uncertainty. A chunk's score starts as minus the distance of its probability from the icy
     threshold on the logit scale, |logit(p) - logit(threshold)|: 0 at the threshold, about -4.3
     at p = 0.02 or 0.99 for the paper's 0.6. The logit scale keeps p = 0.02 and p = 0.001 apart,
     where plain probabilities would call both "near 0".
  2. Diversity. Ranks are handed out greedily, best score first. Each chunk already ranked lowers
     the score of every chunk within `radius` grid cells of it (rows and columns, diagonals
     included) by NEIGHBOUR_PENALTY, so the top of the list spreads over the image instead of
     filling one uncertain patch; a neighbour stays ahead only while it is clearly more
     uncertain than the chunks elsewhere.
  3. Ties go to the lower input position (chunk order), so the ranking is deterministic.

Probability alone is not penalised for similarity: uncertainty already orders by it, and
spreading over probability would trade that order for a stratified sample.

Numpy only: the worker and the QGIS process both import this module.
"""

import heapq
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np

from . import rules

# Logit units taken off a chunk's score per ranked chunk within the radius. 1.0 makes a p = 0.6
# chunk beside one ranked chunk wait behind an isolated one at p between about 0.35 and 0.8.
NEIGHBOUR_PENALTY = 1.0
# Probabilities are clipped to [EPSILON, 1 - EPSILON] so that 0 and 1 have a finite logit.
EPSILON = 1e-6


def logit(probabilities) -> np.ndarray:
    p = np.clip(np.asarray(probabilities, dtype=np.float64), EPSILON, 1.0 - EPSILON)
    return np.log(p) - np.log1p(-p)


def uncertainty(probabilities, threshold: float = rules.ICY_THRESHOLD) -> np.ndarray:
    """0 at the threshold, more negative the further a probability lies from it on the logit scale."""
    return -np.abs(logit(probabilities) - logit(threshold))


def neighbour_radius(chunk_size: int, stride: int) -> int:
    """Grid cells within which chunks overlap or touch: 1 for a plain grid, more for an overlapping stride."""
    return max(1, chunk_size // stride)


def review_ranks(probabilities: Sequence[float], rows: Sequence[int], cols: Sequence[int], threshold: float = rules.ICY_THRESHOLD, radius: int = 1) -> np.ndarray:
    """The review_rank of each chunk (1..n, aligned with the inputs), by the rule in this module's docstring."""
    if not len(probabilities) == len(rows) == len(cols):
        raise ValueError(f"probabilities, rows and cols differ in length ({len(probabilities)}, {len(rows)}, {len(cols)})")
    base = uncertainty(probabilities, threshold)
    cells = {(int(r), int(c)): i for i, (r, c) in enumerate(zip(rows, cols))}
    ranked_neighbours = np.zeros(len(base), dtype=np.int64)
    ranks = np.zeros(len(base), dtype=np.int64)
    # Min-heap of (-score, position). Penalties only grow, so a stored score is an upper bound of
    # the chunk's score now (lazy greedy): a popped chunk whose score has fallen since goes back in.
    heap: List[Tuple[float, int]] = [(-score, i) for i, score in enumerate(base.tolist())]
    heapq.heapify(heap)
    next_rank = 1
    while heap:
        key, i = heapq.heappop(heap)
        current = -(base[i] - NEIGHBOUR_PENALTY * ranked_neighbours[i])
        if current > key:
            heapq.heappush(heap, (current, i))
            continue
        ranks[i] = next_rank
        next_rank += 1
        for j in _neighbours(cells, rows[i], cols[i], radius):
            ranked_neighbours[j] += 1
    return ranks


def _neighbours(cells: Dict[Tuple[int, int], int], row: int, col: int, radius: int) -> Iterator[int]:
    for dr in range(-radius, radius + 1):
        for dc in range(-radius, radius + 1):
            j = cells.get((int(row) + dr, int(col) + dc))
            if j is not None and (dr or dc):
                yield j

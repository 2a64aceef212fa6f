"""The paper's decision rules, as pure functions.

Chunk classes (Gergacs & Kereszturi): icy at p >= 0.6, hard to identify at 0.4 <= p < 0.6,
otherwise not icy.

Image categories: the paper grades each image "good", "hard to identify" or "bad" from the
mean chunk probability and the share of icy chunks, without publishing cut-offs. We use:
  good             - at least GOOD_ICY_SHARE of the chunks are icy, or the mean
                     probability reaches GOOD_MEAN: ice is clearly present;
  bad              - fewer than BAD_ICY_SHARE of the chunks are icy and the mean stays below
                     BAD_MEAN: nothing worth a closer look;
  hard to identify - everything in between, and any image whose chunks are mostly "hard".
"""

from dataclasses import dataclass
from typing import Sequence

from .errors import EngineError

ICY = "icy"
HARD = "hard to identify"
NOT_ICY = "not icy"

GOOD = "good"
BAD = "bad"

ICY_THRESHOLD = 0.6
HARD_LOW = 0.4

GOOD_ICY_SHARE = 0.10
GOOD_MEAN = 0.5
BAD_ICY_SHARE = 0.02
BAD_MEAN = 0.3
MOSTLY_HARD_SHARE = 0.5


def check_thresholds(icy_threshold: float, hard_low: float) -> None:
    if icy_threshold < hard_low:
        raise EngineError(f"ICY_THRESHOLD ({icy_threshold}) must not be below HARD_LOW ({hard_low}); the paper uses 0.6 and 0.4.")


def chunk_class(probability: float, icy_threshold: float = ICY_THRESHOLD, hard_low: float = HARD_LOW) -> str:
    if probability >= icy_threshold:
        return ICY
    if probability >= hard_low:
        return HARD
    return NOT_ICY


@dataclass(frozen=True)
class ImageStats:
    chunks: int
    icy_chunks: int
    hard_chunks: int
    mean_probability: float
    max_probability: float

    @property
    def icy_share(self) -> float:
        return self.icy_chunks / self.chunks if self.chunks else 0.0

    @property
    def hard_share(self) -> float:
        return self.hard_chunks / self.chunks if self.chunks else 0.0


def image_stats(probabilities: Sequence[float], icy_threshold: float = ICY_THRESHOLD, hard_low: float = HARD_LOW) -> ImageStats:
    classes = [chunk_class(p, icy_threshold, hard_low) for p in probabilities]
    n = len(classes)
    return ImageStats(
        chunks=n,
        icy_chunks=classes.count(ICY),
        hard_chunks=classes.count(HARD),
        mean_probability=sum(probabilities) / n if n else 0.0,
        max_probability=max(probabilities) if n else 0.0,
    )


def image_category(stats: ImageStats) -> str:
    """good / hard to identify / bad, by the rules in this module's docstring."""
    if stats.chunks == 0:
        return BAD
    if stats.hard_share >= MOSTLY_HARD_SHARE:
        return HARD
    if stats.icy_share >= GOOD_ICY_SHARE or stats.mean_probability >= GOOD_MEAN:
        return GOOD
    if stats.icy_share < BAD_ICY_SHARE and stats.mean_probability < BAD_MEAN:
        return BAD
    return HARD

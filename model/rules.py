"""The paper's decision rules, as pure functions.

Chunk classes (Gergacs & Kereszturi): icy at p >= 0.6, hard to identify at 0.4 <= p < 0.6,
otherwise not icy.

Image categories ("good", "hard to identify", "bad"), by one of two rules:
  paper        - the paper's published cut-offs (paper_category, the default);
  conservative - the rule this plugin used before it read them (conservative_category): more
                 images "good" or "hard to identify", fewer "bad".
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

PAPER = "paper"
CONSERVATIVE = "conservative"

# The paper's cut-offs on an image's mean chunk probability (its section 5).
PAPER_MOSTLY_ICY_GOOD_MEAN = 0.6
PAPER_GOOD_MEAN = 0.2
PAPER_HARD_MEAN = 0.01
PAPER_MIN_ICY_CHUNKS = 2

# The conservative rule's cut-offs.
GOOD_ICY_SHARE = 0.10
GOOD_MEAN = 0.5
BAD_ICY_SHARE = 0.02
BAD_MEAN = 0.3
MOSTLY_HARD_SHARE = 0.5


def check_thresholds(icy_threshold: float, hard_low: float) -> None:
    for name, value in (("ICY_THRESHOLD", icy_threshold), ("HARD_LOW", hard_low)):
        if not 0.0 <= value <= 1.0:  # given by an expression, or on the command line, no range had held it
            raise EngineError(f"{name} is {value}, but it is a probability: give a value from 0 to 1 (the paper uses 0.6 and 0.4).")
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


# Probabilities as the layers show them and as the summary counts and averages them: one rounding everywhere,
# so that a chunk shown at the threshold is counted as the layer says and the category follows from the shown mean.
PROBABILITY_DECIMALS = 5


def image_stats(probabilities: Sequence[float], icy_threshold: float = ICY_THRESHOLD, hard_low: float = HARD_LOW) -> ImageStats:
    classes = [chunk_class(p, icy_threshold, hard_low) for p in probabilities]
    n = len(classes)
    return ImageStats(
        chunks=n,
        icy_chunks=classes.count(ICY),
        hard_chunks=classes.count(HARD),
        # rounded as the summary stores it, so that the category is the one its mean says: 0.6000054 is stored as
        # 0.60001, above 0.6, and 0.2 stays 0.2 whatever the sum's rounding
        mean_probability=round(sum(probabilities) / n, PROBABILITY_DECIMALS) if n else 0.0,
        max_probability=max(probabilities) if n else 0.0,
    )


def paper_category(stats: ImageStats) -> str:
    """The paper's image category, with our reading where its text leaves a gap.

    The text: good when the mean probability is above 60 % and more than half of the chunks are
    icy; with fewer icy chunks than half, good when the mean is above 20 %; hard to identify
    when more than half are icy and the mean is 40-60 %, or when fewer than half but more than
    1 chunk are icy and the mean is at least 1 %; bad under that minimum.

    Our reading:
      - "more than half" is strict: exactly half of the chunks icy goes by the fewer-than-half
        sentences;
      - "more than 1 chunk" is literal, at least PAPER_MIN_ICY_CHUNKS (2) icy chunks, and it
        bounds the whole fewer-than-half branch: an image with 0 or 1 icy chunk is bad whatever
        its mean (the paper checks by hand only good and hard images, and a lone icy chunk is
        what the bright-pixel artefacts of its discussion produce);
      - "above" is strict (a mean of exactly 60 % or 20 % is not good), "between 40-60 %" and
        "minimum ... 1 %" include their ends;
      - more than half icy with a mean below 40 % (at the paper's thresholds a mean from 30 %)
        has no category in the text: hard to identify, so it is checked by hand rather than
        dropped as bad;
      - the rule asks more of a mostly icy image (mean above 60 %) than of one with fewer icy
        chunks (above 20 %); that is the text, kept as written;
      - icy means the detection's ICY_THRESHOLD, as stats were counted; the mean cut-offs are
        the paper's, whatever the thresholds; an image with no chunks is bad.
    """
    mean = stats.mean_probability
    if 2 * stats.icy_chunks > stats.chunks:
        return GOOD if mean > PAPER_MOSTLY_ICY_GOOD_MEAN else HARD
    if stats.icy_chunks < PAPER_MIN_ICY_CHUNKS:
        return BAD
    if mean > PAPER_GOOD_MEAN:
        return GOOD
    return HARD if mean >= PAPER_HARD_MEAN else BAD


def conservative_category(stats: ImageStats) -> str:
    """The rule used before the paper's cut-offs were read; an image whose chunks are mostly "hard" is
    hard to identify before anything else:
      good             - at least GOOD_ICY_SHARE of the chunks are icy, or the mean
                         probability reaches GOOD_MEAN: ice is clearly present;
      bad              - fewer than BAD_ICY_SHARE of the chunks are icy and the mean stays below
                         BAD_MEAN: nothing worth a closer look;
      hard to identify - everything in between.
    """
    if stats.chunks == 0:
        return BAD
    if stats.hard_share >= MOSTLY_HARD_SHARE:
        return HARD
    if stats.icy_share >= GOOD_ICY_SHARE or stats.mean_probability >= GOOD_MEAN:
        return GOOD
    if stats.icy_share < BAD_ICY_SHARE and stats.mean_probability < BAD_MEAN:
        return BAD
    return HARD


CATEGORY_RULES = {PAPER: paper_category, CONSERVATIVE: conservative_category}
DEFAULT_CATEGORY_RULE = PAPER


def check_category_rule(rule: str) -> None:
    if rule not in CATEGORY_RULES:
        raise EngineError(f"Unknown image category rule '{rule}'. Use one of: {', '.join(CATEGORY_RULES)} (the paper's is '{PAPER}').")


def image_category(stats: ImageStats, rule: str = DEFAULT_CATEGORY_RULE) -> str:
    """good / hard to identify / bad by the named rule."""
    check_category_rule(rule)
    return CATEGORY_RULES[rule](stats)

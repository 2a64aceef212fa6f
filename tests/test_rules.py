"""model.rules: the paper's chunk classes and our image categories, table-driven, boundaries exact."""

import pytest

from model import rules
from model.rules import BAD, GOOD, HARD, ICY, NOT_ICY, ImageStats, chunk_class, image_category, image_stats


@pytest.mark.parametrize(
    "p, expected",
    [
        (0.0, NOT_ICY),
        (0.39999999, NOT_ICY),
        (0.4, HARD),  # hard to identify from 0.4 inclusive
        (0.5, HARD),
        (0.59999999, HARD),
        (0.6, ICY),  # icy from 0.6 inclusive
        (0.95, ICY),
        (1.0, ICY),
    ],
)
def test_chunk_class_paper_thresholds(p, expected):
    assert chunk_class(p) == expected


def test_paper_thresholds_are_the_defaults():
    assert (rules.ICY_THRESHOLD, rules.HARD_LOW) == (0.6, 0.4)


@pytest.mark.parametrize(
    "p, icy, hard_low, expected",
    [
        (0.7, 0.8, 0.3, HARD),
        (0.8, 0.8, 0.3, ICY),
        (0.29, 0.8, 0.3, NOT_ICY),
        (0.5, 0.5, 0.5, ICY),  # no hard band when both thresholds coincide
        (0.49, 0.5, 0.5, NOT_ICY),
    ],
)
def test_chunk_class_custom_thresholds(p, icy, hard_low, expected):
    assert chunk_class(p, icy, hard_low) == expected


def test_image_stats_counts_and_means():
    stats = image_stats([0.1, 0.4, 0.6, 0.9, 0.59])
    assert stats == ImageStats(chunks=5, icy_chunks=2, hard_chunks=2, mean_probability=pytest.approx(0.518), max_probability=0.9)
    assert stats.icy_share == pytest.approx(0.4)
    assert stats.hard_share == pytest.approx(0.4)


def test_image_stats_of_no_chunks():
    stats = image_stats([])
    assert (stats.chunks, stats.icy_chunks, stats.hard_chunks, stats.mean_probability, stats.max_probability) == (0, 0, 0, 0.0, 0.0)
    assert stats.icy_share == 0.0 and stats.hard_share == 0.0


def stats(chunks, icy, hard, mean, maximum=1.0):
    return ImageStats(chunks=chunks, icy_chunks=icy, hard_chunks=hard, mean_probability=mean, max_probability=maximum)


@pytest.mark.parametrize(
    "case, image, expected",
    [
        ("empty image", stats(0, 0, 0, 0.0, 0.0), BAD),
        ("mostly hard (exactly half)", stats(100, 40, 50, 0.55), HARD),
        ("mostly hard wins over a high icy share", stats(10, 4, 6, 0.6), HARD),
        ("good by share, exactly 10 %", stats(100, 10, 0, 0.2), GOOD),
        ("just below the good share, mean low", stats(1000, 99, 0, 0.2), HARD),
        ("good by mean, exactly 0.5", stats(100, 0, 10, 0.5), GOOD),
        ("just below the good mean", stats(100, 5, 10, 0.4999), HARD),
        ("bad: few icy, low mean", stats(100, 1, 3, 0.1), BAD),
        ("bad needs both: icy share exactly 2 %", stats(100, 2, 0, 0.1), HARD),
        ("bad needs both: mean exactly 0.3", stats(100, 0, 0, 0.3), HARD),
        ("just below both bad limits", stats(1000, 19, 0, 0.2999), BAD),
        ("hard share just below one half", stats(100, 0, 49, 0.45), HARD),
        ("hard share just below one half, low mean", stats(1000, 0, 499, 0.1), BAD),
        ("single icy chunk", stats(1, 1, 0, 0.9), GOOD),
        ("single not icy chunk", stats(1, 0, 0, 0.05), BAD),
    ],
)
def test_image_category(case, image, expected):
    assert image_category(image) == expected, case


@pytest.mark.parametrize(
    "probabilities, expected",
    [
        ([0.05] * 50, BAD),
        ([0.05] * 45 + [0.9] * 5, GOOD),  # 10 % icy
        ([0.5] * 30 + [0.1] * 20, HARD),  # 60 % hard
        ([0.35] * 50, HARD),  # nothing icy, mean 0.35: between bad and good
        ([0.65] + [0.1] * 49, HARD),  # 2 % icy: not bad
        ([0.65] + [0.1] * 99, BAD),  # 1 % icy, mean 0.1055
    ],
)
def test_image_category_from_probabilities(probabilities, expected):
    assert image_category(image_stats(probabilities)) == expected

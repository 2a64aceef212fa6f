"""model.rules: the paper's chunk classes and image categories, and the conservative rule, table-driven, boundaries exact."""

import pytest

from model import rules
from model.errors import EngineError
from model.rules import BAD, GOOD, HARD, ICY, NOT_ICY, ImageStats, chunk_class, conservative_category, image_category, image_stats, paper_category


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


def test_the_category_is_the_one_the_stored_mean_says():
    """The summary stores the mean to 5 decimals; the category was taken from 9, so a mean stored and shown as
    0.6 was graded as above 0.6."""
    shown_as_six = image_stats([0.6000049] * 3)
    assert shown_as_six.mean_probability == 0.6 and paper_category(shown_as_six) == HARD
    above = image_stats([0.6000051] * 3)
    assert above.mean_probability == 0.60001 and paper_category(above) == GOOD


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
def test_conservative_category(case, image, expected):
    assert conservative_category(image) == expected == image_category(image, "conservative"), case


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
def test_conservative_category_from_probabilities(probabilities, expected):
    assert image_category(image_stats(probabilities), "conservative") == expected


# --- the paper's rule: one table per sentence of its section 5 ---------------------------------------


def paper_cases(*cases):
    return pytest.mark.parametrize("case, image, expected", cases, ids=[c[0] for c in cases])


# "good if the mean is above 60 % with more than half of the chunks at least 60 %"
@paper_cases(
    ("6 of 10 icy, mean 0.7", stats(10, 6, 0, 0.7), GOOD),
    ("6 of 10 icy, mean just above 0.6", stats(10, 6, 0, 0.6001), GOOD),
    ("6 of 10 icy, mean exactly 0.6: not above", stats(10, 6, 0, 0.6), HARD),
    ("a one-chunk image, icy", stats(1, 1, 0, 0.9), GOOD),
    ("2 of 3 icy", stats(3, 2, 0, 0.61), GOOD),
    ("all icy, many hard chunks do not matter", stats(10, 10, 0, 0.95), GOOD),
)
def test_paper_good_when_mostly_icy(case, image, expected):
    assert paper_category(image) == expected, case


# "with icy chunks fewer than half, good if the mean is above 20 %"
@paper_cases(
    ("10 of 100 icy, mean 0.25", stats(100, 10, 0, 0.25), GOOD),
    ("49 of 100 icy, mean 0.21", stats(100, 49, 0, 0.21), GOOD),
    ("2 of 100 icy, mean just above 0.2", stats(100, 2, 60, 0.2001), GOOD),
    ("mean exactly 0.2: not above", stats(100, 10, 0, 0.2), HARD),
    ("exactly half icy goes by this sentence", stats(100, 50, 0, 0.55), GOOD),
    ("exactly half of 4, mean 0.5", stats(4, 2, 0, 0.5), GOOD),
)
def test_paper_good_with_fewer_icy_chunks(case, image, expected):
    assert paper_category(image) == expected, case


# "hard to identify if more than half are icy and the mean is between 40 and 60 %"
@paper_cases(
    ("6 of 10 icy, mean 0.5", stats(10, 6, 0, 0.5), HARD),
    ("mean exactly 0.6", stats(10, 6, 0, 0.6), HARD),
    ("mean exactly 0.4", stats(10, 6, 0, 0.4), HARD),
    ("51 of 100 icy, mean 0.45", stats(100, 51, 0, 0.45), HARD),
    ("gap: mostly icy, mean under 0.4 is checked by hand", stats(10, 6, 0, 0.36), HARD),
)
def test_paper_hard_when_mostly_icy(case, image, expected):
    assert paper_category(image) == expected, case


# "hard to identify if fewer than half but more than 1 chunk are icy and the mean is at least 1 %"
@paper_cases(
    ("2 of 100 icy, mean 0.1", stats(100, 2, 0, 0.1), HARD),
    ("2 of 100 icy, mean exactly 0.01", stats(100, 2, 0, 0.01), HARD),
    ("20 of 100 icy, mean exactly 0.2", stats(100, 20, 0, 0.2), HARD),
    ("one icy chunk is not more than 1", stats(100, 1, 0, 0.15), BAD),
    ("no icy chunk, however high the mean", stats(100, 0, 90, 0.3), BAD),
    ("one icy chunk of 2 (exactly half)", stats(2, 1, 0, 0.5), BAD),
)
def test_paper_hard_with_fewer_icy_chunks(case, image, expected):
    assert paper_category(image) == expected, case


# "anything under the minimum is bad"
@paper_cases(
    ("2 icy chunks, mean just under 1 %", stats(100, 2, 0, 0.0099), BAD),
    ("icy chunks, mean 0.03 % (the paper's missed image)", stats(1000, 3, 0, 0.0003), BAD),
    ("nothing icy, mean 0", stats(100, 0, 0, 0.0), BAD),
    ("no chunks", stats(0, 0, 0, 0.0, 0.0), BAD),
)
def test_paper_bad_under_the_minimum(case, image, expected):
    assert paper_category(image) == expected, case


@pytest.mark.parametrize(
    "probabilities, expected",
    [
        ([0.9] * 6 + [0.5] * 4, GOOD),  # 6 of 10 icy, mean 0.74
        ([0.65] * 6 + [0.0] * 4, HARD),  # 6 of 10 icy, mean 0.39
        ([0.9] * 2 + [0.15] * 18, GOOD),  # 2 of 20 icy, mean 0.225
        ([0.9] * 2 + [0.1] * 18, HARD),  # 2 of 20 icy, mean 0.18
        ([0.9] * 2 + [0.01] * 98, HARD),  # 2 of 100 icy, mean 0.0278
        ([0.9] + [0.5] * 99, BAD),  # 1 icy of 100, mean 0.5
        ([0.6] * 2 + [0.0] * 198, BAD),  # 2 icy of 200, mean 0.006
        ([0.6] * 2 + [0.1] * 8, HARD),  # 2 of 10 icy, mean 0.2 (summed as 0.20000000000000004): not above 20 %
    ],
)
def test_paper_category_from_probabilities(probabilities, expected):
    assert image_category(image_stats(probabilities)) == expected


def test_a_chunk_is_classed_by_the_probability_its_layer_shows_as_the_summary_counts_it():
    """0.599996 is 0.6 in the layer: it had been 'hard to identify' there and icy in the image's counts."""
    from types import SimpleNamespace

    from model import inference
    from model.grid import ChunkWindow

    info = SimpleNamespace(image_id="scene", geotransform=(0.0, 1.0, 0.0, 0.0, 0.0, -1.0))
    row = inference.chunk_row(info, ChunkWindow(0, 0, 0, 0, 0, 64, 64), 1.0, 1.0, 0.599996, inference.DetectOptions())
    assert row["probability"] == 0.6 and row["class"] == rules.chunk_class(0.6) == ICY
    assert image_stats([row["probability"]]).icy_chunks == 1


def test_paper_counts_icy_chunks_at_the_detection_threshold():
    probabilities = [0.55] * 6 + [0.1] * 4  # icy at 0.5, not at 0.6; mean 0.37
    assert image_category(image_stats(probabilities)) == BAD
    assert image_category(image_stats(probabilities, icy_threshold=0.5, hard_low=0.3)) == HARD


def test_the_paper_rule_is_the_default_and_unknown_rules_are_refused():
    assert rules.DEFAULT_CATEGORY_RULE == "paper" and set(rules.CATEGORY_RULES) == {"paper", "conservative"}
    image = stats(100, 10, 0, 0.1)
    assert (image_category(image), image_category(image, "paper"), image_category(image, "conservative")) == (HARD, HARD, GOOD)
    with pytest.raises(EngineError, match="Unknown image category rule 'strict'.*paper, conservative"):
        image_category(image, "strict")


def test_detect_refuses_an_unknown_rule_before_reading_anything(tmp_path):
    from model.inference import DetectOptions, detect

    with pytest.raises(EngineError, match="Unknown image category rule 'strict'"):
        detect(str(tmp_path / "not-read.tif"), str(tmp_path / "not-read.hiriseice"), DetectOptions(category_rule="strict"))


def test_equal_thresholds_are_taken_for_two_classes():
    """ICY_THRESHOLD equal to HARD_LOW is how a geologist asks for icy / not icy alone: no chunk is hard to identify."""
    rules.check_thresholds(0.5, 0.5)
    assert [rules.chunk_class(p, 0.5, 0.5) for p in (0.49, 0.5, 0.51)] == ["not icy", "icy", "icy"]


@pytest.mark.parametrize("icy, hard", [(2.0, 0.4), (0.6, -0.5), (-0.5, -1.0), (1.5, 1.2)])
def test_thresholds_outside_0_1_are_refused(icy, hard):
    """Given by an expression (a batch row, a model input) or on the worker's command line, no parameter range held them:
    ICY_THRESHOLD 2 graded every image with no icy chunk, silently."""
    with pytest.raises(EngineError, match=r"is -?[0-9.]+, but it is a probability: give a value from 0 to 1"):
        rules.check_thresholds(icy, hard)

"""model.metrics and model.calibration against independent computations."""

import itertools
import math

import numpy as np
import pytest

from model import calibration, metrics


def brute_force_auc(scores, labels):
    """P(score of a random icy chunk > score of a random not-icy one), ties counting one half."""
    positives = [s for s, y in zip(scores, labels) if y]
    negatives = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(positives, negatives))
    return wins / (len(positives) * len(negatives))


@pytest.mark.parametrize("seed", range(8))
def test_roc_auc_equals_pairwise_count(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 80))
    labels = rng.integers(0, 2, n)
    labels[0], labels[1] = 0, 1  # both classes
    # coarse scores: many ties
    scores = np.round(rng.random(n) * 0.6 + 0.3 * labels, 1)
    assert metrics.roc_auc(scores, labels) == pytest.approx(brute_force_auc(scores, labels), abs=1e-12)


@pytest.mark.parametrize(
    "scores, labels, expected",
    [
        ([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], 1.0),
        ([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1], 0.0),
        ([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1], 0.5),
        ([0.3, 0.6, 0.6, 0.9], [0, 0, 1, 1], 0.875),
    ],
)
def test_roc_auc_small_cases(scores, labels, expected):
    assert metrics.roc_auc(scores, labels) == pytest.approx(expected)


@pytest.mark.parametrize("labels", [[0, 0, 0], [1, 1], []])
def test_roc_auc_is_nan_with_a_single_class(labels):
    assert math.isnan(metrics.roc_auc([0.2] * len(labels), labels))


def test_confusion_and_summary():
    p = [0.1, 0.6, 0.55, 0.9, 0.3, 0.7]
    y = [0, 0, 1, 1, 1, 0]
    assert metrics.confusion(p, y, 0.5) == {"true_positive": 2, "false_positive": 2, "true_negative": 1, "false_negative": 1}
    assert metrics.confusion(p, y, 0.6) == {"true_positive": 1, "false_positive": 2, "true_negative": 1, "false_negative": 2}
    s = metrics.summary(p, y, 0.5)
    assert s["accuracy"] == pytest.approx(3 / 6)
    assert s["precision"] == pytest.approx(2 / 4)
    assert s["recall"] == pytest.approx(2 / 3)
    assert s["false_positive_rate"] == pytest.approx(2 / 3)
    assert s["roc_auc"] == pytest.approx(brute_force_auc(p, y))
    assert s["threshold"] == 0.5


def test_summary_without_predicted_positives_has_nan_precision():
    s = metrics.summary([0.1, 0.2], [0, 1], 0.5)
    assert math.isnan(s["precision"]) and s["recall"] == 0.0


def grouped_scores(n_groups, per_group, separation, seed):
    rng = np.random.default_rng(seed)
    labels = np.tile([0, 1], n_groups * per_group // 2)
    scores = rng.normal(0.0, 1.0, len(labels)) + separation * labels
    groups = np.repeat([f"obs{i}" for i in range(n_groups)], per_group)
    return scores, labels, groups


def test_bootstrap_roc_auc_brackets_the_estimate_and_narrows_with_more_observations():
    scores, labels, groups = grouped_scores(10, 20, 1.5, 0)
    few = metrics.bootstrap_roc_auc(scores, labels, groups, resamples=300, seed=1)
    assert few["groups"] == 10 and few["resamples"] == 300
    assert few["low"] < metrics.roc_auc(scores, labels) < few["high"]
    assert metrics.bootstrap_roc_auc(scores, labels, groups, resamples=300, seed=1) == few  # seeded
    scores, labels, groups = grouped_scores(160, 20, 1.5, 0)
    many = metrics.bootstrap_roc_auc(scores, labels, groups, resamples=300, seed=1)
    assert many["high"] - many["low"] < 0.5 * (few["high"] - few["low"])


def test_bootstrap_roc_auc_resamples_whole_groups():
    """One perfectly separated group and one inverted: each resample holds whole groups, so the
    AUC takes only the values of the two groups alone or mixed, never a split group's."""
    scores = np.array([0.0, 1.0, 1.0, 0.0])
    labels = np.array([0, 1, 0, 1])
    groups = np.array(["good", "good", "inverted", "inverted"])
    interval = metrics.bootstrap_roc_auc(scores, labels, groups, resamples=200, seed=3)
    assert interval["low"] == 0.0 and interval["high"] == 1.0


def test_bootstrap_roc_auc_never_splits_a_group():
    """Each group alone is perfectly ranked, but on its own scale: resampling whole groups keeps every group's pair of
    chunks together, so the AUC never falls below 0.75 ((k^2 + km + m^2) / (k + m)^2 for k and m copies of the two);
    resampling chunks one by one would pair group B's icy chunk with group A's bare one and reach 0."""
    scores = np.array([0.6, 0.7, 0.1, 0.2])
    labels = np.array([0, 1, 0, 1])
    groups = np.array(["A", "A", "B", "B"])
    interval = metrics.bootstrap_roc_auc(scores, labels, groups, resamples=300, seed=5, level=0.99)
    assert interval["low"] >= 0.75 - 1e-9 and interval["high"] == 1.0, interval


def test_bootstrap_roc_auc_with_a_single_class_is_nan():
    interval = metrics.bootstrap_roc_auc([0.1, 0.2], [0, 0], ["a", "b"], resamples=20)
    assert math.isnan(interval["low"]) and interval["resamples"] == 0


def test_sigmoid_is_stable_for_large_logits():
    z = np.array([-1000.0, -30.0, 0.0, 30.0, 1000.0])
    p = calibration.sigmoid(z)
    assert np.all(np.isfinite(p))
    assert p[2] == 0.5 and p[0] == 0.0 and p[-1] == 1.0
    assert p[1] == pytest.approx(1 / (1 + math.exp(30)), rel=1e-9)


@pytest.mark.parametrize("a, b", [(2.0, -0.5), (0.5, 1.0), (-1.5, 0.3)])
def test_fit_platt_recovers_known_parameters(a, b):
    rng = np.random.default_rng(1)
    logits = rng.normal(0.0, 2.0, 40000)
    labels = (rng.random(logits.size) < 1.0 / (1.0 + np.exp(-(a * logits + b)))).astype(int)
    fitted = calibration.fit_platt(logits, labels)
    assert fitted["method"] == "platt"
    assert fitted["a"] == pytest.approx(a, abs=0.06)
    assert fitted["b"] == pytest.approx(b, abs=0.06)


def test_platt_scaling_fixes_an_overconfident_model_and_keeps_the_ranking():
    rng = np.random.default_rng(2)
    true_logits = rng.normal(0.0, 1.5, 5000)
    labels = (rng.random(true_logits.size) < calibration.sigmoid(true_logits)).astype(int)
    overconfident = 4.0 * true_logits  # what a network trained too long says
    fitted = calibration.fit_platt(overconfident, labels)
    raw = calibration.apply(overconfident, None)
    calibrated = calibration.apply(overconfident, fitted)
    assert calibration.expected_calibration_error(calibrated, labels) < 0.03 < calibration.expected_calibration_error(raw, labels)
    assert metrics.roc_auc(calibrated, labels) == pytest.approx(metrics.roc_auc(raw, labels))


def test_a_calibration_moved_to_a_survey_share_is_judged_at_that_share():
    """with_prior makes the probabilities right for a survey with another share of icy chunks;
    the test set's own share then reads as miscalibration unless its examples are weighted."""
    rng = np.random.default_rng(3)
    true_logits = rng.normal(0.0, 2.0, 20000)
    labels = (rng.random(true_logits.size) < calibration.sigmoid(true_logits)).astype(int)
    share, survey = labels.mean(), 0.15
    weights = calibration.prior_weights(labels, survey)
    assert np.average(labels, weights=weights) == pytest.approx(survey)
    moved = calibration.apply(true_logits, calibration.with_prior({"method": "platt", "a": 1.0, "b": 0.0}, share, survey))
    assert calibration.expected_calibration_error(moved, labels, weights=weights) < 0.02 < 0.1 < calibration.expected_calibration_error(moved, labels)
    unmoved = calibration.sigmoid(true_logits)
    assert calibration.expected_calibration_error(unmoved, labels) < 0.02 < 0.1 < calibration.expected_calibration_error(unmoved, labels, weights=weights)


def test_apply_rejects_an_unknown_method():
    with pytest.raises(ValueError):
        calibration.apply([0.0], {"method": "isotonic"})


def test_reliability_bins():
    p = [0.0, 0.05, 0.1, 0.15, 0.55, 0.95, 1.0, 1.0]
    y = [0, 0, 1, 0, 1, 1, 1, 0]
    table = calibration.reliability(p, y, bins=10)
    assert len(table) == 10
    assert [row["low"] for row in table] == pytest.approx([i / 10 for i in range(10)])
    assert [row["high"] for row in table] == pytest.approx([(i + 1) / 10 for i in range(10)])
    counts = [row["count"] for row in table]
    # 0.1 opens the second bin; 1.0 belongs to the last bin
    assert counts == [2, 2, 0, 0, 0, 1, 0, 0, 0, 3]
    assert table[0]["mean_predicted"] == pytest.approx(0.025) and table[0]["observed"] == 0.0
    assert table[1]["mean_predicted"] == pytest.approx(0.125) and table[1]["observed"] == 0.5
    assert table[9]["mean_predicted"] == pytest.approx((0.95 + 1.0 + 1.0) / 3) and table[9]["observed"] == pytest.approx(2 / 3)
    assert table[2]["mean_predicted"] is None and table[2]["observed"] is None


def test_expected_calibration_error_by_hand():
    p = [0.0, 0.05, 0.1, 0.15, 0.55, 0.95, 1.0, 1.0]
    y = [0, 0, 1, 0, 1, 1, 1, 0]
    by_hand = (2 * abs(0.025 - 0.0) + 2 * abs(0.125 - 0.5) + 1 * abs(0.55 - 1.0) + 3 * abs(2.95 / 3 - 2 / 3)) / 8
    assert calibration.expected_calibration_error(p, y) == pytest.approx(by_hand)


def test_expected_calibration_error_extremes():
    rng = np.random.default_rng(3)
    p = rng.random(200000)
    y = (rng.random(p.size) < p).astype(int)
    assert calibration.expected_calibration_error(p, y) < 0.01  # calibrated by construction
    assert calibration.expected_calibration_error([0.9] * 10, [0] * 10) == pytest.approx(0.9)
    assert calibration.expected_calibration_error([], []) == 0.0


def test_with_prior_moves_the_odds_by_the_change_of_prior_and_keeps_the_ranking():
    fitted = {"method": "platt", "a": 1.5, "b": 0.2}
    moved = calibration.with_prior(fitted, 0.5, 0.2)
    logits = np.linspace(-4, 4, 9)
    before, after = calibration.apply(logits, fitted), calibration.apply(logits, moved)
    odds = lambda p: p / (1 - p)  # noqa: E731
    assert np.allclose(odds(after) / odds(before), 0.25)  # 0.2 / 0.8 against 0.5 / 0.5
    assert np.all(np.diff(after) > 0) and moved["a"] == fitted["a"]
    assert moved["prior"] == {"fitted_share": 0.5, "prior": 0.2}
    assert calibration.apply(logits, calibration.with_prior(fitted, 0.3, 0.3)) == pytest.approx(before)


def test_the_recipe_moves_a_calibration_to_the_survey_share_once():
    """A warm start that kept its base's calibration (already at the survey's share) is moved from
    the fitted share, never twice: moved twice, a warm start's held-out ECE rose from 0.12 to 0.24
    and its recall on drawn-caster ice fell from 0.72 to 0.47."""
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
    import default_model

    meta = {"calibration": {"method": "platt", "a": 1.2, "b": 0.1}, "metrics": {"validation_icy": 50, "validation_chunks": 100}}
    survey = {"prior": 0.2, "requested": 0.2, "max_false_alarms": 0.05, "validation_crops": 10}
    default_model._move_to_prior(meta, survey)
    once = dict(meta["calibration"])
    assert once["b"] == pytest.approx(0.1 + math.log(0.25)) and once["prior"] == {"fitted_share": 0.5, **survey}
    default_model._move_to_prior(meta, survey)  # moved back to the validation share first, then to the survey's
    assert meta["calibration"]["b"] == pytest.approx(once["b"], abs=1e-12) and meta["calibration"]["prior"] == once["prior"]
    lower = dict(survey, prior=0.1)  # a bound on false alarms lowers the share: moved from the fitted share, not from 0.2
    default_model._move_to_prior(meta, lower)
    assert meta["calibration"]["b"] == pytest.approx(0.1 + math.log(0.1 / 0.9))


def test_the_intercept_shift_that_calls_at_most_so_many_icy():
    scores = np.array([0.5, -3.0, 2.0, -1.0])
    for allowed in range(4):
        shift = calibration.shift_calling_at_most(scores, allowed)
        assert int((scores + shift >= 0).sum()) == allowed and int((scores + shift + 1e-5 >= 0).sum()) == allowed + 1
    assert calibration.shift_calling_at_most(scores, 4) == math.inf  # all may be called icy: no bound


def test_a_training_runs_calibration_is_judged_at_the_survey_share_it_was_moved_to():
    """The training report judged a calibration moved to a survey's 14 % of icy chunks on half-icy validation chunks: a
    calibration exact for the survey read as 16 times worse than none (the shipped model's 0.024 reported as 0.138)."""
    from model import training

    # raw probabilities exact at the validation share (half icy): 80 of 100 chunks at 0.8 are icy, 20 of 100 at 0.2
    logits = np.log(np.array([0.8 / 0.2] * 100 + [0.2 / 0.8] * 100))
    labels = np.array([1] * 80 + [0] * 20 + [1] * 20 + [0] * 80, np.float32)
    moved = calibration.with_prior(calibration.identity(), 0.5, 0.14)  # Bayes' shift to a survey's share
    evaluation = training._evaluation(logits, labels, moved, {}, {"validation_groups": ["a"]}, {"epoch": 1, "loss": 0.5})
    assert evaluation["ece_icy_share"] == 0.14
    assert evaluation["ece_calibrated"] == pytest.approx(0.0, abs=1e-9)  # exact where it is meant to be used
    assert evaluation["ece_uncalibrated"] == pytest.approx(0.2304)  # the raw network's half-icy probabilities, in a survey of 14 % icy chunks
    assert sum(row["count"] for row in evaluation["reliability"]) == pytest.approx(200.0)
    none = training._evaluation(logits, labels, None, {}, {"validation_groups": ["a"]}, {"epoch": 1, "loss": 0.5})
    assert none["ece_icy_share"] == 0.5 and none["ece_calibrated"] == pytest.approx(0.0, abs=1e-9)

"""Probability calibration (Platt scaling on the logit) and the statistics that judge it.

A network trained with class weights and early stopping is over- or under-confident; Platt
scaling fits p = sigmoid(a * logit + b) on held-out chunks by maximum likelihood, which keeps
the ranking (ROC AUC) and makes the reliability diagram follow the diagonal.
Pure numpy, so QGIS-side code and reports can use it.
"""

from typing import Dict, List, Optional, Sequence

import numpy as np


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, np.float64)))


def log_odds(logits: np.ndarray, calibration: Optional[Dict]) -> np.ndarray:
    """The calibrated log-odds a * logit + b (the logits themselves without a calibration)."""
    logits = np.asarray(logits, np.float64)
    if not calibration:
        return logits
    if calibration.get("method") != "platt":
        raise ValueError(f"unknown calibration {calibration.get('method')!r}")
    return calibration["a"] * logits + calibration["b"]


def identity() -> Dict:
    """Platt scaling that changes nothing (the raw sigmoid), for a model without a calibration
    whose intercept is to be moved."""
    return {"method": "platt", "a": 1.0, "b": 0.0}


def apply(logits: np.ndarray, calibration: Optional[Dict]) -> np.ndarray:
    return sigmoid(log_odds(logits, calibration))


def shift_calling_at_most(scores: Sequence[float], allowed: int) -> float:
    """The largest change of the intercept b after which at most ``allowed`` of these calibrated
    log-odds (a * logit + b) reach 0, i.e. p >= 0.5; +inf when all of them may."""
    ordered = np.sort(np.asarray(scores, np.float64))
    if allowed >= len(ordered):
        return float("inf")
    return -float(ordered[len(ordered) - allowed - 1]) - 1e-6


def with_prior(calibration: Dict, fitted_share: float, prior: float) -> Dict:
    """The Platt scaling fitted where a share ``fitted_share`` of the chunks was icy, moved to a
    survey where ``prior`` is (Bayes: the log-odds shift by the change of prior odds). A balanced
    training set would otherwise call far too many ice-free chunks icy in a real survey."""
    shift = float(np.log(prior / (1.0 - prior)) - np.log(fitted_share / (1.0 - fitted_share)))
    return dict(calibration, b=float(calibration["b"]) + shift, prior={"fitted_share": float(fitted_share), "prior": float(prior)})


def _platt_loss(a: float, b: float, z: np.ndarray, target: np.ndarray) -> float:
    """Negative log-likelihood of sigmoid(a * z + b) against the (smoothed) targets, overflow-free."""
    t = a * z + b
    return float(np.sum(np.logaddexp(0.0, t) - target * t))


def fit_platt(logits: Sequence[float], labels: Sequence[int], iterations: int = 100) -> Dict:
    """Newton's method with a backtracking line search on the logistic log-likelihood, with
    Platt's smoothed targets against overfitting (Lin, Lin & Weng 2007). Plain Newton steps
    from a = 1 diverge for strongly over-confident or inverted logits."""
    z = np.asarray(logits, np.float64)
    y = np.asarray(labels, np.float64)
    positives, negatives = y.sum(), len(y) - y.sum()
    target = np.where(y > 0.5, (positives + 1) / (positives + 2), 1 / (negatives + 2))
    a, b = 0.0, float(np.log((positives + 1) / (negatives + 1)))
    loss = _platt_loss(a, b, z, target)
    for _ in range(iterations):
        p = sigmoid(a * z + b)
        w = np.maximum(p * (1 - p), 1e-12)
        grad = np.array([np.sum((p - target) * z), np.sum(p - target)])
        hess = np.array([[np.sum(w * z * z), np.sum(w * z)], [np.sum(w * z), np.sum(w)]]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        scale = 1.0
        while scale > 1e-10:
            new_a, new_b = a - scale * step[0], b - scale * step[1]
            new_loss = _platt_loss(new_a, new_b, z, target)
            if new_loss <= loss - 1e-4 * scale * float(grad @ step):
                break
            scale /= 2.0
        else:
            break  # no step decreases the loss: converged as far as floating point allows
        a, b, loss = new_a, new_b, new_loss
        if np.abs(scale * step).max() < 1e-9:
            break
    return {"method": "platt", "a": float(a), "b": float(b)}


def cross_validated(logits: Sequence[float], labels: Sequence[int], folds: int = 5) -> np.ndarray:
    """Each chunk's probability from a Platt fit on the other folds (stratified, fixed order):
    what a fit does on chunks it did not see. Judged on the chunks it was fitted on, a fit always
    looks at least as good, whatever it does elsewhere."""
    z = np.asarray(logits, np.float64)
    y = np.asarray(labels)
    fold = np.zeros(len(y), int)
    for value in (0, 1):
        members = np.flatnonzero(y == value)
        fold[members] = np.arange(len(members)) % folds
    out = np.zeros(len(y))
    for k in range(folds):
        held = fold == k
        out[held] = apply(z[held], fit_platt(z[~held], y[~held]))
    return out


def prior_weights(labels: Sequence[int], prior: float) -> np.ndarray:
    """Per-example weights under which a share ``prior`` of these examples is icy (importance
    weights for a change of class prior): a calibration moved to a survey's share (with_prior) is
    judged on a test set of another share as the survey would meet it."""
    y = np.asarray(labels, np.float64)
    share = y.mean()
    return np.where(y > 0.5, prior / share, (1.0 - prior) / (1.0 - share))


def reliability(probabilities: Sequence[float], labels: Sequence[int], bins: int = 10, weights: Optional[Sequence[float]] = None) -> List[Dict]:
    """Per probability bin: mean predicted probability, observed icy share, count (each example
    counted with its weight, when given)."""
    p = np.asarray(probabilities, np.float64)
    y = np.asarray(labels, np.float64)
    w = np.ones_like(p) if weights is None else np.asarray(weights, np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    table = []
    for i in range(bins):
        members = index == i
        n = float(w[members].sum())
        table.append(
            {
                "low": float(edges[i]),
                "high": float(edges[i + 1]),
                "count": int(members.sum()) if weights is None else n,
                "mean_predicted": float(np.average(p[members], weights=w[members])) if n else None,
                "observed": float(np.average(y[members], weights=w[members])) if n else None,
            }
        )
    return table


def expected_calibration_error(probabilities: Sequence[float], labels: Sequence[int], bins: int = 10, weights: Optional[Sequence[float]] = None) -> float:
    table = reliability(probabilities, labels, bins, weights)
    total = sum(row["count"] for row in table)
    return float(sum(row["count"] * abs(row["mean_predicted"] - row["observed"]) for row in table if row["count"]) / max(total, 1e-12))

"""Classification metrics in plain numpy, for training reports and model cards."""

from typing import Dict, Sequence

import numpy as np


def roc_auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Mann-Whitney estimate with tied scores counted half; NaN with a single class or a score that is not a number."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0 or np.isnan(s).any():
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), np.float64)
    sorted_scores = s[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_auc_standard_error(auc: float, n_pos: int, n_neg: int) -> float:
    """Hanley and McNeil's (1982) standard error of a ROC AUC measured on n_pos positives and n_neg negatives: how far two
    equally good models' AUCs on the same few chunks may differ by the luck of which chunks they are. NaN without both."""
    if not (n_pos > 0 and n_neg > 0 and 0.0 <= auc <= 1.0):
        return float("nan")
    q1, q2 = auc / (2.0 - auc), 2.0 * auc * auc / (1.0 + auc)
    variance = (auc * (1.0 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)) / (n_pos * n_neg)
    return float(np.sqrt(max(variance, 0.0)))


def confusion(probabilities: Sequence[float], labels: Sequence[int], threshold: float = 0.5) -> Dict[str, int]:
    p = np.asarray(probabilities) >= threshold
    y = np.asarray(labels).astype(bool)
    return {
        "true_positive": int((p & y).sum()),
        "false_positive": int((p & ~y).sum()),
        "true_negative": int((~p & ~y).sum()),
        "false_negative": int((~p & y).sum()),
    }


def summary(probabilities: Sequence[float], labels: Sequence[int], threshold: float = 0.5) -> Dict[str, float]:
    c = confusion(probabilities, labels, threshold)
    tp, fp, tn, fn = c["true_positive"], c["false_positive"], c["true_negative"], c["false_negative"]
    total = tp + fp + tn + fn
    return dict(
        c,
        threshold=threshold,
        accuracy=(tp + tn) / total if total else float("nan"),
        precision=tp / (tp + fp) if tp + fp else float("nan"),
        recall=tp / (tp + fn) if tp + fn else float("nan"),
        false_positive_rate=fp / (fp + tn) if fp + tn else float("nan"),
        roc_auc=roc_auc(probabilities, labels),
    )


def bootstrap_roc_auc(scores: Sequence[float], labels: Sequence[int], groups: Sequence[str], resamples: int = 1000, seed: int = 0, level: float = 0.95) -> Dict[str, float]:
    """Percentile interval of the ROC AUC when whole groups (observations) are resampled with
    replacement: chunks of one observation share terrain and lighting, so resampling them one by
    one would claim more certainty than a few observations give."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels).astype(int)
    g = np.asarray(groups)
    members = [np.flatnonzero(g == key) for key in sorted(set(g.tolist()))]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        chosen = np.concatenate([members[i] for i in rng.integers(len(members), size=len(members))])
        value = roc_auc(s[chosen], y[chosen])
        if not np.isnan(value):
            values.append(value)
    if not values:
        return {"low": float("nan"), "high": float("nan"), "resamples": 0, "groups": len(members)}
    tail = (1.0 - level) / 2.0 * 100.0
    return {"low": float(np.percentile(values, tail)), "high": float(np.percentile(values, 100.0 - tail)), "resamples": len(values), "groups": len(members)}

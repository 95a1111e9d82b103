"""Classification metrics for multi-label ECG findings (numpy only), with bootstrap intervals."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def confusion(y: np.ndarray, pred: np.ndarray) -> tuple[int, int, int, int]:
    """(tp, fp, tn, fn) for binary vectors."""
    y, pred = y.astype(bool), pred.astype(bool)
    return int((y & pred).sum()), int((~y & pred).sum()), int((~y & ~pred).sum()), int((y & ~pred).sum())


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def threshold_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    tp, fp, tn, fn = confusion(y, pred)
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return {
        "precision": precision,
        "recall": recall,
        "specificity": _ratio(tn, tn + fp),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }


def auroc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve: the Mann-Whitney U statistic, ties counted half."""
    from scipy.stats import rankdata

    y = y.astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) over every threshold."""
    order = np.argsort(-score, kind="stable")
    y = y.astype(bool)[order]
    tps, fps = np.cumsum(y), np.cumsum(~y)
    return np.r_[0, fps / max(fps[-1], 1)], np.r_[0, tps / max(tps[-1], 1)]


def pr_curve(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) over every distinct threshold, highest threshold first."""
    order = np.argsort(-score, kind="stable")
    y, s = y.astype(bool)[order], score[order]
    tps, fps = np.cumsum(y), np.cumsum(~y)
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each distinct score
    return tps[last] / max(tps[-1], 1), tps[last] / (tps[last] + fps[last])


def auprc(y: np.ndarray, score: np.ndarray) -> float:
    """Average precision: sum over thresholds of (recall step) x precision (as scikit-learn)."""
    if not y.any():
        return float("nan")
    recall, precision = pr_curve(y, score)
    return float(np.sum(np.diff(np.r_[0, recall]) * precision))


def max_f1_threshold(y: np.ndarray, score: np.ndarray) -> float:
    """The threshold that maximises F1 when findings are called strictly above it (`spec.called`);
    choose it on validation data, never on the test set. One sort: O(n log n).

    Calling the exams scored >= s_k positive (s_k a distinct score, descending) is any threshold in
    [s_(k+1), s_k) under the strict rule; the midpoint is taken where it lies strictly between, so
    that no validation exam sits on the threshold, where the last bit of a float (FP16, INT8, another
    runtime) would flip its finding.
    Just below the lowest score when all are called."""
    y = np.asarray(y).astype(bool)
    score = np.asarray(score, dtype=np.float64)
    if not y.any() or score.size == 0:
        return 0.5
    order = np.argsort(-score, kind="stable")
    s, hits = score[order], y[order]
    last = np.r_[s[1:] != s[:-1], True]  # the last exam of each run of equal scores
    tp, called_n = np.cumsum(hits)[last], (np.arange(s.size) + 1)[last]
    f1 = 2 * tp / (called_n + y.sum())  # 2TP / (2TP + FP + FN)
    k = int(np.argmax(f1))
    values = s[last]
    if k + 1 == values.size:
        return float(np.nextafter(values[k], -np.inf))
    middle = (values[k] + values[k + 1]) / 2
    # Adjacent floats have no number strictly between them: the midpoint rounds onto one of them, and
    # on the upper score the strict rule would drop those exams; the lower score keeps them called.
    return float(middle if values[k + 1] < middle < values[k] else values[k + 1])


def bootstrap_ci(
    metric: Callable[[np.ndarray, np.ndarray], float], y: np.ndarray, score: np.ndarray,
    n: int = 200, seed: int = 0, level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval over exams."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n):
        idx = rng.integers(0, len(y), len(y))
        value = metric(y[idx], score[idx])
        if not np.isnan(value):
            values.append(value)
    if not values:
        return float("nan"), float("nan")
    lo, hi = np.percentile(values, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(lo), float(hi)

from __future__ import annotations

import numpy as np
import pytest

from ecg_edge.training.metrics import auprc, auroc, bootstrap_ci, max_f1_threshold, threshold_metrics


def test_threshold_metrics_by_hand():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    pred = np.array([1, 1, 0, 1, 0, 0, 0, 0])
    m = threshold_metrics(y, pred)  # tp 2, fn 1, fp 1, tn 4
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(4 / 5)
    assert m["f1"] == pytest.approx(2 / 3)


def test_auroc_by_hand():
    # Positives 0.9, 0.4; negatives 0.5, 0.1: pairs won 3 of 4.
    assert auroc(np.array([1, 1, 0, 0]), np.array([0.9, 0.4, 0.5, 0.1])) == pytest.approx(0.75)
    assert auroc(np.array([1, 0]), np.array([0.5, 0.5])) == pytest.approx(0.5)
    assert np.isnan(auroc(np.array([1, 1]), np.array([0.2, 0.3])))


def test_against_scikit_learn():
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for _ in range(5):
        y = rng.integers(0, 2, 300)
        score = np.round(rng.random(300) * 0.6 + y * 0.3, 2)  # rounding makes ties
        assert auroc(y, score) == pytest.approx(sklearn.roc_auc_score(y, score))
        assert auprc(y, score) == pytest.approx(sklearn.average_precision_score(y, score))
        pred = score >= 0.5
        m = threshold_metrics(y, pred)
        assert m["f1"] == pytest.approx(sklearn.f1_score(y, pred))
        assert m["precision"] == pytest.approx(sklearn.precision_score(y, pred))
        assert m["recall"] == pytest.approx(sklearn.recall_score(y, pred))


def test_max_f1_threshold_and_bootstrap():
    y = np.array([0, 0, 0, 1, 1, 1])
    score = np.array([0.1, 0.2, 0.35, 0.3, 0.8, 0.9])
    # called strictly above: between 0.2 and 0.3 calls 0.3, 0.35, 0.8, 0.9 (F1 6/7), the best split; the
    # midpoint keeps every validation exam off the threshold
    assert max_f1_threshold(y, score) == pytest.approx(0.25)
    rng = np.random.default_rng(3)
    for _ in range(20):  # against brute force over every threshold that changes the calls, ties included
        yy = rng.random(60) < 0.3
        ss = np.round(rng.random(60), 1)
        candidates = [*np.unique(ss), ss.min() - 1]
        best = max(threshold_metrics(yy, ss > t)["f1"] for t in candidates)
        assert threshold_metrics(yy, ss > max_f1_threshold(yy, ss))["f1"] == pytest.approx(best)
    lo, hi = bootstrap_ci(auroc, np.tile(y, 20), np.tile(score, 20), n=100)
    assert lo <= auroc(y, score) <= hi and hi - lo < 0.3


def test_max_f1_threshold_between_adjacent_floats():
    """0.82 and 0.52 + 0.3 are adjacent floats: their midpoint rounds onto one of them, and the
    threshold must still call exactly the exams it was chosen for."""
    from ecg_edge.spec import called

    upper, lower = 0.52 + 0.3, 0.82
    assert np.nextafter(lower, 1.0) == upper
    for y, score in (([1, 0, 0], [upper, lower, 0.1]), ([1, 1, 0], [upper, lower, 0.1])):
        y, score = np.array(y), np.array(score)
        t = max_f1_threshold(y, score)
        np.testing.assert_array_equal(called(score, t), y.astype(bool))

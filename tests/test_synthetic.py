from __future__ import annotations

import csv

import h5py
import numpy as np
import pytest
from ecg_measure import heart_rate_bpm, pr_interval_ms, qrs_width_ms, rr_cv

from ecg_edge.synthetic import synthesize, write_synthetic_set


@pytest.fixture(scope="module")
def clean_and_noisy():
    clean, params = synthesize(240, seed=11, noise=False)
    noisy, _ = synthesize(240, seed=11, noise=True)
    return clean, noisy, params


def test_rate_classes_match_measured_rate(clean_and_noisy):
    _, noisy, params = clean_and_noisy
    seen = set()
    for x, p in zip(noisy, params, strict=True):
        labels = p.labels()
        if p.rhythm != "sinus":
            continue
        rate = heart_rate_bpm(x)
        assert abs(rate - p.rate_bpm) < 8
        if labels["SB"]:
            assert rate < 52
        elif labels["ST"]:
            assert rate > 98
        else:
            assert 55 < rate < 100
        seen.update(k for k in ("SB", "ST") if labels[k])
    assert seen == {"SB", "ST"}


def test_af_is_irregular(clean_and_noisy):
    _, noisy, params = clean_and_noisy
    cv = np.array([rr_cv(x) for x in noisy])
    af = np.array([p.labels()["AF"] for p in params], dtype=bool)
    assert af.sum() >= 10
    assert cv[af].min() > 0.07 > cv[~af].max()


def test_bundle_branch_blocks_widen_qrs(clean_and_noisy):
    clean, _, params = clean_and_noisy
    width = np.array([qrs_width_ms(x) for x in clean])
    bbb = np.array([p.labels()["RBBB"] or p.labels()["LBBB"] for p in params], dtype=bool)
    assert bbb.sum() >= 10
    assert width[bbb].min() > width[~bbb].max()
    assert np.median(width[bbb]) > 110 > np.median(width[~bbb])


def test_first_degree_av_block_has_long_pr(clean_and_noisy):
    clean, _, params = clean_and_noisy
    # P waves merge into the previous T wave at fast rates: measure where they are apart.
    sel = [(x, p) for x, p in zip(clean, params, strict=True) if p.rhythm == "sinus" and p.rate_bpm <= 80]
    pr = np.array([pr_interval_ms(x) for x, _ in sel])
    block = np.array([p.labels()["1dAVb"] for _, p in sel], dtype=bool)
    assert block.sum() >= 5
    assert pr[block].min() > 200 and pr[block].min() > pr[~block].max()
    assert np.abs(pr - np.array([p.pr_ms for _, p in sel])).max() < 35


def test_reproducible_and_file_matches_memory(tmp_path):
    a, pa = synthesize(20, seed=5)
    b, _ = synthesize(20, seed=5)
    c, _ = synthesize(20, seed=6)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    h5, labels = write_synthetic_set(tmp_path / "s.h5", 20, seed=5, chunk=7)
    with h5py.File(h5) as f:
        assert f["tracings"].shape == (20, 4096, 12) and f["tracings"].dtype == np.float32
        assert np.array_equal(f["tracings"][:], a)
        assert list(f["exam_id"][:]) == list(range(1, 21))
    with open(labels, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["exam_id"]) for r in rows] == list(range(1, 21))
    for row, p in zip(rows, pa, strict=True):
        assert {k: int(row[k]) for k in p.labels()} == p.labels()
    assert not list(tmp_path.glob("*.part"))


def test_every_class_and_normal_present():
    _, params = synthesize(400, seed=0)
    counts = {k: sum(p.labels()[k] for p in params) for k in params[0].labels()}
    assert all(v >= 20 for v in counts.values()), counts
    assert 0.25 < counts["normal_ecg"] / 400 < 0.55

"""Augmentation keeps what labels rest on (rate, intervals: no stretching), sample weights lift rare
classes, and the record split never puts one record on both sides."""

from __future__ import annotations

import csv

import numpy as np
import pytest

pytest.importorskip("keras")
from ecg_edge.synthetic import synthesize  # noqa: E402
from ecg_edge.training.augment import Augment, sample_weights  # noqa: E402


def _padded(n: int = 3) -> np.ndarray:
    x = synthesize(n, seed=7)[0]
    x[:, :300] = 0  # as a short recording centred in the window
    x[:, -300:] = 0
    return x


def test_shift_only_moves_the_recording_whole():
    x = _padded()
    still = Augment(scale=(1.0, 1.0), min_keep=1.0, wander_mv=0.0, noise_mv=0.0, drop_lead=0.0)
    out = still(x, np.random.default_rng(1))
    for original, moved in zip(x, out, strict=True):
        content = original[300:-300]
        start = int(np.flatnonzero(np.any(moved != 0, axis=1))[0])
        np.testing.assert_array_equal(moved[start:start + len(content)], content)  # no stretch, no change
        assert abs(start - 300) <= 200 and not moved[:start].any() and not moved[start + len(content):].any()


def test_each_change_stays_in_its_bounds_and_depends_on_the_generator():
    x = _padded(8)
    augment = Augment()
    a = augment(x, np.random.default_rng(3))
    assert a.shape == x.shape and a.dtype == np.float32
    np.testing.assert_array_equal(a, augment(x, np.random.default_rng(3)))
    assert not np.array_equal(a, augment(x, np.random.default_rng(4)))
    ratio = np.abs(a).max(axis=(1, 2)) / np.abs(x).max(axis=(1, 2))
    assert (ratio > 0.6).all() and (ratio < 1.7).all()  # scale 0.8-1.25, plus wander and noise
    dropped = Augment(drop_lead=1.0)(x, np.random.default_rng(5))
    assert ((~np.any(dropped != 0, axis=1)).sum(axis=1) == 1).all()  # exactly one lead off per exam


def test_sample_weights_lift_rare_classes():
    labels = np.zeros((100, 2))
    labels[:50, 0] = 1  # common
    labels[50:52, 1] = 1  # rare
    w = sample_weights(labels)
    assert w.mean() == pytest.approx(1.0)
    assert w[50] > w[0] and w[50] / w[99] == pytest.approx(7.0, rel=1e-6)  # sqrt(98 / 2)
    assert w[0] == pytest.approx(w[99])  # the common class's 1:1 gives no lift


def test_record_split_is_disjoint_and_independent_of_file_order(tmp_path):
    from conftest import write_code_hdf5

    from ecg_edge.spec import CLASSES
    from ecg_edge.training.data import train_validation_sequences

    x = np.zeros((20, 4096, 12), np.float32)
    ids = [f"rec{k}".encode() for k in range(20)]
    write_code_hdf5(tmp_path / "a.h5", x[:10], exam_ids=ids[:10])
    write_code_hdf5(tmp_path / "b.h5", x[10:], exam_ids=ids[10:])
    with open(tmp_path / "l.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["exam_id", *CLASSES])
        writer.writerows([[i.decode(), *(int(k % 3 == 0) for _ in CLASSES)] for k, i in enumerate(ids)])

    def held_out(files):
        train, val = train_validation_sequences(files, tmp_path / "l.csv", validation_fraction=0.25,
                                                split="record", balance=True)
        named = {str(p) for p in files}
        assert len(named) == 2
        got = {val._ids[f][r] for f, r in val.index}
        assert not got & {train._ids[f][r] for f, r in train.index} and len(got) == 5
        assert len(train[0]) == 3  # balance: (x, y, sample weight)
        return got

    assert held_out([tmp_path / "a.h5", tmp_path / "b.h5"]) == held_out([tmp_path / "b.h5", tmp_path / "a.h5"])

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("keras")
from ecg_edge.errors import InputError  # noqa: E402
from ecg_edge.synthetic import synthesize, write_synthetic_set  # noqa: E402
from ecg_edge.training.data import read_labels_csv, train_validation_sequences  # noqa: E402


def test_sequence_batches_match_file_and_labels(tmp_path):
    h5, labels_csv = write_synthetic_set(tmp_path / "s.h5", 50, seed=2)
    x_all, params = synthesize(50, seed=2)
    train, val = train_validation_sequences([h5], labels_csv, batch_size=8, validation_fraction=0.1)
    assert len(train.index) == 45 and len(val.index) == 5
    assert {r for _, r in val.index} == set(range(45, 50))  # the last exams, as the reference
    seen = []
    for i in range(len(train)):
        x, y = train[i]
        assert x.shape[1:] == (4096, 12) and y.shape[1] == 6
        for xi, yi in zip(x, y, strict=True):
            row = int(np.argmin(np.abs(x_all - xi).reshape(50, -1).max(axis=1)))
            assert np.array_equal(x_all[row], xi)
            expected = [params[row].labels()[c] for c in ("1dAVb", "RBBB", "LBBB", "SB", "AF", "ST")]
            assert list(yi) == expected
            seen.append(row)
    assert sorted(seen) == list(range(45))
    first = [r for _, r in train._order]
    train.on_epoch_end()
    assert [r for _, r in train._order] != first and sorted(first) == sorted(r for _, r in train._order)
    train.close()


def test_binary_labels_and_two_files(tmp_path):
    h5a, csv_a = write_synthetic_set(tmp_path / "a.h5", 10, seed=1)
    labels = read_labels_csv(csv_a, task="binary")
    _, params = synthesize(10, seed=1)
    assert [float(labels[str(i + 1)][0]) for i in range(10)] == [1.0 - p.labels()["normal_ecg"] for p in params]
    train, val = train_validation_sequences([h5a, h5a], csv_a, task="binary", batch_size=4)
    assert len(train.index) + len(val.index) == 20
    assert train[0][1].shape == (4, 1)


def test_bad_labels(tmp_path):
    bad = tmp_path / "l.csv"
    bad.write_text("exam_id,RBBB\n1,0\n")
    with pytest.raises(InputError, match="lacks columns 1dAVb"):
        read_labels_csv(bad)

"""Training data: a Keras `PyDataset` streaming batches from CODE-layout HDF5 files and a labels CSV."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import h5py
import keras
import numpy as np

from ecg_edge.errors import InputError
from ecg_edge.readers import hdf5_exam_count
from ecg_edge.spec import CLASSES, NORMAL_COLUMN


def read_label_matrix(path: str | Path, task: str = "six") -> tuple[list[str] | None, np.ndarray]:
    """(exam ids, labels (n, classes)) of a labels CSV: the six class columns, or 1 - `normal_ecg` for
    the binary task. Without an `exam_id` column (as CODE's gold_standard.csv) the ids are None and
    rows stand for exams in order."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        needed = list(CLASSES if task == "six" else (NORMAL_COLUMN,))
        missing = [c for c in needed if c not in fields]
        if missing:
            raise InputError(path, f"labels CSV lacks columns {', '.join(missing)}")
        ids: list[str] | None = [] if "exam_id" in fields else None
        rows = []
        for line, row in enumerate(reader, start=2):
            try:
                if task == "six":
                    rows.append([float(row[c]) for c in CLASSES])
                else:
                    rows.append([1.0 - float(row[NORMAL_COLUMN])])
            except (TypeError, ValueError):
                raise InputError(path, f"line {line}: labels must be 0 or 1") from None
            if ids is not None:
                ids.append(str(row["exam_id"]).strip())
    if not rows:
        raise InputError(path, "labels CSV holds no rows")
    return ids, np.asarray(rows, dtype=np.float32)


def read_labels_csv(path: str | Path, task: str = "six") -> dict[str, np.ndarray]:
    """exam_id -> label vector (see read_label_matrix); the CSV must have an `exam_id` column."""
    ids, matrix = read_label_matrix(path, task)
    if ids is None:
        raise InputError(path, "labels CSV lacks columns exam_id")
    return dict(zip(ids, matrix, strict=True))


def _exam_ids(path: Path, n: int) -> list[str]:
    with h5py.File(path, "r") as f:
        if "exam_id" not in f:
            # Without ids, rows of the CSV are taken in file order.
            return [str(i) for i in range(n)]
        return [str(v.decode() if isinstance(v, bytes) else v) for v in f["exam_id"][:]]


class HDF5Sequence(keras.utils.PyDataset):
    """Batches (x, y) read straight from disk; only the index of exams lives in memory.

    `index` is a list of (file number, row) pairs. Shuffling permutes chunks of consecutive
    rows (so reads stay contiguous) and the rows within each batch differ every epoch.
    """

    def __init__(
        self, files: Sequence[str | Path], labels: dict[str, np.ndarray], index: list[tuple[int, int]],
        batch_size: int = 64, shuffle: bool = False, seed: int = 0, chunk: int = 8, **kwargs,
    ):
        super().__init__(**kwargs)
        self.files = [Path(p) for p in files]
        self.labels = labels
        self.index = index
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.chunk = chunk
        self._rng = np.random.default_rng(seed)
        self._ids = [_exam_ids(p, hdf5_exam_count(p)) for p in self.files]
        self._handles: dict[int, h5py.File] = {}
        self._order = list(index)
        if shuffle:
            self.on_epoch_end()

    def __len__(self) -> int:
        return int(np.ceil(len(self.index) / self.batch_size))

    def _tracings(self, file_no: int):
        if file_no not in self._handles:
            self._handles[file_no] = h5py.File(self.files[file_no], "r")
        return self._handles[file_no]["tracings"]

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self._order[i * self.batch_size:(i + 1) * self.batch_size]
        x = np.empty((len(rows), *self._tracings(rows[0][0]).shape[1:]), dtype=np.float32)
        y = []
        # Read each file's rows in ascending order (h5py requires it), then put them back in place.
        for file_no in sorted({f for f, _ in rows}):
            positions = [k for k, (f, _) in enumerate(rows) if f == file_no]
            order = sorted(positions, key=lambda k: rows[k][1])
            x[order] = self._tracings(file_no)[[rows[k][1] for k in order]]
        for file_no, row in rows:
            y.append(self.labels[self._ids[file_no][row]])
        return x, np.stack(y)

    def on_epoch_end(self) -> None:
        if not self.shuffle:
            return
        chunks = [self.index[k:k + self.chunk] for k in range(0, len(self.index), self.chunk)]
        self._rng.shuffle(chunks)
        self._order = [pair for c in chunks for pair in c]

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()


def train_validation_sequences(
    files: Sequence[str | Path], labels_csv: str | Path, task: str = "six", batch_size: int = 64,
    validation_fraction: float = 0.02, seed: int = 0,
) -> tuple[HDF5Sequence, HDF5Sequence]:
    """Split exams into training and validation (the last `validation_fraction`, as the reference
    does), keeping only exams that have labels."""
    labels = read_labels_csv(labels_csv, task)
    index: list[tuple[int, int]] = []
    for file_no, path in enumerate(map(Path, files)):
        ids = _exam_ids(path, hdf5_exam_count(path))
        index.extend((file_no, row) for row, exam_id in enumerate(ids) if exam_id in labels)
    if len(index) < 2:
        raise InputError(labels_csv, "fewer than 2 exams have both a tracing and labels")
    n_val = max(1, int(round(len(index) * validation_fraction)))
    train = HDF5Sequence(files, labels, index[:-n_val], batch_size, shuffle=True, seed=seed)
    val = HDF5Sequence(files, labels, index[-n_val:], batch_size, shuffle=False)
    return train, val

"""Training data: a Keras `PyDataset` streaming batches from CODE-layout HDF5 files and a labels CSV."""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from pathlib import Path

import h5py
import keras
import numpy as np

from ecg_edge.errors import InputError
from ecg_edge.readers import hdf5_exam_count
from ecg_edge.spec import CLASSES, NORMAL_COLUMN
from ecg_edge.training.augment import Augment, sample_weights


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
        batch_size: int = 64, shuffle: bool = False, seed: int = 0, chunk: int = 8,
        augment: Augment | None = None, weights: dict[str, float] | None = None, **kwargs,
    ):
        """`augment` changes each batch as it is read (training only); `weights` (exam id -> weight)
        makes batches (x, y, sample weight)."""
        super().__init__(**kwargs)
        self.augment = augment
        self.weights = weights
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

    def __getitem__(self, i: int) -> tuple[np.ndarray, ...]:
        rows = self._order[i * self.batch_size:(i + 1) * self.batch_size]
        x = np.empty((len(rows), *self._tracings(rows[0][0]).shape[1:]), dtype=np.float32)
        # Read each file's rows in ascending order (h5py requires it), then put them back in place.
        for file_no in sorted({f for f, _ in rows}):
            positions = [k for k, (f, _) in enumerate(rows) if f == file_no]
            order = sorted(positions, key=lambda k: rows[k][1])
            x[order] = self._tracings(file_no)[[rows[k][1] for k in order]]
        ids = [self._ids[file_no][row] for file_no, row in rows]
        y = [self.labels[exam_id] for exam_id in ids]
        if self.augment is not None:
            x = self.augment(x, self._rng)
        if self.weights is not None:
            return x, np.stack(y), np.array([self.weights[exam_id] for exam_id in ids], np.float32)
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


SPLITS = ("tail", "record", "patient")
GROUP_COLUMN = "group"  # the patient (or record) an exam belongs to: a corpus CSV has it
PART_COLUMN = "part"  # 'train' or 'validation', where a split was made beforehand


def read_text_column(path: str | Path, column: str) -> dict[str, str]:
    """exam_id -> the value of `column` (empty where the CSV lacks it)."""
    with open(path, newline="") as f:
        return {str(row["exam_id"]).strip(): (row.get(column) or "").strip() for row in csv.DictReader(f)}


def _has_column(path: str | Path, column: str) -> bool:
    with open(path, newline="") as f:
        return column in (csv.DictReader(f).fieldnames or [])


def _held_by_patient(labels_csv: str | Path, exam_ids: Sequence[str], fraction: float, seed: int) -> set[str]:
    """Validation exams split by patient: as the CSV's `part` column says where it has one, else
    whole groups (its `group` column, the exam itself without one) by a hash, about `fraction` of them."""
    from ecg_edge.training.corpus import group_rank

    parts = read_text_column(labels_csv, PART_COLUMN)
    if any(parts.get(e) for e in exam_ids):
        return {e for e in exam_ids if parts.get(e) == "validation"}
    groups = read_text_column(labels_csv, GROUP_COLUMN)
    return {e for e in exam_ids if group_rank(groups.get(e) or e, f"validation-{seed}") < fraction}


def train_validation_sequences(
    files: Sequence[str | Path], labels_csv: str | Path, task: str = "six", batch_size: int = 64,
    validation_fraction: float = 0.02, seed: int = 0, split: str = "tail", augment: Augment | None = None,
    balance: bool = False,
) -> tuple[HDF5Sequence, HDF5Sequence]:
    """Split exams into training and validation, keeping only exams that have labels. `split`: 'tail'
    holds out the last `validation_fraction` (as the reference does on CODE); 'record' holds out
    exams by a hash of their id (a record key for sets labelled by record: one recording never on
    both sides, and the same split whatever the order of the files); 'patient' holds out whole
    patients (see _held_by_patient), and is the split whatever was asked where the CSV has a `group`
    column (a corpus: training/corpus.py). `augment` and `balance` (sample weights that lift rare
    classes) apply to the training side only."""
    if split not in SPLITS:
        raise InputError(None, f"unknown split {split!r}: {' or '.join(SPLITS)}")
    labels = read_labels_csv(labels_csv, task)
    index: list[tuple[int, int]] = []
    exam_of: dict[tuple[int, int], str] = {}
    for file_no, path in enumerate(map(Path, files)):
        ids = _exam_ids(path, hdf5_exam_count(path))
        for row, exam_id in enumerate(ids):
            if exam_id in labels:
                index.append((file_no, row))
                exam_of[(file_no, row)] = exam_id
    if len(index) < 2:
        raise InputError(labels_csv, "fewer than 2 exams have both a tracing and labels")
    n_val = max(1, int(round(len(index) * validation_fraction)))
    if split != "patient" and _has_column(labels_csv, GROUP_COLUMN):
        split = "patient"  # a corpus knows its patients: no split may put one on both sides
    if split == "patient":
        held_ids = _held_by_patient(labels_csv, list(exam_of.values()), validation_fraction, seed)
        train_index = [p for p in index if exam_of[p] not in held_ids]
        val_index = [p for p in index if exam_of[p] in held_ids]
        if not train_index or not val_index:
            raise InputError(labels_csv, f"a split by patient left {len(train_index)} exams to train on and "
                                         f"{len(val_index)} to validate on")
    elif split == "record":
        held = set(sorted(index, key=lambda pair: hashlib.sha256(exam_of[pair].encode()).hexdigest())[:n_val])
        train_index, val_index = [p for p in index if p not in held], [p for p in index if p in held]
    else:
        train_index, val_index = index[:-n_val], index[-n_val:]
    weights = None
    if balance:
        train_ids = [exam_of[p] for p in train_index]
        weights = dict(zip(train_ids, sample_weights(np.stack([labels[i] for i in train_ids])).tolist(), strict=True))
    train = HDF5Sequence(files, labels, train_index, batch_size, shuffle=True, seed=seed, augment=augment,
                         weights=weights)
    val = HDF5Sequence(files, labels, val_index, batch_size, shuffle=False)
    return train, val

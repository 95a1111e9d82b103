"""Labels for any recordings: a CSV keyed by record (`record` column, the path relative to the CSV;
`FILE.h5#i` for exam i of an HDF5 file; WFDB records without a suffix), one 0/1 column per class.

Every labelled record must be read and every record read must have its labels: anything else is
bad input that names the record. Training streams such a set as it streams CODE-layout HDF5: the
recordings are converted once, batch by batch, into a CODE-layout file whose exam ids are the
record keys (`labelled_hdf5`).
"""

from __future__ import annotations

import contextlib
import csv
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ecg_edge.errors import InputError
from ecg_edge.spec import CLASSES, HDF5_SUFFIXES, NORMAL_COLUMN

RECORD_COLUMN = "record"
# `normal` (1 = nothing abnormal) is accepted for the binary task beside CODE's `normal_ecg`.
NORMAL_COLUMNS = (NORMAL_COLUMN, "normal")


def keyed_by_record(labels_csv: str | Path) -> bool:
    """Whether a labels CSV names its recordings (a `record` column) rather than exam ids or rows."""
    try:
        with open(labels_csv, newline="") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError):
        return False
    return RECORD_COLUMN in [h.strip() for h in header]


def _binary(row: dict[str, str], fields: list[str]) -> str:
    column = next(c for c in NORMAL_COLUMNS if c in fields)
    value = row[column].strip()
    return {"0": "1", "1": "0"}.get(value, value)  # abnormal = 1 - normal


def read_record_labels(labels_csv: str | Path, task: str = "six") -> dict[str, np.ndarray]:
    """record -> label vector (the six classes, or abnormal for the binary task)."""
    path = Path(labels_csv)
    if not path.is_file():
        raise InputError(path, "no such file")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields = [c.strip() for c in reader.fieldnames or []]
        if task == "six":
            missing = [c for c in CLASSES if c not in fields]
        else:
            missing = [] if any(c in fields for c in NORMAL_COLUMNS) else [" or ".join(NORMAL_COLUMNS)]
        if missing:
            raise InputError(path, f"labels CSV lacks columns {', '.join(missing)}")
        labels: dict[str, np.ndarray] = {}
        for line, row in enumerate(reader, start=2):
            record = (row.get(RECORD_COLUMN) or "").strip()
            if not record:
                raise InputError(path, f"line {line}: empty record")
            if record in labels:
                raise InputError(path, f"line {line}: record {record} is labelled twice")
            values = [row[c].strip() for c in CLASSES] if task == "six" else [_binary(row, fields)]
            bad = [v for v in values if v not in ("0", "1")]
            if bad:
                raise InputError(path, f"line {line}: record {record}: labels must be 0 or 1, not {bad[0]!r}")
            labels[record] = np.array([float(v) for v in values], dtype=np.float32)
    if not labels:
        raise InputError(path, "labels CSV holds no rows")
    return labels


def record_keys(source: str | Path, exam_id: str, base: Path) -> tuple[str, ...]:
    """The names a labels CSV in `base` may give an exam read from `source`: its path relative to
    `base` (forward slashes), `#exam id` after an HDF5 file, and also without the suffix (WFDB
    records are named without one). Paths are compared as given, symbolic links unresolved."""
    relative = Path(os.path.relpath(Path(source).absolute(), base.absolute())).as_posix()
    if Path(relative).suffix.lower() in HDF5_SUFFIXES:
        return (f"{relative}#{exam_id}",)
    stem = relative[: -len(Path(relative).suffix)] if Path(relative).suffix else relative
    return (stem, relative) if stem != relative else (relative,)


def match_records(
    sources: Sequence[str], exam_ids: Sequence[str], labels: dict[str, np.ndarray], labels_csv: str | Path,
) -> list[str]:
    """Each exam's record key, checking both ways: an exam without labels, or labels for a record
    that was not read, is bad input naming the first of them (and how many)."""
    base = Path(labels_csv).parent
    keys: list[str] = []
    unlabelled: list[str] = []
    for source, exam_id in zip(sources, exam_ids, strict=True):
        candidates = record_keys(source, exam_id, base)
        found = next((k for k in candidates if k in labels), None)
        if found is None:
            unlabelled.append(candidates[0])
        keys.append(found or candidates[0])
    if unlabelled:
        raise InputError(labels_csv, f"no labels for {len(unlabelled)} recordings read (first: {unlabelled[0]})")
    seen = set(keys)
    unread = [k for k in labels if k not in seen]
    if unread:
        raise InputError(labels_csv, f"{len(unread)} labelled records were not among the recordings read "
                                     f"(first: {unread[0]}): give their files or folders too")
    duplicates = len(keys) - len(seen)
    if duplicates:
        twice = next(k for k in keys if keys.count(k) > 1)
        raise InputError(labels_csv, f"record {twice} was read more than once (given twice?)")
    return keys


def labelled_hdf5(
    inputs: Sequence[str | Path], labels_csv: str | Path, folder: Path, task: str = "six",
) -> tuple[Path, Path]:
    """Recordings in any readable format and a labels CSV keyed by record -> a CODE-layout HDF5 file
    (exam ids = record keys) and a labels CSV with an `exam_id` column, in `folder`: what training
    streams from. Converted batch by batch; memory stays bounded."""
    import h5py

    from ecg_edge.convert import convert_to_hdf5

    labels = read_record_labels(labels_csv, task)
    h5 = folder / "labelled.h5"
    convert_to_hdf5(inputs, h5)
    with h5py.File(h5, "r+") as f:
        sources = [s.decode() if isinstance(s, bytes) else str(s) for s in f["source"][:]]
        ids = [s.decode() if isinstance(s, bytes) else str(s) for s in f["exam_id"][:]]
        keys = match_records(sources, ids, labels, labels_csv)
        f["exam_id"][:] = keys
    out_csv = folder / "labelled.csv"
    columns = list(CLASSES) if task == "six" else [NORMAL_COLUMN]
    with open(out_csv, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["exam_id", *columns])
        for key in keys:
            values = labels[key] if task == "six" else 1.0 - labels[key]  # the binary task reads normal_ecg
            writer.writerow([key, *(int(v) for v in values)])
    return h5, out_csv


@contextlib.contextmanager
def training_inputs(
    inputs: Sequence[Path], labels_csv: Path, near: Path, task: str = "six",
) -> Iterator[tuple[list[Path], Path]]:
    """(HDF5 files, labels CSV) to train from: as given for CODE-layout HDF5 and a CSV of exam ids or
    rows; for a CSV keyed by record, the recordings converted into a temporary folder in `near`
    (removed afterwards)."""
    if not keyed_by_record(labels_csv):
        yield list(inputs), labels_csv
        return
    with tempfile.TemporaryDirectory(prefix=".labelled-", dir=near) as tmp:
        h5, csv_path = labelled_hdf5(inputs, labels_csv, Path(tmp), task)
        yield [h5], csv_path

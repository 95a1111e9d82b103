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
import hashlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

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


def _texts(values: Any) -> list[str]:
    """An HDF5 string dataset's values as str (h5py gives bytes)."""
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def labelled_files(inputs: Sequence[str | Path], labels: dict[str, np.ndarray], base: Path) -> list[Path]:
    """The files to read: each one named, and those of a named folder that the labels name (a folder
    may hold other files, e.g. published outputs beside the recordings: the CSV says what is in the set)."""
    from ecg_edge.readers import expand_inputs

    hdf5_files = {key.rpartition("#")[0] for key in labels if "#" in key}
    found: list[Path] = []
    for path in map(Path, inputs):
        if not path.is_dir():
            found.append(path)
            continue
        for file in expand_inputs([path]):
            relative = Path(os.path.relpath(file.absolute(), base.absolute())).as_posix()
            if relative in hdf5_files or any(k in labels for k in record_keys(file, "", base)):
                found.append(file)
    return found


def labelled_hdf5(
    inputs: Sequence[str | Path], labels_csv: str | Path, folder: Path, task: str = "six",
) -> tuple[Path, Path]:
    """Recordings in any readable format and a labels CSV keyed by record -> a CODE-layout HDF5 file
    (exam ids = record keys) and a labels CSV with an `exam_id` column, in `folder`: what training
    streams from. The CSV has the six classes and `normal_ecg` where the source has them (`task`
    says which must be there). Converted batch by batch; memory stays bounded."""
    import h5py

    from ecg_edge.convert import convert_to_hdf5

    labels = {task: read_record_labels(labels_csv, task)}
    other = "binary" if task == "six" else "six"
    with contextlib.suppress(InputError):  # the other task's columns: written where present and sound
        labels[other] = read_record_labels(labels_csv, other)
    h5 = folder / "labelled.h5"
    convert_to_hdf5(labelled_files(inputs, labels[task], Path(labels_csv).parent), h5)
    with h5py.File(h5, "r+") as f:
        sources, ids = _texts(f["source"][:]), _texts(f["exam_id"][:])
        keys = match_records(sources, ids, labels[task], labels_csv)
        f["exam_id"][:] = keys
    out_csv = folder / "labelled.csv"
    with open(out_csv, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["exam_id", *(CLASSES if "six" in labels else ()),
                         *((NORMAL_COLUMN,) if "binary" in labels else ())])
        for key in keys:
            six = [int(v) for v in labels["six"][key]] if "six" in labels else []
            normal = [int(1 - labels["binary"][key][0])] if "binary" in labels else []  # abnormal -> normal
            writer.writerow([key, *six, *normal])
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


def split_by_record(
    h5: Path, labels_csv: Path, held_out: float, folder: Path, seed: str = "held-out",
    fold: tuple[int, int] | None = None,
) -> tuple[tuple[Path, Path], tuple[Path, Path]]:
    """A labelled CODE-layout set split by a hash of each exam id (a record key) into a part to
    train on and a part held out, each its own HDF5 file and labels CSV: ((train h5, csv), (held-out
    h5, csv)). The same records fall on the same side on every machine. `fold=(i, k)` holds out the
    i-th of k folds instead of the share `held_out` (every record held out by exactly one fold)."""
    import h5py

    with open(labels_csv, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = {row[0]: row for row in reader}
    with h5py.File(h5, "r") as f:
        ids = _texts(f["exam_id"][:])
    ranked = sorted(ids, key=lambda k: hashlib.sha256(f"{seed}:{k}".encode()).hexdigest())
    if fold is not None and not 0 <= fold[0] < fold[1]:
        raise ValueError(f"fold {fold[0]} of {fold[1]}: the first is 0 to {fold[1] - 1}")
    test = set(ranked[fold[0]::fold[1]] if fold else ranked[: int(round(len(ids) * held_out))])
    parts = []
    for name, keep in (("train", [i for i, k in enumerate(ids) if k not in test]),
                       ("held-out", [i for i, k in enumerate(ids) if k in test])):
        out_h5, out_csv = folder / f"{h5.stem}-{name}.h5", folder / f"{h5.stem}-{name}.csv"
        with h5py.File(h5, "r") as src, h5py.File(out_h5, "w") as dst:
            tracings = dst.create_dataset("tracings", shape=(len(keep), *src["tracings"].shape[1:]), dtype="float32")
            for start in range(0, len(keep), 256):  # in blocks: memory stays bounded
                tracings[start:start + 256] = src["tracings"][keep[start:start + 256]]
            dst.create_dataset("exam_id", data=[ids[i] for i in keep], dtype=h5py.string_dtype())
        with open(out_csv, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows[ids[i]] for i in keep)
        parts.append((out_h5, out_csv))
    return parts[0], parts[1]


def labels_from_headers(inputs: Sequence[Path], folder: Path) -> tuple[list[Path], Path] | None:
    """A labels CSV keyed by record, in `folder`, from the WFDB `# Dx:` headers among `inputs`
    (recordings without one are left out): (the labelled recordings, the CSV), or None if none has one."""
    from ecg_edge.readers import expand_inputs, format_of
    from ecg_edge.readers.wfdb import read_wfdb_labels

    rows, labelled = [], []
    for path in expand_inputs(inputs):
        if format_of(path) != "wfdb":
            continue
        _, found = read_wfdb_labels(path)
        if found:
            key = record_keys(path, "", folder)[0]
            rows.append([key, *(found[c] for c in CLASSES)])
            labelled.append(path)
    if not rows:
        return None
    out = folder / "labels-from-headers.csv"
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([RECORD_COLUMN, *CLASSES])
        writer.writerows(rows)
    return labelled, out


def labelled_recordings(inputs: Sequence[Path], folder: Path, task: str = "six") -> tuple[Path, Path] | None:
    """The labelled recordings among `inputs` as a CODE-layout HDF5 file and labels CSV in `folder`:
    a folder's own `labels.csv` keyed by record where there is one (the first such folder), else
    the WFDB `# Dx:` headers; None where nothing is labelled."""
    for path in inputs:
        if path.is_dir() and keyed_by_record(path / "labels.csv"):
            return labelled_hdf5([path], path / "labels.csv", folder, task)
    from_headers = labels_from_headers(inputs, folder)
    if from_headers is None:
        return None
    return labelled_hdf5(from_headers[0], from_headers[1], folder, task)

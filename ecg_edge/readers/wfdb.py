"""WFDB records (`.hea` + `.dat`/`.mat`) with their physical units; `# Dx:` SNOMED CT codes become labels."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ecg_edge.errors import InputError
from ecg_edge.recording import Recording

SUFFIXES = {".hea", ".dat", ".mat"}


def record_path(path: Path) -> Path:
    """A record's path without extension, whether given as `rec`, `rec.hea`, `rec.dat` or `rec.mat`."""
    if path.suffix.lower() in SUFFIXES:
        path = path.with_suffix("")
    if not path.with_suffix(".hea").exists():
        raise InputError(path, "no WFDB header (.hea) for this record")
    return path


# A header larger than this is not a WFDB header: it is not read into memory to be repaired.
MAX_HEADER_BYTES = 1 << 20


@contextlib.contextmanager
def readable_record(record: Path) -> Iterator[Path]:
    """The record as wfdb can read it. Headers of the PhysioNet/CinC Challenge's earlier releases
    name the record with its signal file's extension on the first line (`E00271.mat 12 500 5000`),
    which wfdb refuses: such a header is read with that name corrected, in a temporary folder beside
    a link to the signal file; every other header as it is."""
    header = record.with_suffix(".hea")
    first = ""
    if header.stat().st_size <= MAX_HEADER_BYTES:
        with open(header, encoding="latin-1") as f:
            first = f.readline()
    name, _, rest = first.partition(" ")
    stem = Path(name).stem
    if Path(name).suffix.lower() not in (".mat", ".dat") or stem != record.name:
        yield record
        return
    with tempfile.TemporaryDirectory(prefix="ecg-edge-wfdb-") as tmp:
        text = header.read_text(encoding="latin-1")
        (Path(tmp) / header.name).write_text(f"{stem} {rest}" + text[len(first):], encoding="latin-1")
        lines = [line for line in text.splitlines()[1:] if line.strip() and not line.startswith("#")]
        for signal in {line.split()[0] for line in lines}:
            source = record.parent / signal  # a name that leaves the record's folder is not linked
            if source.parent == record.parent and source.exists():
                os.symlink(source.resolve(), Path(tmp) / signal)
        yield Path(tmp) / record.name


def read_wfdb(path: str | Path) -> Recording:
    import wfdb

    record = record_path(Path(path))
    try:
        with readable_record(record) as readable:
            rec = wfdb.rdrecord(str(readable))
    except Exception as exc:  # wfdb raises many types for damaged files
        raise InputError(record.with_suffix(".hea"), f"unreadable WFDB record ({exc})") from None
    if rec.p_signal is None or rec.p_signal.size == 0:
        raise InputError(record.with_suffix(".hea"), "record holds no samples")
    return Recording(
        signal=np.asarray(rec.p_signal, dtype=np.float64),
        fs=float(rec.fs),
        leads=tuple(rec.sig_name),
        units=tuple(u or "mV" for u in rec.units),
        id=rec.record_name,
        source=str(record.with_suffix(".hea")),
        labels=labels_from_comments(rec.comments or []),
        format="wfdb",
    )


def read_wfdb_labels(path: str | Path) -> tuple[str, dict[str, int]]:
    """(record name, six-class labels of its `# Dx:` line), reading the header only."""
    import wfdb

    record = record_path(Path(path))
    try:
        with readable_record(record) as readable:
            header = wfdb.rdheader(str(readable))
    except Exception as exc:  # wfdb raises many types for damaged headers
        raise InputError(record.with_suffix(".hea"), f"unreadable WFDB header ({exc})") from None
    return header.record_name, labels_from_comments(header.comments or [])


def labels_from_comments(comments: Sequence[str]) -> dict[str, int]:
    """Six-class labels from a `# Dx:` line of SNOMED CT codes; empty when there is none."""
    from ecg_edge.spec import CLASSES, SNOMED_TO_CLASS

    for line in comments:
        key, _, value = line.partition(":")
        if key.strip().lower() == "dx":
            codes = {c.strip() for c in value.split(",")}
            found = {SNOMED_TO_CLASS[c] for c in codes if c in SNOMED_TO_CLASS}
            return {name: int(name in found) for name in CLASSES}
    return {}

"""WFDB records (`.hea` + `.dat`/`.mat`) with their physical units; `# Dx:` SNOMED CT codes become labels."""

from __future__ import annotations

from collections.abc import Sequence
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


def read_wfdb(path: str | Path) -> Recording:
    import wfdb

    record = record_path(Path(path))
    try:
        rec = wfdb.rdrecord(str(record))
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
        header = wfdb.rdheader(str(record))
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

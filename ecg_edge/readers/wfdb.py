"""WFDB records (`.hea` + `.dat`/`.mat`) with their physical units; `# Dx:` SNOMED CT codes become labels."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ecg_edge import untrusted
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


@contextlib.contextmanager
def readable_record(record: Path) -> Iterator[Path]:
    """The record as wfdb can read it. Headers of the PhysioNet/CinC Challenge's earlier releases
    name the record with its signal file's extension on the first line (`E00271.mat 12 500 5000`),
    which wfdb refuses: such a header is read with that name corrected, in a temporary folder beside
    a link to the signal file; every other header as it is."""
    header = record.with_suffix(".hea")
    if untrusted.check_regular(header).st_size > untrusted.MAX_WFDB_HEADER_BYTES:
        raise InputError(header, f"a WFDB header of more than {untrusted.MAX_WFDB_HEADER_BYTES // 2**20} MiB")
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


def check_header(record: Path, header: Any) -> None:
    """What a header declares, by the untrusted-input policy, before a sample is read: one segment, the
    rate, samples per frame, channels and length within bounds, and every signal file it names a regular
    file in the record's folder."""
    path = record.with_suffix(".hea")
    if getattr(header, "n_seg", None) is not None:
        raise InputError(path, "multi-segment WFDB records are not read")
    n_sig = int(header.n_sig or 0)
    if n_sig == 0:
        raise InputError(path, "header declares no signals")
    untrusted.check_channels(path, n_sig)
    spf = [int(n or 1) for n in (header.samps_per_frame or [1] * n_sig)]
    if max(spf) > untrusted.MAX_SAMPLES_PER_FRAME or min(spf) < 1:
        raise InputError(path, f"{max(spf)} samples per frame: at most {untrusted.MAX_SAMPLES_PER_FRAME}")
    fs = untrusted.check_rate(path, header.fs)
    untrusted.check_rate(path, fs * max(spf), "sampling rate times samples per frame")
    files = [untrusted.named_file(path, record.parent, str(name), "signal file")
             for name in dict.fromkeys(header.file_name or [])]
    frames = header.sig_len
    if frames is None:  # wfdb counts frames from the files' sizes: at least a byte a sample
        if any(int(f or 0) >= 500 for f in header.fmt or []):
            raise InputError(path, "compressed signal files without a signal length in the header")
        frames = max((f.stat().st_size for f in files), default=0)
    untrusted.check_extent(path, float(frames), sum(spf), fs)


def read_wfdb(path: str | Path) -> Recording:
    import wfdb

    record = record_path(Path(path))
    try:
        with readable_record(record) as readable:
            check_header(record, wfdb.rdheader(str(readable)))
            rec = wfdb.rdrecord(str(readable))
    except InputError:
        raise
    except Exception as exc:  # wfdb raises many types for damaged files
        problem = f"unreadable WFDB record ({_without_folder(exc, record)})"
        raise InputError(record.with_suffix(".hea"), problem) from None
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
    except InputError:
        raise
    except Exception as exc:  # wfdb raises many types for damaged headers
        problem = f"unreadable WFDB header ({_without_folder(exc, record)})"
        raise InputError(record.with_suffix(".hea"), problem) from None
    return header.record_name, labels_from_comments(header.comments or [])


def _without_folder(exc: Exception, record: Path) -> str:
    """wfdb's message without the folders it names (a temporary one, or the server's)."""
    text = str(exc)
    for folder in {str(record.parent.resolve()), str(record.parent), tempfile.gettempdir()}:
        text = re.sub(re.escape(folder) + r"[^\s'\"]*/", "", text)
    return text


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

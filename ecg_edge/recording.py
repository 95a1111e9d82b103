"""Recordings and their readers: CODE-layout HDF5, WFDB records and `.npy` arrays."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ecg_edge.errors import InputError
from ecg_edge.spec import LEADS, N_SAMPLES, SAMPLING_RATE_HZ, UNITS

# Exams read from an HDF5 file at a time: bounds memory whatever the file's size.
HDF5_CHUNK_EXAMS = 256


@dataclass
class Recording:
    """One ECG: `signal` is (n_samples, n_leads), in `units`, sampled at `fs` Hz."""

    signal: np.ndarray
    fs: float
    leads: tuple[str, ...]
    units: str | tuple[str, ...] = UNITS
    id: str = ""
    source: str = ""
    labels: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.leads = tuple(self.leads)
        if self.signal.ndim != 2:
            raise InputError(self.source or None, f"signal must be 2-D (samples, leads), got shape {self.signal.shape}")
        if self.signal.shape[1] != len(self.leads):
            raise InputError(
                self.source or None,
                f"{self.signal.shape[1]} signal columns but {len(self.leads)} lead names",
            )


def _check_hdf5(path: Path):  # -> h5py.Dataset, h5py.Dataset | None, h5py.File
    import h5py

    if not path.exists():
        raise InputError(path, "no such file")
    if path.stat().st_size == 0:
        raise InputError(path, "file is empty")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(path, f"not a readable HDF5 file ({exc.__class__.__name__})") from None
    if "tracings" not in f:
        keys = ", ".join(sorted(f.keys())) or "none"
        f.close()
        raise InputError(path, f"no 'tracings' dataset (datasets: {keys})")
    tracings = f["tracings"]
    if tracings.ndim != 3 or tracings.shape[1:] != (N_SAMPLES, len(LEADS)):
        shape = tracings.shape
        f.close()
        raise InputError(path, f"'tracings' has shape {shape}, expected (N, {N_SAMPLES}, {len(LEADS)})")
    if tracings.shape[0] == 0:
        f.close()
        raise InputError(path, "'tracings' holds no exams")
    if tracings.dtype.kind != "f":
        dtype = tracings.dtype
        f.close()
        raise InputError(path, f"'tracings' has dtype {dtype}, expected float32 or float64")
    exam_ids = f.get("exam_id")
    if exam_ids is not None and exam_ids.shape != (tracings.shape[0],):
        f.close()
        raise InputError(path, f"'exam_id' has shape {exam_ids.shape}, expected ({tracings.shape[0]},)")
    return tracings, exam_ids, f


def hdf5_exam_count(path: str | Path) -> int:
    """Number of exams in a CODE-layout HDF5 file (validates the layout)."""
    tracings, _, f = _check_hdf5(Path(path))
    with f:
        return int(tracings.shape[0])


def iter_hdf5_chunks(
    path: str | Path, chunk: int = HDF5_CHUNK_EXAMS
) -> Iterator[tuple[list[str], np.ndarray]]:
    """Yield (exam ids, float32 array (n, 4096, 12)) from a CODE-layout file, chunk by chunk.

    The data are already the model's input (400 Hz, 4096 samples, model lead order) and are
    taken as they are: a user corrects the amplitude scale explicitly (DESIGN.md, units).
    """
    path = Path(path)
    tracings, exam_ids, f = _check_hdf5(path)
    with f:
        n = tracings.shape[0]
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            block = np.asarray(tracings[start:stop], dtype=np.float32)
            if exam_ids is not None:
                ids = [_id_text(x) for x in exam_ids[start:stop]]
            else:
                ids = [f"{path.stem}:{i}" for i in range(start, stop)]
            yield ids, block


def _id_text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return str(value.item())
    return str(value)


def _wfdb_record_path(path: Path) -> Path:
    """A record's path without extension, whether given as `rec`, `rec.hea`, `rec.dat` or `rec.mat`."""
    if path.suffix.lower() in {".hea", ".dat", ".mat"}:
        path = path.with_suffix("")
    if not path.with_suffix(".hea").exists():
        raise InputError(path, "no WFDB header (.hea) for this record")
    return path


def read_wfdb(path: str | Path) -> Recording:
    """Read one WFDB record (`.hea` + `.dat`/`.mat`) with its physical units."""
    import wfdb

    record = _wfdb_record_path(Path(path))
    try:
        rec = wfdb.rdrecord(str(record))
    except Exception as exc:  # wfdb raises many types for damaged files
        raise InputError(record.with_suffix(".hea"), f"unreadable WFDB record ({exc})") from None
    if rec.p_signal is None or rec.p_signal.size == 0:
        raise InputError(record.with_suffix(".hea"), "record holds no samples")
    labels = _labels_from_comments(rec.comments or [])
    return Recording(
        signal=np.asarray(rec.p_signal, dtype=np.float64),
        fs=float(rec.fs),
        leads=tuple(rec.sig_name),
        units=tuple(u or "mV" for u in rec.units),
        id=rec.record_name,
        source=str(record.with_suffix(".hea")),
        labels=labels,
    )


def read_wfdb_labels(path: str | Path) -> tuple[str, dict[str, int]]:
    """(record name, six-class labels of its `# Dx:` line), reading the header only."""
    import wfdb

    record = _wfdb_record_path(Path(path))
    try:
        header = wfdb.rdheader(str(record))
    except Exception as exc:  # wfdb raises many types for damaged headers
        raise InputError(record.with_suffix(".hea"), f"unreadable WFDB header ({exc})") from None
    return header.record_name, _labels_from_comments(header.comments or [])


def _labels_from_comments(comments: Sequence[str]) -> dict[str, int]:
    """Six-class labels from a `# Dx:` line of SNOMED CT codes; empty when there is none."""
    from ecg_edge.spec import CLASSES, SNOMED_TO_CLASS

    for line in comments:
        key, _, value = line.partition(":")
        if key.strip().lower() == "dx":
            codes = {c.strip() for c in value.split(",")}
            found = {SNOMED_TO_CLASS[c] for c in codes if c in SNOMED_TO_CLASS}
            return {name: int(name in found) for name in CLASSES}
    return {}


def read_npy(
    path: str | Path, fs: float | None, leads: Sequence[str] | None, units: str = UNITS
) -> Recording:
    """Read a (samples, leads) `.npy` array; its rate and lead names must be given."""
    path = Path(path)
    if fs is None or not leads:
        raise InputError(path, ".npy carries no sampling rate or lead names: pass --fs and --leads")
    if not path.exists():
        raise InputError(path, "no such file")
    try:
        signal = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputError(path, f"not a readable .npy array ({exc})") from None
    if signal.ndim != 2:
        raise InputError(path, f"expected a 2-D array (samples, leads), got shape {signal.shape}")
    # Accept (leads, samples) too: the lead count tells the axes apart.
    if signal.shape[1] != len(leads) and signal.shape[0] == len(leads):
        signal = signal.T
    if signal.shape[1] != len(leads):
        raise InputError(path, f"array has shape {signal.shape} but {len(leads)} lead names were given")
    return Recording(
        signal=signal.astype(np.float64), fs=float(fs), leads=tuple(leads), units=units,
        id=path.stem, source=str(path),
    )


def read_recording(
    path: str | Path,
    fs: float | None = None,
    leads: Sequence[str] | None = None,
    units: str = UNITS,
) -> Recording:
    """Read one recording: a WFDB record (with or without `.hea`) or a `.npy` array."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        return read_npy(path, fs, leads, units)
    if path.suffix.lower() in {".h5", ".hdf5"}:
        raise InputError(path, "an HDF5 file may hold many exams: use iter_recordings()")
    return read_wfdb(path)


def is_hdf5(path: Path) -> bool:
    return path.suffix.lower() in {".h5", ".hdf5"}


def expand_inputs(paths: Sequence[str | Path]) -> list[Path]:
    """Files to read from the given paths: a folder stands for the WFDB records and files in it."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            children = [p / name for name in sorted(os.listdir(p))]
            readable = [c for c in children if c.suffix.lower() in {".hea", ".h5", ".hdf5", ".npy"}]
            if not readable:
                raise InputError(p, "folder holds no WFDB record, HDF5 or .npy file")
            found.extend(readable)
        elif p.exists() or p.with_suffix(".hea").exists():
            found.append(p)
        else:
            raise InputError(p, "no such file or WFDB record")
    return found


def iter_recordings(
    path: str | Path,
    fs: float | None = None,
    leads: Sequence[str] | None = None,
    units: str = UNITS,
) -> Iterator[Recording]:
    """Every recording in a file or folder, lazily: each exam of an HDF5 file, WFDB records, .npy."""
    for p in expand_inputs([path]):
        if is_hdf5(p):
            for ids, block in iter_hdf5_chunks(p):
                for exam_id, signal in zip(ids, block, strict=True):
                    yield Recording(
                        signal=signal, fs=float(SAMPLING_RATE_HZ), leads=LEADS, units=UNITS,
                        id=exam_id, source=str(p),
                    )
        else:
            yield read_recording(p, fs=fs, leads=leads, units=units)

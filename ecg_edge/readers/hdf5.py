"""CODE-layout HDF5: `tracings` (N, 4096, 12) already at the model's input, optional `exam_id`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ecg_edge.errors import InputError
from ecg_edge.quality import unpadded_span
from ecg_edge.recording import Recording
from ecg_edge.spec import LEADS, N_SAMPLES, SAMPLING_RATE_HZ, UNITS

# Exams read from an HDF5 file at a time: bounds memory whatever the file's size.
HDF5_CHUNK_EXAMS = 256


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
    problem = None
    if not hasattr(tracings, "shape"):
        problem = "'tracings' is a group, not a dataset"
    elif tracings.ndim != 3 or tracings.shape[1:] != (N_SAMPLES, len(LEADS)):
        problem = f"'tracings' has shape {tracings.shape}, expected (N, {N_SAMPLES}, {len(LEADS)})"
    elif tracings.shape[0] == 0:
        problem = "'tracings' holds no exams"
    elif tracings.dtype.kind != "f":
        problem = f"'tracings' has dtype {tracings.dtype}, expected float32 or float64"
    exam_ids = f.get("exam_id")
    if problem is None and exam_ids is not None and exam_ids.shape != (tracings.shape[0],):
        problem = f"'exam_id' has shape {exam_ids.shape}, expected ({tracings.shape[0]},)"
    if problem is not None:
        f.close()
        raise InputError(path, problem)
    return tracings, exam_ids, f


def hdf5_exam_count(path: str | Path) -> int:
    """Number of exams in a CODE-layout HDF5 file (validates the layout)."""
    tracings, _, f = _check_hdf5(Path(path))
    with f:
        return int(tracings.shape[0])


def iter_hdf5_chunks(
    path: str | Path, chunk: int = HDF5_CHUNK_EXAMS, rows: tuple[int, int] | None = None,
) -> Iterator[tuple[list[str], np.ndarray]]:
    """Yield (exam ids, float32 array (n, 4096, 12)) from a CODE-layout file, chunk by chunk
    (only the exams in `rows`, a [start, stop) range, when given).

    The data are already the model's input (400 Hz, 4096 samples, model lead order) and are
    taken as they are: a user corrects the amplitude scale explicitly (docs/architecture.md, units).
    """
    path = Path(path)
    tracings, exam_ids, f = _check_hdf5(path)
    with f:
        first, end = rows if rows is not None else (0, tracings.shape[0])
        end = min(end, tracings.shape[0])
        for start in range(first, end, chunk):
            stop = min(start + chunk, end)
            try:
                block = np.asarray(tracings[start:stop], dtype=np.float32)
                raw_ids = None if exam_ids is None else exam_ids[start:stop]
            except (OSError, ValueError) as exc:  # a damaged chunk inside an otherwise valid file
                raise InputError(path, f"exams {start}-{stop - 1} unreadable ({exc})") from None
            if raw_ids is not None:
                ids = [_id_text(x) for x in raw_ids]
            else:
                ids = [f"{path.stem}:{i}" for i in range(start, stop)]
            yield ids, block


def _id_text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, np.generic):
        return str(value.item())
    return str(value)


def code_exam_recording(exam_id: str, path: str | Path, x: np.ndarray) -> tuple[Recording, tuple[int, int]]:
    """One exam of a CODE-layout file as a Recording of what was recorded (400 Hz, model lead order),
    without the rows of zeros stored at either end, and how many there were (before, after):
    `preprocess.prepare(recording, padding=...)` puts them back where they were."""
    start, stop = unpadded_span(x)
    recording = Recording(x[start:stop], float(SAMPLING_RATE_HZ), LEADS, UNITS, id=exam_id, source=str(path),
                          format="hdf5")
    return recording, (start, N_SAMPLES - stop)

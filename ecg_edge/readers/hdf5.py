"""CODE-layout HDF5: `tracings` (N, 4096, 12) already at the model's input, optional `exam_id`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ecg_edge import untrusted
from ecg_edge.errors import InputError
from ecg_edge.quality import unpadded_span
from ecg_edge.recording import Recording
from ecg_edge.spec import LEADS, N_SAMPLES, SAMPLING_RATE_HZ, UNITS

# Exams read from an HDF5 file at a time: bounds memory whatever the file's size.
HDF5_CHUNK_EXAMS = 256


def _check_hdf5(path: Path):  # -> h5py.Dataset, h5py.Dataset | None, h5py.File
    """The file's `tracings` and `exam_id`, checked by the untrusted-input policy: data stored in this
    file alone, built-in filters, declared sizes the file can hold; the open file to close."""
    import h5py

    if untrusted.check_regular(path).st_size == 0:
        raise InputError(path, "file is empty")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(path, f"not a readable HDF5 file ({exc.__class__.__name__})") from None
    try:
        tracings = untrusted.hdf5_link(path, f, "tracings")
        if tracings is None:
            keys = ", ".join(sorted(f.keys())[:20]) or "none"
            raise InputError(path, f"no 'tracings' dataset (datasets: {keys})")
        untrusted.check_hdf5_dataset(path, "tracings", tracings)
        exam_ids = untrusted.hdf5_link(path, f, "exam_id")
        if exam_ids is not None:
            untrusted.check_hdf5_dataset(path, "exam_id", exam_ids)
        problem = _layout_problem(tracings, exam_ids)
        if problem is not None:
            raise InputError(path, problem)
    except BaseException as exc:
        f.close()
        if isinstance(exc, InputError) or not isinstance(exc, (OSError, RuntimeError, KeyError, ValueError)):
            raise
        # HDF5's own errors on a damaged file
        raise InputError(path, f"damaged HDF5 file ({exc.__class__.__name__}: {exc})") from None
    return tracings, exam_ids, f


def _layout_problem(tracings, exam_ids) -> str | None:  # h5py.Dataset, h5py.Dataset | None
    import h5py

    if tracings.ndim != 3 or tracings.shape[1:] != (N_SAMPLES, len(LEADS)):
        return f"'tracings' has shape {tracings.shape}, expected (N, {N_SAMPLES}, {len(LEADS)})"
    if tracings.shape[0] == 0:
        return "'tracings' holds no exams"
    if tracings.dtype.kind != "f":
        return f"'tracings' has dtype {tracings.dtype}, expected float32 or float64"
    if exam_ids is None:
        return None
    if exam_ids.shape != (tracings.shape[0],):
        return f"'exam_id' has shape {exam_ids.shape}, expected ({tracings.shape[0]},)"
    kind = exam_ids.dtype.kind
    if not (kind in "iu" or (kind == "S" and exam_ids.dtype.itemsize <= untrusted.MAX_EXAM_ID_CHARS)
            or h5py.check_string_dtype(exam_ids.dtype) is not None):
        return f"'exam_id' has dtype {exam_ids.dtype}, expected integers or strings"
    return None


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
            except (OSError, RuntimeError, ValueError) as exc:  # a damaged chunk inside an otherwise valid file
                raise InputError(path, f"exams {start}-{stop - 1} unreadable ({exc})") from None
            if raw_ids is not None:
                ids = [_id_text(path, x) for x in raw_ids]
            else:
                ids = [f"{path.stem}:{i}" for i in range(start, stop)]
            yield ids, block


def _id_text(path: Path, value: object) -> str:
    if isinstance(value, bytes):
        text = value.decode(errors="replace")
    elif isinstance(value, np.generic):
        text = str(value.item())
    else:
        text = str(value)
    if len(text) > untrusted.MAX_EXAM_ID_CHARS:
        raise InputError(path, f"an exam_id of {len(text):,} characters (at most {untrusted.MAX_EXAM_ID_CHARS})")
    return text


def code_exam_recording(exam_id: str, path: str | Path, x: np.ndarray) -> tuple[Recording, tuple[int, int]]:
    """One exam of a CODE-layout file as a Recording of what was recorded (400 Hz, model lead order),
    without the rows of zeros stored at either end, and how many there were (before, after):
    `preprocess.prepare(recording, padding=...)` puts them back where they were."""
    start, stop = unpadded_span(x)
    recording = Recording(x[start:stop], float(SAMPLING_RATE_HZ), LEADS, UNITS, id=exam_id, source=str(path),
                          format="hdf5")
    return recording, (start, N_SAMPLES - stop)

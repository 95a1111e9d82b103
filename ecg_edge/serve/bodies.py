"""Request bodies -> exams: an upload is read as `infer` reads a file, from a private temporary folder.

The body is written to disk under the name the client gave (its last component, checked) and handed to
the same readers `infer` uses: the format is found by content, XML is parsed defused, HDF5 layouts are
checked, NaN leads are refused. Nothing of the temporary folder outlives the request, and no server path
reaches a response: an exam's source is the name the client gave.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecg_edge.errors import InputError
from ecg_edge.exams import Exam, ReadOptions, iter_exams
from ecg_edge.readers import UnknownFormat, format_of

log = logging.getLogger("ecg_edge.serve")
DEFAULT_NAME = "recording"
# A file name as a client may give it: no folders, no hidden files, no odd characters.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MAX_FILES = 8  # a WFDB record: a header and its signal file(s)


class BodyError(InputError):
    """A request whose body cannot be served, with the HTTP status that says why."""

    def __init__(self, status: int, problem: str):
        super().__init__(None, problem)
        self.status = status


@dataclass(frozen=True)
class Upload:
    name: str
    data: bytes


def checked_name(name: str | None) -> str:
    """The client's file name, reduced to its last component and checked."""
    base = (name or DEFAULT_NAME).replace("\\", "/").rsplit("/", 1)[-1]
    if not _NAME.fullmatch(base):
        raise BodyError(400, f"file name {base!r}: use letters, digits, '.', '_' and '-' only")
    return base


def read_uploads(
    uploads: Sequence[Upload], options: ReadOptions,
    read: Callable[[list[Path], ReadOptions], list[tuple[Exam, np.ndarray]]] | None = None,
) -> list[tuple[Exam, np.ndarray]]:
    """(exam, model input) for every exam of the uploaded recording: one for most formats, one per
    exam of an HDF5 file; a WFDB record comes as its header and signal files. `read`: how (the
    replica's input workers, `InputPool.read`); None: here."""
    if not uploads or not any(u.data for u in uploads):
        raise BodyError(400, "empty body: send one recording (any format `ecg-edge infer` reads)")
    if len(uploads) > MAX_FILES:
        raise BodyError(400, f"{len(uploads)} files: a recording is at most {MAX_FILES} "
                             "(a WFDB header and its signals)")
    names = [checked_name(u.name) for u in uploads]
    if len(set(names)) != len(names):
        raise BodyError(400, "two uploaded files have the same name")
    with tempfile.TemporaryDirectory(prefix="ecg-edge-serve-") as folder:
        for name, upload in zip(names, uploads, strict=True):
            (Path(folder) / name).write_bytes(upload.data)
        target = _recording_file(Path(folder), names)
        try:
            fmt = format_of(target)
        except InputError as exc:
            status = 415 if isinstance(exc, UnknownFormat) else 400
            raise BodyError(status, f"{target.name}: {_unplaced(exc.problem, folder)}") from None
        if fmt == "npy" and (options.fs is None or not options.leads):
            raise BodyError(400, ".npy carries no sampling rate or lead names: pass the fs and leads query parameters")
        try:
            exams = read([target], options) if read else list(iter_exams([target], options, on_skip=lambda m: None))
        except InputError as exc:  # the temporary path is the server's business, the name the client's
            raise BodyError(400, f"{target.name}: {_unplaced(exc.problem, folder)}") from None
        except Exception as exc:  # a library's own error on a malformed file: still the body's fault
            log.warning("unreadable upload %s: %r", target.name, exc)
            raise BodyError(400, f"{target.name}: cannot be read ({type(exc).__name__})") from None
    if not exams:
        raise BodyError(400, f"{target.name}: holds no exam")
    for exam, _ in exams:
        exam.source = target.name
        if exam.provenance:
            exam.provenance["source"] = target.name
    return exams


def _unplaced(problem: str, folder: str) -> str:
    """A reader's message without the server's folders (a library may name the file it opened)."""
    for place in (str(Path(folder).resolve()), folder, tempfile.gettempdir()):
        problem = problem.replace(place + "/", "").replace(place, "")
    return problem


def _recording_file(folder: Path, names: list[str]) -> Path:
    """The file to read: the one uploaded, or a WFDB record's header."""
    headers = [n for n in names if n.lower().endswith(".hea")]
    if len(names) == 1 and not headers:
        return folder / names[0]
    if len(headers) != 1:
        raise BodyError(400, f"{len(names)} files ({', '.join(names)}): several files are one WFDB record, "
                             "its .hea header and the signal files it names")
    return folder / headers[0]

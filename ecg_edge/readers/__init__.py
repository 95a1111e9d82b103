"""The one reader table: a file's format is found by its content, then its reader makes `Recording`s.

| format          | found by                                   | module     |
| --------------- | ------------------------------------------ | ---------- |
| hdf5            | HDF5 signature (CODE layout, many exams)    | hdf5.py    |
| dicom           | `DICM` at byte 128                          | dicom.py   |
| edf             | `0` and 7 spaces at byte 0                  | edf.py     |
| npy             | `\\x93NUMPY` at byte 0                      | npy.py     |
| ge-muse         | XML root `RestingECG`                       | muse.py    |
| hl7-aecg        | XML root `AnnotatedECG` in urn:hl7-org:v3   | aecg.py    |
| philips-sierra  | XML root `restingecgdata` (Philips ns)      | sierra.py  |
| wfdb            | a `.hea` header (a record is several files) | wfdb.py    |

A file whose content matches nothing goes to the reader its suffix names, for that reader's own
error; with no such suffix it is refused, naming what its first bytes look like.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ecg_edge import untrusted
from ecg_edge.errors import InputError
from ecg_edge.readers.hdf5 import hdf5_exam_count, iter_hdf5_chunks
from ecg_edge.recording import Recording
from ecg_edge.spec import HDF5_SUFFIXES, LEADS, SAMPLING_RATE_HZ, UNITS

__all__ = ["FORMATS", "UnknownFormat", "detect_format", "expand_inputs", "hdf5_exam_count", "iter_hdf5_chunks",
           "iter_recordings", "read_recording"]

FORMATS = ("hdf5", "dicom", "edf", "npy", "ge-muse", "hl7-aecg", "philips-sierra", "wfdb")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
NPY_MAGIC = b"\x93NUMPY"
# Enough of a file's start for every signature above (DICOM's sits at 128).
MAGIC_BYTES = 132
_BY_SUFFIX = {**{s: "hdf5" for s in HDF5_SUFFIXES}, ".dcm": "dicom", ".edf": "edf", ".npy": "npy",
              ".hea": "wfdb", ".dat": "wfdb", ".mat": "wfdb"}


def _xml_format(path: Path) -> str | None:
    from ecg_edge.readers import aecg, muse, safe_xml, sierra

    tag = safe_xml.root_tag(path)
    return {muse.ROOT: "ge-muse", aecg.ROOT: "hl7-aecg", sierra.ROOT: "philips-sierra"}.get(tag)


def _looks_like_xml(head: bytes) -> bool:
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    # UTF-16 files (Philips 1.04 writes them) start with a byte-order mark.
    return text.startswith(b"<") or head.startswith((b"\xff\xfe", b"\xfe\xff"))


def detect_format(path: str | Path) -> str | None:
    """The format of a file by its content (WFDB by its header); None when nothing matches."""
    path = Path(path)
    if path.suffix.lower() in {".hea", ".dat", ".mat"} or (not path.exists() and path.with_suffix(".hea").exists()):
        return "wfdb"
    if not path.exists():
        raise InputError(path, "no such file or WFDB record")
    head = untrusted.read_head(path, MAGIC_BYTES)
    from ecg_edge.readers import dicom, edf

    # HDF5 allows a user block before the signature, at 512, 1024, 2048 ... bytes.
    if head.startswith(HDF5_SIGNATURE) or _hdf5_after_user_block(path):
        return "hdf5"
    if head[dicom.MAGIC_OFFSET:dicom.MAGIC_OFFSET + 4] == dicom.MAGIC:
        return "dicom"
    if head.startswith(edf.MAGIC):
        return "edf"
    if head.startswith(NPY_MAGIC):
        return "npy"
    if _looks_like_xml(head):
        return _xml_format(path)
    return None


def _hdf5_after_user_block(path: Path) -> bool:
    size = path.stat().st_size
    offset = 512
    with open(path, "rb") as f:
        while offset + len(HDF5_SIGNATURE) <= min(size, 2**20):
            f.seek(offset)
            if f.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
                return True
            offset *= 2
    return False


def _describe_head(path: Path) -> str:
    head = untrusted.read_head(path, 16)
    if not head:
        return "the file is empty"
    if _looks_like_xml(head):
        from ecg_edge.readers import safe_xml

        return f"XML with root element <{safe_xml.local_name(safe_xml.root_tag(path))}>"
    text = head.decode("ascii", errors="replace")
    shown = "".join(c if c.isprintable() else "." for c in text)
    return f"it starts with {shown!r}"


class UnknownFormat(InputError):
    """A file whose content and suffix match no reader."""


def format_of(path: Path) -> str:
    """The format to read `path` as: by content, else by suffix (that format's reader then says what is
    wrong with the file); an unknown file is an InputError."""
    found = detect_format(path) or _BY_SUFFIX.get(path.suffix.lower())
    if found is not None:
        return found
    supported = ", ".join(FORMATS)
    raise UnknownFormat(path, f"unknown ECG file format: {_describe_head(path)} (readable: {supported})")


def _readers() -> dict[str, Callable[[Path], Recording]]:
    from ecg_edge.readers import aecg, dicom, edf, muse, sierra, wfdb

    return {"dicom": dicom.read_dicom, "edf": edf.read_edf, "ge-muse": muse.read_muse, "hl7-aecg": aecg.read_aecg,
            "philips-sierra": sierra.read_sierra, "wfdb": wfdb.read_wfdb}


def read_recording(
    path: str | Path,
    fs: float | None = None,
    leads: Sequence[str] | None = None,
    units: str = UNITS,
    fmt: str | None = None,
) -> Recording:
    """Read one single-exam recording in any format; `fs`, `leads` and `units` are for `.npy` only.
    `fmt` is the format when the caller has found it already (`format_of`)."""
    path = Path(path)
    fmt = fmt or format_of(path)
    if fmt == "hdf5":
        raise InputError(path, "an HDF5 file may hold many exams: use iter_recordings()")
    try:
        if fmt == "npy":
            from ecg_edge.readers.npy import read_npy

            return read_npy(path, fs, leads, units)
        return _readers()[fmt](path)
    except InputError:
        raise
    except OSError as exc:  # permissions, a file that vanished or is cut short while reading
        raise InputError(path, f"cannot be read ({exc.strerror or exc})") from None
    except (ArithmeticError, AttributeError, LookupError, MemoryError, RecursionError, TypeError, ValueError) as exc:
        # a file that passed the readers' checks and still breaks a parser: the file's fault, not the program's
        raise InputError(path, f"cannot be read ({exc.__class__.__name__}: {exc})") from None


def is_hdf5(path: Path) -> bool:
    return format_of(path) == "hdf5"


def _folder_files(folder: Path) -> list[Path]:
    """Readable recordings in a folder and its subfolders, in a stable order; other files are left."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if name.startswith(".") or path.suffix.lower() in {".dat", ".mat"}:
                continue  # hidden files; WFDB signal files are read through their header
            if not untrusted.is_regular(path):
                continue  # a FIFO, device or socket is no recording (opening a FIFO would wait for a writer)
            try:
                if detect_format(path) is not None:
                    found.append(path)
            except InputError:
                if path.suffix.lower() in {".xml", *_BY_SUFFIX}:
                    found.append(path)  # meant to be read: its reader reports the problem
    return found


def expand_inputs(paths: Sequence[str | Path]) -> list[Path]:
    """Files to read from the given paths: a folder stands for the recordings in it (recursively)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            readable = _folder_files(p)
            if not readable:
                raise InputError(p, "folder holds no readable ECG file")
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
    """Every recording in a file or folder, lazily: each exam of an HDF5 file, and every other format."""
    for p in expand_inputs([path]):
        if is_hdf5(p):
            for ids, block in iter_hdf5_chunks(p):
                for exam_id, signal in zip(ids, block, strict=True):
                    yield Recording(
                        signal=signal, fs=float(SAMPLING_RATE_HZ), leads=LEADS, units=UNITS,
                        id=exam_id, source=str(p), format="hdf5",
                    )
        else:
            yield read_recording(p, fs=fs, leads=leads, units=units)

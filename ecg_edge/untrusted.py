"""The one policy for files from outside: what a reader may open, and the bounds on what a file declares.

Every reader asks here before it does the work a file asks for: a recording is a regular file (a FIFO,
device or socket could hang the reader or feed it without end), the files a header names stay in its
folder, an HDF5 file reaches nothing outside itself (no external storage, external or soft links,
virtual datasets, or filters beyond the built-in ones, which would load plugins), and every number a
file declares (sampling rate, duration, channels, samples per frame, decoded size) is within the
bounds below, checked before memory or time are spent on it.
"""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path
from typing import Any

from ecg_edge.errors import InputError

# Sampling rates of ECG devices lie well inside this (resting ECGs: 100-1,000 Hz; research: 10 kHz).
MIN_RATE_HZ = 50.0
MAX_RATE_HZ = 20_000.0
# The model reads 10.24 s; a longer recording is read whole, then cropped: an hour at most.
MAX_SECONDS = 3600.0
MAX_CHANNELS = 64
# Samples of one recording, all channels together (an hour of 12 leads at 500 Hz is 21.6 M): 256 MiB as float64.
MAX_VALUES = 2**25
# WFDB's samples per frame (a signal sampled at a multiple of the frame rate).
MAX_SAMPLES_PER_FRAME = 64
# What compressed data (DICOM deflate, Philips XLI) may decode to, refused before it is decoded whole:
# MAX_VALUES samples of 16 bits, twice over.
MAX_DECODED_BYTES = 128 * 2**20
# An HDF5 dataset may declare at most this many bytes per byte it stores (compression of an ECG gives 2-5):
# a small file declaring a large dataset filled with its fill value is refused, not read.
MAX_HDF5_EXPANSION = 64
# HDF5 filters built into the library and h5py (deflate, shuffle, fletcher32, szip, nbit, scaleoffset,
# LZF); any other id would make HDF5 search its plugin folders for code to load.
HDF5_BUILTIN_FILTERS = frozenset({1, 2, 3, 4, 5, 6, 32000})
# HDF5 decodes a compressed chunk whole to read any part of it: a chunk is at most this.
MAX_HDF5_CHUNK_BYTES = 128 * 2**20
MAX_EXAM_ID_CHARS = 256
# Files read whole, by size: a resting ECG in XML is well under 10 MB (an HL7 aECG of 12 leads x 10 s is about
# 0.5 MB), a WFDB header about 1 KB, a resting DICOM ECG a few MB (an hour of ambulatory one a few hundred).
MAX_XML_BYTES = 64 * 2**20
MAX_WFDB_HEADER_BYTES = 2**20
MAX_DICOM_BYTES = 512 * 2**20
# Elements of one XML file (the real ones hold 500 to 1,500): a parsed element costs a few hundred bytes,
# so a file of millions of empty elements is refused as it is parsed.
MAX_XML_ELEMENTS = 100_000
# numpy's own default for an .npy header (a 2-D array's is under 128 bytes).
MAX_NPY_HEADER_BYTES = 10_000

_KINDS = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder"}


def _kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def is_regular(path: str | Path) -> bool:
    """Whether `path` is a regular file (following links), without opening it."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def check_regular(path: str | Path) -> os.stat_result:
    """The file's status; an InputError unless it is a regular file. Checked before any open, which
    would block on a FIFO."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(status.st_mode):
        raise InputError(path, f"is {_kind(status.st_mode)}, not a regular file")
    return status


def read_head(path: str | Path, n: int) -> bytes:
    """The first `n` bytes of a regular file, opened so that a FIFO or device put in its place after the
    check cannot block (O_NONBLOCK) and checked again on the open descriptor."""
    check_regular(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except IsADirectoryError:
        raise InputError(path, "is a folder, expected a file") from None
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror or exc})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise InputError(path, f"is {_kind(mode)}, not a regular file")
        return os.read(fd, n)
    finally:
        os.close(fd)


def named_file(path: str | Path, folder: Path, name: str, what: str) -> Path:
    """A file a header names (`name`, e.g. a WFDB signal file): a plain name in `folder`, a regular file.
    `path` is the header, for the message."""
    candidate = folder / name
    if (not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name
            or candidate.resolve().parent != folder.resolve()):
        raise InputError(path, f"{what} {name!r} is not a file name in the header's folder")
    if not candidate.exists():
        raise InputError(path, f"{what} {name!r} is missing")
    try:
        check_regular(candidate)
    except InputError as exc:
        raise InputError(path, f"{what} {name!r} {exc.problem}") from None
    return candidate


def number(path: str | Path | None, value: Any, what: str) -> float:
    """A number a file declares, as a finite float; anything else an InputError naming it."""
    try:
        result = float(value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(path, f"{what} {str(value)[:40]!r} is not a number") from None
    if not math.isfinite(result):
        raise InputError(path, f"{what} {value!r} is not a finite number")
    return result


def check_rate(path: str | Path | None, fs: Any, what: str = "sampling rate") -> float:
    """A declared sampling rate, within MIN_RATE_HZ..MAX_RATE_HZ."""
    rate = number(path, fs, what)
    if not MIN_RATE_HZ <= rate <= MAX_RATE_HZ:
        raise InputError(path, f"invalid {what} {rate:g} Hz: recordings are read at {MIN_RATE_HZ:g} to "
                               f"{MAX_RATE_HZ:,.0f} Hz")
    return rate


def check_channels(path: str | Path, channels: int) -> None:
    if channels > MAX_CHANNELS:
        raise InputError(path, f"{channels:,} channels: a recording is read with up to {MAX_CHANNELS}")


def check_extent(path: str | Path, samples: float, channels: int, fs: float) -> None:
    """A recording's declared length (samples per channel at `fs`, a rate already checked) and channels."""
    check_channels(path, channels)
    if samples < 0:
        raise InputError(path, f"{samples:g} samples declared")
    if samples / fs > MAX_SECONDS:
        raise InputError(path, f"{samples / fs:,.0f} s declared: a recording is read up to {MAX_SECONDS:,.0f} s")
    if samples * channels > MAX_VALUES:
        raise InputError(path, f"{samples:,.0f} samples x {channels} channels: more than the {MAX_VALUES:,} "
                               "read from one recording")


def check_decoded(path: str | Path, decoded: int, what: str) -> None:
    if decoded > MAX_DECODED_BYTES:
        raise InputError(path, f"{what} decodes to more than {MAX_DECODED_BYTES // 2**20} MiB")


def check_signal_dtype(path: str | Path, dtype: Any, what: str = "array") -> None:
    """Signals are real numbers: integers or floats (not complex, dates, strings, objects or records)."""
    if dtype.kind not in "iuf" or dtype.fields is not None or dtype.subdtype is not None:
        raise InputError(path, f"{what} has dtype {dtype}: a signal is real numbers (integers or floats)")


def hdf5_link(path: str | Path, group: Any, name: str) -> Any | None:
    """`group[name]` when it is a dataset stored in this file (a hard link), None when absent; a soft
    link, an external link (another file) or a user-defined link is refused, never followed."""
    import h5py

    if name not in set(group.keys()):  # the names alone: nothing is resolved
        return None
    link = group.get(name, getlink=True)
    if not isinstance(link, h5py.HardLink):
        kind = {h5py.SoftLink: "a soft link", h5py.ExternalLink: "an external link (to another file)"}
        raise InputError(path, f"'{name}' is {kind.get(type(link), 'a user-defined link')}: only data stored "
                               "in the file are read")
    return group[name]


def check_hdf5_dataset(path: str | Path, name: str, dataset: Any) -> None:
    """`dataset` reads from this file only, with built-in filters, and declares no more than the file can
    hold: refused otherwise, before a byte of it is read."""
    import h5py
    from h5py import h5d

    if not isinstance(dataset, h5py.Dataset):
        raise InputError(path, f"'{name}' is not a dataset")
    plist = dataset.id.get_create_plist()
    if plist.get_layout() == h5d.VIRTUAL:
        raise InputError(path, f"'{name}' is a virtual dataset (its data live in other files)")
    if plist.get_external_count():
        raise InputError(path, f"'{name}' keeps its data in external files")
    for i in range(plist.get_nfilters()):
        code = plist.get_filter(i)[0]
        if code not in HDF5_BUILTIN_FILTERS:
            raise InputError(path, f"'{name}' needs HDF5 filter {code}, not a built-in one (plugins are not loaded)")
    if plist.get_layout() == h5d.CHUNKED:
        chunk = math.prod(plist.get_chunk()) * dataset.dtype.itemsize
        if chunk > MAX_HDF5_CHUNK_BYTES:
            raise InputError(path, f"'{name}' is stored in chunks of {chunk:,} bytes: at most "
                                   f"{MAX_HDF5_CHUNK_BYTES // 2**20} MiB are read at once")
    if dataset.dtype.kind == "O" or dataset.size == 0:
        return  # variable-length strings: their bytes live in the file's heap, checked as they are read
    stored = dataset.id.get_storage_size()
    if dataset.nbytes > MAX_HDF5_EXPANSION * max(stored, 1) and dataset.nbytes > 2**20:
        raise InputError(path, f"'{name}' declares {dataset.nbytes:,} bytes ({dataset.shape}) but the file stores "
                               f"{stored:,} of them")

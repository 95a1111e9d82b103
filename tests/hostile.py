"""Hostile files every reader and the server must refuse quickly, without reading more than they need.

`write_corpus` writes one file (or WFDB record) per attack into a folder, beside `secret.bin`, a file
outside any recording that holds MARKER: nothing read from a recording may ever carry it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE RestingECG [\n <!ENTITY a "aaaaaaaaaa">\n'
    + "".join(f' <!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">\n' for i in range(9))
    + ']>\n<RestingECG>&j;</RestingECG>\n'
)
EXTERNAL_ENTITY = ('<?xml version="1.0"?>\n<!DOCTYPE RestingECG [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
                   "<RestingECG><Waveform>&x;</Waveform></RestingECG>\n")

MARKER = b"MARKER-7f3a-outside-the-input"
SECRET = "secret.bin"
SHAPE = (4096, 12)


def _secret(folder: Path) -> Path:
    path = folder / SECRET
    if not path.exists():
        path.write_bytes(MARKER * (4096 * 12 * 4 // len(MARKER) + 1))
    return path


def _h5(path: Path, build: Callable) -> Path:
    import h5py

    with h5py.File(path, "w") as f:
        build(f)
    return path


def _code_file(path: Path) -> Path:
    return _h5(path, lambda f: f.create_dataset("tracings", data=np.zeros((1, *SHAPE), "f4")))


def hdf5_cases(folder: Path) -> dict[str, Path]:
    """HDF5 files that point outside themselves, load plugins, or declare more than they hold."""
    import h5py

    secret = _secret(folder)
    target = _code_file(folder / "target.h5.other")  # another file, not an input (no HDF5 suffix)

    def external(f):
        f.create_dataset("tracings", shape=(1, *SHAPE), dtype="f4", external=[(str(secret), 0, 4096 * 12 * 4)])

    def virtual(f):
        layout = h5py.VirtualLayout(shape=(1, *SHAPE), dtype="f4")
        layout[:] = h5py.VirtualSource(str(target), "tracings", shape=(1, *SHAPE))
        f.create_virtual_dataset("tracings", layout)

    def soft_self(f):
        f["tracings"] = h5py.SoftLink("/tracings")

    def soft_other(f):
        f.create_dataset("data", data=np.zeros((1, *SHAPE), "f4"))
        f["tracings"] = h5py.SoftLink("/data")

    def plugin(f):
        f.create_dataset("tracings", data=np.zeros((1, *SHAPE), "f4"), chunks=(1, *SHAPE), compression=32004,
                         allow_unknown_filter=True)

    def fill(f):
        f.create_dataset("tracings", shape=(1000, *SHAPE), dtype="f4", fillvalue=1.0)

    def many(f):
        f.create_dataset("tracings", shape=(10**8, *SHAPE), dtype="f4", chunks=(1, *SHAPE))

    def long_id(f):
        f.create_dataset("tracings", data=np.zeros((1, *SHAPE), "f4"))
        f.create_dataset("exam_id", data=["x" * 1_000_000], dtype=h5py.string_dtype())

    def record_id(f):
        f.create_dataset("tracings", data=np.zeros((1, *SHAPE), "f4"))
        f.create_dataset("exam_id", data=np.zeros(1, dtype=[("a", "i4"), ("b", "f4")]))

    def external_ids(f):
        f.create_dataset("tracings", data=np.zeros((1, *SHAPE), "f4"))
        f.create_dataset("exam_id", shape=(1,), dtype="S8", external=[(str(secret), 0, 8)])

    builders = {"external": external, "virtual": virtual, "soft-self": soft_self, "soft-other": soft_other,
                "plugin": plugin, "fill": fill, "many": many, "long-id": long_id, "record-id": record_id,
                "external-ids": external_ids,
                "external-link": lambda f: f.__setitem__("tracings", h5py.ExternalLink(str(target), "/tracings"))}
    return {f"hdf5 {name}": _h5(folder / f"{name}.h5", build) for name, build in builders.items()}


def escape_id_file(path: Path) -> Path:
    """A valid file whose exam id carries terminal escapes and a newline: read, but never printed raw."""
    import h5py

    def build(f):
        f.create_dataset("tracings", data=np.zeros((1, *SHAPE), "f4"))
        f.create_dataset("exam_id", data=["\x1b]0;pwned\x07\x1b[2Jid\nsecond line"], dtype=h5py.string_dtype())

    return _h5(path, build)

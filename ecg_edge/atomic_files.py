"""Write a file all at once: into a temporary file beside it, then renamed into place.

A reader sees the old file or the new one, never half of one; a failure leaves nothing behind.
The data and the rename are flushed to disk (fsync of the file and of its folder): edge devices
lose power.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from ecg_edge import stop


def fsync_path(path: Path) -> None:
    """Flush a file, or a folder's entries, to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on folders; the rename still happened
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_target(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` for a writer to fill; it becomes `path` only if the block succeeds."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        stop.check()  # a Ctrl-C swallowed during the writing still keeps the result from appearing
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are for everyone to read
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, write: Callable[[IO[str]], Any]) -> None:
    """Call `write(f)` on a text file that becomes `path` only when it returns."""
    with atomic_target(path) as tmp, open(tmp, "w", newline="") as f:
        write(f)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """`data` becomes `path` all at once (see `atomic_target`)."""
    with atomic_target(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text))


def check_target(path: str | Path, suffixes: tuple[str, ...] = ()) -> None:
    """Before any work: `path` can be written (its folder exists and is writable, it is not a folder,
    its suffix is one of `suffixes` when given). Raises InputError naming the path."""
    from ecg_edge.errors import InputError

    path = Path(path)
    if suffixes and path.suffix.lower() not in suffixes:
        raise InputError(path, f"must end in {' or '.join(suffixes)}")
    if path.is_dir():
        raise InputError(path, "is a folder, expected a file name")
    if not path.parent.is_dir():
        raise InputError(path.parent, "output folder does not exist")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise InputError(path.parent, "output folder is not writable (permission denied)")
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(path, "file is not writable (permission denied)")

"""Staging folders: work is written into a hidden folder on the target's file system, then renamed
into place, so that a reader sees the old result or the new one and a failure leaves the old one.

A staging folder is named `.<kind>-*` and holds `owner.json` (host, pid, the process's start time):
a later run of the same kind removes the folders that a killed process left behind (same host, and
its process gone; or no owner and a day old), and leaves a live one alone. What moves into place is
flushed to disk first, and the folder it lands in after (as `atomic_files` does for one file).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ecg_edge.atomic_files import fsync_path

OWNER_FILE = "owner.json"
# A folder whose owner file is missing or unreadable is someone's only once it is this old: its
# process may be between creating the folder and writing the file.
OWNERLESS_MAX_AGE_S = 24 * 3600


def _process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, from /proc), or None where that cannot be
    read: with the pid, it tells a killed owner's pid taken by a new process from the owner itself."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # the name in parentheses may hold spaces
    return fields[19] if len(fields) > 19 else None


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _owner_gone(owner: dict[str, Any]) -> bool:
    """Whether the process that wrote `owner` (on this host) has ended."""
    try:
        pid = int(owner.get("pid", -1))
    except (TypeError, ValueError):
        return True
    if not _alive(pid):
        return True
    started = owner.get("started")
    now_started = _process_start(pid)
    return started is not None and now_started is not None and started != now_started


def is_stale(folder: Path, now: float | None = None) -> bool:
    """Whether a staging folder was left by a process that is gone. Another host's folder (a shared
    disk) is not ours to judge: it stays."""
    try:
        owner = json.loads((folder / OWNER_FILE).read_text())
    except (OSError, ValueError):
        owner = None
    if not isinstance(owner, dict):
        try:
            age = (now if now is not None else time.time()) - folder.stat().st_mtime
        except OSError:  # removed meanwhile
            return False
        return age > OWNERLESS_MAX_AGE_S
    if owner.get("host") != socket.gethostname():
        return False
    return _owner_gone(owner)


def remove_stale(parent: Path, kind: str) -> list[Path]:
    """Remove the `.<kind>-*` staging folders in `parent` that killed processes left; the removed."""
    removed = []
    for folder in sorted(parent.glob(f".{kind}-*")):
        if folder.is_dir() and not folder.is_symlink() and is_stale(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def new_stage(parent: Path, kind: str) -> Path:
    """A fresh staging folder `.<kind>-*` in `parent` (which must exist), marked with its owner, after
    removing the ones killed processes of this kind left there."""
    remove_stale(parent, kind)
    stage = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=parent))
    owner = {"host": socket.gethostname(), "pid": os.getpid(), "started": _process_start(os.getpid()),
             "created": time.time()}
    (stage / OWNER_FILE).write_text(json.dumps(owner))
    return stage


@contextlib.contextmanager
def staged(parent: Path, kind: str) -> Iterator[Path]:
    """A new staging folder in `parent` (see `new_stage`), removed when the block ends, however it ends."""
    stage = new_stage(parent, kind)
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _fsync_tree(path: Path) -> None:
    """Flush every file under `path` (or `path` itself) to disk, and the folders that hold them."""
    if not path.is_dir():
        fsync_path(path)
        return
    for folder, _, names in os.walk(path):
        for name in names:
            fsync_path(Path(folder) / name)
        fsync_path(Path(folder))


def move_into(stage: Path, names: Iterable[str], dest: Path) -> None:
    """Move each of `names` (files or folders) from `stage` into `dest`, replacing what is there: a
    file by one rename, a folder by moving the old one into the stage (removed with it) first, so
    that no reader meets a half-deleted folder."""
    names = list(names)
    for name in names:
        _fsync_tree(stage / name)
    for name in names:
        target = dest / name
        if target.is_dir() and not target.is_symlink():
            os.replace(target, Path(tempfile.mkdtemp(prefix=".replaced-", dir=stage)) / name)
        os.replace(stage / name, target)
    fsync_path(dest)


def rename_into_place(stage: Path, target: Path) -> None:
    """The whole staging folder becomes `target` (absent, or an empty folder), owner mark removed."""
    (stage / OWNER_FILE).unlink(missing_ok=True)
    _fsync_tree(stage)
    if target.is_dir():
        target.rmdir()  # only an empty one: a folder with content is an error here
    os.replace(stage, target)
    fsync_path(target.parent)

"""A staging folder as a killed process leaves it: owned by a pid that has ended, on this host."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path


def dead_pid() -> int:
    """The pid of a process that has ended (and was reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def plant_stale(parent: Path, kind: str) -> Path:
    """`.<kind>-killed` in `parent`, with a file inside and an owner that is gone."""
    folder = parent / f".{kind}-killed"
    folder.mkdir(parents=True)
    (folder / "owner.json").write_text(json.dumps({"host": socket.gethostname(), "pid": dead_pid()}))
    (folder / "half-written").write_bytes(b"x" * 100)
    return folder

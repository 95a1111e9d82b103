"""Error types the CLI turns into one line on stderr: a gate that failed (exit code 1, with its
numbers), bad input (exit code 2) and a machine that cannot run what was asked (exit code 3: a
missing library, a driver too old, GPU memory full)."""

from __future__ import annotations

import unicodedata
from pathlib import Path

# An error is one line of at most this many characters, whatever a file or its name holds.
MAX_LINE_CHARS = 360
MAX_PATH_CHARS = 160


def one_line(text: str, limit: int = MAX_LINE_CHARS) -> str:
    """`text` as one printable line: control and format characters (newlines, terminal escapes,
    bidirectional overrides) escaped as Python would write them, and the middle cut when it is longer than
    `limit` (the end of a path names the file)."""
    shown = "".join(repr(c)[1:-1] if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c for c in text)
    if len(shown) <= limit:
        return shown
    head = limit // 3
    return f"{shown[:head]}...{shown[len(shown) - (limit - head - 3):]}"


class InputError(ValueError):
    """Bad user input: names the file (when there is one) and the problem, in one line (`one_line`)."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = one_line(str(problem), MAX_LINE_CHARS - MAX_PATH_CHARS - 2)
        shown = None if self.path is None else one_line(self.path, MAX_PATH_CHARS)
        super().__init__(f"{shown}: {self.problem}" if shown else self.problem)


class MachineError(RuntimeError):
    """The input is fine but this machine cannot run it: carries the library's own message."""

    def __init__(self, what: str, message: str):
        self.what = what
        self.message = message
        super().__init__(f"{what}: {message}")


class GateError(RuntimeError):
    """A file or precision failed its parity gate; the message carries the numbers."""

"""Error types the CLI turns into one line on stderr: a gate that failed (exit code 1, with its
numbers), bad input (exit code 2) and a machine that cannot run what was asked (exit code 3: a
missing library, a driver too old, GPU memory full)."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad user input: names the file (when there is one) and the problem."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class MachineError(RuntimeError):
    """The input is fine but this machine cannot run it: carries the library's own message."""

    def __init__(self, what: str, message: str):
        self.what = what
        self.message = message
        super().__init__(f"{what}: {message}")


class GateError(RuntimeError):
    """A file or precision failed its parity gate; the message carries the numbers."""

"""A stop asked for by a signal (Ctrl-C, SIGTERM), remembered as well as raised.

The KeyboardInterrupt a signal raises can land where Python swallows it (a finaliser, a callback
inside a C extension such as h5py) and the work then runs on. What it was asked is kept here, so
that the work stops at its next step (`check`) and, above all, never publishes its output
(`ecg_edge.atomic_files`) nor ends in success.
"""

from __future__ import annotations

import threading

_asked = threading.Event()


def ask() -> None:
    _asked.set()


def clear() -> None:
    _asked.clear()


def asked() -> bool:
    return _asked.is_set()


def check() -> None:
    """Raise KeyboardInterrupt where a stop was asked (and perhaps swallowed) before."""
    if _asked.is_set():
        raise KeyboardInterrupt

"""`.npy` arrays (samples, leads) or (leads, samples): the file carries no rate or lead names."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ecg_edge.errors import InputError
from ecg_edge.recording import Recording
from ecg_edge.spec import UNITS


def read_npy(
    path: str | Path, fs: float | None, leads: Sequence[str] | None, units: str = UNITS
) -> Recording:
    path = Path(path)
    if fs is None or not leads:
        raise InputError(path, ".npy carries no sampling rate or lead names: pass --fs and --leads")
    try:
        signal = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputError(path, f"not a readable .npy array ({exc})") from None
    if signal.ndim != 2:
        raise InputError(path, f"expected a 2-D array (samples, leads), got shape {signal.shape}")
    # Accept (leads, samples) too: the lead count tells the axes apart.
    if signal.shape[1] != len(leads) and signal.shape[0] == len(leads):
        signal = signal.T
    if signal.shape[1] != len(leads):
        raise InputError(path, f"array has shape {signal.shape} but {len(leads)} lead names were given")
    return Recording(
        signal=signal.astype(np.float64), fs=float(fs), leads=tuple(leads), units=units,
        id=path.stem, source=str(path), format="npy",
    )

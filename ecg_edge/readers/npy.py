"""`.npy` arrays (samples, leads) or (leads, samples): the file carries no rate or lead names."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ecg_edge import untrusted
from ecg_edge.errors import InputError
from ecg_edge.recording import Recording
from ecg_edge.spec import UNITS


def _check_header(path: Path, fs: float, n_leads: int) -> None:
    """The array the header declares, before it is loaded: a 2-D signal of real numbers whose bytes the
    file holds, within the policy's bounds."""
    size = untrusted.check_regular(path).st_size
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version not in ((1, 0), (2, 0)):
                raise InputError(path, f".npy format version {version[0]}.{version[1]}: 1.0 and 2.0 are read")
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f, max_header_size=untrusted.MAX_NPY_HEADER_BYTES)
            offset = f.tell()
    except (ValueError, OSError) as exc:
        raise InputError(path, f"not a readable .npy array ({exc})") from None
    untrusted.check_signal_dtype(path, dtype, ".npy array")
    if len(shape) != 2:
        raise InputError(path, f"expected a 2-D array (samples, leads), got shape {shape}")
    if shape[0] * shape[1] * dtype.itemsize != size - offset:
        raise InputError(path, f"header declares shape {shape} of {dtype} but the file holds {size - offset} bytes")
    samples, channels = (shape[1], shape[0]) if shape[0] == n_leads and shape[1] != n_leads else shape
    untrusted.check_extent(path, samples, channels, fs)


def read_npy(
    path: str | Path, fs: float | None, leads: Sequence[str] | None, units: str = UNITS
) -> Recording:
    path = Path(path)
    if fs is None or not leads:
        raise InputError(path, ".npy carries no sampling rate or lead names: pass --fs and --leads")
    fs = untrusted.check_rate(path, fs, "sampling rate (--fs)")
    _check_header(path, fs, len(leads))
    try:
        signal = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputError(path, f"not a readable .npy array ({exc})") from None
    # Accept (leads, samples) too: the lead count tells the axes apart.
    if signal.shape[1] != len(leads) and signal.shape[0] == len(leads):
        signal = signal.T
    if signal.shape[1] != len(leads):
        raise InputError(path, f"array has shape {signal.shape} but {len(leads)} lead names were given")
    return Recording(
        signal=signal.astype(np.float64), fs=float(fs), leads=tuple(leads), units=units,
        id=path.stem, source=str(path), format="npy",
    )

"""One ECG as a reader hands it to the preprocessing path."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ecg_edge.errors import InputError
from ecg_edge.spec import UNITS


@dataclass
class Recording:
    """One ECG: `signal` is (n_samples, n_leads), in `units`, sampled at `fs` Hz.

    `statements` are the recording device's own interpretation lines, as text, where the file
    carries them (GE MUSE, Philips Sierra); `format` names the reader that made it.
    """

    signal: np.ndarray
    fs: float
    leads: tuple[str, ...]
    units: str | tuple[str, ...] = UNITS
    id: str = ""
    source: str = ""
    labels: dict[str, int] = field(default_factory=dict)
    statements: tuple[str, ...] = ()
    format: str = ""

    def __post_init__(self) -> None:
        self.leads = tuple(self.leads)
        if self.signal.ndim != 2:
            raise InputError(self.source or None, f"signal must be 2-D (samples, leads), got shape {self.signal.shape}")
        if self.signal.shape[1] != len(self.leads):
            raise InputError(
                self.source or None,
                f"{self.signal.shape[1]} signal columns but {len(self.leads)} lead names",
            )

"""The backend protocol: every runner lives the same life, as Polygraphy's runners do.

    with backend:                       # activate() ... deactivate()
        probabilities = backend.infer(batch)

`infer` checks the feed against the input spec before running and records the time it took.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ecg_edge.errors import InputError
from ecg_edge.spec import LEADS, N_SAMPLES


class Backend:
    """Base of all backends: subclasses implement `_activate`, `_infer` and `_deactivate`.

    What every backend has: `path`, the model file it runs (an export file; the Keras reference's
    is the model the export was made from); `last_inference_s`, the host time of the last `infer`;
    `last_compute_s`, the device's own time for it where the runtime measures one (TensorRT's CUDA
    events), else None; `chosen_because`, why `auto` took it ('' when it was named or was the
    first GPU backend present); `isa`, the instruction set CPU runtimes' kernels ran on (e.g. AMX).
    """

    name = "backend"
    precision = "fp32"

    def __init__(self) -> None:
        self.active = False
        self.path: Path | None = None
        self.last_inference_s: float | None = None
        self.last_compute_s: float | None = None
        self.max_batch: int | None = None
        self.chosen_because = ""
        self.isa: str | None = None

    @property
    def choice(self) -> str:
        """Deprecated name of `chosen_because`."""
        warnings.warn("Backend.choice is now Backend.chosen_because (the alias goes in the next release)",
                      DeprecationWarning, stacklevel=2)
        return self.chosen_because

    @choice.setter
    def choice(self, because: str) -> None:
        warnings.warn("Backend.choice is now Backend.chosen_because (the alias goes in the next release)",
                      DeprecationWarning, stacklevel=2)
        self.chosen_because = because

    def activate(self) -> Backend:
        if not self.active:
            self._activate()
            self.active = True
        return self

    def deactivate(self) -> None:
        if self.active:
            self._deactivate()
            self.active = False

    close = deactivate

    def __enter__(self) -> Backend:
        return self.activate()

    def __exit__(self, *exc: Any) -> None:
        self.deactivate()

    def check_feed(self, batch: np.ndarray) -> np.ndarray:
        if batch.ndim != 3 or batch.shape[1:] != (N_SAMPLES, len(LEADS)):
            raise InputError(None, f"batch has shape {batch.shape}, expected (n, {N_SAMPLES}, {len(LEADS)})")
        return np.ascontiguousarray(batch, dtype=np.float32)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities (n, n_outputs) for a batch (n, 4096, 12) float32."""
        if not self.active:
            raise RuntimeError(f"{self.name} backend used before activate()")
        batch = self.check_feed(batch)
        start = time.perf_counter()
        limit = self.max_batch
        if limit is not None and batch.shape[0] > limit:
            # an engine's profile (or a captured graph) ends at `limit`: run the batch in parts
            out = np.concatenate([self._infer(batch[i:i + limit]) for i in range(0, batch.shape[0], limit)])
        else:
            out = self._infer(batch)
        self.last_inference_s = time.perf_counter() - start
        return out

    def describe(self) -> str:
        """What actually runs, e.g. which execution provider."""
        return self.name

    def _activate(self) -> None:
        raise NotImplementedError

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _deactivate(self) -> None:
        raise NotImplementedError


def infer_all(backend: Backend, x: np.ndarray, batch: int = 64) -> np.ndarray:
    """Run an array of any length through an active backend in batches."""
    return np.concatenate([backend.infer(x[i:i + batch]) for i in range(0, len(x), batch)])

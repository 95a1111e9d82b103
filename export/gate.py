"""The export's gate: every candidate compared with FP32 on the gate ECGs, and the record of it.

Candidates go in; what passed (the manifest's file entries), what was named and failed (`rejected`:
the export fails), what was added where offered and failed (`refused`: a warning), the runtime
precisions and the warnings come out, all from one object (as Polygraphy's Comparator).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ecg_edge.backends.base import infer_all
from ecg_edge.backends.onnxruntime import OnnxRuntimeBackend
from ecg_edge.errors import GateError, MachineError
from ecg_edge.export.options import ExportOptions
from ecg_edge.manifest import sha256_file
from ecg_edge.parity import Parity, compare


class ExportGateError(GateError):
    """A file failed its parity gate (it was not written); carries the numbers."""


def onnx_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    """An ONNX file's outputs on `x`, run by onnxruntime on the CPU (the gates' common runner)."""
    with OnnxRuntimeBackend(path) as backend:
        return infer_all(backend, x, batch=32)


def file_entry(path: Path, fmt: str, precision: str, variant: str = "default", **extra: Any) -> dict[str, Any]:
    """A file's manifest entry: what it is, its sha256 and size, and `extra` (its gate's numbers...)."""
    return {"format": fmt, "precision": precision, "variant": variant, "sha256": sha256_file(path),
            "bytes": path.stat().st_size, **extra}


def parity_fields(parity: Parity, real: Parity | None) -> dict[str, Any]:
    """A gate's numbers for a manifest entry: on all gate ECGs, and on the real ones alone where any."""
    return {"parity": parity.as_dict()} | ({"parity_real": real.as_dict()} if real is not None else {})


@dataclass
class Gate:
    """The gate ECGs (real ones first), their FP32 outputs, and the record of every verdict."""

    x: np.ndarray
    n_real: int
    fp32: np.ndarray
    thresholds: np.ndarray
    classes: list[str]
    options: ExportOptions
    warn: Callable[[str], None] = lambda message: None
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # passed: manifest entries by file name
    rejected: dict[str, Parity] = field(default_factory=dict)  # named, failed: the export fails
    refused: dict[str, Parity] = field(default_factory=dict)  # added where offered, failed: a warning
    runtime_precisions: dict[str, dict[str, Any]] = field(default_factory=dict)
    machine_failure: MachineError | None = None  # a named precision this machine could not run

    def measure(self, outputs: np.ndarray, precision: str, max_abs: float | None) -> tuple[Parity, Parity | None]:
        """The gate on all gate ECGs, and the figure on its real ones alone (what to expect on real data)."""
        parity = compare(self.fp32, outputs, self.thresholds, "onnx fp32", max_abs=max_abs,
                         min_exam_agreement=self.options.min_exam_agreement.get(precision), classes=self.classes)
        n = self.n_real
        real = compare(self.fp32[:n], outputs[:n], self.thresholds, "onnx fp32", classes=self.classes) if n else None
        return parity, real

    def admit(self, key: str, path: Path, fmt: str, precision: str, parity: Parity, real: Parity | None,
              variant: str = "default", **extra: Any) -> bool:
        """Record a file's verdict: its manifest entry if it passed, `rejected[key]` if not."""
        if parity.passed:
            self.files[path.name] = file_entry(path, fmt, precision, variant, **parity_fields(parity, real), **extra)
        else:
            self.rejected[key] = parity
        return parity.passed

    def runtime(self, precision: str, entry: dict[str, Any], parity: Parity | None, named: bool) -> None:
        """Record a runtime precision (a runtime running another precision's file): `entry` says how it
        ran, or why it did not (`refused`, with `machine` when this machine could not run it at all).
        A named one that failed fails the export; one added where offered is a warning."""
        if parity is not None and not parity.passed:
            (self.rejected if named else self.refused)[precision] = parity
        entry["named"] = named
        self.runtime_precisions[precision] = entry
        if "refused" in entry and not named:
            self.warn(f"warning: {precision.upper()} refused (export added it because this CPU offers it; "
                      f"nothing else changes): {entry['refused']}")
        elif entry.get("machine"):
            self.machine_failure = MachineError(precision, entry["refused"])

    def manifest_fields(self) -> dict[str, Any]:
        """The manifest's record of the gate: files, runtime precisions, rejected and refused."""
        return {"files": self.files, "runtime_precisions": self.runtime_precisions,
                "rejected": {k: v.as_dict() for k, v in self.rejected.items()},
                "refused": {k: v.as_dict() for k, v in self.refused.items()}}

    def raise_if_failed(self, what: str) -> None:
        """ExportGateError naming every rejected candidate with its numbers, else the machine's failure."""
        if self.rejected:
            numbers = "; ".join(f"{k}: {v.summary()}" for k, v in self.rejected.items())
            raise ExportGateError(f"{what} failed their gates and were not written: {numbers}")
        if self.machine_failure is not None:
            raise self.machine_failure

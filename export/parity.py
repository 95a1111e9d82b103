"""Compare a candidate's outputs with a reference's: the gate every exported file passes."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ecg_edge.spec import called


@dataclass
class Parity:
    reference: str
    n_exams: int
    max_abs_diff: float
    mean_abs_diff: float
    findings_agreement: float  # share of (exam, class) decisions that agree at the thresholds
    exams_all_agree: float  # share of exams whose every decision agrees
    tolerance: dict[str, float]
    passed: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return (f"max |diff| {self.max_abs_diff:.2e}, mean {self.mean_abs_diff:.2e}, "
                f"findings agree {self.findings_agreement:.1%} (exams {self.exams_all_agree:.1%})")


def compare(
    reference: np.ndarray, candidate: np.ndarray, thresholds: np.ndarray, reference_name: str,
    max_abs: float | None = None, min_agreement: float | None = None,
) -> Parity:
    """Gate: max |diff| <= `max_abs` and findings agreement >= `min_agreement` (each when given)."""
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    agree = called(reference, thresholds) == called(candidate, thresholds)
    parity = Parity(
        reference=reference_name,
        n_exams=int(reference.shape[0]),
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        findings_agreement=float(agree.mean()),
        exams_all_agree=float(agree.all(axis=1).mean()),
        tolerance={k: v for k, v in (("max_abs", max_abs), ("min_agreement", min_agreement)) if v is not None},
        passed=True,
    )
    if max_abs is not None and parity.max_abs_diff > max_abs:
        parity.passed = False
    if min_agreement is not None and parity.findings_agreement < min_agreement:
        parity.passed = False
    return parity

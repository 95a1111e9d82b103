"""Compare a candidate's outputs with a reference's: the gate every exported file passes.

The gate is per exam: an exam agrees when its whole set of findings is unchanged, since a user reads
findings per exam. The share of agreeing (exam, class) decisions hides a changed exam among six
decisions and is kept as a detail only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ecg_edge.spec import called


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n (sound at k = n, unlike the normal one)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Parity:
    reference: str
    n_exams: int
    max_abs_diff: float
    mean_abs_diff: float
    exam_agreement: float  # share of exams whose whole set of findings is unchanged: the gate
    exams_changed: int
    exam_agreement_ci95: tuple[float, float]
    decision_agreement: float  # share of (exam, class) decisions unchanged: a detail
    flips: dict[str, int]  # per class: exams whose finding appeared or disappeared
    tolerance: dict[str, float]
    passed: bool
    failed: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        low, high = self.exam_agreement_ci95
        text = (f"exams unchanged {self.exam_agreement:.1%} ({self.n_exams - self.exams_changed}/{self.n_exams}, "
                f"95% CI {low:.1%}-{high:.1%}), max |dp| {self.max_abs_diff:.2e}, mean {self.mean_abs_diff:.2e}")
        return text + (f"; failed: {', '.join(self.failed)}" if self.failed else "")


def compare(
    reference: np.ndarray, candidate: np.ndarray, thresholds: np.ndarray, reference_name: str,
    max_abs: float | None = None, min_exam_agreement: float | None = None,
    classes: list[str] | None = None,
) -> Parity:
    """Gate: max |dp| <= `max_abs` and per-exam agreement >= `min_exam_agreement` (each when given)."""
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    agree = called(reference, thresholds) == called(candidate, thresholds)
    exam_ok = agree.all(axis=1)
    n = int(reference.shape[0])
    classes = classes or [str(i) for i in range(reference.shape[1])]
    parity = Parity(
        reference=reference_name,
        n_exams=n,
        max_abs_diff=float(diff.max()) if diff.size else 0.0,
        mean_abs_diff=float(diff.mean()) if diff.size else 0.0,
        exam_agreement=float(exam_ok.mean()) if n else 1.0,
        exams_changed=int(n - exam_ok.sum()),
        exam_agreement_ci95=wilson_interval(int(exam_ok.sum()), n),
        decision_agreement=float(agree.mean()) if n else 1.0,
        flips={c: int((~agree[:, i]).sum()) for i, c in enumerate(classes) if (~agree[:, i]).any()},
        tolerance={k: v for k, v in (("max_abs", max_abs), ("min_exam_agreement", min_exam_agreement))
                   if v is not None},
        passed=True,
    )
    if max_abs is not None and parity.max_abs_diff > max_abs:
        parity.failed.append(f"max |dp| {parity.max_abs_diff:.2e} > {max_abs:g}")
    if min_exam_agreement is not None and parity.exam_agreement < min_exam_agreement:
        parity.failed.append(f"exams unchanged {parity.exam_agreement:.1%} < {min_exam_agreement:.1%}")
    parity.passed = not parity.failed
    return parity

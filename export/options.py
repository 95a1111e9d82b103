"""What an export makes and how strictly it gates it: precisions, their files, the gates' minimums,
and `ExportOptions`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ecg_edge.errors import InputError
from ecg_edge.export.precision import Int8Recipe, recipe_grid
from ecg_edge.spec import BATCH_PROFILE, PRECISIONS

ONNX_NAMES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
SYMMETRIC_INT8_NAME = "model.int8.sym.onnx"

# Per-exam agreement with FP32 each precision must reach on the gate ECGs, and the largest
# probability change allowed (INT8's catches a broken file whose findings happen to hold).
MIN_EXAM_AGREEMENT: dict[str, float] = {"fp16": 0.995, "bf16": 0.995, "int8": 0.97}

# Precisions export makes unless told otherwise: each is a file, and a file that fails its gate fails
# the export.
DEFAULT_PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
# Runtime precisions export adds where this machine offers them: one that fails its gate is refused
# (recorded with its numbers, a warning) and fails nothing, since nobody asked for it.
IF_OFFERED: tuple[str, ...] = ("bf16",)


@dataclass
class ExportOptions:
    precisions: Sequence[str] = DEFAULT_PRECISIONS  # named: a failed gate fails the export
    if_offered: Sequence[str] = IF_OFFERED  # added where the machine offers them: a failed gate is a warning
    engine: bool = False
    for_tensorrt: bool = False  # also write and gate the symmetric INT8 file TensorRT builds from
    max_batch: int = BATCH_PROFILE["max"]
    opt_batch: int = BATCH_PROFILE["opt"]
    dla_core: int | None = None
    fp32_atol: float = 1e-4  # FP32 ONNX vs Keras
    fp16_atol: float = 2e-2  # FP16 vs FP32 ONNX
    bf16_atol: float = 5e-2  # BF16 (8-bit mantissa) vs FP32 ONNX
    int8_atol: float = 0.5
    min_exam_agreement: dict[str, float] = field(default_factory=lambda: dict(MIN_EXAM_AGREEMENT))
    n_calibration: int = 128
    n_synthetic_validation: int = 48  # synthetic ECGs added to each of the recipe and gate sets
    # Synthetic ECGs fill each of those sets up to this many exams: with 48 a file that keeps 99% of
    # findings fails a 97% gate 8% of the time (2 flips), with 400 almost never; synthetic ones are cheap.
    min_gate_exams: int = 400
    validation_limit: int = 1000  # real ECGs read from --validation at most
    int8_search: str = "quick"
    int8_methods: Sequence[str] | None = None  # None: the search's own
    int8_recipes: Sequence[Int8Recipe] | None = None  # an explicit list overrides the search

    def wanted(self) -> list[str]:
        """What this export makes and gates: the named precisions, then those added where offered."""
        return [*self.precisions, *(p for p in self.if_offered if p not in self.precisions)]

    def makes_int8(self) -> bool:
        """Whether INT8 is quantized: as a file of its own, or as the symmetric file TensorRT builds from."""
        return "int8" in self.precisions or self.engine or self.for_tensorrt

    def recipes(self) -> list[Int8Recipe]:
        return list(self.int8_recipes) if self.int8_recipes else recipe_grid(self.int8_search, self.int8_methods)

    def check_precisions(self) -> None:
        """InputError for a precision export does not know, or none named."""
        unknown = set(self.wanted()) - set(PRECISIONS)
        if unknown or not self.precisions:
            raise InputError(None, f"unknown precision {sorted(unknown)}: choose from {', '.join(PRECISIONS)}")

    def check_dla(self) -> None:
        """InputError for engines on the DLA with FP32 named (the DLA has no FP32)."""
        if self.dla_core is not None and self.engine and "fp32" in self.precisions:
            raise InputError(None, "--dla-core: the DLA runs FP16 and INT8 only; pass --precision fp16,int8")

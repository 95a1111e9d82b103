"""The INT8 stage: the recipe search's pick gated as the CPU's INT8 file, and the same recipe in
TensorRT's symmetric form, gated too."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ecg_edge.export.engines import tensorrt_fields
from ecg_edge.export.gate import Gate, onnx_outputs
from ecg_edge.export.heldout import HeldOut
from ecg_edge.export.int8_search import choose_int8_recipe
from ecg_edge.export.options import SYMMETRIC_INT8_NAME
from ecg_edge.export.precision import Int8Recipe, preprocess_for_quantization, quantize_int8
from ecg_edge.export.tensorrt_check import check_tensorrt_onnx


def int8_stage(fp32_path: Path, staging: Path, sets: HeldOut, gate: Gate, log: Callable[[str], None]) -> dict[str, Any]:
    """Quantize, choose the recipe, gate the chosen file (admitted where INT8 is named) and, for
    TensorRT, its symmetric form. Returns the manifest's `int8` summary: the recipe, the candidates
    and, where the gate has real ECGs, the agreement to expect on real data."""
    options = gate.options
    prepared = preprocess_for_quantization(fp32_path, staging / "prepared.onnx")
    recipe, int8_path, candidates = choose_int8_recipe(prepared, staging, sets, fp32_path, gate, log)
    parity, real = gate.measure(onnx_outputs(int8_path, sets.gate), "int8", options.int8_atol)
    log(f"  int8 [{recipe.label}] on the gate set: {parity.summary()}")
    summary: dict[str, Any] = {"recipe": recipe.label, "candidates": candidates}
    if real is not None:
        low, high = real.exam_agreement_ci95
        summary["expected_agreement"] = {"exams": real.n_exams, "agreement": real.exam_agreement, "ci95": [low, high]}
        log(f"  INT8 on {real.n_exams} real exams it was neither calibrated nor chosen on: "
            f"{real.exam_agreement:.1%} of exams keep their findings (95% CI {low:.1%}-{high:.1%})")
    if "int8" in options.precisions:
        gate.admit("int8", int8_path, "onnx", "int8", parity, real, recipe=recipe.label, candidates=candidates)
    if options.engine or options.for_tensorrt:
        _symmetric_int8(prepared, staging, recipe, sets, gate, log)
    return summary


def _symmetric_int8(
    prepared: Path, staging: Path, recipe: Int8Recipe, sets: HeldOut, gate: Gate, log: Callable[[str], None],
) -> None:
    """The chosen recipe in TensorRT's form (symmetric int8 activations, float biases), gated
    against FP32 in onnxruntime on the CPU like every other file, and checked against TensorRT's rules."""
    symmetric = recipe.for_tensorrt()
    path = quantize_int8(prepared, staging / SYMMETRIC_INT8_NAME, sets.calibration, symmetric)
    problems = check_tensorrt_onnx(path)
    parity, real = gate.measure(onnx_outputs(path, sets.gate), "int8", gate.options.int8_atol)
    log(f"  int8 symmetric (TensorRT) vs fp32: {parity.summary()}")
    if problems:
        parity.failed.append("TensorRT check: " + "; ".join(problems))
        parity.passed = False
    gate.admit("int8-symmetric", path, "onnx", "int8", parity, real, variant="symmetric", recipe=symmetric.label,
               **tensorrt_fields(path.name, "int8", gate.options))

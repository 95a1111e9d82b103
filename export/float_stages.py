"""The float files: FP32 ONNX from Keras, gated against Keras (every other file is gated against it),
and FP16, gated against FP32."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ecg_edge.export.engines import tensorrt_fields
from ecg_edge.export.gate import ExportGateError, Gate, onnx_outputs
from ecg_edge.export.heldout import HeldOut
from ecg_edge.export.onnx_export import keras_to_onnx
from ecg_edge.export.options import ONNX_NAMES, ExportOptions
from ecg_edge.export.precision import to_fp16
from ecg_edge.model_info import LoadedModel
from ecg_edge.parity import compare


def fp32_stage(
    source: LoadedModel, staging: Path, sets: HeldOut, options: ExportOptions, log: Callable[[str], None],
    warn: Callable[[str], None],
) -> tuple[Path, dict[str, int], Gate]:
    """Keras -> ONNX FP32 in `staging`, gated against Keras; its failure stops the export (nothing
    else can be gated). Returns the file, the graph rewrites made and the gate, FP32 admitted."""
    info = source.info
    classes = list(info["classes"])
    thresholds = np.array([info["thresholds"][c] for c in classes], dtype=np.float32)
    log("Keras -> ONNX FP32")
    reference = source.model.predict(sets.gate, batch_size=32, verbose=0)
    fp32_path, rewrites = keras_to_onnx(source.model, staging / ONNX_NAMES["fp32"], info["task"])
    gate = Gate(sets.gate, sets.n_real["gate"], onnx_outputs(fp32_path, sets.gate), thresholds, classes, options,
                warn)
    parity = compare(reference, gate.fp32, thresholds, "keras", max_abs=options.fp32_atol, classes=classes)
    log(f"  fp32 vs keras: {parity.summary()}")
    if not parity.passed:
        raise ExportGateError(f"FP32 ONNX failed its gate against Keras: {parity.summary()} "
                              f"(tolerance {options.fp32_atol:g}); nothing was written")
    gate.admit("fp32", fp32_path, "onnx", "fp32", parity, None, **tensorrt_fields(fp32_path.name, "fp32", options))
    return fp32_path, rewrites, gate


def fp16_stage(fp32_path: Path, staging: Path, gate: Gate, log: Callable[[str], None]) -> None:
    """FP16 (float16 weights and compute, FP32 inputs and outputs) in `staging`, gated against FP32."""
    log("FP16")
    fp16_path = to_fp16(fp32_path, staging / ONNX_NAMES["fp16"])
    parity, real = gate.measure(onnx_outputs(fp16_path, gate.x), "fp16", gate.options.fp16_atol)
    log(f"  fp16 vs fp32: {parity.summary()}")
    gate.admit("fp16", fp16_path, "onnx", "fp16", parity, real,
               **tensorrt_fields(fp16_path.name, "fp16", gate.options))

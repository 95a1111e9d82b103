"""FP16 and calibrated INT8 ONNX from the FP32 file: precision lives in the graph (DESIGN.md)."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecg_edge.spec import INPUT_NAME

CALIBRATION_BATCH = 16


def to_fp16(src: str | Path, dst: str | Path) -> Path:
    """float16 weights and compute, float32 inputs and outputs (onnxconverter-common).

    Sigmoid stays in float32: the probabilities near 0 and 1 are where thresholds sit.
    """
    import onnx
    from onnxconverter_common import float16

    with warnings.catch_warnings():  # it warns for every weight below float16's range
        warnings.simplefilter("ignore", UserWarning)
        model = float16.convert_float_to_float16(
            onnx.load(str(src)), keep_io_types=True, op_block_list=["Sigmoid"],
        )
    onnx.save(model, str(dst))
    return Path(dst)


@dataclass(frozen=True)
class Int8Recipe:
    """One way to quantize: calibration method, whether the residual path stays in float,
    and symmetric activations (TensorRT) or asymmetric uint8 (fast on CPUs)."""

    method: str = "minmax"  # "minmax" or "percentile"
    residual_float: bool = False
    symmetric: bool = False

    @property
    def label(self) -> str:
        kind = "symmetric int8" if self.symmetric else "asymmetric uint8 (MaxPool float)"
        return f"{self.method}, {kind} activations, residual {'float' if self.residual_float else 'int8'}"


def _batches(x: np.ndarray) -> Iterator[dict[str, np.ndarray]]:
    for start in range(0, len(x), CALIBRATION_BATCH):
        yield {INPUT_NAME: x[start:start + CALIBRATION_BATCH]}


def preprocess_for_quantization(src: str | Path, dst: str | Path) -> Path:
    """onnxruntime's recommended pre-processing: shape inference and graph optimisation."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(src), str(dst))
    return Path(dst)


def quantize_int8(prepared: str | Path, dst: str | Path, calibration: np.ndarray, recipe: Int8Recipe) -> Path:
    """Static Q/DQ quantization, per-channel symmetric int8 weights, calibrated on `calibration`."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = _batches(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}
    float_ops = set()
    if not recipe.symmetric:
        # onnxruntime's CPU uint8 MaxPool is about 7x slower than its float one, and max commutes with
        # a monotone quantization: keeping it float costs no accuracy (measured: +9% INT8 throughput).
        float_ops.add("MaxPool")
    if recipe.residual_float:
        # Keep the skip path (residual Adds and the pools that carry them on) in float.
        float_ops |= {"Add", "MaxPool"}
    exclude = [n.name for n in onnx.load(str(prepared)).graph.node if n.op_type in float_ops]
    with contextlib.redirect_stdout(io.StringIO()):  # the percentile calibrator prints its progress
        quantize_static(
            str(prepared), str(dst), Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QInt8 if recipe.symmetric else QuantType.QUInt8,
            calibrate_method=methods[recipe.method],
            nodes_to_exclude=exclude,
            extra_options={"ActivationSymmetric": recipe.symmetric, "WeightSymmetric": True},
        )
    return Path(dst)

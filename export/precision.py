"""FP16 and calibrated INT8 ONNX from the FP32 file: precision lives in the graph, not in a runtime flag."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

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


CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


@dataclass(frozen=True)
class Int8Recipe:
    """One way to quantize.

    method: onnxruntime's calibrator (min-max, percentile, entropy/KL). per_channel: one weight scale per
    output channel (else one per tensor). residual_float, first_conv_float, last_dense_float: what stays
    in float (the skip path's Adds and pools; the stem; the classifier). symmetric: int8 activations
    with zero point 0 (what TensorRT takes) or asymmetric uint8 (fast on CPUs). quantize_bias: int32
    biases (onnxruntime's default); TensorRT's parser takes DequantizeLinear from 8-bit inputs only, so
    its file keeps biases in float.
    """

    method: str = "minmax"
    residual_float: bool = False
    symmetric: bool = False
    per_channel: bool = True
    first_conv_float: bool = False
    last_dense_float: bool = False
    quantize_bias: bool = True
    float_names: tuple[str, ...] = ()  # nodes kept in float by name (those whose INT8 flips findings)

    @property
    def label(self) -> str:
        kind = "symmetric int8" if self.symmetric else "asymmetric uint8 (MaxPool float)"
        parts = [self.method, f"{kind} activations", "per-channel" if self.per_channel else "per-tensor"]
        if self.residual_float:
            parts.append("residual float")
        if self.first_conv_float:
            parts.append("first conv float")
        if self.last_dense_float:
            parts.append("last dense float")
        if not self.quantize_bias:
            parts.append("bias float")
        if self.float_names:
            parts.append(f"{len(self.float_names)} named nodes float")
        return ", ".join(parts)

    def for_tensorrt(self) -> Int8Recipe:
        """The same choices in the form TensorRT builds from: symmetric int8, float biases."""
        return replace(self, symmetric=True, quantize_bias=False)


def recipe_grid(search: str = "quick", methods: Sequence[str] | None = None) -> list[Int8Recipe]:
    """The candidates export measures. quick: calibration method x the network's two ends (first conv
    and last dense) in float; wide: all three calibrators, also per-tensor weights and symmetric
    activations. (The residual path is not searched: onnxruntime quantizes no Add of this network
    either way; measured, the same Q/DQ nodes with and without it.)"""
    methods = tuple(methods or (("minmax", "percentile") if search == "quick" else CALIBRATION_METHODS))
    if search not in ("quick", "wide"):
        raise ValueError(f"unknown INT8 search {search!r}: quick or wide")
    grid = [Int8Recipe(method=m, first_conv_float=ends, last_dense_float=ends)
            for m in methods for ends in (False, True)]
    if search == "wide":
        grid += [Int8Recipe(method=m, per_channel=False) for m in methods]
        grid += [Int8Recipe(method=m, symmetric=True) for m in methods]
    return grid


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

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    with contextlib.redirect_stdout(io.StringIO()):  # the percentile calibrator prints its progress
        quantize_static(
            str(prepared), str(dst), Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=recipe.per_channel,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QInt8 if recipe.symmetric else QuantType.QUInt8,
            calibrate_method=methods[recipe.method],
            nodes_to_exclude=float_nodes(onnx.load(str(prepared)), recipe),
            extra_options={"ActivationSymmetric": recipe.symmetric, "WeightSymmetric": True,
                           "QuantizeBias": recipe.quantize_bias},
        )
    return Path(dst)


def float_nodes(model: Any, recipe: Int8Recipe) -> list[str]:
    """Names of the nodes the recipe keeps in float."""
    nodes = list(model.graph.node)  # topologically sorted, as ONNX requires
    float_ops = set()
    if not recipe.symmetric:
        # onnxruntime's CPU uint8 MaxPool is about 7x slower than its float one, and max commutes with
        # a monotone quantization: keeping it float costs no accuracy (measured: +9% INT8 throughput).
        float_ops.add("MaxPool")
    if recipe.residual_float:
        float_ops |= {"Add", "MaxPool"}
    names = [n.name for n in nodes if n.op_type in float_ops or n.name in recipe.float_names]
    if recipe.first_conv_float:
        names += [n.name for n in nodes if n.op_type == "Conv"][:1]
    if recipe.last_dense_float:
        dense = [n for n in nodes if n.op_type in ("MatMul", "Gemm")][-1:]
        if dense:
            names.append(dense[0].name)
            # the bias Add of a MatMul-form dense layer
            names += [n.name for n in nodes if n.op_type == "Add" and dense[0].output[0] in n.input]
    return sorted(set(names))

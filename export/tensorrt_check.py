"""What TensorRT's ONNX parser would refuse, found on any machine (TensorRT is not needed).

The rules come from the onnx-tensorrt parser's operator support matrix (docs/operators.md of
github.com/onnx/onnx-tensorrt): TensorRT 10.0 parses opsets 9-20 and 10.15 (as 11.x) opsets 9-24;
QuantizeLinear needs `y_zero_point` 0 and DequantizeLinear an 8-bit (INT8, FP8) or 4-bit input with
`x_zero_point` 0, so an int32 bias or a uint8 activation behind a DequantizeLinear does not parse.
Per-channel weight scales must run along the output channels, the only axis TensorRT quantizes
weights on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Operators the matrix marks supported (onnx-tensorrt docs/operators.md for TensorRT 10.15).
SUPPORTED_OPS = frozenset({
    "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh", "Attention",
    "AveragePool", "BatchNormalization", "BlackmanWindow", "Cast", "CastLike", "Ceil", "Celu", "Clip",
    "Concat", "Constant", "ConstantOfShape", "Conv", "ConvTranspose", "Cos", "Cosh", "CumSum", "DeformConv",
    "DepthToSpace", "DequantizeLinear", "Div", "Dropout", "Einsum", "Elu", "Equal", "Erf", "Exp", "Expand",
    "EyeLike", "Flatten", "Floor", "Gather", "GatherElements", "GatherND", "Gelu", "Gemm",
    "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool", "Greater", "GreaterOrEqual", "GridSample",
    "GroupNormalization", "GRU", "HammingWindow", "HannWindow", "HardSigmoid", "HardSwish", "Hardmax",
    "Identity", "If", "ImageScaler", "InstanceNormalization", "IsInf", "IsNaN", "LayerNormalization",
    "LeakyRelu", "Less", "LessOrEqual", "Log", "LogSoftmax", "Loop", "LRN", "LSTM", "LpNormalization",
    "LpPool", "MatMul", "Max", "MaxPool", "Mean", "MeanVarianceNormalization", "Min", "Mish", "Mod", "Mul",
    "Neg", "NonMaxSuppression", "NonZero", "Not", "OneHot", "Or", "Pad", "ParametricSoftplus", "Pow", "PRelu",
    "QuantizeLinear", "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Range",
    "Reciprocal", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
    "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare", "Relu", "Reshape", "Resize", "ReverseSequence",
    "RMSNormalization", "RNN", "RoiAlign", "RotaryEmbedding", "Round", "STFT", "ScaledTanh", "Scan",
    "Scatter", "ScatterElements", "ScatterND", "Selu", "Shape", "Shrink", "Sigmoid", "Sign", "Sin", "Sinh",
    "Size", "Slice", "Softmax", "Softplus", "Softsign", "SpaceToDepth", "Split", "Sqrt", "Squeeze", "Sub",
    "Sum", "Tan", "Tanh", "TensorScatter", "ThresholdedRelu", "Tile", "TopK", "Transpose", "Trilu",
    "Unsqueeze", "Upsample", "Where", "Xor",
})
# Opsets each major release parses, taking the earliest release of the major (10.0) for 10.
OPSETS: dict[str, tuple[int, int]] = {"10": (9, 20), "11": (9, 24)}
# Element types DequantizeLinear may take (TensorProto codes): INT8, FLOAT8E4M3FN, INT4, FLOAT4E2M1.
_DQ_INPUT_TYPES = {3: "int8", 17: "float8e4m3fn", 22: "int4", 23: "float4e2m1"}
# Weight input and the output-channel axis of each consumer: Conv weights are (out, in, k...),
# MatMul's right-hand side is (in, out).
_WEIGHT_AXIS = {"Conv": (1, 0), "ConvTranspose": (1, 1), "MatMul": (1, -1)}


def check_tensorrt_onnx(path: str | Path, tensorrt: str = "10") -> list[str]:
    """Every rule the file breaks, one line each (empty: TensorRT's parser should take it)."""
    import onnx
    from onnx import TensorProto, numpy_helper

    model = onnx.load(str(path))
    problems: list[str] = []
    low, high = OPSETS[tensorrt]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not low <= opset <= high:
        problems.append(f"opset {opset}: TensorRT {tensorrt} parses opsets {low}-{high}")

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    constants = {n.output[0]: n.attribute[0].t for n in graph.node
                 if n.op_type == "Constant" and n.attribute and n.attribute[0].type == onnx.AttributeProto.TENSOR}
    tensors = {**constants, **inits}
    producers = {out: n for n in graph.node for out in n.output}
    consumers: dict[str, list[tuple[Any, int]]] = {}
    for n in graph.node:
        for i, name in enumerate(n.input):
            consumers.setdefault(name, []).append((n, i))

    def dtype_of(name: str) -> int | None:
        if name in tensors:
            return tensors[name].data_type
        producer = producers.get(name)
        if producer is not None and producer.op_type == "QuantizeLinear":
            if len(producer.input) > 2 and producer.input[2] in tensors:
                return tensors[producer.input[2]].data_type
            return TensorProto.UINT8  # no zero point: the default output type is uint8
        return None

    def zero_point_problem(node: Any, index: int, what: str) -> str | None:
        if len(node.input) <= index or not node.input[index]:
            return f"{node.op_type} {node.name!r}: no {what} (the default is uint8); TensorRT needs int8 zero 0"
        zp = tensors.get(node.input[index])
        if zp is None:
            return f"{node.op_type} {node.name!r}: {what} is computed; TensorRT needs a constant 0"
        if zp.data_type not in _DQ_INPUT_TYPES:
            return (f"{node.op_type} {node.name!r}: {what} of type "
                    f"{TensorProto.DataType.Name(zp.data_type).lower()}; TensorRT takes 8-bit int8 only")
        if numpy_helper.to_array(zp).any():
            return f"{node.op_type} {node.name!r}: {what} is not 0 (TensorRT quantizes symmetrically)"
        return None

    unsupported: dict[str, int] = {}
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            unsupported[f"{node.domain}.{node.op_type}"] = unsupported.get(f"{node.domain}.{node.op_type}", 0) + 1
        elif node.op_type not in SUPPORTED_OPS:
            unsupported[node.op_type] = unsupported.get(node.op_type, 0) + 1
        if node.op_type == "QuantizeLinear":
            problem = zero_point_problem(node, 2, "y_zero_point")
            if problem:
                problems.append(problem)
        elif node.op_type == "DequantizeLinear":
            kind = dtype_of(node.input[0])
            if kind is not None and kind not in _DQ_INPUT_TYPES:
                problems.append(f"DequantizeLinear {node.name!r}: input {node.input[0]!r} is "
                                f"{TensorProto.DataType.Name(kind).lower()}; TensorRT dequantizes 8-bit inputs "
                                f"only (an int32 bias must stay float)")
            else:
                problem = zero_point_problem(node, 2, "x_zero_point")
                if problem:
                    problems.append(problem)
            problems += _axis_problems(node, tensors, consumers)
    for op, count in sorted(unsupported.items()):
        problems.append(f"operator {op} ({count}x) is not in the onnx-tensorrt parser's supported list")
    return problems


def _axis_problems(node: Any, tensors: dict[str, Any], consumers: dict[str, list[tuple[Any, int]]]) -> list[str]:
    """A per-channel DequantizeLinear of weights must run along the consumer's output channels."""
    scale = tensors.get(node.input[1])
    weight = tensors.get(node.input[0])
    if scale is None or weight is None or len(scale.dims) == 0 or int(_size(scale.dims)) <= 1:
        return []
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    rank = len(weight.dims)
    out = []
    for consumer, index in consumers.get(node.output[0], []):
        expected = _WEIGHT_AXIS.get(consumer.op_type)
        if consumer.op_type == "Gemm":
            trans_b = next((a.i for a in consumer.attribute if a.name == "transB"), 0)
            expected = (1, 0 if trans_b else 1)
        if expected is None or index != expected[0]:
            continue
        if axis % rank != expected[1] % rank:
            out.append(f"DequantizeLinear {node.name!r}: per-channel axis {axis} of {consumer.op_type} weights; "
                       f"the output channels are axis {expected[1] % rank}")
    return out


def _size(dims: Any) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n

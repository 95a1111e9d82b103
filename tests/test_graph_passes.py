"""The exact ONNX rewrites: same outputs, fewer nodes, and no rewrite where the pattern differs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from ecg_edge.export.graph_passes import fold_batchnorm_into_conv, pad_stem_channels, relu_before_squeeze

C_IN, C_OUT, W = 3, 5, 32


def conv_bn_relu(scale_shape=(1, C_OUT, 1), extra_consumer=False, conv_bias=False, seed=0):
    """signal (N, 3, 32) -> Unsqueeze -> Conv(1x3) -> Squeeze -> Mul -> Add -> Relu, as tf2onnx writes it."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(size=(C_OUT, C_IN, 1, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(np.array([2], np.int64), "axes"),
        numpy_helper.from_array(rng.uniform(-2, 2, size=scale_shape).astype(np.float32), "s"),
        numpy_helper.from_array(rng.normal(size=scale_shape).astype(np.float32), "t"),
    ]
    conv_inputs = ["x4", "w"]
    if conv_bias:
        inits.append(numpy_helper.from_array(rng.normal(size=(C_OUT,)).astype(np.float32), "b"))
        conv_inputs.append("b")
    nodes = [
        helper.make_node("Unsqueeze", ["signal", "axes"], ["x4"]),
        helper.make_node("Conv", conv_inputs, ["c"], kernel_shape=[1, 3], pads=[0, 1, 0, 1]),
        helper.make_node("Squeeze", ["c", "axes"], ["sq"]),
        helper.make_node("Mul", ["sq", "s"], ["m"]),
        helper.make_node("Add", ["m", "t"], ["a"]),
        helper.make_node("Relu", ["a"], ["out"]),
    ]
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, C_OUT, W])]
    if extra_consumer:  # the Mul's result is used elsewhere too: folding would change that use
        nodes.append(helper.make_node("Neg", ["m"], ["other"]))
        outputs.append(helper.make_tensor_value_info("other", TensorProto.FLOAT, [None, C_OUT, W]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("signal", TensorProto.FLOAT,
                                                                        [None, C_IN, W])], outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"signal": x})


@pytest.mark.parametrize("conv_bias", [False, True])
@pytest.mark.parametrize("scale_shape", [(1, C_OUT, 1), (C_OUT, 1)])
def test_fold_and_swap_keep_outputs(conv_bias, scale_shape):
    model = conv_bn_relu(scale_shape, conv_bias=conv_bias)
    x = np.random.default_rng(1).normal(size=(4, C_IN, W)).astype(np.float32)
    before = run(model, x)[0]
    assert fold_batchnorm_into_conv(model) == 1
    assert relu_before_squeeze(model) == 1
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ["Unsqueeze", "Conv", "Relu", "Squeeze"]
    assert {i.name for i in model.graph.initializer} >= {"axes"} and "s" not in {i.name for i in
                                                                              model.graph.initializer}
    np.testing.assert_allclose(run(model, x)[0], before, atol=1e-5)
    assert np.abs(before).max() > 0.1 and (before == 0).any()  # the check had something to compare


def test_no_fold_for_a_scale_not_per_channel():
    model = conv_bn_relu((1,), seed=2)
    x = np.random.default_rng(3).normal(size=(2, C_IN, W)).astype(np.float32)
    before = run(model, x)
    assert fold_batchnorm_into_conv(model) == 0
    assert [n.op_type for n in model.graph.node][:5] == ["Unsqueeze", "Conv", "Squeeze", "Mul", "Add"]
    np.testing.assert_array_equal(run(model, x)[0], before[0])


def test_fold_stops_where_a_result_is_shared():
    """The Mul's result also feeds another node: the Mul folds (that node reads the same values),
    the Add after it must stay."""
    model = conv_bn_relu(extra_consumer=True)
    x = np.random.default_rng(3).normal(size=(2, C_IN, W)).astype(np.float32)
    before = run(model, x)
    assert fold_batchnorm_into_conv(model) == 1
    assert [n.op_type for n in model.graph.node] == ["Unsqueeze", "Conv", "Squeeze", "Add", "Relu", "Neg"]
    for a, b in zip(run(model, x), before, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_fold_scale_only():
    """tf2onnx leaves out the Add when a BatchNorm's shift is zero (an untrained model)."""
    model = conv_bn_relu()
    add = next(n for n in model.graph.node if n.op_type == "Add")
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    relu.input[0] = add.input[0]
    model.graph.node.remove(add)
    x = np.random.default_rng(4).normal(size=(2, C_IN, W)).astype(np.float32)
    before = run(model, x)[0]
    assert fold_batchnorm_into_conv(model) == 1
    assert [n.op_type for n in model.graph.node] == ["Unsqueeze", "Conv", "Squeeze", "Relu"]
    np.testing.assert_allclose(run(model, x)[0], before, atol=1e-5)


def test_stem_padding_is_exact_and_touches_only_narrow_convolutions():
    """12 input channels (the leads) padded to 16 with zero weights: same outputs; a convolution
    that already reads 16 or more channels is left as it is."""
    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(np.array([2], np.int64), "axes"),
             numpy_helper.from_array(rng.normal(size=(16, 12, 1, 5)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(size=(16,)).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.normal(size=(8, 16, 1, 3)).astype(np.float32), "w2")]
    nodes = [helper.make_node("Unsqueeze", ["signal", "axes"], ["x4"]),
             helper.make_node("Conv", ["x4", "w1", "b1"], ["c1"], kernel_shape=[1, 5], pads=[0, 2, 0, 2]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], kernel_shape=[1, 3], strides=[1, 2]),
             helper.make_node("Squeeze", ["c2", "axes"], ["out"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("signal", TensorProto.FLOAT, [None, 12, W])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 8, W // 2 - 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.normal(size=(3, 12, W)).astype(np.float32)
    before = run(model, x)[0]
    assert pad_stem_channels(model) == 1
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ["Unsqueeze", "Pad", "Conv", "Relu", "Conv", "Squeeze"]
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    stem = next(n for n in model.graph.node if n.op_type == "Conv")
    assert weights[stem.input[1]].shape == (16, 16, 1, 5) and not weights[stem.input[1]][:, 12:].any()
    assert "w1" not in weights and weights["w2"].shape == (8, 16, 1, 3)
    np.testing.assert_allclose(run(model, x)[0], before, rtol=1e-5, atol=1e-4)  # summed in another order
    assert np.abs(before).max() > 10
    assert pad_stem_channels(model) == 0  # already 16: nothing more to pad

"""Exact rewrites of the converted ONNX graph that onnxruntime's optimizer does not make.

tf2onnx writes each Conv1D as Unsqueeze -> Conv -> Squeeze, so a BatchNormalization after it
(a Mul and an Add by per-channel constants) is never fused into the convolution: it costs a
pass over the activations in FP32 and a QLinearMul + QLinearAdd pair in INT8.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np


def _constant_inputs(graph: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {init.name: numpy_helper.to_array(init) for init in graph.initializer}


def _consumers(graph: Any) -> dict[str, list[Any]]:
    """Tensor name -> the nodes that read it."""
    consumers: dict[str, list[Any]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    return consumers


def fold_batchnorm_into_conv(model: Any) -> int:
    """Fold the per-channel Mul and Add constants that follow Conv -> Squeeze (a BatchNormalization;
    tf2onnx drops the Add when the shift is zero) into the Conv's weights and bias. Returns the
    number of Convs that absorbed one. Exact up to float rounding (the export gates measure it)."""
    from onnx import numpy_helper

    graph = model.graph
    consts = _constant_inputs(graph)
    consumers = _consumers(graph)
    graph_outputs = {o.name for o in graph.output}

    def only_consumer(name: str) -> Any:
        found = consumers.get(name, [])
        return found[0] if name not in graph_outputs and len(found) == 1 else None

    def per_channel(node: Any, upstream: str, channels: int) -> np.ndarray | None:
        other = [n for n in node.input if n != upstream]
        if len(other) != 1 or other[0] not in consts:
            return None
        value = consts[other[0]]
        if value.shape not in ((1, channels, 1), (channels, 1)):  # broadcast on axis 1 of (N, C, W)
            return None
        return value.reshape(channels).astype(np.float64)

    removed: list[Any] = []
    folds = 0
    for conv in list(graph.node):
        if conv.op_type != "Conv" or conv.input[1] not in consts:
            continue
        squeeze = only_consumer(conv.output[0])
        if squeeze is None or squeeze.op_type != "Squeeze":
            continue
        weight = consts[conv.input[1]].astype(np.float64)
        channels = weight.shape[0]
        has_bias = len(conv.input) > 2 and bool(conv.input[2])
        bias = consts[conv.input[2]].astype(np.float64) if has_bias else np.zeros(channels)
        absorbed: list[Any] = []
        tail, node = squeeze.output[0], only_consumer(squeeze.output[0])
        while node is not None and node.op_type in ("Mul", "Add"):
            value = per_channel(node, tail, channels)
            if value is None:
                break
            if node.op_type == "Mul":
                weight = weight * value.reshape(-1, *[1] * (weight.ndim - 1))
                bias = bias * value
            else:
                bias = bias + value
            absorbed.append(node)
            tail, node = node.output[0], only_consumer(node.output[0])
        if not absorbed:
            continue
        dtype = consts[conv.input[1]].dtype
        new_w = numpy_helper.from_array(weight.astype(dtype), f"{conv.output[0]}/folded_weight")
        new_b = numpy_helper.from_array(bias.astype(dtype), f"{conv.output[0]}/folded_bias")
        graph.initializer.extend([new_w, new_b])
        del conv.input[1:]
        conv.input.extend([new_w.name, new_b.name])
        squeeze.output[0] = tail  # downstream keeps reading the same name
        removed += absorbed
        folds += 1

    for node in removed:
        graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    stale = [init for init in graph.initializer if init.name not in used]
    for init in stale:
        graph.initializer.remove(init)
    return folds


def relu_before_squeeze(model: Any) -> int:
    """Swap Squeeze -> Relu into Relu -> Squeeze (they commute), so that a Conv's Relu follows it
    directly: the quantized graph then fuses the Relu into the convolution's output range, and the
    Squeeze keeps one set of quantization parameters and runs on int8. Returns the number of swaps."""
    graph = model.graph
    consumers = _consumers(graph)
    graph_outputs = {o.name for o in graph.output}
    swaps = 0
    for squeeze in list(graph.node):
        if squeeze.op_type != "Squeeze" or squeeze.output[0] in graph_outputs:
            continue
        after = consumers.get(squeeze.output[0], [])
        if len(after) != 1 or after[0].op_type != "Relu":
            continue
        relu = after[0]
        source, middle, final = squeeze.input[0], squeeze.output[0], relu.output[0]
        relu.input[0], relu.output[0] = source, middle
        squeeze.input[0], squeeze.output[0] = middle, final
        # keep topological order: the Relu now runs first
        graph.node.remove(relu)
        graph.node.insert(list(graph.node).index(squeeze), relu)
        swaps += 1
    return swaps


# Input channels the stem convolution is padded to: OpenVINO 2026.4's AMX-BF16 convolution gives wrong
# results for the 12-lead stem (relative error ~1 after the first Conv) and right ones at 16.
STEM_CHANNELS = 16


def pad_stem_channels(model: Any, channels: int = STEM_CHANNELS) -> int:
    """Zero-pad the input of each convolution reading fewer than `channels` channels (the 12-lead stem)
    to `channels`, with zero weights for the new channels: an exact rewrite. Returns the number of
    Convs padded."""
    from onnx import helper, numpy_helper

    graph = model.graph
    consts = _constant_inputs(graph)
    padded = 0
    for conv in list(graph.node):
        if conv.op_type != "Conv" or conv.input[1] not in consts:
            continue
        if any(a.name == "group" and a.i != 1 for a in conv.attribute):
            continue
        weight = consts[conv.input[1]]
        extra = channels - weight.shape[1]
        if extra <= 0:
            continue
        zeros = np.zeros((weight.shape[0], extra, *weight.shape[2:]), weight.dtype)
        new_w = numpy_helper.from_array(np.concatenate([weight, zeros], axis=1), f"{conv.output[0]}/padded_weight")
        # Pad's `pads`: the begins of every axis, then the ends; only axis 1's end grows
        ends = [0, extra] + [0] * (weight.ndim - 2)
        pads = numpy_helper.from_array(np.array([0] * weight.ndim + ends, np.int64), f"{conv.output[0]}/channel_pads")
        pad = helper.make_node("Pad", [conv.input[0], pads.name], [f"{conv.output[0]}/padded_input"],
                               name=f"{conv.name}/pad_channels", mode="constant")
        graph.initializer.extend([new_w, pads])
        conv.input[0], conv.input[1] = pad.output[0], new_w.name
        graph.node.insert(list(graph.node).index(conv), pad)
        padded += 1
    used = {name for node in graph.node for name in node.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    return padded

"""Keras -> ONNX with tf2onnx."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ecg_edge.spec import INPUT_NAME, LEADS, N_SAMPLES, OUTPUT_NAMES

OPSET = 17  # supported by tf2onnx 1.16+, onnxruntime 1.14+ and TensorRT 8.6+


def keras_to_onnx(model: Any, path: str | Path, task: str, opset: int = OPSET,
                  pad_stem: bool = True) -> tuple[Path, dict[str, int]]:
    """Convert through a `tf.function` with an explicit input signature (dynamic batch), then apply
    the exact graph rewrites of `graph_passes`; returns the file and how many of each were made.

    `tf2onnx.convert.from_keras` trips over Keras 3 models; tracing the call ourselves works for
    all three variants.
    """
    import tensorflow as tf
    import tf2onnx

    from ecg_edge.export.graph_passes import fold_batchnorm_into_conv, pad_stem_channels, relu_before_squeeze

    spec = (tf.TensorSpec((None, N_SAMPLES, len(LEADS)), tf.float32, name=INPUT_NAME),)

    @tf.function(input_signature=spec)
    def forward(signal):
        return {OUTPUT_NAMES[task]: model(signal, training=False)}

    proto, _ = tf2onnx.convert.from_function(forward, input_signature=spec, opset=opset)
    rewrites = {"batchnorm_folded_into_conv": fold_batchnorm_into_conv(proto),
                "relu_moved_before_squeeze": relu_before_squeeze(proto)}
    if pad_stem:
        rewrites["stem_channels_padded"] = pad_stem_channels(proto)
    path = Path(path)
    path.write_bytes(proto.SerializeToString())
    return path, rewrites

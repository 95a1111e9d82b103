"""Keras -> ONNX with tf2onnx, and loading the model files that `export` accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ecg_edge.errors import InputError
from ecg_edge.spec import INPUT_NAME, LEADS, N_SAMPLES

OPSET = 17  # supported by tf2onnx 1.16+, onnxruntime 1.14+ and TensorRT 8.6+
OUTPUT_NAMES = {"six": "abnormalities", "binary": "abnormal"}


def load_keras_model(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """A `.keras` model (with its `.json` info when present) or the original Keras-2 `model.hdf5`.

    Returns (model, info) with info's task, kind, classes and thresholds.
    """
    import keras

    from ecg_edge.training.model_info import read_model_info
    from ecg_edge.training.models import load_ribeiro_weights

    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such model file")
    if path.suffix.lower() in {".hdf5", ".h5"}:
        model = load_ribeiro_weights(path)
        return model, read_model_info(path, "six", "ribeiro")
    if path.suffix.lower() != ".keras":
        raise InputError(path, "model must be a .keras file or the original model.hdf5")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for damaged archives
        raise InputError(path, f"not a loadable Keras model ({exc.__class__.__name__}: {exc})") from None
    if tuple(model.input_shape) != (None, N_SAMPLES, len(LEADS)):
        raise InputError(path, f"model input {model.input_shape} is not (None, {N_SAMPLES}, {len(LEADS)})")
    n_out = model.output_shape[-1]
    task = "six" if n_out == 6 else "binary" if n_out == 1 else None
    if task is None:
        raise InputError(path, f"model has {n_out} outputs: expected 6 (abnormalities) or 1 (abnormal)")
    kind = "transfer" if "transfer" in model.name else "ribeiro" if task == "six" else "binary"
    return model, read_model_info(path, task, kind)


def keras_to_onnx(model: Any, path: str | Path, task: str, opset: int = OPSET) -> tuple[Path, dict[str, int]]:
    """Convert through a `tf.function` with an explicit input signature (dynamic batch), then apply
    the exact graph rewrites of `graph_passes`; returns the file and how many of each were made.

    `tf2onnx.convert.from_keras` trips over Keras 3 models; tracing the call ourselves works for
    all three variants.
    """
    import tensorflow as tf
    import tf2onnx

    from ecg_edge.export.graph_passes import fold_batchnorm_into_conv, relu_before_squeeze

    spec = (tf.TensorSpec((None, N_SAMPLES, len(LEADS)), tf.float32, name=INPUT_NAME),)

    @tf.function(input_signature=spec)
    def forward(signal):
        return {OUTPUT_NAMES[task]: model(signal, training=False)}

    proto, _ = tf2onnx.convert.from_function(forward, input_signature=spec, opset=opset)
    rewrites = {"batchnorm_folded_into_conv": fold_batchnorm_into_conv(proto),
                "relu_moved_before_squeeze": relu_before_squeeze(proto)}
    path = Path(path)
    path.write_bytes(proto.SerializeToString())
    return path, rewrites

"""The Ribeiro et al. (2020) 1-D ResNet, its binary head and the transfer model.

Read top to bottom: `build_ribeiro` is the reference network, layer for layer.
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers

from ecg_edge.errors import InputError
from ecg_edge.model_info import LoadedModel, read_model_info
from ecg_edge.spec import HDF5_SUFFIXES, INPUT_NAME, LEADS, N_SAMPLES

KERNEL_SIZE = 16
KERNEL_INIT = "he_normal"
# Residual blocks: (samples out, filters out); each downsamples by 4.
BLOCKS = ((1024, 128), (256, 196), (64, 256), (16, 320))
# The reference keeps units with probability 0.8.
DROPOUT_RATE = 0.2


def _conv(filters: int, kernel: int, strides: int = 1) -> layers.Conv1D:
    return layers.Conv1D(
        filters, kernel, strides=strides, padding="same", use_bias=False,
        kernel_initializer=KERNEL_INIT,
    )


def _residual_unit(x, y, n_samples_out: int, n_filters_out: int):
    """One pre-activation residual unit: returns (x, y) for the next unit."""
    downsample = y.shape[1] // n_samples_out
    # Skip branch: pool to the new length, 1x1 conv when the width changes.
    y = layers.MaxPooling1D(downsample, strides=downsample, padding="same")(y)
    if y.shape[2] != n_filters_out:
        y = _conv(n_filters_out, 1)(y)
    # Main branch.
    x = _conv(n_filters_out, KERNEL_SIZE)(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    x = layers.Dropout(DROPOUT_RATE)(x)
    x = _conv(n_filters_out, KERNEL_SIZE, strides=downsample)(x)
    x = layers.Add()([x, y])
    y = x
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    x = layers.Dropout(DROPOUT_RATE)(x)
    return x, y


def _trunk():
    """Input through the last residual unit: (None, 16, 320)."""
    signal = keras.Input(shape=(N_SAMPLES, len(LEADS)), dtype="float32", name=INPUT_NAME)
    x = _conv(64, KERNEL_SIZE)(signal)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    y = x
    for n_samples_out, n_filters_out in BLOCKS:
        x, y = _residual_unit(x, y, n_samples_out, n_filters_out)
    return signal, x


def build_ribeiro(n_classes: int = 6, name: str = "ribeiro_resnet") -> keras.Model:
    """The six-abnormality network: 50 layers, input `signal` (None, 4096, 12), sigmoid outputs."""
    signal, x = _trunk()
    x = layers.Flatten()(x)
    out = layers.Dense(n_classes, activation="sigmoid", kernel_initializer=KERNEL_INIT)(x)
    return keras.Model(signal, out, name=name)


def build_binary() -> keras.Model:
    """Same trunk, one sigmoid output: the probability that the ECG is abnormal."""
    return build_ribeiro(n_classes=1, name="ribeiro_binary")


def build_transfer(
    base: keras.Model, freeze: int = 5, cut: int = 45, n_outputs: int = 1,
    name: str = "ribeiro_transfer",
) -> keras.Model:
    """Fine-tuning model: `base` cut after layer `cut`, its first `freeze` layers frozen,
    three Conv1D and three Dense layers on top (the seed's transfer learning)."""
    n_layers = len(base.layers)
    if not 0 < cut < n_layers:
        raise ValueError(f"cut={cut} must lie inside the base model's {n_layers} layers")
    if not 0 <= freeze <= cut:
        raise ValueError(f"freeze={freeze} must lie between 0 and cut={cut}")
    for i, layer in enumerate(base.layers[: cut + 1]):
        layer.trainable = i >= freeze
    taken = {layer.name for layer in base.layers}

    def named(stem: str) -> str:
        # Named, not left to Keras' counters: a base loaded in another process already holds
        # "conv1d", "dense", ... and a model may not use a name twice.
        name, k = stem, 1
        while name in taken:
            k += 1
            name = f"{stem}_{k}"
        taken.add(name)
        return name

    x = base.layers[cut].output
    for k, filters in enumerate((128, 64, 32), start=1):
        x = layers.Conv1D(filters, 3, padding="same", activation="relu", kernel_initializer=KERNEL_INIT,
                          name=named(f"transfer_conv{k}"))(x)
    x = layers.GlobalAveragePooling1D(name=named("transfer_pool"))(x)
    for k, units in enumerate((64, 32), start=1):
        x = layers.Dense(units, activation="relu", kernel_initializer=KERNEL_INIT, name=named(f"transfer_dense{k}"))(x)
    out = layers.Dense(n_outputs, activation="sigmoid", name=named("transfer_out"))(x)
    return keras.Model(base.input, out, name=name)


def compile_for_training(model: keras.Model, learning_rate: float = 1e-3) -> keras.Model:
    """The reference recipe: Adam and binary cross-entropy (multi-label and binary alike)."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="binary_crossentropy",
        metrics=[keras.metrics.AUC(name="auc", multi_label=model.output_shape[-1] > 1)],
    )
    return model


def _weighted_layer_names(group) -> list[str]:
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs["layer_names"]]
    return [n for n in names if len(group[n].attrs.get("weight_names", [])) > 0]


def load_ribeiro_weights(path: str | Path, model: keras.Model | None = None) -> keras.Model:
    """Load a Keras-2 HDF5 file of the original network (`model.hdf5`) into `build_ribeiro()`.

    Weights are matched by the order of the layers that carry them and checked by shape; a file
    that does not match raises InputError naming the first layer that differs.
    """
    import h5py
    import numpy as np

    path = Path(path)
    model = model if model is not None else build_ribeiro()
    if not path.exists():
        raise InputError(path, "no such file")
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise InputError(path, "not a readable HDF5 file") from None
    with f:
        group = f.get("model_weights", f)
        if "layer_names" not in group.attrs:
            raise InputError(path, "no Keras weights in this file (no 'layer_names' attribute)")
        file_layers = _weighted_layer_names(group)
        model_layers = [layer for layer in model.layers if layer.weights]
        if len(file_layers) != len(model_layers):
            raise InputError(
                path, f"file has {len(file_layers)} layers with weights, model {model.name} has {len(model_layers)}"
            )
        for file_name, layer in zip(file_layers, model_layers, strict=True):
            g = group[file_name]
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in g.attrs["weight_names"]]
            values = [np.asarray(g[n]) for n in names]
            shapes = [tuple(v.shape) for v in values]
            expected = [tuple(w.shape) for w in layer.weights]
            if shapes != expected:
                raise InputError(
                    path,
                    f"layer {file_name!r} has weights {shapes}, model layer {layer.name!r} expects {expected}",
                )
            layer.set_weights(values)
    return model


def load_keras_model(path: str | Path) -> LoadedModel:
    """A `.keras` model (with its `.json` info when present) or the original Keras-2 `model.hdf5`.

    Returns (path, model, info) with info's task, kind, classes and thresholds.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such model file")
    if path.suffix.lower() in HDF5_SUFFIXES:
        model = load_ribeiro_weights(path)
        return LoadedModel(path.resolve(), model, read_model_info(path, "six", "ribeiro"))
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
    return LoadedModel(path.resolve(), model, read_model_info(path, task, kind))

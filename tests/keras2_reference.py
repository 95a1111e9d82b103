"""The original network written with Keras 2 (`tf_keras`), in the reference code's creation order.

Tests use it to write `model.hdf5` files in the format the released weights come in.
"""

from __future__ import annotations


def build_keras2_reference(n_classes: int = 6):
    import tf_keras as k2
    from tf_keras import layers as L

    def conv(filters, kernel, strides=1):
        return L.Conv1D(filters, kernel, strides=strides, padding="same", use_bias=False,
                        kernel_initializer="he_normal")

    signal = L.Input(shape=(4096, 12), dtype="float32", name="signal")
    x = conv(64, 16)(signal)
    x = L.BatchNormalization()(x)
    x = L.Activation("relu")(x)
    y = x
    for n_out, filters in ((1024, 128), (256, 196), (64, 256), (16, 320)):
        down = y.shape[1] // n_out
        # The reference builds the skip branch first.
        y = L.MaxPooling1D(down, strides=down, padding="same")(y)
        y = conv(filters, 1)(y)
        x = conv(filters, 16)(x)
        x = L.BatchNormalization()(x)
        x = L.Activation("relu")(x)
        x = L.Dropout(0.2)(x)
        x = conv(filters, 16, strides=down)(x)
        x = L.Add()([x, y])
        y = x
        x = L.BatchNormalization()(x)
        x = L.Activation("relu")(x)
        x = L.Dropout(0.2)(x)
    x = L.Flatten()(x)
    out = L.Dense(n_classes, activation="sigmoid", kernel_initializer="he_normal")(x)
    return k2.Model(signal, out)


def write_keras2_hdf5(path, seed: int = 0):
    """Build the Keras-2 model with random (non-trivial) BN statistics and save it whole as HDF5."""
    import numpy as np
    import tf_keras as k2

    k2.utils.set_random_seed(seed)
    model = build_keras2_reference()
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, k2.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([
                rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.1, beta.shape),
                rng.normal(0, 0.1, mean.shape), rng.uniform(0.5, 2.0, var.shape),
            ])
    model.compile(optimizer="adam", loss="binary_crossentropy")
    model.save(str(path), save_format="h5")
    return model

"""Batch-norm statistics adapted to new data (training/adapt.py)."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")


def _model():
    inputs = keras.Input((32, 3))
    x = keras.layers.Conv1D(4, 3, padding="same", use_bias=False, kernel_initializer="ones")(inputs)
    x = keras.layers.BatchNormalization()(x)
    inner = keras.Model(inputs, x)  # nested, as a transfer model nests its base
    outer_in = keras.Input((32, 3))
    y = keras.layers.BatchNormalization()(inner(outer_in))
    return keras.Model(outer_in, keras.layers.Dense(1)(keras.layers.Flatten()(y)))


def test_statistics_become_the_mean_over_the_new_batches_and_stay_fixed():
    from ecg_edge.training.adapt import adapt_batch_norm, batch_norm_layers, freeze_batch_norm

    model = _model()
    layers = batch_norm_layers(model)
    assert len(layers) == 2
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc=5.0 + k, scale=2.0, size=(16, 32, 3)).astype(np.float32) for k in range(4)]
    assert adapt_batch_norm(model, iter(batches)) == 4
    # the conv (weights 1) sums 3 channels over 3 taps, 2 at each end (zero padding): 94 taps of 32 x 3
    first = np.asarray(layers[0].moving_mean)
    want = 3 * 94 / 32 * np.mean([5.0 + k for k in range(4)])
    np.testing.assert_allclose(first, want, rtol=0.01)
    assert all(layer.momentum == 0.99 for layer in layers)  # Keras' own momentum back
    freeze_batch_norm(model)
    before = np.asarray(layers[0].moving_mean).copy()
    model(batches[0] * 10, training=True)  # frozen: inference mode, statistics unchanged
    np.testing.assert_array_equal(np.asarray(layers[0].moving_mean), before)


def test_frozen_layers_keep_theirs_and_fit_leaves_frozen_statistics_alone():
    from ecg_edge.training.adapt import adapt_batch_norm, batch_norm_layers, freeze_batch_norm
    from ecg_edge.training.models import compile_for_training

    model = _model()
    inner, outer = batch_norm_layers(model)
    inner.trainable = False  # frozen on purpose, as a transfer model freezes its first layers
    kept = np.asarray(inner.moving_mean).copy()
    rng = np.random.default_rng(1)
    x = rng.normal(loc=4.0, size=(32, 32, 3)).astype(np.float32)
    adapt_batch_norm(model, [x[:16], x[16:]])
    np.testing.assert_array_equal(np.asarray(inner.moving_mean), kept)
    assert np.abs(np.asarray(outer.moving_mean)).max() > 1  # adapted
    assert freeze_batch_norm(model) == [outer.name]  # only what it froze, to be made trainable again
    compile_for_training(model, 1e-3)
    adapted = np.asarray(outer.moving_mean).copy()
    model.fit(x, np.zeros((32, 1)), batch_size=8, epochs=2, verbose=0)
    np.testing.assert_array_equal(np.asarray(outer.moving_mean), adapted)

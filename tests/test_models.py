from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
from ecg_edge.errors import InputError  # noqa: E402
from ecg_edge.training.models import (  # noqa: E402
    build_binary,
    build_ribeiro,
    build_transfer,
    compile_for_training,
    load_ribeiro_weights,
)


@pytest.fixture(scope="module")
def ribeiro():
    return build_ribeiro()


def test_ribeiro_architecture(ribeiro):
    assert len(ribeiro.layers) == 50
    assert ribeiro.count_params() == 6_425_638
    assert ribeiro.input_shape == (None, 4096, 12)
    assert ribeiro.inputs[0].name == "signal"
    assert ribeiro.output_shape == (None, 6)
    flatten = next(layer for layer in ribeiro.layers if isinstance(layer, keras.layers.Flatten))
    assert tuple(flatten.input.shape) == (None, 16, 320)
    convs = [layer for layer in ribeiro.layers if isinstance(layer, keras.layers.Conv1D)]
    assert not any(c.use_bias for c in convs)
    assert {c.kernel_size[0] for c in convs} == {16, 1}
    assert sorted({c.filters for c in convs}) == [64, 128, 196, 256, 320]
    assert [c.strides[0] for c in convs if c.strides[0] > 1] == [4, 4, 4, 4]
    assert {d.rate for d in ribeiro.layers if isinstance(d, keras.layers.Dropout)} == {0.2}
    assert ribeiro.layers[-1].activation.__name__ == "sigmoid"


def test_binary_head():
    model = build_binary()
    assert model.output_shape == (None, 1)
    assert len(model.layers) == 50


def test_transfer_freezes_and_cuts(ribeiro):
    base = build_ribeiro()
    model = build_transfer(base, freeze=5, cut=45)
    assert model.output_shape == (None, 1)
    kept = base.layers[:46]
    assert [layer.trainable for layer in kept[:5]] == [False] * 5
    assert all(layer.trainable for layer in kept[5:])
    new = model.layers[46:]
    assert sum(isinstance(layer, keras.layers.Conv1D) for layer in new) == 3
    assert sum(isinstance(layer, keras.layers.Dense) for layer in new) == 3
    # Configurable: a different cut keeps fewer layers.
    base2 = build_ribeiro()
    other = build_transfer(base2, freeze=2, cut=30)
    assert base2.layers[30] in other.layers and base2.layers[31] not in other.layers
    assert [layer.trainable for layer in base2.layers[:3]] == [False, False, True]
    with pytest.raises(ValueError):
        build_transfer(build_ribeiro(), freeze=10, cut=5)


@pytest.mark.slow
def test_frozen_weights_unchanged_by_training():
    base = build_ribeiro()
    model = compile_for_training(build_transfer(base, freeze=5, cut=45))
    frozen = [w.numpy().copy() for layer in model.layers[:5] for w in layer.weights]
    trained = [w.numpy().copy() for w in model.layers[9].weights]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 4096, 12)).astype("float32")
    y = rng.integers(0, 2, size=(8, 1)).astype("float32")
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    after = [w.numpy() for layer in model.layers[:5] for w in layer.weights]
    assert frozen and all(np.array_equal(a, b) for a, b in zip(frozen, after, strict=True))
    assert any(not np.array_equal(a, w.numpy()) for a, w in zip(trained, model.layers[9].weights, strict=True))


def test_load_keras2_hdf5_weights(tmp_path):
    pytest.importorskip("tf_keras")
    from keras2_reference import write_keras2_hdf5

    path = tmp_path / "model.hdf5"
    reference = write_keras2_hdf5(path)
    model = load_ribeiro_weights(path)
    x = np.random.default_rng(1).normal(size=(3, 4096, 12)).astype("float32")
    expected = reference.predict(x, verbose=0)
    got = model.predict(x, verbose=0)
    assert np.abs(expected - got).max() < 1e-5
    # Not a trivial match: a freshly initialised model disagrees.
    assert np.abs(build_ribeiro().predict(x, verbose=0) - expected).max() > 1e-3


def test_load_mismatched_weights_names_layer(tmp_path):
    tf_keras = pytest.importorskip("tf_keras")
    from keras2_reference import build_keras2_reference

    path = tmp_path / "five.hdf5"
    five = build_keras2_reference(n_classes=5)
    five.save(str(path), save_format="h5")
    dense_name = five.layers[-1].name
    with pytest.raises(InputError, match=f"layer '{dense_name}' has weights") as info:
        load_ribeiro_weights(path)
    assert str(path) in str(info.value)
    assert tf_keras  # imported for the save format


def test_load_weights_bad_files(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_ribeiro_weights(tmp_path / "missing.hdf5")
    junk = tmp_path / "junk.hdf5"
    junk.write_bytes(b"not hdf5 at all")
    with pytest.raises(InputError, match="not a readable HDF5"):
        load_ribeiro_weights(junk)

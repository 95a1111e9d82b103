from __future__ import annotations

import csv
import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")
from ecg_edge.errors import InputError  # noqa: E402
from ecg_edge.synthetic import write_synthetic_set  # noqa: E402
from ecg_edge.training.evaluate import evaluate, write_report  # noqa: E402
from ecg_edge.training.train import TrainOptions, finetune_model, train_model  # noqa: E402


def _log(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Six-class model trained on 300 synthetic ECGs for 3 epochs (about a minute on 2 cores)."""
    root = tmp_path_factory.mktemp("train")
    h5, labels = write_synthetic_set(root / "train.h5", 300, seed=21)
    out = root / "model.keras"
    path, info = train_model([h5], labels, out, TrainOptions(epochs=3, batch_size=32, validation_fraction=0.1))
    return root, path, info


def test_training_lowers_loss_and_stores_thresholds(trained):
    root, path, info = trained
    log = _log(root / "model.training" / "training.csv")
    assert [int(r["epoch"]) for r in log] == [0, 1, 2]
    assert float(log[-1]["loss"]) < float(log[0]["loss"])
    assert set(info["thresholds"]) == {"1dAVb", "RBBB", "LBBB", "SB", "AF", "ST"}
    assert path.exists() and path.with_suffix(".json").exists()
    assert (root / "model.training" / "best.keras").exists() and (root / "model.training" / "last.keras").exists()
    assert list((root / "model.training" / "logs").rglob("events.out.tfevents.*"))  # TensorBoard


def test_learns_rate_classes_on_held_out_data(trained, tmp_path):
    _, path, _ = trained
    h5, labels = write_synthetic_set(tmp_path / "test.h5", 150, seed=99)
    report = evaluate(path, [h5], labels, n_boot=20)
    for c in ("SB", "ST"):
        assert report["scores"][c]["positives"] >= 8
        assert report["scores"][c]["auroc"] > 0.85, (c, report["scores"][c])
    out = write_report(report, tmp_path / "rep")
    text = (out / "report.md").read_text()
    assert "| SB |" in text and "0.897" in text  # ours, then the paper's table
    assert (out / "curves.png").stat().st_size > 10_000


@pytest.mark.slow
def test_resume_after_interrupt(tmp_path):
    h5, labels = write_synthetic_set(tmp_path / "d.h5", 20, seed=3)  # 15 to train on: one batch an epoch
    out = tmp_path / "m.keras"
    options = TrainOptions(epochs=2, batch_size=16, validation_fraction=0.25)
    seen = []

    def interrupt(epoch, logs):
        seen.append(epoch)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_model([h5], labels, out, options, epoch_end=interrupt)
    assert seen == [0] and not out.exists()
    # As if epoch 0 had been far better than any later one: the resumed run must keep its best.keras.
    work = tmp_path / "m.training"
    rows = _log(work / "training.csv")
    rows[0]["val_loss"] = "1e-9"
    with open(work / "training.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    best_before = (work / "best.keras").read_bytes()
    resumed = []
    _, info = train_model([h5], labels, out, options, epoch_end=lambda epoch, logs: resumed.append(epoch))
    assert resumed == [1]  # epoch 0 was not run again
    assert [int(r["epoch"]) for r in _log(work / "training.csv")] == [0, 1]
    assert (work / "best.keras").read_bytes() == best_before  # the worse epoch 1 did not overwrite it
    assert info["epochs_run"] == 2
    # A fresh run in the same place: its own log and count, the earlier log kept aside.
    _, info = train_model([h5], labels, out, options)
    assert info["epochs_run"] == 2 and (work / "training.previous-1.csv").exists()
    assert [int(r["epoch"]) for r in _log(work / "training.csv")] == [0, 1]


@pytest.fixture(scope="module")
def finetuned(trained, tmp_path_factory):
    """The transfer model on `trained` (binary, 1 epoch) then unfrozen for 1 more: t.keras is the first
    stage, as a fine-tune without unfreeze_epochs writes it."""
    _, base_path, _ = trained
    root = tmp_path_factory.mktemp("finetune")
    h5, labels = write_synthetic_set(root / "d.h5", 32, seed=5)
    out, info = finetune_model(base_path, [h5], labels, root / "t.keras",
                               TrainOptions(task="binary", epochs=1, batch_size=16, validation_fraction=0.25),
                               unfreeze_epochs=1)
    return root, out, info


def test_finetune_keeps_frozen_layers(trained, finetuned):
    from ecg_edge.model_info import info_path

    _, base_path, _ = trained
    root, _, _ = finetuned
    base = keras.saving.load_model(base_path)
    tuned = keras.saving.load_model(root / "t.keras")
    info = json.loads(info_path(root / "t.keras").read_text())
    assert info["kind"] == "transfer" and info["classes"] == ["abnormal"]
    for i in range(5):
        for a, b in zip(base.layers[i].weights, tuned.layers[i].weights, strict=True):
            assert np.array_equal(a.numpy(), b.numpy())
    changed = [not np.array_equal(a.numpy(), b.numpy())
               for a, b in zip(base.layers[9].weights, tuned.layers[9].weights, strict=True)]
    assert any(changed)


def test_finetune_second_stage_unfreezes(finetuned):
    root, out, info = finetuned
    assert out.name == "t.unfrozen.keras" and out.exists()
    first = keras.saving.load_model(root / "t.keras")
    second = keras.saving.load_model(out)
    assert all(layer.trainable for layer in second.layers)
    # The once-frozen first conv moved in the second stage.
    assert not np.array_equal(first.layers[1].weights[0].numpy(), second.layers[1].weights[0].numpy())
    assert info["kind"] == "transfer"


@pytest.mark.slow
def test_same_seed_same_model_and_mirrored_strategy(tmp_path):
    h5, labels = write_synthetic_set(tmp_path / "d.h5", 16, seed=3)
    weights = []
    for k, strategy in enumerate(("none", "none", "mirrored")):
        out = tmp_path / f"m{k}.keras"
        train_model([h5], labels, out, TrainOptions(epochs=1, batch_size=16, validation_fraction=0.25, seed=7,
                                                    strategy=strategy))
        weights.append(keras.saving.load_model(out).layers[1].weights[0].numpy())
    assert np.array_equal(weights[0], weights[1])
    # MirroredStrategy over this machine's one device trains the same network.
    assert weights[2].shape == weights[0].shape and not np.array_equal(weights[2], 0)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["binary", "six"])
def test_finetune_command_on_a_model_saved_by_another_process(trained, tmp_path, task):
    """The base was saved by this process; the command runs in a new one, where its layers' names
    (conv1d, dense, ...) are already taken when the transfer head is built."""
    import os
    import subprocess
    import sys

    _, base_path, _ = trained
    h5, labels = write_synthetic_set(tmp_path / "d.h5", 32, seed=6)
    out = tmp_path / f"{task}.keras"
    cmd = [sys.executable, "-c", "from ecg_edge.cli import app; app()", "finetune", str(base_path), str(h5),
           str(labels), "--task", task, "--epochs", "1", "--batch", "16", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env=os.environ | {"TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and f"wrote {out}" in proc.stdout.replace("\n", "")
    tuned = keras.saving.load_model(out)
    assert tuned.output_shape[-1] == (1 if task == "binary" else 6)
    names = [layer.name for layer in tuned.layers]
    assert len(names) == len(set(names)) and "transfer_out" in names


def test_retrain_keeps_the_classifier_and_trains_every_layer(trained, tmp_path):
    from ecg_edge.training.train import retrain_model

    _, base_path, _ = trained
    h5, labels = write_synthetic_set(tmp_path / "d.h5", 32, seed=8)
    out, info = retrain_model(base_path, [h5], labels, tmp_path / "r.keras",
                              TrainOptions(epochs=1, batch_size=16, learning_rate=1e-4, validation_fraction=0.25,
                                           split="record", augment=True, balance=True))
    base, tuned = keras.saving.load_model(base_path), keras.saving.load_model(out)
    assert [layer.name for layer in tuned.layers] == [layer.name for layer in base.layers]  # no new head
    moved = [not np.array_equal(a.numpy(), b.numpy()) for a, b in zip(base.layers[1].weights,
                                                                    tuned.layers[1].weights, strict=True)]
    assert any(moved) and info["kind"] == "ribeiro"  # the first conv trained too
    with pytest.raises(InputError, match="binary task"):
        retrain_model(base_path, [h5], labels, tmp_path / "b.keras", TrainOptions(task="binary", epochs=1))


def test_retrain_with_batch_norm_from_the_new_data(trained, tmp_path):
    """Statistics of the new exams, fixed while the weights train, every layer trainable again in the
    file written: the same exams at 3x amplitude give the stem 9x the variance."""
    import h5py

    from ecg_edge.training.adapt import batch_norm_layers
    from ecg_edge.training.train import retrain_model

    _, base_path, _ = trained
    variances = []
    for scale in (1.0, 3.0):
        h5, labels = write_synthetic_set(tmp_path / f"d{scale:.0f}.h5", 32, seed=9)
        with h5py.File(h5, "r+") as f:
            f["tracings"][:] = f["tracings"][:] * scale
        out, _ = retrain_model(base_path, [h5], labels, tmp_path / f"r{scale:.0f}.keras",
                               TrainOptions(epochs=1, batch_size=16, learning_rate=1e-5, validation_fraction=0.25,
                                            split="record", adapt_batch_norm=True))
        tuned = keras.saving.load_model(out)
        assert all(layer.trainable for layer in batch_norm_layers(tuned))
        variances.append(np.asarray(batch_norm_layers(tuned)[0].moving_variance))
    ratio = np.median(variances[1] / variances[0])
    assert 8 < ratio < 10, ratio


def test_resume_keeps_the_adapted_statistics_frozen(tmp_path):
    """Interrupted and resumed with adapt_batch_norm: the resumed epochs train with the statistics
    frozen as the first run left them (never measured again, never drifting), and the file shipped has
    every layer trainable again."""
    from ecg_edge.training.adapt import batch_norm_layers

    h5, labels = write_synthetic_set(tmp_path / "d.h5", 20, seed=4)
    out = tmp_path / "m.keras"
    options = TrainOptions(epochs=2, batch_size=16, validation_fraction=0.25, adapt_batch_norm=True)

    def interrupt(epoch, logs):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_model([h5], labels, out, options, epoch_end=interrupt)
    first = keras.saving.load_model(tmp_path / "m.training" / "last.keras")
    resumed = []
    train_model([h5], labels, out, options, epoch_end=lambda epoch, logs: resumed.append(epoch))
    assert resumed == [1]
    shipped = keras.saving.load_model(out)
    for a, b in zip(batch_norm_layers(first), batch_norm_layers(shipped), strict=True):
        np.testing.assert_array_equal(np.asarray(a.moving_mean), np.asarray(b.moving_mean))
        np.testing.assert_array_equal(np.asarray(a.moving_variance), np.asarray(b.moving_variance))
    assert all(layer.trainable for layer in batch_norm_layers(shipped))

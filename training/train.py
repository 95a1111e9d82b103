"""The reference training recipe, resumable, and fine-tuning of the transfer model."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ecg_edge.errors import InputError
from ecg_edge.model_info import write_model_info
from ecg_edge.spec import class_names
from ecg_edge.training.adapt import adapt_batch_norm, batch_norm_layers, freeze_batch_norm
from ecg_edge.training.augment import Augment
from ecg_edge.training.data import HDF5Sequence, train_validation_sequences
from ecg_edge.training.metrics import max_f1_threshold
from ecg_edge.training.models import (
    build_binary,
    build_ribeiro,
    build_transfer,
    compile_for_training,
    load_keras_model,
)


@dataclass
class TrainOptions:
    task: str = "six"
    epochs: int = 70
    batch_size: int = 64
    learning_rate: float = 1e-3
    validation_fraction: float = 0.02
    seed: int = 0
    strategy: str = "none"  # "none", "mirrored" (GPUs of one machine) or "multiworker" (TF_CONFIG)
    early_stopping_patience: int = 9
    lr_patience: int = 7
    split: str = "tail"  # 'record': validation exams by a hash of their id (see train_validation_sequences)
    augment: bool = False  # training batches changed as training/augment.py says
    balance: bool = False  # sample weights that lift rare classes
    adapt_batch_norm: bool = False  # batch-norm statistics from this data, then fixed (training/adapt.py)


# How the six-class model is trained further on a few hundred real recordings (the demo's recipe,
# measured by benchmarks/real_cv.py): batch-norm statistics of the real recordings (AdaBN: on 336
# recordings by 5-fold cross-validation, SB AUROC 0.68 -> 0.75, AF 0.36 -> 0.51, ST 0.84 -> 0.90; the
# binary model's abnormal 0.68 -> 0.74), every layer at a low rate, augmented, rare classes weighted,
# validation by record; the binary transfer model on the same data at a higher rate (its head is new).
REAL_EPOCHS = 10
REAL_TRANSFER_EPOCHS = 4


def real_recipe(seed: int = 0, epochs: int = REAL_EPOCHS) -> TrainOptions:
    return TrainOptions(task="six", epochs=epochs, batch_size=16, learning_rate=1e-4, validation_fraction=0.2,
                        seed=seed, split="record", augment=True, balance=True, early_stopping_patience=6,
                        lr_patience=4, adapt_batch_norm=True)


# How the shipped default model is trained from scratch on the real corpus (~2,400 recordings of
# PTB-XL, CinC, LUDB and CODE-test; benchmarks/train_default.py): augmented, rare classes weighted,
# validation by patient, the learning rate cut when validation loss stalls.
CORPUS_EPOCHS = 15


def corpus_recipe(seed: int = 0, epochs: int = CORPUS_EPOCHS) -> TrainOptions:
    return TrainOptions(task="six", epochs=epochs, batch_size=32, learning_rate=1e-3, validation_fraction=0.15,
                        seed=seed, split="patient", augment=True, balance=True, early_stopping_patience=6,
                        lr_patience=3)


def real_transfer_recipe(seed: int = 0, epochs: int = REAL_TRANSFER_EPOCHS) -> TrainOptions:
    return replace(real_recipe(seed, epochs), task="binary", learning_rate=1e-3)


def _strategy(name: str) -> Any:
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name != "none":
        raise InputError(None, f"unknown strategy {name!r}: none, mirrored or multiworker")
    return None


class Throughput(keras.callbacks.Callback):
    """Every `every` training batches: show(epoch, batches done, batches, exams a second, seconds left in
    the epoch); the rate is over the epoch so far, so the first batch's graph building fades out."""

    def __init__(self, show: Callable[[int, int, int, float, float], None], batches: int, batch_size: int,
                 every: int = 10):
        super().__init__()
        self.show, self.batches, self.batch_size, self.every = show, batches, batch_size, every
        self._epoch, self._start = 0, 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        import time

        self._epoch, self._start = epoch, time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        import time

        done = batch + 1
        if done % self.every and done != self.batches:
            return
        elapsed = time.perf_counter() - self._start
        rate = done * self.batch_size / elapsed if elapsed > 0 else 0.0
        self.show(self._epoch, done, self.batches, rate, elapsed / done * (self.batches - done))


def callbacks(
    work_dir: Path, options: TrainOptions, epoch_end: Callable[[int, dict], None] | None,
    best_so_far: float | None = None,
) -> list:
    """The reference's callbacks plus resumption: BackupAndRestore keeps the last finished epoch, and
    `best_so_far` (the best validation loss before an interruption) keeps a worse epoch of the resumed
    run from overwriting best.keras."""
    cbs = [
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.1, patience=options.lr_patience,
                                          min_lr=options.learning_rate / 100),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=options.early_stopping_patience,
                                      min_delta=1e-5),
        keras.callbacks.ModelCheckpoint(work_dir / "last.keras"),
        keras.callbacks.ModelCheckpoint(work_dir / "best.keras", monitor="val_loss", save_best_only=True,
                                        initial_value_threshold=best_so_far),
        keras.callbacks.CSVLogger(work_dir / "training.csv", append=True),
        keras.callbacks.BackupAndRestore(str(work_dir / "backup")),
    ]
    with contextlib.suppress(ImportError):  # TensorBoard logs need the tensorboard package
        import tensorboard  # noqa: F401

        cbs.append(keras.callbacks.TensorBoard(str(work_dir / "logs")))
    if epoch_end is not None:
        cbs.append(keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: epoch_end(epoch, logs or {})))
    return cbs


def predict_sequence(model: Any, seq: HDF5Sequence) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities) over a sequence, in its order."""
    ys, ps = [], []
    for i in range(len(seq)):
        x, y = seq[i][:2]
        ys.append(y)
        ps.append(np.asarray(model(x, training=False)))
    return np.concatenate(ys), np.concatenate(ps)


def choose_thresholds(model: Any, val: HDF5Sequence, classes: Sequence[str]) -> dict[str, float]:
    """Per class, the threshold of maximal F1 on the validation exams."""
    y, p = predict_sequence(model, val)
    return {c: max_f1_threshold(y[:, k], p[:, k]) for k, c in enumerate(classes)}


def _fit(
    build: Callable[[], Any], data: Sequence[str | Path], labels_csv: str | Path, out: Path, options: TrainOptions,
    kind: str, epoch_end: Callable[[int, dict], None] | None,
    batch_end: Callable[[int, int, int, float, float], None] | None = None,
) -> tuple[Path, dict[str, Any]]:
    keras.utils.set_random_seed(options.seed)
    train, val = train_validation_sequences(data, labels_csv, options.task, options.batch_size,
                                            options.validation_fraction, options.seed, split=options.split,
                                            augment=Augment() if options.augment else None,
                                            balance=options.balance)
    out = Path(out)
    work_dir = out.with_suffix(".training")
    work_dir.mkdir(parents=True, exist_ok=True)
    resumed = _resuming(work_dir)
    best_so_far = _resume_state(work_dir)
    strategy = _strategy(options.strategy)
    with strategy.scope() if strategy else contextlib.nullcontext():
        model = build()
        frozen: list[str] = []
        if options.adapt_batch_norm:  # resumed: the backup holds the statistics; frozen as before, not measured
            frozen = _adapt(model, None if resumed else train, options.learning_rate)
    cbs = callbacks(work_dir, options, epoch_end, best_so_far)
    if batch_end is not None:
        cbs.append(Throughput(batch_end, len(train), options.batch_size))
    model.fit(train, validation_data=val, epochs=options.epochs, verbose=0, callbacks=cbs)
    best = work_dir / "best.keras"
    if best.exists():
        model = keras.saving.load_model(best)
    for layer in batch_norm_layers(model):  # shipped as before: the statistics kept, trainable again
        if layer.name in frozen:
            layer.trainable = True
    classes = list(class_names(options.task))
    info = {"task": options.task, "kind": kind, "classes": classes,
            "thresholds": choose_thresholds(model, val, classes),
            "thresholds_source": f"max F1 on {len(val.index)} validation exams",
            "trained_on": [str(p) for p in data], "seed": options.seed,
            "epochs_run": len({r["epoch"] for r in _read_log(work_dir / "training.csv")})}
    tmp = out.with_name(out.name + ".part.keras")
    model.save(tmp)
    tmp.replace(out)
    write_model_info(out, info)
    train.close()
    val.close()
    return out, info


def _adapt(model: Any, train: HDF5Sequence | None, learning_rate: float) -> list[str]:
    """The training exams' own batch-norm statistics (as read, not augmented; none measured without
    `train`), fixed from then on; returns the names of the layers frozen for it."""
    if train is not None:
        augment, train.augment = train.augment, None
        try:
            adapt_batch_norm(model, (train[i][0] for i in range(len(train))))
        finally:
            train.augment = augment
    frozen = freeze_batch_norm(model)
    compile_for_training(model, learning_rate)  # trainable flags changed: compile again
    return frozen


def _resuming(work_dir: Path) -> bool:
    backup = work_dir / "backup"
    return backup.is_dir() and any(backup.iterdir())


def _resume_state(work_dir: Path) -> float | None:
    """The best validation loss of the run being resumed; None for a fresh run, whose folder is
    cleared of an earlier run's log (kept aside) and best model."""
    log = work_dir / "training.csv"
    if _resuming(work_dir):
        losses = [float(r["val_loss"]) for r in _read_log(log) if r.get("val_loss")]
        return min(losses) if losses else None
    if log.exists():
        k = 1
        while (work_dir / f"training.previous-{k}.csv").exists():
            k += 1
        log.rename(work_dir / f"training.previous-{k}.csv")
    (work_dir / "best.keras").unlink(missing_ok=True)
    return None


def _read_log(path: Path) -> list[dict[str, str]]:
    import csv

    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def train_model(
    data: Sequence[str | Path], labels_csv: str | Path, out: str | Path, options: TrainOptions | None = None,
    epoch_end: Callable[[int, dict], None] | None = None,
    batch_end: Callable[[int, int, int, float, float], None] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Train the Ribeiro network (six classes) or its binary head; resumes an interrupted run.

    Writes `out` (the best model by validation loss) and `out`.json (classes, thresholds);
    checkpoints and logs go to `out` with suffix `.training/`.
    """
    options = options or TrainOptions()
    build = build_ribeiro if options.task == "six" else build_binary

    def compiled() -> Any:
        return compile_for_training(build(), options.learning_rate)

    return _fit(compiled, data, labels_csv, Path(out), options, "ribeiro" if options.task == "six" else "binary",
                epoch_end, batch_end)


def retrain_model(
    base: str | Path, data: Sequence[str | Path], labels_csv: str | Path, out: str | Path,
    options: TrainOptions | None = None, epoch_end: Callable[[int, dict], None] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """The six-class model trained further, every layer, from `base` (e.g. from synthetic ECGs to real
    ones, at a lower learning rate): it keeps the classifier it learned, where the transfer model
    starts three new layers from scratch."""
    options = options or TrainOptions(learning_rate=1e-4)
    _, base_model, base_info = load_keras_model(base)
    if base_info["task"] != options.task:
        raise InputError(base, f"a {base_info['task']} model cannot be trained further for the {options.task} task")

    def compiled() -> Any:
        return compile_for_training(base_model, options.learning_rate)

    return _fit(compiled, data, labels_csv, Path(out), options, base_info.get("kind", "ribeiro"), epoch_end)


def finetune_model(
    base: str | Path, data: Sequence[str | Path], labels_csv: str | Path, out: str | Path,
    options: TrainOptions | None = None, freeze: int = 5, cut: int = 45, unfreeze_epochs: int = 0,
    epoch_end: Callable[[int, dict], None] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """The transfer model on a trained six-class model (a .keras file or the original model.hdf5).

    With `unfreeze_epochs`, a second stage trains every layer at a tenth of the learning rate.
    """

    options = options or TrainOptions(task="binary")
    _, base_model, base_info = load_keras_model(base)
    if base_info["task"] != "six":
        raise InputError(base, "the base of a transfer model must be a six-class model")
    n_out = len(class_names(options.task))

    def compiled() -> Any:
        return compile_for_training(build_transfer(base_model, freeze=freeze, cut=cut, n_outputs=n_out),
                                    options.learning_rate)

    out, info = _fit(compiled, data, labels_csv, Path(out), options, "transfer", epoch_end)
    if unfreeze_epochs > 0:
        model = keras.saving.load_model(out)
        for layer in model.layers:
            layer.trainable = True
        compile_for_training(model, options.learning_rate / 10)
        stage2 = replace(options, epochs=unfreeze_epochs, learning_rate=options.learning_rate / 10)
        out, info = _fit(lambda: model, data, labels_csv, out.with_name(out.stem + ".unfrozen.keras"), stage2,
                         "transfer", epoch_end)
    return out, info

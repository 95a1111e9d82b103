"""Work that spans the layers, for the command line (the top layer: it calls training, export and
the runtime): the demo's steps and the random-weight export that bench falls back on."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ecg_edge.errors import InputError


def epoch_printer(total: int, console: Console) -> Callable[[int, dict], None]:
    def show(epoch: int, logs: dict) -> None:
        numbers = "  ".join(f"lr {v:.0e}" if k == "learning_rate" else f"{k} {v:.4f}"
                            for k, v in logs.items() if isinstance(v, float))
        console.print(f"epoch {epoch + 1}/{total}  {numbers}", highlight=False, soft_wrap=True)  # one line an epoch

    return show


@contextlib.contextmanager
def training_progress(epochs: int, console: Console) -> Iterator[Callable[[int, int, int, float, float], None]]:
    """A bar over each epoch's batches with exams a second and the time left (training.train.Throughput);
    drawn on a terminal only, as every progress bar here."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]}"), console=console, transient=True,
                        disable=not console.is_terminal)
    task = progress.add_task("epoch 1", total=None, rate="")

    def show(epoch: int, done: int, batches: int, rate: float, left: float) -> None:
        progress.update(task, description=f"epoch {epoch + 1}/{epochs}", completed=done, total=batches,
                        rate=f"{rate:.1f} ECG/s, epoch ends in {left:.0f} s")

    with progress:
        yield show


# Real recordings the demo fine-tunes on only from this many labelled ones; a share is held out to score on.
MIN_REAL_TO_FINETUNE = 40
REAL_HELD_OUT = 0.3


def run_demo(n: int, epochs: int, records: list[Path], seed: int, console: Console) -> None:
    """Whole pipeline: synthetic data -> train -> fine-tune (on the real recordings given, where they
    are labelled) -> evaluate -> export -> infer -> bench."""
    from ecg_edge.backends import open_backend
    from ecg_edge.bench import bench_table, run_matrix
    from ecg_edge.export.pipeline import ExportGateError, ExportOptions, export_model, export_table
    from ecg_edge.home import home_export_dir, home_model_path, model_home
    from ecg_edge.infer import run_inference
    from ecg_edge.manifest import find_file, load_manifest
    from ecg_edge.progress import progress_bar
    from ecg_edge.readers import hdf5_exam_count
    from ecg_edge.results import results_table, write_results
    from ecg_edge.synthetic import summarize_labels, write_synthetic_set
    from ecg_edge.training.evaluate import evaluate as run_evaluation
    from ecg_edge.training.evaluate import write_report
    from ecg_edge.training.labels import labelled_recordings, split_by_record
    from ecg_edge.training.models import load_keras_model
    from ecg_edge.training.train import (
        REAL_EPOCHS,
        REAL_TRANSFER_EPOCHS,
        TrainOptions,
        finetune_model,
        real_recipe,
        real_transfer_recipe,
        retrain_model,
        train_model,
    )

    records = [r for r in records or [] if r.exists()]
    home = model_home()
    (home / "data").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    real = labelled_recordings(records, home / "data") if records else None
    n_real = hdf5_exam_count(real[0]) if real else 0
    if real and n_real < MIN_REAL_TO_FINETUNE:
        console.print(f"{n_real} labelled real recordings: fewer than {MIN_REAL_TO_FINETUNE}, so no fine-tuning on "
                      "them (they validate the export and are inferred on)", highlight=False)
        real = None
    # what validates the export and is inferred on: the labelled set, read once, or the recordings as given
    real_inputs = [real[0]] if real else records

    console.rule("1/7 synthetic data")
    n_test = max(n // 4, 50)
    with progress_bar("synthesizing", total=n + n_test) as advance:
        train_h5, train_csv = write_synthetic_set(home / "data" / "train.h5", n, seed=seed, progress=advance)
        test_h5, test_csv = write_synthetic_set(home / "data" / "test.h5", n_test, seed=seed + 1, progress=advance)
    console.print(summarize_labels(train_csv))

    console.rule(f"2/7 train the six-class model on synthetic ECGs ({epochs} epochs, CPU)")
    t0 = time.perf_counter()
    synthetic_path = home / "synthetic.keras" if real else home_model_path()
    model_path, _ = train_model([train_h5], train_csv, synthetic_path,
                                TrainOptions(epochs=epochs, batch_size=32, validation_fraction=0.1, seed=seed),
                                epoch_end=epoch_printer(epochs, console))
    console.print(f"{n * 0.9 * epochs / (time.perf_counter() - t0):.1f} ECG/s training throughput")

    held_out: tuple[Path, Path] | None = None
    if real:
        (fit_h5, fit_csv), held_out = split_by_record(real[0], real[1], REAL_HELD_OUT, home / "data")
        n_fit = hdf5_exam_count(fit_h5)
        console.rule(f"3/7 fine-tune on {n_fit} real recordings ({n_real - n_fit} held out; {REAL_EPOCHS} epochs, "
                     "every layer, the real recordings' batch-norm statistics, lr 1e-4)")
        real_options = real_recipe(seed, REAL_EPOCHS)
        # the whole six-class model from its synthetic start (measured: better on held-out real recordings
        # than the transfer model's three new layers, whose head starts from nothing on 188 recordings)
        model_path, _ = retrain_model(synthetic_path, [fit_h5], fit_csv, home_model_path(), real_options,
                                      epoch_end=epoch_printer(REAL_EPOCHS, console))
        # no normal/abnormal labels among the real ones: the synthetic set, with its own statistics
        has_normal = _has_normal(fit_csv)
        transfer_data, transfer_epochs = ((([fit_h5], fit_csv), REAL_TRANSFER_EPOCHS) if has_normal
                                          else (([train_h5], train_csv), 1))
        binary_options = replace(real_transfer_recipe(seed, transfer_epochs), adapt_batch_norm=has_normal)
    else:
        console.rule("3/7 fine-tune the binary transfer model (1 epoch)")
        transfer_data, transfer_epochs = ([train_h5], train_csv), 1
        binary_options = TrainOptions(task="binary", epochs=1, batch_size=32, validation_fraction=0.1, seed=seed)
    console.print(f"binary transfer model ({transfer_epochs} epochs on {transfer_data[0][0].name})", highlight=False)
    transfer_path, _ = finetune_model(synthetic_path, transfer_data[0], transfer_data[1], home / "transfer.keras",
                                      binary_options, epoch_end=epoch_printer(transfer_epochs, console))

    console.rule("4/7 evaluate on held-out ECGs")
    report = run_evaluation(synthetic_path, [test_h5], test_csv, n_boot=100)
    write_report(report, home / "reports" / "six-class")
    binary = run_evaluation(transfer_path, [test_h5], test_csv, n_boot=100)
    write_report(binary, home / "reports" / "transfer")
    console.print(_scores_table(f"held-out synthetic: {report['n_exams']} exams (synthetic-only model)",
                                {"model": report, "transfer (abnormal)": binary}))
    if held_out is not None:
        before = run_evaluation(synthetic_path, [held_out[0]], held_out[1], n_boot=200)
        after = run_evaluation(model_path, [held_out[0]], held_out[1], n_boot=200)
        write_report(before, home / "reports" / "real-synthetic-only")
        write_report(after, home / "reports" / "real-fine-tuned")
        compared = {"synthetic-only": before, "fine-tuned on real": after}
        if _has_normal(held_out[1]):
            compared["transfer (abnormal)"] = run_evaluation(transfer_path, [held_out[0]], held_out[1], n_boot=200)
        console.print(_scores_table(f"{after['n_exams']} held-out real recordings (never trained on; split by "
                                    "record)", compared))

    console.rule("5/7 export ONNX FP32 / FP16 / INT8")
    try:
        export_model(load_keras_model(model_path), home_export_dir(), ExportOptions(),
                     validation=real_inputs, log=lambda line: console.print(line, markup=False, highlight=False))
    except ExportGateError as exc:  # the files that passed are written; show the gate at work and go on
        console.print(f"note: {exc}", markup=False, highlight=False)
    manifest = load_manifest(home_export_dir())
    console.print(export_table(manifest, home_export_dir()))

    console.rule("6/7 infer")
    results_dir = home / "results"
    results_dir.mkdir(exist_ok=True)
    fastest = "int8" if find_file(manifest, "onnx", "int8") else "fp32"
    runner, manifest = open_backend(home_export_dir(), "auto", fastest)
    with runner:
        for name, inputs in (("synthetic", [test_h5]), ("records", real_inputs)):
            if not inputs:
                continue
            run = run_inference(inputs, runner, manifest)
            write_results(run, results_dir / f"{name}.csv")
            if name == "records" and len(run.ids) <= 40:
                console.print(results_table(run))
            console.print(f"{name}: {len(run.ids)} exams, {run.throughput:.0f} ECG/s ({run.backend}) "
                          f"-> {results_dir / f'{name}.csv'}", highlight=False)

    console.rule("7/7 bench at batch 64")
    bench_report = run_matrix(home_export_dir(), [64], [], [], warmup_s=1.0, duration_s=3.0, threads=None,
                              cache_dir=home)
    console.print(bench_table(bench_report))

    console.rule("done")
    trained = ("fine-tuned on the real recordings given (scores on the held-out ones above); it is a research "
               "model, its findings are not diagnoses" if held_out is not None else
               "trained on synthetic ECGs: it learns rate, rhythm and QRS-width cues; its outputs on real "
               "recordings are not diagnoses")
    console.print(f"{time.perf_counter() - started:.0f} s. Everything is in {home}:\n"
                  f"  models   {model_path}, {transfer_path}\n"
                  f"  reports  {home / 'reports'}\n"
                  f"  export   {home_export_dir()}\n"
                  f"  results  {results_dir}\n"
                  "Now `ecg-edge infer RECORDING`, `ecg-edge export` and `ecg-edge bench --batch 64` work with no "
                  f"paths. The home model is {trained}.", highlight=False)


def _has_normal(labels_csv: Path) -> bool:
    from ecg_edge.spec import NORMAL_COLUMN

    with open(labels_csv) as f:
        return NORMAL_COLUMN in f.readline().strip().split(",")


def _scores_table(title: str, reports: dict[str, dict]) -> Table:
    """Per class, one row per model: n+, AUROC and F1 with their 95% intervals (fits 80 columns)."""
    table = Table(title=title)
    for column in ("class", "n+", "model", "AUROC (95% CI)", "F1 (95% CI)"):
        table.add_column(column, justify="right" if column == "n+" else "left", no_wrap=True)
    classes = list(dict.fromkeys(c for r in reports.values() for c in r["scores"]))
    for c in classes:
        rows = [(name, r["scores"][c]) for name, r in reports.items() if c in r["scores"]]
        for k, (name, s) in enumerate(rows):
            table.add_row(c if k == 0 else "", str(s["positives"]) if k == 0 else "", name,
                          _with_ci(s, "auroc"), _with_ci(s, "f1"), end_section=k == len(rows) - 1)
    return table


def _with_ci(scores: dict, metric: str) -> str:
    value = scores[metric]
    if value != value:  # NaN: one class only among these exams
        return "-"
    low, high = scores["ci95"][metric]
    return f"{value:.2f} ({low:.2f}-{high:.2f})"


def random_weight_export(out_dir: Path, for_tensorrt: bool = False,
                         log: Callable[[str], None] = lambda line: None) -> Path:
    """The Ribeiro architecture with random weights, exported FP32/FP16/INT8 (and the symmetric
    INT8 file for TensorRT with `for_tensorrt`): speed does not depend on the weights. A file whose
    gate fails is left out and said in `log`: what is benchmarked is what passed. Needs the `train` extra."""
    try:
        import keras
    except ImportError:
        raise InputError(None, "no export to benchmark and no TensorFlow to make one: pass --model DIR "
                               "or pip install 'ecg-edge[train]'") from None
    from ecg_edge.export.pipeline import ExportGateError, ExportOptions, export_model
    from ecg_edge.export.precision import Int8Recipe
    from ecg_edge.training.models import build_ribeiro, load_keras_model

    keras.utils.set_random_seed(0)
    model_path = out_dir / "random.keras"
    build_ribeiro().save(model_path)
    # Random weights measure speed only: findings agreement would gate nothing a user relies on (and a
    # random network's INT8 findings differ from FP32's more often), so that gate is off; the manifest
    # records the empty gate.
    try:
        export_model(load_keras_model(model_path), out_dir / "export", ExportOptions(
            n_calibration=32, n_synthetic_validation=16, int8_recipes=(Int8Recipe(),),
            min_exam_agreement={}, int8_atol=1.0, for_tensorrt=for_tensorrt), warn=log)
    except ExportGateError as exc:  # what passed is written and benchmarked
        log(f"note: {exc}")
    return out_dir / "export"

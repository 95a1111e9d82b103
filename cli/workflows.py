"""Work that spans the layers, for the command line (the top layer: it calls training, export and
the runtime): the demo's steps and the random-weight export that bench falls back on."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ecg_edge.errors import InputError


def epoch_printer(total: int, console: Console) -> Callable[[int, dict], None]:
    def show(epoch: int, logs: dict) -> None:
        numbers = "  ".join(f"{k} {v:.4f}" for k, v in logs.items() if isinstance(v, float))
        console.print(f"epoch {epoch + 1}/{total}  {numbers}", highlight=False)

    return show


def run_demo(n: int, epochs: int, records: list[Path], seed: int, console: Console) -> None:
    """Whole pipeline on synthetic data: synth -> train -> fine-tune -> evaluate -> export -> infer -> bench."""
    from ecg_edge.backends import open_backend
    from ecg_edge.bench import bench_table, run_matrix
    from ecg_edge.export.pipeline import ExportGateError, ExportOptions, export_model, export_table
    from ecg_edge.home import home_export_dir, home_model_path, model_home
    from ecg_edge.infer import results_table, run_inference, write_results
    from ecg_edge.manifest import find_file, load_manifest
    from ecg_edge.progress import progress_bar
    from ecg_edge.synthetic import summarize_labels, write_synthetic_set
    from ecg_edge.training.evaluate import evaluate as run_evaluation
    from ecg_edge.training.evaluate import write_report
    from ecg_edge.training.models import load_keras_model
    from ecg_edge.training.train import TrainOptions, finetune_model, train_model

    records = [r for r in records or [] if r.exists()]
    home = model_home()
    (home / "data").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    console.rule("1/7 synthetic data")
    n_test = max(n // 4, 50)
    with progress_bar("synthesizing", total=n + n_test) as advance:
        train_h5, train_csv = write_synthetic_set(home / "data" / "train.h5", n, seed=seed, progress=advance)
        test_h5, test_csv = write_synthetic_set(home / "data" / "test.h5", n_test, seed=seed + 1, progress=advance)
    console.print(summarize_labels(train_csv))

    console.rule(f"2/7 train the six-class model ({epochs} epochs, CPU)")
    t0 = time.perf_counter()
    model_path, _ = train_model([train_h5], train_csv, home_model_path(),
                                TrainOptions(epochs=epochs, batch_size=32, validation_fraction=0.1, seed=seed),
                                epoch_end=epoch_printer(epochs, console))
    console.print(f"{n * 0.9 * epochs / (time.perf_counter() - t0):.1f} ECG/s training throughput")

    console.rule("3/7 fine-tune the binary transfer model (1 epoch)")
    transfer_path, _ = finetune_model(model_path, [train_h5], train_csv, home / "transfer.keras",
                                      TrainOptions(task="binary", epochs=1, batch_size=32, validation_fraction=0.1,
                                                   seed=seed), epoch_end=epoch_printer(1, console))

    console.rule("4/7 evaluate on held-out synthetic ECGs")
    report = run_evaluation(model_path, [test_h5], test_csv, n_boot=100)
    write_report(report, home / "reports" / "six-class")
    binary = run_evaluation(transfer_path, [test_h5], test_csv, n_boot=100)
    write_report(binary, home / "reports" / "transfer")
    scores = Table(title=f"held-out synthetic: {report['n_exams']} exams")
    for column in ("class", "AUROC", "F1", "recall", "specificity"):
        scores.add_column(column, justify="left" if column == "class" else "right")
    for name, s in [*report["scores"].items(), *(("abnormal (transfer)", v) for v in binary["scores"].values())]:
        cells = (f"{s[m]:.3f}" if s[m] == s[m] else "-" for m in ("auroc", "f1", "recall", "specificity"))
        scores.add_row(name, *cells)
    console.print(scores)

    console.rule("5/7 export ONNX FP32 / FP16 / INT8")
    try:
        export_model(load_keras_model(model_path), home_export_dir(), ExportOptions(),
                     validation=records, log=lambda line: console.print(line, markup=False, highlight=False))
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
        for name, inputs in (("synthetic", [test_h5]), ("records", records)):
            if not inputs:
                continue
            run = run_inference(inputs, runner, manifest)
            write_results(run, results_dir / f"{name}.csv")
            if name == "records":
                console.print(results_table(run))
            console.print(f"{name}: {len(run.ids)} exams, {run.throughput:.0f} ECG/s ({run.backend}) "
                          f"-> {results_dir / f'{name}.csv'}", highlight=False)

    console.rule("7/7 bench at batch 64")
    bench_report = run_matrix(home_export_dir(), [64], [], [], warmup_s=1.0, duration_s=3.0, threads=None,
                              cache_dir=home)
    console.print(bench_table(bench_report))

    console.rule("done")
    console.print(f"{time.perf_counter() - started:.0f} s. Everything is in {home}:\n"
                  f"  models   {model_path}, {transfer_path}\n"
                  f"  reports  {home / 'reports'}\n"
                  f"  export   {home_export_dir()}\n"
                  f"  results  {results_dir}\n"
                  "Now `ecg-edge infer RECORDING`, `ecg-edge export` and `ecg-edge bench --batch 64` work with no "
                  "paths. A model trained on synthetic ECGs learns rate, rhythm and QRS-width cues; its "
                  "outputs on real recordings are not diagnoses.", highlight=False)


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

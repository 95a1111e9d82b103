"""Work that spans the layers, for the command line (the top layer: it calls training, export and
the runtime): the demo's steps and the random-weight export that bench falls back on."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
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


# The binary transfer model learns from about this many of the exams the default model trained on.
DEMO_TRANSFER_EXAMS = 600
DEMO_SYNTHETIC_EXAMS = 400


def run_demo(n: int, epochs: int, records: list[Path], seed: int, console: Console) -> None:
    """Whole pipeline around the shipped default model: it becomes the home model; the binary transfer
    model is fine-tuned from it; both are scored on recordings the default model never trained on;
    export (gated on such recordings), infer, bench. `n` synthetic ECGs stand in for labelled real
    folders where none are given; `epochs` trains the transfer model on them."""
    from ecg_edge.backends import open_backend
    from ecg_edge.bench import bench_table, run_matrix
    from ecg_edge.export.pipeline import ExportGateError, ExportOptions, export_model, export_table
    from ecg_edge.home import home_export_dir, model_home
    from ecg_edge.infer import run_inference
    from ecg_edge.manifest import find_file, load_manifest
    from ecg_edge.model_info import read_model_info
    from ecg_edge.progress import progress_bar
    from ecg_edge.readers import hdf5_exam_count
    from ecg_edge.results import results_table, write_results
    from ecg_edge.synthetic import write_synthetic_set
    from ecg_edge.training.corpus import build_corpus, is_labelled_folder, write_part
    from ecg_edge.training.default_model import SPLIT_TEXT, default_parts, install_default
    from ecg_edge.training.evaluate import evaluate as run_evaluation
    from ecg_edge.training.evaluate import write_report
    from ecg_edge.training.models import load_keras_model
    from ecg_edge.training.train import REAL_TRANSFER_EPOCHS, TrainOptions, finetune_model, real_transfer_recipe

    records = [r for r in records or [] if r.exists()]
    labelled = [r for r in records if is_labelled_folder(r)]
    home = model_home()
    data = home / "data"
    data.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    def say(line: str) -> None:
        console.print(line, markup=False, highlight=False, soft_wrap=True)

    console.rule("1/6 the shipped default model becomes the home model")
    model_path = install_default(home, log=say)
    card = read_model_info(model_path, "six", "ribeiro")
    say(f"{model_path}: the six-class network trained on {', '.join(card.get('trained_on', []))} "
        f"(docs/model-card.md); split: {card.get('split', '?')}")

    console.rule("2/6 data the default model never trained on")
    others = [r for r in records if r not in labelled]
    if labelled:
        corpus = build_corpus(labelled, home / "cache", log=say)
        parts = default_parts(corpus.rows)
        trained = set(card.get("trained_exams", []))
        moved = [e for e, p in parts.items() if p != "train" and e in trained]
        for exam_id in moved:  # what the model learned from is never scored, whatever the split says now
            parts[exam_id] = "train"
        if moved:
            say(f"{len(moved)} exams the default model trained on are left out of the scores and gates")
        for part in ("train", "test"):
            if not any(p == part for p in parts.values()):
                raise InputError(labelled[0], f"too few labelled recordings: none falls in the {part} part")
        n_train = sum(p == "train" for p in parts.values())
        share = min(1.0, DEMO_TRANSFER_EXAMS / max(n_train, 1))
        fit_h5, fit_csv = write_part(corpus, parts, ["train"], data / "transfer-train.h5", share=share)
        test_h5, test_csv = write_part(corpus, parts, ["test"], data / "test.h5")
        gate_h5, _ = write_part(corpus, parts, ["validation", "test"], data / "gate.h5")
        calibration = [write_part(corpus, parts, ["train"], data / "calibration.h5", share=0.1)[0]]
        export_inputs, infer_inputs = [gate_h5, *others], [test_h5, *others]
        transfer_epochs, transfer_options = REAL_TRANSFER_EPOCHS, real_transfer_recipe(seed, REAL_TRANSFER_EPOCHS)
        where = f"the test part of {', '.join(r.name for r in labelled)}"
        say(f"the default model's split: {SPLIT_TEXT}")
    else:
        with progress_bar("synthesizing", total=n + DEMO_SYNTHETIC_EXAMS) as advance:
            fit_h5, fit_csv = write_synthetic_set(data / "train.h5", n, seed=seed, progress=advance)
            test_h5, test_csv = write_synthetic_set(data / "test.h5", DEMO_SYNTHETIC_EXAMS, seed=seed + 1,
                                                    progress=advance)
        calibration, export_inputs, infer_inputs = [], records, records or [test_h5]
        transfer_epochs = epochs
        transfer_options = TrainOptions(task="binary", epochs=epochs, batch_size=32, validation_fraction=0.1, seed=seed)
        where = "synthetic ECGs (no labelled real folders given)"
    say(f"transfer model: {hdf5_exam_count(fit_h5)} exams to fine-tune on; scores on {hdf5_exam_count(test_h5)} "
        f"exams of {where}")

    console.rule(f"3/6 the binary transfer model fine-tuned from it ({transfer_epochs} "
                 f"epoch{'s' if transfer_epochs > 1 else ''})")
    t0 = time.perf_counter()
    transfer_path, _ = finetune_model(model_path, [fit_h5], fit_csv, home / "transfer.keras", transfer_options,
                                      epoch_end=epoch_printer(transfer_epochs, console))
    say(f"{hdf5_exam_count(fit_h5) * transfer_epochs / (time.perf_counter() - t0):.1f} ECG/s training throughput")

    console.rule("4/6 scores on exams the default model never trained on")
    six = run_evaluation(model_path, [test_h5], test_csv, n_boot=200)
    binary = run_evaluation(transfer_path, [test_h5], test_csv, n_boot=200)
    write_report(six, home / "reports" / "default-model")
    write_report(binary, home / "reports" / "transfer")
    console.print(_scores_table(f"{six['n_exams']} exams of {where}", {"default model": six,
                                                                       "transfer (abnormal)": binary}))

    console.rule("5/6 export ONNX FP32 / FP16 / INT8, gated on exams never trained on")
    try:
        export_model(load_keras_model(model_path), home_export_dir(), ExportOptions(), calibration=calibration,
                     validation=export_inputs, log=say)
    except ExportGateError as exc:  # the files that passed are written; show the gate at work and go on
        say(f"note: {exc}")
    manifest = load_manifest(home_export_dir())
    console.print(export_table(manifest, home_export_dir()))

    console.rule("6/6 infer and bench at batch 64")
    results_dir = home / "results"
    results_dir.mkdir(exist_ok=True)
    fastest = "int8" if find_file(manifest, "onnx", "int8") else "fp32"
    runner, manifest = open_backend(home_export_dir(), "auto", fastest)
    with runner:
        run = run_inference(infer_inputs, runner, manifest)
    write_results(run, results_dir / "records.csv")
    if len(run.ids) <= 40:
        console.print(results_table(run))
    say(f"{len(run.ids)} exams, {run.throughput:.0f} ECG/s ({run.backend}, {fastest}) -> {results_dir / 'records.csv'}")
    bench_report = run_matrix(home_export_dir(), [64], [], [], warmup_s=1.0, duration_s=3.0, threads=None,
                              cache_dir=home)
    console.print(bench_table(bench_report))

    console.rule("done")
    say(f"{time.perf_counter() - started:.0f} s. Everything is in {home}:\n"
        f"  models   {model_path} (the shipped default), {transfer_path}\n"
        f"  reports  {home / 'reports'}\n"
        f"  export   {home_export_dir()}\n"
        f"  results  {results_dir}\n"
        "Now `ecg-edge infer RECORDING`, `ecg-edge export` and `ecg-edge bench --batch 64` work with no paths. "
        "These are research models: their findings are not diagnoses.")


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
            n_calibration=32, n_synthetic_validation=16, min_gate_exams=0, int8_recipes=(Int8Recipe(),),
            min_exam_agreement={}, int8_atol=1.0, for_tensorrt=for_tensorrt), warn=log)
    except ExportGateError as exc:  # what passed is written and benchmarked
        log(f"note: {exc}")
    return out_dir / "export"


def default_home_export(log: Callable[[str], None]) -> None:
    """Where the model home has neither an export nor a model (a fresh install), the shipped default model
    becomes the home model and is exported into it, once; otherwise nothing. Exit 3 where this install
    cannot export (no TensorFlow)."""
    from ecg_edge.errors import MachineError
    from ecg_edge.home import home_export_dir, home_model_path, model_home

    if (home_export_dir() / "manifest.json").exists() or home_model_path().exists():
        return
    try:
        from ecg_edge.export.pipeline import ExportGateError, ExportOptions, export_model
        from ecg_edge.training.default_model import install_default
        from ecg_edge.training.models import load_keras_model
    except ImportError as exc:
        raise MachineError("the shipped default model", f"exporting it needs the train extra ({exc.name} is "
                           "missing): pip install 'ecg-edge[train]', or copy an export folder into "
                           f"{home_export_dir()}") from None
    log(f"no model in {model_home()}: the shipped default model becomes the home model and is exported once "
        "(FP32, FP16, INT8 gated on synthetic ECGs; `ecg-edge demo` gates it on real ones)")
    model = install_default(model_home(), log=log)
    try:
        export_model(load_keras_model(model), home_export_dir(), ExportOptions(), log=log)
    except ExportGateError as exc:  # what passed is written and used
        log(f"note: {exc}")

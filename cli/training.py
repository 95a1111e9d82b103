"""Commands that make and score models: the demo, train, finetune, evaluate, reproduce (the `train` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ecg_edge.cli.application import command, console, say
from ecg_edge.cli.options import (
    AugmentOption,
    BalanceOption,
    BootstrapOption,
    SeedOption,
    SplitOption,
    TrainingDataArgument,
    split_list,
)
from ecg_edge.errors import InputError

MAX_FLIPS_SHOWN = 20


@command()
def demo(
    n: Annotated[int, typer.Option("--n", min=100, help="Synthetic ECGs to fine-tune the transfer model on where "
                                                        "no labelled real folders are given.")] = 1000,
    epochs: Annotated[int, typer.Option(min=1, help="Transfer-model epochs on those synthetic ECGs.")] = 1,
    records: Annotated[list[Path] | None, typer.Option(
        help="Real recordings: folders with a labels.csv (e.g. ../shared/data/ptbxl) are split as the default model "
             "was, the transfer model fine-tuned on its training part and everything scored on its test part; "
             "other recordings validate the export and are inferred on.", readable=False)]
    = None,
    seed: SeedOption = 0,
) -> None:
    """Whole pipeline: the shipped default model -> fine-tune the binary transfer model from it -> evaluate
    on recordings it never trained on -> export -> infer -> bench."""
    from ecg_edge.cli.workflows import run_demo

    run_demo(n, epochs, [r for r in records or [] if r.exists()], seed, console)


def _split_name(split: str) -> str:
    from ecg_edge.training.data import SPLITS

    if split not in SPLITS:
        raise InputError(None, f"--split {split!r}: {' or '.join(SPLITS)}")
    return split


def _training_set(data: list[Path], usage: str, near: Path, task: str) -> Any:
    """A context giving (HDF5 files, labels CSV) to train from: several folders each with its own
    labels.csv through the corpus cache in the model home, else DATA [DATA2 ...] LABELS.csv."""
    import contextlib

    from ecg_edge.training.corpus import build_corpus, is_labelled_folder

    if data and all(is_labelled_folder(p) for p in data):
        from ecg_edge.home import model_home

        corpus = build_corpus(data, model_home() / "cache", log=say)
        return contextlib.nullcontext((corpus.files, corpus.labels_csv))
    if data and data[-1].is_dir() and any(is_labelled_folder(p) for p in data):
        unlabelled = next(p for p in data if not is_labelled_folder(p))
        raise InputError(unlabelled, "no labels.csv in this folder (the others given have one)")
    from ecg_edge.training.labels import training_inputs

    inputs, labels = _data_and_labels(data, usage)
    return training_inputs(inputs, labels, near, task)


def _data_and_labels(data: list[Path], usage: str) -> tuple[list[Path], Path]:
    """DATA [DATA2 ...] LABELS.csv, each there."""
    if len(data) < 2:
        raise InputError(None, usage)
    *inputs, labels = data
    for path in [*inputs, labels]:
        if not path.exists():
            raise InputError(path, "no such file")
    return inputs, labels


@command()
def train(
    data: TrainingDataArgument,
    task: Annotated[str, typer.Option(help="six (abnormalities) or binary (normal/abnormal).")] = "six",
    epochs: Annotated[int, typer.Option(min=1, help="Most epochs (early stopping may end sooner).")] = 70,
    batch: Annotated[int, typer.Option(min=1, help="Batch size.")] = 64,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-3,
    out: Annotated[Path | None, typer.Option(help="Model file (default: the model home's model.keras).",
                                             readable=False)] = None,
    seed: SeedOption = 0,
    validation_fraction: Annotated[float, typer.Option(help="Share of exams held out for validation.")] = 0.02,
    strategy: Annotated[str, typer.Option(help="none, mirrored (all GPUs here) or multiworker (TF_CONFIG).")] = "none",
    split: SplitOption = "tail",
    augment: AugmentOption = False,
    balance: BalanceOption = False,
) -> None:
    """Train the Ribeiro network on labelled recordings (the original recipe); resumes if interrupted."""
    from ecg_edge.cli.workflows import epoch_printer, training_progress
    from ecg_edge.home import home_model_path
    from ecg_edge.training.train import TrainOptions, train_model

    out = out or home_model_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    options = TrainOptions(task=task, epochs=epochs, batch_size=batch, learning_rate=lr, seed=seed,
                           validation_fraction=validation_fraction, strategy=strategy, split=_split_name(split),
                           augment=augment, balance=balance)
    training_set = _training_set(data, "give DATA [DATA2 ...] LABELS.csv, or FOLDER [FOLDER ...] with labels.csv",
                                 out.parent, task)
    with training_set as (h5s, labels), training_progress(epochs, console) as batch_end:
        path, info = train_model(h5s, labels, out, options, epoch_end=epoch_printer(epochs, console),
                                 batch_end=batch_end)
    console.print(f"wrote {path} (thresholds: {info['thresholds_source']})")


@command()
def finetune(
    base: Annotated[Path, typer.Argument(help="Trained six-class model: .keras or the original model.hdf5.",
                                         readable=False)],
    data: TrainingDataArgument,
    task: Annotated[str, typer.Option(help="binary (normal/abnormal) or six.")] = "binary",
    freeze: Annotated[int, typer.Option(help="Freeze the first N layers of the base.")] = 5,
    cut: Annotated[int, typer.Option(help="Cut the base after this layer.")] = 45,
    epochs: Annotated[int, typer.Option(min=1)] = 20,
    unfreeze_epochs: Annotated[int, typer.Option(help="Second stage: all layers at lr/10.")] = 0,
    batch: Annotated[int, typer.Option(min=1)] = 64,
    lr: Annotated[float, typer.Option()] = 1e-3,
    out: Annotated[Path | None, typer.Option(help="Model file (default: the model home's transfer.keras).",
                                             readable=False)] = None,
    seed: Annotated[int, typer.Option()] = 0,
    validation_fraction: Annotated[float, typer.Option(help="Share of exams held out for validation (and the "
                                                            "thresholds).")] = 0.2,
    split: SplitOption = "record",
    augment: AugmentOption = True,
    balance: BalanceOption = True,
) -> None:
    """Fine-tune the transfer model on top of a trained six-class model (defaults suit a few hundred
    real recordings: validation by record, augmentation, rare classes lifted)."""
    from ecg_edge.cli.workflows import epoch_printer
    from ecg_edge.home import model_home
    from ecg_edge.training.train import TrainOptions, finetune_model

    if not base.exists():
        raise InputError(base, "no such file")
    out = out or model_home() / "transfer.keras"
    out.parent.mkdir(parents=True, exist_ok=True)
    options = TrainOptions(task=task, epochs=epochs, batch_size=batch, learning_rate=lr, seed=seed,
                           validation_fraction=validation_fraction, split=_split_name(split), augment=augment,
                           balance=balance)
    training_set = _training_set(data, "give BASE DATA [DATA2 ...] LABELS.csv, or BASE FOLDER [FOLDER ...]",
                                 out.parent, task)
    with training_set as (h5s, labels):
        path, info = finetune_model(base, h5s, labels, out, options, freeze=freeze, cut=cut,
                                    unfreeze_epochs=unfreeze_epochs, epoch_end=epoch_printer(epochs, console))
    console.print(f"wrote {path} (thresholds: {info['thresholds_source']})")


@command()
def evaluate(
    model: Annotated[Path, typer.Argument(help="A .keras/.hdf5 model or an export folder (with --scores: the "
                                               "labels CSV).", readable=False)],
    data: Annotated[list[Path] | None, typer.Argument(help="Recordings in any format, or folders; a labels CSV "
                                                           "last (WFDB '# Dx:' headers serve without one); or "
                                                           "folders each with its own labels.csv.",
                                                      readable=False)] = None,
    backend: Annotated[str, typer.Option(help="For an export folder: auto, ort-cpu, tensorrt, ...")] = "auto",
    precision: Annotated[str, typer.Option(help="For an export folder: fp32, fp16, int8, or several "
                                                "comma-separated to compare them side by side.")] = "fp32",
    scores: Annotated[Path | None, typer.Option(help="Score precomputed probabilities (.npy, (n, 6) or (n, 1), "
                                                     "rows in the labels CSV's order) instead of a model.",
                                                readable=False)] = None,
    report: Annotated[Path | None, typer.Option(help="Write report.md, report.json and curves.png here.",
                                                readable=False)] = None,
    bootstrap: BootstrapOption = 200,
) -> None:
    """Per-class precision, recall, specificity, F1, AUROC/AUPRC (95% bootstrap CIs), with plots."""
    from ecg_edge.training.corpus import build_corpus, is_labelled_folder
    from ecg_edge.training.evaluate import evaluate as run_evaluation
    from ecg_edge.training.evaluate import score_probabilities, scores_table, write_comparison, write_report

    data = data or []
    if scores is not None:
        if data or model.suffix.lower() != ".csv":
            raise InputError(model, "with --scores, give only the labels CSV")
        results = [score_probabilities(scores, model, n_boot=bootstrap)]
    else:
        labels = data[-1] if data and data[-1].suffix.lower() == ".csv" else None
        inputs = data[:-1] if labels else data
        if not inputs:
            raise InputError(None, "no data to evaluate on")
        if labels is None and all(is_labelled_folder(p) for p in inputs):  # FOLDER [FOLDER ...], each labelled
            from ecg_edge.home import model_home

            corpus = build_corpus(inputs, model_home() / "cache", log=say)
            inputs, labels = list(corpus.files), corpus.labels_csv
        precisions = split_list(precision)
        if len(precisions) > 1 and not model.is_dir():
            raise InputError(model, "comparing precisions needs an export folder")
        results = [run_evaluation(model, inputs, labels, backend=backend, precision=p, n_boot=bootstrap)
                   for p in precisions]
    for result in results:
        console.print(scores_table(result))
    if len(results) > 1:
        _show_agreement(results)
    if report is not None:
        if len(results) > 1:
            write_comparison(results, report)
        else:
            write_report(results[0], report)
        console.print(f"wrote {report}/report.md")


def _show_agreement(results: list[dict[str, Any]]) -> None:
    """Each precision against the first: exams whose findings are unchanged, and the first that changed."""
    from ecg_edge.training.evaluate import precision_agreement

    for g in precision_agreement(results):
        p = g["parity"]
        low, high = p["exam_agreement_ci95"]
        say(f"{g['precision']} vs {g['reference']}: findings unchanged in {p['exam_agreement']:.1%} of "
            f"exams ({p['n_exams'] - p['exams_changed']}/{p['n_exams']}, 95% CI {low:.1%}-{high:.1%}), "
            f"max |dp| {p['max_abs_diff']:.2e}")
        for c in g["changed"][:MAX_FLIPS_SHOWN]:
            change = "; ".join(filter(None, (f"gained {', '.join(c['gained'])}" if c["gained"] else "",
                                             f"lost {', '.join(c['lost'])}" if c["lost"] else "")))
            say(f"  {c['exam_id']}: {change}")
        if len(g["changed"]) > MAX_FLIPS_SHOWN:
            say(f"  ... {len(g['changed']) - MAX_FLIPS_SHOWN} more in --report's report.md")


@command()
def reproduce(
    model: Annotated[Path | None, typer.Option(help="Export folder or .keras model (default: the home's export, "
                                                    "else the home's model).", readable=False)] = None,
    tracings: Annotated[Path | None, typer.Option(help="CODE test tracings (default: fetched ones).",
                                                  readable=False)] = None,
    labels: Annotated[Path | None, typer.Option(help="gold_standard.csv (default: fetched one).",
                                                readable=False)] = None,
    backend: Annotated[str, typer.Option(help="auto, ort-cpu, ort-cuda, tensorrt, keras ...")] = "auto",
    precision: Annotated[str, typer.Option(help="fp32, fp16, int8, or several comma-separated.")] = "fp32",
    out: Annotated[Path | None, typer.Option(help="Report folder (default: HOME/reproduce).", readable=False)] = None,
    bootstrap: BootstrapOption = 200,
) -> None:
    """The paper's Table 2 from the released network on the CODE test set, ours beside the published."""
    from ecg_edge.fetch import CODE_TEST_DIR, GOLD_STANDARD, TRACINGS
    from ecg_edge.home import home_export_dir, home_model_path, model_home
    from ecg_edge.training.reproduce import reproduce as run_reproduction
    from ecg_edge.training.reproduce import write_reproduction

    home = model_home()
    tracings = tracings or home / CODE_TEST_DIR / TRACINGS
    labels = labels or home / CODE_TEST_DIR / GOLD_STANDARD
    for path, how in ((tracings, "ecg-edge fetch code-test"), (labels, "--labels gold_standard.csv")):
        if not path.is_file():
            raise InputError(path, f"not found: {how}")
    if model is None:
        model = home_export_dir() if (home_export_dir() / "manifest.json").exists() else home_model_path()
        if not model.exists():
            raise InputError(model, "no model: `ecg-edge fetch weights` (then `ecg-edge export`)")
    precisions = split_list(precision)
    if model.is_file() and precisions != ["fp32"]:
        raise InputError(model, "a Keras model runs FP32 only: export it to compare precisions")
    reports = run_reproduction(model, tracings, labels, backend=backend, precisions=precisions, n_boot=bootstrap)
    for report in reports:
        console.print(_table_2(report))
    path = write_reproduction(reports, out or home / "reproduce")
    console.print(f"wrote {path}", highlight=False)


def _table_2(report: dict[str, Any]) -> Table:
    """The paper's Table 2 for one precision: per class and metric, ours / the paper's."""
    from ecg_edge.training.reproduce import TABLE_METRICS

    table = Table(title=f"Table 2, {report['precision']} ({report['backend']}): ours / paper")
    table.add_column("class")
    for m in TABLE_METRICS:
        table.add_column(m, justify="right")
    rows: dict[str, list[str]] = {}
    for row in report["paper_comparison"]:
        rows.setdefault(row["class"], []).append(f"{row['ours']:.3f} / {row['paper']:.3f}")
    for c, cells in rows.items():
        table.add_row(c, *cells)
    return table

"""The `ecg-edge` command line: thin commands over importable functions (docs/architecture.md, layers)."""

from __future__ import annotations

import functools
import os
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from ecg_edge.errors import GateError, InputError, MachineError
from ecg_edge.spec import AMPLITUDE_NOTE, BATCH_PROFILE

if TYPE_CHECKING:
    from ecg_edge.infer import InferenceRun

# TensorFlow's C++ logging drowns the CLI's output; users can still raise it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

app = typer.Typer(
    name="ecg-edge",
    help="The Ribeiro et al. 12-lead ECG network from training to the edge.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)
_state = {"debug": False}

F = TypeVar("F", bound=Callable[..., Any])


# Path parameters are declared readable=False: click's own check of an unreadable path prints a
# usage box, while the commands' checks name the file in one line with exit code 2.
def user_errors(fn: F) -> F:
    """A failed gate: exit code 1 with its numbers; bad input: exit code 2; a machine that cannot run
    the work: exit code 3; one line on stderr each time (`--debug` shows the traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except GateError as exc:
            if _state["debug"]:
                traceback.print_exc()
            err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except InputError as exc:
            if _state["debug"]:
                traceback.print_exc()
            err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except MachineError as exc:
            if _state["debug"]:
                traceback.print_exc()
            err_console.print(f"error (this machine): {exc}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(3) from None

    return wrapper  # type: ignore[return-value]


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
) -> None:
    _state["debug"] = debug


@app.command()
@user_errors
def synth(
    out: Annotated[Path, typer.Argument(help="Output HDF5 file (CODE layout); labels go to OUT.csv.", readable=False)],
    n: Annotated[int, typer.Option("--n", min=1, help="Number of ECGs.")] = 1000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same set).")] = 0,
) -> None:
    """Labelled synthetic 12-lead ECGs (CODE-layout HDF5 + labels CSV)."""
    from ecg_edge.convert import check_hdf5_output
    from ecg_edge.progress import progress_bar
    from ecg_edge.synthetic import summarize_labels, write_synthetic_set

    check_hdf5_output(out)
    with progress_bar("synthesizing", total=n) as advance:
        h5_path, csv_path = write_synthetic_set(out, n, seed=seed, progress=advance)
    console.print(summarize_labels(csv_path))
    console.print(f"wrote {h5_path} and {csv_path}")


@app.command()
@user_errors
def demo(
    n: Annotated[int, typer.Option("--n", min=100, help="Synthetic training ECGs.")] = 1000,
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs of the six-class model.")] = 3,
    records: Annotated[list[Path] | None, typer.Option(
        help="Real recordings: the labelled ones (a folder's labels.csv keyed by record, else WFDB '# Dx:' headers; "
             "40 or more) are fine-tuned on, a share held out and scored; all validate the export and are inferred on.",
        readable=False)]
    = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Whole pipeline: synthetic data -> train -> fine-tune (on labelled real recordings where given) ->
    evaluate -> export -> infer -> bench."""
    from ecg_edge.cli.workflows import run_demo

    run_demo(n, epochs, [r for r in records or [] if r.exists()], seed, console)


TRAINING_DATA_HELP = ("CODE-layout HDF5 file(s), or recordings in any readable format and folders with a labels "
                      "CSV keyed by record (a `record` column: paths relative to the CSV, FILE.h5#i for HDF5 "
                      "exams); the labels CSV last.")


SplitOption = Annotated[str, typer.Option(help="Validation exams: tail (the last share, as the reference) or "
                                               "record (by a hash of each record: never on both sides).")]
AugmentOption = Annotated[bool, typer.Option("--augment/--no-augment", help="Scale, shift, crop, baseline "
                                             "wander, noise and a dropped lead in training batches.")]
BalanceOption = Annotated[bool, typer.Option("--balance/--no-balance", help="Weigh exams of rare classes up.")]


def _split_name(split: str) -> str:
    from ecg_edge.training.data import SPLITS

    if split not in SPLITS:
        raise InputError(None, f"--split {split!r}: {' or '.join(SPLITS)}")
    return split


def _check_data(data: list[Path], labels: Path) -> None:
    for path in [*data, labels]:
        if not path.exists():
            raise InputError(path, "no such file")


@app.command()
@user_errors
def train(
    data: Annotated[list[Path], typer.Argument(help=TRAINING_DATA_HELP, readable=False)],
    task: Annotated[str, typer.Option(help="six (abnormalities) or binary (normal/abnormal).")] = "six",
    epochs: Annotated[int, typer.Option(min=1, help="Most epochs (early stopping may end sooner).")] = 70,
    batch: Annotated[int, typer.Option(min=1, help="Batch size.")] = 64,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-3,
    out: Annotated[Path | None, typer.Option(help="Model file (default: the model home's model.keras).",
        readable=False)] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    validation_fraction: Annotated[float, typer.Option(help="Share of exams held out for validation.")] = 0.02,
    strategy: Annotated[str, typer.Option(help="none, mirrored (all GPUs here) or multiworker (TF_CONFIG).")] = "none",
    split: SplitOption = "tail",
    augment: AugmentOption = False,
    balance: BalanceOption = False,
) -> None:
    """Train the Ribeiro network on labelled recordings (the original recipe); resumes if interrupted."""
    from ecg_edge.cli.workflows import epoch_printer
    from ecg_edge.home import home_model_path
    from ecg_edge.training.labels import training_inputs
    from ecg_edge.training.train import TrainOptions, train_model

    if len(data) < 2:
        raise InputError(None, "give DATA [DATA2 ...] LABELS.csv")
    *inputs, labels = data
    _check_data(inputs, labels)
    out = out or home_model_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    options = TrainOptions(task=task, epochs=epochs, batch_size=batch, learning_rate=lr, seed=seed,
                           validation_fraction=validation_fraction, strategy=strategy, split=_split_name(split),
                           augment=augment, balance=balance)
    with training_inputs(inputs, labels, out.parent, task) as (h5s, labels):
        path, info = train_model(h5s, labels, out, options, epoch_end=epoch_printer(epochs, console))
    console.print(f"wrote {path} (thresholds: {info['thresholds_source']})")


@app.command()
@user_errors
def finetune(
    base: Annotated[Path, typer.Argument(help="Trained six-class model: .keras or the original model.hdf5.",
        readable=False)],
    data: Annotated[list[Path], typer.Argument(help=TRAINING_DATA_HELP, readable=False)],
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
    from ecg_edge.training.labels import training_inputs
    from ecg_edge.training.train import TrainOptions, finetune_model

    if len(data) < 2:
        raise InputError(None, "give BASE DATA [DATA2 ...] LABELS.csv")
    *inputs, labels = data
    _check_data([base, *inputs], labels)
    out = out or model_home() / "transfer.keras"
    out.parent.mkdir(parents=True, exist_ok=True)
    options = TrainOptions(task=task, epochs=epochs, batch_size=batch, learning_rate=lr, seed=seed,
                           validation_fraction=validation_fraction, split=_split_name(split), augment=augment,
                           balance=balance)
    with training_inputs(inputs, labels, out.parent, task) as (h5s, labels):
        path, info = finetune_model(base, h5s, labels, out, options, freeze=freeze, cut=cut,
                                    unfreeze_epochs=unfreeze_epochs, epoch_end=epoch_printer(epochs, console))
    console.print(f"wrote {path} (thresholds: {info['thresholds_source']})")


@app.command()
@user_errors
def evaluate(
    model: Annotated[Path, typer.Argument(help="A .keras/.hdf5 model or an export folder (with --scores: the "
                                               "labels CSV).", readable=False)],
    data: Annotated[list[Path] | None, typer.Argument(help="Recordings in any format, or folders; a labels CSV "
                                                           "last (WFDB '# Dx:' headers serve without one).",
                                                               readable=False)] = None,
    backend: Annotated[str, typer.Option(help="For an export folder: auto, ort-cpu, tensorrt, ...")] = "auto",
    precision: Annotated[str, typer.Option(help="For an export folder: fp32, fp16, int8, or several "
                                                "comma-separated to compare them side by side.")] = "fp32",
    scores: Annotated[Path | None, typer.Option(help="Score precomputed probabilities (.npy, (n, 6) or (n, 1), "
                                                     "rows in the labels CSV's order) instead of a model.",
                                                         readable=False)] = None,
    report: Annotated[Path | None, typer.Option(help="Write report.md, report.json and curves.png here.",
        readable=False)] = None,
    bootstrap: Annotated[int, typer.Option(min=10, help="Bootstrap resamples for the 95% intervals.")] = 200,
) -> None:
    """Per-class precision, recall, specificity, F1, AUROC/AUPRC (95% bootstrap CIs), with plots."""
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
        precisions = _split(precision)
        if len(precisions) > 1 and not model.is_dir():
            raise InputError(model, "comparing precisions needs an export folder")
        results = [run_evaluation(model, inputs, labels, backend=backend, precision=p, n_boot=bootstrap)
                   for p in precisions]
    for result in results:
        console.print(scores_table(result))
    if len(results) > 1:
        from ecg_edge.training.evaluate import precision_agreement

        for g in precision_agreement(results):
            p = g["parity"]
            low, high = p["exam_agreement_ci95"]
            console.print(f"{g['precision']} vs {g['reference']}: findings unchanged in {p['exam_agreement']:.1%} of "
                          f"exams ({p['n_exams'] - p['exams_changed']}/{p['n_exams']}, 95% CI {low:.1%}-{high:.1%}), "
                          f"max |dp| {p['max_abs_diff']:.2e}", highlight=False, markup=False, soft_wrap=True)
            for c in g["changed"][:MAX_FLIPS_SHOWN]:
                change = "; ".join(filter(None, (f"gained {', '.join(c['gained'])}" if c["gained"] else "",
                                                 f"lost {', '.join(c['lost'])}" if c["lost"] else "")))
                console.print(f"  {c['exam_id']}: {change}", highlight=False, markup=False)
            if len(g["changed"]) > MAX_FLIPS_SHOWN:
                console.print(f"  ... {len(g['changed']) - MAX_FLIPS_SHOWN} more in --report's report.md",
                              highlight=False, markup=False)
    if report is not None:
        if len(results) > 1:
            write_comparison(results, report)
        else:
            write_report(results[0], report)
        console.print(f"wrote {report}/report.md")


@app.command()
@user_errors
def fetch(
    what: Annotated[str, typer.Argument(help="weights (the released network) or code-test (the CODE test set).")],
    seed: Annotated[int | None, typer.Option(min=1, max=10, help="weights: another released training seed (1-10) "
                                                                 "instead of the published model.")] = None,
    from_file: Annotated[Path | None, typer.Option("--from", help="A file downloaded by hand (model.zip, or the "
                                                                  "test set's file), checked the same way.",
                                                                      readable=False)] = None,
) -> None:
    """Download from Zenodo, verify (checksum, then content) and install into the model home."""
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    from ecg_edge.fetch import RECORDS, fetch_code_test
    from ecg_edge.home import model_home

    if what not in RECORDS:
        raise InputError(None, f"unknown dataset {what!r}: expected {' or '.join(RECORDS)}")
    if seed is not None and what != "weights":
        raise InputError(None, "--seed applies to weights only")
    record = RECORDS[what]
    err_console.print(f"{record.what}: Zenodo record {record.record} (doi {record.doi})", highlight=False)
    bar = Progress(*Progress.get_default_columns()[:2], DownloadColumn(), TransferSpeedColumn(),
                   console=err_console, transient=True, disable=not err_console.is_terminal)
    task = bar.add_task("downloading", total=None)

    def advance(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total if total >= 0 else None)

    def log(line: str) -> None:
        err_console.print(line, markup=False, highlight=False, soft_wrap=True)

    with bar:
        if what == "weights":
            from ecg_edge.training.released import fetch_weights

            path = fetch_weights(model_home(), seed=seed, from_file=from_file, progress=advance, log=log)
            console.print(f"installed {path} (reference thresholds); next: `ecg-edge export`", highlight=False)
        else:
            path = fetch_code_test(model_home(), from_file=from_file, progress=advance, log=log)
            console.print(f"installed {path}; next: `ecg-edge reproduce`", highlight=False)


@app.command()
@user_errors
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
    bootstrap: Annotated[int, typer.Option(min=10, help="Bootstrap resamples for the 95% intervals.")] = 200,
) -> None:
    """The paper's Table 2 from the released network on the CODE test set, ours beside the published."""
    from ecg_edge.fetch import CODE_TEST_DIR, GOLD_STANDARD, TRACINGS
    from ecg_edge.home import home_export_dir, home_model_path, model_home
    from ecg_edge.training.reproduce import TABLE_METRICS, write_reproduction
    from ecg_edge.training.reproduce import reproduce as run_reproduction

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
    precisions = _split(precision)
    if model.is_file() and precisions != ["fp32"]:
        raise InputError(model, "a Keras model runs FP32 only: export it to compare precisions")
    reports = run_reproduction(model, tracings, labels, backend=backend, precisions=precisions, n_boot=bootstrap)
    for report in reports:
        table = Table(title=f"Table 2, {report['precision']} ({report['backend']}): ours / paper")
        table.add_column("class")
        for m in TABLE_METRICS:
            table.add_column(m, justify="right")
        rows: dict[str, list[str]] = {}
        for row in report["paper_comparison"]:
            rows.setdefault(row["class"], []).append(f"{row['ours']:.3f} / {row['paper']:.3f}")
        for c, cells in rows.items():
            table.add_row(c, *cells)
        console.print(table)
    path = write_reproduction(reports, out or home / "reproduce")
    console.print(f"wrote {path}", highlight=False)


def _split(values: str) -> list[str]:
    return [v.strip() for v in values.split(",") if v.strip()]


@app.command()
@user_errors
def export(
    model: Annotated[Path | None, typer.Argument(help="A .keras file or the original model.hdf5 "
                                                         "(default: the model home's model).", readable=False)] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Export folder (default: the model home's).",
        readable=False)] = None,
    precision: Annotated[str | None, typer.Option(
        help="Comma-separated: fp32, fp16, bf16, int8; a named one that fails its gate fails the export "
             "(default: fp32,fp16,int8, and bf16 where the CPU offers it, refused with a warning if it fails).")]
    = None,
    calibration: Annotated[list[Path] | None, typer.Option(
        help="INT8 calibration recordings, any readable format (default: a third of --validation's, "
             "topped up with synthetic ECGs).", readable=False)] = None,
    validation: Annotated[list[Path] | None, typer.Option(
        help="Real recordings for the recipe choice and the gates, split between them (synthetic ECGs are "
             "added to each).", readable=False)] = None,
    validation_limit: Annotated[int, typer.Option(min=1, help="Read at most this many --validation exams.")]
    = 1000,
    int8_search: Annotated[str, typer.Option(help="INT8 recipes to try: quick (4) or wide (12, all calibrators, "
                                                  "per-tensor, symmetric).")] = "quick",
    for_tensorrt: Annotated[bool, typer.Option("--for-tensorrt", help="Also write and gate the symmetric INT8 "
                                               "file TensorRT builds from, with trtexec lines (no GPU needed).")]
    = False,
    engine: Annotated[bool, typer.Option("--engine", help="Also build TensorRT engines (needs a GPU).")] = False,
    max_batch: Annotated[int, typer.Option(min=1, help="Largest batch of the engines' profile.")]
    = BATCH_PROFILE["max"],
    dla_core: Annotated[int | None, typer.Option(help="Jetson: build for this DLA core (GPU fallback).")] = None,
    fp32_atol: Annotated[float, typer.Option(help="FP32 ONNX vs Keras tolerance (max abs).")] = 1e-4,
    triton: Annotated[Path | None, typer.Option("--triton", help="Also write a Triton model repository here "
                                                "(see `ecg-edge triton`).", readable=False)] = None,
) -> None:
    """Export to ONNX FP32/FP16/INT8 (+ TensorRT engines) with a manifest and parity checks."""
    from ecg_edge.export.pipeline import ExportGateError, ExportOptions, export_model, export_table
    from ecg_edge.home import home_export_dir, home_model_path
    from ecg_edge.training.models import load_keras_model

    model = model or home_model_path()
    if not model.exists():
        raise InputError(model, "no such model (train one with `ecg-edge train` or run `ecg-edge demo`)")
    if triton is not None:
        from ecg_edge.export.triton import check_repository_target

        check_repository_target(triton)
    if int8_search not in ("quick", "wide"):
        raise InputError(None, f"--int8-search {int8_search!r}: quick or wide")
    named = {"precisions": _split(precision), "if_offered": ()} if precision is not None else {}
    options = ExportOptions(**named, engine=engine, for_tensorrt=for_tensorrt,
                            max_batch=max_batch, dla_core=dla_core, fp32_atol=fp32_atol,
                            validation_limit=validation_limit, int8_search=int8_search)
    out = out or home_export_dir()
    try:
        result = export_model(load_keras_model(model), out, options, calibration=calibration or (),
                              validation=validation or (),
                              log=lambda line: console.print(line, markup=False, highlight=False),
                              warn=lambda line: err_console.print(line, markup=False, highlight=False))
    except ExportGateError as exc:
        err_console.print(f"error: {model}: {exc}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    console.print(export_table(result.manifest, out))
    console.print(f"wrote {out}")
    if triton is not None:
        from ecg_edge.export.triton import write_triton_repository

        names = write_triton_repository(out, triton)
        console.print(f"wrote {triton}: {', '.join(names)}", highlight=False)


@app.command()
@user_errors
def engine(
    model: ModelOption = None,
    precision: Annotated[str, typer.Option(help="Comma-separated: fp32, fp16, int8 (INT8 needs the export's "
                                                "model.int8.sym.onnx: export --for-tensorrt).")] = "fp32,fp16,int8",
    validation: Annotated[list[Path] | None, typer.Option(help="Real recordings for the engines' gate (synthetic "
                                                                "ECGs are always used).", readable=False)] = None,
    max_batch: Annotated[int, typer.Option(min=1, help="Largest batch of the engines' profile.")]
    = BATCH_PROFILE["max"],
    opt_batch: Annotated[int, typer.Option(min=1, help="Batch the engines are tuned for.")] = BATCH_PROFILE["opt"],
    dla_core: Annotated[int | None, typer.Option(help="Jetson: build for this DLA core (FP16/INT8).")] = None,
) -> None:
    """Build and gate TensorRT engines here, from an export's ONNX files (no TensorFlow needed):
    engines run only on the GPU and TensorRT version that built them, so build them on the target."""
    from ecg_edge.export.pipeline import ExportGateError, ExportOptions, add_engines, export_table

    export_dir = resolve_export_dir(model)
    options = ExportOptions(precisions=_split(precision), engine=True, max_batch=max_batch,
                            opt_batch=opt_batch, dla_core=dla_core)
    try:
        manifest = add_engines(export_dir, options, validation=validation or [],
                               log=lambda line: console.print(line, markup=False, highlight=False))
    except ExportGateError as exc:
        err_console.print(f"error: {export_dir}: {exc}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    console.print(export_table(manifest, export_dir))


@app.command()
@user_errors
def triton(
    out: Annotated[Path, typer.Option("--out", help="The model repository folder to write (new or empty).",
                                      readable=False)],
    model: ModelOption = None,
    instances: Annotated[str, typer.Option(help="Where the ONNX models run: gpu or cpu (engines: the GPU).")]
    = "gpu",
    trt_accelerator: Annotated[bool, typer.Option("--trt-accelerator", help="ONNX models on the GPU through "
                                                  "onnxruntime's TensorRT provider inside Triton.")] = False,
) -> None:
    """A Triton Inference Server model repository from an export: one model per ONNX file and engine."""
    from ecg_edge.export.triton import write_triton_repository

    names = write_triton_repository(resolve_export_dir(model), out, instances, trt_accelerator)
    console.print(f"wrote {out}: {', '.join(names)}", highlight=False)


@app.command("check-trt")
@user_errors
def check_trt(
    files: Annotated[list[Path], typer.Argument(help="ONNX files meant for TensorRT.", readable=False)],
    tensorrt: Annotated[str, typer.Option(help="TensorRT major release to check against: 10 or 11.")] = "10",
) -> None:
    """What TensorRT's ONNX parser would refuse, checked without TensorRT: Q/DQ types and zero points,
    per-channel axes, opset and operators. Exit 1 when a file breaks a rule."""
    from ecg_edge.export.tensorrt_check import OPSETS, check_tensorrt_onnx

    if tensorrt not in OPSETS:
        raise InputError(None, f"--tensorrt {tensorrt!r}: 10 or 11")
    failed = False
    for path in files:
        if not path.is_file():
            raise InputError(path, "no such file")
        try:
            problems = check_tensorrt_onnx(path, tensorrt)
        except Exception as exc:  # onnx's own parse error: a damaged or non-ONNX file
            raise InputError(path, f"not a readable ONNX model ({type(exc).__name__}: {exc})") from None
        failed |= bool(problems)
        console.print(f"{path}: {'ok for' if not problems else f'{len(problems)} problems for'} TensorRT {tensorrt}",
                      markup=False, highlight=False, soft_wrap=True)
        for problem in problems:
            console.print(f"  {problem}", markup=False, highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)


def resolve_export_dir(model: Path | None) -> Path:
    from ecg_edge.home import home_export_dir

    export_dir = model or home_export_dir()
    if not (export_dir / "manifest.json").exists():
        raise InputError(export_dir, "no export here: run `ecg-edge export` (or `ecg-edge demo`) first")
    return export_dir


def parse_thresholds(values: list[str], classes: list[str]) -> dict[str, float]:
    """`--threshold 0.5` (every class) or `--threshold AF=0.3` (one class), repeatable."""
    out: dict[str, float] = {}
    for value in values:
        name, _, number = value.rpartition("=")
        try:
            threshold = float(number)
        except ValueError:
            raise InputError(None, f"--threshold {value!r}: expected CLASS=VALUE or VALUE") from None
        if not 0.0 <= threshold <= 1.0:
            raise InputError(None, f"--threshold {value!r}: must lie between 0 and 1")
        if name and name not in classes:
            raise InputError(None, f"--threshold {value!r}: unknown class (classes: {', '.join(classes)})")
        out |= {name: threshold} if name else dict.fromkeys(classes, threshold)
    return out


MAX_FLIPS_SHOWN = 20

# Options several commands share: one definition each.
ScaleOption = Annotated[float, typer.Option(help=f"Multiply amplitudes. Expected: {AMPLITUDE_NOTE}.")]
FsOption = Annotated[float | None, typer.Option(help=".npy input: sampling rate in Hz.")]
LeadsOption = Annotated[str | None, typer.Option(help=".npy input: comma-separated lead names.")]
KeepGoingOption = Annotated[bool, typer.Option("--keep-going", help="Report and skip bad files.")]
ModelOption = Annotated[Path | None, typer.Option("--model", help="Export folder (default: the model home's).",
    readable=False)]
BackendOption = Annotated[str, typer.Option(help="auto, tensorrt, ort-tensorrt, ort-cuda, ort-cpu, openvino "
                                                 "or keras.")]
PrecisionOption = Annotated[str, typer.Option(help="fp32, fp16, bf16 (openvino) or int8.")]
BatchOption = Annotated[int, typer.Option(min=1, help="Exams per batch.")]
ThresholdOption = Annotated[list[str] | None, typer.Option(help="VALUE or CLASS=VALUE (repeatable).")]
ThreadsOption = Annotated[int | None, typer.Option(min=1, help="CPU threads for onnxruntime or OpenVINO.")]


RECORDINGS_HELP = ("Recordings in any mix of formats (CODE-layout HDF5, WFDB, DICOM, GE MUSE XML, HL7 aECG, "
                   "Philips Sierra XML, EDF/EDF+, .npy), or folders of them.")


@app.command()
@user_errors
def convert(
    inputs: Annotated[list[Path], typer.Argument(help=RECORDINGS_HELP + " The last argument is OUT.h5.",
        readable=False)],
    scale: ScaleOption = 1.0,
    fs: FsOption = None,
    leads: LeadsOption = None,
    keep_going: KeepGoingOption = False,
) -> None:
    """Any readable recordings into one CODE-layout HDF5 (tracings, exam_id, source), streamed."""
    from ecg_edge.convert import check_hdf5_output, convert_to_hdf5
    from ecg_edge.infer import ReadOptions, count_exams
    from ecg_edge.progress import progress_bar
    from ecg_edge.readers import expand_inputs

    if len(inputs) < 2:
        raise InputError(None, "give one or more inputs, then OUT.h5")
    *sources, out = inputs
    check_hdf5_output(out)
    options = ReadOptions(scale=scale, fs=fs, leads=_split(leads) if leads else None, keep_going=keep_going)
    skipped: list[str] = []

    def report_skip(message: str) -> None:
        skipped.append(message)
        err_console.print(f"skipped: {message}", markup=False, highlight=False, soft_wrap=True)

    paths = expand_inputs(sources)  # once: folders are walked and sniffed here only
    with progress_bar("converting", total=None if keep_going else count_exams(paths)) as advance:
        n = convert_to_hdf5(paths, out, options, progress=advance, on_skip=report_skip)
    console.print(f"wrote {n} exams to {out} ({len(skipped)} skipped)", highlight=False)


def _load_reference(names: list[str]) -> None:
    """The Keras reference backend lives above the runtime (export/): importing it registers it."""
    if "keras" in names:
        import ecg_edge.training.keras_backend  # noqa: F401


def check_report_dir(folder: Path) -> None:
    """Before any work: the report folder can be made (its parent exists) and is not a file."""
    if folder.exists() and not folder.is_dir():
        raise InputError(folder, "report folder is a file")
    if not folder.exists() and not folder.parent.is_dir():
        raise InputError(folder.parent, "folder does not exist (the report folder's parent)")


def _run_and_report(
    recordings: list[Path], model: Path | None, backend: str, precision: str, batch: int,
    threshold: list[str] | None, scale: float, fs: float | None, leads: str | None, threads: int | None,
    keep_going: bool, cuda_graph: bool, report_dir: Path | None, shard: str | None = None,
) -> InferenceRun:
    """What infer and report share: read, infer with progress, draw sheets as batches finish."""
    from ecg_edge.backends import open_backend
    from ecg_edge.infer import ReadOptions, count_exams, parse_shard, run_inference
    from ecg_edge.progress import progress_bar
    from ecg_edge.readers import expand_inputs

    if report_dir is not None:
        check_report_dir(report_dir)
    export_dir = resolve_export_dir(model)
    _load_reference([backend])
    runner, manifest = open_backend(export_dir, backend, precision, threads=threads, cuda_graph=cuda_graph)
    overrides = parse_thresholds(threshold or [], list(manifest["output"]["classes"]))
    options = ReadOptions(scale=scale, fs=fs, leads=_split(leads) if leads else None, keep_going=keep_going,
                          keep_traces=report_dir is not None, shard=parse_shard(shard) if shard else None)
    paths = expand_inputs(recordings)
    total = None if keep_going or shard else count_exams(paths)
    writer = None
    if report_dir is not None:
        from ecg_edge.report import ReportWriter

        report_dir.mkdir(exist_ok=True)
        writer = ReportWriter(report_dir)

    def report_skip(message: str) -> None:
        err_console.print(f"skipped: {message}", markup=False, highlight=False, soft_wrap=True)

    try:
        with runner, progress_bar("inferring" if writer is None else "inferring and drawing", total=total) as advance:
            how = f"auto: {runner.choice}" if runner.choice else "auto" if backend == "auto" else "chosen"
            err_console.print(f"backend: {runner.describe()} ({how})", markup=False, highlight=False, soft_wrap=True)
            run = run_inference(paths, runner, manifest, batch=batch, options=options, thresholds=overrides,
                                progress=advance, on_skip=report_skip, on_batch=writer.add if writer else None)
        if not run.exams and not shard:  # a shard may hold no exam; a whole input must hold one
            raise InputError(recordings[0], "no exam could be read")
        if writer is not None:
            index = writer.finish()
            console.print(f"wrote {len(run.exams)} sheets and {index}", highlight=False)
    finally:
        if writer is not None:
            writer.close()
    return run


def _run_on_ray(
    recordings: list[Path], model: Path | None, backend: str, precision: str, batch: int,
    threshold: list[str] | None, scale: float, fs: float | None, leads: str | None, threads: int | None,
    keep_going: bool, shard: str | None, address: str | None, actors: int | None, parquet: Path | None,
) -> InferenceRun:
    from ecg_edge.backends import open_backend
    from ecg_edge.infer import ReadOptions, parse_shard
    from ecg_edge.ray_infer import run_inference_ray

    export_dir = resolve_export_dir(model)
    runner, manifest = open_backend(export_dir, backend, precision, threads=threads)  # resolves `auto` here
    overrides = parse_thresholds(threshold or [], list(manifest["output"]["classes"]))
    options = ReadOptions(scale=scale, fs=fs, leads=_split(leads) if leads else None, keep_going=keep_going,
                          shard=parse_shard(shard) if shard else None)
    err_console.print(f"backend: {runner.name} {precision} in each Ray actor", markup=False, highlight=False)
    run = run_inference_ray(recordings, export_dir, runner.name, precision, manifest, batch=batch, options=options,
                            thresholds=overrides, address=address, actors=actors, threads=threads,
                            log=lambda line: err_console.print(line, markup=False, highlight=False, soft_wrap=True),
                            parquet=parquet)
    for message in run.skipped:
        err_console.print(f"skipped: {message}", markup=False, highlight=False, soft_wrap=True)
    if not run.exams and not shard:
        raise InputError(recordings[0], "no exam could be read")
    return run


@app.command()
@user_errors
def infer(
    recordings: Annotated[list[Path], typer.Argument(help=RECORDINGS_HELP, readable=False)],
    model: ModelOption = None,
    backend: BackendOption = "auto",
    precision: PrecisionOption = "fp32",
    batch: BatchOption = 64,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write all results to .csv or .json "
                                                "(with --ray also a new .parquet folder).",
        readable=False)] = None,
    threshold: ThresholdOption = None,
    scale: ScaleOption = 1.0,
    fs: FsOption = None,
    leads: LeadsOption = None,
    threads: ThreadsOption = None,
    keep_going: KeepGoingOption = False,
    cuda_graph: Annotated[bool, typer.Option("--cuda-graph", help="ort-cuda: capture the run as a CUDA graph "
                                             "and replay it (fixed batch).")] = False,
    report: Annotated[Path | None, typer.Option("--report", help="Also draw each exam's 12-lead sheet and an "
                                                "index.html into this folder.", readable=False)] = None,
    shard: Annotated[str | None, typer.Option(help="I/N: only the I-th (from 0) of N fixed parts of the exams, "
                                                   "for job arrays; `ecg-edge merge` joins the outputs.")] = None,
    ray: Annotated[bool, typer.Option("--ray", help="Run on a Ray cluster with Ray Data (a local one unless "
                                      "--ray-address).")] = False,
    ray_address: Annotated[str | None, typer.Option(help="An existing Ray cluster, e.g. ray://head:10001 or "
                                                         "auto.")] = None,
    ray_actors: Annotated[int | None, typer.Option(min=1, help="Inference actors (default: one per GPU, or "
                                                               "half the CPUs).")] = None,
) -> None:
    """Probabilities, findings and signal-quality flags per exam, from recordings in any readable format."""
    from ecg_edge.infer import check_output_path, parse_shard, results_table, write_results

    if shard is not None:
        parse_shard(shard)
    parquet = output is not None and output.suffix.lower() == ".parquet"
    if parquet and output is not None:
        if not (ray or ray_address):
            raise InputError(output, "Parquet output (a folder, one file per block) is written by --ray")
        if output.exists() or not output.parent.is_dir():
            raise InputError(output, "must be a new folder in an existing one")
    elif output is not None:
        check_output_path(output)
    if ray or ray_address:
        if report is not None or cuda_graph:
            raise InputError(None, "--ray runs without --report and --cuda-graph (draw sheets with `ecg-edge report`)")
        run = _run_on_ray(recordings, model, backend, precision, batch, threshold, scale, fs, leads, threads,
                          keep_going, shard, ray_address, ray_actors, output if parquet else None)
    else:
        run = _run_and_report(recordings, model, backend, precision, batch, threshold, scale, fs, leads, threads,
                              keep_going, cuda_graph, report, shard)
    console.print(results_table(run))
    busy = run.compute_s / run.wall_s if run.wall_s else 0.0
    console.print(f"{len(run.exams)} exams in {run.wall_s:.2f} s: {run.throughput:.1f} ECG/s "
                  f"(backend busy {busy:.0%} of the time), {len(run.skipped)} skipped", highlight=False)
    if output is not None and not parquet:  # a Parquet folder is written by the Ray workers
        write_results(run, output)
    if output is not None:
        console.print(f"wrote {output}")


@app.command()
@user_errors
def merge(
    inputs: Annotated[list[Path], typer.Argument(help="Outputs of `infer --shard I/N` (all .csv or all .json).",
                                                 readable=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="The merged .csv or .json.", readable=False)],
) -> None:
    """Join the outputs of sharded `infer` runs into one file; overlapping shards are refused."""
    from ecg_edge.infer import merge_results

    n = merge_results(inputs, output)
    console.print(f"wrote {n} exams from {len(inputs)} files to {output}", highlight=False)


@app.command()
@user_errors
def report(
    recordings: Annotated[list[Path], typer.Argument(help=RECORDINGS_HELP, readable=False)],
    out: Annotated[Path, typer.Option("--out", help="Folder for the sheets and index.html (made if missing).",
        readable=False)],
    model: ModelOption = None,
    backend: BackendOption = "auto",
    precision: PrecisionOption = "fp32",
    batch: BatchOption = 64,
    threshold: ThresholdOption = None,
    scale: ScaleOption = 1.0,
    fs: FsOption = None,
    leads: LeadsOption = None,
    threads: ThreadsOption = None,
    keep_going: KeepGoingOption = False,
) -> None:
    """A 12-lead sheet per exam (PNG and SVG, with findings and quality flags) and a browsable index.html."""
    run = _run_and_report(recordings, model, backend, precision, batch, threshold, scale, fs, leads, threads,
                          keep_going, False, out)
    flagged = sum(1 for e in run.exams if e.quality)
    console.print(f"{len(run.exams)} exams ({flagged} with quality flags, {len(run.skipped)} skipped): "
                  f"open {out / 'index.html'}", highlight=False)


@app.command()
@user_errors
def bench(
    model: Annotated[Path | None, typer.Option("--model", help="Export folder (default: the model home's; "
                                               "without one, random weights exported to a temp folder).",
                                                   readable=False)] = None,
    batch: Annotated[str, typer.Option(help="Batch size(s), comma-separated: 1,8,64,256.")] = "64",
    backend: Annotated[list[str] | None, typer.Option(help="Backends (repeatable; default: every one present "
                                                           "but keras).")] = None,
    precision: Annotated[list[str] | None, typer.Option(help="Precisions (repeatable; default: all exported).")] = None,
    warmup: Annotated[float, typer.Option(help="Warm-up seconds per configuration.")] = 1.0,
    duration: Annotated[float, typer.Option(help="Timed seconds per configuration.")] = 5.0,
    threads: ThreadsOption = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write every number to this JSON file.",
        readable=False)] = None,
    plot: Annotated[Path | None, typer.Option(help="Write latency/throughput plots to this PNG.",
        readable=False)] = None,
    cuda_graph: Annotated[bool, typer.Option("--cuda-graph", help="ort-cuda: capture the run as a CUDA graph "
                                             "and replay it (fixed batch).")] = False,
) -> None:
    """Latency percentiles and throughput per backend and precision."""
    import tempfile

    from ecg_edge.atomic_files import check_target
    from ecg_edge.bench import bench_table, run_matrix
    from ecg_edge.home import home_export_dir, model_home

    batches = [int(b) for b in _split(batch)] if all(b.isdigit() and int(b) > 0 for b in _split(batch)) else None
    if not batches:
        raise InputError(None, f"--batch {batch!r}: expected positive integers, e.g. 1,8,64")
    if json_out is not None:
        check_target(json_out, (".json",))
    if plot is not None:
        check_target(plot, (".png",))
    with tempfile.TemporaryDirectory(prefix="ecg-edge-bench-") as tmp:
        export_dir = model or home_export_dir()
        if model is None and not (export_dir / "manifest.json").exists():
            from ecg_edge.cli.workflows import random_weight_export

            console.print("no export in the model home: benchmarking random weights (speed does not depend on them)")
            export_dir = random_weight_export(
                Path(tmp), log=lambda line: err_console.print(line, markup=False, highlight=False, soft_wrap=True))
        _load_reference(backend or [])
        report = run_matrix(export_dir, batches, backend or [], precision or [], warmup, duration, threads,
                            cache_dir=model_home(), log=lambda line: err_console.print(line, highlight=False),
                            cuda_graph=cuda_graph)
    console.print(bench_table(report))
    if json_out is not None:
        from ecg_edge.manifest import write_json_atomic

        write_json_atomic(json_out, {k: v for k, v in report.items() if k != "_results"})
        console.print(f"wrote {json_out}")
    if plot is not None:
        from ecg_edge.bench import write_plot

        write_plot(report["_results"], plot)
        console.print(f"wrote {plot}")


@app.command()
@user_errors
def doctor(
    model: Annotated[Path | None, typer.Option("--model", help="Export folder (default: the model home's).",
        readable=False)] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """What this machine can run and why: CPU instruction sets, runtimes that really start, and the
    backend `auto` takes for each precision of the export (and why each other one is out)."""
    import json

    from ecg_edge.doctor import diagnose
    from ecg_edge.home import home_export_dir

    report = diagnose(model or home_export_dir())
    if json_out:
        print(json.dumps(report, indent=1))
        return
    cpu = report["cpu"]
    console.print(f"CPU: {cpu['model']} ({cpu['cores']} cores, {cpu['machine']}): "
                  f"{', '.join(cpu['isa']) or 'no AVX2/AVX-512/NEON reported'}", highlight=False, markup=False)
    console.print("runtimes: " + (", ".join(f"{k} {v}" for k, v in report["runtimes"].items()) or "none"),
                  highlight=False, markup=False)
    for provider, state in report["onnxruntime_providers"].items():
        console.print(f"  onnxruntime {provider}: {state}", highlight=False, markup=False)
    bf16 = report["bf16"]
    console.print(f"BF16 (OpenVINO) offered by the CPU: {'yes' if bf16['usable'] else 'no, ' + bf16['why']}",
                  highlight=False, markup=False)
    if "export" in bf16:
        console.print(f"BF16 in this export: {bf16['export']}", highlight=False, markup=False)
    console.print(f"TensorRT: {report['tensorrt']['why']}", highlight=False, markup=False)
    nvidia = report["nvidia"]
    if "missing" in nvidia:
        console.print(f"NVIDIA: {nvidia['missing']}", highlight=False, markup=False)
    else:
        console.print(f"NVIDIA driver {nvidia['driver']} (CUDA {nvidia['cuda_driver_api'] or '?'}); "
                      + ", ".join(f"{g['name']} (sm {g['compute_capability']}, {g['memory_gib']} GiB)"
                                  for g in nvidia["gpus"]), highlight=False, markup=False)
    if "jetson" in report:
        j = report["jetson"]
        clocks = {True: "pinned (jetson_clocks)", False: "not pinned", None: "unknown"}[j["jetson_clocks"]]
        console.print(f"Jetson: L4T {j['l4t']}, JetPack {j['jetpack'] or '?'}, power mode {j['power_mode'] or '?'}, "
                      f"clocks {clocks}", highlight=False, markup=False)
    auto = report["auto"]
    if "note" in auto:
        console.print(f"auto: {auto['note']}", highlight=False, markup=False)
        return
    table = Table(title=f"auto for {auto['export']}", box=box.SIMPLE_HEAD)
    for column in ("precision", "takes", "why", "others out"):
        table.add_column(column, overflow="fold")
    for precision, entry in auto.items():
        if precision == "export":
            continue
        out = "; ".join(f"{k}: {v}" for k, v in entry["out"].items())
        table.add_row(precision, entry.get("picks", "-"), entry.get("why", "nothing can run it"), out)
    console.print(table)


@app.command()
@user_errors
def serve(
    model: ModelOption = None,
    backend: BackendOption = "auto",
    precision: PrecisionOption = "fp32",
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface; mind who can reach "
                                           "it).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    replicas: Annotated[int, typer.Option(min=1, help="Replicas, each with its own backend (GPU backends: one GPU "
                                                      "each).")] = 1,
    max_batch: Annotated[int, typer.Option(min=1, help="Requests merged into one backend call.")] = 64,
    batch_wait_ms: Annotated[float, typer.Option(min=0, help="How long a batch waits for more requests.")] = 5.0,
    max_body_mb: Annotated[float, typer.Option(min=0.001, help="Largest request body (413 above).")] = 32,
    threshold: ThresholdOption = None,
    threads: ThreadsOption = None,
    ray_address: Annotated[str | None, typer.Option(help="Join an existing Ray cluster (e.g. auto); default: start "
                                                         "a local one.")] = None,
) -> None:
    """Serve the export over HTTP: POST a recording to /v1/ecg, tensors to /v2/models/ecg/infer (KServe v2)."""
    from ecg_edge.manifest import load_manifest
    from ecg_edge.serve.options import ServeOptions
    from ecg_edge.serve.server import resolve, serve_until_stopped

    export_dir = resolve_export_dir(model)
    classes = list(load_manifest(export_dir)["output"]["classes"])
    options = ServeOptions(export_dir=str(export_dir.resolve()), backend=backend, precision=precision,
                           threads=threads, max_batch=max_batch, batch_wait_ms=batch_wait_ms,
                           max_body_bytes=int(max_body_mb * 2**20),
                           thresholds=parse_thresholds(threshold or [], classes))
    options, why = resolve(options)

    def say(line: str) -> None:
        err_console.print(line, markup=False, highlight=False, soft_wrap=True)

    say(f"backend: {options.backend} {options.precision} ({why})")
    serve_until_stopped(options, host, port, replicas, ray_address, say)

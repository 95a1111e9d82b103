"""The `ecg-edge` command line: thin commands over importable functions (DESIGN.md contract)."""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from ecg_edge.errors import InputError

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


def user_errors(fn: F) -> F:
    """Turn bad input into exit code 2 and one line on stderr (`--debug` shows the traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InputError as exc:
            if _state["debug"]:
                traceback.print_exc()
            err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
) -> None:
    _state["debug"] = debug


def _not_yet(command: str) -> None:
    err_console.print(f"error: `ecg-edge {command}` is not implemented yet in this version")
    raise typer.Exit(2)


@app.command()
@user_errors
def synth(
    out: Annotated[Path, typer.Argument(help="Output HDF5 file (CODE layout); labels go to OUT.csv.")],
    n: Annotated[int, typer.Option("--n", min=1, help="Number of ECGs.")] = 1000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same set).")] = 0,
) -> None:
    """Labelled synthetic 12-lead ECGs (CODE-layout HDF5 + labels CSV)."""
    from ecg_edge.progress import progress_bar
    from ecg_edge.training.synthetic import write_synthetic_set

    if out.suffix.lower() not in {".h5", ".hdf5"}:
        raise InputError(out, "output must end in .h5 or .hdf5")
    if not out.parent.exists():
        raise InputError(out.parent, "output folder does not exist")
    with progress_bar("synthesizing", total=n) as advance:
        h5_path, csv_path = write_synthetic_set(out, n, seed=seed, progress=advance)
    console.print(summarize_labels(csv_path))
    console.print(f"wrote {h5_path} and {csv_path}")


def summarize_labels(csv_path: Path) -> Table:
    """A table of how many exams carry each label."""
    import csv

    from ecg_edge.spec import CLASSES, NORMAL_COLUMN

    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    table = Table(title=f"{csv_path.name}: {len(rows)} exams")
    table.add_column("label")
    table.add_column("exams", justify="right")
    table.add_column("share", justify="right")
    for name in (*CLASSES, NORMAL_COLUMN):
        count = sum(int(r[name]) for r in rows)
        table.add_row(name, str(count), f"{count / max(len(rows), 1):.1%}")
    return table


@app.command()
@user_errors
def demo(
    n: Annotated[int, typer.Option("--n", min=50, help="Synthetic ECGs to make.")] = 2000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Whole pipeline on synthetic data: synth -> train -> export -> infer -> bench."""
    from ecg_edge.home import model_home
    from ecg_edge.progress import progress_bar
    from ecg_edge.training.synthetic import write_synthetic_set

    home = model_home()
    home.mkdir(parents=True, exist_ok=True)
    console.rule("1. synthetic data")
    with progress_bar("synthesizing", total=n) as advance:
        h5_path, csv_path = write_synthetic_set(home / "synthetic.h5", n, seed=seed, progress=advance)
    console.print(summarize_labels(csv_path))
    console.print(f"wrote {h5_path} and {csv_path}")


@app.command()
@user_errors
def train() -> None:
    """Train the Ribeiro network on CODE-layout HDF5 + labels CSV (the original recipe)."""
    _not_yet("train")


@app.command()
@user_errors
def finetune() -> None:
    """Fine-tune the transfer model on top of a trained six-class model."""
    _not_yet("finetune")


@app.command()
@user_errors
def evaluate() -> None:
    """Per-class precision, recall, specificity, F1, AUROC/AUPRC with plots."""
    _not_yet("evaluate")


def _split(values: str) -> list[str]:
    return [v.strip() for v in values.split(",") if v.strip()]


@app.command()
@user_errors
def export(
    model: Annotated[Path | None, typer.Argument(help="A .keras file or the original model.hdf5 "
                                                         "(default: the model home's model).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Export folder (default: the model home's).")] = None,
    precision: Annotated[str, typer.Option(help="Comma-separated: fp32, fp16, int8.")] = "fp32,fp16,int8",
    calibration: Annotated[list[Path] | None, typer.Option(
        help="INT8 calibration ECGs: HDF5, WFDB records or folders (default: a synthetic set).")] = None,
    validation: Annotated[list[Path] | None, typer.Option(
        help="Extra held-out ECGs for the parity checks (synthetic ones are always added).")] = None,
    engine: Annotated[bool, typer.Option("--engine", help="Also build TensorRT engines (needs a GPU).")] = False,
    max_batch: Annotated[int, typer.Option(min=1, help="Largest batch of the engines' profile.")] = 256,
    dla_core: Annotated[int | None, typer.Option(help="Jetson: build for this DLA core (GPU fallback).")] = None,
    fp32_atol: Annotated[float, typer.Option(help="FP32 ONNX vs Keras tolerance (max abs).")] = 1e-4,
) -> None:
    """Export to ONNX FP32/FP16/INT8 (+ TensorRT engines) with a manifest and parity checks."""
    from ecg_edge.export.pipeline import ExportGateError, ExportOptions, export_model
    from ecg_edge.home import home_export_dir, home_model_path

    model = model or home_model_path()
    if not model.exists():
        raise InputError(model, "no such model (train one with `ecg-edge train` or run `ecg-edge demo`)")
    options = ExportOptions(precisions=_split(precision), engine=engine, max_batch=max_batch,
                            dla_core=dla_core, fp32_atol=fp32_atol)
    out = out or home_export_dir()
    try:
        result = export_model(model, out, options, calibration=calibration or (), validation=validation or (),
                              log=lambda line: console.print(line, markup=False, highlight=False))
    except ExportGateError as exc:
        err_console.print(f"error: {model}: {exc}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    console.print(export_table(result.manifest, out))
    console.print(f"wrote {out}")


def export_table(manifest: dict, out: Path) -> Table:
    table = Table(title=f"{out}: {manifest['model']['kind']} model, {len(manifest['files'])} files")
    for column in ("file", "precision", "size", "vs", "max |diff|", "findings agree"):
        table.add_column(column, justify="right" if column != "file" else "left")
    for name, entry in manifest["files"].items():
        parity = entry.get("parity", {})
        table.add_row(name, f"{entry['precision']} ({entry['variant']})" if entry["variant"] != "default"
                      else entry["precision"], f"{entry['bytes'] / 1e6:.1f} MB", parity.get("reference", "-"),
                      f"{parity['max_abs_diff']:.1e}" if parity else "-",
                      f"{parity['findings_agreement']:.1%}" if parity else "-")
    return table


@app.command()
@user_errors
def infer() -> None:
    """Probabilities and findings per exam for HDF5, WFDB or .npy recordings."""
    _not_yet("infer")


@app.command()
@user_errors
def bench() -> None:
    """Latency percentiles and throughput per backend and precision."""
    _not_yet("bench")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())

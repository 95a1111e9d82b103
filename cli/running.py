"""Commands that run a model on recordings: infer, merge (sharded outputs), report (12-lead sheets)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ecg_edge.cli.application import command, console, log
from ecg_edge.cli.options import (
    BackendOption,
    BatchOption,
    CudaGraphOption,
    FsOption,
    KeepGoingOption,
    LeadsOption,
    MeasureOption,
    ModelOption,
    PrecisionOption,
    RecordingsArgument,
    ScaleOption,
    ThreadsOption,
    ThresholdOption,
    WorkersOption,
    split_list,
)

if TYPE_CHECKING:
    from ecg_edge.exams import ReadOptions


def read_options(scale: float, fs: float | None, leads: str | None, keep_going: bool,
                 shard: str | None = None, measure: str = "auto") -> ReadOptions:
    """How to read, from the reading options infer and report share."""
    from ecg_edge.errors import InputError
    from ecg_edge.exams import MEASURE_LEVELS, ReadOptions, parse_shard

    if measure not in MEASURE_LEVELS:
        raise InputError(None, f"--measure {measure!r}: choose from {', '.join(MEASURE_LEVELS)}")
    return ReadOptions(scale=scale, fs=fs, leads=split_list(leads) if leads else None, keep_going=keep_going,
                       shard=parse_shard(shard) if shard else None, measure=measure)


def load_reference(backends: list[str]) -> None:
    """The Keras reference backend lives above the runtime (training/): importing it registers it."""
    if "keras" in backends:
        import ecg_edge.training.keras_backend  # noqa: F401


def _default_model_if_needed(model: Path | None, recordings: list[Path]) -> None:
    """A fresh install runs the shipped default model (cli.workflows.default_home_export); only once the
    recordings are there, so that a mistyped path costs no export."""
    if model is None and recordings and all(p.exists() for p in recordings):
        from ecg_edge.cli.workflows import default_home_export

        default_home_export(log)


@command()
def infer(
    recordings: RecordingsArgument,
    model: ModelOption = None,
    backend: BackendOption = "auto",
    precision: PrecisionOption = "fp32",
    batch: BatchOption = 64,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write all results to .csv or .json "
                                                "(with --ray also a new .parquet folder).", readable=False)] = None,
    threshold: ThresholdOption = None,
    scale: ScaleOption = 1.0,
    fs: FsOption = None,
    leads: LeadsOption = None,
    threads: ThreadsOption = None,
    keep_going: KeepGoingOption = False,
    measure: MeasureOption = "auto",
    cuda_graph: CudaGraphOption = False,
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
    workers: WorkersOption = "auto",
) -> None:
    """Probabilities, findings and signal-quality flags per exam, from recordings in any readable format."""
    from ecg_edge.cli.application import sigterm_as_interrupt
    from ecg_edge.input_pool import parse_workers
    from ecg_edge.report import INDEX
    from ecg_edge.request import InferRequest, RayOptions, run_request
    from ecg_edge.results import results_table, run_summary

    _default_model_if_needed(model, recordings)
    request = InferRequest(
        tuple(recordings), model=model, backend=backend, precision=precision, batch=batch,
        thresholds=tuple(threshold or ()), threads=threads, cuda_graph=cuda_graph,
        read=read_options(scale, fs, leads, keep_going, shard, measure), output=output, report=report,
        ray=RayOptions(ray_address, ray_actors) if ray or ray_address else None, workers=parse_workers(workers))
    load_reference([backend])
    with sigterm_as_interrupt():
        run = run_request(request, log=log)
    if report is not None:
        console.print(f"wrote {len(run.exams)} sheets and {report / INDEX}", highlight=False)
    console.print(results_table(run))
    console.print(run_summary(run), highlight=False)
    if output is not None:
        console.print(f"wrote {output}")


@command()
def merge(
    inputs: Annotated[list[Path], typer.Argument(help="Outputs of `infer --shard I/N` (all .csv or all .json).",
                                                 readable=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="The merged .csv or .json.", readable=False)],
) -> None:
    """Join the outputs of sharded `infer` runs into one file; overlapping shards are refused."""
    from ecg_edge.results import merge_results

    n = merge_results(inputs, output)
    console.print(f"wrote {n} exams from {len(inputs)} files to {output}", highlight=False)


@command()
def report(
    recordings: RecordingsArgument,
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
    measure: MeasureOption = "auto",
    workers: WorkersOption = "auto",
) -> None:
    """A 12-lead sheet per exam (PNG and SVG, with findings and quality flags) and a browsable index.html."""
    from ecg_edge.cli.application import sigterm_as_interrupt
    from ecg_edge.input_pool import parse_workers
    from ecg_edge.report import INDEX
    from ecg_edge.request import InferRequest, run_request

    _default_model_if_needed(model, recordings)
    request = InferRequest(
        tuple(recordings), model=model, backend=backend, precision=precision, batch=batch,
        thresholds=tuple(threshold or ()), threads=threads,
        read=read_options(scale, fs, leads, keep_going, measure=measure),
        report=out, workers=parse_workers(workers))
    load_reference([backend])
    with sigterm_as_interrupt():
        run = run_request(request, log=log)
    console.print(f"wrote {len(run.exams)} sheets and {out / INDEX}", highlight=False)
    flagged = sum(1 for e in run.exams if e.quality)
    console.print(f"{len(run.exams)} exams ({flagged} with quality flags, {len(run.skipped)} skipped): "
                  f"open {out / INDEX}", highlight=False)

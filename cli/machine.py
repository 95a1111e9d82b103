"""Commands about this machine: bench (how fast) and doctor (what runs, and why not the rest)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ecg_edge.cli.application import command, console, log
from ecg_edge.cli.options import CudaGraphOption, ModelOption, ThreadsOption, split_list
from ecg_edge.cli.running import load_reference
from ecg_edge.errors import InputError


@command()
def bench(
    model: Annotated[Path | None, typer.Option("--model", help="Export folder (default: the model home's; "
                                               "a fresh install's: the shipped default model, exported once; "
                                               "random weights where the home has a model but no export).",
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
    cuda_graph: CudaGraphOption = False,
) -> None:
    """Latency percentiles and throughput per backend and precision."""
    import tempfile

    from ecg_edge.atomic_files import check_target
    from ecg_edge.bench import bench_matrix, bench_table
    from ecg_edge.home import home_export_dir, model_home

    sizes = split_list(batch)
    if not sizes or not all(b.isdigit() and int(b) > 0 for b in sizes):
        raise InputError(None, f"--batch {batch!r}: expected positive integers, e.g. 1,8,64")
    if json_out is not None:
        check_target(json_out, (".json",))
    if plot is not None:
        check_target(plot, (".png",))
    with tempfile.TemporaryDirectory(prefix="ecg-edge-bench-") as tmp:
        if model is None:
            from ecg_edge.cli.workflows import default_home_export

            default_home_export(log)
        export_dir = model or home_export_dir()
        if model is None and not (export_dir / "manifest.json").exists():
            from ecg_edge.cli.workflows import random_weight_export

            console.print("no export in the model home: benchmarking random weights (speed does not depend on them)")
            export_dir = random_weight_export(Path(tmp), log=log)
        load_reference(backend or [])
        matrix = bench_matrix(export_dir, [int(b) for b in sizes], backend or [], precision or [], warmup, duration,
                              threads, cache_dir=model_home(), log=log, cuda_graph=cuda_graph)
    report = matrix.as_dict()
    console.print(bench_table(report))
    if json_out is not None:
        from ecg_edge.manifest import write_json_atomic

        write_json_atomic(json_out, report)
        console.print(f"wrote {json_out}")
    if plot is not None:
        from ecg_edge.bench import write_plot

        write_plot(matrix.results, plot)
        console.print(f"wrote {plot}")


@command()
def doctor(
    model: ModelOption = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """What this machine can run and why: CPU instruction sets, runtimes that really start, and the
    backend `auto` takes for each precision of the export (and why each other one is out)."""
    import json

    from ecg_edge.doctor import auto_table, diagnose, doctor_lines
    from ecg_edge.home import home_export_dir

    report = diagnose(model or home_export_dir())
    if json_out:
        print(json.dumps(report, indent=1))
        return
    for line in doctor_lines(report):
        console.print(line, highlight=False, markup=False)
    table = auto_table(report)
    if table is not None:
        console.print(table)

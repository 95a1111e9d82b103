"""Commands that make data sets: synthetic ECGs, recordings converted to one HDF5 file, released files fetched."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ecg_edge.cli.application import command, console, err_console, log
from ecg_edge.cli.options import (
    RECORDINGS_HELP,
    FsOption,
    KeepGoingOption,
    LeadsOption,
    ScaleOption,
    WorkersOption,
    split_list,
)
from ecg_edge.errors import InputError


@command()
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


@command()
def convert(
    inputs: Annotated[list[Path], typer.Argument(help=RECORDINGS_HELP + " The last argument is OUT.h5.",
                                                 readable=False)],
    scale: ScaleOption = 1.0,
    fs: FsOption = None,
    leads: LeadsOption = None,
    keep_going: KeepGoingOption = False,
    workers: WorkersOption = "auto",
) -> None:
    """Any readable recordings into one CODE-layout HDF5 (tracings, exam_id, source), streamed."""
    import os

    from ecg_edge.cli.application import sigterm_as_interrupt
    from ecg_edge.convert import check_hdf5_output, convert_to_hdf5
    from ecg_edge.exams import ReadOptions, count_exams
    from ecg_edge.input_pool import auto_workers, parse_workers
    from ecg_edge.progress import progress_bar
    from ecg_edge.readers import expand_inputs

    if len(inputs) < 2:
        raise InputError(None, "give one or more inputs, then OUT.h5")
    *sources, out = inputs
    check_hdf5_output(out, sources)
    options = ReadOptions(scale=scale, fs=fs, leads=split_list(leads) if leads else None, keep_going=keep_going)
    skipped: list[str] = []

    def report_skip(message: str) -> None:
        skipped.append(message)
        log(f"skipped: {message}")

    paths = expand_inputs(sources)  # once: folders are walked and sniffed here only
    requested = parse_workers(workers)
    n_workers = auto_workers(len(os.sched_getaffinity(0)), "none") if requested is None else requested
    total = None if keep_going else count_exams(paths)
    with sigterm_as_interrupt(), progress_bar("converting", total=total) as advance:
        n = convert_to_hdf5(paths, out, options, progress=advance, on_skip=report_skip, workers=n_workers)
    console.print(f"wrote {n} exams to {out} ({len(skipped)} skipped)", highlight=False)


@command()
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

    with bar:
        if what == "weights":
            from ecg_edge.training.released import fetch_weights

            path = fetch_weights(model_home(), seed=seed, from_file=from_file, progress=advance, log=log)
            console.print(f"installed {path} (reference thresholds); next: `ecg-edge export`", highlight=False)
        else:
            path = fetch_code_test(model_home(), from_file=from_file, progress=advance, log=log)
            console.print(f"installed {path}; next: `ecg-edge reproduce`", highlight=False)

"""What `infer` and `report` ask for, as one value (`InferRequest`, built once by the command line),
and `run_request`, which does it: checks the outputs, opens the backend, reads and infers here (sheets
drawn as batches finish) or on a Ray cluster, and writes the results file it names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from ecg_edge import home
from ecg_edge.errors import InputError
from ecg_edge.exams import ReadOptions, count_exams
from ecg_edge.readers import expand_inputs
from ecg_edge.results import InferenceRun, check_output_path, write_results
from ecg_edge.spec import HDF5_SUFFIXES


@dataclass(frozen=True)
class RayOptions:
    """Where `--ray` runs: an existing cluster (None: a local one) and its inference actors (None: one
    per GPU, or half the CPUs)."""

    address: str | None = None
    actors: int | None = None


@dataclass(frozen=True)
class InferRequest:
    """One inference job: its inputs, the model and how to run it, how to read, what to write."""

    inputs: tuple[Path, ...]
    model: Path | None = None  # an export folder; None: the model home's
    backend: str = "auto"
    precision: str = "fp32"
    batch: int = 64
    thresholds: tuple[str, ...] = ()  # "VALUE" (every class) or "CLASS=VALUE"
    threads: int | None = None
    cuda_graph: bool = False
    read: ReadOptions = field(default_factory=ReadOptions)  # scale, .npy rate and leads, shard, measurements
    output: Path | None = None  # .csv or .json; on Ray also a new .parquet folder, written by the workers
    report: Path | None = None  # a folder for each exam's sheet and index.html
    ray: RayOptions | None = None  # None: here, in this process
    workers: int | None = None  # input worker processes; None: auto (input_pool.auto_workers); 0: a thread here

    @property
    def parquet(self) -> bool:
        return self.output is not None and self.output.suffix.lower() == ".parquet"

    def check(self) -> None:
        """Before any work: the outputs can be written, and the options go together."""
        if self.output is not None and self.parquet:
            if self.ray is None:
                raise InputError(self.output, "Parquet output (a folder, one file per block) is written by --ray")
            if self.output.exists() or not self.output.parent.is_dir():
                raise InputError(self.output, "must be a new folder in an existing one")
        elif self.output is not None:
            check_output_path(self.output, self.inputs)
        if self.ray is not None and (self.report is not None or self.cuda_graph):
            raise InputError(None, "--ray runs without --report and --cuda-graph (draw sheets with `ecg-edge report`)")
        if self.report is not None:
            from ecg_edge.report import check_report_dir

            check_report_dir(self.report)


def parse_thresholds(values: tuple[str, ...] | list[str], classes: list[str]) -> dict[str, float]:
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


def run_request(request: InferRequest, log: Callable[[str], None] = lambda line: None) -> InferenceRun:
    """Do what `request` asks; `log` gets the backend chosen and each exam skipped. Bad input and a
    run that read no exam at all (a shard may hold none) raise InputError."""
    request.check()
    export_dir = home.resolve_export_dir(request.model)
    run = _on_ray(request, export_dir, log) if request.ray is not None else _here(request, export_dir, log)
    if request.output is not None and not request.parquet:  # a Parquet folder is written by the Ray workers
        write_results(run, request.output)
    return run


def input_workers(requested: int | None, backend: str) -> int:
    """The input workers for a run on `backend` (a name `auto` resolved): as asked, or auto."""
    import os

    from ecg_edge.backends.registry import spec_of
    from ecg_edge.input_pool import auto_workers

    if requested is not None:
        return requested
    spec = spec_of(backend)
    return auto_workers(len(os.sched_getaffinity(0)), spec.kind if spec else "cpu")


def _here(request: InferRequest, export_dir: Path, log: Callable[[str], None]) -> InferenceRun:
    """In this process: input worker processes, one backend, sheets drawn in worker processes as batches finish."""
    from ecg_edge.backends import open_backend
    from ecg_edge.infer import run_inference
    from ecg_edge.progress import progress_bar

    paths = expand_inputs(request.inputs)
    # A recording read on its own (WFDB, hospital formats) costs the input side 15-130 ms of CPU, an HDF5
    # exam 1-10: for the former the backend's idle threads sleep and leave the CPUs to the input side,
    # for the latter their spinning (a quicker start of each run) wins
    # (benchmarks/results/input-workers-2026-12-07-sleeping-threads.md).
    spin = all(p.suffix.lower() in HDF5_SUFFIXES for p in paths)
    runner, manifest = open_backend(export_dir, request.backend, request.precision, threads=request.threads,
                                    cuda_graph=request.cuda_graph, spin=spin)
    thresholds = parse_thresholds(request.thresholds, list(manifest["output"]["classes"]))
    options = replace(request.read, keep_traces=request.report is not None)
    total = None if options.keep_going or options.shard else count_exams(paths)
    writer = None
    if request.report is not None:
        from ecg_edge.report import ReportWriter

        writer = ReportWriter(request.report)
    try:
        with runner, progress_bar("inferring" if writer is None else "inferring and drawing", total=total) as advance:
            because = runner.chosen_because
            how = f"auto: {because}" if because else "auto" if request.backend == "auto" else "chosen"
            log(f"backend: {runner.describe()} ({how})")
            run = run_inference(paths, runner, manifest, batch=request.batch, options=options, thresholds=thresholds,
                                progress=advance, on_skip=lambda message: log(f"skipped: {message}"),
                                on_batch=writer.add if writer else None,
                                workers=input_workers(request.workers, runner.name))
        if not run.exams and not options.shard:  # a shard may hold no exam; a whole input must hold one
            raise InputError(request.inputs[0], "no exam could be read")
        if writer is not None:
            writer.finish()
    finally:
        if writer is not None:
            writer.close()
    return run


def _on_ray(request: InferRequest, export_dir: Path, log: Callable[[str], None]) -> InferenceRun:
    """On a Ray cluster: `auto` is resolved here, then each actor opens that backend."""
    from ecg_edge.backends import open_backend
    from ecg_edge.ray_infer import run_inference_ray

    assert request.ray is not None
    runner, manifest = open_backend(export_dir, request.backend, request.precision, threads=request.threads)
    thresholds = parse_thresholds(request.thresholds, list(manifest["output"]["classes"]))
    log(f"backend: {runner.name} {request.precision} in each Ray actor")
    run = run_inference_ray(request.inputs, export_dir, runner.name, request.precision, manifest, batch=request.batch,
                            options=request.read, thresholds=thresholds, address=request.ray.address,
                            actors=request.ray.actors, threads=request.threads, log=log,
                            parquet=request.output if request.parquet else None)
    for message in run.skipped:
        log(f"skipped: {message}")
    if not run.exams and not request.read.shard:
        raise InputError(request.inputs[0], "no exam could be read")
    return run

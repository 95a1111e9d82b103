"""Streaming inference: read and preprocess in worker processes (or a thread), infer in batches.

Memory is bounded by a few batches whatever the input size: HDF5 files are read in chunks, the input
workers read a bounded number of units ahead (`ecg_edge.input_pool`), and a queue of at most
`QUEUE_BATCHES` batches stands between the thread that gathers them and the backend. Reading is
`ecg_edge.exams`, the results and their files `ecg_edge.results`.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ecg_edge import exams, results
from ecg_edge.backends.base import Backend

# What callers of run_inference name beside it: its options, its batches, its result.
from ecg_edge.exams import Batch, ReadOptions, batches_of, iter_batches
from ecg_edge.input_pool import Budget, InputPool, InputStats, timed_exams
from ecg_edge.readers import expand_inputs
from ecg_edge.results import InferenceRun

__all__ = ["QUEUE_BATCHES", "Batch", "InferenceRun", "ReadOptions", "iter_batches", "run_inference"]

QUEUE_BATCHES = 3


def _read_ahead(source: Iterator[Any], depth: int) -> Generator[Any, None, None]:
    """Run `source` in a thread, at most `depth` items ahead; its exceptions re-raise here."""
    items: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(kind: str, value: Any) -> bool:
        while not stop.is_set():
            try:
                items.put((kind, value), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in source:
                if not offer("item", item):
                    return
            offer("done", None)
        except BaseException as exc:  # handed to the consumer
            offer("error", exc)

    thread = threading.Thread(target=produce, name="ecg-reader", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = items.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        thread.join(timeout=5)


def model_sha256(backend: Backend, manifest: dict[str, Any]) -> str:
    """The manifest's sha256 of the file a backend runs ('' where it names none)."""
    model_file = backend.path
    return manifest["files"].get(Path(model_file).name, {}).get("sha256", "") if model_file else ""


def run_inference(
    inputs: Sequence[str | Path], backend: Backend, manifest: dict[str, Any], batch: int = 64,
    options: ReadOptions | None = None, thresholds: dict[str, float] | None = None,
    progress: Callable[[int], None] | None = None, on_skip: Callable[[str], None] | None = None,
    on_batch: Callable[[InferenceRun, Batch, np.ndarray], None] | None = None,
    workers: int = 0, budget: Budget | None = None,
) -> InferenceRun:
    """Probabilities for every exam of `inputs` through an active backend.

    `workers`: input worker processes (`ecg_edge.input_pool`, each recording within `budget`), or 0
    to read in a thread of this process. `on_batch(run, batch, probabilities)` sees each batch as it
    is done (e.g. to draw sheets while the next batch runs); traces are dropped from the run's exams
    after it, to bound memory."""
    options = options or ReadOptions()
    classes = list(manifest["output"]["classes"])
    run = InferenceRun(classes=classes, thresholds={**manifest["thresholds"], **(thresholds or {})},
                       backend=backend.describe(), precision=backend.precision,
                       model_sha256=model_sha256(backend, manifest))
    paths = expand_inputs(inputs)

    def skip(message: str) -> None:
        run.skipped.append(message)
        if on_skip:
            on_skip(message)

    outputs = []
    start = time.perf_counter()
    pool = InputPool(workers, options, budget) if workers else None
    run.input = pool.stats if pool else InputStats()
    items = pool.exams(paths, skip) if pool else timed_exams(exams.iter_exams(paths, options, skip), run.input)
    # Closed in this order: the workers first, which frees the gathering thread, then that thread.
    with contextlib.closing(_read_ahead(batches_of(items, batch), QUEUE_BATCHES)) as batches, \
            pool or contextlib.nullcontext():
        for item in batches:
            probabilities = backend.infer(item.x)
            outputs.append(probabilities)
            run.compute_s += backend.last_inference_s or 0.0
            if on_batch:
                on_batch(run, item, probabilities)
            for exam in item.exams:
                exam.trace = None
            run.exams += item.exams
            if progress:
                progress(len(item.exams))
    run.wall_s = time.perf_counter() - start
    run.probabilities = np.concatenate(outputs) if outputs else np.zeros((0, len(classes)), np.float32)
    return run


# Names that moved to ecg_edge.exams and ecg_edge.results: importable from here for one release, with a
# DeprecationWarning.
_MOVED = {**dict.fromkeys(("Exam", "MEASURE_LEVELS", "count_exams", "iter_exams", "parse_shard", "shard_of"), exams),
          **dict.fromkeys(("MAX_TABLE_ROWS", "check_output_path", "merge_results", "results_table", "write_results"),
                          results)}

if not TYPE_CHECKING:  # hidden from mypy, which then flags the old spellings in this repository
    from ecg_edge.deprecation import moved_names

    __getattr__ = moved_names(__name__, _MOVED)

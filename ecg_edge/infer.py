"""Streaming inference: read and preprocess in a thread, infer in batches, write results atomically.

Memory is bounded by a few batches whatever the input size: HDF5 files are read in chunks, and a
queue of at most `QUEUE_BATCHES` preprocessed batches stands between the reader and the backend.
"""

from __future__ import annotations

import csv
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ecg_edge.atomic_files import atomic_write
from ecg_edge.backends.base import Backend
from ecg_edge.errors import InputError
from ecg_edge.preprocess import check_finite, to_model_input
from ecg_edge.readers import expand_inputs, format_of, hdf5_exam_count, is_hdf5, iter_hdf5_chunks, read_recording
from ecg_edge.spec import called

QUEUE_BATCHES = 3


@dataclass
class ReadOptions:
    scale: float = 1.0
    fs: float | None = None  # for .npy
    leads: Sequence[str] | None = None  # for .npy
    keep_going: bool = False


@dataclass
class InferenceRun:
    classes: list[str]
    thresholds: dict[str, float]
    ids: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    statements: list[tuple[str, ...]] = field(default_factory=list)  # the recording device's own, per exam
    probabilities: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    skipped: list[str] = field(default_factory=list)
    backend: str = ""
    precision: str = ""
    model_sha256: str = ""
    wall_s: float = 0.0
    compute_s: float = 0.0

    def findings(self) -> list[list[str]]:
        """Per exam: the classes above their thresholds (binary: 'abnormal' or 'normal')."""
        thr = np.array([self.thresholds[c] for c in self.classes])
        positive = called(self.probabilities, thr)
        if self.classes == ["abnormal"]:
            return [["abnormal"] if p[0] else ["normal"] for p in positive]
        return [[c for c, hit in zip(self.classes, row, strict=True) if hit] for row in positive]

    @property
    def throughput(self) -> float:
        return len(self.ids) / self.wall_s if self.wall_s else 0.0


def count_exams(paths: Sequence[Path]) -> int:
    """Exams the inputs hold (validates HDF5 layouts up front)."""
    return sum(hdf5_exam_count(p) if is_hdf5(p) else 1 for p in paths)


@dataclass
class Batch:
    """Model inputs (n, 4096, 12) with, per exam, its id, source file and the device's own statements."""

    ids: list[str]
    sources: list[str]
    statements: list[tuple[str, ...]]
    x: np.ndarray


def iter_batches(
    paths: Sequence[Path], batch: int, options: ReadOptions, on_skip: Callable[[str], None],
) -> Iterator[Batch]:
    """Batches of `batch` exams from any mix of formats, in input order."""
    ids: list[str] = []
    sources: list[str] = []
    statements: list[tuple[str, ...]] = []
    rows: list[np.ndarray] = []

    def add(exam_id: str, source: str, x: np.ndarray, said: tuple[str, ...] = ()) -> Batch | None:
        ids.append(exam_id)
        sources.append(source)
        statements.append(said)
        rows.append(x)
        if len(rows) < batch:
            return None
        out = Batch(ids[:], sources[:], statements[:], np.stack(rows))
        for part in (ids, sources, statements, rows):
            part.clear()
        return out

    for path in paths:
        try:
            fmt = format_of(path)
            if fmt == "hdf5":
                for chunk_ids, block in iter_hdf5_chunks(path):
                    for exam_id, x in zip(chunk_ids, block, strict=True):
                        try:
                            check_finite(x, f"{path} (exam {exam_id})")
                        except InputError as exc:
                            if not options.keep_going:
                                raise
                            on_skip(str(exc))
                            continue
                        full = add(exam_id, str(path), x * options.scale if options.scale != 1.0 else x)
                        if full is not None:
                            yield full
            else:
                rec = read_recording(path, fs=options.fs, leads=options.leads, fmt=fmt)
                full = add(rec.id, str(path), to_model_input(rec, scale=options.scale), rec.statements)
                if full is not None:
                    yield full
        except InputError as exc:
            if not options.keep_going:
                raise
            on_skip(str(exc))
    if rows:
        yield Batch(ids, sources, statements, np.stack(rows))


def _read_ahead(source: Iterator[Any], depth: int) -> Iterator[Any]:
    """Run `source` in a thread, at most `depth` items ahead; its exceptions re-raise here."""
    items: queue.Queue[Any] = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in source:
                while not stop.is_set():
                    try:
                        items.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put(("done", done))
        except BaseException as exc:  # handed to the consumer
            items.put(("error", exc))

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


def run_inference(
    inputs: Sequence[str | Path], backend: Backend, manifest: dict[str, Any], batch: int = 64,
    options: ReadOptions | None = None, thresholds: dict[str, float] | None = None,
    progress: Callable[[int], None] | None = None, on_skip: Callable[[str], None] | None = None,
) -> InferenceRun:
    """Probabilities for every exam of `inputs` through an active backend."""
    options = options or ReadOptions()
    classes = list(manifest["output"]["classes"])
    run = InferenceRun(classes=classes, thresholds={**manifest["thresholds"], **(thresholds or {})},
                       backend=backend.describe(), precision=backend.precision)
    model_file = getattr(backend, "path", None) or getattr(backend, "plan", None)
    if model_file is not None:
        run.model_sha256 = manifest["files"].get(Path(model_file).name, {}).get("sha256", "")
    paths = expand_inputs(inputs)

    def skip(message: str) -> None:
        run.skipped.append(message)
        if on_skip:
            on_skip(message)

    outputs = []
    start = time.perf_counter()
    for item in _read_ahead(iter_batches(paths, batch, options, skip), QUEUE_BATCHES):
        outputs.append(backend.infer(item.x))
        run.compute_s += backend.last_inference_s or 0.0
        run.ids += item.ids
        run.sources += item.sources
        run.statements += item.statements
        if progress:
            progress(len(item.ids))
    run.wall_s = time.perf_counter() - start
    run.probabilities = np.concatenate(outputs) if outputs else np.zeros((0, len(classes)), np.float32)
    return run


def check_output_path(path: Path) -> None:
    if path.suffix.lower() not in {".csv", ".json"}:
        raise InputError(path, "output must end in .csv or .json")
    if not path.parent.exists():
        raise InputError(path.parent, "output folder does not exist")


def write_results(run: InferenceRun, path: Path) -> None:
    """CSV: exam_id, one column per class, findings (';'-joined). JSON: run facts + a list `exams`."""
    findings = run.findings()
    if path.suffix.lower() == ".csv":
        def write_csv(f: Any) -> None:
            writer = csv.writer(f)
            writer.writerow(["exam_id", *run.classes, "findings"])
            for exam_id, probs, found in zip(run.ids, run.probabilities, findings, strict=True):
                writer.writerow([exam_id, *(f"{p:.6f}" for p in probs), ";".join(found)])
        atomic_write(path, write_csv)
        return
    document = {
        "model_sha256": run.model_sha256,
        "backend": run.backend,
        "precision": run.precision,
        "classes": run.classes,
        "thresholds": run.thresholds,
        "skipped": run.skipped,
        "exams": [
            {"exam_id": exam_id, **{c: float(p) for c, p in zip(run.classes, probs, strict=True)},
             "findings": found, "device_statements": list(said), "source": source}
            for exam_id, probs, found, source, said
            in zip(run.ids, run.probabilities, findings, run.sources, run.statements, strict=True)
        ],
    }
    atomic_write(path, lambda f: json.dump(document, f, indent=1))

"""Streaming inference: read and preprocess in a thread, infer in batches, write results atomically.

Memory is bounded by a few batches whatever the input size: HDF5 files are read in chunks, and a
queue of at most `QUEUE_BATCHES` preprocessed batches stands between the reader and the backend.
"""

from __future__ import annotations

import csv
import hashlib
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ecg_edge.atomic_files import atomic_write, check_target
from ecg_edge.backends.base import Backend
from ecg_edge.errors import InputError
from ecg_edge.measure import COLUMNS as MEASUREMENT_COLUMNS
from ecg_edge.measure import NOT_MEASURED, Measurements, measure
from ecg_edge.measure import method as measurement_method
from ecg_edge.preprocess import check_finite, prepare
from ecg_edge.quality import assess, unpadded_span
from ecg_edge.readers import expand_inputs, format_of, hdf5_exam_count, is_hdf5, iter_hdf5_chunks, read_recording
from ecg_edge.spec import DISCLAIMER, LEADS, N_SAMPLES, SAMPLING_RATE_HZ, UNITS, called, describe_finding

QUEUE_BATCHES = 3
# ReadOptions.measure: nothing, the heart rate (~6 ms an exam on a 2-core VM, where INT8 inference takes
# ~14), also PR and QT (~15 ms in all), or "auto": intervals where sheets are drawn (a sheet takes ~120 ms),
# the rate alone otherwise (benchmarks/results/rate-rule-2026-11-28.md).
MEASURE_LEVELS = ("off", "rate", "intervals", "auto")


@dataclass
class ReadOptions:
    scale: float = 1.0
    fs: float | None = None  # for .npy
    leads: Sequence[str] | None = None  # for .npy
    keep_going: bool = False
    assess: bool = True  # quality flags and provenance per exam
    keep_traces: bool = False  # each exam's 12 leads as read (mV, own rate), for sheets
    measure: str = "auto"  # one of MEASURE_LEVELS (ecg_edge.measure)
    shard: tuple[int, int] | None = None  # (i, n): only the exams of the i-th of n parts (0 <= i < n)

    def __post_init__(self) -> None:
        if self.measure not in MEASURE_LEVELS:
            raise ValueError(f"measure={self.measure!r}: expected one of {', '.join(MEASURE_LEVELS)}")

    def in_shard(self, key: str) -> bool:
        return self.shard is None or shard_of(key, self.shard[1]) == self.shard[0]


def shard_of(key: str, n: int) -> int:
    """The part (of n) an exam belongs to, from its key (file name, and exam id inside an HDF5
    file): the same in every run, on every machine, whatever the order or folder of the inputs."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:16], 16) % n


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' (0 <= I < N): a Slurm array index or a Kubernetes completion index over N parts."""
    i, sep, n = text.partition("/")
    if not (sep and i.strip().isdigit() and n.strip().isdigit()) or not 0 <= int(i) < int(n):
        raise InputError(None, f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. 0/4")
    return int(i), int(n)


@dataclass
class Exam:
    """What is known of one exam besides its model input: where it came from, what was done to it,
    how good the signal is, its heart rate and intervals, and (when asked for) its 12 leads as read, for a sheet."""

    id: str
    source: str
    statements: tuple[str, ...] = ()  # the recording device's own interpretation
    quality: list[dict[str, Any]] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    trace: np.ndarray | None = None
    fs: float = SAMPLING_RATE_HZ
    measurements: Measurements = NOT_MEASURED


class _Exams:
    """Per-exam columns of anything that holds `exams`."""

    exams: list[Exam]

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.exams]

    @property
    def sources(self) -> list[str]:
        return [e.source for e in self.exams]


@dataclass
class InferenceRun(_Exams):
    classes: list[str]
    thresholds: dict[str, float]
    exams: list[Exam] = field(default_factory=list)
    probabilities: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    skipped: list[str] = field(default_factory=list)
    backend: str = ""
    precision: str = ""
    model_sha256: str = ""
    wall_s: float = 0.0
    compute_s: float = 0.0

    def findings(self, probabilities: np.ndarray | None = None) -> list[list[str]]:
        """Per exam (of the run, or of `probabilities`): the classes above their thresholds (binary:
        'abnormal' or 'normal')."""
        thr = np.array([self.thresholds[c] for c in self.classes])
        positive = called(self.probabilities if probabilities is None else probabilities, thr)
        if self.classes == ["abnormal"]:
            return [["abnormal"] if p[0] else ["normal"] for p in positive]
        return [[c for c, hit in zip(self.classes, row, strict=True) if hit] for row in positive]

    @property
    def throughput(self) -> float:
        return len(self.exams) / self.wall_s if self.wall_s else 0.0


def count_exams(paths: Sequence[Path]) -> int:
    """Exams the inputs hold (validates HDF5 layouts up front)."""
    return sum(hdf5_exam_count(p) if is_hdf5(p) else 1 for p in paths)


@dataclass
class Batch(_Exams):
    """Model inputs (n, 4096, 12) and what is known of each exam."""

    exams: list[Exam]
    x: np.ndarray


def _hdf5_exam(exam_id: str, path: Path, x: np.ndarray, options: ReadOptions) -> Exam:
    """A CODE-layout exam: stored at 400 Hz in the model's lead order, zero-padded to 4096 samples."""
    exam = Exam(exam_id, str(path))
    if not (options.assess or options.keep_traces or options.measure != "off"):
        return exam
    start, stop = unpadded_span(x)
    signal = x[start:stop]
    exam.measurements = _measure(signal, options)
    if options.assess:
        pad = N_SAMPLES - (stop - start)
        exam.quality = [f.as_dict() for f in assess(signal, signal, SAMPLING_RATE_HZ, pad)]
        exam.provenance = {
            "source": str(path), "format": "hdf5", "sampling_rate_hz": float(SAMPLING_RATE_HZ), "units": UNITS,
            "duration_s": round((stop - start) / SAMPLING_RATE_HZ, 4), "leads_stored": list(LEADS),
            "leads_derived": [], "resampled": None, "padded_before": start, "padded_after": N_SAMPLES - stop,
            "cropped_before": 0, "cropped_after": 0, "scale": options.scale,
        }
    if options.keep_traces:
        exam.trace = signal
    return exam


def _measure(signal: np.ndarray, options: ReadOptions) -> Measurements:
    """On the 400 Hz signal before padding: the seconds the model reads, at one rate for every format."""
    if options.measure == "off":
        return NOT_MEASURED
    intervals = options.measure == "intervals" or (options.measure == "auto" and options.keep_traces)
    return measure(signal, SAMPLING_RATE_HZ, intervals=intervals)


def _recording_exam(path: Path, fmt: str, options: ReadOptions) -> tuple[Exam, np.ndarray]:
    rec = read_recording(path, fs=options.fs, leads=options.leads, fmt=fmt)
    prepared = prepare(rec, scale=options.scale)
    exam = Exam(rec.id, str(path), rec.statements, fs=prepared.fs, measurements=_measure(prepared.signal, options))
    if options.assess:
        flags = assess(prepared.signal, prepared.stored, prepared.fs, prepared.pad_samples)
        exam.quality = [f.as_dict() for f in flags]
        exam.provenance = prepared.provenance
    if options.keep_traces:
        exam.trace = prepared.stored
    return exam, prepared.x


def iter_exams(
    paths: Sequence[Path], options: ReadOptions, on_skip: Callable[[str], None],
    rows: tuple[int, int] | None = None,
) -> Iterator[tuple[Exam, np.ndarray]]:
    """(exam, model input) from any mix of formats, in input order; `rows` limits HDF5 files to a
    [start, stop) range of exams (a unit of parallel reading). Bad input raises, or with
    `keep_going` is reported through `on_skip` and skipped."""
    for path in paths:
        try:
            fmt = format_of(path)
            if fmt == "hdf5":
                for chunk_ids, block in iter_hdf5_chunks(path, rows=rows):
                    for exam_id, x in zip(chunk_ids, block, strict=True):
                        if not options.in_shard(f"{path.name}#{exam_id}"):
                            continue
                        try:
                            check_finite(x, f"{path} (exam {exam_id})")
                        except InputError as exc:
                            if not options.keep_going:
                                raise
                            on_skip(str(exc))
                            continue
                        x = x * options.scale if options.scale != 1.0 else x
                        yield _hdf5_exam(exam_id, path, x, options), x
            elif options.in_shard(path.name):  # one exam per file: decided before reading it
                yield _recording_exam(path, fmt, options)
        except InputError as exc:
            if not options.keep_going:
                raise
            on_skip(str(exc))


def iter_batches(
    paths: Sequence[Path], batch: int, options: ReadOptions, on_skip: Callable[[str], None],
) -> Iterator[Batch]:
    """Batches of `batch` exams from any mix of formats, in input order."""
    exams: list[Exam] = []
    rows: list[np.ndarray] = []
    for exam, x in iter_exams(paths, options, on_skip):
        exams.append(exam)
        rows.append(x)
        if len(rows) == batch:
            yield Batch(exams[:], np.stack(rows))
            exams.clear()
            rows.clear()
    if rows:
        yield Batch(exams, np.stack(rows))


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
    on_batch: Callable[[InferenceRun, Batch, np.ndarray], None] | None = None,
) -> InferenceRun:
    """Probabilities for every exam of `inputs` through an active backend.

    `on_batch(run, batch, probabilities)` sees each batch as it is done (e.g. to draw sheets while
    the next batch runs); traces are dropped from the run's exams after it, to bound memory."""
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


def check_output_path(path: Path) -> None:
    check_target(path, (".csv", ".json"))


def write_results(run: InferenceRun, path: Path) -> None:
    """CSV: exam_id, one column per class, findings, quality flags (';'-joined) and the measurements
    (`ecg_edge.measure.COLUMNS`; empty where not measured, `measurements_note` says why). JSON: the
    run's facts and a list `exams`, each with findings named in full, quality flags, the same
    measurements and provenance."""
    findings = run.findings()
    if path.suffix.lower() == ".csv":
        def write_csv(f: Any) -> None:
            writer = csv.writer(f)
            writer.writerow(["exam_id", *run.classes, "findings", "quality", *MEASUREMENT_COLUMNS])
            for exam, probs, found in zip(run.exams, run.probabilities, findings, strict=True):
                writer.writerow([exam.id, *(f"{p:.6f}" for p in probs), ";".join(found),
                                 ";".join(q["flag"] for q in exam.quality),
                                 *("" if v is None else v for v in exam.measurements.columns().values())])
        atomic_write(path, write_csv)
        return
    document = results_document(run)
    atomic_write(path, lambda f: json.dump(document, f, indent=1))


def results_document(run: InferenceRun) -> dict[str, Any]:
    """What `write_results` writes as JSON (and `ecg-edge serve` answers)."""
    findings = run.findings()
    return {
        "disclaimer": DISCLAIMER,
        "model_sha256": run.model_sha256,
        "backend": run.backend,
        "precision": run.precision,
        "classes": [describe_finding(c) for c in run.classes],
        "thresholds": run.thresholds,
        "measurements": measurement_method(),
        "skipped": run.skipped,
        "exams": [
            {"exam_id": exam.id, **{c: float(p) for c, p in zip(run.classes, probs, strict=True)},
             "findings": found, "findings_named": [describe_finding(name) for name in found],
             "quality": exam.quality, **exam.measurements.as_json(),
             "device_statements": list(exam.statements), "source": exam.source,
             "provenance": {**exam.provenance, "model_sha256": run.model_sha256,
                            "backend": run.backend, "precision": run.precision}}
            for exam, probs, found in zip(run.exams, run.probabilities, findings, strict=True)
        ],
    }


# Rows a terminal table shows; files hold them all.
MAX_TABLE_ROWS = 40


def results_table(run: InferenceRun) -> Any:
    """The first exams of a run, for a terminal."""
    from rich import box
    from rich.table import Table

    # Fits 80 columns with six classes: ids, findings and flags fold rather than push numbers out.
    table = Table(title=f"{len(run.exams)} exams", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("exam_id", overflow="fold", min_width=12)
    for c in run.classes:
        table.add_column(c, justify="right", no_wrap=True, min_width=len(c))
    table.add_column("findings", overflow="fold")
    table.add_column("quality", overflow="fold", min_width=7)
    rows = zip(run.exams, run.probabilities, run.findings(), strict=True)
    for exam, probs, found in list(rows)[:MAX_TABLE_ROWS]:
        table.add_row(exam.id, *(f"{p:.3f}" for p in probs), ", ".join(found) or "-",
                      ", ".join(q["flag"] for q in exam.quality) or "-")
    if len(run.exams) > MAX_TABLE_ROWS:
        table.caption = f"first {MAX_TABLE_ROWS} of {len(run.exams)} exams: --output FILE.csv/.json writes them all"
    return table


def merge_results(inputs: Sequence[Path], out: Path) -> int:
    """Join the CSV or JSON outputs of `infer --shard` runs into one file (atomically); an exam in
    two inputs, or inputs of different models or classes, are refused. Returns the exams written."""
    check_target(out, (".csv", ".json"))
    suffix = out.suffix.lower()
    for path in inputs:
        if path.suffix.lower() != suffix:
            raise InputError(path, f"cannot merge into {suffix}: every input must be {suffix} too")
        if not path.is_file():
            raise InputError(path, "no such file")
    seen: dict[str, Path] = {}

    def claim(exam_id: str, path: Path) -> None:
        if seen.get(exam_id, path) != path:  # repeats inside one file came from one run's inputs
            raise InputError(path, f"exam {exam_id} is also in {seen[exam_id]}: overlapping shards "
                                   "(or inputs whose exam ids repeat across files)")
        seen[exam_id] = path

    if suffix == ".csv":
        header: list[str] | None = None
        rows: list[list[str]] = []
        for path in inputs:
            with open(path, newline="") as f:
                reader = csv.reader(f)
                head = next(reader, None)
                if head is None or head[:1] != ["exam_id"]:
                    raise InputError(path, "not an ecg-edge results CSV (no exam_id column first)")
                if header is not None and head != header:
                    raise InputError(path, "columns differ from the first input's (another model or classes)")
                header = head
                for row in reader:
                    claim(row[0], path)
                    rows.append(row)

        def write_csv(f: Any) -> None:
            writer = csv.writer(f)
            writer.writerow(header or [])
            writer.writerows(rows)

        atomic_write(out, write_csv)
        return len(rows)
    merged: dict[str, Any] | None = None
    for path in inputs:
        try:
            doc = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(path, f"not valid JSON ({exc})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("exams"), list):
            raise InputError(path, "not an ecg-edge results JSON (no 'exams' list)")
        for exam in doc["exams"]:
            claim(str(exam.get("exam_id")), path)
        if merged is None:
            merged = {k: v for k, v in doc.items() if k != "exams"} | {"exams": [], "skipped": [], "merged_from": []}
        for key in ("classes", "model_sha256", "thresholds"):
            if doc.get(key) != merged.get(key):
                raise InputError(path, f"'{key}' differs from the first input's: not shards of one run")
        merged["exams"] += doc["exams"]
        merged["skipped"] += doc.get("skipped", [])
        merged["merged_from"].append(str(path))
    assert merged is not None
    atomic_write(out, lambda f: json.dump(merged, f, indent=1))
    return len(merged["exams"])

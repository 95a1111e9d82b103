"""Reading exams: recordings of any format, and each exam of a CODE-layout HDF5 file, through the one
preprocessing path (`preprocess.prepare`) to model inputs, with their quality flags, provenance and
measurements; in batches; split into fixed shards for job arrays.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ecg_edge.errors import InputError
from ecg_edge.measure import NOT_MEASURED, Measurements, measure
from ecg_edge.preprocess import Prepared, prepare
from ecg_edge.quality import Flag, assess, assess_batch
from ecg_edge.readers import format_of, hdf5_exam_count, is_hdf5, iter_hdf5_chunks, read_recording
from ecg_edge.readers.hdf5 import code_exam_recording
from ecg_edge.recording import Recording
from ecg_edge.spec import SAMPLING_RATE_HZ

# ReadOptions.measure: nothing, the heart rate (~6 ms an exam on a 2-core VM, where INT8 inference takes
# ~14), also PR and QT (~15 ms in all), or "auto": intervals where sheets are drawn (a sheet takes ~120 ms),
# the rate alone otherwise (benchmarks/results/rate-rule-2026-11-28.md).
MEASURE_LEVELS = ("off", "rate", "intervals", "auto")


@dataclass(frozen=True)
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
            raise InputError(None, f"measure={self.measure!r}: expected one of {', '.join(MEASURE_LEVELS)}")

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


class ExamColumns:
    """Per-exam columns of anything that holds `exams`."""

    exams: list[Exam]

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.exams]

    @property
    def sources(self) -> list[str]:
        return [e.source for e in self.exams]


@dataclass
class Batch(ExamColumns):
    """Model inputs (n, 4096, 12) and what is known of each exam."""

    exams: list[Exam]
    x: np.ndarray


def count_exams(paths: Sequence[Path]) -> int:
    """Exams the inputs hold (validates HDF5 layouts up front)."""
    return sum(hdf5_exam_count(p) if is_hdf5(p) else 1 for p in paths)


def _measure(signal: np.ndarray, options: ReadOptions) -> Measurements:
    """On the 400 Hz signal before padding: the seconds the model reads, at one rate for every format."""
    if options.measure == "off":
        return NOT_MEASURED
    intervals = options.measure == "intervals" or (options.measure == "auto" and options.keep_traces)
    return measure(signal, SAMPLING_RATE_HZ, intervals=intervals)


def read_exam(
    recording: Recording, source: str, options: ReadOptions, padding: tuple[int, int] | None = None,
) -> tuple[Exam, np.ndarray]:
    """One recording through `prepare` (`padding`: see there): what is known of the exam (`source`: the
    file as the user named it), and its model input."""
    prepared = prepare(recording, scale=options.scale, padding=padding)
    flags = assess(prepared.signal, prepared.stored, prepared.fs, prepared.pad_samples) if options.assess else []
    return _exam(recording, source, prepared, options, flags), prepared.x


def _exam(recording: Recording, source: str, prepared: Prepared, options: ReadOptions, flags: list[Flag]) -> Exam:
    exam = Exam(recording.id, source, recording.statements, fs=prepared.fs,
                measurements=_measure(prepared.signal, options))
    if options.assess:
        exam.quality = [f.as_dict() for f in flags]
        exam.provenance = prepared.provenance
    if options.keep_traces:
        exam.trace = prepared.stored
    return exam


def read_code_exams(
    exam_ids: Sequence[str], path: Path, block: np.ndarray, options: ReadOptions, on_skip: Callable[[str], None],
) -> Iterator[tuple[Exam, np.ndarray]]:
    """Exams of a CODE-layout file (400 Hz, model lead order, zero-padded to 4096 samples) read
    together: each through `prepare` as any recording, its stored padding kept where it is, the
    quality flags of the block measured at once (`quality.assess_batch`, the same flags as one at a
    time). Errors name the exam; with `keep_going` they are reported through `on_skip`."""
    prepared: list[tuple[Recording, Prepared]] = []
    for exam_id, x in zip(exam_ids, block, strict=True):
        recording, padding = code_exam_recording(exam_id, path, x)
        try:
            prepared.append((recording, prepare(recording, scale=options.scale, padding=padding)))
        except InputError as exc:
            error = InputError(f"{path} (exam {exam_id})", exc.problem)
            if not options.keep_going:
                raise error from None
            on_skip(str(error))
    flags = (assess_batch([(p.signal, p.stored, p.fs, p.pad_samples) for _, p in prepared]) if options.assess
             else [[] for _ in prepared])
    for (recording, p), found in zip(prepared, flags, strict=True):
        yield _exam(recording, str(path), p, options, found), p.x


def read_code_exam(exam_id: str, path: Path, x: np.ndarray, options: ReadOptions) -> tuple[Exam, np.ndarray]:
    """One exam of a CODE-layout file (`read_code_exams`); an error names the exam."""
    return next(read_code_exams([exam_id], path, x[None], replace(options, keep_going=False), lambda message: None))


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
                    kept = [k for k, exam_id in enumerate(chunk_ids) if options.in_shard(f"{path.name}#{exam_id}")]
                    if len(kept) < len(chunk_ids):
                        chunk_ids, block = [chunk_ids[k] for k in kept], block[kept]
                    yield from read_code_exams(chunk_ids, path, block, options, on_skip)
            elif options.in_shard(path.name):  # one exam per file: decided before reading it
                recording = read_recording(path, fs=options.fs, leads=options.leads, fmt=fmt)
                yield read_exam(recording, str(path), options)
        except InputError as exc:
            if not options.keep_going:
                raise
            on_skip(str(exc))


def iter_batches(
    paths: Sequence[Path], batch: int, options: ReadOptions, on_skip: Callable[[str], None],
) -> Iterator[Batch]:
    """Batches of `batch` exams from any mix of formats, in input order, read in this process."""
    return batches_of(iter_exams(paths, options, on_skip), batch)


def batches_of(items: Iterable[tuple[Exam, np.ndarray]], batch: int) -> Iterator[Batch]:
    """(exam, model input) pairs, from this process or from input workers, in batches of `batch`."""
    exams: list[Exam] = []
    rows: list[np.ndarray] = []
    for exam, x in items:
        exams.append(exam)
        rows.append(x)
        if len(rows) == batch:
            yield Batch(exams[:], np.stack(rows))
            exams.clear()
            rows.clear()
    if rows:
        yield Batch(exams, np.stack(rows))

"""What a run found, and its files: one schema of columns for CSV, JSON and Parquet, used to write
them and to read them back (`merge_results`); the terminal table and summary beside them.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ecg_edge.atomic_files import atomic_write, check_target
from ecg_edge.errors import InputError, one_line
from ecg_edge.exams import Exam, ExamColumns
from ecg_edge.input_pool import InputStats
from ecg_edge.measure import COLUMNS as MEASUREMENT_COLUMNS
from ecg_edge.measure import method as measurement_method
from ecg_edge.spec import DISCLAIMER, called, describe_finding

ID, SOURCE, FINDINGS, QUALITY = "exam_id", "source", "findings", "quality"
SUFFIXES = (".csv", ".json")  # what `infer -o` and `merge` write; Parquet folders come from --ray
# Rows a terminal table shows; files hold them all.
MAX_TABLE_ROWS = 40
MAX_ID_SHOWN = 64  # characters of an exam id in the terminal's table (files keep the whole id)


def findings_of(classes: Sequence[str], thresholds: dict[str, float], probabilities: np.ndarray) -> list[list[str]]:
    """Per exam: the classes above their thresholds (binary: 'abnormal' or 'normal')."""
    positive = called(probabilities, np.array([thresholds[c] for c in classes]))
    if list(classes) == ["abnormal"]:
        return [["abnormal"] if p[0] else ["normal"] for p in positive]
    return [[c for c, hit in zip(classes, row, strict=True) if hit] for row in positive]


@dataclass(frozen=True)
class ResultSchema:
    """The columns of every results file, defined once: the exam's id and the file it came from, one
    probability per class, its findings and quality flags (';'-joined), its measurements
    (`ecg_edge.measure.COLUMNS`). A CSV or Parquet row holds exactly these; a JSON exam holds them
    too, with lists for findings and flags, and more: findings named in full, flag values, device
    statements, provenance."""

    classes: tuple[str, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        return (ID, SOURCE, *self.classes, FINDINGS, QUALITY, *MEASUREMENT_COLUMNS)

    def row(self, exam: Exam, probabilities: np.ndarray, findings: list[str]) -> dict[str, Any]:
        """One exam's values by column: floats for probabilities, None where nothing was measured."""
        return {ID: exam.id, SOURCE: exam.source,
                **{c: float(p) for c, p in zip(self.classes, probabilities, strict=True)},
                FINDINGS: ";".join(findings), QUALITY: ";".join(q["flag"] for q in exam.quality),
                **exam.measurements.columns()}

    def cells(self, row: dict[str, Any]) -> list[Any]:
        """A row (made by `row`, or read from a file as text) as CSV cells: probabilities to 6 decimals,
        empty where a value is missing (a column an older file lacks, or nothing measured)."""
        def cell(column: str, value: Any) -> Any:
            if value is None:
                return ""
            return f"{value:.6f}" if column in self.classes and isinstance(value, float) else value

        return [cell(c, row.get(c)) for c in self.columns]

    def json_exam(self, exam: Exam, probabilities: np.ndarray, findings: list[str],
                  run_facts: dict[str, Any]) -> dict[str, Any]:
        """One exam of a JSON results file: the columns, lists where a table joins them, and the details."""
        return {**self.row(exam, probabilities, findings), FINDINGS: findings, QUALITY: exam.quality,
                **exam.measurements.as_json(),
                "findings_named": [describe_finding(name) for name in findings],
                "device_statements": list(exam.statements),
                "provenance": {**exam.provenance, **run_facts}}

    def arrays(self, exams: Sequence[Exam], probabilities: np.ndarray, findings: list[list[str]]) -> dict[str, Any]:
        """The columns as arrays (a Parquet table): float32 probabilities, objects for the rest."""
        rows = [self.row(e, p, f) for e, p, f in zip(exams, probabilities, findings, strict=True)]
        matrix = np.asarray(probabilities, dtype=np.float32).reshape(len(rows), len(self.classes))
        by_class = {c: matrix[:, k] for k, c in enumerate(self.classes)}
        return {c: by_class[c] if c in by_class else np.array([r[c] for r in rows], dtype=object)
                for c in self.columns}

    @classmethod
    def of_csv_header(cls, header: list[str] | None, path: Path) -> ResultSchema:
        """The schema a results CSV was written with; files from before `source` was a column read too."""
        if header is None or header[:1] != [ID]:
            raise InputError(path, "not an ecg-edge results CSV (no exam_id column first)")
        if FINDINGS not in header:
            raise InputError(path, "not an ecg-edge results CSV (no findings column)")
        first = 2 if header[1:2] == [SOURCE] else 1
        return cls(tuple(header[first:header.index(FINDINGS)]))


@dataclass
class InferenceRun(ExamColumns):
    """What a run found: each exam read, its probabilities (a row per exam, a column per class), the
    thresholds that call findings, what was skipped and why, what ran and how long it took."""

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
    input: InputStats = field(default_factory=InputStats)  # the input side: its workers and their time

    def findings(self, probabilities: np.ndarray | None = None) -> list[list[str]]:
        """Per exam (of the run, or of `probabilities`): the classes above their thresholds (binary:
        'abnormal' or 'normal')."""
        chosen = self.probabilities if probabilities is None else probabilities
        return findings_of(self.classes, self.thresholds, chosen)

    @property
    def schema(self) -> ResultSchema:
        return ResultSchema(tuple(self.classes))

    @property
    def throughput(self) -> float:
        return len(self.exams) / self.wall_s if self.wall_s else 0.0

    @property
    def backend_busy(self) -> float:
        """The share of the run's time the backend was computing."""
        return self.compute_s / self.wall_s if self.wall_s else 0.0

    def timing(self) -> dict[str, Any]:
        """Where the time went: the run's ECG/s, the backend's busy share, the input side's rate and workers."""
        return {"wall_s": round(self.wall_s, 3), "ecg_per_s": round(self.throughput, 2),
                "backend_busy": round(self.backend_busy, 3), "input_workers": self.input.workers,
                "input_exams_per_s": round(self.input.exams_per_s, 2)}


def check_output_path(path: Path, inputs: Sequence[str | Path] = ()) -> None:
    check_target(path, SUFFIXES)
    check_not_an_input(path, inputs)


def check_not_an_input(output: Path, inputs: Sequence[str | Path]) -> None:
    """An output never replaces an input, whichever path names it."""
    for source in map(Path, inputs):
        if source.resolve() == output.resolve() or (source.exists() and output.exists()
                                                    and os.path.samefile(source, output)):
            raise InputError(output, "is one of the inputs: write the output elsewhere")


def write_results(run: InferenceRun, path: Path) -> None:
    """CSV: the schema's columns (`ResultSchema`), a row per exam. JSON: the run's facts and a list
    `exams`, each with the same columns and the details (findings named in full, quality flags with
    their values, measurement leads, device statements, provenance)."""
    schema, findings = run.schema, run.findings()
    exams = zip(run.exams, run.probabilities, findings, strict=True)
    if path.suffix.lower() == ".csv":
        def write_csv(f: Any) -> None:
            writer = csv.writer(f)
            writer.writerow(schema.columns)
            writer.writerows(schema.cells(schema.row(exam, probs, found)) for exam, probs, found in exams)

        atomic_write(path, write_csv)
        return
    document = results_document(run, timing=True)
    atomic_write(path, lambda f: json.dump(document, f, indent=1))


# The one key of a results JSON that differs between two runs of the same inputs; `merge` drops it.
TIMING = "timing"


def results_document(run: InferenceRun, timing: bool = False) -> dict[str, Any]:
    """A run as JSON: what `write_results` writes to .json (with `timing`) and `ecg-edge serve` answers."""
    schema, findings = run.schema, run.findings()
    facts = {"model_sha256": run.model_sha256, "backend": run.backend, "precision": run.precision}
    return {
        "disclaimer": DISCLAIMER,
        **facts,
        **({TIMING: run.timing()} if timing else {}),
        "classes": [describe_finding(c) for c in run.classes],
        "thresholds": run.thresholds,
        "measurements": measurement_method(),
        "skipped": run.skipped,
        "exams": [schema.json_exam(exam, probs, found, facts)
                  for exam, probs, found in zip(run.exams, run.probabilities, findings, strict=True)],
    }


@dataclass
class ResultsFile:
    """A results file read back: its schema, its exams (CSV: text by column; JSON: the exam objects)
    and, for JSON, the run's facts."""

    path: Path
    schema: ResultSchema
    exams: list[dict[str, Any]]
    facts: dict[str, Any] = field(default_factory=dict)


def read_results(path: Path) -> ResultsFile:
    """A CSV or JSON file that `infer` (or `merge`) wrote, of this version or an earlier one."""
    if path.suffix.lower() == ".csv":
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            schema = ResultSchema.of_csv_header(header, path)
            return ResultsFile(path, schema, [dict(zip(header or [], row, strict=False)) for row in reader])
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, f"not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("exams"), list):
        raise InputError(path, "not an ecg-edge results JSON (no 'exams' list)")
    classes = tuple(c.get("abbreviation", "") if isinstance(c, dict) else str(c) for c in doc.get("classes", []))
    return ResultsFile(path, ResultSchema(classes), doc["exams"],
                       {k: v for k, v in doc.items() if k not in ("exams", TIMING)})


class _Claims:
    """Which input each exam (source and id) came from. Exams of files that name no source (written
    before they did) match any exam of the same id."""

    def __init__(self) -> None:
        self.sources: dict[str, dict[str, Path]] = {}  # exam id -> {source: the input holding it}

    def claim(self, exam_id: str, source: str, path: Path) -> None:
        for other_source, other in self.sources.get(exam_id, {}).items():
            # repeats inside one file came from one run's inputs
            if other != path and (other_source == source or not other_source or not source):
                where = f" of {source}" if source else ""
                raise InputError(path, f"exam {exam_id}{where} is also in {other}: overlapping shards"
                                       + ("" if source else " (or inputs whose exam ids repeat across files)"))
        self.sources.setdefault(exam_id, {}).setdefault(source, path)


def merge_results(inputs: Sequence[Path], out: Path) -> int:
    """Join the CSV or JSON outputs of `infer --shard` runs into one file (atomically); an exam in
    two inputs, or inputs of different models or classes, are refused. Returns the exams written."""
    check_target(out, SUFFIXES)
    suffix = out.suffix.lower()
    for path in inputs:
        if path.suffix.lower() != suffix:
            raise InputError(path, f"cannot merge into {suffix}: every input must be {suffix} too")
        if not path.is_file():
            raise InputError(path, "no such file")
    if not inputs:
        raise InputError(None, "nothing to merge")
    claims = _Claims()
    files: list[ResultsFile] = []
    for path in inputs:
        part = read_results(path)
        first = files[0] if files else part
        if suffix == ".csv" and part.schema != first.schema:
            raise InputError(path, "columns differ from the first input's (another model or classes)")
        for key in ("classes", "model_sha256", "thresholds") if suffix == ".json" else ():
            if part.facts.get(key) != first.facts.get(key):
                raise InputError(path, f"'{key}' differs from the first input's: not shards of one run")
        for exam in part.exams:
            claims.claim(str(exam.get(ID)), str(exam.get(SOURCE) or ""), path)
        files.append(part)
    exams = [exam for part in files for exam in part.exams]
    if suffix == ".csv":
        schema = files[0].schema

        def write_csv(f: Any) -> None:
            writer = csv.writer(f)
            writer.writerow(schema.columns)
            writer.writerows(schema.cells(row) for row in exams)

        atomic_write(out, write_csv)
        return len(exams)
    merged = {**files[0].facts, "exams": exams, "skipped": [s for part in files for s in part.facts.get("skipped", [])],
              "merged_from": [str(part.path) for part in files]}
    atomic_write(out, lambda f: json.dump(merged, f, indent=1))
    return len(exams)


def results_table(run: InferenceRun) -> Any:
    """The first exams of a run, for a terminal."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    # Fits 80 columns with six classes: ids, findings and flags fold rather than push numbers out.
    table = Table(title=f"{len(run.exams)} exams", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("exam_id", overflow="fold", min_width=12)
    for c in run.classes:
        table.add_column(c, justify="right", no_wrap=True, min_width=len(c))
    table.add_column("findings", overflow="fold")
    table.add_column("quality", overflow="fold", min_width=7)
    rows = zip(run.exams, run.probabilities, run.findings(), strict=True)
    for exam, probs, found in list(rows)[:MAX_TABLE_ROWS]:
        # an id is the file's text: shown as one plain line, never as markup or terminal codes
        table.add_row(Text(one_line(exam.id, MAX_ID_SHOWN)), *(f"{p:.3f}" for p in probs), ", ".join(found) or "-",
                      ", ".join(q["flag"] for q in exam.quality) or "-")
    if len(run.exams) > MAX_TABLE_ROWS:
        table.caption = f"first {MAX_TABLE_ROWS} of {len(run.exams)} exams: --output FILE.csv/.json writes them all"
    return table


def run_summary(run: InferenceRun) -> str:
    """One line: exams, time, throughput, how busy the backend was, what the input side delivers and
    with how many workers, exams skipped."""
    feed = (f"{run.input.workers} input worker{'s' if run.input.workers != 1 else ''}" if run.input.workers
            else "input read in this process")
    return (f"{len(run.exams)} exams in {run.wall_s:.2f} s: {run.throughput:.1f} ECG/s "
            f"(backend busy {run.backend_busy:.0%} of the time; input side {run.input.exams_per_s:.1f} exams/s "
            f"with {feed}), {len(run.skipped)} skipped")

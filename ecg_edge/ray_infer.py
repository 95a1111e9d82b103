"""`infer --ray`: the same inference as `infer`, spread over a Ray cluster with Ray Data.

Inputs become read units (an HDF5 file in ranges of exams, every other recording alone); Ray tasks
read and preprocess them (the one preprocessing path, quality flags included); an actor pool runs
the model, one backend opened per actor (a GPU per actor for GPU backends, CPU threads otherwise);
the driver streams the results back in input order. An exam that cannot be read comes back as a
skip with its reason, as with `--keep-going`. Ray is imported here only: `pip install "ecg-edge[ray]"`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, cast  # cast: Ray's stubs type a batch function with one argument

import numpy as np

from ecg_edge.errors import InputError
from ecg_edge.exams import Exam, ReadOptions, iter_exams
from ecg_edge.measure import NOT_MEASURED, Measurements
from ecg_edge.readers import expand_inputs, hdf5_exam_count, is_hdf5
from ecg_edge.results import ID, SOURCE, InferenceRun, ResultSchema, findings_of
from ecg_edge.spec import LEADS, N_SAMPLES, SAMPLING_RATE_HZ

# Exams per read task: bounds a worker's memory (256 x 4096 x 12 float32 = 50 MB) whatever the input.
UNIT_EXAMS = 256
READ_TASK_CPUS = 0.5


def read_units(paths: Sequence[Path], on_skip: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """The parallel reading plan: HDF5 files in [start, stop) ranges, other recordings one each. An
    HDF5 file whose layout is bad raises, or with `on_skip` is reported there and left out."""
    units = []
    for path in paths:
        if is_hdf5(path):
            try:
                n = hdf5_exam_count(path)
            except InputError as exc:
                if on_skip is None:
                    raise
                on_skip(str(exc))
                continue
            units += [{"path": str(path), "start": s, "stop": min(s + UNIT_EXAMS, n)} for s in range(0, n, UNIT_EXAMS)]
        else:
            units.append({"path": str(path), "start": -1, "stop": -1})
    return units


def _read(batch: dict[str, np.ndarray], options: dict[str, Any]) -> dict[str, np.ndarray]:
    """A Ray task: read and preprocess one unit; an unreadable unit gives one row carrying the reason."""
    read_options = ReadOptions(**options)
    xs, ids, metas, errors = [], [], [], []
    for path, start, stop in zip(batch["path"], batch["start"], batch["stop"], strict=True):
        skipped: list[str] = []
        rows = (int(start), int(stop)) if start >= 0 else None
        try:
            for exam, x in iter_exams([Path(str(path))], replace(read_options, keep_going=True), skipped.append,
                                      rows=rows):
                xs.append(x.astype(np.float32))
                ids.append(exam.id)
                metas.append(json.dumps({"source": exam.source, "statements": list(exam.statements),
                                         "quality": exam.quality, "provenance": exam.provenance, "fs": exam.fs,
                                         "measurements": asdict(exam.measurements)}))
                errors.append("")
        except Exception as exc:  # anything a reader raises: reported, never dropped
            skipped.append(f"{path}: {exc}")
        for message in skipped:
            xs.append(np.zeros((N_SAMPLES, len(LEADS)), np.float32))
            ids.append("")
            metas.append("{}")
            errors.append(message)
    return {"x": np.stack(xs) if xs else np.zeros((0, N_SAMPLES, len(LEADS)), np.float32),
            "exam_id": np.array(ids, dtype=object), "meta": np.array(metas, dtype=object),
            "error": np.array(errors, dtype=object)}


class _Predictor:
    """A Ray actor: one backend opened once, then batches of exams through it."""

    def __init__(self, export_dir: str, backend: str, precision: str, threads: int | None) -> None:
        from ecg_edge.backends import open_backend
        from ecg_edge.infer import model_sha256

        self.runner, self.manifest = open_backend(Path(export_dir), backend, precision, threads=threads)
        self.runner.activate()
        self.sha256 = model_sha256(self.runner, self.manifest)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = batch["error"] == ""
        n_out = len(self.manifest["output"]["classes"])
        probabilities = np.full((len(ok), n_out), np.nan, np.float32)
        if ok.any():
            probabilities[ok] = self.runner.infer(np.asarray(batch["x"][ok], dtype=np.float32))
        return {"exam_id": batch["exam_id"], "meta": batch["meta"], "error": batch["error"],
                "probabilities": probabilities, "backend": np.array([self.runner.describe()] * len(ok), dtype=object),
                "model_sha256": np.array([self.sha256] * len(ok), dtype=object)}


def _flatten(batch: dict[str, np.ndarray], classes: list[str], thresholds: dict[str, float]) -> dict[str, Any]:
    """Predictions as table columns (`ResultSchema`), and the reason where an exam could not be read."""
    probabilities = np.asarray(batch["probabilities"], dtype=np.float32)
    exams = [_exam(str(i), json.loads(m)) for i, m in zip(batch["exam_id"], batch["meta"], strict=True)]
    columns = ResultSchema(tuple(classes)).arrays(exams, probabilities, findings_of(classes, thresholds, probabilities))
    return {**columns, "error": batch["error"]}


def _exam(exam_id: str, facts: dict[str, Any]) -> Exam:
    """An exam as a worker sent it (JSON: the leads of its measurements come back as a list)."""
    measured = facts.get("measurements")
    exam = Exam(exam_id, facts.get("source", ""), tuple(facts.get("statements", ())),
                facts.get("quality", []), facts.get("provenance", {}), fs=facts.get("fs", SAMPLING_RATE_HZ))
    exam.measurements = Measurements(**{**measured, "leads": tuple(measured["leads"])}) if measured else NOT_MEASURED
    return exam


def run_inference_ray(
    inputs: Sequence[str | Path], export_dir: Path, backend: str, precision: str, manifest: dict[str, Any],
    batch: int = 64, options: ReadOptions | None = None, thresholds: dict[str, float] | None = None,
    address: str | None = None, actors: int | None = None, threads: int | None = None,
    log: Callable[[str], None] = lambda message: None, parquet: Path | None = None,
) -> InferenceRun:
    """`run_inference` on a Ray cluster (a local one without `address`); the same results, in order.
    With `parquet` (a new folder), the workers write the results there, one Parquet file per block,
    and the driver reads back ids and probabilities only."""
    try:
        import ray
    except ImportError:
        raise InputError(None, "--ray needs Ray Data: pip install 'ecg-edge[ray]'") from None
    from ecg_edge.backends import GPU_ORDER

    options = options or ReadOptions()
    paths = expand_inputs(inputs)
    layout_skips: list[str] = []
    units = read_units(paths, layout_skips.append if options.keep_going else None)
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    gpu = backend in GPU_ORDER
    cpus = int(ray.cluster_resources().get("CPU", 1))
    pool = actors or (int(ray.cluster_resources().get("GPU", 0)) if gpu else max(1, cpus // max(threads or 2, 2)))
    log(f"ray: {len(units)} read units, {max(pool, 1)} inference actors, cluster {ray.cluster_resources()}")
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # results in input order, as `infer` writes them
    read_opts = {k: v for k, v in asdict(options).items() if k != "keep_traces"}
    dataset = (
        ray.data.from_items(units, override_num_blocks=max(1, len(units)))
        # Half a CPU per read task: reading waits on storage as much as it computes, and a request unlike
        # the actors' keeps Ray from fusing reading into them, so reading overlaps inference
        .map_batches(cast(Any, _read), batch_size=1, fn_kwargs={"options": read_opts}, num_cpus=READ_TASK_CPUS)
        .map_batches(_Predictor, batch_size=batch, compute=ray.data.ActorPoolStrategy(size=max(pool, 1)),
                     fn_constructor_kwargs={"export_dir": str(export_dir), "backend": backend,
                                            "precision": precision, "threads": threads},
                     # at most one logical CPU per actor whatever its threads, and room left for a read
                     # task: reserving every CPU would leave reading none, and Ray would wait for ever
                     num_gpus=1 if gpu else 0, num_cpus=0 if gpu else min(1.0, (cpus - READ_TASK_CPUS) / max(pool, 1)))
    )
    classes = list(manifest["output"]["classes"])
    run = InferenceRun(classes=classes, thresholds={**manifest["thresholds"], **(thresholds or {})},
                       backend=f"ray: {backend}", precision=precision)
    run.skipped += layout_skips
    start = time.perf_counter()
    if parquet is not None:
        _collect_parquet(dataset, parquet, run, classes)
    else:
        _collect(dataset, run, classes)
    run.wall_s = time.perf_counter() - start
    if run.skipped and not options.keep_going:
        raise InputError(None, f"{len(run.skipped)} exams could not be read (first: {run.skipped[0]}); "
                               "--keep-going reports and skips them")
    return run


def _collect(dataset: Any, run: InferenceRun, classes: list[str]) -> None:
    """Stream every result to the driver, in input order."""
    outputs = []
    for block in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        ok = block["error"] == ""
        for exam_id, meta, error in zip(block["exam_id"], block["meta"], block["error"], strict=True):
            if error:
                run.skipped.append(str(error))
                continue
            run.exams.append(_exam(str(exam_id), json.loads(meta)))
        outputs.append(np.asarray(block["probabilities"])[ok])
        if ok.any():
            run.backend = f"ray: {block['backend'][ok][0]}"
            run.model_sha256 = str(block["model_sha256"][ok][0])
    run.probabilities = np.concatenate(outputs) if outputs else np.zeros((0, len(classes)), np.float32)


def _collect_parquet(dataset: Any, parquet: Path, run: InferenceRun, classes: list[str]) -> None:
    """The workers write the results; the driver reads back ids, sources and probabilities only."""
    import pyarrow.dataset

    dataset.map_batches(cast(Any, _flatten), batch_size=None,
                        fn_kwargs={"classes": classes, "thresholds": run.thresholds}).write_parquet(str(parquet))
    table = pyarrow.dataset.dataset(str(parquet), format="parquet").to_table(columns=[ID, SOURCE, "error", *classes])
    errors = table.column("error").to_pylist()
    ok = np.array([not e for e in errors], dtype=bool)
    run.skipped += [e for e in errors if e]
    run.exams = [Exam(str(i), str(src)) for i, src, good in zip(
        table.column(ID).to_pylist(), table.column(SOURCE).to_pylist(), ok, strict=True) if good]
    run.probabilities = np.stack([table.column(c).to_numpy() for c in classes], axis=1)[ok].astype(np.float32)

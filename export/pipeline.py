"""The export pipeline: Keras -> ONNX FP32 -> FP16 and INT8 (-> TensorRT), each step validated.

Nothing is done until validated (as optimum's exporters): every file is compared with its
reference on held-out ECGs, and a file that fails its gate is not written. All work happens in a
staging folder; files move into place only after their gates, and the manifest comes last.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ecg_edge.backends.base import infer_all
from ecg_edge.backends.onnxruntime import OnnxRuntimeBackend
from ecg_edge.errors import GateError, InputError, MachineError
from ecg_edge.export.precision import (
    Int8Recipe,
    preprocess_for_quantization,
    quantize_int8,
    recipe_grid,
    to_fp16,
)
from ecg_edge.export.tensorrt_check import check_tensorrt_onnx
from ecg_edge.manifest import FORMAT_VERSION, MANIFEST_NAME, sha256_file, write_json_atomic
from ecg_edge.model_info import LoadedModel
from ecg_edge.parity import Parity, compare
from ecg_edge.spec import (
    AMPLITUDE_NOTE,
    BATCH_PROFILE,
    INPUT_NAME,
    LEADS,
    N_SAMPLES,
    OUTPUT_NAMES,
    PRECISIONS,
    SAMPLING_RATE_HZ,
    UNITS,
)

ONNX_NAMES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
SYMMETRIC_INT8_NAME = "model.int8.sym.onnx"


class ExportGateError(GateError):
    """A file failed its parity gate (it was not written); carries the numbers."""


# Per-exam agreement with FP32 each precision must reach on the gate ECGs, and the largest
# probability change allowed (INT8's catches a broken file whose findings happen to hold).
MIN_EXAM_AGREEMENT: dict[str, float] = {"fp16": 0.995, "bf16": 0.995, "int8": 0.97}
# Below this many real exams the INT8 gate's figure rests mostly on synthetic ECGs: a warning.
MIN_REAL_GATE_EXAMS = 20


# Precisions export makes unless told otherwise: each is a file, and a file that fails its gate fails
# the export.
DEFAULT_PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
# Runtime precisions export adds where this machine offers them: one that fails its gate is refused
# (recorded with its numbers, a warning) and fails nothing, since nobody asked for it.
IF_OFFERED: tuple[str, ...] = ("bf16",)


@dataclass
class ExportOptions:
    precisions: Sequence[str] = DEFAULT_PRECISIONS  # named: a failed gate fails the export
    if_offered: Sequence[str] = IF_OFFERED  # added where the machine offers them: a failed gate is a warning
    engine: bool = False
    for_tensorrt: bool = False  # also write and gate the symmetric INT8 file TensorRT builds from
    max_batch: int = BATCH_PROFILE["max"]
    opt_batch: int = BATCH_PROFILE["opt"]
    dla_core: int | None = None
    fp32_atol: float = 1e-4  # FP32 ONNX vs Keras
    fp16_atol: float = 2e-2  # FP16 vs FP32 ONNX
    bf16_atol: float = 5e-2  # BF16 (8-bit mantissa) vs FP32 ONNX
    int8_atol: float = 0.5
    min_exam_agreement: dict[str, float] = field(default_factory=lambda: dict(MIN_EXAM_AGREEMENT))
    n_calibration: int = 128
    n_synthetic_validation: int = 48  # synthetic ECGs added to each of the choice and gate sets
    validation_limit: int = 1000  # real ECGs read from --validation at most
    int8_search: str = "quick"
    int8_methods: Sequence[str] | None = None  # None: the search's own
    int8_recipes: Sequence[Int8Recipe] | None = None  # an explicit list overrides the search

    def wanted(self) -> list[str]:
        """What this export makes and gates: the named precisions, then those added where offered."""
        return [*self.precisions, *(p for p in self.if_offered if p not in self.precisions)]

    def recipes(self) -> list[Int8Recipe]:
        return list(self.int8_recipes) if self.int8_recipes else recipe_grid(self.int8_search, self.int8_methods)


@dataclass
class ExportResult:
    out_dir: Path
    manifest: dict[str, Any]
    rejected: dict[str, Parity] = field(default_factory=dict)  # named, failed: the export failed
    refused: dict[str, Parity] = field(default_factory=dict)  # added where offered, failed: a warning


def tool_versions() -> dict[str, str]:
    from ecg_edge.host import package_versions

    return {"python": platform.python_version()} | package_versions((
        "ecg-edge", "tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "onnxruntime-gpu",
        "onnxconverter-common", "tensorrt"))


def read_exams(
    paths: Sequence[str | Path], limit: int | None = None, scale: float = 1.0
) -> tuple[np.ndarray, list[str], list[str]]:
    """Model inputs, exam ids and sources from any readable recordings, read as `infer` reads them:
    in batches, stopping at `limit` (memory stays bounded whatever the files hold)."""
    from ecg_edge.infer import ReadOptions, iter_batches
    from ecg_edge.readers import expand_inputs

    xs: list[np.ndarray] = []
    ids: list[str] = []
    sources: list[str] = []
    for batch in iter_batches(expand_inputs(paths), 64, ReadOptions(scale=scale, assess=False, measure="off"),
                              lambda message: None):
        xs.append(batch.x)
        ids += batch.ids
        sources += batch.sources
        if limit is not None and len(ids) >= limit:
            break
    if not xs:
        raise InputError(paths[0] if paths else None, "no ECGs found")
    return np.concatenate(xs)[:limit], ids[:limit], sources[:limit]


def load_ecgs(
    paths: Sequence[str | Path], limit: int | None = None, scale: float = 1.0
) -> tuple[np.ndarray, list[str]]:
    """Model inputs and exam ids (see `read_exams`)."""
    x, ids, _ = read_exams(paths, limit, scale)
    return x, ids


def _synthetic(n: int, seed: int) -> np.ndarray:
    from ecg_edge.synthetic import synthesize

    if n <= 0:
        return np.zeros((0, N_SAMPLES, len(LEADS)), np.float32)
    return synthesize(n, seed=seed)[0]


@dataclass
class HeldOut:
    """Three disjoint sets: calibration (INT8 scales), choice (which INT8 recipe) and gate (every
    file's pass or fail). Real ECGs come first in each set; synthetic ones fill up."""

    calibration: np.ndarray
    choice: np.ndarray
    gate: np.ndarray
    n_real: dict[str, int]
    summary: dict[str, Any]


def exam_key(source: str, exam_id: str) -> str:
    """An exam's name for splitting: file name and exam id, not the folder, so that the split is the
    same wherever the recordings are and however their path was typed."""
    return f"{Path(source).name}#{exam_id}"


def _rank(keys: Sequence[str]) -> list[int]:
    """Indices ordered by a hash of each exam's key: the split depends on the exams, not on the
    order the files were given in, and is the same on every machine."""
    return sorted(range(len(keys)), key=lambda i: hashlib.sha256(keys[i].encode()).hexdigest())


def held_out_sets(
    calibration: Sequence[str | Path], validation: Sequence[str | Path], options: ExportOptions,
) -> HeldOut:
    """Split the real recordings into calibration, choice and gate parts (disjoint), fill each
    with synthetic ECGs (seeds training never uses), and say where each part came from."""
    real_x = np.zeros((0, N_SAMPLES, len(LEADS)), np.float32)
    keys: list[str] = []
    if validation:
        real_x, ids, sources = read_exams(validation, limit=options.validation_limit)
        keys = [exam_key(src, i) for src, i in zip(sources, ids, strict=True)]
    cal_parts: list[np.ndarray] = []
    overlap = 0
    if calibration:
        cal_x, cal_ids, cal_sources = read_exams(calibration, limit=options.n_calibration)
        cal_parts.append(cal_x)
        cal_keys = {exam_key(src, i) for src, i in zip(cal_sources, cal_ids, strict=True)}
        keep = [i for i, k in enumerate(keys) if k not in cal_keys]  # calibrated on: never gated on
        overlap = len(keys) - len(keep)
        real_x, keys = real_x[keep], [keys[i] for i in keep]
    order = _rank(keys)
    if not calibration and order:
        # a third of the real ECGs calibrate (up to the calibration size); the rest choose and gate
        n_cal = min(options.n_calibration, len(order) // 3)
        cal_parts.append(real_x[sorted(order[:n_cal])])
        order = order[n_cal:]
    choice_idx, gate_idx = sorted(order[0::2]), sorted(order[1::2])
    n_cal_real = sum(len(p) for p in cal_parts)
    n_cal_synth = max(0, options.n_calibration - n_cal_real)
    n_synth = options.n_synthetic_validation
    sets = HeldOut(
        calibration=np.concatenate(cal_parts + [_synthetic(n_cal_synth, seed=90_002)]),
        choice=np.concatenate([real_x[choice_idx], _synthetic(n_synth, seed=90_003)]),
        gate=np.concatenate([real_x[gate_idx], _synthetic(n_synth, seed=90_001)]),
        n_real={"calibration": n_cal_real, "choice": len(choice_idx), "gate": len(gate_idx)},
        summary={},
    )
    cal = sets.calibration
    sets.summary = {
        "calibration": {"source": [str(p) for p in calibration or validation], "real": n_cal_real,
                        "synthetic": n_cal_synth, "synthetic_seed": 90_002, "n": len(cal),
                        "mean_mv": float(cal.mean()), "std_mv": float(cal.std()),
                        "p99_abs_mv": float(np.percentile(np.abs(cal), 99))},
        "validation": {"source": [str(p) for p in validation], "limit": options.validation_limit,
                       "read": len(keys) + overlap, "dropped_as_calibration": overlap,
                       "choice": {"real": len(choice_idx), "synthetic": n_synth, "synthetic_seed": 90_003},
                       "gate": {"real": len(gate_idx), "synthetic": n_synth, "synthetic_seed": 90_001},
                       "split": "by sha256 of file name#exam id; calibration, choice and gate are disjoint"},
        "validation_source": "real and synthetic" if gate_idx else "synthetic",
    }
    return sets


def _onnx_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    with OnnxRuntimeBackend(path) as backend:
        return infer_all(backend, x, batch=32)


def _file_entry(path: Path, fmt: str, precision: str, variant: str = "default", **extra: Any) -> dict[str, Any]:
    return {"format": fmt, "precision": precision, "variant": variant, "sha256": sha256_file(path),
            "bytes": path.stat().st_size, **extra}


@dataclass
class _Gate:
    """The gate set's FP32 outputs and what each candidate file is compared against."""

    sets: HeldOut
    fp32: np.ndarray
    thresholds: np.ndarray
    classes: list[str]

    def check(self, outputs: np.ndarray, precision: str, options: ExportOptions,
              max_abs: float | None) -> tuple[Parity, Parity | None]:
        """The gate on all gate ECGs, and the figure on its real ones alone (what to expect on real data)."""
        parity = compare(self.fp32, outputs, self.thresholds, "onnx fp32", max_abs=max_abs,
                         min_exam_agreement=options.min_exam_agreement.get(precision), classes=self.classes)
        n = self.sets.n_real["gate"]
        real = compare(self.fp32[:n], outputs[:n], self.thresholds, "onnx fp32", classes=self.classes) if n else None
        return parity, real


def _parity_fields(parity: Parity, real: Parity | None) -> dict[str, Any]:
    return {"parity": parity.as_dict()} | ({"parity_real": real.as_dict()} if real is not None else {})


def _stale_staging(out_dir: Path) -> None:
    """Remove staging folders that a killed export left behind; a live export's folder (its owner
    process still running on this host) stays."""
    host = socket.gethostname()
    for folder in out_dir.glob(".export-*"):
        owner_file = folder / "owner.json"
        try:
            owner = json.loads(owner_file.read_text())
        except (OSError, ValueError):
            owner = None
        if owner is None:
            stale = time.time() - folder.stat().st_mtime > 24 * 3600  # no owner yet: give it a day
        elif owner.get("host") != host:
            stale = False  # another machine's export on a shared disk: not ours to judge
        else:
            stale = not _alive(int(owner.get("pid", -1)))
        if stale:
            shutil.rmtree(folder, ignore_errors=True)


def _new_staging(out_dir: Path) -> Path:
    """A staging folder in `out_dir` marked with its owner (host and pid), after removing the ones
    killed exports left behind."""
    _stale_staging(out_dir)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir))
    (staging / "owner.json").write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
    return staging


def _raise_if_rejected(rejected: dict[str, Parity], what: str) -> None:
    if rejected:
        numbers = "; ".join(f"{k}: {v.summary()}" for k, v in rejected.items())
        raise ExportGateError(f"{what} failed their gates and were not written: {numbers}")


def _check_dla(options: ExportOptions) -> None:
    if options.dla_core is not None and options.engine and "fp32" in options.precisions:
        raise InputError(None, "--dla-core: the DLA runs FP16 and INT8 only; pass --precision fp16,int8")


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def trtexec_commands(name: str, precision: str) -> dict[str, str]:
    """How to build the engine of a gated ONNX file on the device that will run it (engines are tied
    to the GPU and TensorRT version that built them). Strongly typed on both majors, as `--engine`
    builds them: the file's own types decide the precision (TensorRT 11 is strongly typed only, and
    its `--stronglyTyped` is a no-op); FP32 with TF32 off. One timing cache per TensorRT major."""
    shape = lambda b: f"{INPUT_NAME}:{b}x{N_SAMPLES}x{len(LEADS)}"  # noqa: E731
    shapes = (f"--minShapes={shape(BATCH_PROFILE['min'])} --optShapes={shape(BATCH_PROFILE['opt'])} "
              f"--maxShapes={shape(BATCH_PROFILE['max'])}")
    plan = f"model.{precision}.plan"
    tf32 = " --noTF32" if precision == "fp32" else ""
    base = f"trtexec --onnx={name} {shapes} --saveEngine={plan}"
    return {"tensorrt10": f"{base} --timingCacheFile=timing-trt10.cache --stronglyTyped{tf32}",
            "tensorrt11": f"{base} --timingCacheFile=timing-trt11.cache{tf32}"}


def export_model(
    source: LoadedModel,
    out_dir: str | Path,
    options: ExportOptions | None = None,
    calibration: Sequence[str | Path] = (),
    validation: Sequence[str | Path] = (),
    log: Callable[[str], None] = lambda message: None,
    warn: Callable[[str], None] | None = None,
) -> ExportResult:
    """Export a Keras model (`ecg_edge.training.models.load_keras_model` loads one) into `out_dir`;
    raises ExportGateError (after writing what passed) if a file failed its gate. `warn` (default:
    `log`) gets what a user must not miss."""
    from ecg_edge.export.onnx_export import OPSET, keras_to_onnx

    warn = warn or log
    options = options or ExportOptions()
    unknown = set(options.wanted()) - set(PRECISIONS)
    if unknown or not options.precisions:
        raise InputError(None, f"unknown precision {sorted(unknown)}: choose from {', '.join(PRECISIONS)}")
    _check_dla(options)
    if "bf16" in options.precisions:  # named: a machine that cannot run it says so before any work
        from ecg_edge.backends.openvino import bf16_status

        usable, why = bf16_status()
        if not usable:
            raise MachineError("bf16", why)
    if options.engine:  # before any work: a machine without TensorRT and a GPU says so (exit 3)
        from ecg_edge.gpu import require_tensorrt

        require_tensorrt("--engine")
    model_path, model, info = Path(source.path).resolve(), source.model, source.info
    out_dir = Path(out_dir)
    task = info["task"]
    classes = list(info["classes"])
    thresholds = np.array([info["thresholds"][c] for c in classes], dtype=np.float32)
    sets = held_out_sets(calibration, validation, options)
    n_real_gate = sets.n_real["gate"]
    if n_real_gate == 0:
        warn("warning: the gates run on synthetic ECGs only (no --validation recordings): pass real "
             "recordings to learn what INT8 does to real findings")
    elif n_real_gate < MIN_REAL_GATE_EXAMS and "int8" in options.precisions:
        warn(f"warning: only {n_real_gate} real exams reach the INT8 gate (calibration and recipe choice take "
             f"the others); under {MIN_REAL_GATE_EXAMS} its figure rests mostly on synthetic ECGs")

    out_dir.mkdir(parents=True, exist_ok=True)
    staging = _new_staging(out_dir)
    machine_failure: MachineError | None = None  # a named precision this machine could not run
    files: dict[str, dict[str, Any]] = {}
    rejected: dict[str, Parity] = {}
    try:
        log("Keras -> ONNX FP32")
        reference = model.predict(sets.gate, batch_size=32, verbose=0)
        fp32_path, rewrites = keras_to_onnx(model, staging / ONNX_NAMES["fp32"], task)
        gate = _Gate(sets, _onnx_outputs(fp32_path, sets.gate), thresholds, classes)
        parity = compare(reference, gate.fp32, thresholds, "keras", max_abs=options.fp32_atol, classes=classes)
        log(f"  fp32 vs keras: {parity.summary()}")
        if not parity.passed:
            raise ExportGateError(f"FP32 ONNX failed its gate against Keras: {parity.summary()} "
                                  f"(tolerance {options.fp32_atol:g}); nothing was written")
        files[fp32_path.name] = _file_entry(fp32_path, "onnx", "fp32", parity=parity.as_dict(),
                                            **_tensorrt_fields(fp32_path.name, "fp32", options))

        if "fp16" in options.precisions:
            log("FP16")
            fp16_path = to_fp16(fp32_path, staging / ONNX_NAMES["fp16"])
            parity, real = gate.check(_onnx_outputs(fp16_path, sets.gate), "fp16", options, options.fp16_atol)
            log(f"  fp16 vs fp32: {parity.summary()}")
            if parity.passed:
                files[fp16_path.name] = _file_entry(fp16_path, "onnx", "fp16", **_parity_fields(parity, real),
                                                    **_tensorrt_fields(fp16_path.name, "fp16", options))
            else:
                rejected["fp16"] = parity

        recipe = None
        int8_summary: dict[str, Any] = {}
        if "int8" in options.precisions or options.engine or options.for_tensorrt:
            prepared = preprocess_for_quantization(fp32_path, staging / "prepared.onnx")
            recipe, int8_path, candidates = _choose_int8(prepared, staging, sets, fp32_path, gate, options, log)
            parity, real = gate.check(_onnx_outputs(int8_path, sets.gate), "int8", options, options.int8_atol)
            log(f"  int8 [{recipe.label}] on the gate set: {parity.summary()}")
            int8_summary = {"recipe": recipe.label, "candidates": candidates}
            if real is not None:
                low, high = real.exam_agreement_ci95
                int8_summary["expected_agreement"] = {"exams": real.n_exams, "agreement": real.exam_agreement,
                                                      "ci95": [low, high]}
                log(f"  INT8 on {real.n_exams} real exams it was neither calibrated nor chosen on: "
                    f"{real.exam_agreement:.1%} of exams keep their findings (95% CI {low:.1%}-{high:.1%})")
            if "int8" in options.precisions:
                if parity.passed:
                    files[int8_path.name] = _file_entry(int8_path, "onnx", "int8", **_parity_fields(parity, real),
                                                        recipe=recipe.label, candidates=candidates)
                else:
                    rejected["int8"] = parity
            if options.engine or options.for_tensorrt:
                _symmetric_int8(staging, recipe, sets, gate, options, files, rejected, log)

        runtime_precisions = {}
        refused: dict[str, Parity] = {}
        if "bf16" in options.wanted():
            named = "bf16" in options.precisions
            runtime_precisions["bf16"] = _gate_bf16(fp32_path, gate, options, rejected if named else refused, log)
            runtime_precisions["bf16"]["named"] = named
            bf16 = runtime_precisions["bf16"]
            if "refused" in bf16 and not named:
                warn(f"warning: BF16 refused (export added it because this CPU offers it; nothing else changes): "
                     f"{bf16['refused']}")
            elif bf16.get("machine"):
                machine_failure = MachineError("bf16", bf16["refused"])

        if options.engine:
            _build_engines(staging, staging, files, gate, options, rejected, log)

        manifest = {
            "format": FORMAT_VERSION,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "model": {"kind": info["kind"], "task": task, "classes": classes,
                      "source": str(model_path), "source_relative": os.path.relpath(model_path, out_dir.resolve()),
                      "source_sha256": sha256_file(model_path), "parameters": int(model.count_params())},
            "input": {"name": INPUT_NAME, "shape": [None, N_SAMPLES, len(LEADS)], "dtype": "float32",
                      "sampling_rate_hz": SAMPLING_RATE_HZ, "leads": list(LEADS), "units": UNITS,
                      "amplitude_convention": AMPLITUDE_NOTE},
            "output": {"name": OUTPUT_NAMES[task], "classes": classes},
            "thresholds": info["thresholds"],
            "thresholds_source": info.get("thresholds_source", ""),
            "opset": OPSET,
            "graph_rewrites": rewrites,
            "files": files,
            "runtime_precisions": runtime_precisions,
            "rejected": {k: v.as_dict() for k, v in rejected.items()},
            "refused": {k: v.as_dict() for k, v in refused.items()},
            "gates": {"min_exam_agreement": options.min_exam_agreement,
                      "max_abs": {"fp32 (vs keras)": options.fp32_atol, "fp16": options.fp16_atol,
                                  "bf16": options.bf16_atol, "int8": options.int8_atol}},
            "calibration": sets.summary["calibration"] | ({"recipe": recipe.label} if recipe else {}),
            "int8": int8_summary,
            "validation": sets.summary["validation"],
            "validation_source": sets.summary["validation_source"],
            "tools": tool_versions(),
        }
        _publish(staging, out_dir, manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _raise_if_rejected(rejected, "files")
    if machine_failure is not None:
        raise machine_failure
    return ExportResult(out_dir=out_dir, manifest=manifest, rejected=rejected, refused=refused)


def _tensorrt_fields(name: str, precision: str, options: ExportOptions) -> dict[str, Any]:
    if not (options.for_tensorrt or options.engine):
        return {}
    return {"trtexec": trtexec_commands(name, precision)}


def _gate_bf16(
    fp32_path: Path, gate: _Gate, options: ExportOptions, failed: dict[str, Parity], log: Callable[[str], None],
) -> dict[str, Any]:
    """BF16 has no file of its own: OpenVINO runs the FP32 file in bfloat16. Gated here like a file,
    where this CPU can run it; elsewhere the manifest says why it was not. A failure goes into
    `failed` with its numbers and, in the entry, the reason: OpenVINO's version and the first layer
    whose BF16 output departs from its FP32 one."""
    from ecg_edge.backends.openvino import OpenVinoBackend, bf16_divergence, bf16_status, openvino_version

    entry: dict[str, Any] = {"file": fp32_path.name, "runtime": "openvino"}
    usable, why = bf16_status()
    if not usable:
        log(f"BF16: not gated ({why})")
        return entry | {"why": why}
    log("BF16 (OpenVINO)")
    runner = OpenVinoBackend(fp32_path, precision="bf16")
    try:
        with runner:
            out = infer_all(runner, gate.sets.gate, batch=32)
            entry["ran"] = runner.ran
    except MachineError as exc:  # offered by the CPU, yet OpenVINO cannot compile it here
        log(f"  bf16: {exc}")
        return entry | {"refused": f"OpenVINO {openvino_version()} cannot run BF16 here: {exc.message}",
                        "machine": True}
    parity, real = gate.check(out, "bf16", options, options.bf16_atol)
    log(f"  bf16 vs fp32: {parity.summary()}")
    if not parity.passed:
        failed["bf16"] = parity
        layer = bf16_divergence(fp32_path, gate.sets.gate[:4])
        where = (f"first departs at {layer['layer']} ({layer['type']}, relative error {layer['relative_error']:.2f})"
                 if layer else "no single layer departs by more than the threshold")
        entry["refused"] = (f"OpenVINO {openvino_version()} BF16 on {runner.ran.get('isa', 'this CPU')} kernels: "
                            f"{parity.summary()}; {where}")
        entry["divergence"] = layer
    return entry | _parity_fields(parity, real)


def _choose_int8(
    prepared: Path, staging: Path, sets: HeldOut, fp32_path: Path, gate: _Gate, options: ExportOptions,
    log: Callable[[str], None],
) -> tuple[Int8Recipe, Path, list[dict[str, Any]]]:
    """Quantize with each recipe and score it on the choice set (never on the gate set): per-exam
    agreement with FP32 on its real ECGs (where there are at least MIN_REAL_GATE_EXAMS), then on all
    of it, then max |dp|, then measured time per exam."""
    fp32_choice = _onnx_outputs(fp32_path, sets.choice)
    n_real = sets.n_real["choice"]
    best = None
    candidates = []
    for k, recipe in enumerate(options.recipes()):
        path = staging / f"int8-candidate-{k}.onnx"
        quantize_int8(prepared, path, sets.calibration, recipe)
        start = time.perf_counter()
        out = _onnx_outputs(path, sets.choice)
        ms = (time.perf_counter() - start) * 1e3 / len(sets.choice)
        parity = compare(fp32_choice, out, gate.thresholds, "onnx fp32", classes=gate.classes)
        row: dict[str, Any] = {"recipe": recipe.label, "ms_per_exam": round(ms, 3), "choice": parity.as_dict()}
        if n_real:
            row["choice_real"] = compare(fp32_choice[:n_real], out[:n_real], gate.thresholds, "onnx fp32",
                                         classes=gate.classes).as_dict()
        candidates.append(row)
        log(f"  int8 candidate [{recipe.label}]: {parity.summary()}, {ms:.1f} ms/exam")
        # real ECGs first where there are enough to rank by (synthetic ones outnumber them), then all,
        # then the size of the worst change, then speed
        real_agreement = row["choice_real"]["exam_agreement"] if n_real >= MIN_REAL_GATE_EXAMS else 1.0
        key = (real_agreement, parity.exam_agreement, -parity.max_abs_diff, -ms)
        if best is None or key > best[0]:
            best = (key, recipe, path, len(candidates) - 1)
    assert best is not None
    _, recipe, path, chosen = best
    candidates[chosen]["chosen"] = True
    final = staging / ONNX_NAMES["int8"]
    path.replace(final)
    log(f"  chose {recipe.label}")
    return recipe, final, candidates


def _symmetric_int8(
    staging: Path, recipe: Int8Recipe, sets: HeldOut, gate: _Gate, options: ExportOptions,
    files: dict[str, dict[str, Any]], rejected: dict[str, Parity], log: Callable[[str], None],
) -> None:
    """The chosen recipe in TensorRT's form (symmetric int8 activations, float biases), gated
    against FP32 in onnxruntime on the CPU like every other file."""
    symmetric = recipe.for_tensorrt()
    path = quantize_int8(staging / "prepared.onnx", staging / SYMMETRIC_INT8_NAME, sets.calibration, symmetric)
    problems = check_tensorrt_onnx(path)
    parity, real = gate.check(_onnx_outputs(path, sets.gate), "int8", options, options.int8_atol)
    log(f"  int8 symmetric (TensorRT) vs fp32: {parity.summary()}")
    if problems:
        parity.failed.append("TensorRT check: " + "; ".join(problems))
        parity.passed = False
    if parity.passed:
        files[path.name] = _file_entry(path, "onnx", "int8", variant="symmetric", recipe=symmetric.label,
                                       **_parity_fields(parity, real), **_tensorrt_fields(path.name, "int8", options))
    else:
        rejected["int8-symmetric"] = parity


def _build_engines(
    source_dir: Path, plan_dir: Path, files: dict[str, dict[str, Any]], gate: _Gate, options: ExportOptions,
    rejected: dict[str, Parity], log: Callable[[str], None],
) -> None:
    """TensorRT engines from the gated ONNX files in `source_dir` (INT8 from the symmetric one),
    each gated against FP32 like the files; `files` gets an entry per engine that passed."""
    from ecg_edge.backends.tensorrt import TensorRTBackend
    from ecg_edge.export.tensorrt_engine import build_engine

    cache = plan_dir.parent  # beside the export's files, one per GPU and TensorRT version: later builds reuse it
    for precision in options.precisions:
        name = SYMMETRIC_INT8_NAME if precision == "int8" else ONNX_NAMES.get(precision)
        if name is None or name not in files:
            continue
        plan = plan_dir / f"model.{precision}.plan"
        log(f"TensorRT {precision} engine from {name}")
        facts = build_engine(source_dir / name, plan, max_batch=options.max_batch, opt_batch=options.opt_batch,
                             timing_cache=cache, dla_core=options.dla_core, precision=precision)
        with TensorRTBackend(plan, facts) as backend:
            out = infer_all(backend, gate.sets.gate, batch=min(32, options.max_batch))
        max_abs = {"fp32": options.fp32_atol * 10, "fp16": options.fp16_atol, "int8": options.int8_atol}[precision]
        parity, real = gate.check(out, precision, options, max_abs)
        log(f"  engine {precision} vs fp32: {parity.summary()}")
        if parity.passed:
            files[plan.name] = _file_entry(plan, "tensorrt", precision, **_parity_fields(parity, real), **facts)
        else:
            plan.unlink(missing_ok=True)
            rejected[f"tensorrt-{precision}"] = parity


def add_engines(
    export_dir: str | Path, options: ExportOptions | None = None, validation: Sequence[str | Path] = (),
    log: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Build and gate TensorRT engines on this machine from an export's gated ONNX files: the
    normal workflow on a Jetson or a GPU server, which need no TensorFlow. The gate compares each
    engine with the FP32 ONNX file run by onnxruntime on the CPU, on synthetic ECGs (and real ones
    from `validation`); the manifest gains the engines that pass. Raises ExportGateError after
    writing those that passed if one failed."""
    from ecg_edge.gpu import require_tensorrt
    from ecg_edge.manifest import load_manifest, verified_path

    options = replace(options or ExportOptions(precisions=("fp32", "fp16", "int8")), engine=True)
    _check_dla(options)
    require_tensorrt("TensorRT engines")
    export_dir = Path(export_dir)
    manifest = load_manifest(export_dir)
    for name in manifest["files"]:
        if manifest["files"][name]["format"] == "onnx":
            verified_path(export_dir, manifest, name)
    if "int8" in options.precisions and SYMMETRIC_INT8_NAME not in manifest["files"]:
        log(f"int8: no {SYMMETRIC_INT8_NAME} in the export (make one with `ecg-edge export --for-tensorrt`)")
    classes = list(manifest["output"]["classes"])
    thresholds = np.array([manifest["thresholds"][c] for c in classes], dtype=np.float32)
    sets = held_out_sets((), validation, replace(options, n_calibration=0))
    gate = _Gate(sets, _onnx_outputs(export_dir / ONNX_NAMES["fp32"], sets.gate), thresholds, classes)
    files = dict(manifest["files"])
    rejected: dict[str, Parity] = {}
    staging = _new_staging(export_dir)
    try:
        _build_engines(export_dir, staging, files, gate, options, rejected, log)
        # engines move in before the manifest that names them; a rebuilt one replaces its old file
        for built in staging.glob("model.*.plan"):
            built.replace(export_dir / built.name)
        manifest["files"] = files
        manifest["rejected"] = manifest.get("rejected", {}) | {k: v.as_dict() for k, v in rejected.items()}
        write_json_atomic(export_dir / MANIFEST_NAME, manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _raise_if_rejected(rejected, "engines")
    return manifest


def _publish(staging: Path, out_dir: Path, manifest: dict[str, Any]) -> None:
    """Move validated files into place; the old manifest goes first and the new one comes last,
    so no manifest ever names a missing or different file."""
    old_manifest = out_dir / MANIFEST_NAME
    old_manifest.unlink(missing_ok=True)
    for pattern in ("model*.onnx", "model*.plan"):
        for stale in out_dir.glob(pattern):
            stale.unlink()
    for name in manifest["files"]:
        (staging / name).replace(out_dir / name)
    write_json_atomic(old_manifest, manifest)


def export_table(manifest: dict[str, Any], out: Path) -> Any:
    """The files of an export and how each did at its gate; fits 80 columns."""
    from rich import box
    from rich.table import Table

    table = Table(title=f"{out}: {manifest['model']['kind']} model, {len(manifest['files'])} files",
                  caption="exams same: share of gate exams whose findings did not change",
                  box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for column in ("file", "prec", "MB", "vs", "max |dp|", "exams same"):
        table.add_column(column, justify="left" if column in ("file", "prec", "vs") else "right", no_wrap=True)
    for name, entry in manifest["files"].items():
        parity = entry.get("parity", {})
        precision = entry["precision"] + (" sym" if entry["variant"] == "symmetric" else "")
        same = (f"{parity['exam_agreement']:.1%} of {parity['n_exams']}" if "exam_agreement" in parity
                else f"{parity['n_exams']} exams" if parity else "-")
        table.add_row(name, precision, f"{entry['bytes'] / 1e6:.1f}", parity.get("reference", "-"),
                      f"{parity['max_abs_diff']:.1e}" if parity else "-", same)
    return table

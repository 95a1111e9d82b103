"""The export pipeline: Keras -> ONNX FP32 -> FP16 and INT8 (-> TensorRT), each step validated.

Nothing is done until validated (as optimum's exporters): every file is compared with its
reference on held-out ECGs, and a file that fails its gate is not written. All work happens in a
staging folder; files move into place only after their gates, and the manifest comes last.
"""

from __future__ import annotations

import datetime as dt
import platform
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ecg_edge.backends.base import infer_all
from ecg_edge.backends.onnxruntime import OnnxRuntimeBackend
from ecg_edge.errors import InputError
from ecg_edge.export.parity import Parity, compare
from ecg_edge.export.precision import Int8Recipe, preprocess_for_quantization, quantize_int8, to_fp16
from ecg_edge.manifest import FORMAT_VERSION, MANIFEST_NAME, sha256_file, write_json_atomic
from ecg_edge.spec import BATCH_PROFILE, INPUT_NAME, LEADS, N_SAMPLES, PRECISIONS, SAMPLING_RATE_HZ, UNITS

ONNX_NAMES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
SYMMETRIC_INT8_NAME = "model.int8.sym.onnx"


class ExportGateError(RuntimeError):
    """A file failed its parity gate (it was not written); carries the numbers."""


@dataclass
class ExportOptions:
    precisions: Sequence[str] = PRECISIONS
    engine: bool = False
    max_batch: int = BATCH_PROFILE["max"]
    opt_batch: int = BATCH_PROFILE["opt"]
    dla_core: int | None = None
    fp32_atol: float = 1e-4  # FP32 ONNX vs Keras
    fp16_atol: float = 2e-2  # FP16 vs FP32 ONNX
    bf16_atol: float = 5e-2  # BF16 (8-bit mantissa) vs FP32 ONNX
    min_agreement: float = 0.95  # findings agreement of FP16/INT8 with FP32
    n_calibration: int = 128
    n_synthetic_validation: int = 48
    int8_methods: Sequence[str] = ("minmax", "percentile")
    int8_residual_choices: Sequence[bool] = (False, True)


@dataclass
class ExportResult:
    out_dir: Path
    manifest: dict[str, Any]
    rejected: dict[str, Parity] = field(default_factory=dict)


def tool_versions() -> dict[str, str]:
    from ecg_edge.bench import package_versions

    return {"python": platform.python_version()} | package_versions((
        "ecg-edge", "tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "onnxruntime-gpu",
        "onnxconverter-common", "tensorrt"))


def load_ecgs(
    paths: Sequence[str | Path], limit: int | None = None, scale: float = 1.0
) -> tuple[np.ndarray, list[str]]:
    """Model inputs from HDF5 files, WFDB records or folders, read as `infer` reads them."""
    from ecg_edge.infer import ReadOptions, iter_batches
    from ecg_edge.readers import expand_inputs

    xs: list[np.ndarray] = []
    ids: list[str] = []
    for batch in iter_batches(expand_inputs(paths), 64, ReadOptions(scale=scale, assess=False),
                              lambda message: None):
        xs.append(batch.x)
        ids += batch.ids
        if limit is not None and len(ids) >= limit:
            break
    if not xs:
        raise InputError(paths[0] if paths else None, "no ECGs found")
    return np.concatenate(xs)[:limit], ids[:limit]


def _synthetic(n: int, seed: int) -> np.ndarray:
    from ecg_edge.training.synthetic import synthesize

    return synthesize(n, seed=seed)[0]


def _onnx_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    with OnnxRuntimeBackend(path) as backend:
        return infer_all(backend, x, batch=32)


def _file_entry(path: Path, fmt: str, precision: str, variant: str = "default", **extra: Any) -> dict[str, Any]:
    return {"format": fmt, "precision": precision, "variant": variant, "sha256": sha256_file(path),
            "bytes": path.stat().st_size, **extra}


def export_model(
    model_path: str | Path,
    out_dir: str | Path,
    options: ExportOptions | None = None,
    calibration: Sequence[str | Path] = (),
    validation: Sequence[str | Path] = (),
    log: Callable[[str], None] = lambda message: None,
) -> ExportResult:
    """Export `model_path` into `out_dir`; raises ExportGateError (after writing what passed) if a
    file failed its gate."""
    from ecg_edge.export.onnx_export import OPSET, OUTPUT_NAMES, keras_to_onnx, load_keras_model

    options = options or ExportOptions()
    unknown = set(options.precisions) - set(PRECISIONS)
    if unknown or not options.precisions:
        raise InputError(None, f"unknown precision {sorted(unknown)}: choose from {', '.join(PRECISIONS)}")
    if options.engine:
        from ecg_edge.gpu import tensorrt_status

        usable, reason = tensorrt_status()
        if not usable:
            raise InputError(None, f"--engine: {reason}")
    model_path = Path(model_path)
    out_dir = Path(out_dir)
    model, info = load_keras_model(model_path)
    task = info["task"]
    thresholds = np.array([info["thresholds"][c] for c in info["classes"]], dtype=np.float32)

    # Held-out ECGs: the given real records plus synthetic ones (a seed training never uses).
    val_parts, val_sources = [], []
    if validation:
        real, _ = load_ecgs(validation)
        val_parts.append(real)
        val_sources.append({"source": [str(p) for p in validation], "n": len(real)})
    val_parts.append(_synthetic(options.n_synthetic_validation, seed=90_001))
    val_sources.append({"source": "synthetic (seed 90001)", "n": options.n_synthetic_validation})
    x_val = np.concatenate(val_parts)
    if calibration:
        x_cal, _ = load_ecgs(calibration, limit=options.n_calibration)
        cal_summary = {"source": [str(p) for p in calibration], "n": len(x_cal)}
    else:
        x_cal = _synthetic(options.n_calibration, seed=90_002)
        cal_summary = {"source": "synthetic (seed 90002)", "n": len(x_cal)}
    cal_summary |= {"mean_mv": float(x_cal.mean()), "std_mv": float(x_cal.std()),
                    "p99_abs_mv": float(np.percentile(np.abs(x_cal), 99))}

    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir))
    files: dict[str, dict[str, Any]] = {}
    rejected: dict[str, Parity] = {}
    try:
        log("Keras -> ONNX FP32")
        reference = model.predict(x_val, batch_size=32, verbose=0)
        fp32_path, rewrites = keras_to_onnx(model, staging / ONNX_NAMES["fp32"], task)
        fp32_out = _onnx_outputs(fp32_path, x_val)
        parity = compare(reference, fp32_out, thresholds, "keras", max_abs=options.fp32_atol)
        log(f"  fp32 vs keras: {parity.summary()}")
        if not parity.passed:
            raise ExportGateError(f"FP32 ONNX failed its gate against Keras: {parity.summary()} "
                                  f"(tolerance {options.fp32_atol:g}); nothing was written")
        files[fp32_path.name] = _file_entry(fp32_path, "onnx", "fp32", parity=parity.as_dict())

        if "fp16" in options.precisions:
            log("FP16")
            fp16_path = to_fp16(fp32_path, staging / ONNX_NAMES["fp16"])
            parity = compare(fp32_out, _onnx_outputs(fp16_path, x_val), thresholds, "onnx fp32",
                             max_abs=options.fp16_atol, min_agreement=options.min_agreement)
            log(f"  fp16 vs fp32: {parity.summary()}")
            if parity.passed:
                files[fp16_path.name] = _file_entry(fp16_path, "onnx", "fp16", parity=parity.as_dict())
            else:
                rejected["fp16"] = parity

        recipe = None
        if "int8" in options.precisions or options.engine:
            prepared = preprocess_for_quantization(fp32_path, staging / "prepared.onnx")
            recipe, int8_path, parity, candidates = _choose_int8(prepared, staging, x_cal, x_val, fp32_out,
                                                                 thresholds, options, log)
            if "int8" in options.precisions:
                if parity.passed:
                    files[int8_path.name] = _file_entry(
                        int8_path, "onnx", "int8", parity=parity.as_dict(),
                        recipe=recipe.label, candidates=candidates,
                    )
                else:
                    rejected["int8"] = parity

        runtime_precisions = {}
        if "bf16" in options.precisions:
            runtime_precisions["bf16"] = _gate_bf16(fp32_path, x_val, fp32_out, thresholds, options, rejected, log)

        if options.engine:
            _build_engines(staging, files, recipe, x_cal, x_val, fp32_out, thresholds, options, rejected, log)

        manifest = {
            "format": FORMAT_VERSION,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "model": {"kind": info["kind"], "task": task, "classes": info["classes"],
                      "source": str(model_path), "source_sha256": sha256_file(model_path),
                      "parameters": int(model.count_params())},
            "input": {"name": INPUT_NAME, "shape": [None, N_SAMPLES, len(LEADS)], "dtype": "float32",
                      "sampling_rate_hz": SAMPLING_RATE_HZ, "leads": list(LEADS), "units": UNITS,
                      "amplitude_convention": "millivolts; CODE-layout HDF5 taken as it is "
                                              "(CODE-15% is about 2x mV: pass a scale)"},
            "output": {"name": OUTPUT_NAMES[task], "classes": info["classes"]},
            "thresholds": info["thresholds"],
            "thresholds_source": info.get("thresholds_source", ""),
            "opset": OPSET,
            "graph_rewrites": rewrites,
            "files": files,
            "runtime_precisions": runtime_precisions,
            "rejected": {k: v.as_dict() for k, v in rejected.items()},
            "calibration": cal_summary | ({"recipe": recipe.label} if recipe else {}),
            "validation": val_sources,
            "tools": tool_versions(),
        }
        _publish(staging, out_dir, manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result = ExportResult(out_dir=out_dir, manifest=manifest, rejected=rejected)
    if rejected:
        numbers = "; ".join(f"{k}: {v.summary()}" for k, v in rejected.items())
        raise ExportGateError(f"failed their gates and were not written: {numbers}")
    return result


def _gate_bf16(
    fp32_path: Path, x_val: np.ndarray, fp32_out: np.ndarray, thresholds: np.ndarray, options: ExportOptions,
    rejected: dict[str, Parity], log: Callable[[str], None],
) -> dict[str, Any]:
    """BF16 has no file of its own: OpenVINO runs the FP32 file in bfloat16. Gated here like a file,
    where this CPU can run it; elsewhere the manifest says why it was not."""
    from ecg_edge.backends.base import infer_all
    from ecg_edge.backends.openvino import OpenVinoBackend, bf16_status

    entry: dict[str, Any] = {"file": fp32_path.name, "runtime": "openvino"}
    usable, why = bf16_status()
    if not usable:
        log(f"BF16: not gated ({why})")
        return entry | {"why": why}
    log("BF16 (OpenVINO)")
    runner = OpenVinoBackend(fp32_path, precision="bf16")
    with runner:
        out = infer_all(runner, x_val, batch=32)
        entry["ran"] = runner.ran
    parity = compare(fp32_out, out, thresholds, "onnx fp32", max_abs=options.bf16_atol,
                     min_agreement=options.min_agreement)
    log(f"  bf16 vs fp32: {parity.summary()}")
    if not parity.passed:
        rejected["bf16"] = parity
    return entry | {"parity": parity.as_dict()}


def _choose_int8(
    prepared: Path, staging: Path, x_cal: np.ndarray, x_val: np.ndarray, fp32_out: np.ndarray,
    thresholds: np.ndarray, options: ExportOptions, log: Callable[[str], None],
) -> tuple[Int8Recipe, Path, Parity, list[dict[str, Any]]]:
    """Quantize with each recipe, measure against FP32, keep the best (agreement, then mean error)."""
    best = None
    candidates = []
    for method in options.int8_methods:
        for residual_float in options.int8_residual_choices:
            recipe = Int8Recipe(method=method, residual_float=residual_float)
            path = staging / f"int8-{method}-{int(residual_float)}.onnx"
            quantize_int8(prepared, path, x_cal, recipe)
            parity = compare(fp32_out, _onnx_outputs(path, x_val), thresholds, "onnx fp32",
                             min_agreement=options.min_agreement)
            log(f"  int8 [{recipe.label}] vs fp32: {parity.summary()}")
            candidates.append({"recipe": recipe.label, **parity.as_dict()})
            key = (parity.findings_agreement, -parity.mean_abs_diff)
            if best is None or key > best[0]:
                best = (key, recipe, path, parity)
    assert best is not None
    _, recipe, path, parity = best
    final = staging / ONNX_NAMES["int8"]
    path.replace(final)
    log(f"  chose {recipe.label}")
    return recipe, final, parity, candidates


def _build_engines(
    staging: Path, files: dict[str, dict[str, Any]], recipe: Int8Recipe | None, x_cal: np.ndarray,
    x_val: np.ndarray, fp32_out: np.ndarray, thresholds: np.ndarray, options: ExportOptions,
    rejected: dict[str, Parity], log: Callable[[str], None],
) -> None:
    """TensorRT engines from the ONNX files; INT8 from a symmetric twin (TensorRT needs zero points of 0)."""
    from ecg_edge.backends.tensorrt import TensorRTBackend
    from ecg_edge.export.tensorrt_engine import build_engine

    cache = staging.parent / "timing.cache"  # kept across exports: later builds reuse it
    for precision in options.precisions:
        if precision == "int8":
            assert recipe is not None
            symmetric = replace(recipe, symmetric=True)
            source = quantize_int8(staging / "prepared.onnx", staging / SYMMETRIC_INT8_NAME, x_cal, symmetric)
            files[source.name] = _file_entry(source, "onnx", "int8", variant="symmetric", recipe=symmetric.label)
        else:
            source = staging / ONNX_NAMES[precision]
            if source.name not in files:
                continue
        plan = staging / f"model.{precision}.plan"
        log(f"TensorRT {precision} engine from {source.name}")
        facts = build_engine(source, plan, max_batch=options.max_batch, opt_batch=options.opt_batch,
                             timing_cache=cache, dla_core=options.dla_core, precision=precision)
        with TensorRTBackend(plan, facts) as backend:
            out = infer_all(backend, x_val, batch=min(32, options.max_batch))
        tolerance = {"max_abs": options.fp32_atol * 10} if precision == "fp32" else {}
        parity = compare(fp32_out, out, thresholds, "onnx fp32", min_agreement=options.min_agreement,
                         **tolerance)
        log(f"  engine {precision} vs fp32: {parity.summary()}")
        if parity.passed:
            files[plan.name] = _file_entry(plan, "tensorrt", precision, parity=parity.as_dict(), **facts)
        else:
            rejected[f"tensorrt-{precision}"] = parity


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


def random_weight_export(out_dir: Path) -> Path:
    """The Ribeiro architecture with random weights, exported FP32/FP16/INT8 (speed does not
    depend on the weights). Needs the `train` extra."""
    try:
        import keras
    except ImportError:
        raise InputError(None, "no export to benchmark and no TensorFlow to make one: pass --model DIR "
                               "or pip install 'ecg-edge[train]'") from None
    from ecg_edge.training.models import build_ribeiro

    keras.utils.set_random_seed(0)
    model_path = out_dir / "random.keras"
    build_ribeiro().save(model_path)
    # Random weights measure speed only: findings agreement would gate nothing a user relies on (and a
    # random network's INT8 findings may differ from FP32's), so that gate is off; the manifest says so.
    export_model(model_path, out_dir / "export", ExportOptions(n_calibration=32, n_synthetic_validation=16,
                                                             int8_methods=("minmax",),
                                                             int8_residual_choices=(False,), min_agreement=0.0))
    return out_dir / "export"

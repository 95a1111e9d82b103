"""TensorRT engines from an export's gated ONNX files, each gated like the files; and the trtexec
lines that build them elsewhere."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ecg_edge.backends.base import infer_all
from ecg_edge.export.gate import Gate, onnx_outputs
from ecg_edge.export.heldout import held_out_sets
from ecg_edge.export.options import ONNX_NAMES, SYMMETRIC_INT8_NAME, ExportOptions
from ecg_edge.manifest import MANIFEST_NAME, write_json_atomic
from ecg_edge.spec import BATCH_PROFILE, INPUT_NAME, LEADS, N_SAMPLES
from ecg_edge.staging import move_into, staged


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


def tensorrt_fields(name: str, precision: str, options: ExportOptions) -> dict[str, Any]:
    """The trtexec lines for a file's manifest entry, where the export is meant for TensorRT."""
    if not (options.for_tensorrt or options.engine):
        return {}
    return {"trtexec": trtexec_commands(name, precision)}


def build_engines(source_dir: Path, plan_dir: Path, gate: Gate, log: Callable[[str], None]) -> None:
    """TensorRT engines from the gated ONNX files in `source_dir` (INT8 from the symmetric one), into
    `plan_dir`, each gated against FP32 like the files; an engine that fails is deleted."""
    from ecg_edge.backends.tensorrt import TensorRTBackend
    from ecg_edge.export.tensorrt_engine import build_engine

    options = gate.options
    cache = plan_dir.parent  # beside the export's files, one per GPU and TensorRT version: later builds reuse it
    for precision in options.precisions:
        name = SYMMETRIC_INT8_NAME if precision == "int8" else ONNX_NAMES.get(precision)
        if name is None or name not in gate.files:
            continue
        plan = plan_dir / f"model.{precision}.plan"
        log(f"TensorRT {precision} engine from {name}")
        facts = build_engine(source_dir / name, plan, max_batch=options.max_batch, opt_batch=options.opt_batch,
                             timing_cache=cache, dla_core=options.dla_core, precision=precision)
        with TensorRTBackend(plan, facts) as backend:
            out = infer_all(backend, gate.x, batch=min(32, options.max_batch))
        max_abs = {"fp32": options.fp32_atol * 10, "fp16": options.fp16_atol, "int8": options.int8_atol}[precision]
        parity, real = gate.measure(out, precision, max_abs)
        log(f"  engine {precision} vs fp32: {parity.summary()}")
        if not gate.admit(f"tensorrt-{precision}", plan, "tensorrt", precision, parity, real, **facts):
            plan.unlink(missing_ok=True)


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
    options.check_dla()
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
    gate = Gate(sets.gate, sets.n_real["gate"], onnx_outputs(export_dir / ONNX_NAMES["fp32"], sets.gate),
                thresholds, classes, options, files=dict(manifest["files"]))
    with staged(export_dir, "export") as staging:
        build_engines(export_dir, staging, gate, log)
        # engines move in before the manifest that names them; a rebuilt one replaces its old file
        move_into(staging, [p.name for p in staging.glob("model.*.plan")], export_dir)
        manifest["files"] = gate.files
        manifest["rejected"] = manifest.get("rejected", {}) | gate.manifest_fields()["rejected"]
        write_json_atomic(export_dir / MANIFEST_NAME, manifest)
    gate.raise_if_failed("engines")
    return manifest

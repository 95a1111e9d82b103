"""The export folder's manifest, made from the stages' results, and its publication: the gated files
move into place and the manifest comes last."""

from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path
from typing import Any

from ecg_edge.export.gate import Gate
from ecg_edge.export.heldout import HeldOut
from ecg_edge.manifest import FORMAT_VERSION, MANIFEST_NAME, sha256_file, write_json_atomic
from ecg_edge.model_info import LoadedModel
from ecg_edge.spec import AMPLITUDE_NOTE, INPUT_NAME, LEADS, N_SAMPLES, OUTPUT_NAMES, SAMPLING_RATE_HZ, UNITS
from ecg_edge.staging import move_into


def tool_versions() -> dict[str, str]:
    from ecg_edge.host import package_versions

    return {"python": platform.python_version()} | package_versions((
        "ecg-edge", "tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "onnxruntime-gpu",
        "onnxconverter-common", "tensorrt"))


def export_manifest(source: LoadedModel, out_dir: Path, opset: int, rewrites: dict[str, int], gate: Gate,
                    sets: HeldOut, int8_summary: dict[str, Any]) -> dict[str, Any]:
    """`manifest.json` of an export (docs/architecture.md shows one)."""
    model_path, info = Path(source.path).resolve(), source.info
    task, classes, options = info["task"], list(info["classes"]), gate.options
    return {
        "format": FORMAT_VERSION,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model": {"kind": info["kind"], "task": task, "classes": classes,
                  "source": str(model_path), "source_relative": os.path.relpath(model_path, out_dir.resolve()),
                  "source_sha256": sha256_file(model_path), "parameters": int(source.model.count_params())},
        "input": {"name": INPUT_NAME, "shape": [None, N_SAMPLES, len(LEADS)], "dtype": "float32",
                  "sampling_rate_hz": SAMPLING_RATE_HZ, "leads": list(LEADS), "units": UNITS,
                  "amplitude_convention": AMPLITUDE_NOTE},
        "output": {"name": OUTPUT_NAMES[task], "classes": classes},
        "thresholds": info["thresholds"],
        "thresholds_source": info.get("thresholds_source", ""),
        "opset": opset,
        "graph_rewrites": rewrites,
        **gate.manifest_fields(),
        "gates": {"min_exam_agreement": options.min_exam_agreement,
                  "max_abs": {"fp32 (vs keras)": options.fp32_atol, "fp16": options.fp16_atol,
                              "bf16": options.bf16_atol, "int8": options.int8_atol}},
        "calibration": sets.summary["calibration"] | ({"recipe": int8_summary["recipe"]} if int8_summary else {}),
        "int8": int8_summary,
        "validation": sets.summary["validation"],
        "validation_source": sets.summary["validation_source"],
        "tools": tool_versions(),
    }


def publish(staging: Path, out_dir: Path, manifest: dict[str, Any]) -> None:
    """Move the gated files into place; the old manifest goes first and the new one comes last, so
    no manifest ever names a missing or different file."""
    old_manifest = out_dir / MANIFEST_NAME
    old_manifest.unlink(missing_ok=True)
    for pattern in ("model*.onnx", "model*.plan"):
        for stale in out_dir.glob(pattern):
            stale.unlink()
    move_into(staging, manifest["files"], out_dir)
    write_json_atomic(old_manifest, manifest)

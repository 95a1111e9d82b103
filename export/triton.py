"""A Triton Inference Server model repository from an export folder.

One model per file: every ONNX file (platform `onnxruntime_onnx`) and every TensorRT engine
(`tensorrt_plan`), each `<name>/config.pbtxt` + `<name>/1/model.*` + `<name>/labels.txt`. Batch size,
preferred batches and the I/O come from the manifest, so the server batches requests the way the
files were built and gated. Files are copied after their sha256 is checked; the repository appears
all at once (written into a `.triton-*` staging folder beside it, then renamed into place:
`ecg_edge.staging`).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ecg_edge.errors import InputError
from ecg_edge.manifest import load_manifest, verified_path
from ecg_edge.spec import BATCH_PROFILE, INPUT_NAME, LEADS, N_SAMPLES
from ecg_edge.staging import rename_into_place, staged

# How long Triton may hold a request to fill a preferred batch: small next to one batch's latency.
MAX_QUEUE_DELAY_US = 2000
INSTANCE_KINDS = {"gpu": "KIND_GPU", "cpu": "KIND_CPU"}


def model_name(entry: dict[str, Any]) -> str:
    """ecg_fp32, ecg_int8_sym, ecg_trt_fp16, ..."""
    variant = "_sym" if entry.get("variant") == "symmetric" else ""
    return f"ecg_{'trt_' if entry['format'] == 'tensorrt' else ''}{entry['precision']}{variant}"


def tensorrt_can_take(entry: dict[str, Any]) -> bool:
    """Whether TensorRT can run this ONNX file: INT8 only as the symmetric file (zero points of 0,
    int8 activations); the CPU INT8 file's uint8 activations and int32 biases are refused by it."""
    return entry["precision"] != "int8" or entry.get("variant") == "symmetric"


def config_text(name: str, entry: dict[str, Any], manifest: dict[str, Any], instances: str,
                trt_accelerator: bool) -> str:
    """config.pbtxt in protobuf text format (Triton's ModelConfig)."""
    is_plan = entry["format"] == "tensorrt"
    max_batch = int(entry.get("profile", {}).get("max", BATCH_PROFILE["max"])) if is_plan else BATCH_PROFILE["max"]
    preferred = sorted({min(BATCH_PROFILE["opt"], max_batch), max_batch})
    classes = manifest["output"]["classes"]
    kind = "KIND_GPU" if is_plan else INSTANCE_KINDS[instances]
    lines = [
        f'name: "{name}"',
        f'platform: "{"tensorrt_plan" if is_plan else "onnxruntime_onnx"}"',
        f"max_batch_size: {max_batch}",
        "input [",
        f'  {{ name: "{INPUT_NAME}" data_type: TYPE_FP32 dims: [ {N_SAMPLES}, {len(LEADS)} ] }}',
        "]",
        "output [",
        f'  {{ name: "{manifest["output"]["name"]}" data_type: TYPE_FP32 dims: [ {len(classes)} ] '
        'label_filename: "labels.txt" }',
        "]",
        "dynamic_batching {",
        f"  preferred_batch_size: [ {', '.join(map(str, preferred))} ]",
        f"  max_queue_delay_microseconds: {MAX_QUEUE_DELAY_US}",
        "}",
        f"instance_group [ {{ count: 1 kind: {kind} }} ]",
        "version_policy: { latest: { num_versions: 1 } }",
    ]
    if trt_accelerator and not is_plan and kind == "KIND_GPU" and tensorrt_can_take(entry):
        # onnxruntime's TensorRT execution provider inside Triton: TensorRT speed from the ONNX file
        mode = {"fp16": "FP16", "int8": "INT8"}.get(entry["precision"], "FP32")
        lines += [
            "optimization { execution_accelerators { gpu_execution_accelerator: [ {",
            '  name: "tensorrt"',
            f'  parameters {{ key: "precision_mode" value: "{mode}" }}',
            '  parameters { key: "max_workspace_size_bytes" value: "4294967296" }',
            "} ] } }",
        ]
    return "\n".join(lines) + "\n"


def check_repository_target(repo: Path) -> None:
    """Before any work: a new or empty folder whose parent exists."""
    if repo.exists() and (not repo.is_dir() or any(repo.iterdir())):
        raise InputError(repo, "exists and is not an empty folder: choose a new repository folder")
    if not repo.parent.is_dir():
        raise InputError(repo.parent, "folder does not exist")


def write_triton_repository(
    export_dir: str | Path, repo: str | Path, instances: str = "gpu", trt_accelerator: bool = False,
) -> list[str]:
    """Write the repository; returns the model names. `instances`: where ONNX models run (gpu or cpu;
    engines always run on the GPU). Refuses a repository folder that exists and is not empty."""
    if instances not in INSTANCE_KINDS:
        raise InputError(None, f"instances {instances!r}: gpu or cpu")
    export_dir, repo = Path(export_dir), Path(repo)
    check_repository_target(repo)
    manifest = load_manifest(export_dir)
    if manifest["input"]["name"] != INPUT_NAME:
        raise InputError(export_dir, f"manifest input {manifest['input']['name']!r} is not {INPUT_NAME!r}")
    names = []
    with staged(repo.parent, "triton") as stage:
        for file_name, entry in manifest["files"].items():
            name = model_name(entry)
            source = verified_path(export_dir, manifest, file_name)
            folder = stage / name
            (folder / "1").mkdir(parents=True)
            shutil.copyfile(source, folder / "1" / ("model.plan" if entry["format"] == "tensorrt" else "model.onnx"))
            (folder / "labels.txt").write_text("\n".join(manifest["output"]["classes"]) + "\n")
            (folder / "config.pbtxt").write_text(config_text(name, entry, manifest, instances, trt_accelerator))
            names.append(name)
        rename_into_place(stage, repo)
    return names

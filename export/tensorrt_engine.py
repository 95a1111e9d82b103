"""TensorRT engines from the ONNX files (TensorRT 10 and 11, strongly typed).

An engine is valid only on the GPU model and TensorRT version that built it: build it on the
device that runs it. Precision comes from the ONNX graph (FP32, FP16, or Q/DQ symmetric INT8).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ecg_edge.atomic_files import atomic_write_bytes
from ecg_edge.errors import InputError, MachineError
from ecg_edge.gpu import dla_support, gpu_info, require_tensorrt
from ecg_edge.spec import BATCH_PROFILE, INPUT_NAME, LEADS, N_SAMPLES


def timing_cache_name(gpu_name: str, tensorrt_version: str) -> str:
    """'NVIDIA H200', '10.13.2.6' -> 'timing-nvidia-h200-trt10.13.2.6.cache': a cache holds the tactic
    timings of one GPU model and TensorRT version, so two of either never share a file."""
    slug = re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-") or "gpu"
    version = re.sub(r"[^0-9A-Za-z.]+", "-", tensorrt_version).strip("-") or "unknown"
    return f"timing-{slug}-trt{version}.cache"


def timing_cache_path(given: str | Path, gpu_name: str, tensorrt_version: str) -> Path:
    """`given` is the folder for caches, or a file in it (the former single `timing.cache`)."""
    given = Path(given)
    folder = given if given.is_dir() else given.parent
    return folder / timing_cache_name(gpu_name, tensorrt_version)


def placement_summary(layers: Iterable[tuple[str, bool]]) -> dict[str, Any]:
    """(layer name, can run on the DLA) per network layer -> counts, and the first layers the GPU takes."""
    layers = list(layers)
    gpu = [name for name, on_dla in layers if not on_dla]
    return {"dla": len(layers) - len(gpu), "gpu": len(gpu), "gpu_layers": gpu[:10]}


_PLACEMENT_HEADER = re.compile(r"layers running on (dla|gpu)", re.IGNORECASE)


def _top_level_items(text: str) -> list[str]:
    """Split a comma-separated layer list, leaving commas inside {...}, [...] and (...) alone."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char in "{[(":
            depth += 1
        elif char in "}])":
            depth = max(0, depth - 1)
        elif char == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [item.strip() for item in items if item.strip()]


def dla_placement_from_log(messages: Iterable[str]) -> dict[str, int] | None:
    """Layers per device from the builder's INFO listing of a DLA build ('Layers running on DLA:'
    then its list, 'Layers running on GPU:' then its list, as NVIDIA's sampleCudla shows); None where
    the log has no such listing."""
    counts: dict[str, int] | None = None
    pending: str | None = None
    for message in messages:
        header = _PLACEMENT_HEADER.search(message)
        if header:
            counts = counts or {"dla": 0, "gpu": 0}
            pending = header.group(1).lower()
            rest = message[header.end():].lstrip(": \n")
            if rest:
                counts[pending] += len(_top_level_items(rest))
                pending = None
        elif pending is not None and counts is not None:
            counts[pending] += len(_top_level_items(message))
            pending = None
    return counts


def _logger(trt: Any, keep_info: bool) -> tuple[Any, list[str]]:
    """Warnings and errors to stderr; INFO messages kept when asked (the DLA placement listing)."""
    if not keep_info:
        return trt.Logger(trt.Logger.WARNING), []
    messages: list[str] = []

    class Capture(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            if int(severity) <= int(trt.Logger.WARNING):
                print(f"[TensorRT] {msg}", file=sys.stderr)
            elif int(severity) == int(trt.Logger.INFO):
                messages.append(msg)

    return Capture(), messages


def _attach_timing_cache(config: Any, path: Path | None) -> str:
    """Load `path` into the builder config; a cache that does not load or that TensorRT rejects
    (another GPU, CUDA or TensorRT) is replaced by an empty one. Returns what happened."""
    if path is None:
        return "not kept"
    old = path.read_bytes() if path.is_file() else b""
    state = "new"
    if old:
        try:
            cache = config.create_timing_cache(old)
        except (RuntimeError, TypeError, ValueError):
            cache = None
        if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
            return "reused"
        state = "discarded (made by another GPU, CUDA or TensorRT, or unreadable); started empty"
    if not config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False):
        raise MachineError("TensorRT timing cache", "TensorRT refused an empty timing cache")
    return state


def build_engine(
    onnx_path: str | Path, plan_path: str | Path, max_batch: int = BATCH_PROFILE["max"],
    opt_batch: int = BATCH_PROFILE["opt"],
    timing_cache: str | Path | None = None, dla_core: int | None = None, workspace_gib: float = 4.0,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Parse `onnx_path`, build and serialize an engine to `plan_path`; returns facts for the manifest.

    `timing_cache`: the folder for timing caches (a file path names its folder); the cache there is
    `timing_cache_name(gpu, TensorRT version)`. `precision` names what the graph holds; for FP32, TF32
    (on by default, 10-bit mantissa, used from Ampere on) is switched off so that the engine computes
    what its name says. A DLA build has a fixed batch (`opt_batch`): the DLA takes static shapes only."""
    require_tensorrt("TensorRT engine build")
    import tensorrt as trt

    gpu = gpu_info()
    if dla_core is not None:
        if precision == "fp32":
            raise InputError(onnx_path, "the DLA runs FP16 and INT8 only, not FP32")
        supported, why = dla_support(trt.__version__)
        if not supported:
            raise MachineError("--dla-core", why)

    logger, info_log = _logger(trt, keep_info=dla_core is not None)
    builder = trt.Builder(logger)
    # Required on TensorRT 10; on 11 every network is strongly typed and the flag is accepted and ignored.
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    flags = 1 << int(strongly_typed) if strongly_typed is not None else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise InputError(onnx_path, f"TensorRT could not parse the ONNX file: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    # platform_has_tf32 is gone in TensorRT 11; the flag stays, on by default, and TF32 needs Ampere (8.0).
    tf32_flag = getattr(trt.BuilderFlag, "TF32", None)
    if tf32_flag is not None and precision == "fp32":
        config.clear_flag(tf32_flag)
    tf32_allowed = tf32_flag is not None and bool(config.get_flag(tf32_flag))
    tf32 = tf32_allowed and int(gpu.compute_capability.split(".")[0]) >= 8

    opt_batch = max(1, min(opt_batch, max_batch))
    min_batch = BATCH_PROFILE["min"]
    placement: dict[str, Any] | None = None
    if dla_core is not None:
        cores = int(builder.num_DLA_cores)
        if cores == 0:
            raise MachineError("--dla-core", "this device has no DLA (Jetson AGX Orin and Orin NX have one)")
        if not 0 <= dla_core < cores:
            raise InputError(None, f"--dla-core {dla_core}: this device has DLA cores 0 to {cores - 1}")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        min_batch = max_batch = opt_batch  # the DLA takes static shapes only: min = opt = max
        layers = [(network.get_layer(i).name, bool(config.can_run_on_DLA(network.get_layer(i))))
                  for i in range(network.num_layers)]
        before = placement_summary(layers)
        if before["dla"] == 0:
            raise MachineError("--dla-core", "the DLA can run none of this network's layers")
        placement = {"can_run_on_dla_before_build": before}

    profile = builder.create_optimization_profile()
    profile.set_shape(
        INPUT_NAME, (min_batch, N_SAMPLES, len(LEADS)), (opt_batch, N_SAMPLES, len(LEADS)),
        (max_batch, N_SAMPLES, len(LEADS)),
    )
    config.add_optimization_profile(profile)

    cache_path = timing_cache_path(timing_cache, gpu.name, trt.__version__) if timing_cache else None
    cache_state = _attach_timing_cache(config, cache_path)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}")
    if placement is not None:  # what the builder placed, where its log lists it
        placement["built"] = dla_placement_from_log(info_log)
    atomic_write_bytes(plan_path, bytes(serialized))
    if cache_path is not None:  # shared by later builds: a torn cache would fail them all
        atomic_write_bytes(cache_path, bytes(config.get_timing_cache().serialize()))
    return {
        "tensorrt_version": trt.__version__,
        "gpu": gpu.name,
        "compute_capability": gpu.compute_capability,
        "cuda_driver": gpu.driver_version,
        "profile": {"min": min_batch, "opt": opt_batch, "max": max_batch},
        "dla_core": dla_core,
        "dla_placement": placement,
        "tf32": tf32,
        "timing_cache": {"file": cache_path.name if cache_path else None, "state": cache_state},
        "built_from": Path(onnx_path).name,
    }

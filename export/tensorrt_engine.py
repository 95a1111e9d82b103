"""TensorRT engines from the ONNX files (TensorRT 10 and 11, strongly typed).

An engine is valid only on the GPU model and TensorRT version that built it: build it on the
device that runs it. Precision comes from the ONNX graph (FP32, FP16, or Q/DQ symmetric INT8).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ecg_edge.atomic_files import atomic_write_bytes
from ecg_edge.errors import InputError
from ecg_edge.gpu import gpu_info, tensorrt_status
from ecg_edge.spec import BATCH_PROFILE, INPUT_NAME, LEADS, N_SAMPLES


def build_engine(
    onnx_path: str | Path, plan_path: str | Path, max_batch: int = BATCH_PROFILE["max"],
    opt_batch: int = BATCH_PROFILE["opt"],
    timing_cache: str | Path | None = None, dla_core: int | None = None, workspace_gib: float = 4.0,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Parse `onnx_path`, build and serialize an engine to `plan_path`; returns facts for the manifest.

    `precision` names what the graph holds; for FP32, TF32 (on by default from Ampere on, 10-bit
    mantissa) is switched off so that the engine computes what its name says."""
    usable, reason = tensorrt_status()
    if not usable:
        raise InputError(None, f"cannot build a TensorRT engine: {reason}")
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
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
    tf32 = precision != "fp32" and bool(getattr(builder, "platform_has_tf32", False))
    if not tf32 and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    opt_batch = max(1, min(opt_batch, max_batch))
    profile = builder.create_optimization_profile()
    min_batch = BATCH_PROFILE["min"]
    profile.set_shape(
        INPUT_NAME, (min_batch, N_SAMPLES, len(LEADS)), (opt_batch, N_SAMPLES, len(LEADS)),
        (max_batch, N_SAMPLES, len(LEADS)),
    )
    config.add_optimization_profile(profile)

    cache_path = Path(timing_cache) if timing_cache else None
    cache_bytes = cache_path.read_bytes() if cache_path and cache_path.exists() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)

    if dla_core is not None:
        if precision == "fp32":
            raise InputError(onnx_path, "the DLA runs FP16 and INT8 only, not FP32")
        if not hasattr(trt.DeviceType, "DLA"):
            raise InputError(None, f"--dla-core: TensorRT {trt.__version__} has no DLA support "
                                   "(JetPack 6 with TensorRT 10 has it on AGX Orin and Orin NX)")
        if builder.num_DLA_cores == 0:
            raise InputError(None, "--dla-core given but this device has no DLA (Jetson AGX/NX only)")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}")
    atomic_write_bytes(plan_path, bytes(serialized))
    if cache_path is not None:  # shared by later builds: a torn cache would fail them all
        atomic_write_bytes(cache_path, bytes(config.get_timing_cache().serialize()))
    gpu = gpu_info()
    return {
        "tensorrt_version": trt.__version__,
        "gpu": gpu.name,
        "compute_capability": gpu.compute_capability,
        "cuda_driver": gpu.driver_version,
        "profile": {"min": min_batch, "opt": opt_batch, "max": max_batch},
        "dla_core": dla_core,
        "tf32": tf32,
        "built_from": Path(onnx_path).name,
    }

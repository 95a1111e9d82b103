"""What NVIDIA stack is present: TensorRT, cuda-python and a GPU. Never raises; says what is missing."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

INSTALL_HINT = 'pip install "ecg-edge[tensorrt]" on a machine with an NVIDIA GPU and driver'


def cudart() -> ModuleType:
    """cuda-python's runtime module (its location moved in cuda-python 12.6)."""
    try:
        return importlib.import_module("cuda.bindings.runtime")
    except ImportError:
        return importlib.import_module("cuda.cudart")


def check(result: Any) -> Any:
    """Unwrap a cuda-python call's (error, value...) tuple, raising on error."""
    err, *rest = result
    if int(getattr(err, "value", err)) != 0:  # an enum (cudaError_t) whose success value is 0
        raise RuntimeError(f"CUDA error {getattr(err, 'name', err)}")
    return rest[0] if len(rest) == 1 else tuple(rest)


@dataclass
class GpuInfo:
    name: str
    compute_capability: str
    driver_version: int


def gpu_info() -> GpuInfo:
    rt = cudart()
    props = check(rt.cudaGetDeviceProperties(0))
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return GpuInfo(name=name.strip("\x00"), compute_capability=f"{props.major}.{props.minor}",
                   driver_version=int(check(rt.cudaDriverGetVersion())))


def tensorrt_status() -> tuple[bool, str]:
    """(usable, reason): TensorRT and cuda-python import, and a CUDA GPU is visible."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False, f"TensorRT is not installed ({INSTALL_HINT})"
    try:
        rt = cudart()
    except ImportError:
        return False, f"cuda-python is not installed ({INSTALL_HINT})"
    try:
        count = check(rt.cudaGetDeviceCount())
    except (RuntimeError, OSError) as exc:
        return False, f"no usable CUDA driver ({exc})"
    if count < 1:
        return False, "no CUDA GPU is visible"
    return True, "TensorRT and a CUDA GPU are present"

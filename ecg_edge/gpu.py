"""The NVIDIA stack's Python side, under the TensorRT backend and export's engine builder: cuda-python
helpers (`cudart`, `check`, `gpu_info`) and whether TensorRT can run here (`tensorrt_status`, which
never raises and says what is missing; `require_tensorrt`, `dla_support`).

Imports only the machine's facts (`ecg_edge.host`, where nvidia-smi and Jetson facts now live) and errors.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ecg_edge import host
from ecg_edge.errors import MachineError

INSTALL_HINT = 'pip install "ecg-edge[tensorrt]" on a machine with an NVIDIA GPU and driver'
# JetPack's TensorRT Python bindings are an apt package for the system Python, not a pip wheel.
JETSON_HINT = ("on a Jetson, TensorRT's Python bindings come with JetPack (apt python3-libnvinfer, for the system "
               "Python): make the venv with `python3 -m venv --system-site-packages` and install cuda-python 12 "
               "(JetPack 6) or 13 (JetPack 7) in it")
# Strongly typed networks, which the ONNX files' own types need, came with TensorRT 10 (JetPack 6.0 has 8.6).
MIN_TENSORRT = (10, 0)


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


def parse_version(text: str) -> tuple[int, ...] | None:
    """'10.3.0.30' -> (10, 3, 0, 30); None for text that does not start with a number."""
    found = re.match(r"\s*(\d+(?:\.\d+)*)", text or "")
    return tuple(int(part) for part in found.group(1).split(".")) if found else None


def tensorrt_version_problem(version: str) -> str | None:
    """Why this TensorRT release cannot build or run ecg-edge's engines, or None when it can."""
    parsed = parse_version(version)
    if parsed is None:
        return f"cannot read the TensorRT version {version!r}"
    if parsed < MIN_TENSORRT:
        return (f"TensorRT {version} is too old: ecg-edge needs TensorRT >= 10 (JetPack >= 6.1), for strongly "
                "typed networks")
    return None


def tensorrt_status(tegra_release: str | None = None) -> tuple[bool, str]:
    """(usable, reason): TensorRT >= 10 and cuda-python import, and a CUDA GPU is visible.
    `tegra_release`: /etc/nv_tegra_release's text (read here when None; absent off Jetson)."""
    try:
        import tensorrt
    except ImportError:
        if tegra_release is None:
            tegra_release = host.read_tegra_release()
        if tegra_release and host.parse_tegra_release(tegra_release):
            return False, f"TensorRT is not importable here ({JETSON_HINT})"
        return False, f"TensorRT is not installed ({INSTALL_HINT})"
    problem = tensorrt_version_problem(str(getattr(tensorrt, "__version__", "")))
    if problem:
        return False, problem
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


def require_tensorrt(what: str) -> None:
    """Raise MachineError (exit 3) with the reason when this machine cannot build or run engines."""
    usable, reason = tensorrt_status()
    if not usable:
        raise MachineError(what, reason)


def dla_support(tensorrt_version: str) -> tuple[bool, str]:
    """Whether this TensorRT release builds for the DLA (NVIDIA's "Working with DLA", TensorRT 11.4.1):
    10.0 to 10.7 did; 10.7 was the last 10.x with DLA; 11.0 to 11.4.0 have none on Jetson; 11.4.1 brings
    it back on Jetson AGX Orin with JetPack >= 7.2.2. Whether the device has a DLA is asked separately."""
    problem = tensorrt_version_problem(tensorrt_version)
    if problem:
        return False, problem
    parsed = parse_version(tensorrt_version) or ()
    if parsed < (10, 8) or parsed >= (11, 4, 1):
        return True, ""
    return False, (f"TensorRT {tensorrt_version} has no DLA support (10.7 was the last 10.x release with DLA; "
                   "11.4.1 brings it back on Jetson AGX Orin with JetPack >= 7.2.2)")


# Names that moved to ecg_edge.host: importable from here for one release, with a DeprecationWarning.
_MOVED = dict.fromkeys(("JETPACK_OF_L4T", "jetson_facts", "nvidia_facts", "parse_nvidia_smi", "parse_nvpmodel",
                        "parse_tegra_release"), host)

if not TYPE_CHECKING:  # hidden from mypy, which then flags the old spellings in this repository
    from ecg_edge.deprecation import moved_names

    __getattr__ = moved_names(__name__, _MOVED)

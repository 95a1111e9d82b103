"""What NVIDIA stack is present: TensorRT, cuda-python and a GPU. Never raises; says what is missing."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

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
    import re

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
            tegra_release = _read_tegra_release()
        if tegra_release and parse_tegra_release(tegra_release):
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
    from ecg_edge.errors import MachineError

    usable, reason = tensorrt_status()
    if not usable:
        raise MachineError(what, reason)


def _read_tegra_release() -> str | None:
    from pathlib import Path

    try:
        return Path("/etc/nv_tegra_release").read_text(errors="replace")
    except OSError:
        return None


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


def _run(command: list[str], timeout: float = 10.0) -> str | None:
    """A tool's stdout, or None where it is missing or fails (doctor reads, never changes)."""
    import shutil
    import subprocess

    if shutil.which(command[0]) is None:
        return None
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def parse_nvidia_smi(query_csv: str, header: str | None) -> dict[str, Any]:
    """`nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv,noheader,nounits`
    (one line per GPU) and the plain `nvidia-smi` banner (for the CUDA version the driver supports)."""
    import re

    gpus = []
    driver = None
    for line in query_csv.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 4:
            continue
        name, cc, memory, driver = parts[:4]
        gpus.append({"name": name, "compute_capability": cc,
                     "memory_gib": round(float(memory) / 1024, 1) if memory.replace(".", "").isdigit() else None})
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", header or "")
    return {"driver": driver, "cuda_driver_api": cuda.group(1) if cuda else None, "gpus": gpus}


def nvidia_facts() -> dict[str, Any]:
    """Driver, the CUDA version it supports, and each GPU, from nvidia-smi (shipped with the driver)."""
    query = _run(["nvidia-smi", "--query-gpu=name,compute_cap,memory.total,driver_version",
                  "--format=csv,noheader,nounits"])
    if query is None:
        return {"missing": "no NVIDIA driver here (nvidia-smi not found or failed)"}
    from ecg_edge.bench import package_versions

    return parse_nvidia_smi(query, _run(["nvidia-smi"])) | package_versions(
        ("tensorrt", "cuda-python", "onnxruntime-gpu"))


# L4T release -> JetPack (NVIDIA's JetPack archive); a release not listed is reported as L4T only.
JETPACK_OF_L4T = {"35.4.1": "5.1.2", "35.5.0": "5.1.3", "35.6.0": "5.1.4", "36.3.0": "6.0", "36.4.0": "6.1",
                  "36.4.3": "6.2", "36.4.4": "6.2.1", "38.2.0": "7.0", "38.2.1": "7.0", "38.4.0": "7.1",
                  "39.2.0": "7.2"}


def parse_tegra_release(text: str) -> str | None:
    """'# R36 (release), REVISION: 4.3, ...' (/etc/nv_tegra_release) -> '36.4.3'."""
    import re

    found = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"{found.group(1)}.{found.group(2)}" if found else None


def parse_nvpmodel(text: str) -> str | None:
    """`nvpmodel -q` prints 'NV Power Mode: MAXN' then the mode's number."""
    for line in text.splitlines():
        if line.startswith("NV Power Mode:"):
            return line.split(":", 1)[1].strip()
    return None


def jetson_facts() -> dict[str, Any] | None:
    """On a Jetson: L4T release, JetPack, power mode and whether clocks are pinned (jetson_clocks
    sets each CPU's minimum clock to its maximum). None elsewhere."""
    from pathlib import Path

    release_file = Path("/etc/nv_tegra_release")
    if not release_file.exists():
        return None
    l4t = parse_tegra_release(release_file.read_text(errors="replace"))
    jetpack = (_run(["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"]) or "").strip() or None
    mode = parse_nvpmodel(_run(["nvpmodel", "-q"]) or "")
    cpufreq = Path("/sys/devices/system/cpu/cpu0/cpufreq")
    try:
        pinned: bool | None = (cpufreq / "scaling_min_freq").read_text() == (cpufreq / "scaling_max_freq").read_text()
    except OSError:
        pinned = None
    return {"l4t": l4t, "jetpack": jetpack or JETPACK_OF_L4T.get(l4t or ""), "power_mode": mode,
            "jetson_clocks": pinned}

"""Facts about this machine: CPU and its instruction sets, installed package versions, the NVIDIA
driver and GPUs (nvidia-smi), Jetson release and power mode. Read, never set; never raises.

The bottom of the runtime: it imports nothing of ecg_edge, so that doctor, bench, the CPU runtime
choice, the GPU checks and export can all record the same facts.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

# Instruction-set flags that decide speed here, as /proc/cpuinfo names them (x86 'flags', Arm 'Features').
ISA_FLAGS = {
    "avx2": "AVX2", "avx512f": "AVX-512", "avx512_vnni": "AVX512-VNNI", "avx512_bf16": "AVX512-BF16",
    "amx_bf16": "AMX-BF16", "amx_int8": "AMX-INT8", "asimd": "NEON", "sve": "SVE", "bf16": "BF16 (Arm)",
}
TEGRA_RELEASE = Path("/etc/nv_tegra_release")  # present on Jetson (L4T) only
# L4T release -> JetPack (NVIDIA's JetPack archive); a release not listed is reported as L4T only.
JETPACK_OF_L4T = {"35.4.1": "5.1.2", "35.5.0": "5.1.3", "35.6.0": "5.1.4", "36.3.0": "6.0", "36.4.0": "6.1",
                  "36.4.3": "6.2", "36.4.4": "6.2.1", "38.2.0": "7.0", "38.2.1": "7.0", "38.4.0": "7.1",
                  "39.2.0": "7.2"}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_isa(cpuinfo: str | None = None) -> list[str]:
    """The instruction sets of ISA_FLAGS that this CPU reports (`cpuinfo`: /proc/cpuinfo's text)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return []
    found: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            found |= set(value.split())
    return [name for flag, name in ISA_FLAGS.items() if flag in found]


def package_versions(names: tuple[str, ...]) -> dict[str, str]:
    """Version of each of `names` that is installed (the ones that are not are left out)."""
    found = {}
    for dist in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[dist] = metadata.version(dist)
    return found


def _run(command: list[str], timeout: float = 10.0) -> str | None:
    """A tool's stdout, or None where it is missing or fails."""
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
    return parse_nvidia_smi(query, _run(["nvidia-smi"])) | package_versions(
        ("tensorrt", "cuda-python", "onnxruntime-gpu"))


def read_tegra_release() -> str | None:
    """/etc/nv_tegra_release's text; None off Jetson."""
    try:
        return TEGRA_RELEASE.read_text(errors="replace")
    except OSError:
        return None


def parse_tegra_release(text: str) -> str | None:
    """'# R36 (release), REVISION: 4.3, ...' (/etc/nv_tegra_release) -> '36.4.3'."""
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
    release = read_tegra_release()
    if release is None:
        return None
    l4t = parse_tegra_release(release)
    jetpack = (_run(["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"]) or "").strip() or None
    mode = parse_nvpmodel(_run(["nvpmodel", "-q"]) or "")
    cpufreq = Path("/sys/devices/system/cpu/cpu0/cpufreq")
    try:
        pinned: bool | None = (cpufreq / "scaling_min_freq").read_text() == (cpufreq / "scaling_max_freq").read_text()
    except OSError:
        pinned = None
    return {"l4t": l4t, "jetpack": jetpack or JETPACK_OF_L4T.get(l4t or ""), "power_mode": mode,
            "jetson_clocks": pinned}


def environment() -> dict[str, Any]:
    """The machine and software a benchmark result belongs to."""
    env: dict[str, Any] = {"cpu": cpu_model(), "cores": os.cpu_count(), "machine": platform.machine(),
                           "python": platform.python_version()}
    env |= package_versions(("onnxruntime", "onnxruntime-gpu", "tensorrt", "tensorflow", "numpy"))
    nvidia = nvidia_facts()
    if nvidia.get("gpus"):
        first = nvidia["gpus"][0]
        env |= {"gpu": first["name"], "compute_capability": first["compute_capability"],
                "gpu_memory_gib": first["memory_gib"], "nvidia_driver": nvidia["driver"],
                "cuda_driver_api": nvidia["cuda_driver_api"]}
    jetson = jetson_facts()
    if jetson is not None:  # every row's power mode, clocks and L4T release
        env |= {f"jetson_{k}": v for k, v in jetson.items()}
    return env

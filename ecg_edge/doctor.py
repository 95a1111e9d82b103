"""What this machine can run, and why: the CPU's instruction sets, the runtimes that really start,
and which backend `auto` takes for each precision of an export (with each other one's reason).

It reads, never sets: nothing is installed or changed.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ecg_edge import host

# Names that moved to ecg_edge.host: importable from here for one release, with a DeprecationWarning.
_MOVED = dict.fromkeys(("ISA_FLAGS", "cpu_isa"), host)


def onnxruntime_providers() -> dict[str, str]:
    """Each provider onnxruntime lists, and whether a session really starts on it (it may list
    CUDA or TensorRT and then fall back to the CPU): the check `auto` makes too."""
    from ecg_edge.backends.onnxruntime import available_providers, provider_status

    return {p: "starts" if ok else why for p in available_providers() for ok, why in [provider_status(p)]}


def diagnose(export_dir: Path | None) -> dict[str, Any]:
    from ecg_edge.backends import AUTO_ORDER, backend_present
    from ecg_edge.backends.openvino import bf16_status, cpu_capabilities, openvino_status
    from ecg_edge.gpu import tensorrt_status

    report: dict[str, Any] = {
        "cpu": {"model": host.cpu_model(), "cores": os.cpu_count(), "machine": platform.machine(),
                "isa": host.cpu_isa()},
        "python": platform.python_version(),
        "runtimes": host.package_versions(("onnxruntime", "onnxruntime-gpu", "openvino", "tensorrt", "cuda-python")),
    }
    report["onnxruntime_providers"] = onnxruntime_providers()
    ov_ok, ov_why = openvino_status()
    report["openvino"] = {"capabilities": cpu_capabilities()} if ov_ok else {"missing": ov_why}
    report["bf16"] = dict(zip(("usable", "why"), bf16_status(), strict=True))  # offered by the CPU
    report["tensorrt"] = dict(zip(("usable", "why"), tensorrt_status(), strict=True))
    report["nvidia"] = host.nvidia_facts()
    jetson = host.jetson_facts()
    if jetson is not None:
        report["jetson"] = jetson
    if export_dir is None or not (export_dir / "manifest.json").exists():
        report["auto"] = {"export": str(export_dir) if export_dir else None,
                          "note": "no export here: `ecg-edge export` first, or --model DIR"}
        return report
    from ecg_edge.manifest import load_manifest
    from ecg_edge.spec import PRECISIONS

    manifest = load_manifest(export_dir)
    report["bf16"]["export"] = bf16_in_export(manifest)
    auto: dict[str, Any] = {"export": str(export_dir)}
    for precision in PRECISIONS:
        present = {name: backend_present(name, manifest, precision) for name in AUTO_ORDER}
        usable = [name for name, (ok, _) in present.items() if ok]
        entry: dict[str, Any] = {"out": {name: why for name, (ok, why) in present.items() if not ok}}
        if usable:
            from ecg_edge.backends import open_backend

            runner, _ = open_backend(export_dir, "auto", precision)  # may time the CPU runtimes once
            entry |= {"picks": runner.name, "why": runner.chosen_because or "first present of " + ", ".join(AUTO_ORDER)}
        auto[precision] = entry
    report["auto"] = auto
    return report


def bf16_in_export(manifest: dict[str, Any]) -> str:
    """Whether BF16 passed its gate in this export (offered by the CPU is not the same as right)."""
    entry = manifest.get("runtime_precisions", {}).get("bf16")
    if entry is None:
        return "not gated (export made without it)"
    if "why" in entry:
        return f"not gated ({entry['why']})"
    if entry.get("parity", {}).get("passed"):
        return f"passed its gate ({entry.get('ran', {}).get('isa', '?')} kernels)"
    return f"refused: {entry.get('refused') or 'failed its gate'}"


def doctor_lines(report: dict[str, Any]) -> list[str]:
    """`diagnose`'s report for a terminal, but for `auto_table`: one line per fact."""
    cpu, bf16, nvidia = report["cpu"], report["bf16"], report["nvidia"]
    lines = [
        f"CPU: {cpu['model']} ({cpu['cores']} cores, {cpu['machine']}): "
        f"{', '.join(cpu['isa']) or 'no AVX2/AVX-512/NEON reported'}",
        "runtimes: " + (", ".join(f"{k} {v}" for k, v in report["runtimes"].items()) or "none"),
        *(f"  onnxruntime {provider}: {state}" for provider, state in report["onnxruntime_providers"].items()),
        f"BF16 (OpenVINO) offered by the CPU: {'yes' if bf16['usable'] else 'no, ' + bf16['why']}",
    ]
    if "export" in bf16:
        lines.append(f"BF16 in this export: {bf16['export']}")
    lines.append(f"TensorRT: {report['tensorrt']['why']}")
    if "missing" in nvidia:
        lines.append(f"NVIDIA: {nvidia['missing']}")
    else:
        lines.append(f"NVIDIA driver {nvidia['driver']} (CUDA {nvidia['cuda_driver_api'] or '?'}); "
                     + ", ".join(f"{g['name']} (sm {g['compute_capability']}, {g['memory_gib']} GiB)"
                                 for g in nvidia["gpus"]))
    if "jetson" in report:
        j = report["jetson"]
        clocks = {True: "pinned (jetson_clocks)", False: "not pinned", None: "unknown"}[j["jetson_clocks"]]
        lines.append(f"Jetson: L4T {j['l4t']}, JetPack {j['jetpack'] or '?'}, power mode {j['power_mode'] or '?'}, "
                     f"clocks {clocks}")
    if "note" in report["auto"]:
        lines.append(f"auto: {report['auto']['note']}")
    return lines


def auto_table(report: dict[str, Any]) -> Any:
    """What `auto` takes for each precision of the export, and why each other backend is out (None
    without an export)."""
    from rich import box
    from rich.table import Table

    auto = report["auto"]
    if "note" in auto:
        return None
    table = Table(title=f"auto for {auto['export']}", box=box.SIMPLE_HEAD)
    for column in ("precision", "takes", "why", "others out"):
        table.add_column(column, overflow="fold")
    for precision, entry in auto.items():
        if precision == "export":
            continue
        out = "; ".join(f"{k}: {v}" for k, v in entry["out"].items())
        table.add_row(precision, entry.get("picks", "-"), entry.get("why", "nothing can run it"), out)
    return table


if not TYPE_CHECKING:  # hidden from mypy, which then flags the old spellings in this repository
    from ecg_edge.deprecation import moved_names

    __getattr__ = moved_names(__name__, _MOVED)

"""BF16: no file of its own; OpenVINO runs the FP32 file in bfloat16 on CPUs that offer it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ecg_edge.backends.base import infer_all
from ecg_edge.errors import MachineError
from ecg_edge.export.gate import Gate, parity_fields
from ecg_edge.parity import Parity


def bf16_stage(fp32_path: Path, gate: Gate, log: Callable[[str], None]) -> None:
    """Gate BF16 like a file where this CPU can run it, and record it in `gate` as a runtime precision
    (named, or added because the CPU offers it); elsewhere the record says why it was not gated. A
    failure's record holds the reason: OpenVINO's version and the first layer whose BF16 output
    departs from its FP32 one."""
    named = "bf16" in gate.options.precisions
    entry, parity = _run_bf16(fp32_path, gate, log)
    gate.runtime("bf16", entry, parity, named)


def _run_bf16(fp32_path: Path, gate: Gate, log: Callable[[str], None]) -> tuple[dict[str, Any], Parity | None]:
    from ecg_edge.backends.openvino import OpenVinoBackend, bf16_divergence, bf16_status, openvino_version

    entry: dict[str, Any] = {"file": fp32_path.name, "runtime": "openvino"}
    usable, why = bf16_status()
    if not usable:
        log(f"BF16: not gated ({why})")
        return entry | {"why": why}, None
    log("BF16 (OpenVINO)")
    runner = OpenVinoBackend(fp32_path, precision="bf16")
    try:
        with runner:
            out = infer_all(runner, gate.x, batch=32)
            entry["ran"] = runner.ran
    except MachineError as exc:  # offered by the CPU, yet OpenVINO cannot compile it here
        log(f"  bf16: {exc}")
        return entry | {"refused": f"OpenVINO {openvino_version()} cannot run BF16 here: {exc.message}",
                        "machine": True}, None
    parity, real = gate.measure(out, "bf16", gate.options.bf16_atol)
    log(f"  bf16 vs fp32: {parity.summary()}")
    if not parity.passed:
        layer = bf16_divergence(fp32_path, gate.x[:4])
        where = (f"first departs at {layer['layer']} ({layer['type']}, relative error {layer['relative_error']:.2f})"
                 if layer else "no single layer departs by more than the threshold")
        entry["refused"] = (f"OpenVINO {openvino_version()} BF16 on {runner.ran.get('isa', 'this CPU')} kernels: "
                            f"{parity.summary()}; {where}")
        entry["divergence"] = layer
    return entry | parity_fields(parity, real), parity

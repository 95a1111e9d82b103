"""OpenVINO on the CPU: reads the export's ONNX files as they are.

FP32 runs the FP32 file with inference precision f32; BF16 runs the same file with inference
precision bf16 (only where the CPU has AVX512-BF16 or AMX: elsewhere OpenVINO would emulate it,
slower than FP32); INT8 runs the Q/DQ file (OpenVINO executes its quantized convolutions in int8).
What really ran is read back from the compiled model, not assumed from what was asked.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ecg_edge.backends.base import Backend
from ecg_edge.backends.registry import BackendSpec, OpenOptions, register
from ecg_edge.errors import InputError, MachineError
from ecg_edge.manifest import Manifest
from ecg_edge.spec import INPUT_NAME

# Our precision -> OpenVINO's INFERENCE_PRECISION_HINT for the float parts of the graph.
INFERENCE_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


def openvino_status() -> tuple[bool, str]:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False, 'OpenVINO is not installed (pip install "ecg-edge[openvino]")'
    return True, ""


def cpu_capabilities() -> list[str]:
    """OpenVINO's view of this CPU: e.g. ['FP32', 'INT8', 'BF16', ...] (BF16 only with AVX512-BF16 or AMX)."""
    import openvino as ov

    return [str(c) for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


def openvino_version() -> str:
    import openvino as ov

    return str(ov.__version__).split("-")[0]


def bf16_status() -> tuple[bool, str]:
    """Whether this CPU offers BF16 to OpenVINO (AVX512-BF16 or AMX), and why not. Offered is not
    right: whether BF16 is right for a model is its export's gate (the manifest's runtime_precisions)."""
    ok, why = openvino_status()
    if not ok:
        return ok, why
    if "BF16" not in cpu_capabilities():
        return False, "this CPU has neither AVX512-BF16 nor AMX (OpenVINO would emulate BF16, slower than FP32)"
    return True, ""


def kernel_isa(primitive_types: list[str]) -> str:
    """The widest instruction set among OpenVINO's CPU kernels, from their primitive types
    ('brgconv_avx512_amx_bf16' -> 'AMX', 'jit_avx512_core_bf16' -> 'AVX512', 'brgconv_avx2' -> 'AVX2'):
    whether AMX ran is what decides BF16's speed and, on OpenVINO 2026.4, its correctness."""
    for isa, label in (("amx", "AMX"), ("avx512", "AVX512"), ("avx2", "AVX2"), ("sse4", "SSE4")):
        if any(isa in kind for kind in primitive_types):
            return label
    return "reference"


# A layer whose BF16 output departs from its FP32 one by more than this (relative L2) is wrong, not
# rounded: right BF16 stays near 1e-2 through this network.
DIVERGENCE = 0.1


def bf16_divergence(path: str | Path, x: np.ndarray, threshold: float = DIVERGENCE) -> dict[str, Any] | None:
    """The first convolution (in graph order) whose output in BF16 departs from FP32 by more than
    `threshold` (relative L2 error) on `x`, or None: says where a failing BF16 goes wrong."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    convolutions = [op for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"]
    model.add_outputs([op.output(0) for op in convolutions])
    outputs = {}
    for hint in ("f32", "bf16"):
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint})
        result = compiled.create_infer_request().infer({0: x})
        outputs[hint] = [np.asarray(result[compiled.output(i)], np.float64) for i in range(len(compiled.outputs))]
    first = len(model.outputs) - len(convolutions)  # the model's own outputs come first
    for k, op in enumerate(convolutions):
        ref, bf16 = outputs["f32"][first + k], outputs["bf16"][first + k]
        error = float(np.linalg.norm(bf16 - ref) / max(float(np.linalg.norm(ref)), 1e-12))
        if error > threshold:
            weights = op.input(1).get_partial_shape()
            return {"layer": op.get_friendly_name(), "type": f"Convolution {weights}", "index": k,
                    "relative_error": error}
    return None


class OpenVinoBackend(Backend):
    """One ONNX file compiled for OpenVINO's CPU plugin; one synchronous request, all cores on it
    (the latency hint: the way onnxruntime runs one session) unless `threads` says otherwise."""

    def __init__(self, path: str | Path, precision: str = "fp32", threads: int | None = None,
                 hint: str = "latency") -> None:
        super().__init__()
        if precision not in INFERENCE_PRECISION:
            raise InputError(None, f"OpenVINO runs fp32, bf16 or int8, not {precision}")
        self.path: Path = Path(path)
        self.precision = precision
        self.threads = threads
        self.hint = hint
        self.name = "openvino"
        self.ran: dict[str, Any] = {}
        self._compiled: Any = None
        self._request: Any = None

    def _activate(self) -> None:
        import openvino as ov

        core = ov.Core()
        try:
            model = core.read_model(str(self.path))
        except RuntimeError as exc:
            raise InputError(self.path, f"OpenVINO cannot read this model ({str(exc).splitlines()[0][:200]})") from None
        names = [n for port in model.inputs for n in port.get_names()]
        if len(model.inputs) != 1 or INPUT_NAME not in names:
            raise InputError(self.path, f"model input is {names}, expected ['{INPUT_NAME}']")
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": INFERENCE_PRECISION[self.precision],
                                  "PERFORMANCE_HINT": self.hint.upper()}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = self.threads
        try:
            self._compiled = core.compile_model(model, "CPU", config)
        except RuntimeError as exc:  # e.g. a BF16 kernel this CPU's oneDNN build cannot give
            lines = [line for line in str(exc).splitlines() if line.strip()]
            reason = (lines[-1] if lines else type(exc).__name__)[:300]
            raise MachineError(f"openvino {self.precision}", reason) from None
        self._request = self._compiled.create_infer_request()
        self.ran = self._read_back()
        self.isa = self.ran["isa"]

    def _read_back(self) -> dict[str, Any]:
        """The inference precision the compiled model uses, the precision its convolutions run in and
        the kernels that run them (which name the ISA: AMX or not)."""
        hint = self._compiled.get_property("INFERENCE_PRECISION_HINT")
        hint = hint.to_string() if hasattr(hint, "to_string") else str(hint)  # an ov.Type: 'f32', 'bf16'
        convolutions: Counter[str] = Counter()
        kernels: Counter[str] = Counter()
        for op in self._compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()  # values are OVAny: astype(str) reads them
            if "layerType" in info and info["layerType"].astype(str) == "Convolution":
                convolutions[info["runtimePrecision"].astype(str)] += 1
                if "primitiveType" in info:
                    kernels[info["primitiveType"].astype(str)] += 1
        return {"inference_precision": hint, "convolutions": dict(convolutions), "kernels": dict(kernels),
                "isa": kernel_isa(list(kernels)),
                "threads": int(self._compiled.get_property("INFERENCE_NUM_THREADS")),
                "streams": int(self._compiled.get_property("NUM_STREAMS"))}

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        result = self._request.infer({0: batch})
        return np.array(result[self._compiled.output(0)], dtype=np.float32, copy=True)

    def _deactivate(self) -> None:
        self._request = None
        self._compiled = None

    def describe(self) -> str:
        if not self.ran:
            return f"openvino {self.precision} on CPU"
        convs = ", ".join(f"{n} in {p}" for p, n in sorted(self.ran["convolutions"].items())) or "none"
        return (f"openvino {self.precision} on CPU (inference precision {self.ran['inference_precision']}; "
                f"convolutions: {convs}; {self.ran.get('isa', '?')} kernels)")


def ir_source(manifest: Manifest, precision: str) -> str | None:
    """The ONNX file OpenVINO reads: BF16 is the FP32 file run with inference precision bf16."""
    return manifest.file_for("onnx", "fp32" if precision == "bf16" else precision)


def openvino_present(manifest: Manifest, precision: str) -> tuple[bool, str]:
    ok, why = openvino_status()
    if not ok:
        return ok, why
    if precision not in INFERENCE_PRECISION:
        return False, f"OpenVINO here runs {', '.join(INFERENCE_PRECISION)}; {precision} on a CPU runs as fp32"
    if ir_source(manifest, precision) is None:
        return False, f"no {precision} ONNX file in the export"
    if precision == "bf16":
        gate = manifest.runtime_gate("bf16")
        if "refused" in gate:
            return False, f"BF16 was refused at export: {gate['refused']}"
        if not gate.get("parity", {}).get("passed"):
            return False, f"BF16 was not gated at export ({gate.get('why', 'export made before BF16 existed')})"
        return bf16_status()
    return True, ""


def open_openvino(manifest: Manifest, precision: str, options: OpenOptions) -> OpenVinoBackend:
    name = ir_source(manifest, precision)
    if name is None:
        raise InputError(manifest.folder, f"no {precision} ONNX file in the export")
    return OpenVinoBackend(manifest.verified(name), precision=precision, threads=options.threads)


register(BackendSpec("openvino", "cpu", openvino_present, open_openvino, ir_source))

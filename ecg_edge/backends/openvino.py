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
from ecg_edge.errors import InputError
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


def bf16_status() -> tuple[bool, str]:
    ok, why = openvino_status()
    if not ok:
        return ok, why
    if "BF16" not in cpu_capabilities():
        return False, "this CPU has neither AVX512-BF16 nor AMX (OpenVINO would emulate BF16, slower than FP32)"
    return True, ""


class OpenVinoBackend(Backend):
    """One ONNX file compiled for OpenVINO's CPU plugin; one synchronous request, all cores on it
    (the latency hint: the way onnxruntime runs one session) unless `threads` says otherwise."""

    def __init__(self, path: str | Path, precision: str = "fp32", threads: int | None = None,
                 hint: str = "latency") -> None:
        super().__init__()
        if precision not in INFERENCE_PRECISION:
            raise InputError(None, f"OpenVINO runs fp32, bf16 or int8, not {precision}")
        self.path = Path(path)
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
        self._compiled = core.compile_model(model, "CPU", config)
        self._request = self._compiled.create_infer_request()
        self.ran = self._read_back()

    def _read_back(self) -> dict[str, Any]:
        """The inference precision the compiled model uses and the precision its convolutions run in."""
        hint = self._compiled.get_property("INFERENCE_PRECISION_HINT")
        hint = hint.to_string() if hasattr(hint, "to_string") else str(hint)  # an ov.Type: 'f32', 'bf16'
        convolutions: Counter[str] = Counter()
        for op in self._compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()  # values are OVAny: astype(str) reads them
            if "layerType" in info and info["layerType"].astype(str) == "Convolution":
                convolutions[info["runtimePrecision"].astype(str)] += 1
        return {"inference_precision": hint, "convolutions": dict(convolutions),
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
                f"convolutions: {convs})")

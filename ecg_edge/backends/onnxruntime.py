"""onnxruntime: CPU, CUDA and TensorRT execution providers, whichever `onnxruntime(-gpu)` offers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ecg_edge.backends.base import Backend
from ecg_edge.errors import InputError
from ecg_edge.spec import INPUT_NAME

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


class OnnxRuntimeBackend(Backend):
    """One ONNX file in an onnxruntime session.

    `device`: 'cpu', 'cuda' or 'tensorrt' (the TensorRT execution provider, engines cached in
    `trt_cache_dir`). `providers_in_use` tells what really runs: a silent CPU fallback shows there.
    """

    def __init__(
        self, path: str | Path, device: str = "cpu", threads: int | None = None, precision: str = "fp32",
        trt_cache_dir: str | Path | None = None, cuda_graph: bool = False,
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self.device = device
        self.threads = threads
        self.precision = precision
        self.trt_cache_dir = trt_cache_dir
        self.cuda_graph = cuda_graph
        self.name = f"ort-{device}"
        self.providers_in_use: list[str] = []
        self._session: Any = None
        self._output: str | None = None

    def _provider_options(self) -> list[tuple[str, dict[str, str]] | str]:
        out: list[tuple[str, dict[str, str]] | str] = []
        for provider in PROVIDERS[self.device]:
            if provider == "TensorrtExecutionProvider":
                # Precision comes from the graph (FP16 ops, Q/DQ nodes): no implicit-precision flags.
                options: dict[str, str] = {}
                if self.trt_cache_dir:
                    options |= {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(self.trt_cache_dir),
                                "trt_timing_cache_enable": "True"}
                out.append((provider, options))
            elif provider == "CUDAExecutionProvider" and self.cuda_graph:
                out.append((provider, {"enable_cuda_graph": "1"}))
            else:
                out.append(provider)
        return out

    def _activate(self) -> None:
        import onnxruntime as ort

        missing = [p for p in PROVIDERS[self.device][:1] if p not in available_providers()]
        if missing:
            raise InputError(None, f"onnxruntime here lacks {missing[0]} (install onnxruntime-gpu for CUDA/TensorRT)")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.threads:
            options.intra_op_num_threads = self.threads
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(self.path), options, providers=self._provider_options())
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise InputError(self.path, f"onnxruntime cannot load this model ({exc.__class__.__name__})") from None
        self.providers_in_use = self._session.get_providers()
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
            raise InputError(self.path, f"model input is {[i.name for i in inputs]}, expected ['{INPUT_NAME}']")
        self._output = self._session.get_outputs()[0].name

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        assert self._session is not None
        return self._session.run([self._output], {INPUT_NAME: batch})[0]

    def _deactivate(self) -> None:
        self._session = None

    def describe(self) -> str:
        return f"onnxruntime {self.precision} on {', '.join(self.providers_in_use) or self.device}"

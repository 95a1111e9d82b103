"""TensorRT: a serialized engine (`.plan`) run with `execute_async_v3` (TensorRT 10 and 11).

Memory follows NVIDIA's samples/python/common_runtime.py: device buffers for the profile's largest
batch, pinned host buffers, one CUDA stream. CUDA events time the device work apart from the host
copies (trtexec's "GPU compute time" vs. "host latency").
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import numpy as np

from ecg_edge.backends.base import Backend
from ecg_edge.backends.registry import BackendSpec, OpenOptions, register
from ecg_edge.errors import InputError
from ecg_edge.gpu import check, cudart, gpu_info, require_tensorrt, tensorrt_status
from ecg_edge.manifest import Manifest
from ecg_edge.spec import INPUT_NAME


class TensorRTBackend(Backend):
    """One engine. `facts` are the manifest's record of where it was built (version, GPU)."""

    name = "tensorrt"

    def __init__(self, plan: str | Path, facts: dict[str, Any] | None = None, precision: str = "fp32") -> None:
        super().__init__()
        self.plan = self.path = Path(plan)
        self.facts = facts or {}
        self.precision = precision
        self._buffers: list[Any] = []

    def _check_built_here(self) -> None:
        import tensorrt as trt

        built_with = self.facts.get("tensorrt_version")
        if built_with and built_with != trt.__version__:
            raise InputError(self.plan, f"engine built with TensorRT {built_with}, this is {trt.__version__}: "
                                        "rebuild it here with `ecg-edge export --engine`")
        built_on = self.facts.get("gpu")
        here = gpu_info()
        if built_on and built_on != here.name:
            raise InputError(self.plan, f"engine built on {built_on}, this GPU is {here.name}: rebuild it here")

    def _activate(self) -> None:
        require_tensorrt(f"TensorRT engine {self.plan.name}")
        import tensorrt as trt

        self._check_built_here()
        rt = cudart()
        self._rt = rt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        if self.facts.get("dla_core") is not None:  # a DLA engine runs on the core the runtime names
            self._runtime.DLA_core = int(self.facts["dla_core"])
        self._engine = self._runtime.deserialize_cuda_engine(self.plan.read_bytes())
        if self._engine is None:
            raise InputError(self.plan, "TensorRT could not deserialize this engine")
        self._context = self._engine.create_execution_context()
        self._stream = check(rt.cudaStreamCreate())
        self._start, self._stop = check(rt.cudaEventCreate()), check(rt.cudaEventCreate())
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        outputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if INPUT_NAME not in names or len(outputs) != 1:
            raise InputError(self.plan, f"engine tensors {names}: expected input '{INPUT_NAME}' and one output")
        self._output = outputs[0]
        min_shape, _, max_shape = self._engine.get_tensor_profile_shape(INPUT_NAME, 0)
        self.max_batch = int(max_shape[0])
        # a static profile (DLA engines: min = max) runs that one batch size: smaller batches are padded
        self._fixed_batch = self.max_batch if int(min_shape[0]) == self.max_batch else None
        self._host: dict[str, np.ndarray] = {}
        self._device: dict[str, int] = {}
        for name in (INPUT_NAME, self._output):
            shape = list(self._engine.get_tensor_shape(name))
            shape[0] = self.max_batch
            dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))
            nbytes = int(np.prod(shape)) * dtype.itemsize
            host_ptr = check(rt.cudaMallocHost(nbytes))
            dev_ptr = check(rt.cudaMalloc(nbytes))
            self._buffers += [("host", host_ptr), ("device", dev_ptr)]
            raw = (ctypes.c_byte * nbytes).from_address(int(host_ptr))
            self._host[name] = np.frombuffer(raw, dtype=dtype).reshape(shape)
            self._device[name] = int(dev_ptr)
            self._context.set_tensor_address(name, int(dev_ptr))

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        rt = self._rt
        n = batch.shape[0]
        if self._fixed_batch is not None and n < self._fixed_batch:
            padded = np.zeros((self._fixed_batch, *batch.shape[1:]), batch.dtype)
            padded[:n] = batch
            batch = padded
        self._context.set_input_shape(INPUT_NAME, batch.shape)
        host_in, host_out = self._host[INPUT_NAME], self._host[self._output]
        host_in[:n] = batch
        h2d, d2h = rt.cudaMemcpyKind.cudaMemcpyHostToDevice, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        check(rt.cudaMemcpyAsync(self._device[INPUT_NAME], host_in.ctypes.data, batch.nbytes, h2d, self._stream))
        check(rt.cudaEventRecord(self._start, self._stream))
        if not self._context.execute_async_v3(self._stream):
            raise RuntimeError(f"TensorRT execution failed for {self.plan}")
        check(rt.cudaEventRecord(self._stop, self._stream))
        out_bytes = batch.shape[0] * host_out[0].nbytes
        check(rt.cudaMemcpyAsync(host_out.ctypes.data, self._device[self._output], out_bytes, d2h, self._stream))
        check(rt.cudaStreamSynchronize(self._stream))
        self.last_compute_s = check(rt.cudaEventElapsedTime(self._start, self._stop)) / 1000.0
        return host_out[:n].astype(np.float32, copy=True)

    def _deactivate(self) -> None:
        rt = self._rt
        for kind, ptr in self._buffers:
            check(rt.cudaFreeHost(ptr) if kind == "host" else rt.cudaFree(ptr))
        self._buffers.clear()
        check(rt.cudaEventDestroy(self._start))
        check(rt.cudaEventDestroy(self._stop))
        check(rt.cudaStreamDestroy(self._stream))
        del self._context, self._engine, self._runtime

    def describe(self) -> str:
        text = f"TensorRT {self.facts.get('tensorrt_version', '')} {self.precision} on {self.facts.get('gpu', 'GPU')}"
        if self.facts.get("dla_core") is not None:
            placement = self.facts.get("dla_placement") or {}
            layers = placement.get("built") or placement.get("can_run_on_dla_before_build") or {}
            text += f", DLA core {self.facts['dla_core']}"
            if layers:
                text += f": {layers.get('dla', '?')} layers on the DLA, {layers.get('gpu', '?')} on the GPU"
        if self.facts.get("tf32"):
            text += ", TF32 allowed"
        return text


def engine_file(manifest: Manifest, precision: str) -> str | None:
    return manifest.file_for("tensorrt", precision)


def engine_present(manifest: Manifest, precision: str) -> tuple[bool, str]:
    if engine_file(manifest, precision) is None:
        return False, f"no {precision} TensorRT engine in the export (ecg-edge export --engine)"
    return tensorrt_status()


def open_engine(manifest: Manifest, precision: str, options: OpenOptions) -> TensorRTBackend:
    name = engine_file(manifest, precision)
    if name is None:
        raise InputError(manifest.folder, f"no {precision} TensorRT engine in the export (ecg-edge export --engine)")
    return TensorRTBackend(manifest.verified(name), manifest.entry(name), precision=precision)


register(BackendSpec("tensorrt", "gpu", engine_present, open_engine, engine_file))

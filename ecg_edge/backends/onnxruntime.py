"""onnxruntime: CPU, CUDA and TensorRT execution providers, whichever `onnxruntime(-gpu)` offers."""

from __future__ import annotations

import contextlib
import functools
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ecg_edge.backends.base import Backend
from ecg_edge.backends.registry import BackendSpec, OpenOptions, register
from ecg_edge.errors import InputError, MachineError
from ecg_edge.manifest import Manifest
from ecg_edge.spec import BATCH_PROFILE, INPUT_NAME, LEADS, N_SAMPLES

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    return text.splitlines()[0][:300]


_started: set[str] = set()  # providers a probe session started on: that answer holds for the process


def provider_status(provider: str) -> tuple[bool, str]:
    """Whether a session really starts on `provider`. onnxruntime-gpu lists CUDA and TensorRT even
    where they cannot start (no driver, no cuDNN) and then runs on the CPU with a log line; a tiny
    session tells. The reason is onnxruntime's own message. Only a yes is remembered: a no can depend
    on which libraries the process had loaded when it asked."""
    if provider in _started:
        return True, ""
    ok, why = _probe(provider)
    if ok:
        _started.add(provider)
    return ok, why


def _probe(provider: str) -> tuple[bool, str]:
    import onnxruntime as ort
    from onnx import TensorProto, helper

    if provider not in available_providers():
        return False, f"onnxruntime here lacks {provider} (install onnxruntime-gpu for CUDA/TensorRT)"
    if provider == "CPUExecutionProvider":
        return True, ""
    preload_cuda_libraries()
    if provider == "TensorrtExecutionProvider":
        preload_tensorrt_libraries()
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:  # enable_fallback=0: a provider that fails raises here instead of a retry on the CPU
        used = ort.InferenceSession(model, options, providers=[provider, "CPUExecutionProvider"],
                                    enable_fallback=0).get_providers()
    except Exception as exc:  # onnxruntime's own exception types
        return False, f"{provider} is listed but does not start: {_first_line(exc)}"
    if used[0] != provider:
        return False, f"{provider} is listed but a session on it ran on {used[0]} (driver, CUDA or cuDNN missing)"
    return True, ""


@functools.cache
def preload_cuda_libraries() -> None:
    """Where CUDA and cuDNN come as pip packages (nvidia-*-cu13), onnxruntime finds them only after
    `preload_dlls()` (no LD_LIBRARY_PATH needed); elsewhere the system's libraries serve. Once per process."""
    import importlib.util

    import onnxruntime as ort

    if not hasattr(ort, "preload_dlls") or importlib.util.find_spec("nvidia") is None:
        return
    with contextlib.suppress(Exception):  # the probe session then reports onnxruntime's own reason
        ort.preload_dlls()


def tensorrt_pip_library_dir() -> Path | None:
    """The folder of TensorRT's pip libraries: the `tensorrt_libs` package of tensorrt-cuXX-libs."""
    import importlib.util

    spec = importlib.util.find_spec("tensorrt_libs")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return Path(locations[0]) if locations else None


def tensorrt_libraries(folder: Path) -> list[Path]:
    """The shared libraries in `folder`, libnvinfer first: the builder resource, plugin and ONNX
    parser libraries need it loaded."""
    found = [path for path in folder.glob("lib*.so*") if path.is_file()]
    return sorted(found, key=lambda path: (not path.name.startswith("libnvinfer.so"), path.name))


@functools.cache
def preload_tensorrt_libraries() -> list[str]:
    """Load TensorRT's pip libraries, as `import tensorrt` does (its tensorrt_libs package), so that
    onnxruntime's TensorRT provider finds libnvinfer by name whichever ran first; the system's
    libraries serve where there is no such package (JetPack, a tar install). Once per process."""
    import ctypes

    folder = tensorrt_pip_library_dir()
    loaded = []
    for library in tensorrt_libraries(folder) if folder else []:
        try:
            ctypes.CDLL(str(library))
        except OSError:  # the probe session then reports onnxruntime's own reason
            continue
        loaded.append(library.name)
    return loaded


def count_nodes_per_provider(assigned: Any) -> dict[str, int]:
    """Nodes per execution provider from `InferenceSession.get_provider_graph_assignment_info()`
    (onnxruntime >= 1.24.1): subgraphs, each with `ep_name` and `get_nodes()`."""
    counts: Counter[str] = Counter()
    for subgraph in assigned:
        counts[str(subgraph.ep_name)] += len(subgraph.get_nodes())
    return dict(counts.most_common())


class OnnxRuntimeBackend(Backend):
    """One ONNX file in an onnxruntime session.

    `device`: 'cpu', 'cuda' or 'tensorrt' (the TensorRT execution provider, engines cached in
    `trt_cache_dir`). `providers_in_use` lists the providers registered; `nodes_per_provider` (where
    onnxruntime records it) tells where the graph's nodes really run.
    `io_binding` keeps input and output in buffers on the device of a fixed batch, bound once (the
    first batch's size; smaller batches are padded); `cuda_graph` (CUDA only) captures the run once
    and replays it, which needs exactly those fixed, bound buffers.
    """

    def __init__(
        self, path: str | Path, device: str = "cpu", threads: int | None = None, precision: str = "fp32",
        trt_cache_dir: str | Path | None = None, cuda_graph: bool = False, io_binding: bool = False,
        spin: bool = True,
    ) -> None:
        super().__init__()
        if cuda_graph and device != "cuda":
            raise InputError(None, f"--cuda-graph needs the ort-cuda backend, not ort-{device}")
        self.path: Path = Path(path)
        self.device = device
        self.threads = threads
        self.spin = spin
        self.precision = precision
        self.trt_cache_dir = trt_cache_dir
        self.cuda_graph = cuda_graph
        self.io_binding = io_binding or cuda_graph
        self.name = f"ort-{device}" + ("+graph" if cuda_graph else "")
        self.providers_in_use: list[str] = []
        self.nodes_per_provider: dict[str, int] | None = None
        self._session: Any = None
        self._output: str | None = None
        self._bound: tuple[Any, Any, Any] | None = None  # (binding, input OrtValue, output OrtValue)

    def _provider_options(self) -> list[tuple[str, dict[str, str]] | str]:
        out: list[tuple[str, dict[str, str]] | str] = []
        for provider in PROVIDERS[self.device]:
            if provider == "TensorrtExecutionProvider":
                out.append((provider, self._trt_options()))
            elif provider == "CUDAExecutionProvider":
                # FP32 computes in FP32: TF32's 10-bit mantissa would be another precision
                cuda = {"use_tf32": "0" if self.precision == "fp32" else "1"}
                out.append((provider, cuda | ({"enable_cuda_graph": "1"} if self.cuda_graph else {})))
            else:
                out.append(provider)
        return out

    def _trt_options(self) -> dict[str, str]:
        """The TensorRT EP builds weakly typed networks on TensorRT 10: the graph's FP16 casts and
        Q/DQ nodes take effect only with the matching precision enabled (no calibration table: the
        scales are in the graph)."""
        # An optimisation profile over batch: engines are not rebuilt for batches inside it.
        options = {f"trt_profile_{key}_shapes": f"{INPUT_NAME}:{n}x{N_SAMPLES}x{len(LEADS)}"
                   for key, n in BATCH_PROFILE.items()}
        if self.precision == "fp16":
            options["trt_fp16_enable"] = "True"
        elif self.precision == "int8":
            options["trt_int8_enable"] = "True"
        if self.trt_cache_dir:
            options |= {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(self.trt_cache_dir),
                        "trt_timing_cache_enable": "True", "trt_timing_cache_path": str(self.trt_cache_dir)}
        return options

    def _activate(self) -> None:
        import onnxruntime as ort

        wanted = PROVIDERS[self.device][0]
        if wanted not in available_providers():
            raise InputError(None, f"onnxruntime here lacks {wanted} (install onnxruntime-gpu for CUDA/TensorRT)")
        if self.device != "cpu":
            preload_cuda_libraries()
        if self.device == "tensorrt":
            preload_tensorrt_libraries()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.threads:
            options.intra_op_num_threads = self.threads
        options.log_severity_level = 3
        if not self.spin:  # idle threads sleep: the CPUs go to the input side between runs
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # Where each node runs (onnxruntime >= 1.24.1; older ones ignore the key). Not
        # session.disable_cpu_ep_fallback: it refuses a session that lists the CPU provider, and
        # onnxruntime places shape nodes (and Q/DQ nodes no GPU provider takes) on the CPU by design.
        options.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
        try:  # enable_fallback=0: a provider that fails to start raises instead of a retry elsewhere
            self._session = ort.InferenceSession(str(self.path), options, providers=self._provider_options(),
                                                 enable_fallback=0)
        except Exception as exc:  # onnxruntime raises its own exception types
            if self.device != "cpu" and self._loads_on_cpu():
                raise MachineError(f"{wanted} on {self.path.name}", _first_line(exc)) from None
            raise InputError(self.path, f"onnxruntime cannot load this model ({_first_line(exc)})") from None
        self._session.disable_fallback()  # a provider failing in run() raises, not a silent rerun on CUDA/CPU
        self.providers_in_use = self._session.get_providers()
        self.nodes_per_provider = self._placement()
        if self.providers_in_use[0] != wanted:  # onnxruntime fell back (to the CPU) with a log line only
            self._session = None
            raise MachineError(f"ort-{self.device}", f"{wanted} did not start; the session would have run on "
                                                     f"{self.providers_in_use[0]}")
        if self.nodes_per_provider is not None and not self.nodes_per_provider.get(wanted):
            self._session = None
            raise MachineError(f"ort-{self.device}", f"{wanted} started but took none of the graph's nodes: "
                                                     f"they run on {self._placement_text()}")
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
            raise InputError(self.path, f"model input is {[i.name for i in inputs]}, expected ['{INPUT_NAME}']")
        self._output = self._session.get_outputs()[0].name
        self._bound = None

    def _placement(self) -> dict[str, int] | None:
        """Nodes per provider, or None where this onnxruntime does not record it."""
        if not hasattr(self._session, "get_provider_graph_assignment_info"):
            return None
        try:
            return count_nodes_per_provider(self._session.get_provider_graph_assignment_info())
        except Exception:  # onnxruntime's own types: recording unsupported here
            return None

    def _placement_text(self) -> str:
        if self.nodes_per_provider is None:
            registered = ", ".join(self.providers_in_use) or self.device
            return f"{registered} (registered; this onnxruntime does not record where nodes run)"
        return ", ".join(f"{name} ({n} nodes)" for name, n in self.nodes_per_provider.items())

    def _loads_on_cpu(self) -> bool:
        import onnxruntime as ort

        try:
            ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        except Exception:  # the file itself is bad
            return False
        return True

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        assert self._session is not None
        try:
            if not self.io_binding:
                return self._session.run([self._output], {INPUT_NAME: batch})[0]
            return self._infer_bound(batch)
        except Exception as exc:  # on a GPU: out of memory, a lost device; the input was checked
            if self.device == "cpu":
                raise
            raise MachineError(f"ort-{self.device} batch of {batch.shape[0]}", _first_line(exc)) from None

    def _infer_bound(self, batch: np.ndarray) -> np.ndarray:
        import onnxruntime as ort

        n = batch.shape[0]
        ort_device = "cuda" if self.device == "cuda" else "cpu"
        if self._bound is None:
            n_out = int(self._session.get_outputs()[0].shape[-1])
            # Buffers of our own: on CPU, ortvalue_from_numpy would borrow the caller's array.
            x = ort.OrtValue.ortvalue_from_shape_and_type(list(batch.shape), np.float32, ort_device, 0)
            y = ort.OrtValue.ortvalue_from_shape_and_type([n, n_out], np.float32, ort_device, 0)
            binding = self._session.io_binding()
            binding.bind_ortvalue_input(INPUT_NAME, x)
            binding.bind_ortvalue_output(self._output, y)
            self._bound = (binding, x, y)
            self.max_batch = n  # the buffers' (and a captured graph's) shape is fixed from here on
        binding, x, y = self._bound
        fixed = x.shape()[0]
        if n < fixed:  # pad: a captured graph replays one shape only
            padded = np.zeros((fixed, *batch.shape[1:]), np.float32)
            padded[:n] = batch
            batch = padded
        x.update_inplace(batch)
        self._session.run_with_iobinding(binding)
        return y.numpy()[:n].copy()

    def _deactivate(self) -> None:
        self._bound = None
        self._session = None
        if self.io_binding:
            self.max_batch = None

    def describe(self) -> str:
        graph = " + CUDA graph" if self.cuda_graph else ""
        tf32 = ""
        if self.precision == "fp32" and self.device == "cuda":
            tf32 = ", TF32 off"
        elif self.precision == "fp32" and self.device == "tensorrt":  # the EP has no option to clear it
            tf32 = ", TF32 may be used on Ampere and newer (TensorRT's default)"
        return f"onnxruntime {self.precision} on {self._placement_text()}{graph}{tf32}"


def onnx_file(manifest: Manifest, precision: str, device: str) -> str | None:
    """The file ort-<device> runs: TensorRT's provider takes the symmetric INT8 file."""
    return manifest.file_for("onnx", precision, "symmetric" if device == "tensorrt" else "default")


def ort_present(manifest: Manifest, precision: str, device: str) -> tuple[bool, str]:
    if precision == "bf16":
        return False, "onnxruntime has no BF16 path on the CPU (the openvino backend has)"
    if manifest.file_for("onnx", precision) is None:
        return False, f"no {precision} ONNX file in the export"
    if device == "tensorrt" and precision == "int8":
        found = onnx_file(manifest, precision, device)
        if found is None or manifest.entry(found).get("variant") != "symmetric":
            return False, ("no symmetric INT8 ONNX file (TensorRT takes zero points of 0 only; "
                           "ecg-edge export --for-tensorrt makes it)")
    return provider_status(PROVIDERS[device][0])


def open_ort(manifest: Manifest, precision: str, options: OpenOptions, device: str) -> OnnxRuntimeBackend:
    name = onnx_file(manifest, precision, device)
    if name is None:
        raise InputError(manifest.folder, f"no {precision} ONNX file in the export")
    path = manifest.verified(name)
    return OnnxRuntimeBackend(path, device=device, threads=options.threads, precision=precision,
                              trt_cache_dir=path.parent / "ort-trt-cache" if device == "tensorrt" else None,
                              cuda_graph=options.cuda_graph, spin=options.spin)


for _device, _kind in (("tensorrt", "gpu"), ("cuda", "gpu"), ("cpu", "cpu")):
    register(BackendSpec(f"ort-{_device}", _kind, functools.partial(ort_present, device=_device),
                         functools.partial(open_ort, device=_device), functools.partial(onnx_file, device=_device),
                         cuda_graph=_device == "cuda"))

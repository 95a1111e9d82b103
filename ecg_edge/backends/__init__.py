"""Backends: one protocol (`ecg_edge.backends.base.Backend`), one module each, chosen by name or
by what is present. `open_backend` reads an export folder's manifest and checks file hashes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ecg_edge.backends.base import Backend
from ecg_edge.errors import InputError

# Fastest first: what `auto` tries. Of the CPU runtimes, `auto` takes the one measured fastest here.
GPU_ORDER = ("tensorrt", "ort-tensorrt", "ort-cuda")
CPU_BACKENDS = ("ort-cpu", "openvino")
AUTO_ORDER = (*GPU_ORDER, *CPU_BACKENDS)
BACKENDS = (*AUTO_ORDER, "keras")


# Backends that live above the runtime (the Keras reference loads models through export/ and
# training/, which the runtime never imports): their module registers a constructor here.
_REGISTERED: dict[str, Callable[[Path, dict[str, Any]], Backend]] = {}


def register_backend(name: str, construct: Callable[[Path, dict[str, Any]], Backend]) -> None:
    _REGISTERED[name] = construct


def backend_present(name: str, manifest: dict[str, Any], precision: str) -> tuple[bool, str]:
    """Whether backend `name` can run `precision` here, and why not."""
    from ecg_edge.manifest import find_file

    if name == "tensorrt":
        from ecg_edge.gpu import tensorrt_status

        if find_file(manifest, "tensorrt", precision) is None:
            return False, f"no {precision} TensorRT engine in the export (ecg-edge export --engine)"
        return tensorrt_status()
    if name == "openvino":
        return _openvino_present(manifest, precision)
    if name.startswith("ort-"):
        from ecg_edge.backends.onnxruntime import PROVIDERS, provider_status

        if precision == "bf16":
            return False, "onnxruntime has no BF16 path on the CPU (the openvino backend has)"

        if find_file(manifest, "onnx", precision) is None:
            return False, f"no {precision} ONNX file in the export"
        if name == "ort-tensorrt" and precision == "int8":
            found = find_file(manifest, "onnx", precision, "symmetric")
            if found is None or manifest["files"][found].get("variant") != "symmetric":
                return False, ("no symmetric INT8 ONNX file (TensorRT takes zero points of 0 only; "
                               "ecg-edge export --for-tensorrt makes it)")
        return provider_status(PROVIDERS[name.removeprefix("ort-")][0])
    if name == "keras":
        try:
            import keras  # noqa: F401
        except ImportError:
            return False, "TensorFlow/Keras is not installed"
        if name not in _REGISTERED:
            return False, "the Keras reference is not loaded (import ecg_edge.training.keras_backend)"
        return True, ""
    return False, f"unknown backend {name!r}"


def _openvino_present(manifest: dict[str, Any], precision: str) -> tuple[bool, str]:
    from ecg_edge.backends.openvino import INFERENCE_PRECISION, bf16_status, openvino_status
    from ecg_edge.manifest import find_file

    ok, why = openvino_status()
    if not ok:
        return ok, why
    if precision not in INFERENCE_PRECISION:
        return False, f"OpenVINO here runs {', '.join(INFERENCE_PRECISION)}; {precision} on a CPU runs as fp32"
    if find_file(manifest, "onnx", "fp32" if precision == "bf16" else precision) is None:
        return False, f"no {precision} ONNX file in the export"
    if precision == "bf16":
        gate = manifest.get("runtime_precisions", {}).get("bf16", {})
        if "refused" in gate:
            return False, f"BF16 was refused at export: {gate['refused']}"
        if not gate.get("parity", {}).get("passed"):
            return False, f"BF16 was not gated at export ({gate.get('why', 'export made before BF16 existed')})"
        return bf16_status()
    return True, ""


def open_backend(
    export_dir: str | Path, backend: str = "auto", precision: str = "fp32", threads: int | None = None,
    cuda_graph: bool = False,
) -> tuple[Backend, dict[str, Any]]:
    """A ready-to-activate backend for an export folder, and the manifest.

    `auto` takes the first present of GPU_ORDER, else the CPU runtime measured fastest on this
    machine for this file and precision (`choice.fastest_cpu_runtime`; why is in `runner.choice`).
    A backend named explicitly that is not present is an error that says why. `cuda_graph` applies
    to ort-cuda only (see OnnxRuntimeBackend).
    """
    from ecg_edge.manifest import load_manifest

    export_dir = Path(export_dir)
    manifest = load_manifest(export_dir)
    choice = ""
    asked = backend
    if backend == "auto":
        reasons, cpu = [], []
        for name in AUTO_ORDER:
            ok, why = backend_present(name, manifest, precision)
            if ok and name in GPU_ORDER:
                backend = name
                break
            if ok:
                cpu.append(name)
            else:
                reasons.append(f"{name}: {why}")
        else:
            if not cpu:
                raise InputError(export_dir, "no backend can run it: " + "; ".join(reasons))
            backend, choice = cpu[0], "the only CPU runtime present"
            if len(cpu) > 1:
                from ecg_edge.backends.choice import fastest_cpu_runtime

                backend, choice = fastest_cpu_runtime(export_dir, manifest, precision, cpu, threads, _construct)
    elif backend not in BACKENDS:
        raise InputError(None, f"unknown backend {backend!r}: choose from auto, {', '.join(BACKENDS)}")
    else:
        ok, why = backend_present(backend, manifest, precision)
        if not ok:
            raise InputError(export_dir, f"backend {backend} cannot run {precision}: {why}")

    if cuda_graph and backend != "ort-cuda":
        how = f"auto took {backend}" + (f" ({choice})" if choice else "") if asked == "auto" else f"{backend} was named"
        raise InputError(None, f"--cuda-graph needs the ort-cuda backend; {how}")
    runner = _construct(export_dir, manifest, backend, precision, threads, cuda_graph)
    runner.choice = choice
    return runner, manifest


def _construct(
    export_dir: Path, manifest: dict[str, Any], backend: str, precision: str, threads: int | None, cuda_graph: bool,
) -> Backend:
    from ecg_edge.manifest import find_file, verified_path

    if backend in _REGISTERED:
        return _REGISTERED[backend](export_dir, manifest)
    if backend == "openvino":
        from ecg_edge.backends.openvino import OpenVinoBackend

        onnx_file = find_file(manifest, "onnx", "fp32" if precision == "bf16" else precision)
        assert onnx_file is not None
        return OpenVinoBackend(verified_path(export_dir, manifest, onnx_file), precision=precision, threads=threads)
    if backend == "tensorrt":
        from ecg_edge.backends.tensorrt import TensorRTBackend

        engine = find_file(manifest, "tensorrt", precision)
        assert engine is not None
        plan = verified_path(export_dir, manifest, engine)
        return TensorRTBackend(plan, manifest["files"][engine], precision=precision)

    from ecg_edge.backends.onnxruntime import OnnxRuntimeBackend

    device = backend.removeprefix("ort-")
    onnx_file = find_file(manifest, "onnx", precision, "symmetric" if device == "tensorrt" else "default")
    assert onnx_file is not None
    path = verified_path(export_dir, manifest, onnx_file)
    return OnnxRuntimeBackend(path, device=device, threads=threads, precision=precision,
                              trt_cache_dir=export_dir / "ort-trt-cache" if device == "tensorrt" else None,
                              cuda_graph=cuda_graph)


__all__ = ["AUTO_ORDER", "BACKENDS", "CPU_BACKENDS", "GPU_ORDER", "Backend", "backend_present", "open_backend",
           "register_backend"]

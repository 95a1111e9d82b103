"""Backends: one protocol (`ecg_edge.backends.base.Backend`), one module each, each registering
one entry (`registry.BackendSpec`) per backend it offers. Here: the order `auto` tries them in, and
the two steps on top of the entries: choosing a backend (`choose_backend`, `auto` included) and
opening it (`open_backend`, which checks the file's hash)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

# Importing a backend's module registers its entry; the Keras reference's (`reference`) stands in
# until ecg_edge.training.keras_backend registers the real one.
from ecg_edge.backends import onnxruntime, openvino, reference, tensorrt  # noqa: F401
from ecg_edge.backends.base import Backend
from ecg_edge.backends.registry import BackendSpec, OpenOptions, register, registered, spec_of
from ecg_edge.errors import InputError
from ecg_edge.manifest import Manifest

# What `auto` tries: the GPU backends fastest first (it takes the first present), then the CPU
# runtimes (it takes the one measured fastest here, `choice.fastest_cpu_runtime`).
AUTO_ORDER = ("tensorrt", "ort-tensorrt", "ort-cuda", "ort-cpu", "openvino")
BACKENDS = (*AUTO_ORDER, reference.NAME)


def _spec(name: str) -> BackendSpec:
    spec = spec_of(name)
    if spec is None:
        raise InputError(None, f"unknown backend {name!r}: choose from auto, {', '.join(known_backends())}")
    return spec


GPU_ORDER = tuple(name for name in AUTO_ORDER if _spec(name).kind == "gpu")
CPU_BACKENDS = tuple(name for name in AUTO_ORDER if _spec(name).kind == "cpu")


def known_backends() -> tuple[str, ...]:
    """BACKENDS, then any backend registered under another name."""
    return (*BACKENDS, *(name for name in registered() if name not in BACKENDS))


def auto_order() -> tuple[str, ...]:
    """What `auto` tries: AUTO_ORDER, then any other registered GPU or CPU backend."""
    extra = (name for name in registered() if name not in BACKENDS and _spec(name).kind != "reference")
    return (*AUTO_ORDER, *extra)


def register_backend(name: str | BackendSpec, construct: Callable[[Path, dict[str, Any]], Backend] | None = None,
                     ) -> None:
    """Register a backend's entry. The older form, a name and `construct(export_dir, manifest dict)`,
    registers a reference backend that is always present."""
    if isinstance(name, BackendSpec):
        register(name)
        return
    if construct is None:
        raise TypeError("register_backend(name, construct) needs construct")
    opener = construct

    def always(manifest: Manifest, precision: str) -> tuple[bool, str]:
        return True, ""

    def open_it(manifest: Manifest, precision: str, options: OpenOptions) -> Backend:
        assert manifest.folder is not None
        return opener(manifest.folder, manifest.data)

    register(BackendSpec(name, "reference", always, open_it))


def _view(manifest: dict[str, Any] | Manifest) -> Manifest:
    return manifest if isinstance(manifest, Manifest) else Manifest(manifest)


def backend_present(name: str, manifest: dict[str, Any] | Manifest, precision: str) -> tuple[bool, str]:
    """Whether backend `name` can run `precision` here, and why not."""
    spec = spec_of(name)
    if spec is None:
        return False, f"unknown backend {name!r}"
    return spec.present(_view(manifest), precision)


def choose_backend(manifest: Manifest, backend: str = "auto", precision: str = "fp32",
                   threads: int | None = None) -> tuple[str, str]:
    """(name, why) of the backend to open: a named one if present (else an error saying why), or
    `auto`'s pick: the first GPU backend present, else the CPU runtime measured fastest here for
    this file and precision (the first time only, that timing opens each CPU runtime). Why is ''
    for a named backend and for a GPU backend taken as the first present."""
    if backend != "auto":
        ok, why = _spec(backend).present(manifest, precision)
        if not ok:
            raise InputError(manifest.folder, f"backend {backend} cannot run {precision}: {why}")
        return backend, ""
    reasons, cpu = [], []
    for name in auto_order():
        spec = _spec(name)
        ok, why = spec.present(manifest, precision)
        if ok and spec.kind == "gpu":
            return name, ""
        if ok:
            cpu.append(name)
        else:
            reasons.append(f"{name}: {why}")
    if not cpu:
        raise InputError(manifest.folder, "no backend can run it: " + "; ".join(reasons))
    if len(cpu) == 1:
        return cpu[0], "the only CPU runtime present"
    from ecg_edge.backends.choice import fastest_cpu_runtime

    model_file = _spec(cpu[0]).model_file(manifest, precision) or ""
    return fastest_cpu_runtime(manifest, precision, cpu, threads, model_file,
                               lambda name: _spec(name).open(manifest, precision, OpenOptions(threads)))


def open_backend(
    export_dir: str | Path, backend: str = "auto", precision: str = "fp32", threads: int | None = None,
    cuda_graph: bool = False, spin: bool = True,
) -> tuple[Backend, dict[str, Any]]:
    """A ready-to-activate backend for an export folder, and the manifest (its dict).

    `backend` is a name or `auto` (see `choose_backend`; why auto took it is in the backend's
    `chosen_because`). A backend named explicitly that is not present is an error that says why.
    `cuda_graph` applies to ort-cuda only (see OnnxRuntimeBackend); `spin` False where input work
    shares the CPUs (see OpenOptions).
    """
    manifest = Manifest.load(export_dir)
    name, because = choose_backend(manifest, backend, precision, threads)
    spec = _spec(name)
    if cuda_graph and not spec.cuda_graph:
        how = f"auto took {name}" + (f" ({because})" if because else "") if backend == "auto" else f"{name} was named"
        takers = " or ".join(n for n in known_backends() if _spec(n).cuda_graph)
        raise InputError(None, f"--cuda-graph needs the {takers} backend; {how}")
    runner = spec.open(manifest, precision, OpenOptions(threads, cuda_graph, spin))
    runner.chosen_because = because
    return runner, manifest.data


__all__ = ["AUTO_ORDER", "BACKENDS", "CPU_BACKENDS", "GPU_ORDER", "Backend", "BackendSpec", "OpenOptions",
           "auto_order", "backend_present", "choose_backend", "known_backends", "open_backend", "register_backend"]

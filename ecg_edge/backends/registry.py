"""The backend registry: one entry per backend, declared and registered by the backend's module.

An entry says what the backend is (`kind`), which export file it runs at a precision, whether it
can run that precision here (and why not) and how to open it. Nothing else needs to know a
backend's name: choosing (`ecg_edge.backends.choose_backend`) and opening (`open_backend`) read
the entries alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ecg_edge.backends.base import Backend
from ecg_edge.manifest import Manifest

KINDS = ("gpu", "cpu", "reference")


@dataclass(frozen=True)
class OpenOptions:
    """How to open a backend: CPU threads (None: all), a CUDA graph where the backend takes one, and
    whether its CPU threads spin between runs: fastest where the backend has the CPUs (nearly) to itself
    (bench; infer on HDF5), slower where costly input work shares them (infer on WFDB and hospital files:
    benchmarks/results/input-workers-2026-12-07-sleeping-threads.md)."""

    threads: int | None = None
    cuda_graph: bool = False
    spin: bool = True


def no_file(manifest: Manifest, precision: str) -> str | None:
    """For a backend that runs none of the export's files (the Keras reference)."""
    return None


@dataclass(frozen=True)
class BackendSpec:
    """One backend. `kind`: 'gpu' (auto takes the first present, in the package's order), 'cpu'
    (auto takes the one measured fastest here) or 'reference' (named only).

    `present(manifest, precision)` -> (ok, why not); `open(manifest, precision, options)` -> a
    backend, not yet active, after checking its file's hash; `model_file(manifest, precision)` ->
    the name of the export file it runs; `cuda_graph`: whether it takes OpenOptions.cuda_graph."""

    name: str
    kind: str
    present: Callable[[Manifest, str], tuple[bool, str]]
    open: Callable[[Manifest, str, OpenOptions], Backend]
    model_file: Callable[[Manifest, str], str | None] = no_file
    cuda_graph: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"backend {self.name!r}: kind {self.kind!r} is not one of {', '.join(KINDS)}")


_SPECS: dict[str, BackendSpec] = {}


def register(spec: BackendSpec) -> BackendSpec:
    """Add or replace (a later registration under the same name wins) a backend's entry."""
    _SPECS[spec.name] = spec
    return spec


def spec_of(name: str) -> BackendSpec | None:
    return _SPECS.get(name)


def registered() -> tuple[str, ...]:
    """Every registered name, in the order of first registration."""
    return tuple(_SPECS)

"""The Keras reference's entry while its module is not loaded.

The reference lives above the runtime (`ecg_edge.training.keras_backend`, which needs TensorFlow);
importing that module registers its own entry over this one. Until then this entry says why the
`keras` backend is not present.
"""

from __future__ import annotations

from ecg_edge.backends.base import Backend
from ecg_edge.backends.registry import BackendSpec, OpenOptions, register
from ecg_edge.errors import InputError
from ecg_edge.manifest import Manifest

NAME = "keras"


def keras_installed() -> tuple[bool, str]:
    try:
        import keras  # noqa: F401
    except ImportError:
        return False, "TensorFlow/Keras is not installed"
    return True, ""


def not_loaded(manifest: Manifest, precision: str) -> tuple[bool, str]:
    ok, why = keras_installed()
    if not ok:
        return ok, why
    return False, "the Keras reference is not loaded (import ecg_edge.training.keras_backend)"


def cannot_open(manifest: Manifest, precision: str, options: OpenOptions) -> Backend:
    raise InputError(manifest.folder, f"backend {NAME} cannot run {precision}: {not_loaded(manifest, precision)[1]}")


STAND_IN = register(BackendSpec(NAME, "reference", not_loaded, cannot_open))

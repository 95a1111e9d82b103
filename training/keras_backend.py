"""Keras: the reference, from the model an export was made from. Needs TensorFlow (the `train` extra).

It lives with the models, above the runtime (which never loads Keras); importing this module
registers its entry with `ecg_edge.backends`, over the runtime's stand-in (the CLI imports it when
`keras` is named)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ecg_edge.backends import BackendSpec, OpenOptions, register_backend
from ecg_edge.backends.base import Backend
from ecg_edge.backends.reference import NAME, keras_installed
from ecg_edge.errors import InputError
from ecg_edge.manifest import Manifest, file_sha256


class KerasBackend(Backend):
    name = "keras"

    def __init__(self, model_path: str | Path) -> None:
        super().__init__()
        self.model_path = self.path = Path(model_path)
        self.info: dict[str, Any] = {}  # task, classes, thresholds: known once activated
        self._model: Any = None

    def _activate(self) -> None:
        try:
            from ecg_edge.training.models import load_keras_model
        except ImportError:  # TensorFlow/Keras missing
            raise InputError(self.model_path, "the keras backend needs TensorFlow: "
                                              "pip install 'ecg-edge[train]'") from None
        _, self._model, self.info = load_keras_model(self.model_path)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self._model(batch, training=False), dtype=np.float32)

    def _deactivate(self) -> None:
        self._model = None

    def describe(self) -> str:
        return f"Keras reference ({self.model_path.name})"


def open_reference(export_dir: Path, manifest: dict[str, Any]) -> KerasBackend:
    """The Keras model an export was made from, if it is still there and unchanged."""
    source = Path(manifest["model"]["source"])
    relative = manifest["model"].get("source_relative")
    if not source.exists() and relative:
        # the export folder and its model moved together
        moved = (Path(export_dir) / relative).resolve()
        source = moved if moved.exists() else source
    if not source.exists():
        raise InputError(source, "the Keras model this export was made from is gone")
    if file_sha256(source) != manifest["model"]["source_sha256"]:
        raise InputError(source, "Keras model changed since the export (sha256 differs): re-export")
    return KerasBackend(source)


def reference_present(manifest: Manifest, precision: str) -> tuple[bool, str]:
    return keras_installed()


def open_keras(manifest: Manifest, precision: str, options: OpenOptions) -> KerasBackend:
    assert manifest.folder is not None
    return open_reference(manifest.folder, manifest.data)


register_backend(BackendSpec(NAME, "reference", reference_present, open_keras))

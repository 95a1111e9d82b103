"""Keras: the reference, from the model an export was made from. Needs TensorFlow (the `train` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ecg_edge.backends.base import Backend
from ecg_edge.errors import InputError


class KerasBackend(Backend):
    name = "keras"

    def __init__(self, model_path: str | Path) -> None:
        super().__init__()
        self.model_path = Path(model_path)
        self.info: dict[str, Any] = {}  # task, classes, thresholds: known once activated
        self._model: Any = None

    def _activate(self) -> None:
        try:
            from ecg_edge.export.onnx_export import load_keras_model
        except ImportError:
            raise InputError(self.model_path, "the keras backend needs TensorFlow: "
                                              "pip install 'ecg-edge[train]'") from None
        self._model, self.info = load_keras_model(self.model_path)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self._model(batch, training=False), dtype=np.float32)

    def _deactivate(self) -> None:
        self._model = None

    def describe(self) -> str:
        return f"Keras reference ({self.model_path.name})"

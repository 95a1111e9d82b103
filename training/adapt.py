"""Batch-norm statistics moved to new data before fine-tuning (AdaBN: Li et al., "Revisiting Batch
Normalization For Practical Domain Adaptation", 2016).

A model pretrained on synthetic ECGs normalises every layer with synthetic ECGs' means and
variances. Fine-tuning on a few hundred real recordings moves those moving averages only a little
(Keras' momentum 0.99: after 100 batches 37% of the synthetic statistics remain), so the model it
validates and ships runs on statistics of neither kind. Here they are replaced by the real data's
own (the mean over its batches) and then held fixed while the weights train.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import keras
import numpy as np


def batch_norm_layers(model: Any) -> list[Any]:
    """Every BatchNormalization layer, nested models included."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        elif hasattr(layer, "layers"):
            found += batch_norm_layers(layer)
    return found


def adapt_batch_norm(model: Any, batches: Iterable[np.ndarray]) -> int:
    """Set the moving mean and variance of every trainable batch-norm layer to the mean of the batches'
    own (forward passes in training mode, no weight changes); a frozen layer keeps what it has, as
    frozen layers do (Keras updates statistics in trainable layers only). Returns the number of batches."""
    layers = [layer for layer in batch_norm_layers(model) if layer.trainable]
    saved = [layer.momentum for layer in layers]
    seen = 0
    try:
        for seen, x in enumerate(batches, start=1):
            for layer in layers:
                layer.momentum = (seen - 1) / seen  # the k-th batch weighs 1/k: a plain mean over batches
            model(x, training=True)
    finally:
        for layer, momentum in zip(layers, saved, strict=True):
            layer.momentum = momentum
    return seen


def freeze_batch_norm(model: Any) -> list[str]:
    """Batch norm in inference mode with its statistics fixed (Keras runs a non-trainable
    BatchNormalization layer in inference mode); the model must be compiled again afterwards.
    Returns the names of the layers it froze (those that were trainable)."""
    frozen = [layer for layer in batch_norm_layers(model) if layer.trainable]
    for layer in frozen:
        layer.trainable = False
    return [layer.name for layer in frozen]

"""What a trained model is, stored beside it as `<model>.json`: task, classes, thresholds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

from ecg_edge.spec import REFERENCE_THRESHOLDS, class_names


class LoadedModel(NamedTuple):
    """A Keras model in memory with where it came from and what it is (task, classes, thresholds)."""

    path: Path
    model: Any
    info: dict[str, Any]


def info_path(model_path: str | Path) -> Path:
    return Path(model_path).with_suffix(".json")


def default_info(task: str, kind: str) -> dict[str, Any]:
    """For a model that carries no info: reference thresholds (six classes) or 0.5 (binary)."""
    classes = class_names(task)
    if task == "six":
        thresholds, source = dict(REFERENCE_THRESHOLDS), "reference (Ribeiro et al. validation set)"
    else:
        thresholds, source = {c: 0.5 for c in classes}, "default 0.5"
    return {"task": task, "kind": kind, "classes": list(classes), "thresholds": thresholds,
            "thresholds_source": source}


def read_model_info(model_path: str | Path, task: str, kind: str) -> dict[str, Any]:
    path = info_path(model_path)
    if path.exists():
        return json.loads(path.read_text())
    return default_info(task, kind)


def write_model_info(model_path: str | Path, info: dict[str, Any]) -> Path:
    from ecg_edge.manifest import write_json_atomic

    path = info_path(model_path)
    write_json_atomic(path, info)
    return path

"""The model home: where `demo` and `train` write and where `export`, `infer`, `bench` look."""

from __future__ import annotations

import os
from pathlib import Path

HOME_MODEL_NAME = "model.keras"


def model_home() -> Path:
    """`$ECG_EDGE_HOME`, default `~/.ecg-edge`."""
    return Path(os.environ.get("ECG_EDGE_HOME") or Path.home() / ".ecg-edge").expanduser()


def home_model_path() -> Path:
    """The trained six-class model that `train` and `demo` write."""
    return model_home() / HOME_MODEL_NAME


def home_export_dir() -> Path:
    """The export folder that `export` writes and `infer`/`bench` read."""
    return model_home() / "export"


def resolve_export_dir(model: Path | None) -> Path:
    """The export folder given, or the model home's; InputError where it holds no manifest."""
    from ecg_edge.errors import InputError

    export_dir = model or home_export_dir()
    if not (export_dir / "manifest.json").exists():
        raise InputError(export_dir, "no export here: run `ecg-edge export` (or `ecg-edge demo`) first")
    return export_dir

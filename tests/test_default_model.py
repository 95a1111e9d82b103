"""The model the package ships: its file and info, and a fresh install that runs it."""

from __future__ import annotations

import json
import sys
from functools import partial

import numpy as np
import pytest
from conftest import SHARED_WFDB
from typer.testing import CliRunner

from ecg_edge.cli import app
from ecg_edge.spec import CLASSES

pytest.importorskip("keras")

from ecg_edge.training.default_model import DEFAULT_MODEL  # noqa: E402

MAX_BYTES = 30 * 10**6
needs_model = pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason=f"{DEFAULT_MODEL} is not in this checkout")


@needs_model
def test_shipped_model_is_small_loads_and_says_where_it_was_scored():
    from ecg_edge.model_info import info_path
    from ecg_edge.training.models import load_keras_model

    assert DEFAULT_MODEL.stat().st_size <= MAX_BYTES
    _, model, info = load_keras_model(DEFAULT_MODEL)
    assert info["classes"] == list(CLASSES) and info["task"] == "six"
    assert all(0.0 < info["thresholds"][c] < 1.0 for c in CLASSES)  # chosen on validation exams, not the default
    assert info["test"]["n"] >= 300 and set(info["test"]["auroc"]) == set(CLASSES)
    assert json.loads(info_path(DEFAULT_MODEL).read_text())["card"] == "docs/model-card.md"
    p = np.asarray(model(np.zeros((1, 4096, 12), np.float32), training=False))
    assert p.shape == (1, 6) and np.all((p >= 0) & (p <= 1))


@needs_model
@pytest.mark.slow  # exports the shipped model (FP32 only here)
def test_fresh_install_infers_with_the_shipped_model(home, monkeypatch):
    from ecg_edge.export import pipeline

    if not SHARED_WFDB.exists():
        pytest.skip("../shared/data/wfdb not present")
    monkeypatch.setattr(pipeline, "ExportOptions", partial(pipeline.ExportOptions, precisions=("fp32",),
                                                           if_offered=()))
    r = CliRunner().invoke(app, ["infer", str(SHARED_WFDB / "HR06000.hea")])
    assert r.exit_code == 0, r.output
    assert "the shipped default model becomes the home model" in r.output
    assert (home / "model.keras").read_bytes() == DEFAULT_MODEL.read_bytes()
    manifest = json.loads((home / "export" / "manifest.json").read_text())
    assert manifest["model"]["source"] == str(home / "model.keras")
    assert manifest["thresholds"] == json.loads(DEFAULT_MODEL.with_suffix(".json").read_text())["thresholds"]


def test_fresh_install_without_tensorflow_is_exit_3(home, monkeypatch):
    if not SHARED_WFDB.exists():
        pytest.skip("../shared/data/wfdb not present")
    monkeypatch.setitem(sys.modules, "ecg_edge.export.pipeline", None)  # as where the train extra is absent
    r = CliRunner().invoke(app, ["infer", str(SHARED_WFDB / "HR06000.hea")])
    assert r.exit_code == 3 and "pip install 'ecg-edge[train]'" in r.output and "Traceback" not in r.output
    assert not (home / "model.keras").exists()


def test_a_mistyped_recording_costs_no_export(home, tmp_path):
    r = CliRunner().invoke(app, ["infer", str(tmp_path / "missing.hea")])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert not (home / "model.keras").exists()

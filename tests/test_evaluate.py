from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SHARED_WFDB, needs_shared, write_code_hdf5
from typer.testing import CliRunner

from ecg_edge.cli import app
from ecg_edge.spec import CLASSES

pytest.importorskip("keras")


@needs_shared
def test_evaluate_export_on_real_records_side_by_side(six_export, tmp_path):
    _, result = six_export
    out = tmp_path / "rep"
    # The records with a '# Dx:' line (00001_lr and s0010_re have none).
    labelled = [str(SHARED_WFDB / f"HR0600{i}.hea") for i in range(10)] + [str(SHARED_WFDB / "JS00001.hea")]
    r = CliRunner().invoke(app, ["evaluate", str(result.out_dir), *labelled, "--precision", "fp32,int8",
                                 "--backend", "ort-cpu", "--bootstrap", "20", "--report", str(out)])
    assert r.exit_code == 0, r.output
    text = (out / "report.md").read_text()
    assert text.startswith("# Side by side") and "fp32 (onnxruntime fp32)" in text and "int8 (" in text
    fp32 = json.loads((out / "report-fp32.json").read_text())
    int8 = json.loads((out / "report-int8.json").read_text())
    assert fp32["n_exams"] == int8["n_exams"] == 11
    # Labels came from the '# Dx:' headers: HR06002 SB, HR06003 ST, JS00001 AF and RBBB.
    positives = {c: fp32["scores"][c]["positives"] for c in CLASSES}
    assert positives == {"1dAVb": 0, "RBBB": 1, "LBBB": 0, "SB": 1, "AF": 1, "ST": 1}
    assert (out / "curves-int8.png").exists()
    # per-exam agreement of INT8 with FP32, counted here from the two reports' probabilities
    thresholds = np.array([fp32["thresholds"][c] for c in CLASSES])
    from ecg_edge.backends import open_backend
    from ecg_edge.backends.base import infer_all
    from ecg_edge.export.heldout import load_ecgs
    from ecg_edge.spec import called

    x, _ = load_ecgs(labelled)
    outputs = {}
    for precision in ("fp32", "int8"):
        runner, _ = open_backend(result.out_dir, "ort-cpu", precision)
        with runner:
            outputs[precision] = called(infer_all(runner, x), thresholds)
    changed = int((outputs["fp32"] != outputs["int8"]).any(axis=1).sum())
    assert f"findings unchanged in {(11 - changed) / 11:.1%} of exams ({11 - changed}/11" in r.output
    assert "## Findings against the reference precision" in text and f"({11 - changed}/11)" in text


def test_evaluate_errors(six_export, tmp_path):
    model_path, result = six_export
    r = CliRunner().invoke(app, ["evaluate", str(model_path), str(tmp_path / "x.h5"), "--precision", "fp32,int8"])
    assert r.exit_code == 2 and "export folder" in r.output
    h5 = tmp_path / "x.h5"

    write_code_hdf5(h5, np.zeros((2, 4096, 12)), exam_ids=[1, 2])
    r = CliRunner().invoke(app, ["evaluate", str(result.out_dir), str(h5)])
    assert r.exit_code == 2 and "'# Dx:' header" in r.output


@needs_shared
def test_unlabelled_record_is_named(six_export):
    _, result = six_export
    r = CliRunner().invoke(app, ["evaluate", str(result.out_dir), str(SHARED_WFDB / "00001_lr.hea")])
    assert r.exit_code == 2 and "00001_lr" in r.output

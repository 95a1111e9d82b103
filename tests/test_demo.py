from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SHARED_WFDB
from typer.testing import CliRunner

from ecg_edge.cli import app

pytest.importorskip("keras")


def _labelled_folder(folder: Path, n: int) -> Path:
    """n synthetic exams in a CODE-layout file with a labels.csv keyed by record, as a real set has."""
    import csv

    from conftest import write_code_hdf5

    from ecg_edge.spec import CLASSES
    from ecg_edge.synthetic import synthesize

    folder.mkdir()
    x, params = synthesize(n, seed=11)
    write_code_hdf5(folder / "exams.h5", x, exam_ids=list(range(len(x))))
    with open(folder / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["record", *CLASSES, "normal"])
        for i, p in enumerate(params):
            six = [p.labels()[c] for c in CLASSES]
            writer.writerow([f"exams.h5#{i}", *six, int(not any(six))])
    return folder


def _shipped() -> Path:
    from ecg_edge.training.default_model import DEFAULT_MODEL

    if not DEFAULT_MODEL.exists():
        pytest.skip(f"{DEFAULT_MODEL} is not in this checkout")
    return DEFAULT_MODEL


@pytest.mark.slow
def test_demo_makes_the_default_model_home_and_scores_where_it_never_trained(home, tmp_path, monkeypatch):
    """The demo at its smallest with a folder labelled by record: the shipped model becomes the home
    model unchanged, the transfer model is fine-tuned from it on the folder's training part, both are
    scored on its test part, the export is gated on its validation and test parts; then infer and bench
    work from the model home."""
    from functools import partial

    from ecg_edge.export import pipeline
    from ecg_edge.export.precision import Int8Recipe
    from ecg_edge.training.corpus import build_corpus
    from ecg_edge.training.default_model import default_parts

    shipped = _shipped()
    monkeypatch.setattr("ecg_edge.training.train.REAL_TRANSFER_EPOCHS", 1)
    # small gate sets and one INT8 recipe: what is checked here is where the exams come from
    monkeypatch.setattr(pipeline, "ExportOptions", partial(pipeline.ExportOptions, min_gate_exams=0,
                                                           n_synthetic_validation=16, n_calibration=32,
                                                           int8_recipes=(Int8Recipe(),)))
    folder = _labelled_folder(tmp_path / "labelled", 60)
    runner = CliRunner()
    demo = runner.invoke(app, ["demo", "--records", str(folder)])
    assert demo.exit_code == 0, demo.output
    for path in ("model.keras", "model.json", "transfer.keras", "export/manifest.json", "export/model.onnx",
                 "reports/default-model/report.md", "reports/transfer/report.md", "results/records.csv"):
        assert (home / path).exists(), path
    assert (home / "model.keras").read_bytes() == shipped.read_bytes()
    parts = default_parts(build_corpus([folder], tmp_path / "cache").rows)
    n_test = sum(p == "test" for p in parts.values())
    n_gated = n_test + sum(p == "validation" for p in parts.values())
    assert f"{n_test} exams of the test part of labelled" in demo.output
    manifest = json.loads((home / "export" / "manifest.json").read_text())
    assert manifest["model"]["source"] == str(home / "model.keras")
    assert manifest["validation"]["read"] == n_gated  # the validation and test parts, nothing trained on
    with open(home / "results" / "records.csv") as f:
        assert sum(1 for _ in f) == 1 + n_test
    r = runner.invoke(app, ["bench", "--batch", "2", "--warmup", "0.1", "--duration", "0.2", "--precision", "fp32"])
    assert r.exit_code == 0, r.output
    assert "random weights" not in r.output and "fp32" in r.output


@pytest.mark.slow
def test_demo_without_labelled_folders_fine_tunes_on_synthetic_ecgs(home, tmp_path, monkeypatch):
    """Recordings without a labels.csv (../shared/data/wfdb) validate the export and are inferred on;
    the transfer model learns from synthetic ECGs. Steps after that choice are stopped early."""
    if not SHARED_WFDB.exists():
        pytest.skip("../shared/data/wfdb not present")
    shipped = _shipped()

    def stop(*args, **kwargs):
        raise SystemExit("stopped after the choice")

    monkeypatch.setattr("ecg_edge.training.train.finetune_model", stop)
    demo = CliRunner().invoke(app, ["demo", "--n", "100", "--records", str(SHARED_WFDB)])
    assert "synthetic ECGs (no labelled real folders given)" in demo.output
    assert (home / "model.keras").read_bytes() == shipped.read_bytes()

from __future__ import annotations

import json

import pytest
from conftest import SHARED_WFDB
from typer.testing import CliRunner

from ecg_edge.cli import app

pytest.importorskip("keras")


@pytest.mark.slow
def test_demo_then_commands_without_paths(home, tmp_path):
    """The demo at its smallest (100 ECGs, 1 epoch), then infer/bench work from the model home."""
    runner = CliRunner()
    args = ["demo", "--n", "100", "--epochs", "1"]
    if SHARED_WFDB.exists():
        args += ["--records", str(SHARED_WFDB)]
    demo = runner.invoke(app, args)
    assert demo.exit_code == 0, demo.output
    for path in ("model.keras", "model.json", "transfer.keras", "export/manifest.json", "export/model.onnx",
                 "reports/six-class/report.md", "reports/transfer/report.md", "results/synthetic.csv"):
        assert (home / path).exists(), path
    manifest = json.loads((home / "export" / "manifest.json").read_text())
    assert manifest["thresholds_source"].startswith("max F1 on")  # the trained model's own thresholds
    out = tmp_path / "r.csv"
    r = runner.invoke(app, ["infer", str(home / "data" / "test.h5"), "-o", str(out)])
    assert r.exit_code == 0, r.output
    with open(out) as f:
        assert sum(1 for _ in f) == 1 + 50
    # A model this small may fail the INT8 gate; the demo says so and goes on with what passed.
    int8_written = "model.int8.onnx" in manifest["files"]
    assert int8_written != ("int8" in manifest["rejected"])
    assert int8_written or "failed their gates" in demo.output
    r = runner.invoke(app, ["bench", "--batch", "2", "--warmup", "0.1", "--duration", "0.2", "--precision", "fp32"])
    assert r.exit_code == 0, r.output
    assert "random weights" not in r.output and "fp32" in r.output

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from ecg_edge.bench import count_flops
from ecg_edge.cli import app
from ecg_edge.timing import bench_backend, percentiles


def keras_layer_flops(model) -> float:
    """Independent count from the Keras layer shapes: 2 x L_out x C_out x K x C_in per Conv1D,
    2 x in x out per Dense."""
    import keras

    total = 0.0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv1D):
            _, length_out, c_out = layer.output.shape
            c_in = layer.input.shape[-1]
            total += 2.0 * length_out * c_out * layer.kernel_size[0] * c_in
        elif isinstance(layer, keras.layers.Dense):
            total += 2.0 * layer.input.shape[-1] * layer.units
    return total


def test_flops_match_layer_shapes(six_export):
    model_path, result = six_export
    keras = pytest.importorskip("keras")
    counted = count_flops(result.out_dir / "model.onnx")
    expected = keras_layer_flops(keras.saving.load_model(model_path))
    assert counted == pytest.approx(expected, rel=1e-6)
    assert 3.6e9 < counted < 3.7e9  # about 3.65 GFLOP per ECG: two per multiply-add of every Conv1D and Dense layer


def test_percentiles_ordered():
    p = percentiles(list(np.random.default_rng(0).exponential(0.01, 500)))
    keys = ["min", "median", "p90", "p95", "p99", "max"]
    assert [p[k] for k in keys] == sorted(p[k] for k in keys)
    assert p["min"] <= p["mean"] <= p["max"]


def _check_schema(doc, backends_expected):
    assert {"cpu", "cores", "onnxruntime"} <= set(doc["environment"])
    assert doc["gflop_per_ecg"] > 0 and doc["cpu_peak_gflops"] > 0
    rows = doc["results"]
    assert {(r["backend"], r["precision"]) for r in rows} >= backends_expected
    for r in rows:
        assert r["throughput_ecg_per_s"] > 0 and r["gflops_per_s"] > 0 and r["runs"] >= 10
        lat = r["latency_ms"]
        order = [lat[k] for k in ("min", "median", "p90", "p95", "p99", "max")]
        assert all(v > 0 for v in lat.values()) and order == sorted(order)
        # Throughput and latency describe the same runs.
        assert r["throughput_ecg_per_s"] == pytest.approx(r["batch"] / lat["mean"] * 1000, rel=1e-6)


def test_bench_json_and_plot(six_export, tmp_path, home):
    _, result = six_export
    out, plot = tmp_path / "b.json", tmp_path / "b.png"
    r = CliRunner().invoke(app, ["bench", "--model", str(result.out_dir), "--batch", "1,2", "--warmup", "0.1",
                                 "--duration", "0.2", "--json", str(out), "--plot", str(plot)])
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    _check_schema(doc, {("ort-cpu", "fp32"), ("ort-cpu", "fp16"), ("ort-cpu", "int8")})
    assert sorted({row["batch"] for row in doc["results"]}) == [1, 2]
    assert plot.stat().st_size > 10_000
    fp32 = [row for row in doc["results"] if row["precision"] == "fp32"]
    assert all(row["share_of_cpu_peak"] > 0 for row in fp32)
    assert (home / "cpu_peak.json").exists()  # the peak is cached per machine


@pytest.mark.slow  # exports random weights (a model in the home, no export)
@pytest.mark.parametrize("bf16", ["offered", "not offered"])
def test_bench_without_export_exits_0_whatever_the_cpu_offers(home, tmp_path, monkeypatch, bf16):
    """Random weights exported with BF16 added where OpenVINO says the CPU offers it (as on an AMX Xeon,
    where its gate failed and took bench down): bench never fails on a gate."""
    pytest.importorskip("keras")
    home.mkdir()
    (home / "model.keras").write_bytes(b"a model not exported: bench measures random weights")
    from test_hardware_facts import LACKS, OFFERS

    capabilities = OFFERS if bf16 == "offered" else LACKS
    monkeypatch.setattr("ecg_edge.backends.openvino.cpu_capabilities", lambda: list(capabilities))
    out = tmp_path / "b.json"
    r = CliRunner().invoke(app, ["bench", "--batch", "1", "--warmup", "0.1", "--duration", "0.2",
                                 "--precision", "fp32", "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert "random weights" in r.output
    _check_schema(json.loads(out.read_text()), {("ort-cpu", "fp32")})


def test_bench_backend_runs_enough(six_export):
    from ecg_edge.backends.onnxruntime import OnnxRuntimeBackend

    _, result = six_export
    with OnnxRuntimeBackend(result.out_dir / "model.int8.onnx", precision="int8") as backend:
        res = bench_backend(backend, batch=2, flops_per_ecg=3.65e9, warmup_s=0.0, duration_s=0.0, min_runs=12)
    assert res.runs == 12 and res.batch == 2 and res.precision == "int8"


def test_bad_batch_exit_2(home):
    r = CliRunner().invoke(app, ["bench", "--batch", "0,x"])
    assert r.exit_code == 2 and "--batch" in r.output


def test_cuda_graph_without_ort_cuda_exit_2(six_export):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime here has CUDA: --cuda-graph is valid")
    _, result = six_export
    r = CliRunner().invoke(app, ["bench", "--model", str(result.out_dir), "--cuda-graph", "--duration", "0.1"])
    assert r.exit_code == 2 and "--cuda-graph runs with the ort-cuda backend" in r.output
    assert "CUDAExecutionProvider" in r.output


def test_bench_table_fits_80_columns_uncut(six_export):
    from rich.console import Console

    from ecg_edge.bench import bench_table, run_matrix

    _, result = six_export
    report = run_matrix(result.out_dir, [1], ["ort-cpu"], ["fp32"], warmup_s=0.0, duration_s=0.0, threads=None)
    row = report["results"][0]
    wide = {"backend": "ort-tensorrt", "precision": "int8", "isa": "AVX512",
            "batch": 256, "throughput_ecg_per_s": 123456.7,
            "latency_ms": {**row["latency_ms"], "median": 6328.2, "p90": 7300.1, "p99": 17330.5},
            "gflops_per_s": 12145.2, "share_of_cpu_peak": 1.05}
    report["results"].append(row | wide)  # the widest values a table may meet
    console = Console(width=80, record=True)
    console.print(bench_table(report))
    text = console.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    for row in report["results"]:
        assert f"{row['throughput_ecg_per_s']:.0f}" in text


def test_bench_output_paths_checked_before_work(six_export, tmp_path):
    _, result = six_export
    (tmp_path / "plot.png").mkdir()
    for args, problem in (
        (["--json", str(tmp_path / "missing" / "b.json")], "output folder does not exist"),
        (["--plot", str(tmp_path / "plot.png")], "is a folder"),
        (["--json", str(tmp_path / "b.txt")], "must end in .json"),
    ):
        r = CliRunner().invoke(app, ["bench", "--model", str(result.out_dir), "--duration", "30", *args])
        assert r.exit_code == 2 and problem in r.output, r.output
        assert "ECG/s" not in r.output  # nothing ran


def test_gpu_check_runs_here_and_says_what_it_skipped(six_export, tmp_path, home):
    """The GPU machine's one command runs on a CPU too: no GPU row, every skip with its reason."""
    import importlib.util
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("gpu_check", root / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = gpu_check
    spec.loader.exec_module(gpu_check)
    _, result = six_export
    before = sorted(p.name for p in result.out_dir.iterdir())
    code = gpu_check.main(["--model", str(result.out_dir), "--out", str(tmp_path / "out"),
                           "--results", str(tmp_path / "results"), "--duration", "0.1"])
    assert code == 0
    [md] = (tmp_path / "out").glob("*.md")
    doc = json.loads(md.with_suffix(".json").read_text())
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has a GPU runtime: the rows are real ones")
    assert doc["results"] == [] and "No GPU backend ran here." in md.read_text()
    skipped = "\n".join(doc["skipped"])
    assert "tensorrt engines: TensorRT is not installed" in skipped
    assert "ort-cuda fp32:" in skipped and "CUDAExecutionProvider" in skipped
    assert "passed" in doc["tests"]["summary"] or "skipped" in doc["tests"]["summary"]
    assert doc["doctor"]["nvidia"].get("missing") or doc["doctor"]["nvidia"].get("gpus")
    assert sorted(p.name for p in result.out_dir.iterdir()) == before  # the user's export is untouched


def test_bench_matrix_keeps_the_samples_and_run_matrix_the_json(tmp_path, monkeypatch):
    from test_infer import tiny_export

    from ecg_edge import bench

    monkeypatch.setattr(bench, "measure_cpu_peak", lambda cache_dir: 100.0)
    export = tiny_export(tmp_path / "tiny")
    args = (export, [1, 2], ["ort-cpu"], ["fp32"], 0.0, 0.0, None)
    matrix = bench.bench_matrix(*args)
    assert [(r.backend, r.batch) for r in matrix.results] == [("ort-cpu", 1), ("ort-cpu", 2)]
    assert all(len(r.samples_ms) == r.runs and r.share_of_cpu_peak is not None for r in matrix.results)
    report = bench.run_matrix(*args)
    assert list(report) == ["environment", "export", "gflop_per_ecg", "cpu_peak_gflops", "results"]
    assert json.loads(json.dumps(report))["results"][0]["backend"] == "ort-cpu"
    with pytest.warns(DeprecationWarning, match=r"bench_matrix\(...\).results"):
        live = report["_results"]
    assert [r.as_dict()["batch"] for r in live] == [row["batch"] for row in report["results"]]
    with pytest.raises(KeyError):
        report["other"]

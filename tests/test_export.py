from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from conftest import SHARED_WFDB, needs_shared

keras = pytest.importorskip("keras")
pytest.importorskip("tf2onnx")
from conftest import FAST  # noqa: E402

from ecg_edge.backends.base import infer_all  # noqa: E402
from ecg_edge.backends.onnxruntime import OnnxRuntimeBackend  # noqa: E402
from ecg_edge.errors import InputError  # noqa: E402
from ecg_edge.export.heldout import load_ecgs  # noqa: E402
from ecg_edge.export.pipeline import ExportGateError, ExportOptions, export_model  # noqa: E402
from ecg_edge.export.precision import Int8Recipe  # noqa: E402
from ecg_edge.gpu import tensorrt_status  # noqa: E402
from ecg_edge.manifest import load_manifest, sha256_file, verified_path  # noqa: E402
from ecg_edge.spec import called  # noqa: E402
from ecg_edge.training.models import build_binary, build_ribeiro, build_transfer, load_keras_model  # noqa: E402


def _save(model, path):
    model.save(path)
    return path


def test_six_class_export_files_and_manifest(six_export):
    _, result = six_export
    out = result.out_dir
    manifest = load_manifest(out)
    assert set(manifest["files"]) == {"model.onnx", "model.fp16.onnx", "model.int8.onnx"}
    for name, entry in manifest["files"].items():
        assert sha256_file(out / name) == entry["sha256"]
        assert entry["bytes"] == (out / name).stat().st_size
    assert manifest["output"]["classes"] == ["1dAVb", "RBBB", "LBBB", "SB", "AF", "ST"]
    assert manifest["input"]["shape"] == [None, 4096, 12] and manifest["input"]["units"] == "mV"
    assert manifest["thresholds"]["AF"] == 0.390
    assert {"onnx", "onnxruntime", "tf2onnx", "tensorflow"} <= set(manifest["tools"])
    assert manifest["calibration"]["n"] == 32
    cal, val = manifest["calibration"], manifest["validation"]
    # the real records split three ways, disjoint: calibration, recipe choice, gate
    assert cal["real"] + val["choice"]["real"] + val["gate"]["real"] == val["read"]
    assert cal["real"] + cal["synthetic"] == 32
    assert manifest["validation_source"] == ("real and synthetic" if val["gate"]["real"] else "synthetic")
    assert manifest["model"]["source"].startswith("/")
    sizes = {e["precision"]: e["bytes"] for e in manifest["files"].values()}
    assert sizes["fp16"] < 0.6 * sizes["fp32"] and sizes["int8"] < 0.35 * sizes["fp32"]
    assert not list(out.glob(".export-*"))
    assert "MaxPool float" in manifest["files"]["model.int8.onnx"]["recipe"]  # the CPU flavour's choice
    candidates = manifest["files"]["model.int8.onnx"]["candidates"]
    assert len(candidates) == 2 and {("first conv float" in c["recipe"]) for c in candidates} == {True, False}
    assert sum(bool(c.get("chosen")) for c in candidates) == 1
    assert all(c["choice"]["n_exams"] == val["choice"]["real"] + 24 and c["ms_per_exam"] > 0 for c in candidates)
    # the stem's and the four in-block BatchNorms fold into their Conv1Ds; the four after a residual
    # Add cannot (the sum also feeds the next skip path); the stem reads 16 channels, 4 of them zero
    assert manifest["graph_rewrites"] == {"batchnorm_folded_into_conv": 5, "relu_moved_before_squeeze": 5,
                                          "stem_channels_padded": 1}
    kinds = [n.op_type for n in onnx.load(out / "model.onnx").graph.node]
    assert kinds.count("Conv") == 13 and kinds.count("Mul") == 4


@needs_shared
def test_fp32_parity_on_real_records(six_export):
    model_path, result = six_export
    x, ids = load_ecgs([SHARED_WFDB])
    assert len(ids) == 13
    reference = keras.saving.load_model(model_path).predict(x, verbose=0)
    with OnnxRuntimeBackend(result.out_dir / "model.onnx") as backend:
        got = infer_all(backend, x)
    assert np.abs(reference - got).max() < 1e-4
    parity = result.manifest["files"]["model.onnx"]["parity"]
    gate = result.manifest["validation"]["gate"]
    assert parity["passed"] and parity["max_abs_diff"] < 1e-4 and parity["n_exams"] == gate["real"] + 24
    assert 0 < gate["real"] < 13  # the gate has real records, but not those calibration or the choice took


@needs_shared
def test_fp16_and_int8_agree_with_fp32_on_findings(six_export):
    _, result = six_export
    x, _ = load_ecgs([SHARED_WFDB])
    thresholds = np.array(list(result.manifest["thresholds"].values()))
    outputs = {}
    for name in ("model.onnx", "model.fp16.onnx", "model.int8.onnx"):
        with OnnxRuntimeBackend(result.out_dir / name) as backend:
            outputs[name] = infer_all(backend, x)
    fp32 = called(outputs["model.onnx"], thresholds)
    assert np.abs(outputs["model.fp16.onnx"] - outputs["model.onnx"]).max() < 2e-2
    for name in ("model.fp16.onnx", "model.int8.onnx"):
        assert (called(outputs[name], thresholds) == fp32).mean() >= 0.9
        parity = result.manifest["files"][name]["parity"]
        assert parity["exam_agreement"] >= parity["tolerance"]["min_exam_agreement"]
        assert parity["exams_changed"] == round(parity["n_exams"] * (1 - parity["exam_agreement"]))
    assert result.manifest["files"]["model.fp16.onnx"]["parity"]["tolerance"]["min_exam_agreement"] == 0.995


def test_corrupted_file_refused_by_hash(six_export, tmp_path):
    _, result = six_export
    copy = tmp_path / "export"
    shutil.copytree(result.out_dir, copy)
    manifest = load_manifest(copy)
    assert verified_path(copy, manifest, "model.int8.onnx").exists()
    with open(copy / "model.int8.onnx", "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02")
    with pytest.raises(InputError, match="sha256 does not match"):
        verified_path(copy, manifest, "model.int8.onnx")
    (copy / "model.fp16.onnx").unlink()
    with pytest.raises(InputError, match="missing"):
        verified_path(copy, manifest, "model.fp16.onnx")


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["binary", "transfer"])
def test_binary_and_transfer_export(tmp_path, variant):
    keras.utils.set_random_seed(1)
    model = build_binary() if variant == "binary" else build_transfer(build_ribeiro())
    path = _save(model, tmp_path / f"{variant}.keras")
    result = export_model(load_keras_model(path), tmp_path / "out", ExportOptions(precisions=("fp32",), **FAST))
    manifest = result.manifest
    assert manifest["model"]["kind"] == variant and manifest["output"]["classes"] == ["abnormal"]
    assert manifest["output"]["name"] == "abnormal"
    assert manifest["files"]["model.onnx"]["parity"]["max_abs_diff"] < 1e-4
    x = np.random.default_rng(0).normal(0, 0.3, size=(3, 4096, 12)).astype(np.float32)
    with OnnxRuntimeBackend(tmp_path / "out" / "model.onnx") as backend:
        assert np.abs(backend.infer(x) - model.predict(x, verbose=0)).max() < 1e-4


@pytest.mark.slow
def test_failed_gate_writes_nothing(six_model, tmp_path):
    model_path = six_model
    out = tmp_path / "out"
    with pytest.raises(ExportGateError, match="FP32 ONNX failed its gate"):
        export_model(load_keras_model(model_path), out, ExportOptions(precisions=("fp32",), fp32_atol=0.0, **FAST))
    assert list(out.iterdir()) == []


@pytest.mark.slow
def test_a_killed_exports_staging_folder_is_removed_by_the_next(six_model, tmp_path):
    from stale_staging import plant_stale

    out = tmp_path / "out"
    killed = plant_stale(out, "export")
    with pytest.raises(ExportGateError):  # the cheapest export there is: it stops at FP32's gate
        export_model(load_keras_model(six_model), out, ExportOptions(precisions=("fp32",), fp32_atol=0.0, **FAST))
    assert not killed.exists() and list(out.iterdir()) == []


@pytest.mark.slow
def test_failed_int8_gate_keeps_the_others(six_model, tmp_path):
    model_path = six_model
    out = tmp_path / "out"
    # one INT8 candidate: the gate (more than every exam) fails whichever recipe is chosen
    opts = ExportOptions(precisions=("fp32", "int8"), min_exam_agreement={"int8": 1.01},
                         **FAST | {"int8_recipes": (Int8Recipe(method="percentile"),)})
    with pytest.raises(ExportGateError, match="int8"):
        export_model(load_keras_model(model_path), out, opts)
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.onnx"} and "int8" in manifest["rejected"]
    assert not (out / "model.int8.onnx").exists()


def test_cli_export_errors(tmp_path, home):
    from typer.testing import CliRunner

    from ecg_edge.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["export", str(tmp_path / "missing.keras")])  # a fresh home: the default model
    assert result.exit_code == 2 and "no such model" in result.output
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"garbage")
    result = runner.invoke(app, ["export", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "not a loadable Keras model" in result.output
    assert not (tmp_path / "o").exists()


def test_engine_command_without_tensorrt_exits_3(six_export):
    if tensorrt_status()[0]:
        pytest.skip("TensorRT and a GPU are present: engines build here")
    from typer.testing import CliRunner

    from ecg_edge.cli import app

    _, result = six_export
    before = sorted(p.name for p in result.out_dir.iterdir())
    r = CliRunner().invoke(app, ["engine", "--model", str(result.out_dir)])
    assert r.exit_code == 3 and "TensorRT is not installed" in r.output
    assert sorted(p.name for p in result.out_dir.iterdir()) == before


def test_engine_without_tensorrt_exits_3(six_model, tmp_path):
    usable, reason = tensorrt_status()
    if usable:
        pytest.skip("TensorRT and a GPU are present: the engine test below runs instead")
    from typer.testing import CliRunner

    from ecg_edge.cli import app

    model_path = six_model
    result = CliRunner().invoke(app, ["export", str(model_path), "--out", str(tmp_path / "o"), "--engine"])
    assert result.exit_code == 3
    assert "--engine" in result.output and "tensorrt" in result.output.lower()
    assert not (tmp_path / "o").exists()


@pytest.mark.gpu
@pytest.mark.slow
def test_tensorrt_engines(six_model, tmp_path):
    usable, reason = tensorrt_status()
    if not usable:
        pytest.skip(reason)
    from conftest import RANDOM_WEIGHT_GATES

    model_path = six_model
    options = ExportOptions(engine=True, max_batch=64, min_exam_agreement=RANDOM_WEIGHT_GATES | {"int8": 0.6}, **FAST)
    result = export_model(load_keras_model(model_path), tmp_path / "out", options)
    files = result.manifest["files"]
    assert {"model.fp32.plan", "model.fp16.plan", "model.int8.plan", "model.int8.sym.onnx"} <= set(files)
    assert files["model.fp32.plan"]["parity"]["max_abs_diff"] < 1e-3
    assert list((tmp_path / "out").glob("timing-*-trt*.cache"))  # named by GPU and TensorRT version


def test_load_ecgs_limit_and_scale(tmp_path):
    from conftest import write_code_hdf5

    x = np.random.default_rng(0).normal(size=(150, 4096, 12)).astype(np.float32)
    h5 = write_code_hdf5(tmp_path / "e.h5", x, exam_ids=np.arange(150))
    got, ids = load_ecgs([h5], limit=70, scale=0.5)
    assert got.shape == (70, 4096, 12) and ids == [str(i) for i in range(70)]
    assert np.allclose(got, x[:70] * 0.5)


@pytest.mark.slow
def test_for_tensorrt_writes_and_gates_the_symmetric_int8_file(six_model, tmp_path):
    from conftest import RANDOM_WEIGHT_GATES

    from ecg_edge.export.tensorrt_check import check_tensorrt_onnx

    model_path = six_model
    out = tmp_path / "out"
    # symmetric activations spend half of int8's range on the negative side that ReLU outputs never
    # reach: on random weights 16 of 24 exams keep their findings, so the gate here is set under that
    options = ExportOptions(precisions=("fp32", "fp16", "int8"), for_tensorrt=True,
                            min_exam_agreement=RANDOM_WEIGHT_GATES | {"int8": 0.6}, **FAST)
    result = export_model(load_keras_model(model_path), out, options)
    files = result.manifest["files"]
    sym = files["model.int8.sym.onnx"]
    assert sym["variant"] == "symmetric" and "bias float" in sym["recipe"]
    assert sym["parity"]["passed"] and sym["parity"]["n_exams"] == files["model.onnx"]["parity"]["n_exams"]
    assert "--stronglyTyped" in sym["trtexec"]["tensorrt10"] and "model.int8.sym.onnx" in sym["trtexec"]["tensorrt11"]
    assert "trtexec" in files["model.fp16.onnx"] and "trtexec" not in files["model.int8.onnx"]
    assert check_tensorrt_onnx(out / "model.int8.sym.onnx") == []
    # the CPU file (uint8 activations, int32 biases) is exactly what TensorRT would refuse
    assert any("uint8" in p or "int32" in p for p in check_tensorrt_onnx(out / "model.int8.onnx"))


def test_keras_backend_finds_the_model_when_the_export_moved(six_export, tmp_path):
    from ecg_edge.training.keras_backend import open_reference

    model_path, result = six_export
    moved = tmp_path / "moved"
    shutil.copytree(model_path.parent, moved)
    manifest = load_manifest(moved / "export")
    manifest["model"]["source"] = str(tmp_path / "gone" / model_path.name)  # as if the old place were deleted
    backend = open_reference(moved / "export", manifest)
    assert backend.model_path.resolve() == (moved / model_path.name).resolve()
    manifest["model"].pop("source_relative")
    with pytest.raises(InputError, match="is gone"):
        open_reference(moved / "export", manifest)


def test_dla_with_fp32_refused_before_work(six_model, tmp_path):
    model_path = six_model
    with pytest.raises(InputError, match="DLA runs FP16 and INT8 only"):
        export_model(load_keras_model(model_path), tmp_path / "o",
                     ExportOptions(engine=True, dla_core=0, precisions=("fp32", "int8"), **FAST))
    assert not (tmp_path / "o").exists()


def test_export_table_fits_80_columns_uncut(six_export):
    from rich.console import Console

    from ecg_edge.export.pipeline import export_table

    _, result = six_export
    console = Console(width=80, record=True)
    console.print(export_table(result.manifest, result.out_dir))
    text = console.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    for name, entry in result.manifest["files"].items():
        assert name in text and f"{entry['parity']['exam_agreement']:.1%}" in text

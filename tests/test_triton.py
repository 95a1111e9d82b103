"""The Triton model repository, each config parsed with Triton's own ModelConfig schema."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from ecg_edge.cli import app
from ecg_edge.manifest import load_manifest, sha256_file

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
text_format = pytest.importorskip("google.protobuf.text_format")


def _parse(path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_repository_from_an_export(six_export, tmp_path):
    _, result = six_export
    repo = tmp_path / "repo"
    r = CliRunner().invoke(app, ["triton", "--model", str(result.out_dir), "--out", str(repo), "--trt-accelerator"])
    assert r.exit_code == 0, r.output
    manifest = load_manifest(result.out_dir)
    assert sorted(p.name for p in repo.iterdir()) == ["ecg_fp16", "ecg_fp32", "ecg_int8"]
    for entry in manifest["files"].values():
        folder = repo / f"ecg_{entry['precision']}"
        config = _parse(folder / "config.pbtxt")  # a field Triton would refuse fails here
        assert config.name == folder.name and config.platform == "onnxruntime_onnx"
        assert config.max_batch_size == 256
        assert list(config.dynamic_batching.preferred_batch_size) == [64, 256]
        [inp], [out] = config.input, config.output
        assert inp.name == "signal" and list(inp.dims) == [4096, 12]
        assert inp.data_type == model_config_pb2.TYPE_FP32
        assert out.name == "abnormalities" and list(out.dims) == [6] and out.label_filename == "labels.txt"
        assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
        accelerators = config.optimization.execution_accelerators.gpu_execution_accelerator
        if entry["precision"] == "int8":  # the CPU INT8 file (uint8, int32 biases): TensorRT refuses it
            assert entry.get("variant") != "symmetric" and not accelerators
        else:
            [accelerator] = accelerators
            assert accelerator.name == "tensorrt"
            assert accelerator.parameters["precision_mode"] == {"fp32": "FP32", "fp16": "FP16"}[entry["precision"]]
        assert sha256_file(folder / "1" / "model.onnx") == entry["sha256"]
        assert (folder / "labels.txt").read_text().split() == manifest["output"]["classes"]


def test_tensorrt_accelerator_only_on_files_tensorrt_takes(six_export):
    """The symmetric INT8 file gets the TensorRT accelerator in INT8; the asymmetric CPU file none."""
    from ecg_edge.export.triton import config_text

    _, result = six_export
    manifest = load_manifest(result.out_dir)
    for variant, expected in (("symmetric", ["INT8"]), ("default", []), (None, [])):
        entry = {"format": "onnx", "precision": "int8"} | ({"variant": variant} if variant else {})
        config = text_format.Parse(config_text("ecg_int8", entry, manifest, "gpu", True),
                                   model_config_pb2.ModelConfig())
        modes = [a.parameters["precision_mode"]
                 for a in config.optimization.execution_accelerators.gpu_execution_accelerator]
        assert modes == expected, variant
    fp16 = text_format.Parse(config_text("ecg_fp16", {"format": "onnx", "precision": "fp16"}, manifest, "gpu", True),
                             model_config_pb2.ModelConfig())
    [accelerator] = fp16.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == "FP16"


def test_plan_models_and_cpu_instances(six_export, tmp_path):
    """An engine in the manifest becomes a tensorrt_plan model batched to its profile's end."""
    import json
    import shutil

    from ecg_edge.export.triton import config_text, write_triton_repository

    _, result = six_export
    export = tmp_path / "export"
    shutil.copytree(result.out_dir, export)
    manifest = json.loads((export / "manifest.json").read_text())
    entry = {"format": "tensorrt", "precision": "fp16", "variant": "default", "profile": {"min": 1, "opt": 16,
                                                                                         "max": 32}}
    config = text_format.Parse(config_text("ecg_trt_fp16", entry, manifest, "cpu", True),
                               model_config_pb2.ModelConfig())
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 32
    assert list(config.dynamic_batching.preferred_batch_size) == [32]
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert not config.optimization.execution_accelerators.gpu_execution_accelerator
    names = write_triton_repository(export, tmp_path / "cpu-repo", instances="cpu")
    for name in names:
        parsed = _parse(tmp_path / "cpu-repo" / name / "config.pbtxt")
        assert parsed.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU


def test_repository_target_checked_before_work(six_export, tmp_path):
    _, result = six_export
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "something").write_text("x")
    r = CliRunner().invoke(app, ["triton", "--model", str(result.out_dir), "--out", str(taken)])
    assert r.exit_code == 2 and "not an empty folder" in r.output
    r = CliRunner().invoke(app, ["triton", "--model", str(result.out_dir), "--out", str(tmp_path / "no" / "repo")])
    assert r.exit_code == 2 and "does not exist" in r.output
    r = CliRunner().invoke(app, ["export", "--out", str(tmp_path / "e"), "--triton", str(taken)])
    assert r.exit_code == 2 and not (tmp_path / "e").exists()


def test_a_killed_runs_staging_folder_is_removed_by_the_next(tmp_path):
    """No model needed: a manifest naming one file is an export to write a repository from."""
    import json

    from stale_staging import plant_stale

    from ecg_edge.export.triton import write_triton_repository

    export = tmp_path / "export"
    export.mkdir()
    (export / "model.onnx").write_bytes(b"onnx bytes")
    classes = ["abnormal"]
    manifest = {"format": 1, "model": {"kind": "binary"}, "input": {"name": "signal"},
                "output": {"name": "abnormal", "classes": classes}, "thresholds": {"abnormal": 0.5},
                "files": {"model.onnx": {"format": "onnx", "precision": "fp32", "variant": "default",
                                         "sha256": sha256_file(export / "model.onnx")}}}
    (export / "manifest.json").write_text(json.dumps(manifest))
    killed = plant_stale(tmp_path, "triton")
    assert write_triton_repository(export, tmp_path / "repo") == ["ecg_fp32"]
    assert not killed.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["export", "repo"]
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["ecg_fp32"]
    assert _parse(tmp_path / "repo" / "ecg_fp32" / "config.pbtxt").name == "ecg_fp32"

"""The NVIDIA-stack probe: what it says where TensorRT or a GPU is missing, and how it reads
cuda-python's (error, value...) results. The GPU paths themselves are tested with -m gpu."""

from __future__ import annotations

import enum
import importlib.util

import numpy as np
import pytest

from ecg_edge.gpu import check, tensorrt_status


class FakeError(enum.IntEnum):  # shaped like cuda-python's cudaError_t
    cudaSuccess = 0
    cudaErrorNoDevice = 100


def test_check_unwraps_results_and_raises_on_errors():
    assert check((FakeError.cudaSuccess, 7)) == 7
    assert check((0, 1, 2)) == (1, 2)
    with pytest.raises(RuntimeError, match="cudaErrorNoDevice"):
        check((FakeError.cudaErrorNoDevice, 0))


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_status_names_what_is_missing():
    usable, reason = tensorrt_status()
    assert not usable
    assert "TensorRT is not installed" in reason and "ecg-edge[tensorrt]" in reason


def test_nvidia_smi_and_jetson_text_parsed():
    from ecg_edge.gpu import JETPACK_OF_L4T, parse_nvidia_smi, parse_nvpmodel, parse_tegra_release

    facts = parse_nvidia_smi("NVIDIA H100 80GB HBM3, 9.0, 81559, 580.65.06\nNVIDIA H200, 9.0, 143771, 580.65.06\n",
                             "| NVIDIA-SMI 580.65.06   Driver Version: 580.65.06   CUDA Version: 13.0     |")
    assert facts["driver"] == "580.65.06" and facts["cuda_driver_api"] == "13.0"
    assert [g["name"] for g in facts["gpus"]] == ["NVIDIA H100 80GB HBM3", "NVIDIA H200"]
    assert facts["gpus"][0] == {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "memory_gib": 79.6}
    assert parse_tegra_release("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64") \
        == "36.4.3"
    assert parse_tegra_release("garbage") is None
    assert parse_nvpmodel("NV Power Mode: MAXN_SUPER\n2\n") == "MAXN_SUPER"
    assert JETPACK_OF_L4T["36.4.3"] == "6.2"


def test_provider_listed_but_not_starting_is_not_present(monkeypatch):
    """onnxruntime-gpu lists CUDA where it cannot start: the probe's answer, not the list, decides."""
    import onnxruntime as ort

    from ecg_edge.backends import onnxruntime as ort_backend

    ort_backend.provider_status.cache_clear()
    monkeypatch.setattr(ort_backend, "available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    ok, why = ort_backend.provider_status("CUDAExecutionProvider")
    ort_backend.provider_status.cache_clear()
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: the probe's other branch applies")
    assert not ok and "CUDAExecutionProvider" in why and ("does not start" in why or "ran on" in why)


def test_machine_failure_exits_3(tmp_path, monkeypatch):
    """A machine that cannot run the work (here: the provider check fails as on a GPU host without
    cuDNN) exits 3 with the library's message; bad input stays exit 2."""
    from typer.testing import CliRunner

    from ecg_edge.cli import app
    from ecg_edge.errors import MachineError

    def no_cudnn(*args, **kwargs):
        raise MachineError("CUDAExecutionProvider on model.onnx", "libcudnn.so.9: cannot open shared object file")

    monkeypatch.setattr("ecg_edge.cli.resolve_export_dir", no_cudnn)
    result = CliRunner().invoke(app, ["infer", str(tmp_path / "x.h5")])
    assert result.exit_code == 3 and "libcudnn.so.9" in result.output and "Traceback" not in result.output


# ---- on a machine with an NVIDIA GPU (pytest -m gpu); each skips here with its reason ----


def _providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def _reference(export_dir, x):
    from ecg_edge.backends import open_backend
    from ecg_edge.backends.base import infer_all

    runner, _ = open_backend(export_dir, "ort-cpu", "fp32")
    with runner:
        return infer_all(runner, x, batch=16)


@pytest.fixture
def gpu_export(request, tmp_path):
    """An export folder for the GPU tests, copied so that engines can be added to it:
    $ECG_EDGE_TEST_EXPORT (benchmarks/gpu_check.py passes one, since GPU machines may have no
    TensorFlow), else the session's random-weight export (needs TensorFlow to make)."""
    import os
    import shutil
    from pathlib import Path

    given = os.environ.get("ECG_EDGE_TEST_EXPORT")
    if given:
        source = Path(given)
    else:
        pytest.importorskip("keras", reason="no TensorFlow to make an export, and $ECG_EDGE_TEST_EXPORT is unset")
        source = request.getfixturevalue("six_export")[1].out_dir
    copy = tmp_path / "export"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("*.plan", "timing.cache", ".export-*"))
    return copy


@pytest.mark.gpu
def test_ort_cuda_and_its_cuda_graph_match_cpu(request):
    if "CUDAExecutionProvider" not in _providers():
        pytest.skip("onnxruntime here has no CUDAExecutionProvider (pip install onnxruntime-gpu)")
    export = request.getfixturevalue("gpu_export")  # an export only where the test runs
    from ecg_edge.backends import open_backend
    from ecg_edge.synthetic import synthesize

    x, _ = synthesize(40, seed=11)
    expected = _reference(export, x)
    for graph in (False, True):
        runner, _ = open_backend(export, "ort-cuda", "fp32", cuda_graph=graph)
        with runner:
            assert runner.providers_in_use[0] == "CUDAExecutionProvider"  # no silent CPU fallback
            got = np.concatenate([runner.infer(x[i:i + 16]) for i in range(0, 40, 16)])  # 16, 16, 8 padded
        assert np.abs(got - expected).max() < 1e-3, graph  # TF32 is off for FP32


@pytest.mark.gpu
def test_tensorrt_backend_and_ep_each_precision(request, tmp_path):
    from ecg_edge.gpu import tensorrt_status

    usable, reason = tensorrt_status()
    if not usable:
        pytest.skip(reason)
    out = request.getfixturevalue("gpu_export")
    # built here, gated against FP32 on the CPU (random weights: the INT8 gate is lowered, see conftest)
    from conftest import RANDOM_WEIGHT_GATES

    from ecg_edge.backends import backend_present, open_backend
    from ecg_edge.backends.base import infer_all
    from ecg_edge.bench import bench_backend
    from ecg_edge.export.pipeline import ExportOptions, add_engines
    from ecg_edge.spec import REFERENCE_THRESHOLDS, called
    from ecg_edge.synthetic import synthesize

    manifest = add_engines(out, ExportOptions(precisions=("fp32", "fp16", "int8"), engine=True, max_batch=64,
                                              min_exam_agreement=RANDOM_WEIGHT_GATES | {"int8": 0.6}))
    assert {"model.fp32.plan", "model.fp16.plan"} <= set(manifest["files"])
    assert (out / "timing.cache").exists()
    x, _ = synthesize(40, seed=12)
    expected = _reference(out, x)
    thresholds = np.array(list(REFERENCE_THRESHOLDS.values()))
    for backend in ("tensorrt", "ort-tensorrt"):
        for precision in ("fp32", "fp16", "int8"):
            ok, why = backend_present(backend, manifest, precision)
            if not ok:  # INT8 needs the symmetric file; the TensorRT EP needs onnxruntime-gpu
                assert precision == "int8" or "TensorrtExecutionProvider" in why, why
                continue
            runner, _ = open_backend(out, backend, precision)
            with runner:
                got = infer_all(runner, x, batch=16)
                if backend == "tensorrt":
                    row = bench_backend(runner, 16, 3.65e9, warmup_s=0.2, duration_s=0.5)
                    assert row.compute_ms is not None and row.compute_ms["median"] <= row.latency_ms["median"]
                else:
                    assert runner.providers_in_use[0] == "TensorrtExecutionProvider"
            agree = (called(got, thresholds) == called(expected, thresholds)).mean()
            limit = {"fp32": 1e-3, "fp16": 2e-2, "int8": 0.2}[precision]
            assert np.abs(got - expected).max() < limit and agree >= 0.95, (backend, precision)

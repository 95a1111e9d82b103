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
    usable, reason = tensorrt_status(tegra_release="")  # not a Jetson
    assert not usable
    assert "TensorRT is not installed" in reason and "ecg-edge[tensorrt]" in reason


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_status_on_a_jetson_points_at_jetpacks_bindings():
    """JetPack's TensorRT Python bindings are an apt package for the system Python: a plain venv
    cannot import them."""
    usable, reason = tensorrt_status(tegra_release="# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic")
    assert not usable and "--system-site-packages" in reason and "cuda-python 12" in reason
    assert "TensorRT is not installed" not in reason


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_build_and_run_without_tensorrt_are_machine_errors():
    from ecg_edge.errors import MachineError
    from ecg_edge.export.tensorrt_engine import build_engine

    with pytest.raises(MachineError, match="TensorRT"):
        build_engine("model.onnx", "model.plan")


def test_tensorrt_before_10_refused_with_the_jetpack_that_has_10():
    """JetPack 6.0 ships TensorRT 8.6 (no strongly typed networks): named, not a parse error later."""
    from ecg_edge.gpu import parse_version, tensorrt_version_problem

    assert parse_version("10.3.0.30") == (10, 3, 0, 30) and parse_version("11.4.1") == (11, 4, 1)
    assert parse_version("garbage") is None
    for old in ("8.6.2.3", "8.5.2", "9.3.0.post12.dev1"):
        problem = tensorrt_version_problem(old)
        assert problem and "needs TensorRT >= 10 (JetPack >= 6.1)" in problem and old in problem
    for fine in ("10.0.1", "10.3.0.30", "10.13.2.6", "11.4.1.3"):
        assert tensorrt_version_problem(fine) is None
    assert "cannot read" in (tensorrt_version_problem("") or "")


def test_dla_support_follows_nvidias_release_notes():
    """10.0-10.7 build for the DLA; 10.7 was the last 10.x with it; 11.0-11.4.0 have none on Jetson;
    11.4.1 brings it back (AGX Orin, JetPack >= 7.2.2)."""
    from ecg_edge.gpu import dla_support

    assert dla_support("10.3.0.30") == (True, "")  # JetPack 6.1 / 6.2
    assert dla_support("10.7.0.23")[0]
    for none in ("10.8.0.43", "10.13.2.6", "10.16.1", "11.0.0", "11.3.0", "11.4.0.106"):
        ok, why = dla_support(none)
        assert not ok and "10.7 was the last 10.x" in why and none in why
    assert dla_support("11.4.1.2")[0] and dla_support("12.0")[0]
    ok, why = dla_support("8.6.2.3")  # JetPack 6.0: refused for TensorRT itself
    assert not ok and ">= 10" in why


def test_nvidia_smi_and_jetson_text_parsed():
    from ecg_edge.host import JETPACK_OF_L4T, parse_nvidia_smi, parse_nvpmodel, parse_tegra_release

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
    assert JETPACK_OF_L4T[parse_tegra_release("# R38 (release), REVISION: 4.0, GCID: 1, BOARD: generic") or ""] == "7.1"


def test_timing_cache_named_per_gpu_and_tensorrt(tmp_path):
    """A timing cache is valid for one GPU model and TensorRT version: its name carries both, in the
    folder the caller gives (or the folder of the file path callers used to pass)."""
    from ecg_edge.export.tensorrt_engine import timing_cache_name, timing_cache_path

    assert timing_cache_name("NVIDIA H200", "10.13.2.6") == "timing-nvidia-h200-trt10.13.2.6.cache"
    assert timing_cache_name("Orin (nvgpu)", "10.3.0.30") == "timing-orin-nvgpu-trt10.3.0.30.cache"
    names = {timing_cache_name(g, v) for g in ("NVIDIA H200", "NVIDIA H100 80GB HBM3") for v in ("10.13.2.6", "11.4.1")}
    assert len(names) == 4
    expected = tmp_path / "timing-nvidia-h200-trt11.4.1.cache"
    assert timing_cache_path(tmp_path, "NVIDIA H200", "11.4.1") == expected
    assert timing_cache_path(tmp_path / "timing.cache", "NVIDIA H200", "11.4.1") == expected


def test_dla_placement_from_what_tensorrt_reports():
    """Layers per device, from can_run_on_DLA before the build and from the builder's INFO listing
    after it (the texts below are TensorRT's own: NVIDIA's sampleCudla README and a TensorRT 7 log)."""
    from ecg_edge.export.tensorrt_engine import dla_placement_from_log, placement_summary

    summary = placement_summary([("conv1", True), ("relu1", True), ("/head/Sigmoid", False)])
    assert summary == {"dla": 2, "gpu": 1, "gpu_layers": ["/head/Sigmoid"]}
    cudla = ["", "--------------- Layers running on DLA:",
             "[DlaLayer] {ForeignNode[(Unnamed Layer* 0) [ElementWise]]},", "--------------- Layers running on GPU:",
             "", "Total per-runner device persistent memory is 0"]
    assert dla_placement_from_log(cudla) == {"dla": 1, "gpu": 0}
    trt7 = ["--------------- Layers running on DLA: ",
            "{Tanh_3,Mul_4,Conv_5,BatchNormalization_6}, {Tanh_8,Mul_9,Conv_10}, {Tanh_13,Mul_14},",
            "--------------- Layers running on GPU: ",
            "Conv_0, 2253[Constant], (Unnamed Layer* 692) [Constant] + (Unnamed Layer* 693) [Shuffle], Softplus_2, ",
            "Some other builder message, with a comma"]
    assert dla_placement_from_log(trt7) == {"dla": 3, "gpu": 4}
    assert dla_placement_from_log(["[MemUsageChange] Init CUDA: CPU +2, GPU +0, now: CPU 20, GPU 300 (MiB)"]) is None


def test_provider_listed_but_not_starting_is_not_present(monkeypatch):
    """onnxruntime-gpu lists CUDA where it cannot start: the probe's answer, not the list, decides.
    A no is not remembered (it can depend on which libraries were loaded when it was asked)."""
    import onnxruntime as ort

    from ecg_edge.backends import onnxruntime as ort_backend

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: the probe's other branch applies")
    monkeypatch.setattr(ort_backend, "available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort_backend, "_started", set())
    for _ in range(2):  # asked again, probed again
        ok, why = ort_backend.provider_status("CUDAExecutionProvider")
        assert not ok and "CUDAExecutionProvider" in why and ("does not start" in why or "ran on" in why)
    assert ort_backend._started == set()
    assert ort_backend.provider_status("CPUExecutionProvider") == (True, "")
    assert ort_backend._started == {"CPUExecutionProvider"}


def test_tensorrt_pip_libraries_found_and_ordered(tmp_path, monkeypatch):
    """TensorRT's pip libraries (package tensorrt_libs) are loaded before onnxruntime's TensorRT
    provider is probed, libnvinfer first: the order `import tensorrt` and the probe run in no longer
    matters. The folder layout is that of the tensorrt-cuXX-libs wheel."""
    from ecg_edge.backends.onnxruntime import (
        preload_tensorrt_libraries,
        tensorrt_libraries,
        tensorrt_pip_library_dir,
    )

    package = tmp_path / "site" / "tensorrt_libs"
    package.mkdir(parents=True)
    for name in ("__init__.py", "libnvonnxparser.so.10", "libnvinfer_plugin.so.10", "libnvinfer.so.10",
                 "libnvinfer_builder_resource.so.10.13.2", "LICENSE.txt"):
        (package / name).write_bytes(b"")
    assert [p.name for p in tensorrt_libraries(package)] == [
        "libnvinfer.so.10", "libnvinfer_builder_resource.so.10.13.2", "libnvinfer_plugin.so.10",
        "libnvonnxparser.so.10"]
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert tensorrt_pip_library_dir() == package
    preload_tensorrt_libraries.cache_clear()
    try:
        assert preload_tensorrt_libraries() == []  # empty files are no libraries: skipped, no error
    finally:
        preload_tensorrt_libraries.cache_clear()


def test_ort_cpu_says_where_its_nodes_ran(tmp_path):
    """describe() names where the nodes ran (onnxruntime >= 1.24.1 records it), not just the providers
    registered; run-time fallback is switched off."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, save

    from ecg_edge.backends.onnxruntime import OnnxRuntimeBackend, count_nodes_per_provider

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["signal"], ["m"], axes=[1], keepdims=0),
         helper.make_node("Sigmoid", ["m"], ["abnormalities"])], "tiny",
        [helper.make_tensor_value_info("signal", TensorProto.FLOAT, ["N", 4096, 12])],
        [helper.make_tensor_value_info("abnormalities", TensorProto.FLOAT, ["N", 12])])
    path = tmp_path / "tiny.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    runner = OnnxRuntimeBackend(path)
    with runner:
        out = runner.infer(np.zeros((2, 4096, 12), np.float32))
        assert out.shape == (2, 12) and np.allclose(out, 0.5)
        assert getattr(runner._session, "_enable_fallback", False) is False
        text = runner.describe()
    assert text.startswith("onnxruntime fp32 on CPUExecutionProvider")
    if hasattr(ort.InferenceSession, "get_provider_graph_assignment_info"):
        assert runner.nodes_per_provider and set(runner.nodes_per_provider) == {"CPUExecutionProvider"}
        assert f"({runner.nodes_per_provider['CPUExecutionProvider']} nodes)" in text
    else:
        assert runner.nodes_per_provider is None and "registered" in text

    class Subgraph:  # the shape of onnxruntime's OrtEpAssignedSubgraph
        def __init__(self, ep_name, nodes):
            self.ep_name, self._nodes = ep_name, nodes

        def get_nodes(self):
            return self._nodes

    assigned = [Subgraph("TensorrtExecutionProvider", list(range(40))), Subgraph("CPUExecutionProvider", [1, 2]),
                Subgraph("TensorrtExecutionProvider", [1])]
    assert count_nodes_per_provider(assigned) == {"TensorrtExecutionProvider": 41, "CPUExecutionProvider": 2}


def test_machine_failure_exits_3(tmp_path, monkeypatch):
    """A machine that cannot run the work (here: the provider check fails as on a GPU host without
    cuDNN) exits 3 with the library's message; bad input stays exit 2."""
    from typer.testing import CliRunner

    from ecg_edge.cli import app
    from ecg_edge.errors import MachineError

    def no_cudnn(*args, **kwargs):
        raise MachineError("CUDAExecutionProvider on model.onnx", "libcudnn.so.9: cannot open shared object file")

    monkeypatch.setattr("ecg_edge.home.resolve_export_dir", no_cudnn)
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
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("*.plan", "timing*.cache", ".export-*"))
    return copy


@pytest.mark.gpu
@pytest.mark.slow  # gpu_export: the session's export where none is given
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
            assert runner.nodes_per_provider is None or runner.nodes_per_provider.get("CUDAExecutionProvider")
            assert "TF32 off" in runner.describe()
            got = np.concatenate([runner.infer(x[i:i + 16]) for i in range(0, 40, 16)])  # 16, 16, 8 padded
        assert np.abs(got - expected).max() < 1e-3, graph  # TF32 is off for FP32


@pytest.mark.gpu
@pytest.mark.slow
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
    from ecg_edge.export.pipeline import ExportOptions, add_engines
    from ecg_edge.export.tensorrt_engine import timing_cache_name
    from ecg_edge.spec import REFERENCE_THRESHOLDS, called
    from ecg_edge.synthetic import synthesize
    from ecg_edge.timing import bench_backend

    manifest = add_engines(out, ExportOptions(precisions=("fp32", "fp16", "int8"), engine=True, max_batch=64,
                                              min_exam_agreement=RANDOM_WEIGHT_GATES | {"int8": 0.6}))
    assert {"model.fp32.plan", "model.fp16.plan"} <= set(manifest["files"])
    [cache] = out.glob("timing-*-trt*.cache")  # named by GPU and TensorRT version
    assert cache.name == timing_cache_name(manifest["files"]["model.fp32.plan"]["gpu"],
                                           manifest["files"]["model.fp32.plan"]["tensorrt_version"])
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
                    nodes = runner.nodes_per_provider
                    assert nodes is None or nodes.get("TensorrtExecutionProvider"), nodes
                    assert precision != "fp32" or "TF32 may be used" in runner.describe()
            agree = (called(got, thresholds) == called(expected, thresholds)).mean()
            limit = {"fp32": 1e-3, "fp16": 2e-2, "int8": 0.2}[precision]
            if backend == "ort-tensorrt" and precision == "fp32":
                limit = 1e-2  # TF32: the TensorRT EP has no option to clear it
            assert np.abs(got - expected).max() < limit and agree >= 0.95, (backend, precision)


@pytest.mark.gpu
@pytest.mark.slow
def test_timing_cache_reused_and_a_foreign_one_replaced(request, tmp_path):
    """The cache is named by GPU and TensorRT version; a cache TensorRT refuses (here: not a cache at
    all) is replaced by an empty one, said in the facts, and the next build reuses the new file."""
    from ecg_edge.gpu import tensorrt_status

    usable, reason = tensorrt_status()
    if not usable:
        pytest.skip(reason)
    export = request.getfixturevalue("gpu_export")
    from ecg_edge.export.options import ONNX_NAMES
    from ecg_edge.export.tensorrt_engine import build_engine, timing_cache_name

    caches = tmp_path / "caches"
    caches.mkdir()

    def build(where):
        return build_engine(export / ONNX_NAMES["fp32"], tmp_path / "model.fp32.plan", max_batch=8, opt_batch=4,
                            timing_cache=where)

    first = build(caches / "timing.cache")  # the old argument: a file in the folder
    name = timing_cache_name(first["gpu"], first["tensorrt_version"])
    assert first["timing_cache"] == {"file": name, "state": "new"} and (caches / name).stat().st_size > 0
    assert first["tf32"] is False  # cleared for FP32
    assert build(caches)["timing_cache"]["state"] == "reused"
    (caches / name).write_bytes(b"not a timing cache")
    assert build(caches)["timing_cache"]["state"].startswith("discarded")
    assert build(caches)["timing_cache"]["state"] == "reused"


@pytest.mark.gpu
@pytest.mark.slow
def test_dla_engine_is_static_and_says_where_its_layers_run(request, tmp_path):
    """On a device with a DLA and a TensorRT that builds for it: a fixed batch (min = opt = max), layers
    per device in the facts, and smaller batches padded at run time."""
    from ecg_edge.gpu import dla_support, tensorrt_status

    usable, reason = tensorrt_status()
    if not usable:
        pytest.skip(reason)
    import tensorrt as trt

    supported, why = dla_support(trt.__version__)
    if not supported:
        pytest.skip(why)
    if trt.Builder(trt.Logger(trt.Logger.ERROR)).num_DLA_cores == 0:
        pytest.skip("this device has no DLA")
    export = request.getfixturevalue("gpu_export")
    from ecg_edge.backends.tensorrt import TensorRTBackend
    from ecg_edge.export.options import ONNX_NAMES
    from ecg_edge.export.tensorrt_engine import build_engine
    from ecg_edge.synthetic import synthesize

    plan = tmp_path / "model.fp16.plan"
    facts = build_engine(export / ONNX_NAMES["fp16"], plan, max_batch=16, opt_batch=4, dla_core=0, precision="fp16")
    assert facts["profile"] == {"min": 4, "opt": 4, "max": 4} and facts["dla_core"] == 0
    before = facts["dla_placement"]["can_run_on_dla_before_build"]
    assert before["dla"] > 0 and len(before["gpu_layers"]) == min(before["gpu"], 10)
    x, _ = synthesize(3, seed=13)
    expected = _reference(export, x)
    with TensorRTBackend(plan, facts, precision="fp16") as runner:
        got = runner.infer(x)  # 3 < the fixed batch of 4: padded
        assert "DLA core 0" in runner.describe()
    assert got.shape == expected.shape and np.abs(got - expected).max() < 5e-2


@pytest.mark.gpu
def test_ort_tensorrt_probe_does_not_depend_on_import_order():
    """The TensorRT provider's probe gives one answer whether `import tensorrt` ran first or not."""
    import subprocess
    import sys

    if "TensorrtExecutionProvider" not in _providers():
        pytest.skip("onnxruntime here has no TensorrtExecutionProvider (pip install onnxruntime-gpu)")
    probe = ("from ecg_edge.backends.onnxruntime import provider_status; "
             "print(provider_status('TensorrtExecutionProvider'))")
    answers = []
    for first in ("", "import tensorrt; "):
        if first and importlib.util.find_spec("tensorrt") is None:
            continue
        done = subprocess.run([sys.executable, "-c", first + probe], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        answers.append(done.stdout.strip().splitlines()[-1])
    assert len(set(answers)) == 1, answers

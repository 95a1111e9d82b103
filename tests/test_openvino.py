"""The OpenVINO backend: same outputs as onnxruntime from the same files, what ran read back, BF16
gated where the CPU has it, and `auto` taking the CPU runtime measured fastest here."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from test_infer import run_cli, tiny_export

from ecg_edge.backends import backend_present, open_backend
from ecg_edge.backends.base import infer_all
from ecg_edge.manifest import load_manifest
from ecg_edge.spec import called

ov = pytest.importorskip("openvino", reason='OpenVINO is not installed (pip install "ecg-edge[openvino]")')


def _bf16_here() -> tuple[bool, str]:
    from ecg_edge.backends.openvino import bf16_status

    return bf16_status()


@pytest.fixture(scope="module")
def inputs():
    from ecg_edge.synthetic import synthesize

    return synthesize(48, seed=21)[0]


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_openvino_agrees_with_onnxruntime(six_export, inputs, precision):
    _, result = six_export
    export = result.out_dir
    thresholds = np.array(list(result.manifest["thresholds"].values()))
    outs, described = {}, {}
    for name in ("ort-cpu", "openvino"):
        runner, _ = open_backend(export, name, precision)
        with runner:
            outs[name] = infer_all(runner, inputs, batch=16)
            described[name] = runner.describe()
    if precision == "fp32":
        assert np.abs(outs["openvino"] - outs["ort-cpu"]).max() < 1e-4
        assert "inference precision f32" in described["openvino"] and "in f32" in described["openvino"]
    else:  # two INT8 kernels round differently; the findings are what must hold
        assert (called(outs["openvino"], thresholds) == called(outs["ort-cpu"], thresholds)).mean() >= 0.95
        assert re.search(r"convolutions: .*\b\d+ in [ui]8", described["openvino"])  # int8 kernels really ran


def test_bf16_present_only_where_gated_and_the_cpu_has_it(six_export):
    _, result = six_export
    export = result.out_dir
    manifest = load_manifest(export)
    usable, why = _bf16_here()
    entry = manifest["runtime_precisions"]["bf16"]
    assert entry["file"] == "model.onnx" and entry["runtime"] == "openvino"
    ok, reason = backend_present("openvino", manifest, "bf16")
    if usable:
        assert entry["parity"]["passed"] and entry["ran"]["inference_precision"] == "bf16" and ok
    else:
        assert entry["why"] == why and not ok and "not gated" in reason
    assert backend_present("ort-cpu", manifest, "bf16") == (
        False, "onnxruntime has no BF16 path on the CPU (the openvino backend has)")


def test_bf16_runs_and_agrees(six_export, inputs):
    usable, why = _bf16_here()
    if not usable:
        pytest.skip(f"BF16: {why}")
    _, result = six_export
    export = result.out_dir
    thresholds = np.array(list(result.manifest["thresholds"].values()))
    runner, _ = open_backend(export, "openvino", "bf16")
    with runner:
        out = infer_all(runner, inputs, batch=16)
        assert runner.ran["inference_precision"] == "bf16"
    ref_runner, _ = open_backend(export, "ort-cpu", "fp32")
    with ref_runner:
        ref = infer_all(ref_runner, inputs, batch=16)
    assert (called(out, thresholds) == called(ref, thresholds)).all(axis=1).mean() >= 0.995
    assert np.abs(out - ref).max() < 5e-2


def test_auto_takes_the_measured_fastest_cpu_runtime_and_caches_it(tmp_path, home):
    from ecg_edge.backends.choice import CACHE_NAME

    export = tiny_export(tmp_path / "tiny")
    runner, _ = open_backend(export, "auto", "fp32")
    assert runner.name in ("ort-cpu", "openvino") and "measured now" in runner.chosen_because
    cache = json.loads((home / CACHE_NAME).read_text())
    (key, entry), = cache.items()
    assert set(entry["ecg_per_s"]) == {"ort-cpu", "openvino"}
    assert max(entry["ecg_per_s"], key=entry["ecg_per_s"].get) == runner.name
    # What the cache says decides, without timing again: make the other one the fastest.
    other = "openvino" if runner.name == "ort-cpu" else "ort-cpu"
    entry["ecg_per_s"][other] = 1e9
    (home / CACHE_NAME).write_text(json.dumps(cache))
    again, _ = open_backend(export, "auto", "fp32")
    assert again.name == other and "measured 20" in again.chosen_because
    # A different thread setting is a different machine configuration: measured anew.
    third, _ = open_backend(export, "auto", "fp32", threads=1)
    assert "measured now" in third.chosen_because and len(json.loads((home / CACHE_NAME).read_text())) == 2


def test_cli_says_which_runtime_auto_took_and_why(tmp_path, home):
    export = tiny_export(tmp_path / "tiny")
    np.save(tmp_path / "a.npy", np.random.default_rng(0).normal(0, 0.3, (5000, 12)))
    r = run_cli("infer", str(tmp_path / "a.npy"), "--fs", "500", "--leads", "I,II,III,aVR,aVL,aVF,V1,V2,V3,V4,V5,V6",
                "--model", str(export))
    assert r.exit_code == 0, r.output
    assert "fastest CPU runtime here for fp32" in r.output
    bad = run_cli("infer", str(tmp_path / "a.npy"), "--model", str(export), "--backend", "openvino",
                  "--precision", "fp16")
    assert bad.exit_code == 2 and "fp16 on a CPU runs as fp32" in bad.output


def test_doctor_reports_isa_runtimes_and_auto(tmp_path, home):
    from ecg_edge.host import cpu_isa

    assert cpu_isa("flags\t\t: fpu avx2 avx512f avx512_vnni\n") == ["AVX2", "AVX-512", "AVX512-VNNI"]
    assert cpu_isa("Features\t: fp asimd sve bf16\n") == ["NEON", "SVE", "BF16 (Arm)"]
    export = tiny_export(tmp_path / "tiny")
    r = run_cli("doctor", "--model", str(export), "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    assert report["onnxruntime_providers"]["CPUExecutionProvider"] == "starts"
    assert report["bf16"]["usable"] == _bf16_here()[0]
    fp32 = report["auto"]["fp32"]
    assert fp32["picks"] in ("ort-cpu", "openvino") and "fastest CPU runtime" in fp32["why"]
    assert "no fp32 TensorRT engine" in fp32["out"]["tensorrt"]
    assert "picks" not in report["auto"]["int8"] and "no int8 ONNX file" in report["auto"]["int8"]["out"]["ort-cpu"]
    text = run_cli("doctor", "--model", str(export))
    assert text.exit_code == 0 and "auto for" in text.output
    if "not installed" in report["tensorrt"]["why"]:  # the install hint survives the console's markup
        assert "ecg-edge[tensorrt]" in text.output.replace("\n", "")

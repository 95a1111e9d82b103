"""Hardware this machine may lack, met by giving the code the facts such a machine reports (the
capability query, never a runtime's results): BF16 offered or not, AMX/VNNI flags, the kernels that
ran. A precision nobody named never fails a command; one that was named does."""

from __future__ import annotations

import json

import pytest
from click.testing import Result
from test_infer import run_cli

from ecg_edge.backends.openvino import kernel_isa
from ecg_edge.doctor import bf16_in_export
from ecg_edge.errors import MachineError
from ecg_edge.host import cpu_isa

ov = pytest.importorskip("openvino", reason='OpenVINO is not installed (pip install "ecg-edge[openvino]")')

OFFERS = ["BF16", "WINOGRAD", "FP32", "FP16", "INT8", "BIN", "EXPORT_IMPORT"]  # an AVX512-BF16/AMX Xeon
LACKS = ["WINOGRAD", "FP32", "INT8", "BIN", "EXPORT_IMPORT"]  # an AVX2-only CPU


@pytest.fixture
def offers_bf16(monkeypatch) -> None:
    monkeypatch.setattr("ecg_edge.backends.openvino.cpu_capabilities", lambda: list(OFFERS))


@pytest.fixture
def lacks_bf16(monkeypatch) -> None:
    monkeypatch.setattr("ecg_edge.backends.openvino.cpu_capabilities", lambda: list(LACKS))


def test_isa_facts_of_an_amx_xeon():
    flags = "flags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8\n"
    assert cpu_isa(flags) == ["AVX2", "AVX-512", "AVX512-VNNI", "AVX512-BF16", "AMX-BF16", "AMX-INT8"]
    assert cpu_isa("flags\t\t: fpu avx2 fma\n") == ["AVX2"]


def test_kernel_isa_names_amx_when_amx_kernels_ran():
    # primitive types as OpenVINO's CPU plugin reports them in the compiled model's runtime graph
    assert kernel_isa(["brgconv_avx512_amx_bf16", "brgconv_avx512_amx_1x1_bf16", "jit_avx512_core_bf16"]) == "AMX"
    assert kernel_isa(["brgconv_avx512_bf16", "brgconv_avx512_1x1_bf16"]) == "AVX512"
    assert kernel_isa(["brgconv_avx2_f32", "jit_avx2_1x1_f32"]) == "AVX2"
    assert kernel_isa([]) == "reference"


def test_bf16_in_export_tells_offered_from_passed():
    assert bf16_in_export({}).startswith("not gated")
    assert bf16_in_export({"runtime_precisions": {"bf16": {"why": "no AVX512-BF16"}}}) == "not gated (no AVX512-BF16)"
    passed = {"runtime_precisions": {"bf16": {"parity": {"passed": True}, "ran": {"isa": "AMX"}}}}
    assert bf16_in_export(passed) == "passed its gate (AMX kernels)"
    refused = {"runtime_precisions": {"bf16": {"parity": {"passed": False},
                                               "refused": "OpenVINO 2026.4.1: max |dp| 1"}}}
    assert bf16_in_export(refused) == "refused: OpenVINO 2026.4.1: max |dp| 1"


def test_openvino_reports_the_kernels_it_ran(six_export):
    from ecg_edge.backends import open_backend

    _, result = six_export
    runner, _ = open_backend(result.out_dir, "openvino", "fp32")
    with runner:
        assert runner.isa and runner.isa == runner.ran["isa"] != "?"
        assert sum(runner.ran["kernels"].values()) == sum(runner.ran["convolutions"].values()) > 0
        assert f"{runner.isa} kernels" in runner.describe()


def test_bf16_divergence_finds_the_first_layer_past_a_threshold(six_export):
    from ecg_edge.backends.openvino import bf16_divergence, bf16_status
    from ecg_edge.synthetic import synthesize

    if not bf16_status()[0]:
        pytest.skip(f"BF16: {bf16_status()[1]}")
    _, result = six_export
    x = synthesize(2, seed=4)[0]
    # right BF16: every layer within rounding of FP32; any error at all: the stem is first
    assert bf16_divergence(result.out_dir / "model.onnx", x, threshold=1.0) is None
    first = bf16_divergence(result.out_dir / "model.onnx", x, threshold=0.0)
    assert first is not None and first["index"] == 0 and 0 < first["relative_error"] < 0.1
    assert "Convolution" in first["type"]


# --- export: a precision added because the CPU offers it never fails it --------------------------------

def _export(model_path, out, **options):
    from conftest import FAST

    from ecg_edge.export.pipeline import ExportOptions, export_model
    from ecg_edge.training.models import load_keras_model

    warnings: list[str] = []
    fast = FAST | {"n_synthetic_validation": 8}
    result = export_model(load_keras_model(model_path), out, ExportOptions(**(fast | options)), warn=warnings.append)
    return result, warnings


# BF16's gate made unreachable (more than every exam unchanged): a real gate on real outputs that fails.
STRICT_BF16 = {"fp16": 0.995, "bf16": 1.01, "int8": 0.97}


@pytest.mark.slow
def test_unnamed_bf16_failing_its_gate_is_refused_and_export_succeeds(six_model, tmp_path, offers_bf16):
    from ecg_edge.backends import backend_present
    from ecg_edge.manifest import load_manifest

    result, warnings = _export(six_model, tmp_path / "out", precisions=("fp32",), min_exam_agreement=STRICT_BF16)
    manifest = load_manifest(tmp_path / "out")
    entry = manifest["runtime_precisions"]["bf16"]
    assert entry["named"] is False and "OpenVINO" in entry["refused"]
    if not entry.get("machine"):  # it ran: the numbers are in the manifest
        assert "bf16" in manifest["refused"] and "bf16" in result.refused and not result.rejected
        assert any(f.endswith("< 101.0%") for f in manifest["refused"]["bf16"]["failed"])
    assert any("BF16 refused" in w for w in warnings)
    assert set(manifest["files"]) == {"model.onnx"}
    ok, why = backend_present("openvino", manifest, "bf16")
    assert not ok and "refused at export" in why


@pytest.mark.slow
def test_named_bf16_failing_its_gate_fails_export_with_the_others_written(six_model, tmp_path, offers_bf16):
    from ecg_edge.export.pipeline import ExportGateError
    from ecg_edge.manifest import load_manifest

    with pytest.raises((ExportGateError, MachineError)) as failure:
        _export(six_model, tmp_path / "out", precisions=("fp32", "bf16"), min_exam_agreement=STRICT_BF16)
    assert "bf16" in str(failure.value)
    manifest = load_manifest(tmp_path / "out")  # written: FP32 passed
    assert "model.onnx" in manifest["files"] and manifest["runtime_precisions"]["bf16"]["named"] is True


def test_named_bf16_on_a_cpu_without_it_is_exit_3_before_any_work(six_model, tmp_path, lacks_bf16, home):
    out = tmp_path / "out"
    r: Result = run_cli("export", str(six_model), "--out", str(out), "--precision", "fp32,bf16")
    assert r.exit_code == 3, r.output
    assert "neither AVX512-BF16 nor AMX" in r.output and "Traceback" not in r.output
    assert not out.exists()


def test_doctor_says_offered_apart_from_passed(six_export, offers_bf16, home):
    _, result = six_export
    r = run_cli("doctor", "--model", str(result.out_dir))
    assert r.exit_code == 0, r.output
    assert "BF16 (OpenVINO) offered by the CPU: yes" in r.output
    assert "BF16 in this export: " in r.output
    report = json.loads(run_cli("doctor", "--model", str(result.out_dir), "--json").output)
    assert report["bf16"]["usable"] is True
    assert report["bf16"]["export"] == bf16_in_export(json.loads((result.out_dir / "manifest.json").read_text()))


def test_gate_error_anywhere_is_exit_1_in_one_line(monkeypatch, tmp_path, home):
    """No gate error reaches a user as a traceback, whichever command meets it."""
    from ecg_edge.errors import GateError

    def failing(*args, **kwargs):
        raise GateError("int8: exams unchanged 50.0% (3/6), max |dp| 4.0e-01")

    monkeypatch.setattr("ecg_edge.cli.workflows.random_weight_export", failing)
    monkeypatch.setattr("ecg_edge.cli.workflows.default_home_export", failing)
    r = run_cli("bench", "--batch", "1")
    assert r.exit_code == 1 and r.output.strip().splitlines()[-1].startswith("error: int8: exams unchanged")
    assert "Traceback" not in r.output

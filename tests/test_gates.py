"""The export gates' arithmetic and the TensorRT static check: no TensorFlow needed."""

from __future__ import annotations

import numpy as np
import pytest

from ecg_edge.parity import compare, wilson_interval

THRESHOLDS = np.full(6, 0.5, np.float32)


def test_gate_is_per_exam_not_per_decision():
    # 30 exams, 6 classes: one decision changed in each of 9 exams passes the old 95%-of-decisions gate
    # while 30% of the exams changed
    reference = np.full((30, 6), 0.2, np.float32)
    candidate = reference.copy()
    candidate[:9, 0] = 0.6
    parity = compare(reference, candidate, THRESHOLDS, "fp32", min_exam_agreement=0.97)
    assert parity.decision_agreement >= 0.95
    assert parity.exam_agreement == pytest.approx(21 / 30) and parity.exams_changed == 9
    assert not parity.passed and "exams unchanged" in parity.failed[0]
    assert parity.flips == {"0": 9}


def test_max_abs_gate_fails_even_when_findings_hold():
    reference = np.full((5, 6), 0.1, np.float32)
    candidate = reference + 0.3  # 0.4: still under the 0.5 thresholds
    parity = compare(reference, candidate, THRESHOLDS, "fp32", max_abs=0.25, min_exam_agreement=0.97)
    assert parity.exam_agreement == 1.0 and not parity.passed
    assert parity.failed == ["max |dp| 3.00e-01 > 0.25"]


def test_wilson_interval():
    low, high = wilson_interval(40, 40)
    assert high == 1.0 and 0.90 < low < 0.92  # 40/40 does not prove 100%
    low, high = wilson_interval(37, 40)
    assert low < 37 / 40 < high
    assert wilson_interval(0, 0) == (0.0, 1.0)


onnx = pytest.importorskip("onnx")


def _qdq_conv_model(path, zero_point_dtype=np.int8, zero_point=0, bias_int32=False, axis=0, opset=17,
                    extra_op=None):
    """A tiny Q/DQ Conv as a quantizer writes one, with one thing broken at a time."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 2, 1, 3), np.int8), "w_q")
    w_scale = numpy_helper.from_array(np.full(4, 0.1, np.float32), "w_scale")
    w_zp = numpy_helper.from_array(np.zeros(4, np.int8), "w_zp")
    x_scale = numpy_helper.from_array(np.array(0.05, np.float32), "x_scale")
    x_zp = numpy_helper.from_array(np.array(zero_point, zero_point_dtype), "x_zp")
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["x_q"], name="q_x"),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"], name="dq_x"),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w_dq"], name="dq_w", axis=axis),
    ]
    inits = [w, w_scale, w_zp, x_scale, x_zp]
    conv_inputs = ["x_dq", "w_dq"]
    if bias_int32:
        inits += [numpy_helper.from_array(np.zeros(4, np.int32), "b_q"),
                  numpy_helper.from_array(np.full(4, 0.005, np.float32), "b_scale"),
                  numpy_helper.from_array(np.zeros(4, np.int32), "b_zp")]
        nodes.append(helper.make_node("DequantizeLinear", ["b_q", "b_scale", "b_zp"], ["b_dq"], name="dq_b"))
        conv_inputs.append("b_dq")
    nodes.append(helper.make_node("Conv", conv_inputs, ["y"], name="conv"))
    out = "y"
    if extra_op:
        nodes.append(helper.make_node(extra_op, ["y"], ["z"], name="extra"))
        out = "z"
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 1, 8])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], initializer=inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), path)
    return path


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({}, None),
    ({"zero_point_dtype": np.uint8, "zero_point": 128}, "type uint8"),
    ({"zero_point": 3}, "is not 0"),
    ({"bias_int32": True}, "is int32"),
    ({"axis": 1}, "per-channel axis 1"),
    ({"opset": 25}, "opset 25"),
    ({"extra_op": "StringNormalizer"}, "operator StringNormalizer"),
])
def test_tensorrt_check_finds_each_broken_rule(tmp_path, kwargs, expected):
    from ecg_edge.export.tensorrt_check import check_tensorrt_onnx

    problems = check_tensorrt_onnx(_qdq_conv_model(tmp_path / "m.onnx", **kwargs))
    if expected is None:
        assert problems == []
    else:
        assert len(problems) >= 1 and any(expected in p for p in problems), problems


def test_tensorrt_check_opset_range_per_release(tmp_path):
    from ecg_edge.export.tensorrt_check import check_tensorrt_onnx

    path = _qdq_conv_model(tmp_path / "m.onnx", opset=22)
    assert any("opset 22" in p for p in check_tensorrt_onnx(path, tensorrt="10"))
    assert check_tensorrt_onnx(path, tensorrt="11") == []


def test_trtexec_commands():
    from ecg_edge.export.engines import trtexec_commands

    lines = trtexec_commands("model.int8.sym.onnx", "int8")
    # strongly typed, as the engines export builds: the file's Q/DQ nodes decide, no precision flags
    for line in lines.values():
        assert "--int8" not in line and "--fp16" not in line and "--noTF32" not in line
    assert "--stronglyTyped" in lines["tensorrt10"] and "--stronglyTyped" not in lines["tensorrt11"]
    assert "--minShapes=signal:1x4096x12" in lines["tensorrt10"]
    assert "--maxShapes=signal:256x4096x12" in lines["tensorrt11"]
    assert lines["tensorrt10"].count("timing-trt10.cache") == 1 and "timing-trt11.cache" in lines["tensorrt11"]
    fp32 = trtexec_commands("model.onnx", "fp32")
    assert "--noTF32" in fp32["tensorrt11"] and "--noTF32" in fp32["tensorrt10"]
    assert "--fp16" not in trtexec_commands("model.fp16.onnx", "fp16")["tensorrt10"]


def test_stale_staging_removed_live_kept(tmp_path):
    import json
    import os
    import socket
    import subprocess
    import sys

    from ecg_edge.staging import remove_stale

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    folders = {"dead": {"host": host, "pid": dead.pid}, "live": {"host": host, "pid": os.getpid()},
               "other-host": {"host": host + "-elsewhere", "pid": dead.pid}}
    for name, owner in folders.items():
        (tmp_path / f".export-{name}").mkdir()
        (tmp_path / f".export-{name}" / "owner.json").write_text(json.dumps(owner))
        (tmp_path / f".export-{name}" / "model.onnx").write_bytes(b"x" * 100)
    old = tmp_path / ".export-ownerless"
    old.mkdir()
    os.utime(old, (0, 0))
    remove_stale(tmp_path, "export")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".export-live", ".export-other-host"]


def test_check_trt_command(tmp_path):
    from typer.testing import CliRunner

    from ecg_edge.cli import app

    good = _qdq_conv_model(tmp_path / "good.onnx")
    bad = _qdq_conv_model(tmp_path / "bad.onnx", bias_int32=True)
    runner = CliRunner()
    result = runner.invoke(app, ["check-trt", str(good)])
    assert result.exit_code == 0 and "ok for TensorRT 10" in result.output
    result = runner.invoke(app, ["check-trt", str(good), str(bad), "--tensorrt", "11"])
    assert result.exit_code == 1 and "int32" in result.output
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00garbage")
    result = runner.invoke(app, ["check-trt", str(junk)])
    assert result.exit_code == 2 and "junk.onnx" in result.output and "Traceback" not in result.output


def test_held_out_split_ignores_folder_and_order(tmp_path):
    """The real records split the same way however their path is typed, into disjoint parts."""
    import os

    import numpy as np
    from conftest import write_code_hdf5

    from ecg_edge.export.heldout import held_out_sets
    from ecg_edge.export.options import ExportOptions

    x = np.random.default_rng(0).normal(0, 0.1, size=(30, 4096, 12)).astype(np.float32)
    h5 = write_code_hdf5(tmp_path / "e.h5", x, exam_ids=np.arange(30))
    options = ExportOptions(n_calibration=8, n_synthetic_validation=0, min_gate_exams=0)
    a = held_out_sets((), [h5], options)
    relative = os.path.relpath(h5, os.getcwd())
    b = held_out_sets((), [relative], options)
    assert a.n_real == b.n_real == {"calibration": 8, "choice": 11, "gate": 11}
    for part in ("calibration", "recipe_set", "gate"):
        np.testing.assert_array_equal(getattr(a, part), getattr(b, part))
    # disjoint: no exam in two parts
    rows = [tuple(r[:4, 0]) for part in ("calibration", "recipe_set", "gate") for r in getattr(a, part)]
    assert len(rows) == len(set(rows)) == 30


def test_names_that_moved_still_import_from_the_pipeline_with_a_warning():
    import importlib

    from ecg_edge.export import pipeline

    for name, module in pipeline._MOVED.items():
        with pytest.warns(DeprecationWarning, match=f"pipeline.{name} moved"):
            moved = getattr(pipeline, name)
        assert moved is getattr(importlib.import_module(module.__name__), name)


def test_synthetic_ecgs_fill_the_gate_up_to_its_minimum(tmp_path):
    """Few real exams: synthetic ones fill the recipe and gate sets up to `min_gate_exams`, so that a
    file's verdict does not hang on one or two flips; many real exams: the usual synthetic share only."""
    import numpy as np
    from conftest import write_code_hdf5

    from ecg_edge.export.heldout import held_out_sets
    from ecg_edge.export.options import ExportOptions

    x = np.random.default_rng(0).normal(0, 0.1, size=(30, 4096, 12)).astype(np.float32)
    h5 = write_code_hdf5(tmp_path / "e.h5", x, exam_ids=np.arange(30))
    sets = held_out_sets((), [h5], ExportOptions(n_calibration=8, n_synthetic_validation=4, min_gate_exams=60))
    assert sets.n_real == {"calibration": 8, "choice": 11, "gate": 11}
    assert len(sets.gate) == len(sets.recipe_set) == 60
    assert sets.summary["validation"]["gate"]["synthetic"] == 49
    sets = held_out_sets((), [h5], ExportOptions(n_calibration=8, n_synthetic_validation=4, min_gate_exams=10))
    assert len(sets.gate) == 11 + 4


def test_held_out_choice_is_the_recipe_set_under_its_old_name():
    from ecg_edge.export.heldout import HeldOut

    recipe_set = np.zeros((2, 4096, 12), np.float32)
    sets = HeldOut(np.zeros((1, 4096, 12)), recipe_set, np.zeros((1, 4096, 12)), {}, {})
    with pytest.warns(DeprecationWarning, match="recipe_set"):
        assert sets.choice is recipe_set

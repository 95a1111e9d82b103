from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import SHARED_WFDB, needs_shared, write_code_hdf5
from typer.testing import CliRunner

from ecg_edge.backends import open_backend
from ecg_edge.cli import app
from ecg_edge.infer import run_inference
from ecg_edge.manifest import FORMAT_VERSION, sha256_file, write_json_atomic
from ecg_edge.measure import COLUMNS as MEASUREMENT_COLUMNS
from ecg_edge.measure import INSTALL_HINT, available
from ecg_edge.spec import CLASSES, LEADS, REFERENCE_THRESHOLDS, called

runner = CliRunner()


def run_cli(*args: str):
    result = runner.invoke(app, list(args))
    return result


def tiny_export(out):
    """A real ONNX model with the product's I/O (mean over time -> dense -> sigmoid): fast enough
    to stream 20,000 exams in a test. Built with onnx.helper, run by onnxruntime."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    out.mkdir(parents=True, exist_ok=True)
    w = np.random.default_rng(0).normal(size=(12, 6)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["signal"], ["mean"], axes=[1], keepdims=0),
         helper.make_node("MatMul", ["mean", "w"], ["logits"]),
         helper.make_node("Sigmoid", ["logits"], ["abnormalities"])],
        "tiny",
        [helper.make_tensor_value_info("signal", TensorProto.FLOAT, [None, 4096, 12])],
        [helper.make_tensor_value_info("abnormalities", TensorProto.FLOAT, [None, 6])],
        [numpy_helper.from_array(w, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), out / "model.onnx")
    manifest = {
        "format": FORMAT_VERSION, "model": {"kind": "ribeiro", "task": "six", "classes": list(CLASSES)},
        "input": {"name": "signal", "shape": [None, 4096, 12], "leads": list(LEADS)},
        "output": {"name": "abnormalities", "classes": list(CLASSES)},
        "thresholds": dict(REFERENCE_THRESHOLDS),
        "files": {"model.onnx": {"format": "onnx", "precision": "fp32", "variant": "default",
                                 "sha256": sha256_file(out / "model.onnx")}},
    }
    write_json_atomic(out / "manifest.json", manifest)
    return out


def _hdf5_set(path, n=70, seed=4):
    from ecg_edge.synthetic import synthesize

    x, _ = synthesize(n, seed=seed)
    return write_code_hdf5(path, x, exam_ids=np.arange(1000, 1000 + n)), x


@needs_shared
def test_backends_agree_on_real_and_hdf5(six_export, tmp_path):
    model_path, result = six_export
    h5, _ = _hdf5_set(tmp_path / "exams.h5")
    inputs = [SHARED_WFDB, h5]
    runs = {}
    import ecg_edge.training.keras_backend  # noqa: F401  (registers the Keras reference)

    for backend, precision in (("ort-cpu", "fp32"), ("ort-cpu", "int8"), ("keras", "fp32")):
        runner_, manifest = open_backend(result.out_dir, backend, precision)
        with runner_:
            runs[(backend, precision)] = run_inference(inputs, runner_, manifest, batch=16)
    reference = runs[("ort-cpu", "fp32")]
    assert len(reference.ids) == 13 + 70
    assert reference.ids[:2] == ["00001_lr", "HR06000"] and reference.ids[13:15] == ["1000", "1001"]
    for key, run in runs.items():
        assert run.ids == reference.ids, key
    assert np.abs(runs[("keras", "fp32")].probabilities - reference.probabilities).max() < 1e-4
    int8 = runs[("ort-cpu", "int8")]
    thresholds = np.array(list(REFERENCE_THRESHOLDS.values()))
    assert np.abs(int8.probabilities - reference.probabilities).mean() < 0.05
    assert (called(int8.probabilities, thresholds) == called(reference.probabilities, thresholds)).mean() > 0.9


def test_csv_and_json_round_trip(six_export, tmp_path):
    _, result = six_export
    h5, _ = _hdf5_set(tmp_path / "exams.h5", n=20)
    csv_path, json_path = tmp_path / "out.csv", tmp_path / "out.json"
    for out in (csv_path, json_path):
        # ort-cpu named: `auto` takes whichever CPU runtime is faster here (OpenVINO on some CPUs)
        r = run_cli("infer", str(h5), "--model", str(result.out_dir), "--batch", "8", "--backend", "ort-cpu",
                    "-o", str(out))
        assert r.exit_code == 0, r.output
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    doc = json.loads(json_path.read_text())
    assert list(rows[0].keys()) == ["exam_id", "source", *CLASSES, "findings", "quality", *MEASUREMENT_COLUMNS]
    assert [r["exam_id"] for r in rows] == [str(i) for i in range(1000, 1020)]
    assert [e["exam_id"] for e in doc["exams"]] == [r["exam_id"] for r in rows]
    assert {r["source"] for r in rows} == {e["source"] for e in doc["exams"]} == {str(h5)}
    assert doc["model_sha256"] == result.manifest["files"]["model.onnx"]["sha256"]
    assert doc["precision"] == "fp32" and "CPUExecutionProvider" in doc["backend"]
    assert doc["thresholds"] == result.manifest["thresholds"]
    for row, exam in zip(rows, doc["exams"], strict=True):
        for c in CLASSES:
            assert float(row[c]) == pytest.approx(exam[c], abs=1e-6)
        expected = [c for c in CLASSES if exam[c] >= doc["thresholds"][c]]
        assert exam["findings"] == expected and row["findings"] == ";".join(expected)


def _known_rate_set(path):
    """CODE-layout exams of known rate (60, 45, 120 bpm), one of 4 s zero-padded on both sides, one all zeros."""
    from ecg_edge.synthetic import EcgParams, synthesize_ecg

    rng = np.random.default_rng(5)
    x = np.stack([synthesize_ecg(EcgParams("sinus", r, 160, 90, ""), rng) for r in (60.0, 45.0, 120.0, 75.0, 75.0)])
    x[3, :1000] = 0
    x[3, 2600:] = 0  # 4 s of signal, as a short exam is stored
    x[4] = 0
    return write_code_hdf5(path, x, exam_ids=np.arange(5)), (60.0, 45.0, 120.0, 75.0, None)


def test_measurements_in_csv_and_json(tmp_path):
    """Every result carries the heart rate and intervals (empty, with the reason, where not measured)."""
    export = tiny_export(tmp_path / "tiny")
    h5, rates = _known_rate_set(tmp_path / "rates.h5")
    csv_path, json_path = tmp_path / "out.csv", tmp_path / "out.json"
    for out in (csv_path, json_path):
        r = run_cli("infer", str(h5), "--model", str(export), "-o", str(out))
        assert r.exit_code == 0, r.output
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    doc = json.loads(json_path.read_text())
    assert list(rows[0])[-len(MEASUREMENT_COLUMNS):] == list(MEASUREMENT_COLUMNS)
    assert doc["measurements"]["qtc_ms"].startswith("Bazett")
    for row, exam, rate in zip(rows, doc["exams"], rates, strict=True):
        assert all(name in exam for name in MEASUREMENT_COLUMNS)
        assert row["heart_rate_bpm"] == ("" if exam["heart_rate_bpm"] is None else str(exam["heart_rate_bpm"]))
        assert row["measurements_note"] == exam["measurements_note"]
        if not available():
            assert exam["heart_rate_bpm"] is None and exam["measurements_note"] == INSTALL_HINT
        elif rate is None:
            assert exam["heart_rate_bpm"] is None and exam["measurements_note"].startswith("no rate: under 2 s")
        else:  # the padding of the 4 s exam is left out; infer alone measures the rate (PR, QT: with sheets)
            assert exam["heart_rate_bpm"] == pytest.approx(rate, rel=0.03), exam["measurements_note"]
            assert exam["pr_ms"] is None and exam["qrs_ms"] is None and "R peaks only" in exam["measurements_note"]


def test_measurement_levels(tmp_path):
    from ecg_edge.exams import ReadOptions

    export = tiny_export(tmp_path / "tiny")
    h5, _ = _known_rate_set(tmp_path / "rates.h5")
    runner_, manifest = open_backend(export, "ort-cpu", "fp32")
    with runner_:
        runs = {level: run_inference([h5], runner_, manifest, options=ReadOptions(measure=level))
                for level in ("off", "rate", "intervals", "auto")}
        sheets = run_inference([h5], runner_, manifest, options=ReadOptions(keep_traces=True))
    assert all(e.measurements.note == "not measured" for e in runs["off"].exams)
    if available():
        first = {level: run.exams[0].measurements for level, run in runs.items()}
        assert first["rate"].heart_rate_bpm is not None and first["rate"].pr_ms is None
        assert first["intervals"].pr_ms == pytest.approx(160, abs=30) and first["intervals"].qtc_ms is not None
        assert first["auto"] == first["rate"] and sheets.exams[0].measurements == first["intervals"]
    with pytest.raises(ValueError, match="measure="):
        ReadOptions(measure="everything")


def test_backend_threads_spin_only_where_the_backend_has_the_cpus_alone(tmp_path, monkeypatch):
    """onnxruntime's threads spin between runs unless told not to; infer tells them where its input side
    is costly (recordings read one by one) and lets them spin on HDF5 (both measured in
    benchmarks/results/input-workers-2026-12-07-sleeping-threads.md)."""
    import ecg_edge.backends as backends
    from ecg_edge.request import InferRequest, run_request

    export = tiny_export(tmp_path / "tiny")
    for spin in (True, False):
        runner_, _ = open_backend(export, "ort-cpu", "fp32", spin=spin)
        with runner_:
            entry = runner_._session.get_session_options().get_session_config_entry
            if spin:  # onnxruntime's default: spinning
                with pytest.raises(RuntimeError, match="allow_spinning"):
                    entry("session.intra_op.allow_spinning")
            else:
                assert entry("session.intra_op.allow_spinning") == "0"
    opened = []
    real_open = backends.open_backend

    def recording(*args, **kwargs):
        opened.append(kwargs.get("spin", True))
        return real_open(*args, **kwargs)

    monkeypatch.setattr(backends, "open_backend", recording)
    h5, _ = _known_rate_set(tmp_path / "rates.h5")
    run_request(InferRequest((h5,), model=export, backend="ort-cpu", workers=0))
    ptbxl = Path(__file__).parent / "data" / "ptbxl"  # WFDB records that travel with the repository
    run_request(InferRequest((h5, ptbxl), model=export, backend="ort-cpu", workers=0))
    assert opened == [True, False]


def test_threshold_override(tmp_path):
    export = tiny_export(tmp_path / "tiny")
    h5, _ = _hdf5_set(tmp_path / "e.h5", n=5)
    out = tmp_path / "o.json"
    assert run_cli("infer", str(h5), "--model", str(export), "--threshold", "1.0", "--threshold", "AF=0",
                   "-o", str(out)).exit_code == 0
    doc = json.loads(out.read_text())
    assert all(e["findings"] == ["AF"] for e in doc["exams"])
    bad = run_cli("infer", str(h5), "--model", str(export), "--threshold", "XYZ=0.3")
    assert bad.exit_code == 2 and "unknown class" in bad.output


def test_twenty_thousand_exams_bounded_memory(tmp_path):
    """20,000 exams (3.9 GB of tracings) stream through with peak RSS under 1 GiB.

    The first 512 exams hold synthetic ECGs; the rest are HDF5 fill values, read through the same
    API: the file is made in a second rather than minutes.
    """
    from ecg_edge.synthetic import synthesize

    export = tiny_export(tmp_path / "tiny")
    path = tmp_path / "big.h5"
    with h5py.File(path, "w") as f:
        d = f.create_dataset("tracings", shape=(20_000, 4096, 12), dtype="float32", chunks=(16, 4096, 12))
        d[:512] = synthesize(512, seed=1)[0]
        f.create_dataset("exam_id", data=np.arange(20_000))
    out = tmp_path / "big.csv"
    # The child reports its own peak RSS: VmHWM starts afresh at exec, while getrusage's ru_maxrss
    # keeps the forking parent's peak (pytest with TensorFlow loaded).
    code = (
        "import sys\n"
        "from ecg_edge.cli import app\n"
        f"sys.argv = ['ecg-edge', 'infer', {str(path)!r}, '--model', {str(export)!r}, '-o', {str(out)!r}]\n"
        "try:\n    app()\nexcept SystemExit as exc:\n    status = exc.code\n"
        "hwm = [line for line in open('/proc/self/status') if line.startswith('VmHWM')][0]\n"
        "print('PEAK_KIB', hwm.split()[1], file=sys.stderr)\n"
        "sys.exit(status)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    peak_kib = int(proc.stderr.split("PEAK_KIB")[1].split()[0])
    assert peak_kib < 1 << 20, f"peak RSS {peak_kib / 1024:.0f} MiB"
    with open(out) as f:
        assert sum(1 for _ in f) == 20_001


# Bad input: exit code 2, one line naming the file and the problem, no output file.
def _nan_h5(p):
    x = np.zeros((3, 4096, 12), np.float32)
    x[1, 100, 3] = np.nan
    write_code_hdf5(p, x, exam_ids=[1, 2, 3])


@pytest.mark.parametrize(
    ("name", "make", "extra", "message"),
    [
        ("nan.h5", _nan_h5, [], "NaN"),
        ("empty.h5", lambda p: p.write_bytes(b""), [], "file is empty"),
        ("corrupt.h5", lambda p: p.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 64), [], "not a readable HDF5"),
        ("short.h5", lambda p: write_code_hdf5(p, np.zeros((2, 1000, 12))), [], "expected (N, 4096, 12)"),
        ("x.npy", lambda p: np.save(p, np.zeros((5000, 12))), [], "pass --fs and --leads"),
        ("few.npy", lambda p: np.save(p, np.ones((5000, 3))), ["--fs", "500", "--leads", "I,V1,V2"],
         "missing leads"),
        ("rate.npy", lambda p: np.save(p, np.ones((5000, 2))), ["--fs", "0", "--leads", "I,II"],
         "invalid sampling rate"),
    ],
    ids=lambda v: v if isinstance(v, str) and "." in v else "",
)
def test_bad_input_exit_2(tmp_path, name, make, extra, message):
    export = tiny_export(tmp_path / "tiny")
    bad = tmp_path / name
    make(bad)
    out = tmp_path / "out.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "ecg_edge.cli", "infer", str(bad), "--model", str(export), "-o", str(out), *extra],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(bad) in errors[0] and message in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists() and not list(tmp_path.glob(".out.csv*"))


def test_model_not_matching_manifest(tmp_path):
    export = tiny_export(tmp_path / "tiny")
    h5, _ = _hdf5_set(tmp_path / "e.h5", n=3)
    with open(export / "model.onnx", "ab") as f:
        f.write(b"tampered")
    r = run_cli("infer", str(h5), "--model", str(export))
    assert r.exit_code == 2 and "sha256 does not match" in r.output
    shutil.rmtree(export)
    r = run_cli("infer", str(h5), "--model", str(export))
    assert r.exit_code == 2 and "no export here" in r.output


def test_keep_going_skips_bad_file(tmp_path):
    export = tiny_export(tmp_path / "tiny")
    good, _ = _hdf5_set(tmp_path / "good.h5", n=4)
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    out = tmp_path / "o.csv"
    stop = run_cli("infer", str(bad), str(good), "--model", str(export), "-o", str(out))
    assert stop.exit_code == 2 and not out.exists()
    going = run_cli("infer", str(bad), str(good), "--model", str(export), "-o", str(out), "--keep-going")
    assert going.exit_code == 0, going.output
    assert "skipped" in going.output and "bad.h5" in going.output
    with open(out) as f:
        assert [r["exam_id"] for r in csv.DictReader(f)] == ["1000", "1001", "1002", "1003"]


def test_unknown_backend_and_output(tmp_path):
    export = tiny_export(tmp_path / "tiny")
    h5, _ = _hdf5_set(tmp_path / "e.h5", n=2)
    r = run_cli("infer", str(h5), "--model", str(export), "--backend", "tensorrt")
    assert r.exit_code == 2 and "no fp32 TensorRT engine" in r.output
    r = run_cli("infer", str(h5), "--model", str(export), "-o", str(tmp_path / "x.txt"))
    assert r.exit_code == 2 and ".csv or .json" in r.output


def test_io_binding_fixed_batch_matches_plain_run(six_export, tmp_path):
    """The bound path (fixed device buffers, what CUDA graphs replay) runs here on CPU buffers:
    the first batch fixes the shape, smaller batches are padded, larger ones run in parts."""
    from ecg_edge.backends.onnxruntime import OnnxRuntimeBackend
    from ecg_edge.synthetic import synthesize

    _, result = six_export
    x, _ = synthesize(13, seed=9)
    path = result.out_dir / "model.onnx"
    with OnnxRuntimeBackend(path) as plain:
        expected = plain.infer(x)
    with OnnxRuntimeBackend(path, io_binding=True) as bound:
        assert bound.max_batch is None
        first = bound.infer(x[:8])
        assert bound.max_batch == 8
        second = bound.infer(x[8:])  # 5 exams padded to 8
        assert second.shape == (5, len(CLASSES))
        np.testing.assert_allclose(np.concatenate([first, second]), expected, atol=1e-6)
        # new data in the same buffers: not a stale copy of the first batch
        np.testing.assert_allclose(bound.infer(x[5:13]), expected[5:13], atol=1e-6)
        np.testing.assert_allclose(bound.infer(x), expected, atol=1e-6)  # 13 exams: 8 + 5
        assert bound.max_batch == 8
    assert bound.max_batch is None  # unbound on close: the next activation binds afresh


def test_cuda_graph_needs_ort_cuda(tmp_path):
    export = tiny_export(tmp_path / "tiny")
    h5, _ = _hdf5_set(tmp_path / "e.h5", n=2)
    r = run_cli("infer", str(h5), "--model", str(export), "--backend", "ort-cpu", "--cuda-graph")
    assert r.exit_code == 2 and "--cuda-graph needs the ort-cuda backend" in r.output


def test_tensorrt_ep_options_follow_the_graph_precision():
    """TensorRT 10's EP builds weakly typed networks: FP16 casts and Q/DQ nodes need their precision
    switched on, and the batch profile covers what infer and bench send."""
    from ecg_edge.backends.onnxruntime import OnnxRuntimeBackend

    def options(precision, cache=None):
        backend = OnnxRuntimeBackend("m.onnx", device="tensorrt", precision=precision, trt_cache_dir=cache)
        (provider, opts), (cuda, cuda_opts), cpu = backend._provider_options()
        assert (provider, cuda, cpu) == ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
        assert cuda_opts["use_tf32"] == ("0" if precision == "fp32" else "1")  # FP32 computes in FP32
        return opts

    fp32, fp16, int8 = options("fp32"), options("fp16"), options("int8", cache="/c")
    assert "trt_fp16_enable" not in fp32 and "trt_int8_enable" not in fp32
    assert fp16["trt_fp16_enable"] == "True" and "trt_int8_enable" not in fp16
    assert int8["trt_int8_enable"] == "True" and "trt_fp16_enable" not in int8
    assert fp32["trt_profile_min_shapes"] == "signal:1x4096x12"
    assert fp32["trt_profile_max_shapes"] == "signal:256x4096x12"
    assert int8["trt_engine_cache_path"] == "/c" and "trt_engine_cache_path" not in fp32


def test_ort_tensorrt_int8_needs_the_symmetric_file(six_export):
    """The CPU INT8 file has uint8 zero points that TensorRT refuses: never hand it to the TensorRT EP."""
    from ecg_edge.backends import backend_present
    from ecg_edge.manifest import load_manifest

    _, result = six_export
    manifest = load_manifest(result.out_dir)
    assert all(e.get("variant") != "symmetric" for e in manifest["files"].values())
    ok, why = backend_present("ort-tensorrt", manifest, "int8")
    assert not ok and "symmetric INT8" in why and "--for-tensorrt" in why
    r = run_cli("infer", str(SHARED_WFDB), "--model", str(result.out_dir), "--backend", "ort-tensorrt",
                "--precision", "int8")
    assert r.exit_code == 2 and "symmetric INT8" in r.output


def _damaged_chunk_h5(p):
    """A valid file whose second compressed chunk is overwritten: the header reads, the data do not."""
    x = np.random.default_rng(0).normal(size=(40, 4096, 12)).astype(np.float32)
    with h5py.File(p, "w") as f:
        f.create_dataset("tracings", data=x, chunks=(10, 4096, 12), compression="gzip")
        offset = f["tracings"].id.get_chunk_info(1).byte_offset
    with open(p, "r+b") as fh:
        fh.seek(offset + 16)
        fh.write(b"\xff" * 256)


def test_damaged_hdf5_chunk_exit_2(tmp_path):
    export = tiny_export(tmp_path / "tiny")
    bad = tmp_path / "damaged.h5"
    _damaged_chunk_h5(bad)
    out = tmp_path / "out.csv"
    r = run_cli("infer", str(bad), "--model", str(export), "-o", str(out))
    assert r.exit_code == 2 and "damaged.h5" in r.output and "unreadable" in r.output, r.output
    assert not out.exists()


def test_permission_denied_exit_2():
    """Unreadable input and unwritable output: one line each, exit 2, nothing written. Run as an
    unprivileged user (root reads everything)."""
    import os
    import tempfile

    as_user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
    if as_user and not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: cannot take permissions away")
    root = tempfile.mkdtemp(prefix="ecg-edge-perm-")
    try:
        os.chmod(root, 0o755)
        from pathlib import Path

        root_path = Path(root)
        export = tiny_export(root_path / "tiny")
        h5, _ = _hdf5_set(root_path / "e.h5", n=3)
        secret = root_path / "secret.h5"
        shutil.copy(h5, secret)
        os.chmod(secret, 0o000)
        locked = root_path / "locked"
        locked.mkdir(mode=0o555)
        env = {**os.environ, "ECG_EDGE_HOME": str(root_path / "home"), "HOME": root}
        for args, named, problem in (
            ([str(secret)], secret, "Permission denied"),
            ([str(h5), "-o", str(locked / "out.csv")], locked, "not writable"),
        ):
            proc = subprocess.run([*as_user, sys.executable, "-m", "ecg_edge.cli", "infer", *args, "--model",
                                   str(export)], capture_output=True, text=True, env=env)
            errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
            assert proc.returncode == 2, proc.stderr
            assert len(errors) == 1 and str(named) in errors[0] and problem in errors[0], proc.stderr
            assert "Traceback" not in proc.stderr
        assert list(locked.iterdir()) == []
    finally:
        for dirpath, dirnames, _ in os.walk(root):
            for d in dirnames:
                os.chmod(os.path.join(dirpath, d), 0o755)
        shutil.rmtree(root, ignore_errors=True)


def test_shards_cover_the_run_once_and_merge(tmp_path):
    """N shards: disjoint, their union is the unsharded output; merge joins them (CSV and JSON)."""
    export = tiny_export(tmp_path / "tiny")
    from ecg_edge.synthetic import synthesize

    h5a, _ = _hdf5_set(tmp_path / "a.h5", n=30, seed=1)
    h5b = write_code_hdf5(tmp_path / "b.h5", synthesize(25, seed=2)[0], exam_ids=np.arange(5000, 5025))
    inputs = [str(h5a), str(h5b)] + ([str(SHARED_WFDB)] if SHARED_WFDB.exists() else [])
    whole = tmp_path / "whole.csv"
    assert run_cli("infer", *inputs, "--model", str(export), "-o", str(whole)).exit_code == 0

    def rows(path):
        with open(path, newline="") as f:
            return {r["exam_id"]: r for r in csv.DictReader(f)}

    parts = []
    for i in range(3):
        for suffix in (".csv", ".json"):
            out = tmp_path / f"part{i}{suffix}"
            r = run_cli("infer", *reversed(inputs), "--model", str(export), "--shard", f"{i}/3", "-o", str(out))
            assert r.exit_code == 0, r.output
        parts.append(rows(tmp_path / f"part{i}.csv"))
    assert all(len(p) > 0 for p in parts) and sum(len(p) for p in parts) == len(rows(whole))
    assert {k: v for p in parts for k, v in p.items()} == rows(whole)  # same ids, probabilities, flags
    merged = tmp_path / "merged.csv"
    r = run_cli("merge", *(str(tmp_path / f"part{i}.csv") for i in range(3)), "-o", str(merged))
    assert r.exit_code == 0 and rows(merged) == rows(whole)
    merged_json = tmp_path / "merged.json"
    r = run_cli("merge", *(str(tmp_path / f"part{i}.json") for i in range(3)), "-o", str(merged_json))
    doc = json.loads(merged_json.read_text())
    assert r.exit_code == 0 and sorted(e["exam_id"] for e in doc["exams"]) == sorted(rows(whole))
    # overlapping shards and bad --shard values are refused, nothing written
    r = run_cli("merge", str(tmp_path / "part0.csv"), str(whole), "-o", str(tmp_path / "x.csv"))
    assert r.exit_code == 2 and "overlapping shards" in r.output and not (tmp_path / "x.csv").exists()
    for bad in ("3/3", "a/b", "1"):
        r = run_cli("infer", str(h5a), "--model", str(export), "--shard", bad)
        assert r.exit_code == 2 and "--shard" in r.output


def test_folder_where_a_file_is_expected_exit_2(tmp_path):
    export = tiny_export(tmp_path / "tiny")
    h5, _ = _hdf5_set(tmp_path / "e.h5", n=3)
    (tmp_path / "out.csv").mkdir()
    r = run_cli("infer", str(h5), "--model", str(export), "-o", str(tmp_path / "out.csv"))
    assert r.exit_code == 2 and "out.csv" in r.output and "is a folder" in r.output
    (tmp_path / "m.json").mkdir()
    r = run_cli("merge", str(tmp_path / "m.json"), "-o", str(tmp_path / "merged.json"))
    assert r.exit_code == 2 and "m.json" in r.output and "no such file" in r.output


def test_measure_option_sets_the_level(tmp_path):
    """`--measure off` leaves every measurement empty, saying so; an unknown level is exit 2 before any work."""
    export = tiny_export(tmp_path / "tiny")
    h5, _ = _known_rate_set(tmp_path / "rates.h5")
    out = tmp_path / "off.json"
    r = run_cli("infer", str(h5), "--model", str(export), "--measure", "off", "-o", str(out))
    assert r.exit_code == 0, r.output
    exams = json.loads(out.read_text())["exams"]
    assert all(e["heart_rate_bpm"] is None and e["measurements_note"] == "not measured" for e in exams)
    bad = run_cli("infer", str(h5), "--model", str(export), "--measure", "fast", "-o", str(tmp_path / "x.json"))
    assert bad.exit_code == 2 and "--measure 'fast'" in bad.output and not (tmp_path / "x.json").exists()

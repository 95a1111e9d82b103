"""`infer --ray` on a local Ray cluster: the same results as plain `infer`, bad files reported."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from conftest import SHARED_WFDB, write_code_hdf5
from test_infer import run_cli, tiny_export

ray = pytest.importorskip("ray")

from ecg_edge.backends import open_backend  # noqa: E402
from ecg_edge.exams import ReadOptions  # noqa: E402
from ecg_edge.infer import run_inference  # noqa: E402
from ecg_edge.ray_infer import UNIT_EXAMS, read_units, run_inference_ray  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, object_store_memory=400 * 1024**2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray")
    rng = np.random.default_rng(0)
    files = []
    for k, n in enumerate((1200, 900, 600)):  # a few thousand exams over several files and read units
        x = (rng.normal(0, 0.1, size=(n, 4096, 12)) + np.sin(np.linspace(0, 60, 4096))[None, :, None]).astype(
            np.float32)
        files.append(write_code_hdf5(root / f"part{k}.h5", x, exam_ids=np.arange(10_000 * (k + 1),
                                                                                  10_000 * (k + 1) + n)))
    bad = root / "bad.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)
    extra = [SHARED_WFDB] if SHARED_WFDB.exists() else []
    return root, files, bad, extra


def test_read_units_split_hdf5_files(inputs):
    _, files, _, _ = inputs
    units = read_units(files)
    assert [u["stop"] - u["start"] for u in units if u["path"] == str(files[0])] == [256, 256, 256, 256, 176]
    assert max(u["stop"] - u["start"] for u in units) == UNIT_EXAMS


@pytest.mark.slow
def test_ray_matches_plain_infer(cluster, inputs, tmp_path):
    root, files, bad, extra = inputs
    export = tiny_export(tmp_path / "tiny")
    runner, manifest = open_backend(export, "ort-cpu", "fp32")
    # measurements through Ray are compared by the CLI test below (here they would cost ~30 ms an exam)
    options = ReadOptions(keep_going=True, measure="off")
    everything = [*files, *extra, bad]
    with runner:
        plain = run_inference(everything, runner, manifest, options=options)
    run = run_inference_ray(everything, export, "ort-cpu", "fp32", manifest, options=options, actors=1)
    assert run.ids == plain.ids and len(run.ids) == 2700 + (13 if extra else 0)
    np.testing.assert_allclose(run.probabilities, plain.probabilities, atol=1e-6)
    assert run.findings() == plain.findings()
    assert [e.quality for e in run.exams] == [e.quality for e in plain.exams]
    assert [e.provenance for e in run.exams] == [e.provenance for e in plain.exams]
    assert len(run.skipped) == 1 and "bad.h5" in run.skipped[0]  # reported, not dropped


@pytest.fixture(scope="module")
def plain_csv(inputs, tmp_path_factory):
    """Plain `infer` (no Ray) of the last file, 600 exams in three read units, run once for the tests that
    compare Ray's output with it (measuring every exam's rate takes ~30 ms an exam here)."""
    _, files, _, _ = inputs
    root = tmp_path_factory.mktemp("plain")
    export = tiny_export(root / "tiny")
    assert run_cli("infer", str(files[2]), "--model", str(export), "-o", str(root / "plain.csv")).exit_code == 0
    return export, root / "plain.csv"


@pytest.mark.slow
def test_cli_ray_output_equals_plain(cluster, inputs, plain_csv, tmp_path):
    _, files, bad, _ = inputs
    export, plain = plain_csv
    on_ray = tmp_path / "ray.csv"
    r = run_cli("infer", str(files[2]), "--model", str(export), "--ray", "-o", str(on_ray))
    assert r.exit_code == 0, r.output

    def rows(path):
        with open(path, newline="") as f:
            return list(csv.DictReader(f))

    assert rows(on_ray) == rows(plain)
    r = run_cli("infer", str(files[2]), str(bad), "--model", str(export), "--ray")
    assert r.exit_code == 2 and "bad.h5" in r.output and "Traceback" not in r.output


@pytest.mark.slow
def test_parquet_written_by_the_workers(cluster, inputs, plain_csv, tmp_path):
    import pyarrow.dataset

    _, files, _, _ = inputs
    export, plain = plain_csv
    out = tmp_path / "results.parquet"
    r = run_cli("infer", str(files[2]), "--model", str(export), "--ray", "-o", str(out))
    assert r.exit_code == 0, r.output
    assert len(list(out.glob("*.parquet"))) >= 2  # one file per block, written by the workers
    table = pyarrow.dataset.dataset(str(out), format="parquet").to_table().to_pylist()
    with open(plain, newline="") as f:
        expected = {row["exam_id"]: row for row in csv.DictReader(f)}
    assert sorted(row["exam_id"] for row in table) == sorted(expected)
    for row in table:
        want = expected[row["exam_id"]]
        assert abs(row["AF"] - float(want["AF"])) < 1e-6
        assert row["findings"] == want["findings"] and row["quality"] == want["quality"] and row["error"] == ""
        assert row["source"] == want["source"] == str(files[2])
    assert list(table[0]) == [*expected[table[0]["exam_id"]], "error"]  # the columns of the CSV, in its order
    r = run_cli("infer", str(files[2]), "--model", str(export), "-o", str(tmp_path / "x.parquet"))
    assert r.exit_code == 2 and "--ray" in r.output

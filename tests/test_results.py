"""Results files: every one names each exam's source file; merge reads them back with the same schema,
files written before `source` was a column included; the request the command line builds."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import write_code_hdf5
from test_infer import run_cli, tiny_export

from ecg_edge.errors import InputError
from ecg_edge.exams import ReadOptions
from ecg_edge.measure import COLUMNS as MEASUREMENT_COLUMNS
from ecg_edge.request import InferRequest, RayOptions, run_request
from ecg_edge.results import ResultSchema, read_results
from ecg_edge.spec import CLASSES


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    """Two HDF5 files whose exams have the same ids (1-6) and different signals, and a model."""
    from ecg_edge.synthetic import synthesize

    root = tmp_path_factory.mktemp("twins")
    a = write_code_hdf5(root / "a.h5", synthesize(6, seed=1)[0], exam_ids=np.arange(1, 7))
    b = write_code_hdf5(root / "b.h5", synthesize(6, seed=2)[0], exam_ids=np.arange(1, 7))
    return root, a, b, tiny_export(root / "tiny")


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _keyed(rows):
    return {(r["source"], r["exam_id"]): r for r in rows}


def test_same_exam_ids_in_two_files_are_told_apart_by_source(twins, tmp_path):
    root, a, b, export = twins
    out_csv, out_json = tmp_path / "both.csv", tmp_path / "both.json"
    for out in (out_csv, out_json):
        assert run_cli("infer", str(a), str(b), "--model", str(export), "-o", str(out)).exit_code == 0
    rows = _rows(out_csv)
    assert len(rows) == 12 and len(_keyed(rows)) == 12
    assert [r["source"] for r in rows] == [str(a)] * 6 + [str(b)] * 6
    assert [r["exam_id"] for r in rows] == [str(i) for i in range(1, 7)] * 2
    assert rows[0]["AF"] != rows[6]["AF"]  # same id, another exam
    exams = json.loads(out_json.read_text())["exams"]
    assert [(e["source"], e["exam_id"]) for e in exams] == [(r["source"], r["exam_id"]) for r in rows]


def test_merge_keeps_sources_and_refuses_overlaps(twins, tmp_path):
    root, a, b, export = twins
    whole = tmp_path / "whole.csv"
    assert run_cli("infer", str(a), str(b), "--model", str(export), "-o", str(whole)).exit_code == 0
    for suffix in (".csv", ".json"):
        parts = [tmp_path / f"part{i}{suffix}" for i in range(2)]
        for i, part in enumerate(parts):
            r = run_cli("infer", str(a), str(b), "--model", str(export), "--shard", f"{i}/2", "-o", str(part))
            assert r.exit_code == 0, r.output
        merged = tmp_path / f"merged{suffix}"
        r = run_cli("merge", *map(str, parts), "-o", str(merged))
        assert r.exit_code == 0, r.output
        if suffix == ".csv":
            assert _keyed(_rows(merged)) == _keyed(_rows(whole))
        else:
            exams = json.loads(merged.read_text())["exams"]
            assert sorted((e["source"], e["exam_id"]) for e in exams) == sorted(_keyed(_rows(whole)))
    # the outputs of the two files alone: the same ids, told apart by their source
    alone = [tmp_path / "a.csv", tmp_path / "b.csv"]
    for path, h5 in zip(alone, (a, b), strict=True):
        assert run_cli("infer", str(h5), "--model", str(export), "-o", str(path)).exit_code == 0
    assert run_cli("merge", *map(str, alone), "-o", str(tmp_path / "ab.csv")).exit_code == 0
    assert _keyed(_rows(tmp_path / "ab.csv")) == _keyed(_rows(whole))
    r = run_cli("merge", str(alone[0]), str(whole), "-o", str(tmp_path / "x.csv"))
    assert r.exit_code == 2 and "overlapping shards" in r.output and not (tmp_path / "x.csv").exists()


def _without_source(path, out):
    """A results file as ecg-edge wrote it before `source` was a column."""
    if path.suffix == ".csv":
        rows = _rows(path)
        with open(out, "w", newline="") as f:
            writer = csv.DictWriter(f, [c for c in rows[0] if c != "source"])
            writer.writeheader()
            writer.writerows({k: v for k, v in r.items() if k != "source"} for r in rows)
    else:
        doc = json.loads(path.read_text())
        doc["exams"] = [{k: v for k, v in e.items() if k != "source"} for e in doc["exams"]]
        out.write_text(json.dumps(doc))
    return out


def test_merge_reads_files_written_before_the_source_column(twins, tmp_path):
    root, a, b, export = twins
    for suffix in (".csv", ".json"):
        parts = []
        for i in range(2):
            new = tmp_path / f"new{i}{suffix}"
            assert run_cli("infer", str(a), "--model", str(export), "--shard", f"{i}/2", "-o", str(new)).exit_code == 0
            parts.append(_without_source(new, tmp_path / f"old{i}{suffix}"))
        merged = tmp_path / f"merged{suffix}"
        r = run_cli("merge", *map(str, parts), "-o", str(merged))
        assert r.exit_code == 0, r.output
        back = read_results(merged)
        assert sorted(e["exam_id"] for e in back.exams) == [str(i) for i in range(1, 7)]
        assert all(not e.get("source") for e in back.exams)
    assert read_results(tmp_path / "merged.csv").schema == ResultSchema(tuple(CLASSES))
    with open(tmp_path / "merged.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header == ["exam_id", "source", *CLASSES, "findings", "quality", *MEASUREMENT_COLUMNS]
    # an exam of an old file (no source) and one of a new file with its id: maybe the same exam
    new_b = tmp_path / "b.csv"
    assert run_cli("infer", str(b), "--model", str(export), "-o", str(new_b)).exit_code == 0
    r = run_cli("merge", str(tmp_path / "old0.csv"), str(new_b), "-o", str(tmp_path / "x.csv"))
    assert r.exit_code == 2 and "overlapping shards" in r.output


def test_not_a_results_file_exit_2(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,AF\n1,0.5\n")
    r = run_cli("merge", str(bad), "-o", str(tmp_path / "m.csv"))
    assert r.exit_code == 2 and "not an ecg-edge results CSV" in r.output


def test_request_runs_and_checks_before_any_work(twins, tmp_path):
    root, a, b, export = twins
    out = tmp_path / "o.csv"
    lines: list[str] = []
    run = run_request(InferRequest((a,), model=export, backend="ort-cpu", batch=4, thresholds=("AF=0",),
                                   read=ReadOptions(measure="off"), output=out), log=lines.append)
    assert run.ids == [str(i) for i in range(1, 7)] and all("AF" in f for f in run.findings())
    assert [r["exam_id"] for r in _rows(out)] == run.ids and lines[0].startswith("backend: ")
    for request, problem in (
        (InferRequest((a,), model=export, output=tmp_path / "o.parquet"), "written by --ray"),
        (InferRequest((a,), model=export, report=tmp_path / "r", ray=RayOptions()), "--ray runs without --report"),
        (InferRequest((a,), model=export, output=tmp_path / "o.txt"), ".csv or .json"),
        (InferRequest((a,), model=tmp_path / "none"), "no export here"),
    ):
        with pytest.raises(InputError, match=problem):
            run_request(request)
    assert not (tmp_path / "r").exists()

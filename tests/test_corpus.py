"""Several labelled folders as one training set: the cache, the patient split, FLAC WFDB."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from ecg_edge.spec import CLASSES

pytest.importorskip("keras")

from ecg_edge.training import corpus as corpus_module  # noqa: E402
from ecg_edge.training.corpus import assign_parts, build_corpus, corpus_rows, folder_key  # noqa: E402

PTBXL = Path(__file__).parent / "data" / "ptbxl"
CINC = Path(__file__).parent / "data" / "cinc"
SAME_PATIENT = ("08884_hr", "09409_hr")  # PTB-XL patient 12827


def _wfdb_folder(folder: Path, n: int, rate_hz: int = 500) -> Path:
    """`n` small WFDB records (random signals) and a labels.csv without patients."""
    import wfdb

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        name = f"rec{i}"
        signal = rng.normal(0, 0.2, (rate_hz * 2, 12))
        wfdb.wrsamp(name, fs=rate_hz, units=["mV"] * 12, sig_name=["I", "II", "III", "aVR", "aVL", "aVF",
                                                                    "V1", "V2", "V3", "V4", "V5", "V6"],
                    p_signal=signal, fmt=["16"] * 12, write_dir=str(folder))
        rows.append([name, "LUDB 1.0.1", rate_hz, *[int(i % 6 == k) for k in range(6)], int(i % 6 == 5)])
    with open(folder / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["record", "source", "fs", *CLASSES, "normal"])
        writer.writerows(rows)
    return folder


@pytest.fixture
def folders(tmp_path: Path) -> list[Path]:
    ptbxl = tmp_path / "ptbxl"
    shutil.copytree(PTBXL, ptbxl)
    return [ptbxl, _wfdb_folder(tmp_path / "other", 6)]


def test_a_folder_of_each_kind_goes_into_one_corpus(tmp_path):
    """PTB-XL (FLAC WFDB, patients), CinC (.mat, CPSC and Georgia headers) and a CODE-layout HDF5 file
    labelled `FILE.h5#i`, as the three real folders hold them."""
    import h5py
    from conftest import write_code_hdf5

    code = tmp_path / "code"
    code.mkdir()
    write_code_hdf5(code / "exams.h5", np.random.default_rng(1).normal(0, 0.2, (3, 4096, 12)), exam_ids=[7, 8, 9])
    with open(code / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["record", "source", *CLASSES, "normal"])
        writer.writerows([f"exams.h5#{i}", "CODE-test", 0, 0, 0, 0, int(i == 8), 0, int(i != 8)] for i in (7, 8, 9))
    corpus = build_corpus([PTBXL, CINC, code], tmp_path / "cache")
    ids = set()
    for path in corpus.files:
        with h5py.File(path, "r") as f:
            ids |= {v.decode() for v in f["exam_id"][:]}
            assert np.abs(f["tracings"][:]).max() > 0.05  # signals, not zeros
    assert ids == {r["exam_id"] for r in corpus.rows}
    assert {"cinc/A0002", "cinc/E00001", "code/exams.h5#8", "ptbxl/00482_hr"} <= ids
    sources = {r["exam_id"]: r["source"] for r in corpus.rows}
    assert sources["cinc/E00001"] == "CinC" and sources["code/exams.h5#8"] == "CODE-test"
    assert {r["exam_id"]: r["AF"] for r in corpus.rows}["code/exams.h5#8"] == "1"


def _labels_only(folder: Path, rows: list[dict[str, str]]) -> Path:
    folder.mkdir(parents=True)
    columns = ["record", "source", *CLASSES, "normal", "patient_id", "strat_fold"]
    with open(folder / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows({c: row.get(c, "0") for c in columns} for row in rows)
    return folder


def test_a_cinc_copy_of_a_ptbxl_record_joins_its_patient_whatever_the_order(tmp_path):
    ptbxl = _labels_only(tmp_path / "ptbxl", [
        {"record": "06000_hr", "source": "PTB-XL", "patient_id": "42", "strat_fold": "8"},
        {"record": "06001_hr", "source": "PTB-XL", "patient_id": "42", "strat_fold": "8"}])
    cinc = _labels_only(tmp_path / "cinc", [{"record": "HR06000", "source": "CinC", "patient_id": "",
                                             "strat_fold": ""}])
    for order in ([ptbxl, cinc], [cinc, ptbxl]):
        rows = corpus_rows(order)
        parts = assign_parts(rows, 0.5, 0.5, {"8": "test"}, seed="x")
        assert {r["exam_id"]: r["group"] for r in rows}["cinc/HR06000"] == "ptbxl-patient/42"
        assert {parts[e] for e in ("ptbxl/06000_hr", "ptbxl/06001_hr", "cinc/HR06000")} == {"test"}


def test_stale_caches_are_only_the_folders_own(tmp_path):
    """`set` and `set-more` are two folders: refreshing one never removes the other's cache."""
    a, b = _wfdb_folder(tmp_path / "set", 2), _wfdb_folder(tmp_path / "set-more", 2)
    cache = tmp_path / "cache"
    first = build_corpus([b, a], cache)
    signal_file = a / "rec0.dat"
    os.utime(signal_file, ns=(signal_file.stat().st_atime_ns, signal_file.stat().st_mtime_ns + 10**9))
    second = build_corpus([b, a], cache)
    assert second.files[0] == first.files[0] and second.files[0].exists()
    assert second.files[1] != first.files[1] and not first.files[1].exists()


@pytest.mark.parametrize("split", ["tail", "record"])
def test_any_split_of_a_corpus_is_by_patient(folders, tmp_path, split):
    from ecg_edge.training.data import train_validation_sequences

    corpus = build_corpus(folders, tmp_path / "cache")
    groups = {r["exam_id"]: r["group"] for r in corpus.rows}
    for seed in range(8):
        train, val = train_validation_sequences(corpus.files, corpus.labels_csv, "six", 4, 0.4, seed, split=split)
        train_groups = {groups[train._ids[f][r]] for f, r in train.index}
        val_groups = {groups[val._ids[f][r]] for f, r in val.index}
        assert train_groups and val_groups and train_groups.isdisjoint(val_groups)


def test_corpus_rows_name_sources_and_patients(folders):
    rows = {r["exam_id"]: r for r in corpus_rows(folders)}
    assert set(rows) == {f"ptbxl/{p.stem}" for p in PTBXL.glob("*.hea")} | {f"other/rec{i}" for i in range(6)}
    a, b = (rows[f"ptbxl/{r}"] for r in SAME_PATIENT)
    assert a["group"] == b["group"] == "ptbxl-patient/12827"
    assert rows["ptbxl/00482_hr"]["AF"] == "1" and rows["ptbxl/00482_hr"]["source"] == "PTB-XL"
    assert rows["other/rec0"]["group"] == "other/rec0" and rows["other/rec0"]["source"] == "LUDB"
    assert rows["ptbxl/00043_hr"]["fold"] == "8" and rows["other/rec0"]["fold"] == ""


def test_cache_is_made_once_and_remade_when_a_file_changes(folders, tmp_path, monkeypatch):
    import h5py

    cache = tmp_path / "cache"
    first = build_corpus(folders, cache)
    with h5py.File(first.files[0], "r") as f:
        ids = [v.decode() for v in f["exam_id"][:]]
        assert f["tracings"].shape == (4, 4096, 12)
    assert sorted(ids) == sorted(f"ptbxl/{p.stem}" for p in PTBXL.glob("*.hea"))
    with open(first.labels_csv, newline="") as f:
        assert {r["exam_id"] for r in csv.DictReader(f)} == set(ids) | {f"other/rec{i}" for i in range(6)}

    def no_preparing(*args, **kwargs):
        raise AssertionError("prepared again although nothing changed")

    monkeypatch.setattr("ecg_edge.training.labels.labelled_hdf5", no_preparing)
    assert build_corpus(folders, cache).files == first.files
    monkeypatch.undo()

    signal_file = folders[1] / "rec0.dat"
    os.utime(signal_file, ns=(signal_file.stat().st_atime_ns, signal_file.stat().st_mtime_ns + 10**9))
    second = build_corpus(folders, cache)
    assert second.files[0] == first.files[0] and second.files[1] != first.files[1]
    assert not first.files[1].exists()  # one cached version a folder


def test_cache_key_follows_the_preprocessing_version(folders, monkeypatch):
    before = folder_key(folders[0])
    monkeypatch.setattr(corpus_module, "PREPARE_VERSION", 10**6)
    assert folder_key(folders[0]) != before


def _synthetic_rows(n: int, seed: int) -> list[dict[str, str]]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        patient = int(rng.integers(0, n // 3))
        with_fold = rng.random() < 0.5
        rows.append({"exam_id": f"e{i}", "group": f"ptbxl-patient/{patient}" if with_fold else f"other/e{i}",
                     "fold": str(patient % 8 + 1) if with_fold else ""})
    return rows


@pytest.mark.parametrize("seed", range(5))
def test_no_patient_on_two_sides(seed):
    rows = _synthetic_rows(600, seed)
    parts = assign_parts(rows, 0.15, 0.15, {"7": "validation", "8": "test"}, seed=str(seed))
    side: dict[str, set[str]] = {}
    for row in rows:
        side.setdefault(row["group"], set()).add(parts[row["exam_id"]])
    assert all(len(s) == 1 for s in side.values())
    for row in rows:
        if row["fold"]:
            assert parts[row["exam_id"]] == {"7": "validation", "8": "test"}.get(row["fold"], "train")
    others = [parts[r["exam_id"]] for r in rows if not r["fold"]]
    assert 0.05 < others.count("validation") / len(others) < 0.25
    assert 0.05 < others.count("test") / len(others) < 0.25


def test_patient_split_of_training_sequences(folders, tmp_path):
    from ecg_edge.training.data import train_validation_sequences

    corpus = build_corpus(folders, tmp_path / "cache")
    groups = {r["exam_id"]: r["group"] for r in corpus.rows}
    for seed in range(8):  # whichever side the patient falls on, both of its records go there
        train, val = train_validation_sequences(corpus.files, corpus.labels_csv, "six", 4, 0.4, seed, split="patient")
        train_ids = {train._ids[f][r] for f, r in train.index}
        val_ids = {val._ids[f][r] for f, r in val.index}
        assert train_ids and val_ids and not train_ids & val_ids
        assert {groups[e] for e in train_ids}.isdisjoint({groups[e] for e in val_ids})
        train.close()
        val.close()


def test_a_part_column_decides_the_split(folders, tmp_path):
    from ecg_edge.training.corpus import CORPUS_COLUMNS, part_rows, write_rows
    from ecg_edge.training.data import train_validation_sequences

    corpus = build_corpus(folders, tmp_path / "cache")
    parts = {r["exam_id"]: ("validation" if r["exam_id"].startswith("ptbxl/") else "train") for r in corpus.rows}
    parts["other/rec0"] = "test"  # left out of training and validation alike
    csv_path = write_rows(part_rows(corpus.rows, parts, "train", "validation"), tmp_path / "tv.csv",
                          (*CORPUS_COLUMNS, "part"))
    train, val = train_validation_sequences(corpus.files, csv_path, "six", 4, 0.5, 0, split="patient")
    assert {val._ids[f][r] for f, r in val.index} == {f"ptbxl/{p.stem}" for p in PTBXL.glob("*.hea")}
    assert {train._ids[f][r] for f, r in train.index} == {f"other/rec{i}" for i in range(1, 6)}


def test_folders_of_one_name_are_refused(tmp_path):
    from ecg_edge.errors import InputError

    a = _wfdb_folder(tmp_path / "a" / "set", 2)
    b = _wfdb_folder(tmp_path / "b" / "set", 2)
    with pytest.raises(InputError, match="same name"):
        corpus_rows([a, b])


@pytest.mark.slow  # trains one epoch
def test_train_and_evaluate_on_several_labelled_folders(folders, tmp_path, home):
    from typer.testing import CliRunner

    from ecg_edge.cli import app

    out = tmp_path / "m.keras"
    runner = CliRunner()
    r = runner.invoke(app, ["train", *map(str, folders), "--epochs", "1", "--batch", "4", "--split", "patient",
                            "--validation-fraction", "0.4", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert list((home / "cache").glob("ptbxl-*.h5")) and list((home / "cache").glob("other-*.h5"))
    assert "validation exams" in r.output
    r = runner.invoke(app, ["evaluate", str(out), *map(str, folders), "--bootstrap", "10"])
    assert r.exit_code == 0, r.output
    assert all(c in r.output for c in CLASSES)

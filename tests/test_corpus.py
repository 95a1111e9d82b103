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
SAME_PATIENT = ("08884_hr", "09409_hr")  # PTB-XL patient 12827


def test_flac_wfdb_reads_like_any_wfdb_record():
    import wfdb

    from ecg_edge.readers import format_of, read_recording

    path = PTBXL / "00043_hr.hea"
    record = read_recording(path)
    reference = wfdb.rdrecord(str(PTBXL / "00043_hr"))
    assert format_of(path) == "wfdb"
    assert {f for f in reference.fmt} == {"516"} and len(set(reference.file_name)) == 2  # two FLAC files
    assert record.fs == 500 and record.signal.shape == (5000, 12)
    np.testing.assert_allclose(record.signal, reference.p_signal, atol=1e-6)  # mV, every lead of both files


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

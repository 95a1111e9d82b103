"""Labels for any recordings: a CSV keyed by record, checked both ways, for train, finetune and evaluate."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_WFDB, write_code_hdf5
from test_infer import run_cli, tiny_export

from ecg_edge.errors import InputError
from ecg_edge.spec import CLASSES

REAL = SHARED_WFDB.parent / "real"
HEADER = ["record", *CLASSES, "normal"]


def _wfdb(folder: Path, name: str, seed: int) -> None:
    import wfdb

    signal = np.random.default_rng(seed).normal(0, 0.3, (5000, 12))
    leads = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    wfdb.wrsamp(name, fs=500, units=["mV"] * 12, sig_name=leads, p_signal=signal, fmt=["16"] * 12,
                write_dir=str(folder))


@pytest.fixture
def labelled(tmp_path) -> Path:
    """Two WFDB records in a subfolder and a three-exam HDF5 file, labelled by record."""
    (tmp_path / "wfdb").mkdir()
    _wfdb(tmp_path / "wfdb", "a", 0)
    _wfdb(tmp_path / "wfdb", "b", 1)
    x = np.random.default_rng(2).normal(0, 0.3, (3, 4096, 12)).astype(np.float32)
    write_code_hdf5(tmp_path / "exams.h5", x, exam_ids=[10, 11, 12])
    rows = [["wfdb/a", 1, 0, 0, 0, 0, 0, 0], ["wfdb/b", 0, 0, 0, 1, 0, 0, 0], ["exams.h5#10", 0, 0, 0, 0, 0, 0, 1],
            ["exams.h5#11", 0, 1, 0, 0, 1, 0, 0], ["exams.h5#12", 0, 0, 0, 0, 0, 1, 0]]
    _write(tmp_path / "labels.csv", rows)
    return tmp_path


def _write(path: Path, rows: list[list]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        writer.writerows(rows)
    return path


def test_labelled_hdf5_keys_every_exam_by_its_record(labelled, tmp_path_factory):
    import h5py

    from ecg_edge.training.data import read_labels_csv
    from ecg_edge.training.labels import labelled_hdf5

    out = tmp_path_factory.mktemp("work")  # outside the recordings' folder, which is read whole below
    h5, csv_path = labelled_hdf5([labelled / "wfdb", labelled / "exams.h5"], labelled / "labels.csv", out)
    with h5py.File(h5) as f:
        keys = [k.decode() for k in f["exam_id"][:]]
        assert f["tracings"].shape == (5, 4096, 12)
    assert sorted(keys) == ["exams.h5#10", "exams.h5#11", "exams.h5#12", "wfdb/a", "wfdb/b"]
    six = read_labels_csv(csv_path)
    assert six["wfdb/a"].tolist() == [1, 0, 0, 0, 0, 0] and six["exams.h5#11"].tolist() == [0, 1, 0, 0, 1, 0]
    binary_h5, binary_csv = labelled_hdf5([labelled], labelled / "labels.csv", out, task="binary")
    binary = read_labels_csv(binary_csv, "binary")  # abnormal = 1 - normal
    assert binary["exams.h5#10"].tolist() == [0.0] and binary["wfdb/b"].tolist() == [1.0]


@pytest.mark.parametrize("change, problem", [
    (lambda rows: rows.pop(0), "no labels for 1 recordings read (first: wfdb/a)"),
    (lambda rows: rows.append(["wfdb/c", 0, 0, 0, 0, 0, 0, 1]), "1 labelled records were not among the recordings "
                                                               "read (first: wfdb/c)"),
    (lambda rows: rows[1].__setitem__(4, 2), "line 3: record wfdb/b: labels must be 0 or 1, not '2'"),
    (lambda rows: rows.append(list(rows[0])), "line 7: record wfdb/a is labelled twice"),
])
def test_label_and_record_mismatches_name_the_record(labelled, tmp_path, change, problem):
    from ecg_edge.training.labels import labelled_hdf5

    with open(labelled / "labels.csv", newline="") as f:
        rows = list(csv.reader(f))[1:]
    change(rows)
    _write(labelled / "labels.csv", rows)
    (tmp_path / "work").mkdir()
    files = [labelled / "wfdb" / "a.hea", labelled / "wfdb" / "b.hea", labelled / "exams.h5"]  # each one named
    with pytest.raises(InputError) as failure:
        labelled_hdf5(files, labelled / "labels.csv", tmp_path / "work")
    assert problem in str(failure.value) and str(labelled / "labels.csv") in str(failure.value)


def test_evaluate_with_labels_keyed_by_record(labelled, tmp_path, home):
    export = tiny_export(tmp_path / "tiny")
    r = run_cli("evaluate", str(export), str(labelled / "wfdb"), str(labelled / "exams.h5"),
                str(labelled / "labels.csv"))
    assert r.exit_code == 0, r.output
    assert "5 exams" in r.output
    n_positive = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in r.output.splitlines()
                  if line.count("│") > 3}
    assert n_positive == {"1dAVb": "1", "RBBB": "1", "LBBB": "0", "SB": "1", "AF": "1", "ST": "1"}
    bad = run_cli("evaluate", str(export), str(labelled / "wfdb"), str(labelled / "labels.csv"))
    assert bad.exit_code == 2 and "were not among the recordings read (first: exams.h5#10)" in bad.output
    assert "Traceback" not in bad.output


@pytest.mark.slow
def test_train_on_recordings_labelled_by_record(labelled, tmp_path, home):
    pytest.importorskip("keras")
    out = tmp_path / "m" / "model.keras"
    out.parent.mkdir()
    r = run_cli("train", str(labelled / "wfdb"), str(labelled / "exams.h5"), str(labelled / "labels.csv"),
                "--epochs", "1", "--batch", "4", "--validation-fraction", "0.2", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert out.exists() and not list(out.parent.glob(".labelled-*"))  # the converted set is removed


def test_real_records_with_their_labels(tmp_path, home):
    """A few of ../shared/data/real's records (LUDB, both CinC header styles, CODE-test exams), with
    their rows of its labels.csv: the keys the CSV uses are the keys the reader gives."""
    if not REAL.exists():
        pytest.skip("../shared/data/real not present")
    from ecg_edge.training.labels import labelled_hdf5

    picked = ["ludb/1", "ludb/2", "cinc2021/A0689", "cinc2021/E00271"]
    for record in picked:
        (tmp_path / record).parent.mkdir(parents=True, exist_ok=True)
        for suffix in (".hea", ".dat", ".mat"):
            if (REAL / (record + suffix)).exists():
                shutil.copy(REAL / (record + suffix), tmp_path / (record + suffix))
    shutil.copy(REAL / "code-test-80.h5", tmp_path / "code-test-80.h5")
    with open(REAL / "labels.csv", newline="") as f:
        rows = [row for row in csv.DictReader(f)
                if row["record"] in picked or row["record"].startswith("code-test-80.h5#")]
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (tmp_path / "work").mkdir()
    h5, csv_path = labelled_hdf5([tmp_path / "ludb", tmp_path / "cinc2021", tmp_path / "code-test-80.h5"],
                                 tmp_path / "labels.csv", tmp_path / "work")
    from ecg_edge.training.data import read_labels_csv

    labels = read_labels_csv(csv_path)
    assert len(labels) == 84 and labels["cinc2021/E00271"].tolist() == [0, 1, 0, 0, 0, 0]  # RBBB in its Dx
    assert labels["ludb/1"][CLASSES.index("SB")] == 1


def test_a_folder_gives_the_files_its_labels_name(labelled, tmp_path_factory):
    """A folder may hold other files (published outputs, notes): the CSV says what is in the set.
    A file named on the command line must be labelled."""
    from ecg_edge.training.labels import labelled_hdf5

    np.save(labelled / "outputs.npy", np.zeros((5, 6)))  # not a recording: no rate, no leads
    out = tmp_path_factory.mktemp("work")
    h5, _ = labelled_hdf5([labelled], labelled / "labels.csv", out)
    import h5py

    with h5py.File(h5) as f:
        assert len(f["exam_id"]) == 5
    _wfdb(labelled, "extra", 3)
    with pytest.raises(InputError, match="no labels for 1 recordings read"):
        labelled_hdf5([labelled / "wfdb", labelled / "exams.h5", labelled / "extra.hea"], labelled / "labels.csv",
                      tmp_path_factory.mktemp("work"))


def test_split_by_record_and_labels_from_headers(labelled, tmp_path_factory):
    import h5py

    from ecg_edge.training.data import read_labels_csv
    from ecg_edge.training.labels import labelled_hdf5, labelled_recordings, labels_from_headers, split_by_record

    out = tmp_path_factory.mktemp("work")
    h5, csv_path = labelled_hdf5([labelled], labelled / "labels.csv", out)
    (fit_h5, fit_csv), (test_h5, test_csv) = split_by_record(h5, csv_path, 0.4, out)
    fit, test = read_labels_csv(fit_csv), read_labels_csv(test_csv)
    assert len(test) == 2 and len(fit) == 3 and not set(fit) & set(test)
    with h5py.File(h5) as whole, h5py.File(test_h5) as part:
        key = part["exam_id"][0].decode()
        row = [k.decode() for k in whole["exam_id"][:]].index(key)
        np.testing.assert_array_equal(part["tracings"][0], whole["tracings"][row])
    assert split_by_record(h5, csv_path, 0.4, out)[1][0] == test_h5  # the same records every time
    # k folds: each record held out by exactly one, never trained on by that one
    held = []
    for i in range(3):
        (fold_fit, fold_fit_csv), (_, fold_test_csv) = split_by_record(h5, csv_path, 0.0, out, fold=(i, 3))
        part, rest = set(read_labels_csv(fold_test_csv)), set(read_labels_csv(fold_fit_csv))
        assert part and not part & rest and len(part | rest) == 5
        held += sorted(part)
    assert sorted(held) == sorted(read_labels_csv(csv_path))
    # WFDB '# Dx:' headers label a folder that has no labels.csv
    import wfdb

    folder = tmp_path_factory.mktemp("dx")
    signal = np.random.default_rng(0).normal(0, 0.3, (5000, 12))
    leads = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    for name, dx in (("af", "164889003"), ("plain", None)):
        wfdb.wrsamp(name, fs=500, units=["mV"] * 12, sig_name=leads, p_signal=signal, fmt=["16"] * 12,
                    write_dir=str(folder), comments=[f"Dx: {dx}"] if dx else [])
    work = tmp_path_factory.mktemp("work")
    files, header_csv = labels_from_headers([folder], work)
    assert [f.name for f in files] == ["af.hea"]  # the one without a Dx line is left out
    h5_dx, csv_dx = labelled_recordings([folder], work)
    assert read_labels_csv(csv_dx)[next(iter(read_labels_csv(csv_dx)))].tolist() == [0, 0, 0, 0, 1, 0]

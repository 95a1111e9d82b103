from __future__ import annotations

import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import needs_shared, write_code_hdf5

from ecg_edge import InputError, iter_recordings, read_recording
from ecg_edge.readers import expand_inputs, iter_hdf5_chunks


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_hdf5_exams_and_ids(tmp_path, dtype):
    x = np.random.default_rng(0).normal(size=(5, 4096, 12))
    path = write_code_hdf5(tmp_path / "a.h5", x, exam_ids=[10, 11, 12, 13, 14], dtype=dtype)
    recs = list(iter_recordings(path))
    assert [r.id for r in recs] == ["10", "11", "12", "13", "14"]
    assert recs[3].signal.dtype == np.float32 and recs[3].fs == 400
    assert np.allclose(recs[3].signal, x[3], atol=1e-6)


def test_hdf5_without_exam_id(tmp_path):
    path = write_code_hdf5(tmp_path / "b.h5", np.zeros((3, 4096, 12)))
    assert [r.id for r in iter_recordings(path)] == ["b:0", "b:1", "b:2"]


def test_hdf5_read_in_bounded_chunks(tmp_path):
    """Memory while reading depends on the chunk, not the file: 600 exams, 118 MB on disk."""
    path = tmp_path / "big.h5"
    with h5py.File(path, "w") as f:
        d = f.create_dataset("tracings", shape=(600, 4096, 12), dtype="float32")
        for start in range(0, 600, 100):
            d[start:start + 100] = np.ones((100, 4096, 12), np.float32)  # h5py broadcasts a scalar slowly
    tracemalloc.start()
    n = 0
    for ids, block in iter_hdf5_chunks(path, chunk=32):
        n += len(ids)
        assert block.shape[0] <= 32
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert n == 600
    assert peak < 20e6, f"peak {peak / 1e6:.1f} MB"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b""), "file is empty"),
        (lambda p: p.write_text("hello, not hdf5"), "not a readable HDF5"),
        (lambda p: h5py.File(p, "w").create_dataset("x", data=[1]), "no 'tracings' dataset"),
        (lambda p: write_code_hdf5(p, np.zeros((2, 4000, 12))), r"shape \(2, 4000, 12\)"),
        (lambda p: write_code_hdf5(p, np.zeros((4096, 12))), r"expected \(N, 4096, 12\)"),
        (lambda p: write_code_hdf5(p, np.zeros((0, 4096, 12))), "holds no exams"),
        (lambda p: write_code_hdf5(p, np.zeros((2, 4096, 12)), exam_ids=[1, 2, 3]), "'exam_id' has shape"),
        (lambda p: write_code_hdf5(p, np.zeros((2, 4096, 12)), dtype="int16"), "dtype int16"),
    ],
    ids=["empty", "not-hdf5", "no-tracings", "short", "rank", "zero-exams", "ids", "dtype"],
)
def test_bad_hdf5(tmp_path, make, message):
    path = tmp_path / "bad.h5"
    result = make(path)
    if isinstance(result, h5py.Dataset):
        result.file.close()
    with pytest.raises(InputError, match=message) as info:
        list(iter_recordings(path))
    assert str(path) in str(info.value)


def test_missing_paths(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        list(iter_recordings(tmp_path / "nope.h5"))
    with pytest.raises(InputError, match="no such file or WFDB record"):
        read_recording(tmp_path / "nope")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(InputError, match="folder holds no"):
        expand_inputs([tmp_path / "empty_dir"])


def test_npy_needs_rate_and_leads(tmp_path):
    leads = ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"]
    arr = np.random.default_rng(0).normal(size=(5000, 8))
    np.save(tmp_path / "x.npy", arr)
    with pytest.raises(InputError, match="pass --fs and --leads"):
        read_recording(tmp_path / "x.npy")
    rec = read_recording(tmp_path / "x.npy", fs=500, leads=leads)
    assert rec.signal.shape == (5000, 8) and rec.fs == 500
    # (leads, samples) is accepted too.
    np.save(tmp_path / "t.npy", arr.T)
    assert np.array_equal(read_recording(tmp_path / "t.npy", fs=500, leads=leads).signal, arr)
    with pytest.raises(InputError, match="lead names were given"):
        read_recording(tmp_path / "x.npy", fs=500, leads=leads[:5])


@needs_shared
def test_wfdb_folder_and_labels():
    from conftest import SHARED_WFDB

    recs = list(iter_recordings(SHARED_WFDB))
    assert len(recs) == 13
    by_id = {r.id: r for r in recs}
    assert by_id["HR06002"].labels["SB"] == 1 and by_id["HR06002"].labels["AF"] == 0
    assert by_id["HR06003"].labels["ST"] == 1
    assert by_id["JS00001"].labels["AF"] == 1 and by_id["JS00001"].labels["RBBB"] == 1
    assert by_id["HR06005"].labels and not any(by_id["HR06005"].labels.values())
    assert by_id["00001_lr"].labels == {}  # no Dx line


def test_corrupt_wfdb(tmp_path):
    (tmp_path / "bad.hea").write_text("bad 12 500 5000\nbad.dat 16 1000/mV 16 0 0 0 0 I\n")
    (tmp_path / "bad.dat").write_bytes(b"\x00\x01")
    with pytest.raises(InputError, match="unreadable WFDB record"):
        read_recording(tmp_path / "bad.hea")


def test_wfdb_header_naming_its_record_with_the_signal_suffix(tmp_path):
    """Earlier releases of the PhysioNet/CinC Challenge write `E00271.mat 12 500 5000` on a
    header's first line, which wfdb refuses: read as the same record with its name corrected."""
    import wfdb

    signal = np.random.default_rng(0).normal(0, 0.4, (1000, 3))
    wfdb.wrsamp("rec", fs=500, units=["mV"] * 3, sig_name=["I", "II", "V1"], p_signal=signal, fmt=["16"] * 3,
                write_dir=str(tmp_path), comments=["Dx: 164889003,59118001"])
    plain = read_recording(tmp_path / "rec.hea")
    header = tmp_path / "rec.hea"
    header.write_text(header.read_text().replace("rec ", "rec.dat ", 1))
    with pytest.raises(Exception, match="record line"):
        wfdb.rdheader(str(tmp_path / "rec"))  # what wfdb itself says of such a header
    read = read_recording(header)
    np.testing.assert_array_equal(read.signal, plain.signal)
    assert read.id == "rec" and read.fs == 500 and read.labels["AF"] == 1 and read.labels["RBBB"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec.dat", "rec.hea"]  # nothing left beside it


def test_all_real_cinc_records_read():
    from conftest import SHARED_WFDB

    folder = SHARED_WFDB.parent / "real" / "cinc2021"
    if not folder.exists():
        pytest.skip("../shared/data/real/cinc2021 not present")
    headers = sorted(folder.glob("*.hea"))
    odd = [h for h in headers if h.read_text(encoding="latin-1").split(" ", 1)[0].endswith(".mat")]
    assert len(headers) == 106 and len(odd) == 40
    for header in odd:
        recording = read_recording(header)
        assert recording.id == header.stem and recording.signal.shape[1] == 12


PTBXL_RECORDS = Path(__file__).parent / "data" / "ptbxl"  # in the repository: runs without ../shared


def test_flac_wfdb_reads_like_any_wfdb_record():
    import wfdb

    from ecg_edge.readers import format_of

    path = PTBXL_RECORDS / "00043_hr.hea"
    record = read_recording(path)
    reference = wfdb.rdrecord(str(PTBXL_RECORDS / "00043_hr"))
    assert format_of(path) == "wfdb"
    assert {f for f in reference.fmt} == {"516"} and len(set(reference.file_name)) == 2  # two FLAC files
    assert record.fs == 500 and record.signal.shape == (5000, 12)
    np.testing.assert_allclose(record.signal, reference.p_signal, atol=1e-6)  # mV, every lead of both files

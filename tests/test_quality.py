"""Signal-quality flags: none on the real records, each raised by its own fault put into them."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_WFDB, needs_shared, write_code_hdf5
from test_infer import run_cli, tiny_export

from ecg_edge import Recording, read_recording
from ecg_edge.preprocess import prepare
from ecg_edge.quality import FLAGS, THRESHOLDS, assess
from ecg_edge.readers import expand_inputs
from ecg_edge.spec import LEADS

SHARED = SHARED_WFDB.parent
REAL = [SHARED / "wfdb", SHARED / "wfdb-more", SHARED / "formats"]


def _real_records() -> list[Path]:
    return expand_inputs([p for p in REAL if p.exists()]) if SHARED_WFDB.exists() else []


def _flags(rec: Recording) -> list[str]:
    p = prepare(rec)
    return [f.name for f in assess(p.signal, p.stored, p.fs, p.pad_samples)]


def _swap_arms(x: np.ndarray) -> np.ndarray:
    """LA and RA electrodes exchanged: I inverted, II and III exchanged, aVR and aVL exchanged."""
    y, i = x.copy(), LEADS.index
    y[:, i("DI")] = -x[:, i("DI")]
    y[:, i("DII")], y[:, i("DIII")] = x[:, i("DIII")], x[:, i("DII")]
    y[:, i("AVR")], y[:, i("AVL")] = x[:, i("AVL")], x[:, i("AVR")]
    return y


def _clip_lead_ii(x: np.ndarray) -> np.ndarray:
    y, k = x.copy(), LEADS.index("DII")
    y[:, k] = np.minimum(y[:, k], 0.5 * y[:, k].max())  # the amplifier saturates at half the R wave
    return y


def _flat_v3(x: np.ndarray) -> np.ndarray:
    y = x.copy()
    y[:, LEADS.index("V3")] = 0.002 * np.random.default_rng(0).standard_normal(len(x))  # electrode off
    return y


def _t(x: np.ndarray, fs: float) -> np.ndarray:
    return (np.arange(len(x)) / fs)[:, None]


FAULTS = {
    "flat_lead": lambda x, fs: _flat_v3(x),
    "clipped": lambda x, fs: _clip_lead_ii(x),
    "amplitude_implausible": lambda x, fs: x / 1000,  # a file in volts read as millivolts
    "baseline_wander": lambda x, fs: x + 2.0 * np.sin(2 * np.pi * 0.3 * _t(x, fs)),
    "noise": lambda x, fs: x + 0.1 * np.sin(2 * np.pi * 50 * _t(x, fs)),  # mains hum
    "limb_lead_reversal": lambda x, fs: _swap_arms(x),
    "padded": lambda x, fs: x[: int(5 * fs)],  # 5 s of a 10 s recording
}


def test_every_flag_has_a_fault():
    assert set(FAULTS) == set(FLAGS)


# Detecting swapped arm electrodes from one ECG is a judgement on its shape: on records whose lead I
# hardly resembles V6 even when placed right (2 of the 19 here), the swap goes unseen.
REVERSAL_MIN_DETECTED = 0.85
_reversal_seen: dict[str, bool] = {}


@needs_shared
@pytest.mark.parametrize("path", _real_records(), ids=lambda p: p.name)
def test_real_records_raise_no_flag_and_each_fault_only_its_own(path):
    rec = read_recording(path)
    assert _flags(rec) == []
    clean = prepare(rec)
    for name, fault in FAULTS.items():
        if name == "noise" and clean.fs < 200:
            continue  # a 100 Hz recording cannot hold 50 Hz hum
        faulty = Recording(fault(clean.stored, clean.fs), clean.fs, LEADS, "mV", id=rec.id)
        if name == "limb_lead_reversal":
            flags = _flags(faulty)
            assert set(flags) <= {name}
            _reversal_seen[path.name] = flags == [name]
        else:
            assert _flags(faulty) == [name], name


@needs_shared
def test_limb_lead_reversal_is_seen_on_most_records():
    if len(_reversal_seen) < len(_real_records()):
        pytest.skip("runs after the per-record test (run the whole file)")
    missed = sorted(k for k, seen in _reversal_seen.items() if not seen)
    assert 1 - len(missed) / len(_reversal_seen) >= REVERSAL_MIN_DETECTED, missed


def test_microvolts_read_as_millivolts_and_a_dead_recording():
    from ecg_edge.synthetic import synthesize

    x = synthesize(1, seed=3)[0][0]
    assert [f.name for f in assess(x, x)] == []
    # wrong units: that one flag, not also wander and noise (their mV thresholds mean nothing then)
    assert [f.name for f in assess(x * 1000, x * 1000)] == ["amplitude_implausible"]
    dead = np.zeros_like(x)
    flags = assess(dead, dead)
    assert [f.name for f in flags] == ["flat_lead"] and flags[0].leads == list(LEADS)


def test_a_held_value_at_the_end_is_not_clipping():
    from ecg_edge.synthetic import synthesize

    x = synthesize(1, seed=5)[0][0].astype(np.float64)
    x[-200:, 1] = x[:, 1].max()  # the recorder stopped on its largest value: no saturation inside
    assert "clipped" not in [f.name for f in assess(x, x)]
    x[1000:1020, 1] = x[:, 1].max()  # the same value held inside the recording: a flat top
    assert "clipped" in [f.name for f in assess(x, x)]


def _wander_flag(x: np.ndarray):
    return next((f for f in assess(x, x) if f.name == "baseline_wander"), None)


def test_baseline_wander_is_fast_wander_or_a_jump_not_slow_drift_nor_a_cut_wave_at_the_edge():
    from ecg_edge.synthetic import synthesize

    x = synthesize(1, seed=4)[0][0][48:4048].astype(np.float64)
    t = _t(x, 400.0)
    assert _wander_flag(x) is None
    drift = x + np.linspace(0.0, 5.0, len(x))[:, None]  # an electrode settling: 5 mV over 10 s, waves intact
    assert _wander_flag(drift) is None
    assert _wander_flag(x + 1.8 * np.sin(2 * np.pi * 0.2 * t)) is not None  # breathing: 3.6 mV within 2.5 s
    jump = x.copy()
    jump[2000:, LEADS.index("V4")] += 4.0  # an electrode jumps by 4 mV and stays there
    flag = _wander_flag(jump)
    assert flag is not None and flag.leads == ["V4"] and flag.value == pytest.approx(4.0, abs=0.3)
    cut = x.copy()
    cut[:20, LEADS.index("V2")] -= 4.0  # the recording starts inside a -4 mV wave: only the edge is low
    assert _wander_flag(cut) is None
    cut[1990:2010, LEADS.index("V2")] -= 4.0  # the same deflection inside the recording is a QRS, not wander
    assert _wander_flag(cut) is None


def test_padded_says_by_how_much_and_7_to_10_s_records_are_not_padded():
    from ecg_edge.synthetic import synthesize

    x = synthesize(1, seed=2)[0][0]
    assert assess(x[:4000], x[:4000], pad_samples=96) == []  # 10 s: as the network's training exams were
    assert assess(x[:2800], x[:2800], pad_samples=1296) == []  # 7 s: so were CODE's shorter exams
    flags = assess(x[:2000], x[:2000], pad_samples=2096)
    assert [(f.name, f.value) for f in flags] == [("padded", 2096 / 400)] and "2096" in flags[0].detail


def test_hdf5_exams_get_flags_and_provenance_from_their_zero_padding(tmp_path):
    from ecg_edge.synthetic import synthesize

    x, _ = synthesize(3, seed=7)
    x[1, :1148] = 0
    x[1, -948:] = 0  # 5 s stored in the middle, CODE-style
    x[2, :, LEADS.index("V2")] = 0  # a lead that is not there
    h5 = write_code_hdf5(tmp_path / "e.h5", x, exam_ids=[10, 11, 12])
    export = tiny_export(tmp_path / "tiny")
    out = tmp_path / "o.json"
    assert run_cli("infer", str(h5), "--model", str(export), "-o", str(out)).exit_code == 0
    exams = json.loads(out.read_text())["exams"]
    assert [[q["flag"] for q in e["quality"]] for e in exams] == [[], ["padded"], ["flat_lead"]]
    assert exams[2]["quality"][0]["leads"] == ["V2"]
    prov = exams[1]["provenance"]
    assert prov["format"] == "hdf5" and prov["padded_before"] == 1148 and prov["padded_after"] == 948
    assert prov["duration_s"] == pytest.approx((4096 - 1148 - 948) / 400)


@needs_shared
def test_infer_writes_flags_provenance_and_named_findings(tmp_path):
    export = tiny_export(tmp_path / "tiny")
    muse = SHARED / "formats" / "ge-muse" / "muse-sinus.xml"
    rec = read_recording(muse)
    broken = Recording(_swap_arms(prepare(rec).stored), rec.fs, LEADS, "mV", id="swapped")
    np.save(tmp_path / "swapped.npy", broken.signal)
    inputs = [str(SHARED_WFDB / "00001_lr.hea"), str(muse), str(tmp_path / "swapped.npy")]
    js, cs = tmp_path / "o.json", tmp_path / "o.csv"
    for out in (js, cs):
        r = run_cli("infer", *inputs, "--model", str(export), "--fs", str(rec.fs), "--leads", ",".join(LEADS),
                    "-o", str(out))
        assert r.exit_code == 0, r.output
    doc = json.loads(js.read_text())
    assert "not a diagnosis" in doc["disclaimer"]
    assert {c["abbreviation"]: c["snomed_ct"] for c in doc["classes"]}["AF"] == "164889003"
    ptb, ge, swapped = doc["exams"]
    assert ptb["quality"] == [] and [q["flag"] for q in swapped["quality"]] == ["limb_lead_reversal"]
    assert ptb["provenance"]["sampling_rate_hz"] == 100 and ptb["provenance"]["resampled"]["up"] == 4
    assert ptb["provenance"]["padded_before"] + ptb["provenance"]["padded_after"] == 96
    assert ge["provenance"]["format"] == "ge-muse"
    assert ge["provenance"]["leads_derived"] == ["DIII", "AVR", "AVL", "AVF"]  # MUSE stores 8 leads
    assert ge["provenance"]["model_sha256"] == doc["model_sha256"] != ""
    for exam in doc["exams"]:
        assert [f["abbreviation"] for f in exam["findings_named"]] == exam["findings"]
    rows = list(csv.DictReader(cs.open()))
    assert [r["quality"] for r in rows] == ["", "", "limb_lead_reversal"]


def test_readme_documents_every_flag_with_its_thresholds():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    table = readme[readme.index("| flag |"):]
    for flag in FLAGS:
        assert f"`{flag}`" in table, flag
    for key, value in THRESHOLDS.items():
        assert re.search(rf"`{key}` = {value:g}\b", table), key


@needs_shared
def test_hdf5_exams_flagged_in_batches_as_one_at_a_time(tmp_path):
    """A CODE-layout file's exams are measured together (`quality.assess_batch`): the same flags and
    values as `assess` one exam at a time, on the 80 real CODE-test exams and on them with each fault
    put in (so that every flag is raised somewhere)."""
    import h5py

    from ecg_edge.exams import ReadOptions, iter_exams, read_exam
    from ecg_edge.readers import iter_hdf5_chunks
    from ecg_edge.readers.hdf5 import code_exam_recording

    with h5py.File(SHARED / "real" / "code-test-80.h5") as f:
        real = np.asarray(f["tracings"][:], dtype=np.float32)
    faulty = []
    for name, fault in FAULTS.items():
        for x in real[:6]:
            y = fault(x, 400.0).astype(np.float32)
            faulty.append(np.concatenate([y, np.zeros((4096 - len(y), 12), np.float32)]) if name == "padded" else y)
    paths = [SHARED / "real" / "code-test-80.h5", write_code_hdf5(tmp_path / "faults.h5", np.stack(faulty))]
    options = ReadOptions(measure="off")
    batched = [exam for exam, _ in iter_exams(paths, options, on_skip=pytest.fail)]
    one_by_one = []
    for path in paths:
        for ids, block in iter_hdf5_chunks(path):
            for exam_id, x in zip(ids, block, strict=True):
                recording, padding = code_exam_recording(exam_id, path, x)
                one_by_one.append(read_exam(recording, str(path), options, padding)[0])
    assert [e.quality for e in batched] == [e.quality for e in one_by_one]
    assert [e.provenance for e in batched] == [e.provenance for e in one_by_one]
    raised = {q["flag"] for e in batched for q in e.quality}
    assert raised == set(FLAGS)

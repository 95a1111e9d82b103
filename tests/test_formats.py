"""Hospital formats: real files from ../shared/data/formats, broken copies of them, and hostile XML."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_WFDB
from hostile import BILLION_LAUGHS, EXTERNAL_ENTITY
from test_infer import tiny_export

from ecg_edge import InputError, read_recording, to_model_input
from ecg_edge.preprocess import to_millivolts
from ecg_edge.readers import detect_format, expand_inputs
from ecg_edge.spec import LEADS

FORMATS_DIR = SHARED_WFDB.parent / "formats"
MUSE = FORMATS_DIR / "ge-muse" / "muse-sinus.xml"
AECG = FORMATS_DIR / "hl7-aecg" / "example-aecg.xml"
SIERRA_103 = FORMATS_DIR / "philips-sierra" / "129DYPRG.XML"
SIERRA_104 = FORMATS_DIR / "philips-sierra" / "2020-5-18_15-48-11.xml"
DICOM = FORMATS_DIR / "dicom" / "waveform_ecg.dcm"
needs_formats = pytest.mark.skipif(not FORMATS_DIR.exists(), reason="../shared/data/formats not present")

# (file, format, sampling rate the file states, leads stored in the file)
REAL = [
    (DICOM, "dicom", 1000, 12), (MUSE, "ge-muse", 500, 8), (AECG, "hl7-aecg", 500, 12),
    (SIERRA_103, "philips-sierra", 500, 12), (SIERRA_104, "philips-sierra", 500, 12),
]
COL = {name: i for i, name in enumerate(LEADS)}


def stored_mv(rec, lead: str) -> np.ndarray:
    """A lead as stored in the file, in mV (names as the file spells them)."""
    from ecg_edge.preprocess import canonical_lead

    names = [canonical_lead(n) for n in rec.leads]
    i = names.index(lead)
    units = rec.units if isinstance(rec.units, str) else rec.units[i]
    return to_millivolts(rec.signal[:, [i]], units)[:, 0]


@needs_formats
@pytest.mark.parametrize(("path", "fmt", "fs", "n_leads"), REAL, ids=lambda v: getattr(v, "name", ""))
def test_real_file_reads_to_model_input(path, fmt, fs, n_leads):
    assert detect_format(path) == fmt
    rec = read_recording(path)
    assert rec.format == fmt and rec.fs == fs and len(rec.leads) == n_leads
    x = to_model_input(rec)
    assert x.shape == (4096, 12) and x.dtype == np.float32 and np.isfinite(x).all()
    # Millivolts: QRS peaks of a resting ECG between 0.3 and 6 mV, and no lead flat.
    assert 0.3 < np.abs(x).max() < 6.0
    assert (x.std(axis=0) > 0.01).all()
    # Einthoven and Goldberger on what the model gets (stored or derived leads alike).
    i, ii, iii, avr = x[:, COL["DI"]], x[:, COL["DII"]], x[:, COL["DIII"]], x[:, COL["AVR"]]
    assert np.abs(ii - i - iii).max() < 0.02
    assert np.abs(avr + (i + ii) / 2).max() < 0.02
    # Where the file stores III, it agrees with I and II (II = I + III within a quantum).
    if "III" in [n.upper().replace("LEAD ", "") for n in rec.leads]:
        assert np.abs(stored_mv(rec, "DII") - stored_mv(rec, "DI") - stored_mv(rec, "DIII")).max() < 0.011


@needs_formats
def test_dicom_matches_an_independent_decode():
    """Raw int16 WaveformData, multiplexed, times each channel's sensitivity: read without waveform_array."""
    import pydicom

    ds = pydicom.dcmread(DICOM)
    group = next(g for g in ds.WaveformSequence if g.MultiplexGroupLabel == "RHYTHM")
    raw = np.frombuffer(group.WaveformData, dtype="<i2").reshape(-1, group.NumberOfWaveformChannels)
    sensitivity = np.array([float(c.ChannelSensitivity) * float(c.ChannelSensitivityCorrectionFactor)
                            for c in group.ChannelDefinitionSequence])
    baseline = np.array([float(c.ChannelBaseline) for c in group.ChannelDefinitionSequence])
    rec = read_recording(DICOM)
    assert rec.signal.shape == raw.shape == (10000, 12)  # the rhythm group, not the 1,200-sample median beat
    assert np.allclose(rec.signal, raw * sensitivity + baseline)
    assert set(rec.units) == {"uV"}
    assert [n for n in rec.leads][:3] == ["Lead I", "Lead II", "Lead III"]


@needs_formats
def test_device_statements_are_kept():
    muse = read_recording(MUSE)
    assert muse.statements[0] == "Normal Sinus rhythm"
    assert "Anterior infarct, age undetermined" in muse.statements  # a continued line is joined
    sierra = read_recording(SIERRA_103)
    assert sierra.statements[0].startswith("Sinus bradycardia")
    assert read_recording(AECG).statements == ()


@needs_formats
def test_sierra_keeps_ten_seconds_without_the_calibration_pulse():
    rec = read_recording(SIERRA_104)
    assert rec.signal.shape[0] == 5000  # 11 s stored; the last second holds the 1 mV pulse
    # The pulse is 200 units of 5 µV = 1 mV on every lead at once; it is not in what is read.
    assert not (np.abs(rec.signal - 1000.0) < 1e-9).all(axis=1).any()


@needs_formats
def test_format_found_by_content_not_suffix(tmp_path):
    for source, name, fmt in [(MUSE, "a.txt", "ge-muse"), (SIERRA_104, "b", "philips-sierra"),
                              (DICOM, "c.bin", "dicom"), (AECG, "d.dat.xml", "hl7-aecg")]:
        copy = tmp_path / name
        shutil.copy(source, copy)
        assert detect_format(copy) == fmt
        assert read_recording(copy).signal.size
    (tmp_path / "e.xml").write_text("<?xml version='1.0'?><svg xmlns='http://www.w3.org/2000/svg'/>")
    with pytest.raises(InputError, match=r"e.xml: unknown ECG file format: XML with root element <svg>"):
        read_recording(tmp_path / "e.xml")
    (tmp_path / "f.bin").write_bytes(b"PK\x03\x04 zipped")
    with pytest.raises(InputError, match="unknown ECG file format: it starts with 'PK"):
        read_recording(tmp_path / "f.bin")


def _edf_from(rec, path: Path, seconds: float, label_prefix: str = "ECG ", unit: str = "uV") -> np.ndarray:
    """An EDF+ of a real record tiled to `seconds`, in `unit`, with a respiration channel at another rate."""
    import edfio

    mv = to_millivolts(rec.signal[:, :12], rec.units[:12] if not isinstance(rec.units, str) else rec.units)
    reps = int(np.ceil(seconds * rec.fs / mv.shape[0]))
    data = np.tile(mv, (reps, 1))[: int(seconds * rec.fs)] * (1000.0 if unit == "uV" else 1.0)
    signals = [edfio.EdfSignal(data[:, k], rec.fs, label=f"{label_prefix}{name}", physical_dimension=unit,
                               physical_range=(-10000, 10000))
               for k, name in enumerate(rec.leads[:12])]
    signals.append(edfio.EdfSignal(np.sin(np.arange(int(seconds * 25)) / 10.0), 25, label="Resp",
                                   physical_dimension="Ohm", physical_range=(-2, 2)))
    edfio.Edf(signals).write(path)
    return data


@pytest.mark.skipif(not SHARED_WFDB.exists(), reason="../shared/data/wfdb not present")
def test_edf_plus_long_record_is_read_whole_then_centre_cropped(tmp_path):
    from ecg_edge import Recording

    source = read_recording(SHARED_WFDB / "HR06002")
    data = _edf_from(source, tmp_path / "holter.edf", seconds=30.0)
    assert detect_format(tmp_path / "holter.edf") == "edf"
    rec = read_recording(tmp_path / "holter.edf")
    assert rec.fs == 500 and rec.signal.shape == (15000, 12) and rec.leads[0] == "ECG I"
    assert set(rec.units) == {"uV"}
    # Same input as the same samples given directly: whole record read, then the middle 10.24 s.
    direct = Recording(signal=data, fs=500, leads=source.leads[:12], units="uV")
    assert np.abs(to_model_input(rec) - to_model_input(direct)).max() < 1e-3  # EDF's 16-bit quantum


# Broken copies of real files: (name, source, how to break its text or bytes, what the error says).
def _sub(pattern: str, replacement: str, count: int = 1):
    return lambda data: re.sub(pattern.encode(), replacement.encode(), data, count=count, flags=re.S)


def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


BROKEN_XML = [
    ("muse-truncated.xml", MUSE, _truncate, "not well-formed XML"),
    ("muse-base64.xml", MUSE, _sub(r"(<WaveformType>Rhythm.*?<WaveFormData>)\s*\S{8}", r"\1@@@@!!!!"),
     "not valid base64"),
    ("muse-leads.xml", MUSE,
     _sub(r"(<WaveformType>Rhythm.*?)<LeadData>(?:(?!</LeadData>).)*<LeadID>V1</LeadID>.*?</LeadData>", r"\1"),
     "missing leads V1"),
    ("muse-rate.xml", MUSE, _sub(r"(<WaveformType>Rhythm</WaveformType>.*?<SampleBase>)500", r"\g<1>0"),
     "invalid sampling rate"),
    ("muse-units.xml", MUSE, _sub(r"MICROVOLTS", "FURLONGS", count=0), "unknown signal units 'FURLONGS'"),
    ("muse-median.xml", MUSE, _sub(r"<Waveform>\s*<WaveformType>Rhythm.*?</Waveform>", ""),
     "no Rhythm waveform (waveforms: Median)"),
    ("aecg-truncated.xml", AECG, _truncate, "not well-formed XML"),
    ("aecg-digits.xml", AECG, _sub(r"<digits>\s*-2 -2", "<digits> -2 zz"), "<digits> holds something other"),
    ("aecg-leads.xml", AECG, _sub(r"<component>\s*<sequence>\s*<code code=\"MDC_ECG_LEAD_V3\".*?</component>", ""),
     "missing leads V3"),
    ("aecg-rate.xml", AECG, _sub(r"<increment value=\"0.002\"", "<increment value=\"0\""),
     "sampling increment 0.0"),
    ("aecg-units.xml", AECG, _sub(r"unit=\"uV\"", "unit=\"furlong\"", count=0), "unknown signal units 'furlong'"),
    ("aecg-median.xml", AECG, _sub(r"<code code=\"RHYTHM\"", "<code code=\"OTHER\""),
     "no RHYTHM series (only derived (median beat) series)"),
    ("sierra-truncated.xml", SIERRA_103, _truncate, "not well-formed XML"),
    ("sierra-base64.xml", SIERRA_103, _sub(r"(<parsedwaveforms[^>]*>)\s*\S{8}", r"\1@@@@!!!!"),
     "unreadable Philips Sierra waveforms"),
    ("sierra-rate.xml", SIERRA_103, _sub(r"<samplingrate>500", "<samplingrate>0"), "invalid sampling rate"),
    ("sierra-units.xml", SIERRA_103, _sub(r"<signalresolution>5<", "<signalresolution>x<"),
     "no usable signal resolution"),
]


@needs_formats
@pytest.mark.parametrize(("name", "source", "breaks", "message"), BROKEN_XML, ids=[b[0] for b in BROKEN_XML])
def test_broken_xml_files(tmp_path, name, source, breaks, message):
    original = source.read_bytes()
    broken = breaks(original)
    assert broken != original, "the test's edit did not apply"
    path = tmp_path / name
    path.write_bytes(broken)
    with pytest.raises(InputError, match=re.escape(message)) as info:
        to_model_input(read_recording(path))
    assert str(path) in str(info.value)


def _dicom_variant(tmp_path: Path, name: str, change) -> Path:
    import pydicom

    ds = pydicom.dcmread(DICOM)
    change(ds)
    path = tmp_path / name
    ds.save_as(path)
    return path


def _drop_waveforms(ds):
    del ds.WaveformSequence


def _median_only(ds):
    ds.WaveformSequence[0].MultiplexGroupLabel = "MEDIAN BEAT"


def _zero_rate(ds):
    ds.WaveformSequence[0].SamplingFrequency = 0


def _furlongs(ds):
    for channel in ds.WaveformSequence[0].ChannelDefinitionSequence:
        channel.ChannelSensitivityUnitsSequence[0].CodeValue = "furlong"


def _no_lead_names(ds):
    for channel in ds.WaveformSequence[0].ChannelDefinitionSequence:
        channel.ChannelSourceSequence[0].CodeMeaning = "Unknown"


def _not_ecg(ds):
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT image storage


@needs_formats
@pytest.mark.parametrize(("change", "message"), [
    (_drop_waveforms, "without a waveform"), (_median_only, "only median-beat waveforms"),
    (_zero_rate, "invalid sampling rate"), (_furlongs, "unknown signal units 'furlong'"),
    (_no_lead_names, "missing leads"), (_not_ecg, "not an ECG waveform"),
], ids=lambda f: getattr(f, "__name__", ""))
def test_broken_dicom(tmp_path, change, message):
    path = _dicom_variant(tmp_path, "bad.dcm", change)
    with pytest.raises(InputError, match=re.escape(message)) as info:
        to_model_input(read_recording(path))
    assert str(path) in str(info.value)


@needs_formats
def test_truncated_dicom(tmp_path):
    path = tmp_path / "cut.dcm"
    path.write_bytes(DICOM.read_bytes()[:200_000])
    with pytest.raises(InputError) as info:
        read_recording(path)
    assert str(path) in str(info.value)


@pytest.mark.skipif(not SHARED_WFDB.exists(), reason="../shared/data/wfdb not present")
def test_broken_edf(tmp_path):
    source = read_recording(SHARED_WFDB / "HR06002")
    _edf_from(source, tmp_path / "ok.edf", seconds=10.0)
    cut = tmp_path / "cut.edf"
    cut.write_bytes((tmp_path / "ok.edf").read_bytes()[:5000])
    # edfio >= 0.4.x repairs a cut file with a warning (refused here); older ones fail to reshape it.
    with pytest.raises(InputError, match="EDF file is truncated|not a readable EDF file") as info:
        read_recording(cut)
    assert str(cut) in str(info.value)
    _edf_from(source, tmp_path / "units.edf", seconds=10.0, unit="furlong")
    with pytest.raises(InputError, match="unknown signal units 'furlong'"):
        to_model_input(read_recording(tmp_path / "units.edf"))
    _edf_from(source, tmp_path / "labels.edf", seconds=10.0, label_prefix="EEG-X")
    with pytest.raises(InputError, match=r"no ECG lead among the signals \(EEG-XI, "):
        read_recording(tmp_path / "labels.edf")




@pytest.mark.parametrize("text", [BILLION_LAUGHS, EXTERNAL_ENTITY], ids=["billion-laughs", "external-entity"])
def test_hostile_xml_refused_fast(tmp_path, text):
    path = tmp_path / "hostile.xml"
    path.write_text(text)
    start = time.perf_counter()
    with pytest.raises(InputError, match="XML refused: it declares entities") as info:
        read_recording(path)
    assert time.perf_counter() - start < 1.0
    assert str(path) in str(info.value)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ecg_edge.cli", *args], capture_output=True, text=True)


@needs_formats
def test_bad_file_exit_2_then_keep_going(tmp_path):
    """convert reads as infer does: a bad file stops it with one line; --keep-going reports it and goes on."""
    inputs = tmp_path / "in"
    shutil.copytree(FORMATS_DIR, inputs)
    bad = inputs / "ge-muse" / "bomb.xml"
    bad.write_text(BILLION_LAUGHS)
    out = tmp_path / "all.h5"
    stopped = _cli("convert", str(inputs), str(out))
    assert stopped.returncode == 2, stopped.stderr
    errors = [line for line in stopped.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(bad) in errors[0] and "Traceback" not in stopped.stderr
    assert not out.exists() and not list(tmp_path.glob(".all.h5*"))
    going = _cli("convert", str(inputs), str(out), "--keep-going")
    assert going.returncode == 0, going.stderr
    assert f"skipped: {bad}" in going.stderr
    import h5py

    with h5py.File(out) as f:
        ids = [i.decode() for i in f["exam_id"][:]]
        assert f["tracings"].shape == (5, 4096, 12)
        assert sorted(ids) == sorted(p.stem for p, *_ in REAL)
        assert all(s.decode().startswith(str(inputs)) for s in f["source"][:])


@needs_formats
def test_convert_then_infer_gives_the_same_probabilities(tmp_path):
    """A folder of mixed formats through `convert` and through `infer` directly: same exams, same outputs."""
    export = tiny_export(tmp_path / "tiny")
    h5 = tmp_path / "mixed.h5"
    assert _cli("convert", str(FORMATS_DIR), str(SHARED_WFDB / "HR06000.hea"), str(h5)).returncode == 0
    direct, via = tmp_path / "direct.json", tmp_path / "via.json"
    run = _cli("infer", str(FORMATS_DIR), str(SHARED_WFDB / "HR06000.hea"), "--model", str(export), "-o", str(direct))
    assert run.returncode == 0, run.stderr
    assert _cli("infer", str(h5), "--model", str(export), "-o", str(via)).returncode == 0
    a, b = json.loads(direct.read_text())["exams"], json.loads(via.read_text())["exams"]
    assert [e["exam_id"] for e in a] == [e["exam_id"] for e in b] == [p.stem for p in expand_inputs(
        [FORMATS_DIR, SHARED_WFDB / "HR06000.hea"])]
    assert np.allclose([e["AF"] for e in a], [e["AF"] for e in b], atol=1e-6)
    by_id = {e["exam_id"]: e for e in a}
    assert by_id["muse-sinus"]["device_statements"][0] == "Normal Sinus rhythm"
    assert by_id["waveform_ecg"]["device_statements"] == []
    assert "1dAVb" in run.stdout and "waveform_ecg" in run.stdout

from __future__ import annotations

import numpy as np
import pytest
import wfdb
from conftest import needs_shared, wfdb_records

from ecg_edge import InputError, Recording, read_recording, to_model_input
from ecg_edge.preprocess import center_fit, resample_to_400hz
from ecg_edge.spec import LEADS


@needs_shared
@pytest.mark.parametrize("header", wfdb_records(), ids=lambda p: p.stem)
def test_every_real_record(header):
    rec = read_recording(header)
    x = to_model_input(rec)
    assert x.shape == (4096, 12) and x.dtype == np.float32
    assert np.isfinite(x).all()
    # aVR = -(I + II) / 2 holds on the recorded (not derived) leads.
    lead = {name: i for i, name in enumerate(LEADS)}
    recorded = np.abs(x).sum(axis=1) > 0
    avr, i, ii = x[recorded, lead["AVR"]], x[recorded, lead["DI"]], x[recorded, lead["DII"]]
    assert np.abs(avr + (i + ii) / 2).max() < 0.02
    # Millivolts: a real ECG's QRS peaks between 0.3 and 6 mV.
    assert 0.3 < np.abs(x).max() < 6.0
    # Amplitudes survive resampling (no scale error): compare with the raw lead II in mV.
    raw_ii = rec.signal[:, [n.upper() for n in rec.leads].index("II")]
    window = int(4096 / 400 * rec.fs)  # the part that survives the centre crop
    if len(raw_ii) > window:
        start = (len(raw_ii) - window) // 2
        raw_ii = raw_ii[start:start + window]
    assert np.percentile(np.abs(x[recorded, lead["DII"]]), 99) == pytest.approx(
        np.percentile(np.abs(raw_ii), 99), rel=0.25
    )


@needs_shared
@pytest.mark.parametrize(
    ("record", "fs", "seconds"),
    [("00001_lr", 100, 10.0), ("HR06000", 500, 10.0), ("JS00001", 500, 10.0), ("s0010_re", 1000, 38.4)],
)
def test_rates_and_centring(record, fs, seconds):
    from conftest import SHARED_WFDB

    rec = read_recording(SHARED_WFDB / record)
    assert rec.fs == fs
    x = to_model_input(rec)
    recorded = np.flatnonzero(np.abs(x).sum(axis=1))
    if seconds * 400 < 4096:
        # 4000 samples centred in 4096: 48 zeros on each side.
        assert recorded[0] == 48 and recorded[-1] == 4047
    else:
        # Cropped to the middle 10.24 s of the record.
        assert recorded[0] == 0 and recorded[-1] == 4095
        mid = resample_to_400hz(rec.signal[:, :12], fs)
        start = (mid.shape[0] - 4096) // 2
        assert np.allclose(x[:, 0], mid[start:start + 4096, 0], atol=1e-5)


@needs_shared
def test_ignores_extra_leads_and_lower_case_names():
    from conftest import SHARED_WFDB

    rec = read_recording(SHARED_WFDB / "s0010_re.hea")
    assert len(rec.leads) == 15 and "vx" in rec.leads and "avr" in rec.leads
    assert to_model_input(rec).shape == (4096, 12)


@needs_shared
@pytest.mark.parametrize("stored", [("I", "II"), ("I", "III"), ("II", "III")], ids="+".join)
def test_limb_leads_derived_from_any_two(stored):
    """A device that stores any two of I, II, III (Einthoven: II = I + III) gives the full 12 leads."""
    from conftest import SHARED_WFDB

    rec = read_recording(SHARED_WFDB / "HR06004")
    full = to_model_input(rec)
    limb = {"I", "II", "III", "AVR", "AVL", "AVF"}
    keep = [i for i, n in enumerate(rec.leads) if n.upper() not in limb or n.upper() in stored]
    partial = Recording(rec.signal[:, keep], rec.fs, tuple(rec.leads[i] for i in keep),
                        tuple(rec.units[i] for i in keep), source="partial")
    derived = to_model_input(partial)
    assert np.array_equal(derived[:, 6:], full[:, 6:])
    # Derived and recorded limb leads agree to within digitisation error.
    assert np.abs(derived[:, :6] - full[:, :6]).max() < 0.02


def test_nan_in_an_ignored_channel_is_not_an_error():
    """Only the 12 leads the model reads are checked: a broken extra channel (a Frank lead) does not count."""
    rec = _synthetic_recording()
    extra = np.full((rec.signal.shape[0], 1), np.nan)
    with_frank = Recording(np.hstack([rec.signal, extra]), rec.fs, (*rec.leads, "vx"), "mV", source="frank.npy")
    assert np.array_equal(to_model_input(with_frank), to_model_input(rec))


def _synthetic_recording(fs=500.0, seconds=10.0, units="mV", leads=("I", "II", "III", "aVR", "aVL", "aVF",
                         "V1", "V2", "V3", "V4", "V5", "V6")) -> Recording:
    t = np.arange(int(fs * seconds)) / fs
    base = np.sin(2 * np.pi * 1.2 * t)
    signal = np.stack([base * (k + 1) / 10 for k in range(len(leads))], axis=1)
    return Recording(signal, fs, leads, units, id="synthetic", source="synthetic.npy")


def test_units_convert_to_millivolts():
    mv = to_model_input(_synthetic_recording(units="mV"))
    rec_uv = _synthetic_recording(units="uV")
    rec_uv.signal = rec_uv.signal * 1000
    assert np.allclose(to_model_input(rec_uv), mv, atol=1e-5)
    rec_v = _synthetic_recording(units="V")
    rec_v.signal = rec_v.signal / 1000
    assert np.allclose(to_model_input(rec_v), mv, atol=1e-5)
    assert np.allclose(to_model_input(_synthetic_recording(), scale=0.5), mv * 0.5, atol=1e-6)


def test_lead_aliases_and_order():
    names = ("V6", "V5", "V4", "V3", "V2", "V1", "Lead I", "ECG D2", "DIII", "avr", "MDC_ECG_LEAD_AVL", "EKG aVF")
    rec = _synthetic_recording(leads=names)
    x = to_model_input(rec)
    # Column k of the source holds (k+1)/10 * base: check the model order picked the right ones.
    expected_scale = [names.index(n) + 1 for n in ("Lead I", "ECG D2", "DIII", "avr", "MDC_ECG_LEAD_AVL", "EKG aVF",
                                                   "V1", "V2", "V3", "V4", "V5", "V6")]
    ratios = x[1000] / x[1000, 0]
    assert np.allclose(ratios, np.array(expected_scale) / expected_scale[0], rtol=1e-4)


def test_resample_and_fit():
    x = np.ones((1000, 2))
    assert resample_to_400hz(x, 100).shape == (4000, 2)
    assert resample_to_400hz(x, 400) is x
    assert resample_to_400hz(np.ones((5000, 1)), 500).shape == (4000, 1)
    padded = center_fit(np.ones((4000, 1)))
    assert padded.shape == (4096, 1) and padded[:48].sum() == 0 and padded[48:4048].all()
    cropped = center_fit(np.arange(5000.0)[:, None])
    assert cropped[0, 0] == 452 and cropped.shape == (4096, 1)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: setattr(r, "signal", np.where(np.arange(r.signal.shape[0])[:, None] == 7, np.nan, r.signal)), "NaN"),
        (lambda r: setattr(r, "signal", r.signal[:0]), "no samples"),
        (lambda r: setattr(r, "units", "furlongs"), "unknown signal units"),
        (lambda r: setattr(r, "fs", 0.0), "invalid sampling rate"),
    ],
    ids=["nan", "empty", "units", "rate"],
)
def test_bad_recordings(change, message):
    rec = _synthetic_recording()
    change(rec)
    with pytest.raises(InputError, match=message) as info:
        to_model_input(rec)
    assert "synthetic.npy" in str(info.value)


def test_missing_leads_named():
    rec = _synthetic_recording(leads=("I", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6", "X", "Y"))
    with pytest.raises(InputError, match="missing leads DII, DIII"):
        to_model_input(rec)


def test_wfdb_units_read(tmp_path):
    """A record written in microvolts reads back in millivolts after preprocessing."""
    fs, n = 250, 2500
    signal = np.sin(np.linspace(0, 60, n))[:, None] * np.linspace(0.5, 1.5, 12)[None, :]
    names = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    wfdb.wrsamp("rec_uv", fs=fs, units=["uV"] * 12, sig_name=names, p_signal=signal * 1000,
                fmt=["16"] * 12, adc_gain=[10.0] * 12, baseline=[0] * 12, write_dir=str(tmp_path))
    wfdb.wrsamp("rec_mv", fs=fs, units=["mV"] * 12, sig_name=names, p_signal=signal,
                fmt=["16"] * 12, adc_gain=[10000.0] * 12, baseline=[0] * 12, write_dir=str(tmp_path))
    uv = to_model_input(read_recording(tmp_path / "rec_uv.hea"))
    mv = to_model_input(read_recording(tmp_path / "rec_mv"))
    assert np.abs(uv - mv).max() < 2e-3
    assert np.abs(mv).max() > 1.0

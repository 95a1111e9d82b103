"""Heart rate and intervals (ecg_edge.measure): synthetic ECGs of known rate, PR and QT; flat and
noise-only recordings; leads that fail; real records against the carts' own measurements."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from conftest import SHARED_WFDB
from ecg_measure import heart_rate_bpm

import ecg_edge.measure as measure_module
from ecg_edge.measure import COLUMNS, INSTALL_HINT, NOT_MEASURED, QRS_NOTE, Measurements, measure
from ecg_edge.quality import unpadded_span
from ecg_edge.spec import LEADS, SAMPLING_RATE_HZ
from ecg_edge.synthetic import EcgParams, synthesize_ecg

FS = SAMPLING_RATE_HZ
FORMATS = SHARED_WFDB.parent / "formats"
REAL = SHARED_WFDB.parent / "real"
needs_neurokit = pytest.mark.skipif(not measure_module.available(), reason="neurokit2 absent (ecg-edge[measure])")


def _ecg(rate: float, seed: int, pr: float = 160.0, rhythm: str = "sinus", bbb: str = "") -> np.ndarray:
    """10 s of a synthetic 12-lead ECG (noise included), without the padding."""
    x = synthesize_ecg(EcgParams(rhythm, rate, pr, 90.0 if not bbb else 150.0, bbb), np.random.default_rng(seed))
    start, stop = unpadded_span(x)
    return x[start:stop]


@needs_neurokit
@pytest.mark.parametrize("rate", [36.0, 45.0, 60.0, 75.0, 95.0, 110.0, 140.0, 170.0])
def test_rate_of_synthetic_ecgs(rate):
    x = _ecg(rate, seed=int(rate))
    m = measure(x, FS)
    # the rate drawn, within the beat-to-beat variation the generator adds, and an independent detector's
    assert m.heart_rate_bpm == pytest.approx(rate, rel=0.03)
    padded = np.zeros((4096, 12), np.float32)
    padded[48:4048] = x
    assert m.heart_rate_bpm == pytest.approx(heart_rate_bpm(padded), abs=1.0)
    assert m.beats >= 5 and len(m.leads) >= 2 and m.qrs_ms is None and QRS_NOTE in m.note


@needs_neurokit
def test_slow_rates_do_not_count_t_waves():
    """At 30-40 bpm the detector alone takes the T waves of II and V5 for beats (twice the rate)."""
    for seed in range(4):
        assert measure(_ecg(33.0 + 2 * seed, seed), FS).heart_rate_bpm < 42


@needs_neurokit
def test_pr_and_qt_of_synthetic_ecgs():
    normal, long = measure(_ecg(65.0, 1, pr=150.0), FS), measure(_ecg(65.0, 2, pr=270.0), FS)
    assert normal.pr_ms is not None and long.pr_ms is not None
    assert normal.pr_ms < 200 < long.pr_ms  # first-degree AV block is PR > 200 ms
    assert abs(normal.pr_ms - 150) < 30 and abs(long.pr_ms - 270) < 30
    qt = 400 * np.sqrt(60 / 65.0) + 12.5 + 45  # the generator's T end from its QRS onset, in ms
    assert normal.qt_ms == pytest.approx(qt, abs=40)
    assert normal.qtc_ms == pytest.approx(normal.qt_ms / np.sqrt(60 / normal.heart_rate_bpm), rel=1e-6)  # Bazett


@needs_neurokit
def test_no_pr_without_p_waves_and_no_qt_cut_short():
    for seed in range(3):
        af = measure(_ecg(90.0, seed, rhythm="af"), FS)
        assert af.heart_rate_bpm is not None and af.pr_ms is None and "PR:" in af.note
    fast = measure(_ecg(130.0, 5), FS)  # T waves end past mid-RR, where the delineator cuts each beat
    assert fast.heart_rate_bpm == pytest.approx(130, rel=0.03) and fast.qt_ms is None and fast.qtc_ms is None
    assert "QT:" in fast.note


@needs_neurokit
@pytest.mark.parametrize("kind", ["zeros", "tiny", "white", "wander"])
def test_flat_or_noise_only_gives_no_rate_and_says_why(kind):
    rng = np.random.default_rng(3)
    t = np.arange(10 * FS)[:, None] / FS
    x = {"zeros": lambda: np.zeros((10 * FS, 12)),
         "tiny": lambda: rng.normal(0, 0.002, (10 * FS, 12)),
         "white": lambda: rng.normal(0, 0.2, (10 * FS, 12)),
         "wander": lambda: np.cumsum(rng.normal(0, 0.02, (10 * FS, 12)), axis=0) + np.sin(2 * np.pi * 0.3 * t)}[kind]()
    m = measure(x, FS)
    assert m.heart_rate_bpm is None and m.pr_ms is None and m.qt_ms is None
    assert m.note.startswith("no rate:")
    assert ("flat" in m.note) if kind in ("zeros", "tiny") else ("agree" in m.note or "beats" in m.note)


@needs_neurokit
def test_noise_only_over_many_draws():
    rng = np.random.default_rng(0)
    for _ in range(20):
        assert measure(rng.normal(0, 0.1, (10 * FS, 12)), FS).heart_rate_bpm is None


@needs_neurokit
def test_a_bad_or_missing_lead_is_outvoted():
    x = _ecg(72.0, 9)
    noisy = x.copy()
    noisy[:, LEADS.index("DII")] = np.random.default_rng(1).normal(0, 0.3, x.shape[0])
    m = measure(noisy, FS)
    assert m.heart_rate_bpm == pytest.approx(72, rel=0.03) and "DII" not in m.leads
    chest_off = x.copy()
    chest_off[:, 6:] = 0.0  # precordial leads not connected: the limb leads carry the rate
    m = measure(chest_off, FS)
    assert m.heart_rate_bpm == pytest.approx(72, rel=0.03) and not set(m.leads) & set(LEADS[6:])


@needs_neurokit
def test_short_signal_and_rate_only():
    assert measure(_ecg(70.0, 1)[: FS], FS).note.startswith("no rate: under 2 s")
    m = measure(_ecg(70.0, 1), FS, intervals=False)
    assert m.heart_rate_bpm is not None and m.pr_ms is None and "R peaks only" in m.note


def test_without_neurokit2_every_exam_says_how_to_get_it(monkeypatch):
    monkeypatch.setattr(measure_module, "available", lambda: False)
    m = measure(np.zeros((4000, 12)), FS)
    assert m == Measurements(note=INSTALL_HINT)
    assert measure_module.method()["library"] == INSTALL_HINT


def test_columns_are_named_once_and_rounded():
    m = Measurements(72.345, 160.4, None, 400.6, 438.2, "why", ("DII", "V5"), 12)
    assert tuple(m.columns()) == COLUMNS
    assert list(m.columns().values()) == [72.3, 160, None, 401, 438, "why"]
    assert m.as_json()["measurement_leads"] == ["DII", "V5"] and m.as_json()["measured_beats"] == 12
    assert m.text() == "Heart rate 72 bpm · PR 160 ms · QRS - · QT 401 ms · QTc 438 ms"
    assert NOT_MEASURED.text().startswith("Heart rate - ·") and NOT_MEASURED.note == "not measured"


def _cart_values(path, names):
    """The cart's own measurements, read from its XML (tag -> integer)."""
    import defusedxml.ElementTree as ET

    root = ET.parse(path).getroot()
    found = {}
    for element in root.iter():
        tag = element.tag.rsplit("}", 1)[-1]
        if tag in names and tag not in found and (element.text or "").strip().isdigit():
            found[tag] = int(element.text)
    return found


@needs_neurokit
@pytest.mark.skipif(not FORMATS.exists(), reason="../shared/data/formats not present")
def test_real_files_against_the_carts_own_measurements():
    """GE MUSE and Philips Sierra files carry the cart's rate and intervals beside the waveform."""
    from ecg_edge import read_recording
    from ecg_edge.preprocess import prepare

    cases = [(FORMATS / "ge-muse" / "muse-sinus.xml", ("VentricularRate", "PRInterval", "QTInterval")),
             (FORMATS / "philips-sierra" / "129DYPRG.XML", ("heartrate", "meanprint", "meanqtint"))]
    for path, (rate_tag, pr_tag, qt_tag) in cases:
        cart = _cart_values(path, (rate_tag, pr_tag, qt_tag))
        m = measure(prepare(read_recording(path)).signal, FS)
        assert m.heart_rate_bpm == pytest.approx(cart[rate_tag], abs=2), path.name
        if m.pr_ms is not None:
            assert abs(m.pr_ms - cart[pr_tag]) <= 20, path.name
        if m.qt_ms is not None:  # one lead's QT reads shorter than a cart's 12-lead one
            assert -45 <= m.qt_ms - cart[qt_tag] <= 15, path.name


@needs_neurokit
@pytest.mark.skipif(not (REAL / "code-test-80.h5").exists(), reason="../shared/data/real not present")
def test_code_test_rates_follow_the_cardiologists_sb_and_st():
    """CODE's SB (< 50 bpm) and ST (> 100 bpm) labels on its 80 exams (6 positive), with padding left out."""
    import h5py

    with open(REAL / "labels.csv", newline="") as f:
        rows = {r["record"]: r for r in csv.DictReader(f)}
    with h5py.File(REAL / "code-test-80.h5") as f:
        x = f["tracings"][:]
    agree = 0
    for i, exam in enumerate(x):
        start, stop = unpadded_span(exam)
        m = measure(exam[start:stop], FS)
        assert m.heart_rate_bpm is not None, m.note
        row = rows[f"code-test-80.h5#{i}"]
        agree += (m.heart_rate_bpm < 50) == (row["SB"] == "1") and (m.heart_rate_bpm > 100) == (row["ST"] == "1")
    assert agree >= 76

"""Heart rate and the PR and QT intervals of one exam, from neurokit2's R peaks and wave delineation.

Measured on the 400 Hz signal before padding: the samples the model and the quality flags read, so
the numbers describe the same seconds as the findings, at one rate for every format (CODE-layout
exams exist only at 400 Hz); its 2.5 ms steps are finer than the delineation's own spread.

- Rate: R peaks (neurokit2's default detector) in three leads that carry signal, II, V5 and V2 first;
  a peak far less steep than the lead's QRS complexes is dropped (at slow rates the detector takes T
  waves for beats). A beat counts where most leads find a peak within 100 ms; a lead agrees when at
  least 80% of its peaks are such beats and it finds 80% of them. Rate = 60 / mean RR (the
  ventricular rate carts print). Fewer than two agreeing leads: all 12 are tried, then no rate
  (noise; one lead's peaks are not evidence of a heart beat).
- PR and QT: neurokit2's prominence delineator in the first two agreeing leads. A value is given
  where both leads measure it on 3 beats or more, each with a beat-to-beat spread (IQR) within
  `MAX_SPREAD_MS`, and the two agree within `MAX_LEAD_DIFF_MS`: a rhythm without regular P waves
  (atrial fibrillation) fails the first test. The delineator cuts each beat at mid-RR, so a T wave
  ending there was cut short and is left out: no QT at fast rates (from about 90 bpm).
  QTc: Bazett, as GE MUSE and Philips carts print.
- QRS duration: never given. neurokit2's DWT delineator put the QRS onset 80-130 ms early on real
  ECGs, and the prominence one bounds the R wave alone (at most 100 ms), so no delineator here
  measures it (README, "Measurements").

neurokit2 is optional (`pip install "ecg-edge[measure]"`): it brings pandas, scikit-learn and
matplotlib (about 220 MB, 2 s and 170 MB of memory to import), too much for every edge install.
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from ecg_edge.quality import THRESHOLDS
from ecg_edge.spec import LEADS

# The measurement columns of `infer`'s CSV and JSON, in order: the one place they are named.
COLUMNS: tuple[str, ...] = ("heart_rate_bpm", "pr_ms", "qrs_ms", "qt_ms", "qtc_ms", "measurements_note")
INSTALL_HINT = "not measured: pip install 'ecg-edge[measure]'"
QRS_NOTE = "QRS: not measured (no validated delineator)"
RATE_ONLY_NOTE = "intervals: not measured (R peaks only)"
# Leads tried for R peaks, best first: tall QRS in different planes, so one bad lead is outvoted.
RATE_LEADS: tuple[str, ...] = ("DII", "V5", "V2", "DI", "AVF", "V6", "V4", "V3", "DIII", "AVL", "V1", "AVR")
N_RATE_LEADS = 3
BEAT_TOLERANCE_S = 0.1  # one beat's R peak in different leads (wide QRS, QS complexes)
MIN_AGREEMENT = 0.8
MIN_SLOPE_FRACTION = 0.25  # QRS vs T wave: ~0.1 apart (a wide ectopic QRS keeps ~0.5)
MIN_BEATS = 3
MIN_DURATION_S = 2.0
RATE_RANGE_BPM = (20.0, 300.0)
# Beats whose P wave or T wave may lie outside the recording are not delineated.
EDGE_BEFORE_S, EDGE_AFTER_S = 0.4, 0.6
TRUNCATED_S = 0.01
MAX_SPREAD_MS = {"pr": 30.0, "qt": 40.0}
MAX_LEAD_DIFF_MS = {"pr": 20.0, "qt": 40.0}
PLAUSIBLE_MS = {"pr": (60.0, 400.0), "qt": (200.0, 700.0)}
# (interval, first wave, second wave) in neurokit2's names
_INTERVALS = (("pr", "ECG_P_Onsets", "ECG_R_Onsets"), ("qt", "ECG_R_Onsets", "ECG_T_Offsets"))


@dataclass(frozen=True)
class Measurements:
    """One exam's measurements; a value is None where it was not measured reliably, and `note` says why."""

    heart_rate_bpm: float | None = None
    pr_ms: float | None = None
    qrs_ms: float | None = None
    qt_ms: float | None = None
    qtc_ms: float | None = None
    note: str = ""
    leads: tuple[str, ...] = ()  # leads whose R peaks agreed
    beats: int = 0

    def columns(self) -> dict[str, Any]:
        """COLUMNS -> value (rate to 0.1 bpm, intervals to the ms; None where not measured)."""
        values = [self.heart_rate_bpm, self.pr_ms, self.qrs_ms, self.qt_ms, self.qtc_ms]
        rounded = [None if v is None else round(float(v), 1 if k == 0 else None) for k, v in enumerate(values)]
        return dict(zip(COLUMNS, [*rounded, self.note], strict=True))

    def as_json(self) -> dict[str, Any]:
        return {**self.columns(), "measurement_leads": list(self.leads), "measured_beats": self.beats}

    def text(self) -> str:
        """One line for people, e.g. 'Heart rate 72 bpm · PR 160 ms · QRS - · QT 400 ms · QTc 438 ms'."""
        def ms(v: float | None) -> str:
            return "-" if v is None else f"{v:.0f} ms"

        rate = "-" if self.heart_rate_bpm is None else f"{self.heart_rate_bpm:.0f} bpm"
        return (f"Heart rate {rate} · PR {ms(self.pr_ms)} · QRS {ms(self.qrs_ms)} · QT {ms(self.qt_ms)} · "
                f"QTc {ms(self.qtc_ms)}")


NOT_MEASURED = Measurements(note="not measured")


@lru_cache(maxsize=1)
def available() -> bool:
    return importlib.util.find_spec("neurokit2") is not None


def method() -> dict[str, Any]:
    """How the columns are measured (a results file's own record of it)."""
    version = None
    if available():
        from importlib.metadata import version as dist_version

        version = dist_version("neurokit2")
    return {
        "library": f"neurokit2 {version}" if version else INSTALL_HINT,
        "signal": "400 Hz, before padding (the samples the model reads)",
        "heart_rate_bpm": f"60 / mean RR; R peaks (neurokit2) agreed by at least 2 of {N_RATE_LEADS} leads "
                          f"({', '.join(RATE_LEADS[:N_RATE_LEADS])} first; all 12 if they disagree)",
        "pr_ms": "P onset to R onset, neurokit2 prominence delineator, mean of 2 agreeing leads",
        "qt_ms": "R onset to T offset, as PR",
        "qtc_ms": "Bazett: QT / sqrt(RR in s)",
        "qrs_ms": "not measured: no delineator here was validated for QRS duration",
    }


def measure(signal: np.ndarray, fs: float, intervals: bool = True) -> Measurements:
    """Heart rate (and with `intervals`, PR, QT and QTc) of one exam: `signal` is (n, 12) mV in LEADS order."""
    if not available():
        return Measurements(note=INSTALL_HINT)
    tail = QRS_NOTE if intervals else RATE_ONLY_NOTE
    try:
        rate = _rate(signal, fs)
        if rate.bpm is None or not intervals:
            return Measurements(heart_rate_bpm=rate.bpm, note=_join(rate.why, tail), leads=rate.leads,
                                beats=rate.beats)
        values, why = _intervals(rate, fs)
    except Exception as exc:  # a measurement must never stop inference; the note keeps the reason
        return Measurements(note=_join(f"not measured: neurokit2 failed ({type(exc).__name__}: {str(exc)[:80]})",
                                       tail))
    qt = values["qt"]
    return Measurements(heart_rate_bpm=rate.bpm, pr_ms=values["pr"], qt_ms=qt,
                        qtc_ms=None if qt is None else qt / np.sqrt(60.0 / rate.bpm),
                        note=_join(*why, tail), leads=rate.leads, beats=rate.beats)


@lru_cache(maxsize=1)
def _neurokit() -> Any:
    import neurokit2

    # Its warnings (e.g. zero-prominence peaks in the delineator) are outcomes the notes report. A filter
    # once rather than catch_warnings per exam: that swaps the global filters, and the reader is a thread.
    warnings.filterwarnings("ignore", module=r"neurokit2\.")
    return neurokit2


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


@dataclass
class _Rate:
    bpm: float | None
    why: str = ""
    leads: tuple[str, ...] = ()
    beats: int = 0
    # per agreeing lead: (cleaned signal, its R peaks of the agreed beats)
    agreed: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)


def _live_leads(signal: np.ndarray) -> list[int]:
    """RATE_LEADS (as indices) that are not flat, in RATE_LEADS order."""
    lo, hi = np.percentile(signal, [0.5, 99.5], axis=0)
    live = hi - lo >= THRESHOLDS["flat_p2p_mv"]
    return [i for i in (LEADS.index(name) for name in RATE_LEADS) if live[i]]


def _r_peaks(x: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray]:
    """(cleaned lead, R peak indices) by neurokit2's default cleaning and detector."""
    nk = _neurokit()
    clean = np.asarray(nk.ecg_clean(x, sampling_rate=fs))
    peaks = np.asarray(nk.ecg_findpeaks(clean, sampling_rate=fs)["ECG_R_Peaks"], dtype=int)
    return clean, _steep(clean, peaks, fs)


def _steep(clean: np.ndarray, peaks: np.ndarray, fs: float) -> np.ndarray:
    """The peaks whose steepest slope (within 50 ms) is at least MIN_SLOPE_FRACTION of the lead's
    steep ones: the detector takes T waves for beats at slow rates, and a T wave is far less steep."""
    if peaks.size < 2:
        return peaks
    slope = np.abs(np.gradient(clean))
    half = max(1, int(0.05 * fs))
    steepest = np.array([slope[max(0, p - half):p + half + 1].max() for p in peaks])
    return peaks[steepest >= MIN_SLOPE_FRACTION * np.percentile(steepest, 90)]


def consensus_beats(peaks: list[np.ndarray], fs: float) -> list[dict[int, int]]:
    """Beats that most leads found: {lead position: its R peak} per beat, in time order."""
    items = sorted((int(t), k) for k, ps in enumerate(peaks) for t in ps)
    groups: list[dict[int, int]] = []
    i = 0
    while i < len(items):
        group = {items[i][1]: items[i][0]}
        j = i + 1
        while j < len(items) and items[j][0] - items[i][0] <= BEAT_TOLERANCE_S * fs:
            group.setdefault(items[j][1], items[j][0])
            j += 1
        groups.append(group)
        i = j
    return [g for g in groups if 2 * len(g) > len(peaks)]


def agreeing_leads(peaks: list[np.ndarray], beats: list[dict[int, int]]) -> list[int]:
    """Positions of the leads whose peaks are mostly beats and which found most beats."""
    out = []
    for k, ps in enumerate(peaks):
        hits = sum(k in b for b in beats)
        if len(ps) and beats and hits >= MIN_AGREEMENT * len(ps) and hits >= MIN_AGREEMENT * len(beats):
            out.append(k)
    return out


def _rate(signal: np.ndarray, fs: float) -> _Rate:
    if signal.shape[0] < MIN_DURATION_S * fs:
        return _Rate(None, f"no rate: under {MIN_DURATION_S:g} s of signal")
    live = _live_leads(signal)
    if len(live) < 2:
        return _Rate(None, "no rate: flat recording (fewer than 2 leads carry signal)")
    found: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for tried in (live[:N_RATE_LEADS], live):  # an odd lead among the first three: ask them all
        found.update({i: _r_peaks(signal[:, i].astype(np.float64), fs) for i in tried if i not in found})
        peaks = [found[i][1] for i in tried]
        beats = consensus_beats(peaks, fs)
        agree = agreeing_leads(peaks, beats)
        if len(agree) >= 2 or len(tried) == len(live):
            break
    if len(agree) < 2:
        return _Rate(None, f"no rate: R peaks agree in {len(agree)} of {len(tried)} leads (noise, or no QRS)")
    if len(beats) < MIN_BEATS:
        return _Rate(None, f"no rate: {len(beats)} beats")
    times = np.array([np.median(list(b.values())) for b in beats])
    bpm = float(60.0 * (len(times) - 1) / ((times[-1] - times[0]) / fs))
    leads = tuple(LEADS[tried[k]] for k in agree)
    if not RATE_RANGE_BPM[0] <= bpm <= RATE_RANGE_BPM[1]:
        return _Rate(None, f"no rate: {bpm:.0f} bpm is outside {RATE_RANGE_BPM[0]:g}-{RATE_RANGE_BPM[1]:g}",
                     leads, len(beats))
    agreed = [(found[tried[k]][0], np.array([b[k] for b in beats if k in b], dtype=int)) for k in agree]
    return _Rate(bpm, "", leads, len(beats), agreed)


def _intervals(rate: _Rate, fs: float) -> tuple[dict[str, float | None], list[str]]:
    """PR and QT (ms) from the first two agreeing leads, and why either is missing."""
    per_lead = [_delineate(clean, peaks, fs) for clean, peaks in rate.agreed[:2]]
    values: dict[str, float | None] = {}
    why = []
    for name, _, _ in _INTERVALS:
        values[name], reason = _combine(name, [d[name] for d in per_lead], list(rate.leads[:2]))
        if name == "qt" and values[name] is None and any(d["cut"].sum() for d in per_lead if "cut" in d):
            reason += " (T waves run past mid-RR, where neurokit2 cuts each beat: fast rate)"
        if reason:
            why.append(f"{name.upper()}: {reason}")
    return values, why


def _delineate(clean: np.ndarray, peaks: np.ndarray, fs: float) -> dict[str, np.ndarray]:
    """Per-beat PR and QT (ms) in one lead, of the beats whose P and T waves lie inside the recording."""
    nk = _neurokit()
    r = peaks[(peaks >= EDGE_BEFORE_S * fs) & (peaks < clean.size - EDGE_AFTER_S * fs)]
    empty = {name: np.zeros(0) for name, _, _ in _INTERVALS}
    if r.size < MIN_BEATS:
        return empty
    _, waves = nk.ecg_delineate(clean, r, sampling_rate=fs, method="prominence")
    if any(len(waves[key]) != r.size for _, *keys in _INTERVALS for key in keys):
        return empty  # neurokit2 drops points at index 0: beats no longer pair up
    # It cuts each beat at mid-RR: a T wave that ends there was cut short.
    rr = np.diff(r)
    cut = r + np.append(rr, rr[-1]) // 2 - TRUNCATED_S * fs
    t_end = np.asarray(waves["ECG_T_Offsets"], float)
    waves = {**waves, "ECG_T_Offsets": np.where(t_end >= cut, np.nan, t_end)}
    out = {"cut": np.array([int((t_end >= cut).sum())])}
    for name, first, second in _INTERVALS:
        ms = (np.asarray(waves[second], float) - np.asarray(waves[first], float)) / fs * 1000.0
        out[name] = ms[np.isfinite(ms)]
    return out


def _combine(name: str, per_lead: list[np.ndarray], leads: list[str]) -> tuple[float | None, str]:
    """An interval from two leads' per-beat values (mean of their medians), or None and why."""
    medians = []
    for values, lead in zip(per_lead, leads, strict=True):
        if values.size < MIN_BEATS:
            return None, f"found on {values.size} beats in {lead}"
        q1, q3 = np.percentile(values, [25, 75])
        if q3 - q1 > MAX_SPREAD_MS[name]:
            hint = " (no regular P waves?)" if name == "pr" else ""
            return None, f"beat-to-beat spread {q3 - q1:.0f} ms in {lead}{hint}"
        medians.append(float(np.median(values)))
    if len(medians) < 2:
        return None, "fewer than 2 leads to compare"
    if abs(medians[0] - medians[1]) > MAX_LEAD_DIFF_MS[name]:
        return None, f"{leads[0]} and {leads[1]} differ by {abs(medians[0] - medians[1]):.0f} ms"
    value = float(np.mean(medians))
    lo, hi = PLAUSIBLE_MS[name]
    if not lo <= value <= hi:
        return None, f"{value:.0f} ms is outside {lo:g}-{hi:g}"
    return value, ""

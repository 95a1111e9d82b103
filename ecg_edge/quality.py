"""Signal-quality flags: is a recording good enough to trust the model's findings on it?

Each flag has a fixed name, the leads it concerns and the value measured. The thresholds live in
`THRESHOLDS` (the one place): they were measured on the real records of `../shared/data` (no flag
on any of them) and on the same records with each fault put in on purpose (each flag raised by its
own fault); `tests/test_quality.py` repeats both measurements. `benchmarks/quality_real.py` measures
both on the 336 real recordings of `../shared/data/real` (LUDB, CinC 2021, CODE-test), each flag
raised there looked at by a person (`benchmarks/results/quality-real-*.md`).

Everything is measured on the 12 leads in millivolts: clipping on the samples as stored (before
resampling, where equal stored values stay equal), the rest on the 400 Hz signal before padding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from ecg_edge.spec import LEADS, N_SAMPLES, SAMPLING_RATE_HZ

FLAGS: tuple[str, ...] = (
    "flat_lead", "clipped", "amplitude_implausible", "baseline_wander", "noise", "limb_lead_reversal",
    "padded",
)

THRESHOLDS: dict[str, float] = {
    # flat_lead: peak-to-peak (0.5th to 99.5th percentile, baseline removed) under this, in mV.
    "flat_p2p_mv": 0.03,
    # clipped: at least this long in total at the lead's own extreme value (exactly equal stored
    # samples, in runs inside the recording), with fewer samples just below the extreme than at it
    # (a flat top, not a round one).
    "clip_min_s": 0.02,
    "clip_band_fraction": 0.02,
    # amplitude_implausible: QRS peak-to-peak outside [low, high] mV in more than half the leads.
    "amplitude_low_mv": 0.08,
    "amplitude_high_mv": 12.0,
    # baseline_wander: the < 0.7 Hz component's peak-to-peak above this (mV) within any window of
    # `wander_window_s`, in any lead, leaving out `wander_edge_s` at either end. Measured on the whole
    # recording, this flagged 17 of 336 real recordings (benchmarks/quality_real.py): most were
    # CODE-test exams (stored DC-coupled) whose baseline drifts a few mV over 10 s with the waves
    # intact (the network's training exams drift alike), and one CinC recording cut on a -4 mV S wave,
    # where the zero-phase filter's output is pinned to the edge sample. Breathing wander (0.3 Hz,
    # 2 mV: 4 mV within any 1.7 s) and electrode jumps still read in full in a 2.5 s window.
    "wander_p2p_mv": 3.0,
    "wander_cutoff_hz": 0.7,
    "wander_window_s": 2.5,
    "wander_edge_s": 0.5,
    # noise: sample-to-sample steps (at 400 Hz) larger than the waves make, in any lead: their
    # robust SD over sqrt(2) (white noise's SD) above this, in mV.
    "noise_sd_mv": 0.035,
    # limb_lead_reversal: lead I anti-correlated with V6 below this (they look alike when the arm
    # electrodes are in place), or below 0 with lead I's main deflection negative and aVR's positive.
    "reversal_corr_i_v6": -0.3,
    # padded: zero-padded by more than a 7 s recording is (3.24 s: 2800 of 4096 samples at 400 Hz).
    # The network's training exams (CODE) are 10 s or 7 s long, both centre-padded to 4096 samples,
    # so a 7-10 s recording is what it was trained on; at 0.25 s (10 s) this flag was raised on 53
    # of the 80 CODE-test exams, the paper's own test set (7.3 s each).
    "padded_min_s": 3.25,
}


@dataclass
class Flag:
    name: str
    value: float
    leads: list[str] = field(default_factory=list)
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"flag": self.name, "value": round(float(self.value), 4), "leads": self.leads, "detail": self.detail}


# Flags must not slow `infer` (benchmarks/report_speed.py): the baseline is found at a low rate
# (means of DECIMATE samples: 50 Hz from 400 Hz), the waves' shape on means of SMOOTH samples
# (10 ms), and high-frequency noise from the second difference, all a few passes over the data.
DECIMATE = 8
SMOOTH = 4


@lru_cache(maxsize=4)
def _lowpass(fs: float) -> np.ndarray:
    from scipy.signal import butter

    return butter(2, THRESHOLDS["wander_cutoff_hz"], "lowpass", fs=fs / DECIMATE, output="sos")


def _block_means(x: np.ndarray, k: int) -> np.ndarray:
    m = x.shape[-1] // k
    total = x[..., 0:m * k:k].copy()
    for i in range(1, k):  # strided adds: faster than a reshaped mean
        total += x[..., i:m * k:k]
    return total / k


def _quantiles(x: np.ndarray, qs: tuple[float, ...]) -> list[np.ndarray]:
    """Per row, the samples at these ranks (nearest rank; one partition, no copies beyond it)."""
    ks = [min(x.shape[-1] - 1, int(round(q * (x.shape[-1] - 1)))) for q in qs]
    part = np.partition(x, ks, axis=-1)
    return [part[..., k] for k in ks]


def measure(signal: np.ndarray, fs: float = SAMPLING_RATE_HZ) -> dict[str, np.ndarray]:
    """Per-lead measures of a (n, 12) millivolt signal at 400 Hz without padding, in the model's lead order."""
    return {name: value[0] for name, value in measure_batch(np.asarray(signal)[None], fs).items()}


def measure_batch(signals: np.ndarray, fs: float = SAMPLING_RATE_HZ) -> dict[str, np.ndarray]:
    """`measure` of (k, n, 12) signals of one length at once: each measure with a first axis of k.
    The same numbers as one at a time (every step works along each lead alone), at a fraction of
    the calls: a CODE-layout file's exams come this way (`assess_batch`)."""
    from scipy.signal import sosfiltfilt

    x = np.ascontiguousarray(np.asarray(signals, dtype=np.float32).transpose(0, 2, 1))  # (k, 12, n)
    n = x.shape[-1]
    waves = _block_means(x, SMOOTH) if n >= 2 * DECIMATE else x  # 10 ms means: noise averaged out
    step = DECIMATE // SMOOTH if n >= 2 * DECIMATE else 1
    blocks = _block_means(waves, step)
    if blocks.shape[-1] > 9:
        slow = sosfiltfilt(_lowpass(float(fs)), blocks, padlen=min(blocks.shape[-1] - 1, 3 * int(fs / DECIMATE)))
    else:
        slow = np.repeat(blocks.mean(axis=-1, keepdims=True), max(1, blocks.shape[-1]), axis=-1)
    baseline = np.repeat(slow, step, axis=-1)
    waves = waves[..., : baseline.shape[-1]] - baseline
    lo, hi = _quantiles(waves, (0.005, 0.995))
    top, bottom = waves.max(axis=-1), waves.min(axis=-1)
    steps = np.abs(np.diff(x, axis=-1)) if n > 1 else np.zeros((*x.shape[:-1], 1), np.float32)
    lead_i, v6 = waves[:, LEADS.index("DI")], waves[:, LEADS.index("V6")]
    spread = (lead_i.std(axis=-1) * v6.std(axis=-1)).astype(np.float64)
    covariance = np.mean((lead_i - lead_i.mean(axis=-1, keepdims=True)) * (v6 - v6.mean(axis=-1, keepdims=True)),
                         axis=-1).astype(np.float64)
    return {
        "p2p": hi - lo,
        "qrs_p2p": top - bottom,
        "dominant": np.where(top >= -bottom, top, bottom),
        "wander": _windowed_p2p(slow, fs / DECIMATE if n >= 2 * DECIMATE else fs),
        # robust SD of sample-to-sample steps over sqrt(2): white noise's SD; 50 Hz hum of amplitude
        # A reads 0.57 A (the waves' own steps are small and the median ignores the QRS's)
        "noise": 1.4826 * _quantiles(steps, (0.5,))[0] / np.sqrt(2),
        "corr_i_v6": np.divide(covariance, spread, out=np.zeros_like(spread), where=spread != 0),
    }


def _windowed_p2p(slow: np.ndarray, rate: float) -> np.ndarray:
    """Per row, the largest peak-to-peak within any `wander_window_s`, without `wander_edge_s` at
    either end (kept when the recording is too short to spare them)."""
    from scipy.ndimage import maximum_filter1d, minimum_filter1d

    edge = int(round(THRESHOLDS["wander_edge_s"] * rate))
    if slow.shape[-1] > 4 * edge > 0:
        slow = slow[..., edge:-edge]
    size = max(1, min(slow.shape[-1], int(round(THRESHOLDS["wander_window_s"] * rate))))
    return (maximum_filter1d(slow, size, axis=-1) - minimum_filter1d(slow, size, axis=-1)).max(axis=-1)


def clipped_leads(stored: np.ndarray, fs: float) -> dict[int, float]:
    """Leads (index -> seconds at the extreme) whose stored samples sit on a flat top or bottom."""
    found: dict[int, float] = {}
    min_samples = max(3, int(round(THRESHOLDS["clip_min_s"] * fs)))
    leads = np.ascontiguousarray(stored.T)
    top, bottom = leads.max(axis=1, keepdims=True), leads.min(axis=1, keepdims=True)
    candidates = ((leads == top).sum(axis=1) >= min_samples) | ((leads == bottom).sum(axis=1) >= min_samples)
    for lead in np.flatnonzero(candidates):
        x = leads[lead]
        span = float(x.max() - x.min())
        if span <= 0:
            continue
        band = THRESHOLDS["clip_band_fraction"] * span
        eps = 1e-9 * max(1.0, span)
        for distance in (x.max() - x, x - x.min()):
            at = _interior_count(distance <= eps, min_run=3)
            near = int(((distance > eps) & (distance <= band)).sum())
            if at >= min_samples and at > near:
                found[int(lead)] = max(found.get(int(lead), 0.0), at / fs)
    return found


def _interior_count(mask: np.ndarray, min_run: int) -> int:
    """Samples in runs of `mask` of at least `min_run` that touch neither end: a recording that
    stops on a held value is not a saturated amplifier, nor a periodic signal's repeated peak."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    inside = (starts > 0) & (stops < mask.size) & (stops - starts >= min_run)
    return int((stops[inside] - starts[inside]).sum())


def assess(
    signal: np.ndarray, stored: np.ndarray | None = None, stored_fs: float = SAMPLING_RATE_HZ,
    pad_samples: int = 0,
) -> list[Flag]:
    """Quality flags of one exam.

    `signal`: (n, 12) mV at 400 Hz before padding; `stored`: the 12 leads as stored (mV, at
    `stored_fs`), for clipping; `pad_samples`: zeros added to reach 4096 samples.
    """
    if signal.shape[0] < 2:
        return [Flag("padded", pad_samples / SAMPLING_RATE_HZ, [], f"{pad_samples} samples of zeros")]
    return _flags(measure(signal), signal, stored, stored_fs, pad_samples)


# Exams measured in one call by `assess_batch`: 8 take a third less CPU per exam than one at a time
# (fewer calls), where 32 lose most of it again to the cache (benchmarks/results/input-workers-*.md).
BATCH_EXAMS = 8


def assess_batch(exams: list[tuple[np.ndarray, np.ndarray | None, float, int]]) -> list[list[Flag]]:
    """`assess` of many exams, each (signal, stored, stored_fs, pad_samples): those of one length
    measured together (`measure_batch`), the same flags as one at a time."""
    flags: list[list[Flag] | None] = [None] * len(exams)
    by_length: dict[int, list[int]] = {}
    for k, (signal, stored, stored_fs, pad_samples) in enumerate(exams):
        if signal.shape[0] < 2:
            flags[k] = assess(signal, stored, stored_fs, pad_samples)
        else:
            by_length.setdefault(signal.shape[0], []).append(k)
    for members in by_length.values():
        for start in range(0, len(members), BATCH_EXAMS):
            part = members[start:start + BATCH_EXAMS]
            measures = measure_batch(np.stack([exams[k][0] for k in part]))
            for row, k in enumerate(part):
                signal, stored, stored_fs, pad_samples = exams[k]
                one = {name: value[row] for name, value in measures.items()}
                flags[k] = _flags(one, signal, stored, stored_fs, pad_samples)
    return [f if f is not None else [] for f in flags]


def _flags(m: dict[str, np.ndarray], signal: np.ndarray, stored: np.ndarray | None, stored_fs: float,
           pad_samples: int) -> list[Flag]:
    """The flags an exam's measures (`measure`) raise."""
    flags: list[Flag] = []
    names = np.array(LEADS)
    constant = bool((m["p2p"] < 1e-6).all())
    flat = m["p2p"] < THRESHOLDS["flat_p2p_mv"]
    qrs = m["qrs_p2p"]
    outside = (qrs < THRESHOLDS["amplitude_low_mv"]) | (qrs > THRESHOLDS["amplitude_high_mv"])
    scale_off = not constant and outside.sum() * 2 > len(LEADS)
    if scale_off:
        flags.append(Flag("amplitude_implausible", float(np.median(qrs)), list(names[outside]),
                          "median QRS peak-to-peak mV"))
    elif flat.any():  # a lead flat beside others of normal size (all small is a scale problem)
        flags.append(Flag("flat_lead", float(m["p2p"][flat].min()), list(names[flat]),
                          "peak-to-peak mV of the flattest"))
    clipped = clipped_leads(stored if stored is not None else signal, stored_fs)
    clipped = {i: s for i, s in clipped.items() if not flat[i]}
    if clipped:
        flags.append(Flag("clipped", max(clipped.values()), [LEADS[i] for i in sorted(clipped)],
                          "seconds at the extreme value"))
    # Wander and noise are thresholds in mV: a recording in the wrong units reads as all of them at
    # once (x1000 raised both on all 336 real recordings, benchmarks/quality_real.py), so under
    # amplitude_implausible they say nothing more.
    live = ~flat & (not scale_off)
    wander = live & (m["wander"] > THRESHOLDS["wander_p2p_mv"])
    if wander.any():
        flags.append(Flag("baseline_wander", float(m["wander"][wander].max()), list(names[wander]),
                          f"peak-to-peak mV below {THRESHOLDS['wander_cutoff_hz']:g} Hz within "
                          f"{THRESHOLDS['wander_window_s']:g} s"))
    noisy = live & (m["noise"] > THRESHOLDS["noise_sd_mv"])
    if noisy.any():
        flags.append(Flag("noise", float(m["noise"][noisy].max()), list(names[noisy]),
                          "robust SD mV of sample-to-sample steps / sqrt(2)"))
    lead_i, avr = LEADS.index("DI"), LEADS.index("AVR")
    corr = float(m["corr_i_v6"])
    inverted = corr < THRESHOLDS["reversal_corr_i_v6"]
    upright = m["dominant"][lead_i] < 0 < m["dominant"][avr] and corr < 0
    if live[lead_i] and live[avr] and not scale_off and (inverted or upright):
        flags.append(Flag("limb_lead_reversal", corr, ["DI", "AVR"],
                          "correlation of lead I with V6 (LA/RA swapped, or dextrocardia)"))
    if pad_samples / SAMPLING_RATE_HZ > THRESHOLDS["padded_min_s"]:
        flags.append(Flag("padded", pad_samples / SAMPLING_RATE_HZ, [],
                          f"{pad_samples} of {N_SAMPLES} samples are zeros"))
    return flags


def unpadded_span(x: np.ndarray) -> tuple[int, int]:
    """(start, stop) of a model input without the rows of exact zeros at either end (CODE files
    store shorter exams zero-padded to 4096 samples)."""
    nonzero = np.flatnonzero(np.any(x != 0, axis=1))
    if nonzero.size == 0:
        return 0, 0
    return int(nonzero[0]), int(nonzero[-1]) + 1

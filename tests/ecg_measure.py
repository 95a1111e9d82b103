"""Independent measurements on ECG signals, used to check the synthetic generator's labels."""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, find_peaks, sosfiltfilt

FS = 400


def spatial_velocity(x: np.ndarray, band: tuple[float, float] | None = None) -> np.ndarray:
    """Sum over leads of |dx/dt| (mV/s), optionally band-passed first: large during QRS complexes."""
    if band is not None:
        sos = butter(2, band, btype="bandpass", fs=FS, output="sos")
        x = sosfiltfilt(sos, x, axis=0)
    return np.abs(np.diff(x, axis=0)).sum(axis=1) * FS


def r_peaks(x: np.ndarray) -> np.ndarray:
    """QRS velocity peaks inside the recorded part (the zero padding's edges are steps, not beats)."""
    v = spatial_velocity(x, band=(5.0, 25.0))  # the QRS band: no wander, no mains hum
    recorded = np.flatnonzero(np.abs(x).sum(axis=1))
    lo, hi = recorded[0] + 4, recorded[-1] - 4
    peaks, _ = find_peaks(v[lo:hi], height=0.35 * np.percentile(v[lo:hi], 99.5), distance=int(0.22 * FS))
    return peaks + lo


def heart_rate_bpm(x: np.ndarray) -> float:
    return 60.0 / (np.diff(r_peaks(x)).mean() / FS)


def rr_cv(x: np.ndarray) -> float:
    rr = np.diff(r_peaks(x))
    return float(rr.std() / rr.mean())


def qrs_bounds(x: np.ndarray, peak: int, frac: float = 0.04) -> tuple[int, int]:
    """Onset and end of the QRS around a velocity peak: where velocity stays above `frac` of it."""
    v = spatial_velocity(x)
    level = frac * v[max(peak - 40, 0):peak + 40].max()
    on = peak
    while on > 0 and v[on - 1] > level:
        on -= 1
    end = peak
    while end < len(v) - 1 and v[end + 1] > level:
        end += 1
    return on, end


def qrs_width_ms(x: np.ndarray) -> float:
    """Median QRS duration of the inner beats of a noise-free ECG."""
    widths = [np.subtract(*qrs_bounds(x, p)[::-1]) for p in r_peaks(x)[1:-1]]
    return float(np.median(widths) / FS * 1000)


def pr_interval_ms(x: np.ndarray, lead: int = 1) -> float:
    """Median P onset -> QRS onset of a noise-free ECG (P onset at 10% of the P peak in lead II)."""
    out = []
    for p in r_peaks(x)[1:-1]:
        on, _ = qrs_bounds(x, p)
        if on < int(0.5 * FS):
            continue
        window = x[on - int(0.30 * FS):on - int(0.02 * FS), lead]
        p_peak = int(np.argmax(window)) + on - int(0.30 * FS)
        start = p_peak
        while x[start, lead] > 0.1 * x[p_peak, lead]:
            start -= 1
        out.append((on - start) / FS * 1000)
    return float(np.median(out))

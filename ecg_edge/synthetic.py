"""Labelled synthetic 12-lead ECGs, fast enough for demo-sized sets (thousands in seconds).

Each beat is a sum of Gaussian waves (P, Q, R, S, T and the bundle-branch waves), the shape used
by ECGSYN, placed on a simulated RR series. Limb leads III, aVR, aVL, aVF follow from I and II by
Einthoven's and Goldberger's relations; precordial amplitudes come from a table of typical values.
Classes follow their clinical definitions:

- SB: sinus rate < 50 bpm (35-48); ST: sinus rate > 100 bpm (105-150); normal sinus 60-95 bpm.
- AF: irregular RR (coefficient of variation 0.15-0.30), no P waves, 4-9 Hz fibrillatory waves.
- 1dAVb: PR > 200 ms (220-320 ms) in sinus rhythm; normal PR 130-190 ms.
- RBBB: QRS 125-160 ms, late R' in V1-V2, late broad S in I and V5-V6, inverted T in V1-V2.
- LBBB: QRS 130-170 ms, broad notched R in I, aVL, V5-V6 without Q, deep QS in V1-V2,
  discordant T waves.

Approximations: beat morphology is a Gaussian sum, not a physiological model; beat-to-beat
morphology does not vary; noise is white + baseline wander + mains hum. A model trained on these
learns rate, rhythm and QRS-width cues; it says nothing about accuracy on real ECGs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ecg_edge.spec import CLASSES, LEADS, N_SAMPLES, NORMAL_COLUMN, SAMPLING_RATE_HZ

DURATION_S = 10.0  # like CODE: 10 s at 400 Hz, centre-padded to 4096 samples
_N = int(DURATION_S * SAMPLING_RATE_HZ)

# Wave amplitudes (mV) in leads I and II; the other limb leads are derived.
_LIMB = {  # wave: (I, II)
    "P": (0.08, 0.15), "Q": (-0.05, -0.08), "R": (0.6, 1.0), "S": (-0.1, -0.15), "T": (0.2, 0.3),
}
_PRECORDIAL = {  # wave: V1..V6
    "P": (0.05, 0.08, 0.1, 0.1, 0.1, 0.08),
    "Q": (0.0, 0.0, 0.0, -0.05, -0.1, -0.1),
    "R": (0.2, 0.4, 0.7, 1.1, 1.2, 0.9),
    "S": (-0.9, -1.2, -0.8, -0.5, -0.25, -0.1),
    "T": (0.1, 0.3, 0.4, 0.4, 0.3, 0.2),
}


@dataclass
class EcgParams:
    """What one synthetic ECG is made of; its labels follow from these."""

    rhythm: str  # "sinus" or "af"
    rate_bpm: float
    pr_ms: float
    qrs_ms: float
    bbb: str  # "", "RBBB" or "LBBB"

    def labels(self) -> dict[str, int]:
        out = {
            "1dAVb": int(self.rhythm == "sinus" and self.pr_ms > 200),
            "RBBB": int(self.bbb == "RBBB"),
            "LBBB": int(self.bbb == "LBBB"),
            "SB": int(self.rhythm == "sinus" and self.rate_bpm < 50),
            "AF": int(self.rhythm == "af"),
            "ST": int(self.rhythm == "sinus" and self.rate_bpm > 100),
        }
        out[NORMAL_COLUMN] = int(not any(out.values()))
        return out


def sample_params(rng: np.random.Generator, p_abnormal: float = 0.6) -> EcgParams:
    """Draw one ECG's class combination. About 40% normal; findings may co-occur."""
    rhythm, rate = "sinus", rng.uniform(60, 95)
    pr, qrs, bbb = rng.uniform(130, 190), rng.uniform(80, 100), ""
    if rng.random() < p_abnormal:
        # One primary finding, and sometimes a second of another kind.
        drawn = rng.choice(["SB", "ST", "AF", "1dAVb", "RBBB", "LBBB"], size=1 + (rng.random() < 0.25), replace=False)
        kinds = set(drawn.tolist())
        if {"SB", "ST"} <= kinds or ({"SB", "ST"} & kinds and "AF" in kinds):
            kinds -= {"SB", "ST"}
        if {"RBBB", "LBBB"} <= kinds:
            kinds.discard("LBBB")
        if "AF" in kinds:
            rhythm, rate = "af", rng.uniform(70, 130)
            kinds.discard("1dAVb")  # PR is undefined without P waves
        if "SB" in kinds:
            rate = rng.uniform(35, 48)
        if "ST" in kinds:
            rate = rng.uniform(105, 150)
            kinds.discard("1dAVb")  # keeps P clear of the previous T wave
        if "1dAVb" in kinds:
            pr = rng.uniform(220, 320)
        if "RBBB" in kinds:
            bbb, qrs = "RBBB", rng.uniform(125, 160)
        if "LBBB" in kinds:
            bbb, qrs = "LBBB", rng.uniform(130, 170)
    return EcgParams(rhythm=rhythm, rate_bpm=float(rate), pr_ms=float(pr), qrs_ms=float(qrs), bbb=bbb)


def _limb_to_six(i: float, ii: float) -> np.ndarray:
    """Leads I, II, III, aVR, aVL, aVF from the amplitudes in I and II."""
    return np.array([i, ii, ii - i, -(i + ii) / 2, i - ii / 2, ii - i / 2])


def _waves(p: EcgParams, rng: np.random.Generator) -> list[tuple[float, float, np.ndarray]]:
    """The beat's waves as (offset from R in s, sigma in s, amplitude per lead (12,))."""
    qrs = p.qrs_ms / 1000

    def jitter() -> np.ndarray:  # per-lead amplitude spread between people
        return rng.uniform(0.75, 1.25, 12)

    def amp(wave: str) -> np.ndarray:
        i, ii = _LIMB[wave]
        return np.concatenate([_limb_to_six(i, ii), _PRECORDIAL[wave]])

    # QRS waves lie within R +/- qrs/2 at 2.5 sigma.
    waves = [
        (-0.25 * qrs, 0.1 * qrs, amp("Q") * jitter()),
        (0.0, 0.1 * qrs, amp("R") * jitter()),
        (0.25 * qrs, 0.1 * qrs, amp("S") * jitter()),
    ]
    qt = 0.40 * np.sqrt(60 / p.rate_bpm)  # Bazett: QT ~ 0.4 s * sqrt(RR)
    t_amp = amp("T") * jitter()
    if p.bbb == "RBBB":
        late_r = np.concatenate([_limb_to_six(0.0, 0.0), [0.8, 0.5, 0.1, 0.0, 0.0, 0.0]])
        late_s = np.concatenate([_limb_to_six(-0.3, -0.1), [0.0, 0.0, -0.1, -0.2, -0.3, -0.4]])
        waves += [(0.3 * qrs, 0.08 * qrs, late_r * jitter()), (0.3 * qrs, 0.08 * qrs, late_s * jitter())]
        t_amp[6:8] = -np.abs(t_amp[6:8])
    elif p.bbb == "LBBB":
        notch_early = np.concatenate([_limb_to_six(0.5, 0.4), [0.0, 0.0, 0.1, 0.4, 0.8, 0.9]])
        notch_late = np.concatenate([_limb_to_six(0.6, 0.5), [0.0, 0.0, 0.1, 0.5, 0.9, 1.0]])
        deep_qs = np.concatenate([_limb_to_six(0.0, 0.0), [-1.4, -1.8, -1.0, -0.2, 0.0, 0.0]])
        waves = [  # broad notched R left, deep QS right, no septal Q
            (-0.12 * qrs, 0.1 * qrs, notch_early * jitter()),
            (0.15 * qrs, 0.1 * qrs, notch_late * jitter()),
            (0.05 * qrs, 0.16 * qrs, deep_qs * jitter()),
        ]
        t_amp = -0.6 * np.concatenate([_limb_to_six(0.3, 0.2), [-0.4, -0.5, -0.3, 0.2, 0.4, 0.4]])
    waves.append((qt - 0.1, 0.045, t_amp))
    if p.rhythm == "sinus":
        # PR runs from P onset to QRS onset; P lasts ~90 ms (+/- 2.5 sigma).
        p_sigma = 0.09 / 5
        p_center = -qrs / 2 - p.pr_ms / 1000 + 2.5 * p_sigma
        waves.append((p_center, p_sigma, amp("P") * jitter()))
    return waves


def _r_peak_times(p: EcgParams, rng: np.random.Generator) -> np.ndarray:
    """R-peak times (s) over the recording, with a margin so that edge beats are whole."""
    mean_rr = 60.0 / p.rate_bpm
    cv = rng.uniform(0.15, 0.30) if p.rhythm == "af" else rng.uniform(0.005, 0.025)
    n = int(DURATION_S / mean_rr) + 6
    if p.rhythm == "af":
        rr = rng.gamma(1 / cv**2, mean_rr * cv**2, n)
    else:  # slow respiratory modulation plus a little noise
        phase = rng.uniform(0, 2 * np.pi)
        rr = mean_rr * (1 + cv * np.sin(2 * np.pi * 0.25 * np.arange(n) * mean_rr + phase)
                        + 0.3 * cv * rng.standard_normal(n))
    rr = np.clip(rr, 0.25, 2.5)
    return np.cumsum(rr) - rng.uniform(1.0, 2.0) * mean_rr


def synthesize_ecg(p: EcgParams, rng: np.random.Generator, noise: bool = True) -> np.ndarray:
    """One ECG (4096, 12) float32 in mV at 400 Hz: 10 s of signal centre-padded to 4096 samples."""
    t = np.arange(_N) / SAMPLING_RATE_HZ
    # Noise has its own stream, drawn either way: the clean and noisy ECG share every beat.
    noise_rng = np.random.default_rng(rng.integers(2**63))
    beats = _r_peak_times(p, rng)
    signal = np.zeros((_N, 12))
    for offset, sigma, amplitude in _waves(p, rng):
        centers = beats + offset
        centers = centers[(centers > -5 * sigma) & (centers < DURATION_S + 5 * sigma)]
        shape = np.exp(-0.5 * ((t[None, :] - centers[:, None]) / sigma) ** 2).sum(axis=0)
        signal += shape[:, None] * amplitude[None, :]
    if p.rhythm == "af":  # fibrillatory waves, strongest in V1 and the inferior leads
        f = rng.uniform(4, 9)
        fwave = rng.uniform(0.04, 0.12) * np.sin(2 * np.pi * f * t + 0.5 * np.sin(2 * np.pi * 0.3 * t))
        weights = np.concatenate([_limb_to_six(0.3, 0.8), [1.0, 0.7, 0.4, 0.3, 0.2, 0.2]])
        signal += fwave[:, None] * weights[None, :]
    if noise:
        wander = sum(
            noise_rng.uniform(0.02, 0.15)
            * np.sin(2 * np.pi * noise_rng.uniform(0.05, 0.5) * t + noise_rng.uniform(0, 2 * np.pi))
            for _ in range(2)
        )
        mains = noise_rng.uniform(0, 0.02) * np.sin(2 * np.pi * noise_rng.choice([50.0, 60.0]) * t)
        signal += (wander + mains)[:, None] * noise_rng.uniform(0.5, 1.5, 12)[None, :]
        signal += noise_rng.normal(0, noise_rng.uniform(0.005, 0.03), signal.shape)
    before = (N_SAMPLES - _N) // 2
    out = np.zeros((N_SAMPLES, 12), dtype=np.float32)
    out[before:before + _N] = signal
    return out


def iter_synthetic(
    n: int, seed: int = 0, chunk: int = 256, noise: bool = True
) -> Iterator[tuple[np.ndarray, list[EcgParams]]]:
    """`n` ECGs in chunks of (k, 4096, 12) float32 with their parameters; reproducible by seed."""
    rng = np.random.default_rng(seed)
    for start in range(0, n, chunk):
        # Each ECG draws its parameters then its signal: the set does not depend on `chunk`.
        params, signals = [], []
        for _ in range(min(chunk, n - start)):
            params.append(sample_params(rng))
            signals.append(synthesize_ecg(params[-1], rng, noise=noise))
        yield np.stack(signals), params


def synthesize(n: int, seed: int = 0, noise: bool = True) -> tuple[np.ndarray, list[EcgParams]]:
    """`n` ECGs (n, 4096, 12) float32 in memory with their parameters (same as the file for a seed)."""
    chunks = list(iter_synthetic(n, seed, noise=noise))
    if not chunks:
        return np.zeros((0, N_SAMPLES, len(LEADS)), np.float32), []
    return np.concatenate([x for x, _ in chunks]), [p for _, ps in chunks for p in ps]


def write_synthetic_set(
    out: str | Path, n: int, seed: int = 0, chunk: int = 256,
    progress: Callable[[int], None] | None = None,
) -> tuple[Path, Path]:
    """Write `n` synthetic ECGs as CODE-layout HDF5 (`tracings`, `exam_id`) plus a labels CSV.

    Written to temporary names and renamed at the end: an interrupted run leaves nothing behind.
    Returns (hdf5 path, csv path); the CSV sits beside the HDF5 with the same stem.
    """
    import csv

    import h5py

    out = Path(out)
    csv_path = out.with_suffix(".csv")
    tmp_h5, tmp_csv = out.with_name(out.name + ".part"), csv_path.with_name(csv_path.name + ".part")
    columns = ["exam_id", *CLASSES, NORMAL_COLUMN, "rhythm", "rate_bpm", "pr_ms", "qrs_ms"]
    try:
        with h5py.File(tmp_h5, "w") as f, open(tmp_csv, "w", newline="") as fc:
            tracings = f.create_dataset(
                "tracings", shape=(n, N_SAMPLES, len(LEADS)), dtype="float32",
                chunks=(min(max(n, 1), 16), N_SAMPLES, len(LEADS)),
            )
            exam_ids = f.create_dataset("exam_id", data=np.arange(1, n + 1, dtype=np.int64))
            f.attrs["source"] = "ecg-edge synthetic"
            f.attrs["seed"] = seed
            writer = csv.writer(fc)
            writer.writerow(columns)
            start = 0
            for block, params in iter_synthetic(n, seed, chunk):
                stop = start + len(params)
                tracings[start:stop] = block
                for exam_id, p in zip(exam_ids[start:stop], params, strict=True):
                    labels = p.labels()
                    writer.writerow([int(exam_id), *(labels[c] for c in (*CLASSES, NORMAL_COLUMN)),
                                     p.rhythm, f"{p.rate_bpm:.1f}", f"{p.pr_ms:.0f}", f"{p.qrs_ms:.0f}"])
                if progress:
                    progress(stop - start)
                start = stop
        tmp_h5.replace(out)
        tmp_csv.replace(csv_path)
    finally:
        tmp_h5.unlink(missing_ok=True)
        tmp_csv.unlink(missing_ok=True)
    return out, csv_path


def summarize_labels(csv_path: Path) -> Any:
    """A table of how many exams carry each label."""
    import csv

    from rich.table import Table

    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    table = Table(title=f"{csv_path.name}: {len(rows)} exams")
    table.add_column("label")
    table.add_column("exams", justify="right")
    table.add_column("share", justify="right")
    for name in (*CLASSES, NORMAL_COLUMN):
        count = sum(int(r[name]) for r in rows)
        table.add_row(name, str(count), f"{count / max(len(rows), 1):.1%}")
    return table

"""The one path from any recording to the model's input: (4096, 12) float32 millivolts at 400 Hz."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from ecg_edge.errors import InputError
from ecg_edge.recording import Recording
from ecg_edge.spec import LEAD_ALIASES, LEAD_PREFIXES, LEADS, N_SAMPLES, SAMPLING_RATE_HZ
from ecg_edge.untrusted import check_rate

# Changed whenever `prepare` gives other numbers for the same recording: caches of prepared exams
# (training/corpus.py) are keyed by it.
PREPARE_VERSION = 1

# Factor that takes a physical unit to millivolts, keyed by the unit in lower case (WFDB writes
# any case; GE MUSE spells units out; DICOM and EDF use UCUM-like symbols).
_TO_MILLIVOLTS = {
    "mv": 1.0, "millivolts": 1.0, "millivolt": 1.0,
    "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "microvolts": 1e-3, "microvolt": 1e-3,
    "v": 1e3, "volts": 1e3, "volt": 1e3,
    "nv": 1e-6,
}


def canonical_lead(name: str) -> str | None:
    """The model's name for a lead (e.g. 'aVr' -> 'AVR', 'Lead I' -> 'DI'); None if not a standard lead."""
    key = name.strip().upper().replace(" ", "").replace("-", "").replace("_", "")
    for prefix in LEAD_PREFIXES:
        if key.startswith(prefix) and key[len(prefix):] in LEAD_ALIASES:
            return LEAD_ALIASES[key[len(prefix):]]
    return LEAD_ALIASES.get(key)


def derive_limb_leads(columns: dict[str, np.ndarray]) -> None:
    """Fill in missing limb leads from any two of I, II, III (Einthoven: II = I + III), then
    aVR, aVL and aVF (Goldberger), in place."""
    if "DI" in columns and "DII" in columns:
        columns.setdefault("DIII", columns["DII"] - columns["DI"])
    elif "DI" in columns and "DIII" in columns:
        columns["DII"] = columns["DI"] + columns["DIII"]
    elif "DII" in columns and "DIII" in columns:
        columns["DI"] = columns["DII"] - columns["DIII"]
    else:
        return
    lead_i, lead_ii = columns["DI"], columns["DII"]
    columns.setdefault("AVR", -(lead_i + lead_ii) / 2)
    columns.setdefault("AVL", lead_i - lead_ii / 2)
    columns.setdefault("AVF", lead_ii - lead_i / 2)


def select_leads(signal: np.ndarray, names: tuple[str, ...], source: str | None = None) -> np.ndarray:
    """Columns in the model's lead order; missing limb leads derived from any two of I, II, III."""
    return _select_leads(signal, names, source)[0]


def _select_leads(
    signal: np.ndarray, names: tuple[str, ...], source: str | None,
) -> tuple[np.ndarray, list[str]]:
    """select_leads, and which of the 12 leads were derived rather than stored."""
    columns: dict[str, np.ndarray] = {}
    for i, name in enumerate(names):
        lead = canonical_lead(name)
        if lead is not None and lead not in columns:
            columns[lead] = signal[:, i]
    stored = set(columns)
    derive_limb_leads(columns)
    missing = [lead for lead in LEADS if lead not in columns]
    if missing:
        have = ", ".join(names) or "none"
        raise InputError(source, f"missing leads {', '.join(missing)} (has {have})")
    return np.stack([columns[lead] for lead in LEADS], axis=1), [lead for lead in LEADS if lead not in stored]


def to_millivolts(signal: np.ndarray, units: str | tuple[str, ...], source: str | None = None) -> np.ndarray:
    """Scale each column to millivolts from its physical unit (a signal in millivolts is returned as it is,
    in its own dtype)."""
    per_column = (units,) * signal.shape[1] if isinstance(units, str) else units
    factors = []
    for unit in per_column:
        factor = _TO_MILLIVOLTS.get(unit.strip().lower())
        if factor is None:
            raise InputError(source, f"unknown signal units {unit!r} (expected V, mV or uV)")
        factors.append(factor)
    if all(factor == 1.0 for factor in factors):
        return signal
    return signal * np.asarray(factors)


def resample_to_400hz(signal: np.ndarray, fs: float) -> np.ndarray:
    """Polyphase resampling (anti-aliased) from `fs` to 400 Hz along the time axis."""
    from scipy.signal import resample_poly

    ratio = Fraction(SAMPLING_RATE_HZ) / Fraction(fs).limit_denominator(1000)
    if ratio == 1:
        return signal
    return resample_poly(signal, ratio.numerator, ratio.denominator, axis=0)


def center_fit(signal: np.ndarray, n: int = N_SAMPLES) -> np.ndarray:
    """Centre-pad with zeros or centre-crop along time to exactly `n` samples."""
    length = signal.shape[0]
    if length >= n:
        start = (length - n) // 2
        return signal[start:start + n]
    before = (n - length) // 2
    return np.pad(signal, ((before, n - length - before), (0, 0)))


def check_finite(signal: np.ndarray, source: str | None) -> None:
    if not np.isfinite(signal).all():
        bad = int((~np.isfinite(signal)).sum())
        raise InputError(source, f"signal holds {bad} NaN or infinite values")


@dataclass
class Prepared:
    """A recording brought to the model's input, with what was done to it.

    `stored` holds the 12 leads in millivolts at the recording's own rate before resampling and
    padding (what a sheet draws, and where clipping shows); `signal` the same at 400 Hz before
    padding (what the quality measures read); `x` the model's input.
    """

    x: np.ndarray
    stored: np.ndarray
    fs: float
    signal: np.ndarray
    pad_samples: int
    provenance: dict[str, Any]


def fit_summary(length: int, n: int = N_SAMPLES) -> dict[str, int]:
    """What center_fit does to `length` samples: zeros added or samples cut, before and after."""
    if length >= n:
        start = (length - n) // 2
        return {"padded_before": 0, "padded_after": 0, "cropped_before": start, "cropped_after": length - n - start}
    before = (n - length) // 2
    return {"padded_before": before, "padded_after": n - length - before, "cropped_before": 0, "cropped_after": 0}


def _placed(length: int, padding: tuple[int, int], n: int = N_SAMPLES) -> dict[str, int]:
    """fit_summary's form for a recording that came with its zeros (before, after) already counted."""
    before, after = padding
    if before < 0 or after < 0 or before + length + after != n:
        raise ValueError(f"padding {padding} does not bring {length} samples to {n}")
    return {"padded_before": before, "padded_after": after, "cropped_before": 0, "cropped_after": 0}


def prepare(recording: Recording, scale: float = 1.0, padding: tuple[int, int] | None = None) -> Prepared:
    """Bring a recording to the model's input: (4096, 12) float32, millivolts, 400 Hz, model lead order.

    Leads are picked and ordered by name (aliases allowed; missing limb leads derived from any two
    of I, II, III), converted to millivolts, multiplied by `scale` (to correct a source's
    convention), checked for NaN/inf (the 12 leads only: other channels are ignored), resampled to
    400 Hz with `scipy.signal.resample_poly`, then centre-padded or centre-cropped. `padding`:
    (zeros before, zeros after) of a recording stored padded already (a CODE-layout exam, handed
    over without those zeros): they are put back where they were instead of centring.
    """
    source = recording.source or recording.id or None
    if recording.signal.shape[0] == 0 and padding is None:
        raise InputError(source, "recording has no samples")
    check_rate(source, recording.fs)  # readers check what files declare; this holds for any Recording
    # Only standard leads count: extra channels (e.g. Frank leads) may carry any unit, or NaN.
    keep = [i for i, name in enumerate(recording.leads) if canonical_lead(name)]
    units = recording.units
    if not isinstance(units, str):
        units = tuple(units[i] for i in keep)
    signal = to_millivolts(recording.signal[:, keep], units, source) * scale
    stored, derived = _select_leads(signal, tuple(recording.leads[i] for i in keep), source)
    check_finite(stored, source)
    resampled = resample_to_400hz(stored, recording.fs)
    fit = fit_summary(resampled.shape[0]) if padding is None else _placed(resampled.shape[0], padding)
    unpadded = resampled[fit["cropped_before"]:resampled.shape[0] - fit["cropped_after"]]
    ratio = Fraction(SAMPLING_RATE_HZ) / Fraction(recording.fs).limit_denominator(1000)
    provenance = {
        "source": str(recording.source or ""),
        "format": recording.format,
        "sampling_rate_hz": float(recording.fs),
        "units": units if isinstance(units, str) else sorted(set(units)),
        "duration_s": round(recording.signal.shape[0] / recording.fs, 4),
        "leads_stored": [lead for lead in LEADS if lead not in derived],
        "leads_derived": derived,
        "resampled": None if ratio == 1 else {
            "from_hz": float(recording.fs), "to_hz": SAMPLING_RATE_HZ,
            "up": ratio.numerator, "down": ratio.denominator, "method": "scipy.signal.resample_poly",
        },
        **fit,
        "scale": scale,
    }
    x = np.pad(unpadded, ((fit["padded_before"], fit["padded_after"]), (0, 0)))
    return Prepared(
        x=np.ascontiguousarray(x, dtype=np.float32), stored=stored, fs=float(recording.fs),
        signal=unpadded, pad_samples=fit["padded_before"] + fit["padded_after"], provenance=provenance,
    )


def to_model_input(recording: Recording, scale: float = 1.0) -> np.ndarray:
    """The model's input for a recording (see `prepare`)."""
    return prepare(recording, scale).x

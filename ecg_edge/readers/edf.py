"""EDF and EDF+ (continuous) files, through edfio: each signal's label, physical dimension and rate.

Signals whose labels name a standard lead (`ECG I`, `EKG V1`, `II` ...) are read; others
(respiration, annotations) are left. A recording longer than 10.24 s is read whole and the
preprocessing path keeps its middle 10.24 s.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ecg_edge import untrusted
from ecg_edge.errors import InputError
from ecg_edge.preprocess import canonical_lead
from ecg_edge.recording import Recording

MAGIC = b"0       "
# edfio repairs a file cut short with a warning; a cut recording is refused instead.
_TRUNCATION_WARNINGS = ("Incomplete data record", "header indicates")


def read_edf(path: Path) -> Recording:
    import edfio

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            edf = edfio.read_edf(path)
        cut = [str(w.message) for w in caught if any(t in str(w.message) for t in _TRUNCATION_WARNINGS)]
        if cut:
            raise InputError(path, f"EDF file is truncated ({cut[0]})")
        signals = [s for s in edf.signals if canonical_lead(s.label)]
        if not signals:
            labels = ", ".join(s.label for s in edf.signals) or "none"
            raise InputError(path, f"no ECG lead among the signals ({labels})")
        rates = sorted({untrusted.check_rate(path, s.sampling_frequency) for s in signals})
        if len(rates) > 1:
            raise InputError(path, f"ECG leads sampled at different rates ({', '.join(map(str, rates))} Hz)")
        samples = edf.num_data_records * max(s.samples_per_data_record for s in signals)
        untrusted.check_extent(path, samples, len(signals), rates[0])
        signal = np.stack([np.asarray(s.data, dtype=np.float64) for s in signals], axis=1)
    except InputError:
        raise
    except Exception as exc:  # edfio raises ValueError and others for damaged headers and records
        raise InputError(path, f"not a readable EDF file ({exc.__class__.__name__}: {exc})") from None
    return Recording(
        signal=signal, fs=rates[0], leads=tuple(s.label for s in signals),
        units=tuple(s.physical_dimension for s in signals), id=path.stem, source=str(path), format="edf",
    )

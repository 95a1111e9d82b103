"""Philips Sierra ECG XML 1.03/1.04 (`<restingecgdata>`), through the `sierraecg` library.

`sierraecg` undoes the XLI compression and rebuilds III, aVR, aVL and aVF from the stored
residuals; this reader adds the amplitude resolution (µV per unit) and the cart's statements.
Sierra files hold 11 s per lead: 10 s of ECG, then a second that carries the 1 mV calibration
pulse; the reader keeps the first 10 s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ecg_edge.errors import InputError
from ecg_edge.readers import safe_xml
from ecg_edge.recording import Recording

NS = {"p": "http://www3.medical.philips.com"}
ROOT = "{http://www3.medical.philips.com}restingecgdata"
ECG_SECONDS = 10.0


def _resolution_uv(root: Any, path: Path) -> float:
    signal = root.find("p:dataacquisition/p:signalcharacteristics", NS)
    text = None
    if signal is not None:
        # 1.03 names it signalresolution, 1.04 resolution.
        text = signal.findtext("p:signalresolution", None, NS) or signal.findtext("p:resolution", None, NS)
    try:
        value = float(text) if text is not None else float("nan")
    except ValueError:
        value = float("nan")
    if not np.isfinite(value) or value <= 0:
        raise InputError(path, f"no usable signal resolution (µV per unit) in signalcharacteristics: {text!r}")
    return value


def _statements(root: Any) -> tuple[str, ...]:
    interpretation = root.find("p:interpretations/p:interpretation", NS)
    if interpretation is None:
        return ()
    lines = []
    for statement in interpretation.findall("p:statement", NS):
        sides = ("leftstatement", "rightstatement")
        parts = [(statement.findtext(f"p:{side}", "", NS) or "").strip() for side in sides]
        line = " ".join(p for p in parts if p)
        if line:
            lines.append(line)
    return tuple(lines)


def read_sierra(path: Path) -> Recording:
    import sierraecg

    root = safe_xml.parse(path)
    resolution = _resolution_uv(root, path)
    try:
        ecg = sierraecg.read_file(str(path))
    except Exception as exc:  # the library raises its own errors, and IndexError/ValueError on damaged data
        raise InputError(path, f"unreadable Philips Sierra waveforms ({exc.__class__.__name__}: {exc})") from None
    if not ecg.leads:
        raise InputError(path, "no leads in parsedwaveforms")
    rates = {lead.sampling_freq for lead in ecg.leads}
    lengths = {len(lead.samples) for lead in ecg.leads}
    if len(rates) != 1 or len(lengths) != 1 or 0 in lengths:
        raise InputError(path, f"leads differ in rate or length, or are empty (rates {rates}, lengths {lengths})")
    fs = float(rates.pop())
    if fs <= 0:
        raise InputError(path, f"invalid sampling rate {fs}")
    keep = min(lengths.pop(), int(round(ECG_SECONDS * fs)))
    signal = np.stack([np.asarray(lead.samples[:keep], dtype=np.float64) for lead in ecg.leads], axis=1)
    return Recording(
        signal=signal * resolution, fs=fs, leads=tuple(lead.label for lead in ecg.leads), units="uV",
        id=path.stem, source=str(path), statements=_statements(root), format="philips-sierra",
    )

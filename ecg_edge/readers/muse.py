"""GE MUSE resting ECG XML (`<RestingECG>`): the Rhythm waveform, never the Median beat.

Each lead is base64 little-endian int16, times `LeadAmplitudeUnitsPerBit` in `LeadAmplitudeUnits`;
the rate is `SampleBase` x 10^`SampleExponent`. Carts store 8 leads (I, II, V1-V6): III, aVR, aVL
and aVF come from the preprocessing path. The cart's own statements are kept as text.
"""

from __future__ import annotations

import binascii
from base64 import b64decode
from pathlib import Path
from typing import Any

import numpy as np

from ecg_edge import untrusted
from ecg_edge.errors import InputError
from ecg_edge.readers import safe_xml
from ecg_edge.recording import Recording

ROOT = "RestingECG"


def _text(element: Any, tag: str, path: Path, where: str) -> str:
    value = element.findtext(tag)
    if value is None or not value.strip():
        raise InputError(path, f"{where} has no <{tag}>")
    return value.strip()


def _number(element: Any, tag: str, path: Path, where: str) -> float:
    return untrusted.number(path, _text(element, tag, path, where), f"{where}: <{tag}>")


def _rate(waveform: Any, path: Path) -> float:
    """`SampleBase` x 10^`SampleExponent`, checked by the policy (an exponent is a small whole number)."""
    base = _number(waveform, "SampleBase", path, "Rhythm waveform")
    text = (waveform.findtext("SampleExponent") or "").strip()
    exponent = untrusted.number(path, text, "Rhythm waveform: <SampleExponent>") if text else 0.0
    if exponent != int(exponent) or abs(exponent) > 6:
        raise InputError(path, f"Rhythm waveform: <SampleExponent> {text!r} is not a whole number from -6 to 6")
    return untrusted.check_rate(path, base * 10.0 ** int(exponent))


def _statements(root: Any) -> tuple[str, ...]:
    """Lines of the cart's diagnosis; a statement flagged ENDSLINE closes its line."""
    diagnosis = root.find("Diagnosis")
    if diagnosis is None:
        return ()
    lines: list[str] = []
    current = ""
    for statement in diagnosis.iter("DiagnosisStatement"):
        text = (statement.findtext("StmtText") or "").strip()
        current = f"{current} {text}".strip() if not text.startswith(",") else current + text
        if "ENDSLINE" in {(flag.text or "").strip() for flag in statement.iter("StmtFlag")}:
            lines.append(current)
            current = ""
    if current:
        lines.append(current)
    return tuple(line for line in lines if line)


def read_muse(path: Path) -> Recording:
    root = safe_xml.parse(path)
    waveforms = root.findall("Waveform")
    rhythm = [w for w in waveforms if (w.findtext("WaveformType") or "").strip().lower() == "rhythm"]
    if not rhythm:
        kinds = list(dict.fromkeys((w.findtext("WaveformType") or "?").strip() for w in waveforms))
        raise InputError(path, f"no Rhythm waveform (waveforms: {', '.join(kinds[:5]) or 'none'})")
    waveform = rhythm[0]
    fs = _rate(waveform, path)
    untrusted.check_channels(path, len(waveform.findall("LeadData")))
    leads: list[str] = []
    columns: list[np.ndarray] = []
    units: list[str] = []
    for lead in waveform.findall("LeadData"):
        name = _text(lead, "LeadID", path, "LeadData")
        where = f"lead {name}"
        try:
            raw = b64decode("".join(_text(lead, "WaveFormData", path, where).split()), validate=True)
        except (binascii.Error, ValueError):
            raise InputError(path, f"{where}: <WaveFormData> is not valid base64") from None
        if len(raw) % 2:
            raise InputError(path, f"{where}: odd number of bytes for 16-bit samples")
        samples = np.frombuffer(raw, dtype="<i2")
        expected = lead.findtext("LeadSampleCountTotal")
        if expected and expected.strip().isdigit() and int(expected) != samples.size:
            raise InputError(path, f"{where}: {samples.size} samples, the file says {int(expected)} (truncated?)")
        untrusted.check_extent(path, samples.size, len(columns) + 1, fs)
        columns.append(samples * _number(lead, "LeadAmplitudeUnitsPerBit", path, where))
        units.append(_text(lead, "LeadAmplitudeUnits", path, where))
        leads.append(name)
    if not columns:
        raise InputError(path, "Rhythm waveform holds no LeadData")
    length = min(c.size for c in columns)
    if length == 0 or max(c.size for c in columns) != length:
        raise InputError(path, f"leads differ in length ({sorted({c.size for c in columns})})")
    return Recording(
        signal=np.stack(columns, axis=1), fs=fs, leads=tuple(leads), units=tuple(units),
        id=path.stem, source=str(path),
        statements=_statements(root), format="ge-muse",
    )

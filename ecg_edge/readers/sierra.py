"""Philips Sierra ECG XML 1.03/1.04 (`<restingecgdata>`), through the `sierraecg` library.

`sierraecg` undoes the XLI compression and rebuilds III, aVR, aVL and aVF from the stored
residuals; this reader adds the amplitude resolution (µV per unit) and the cart's statements.
Sierra files hold 11 s per lead: 10 s of ECG, then a second that carries the 1 mV calibration
pulse; the reader keeps the first 10 s.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Any

import numpy as np

from ecg_edge import untrusted
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


def _check_declared(root: Any, path: Path) -> None:
    """Rate, duration and leads as the file declares them, and what its XLI (LZW) data decode to, by the
    untrusted-input policy, before `sierraecg` decodes them whole."""
    from sierraecg.lzw import LzwDecoder

    fs = untrusted.check_rate(path, root.findtext("p:dataacquisition/p:signalcharacteristics/p:samplingrate",
                                                  None, NS))
    waveforms = root.find("p:waveforms/p:parsedwaveforms", NS)
    if waveforms is None:
        raise InputError(path, "no parsedwaveforms")
    seconds = untrusted.number(path, waveforms.get("durationperchannel"), "durationperchannel (ms)") / 1000
    samples = seconds * fs
    leads = waveforms.get("numberofleads") or root.findtext(
        "p:dataacquisition/p:signalcharacteristics/p:numberchannelsallocated", "12", NS)
    untrusted.check_extent(path, samples, int(untrusted.number(path, leads, "numberofleads")), fs)
    if (waveforms.get("compressmethod") or waveforms.get("compression")) != "XLI":
        return
    try:
        data = base64.b64decode(waveforms.text or "")
    except (binascii.Error, ValueError):
        raise InputError(path, "parsedwaveforms is not valid base64") from None
    budget = 2 * int(samples) + 2  # 16-bit samples, per lead
    offset = chunks = 0
    while offset < len(data):
        size = int.from_bytes(data[offset:offset + 4], "little", signed=True)
        chunk = data[offset + 8:offset + 8 + max(size, 0)]
        offset += 8 + max(size, 0)
        chunks += 1
        untrusted.check_channels(path, chunks)
        decoder, decoded = LzwDecoder(chunk, bits=10), 0
        try:
            while decoder.read() != -1:
                decoded += 1
                if decoded > budget:
                    raise InputError(path, f"lead {chunks}'s XLI data decode to more than the {int(samples):,} "
                                           "samples the file declares")
        except (IndexError, KeyError, ValueError) as exc:  # the decoder's errors on damaged data
            if isinstance(exc, InputError):
                raise
            raise InputError(path, f"unreadable Philips Sierra waveforms ({exc.__class__.__name__}: {exc})") from None


def read_sierra(path: Path) -> Recording:
    import sierraecg

    root = safe_xml.parse(path)
    resolution = _resolution_uv(root, path)
    _check_declared(root, path)
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

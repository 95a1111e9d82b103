"""DICOM 12-lead ECG and General ECG waveform objects, through pydicom.

The rhythm multiplex group (labelled RHYTHM, or else the longest group that is not a median beat),
values from `waveform_array` (channel sensitivity, correction and baseline applied) in each
channel's sensitivity unit; lead names from each channel source's code meaning.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ecg_edge import untrusted
from ecg_edge.errors import InputError
from ecg_edge.recording import Recording

# 12-lead ECG, General ECG and Ambulatory ECG Waveform Storage.
ECG_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.9.1.1": "12-lead ECG",
    "1.2.840.10008.5.1.4.1.1.9.1.2": "General ECG",
    "1.2.840.10008.5.1.4.1.1.9.1.3": "Ambulatory ECG",
}
MAGIC_OFFSET = 128
MAGIC = b"DICM"


def _lead_name(channel: Any) -> str:
    """'Lead I (Einthoven)' -> 'I'; the preprocessing path maps the rest ('Lead aVR' -> aVR)."""
    try:
        meaning = str(channel.ChannelSourceSequence[0].CodeMeaning)
    except (AttributeError, IndexError):
        return ""
    return re.sub(r"\(.*?\)", "", meaning).strip()


def _samples(group: Any) -> int:
    try:
        return int(group.get("NumberOfWaveformSamples", 0) or 0)
    except (TypeError, ValueError):
        return 0


def _rhythm_group(ds: Any, path: Path) -> int:
    groups = list(ds.WaveformSequence)
    labels = [str(g.get("MultiplexGroupLabel", "")).strip().upper() for g in groups]
    for i, label in enumerate(labels):
        if label == "RHYTHM":
            return i
    candidates = [i for i, label in enumerate(labels) if "MEDIAN" not in label]
    if not candidates:
        raise InputError(path, f"only median-beat waveforms ({', '.join(labels[:5])}), no rhythm")
    return max(candidates, key=lambda i: _samples(groups[i]))


def _check_deflated(path: Path) -> None:
    """A deflated data set (transfer syntax ...1.2.1.99) is inflated by pydicom whole and at once: its
    inflated size is measured first, in bounded steps, and refused past the policy's bound."""
    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    meta = pydicom.filereader.read_file_meta_info(path)
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        return
    # preamble and "DICM", the group-length element (12 bytes), then the rest of the meta group
    start = MAGIC_OFFSET + len(MAGIC) + 12 + int(meta.FileMetaInformationGroupLength)
    inflate = zlib.decompressobj(-zlib.MAX_WBITS)
    inflated = 0
    with open(path, "rb") as f:
        f.seek(start)
        while not inflate.eof and (chunk := inflate.unconsumed_tail or f.read(2**16)):
            inflated += len(inflate.decompress(chunk, 2**20))
            untrusted.check_decoded(path, inflated, "deflated data set")


def _check_group(path: Path, group: Any) -> float:
    """The group's declared rate, channels and samples, by the policy, before its samples are decoded."""
    fs = untrusted.check_rate(path, group.get("SamplingFrequency"))
    channels = int(group.get("NumberOfWaveformChannels", 0) or 0)
    if not _samples(group) or not channels:
        raise InputError(path, "rhythm waveform group declares no NumberOfWaveformSamples or channels")
    untrusted.check_extent(path, _samples(group), channels, fs)
    return fs


def read_dicom(path: Path) -> Recording:
    import pydicom
    from pydicom.errors import InvalidDicomError

    if untrusted.check_regular(path).st_size > untrusted.MAX_DICOM_BYTES:
        raise InputError(path, f"DICOM file larger than {untrusted.MAX_DICOM_BYTES // 2**20} MiB")
    try:
        _check_deflated(path)
        ds = pydicom.dcmread(path)
    except InputError:
        raise
    except (InvalidDicomError, OSError, ValueError, EOFError, zlib.error) as exc:
        raise InputError(path, f"not a readable DICOM file ({exc})") from None
    sop = str(ds.get("SOPClassUID", ""))
    if sop not in ECG_SOP_CLASSES:
        raise InputError(path, f"DICOM object is not an ECG waveform (SOP class {sop or 'missing'})")
    if "WaveformSequence" not in ds or not len(ds.WaveformSequence):
        raise InputError(path, "DICOM ECG object without a waveform")
    try:
        index = _rhythm_group(ds, path)
        group = ds.WaveformSequence[index]
        fs = _check_group(path, group)
        signal = np.asarray(ds.waveform_array(index), dtype=np.float64)
        channels = list(group.ChannelDefinitionSequence)
        units = tuple(str(c.ChannelSensitivityUnitsSequence[0].CodeValue) for c in channels)
    except InputError:
        raise
    except Exception as exc:  # pydicom raises several types for inconsistent waveform modules
        raise InputError(path, f"unreadable rhythm waveform group ({exc.__class__.__name__}: {exc})") from None
    if signal.ndim != 2 or signal.shape[1] != len(channels) or signal.shape[0] == 0:
        raise InputError(path, f"waveform of shape {signal.shape} for {len(channels)} channels")
    return Recording(
        signal=signal, fs=fs, leads=tuple(_lead_name(c) for c in channels), units=units,
        id=path.stem, source=str(path), format="dicom",
    )

"""HL7 v3 annotated ECG (`AnnotatedECG`, urn:hl7-org:v3), as FDA submissions carry them.

The rhythm series (`series` coded RHYTHM, directly under the document), not the representative
beats of its `derivation/derivedSeries`. Each lead is a `sequence` coded `MDC_ECG_LEAD_*` whose
SLIST_PQ value is origin + scale x `<digits>`, in the scale's unit; the time sequence's
`<increment>` gives the sampling interval.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ecg_edge import untrusted
from ecg_edge.errors import InputError
from ecg_edge.readers import safe_xml
from ecg_edge.recording import Recording

NS = {"v3": "urn:hl7-org:v3"}
ROOT = "{urn:hl7-org:v3}AnnotatedECG"
_SECONDS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
LEAD_CODE_PREFIX = "MDC_ECG_LEAD_"


def _code(element: Any) -> str:
    code = element.find("v3:code", NS)
    return "" if code is None else code.get("code", "")


def _quantity(value: Any, tag: str, path: Path, where: str) -> tuple[float, str]:
    element = value.find(f"v3:{tag}", NS)
    if element is None or element.get("value") is None:
        raise InputError(path, f"{where} has no <{tag}> value")
    return untrusted.number(path, element.get("value"), f"{where}: <{tag}> value"), element.get("unit", "")


def _rhythm_sequences(root: Any, path: Path) -> list[Any]:
    series = [s for s in root.findall("v3:component/v3:series", NS) if _code(s) == "RHYTHM"]
    if not series:
        derived = root.findall("v3:component/v3:series/v3:derivation/v3:derivedSeries", NS)
        found = "only derived (median beat) series" if derived else "no series"
        raise InputError(path, f"no RHYTHM series ({found})")
    return series[0].findall("v3:component/v3:sequenceSet/v3:component/v3:sequence", NS)


def read_aecg(path: Path) -> Recording:
    root = safe_xml.parse(path)
    fs = None
    leads, columns, units = [], [], []
    sequences = _rhythm_sequences(root, path)
    untrusted.check_channels(path, len(sequences) - 1)  # one is the time sequence
    for sequence in sequences:
        code = _code(sequence)
        value = sequence.find("v3:value", NS)
        if value is None:
            continue
        if code.startswith("TIME_"):
            step, unit = _quantity(value, "increment", path, "time sequence")
            if unit not in _SECONDS or step <= 0:
                raise InputError(path, f"sampling increment {step} {unit!r} is not a positive time in s or ms")
            seconds = step * _SECONDS[unit]
            fs = untrusted.check_rate(path, 1.0 / seconds)  # inf for a subnormal step: refused
        elif code.startswith(LEAD_CODE_PREFIX):
            where = f"lead {code}"
            origin, origin_unit = _quantity(value, "origin", path, where)
            scale, unit = _quantity(value, "scale", path, where)
            if origin_unit and origin_unit != unit:
                raise InputError(path, f"{where}: origin in {origin_unit!r} but scale in {unit!r}")
            try:
                digits = np.array((value.findtext("v3:digits", "", NS)).split(), dtype=np.float64)
            except ValueError:
                raise InputError(path, f"{where}: <digits> holds something other than numbers") from None
            columns.append(origin + scale * digits)
            units.append(unit)
            leads.append(code[len(LEAD_CODE_PREFIX):])
    if fs is None:
        raise InputError(path, "rhythm series has no time sequence with an <increment>")
    if not columns:
        raise InputError(path, "rhythm series holds no MDC_ECG_LEAD_* sequence")
    lengths = sorted({c.size for c in columns})
    untrusted.check_extent(path, lengths[-1], len(columns), fs)
    if lengths[0] == 0 or len(lengths) > 1:
        raise InputError(path, f"leads differ in length or are empty ({lengths})")
    return Recording(
        signal=np.stack(columns, axis=1), fs=fs, leads=tuple(leads), units=tuple(units),
        id=path.stem, source=str(path), format="hl7-aecg",
    )

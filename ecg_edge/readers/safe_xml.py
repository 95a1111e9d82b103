"""XML from outside is untrusted: parsed by defusedxml (no entities, no external references), size-capped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ecg_edge.errors import InputError

# A resting ECG in XML is well under 10 MB (an HL7 aECG of 12 leads x 10 s is about 0.5 MB).
MAX_XML_BYTES = 64 * 2**20


def _checked_size(path: Path) -> None:
    size = path.stat().st_size
    if size == 0:
        raise InputError(path, "file is empty")
    if size > MAX_XML_BYTES:
        raise InputError(path, f"XML file of {size / 2**20:.0f} MiB is larger than the {MAX_XML_BYTES // 2**20} MiB "
                               "an ECG needs")


def _refusal(path: Path, exc: Exception) -> InputError:
    from defusedxml import DefusedXmlException

    if isinstance(exc, DefusedXmlException):
        return InputError(path, f"XML refused: it declares entities or external references ({exc})")
    return InputError(path, f"not well-formed XML ({exc})")


def root_tag(path: Path) -> str:
    """The root element's name ('{namespace}local'), read without parsing the rest of the file."""
    import defusedxml.ElementTree as ET

    _checked_size(path)
    try:
        for _, element in ET.iterparse(str(path), events=("start",), forbid_dtd=False,
                                       forbid_entities=True, forbid_external=True):
            return str(element.tag)
    except Exception as exc:  # expat's ParseError or defusedxml's refusals
        raise _refusal(path, exc) from None
    raise InputError(path, "XML without a root element")


def parse(path: Path) -> Any:
    """The root element of a whole, safely parsed file."""
    import defusedxml.ElementTree as ET

    _checked_size(path)
    try:
        return ET.parse(str(path), forbid_dtd=False, forbid_entities=True, forbid_external=True).getroot()
    except Exception as exc:  # expat's ParseError or defusedxml's refusals
        raise _refusal(path, exc) from None


def local_name(tag: str) -> str:
    return tag.rpartition("}")[2]

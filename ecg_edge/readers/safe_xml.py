"""XML from outside is untrusted: parsed by defusedxml (no entities, no external references), its size and
element count capped (`ecg_edge.untrusted`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ecg_edge import untrusted
from ecg_edge.errors import InputError


def _checked_size(path: Path) -> None:
    size = untrusted.check_regular(path).st_size
    if size == 0:
        raise InputError(path, "file is empty")
    if size > untrusted.MAX_XML_BYTES:
        raise InputError(path, f"XML file of {size / 2**20:.0f} MiB is larger than the "
                               f"{untrusted.MAX_XML_BYTES // 2**20} MiB an ECG needs")


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
    """The root element of a whole, safely parsed file of at most MAX_XML_ELEMENTS elements."""
    import defusedxml.ElementTree as ET

    _checked_size(path)
    root = None
    try:
        events = ET.iterparse(str(path), events=("start",), forbid_dtd=False, forbid_entities=True,
                              forbid_external=True)
        for count, (_, element) in enumerate(events, 1):  # the whole tree is built as it goes
            root = element if root is None else root
            if count > untrusted.MAX_XML_ELEMENTS:
                raise InputError(path, f"XML of more than {untrusted.MAX_XML_ELEMENTS:,} elements: not an ECG")
    except InputError:
        raise
    except Exception as exc:  # expat's ParseError or defusedxml's refusals
        raise _refusal(path, exc) from None
    if root is None:
        raise InputError(path, "XML without a root element")
    return root


def local_name(tag: str) -> str:
    return tag.rpartition("}")[2]

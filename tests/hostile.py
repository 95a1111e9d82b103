"""Hostile files every reader and the server must refuse quickly, without reading more than they need."""

BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE RestingECG [\n <!ENTITY a "aaaaaaaaaa">\n'
    + "".join(f' <!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">\n' for i in range(9))
    + ']>\n<RestingECG>&j;</RestingECG>\n'
)
EXTERNAL_ENTITY = ('<?xml version="1.0"?>\n<!DOCTYPE RestingECG [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
                   "<RestingECG><Waveform>&x;</Waveform></RestingECG>\n")

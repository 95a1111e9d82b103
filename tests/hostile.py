"""Hostile files every reader and the server must refuse quickly, without reading more than they need.

`write_corpus` writes one file (or WFDB record) per attack into a folder, beside `secret.bin`, a file
outside any recording that holds MARKER: nothing read from a recording may ever carry it.
"""

from __future__ import annotations

import base64
import os
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE RestingECG [\n <!ENTITY a "aaaaaaaaaa">\n'
    + "".join(f' <!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">\n' for i in range(9))
    + ']>\n<RestingECG>&j;</RestingECG>\n'
)
EXTERNAL_ENTITY = ('<?xml version="1.0"?>\n<!DOCTYPE RestingECG [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
                   "<RestingECG><Waveform>&x;</Waveform></RestingECG>\n")

MARKER = b"MARKER-7f3a-outside-the-input"
SECRET = "secret.bin"
SHAPE = (4096, 12)


def _secret(folder: Path) -> Path:
    path = folder / SECRET
    if not path.exists():
        path.write_bytes(MARKER * (4096 * 12 * 4 // len(MARKER) + 1))
    return path


def _h5(path: Path, build: Callable) -> Path:
    import h5py

    with h5py.File(path, "w") as f:
        build(f)
    return path


def _code_file(path: Path) -> Path:
    return _h5(path, lambda f: f.create_dataset("tracings", data=np.zeros((1, *SHAPE), "f4")))


def hdf5_cases(folder: Path) -> dict[str, Path]:
    """HDF5 files that point outside themselves, load plugins, or declare more than they hold."""
    import h5py

    secret = _secret(folder)
    target = _code_file(folder / "target.h5.other")  # another file, not an input (no HDF5 suffix)

    def external(f):
        f.create_dataset("tracings", shape=(1, *SHAPE), dtype="f4", external=[(str(secret), 0, 4096 * 12 * 4)])

    def virtual(f):
        layout = h5py.VirtualLayout(shape=(1, *SHAPE), dtype="f4")
        layout[:] = h5py.VirtualSource(str(target), "tracings", shape=(1, *SHAPE))
        f.create_virtual_dataset("tracings", layout)

    def soft_self(f):
        f["tracings"] = h5py.SoftLink("/tracings")

    def soft_other(f):
        f.create_dataset("data", data=np.zeros((1, *SHAPE), "f4"))
        f["tracings"] = h5py.SoftLink("/data")

    def plugin(f):
        f.create_dataset("tracings", data=np.zeros((1, *SHAPE), "f4"), chunks=(1, *SHAPE), compression=32004,
                         allow_unknown_filter=True)

    def fill(f):
        f.create_dataset("tracings", shape=(1000, *SHAPE), dtype="f4", fillvalue=1.0)

    def many(f):
        f.create_dataset("tracings", shape=(10**8, *SHAPE), dtype="f4", chunks=(1, *SHAPE))

    def big_chunk(f):  # HDF5 decodes a chunk whole: one of 800 exams is 157 MB
        f.create_dataset("tracings", shape=(800, *SHAPE), dtype="f4", chunks=(800, *SHAPE), compression="gzip")

    def long_id(f):
        f.create_dataset("tracings", data=np.zeros((1, *SHAPE), "f4"))
        f.create_dataset("exam_id", data=["x" * 1_000_000], dtype=h5py.string_dtype())

    def record_id(f):
        f.create_dataset("tracings", data=np.zeros((1, *SHAPE), "f4"))
        f.create_dataset("exam_id", data=np.zeros(1, dtype=[("a", "i4"), ("b", "f4")]))

    def external_ids(f):
        f.create_dataset("tracings", data=np.zeros((1, *SHAPE), "f4"))
        f.create_dataset("exam_id", shape=(1,), dtype="S8", external=[(str(secret), 0, 8)])

    fifo = folder / "pipe.bin"
    os.mkfifo(fifo)

    def external_fifo(f):
        f.create_dataset("tracings", shape=(1, *SHAPE), dtype="f4", external=[(str(fifo), 0, 4096 * 12 * 4)])

    builders = {"external": external, "external-fifo": external_fifo, "virtual": virtual, "soft-self": soft_self,
                "soft-other": soft_other,
                "plugin": plugin, "fill": fill, "many": many, "big-chunk": big_chunk, "long-id": long_id,
                "record-id": record_id,
                "external-ids": external_ids,
                "external-link": lambda f: f.__setitem__("tracings", h5py.ExternalLink(str(target), "/tracings"))}
    cases = {f"hdf5 {name}": _h5(folder / f"{name}.h5", build) for name, build in builders.items()}
    os.mkfifo(folder / "fifo.h5")
    return {**cases, "hdf5 fifo": folder / "fifo.h5"}


def escape_id_file(path: Path) -> Path:
    """A valid file whose exam id carries terminal escapes and a newline: read, but never printed raw."""
    import h5py

    def build(f):
        f.create_dataset("tracings", data=np.zeros((1, *SHAPE), "f4"))
        f.create_dataset("exam_id", data=["\x1b]0;pwned\x07\x1b[2Jid\nsecond line"], dtype=h5py.string_dtype())

    return _h5(path, build)


# Real files the hostile copies start from (../shared/data/formats, as tests/test_formats.py reads them).
FORMATS_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "formats"
MUSE = FORMATS_DIR / "ge-muse" / "muse-sinus.xml"
AECG = FORMATS_DIR / "hl7-aecg" / "example-aecg.xml"
SIERRA = FORMATS_DIR / "philips-sierra" / "129DYPRG.XML"
DICOM = FORMATS_DIR / "dicom" / "waveform_ecg.dcm"


def _wfdb(folder: Path, name: str, header: str, signal: bytes | None = b"\0" * 24 * 100) -> Path:
    """A WFDB record: `header` (its first line names the record) and, unless None, a signal file."""
    (folder / f"{name}.hea").write_text(header)
    if signal is not None:
        (folder / f"{name}.dat").write_bytes(signal)
    return folder / f"{name}.hea"


def _leads(file: str, fmt: str = "16", n: int = 12) -> str:
    names = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    return "".join(f"{file} {fmt} 1000/mV 16 0 0 0 0 {names[k % 12]}\n" for k in range(n))


def wfdb_cases(folder: Path) -> dict[str, Path]:
    """Records whose header lies about rate, frames, channels or length, or names files it should not."""
    _secret(folder.parent)
    os.mkfifo(folder / "fifo-sig.dat")
    cases = {
        "wfdb rate 1e9": _wfdb(folder, "rate", "rate 12 1000000000 100\n" + _leads("rate.dat")),
        "wfdb rate 1e-4": _wfdb(folder, "slow", "slow 12 0.0001 100\n" + _leads("slow.dat")),
        "wfdb frames 4e7": _wfdb(folder, "frames", "frames 12 500 100\n" + _leads("frames.dat", "16x40000000")),
        "wfdb length 1e12": _wfdb(folder, "length", "length 12 500 1000000000000\n" + _leads("length.dat")),
        "wfdb channels": _wfdb(folder, "channels", "channels 1000 500 1\n" + _leads("channels.dat", n=1000)),
        "wfdb fifo signal": _wfdb(folder, "fifosig", "fifosig 12 500 100\n" + _leads("fifo-sig.dat"), None),
        "wfdb outside": _wfdb(folder, "outside", "outside 12 500 100\n" + _leads(f"../{SECRET}"), None),
        "wfdb absolute": _wfdb(folder, "absolute", "absolute 12 500 100\n" + _leads(str(_secret(folder))), None),
        "wfdb dot": _wfdb(folder, "dot", "dot 12 500 100\n" + _leads("."), None),
        "wfdb tilde": _wfdb(folder, "tilde", "tilde 12 500 100\n" + _leads("~"), None),
        "wfdb missing signal": _wfdb(folder, "nosig", "nosig 12 500 100\n" + _leads("nosig.dat"), None),
    }
    (folder / "linked.dat").symlink_to(folder.parent / SECRET)  # a link in the folder that leads out of it
    cases["wfdb link out"] = _wfdb(folder, "linked", "linked 12 500 100\n" + _leads("linked.dat"), None)
    os.mkfifo(folder / "fifo.hea")
    cases["wfdb fifo header"] = folder / "fifo.hea"
    return cases


def _npy(path: Path, array: np.ndarray) -> Path:
    np.save(path, array)
    return path


def npy_cases(folder: Path) -> dict[str, tuple[Path, list[str]]]:
    """.npy arrays that are not signals or lie about their size, and rates no device samples at:
    (file, the options `infer` gets with it)."""
    options = ["--fs", "500", "--leads", "I,II"]
    huge = folder / "huge.npy"
    with open(huge, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (10**12, 2)})
        f.write(b"\0" * 64)
    signal = np.zeros((5000, 2))
    return {
        "npy complex": (_npy(folder / "complex.npy", signal.astype(complex)), options),
        "npy datetime": (_npy(folder / "dates.npy", np.zeros((5000, 2), "datetime64[s]")), options),
        "npy record": (_npy(folder / "record.npy", np.zeros((5000, 2), [("a", "f4"), ("b", "f4")])), options),
        "npy strings": (_npy(folder / "strings.npy", np.full((5000, 2), "1.0")), options),
        "npy header shape": (huge, options),
        "npy --fs 1e9": (_npy(folder / "fast.npy", signal), ["--fs", "1e9", "--leads", "I,II"]),
        "npy --fs 1e-4": (_npy(folder / "slow.npy", signal), ["--fs", "0.0001", "--leads", "I,II"]),
        "npy --fs 1e-3": (_npy(folder / "slower.npy", signal), ["--fs", "0.001", "--leads", "I,II"]),
        "npy --fs nan": (_npy(folder / "nan.npy", signal), ["--fs", "nan", "--leads", "I,II"]),
    }


def _edit(source: Path, path: Path, pattern: str, replacement: str, count: int = 1) -> Path:
    import re

    data = re.sub(pattern.encode(), replacement.encode(), source.read_bytes(), count=count, flags=re.S)
    assert data != source.read_bytes(), pattern
    path.write_bytes(data)
    return path


def xml_cases(folder: Path) -> dict[str, Path]:
    """GE MUSE, HL7 aECG and Philips Sierra files with rates and sizes no recording has."""
    rate = r"(<WaveformType>Rhythm</WaveformType>.*?<SampleBase>)500(</SampleBase>)"
    exponent = r"(<WaveformType>Rhythm</WaveformType>.*?<SampleBase>500</SampleBase>)"
    cases = {
        "muse base 1e-4": _edit(MUSE, folder / "muse-base.xml", rate, r"\g<1>0.0001\2"),
        **{f"muse exponent {e}": _edit(MUSE, folder / f"muse-exp{i}.xml", exponent,
                                       rf"\1<SampleExponent>{e}</SampleExponent>")
           for i, e in enumerate(["6", "-6", "400", "abc", "nan"])},
        "muse many waveforms": _edit(MUSE, folder / "muse-many.xml", r"<Waveform>\s*<WaveformType>Rhythm.*?</Waveform>",
                                     "<Waveform/>" * 200_000),
        "aecg increment 2e-9": _edit(AECG, folder / "aecg-fast.xml", r'<increment value="0.002" unit="s"',
                                     '<increment value="0.000000002" unit="s"'),
        "aecg increment 1e300": _edit(AECG, folder / "aecg-slow.xml", r'<increment value="0.002" unit="s"',
                                      '<increment value="1e300" unit="s"'),
        "sierra rate 1e9": _edit(SIERRA, folder / "sierra-rate.xml", r"<samplingrate>500",
                                 "<samplingrate>1000000000"),
        "sierra duration": _edit(SIERRA, folder / "sierra-long.xml", r'durationperchannel="11000"',
                                 'durationperchannel="11000000000"'),
    }
    cases["sierra lzw bomb"] = _edit(SIERRA, folder / "sierra-bomb.xml", r"(<parsedwaveforms[^>]*>)[^<]*",
                                     r"\1" + base64.b64encode(_xli_bomb()).decode())
    return cases


def _xli_bomb(leads: int = 12, codes: int = 3000) -> bytes:
    """XLI data (10-bit LZW, MSB first, as sierraecg decodes it) whose every lead decodes to ~1.9 MB of zero
    bytes: each code names the longest string so far."""
    sequence = [0, *range(256, 1023)]
    sequence += [1022] * (codes - len(sequence))
    bits = "".join(f"{code:010b}" for code in sequence)
    bits += "0" * (-len(bits) % 8)
    packed = int(bits, 2).to_bytes(len(bits) // 8, "big")
    chunk = len(packed).to_bytes(4, "little") + b"\0\0" + b"\0\0" + packed
    return chunk * leads


def dicom_cases(folder: Path) -> dict[str, Path]:
    """DICOM ECGs with rates no device has, no RHYTHM label or sample count, and a deflate bomb."""
    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    def variant(name: str, change) -> Path:
        ds = pydicom.dcmread(DICOM)
        change(ds)
        ds.save_as(folder / name)
        return folder / name

    def unlabelled(ds):
        for group in ds.WaveformSequence:
            del group.MultiplexGroupLabel
            del group.NumberOfWaveformSamples

    cases = {
        "dicom rate 1e9": variant("fast.dcm", lambda ds: setattr(ds.WaveformSequence[0], "SamplingFrequency", 1e9)),
        "dicom rate 1e-4": variant("slow.dcm",
                                   lambda ds: setattr(ds.WaveformSequence[0], "SamplingFrequency", 0.0001)),
        "dicom unlabelled": variant("unlabelled.dcm", unlabelled),
    }
    deflated = variant("bomb.dcm", lambda ds: setattr(ds.file_meta, "TransferSyntaxUID",
                                                      DeflatedExplicitVRLittleEndian))
    meta = pydicom.filereader.read_file_meta_info(deflated)
    start = 132 + 12 + int(meta.FileMetaInformationGroupLength)
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = b"\0" * 2**20
    bomb = b"".join(squeeze.compress(zeros) for _ in range(160)) + squeeze.flush()  # 160 MiB of zeros
    deflated.write_bytes(deflated.read_bytes()[:start] + bomb)
    cases["dicom deflate bomb"] = deflated
    return cases


def edf_case(folder: Path) -> dict[str, Path]:
    """An EDF whose data records last a microsecond: 500 samples each make 500 MHz."""
    import edfio

    path = folder / "fast.edf"
    signals = [edfio.EdfSignal(np.zeros(5000), 500, label=f"ECG {name}", physical_dimension="uV",
                               physical_range=(-10000, 10000)) for name in ("I", "II", "V1")]
    edfio.Edf(signals).write(path)
    data = bytearray(path.read_bytes())
    data[244:252] = b"0.000001"  # duration of a data record, in seconds
    path.write_bytes(bytes(data))
    return {"edf record 1e-6 s": path}


def write_corpus(folder: Path) -> dict[str, tuple[Path, list[str]]]:
    """Every case: name -> (the file to give `infer`, the options it needs)."""
    files = {**hdf5_cases(folder), **wfdb_cases(folder), **edf_case(folder)}
    if FORMATS_DIR.exists():
        files.update(xml_cases(folder))
        files.update(dicom_cases(folder))
    return {**{name: (path, []) for name, path in files.items()}, **npy_cases(folder)}

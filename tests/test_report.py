"""The 12-lead sheet's geometry in its own units, sheets of real records, the index in a real browser."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_WFDB, needs_shared, wfdb_records
from test_infer import run_cli, tiny_export

from ecg_edge import read_recording
from ecg_edge.measure import INSTALL_HINT, Measurements, available
from ecg_edge.preprocess import prepare
from ecg_edge.sheet import (
    COLOURS,
    GRID_H,
    GRID_W,
    GRID_X,
    GRID_Y,
    PNG_DPI,
    TRACE_X,
    SheetInfo,
    sheet_png,
    sheet_svg,
)
from ecg_edge.spec import LEADS

SVG = "{http://www.w3.org/2000/svg}"


def _elements(svg: str) -> dict[str, ET.Element]:
    root = ET.fromstring(svg)
    return {e.get("id"): e for e in root.iter() if e.get("id")}


def _points(element: ET.Element) -> np.ndarray:
    return np.array([[float(v) for v in p.split(",")] for p in element.get("points").split()])


def _test_signal(fs: float = 500.0, seconds: float = 10.0) -> np.ndarray:
    """Each lead a 1 Hz sine of 1 mV amplitude (lead k shifted by k mV/10 so that leads differ)."""
    t = np.arange(int(fs * seconds)) / fs
    return np.stack([np.sin(2 * np.pi * t) + 0.1 * k for k in range(12)], axis=1)


def test_svg_geometry_in_millimetres():
    fs = 500.0
    svg = sheet_svg(_test_signal(fs), fs, SheetInfo("geometry"))
    root = ET.fromstring(svg)
    assert root.get("width") == "297mm" and root.get("viewBox") == "0 0 297 210"  # user unit = 1 mm
    found = _elements(svg)
    for name, step in (("grid-minor", 1.0), ("grid-major", 5.0)):
        numbers = [float(v) for v in re.findall(r"[-\d.]+", found[name].get("d"))]
        segments = np.array(numbers).reshape(-1, 4)
        xs = np.unique(segments[segments[:, 0] == segments[:, 2]][:, 0])  # vertical lines
        ys = np.unique(segments[segments[:, 1] == segments[:, 3]][:, 1])
        assert np.allclose(np.diff(xs), step) and np.allclose(np.diff(ys), step), name
        assert xs[0] == GRID_X and xs[-1] == pytest.approx(GRID_X + GRID_W)
        assert ys[0] == GRID_Y and ys[-1] == pytest.approx(GRID_Y + GRID_H)
    for row in range(4):
        pulse = _points(found[f"calibration-{row}"])
        assert np.ptp(pulse[:, 1]) == pytest.approx(10.0)  # 1 mV at 10 mm/mV
        assert pulse[4, 0] - pulse[1, 0] == pytest.approx(5.0)  # 0.2 s at 25 mm/s
    rhythm = _points(found["lead-DII-rhythm"])
    assert rhythm[-1, 0] - rhythm[0, 0] == pytest.approx((len(rhythm) - 1) / fs * 25, abs=0.01)  # 25 mm/s
    assert np.ptp(rhythm[:, 1]) == pytest.approx(20.0, abs=0.02)  # +-1 mV -> 20 mm
    per_second = rhythm[: int(10 * fs)].reshape(10, int(fs), 2)
    peaks = per_second[np.arange(10), per_second[:, :, 1].argmin(axis=1), 0]  # the sine's tops, 1 s apart
    assert np.allclose(np.diff(peaks), 25.0, atol=0.05)
    for col, lead in enumerate(("DI", "AVR", "V1", "V4")):
        strip = _points(found[f"lead-{lead}"])
        start = GRID_X + TRACE_X + col * 62.5  # columns of 2.5 s of consecutive time
        assert strip[0, 0] == pytest.approx(start, abs=0.01) and strip[-1, 0] < start + 62.5
        assert len(strip) == int(2.5 * fs)


def test_png_grid_spacing_in_pixels():
    image = sheet_png(_test_signal(), 500.0, SheetInfo("png"))
    px_per_mm = PNG_DPI / 25.4
    assert image.size == (round(297 * px_per_mm), round(210 * px_per_mm))
    pixels = np.asarray(image)
    row = pixels[int((GRID_Y + 2.5) * px_per_mm)]  # between grid rows, above the first traces
    major = np.array([int(COLOURS["major"][i:i + 2], 16) for i in (1, 3, 5)])
    columns = np.flatnonzero(np.abs(row.astype(int) - major).sum(axis=1) == 0)
    gaps = np.diff(columns)
    assert np.allclose(np.median(gaps[gaps > 2]), 5 * px_per_mm, atol=1.0)


@needs_shared
@pytest.mark.parametrize("name", ["HR06002", "s0010_re", "00001_lr"])
def test_sheet_of_a_real_record_is_drawn_and_named(name):
    rec = read_recording(SHARED_WFDB / f"{name}.hea")
    p = prepare(rec)
    svg = sheet_svg(p.stored, p.fs, SheetInfo(rec.id, rec.source, rec.format, p.provenance["duration_s"]))
    assert f"Exam {name}" in svg
    strips = {k: _points(v) for k, v in _elements(svg).items() if k.startswith("lead-")}
    assert len(strips) == 13 and all(np.ptp(s[:, 1]) > 1.0 for s in strips.values())  # > 0.1 mV drawn
    rhythm = strips["lead-DII-rhythm"]
    assert rhythm[-1, 0] - rhythm[0, 0] == pytest.approx(250.0 - 25 / rec.fs, abs=0.01)  # 10 s (s0010_re: its centre)
    image = np.asarray(sheet_png(p.stored, p.fs, SheetInfo(rec.id)).convert("L"))
    assert (image < 80).mean() > 0.005  # traces and text are dark, the grid is light


@pytest.fixture(scope="module")
def browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no Chromium here: .ci/run installs Debian's chromium when it can (apt-get as root)")


def _dom(browser: str, url: str, tmp: Path) -> str:
    result = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp}", "--dump-dom", url],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@needs_shared
def test_report_cli_and_index_in_a_real_browser(tmp_path, browser):
    export = tiny_export(tmp_path / "tiny")
    out = tmp_path / "report"
    r = run_cli("report", str(SHARED_WFDB), "--model", str(export), "--out", str(out), "--threshold", "AF=0.5")
    assert r.exit_code == 0, r.output
    n = len(wfdb_records())
    for kind, suffix in (("sheets", ".svg"), ("sheets", ".png"), ("thumbs", ".png")):
        assert len(list((out / kind).glob(f"*{suffix}"))) == n
    index = (out / "index.html").read_text()
    assert "http://" not in index.replace('xmlns="http://www.w3.org', "") and "https://" not in index  # no CDN
    url = (out / "index.html").as_uri()
    dom = _dom(browser, url, tmp_path / "profile")
    rows = re.findall(r"<tr data-id=\"([^\"]+)\"[^>]*>", dom)
    assert len(rows) == n and f"{n} of {n} exams shown" in dom  # the script ran and counted
    with_af = sum('data-findings="' in row and "AF" in row.split('data-findings="')[1].split('"')[0]
                  for row in re.findall(r"<tr [^>]*>", index))
    filtered = _dom(browser, url + "#finding=AF&flag=*", tmp_path / "profile")
    assert f"{with_af} of {n} exams shown" in filtered
    visible = [row for row in re.findall(r"<tr [^>]*>", filtered) if " hidden" not in row]
    assert len(visible) == with_af
    shot = tmp_path / "index.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'p2'}",
                    f"--screenshot={shot}", "--window-size=1280,900", url],
                   capture_output=True, timeout=120, check=True)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (900, 1280) and pixels.std() > 20  # a page was drawn, not a blank one


@needs_shared
def test_infer_report_option_draws_the_same_sheets(tmp_path):
    export = tiny_export(tmp_path / "tiny")
    out = tmp_path / "r"
    r = run_cli("infer", str(SHARED_WFDB / "HR06000.hea"), str(SHARED_WFDB / "JS00001.hea"),
                "--model", str(export), "--report", str(out), "-o", str(tmp_path / "r.json"))
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (out / "sheets").iterdir()) == [
        "HR06000.png", "HR06000.svg", "JS00001.png", "JS00001.svg"]
    index = (out / "index.html").read_text()
    assert "JS00001" in index
    for name in ("HR06000.hea", "JS00001.hea"):  # every exam's source file, in a column of its own
        assert f'data-source="{html.escape(str(SHARED_WFDB / name))}"' in index
    svg = (out / "sheets" / "HR06000.svg").read_text()
    assert re.search(r"Heart rate \d+ bpm", svg) if available() else html.escape(INSTALL_HINT) in svg
    for exam in json.loads((tmp_path / "r.json").read_text())["exams"]:  # with sheets, PR and QT too
        assert "R peaks only" not in exam["measurements_note"]


def test_sheet_header_shows_rate_and_intervals_or_why_not():
    m = Measurements(72.4, 160, None, 400, 438, "QRS: not measured (no validated delineator)")
    svg = sheet_svg(_test_signal(), 500.0, SheetInfo("m", measurements=m))
    assert "Heart rate 72 bpm · PR 160 ms · QRS - · QT 400 ms · QTc 438 ms" in svg
    assert "Measurements: QRS: not measured" in svg
    plain = sheet_svg(_test_signal(), 500.0, SheetInfo("plain"))
    assert "Heart rate - · PR -" in plain and "Measurements: not measured" in plain
    texts = [float(t.get("y")) for t in ET.fromstring(svg).iter(f"{SVG}text") if t.text and "Measurements" in t.text]
    assert texts and texts[0] < GRID_Y  # above the grid


def test_report_folder_problems_exit_2_before_any_work(tmp_path):
    export = tiny_export(tmp_path / "tiny")
    x = np.zeros((1000, 12))
    np.save(tmp_path / "a.npy", x)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    for out, problem in ((tmp_path / "missing" / "r", "does not exist"), (a_file, "is a file")):
        r = run_cli("report", str(tmp_path / "a.npy"), "--fs", "500", "--leads", ",".join(LEADS),
                    "--model", str(export), "--out", str(out))
        assert r.exit_code == 2 and problem in r.output and "Traceback" not in r.output
    assert not (tmp_path / "missing").exists() and a_file.read_text() == "x"


def test_exam_ids_become_safe_unique_file_names():
    from ecg_edge.report import file_stem

    taken: set[str] = set()
    names = [file_stem(i, taken) for i in ("../../etc/passwd", "a b", "a_b", "A_B", "", "x" * 300)]
    assert names[0] == "etc_passwd" and names[1:4] == ["a_b", "a_b-2", "A_B-3"]
    assert names[4] == "exam" and len(names[5]) == 80
    assert all("/" not in n for n in names)

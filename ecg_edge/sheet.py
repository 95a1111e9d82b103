"""The 12-lead sheet, drawn: SVG in millimetres and PNG (`report.py` writes sheets and the index).

Layout, as on paper: 3 x 4 leads (I, II, III / aVR, aVL, aVF / V1-V3 / V4-V6), each column 2.5 s
of consecutive time, a 10 s lead II rhythm strip, 25 mm/s and 10 mm/mV on a millimetre grid with
5 mm major lines, and a 1 mV x 0.2 s calibration pulse at the start of each row. The SVG's user
unit is the millimetre, so its geometry can be checked in its own units.

Drawn here rather than with ecg_plot 0.3 or matplotlib: both draw this layout, but at 1.4 s
(ecg_plot's PNG through CairoSVG) and 1.9 s (matplotlib) per sheet, 1,000 exams would take half an
hour; writing the SVG as text and the PNG with Pillow takes a few tens of milliseconds.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import numpy as np

from ecg_edge.measure import NOT_MEASURED, Measurements
from ecg_edge.spec import DISCLAIMER, LEADS, describe_finding

SPEED_MM_S = 25.0
GAIN_MM_MV = 10.0
PAGE_MM = (297.0, 210.0)  # A4 landscape
GRID_X, GRID_Y = 13.0, 48.0  # top-left corner of the grid on the page
GRID_W, GRID_H = 270.0, 150.0  # whole 5 mm squares
ROW_H = GRID_H / 4
TRACE_X = 10.0  # traces start this far into the grid (after the calibration pulse)
COLUMN_S = 2.5
RHYTHM_S = 10.0
PNG_DPI = 150
LAYOUT: tuple[tuple[str, ...], ...] = (
    ("DI", "DII", "DIII"), ("AVR", "AVL", "AVF"), ("V1", "V2", "V3"), ("V4", "V5", "V6"),
)
LABELS = {"DI": "I", "DII": "II", "DIII": "III", "AVR": "aVR", "AVL": "aVL", "AVF": "aVF"}
COLOURS = {"minor": "#f4c7c3", "major": "#e08a80", "trace": "#101010", "text": "#202020", "alert": "#b00020"}


@dataclass
class SheetInfo:
    """What the header says of one exam."""

    exam_id: str
    source: str = ""
    fmt: str = ""
    duration_s: float = 0.0
    quality: list[dict[str, Any]] | None = None
    probabilities: dict[str, float] | None = None
    thresholds: dict[str, float] | None = None
    findings: list[str] | None = None
    model: str = ""
    measurements: Measurements = NOT_MEASURED


def window(trace: np.ndarray, fs: float) -> tuple[np.ndarray, float]:
    """The 10 s drawn: the centre of a longer recording (the part the model saw), all of a shorter one.
    Returns the samples and the time of the first one in the recording (s)."""
    n = int(round(RHYTHM_S * fs))
    if trace.shape[0] <= n:
        return trace, 0.0
    start = (trace.shape[0] - n) // 2
    return trace[start:start + n], start / fs


def _row_baseline(row: int) -> float:
    return GRID_Y + ROW_H * row + ROW_H / 2


def trace_paths(trace: np.ndarray, fs: float) -> list[tuple[str, np.ndarray]]:
    """(lead, points in page mm) for the 12 short strips and the rhythm strip, in drawing order."""
    out = []
    t = np.arange(trace.shape[0]) / fs
    for col, leads in enumerate(LAYOUT):
        part = (t >= col * COLUMN_S) & (t < (col + 1) * COLUMN_S)
        x = GRID_X + TRACE_X + t[part] * SPEED_MM_S
        for row, lead in enumerate(leads):
            y = _row_baseline(row) - trace[part, LEADS.index(lead)] * GAIN_MM_MV
            out.append((lead, np.column_stack([x, y])))
    x = GRID_X + TRACE_X + t * SPEED_MM_S
    out.append(("DII-rhythm", np.column_stack([x, _row_baseline(3) - trace[:, LEADS.index("DII")] * GAIN_MM_MV])))
    return out


def calibration_points(row: int) -> np.ndarray:
    """A 1 mV, 0.2 s pulse before the row's traces."""
    b, x0 = _row_baseline(row), GRID_X + 2.0
    width, height = 0.2 * SPEED_MM_S, 1.0 * GAIN_MM_MV
    right = x0 + width
    return np.array([[x0 - 1, b], [x0, b], [x0, b - height], [right, b - height], [right, b], [right + 1, b]])


def grid_lines(step: float) -> list[tuple[float, float, float, float]]:
    """(x1, y1, x2, y2) of the grid's lines every `step` mm."""
    xs = GRID_X + np.arange(0, GRID_W + 1e-9, step)
    ys = GRID_Y + np.arange(0, GRID_H + 1e-9, step)
    return ([(x, GRID_Y, x, GRID_Y + GRID_H) for x in xs] + [(GRID_X, y, GRID_X + GRID_W, y) for y in ys])


def _header_lines(info: SheetInfo, shown_from: float, shown_s: float) -> list[tuple[str, str, float]]:
    """(text, colour, size in mm) lines of the header."""
    flags = info.quality or []
    quality = "; ".join(f"{q['flag']} ({', '.join(LABELS.get(x, x) for x in q['leads'])})" if q["leads"]
                        else f"{q['flag']} ({q['value']:g} s)" if q["flag"] == "padded" else q["flag"]
                        for q in flags) or "no flags"
    lines = [
        (f"Exam {info.exam_id}", COLOURS["text"], 5.0),
        (f"{info.source} ({info.fmt or 'unknown format'}) · {info.duration_s:.2f} s recorded · "
         f"shown {shown_from:.2f}-{shown_from + shown_s:.2f} s · 25 mm/s · 10 mm/mV", COLOURS["text"], 3.0),
        (f"Signal quality: {quality}", COLOURS["alert"] if flags else COLOURS["text"], 3.0),
        (info.measurements.text(), COLOURS["text"], 3.0),
    ]
    if info.measurements.note:  # why a value is missing
        lines.append((f"Measurements: {info.measurements.note}", "#555555", 2.4))
    if info.probabilities is not None and info.thresholds is not None:
        found = set(info.findings or [])
        cells = []
        for name, p in info.probabilities.items():
            described = describe_finding(name)
            mark = "FOUND" if name in found else "not found"
            cells.append(f"{name} ({described['name']}): {p:.3f} vs {info.thresholds[name]:.3f} {mark}")
        for k in range(0, len(cells), 3):
            lines.append(("   ".join(cells[k:k + 3]), COLOURS["text"], 2.8))
        named = ", ".join(describe_finding(f)["name"] for f in info.findings or []) or "none"
        lines.append((f"Model findings: {named}", COLOURS["alert"] if info.findings else COLOURS["text"], 3.2))
    lines.append((f"{DISCLAIMER} {info.model}".strip(), "#555555", 2.4))
    return lines


def _fmt(values: np.ndarray) -> str:
    return ("%.2f,%.2f " * len(values) % tuple(values.ravel())).rstrip()


def sheet_svg(trace: np.ndarray, fs: float, info: SheetInfo) -> str:
    """The sheet as SVG text, in millimetres."""
    shown, shown_from = window(trace, fs)
    w, h = PAGE_MM
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w:g}mm" height="{h:g}mm" viewBox="0 0 {w:g} {h:g}">',
             f"<title>ECG exam {html.escape(info.exam_id)}</title>",
             f'<rect width="{w:g}" height="{h:g}" fill="white"/>']
    for name, step, width in (("grid-minor", 1.0, 0.08), ("grid-major", 5.0, 0.2)):
        d = "".join(f"M{x1:.2f} {y1:.2f}L{x2:.2f} {y2:.2f}" for x1, y1, x2, y2 in grid_lines(step))
        colour = COLOURS[name.split("-")[1]]
        parts.append(f'<path id="{name}" d="{d}" stroke="{colour}" stroke-width="{width}" fill="none"/>')
    parts.append(f'<clipPath id="grid-area"><rect x="{GRID_X}" y="{GRID_Y}" width="{GRID_W}" '
                 f'height="{GRID_H}"/></clipPath>')
    for row in range(4):
        parts.append(f'<polyline id="calibration-{row}" points="{_fmt(calibration_points(row))}" '
                     f'stroke="{COLOURS["trace"]}" stroke-width="0.25" fill="none"/>')
    for lead, points in trace_paths(shown, fs):
        parts.append(f'<polyline id="lead-{lead}" points="{_fmt(points)}" clip-path="url(#grid-area)" '
                     f'stroke="{COLOURS["trace"]}" stroke-width="0.22" fill="none" stroke-linejoin="round"/>')
    for col, leads in enumerate(LAYOUT):
        x = GRID_X + TRACE_X + col * COLUMN_S * SPEED_MM_S
        for row, lead in enumerate(leads):
            parts.append(_svg_text(x + 1, GRID_Y + ROW_H * row + 4, LABELS.get(lead, lead), COLOURS["text"], 3.2))
        if col:
            parts.append(f'<path d="M{x:.2f} {GRID_Y + 2:.2f}V{GRID_Y + 3 * ROW_H - 2:.2f}" '
                         f'stroke="{COLOURS["trace"]}" stroke-width="0.3" stroke-dasharray="1 2"/>')
    parts.append(_svg_text(GRID_X + TRACE_X + 1, GRID_Y + 3 * ROW_H + 4, "II", COLOURS["text"], 3.2))
    y = 9.0
    for text, colour, size in _header_lines(info, shown_from, shown.shape[0] / fs):
        y += size * 1.25
        parts.append(_svg_text(GRID_X, y, text, colour, size))
    parts.append("</svg>")
    return "\n".join(parts)


def _svg_text(x: float, y: float, text: str, colour: str, size: float) -> str:
    return (f'<text x="{x:.2f}" y="{y:.2f}" font-family="DejaVu Sans, Arial, sans-serif" font-size="{size:g}" '
            f'fill="{colour}">{html.escape(text)}</text>')


def sheet_png(trace: np.ndarray, fs: float, info: SheetInfo, dpi: int = PNG_DPI):  # -> PIL.Image.Image
    """The same sheet as an image."""
    from PIL import Image, ImageColor, ImageDraw

    shown, shown_from = window(trace, fs)
    k = dpi / 25.4  # pixels per mm
    size = (int(round(PAGE_MM[0] * k)), int(round(PAGE_MM[1] * k)))
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    for name, step, width in (("minor", 1.0, 1), ("major", 5.0, 1)):
        for x1, y1, x2, y2 in grid_lines(step):
            draw.line([(x1 * k, y1 * k), (x2 * k, y2 * k)], fill=COLOURS[name], width=width)
    line = max(1, int(round(0.22 * k)))
    for row in range(4):
        draw.line([tuple(p) for p in calibration_points(row) * k], fill=COLOURS["trace"], width=line)
    layer = Image.new("L", size, 0)  # the traces as a mask, pasted inside the grid only
    clip = ImageDraw.Draw(layer)
    for _, points in trace_paths(shown, fs):
        clip.line((points * k).ravel().tolist(), fill=255, width=line, joint="curve")
    box = tuple(int(round(v * k)) for v in (GRID_X, GRID_Y, GRID_X + GRID_W, GRID_Y + GRID_H))
    image.paste(ImageColor.getrgb(COLOURS["trace"])[:3], box[:2], layer.crop(box))  # type: ignore[arg-type]

    def font(mm: float):
        from PIL import ImageFont

        return ImageFont.load_default(size=max(8, int(round(mm * k))))

    for col, leads in enumerate(LAYOUT):
        x = GRID_X + TRACE_X + col * COLUMN_S * SPEED_MM_S
        for row, lead in enumerate(leads):
            draw.text(((x + 1) * k, (GRID_Y + ROW_H * row + 1) * k), LABELS.get(lead, lead),
                      fill=COLOURS["text"], font=font(3.2))
    draw.text(((GRID_X + TRACE_X + 1) * k, (GRID_Y + 3 * ROW_H + 1) * k), "II", fill=COLOURS["text"], font=font(3.2))
    y = 9.0
    for text, colour, mm in _header_lines(info, shown_from, shown.shape[0] / fs):
        y += mm * 1.25
        draw.text((GRID_X * k, (y - mm) * k), text, fill=colour, font=font(mm))
    return image

"""The 12-lead sheet (SVG in millimetres, PNG) and a browsable HTML index of a batch.

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
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ecg_edge.atomic_files import atomic_write
from ecg_edge.errors import InputError
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
THUMB_WIDTH_PX = 480
INDEX = "index.html"
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


def file_stem(exam_id: str, taken: set[str]) -> str:
    """A file name for an exam id: safe characters only, unique within a report."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", exam_id).strip("._")[:80] or "exam"
    candidate, k = stem, 1
    while candidate.lower() in taken:
        k += 1
        candidate = f"{stem}-{k}"
    taken.add(candidate.lower())
    return candidate


def sheet_paths(stem: str) -> dict[str, str]:
    """An exam's files, relative to the report folder (the index links them in this order)."""
    return {"svg": f"sheets/{stem}.svg", "png": f"sheets/{stem}.png", "thumb": f"thumbs/{stem}.png"}


def _put(path: Path, data: bytes) -> None:
    """Write beside, then rename: a reader never sees half a sheet. Not flushed to disk one by one
    (3,000 fsyncs for 1,000 exams); index.html, written last, is."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_bytes(data)
    tmp.replace(path)


def write_sheet(folder: Path, stem: str, trace: np.ndarray, fs: float, info: SheetInfo) -> dict[str, str]:
    """sheets/STEM.svg, sheets/STEM.png and thumbs/STEM.png under `folder`; their relative paths."""
    import io

    image = sheet_png(trace, fs, info)
    thumb = image.reduce(max(1, image.width // THUMB_WIDTH_PX))
    paths = sheet_paths(stem)
    _put(folder / paths["svg"], sheet_svg(trace, fs, info).encode())
    for key, picture in (("png", image), ("thumb", thumb)):
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG", compress_level=3)  # 3: a third of the default's time, 10% larger
        _put(folder / paths[key], buffer.getvalue())
    return paths


_INDEX_SCRIPT = """
const table = document.getElementById('exams');
const rows = Array.from(table.tBodies[0].rows);
const finding = document.getElementById('finding'), flag = document.getElementById('flag');
function apply() {
  let shown = 0;
  for (const r of rows) {
    const f = r.dataset.findings.split(' ').filter(Boolean), q = r.dataset.quality.split(' ').filter(Boolean);
    const okF = finding.value === '*' || (finding.value === '-' ? f.length === 0 : f.includes(finding.value));
    const okQ = flag.value === '*' || (flag.value === '-' ? q.length === 0 : q.includes(flag.value));
    r.hidden = !(okF && okQ);
    if (!r.hidden) shown++;
  }
  document.getElementById('count').textContent = shown + ' of ' + rows.length + ' exams shown';
  const h = new URLSearchParams({finding: finding.value, flag: flag.value});
  history.replaceState(null, '', '#' + h.toString());
}
function sortBy(th) {
  const key = th.dataset.key, numeric = th.dataset.numeric === '1';
  const dir = th.dataset.dir === 'asc' ? 'desc' : 'asc';
  for (const other of table.tHead.rows[0].cells) delete other.dataset.dir;
  th.dataset.dir = dir;
  rows.sort((a, b) => {
    let x = a.dataset[key], y = b.dataset[key];
    if (numeric) { x = parseFloat(x); y = parseFloat(y); }
    return (x < y ? -1 : x > y ? 1 : 0) * (dir === 'asc' ? 1 : -1);
  });
  for (const r of rows) table.tBodies[0].appendChild(r);
}
for (const th of table.tHead.rows[0].cells) if (th.dataset.key) th.addEventListener('click', () => sortBy(th));
const start = new URLSearchParams(location.hash.slice(1));
if (start.has('finding')) finding.value = start.get('finding');
if (start.has('flag')) flag.value = start.get('flag');
finding.addEventListener('change', apply); flag.addEventListener('change', apply);
apply();
"""

_INDEX_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #202020; }
table { border-collapse: collapse; } th, td { padding: 4px 8px; border-bottom: 1px solid #ddd; vertical-align: middle; }
th[data-key] { cursor: pointer; user-select: none; } th[data-dir=asc]::after { content: ' \\25B2'; }
th[data-dir=desc]::after { content: ' \\25BC'; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.hit { font-weight: bold; color: #b00020; }
.flag { background: #fde2e4; border-radius: 3px; padding: 1px 4px; margin-right: 3px; }
.finding { background: #b00020; color: white; border-radius: 3px; padding: 1px 4px; margin-right: 3px; }
img { width: 240px; display: block; } .note { color: #555; font-size: 90%; max-width: 22em; overflow-wrap: anywhere; }
"""


def check_report_dir(folder: Path) -> None:
    """Before any work: the report folder can be made (its parent exists) and is not a file."""
    if folder.exists() and not folder.is_dir():
        raise InputError(folder, "report folder is a file")
    if not folder.exists() and not folder.parent.is_dir():
        raise InputError(folder.parent, "folder does not exist (the report folder's parent)")


def write_index(folder: Path, rows: list[dict[str, Any]], classes: list[str], thresholds: dict[str, float],
                flags: tuple[str, ...], title: str = "ECG report") -> Path:
    """index.html: one row per exam (thumbnail linking to its sheet, id, probabilities, findings, flags),
    sortable by any column and filtered by finding and flag; no network access needed."""
    options_f = ['<option value="*">any or none</option>', '<option value="-">none</option>'] + [
        f'<option value="{html.escape(c)}">{html.escape(c)} ({html.escape(describe_finding(c)["name"])})</option>'
        for c in classes]
    options_q = ['<option value="*">any or none</option>', '<option value="-">none</option>'] + [
        f'<option value="{f}">{f}</option>' for f in flags]
    head = ['<th>sheet</th>', '<th data-key="id">exam</th>'] + [
        f'<th data-key="p{k}" data-numeric="1" title="{html.escape(describe_finding(c)["name"])}; threshold '
        f'{thresholds[c]:.3f}">{html.escape(c)}</th>' for k, c in enumerate(classes)] + [
        '<th data-key="nfindings" data-numeric="1">findings</th>',
        '<th data-key="nquality" data-numeric="1">quality</th>',
        '<th data-key="source">source</th>']
    body = []
    for r in rows:
        probs = r["probabilities"]
        data = {"id": r["exam_id"], "source": r["source"], "findings": " ".join(r["findings"]),
                "quality": " ".join(q["flag"] for q in r["quality"]), "nfindings": str(len(r["findings"])),
                "nquality": str(len(r["quality"])), **{f"p{k}": f"{probs[c]:.6f}" for k, c in enumerate(classes)}}
        attrs = " ".join(f'data-{k}="{html.escape(v)}"' for k, v in data.items())
        svg, png, thumb = (html.escape(r["paths"][k]) for k in ("svg", "png", "thumb"))
        name = html.escape(r["exam_id"])
        cells = [f'<td><a href="{svg}"><img loading="lazy" src="{thumb}" alt="sheet of exam {name}"></a></td>',
                 f'<td><a href="{svg}">{name}</a> <a class="note" href="{png}">png</a></td>']
        cells += [f'<td class="num{" hit" if c in r["findings"] else ""}">{probs[c]:.3f}</td>' for c in classes]
        badges = "".join(f'<span class="finding">{html.escape(f)}</span>' for f in r["findings"])
        cells.append(f"<td>{badges or '-'}</td>")
        cells.append("<td>" + ("".join(f'<span class="flag" title="{html.escape(q["detail"])}: {q["value"]}">'
                                       f'{html.escape(q["flag"])}</span>' for q in r["quality"]) or "-") + "</td>")
        cells.append(f'<td class="note">{html.escape(r["source"])}</td>')
        body.append(f'<tr {attrs}>{"".join(cells)}</tr>')
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_INDEX_STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="note">{html.escape(DISCLAIMER)} Click a column to sort; a thumbnail opens the sheet.</p>
<p><label>Finding <select id="finding">{''.join(options_f)}</select></label>
<label>Quality flag <select id="flag">{''.join(options_q)}</select></label> <span id="count"></span></p>
<table id="exams"><thead><tr>{''.join(head)}</tr></thead><tbody>
{chr(10).join(body)}
</tbody></table>
<script>{_INDEX_SCRIPT}</script>
</body></html>
"""
    path = folder / INDEX
    atomic_write(path, lambda f: f.write(page))
    return path


class ReportWriter:
    """Sheets for each batch as inference produces it (in worker processes: drawing is the slow
    part), then index.html. Use as `run_inference(..., on_batch=writer.add)`, then `writer.finish()`."""

    def __init__(self, folder: Path, workers: int | None = None) -> None:
        import multiprocessing
        import os
        from concurrent.futures import ProcessPoolExecutor

        self.folder = folder
        self.rows: list[dict[str, Any]] = []
        self.taken: set[str] = set()
        self.workers = workers or max(1, min(4, os.cpu_count() or 1))
        # spawn, not fork: the parent runs onnxruntime's and the reader's threads
        context = multiprocessing.get_context("spawn")
        self.pool = ProcessPoolExecutor(self.workers, mp_context=context) if self.workers > 1 else None
        self.pending: list[Any] = []
        self.classes: list[str] = []
        self.thresholds: dict[str, float] = {}

    def add(self, run: Any, batch: Any, probabilities: np.ndarray) -> None:
        self.classes, self.thresholds = run.classes, run.thresholds
        model = f"Model {run.model_sha256[:12]} ({run.precision}, {run.backend})" if run.model_sha256 else ""
        for exam, probs, found in zip(batch.exams, probabilities, run.findings(probabilities), strict=True):
            if exam.trace is None:
                raise ValueError("the sheets need traces: read with ReadOptions(keep_traces=True)")
            stem = file_stem(exam.id, self.taken)
            named = dict(zip(run.classes, (float(p) for p in probs), strict=True))
            info = SheetInfo(exam.id, exam.source, exam.provenance.get("format", ""),
                             exam.provenance.get("duration_s", exam.trace.shape[0] / exam.fs), exam.quality,
                             named, run.thresholds, [f for f in found if f in run.classes], model,
                             exam.measurements)
            paths = sheet_paths(stem)
            self.rows.append({"exam_id": exam.id, "source": exam.source, "probabilities": named,
                              "findings": info.findings, "quality": exam.quality, "paths": paths})
            if self.pool is None:
                write_sheet(self.folder, stem, exam.trace, exam.fs, info)
                continue
            self.pending.append(self.pool.submit(write_sheet, self.folder, stem, exam.trace, exam.fs, info))
            if len(self.pending) > 4 * self.workers:  # bounded: traces wait in memory until drawn
                self._collect(len(self.pending) // 2)

    def _collect(self, keep: int = 0) -> None:
        while len(self.pending) > keep:
            self.pending.pop(0).result()

    def finish(self, title: str = "ECG report") -> Path:
        from ecg_edge.quality import FLAGS

        self._collect()
        if self.pool is not None:
            self.pool.shutdown()
        return write_index(self.folder, self.rows, self.classes, self.thresholds, FLAGS, title)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

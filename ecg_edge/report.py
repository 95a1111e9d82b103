"""A report folder: each exam's sheet (drawn by `ecg_edge.sheet`) and a browsable HTML index of a batch.

Sheets are written as batches finish (`ReportWriter`, handed to `run_inference` as `on_batch`);
index.html comes last, written at once.
"""

from __future__ import annotations

import contextlib
import html
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ecg_edge import sheet
from ecg_edge.atomic_files import atomic_write
from ecg_edge.errors import InputError
from ecg_edge.sheet import SheetInfo, sheet_png, sheet_svg
from ecg_edge.spec import DISCLAIMER, describe_finding

THUMB_WIDTH_PX = 480
INDEX = "index.html"

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
        self.made = not folder.exists()
        folder.mkdir(exist_ok=True)
        self.finished = False
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
        index = write_index(self.folder, self.rows, self.classes, self.thresholds, FLAGS, title)
        self.finished = True
        return index

    def close(self) -> None:
        """Stop the drawing; a report never finished (the run failed) leaves none of its sheets behind."""
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
        if self.finished:
            return
        for row in self.rows:
            for relative in row["paths"].values():
                (self.folder / relative).unlink(missing_ok=True)
        for folder in (self.folder / "sheets", self.folder / "thumbs", *([self.folder] if self.made else [])):
            with contextlib.suppress(OSError):  # absent, or holding files this run did not write
                folder.rmdir()


# The drawing moved to ecg_edge.sheet: its names import from here for one release, with a warning.
_MOVED = ("SPEED_MM_S", "GAIN_MM_MV", "PAGE_MM", "GRID_X", "GRID_Y", "GRID_W", "GRID_H", "ROW_H", "TRACE_X",
          "COLUMN_S", "RHYTHM_S", "PNG_DPI", "LAYOUT", "LABELS", "COLOURS", "window", "trace_paths",
          "calibration_points", "grid_lines")
if not TYPE_CHECKING:
    from ecg_edge.deprecation import moved_names

    __getattr__ = moved_names(__name__, dict.fromkeys(_MOVED, sheet))

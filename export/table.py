"""The files of an export and how each did at its gate, as a table for the terminal."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def export_table(manifest: dict[str, Any], out: Path) -> Any:
    """The files of an export and how each did at its gate; fits 80 columns."""
    from rich import box
    from rich.table import Table

    table = Table(title=f"{out}: {manifest['model']['kind']} model, {len(manifest['files'])} files",
                  caption="exams same: share of gate exams whose findings did not change",
                  box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for column in ("file", "prec", "MB", "vs", "max |dp|", "exams same"):
        table.add_column(column, justify="left" if column in ("file", "prec", "vs") else "right", no_wrap=True)
    for name, entry in manifest["files"].items():
        parity = entry.get("parity", {})
        precision = entry["precision"] + (" sym" if entry["variant"] == "symmetric" else "")
        same = (f"{parity['exam_agreement']:.1%} of {parity['n_exams']}" if "exam_agreement" in parity
                else f"{parity['n_exams']} exams" if parity else "-")
        table.add_row(name, precision, f"{entry['bytes'] / 1e6:.1f}", parity.get("reference", "-"),
                      f"{parity['max_abs_diff']:.1e}" if parity else "-", same)
    return table

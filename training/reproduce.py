"""The paper's Table 2 (Ribeiro et al. 2020, DNN column) from the released network on the CODE test set."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ecg_edge.training.evaluate import PAPER_DNN_SCORES, evaluate, write_comparison
from ecg_edge.training.metrics import auprc

TABLE_METRICS = ("precision", "recall", "specificity", "f1")


def paper_seed(outputs: Sequence[np.ndarray], y: np.ndarray) -> int:
    """Which of the seeds' outputs the paper reports: ranked by micro-averaged average precision
    against the labels, the one just above the median (the 6th of ten in ascending order)."""
    precision = [auprc(y.ravel(), p.ravel()) for p in outputs]
    return int(np.argsort(precision, kind="stable")[len(outputs) // 2])


def comparison_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Per class and score: ours (95% interval), the paper's, and the difference."""
    rows = []
    for c, paper in PAPER_DNN_SCORES.items():
        ours = report["scores"][c]
        for m in TABLE_METRICS:
            rows.append({"class": c, "metric": m, "ours": ours[m], "ci95": ours["ci95"][m], "paper": paper[m],
                         "difference": ours[m] - paper[m]})
    return rows


def _cell(value: float) -> str:
    return "-" if value != value else f"{value:.3f}"


def reproduction_markdown(reports: Sequence[dict[str, Any]]) -> str:
    lines = ["# Ribeiro et al. 2020, Table 2 (DNN), reproduced", "",
             f"{reports[0]['n_exams']} exams; a finding is called where the probability is strictly above the "
             "reference threshold. Ours with its 95% bootstrap interval, the paper's value, and ours minus "
             "the paper's.",
             ""]
    for report in reports:
        lines += [f"## {report['precision']} ({report['backend']})", "",
                  "| class | " + " | ".join(TABLE_METRICS) + " |", "| --- |" + " --- |" * len(TABLE_METRICS)]
        by_class: dict[str, list[str]] = {}
        for row in comparison_rows(report):
            lo, hi = row["ci95"]
            by_class.setdefault(row["class"], []).append(
                f"{_cell(row['ours'])} ({_cell(lo)}-{_cell(hi)}) / {row['paper']:.3f} / {row['difference']:+.3f}")
        lines += [f"| {c} | " + " | ".join(cells) + " |" for c, cells in by_class.items()]
        lines.append("")
    return "\n".join(lines)


def reproduce(
    model: str | Path, tracings: str | Path, labels: str | Path, backend: str = "auto",
    precisions: Sequence[str] = ("fp32",), n_boot: int = 200,
) -> list[dict[str, Any]]:
    """One evaluation report per precision, each with its rows against the paper."""
    reports = []
    for precision in precisions:
        report = evaluate(model, [tracings], labels, backend=backend, precision=precision, n_boot=n_boot)
        report["paper_comparison"] = comparison_rows(report)
        reports.append(report)
    return reports


def write_reproduction(reports: Sequence[dict[str, Any]], out_dir: str | Path) -> Path:
    """report.md (the comparison, then each precision's full report), table2.json, JSON and curves."""
    from ecg_edge.atomic_files import atomic_write

    folder = write_comparison(reports, out_dir, head=reproduction_markdown(reports),
                                section="## Full report, {precision}:")
    table = [{"precision": r["precision"], "backend": r["backend"], "rows": r["paper_comparison"]} for r in reports]
    atomic_write(folder / "table2.json", lambda f: json.dump(table, f, indent=1))
    return folder / "report.md"

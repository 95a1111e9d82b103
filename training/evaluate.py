"""Per-class evaluation of any backend (Keras or an export folder), with a report and plots."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ecg_edge.atomic_files import atomic_target, atomic_write
from ecg_edge.errors import InputError
from ecg_edge.exams import ReadOptions
from ecg_edge.infer import run_inference
from ecg_edge.parity import compare
from ecg_edge.results import InferenceRun
from ecg_edge.spec import CLASSES, called
from ecg_edge.training.metrics import auprc, auroc, bootstrap_ci, pr_curve, roc_curve, threshold_metrics

# Ribeiro et al. 2020, Table 2: the DNN on the 827-exam CODE test set (the reference repository's
# outputs/tables/scores.csv).
PAPER_DNN_SCORES: dict[str, dict[str, float]] = {
    "1dAVb": {"precision": 0.867, "recall": 0.929, "specificity": 0.995, "f1": 0.897},
    "RBBB": {"precision": 0.895, "recall": 1.000, "specificity": 0.995, "f1": 0.944},
    "LBBB": {"precision": 1.000, "recall": 1.000, "specificity": 1.000, "f1": 1.000},
    "SB": {"precision": 0.833, "recall": 0.938, "specificity": 0.996, "f1": 0.882},
    "AF": {"precision": 1.000, "recall": 0.769, "specificity": 1.000, "f1": 0.870},
    "ST": {"precision": 0.947, "recall": 0.973, "specificity": 0.997, "f1": 0.960},
}
METRICS = ("precision", "recall", "specificity", "f1", "auroc", "auprc")


def score_classes(
    y: np.ndarray, p: np.ndarray, classes: Sequence[str], thresholds: dict[str, float], n_boot: int = 200,
) -> dict[str, dict[str, Any]]:
    """Per class: the metrics at the threshold and a 95% bootstrap interval for each."""
    out: dict[str, dict[str, Any]] = {}
    for k, c in enumerate(classes):
        yk, pk, t = y[:, k], p[:, k], thresholds[c]
        values: dict[str, Any] = {**threshold_metrics(yk, called(pk, t)), "auroc": auroc(yk, pk),
                                  "auprc": auprc(yk, pk)}
        ci = {}
        for name in METRICS:
            if name in ("auroc", "auprc"):
                fn = auroc if name == "auroc" else auprc
            else:
                def fn(a: np.ndarray, b: np.ndarray, name: str = name, t: float = t) -> float:
                    return threshold_metrics(a, called(b, t))[name]
            ci[name] = bootstrap_ci(fn, yk, pk, n=n_boot, seed=k)
        out[c] = {"threshold": t, "positives": int(yk.sum()), **values, "ci95": ci}
    return out


def labels_for(run: InferenceRun, labels_csv: str | Path | None, task: str,
               header_labels: dict[str, dict[str, int]]) -> np.ndarray:
    """Label matrix in the run's exam order, from a CSV or from WFDB `# Dx:` headers."""
    if labels_csv is not None:
        from ecg_edge.training.data import read_label_matrix
        from ecg_edge.training.labels import keyed_by_record, match_records, read_record_labels

        if keyed_by_record(labels_csv):
            by_record = read_record_labels(labels_csv, task)
            return np.stack([by_record[k] for k in match_records(run.sources, run.ids, by_record, labels_csv)])
        ids, matrix = read_label_matrix(labels_csv, task)
        if ids is None:  # rows in exam order
            if len(matrix) != len(run.ids):
                raise InputError(labels_csv, f"{len(matrix)} label rows without exam_id for {len(run.ids)} exams")
            return matrix
        table = dict(zip(ids, matrix, strict=True))
        missing = [i for i in run.ids if i not in table]
        if missing:
            raise InputError(labels_csv, f"no labels for {len(missing)} exams (first: {missing[0]})")
        return np.stack([table[i] for i in run.ids])
    if task != "six":
        raise InputError(None, "WFDB headers give the six classes only: pass a labels CSV for the binary task")
    missing = [i for i in run.ids if not header_labels.get(i)]
    if missing:
        raise InputError(None, f"no labels CSV and no '# Dx:' header for {missing[0]}")
    return np.array([[header_labels[i][c] for c in CLASSES] for i in run.ids], dtype=np.float32)


def evaluate(
    model: str | Path, data: Sequence[str | Path], labels_csv: str | Path | None = None,
    backend: str = "auto", precision: str = "fp32", n_boot: int = 200,
) -> dict[str, Any]:
    """Score a model (.keras/.hdf5 file, or an export folder through any backend) on labelled data."""
    from ecg_edge.backends import open_backend
    from ecg_edge.readers import expand_inputs, format_of
    from ecg_edge.readers.wfdb import read_wfdb_labels
    from ecg_edge.training.keras_backend import KerasBackend

    model = Path(model)
    if model.is_dir():
        runner, manifest = open_backend(model, backend, precision)
    else:
        reference = KerasBackend(model)
        reference.activate()  # loads the model once: its info, and the runs below
        info, runner = reference.info, reference
        manifest = {"output": {"classes": info["classes"]}, "thresholds": info["thresholds"], "files": {}}
    classes = list(manifest["output"]["classes"])
    task = "six" if classes == list(CLASSES) else "binary"
    header_labels: dict[str, dict[str, int]] = {}
    if labels_csv is None:
        for path in expand_inputs(data):
            if format_of(path) == "wfdb":
                name, labels = read_wfdb_labels(path)
                header_labels[name] = labels
    with runner:
        # scores need the probabilities alone: no heart rate measured for them
        run = run_inference(data, runner, manifest, batch=32, options=ReadOptions(measure="off"))
    y = labels_for(run, labels_csv, task, header_labels)
    return {
        "model": str(model), "backend": run.backend, "precision": run.precision, "n_exams": len(run.ids),
        "classes": classes, "thresholds": manifest["thresholds"],
        "scores": score_classes(y, run.probabilities, classes, manifest["thresholds"], n_boot),
        "_y": y, "_p": run.probabilities, "_ids": list(run.ids),
    }


def precision_agreement(reports: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each precision against FP32 (or the first one given) on the same exams: the share of exams
    whose findings did not change (95% Wilson interval), and per changed exam what appeared and
    what went away. Labels play no part: this is what a user checks on their own data."""
    reference = next((r for r in reports if r["precision"] == "fp32"), reports[0])
    classes = reference["classes"]
    thresholds = np.array([reference["thresholds"][c] for c in classes], dtype=np.float32)
    a = called(reference["_p"], thresholds)
    out = []
    for r in reports:
        if r is reference:
            continue
        parity = compare(reference["_p"], r["_p"], thresholds, reference["precision"], classes=classes)
        b = called(r["_p"], thresholds)
        changed = [{"exam_id": r["_ids"][i],
                    "gained": [c for k, c in enumerate(classes) if b[i, k] and not a[i, k]],
                    "lost": [c for k, c in enumerate(classes) if a[i, k] and not b[i, k]]}
                   for i in np.flatnonzero((a != b).any(axis=1))]
        out.append({"precision": r["precision"], "reference": reference["precision"], "parity": parity.as_dict(),
                    "changed": changed})
    return out


def agreement_markdown(agreements: Sequence[dict[str, Any]]) -> str:
    lines = ["## Findings against the reference precision", "",
             "| precision | vs | exams unchanged | 95% CI | max abs diff | flips per class |",
             "| --- | --- | --- | --- | --- | --- |"]
    for g in agreements:
        p = g["parity"]
        flips = ", ".join(f"{c} {n}" for c, n in p["flips"].items()) or "-"
        lines.append(f"| {g['precision']} | {g['reference']} | {p['exam_agreement']:.1%} "
                     f"({p['n_exams'] - p['exams_changed']}/{p['n_exams']}) | {p['exam_agreement_ci95'][0]:.1%}-"
                     f"{p['exam_agreement_ci95'][1]:.1%} | {p['max_abs_diff']:.2e} | {flips} |")
    for g in agreements:
        if g["changed"]:
            lines += ["", f"Exams whose findings changed in {g['precision']}:", ""]
            lines += [f"- {c['exam_id']}: " + "; ".join(filter(None, (
                f"gained {', '.join(c['gained'])}" if c["gained"] else "",
                f"lost {', '.join(c['lost'])}" if c["lost"] else ""))) for c in g["changed"]]
    return "\n".join(lines) + "\n"


def score_probabilities(
    scores: str | Path, labels_csv: str | Path, thresholds: dict[str, float] | None = None, n_boot: int = 200,
) -> dict[str, Any]:
    """Score precomputed probabilities (an (n, 6) or (n, 1) .npy, rows in the labels' order)."""
    from ecg_edge.model_info import default_info
    from ecg_edge.training.data import read_label_matrix

    scores = Path(scores)
    try:
        p = np.load(scores, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(scores, f"not a readable .npy array ({exc})") from None
    if p.ndim != 2 or p.shape[1] not in (1, len(CLASSES)) or p.dtype.kind != "f":
        raise InputError(scores, f"expected probabilities of shape (n, {len(CLASSES)}) or (n, 1), "
                                 f"got {p.shape} {p.dtype}")
    task = "six" if p.shape[1] == len(CLASSES) else "binary"
    info = default_info(task, "ribeiro")
    _, y = read_label_matrix(labels_csv, task)
    if len(y) != len(p):
        raise InputError(labels_csv, f"{len(y)} label rows for {len(p)} rows of {scores.name}")
    thresholds = {**info["thresholds"], **(thresholds or {})}
    return {
        "model": str(scores), "backend": "precomputed scores", "precision": "-", "n_exams": len(p),
        "classes": info["classes"], "thresholds": thresholds,
        "scores": score_classes(y, p, info["classes"], thresholds, n_boot), "_y": y, "_p": p,
    }


def _fmt(value: float) -> str:
    return "-" if value is None or np.isnan(value) else f"{value:.3f}"


def report_markdown(report: dict[str, Any]) -> str:
    lines = [f"# Evaluation of {report['model']}", "",
             f"{report['n_exams']} exams, {report['backend']}.", "",
             "| class | n+ | threshold | precision | recall | specificity | F1 | AUROC | AUPRC |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for c, s in report["scores"].items():
        cells = [f"{_fmt(s[m])} ({_fmt(s['ci95'][m][0])}-{_fmt(s['ci95'][m][1])})" for m in METRICS]
        lines.append(f"| {c} | {s['positives']} | {s['threshold']:.3f} | " + " | ".join(cells) + " |")
    if report["classes"] == list(CLASSES):
        lines += ["", "Ribeiro et al. 2020 (Table 2, DNN, CODE test set of 827 exams), for comparison on that set:", "",
                  "| class | precision | recall | specificity | F1 |", "| --- | --- | --- | --- | --- |"]
        for c, s in PAPER_DNN_SCORES.items():
            lines.append(f"| {c} | {s['precision']:.3f} | {s['recall']:.3f} | {s['specificity']:.3f} | {s['f1']:.3f} |")
    return "\n".join(lines) + "\n"


def comparison_markdown(reports: Sequence[dict[str, Any]]) -> str:
    """One table, classes down and precisions/backends across: F1 and AUROC of each."""
    heads = [f"{r['precision']} ({r['backend'].split(' on ')[0]})" for r in reports]
    lines = ["# Side by side", "", f"{reports[0]['n_exams']} exams; F1 at the thresholds / AUROC.", "",
             "| class | " + " | ".join(heads) + " |", "| --- |" + " --- |" * len(reports)]
    for c in reports[0]["classes"]:
        cells = [f"{_fmt(r['scores'][c]['f1'])} / {_fmt(r['scores'][c]['auroc'])}" for r in reports]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_comparison(reports: Sequence[dict[str, Any]], out_dir: str | Path, head: str | None = None,
                     section: str = "## {precision}:") -> Path:
    """report.md with `head` (default: the side-by-side table) then each report; report-<precision>.json
    and curves."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = [comparison_markdown(reports) + "\n" + agreement_markdown(precision_agreement(reports))
             if head is None else head]
    for r in reports:
        write_report(r, out_dir, suffix=f"-{r['precision']}")
        parts.append(report_markdown(r).replace("# Evaluation of", section.format(precision=r["precision"]), 1))
    atomic_write(out_dir / "report.md", lambda f: f.write("\n".join(parts)))
    return out_dir


def write_report(report: dict[str, Any], out_dir: str | Path, suffix: str = "") -> Path:
    """report.json, report.md and ROC/PR curves per class (PNG, when matplotlib is installed)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    y, p = report["_y"], report["_p"]
    public = {k: v for k, v in report.items() if not k.startswith("_")}
    atomic_write(out_dir / f"report{suffix}.json", lambda f: json.dump(public, f, indent=1))
    atomic_write(out_dir / f"report{suffix}.md", lambda f: f.write(report_markdown(report)))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return out_dir
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    for k, c in enumerate(report["classes"]):
        if y[:, k].any() and not y[:, k].all():
            fpr, tpr = roc_curve(y[:, k], p[:, k])
            recall, precision = pr_curve(y[:, k], p[:, k])
            axes[0].plot(fpr, tpr, label=f"{c} (AUROC {report['scores'][c]['auroc']:.3f})")
            axes[1].plot(recall, precision, label=f"{c} (AUPRC {report['scores'][c]['auprc']:.3f})")
    axes[0].plot([0, 1], [0, 1], "k:", lw=0.8)
    axes[0].set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    axes[1].set(xlabel="recall", ylabel="precision", title="precision-recall")
    for ax in axes:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_target(out_dir / f"curves{suffix}.png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return out_dir


def scores_table(result: dict[str, Any]) -> Any:
    """One row per class: positives and each metric."""
    from rich.table import Table

    table = Table(title=f"{result['n_exams']} exams, {result['backend']}")
    table.add_column("class")
    table.add_column("n+", justify="right")
    for m in METRICS:
        table.add_column(m, justify="right")
    for c, s in result["scores"].items():
        table.add_row(c, str(s["positives"]), *("-" if s[m] != s[m] else f"{s[m]:.3f}" for m in METRICS))
    return table

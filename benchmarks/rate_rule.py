"""The heart-rate rule as a baseline for SB and ST on real recordings, beside the network when given.

    python benchmarks/rate_rule.py [--data ../shared/data/real] [--model EXPORT_DIR] [--speed EXPORT_DIR]

CODE's definitions (Ribeiro et al. 2020): sinus bradycardia (SB) = rate < 50 bpm, sinus
tachycardia (ST) = rate > 100 bpm. The rule reads the heart rate that `infer` writes
(`ecg_edge.measure`, through the same reading path) and knows nothing of the rhythm, so a fast
atrial fibrillation counts as ST for it. An exam without a rate is called negative (and counted).

Per class: n, positives, sensitivity, specificity and F1 with 95% percentile bootstrap intervals
over records; the same per source (the sources label SB differently: LUDB and CinC by the usual
< 60 bpm, CODE by < 50), and the rule at 60 bpm for comparison. With `--model`, the network's
findings on the same records, from the same run. Also: how PR > 200 ms matches 1dAVb where PR was
measured, and what measuring costs per exam (reading with measurements off, rate only, and rate
with intervals, best of 3); with `--speed`, `infer`'s ECG/s at each level with that export.

Writes benchmarks/results/rate-rule-<date>.md and .json. Bounded: one reading pass per level
(about 336 exams each) and 2,000 bootstrap resamples per figure.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ecg_edge.atomic_files import atomic_write_text
from ecg_edge.exams import Exam, ReadOptions, iter_exams
from ecg_edge.infer import run_inference
from ecg_edge.measure import method as measurement_method
from ecg_edge.spec import CLASSES as SPEC_CLASSES
from ecg_edge.training.labels import labelled_files, match_records, read_record_labels
from ecg_edge.training.metrics import bootstrap_ci, confusion, threshold_metrics

RESULTS = Path(__file__).parent / "results"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
CLASSES = ("SB", "ST")
RULES = {"SB": lambda bpm: bpm < 50.0, "ST": lambda bpm: bpm > 100.0}
METRICS = {"sensitivity": "recall", "specificity": "specificity", "f1": "f1"}


def scores(y: np.ndarray, pred: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    """n, positives, confusion counts, and each metric with its 95% bootstrap interval."""
    tp, fp, tn, fn = confusion(y, pred)
    point = threshold_metrics(y, pred)
    out: dict[str, Any] = {"n": int(y.size), "positives": int(y.sum()), "tp": tp, "fp": fp, "tn": tn, "fn": fn}
    for name, key in METRICS.items():
        lo, hi = bootstrap_ci(lambda a, b, key=key: threshold_metrics(a, b)[key], y, pred, n=n_boot, seed=seed)
        out[name] = {"value": point[key], "ci95": [lo, hi]}
    return out


def label_ceiling(y: np.ndarray, rate: np.ndarray, source: np.ndarray, below: bool) -> dict[str, Any]:
    """The best F1 a rate threshold reaches on these labels, chosen on the very records it is scored on:
    one threshold for all (every cut tried: the most anything reading the rate alone can reach), and one
    per source (the best found by coordinate ascent over the sources, from the best single one)."""

    def f1_of(y: np.ndarray, pred: np.ndarray) -> float:
        return threshold_metrics(y, pred)["f1"]

    measured = ~np.isnan(rate)
    values = np.unique(rate[measured])
    cuts = np.concatenate([[values[0] - 1], (values[1:] + values[:-1]) / 2, [values[-1] + 1]])

    def calls(cut: dict[str, float]) -> np.ndarray:
        limit = np.array([cut[s] for s in source])
        with np.errstate(invalid="ignore"):
            return measured & ((rate < limit) if below else (rate > limit))

    sources = sorted(set(source))
    single = float(max(cuts, key=lambda c: f1_of(y, calls(dict.fromkeys(sources, float(c))))))
    cut = dict.fromkeys(sources, float(single))
    for _ in range(3):
        for s in sources:
            def score(c: float, s: str = s) -> float:
                return f1_of(y, calls({**cut, s: c}))

            cut[s] = float(max(cuts, key=score))
    return {"single": {"bpm": round(float(single), 1), "f1": f1_of(y, calls(dict.fromkeys(sources, single)))},
            "per_source": {"bpm": {s: round(c, 1) for s, c in cut.items()}, "f1": f1_of(y, calls(cut))}}


def record_rates(data: Path) -> dict[str, float]:
    """Each record's heart rate as `infer` measures it, keyed by record."""
    labels_csv = data / "labels.csv"
    labels = read_record_labels(labels_csv)
    files = labelled_files([data], labels, data)

    def refuse(message: str) -> None:
        raise SystemExit(f"cannot read: {message}")

    exams = [e for e, _ in iter_exams(files, ReadOptions(measure="rate"), refuse)]
    keys = match_records([e.source for e in exams], [e.id for e in exams], labels, labels_csv)
    return {k: (np.nan if e.measurements.heart_rate_bpm is None else e.measurements.heart_rate_bpm)
            for k, e in zip(keys, exams, strict=True)}


def read_exams(files: list[Path], level: str) -> tuple[list[Exam], float]:
    """Every exam's facts as `infer` reads them, and the seconds the reading took."""
    def refuse(message: str) -> None:
        raise SystemExit(f"cannot read: {message}")

    start = time.perf_counter()
    exams = [exam for exam, _ in iter_exams(files, ReadOptions(measure=level), refuse)]
    return exams, time.perf_counter() - start


def import_cost() -> dict[str, float]:
    """Seconds and MiB of peak memory that importing neurokit2 adds to numpy and scipy (fresh interpreters)."""
    # VmHWM, not ru_maxrss: that keeps the forking parent's peak across exec
    code = ("import time; import numpy, scipy.signal; t = time.perf_counter(); {}; s = time.perf_counter() - t; "
            "print(s, [x.split()[1] for x in open('/proc/self/status') if x.startswith('VmHWM')][0])")
    results = []
    for body in ("pass", "import neurokit2"):
        best = min((subprocess.run([sys.executable, "-c", code.format(body)], capture_output=True, text=True,
                                   check=True).stdout.split() for _ in range(3)), key=lambda r: float(r[0]))
        results.append((float(best[0]), int(best[1]) / 1024))
    return {"import_s": results[1][0] - results[0][0], "memory_mib": results[1][1] - results[0][1]}


def network_findings(
    files: list[Path], export: Path, precision: str, keys_of: Any,
) -> tuple[list[str], dict[str, np.ndarray]]:
    """The network's classes, and record key -> its 0/1 findings, from `run_inference` on the same files."""
    from ecg_edge.backends import open_backend

    runner, manifest = open_backend(export, "auto", precision)
    with runner:
        run = run_inference(files, runner, manifest, batch=32, options=ReadOptions(measure="off"))
    keys = keys_of(run.sources, run.ids)
    found = run.findings()
    return run.classes, {k: np.array([c in f for c in run.classes]) for k, f in zip(keys, found, strict=True)}


def infer_speed(files: list[Path], export: Path, precision: str, repeats: int = 2) -> dict[str, float]:
    """`infer`'s ECG/s on the same files at each measurement level (best of `repeats`, alternating)."""
    from ecg_edge.backends import open_backend

    runner, manifest = open_backend(export, "auto", precision)
    best = {level: 0.0 for level in ("off", "rate", "intervals")}
    with runner:
        run_inference(files[:8], runner, manifest, batch=64)  # warm-up
        for _ in range(repeats):
            for level in best:
                run = run_inference(files, runner, manifest, batch=64, options=ReadOptions(measure=level))
                best[level] = max(best[level], run.throughput)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="a folder with labels.csv (record, source, classes)")
    parser.add_argument("--model", type=Path, help="an export folder: the network's findings beside the rule")
    parser.add_argument("--speed", type=Path, help="an export folder: infer's ECG/s at each measurement level "
                                                     "(the weights do not matter)")
    parser.add_argument("--precision", default="fp32", help="of --model and --speed")
    parser.add_argument("--boot", type=int, default=2000, help="bootstrap resamples per figure")
    parser.add_argument("--out", type=Path, default=RESULTS / f"rate-rule-{dt.date.today():%Y-%m-%d}")
    args = parser.parse_args()

    labels_csv = args.data / "labels.csv"
    labels = read_record_labels(labels_csv)
    with open(labels_csv, newline="") as f:
        sources = {row["record"]: row["source"] for row in csv.DictReader(f)}
    files = labelled_files([args.data], labels, args.data)

    def keys_of(srcs: list[str], ids: list[str]) -> list[str]:
        return match_records(srcs, ids, labels, labels_csv)

    timings: dict[str, float] = {}
    exams: list[Exam] = []
    for level in ("off", "rate", "intervals"):
        for _ in range(3):  # best of 3: this VM's speed drifts
            read, seconds = read_exams(files, level)
            timings[level] = min(timings.get(level, np.inf), seconds)
        if level == "intervals":
            exams = read
    n = len(exams)
    cost = {"exams": n, "read_s": timings,
            "ms_per_exam": {lvl: (timings[lvl] - timings["off"]) / n * 1000 for lvl in ("rate", "intervals")},
            **import_cost()}

    keys = keys_of([e.source for e in exams], [e.id for e in exams])
    rate = np.array([np.nan if e.measurements.heart_rate_bpm is None else e.measurements.heart_rate_bpm
                     for e in exams])
    pr = np.array([np.nan if e.measurements.pr_ms is None else e.measurements.pr_ms for e in exams])
    y = {c: np.array([labels[k][i] for k in keys], dtype=bool) for i, c in enumerate(SPEC_CLASSES)}
    source = np.array([sources[k] for k in keys])
    measured = ~np.isnan(rate)
    results: dict[str, Any] = {
        "date": f"{dt.date.today():%Y-%m-%d}", "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "data": str(args.data), "records": n, "no_rate": int((~measured).sum()),
        "measured": {name: sum(getattr(e.measurements, name) is not None for e in exams)
                     for name in ("heart_rate_bpm", "pr_ms", "qt_ms")},
        "no_rate_records": [k for k, m in zip(keys, measured, strict=True) if not m],
        "measurements": measurement_method(), "cost": cost, "rule": {}, "rule_by_source": {}, "rule_at_60_bpm": {},
    }
    safe_rate = np.where(measured, rate, np.nan)
    with np.errstate(invalid="ignore"):
        calls = {c: RULES[c](safe_rate) & measured for c in CLASSES}
        for k, c in enumerate(CLASSES):
            results["rule"][c] = scores(y[c], calls[c], args.boot, seed=k)
            results["rule_by_source"][c] = {s: scores(y[c][source == s], calls[c][source == s], args.boot, seed=k)
                                            for s in sorted(set(source))}
        results["label_ceiling"] = {c: label_ceiling(y[c], safe_rate, source, below=c == "SB") for c in CLASSES}
        results["rule_at_60_bpm"]["SB"] = scores(y["SB"], (safe_rate < 60.0) & measured, args.boot, seed=7)
        has_pr = ~np.isnan(pr)
        results["pr_over_200_ms"] = {"measured": int(has_pr.sum()),
                                     "1dAVb": scores(y["1dAVb"][has_pr], pr[has_pr] > 200.0, args.boot, seed=9)}
    if args.model is not None:
        classes, found = network_findings(files, args.model, args.precision, keys_of)
        results["network"] = {"export": str(args.model), "precision": args.precision}
        for k, c in enumerate(CLASSES):
            if c in classes:
                pred = np.array([found[key][classes.index(c)] for key in keys])
                results["network"][c] = scores(y[c], pred, args.boot, seed=k)
    if args.speed is not None:
        cost["infer_ecg_per_s"] = infer_speed(files, args.speed, args.precision)
        cost["infer_precision"] = args.precision
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(results, indent=1))
    atomic_write_text(args.out.with_suffix(".md"), markdown(results))
    print(markdown(results))


def _cell(s: dict[str, Any], name: str) -> str:
    value, (lo, hi) = s[name]["value"], s[name]["ci95"]
    if np.isnan(value):
        return "-"
    return f"{value:.2f} ({lo:.2f}-{hi:.2f})"


def _row(label: str, s: dict[str, Any]) -> str:
    return (f"| {label} | {s['n']} | {s['positives']} | {s['tp']}/{s['fp']}/{s['fn']} | {_cell(s, 'sensitivity')} "
            f"| {_cell(s, 'specificity')} | {_cell(s, 'f1')} |")


def markdown(r: dict[str, Any]) -> str:
    head = ["| who | n | positives | TP/FP/FN | sensitivity (95% CI) | specificity (95% CI) | F1 (95% CI) |",
            "|---|---|---|---|---|---|---|"]
    lines = [f"# Heart-rate rule for SB and ST, {r['date']}", "",
             f"{r['records']} real recordings ({r['data']}); {r['machine']}. Rule (CODE's definitions): SB = rate "
             "< 50 bpm, ST = rate > 100 bpm, on the heart rate `infer` writes; an exam without a rate counts as "
             f"negative ({r['no_rate']}: {', '.join(r['no_rate_records']) or 'none'}). 95% percentile bootstrap "
             "intervals over records. Measured (with intervals, as sheets are): rate on "
             f"{r['measured']['heart_rate_bpm']}, PR on {r['measured']['pr_ms']}, QT on {r['measured']['qt_ms']}.", ""]
    for c in CLASSES:
        lines += [f"## {c}", "", *head, _row("rate rule", r["rule"][c])]
        if "network" in r and c in r["network"]:
            lines.append(_row(f"network ({r['network']['precision']})", r["network"][c]))
        for source, s in r["rule_by_source"][c].items():
            lines.append(_row(f"rate rule, {source} only", s))
        if c == "SB":
            lines.append(_row("rule at < 60 bpm (not CODE's)", r["rule_at_60_bpm"]["SB"]))
        lines.append("")
    ceiling = r["label_ceiling"]
    lines += ["## What these labels allow a rate reader", "",
              "The best F1 a heart-rate threshold reaches on these labels when the threshold is chosen on the "
              "very records it is scored on (one for all: every cut tried, the most anything reading the rate "
              "alone can reach; one per source: the best found; the sources do not draw SB and ST at the same "
              "rates):", "",
              "| class | one threshold for all | F1 | one threshold per source | F1 |", "|---|---|---|---|---|"]
    for c in CLASSES:
        one, per = ceiling[c]["single"], ceiling[c]["per_source"]
        sign = "<" if c == "SB" else ">"
        lines.append(f"| {c} | {sign} {one['bpm']} bpm | {one['f1']:.2f} | "
                     + ", ".join(f"{s} {sign} {v}" for s, v in per["bpm"].items()) + f" | {per['f1']:.2f} |")
    lines.append("")
    pr = r["pr_over_200_ms"]
    cost = r["cost"]
    lines += ["## PR > 200 ms against 1dAVb", "",
              f"Where PR was measured ({pr['measured']} of {r['records']} records):", "", *head,
              _row("PR > 200 ms", pr["1dAVb"]), "",
              "## Cost", "",
              f"Reading the {cost['exams']} exams as `infer` does (best of 3): measurements off "
              f"{cost['read_s']['off']:.2f} s, rate {cost['read_s']['rate']:.2f} s, rate and intervals "
              f"{cost['read_s']['intervals']:.2f} s: **{cost['ms_per_exam']['rate']:.1f} ms an exam for the rate, "
              f"{cost['ms_per_exam']['intervals']:.1f} ms with PR and QT**. Importing neurokit2 once: "
              f"{cost['import_s']:.1f} s and {cost['memory_mib']:.0f} MiB.", ""]
    if "infer_ecg_per_s" in cost:
        speed = cost["infer_ecg_per_s"]
        lines += [f"`infer` on the same files, {cost['infer_precision']} (best of 2, alternating): "
                  + ", ".join(f"measurements {k} {v:.1f} ECG/s" for k, v in speed.items())
                  + f" (rate: {speed['rate'] / speed['off']:.2f}x, with intervals: "
                    f"{speed['intervals'] / speed['off']:.2f}x the speed without).", ""]
    if "network" not in r:
        lines += ["No `--model` was given: the network's F1 on these records is not in this table.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

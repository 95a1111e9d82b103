"""The standard benchmark matrix on this machine, in one run: Keras reference, ORT FP32/FP16/INT8
(and the GPU/TensorRT rows when present) at batch 1 and 64, plus end-to-end `infer` throughput on
an HDF5 file against the backend's raw throughput. Targets are checked as ratios measured side by
side, here and not in tests: the whole matrix runs --repeats times, each ratio's median is held to
its target and its spread reported; exit code 1 when a target is missed.

    python benchmarks/run_matrix.py [--duration 5] [--repeats 3] [--model EXPORT_DIR]

Writes benchmarks/results/<date>-<host>.md and .json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import ecg_edge.training.keras_backend  # noqa: F401  (registers the Keras reference row)
from ecg_edge.atomic_files import atomic_write_text
from ecg_edge.backends import AUTO_ORDER, CPU_BACKENDS, backend_present, open_backend
from ecg_edge.bench import run_matrix
from ecg_edge.cli.workflows import random_weight_export
from ecg_edge.infer import run_inference
from ecg_edge.manifest import load_manifest
from ecg_edge.spec import PRECISIONS
from ecg_edge.timing import bench_backend

RESULTS = Path(__file__).parent / "results"


def end_to_end(export_dir: Path, tmp: Path, precision: str, batch: int, n: int) -> dict:
    """`infer` on an n-exam HDF5 file vs. the same backend's raw throughput at the same batch."""
    from ecg_edge.synthetic import write_synthetic_set

    h5, _ = write_synthetic_set(tmp / "e2e.h5", n, seed=5)
    runner, manifest = open_backend(export_dir, "ort-cpu", precision)
    with runner:
        raw = bench_backend(runner, batch, 1.0, warmup_s=1.0, duration_s=5.0)
        run = run_inference([h5], runner, manifest, batch=batch)
    return {"precision": precision, "batch": batch, "exams": n, "infer_ecg_per_s": run.throughput,
            "raw_ecg_per_s": raw.throughput_ecg_per_s, "ratio": run.throughput / raw.throughput_ecg_per_s}


# (name, target, higher is better): the ratios README states, each checked in every run.
TARGETS = {
    "keras / ORT FP32 latency, batch 1": 2.5,
    "ORT INT8 / FP32 throughput, batch 64": 2.5,
    "ORT FP32 share of float32 peak, batch 64": 0.8,
    "BF16 / FP32 best CPU throughput, batch 64 (AVX512-BF16/AMX only)": 1.7,
    "INT8 / FP32 best CPU throughput, batch 64": 3.0,
    "infer end-to-end / raw backend, INT8 batch 64": 0.9,
}


def ratios_of(rows: dict, auto: dict[str, str], e2e: dict) -> dict[str, float]:
    """Every ratio one run of the matrix gives (those whose rows ran)."""
    def rate(backend: str, precision: str, batch: int = 64) -> float | None:
        row = rows.get((backend, precision, batch))
        return row["throughput_ecg_per_s"] if row else None

    out: dict[str, float] = {}
    if ("keras", "fp32", 1) in rows and ("ort-cpu", "fp32", 1) in rows:
        out["keras / ORT FP32 latency, batch 1"] = (
            rows[("keras", "fp32", 1)]["latency_ms"]["median"] / rows[("ort-cpu", "fp32", 1)]["latency_ms"]["median"])
    if rate("ort-cpu", "int8") and rate("ort-cpu", "fp32"):
        out["ORT INT8 / FP32 throughput, batch 64"] = rate("ort-cpu", "int8") / rate("ort-cpu", "fp32")
    if ("ort-cpu", "fp32", 64) in rows:
        out["ORT FP32 share of float32 peak, batch 64"] = rows[("ort-cpu", "fp32", 64)]["share_of_cpu_peak"]
    best = {}
    for precision in PRECISIONS:
        found = {b: r for b in CPU_BACKENDS if (r := rate(b, precision)) is not None}
        if not found:
            continue
        best[precision] = max(found.values())
        if len(found) == 2:
            out[f"OpenVINO / ORT {precision} throughput, batch 64"] = found["openvino"] / found["ort-cpu"]
        if auto.get(precision) in found:
            out[f"auto's pick / best CPU runtime, {precision} batch 64"] = found[auto[precision]] / best[precision]
    if "bf16" in best and "fp32" in best:
        out["BF16 / FP32 best CPU throughput, batch 64 (AVX512-BF16/AMX only)"] = best["bf16"] / best["fp32"]
    if "int8" in best and "fp32" in best:
        out["INT8 / FP32 best CPU throughput, batch 64"] = best["int8"] / best["fp32"]
    out["infer end-to-end / raw backend, INT8 batch 64"] = e2e["ratio"]
    return out


def target_of(name: str) -> float | None:
    if name.startswith("auto's pick"):
        return 0.95  # the choice is timed at batch 8 in a short run: within 5% of the best counts as right
    return TARGETS.get(name)


def summarize(runs: list[dict[str, float]]) -> dict[str, dict]:
    """Per ratio: the median over the repeats, the spread (max - min), the target and whether met."""
    out = {}
    for name in dict.fromkeys(k for run in runs for k in run):
        values = sorted(run[name] for run in runs if name in run)
        median = statistics.median(values)
        target = target_of(name)
        out[name] = {"median": median, "min": values[0], "max": values[-1], "spread": values[-1] - values[0],
                     "runs": values, "target": target, "met": None if target is None else median >= target}
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3, help="runs of the whole matrix (>= 3 for a spread)")
    parser.add_argument("--model", type=Path, default=None, help="export folder (default: random weights)")
    parser.add_argument("--e2e-exams", type=int, default=1024)
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        export_dir = args.model or random_weight_export(Path(tmp))
        manifest = load_manifest(export_dir)
        present = [b for b in AUTO_ORDER if any(backend_present(b, manifest, p)[0] for p in PRECISIONS)]
        auto = {p: open_backend(export_dir, "auto", p)[0].name for p in PRECISIONS
                if any(backend_present(b, manifest, p)[0] for b in AUTO_ORDER)}
        for k in range(args.repeats):
            print(f"run {k + 1}/{args.repeats}")
            report = run_matrix(export_dir, [1, 64], ["keras", *present], [], 1.0, args.duration, None,
                                log=print)
            report["end_to_end"] = end_to_end(export_dir, Path(tmp), "int8", 64, args.e2e_exams)
            rows = {(r["backend"], r["precision"], r["batch"]): r for r in report["results"]}
            runs.append(ratios_of(rows, auto, report["end_to_end"]))
    report["auto"] = auto
    report["repeats"] = args.repeats
    ratios = summarize(runs)
    report["ratios"] = ratios

    env = report["environment"]
    stamp = dt.date.today().isoformat()
    host = platform.node() or "host"
    RESULTS.mkdir(exist_ok=True)
    lines = [f"# Benchmark {stamp} on {env['cpu']} ({env['cores']} cores){', ' + env['gpu'] if 'gpu' in env else ''}",
             "", f"onnxruntime {env.get('onnxruntime', '-')}, tensorflow {env.get('tensorflow', '-')}; "
             f"{report['gflop_per_ecg']:.3f} GFLOP per ECG; float32 peak {report['cpu_peak_gflops']:.0f} GFLOP/s "
             "(numpy 2048x2048 matmul). Latency is per batch, host side, in ms.", "",
             "| backend | precision | batch | ECG/s | min | median | p90 | p99 | max | GFLOP/s | share of peak |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in report["results"]:
        lat = r["latency_ms"]
        share = f"{r['share_of_cpu_peak']:.0%}" if r.get("share_of_cpu_peak") is not None else "-"
        lines.append(f"| {r['backend']} | {r['precision']} | {r['batch']} | {r['throughput_ecg_per_s']:.1f} | "
                     + " | ".join(f"{lat[k]:.1f}" for k in ("min", "median", "p90", "p99", "max"))
                     + f" | {r['gflops_per_s']:.0f} | {share} |")
    ran = {(r["backend"], r["precision"]): r["describe"] for r in report["results"]}
    lines += ["", "What ran (read back from each runtime):", ""]
    lines += [f"- {b} {p}: {what}" for (b, p), what in ran.items()]
    if report.get("auto"):
        lines += ["", "`auto` picks here: " + ", ".join(f"{p}: {b}" for p, b in report["auto"].items())]
    device_rows = [r for r in report["results"] if r.get("compute_ms")]
    if device_rows:  # TensorRT: CUDA-event time apart from the host copies, as trtexec reports them
        lines += ["", "| backend | precision | batch | host latency median | GPU compute median |",
                  "| --- | --- | --- | --- | --- |"]
        lines += [f"| {r['backend']} | {r['precision']} | {r['batch']} | {r['latency_ms']['median']:.2f} | "
                  f"{r['compute_ms']['median']:.2f} |" for r in device_rows]
    e2e = report["end_to_end"]
    lines += ["", f"End to end (last run): `infer` on {e2e['exams']} HDF5 exams, INT8 batch {e2e['batch']}: "
              f"{e2e['infer_ecg_per_s']:.1f} ECG/s vs raw {e2e['raw_ecg_per_s']:.1f} ECG/s.", "",
              f"Ratios measured side by side, {args.repeats} runs of the whole matrix (the table above is the last):",
              "", "| ratio | median | spread (min-max) | target | met |", "| --- | --- | --- | --- | --- |"]
    for name, r in ratios.items():
        target = f">= {r['target']:g}" if r["target"] is not None else "-"
        met = "-" if r["met"] is None else "yes" if r["met"] else "**no**"
        lines.append(f"| {name} | {r['median']:.2f} | {r['min']:.2f}-{r['max']:.2f} | {target} | {met} |")
    missed = [name for name, r in ratios.items() if r["met"] is False]
    base = RESULTS / f"{stamp}-{host}"
    atomic_write_text(base.with_suffix(".md"), "\n".join(lines) + "\n")
    atomic_write_text(base.with_suffix(".json"), json.dumps(report, indent=1))
    print("\n".join(lines))
    if missed:
        print(f"targets missed: {'; '.join(missed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One command for a GPU machine: what it can run (doctor), the GPU tests, and the bench matrix of
every GPU backend present, written to benchmarks/results/<date>-<gpu>.md and .json.

    python benchmarks/gpu_check.py [--model EXPORT_DIR] [--out DIR] [--duration 1.0]
    make gpu-check [OUT=DIR]

It installs nothing and uses whatever of onnxruntime-gpu and TensorRT is there: TensorRT engines
are built here from the export's ONNX files (gated against FP32 on the CPU), then tensorrt,
ort-tensorrt and ort-cuda (with and without a CUDA graph) are timed at batch 1, 64 and 256 in
FP32, FP16 and INT8 where each can run them. TensorRT rows carry the GPU compute time (CUDA events)
beside the host latency. Sized to finish in under 6 minutes on one data-centre GPU; on a machine
without one it says what it skipped and why (the test suite runs it so). The export: --model, else
the model home's, else random weights exported here (needs TensorFlow); a GPU machine without
TensorFlow is given an export folder made elsewhere (`ecg-edge export --for-tensorrt`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BATCHES = [1, 64, 256]
PRECISIONS = ["fp32", "fp16", "int8"]


def _export(model: Path | None, tmp: Path, log: Any) -> Path:
    from ecg_edge.errors import InputError
    from ecg_edge.home import home_export_dir

    if model is not None:
        return model
    if (home_export_dir() / "manifest.json").exists():
        return home_export_dir()
    try:
        from ecg_edge.cli.workflows import random_weight_export
    except ImportError as exc:
        raise InputError(None, f"no export: pass --model EXPORT_DIR ({exc})") from None
    log("no export given: exporting random weights (speed does not depend on them)")
    return random_weight_export(tmp, for_tensorrt=True)


def _gpu_tests(export_dir: Path, timeout_s: int) -> dict[str, Any]:
    """pytest -m gpu on the GPU tests, pointed at this export (no TensorFlow needed)."""
    env = os.environ | {"ECG_EDGE_TEST_EXPORT": str(export_dir)}
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider",
               str(ROOT / "tests" / "test_gpu.py")]
    try:
        proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"summary": f"timed out after {timeout_s} s", "returncode": None, "failed": True}
    lines = proc.stdout.strip().splitlines()
    summary = next((line.strip("= ") for line in reversed(lines) if re.search(r"passed|failed|skipped|error", line)),
                   "no result")
    skips = [line for line in lines if line.startswith("SKIPPED")]
    return {"summary": summary, "skips": skips, "returncode": proc.returncode,
            "failed": proc.returncode not in (0, 5), "tail": lines[-30:] if proc.returncode not in (0, 5) else []}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="export folder (default: the model home's, else random weights)")
    parser.add_argument("--out", type=Path, help="also write the results here (e.g. $OUT on a lent machine)")
    parser.add_argument("--duration", type=float, default=1.0, help="timed seconds per configuration")
    parser.add_argument("--no-tests", action="store_true", help="skip pytest -m gpu")
    parser.add_argument("--results", type=Path, default=RESULTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    from ecg_edge.backends import GPU_ORDER, backend_present
    from ecg_edge.bench import run_matrix
    from ecg_edge.doctor import diagnose
    from ecg_edge.export.pipeline import ExportGateError, ExportOptions, add_engines
    from ecg_edge.gpu import tensorrt_status
    from ecg_edge.manifest import load_manifest

    started = time.perf_counter()

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - started:5.0f} s] {line}", flush=True)

    skipped: list[str] = []
    with tempfile.TemporaryDirectory(prefix="ecg-edge-gpu-check-") as tmp:
        source = _export(args.model, Path(tmp), log)
        work = Path(tmp) / "export"  # engines go into a copy, never into the user's folder
        shutil.copytree(source, work, ignore=shutil.ignore_patterns("*.plan", ".export-*", "ort-trt-cache"))
        log(f"export: {source}")
        report: dict[str, Any] = {"date": dt.date.today().isoformat(), "export": str(source),
                                  "doctor": diagnose(work)}
        usable, why = tensorrt_status()
        if usable:
            log("building TensorRT engines here (FP32, FP16, INT8 from the symmetric file)")
            try:
                add_engines(work, ExportOptions(precisions=tuple(PRECISIONS), engine=True, max_batch=max(BATCHES)),
                            log=log)
            except ExportGateError as exc:
                skipped.append(f"tensorrt engines: {exc}")
        else:
            skipped.append(f"tensorrt engines: {why}")
        manifest = load_manifest(work)
        if args.no_tests:
            skipped.append("pytest -m gpu: --no-tests")
        else:
            log("pytest -m gpu")
            report["tests"] = _gpu_tests(work, timeout_s=180)
            log(f"  {report['tests']['summary']}")
        rows: list[dict[str, Any]] = []
        for backend in GPU_ORDER:
            present = []
            for precision in PRECISIONS:
                ok, reason = backend_present(backend, manifest, precision)
                if ok:
                    present.append(precision)
                else:
                    skipped.append(f"{backend} {precision}: {reason}")
            if not present:
                continue
            for graph in ((False, True) if backend == "ort-cuda" else (False,)):
                log(f"bench {backend}{' + CUDA graph' if graph else ''}: {', '.join(present)}")
                result = run_matrix(work, BATCHES, [backend], present, warmup_s=0.5, duration_s=args.duration,
                                    threads=None, log=log, cuda_graph=graph)
                for row in result["results"]:
                    rows.append(row | {"cuda_graph": graph})
        report["results"] = rows
        report["skipped"] = skipped
        report["seconds"] = round(time.perf_counter() - started, 1)

    gpus = report["doctor"].get("nvidia", {}).get("gpus") or []
    name = gpus[0]["name"] if gpus else "no-gpu"
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    lines = [f"# GPU check {report['date']}: {name}", "",
             f"{report['seconds']:.0f} s. Export: {report['export']}. "
             f"Driver {report['doctor'].get('nvidia', {}).get('driver', '-')}, "
             f"CUDA {report['doctor'].get('nvidia', {}).get('cuda_driver_api', '-')}; "
             + ", ".join(f"{k} {v}" for k, v in report["doctor"]["runtimes"].items()), ""]
    if "tests" in report:
        lines += [f"pytest -m gpu: {report['tests']['summary']}", ""]
    if rows:
        lines += ["| backend | precision | batch | CUDA graph | ECG/s | host latency median ms | "
                  "GPU compute median ms | what ran |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in rows:
            compute = f"{r['compute_ms']['median']:.2f}" if r.get("compute_ms") else "-"
            lines.append(f"| {r['backend']} | {r['precision']} | {r['batch']} | {'yes' if r['cuda_graph'] else 'no'} "
                         f"| {r['throughput_ecg_per_s']:.0f} | {r['latency_ms']['median']:.2f} | {compute} "
                         f"| {r['describe']} |")
    else:
        lines += ["No GPU backend ran here."]
    lines += ["", "Skipped:", ""] + [f"- {s}" for s in skipped] if skipped else []
    text = "\n".join(lines) + "\n"
    from ecg_edge.atomic_files import atomic_write_text

    for folder in filter(None, (args.results, args.out)):
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / f"{report['date']}-{slug}.md", text)
        atomic_write_text(folder / f"{report['date']}-{slug}.json", json.dumps(report, indent=1, default=str))
    print(text)
    return 1 if report.get("tests", {}).get("failed") else 0


if __name__ == "__main__":
    sys.exit(main())

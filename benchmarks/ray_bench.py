"""`infer --ray` against plain `infer` on this machine, measured side by side in one run.

    python benchmarks/ray_bench.py [--model EXPORT_DIR] [--exams 2048] [--precision int8]

Plain `infer` (one process: a reader thread and the backend) vs Ray Data on a local cluster with
1 and 2 inference actors (threads split between them), on the same HDF5 file; also the cost of
starting the cluster and the actors (the per-run overhead). Writes
benchmarks/results/ray-<date>-<host>.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from ecg_edge.atomic_files import atomic_write_text
from ecg_edge.backends import open_backend
from ecg_edge.cli.workflows import random_weight_export
from ecg_edge.infer import run_inference
from ecg_edge.manifest import load_manifest
from ecg_edge.synthetic import write_synthetic_set

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path)
    parser.add_argument("--exams", type=int, default=2048)
    parser.add_argument("--precision", default="int8")
    args = parser.parse_args()
    import ray

    from ecg_edge.ray_infer import run_inference_ray

    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        export = args.model or random_weight_export(Path(tmp))
        h5, _ = write_synthetic_set(Path(tmp) / "exams.h5", args.exams, seed=7)
        manifest = load_manifest(export)
        runner, _ = open_backend(export, "ort-cpu", args.precision)
        with runner:
            run_inference([h5], runner, manifest)  # warm
            plain = run_inference([h5], runner, manifest)
        rows = [("plain infer (1 process)", plain.throughput, 0.0)]
        for actors in (1, 2):
            start = time.perf_counter()
            ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
            started = time.perf_counter() - start
            threads = max(1, cores // actors)
            start = time.perf_counter()
            run = run_inference_ray([h5], export, "ort-cpu", args.precision, manifest, actors=actors, threads=threads)
            total = time.perf_counter() - start
            ray.shutdown()
            assert run.ids == plain.ids and np.allclose(run.probabilities, plain.probabilities, atol=1e-6)
            rows.append((f"--ray, {actors} actor(s) x {threads} threads", len(run.ids) / total, started))
    base = rows[0][1]
    lines = [f"# infer --ray vs infer, {dt.date.today().isoformat()} on {platform.node()} ({cores} cores)", "",
             f"{args.exams} exams in one HDF5 file, ort-cpu {args.precision}; every --ray run checked equal to "
             "plain infer (ids, probabilities to 1e-6). ECG/s over the whole call (cluster start apart).", "",
             "| run | ECG/s | vs plain | cluster start s |", "| --- | --- | --- | --- |"]
    lines += [f"| {name} | {rate:.1f} | {rate / base:.2f} | {start:.1f} |" for name, rate, start in rows]
    RESULTS.mkdir(exist_ok=True)
    atomic_write_text(RESULTS / f"ray-{dt.date.today().isoformat()}-{platform.node() or 'host'}.md",
                      "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

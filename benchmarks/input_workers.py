"""The input side in worker processes, side by side in one run (issue 35).

    python benchmarks/input_workers.py [--model EXPORT_DIR] [--out benchmarks/results/input-workers-DATE-vm.md]

1. Input side alone (reading, `prepare`, quality flags, measurements; no backend): exams/s in this
   process (0) and with 1, 2, ... workers up to the CPUs here, on a CODE-layout HDF5 (the 80 real
   CODE-test exams, given four times), a folder of real WFDB records (`real/cinc2021`, `real/ludb`)
   and a folder of hospital formats (the real MUSE, aECG, Philips and DICOM files of
   `formats/`, copied 20 times, beside the `wfdb/` records); `--measure` off, rate and intervals.
   Each pool is warmed on one file first: worker start-up (seconds, once per command) is not counted.
2. End to end: `infer` (run_request, as the command) on the WFDB folder and the HDF5, with the heart
   rate measured, at INT8 and FP32 on ort-cpu, with 0 (a reader thread), 1 and 2 workers and auto;
   beside the backend's own throughput at batch 64 (`timing.bench_backend`); the CPU time of the
   process tree over wall time x CPUs during `ecg-edge infer --precision int8` (a child process:
   the workers' time reaches us through wait()).
3. onnxruntime's threads spinning or sleeping between runs (infer sleeps them where recordings are
   read one by one): infer's loop at 0 and 2 workers, each pair back to back, twice.
4. No change in results: every exam of `../shared/data` (wfdb, wfdb-more, real, ptbxl, formats)
   read with 2 workers equal to reading in this process (model input, flags, provenance, measurements).

Without --model, a seeded random-weight Ribeiro network is exported once into a temporary folder (the
tests' recipe): its speed is the product's, its findings are not. The machine is shared: the results
file records the load beside the figures; compare the figures of one run only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RESULTS = Path(__file__).parent / "results"
MEASURES = ("off", "rate", "intervals")


def machine_load() -> str:
    """What else runs here: the load average and the busiest processes, as `top` shows them."""
    top = subprocess.run(["top", "-bn1", "-w", "160"], capture_output=True, text=True).stdout.splitlines()
    header = [line for line in top[:5] if line.startswith(("top", "%Cpu"))]
    procs = [line for line in top[7:17] if line.strip()]
    return "\n".join(header + procs[:8])


def seeded_export(folder: Path) -> Path:
    """A random-weight six-class Ribeiro network (seed 0), exported as the tests do (conftest.six_export)."""
    import keras

    from ecg_edge.export.pipeline import ExportOptions, export_model
    from ecg_edge.training.models import build_ribeiro, load_keras_model

    keras.utils.set_random_seed(0)
    model_path = folder / "six.keras"
    build_ribeiro().save(model_path)
    options = ExportOptions(n_calibration=32, n_synthetic_validation=24, int8_methods=("percentile",),
                            min_exam_agreement={"fp16": 0.995, "bf16": 0.995, "int8": 0.85})
    export_model(load_keras_model(model_path), folder / "export", options, validation=[DATA / "wfdb"])
    return folder / "export"


def inputs(scratch: Path) -> dict[str, list[Path]]:
    from ecg_edge.readers import expand_inputs

    mixed = scratch / "mixed"
    mixed.mkdir()
    hospital = [p for p in sorted((DATA / "formats").rglob("*")) if p.is_file() and p.suffix.lower() != ".md"]
    for k in range(20):
        for p in hospital:
            shutil.copy(p, mixed / f"{k:02d}-{p.name}")
    for p in (DATA / "wfdb").iterdir():
        shutil.copy(p, mixed / p.name)
    return {"hdf5": [DATA / "real" / "code-test-80.h5"] * 4,
            "wfdb": expand_inputs([DATA / "real" / "cinc2021", DATA / "real" / "ludb"]),
            "mixed": expand_inputs([mixed])}


def _ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total


def input_side(paths: list[Path], measure: str, workers: int) -> dict[str, Any]:
    """Exams/s of the input side alone: `workers` processes (0: this process), warmed on a file each; and
    the CPU seconds an exam cost (the workers', and this process's: gathering their replies), which
    other work on the machine does not inflate as it does the wall time."""
    from ecg_edge.exams import ReadOptions, iter_exams
    from ecg_edge.input_pool import InputPool

    options = ReadOptions(measure=measure, keep_going=True)
    skipped: list[str] = []
    ticks_per_s = os.sysconf("SC_CLK_TCK")
    if workers == 0:
        list(iter_exams(paths[:1], options, skipped.append))
        start, cpu = time.perf_counter(), time.process_time()
        n = sum(1 for _ in iter_exams(paths, options, skipped.append))
        wall, worker_cpu, parent_cpu = time.perf_counter() - start, 0.0, time.process_time() - cpu
    else:
        with InputPool(workers, options) as pool:
            list(pool.exams(paths[:workers], skipped.append))  # a file each: every worker warm
            pids = [w.process.pid for w in pool._workers]
            start, cpu, ticks = time.perf_counter(), time.process_time(), _ticks(pids)
            n = sum(1 for _ in pool.exams(paths, skipped.append))
            wall, parent_cpu = time.perf_counter() - start, time.process_time() - cpu
            same = [w.process.pid for w in pool._workers] == pids  # no worker replaced on the way
            worker_cpu = (_ticks(pids) - ticks) / ticks_per_s if same else float("nan")
    return {"exams": n, "wall_s": wall, "exams_per_s": n / wall, "skipped": len(skipped),
            "cpu_ms_per_exam": (worker_cpu + parent_cpu) / n * 1e3}


def end_to_end(paths: list[Path], export: Path, precision: str, workers: int | None,
               measure: str = "rate") -> dict[str, Any]:
    from ecg_edge.exams import ReadOptions
    from ecg_edge.request import InferRequest, run_request

    request = InferRequest(tuple(paths), model=export, backend="ort-cpu", precision=precision,
                           read=ReadOptions(measure=measure, keep_going=True), workers=workers)
    run = run_request(request)
    return {"exams": len(run.exams), **run.timing()}


def end_to_end_spinning(paths: list[Path], export: Path, precision: str, workers: int, spin: bool) -> float:
    """ECG/s of infer's own loop (as run_request runs it) with onnxruntime's threads spinning or not."""
    from ecg_edge.backends import open_backend
    from ecg_edge.exams import ReadOptions
    from ecg_edge.infer import run_inference

    runner, manifest = open_backend(export, "ort-cpu", precision, spin=spin)
    with runner:
        run = run_inference(paths, runner, manifest, options=ReadOptions(measure="rate", keep_going=True),
                            workers=workers)
    return run.timing()["ecg_per_s"]


def backend_raw(export: Path, precision: str) -> float:
    from ecg_edge.backends import open_backend
    from ecg_edge.timing import bench_backend

    runner, _ = open_backend(export, "ort-cpu", precision)
    with runner:
        return bench_backend(runner, 64, 0.0, warmup_s=2.0, duration_s=8.0).throughput_ecg_per_s


def _tree_ticks(pid: int, seen: dict[int, int]) -> int:
    """CPU ticks (user + system) of `pid` and its descendants; `seen` keeps those of processes gone since."""
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            seen[current] = int(fields[11]) + int(fields[12])
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return sum(seen.values())


def tree_cpu(paths: list[Path], export: Path, workers: str) -> dict[str, Any]:
    """`ecg-edge infer --precision int8 --measure rate` in a child, its process tree's CPU sampled every
    0.2 s: CPU time over wall time x CPUs during inference (the last `wall_s` the command reports,
    start-up and imports left out)."""
    ticks_per_s = os.sysconf("SC_CLK_TCK")
    seen: dict[int, int] = {}
    samples: list[tuple[float, int]] = []
    proc = subprocess.Popen([sys.executable, "-m", "ecg_edge.cli", "infer", *map(str, paths), "--model", str(export),
                             "--backend", "ort-cpu", "--precision", "int8", "--measure", "rate", "--keep-going",
                             "--workers", workers], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "COLUMNS": "400"})
    while proc.poll() is None:
        samples.append((time.perf_counter(), _tree_ticks(proc.pid, seen)))
        time.sleep(0.2)
    stdout = proc.stdout.read() if proc.stdout else ""
    if proc.returncode != 0:
        raise SystemExit(f"infer failed ({proc.returncode})")
    summary = next(line for line in stdout.splitlines() if "ECG/s" in line)
    wall = float(summary.split(" exams in ")[1].split(" s:")[0])
    end_t, end_ticks = samples[-1]
    start_t, start_ticks = min(samples, key=lambda sample: abs(sample[0] - (end_t - wall)))
    cpu = (end_ticks - start_ticks) / ticks_per_s
    span = end_t - start_t
    return {"wall_s": span, "cpu_s": cpu, "utilisation": cpu / (span * len(os.sched_getaffinity(0))),
            "summary": summary.strip()}


def same_results() -> dict[str, Any]:
    """Every recording of ../shared/data read with 2 workers and in this process: equal, exam for exam."""
    from ecg_edge.exams import ReadOptions, iter_exams
    from ecg_edge.input_pool import InputPool
    from ecg_edge.readers import expand_inputs

    paths = expand_inputs([DATA / name for name in ("wfdb", "wfdb-more", "real", "ptbxl", "formats")
                           if (DATA / name).exists()])
    options = ReadOptions(measure="intervals", keep_going=True)
    here_skipped: list[str] = []
    pool_skipped: list[str] = []
    here = iter_exams(paths, options, here_skipped.append)
    with InputPool(2, options) as pool:
        n = differ = 0
        for (a, xa), (b, xb) in zip(here, pool.exams(paths, pool_skipped.append), strict=True):
            n += 1
            same = (a.id, a.source, a.quality, a.provenance, a.measurements, a.statements) == \
                   (b.id, b.source, b.quality, b.provenance, b.measurements, b.statements)
            differ += not (same and xa.tobytes() == xb.tobytes())
    return {"files": len(paths), "exams": n, "differ": differ, "skipped_equal": here_skipped == pool_skipped,
            "skipped": len(here_skipped)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="an export folder (default: a seeded random-weight export)")
    parser.add_argument("--out", type=Path, default=RESULTS / f"input-workers-{dt.date.today()}-vm.md")
    parser.add_argument("--skip-equality", action="store_true")
    args = parser.parse_args()
    cpus = len(os.sched_getaffinity(0))
    counts = [0, *range(1, cpus + 1)]
    lines = [f"# Input workers, {dt.datetime.now():%Y-%m-%d %H:%M} ({cpus} CPUs)", "", "Load at the start:", "",
             "```", machine_load(), "```", ""]
    with tempfile.TemporaryDirectory(prefix="input-workers-") as scratch_name:
        scratch = Path(scratch_name)
        export = args.model or seeded_export(scratch)
        sets = inputs(scratch)
        lines += ["## Input side alone (exams/s, and CPU ms an exam in all processes; 0 = in this process)", "",
                  "| input | exams | measure | " + " | ".join(f"{w} workers" for w in counts) + " | 2 vs 1 |",
                  "|---|---|---|" + "---|" * len(counts) + "---|"]
        for name, paths in sets.items():
            for measure in MEASURES:
                rates = {w: input_side(paths, measure, w) for w in counts}
                n = rates[counts[-1]]["exams"]
                ratio = rates[2]["exams_per_s"] / rates[1]["exams_per_s"] if 2 in rates else float("nan")
                lines.append(f"| {name} | {n} | {measure} | "
                             + " | ".join(f"{rates[w]['exams_per_s']:.1f} ({rates[w]['cpu_ms_per_exam']:.1f} ms)"
                                          for w in counts) + f" | {ratio:.2f}x |")
                print(lines[-1], flush=True)
                args.out.write_text("\n".join(lines))
        lines += ["", "## End to end (infer, ort-cpu) against the backend alone", "",
                  "| input | measure | precision | backend alone ECG/s (batch 64) | workers | ECG/s | x backend "
                  "| backend busy | input side exams/s |", "|---|---|---|---|---|---|---|---|---|"]
        for precision in ("int8", "fp32"):
            raw = backend_raw(export, precision)
            for name, measure in (("wfdb", "rate"), ("hdf5", "rate"), ("hdf5", "off")):
                for workers in (0, 1, 2, None):
                    r = end_to_end(sets[name], export, precision, workers, measure)
                    label = "auto" if workers is None else str(workers)
                    lines.append(f"| {name} | {measure} | {precision} | {raw:.1f} | {label} ({r['input_workers']}) | "
                                 f"{r['ecg_per_s']:.1f} | {r['ecg_per_s'] / raw:.2f} | {r['backend_busy']:.0%} | "
                                 f"{r['input_exams_per_s']:.1f} |")
                    print(lines[-1], flush=True)
                    args.out.write_text("\n".join(lines))
        lines += ["", "## onnxruntime's threads spinning between runs, or sleeping", "",
                  "ECG/s with the heart rate measured; each pair run back to back, twice.", "",
                  "| input | precision | workers | spinning | sleeping | sleeping / spinning |",
                  "|---|---|---|---|---|---|"]
        for precision in ("int8", "fp32"):
            for name in ("wfdb", "hdf5"):
                for workers in (0, 2):
                    pairs = [(end_to_end_spinning(sets[name], export, precision, workers, True),
                              end_to_end_spinning(sets[name], export, precision, workers, False)) for _ in range(2)]
                    on, off = (sum(p[k] for p in pairs) / len(pairs) for k in (0, 1))
                    lines.append(f"| {name} | {precision} | {workers} | {' / '.join(f'{p[0]:.1f}' for p in pairs)} | "
                                 f"{' / '.join(f'{p[1]:.1f}' for p in pairs)} | {off / on:.2f}x |")
                    print(lines[-1], flush=True)
                    args.out.write_text("\n".join(lines))
        lines += ["", "## CPU use of the process tree: `ecg-edge infer --precision int8 --measure rate`", "",
                  "Sampled from /proc every 0.2 s over the inference (the command's own `wall_s`, start-up left out).",
                  "", "| input | workers | wall s | CPU s | CPU / (wall x CPUs) | the command's summary |",
                  "|---|---|---|---|---|---|"]
        for name in ("wfdb", "hdf5"):
            for workers in ("0", "auto"):
                r = tree_cpu(sets[name], export, workers)
                lines.append(f"| {name} | {workers} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['utilisation']:.0%} "
                             f"| {r['summary']} |")
                print(lines[-1], flush=True)
                args.out.write_text("\n".join(lines))
        if not args.skip_equality:
            eq = same_results()
            lines += ["", "## No change in results", "",
                      f"{eq['exams']} exams of {eq['files']} files of ../shared/data read with 2 workers: "
                      f"{eq['differ']} differ from reading in this process (model input byte for byte, flags, "
                      f"provenance, measurements at intervals); {eq['skipped']} skipped in both, the same messages: "
                      f"{eq['skipped_equal']}."]
            print(lines[-1], flush=True)
    lines += ["", "Load at the end:", "", "```", machine_load(), "```", ""]
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

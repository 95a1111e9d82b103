"""What quality flags cost `infer`, and how long a report of 1,000 exams takes, measured side by side.

    python benchmarks/report_speed.py [--model EXPORT_DIR] [--exams 1000] [--precision int8]

1. `infer` on the same HDF5 file (CODE layout, 10 s exams zero-padded as CODE's are) and on a folder
   of real WFDB records, with quality flags and provenance (as `infer` runs) and without: ECG/s of
   each and their ratio (target: flags cost <= 10%).
2. `report` on the HDF5 file: wall time for all sheets and the index (target: 1,000 exams < 120 s).

Writes benchmarks/results/<date>-report-speed.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ecg_edge.atomic_files import atomic_write_text
from ecg_edge.backends import open_backend
from ecg_edge.cli.workflows import random_weight_export
from ecg_edge.exams import ReadOptions
from ecg_edge.infer import run_inference
from ecg_edge.report import ReportWriter

RESULTS = Path(__file__).parent / "results"
WFDB = Path(__file__).resolve().parents[2] / "shared" / "data" / "wfdb"


def _hdf5(path: Path, n: int) -> Path:
    import h5py

    from ecg_edge.synthetic import synthesize

    x, _ = synthesize(n, seed=11)
    x[:, :48] = 0
    x[:, -48:] = 0  # 10 s at 400 Hz centred in 4096 samples, as CODE stores them
    with h5py.File(path, "w") as f:
        f.create_dataset("tracings", data=x.astype(np.float32))
        f.create_dataset("exam_id", data=np.arange(n))
    return path


def _rates(export: Path, precision: str, inputs: list[Path], repeats: int) -> dict[bool, float]:
    """Best ECG/s without and with flags, the two runs alternating (this VM's speed drifts)."""
    runner, manifest = open_backend(export, "ort-cpu", precision)
    best = {False: 0.0, True: 0.0}
    with runner:
        run_inference(inputs[:1], runner, manifest, batch=64)  # warm-up
        for _ in range(repeats):
            for assess in (False, True):
                run = run_inference(inputs, runner, manifest, batch=64, options=ReadOptions(assess=assess))
                best[assess] = max(best[assess], run.throughput)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, default=None, help="export folder (default: random weights)")
    parser.add_argument("--exams", type=int, default=1000)
    parser.add_argument("--no-report", action="store_true", help="measure the flags' cost only")
    parser.add_argument("--precision", default="int8", help="int8: the fastest, where flags weigh most")
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()
    lines = [f"# Quality flags and report speed, {dt.date.today()}", "",
             f"{args.exams} exams, ORT {args.precision} on the CPU, batch 64; best of {args.repeats} runs "
             "each, alternating.", ""]
    with tempfile.TemporaryDirectory() as tmp:
        export = args.model or random_weight_export(Path(tmp) / "export")
        h5 = _hdf5(Path(tmp) / "exams.h5", args.exams)
        sets = {"HDF5 (CODE layout)": [h5]}
        if WFDB.exists():
            sets["WFDB folder (real, 13 records x 8)"] = [WFDB] * 8
        lines += ["| input | ECG/s without flags | ECG/s with flags | with / without |", "|---|---|---|---|"]
        for name, inputs in sets.items():
            rates = _rates(export, args.precision, inputs, args.repeats)
            without, with_flags = rates[False], rates[True]
            lines.append(f"| {name} | {without:.1f} | {with_flags:.1f} | {with_flags / without:.2f} |")
            print(lines[-1], flush=True)
        out = Path(tmp) / "report"
        out.mkdir()
        if args.no_report:
            print("\n".join(lines))
            return
        runner, manifest = open_backend(export, "ort-cpu", args.precision)
        start = time.perf_counter()
        with runner:
            writer = ReportWriter(out)
            try:
                run = run_inference([h5], runner, manifest, batch=64, options=ReadOptions(keep_traces=True),
                                    on_batch=writer.add)
                writer.finish()
            finally:
                writer.close()
        wall = time.perf_counter() - start
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6
        lines += ["", f"`report` of {len(run.exams)} exams: {wall:.1f} s ({len(run.exams) / wall:.1f} exams/s, "
                  f"{writer.workers} drawing processes), {size:.0f} MB written (target: 1,000 exams in < 120 s).", ""]
        print(lines[-2], flush=True)
        shutil.rmtree(out)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{dt.date.today()}-report-speed.md"
    atomic_write_text(path, "\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""Where onnxruntime spends its time per op type (its own profiler), FP32 against INT8, batch 64.

    python benchmarks/profile_ort.py EXPORT_DIR

Writes benchmarks/results/profile-<date>-<host>.md.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import platform
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ecg_edge.atomic_files import atomic_write_text

RESULTS = Path(__file__).parent / "results"


def profile(path: Path, x: np.ndarray, runs: int = 4) -> tuple[float, list[tuple[str, float]]]:
    """(kernel ms per run, [(op type, ms per run)] largest first)."""
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.gettempdir()) / f"ecg-edge-{path.stem}")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    session.run(None, {"signal": x})
    for _ in range(runs):
        session.run(None, {"signal": x})
    trace = session.end_profiling()
    by_op: collections.Counter[str] = collections.Counter()
    for event in json.loads(Path(trace).read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            by_op[event["args"]["op_name"]] += event["dur"]
    os.remove(trace)
    per_run = {op: us / (runs + 1) / 1000 for op, us in by_op.items()}
    return sum(per_run.values()), sorted(per_run.items(), key=lambda kv: -kv[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("export_dir", type=Path)
    args = parser.parse_args()
    x = np.random.default_rng(0).normal(0, 0.5, (64, 4096, 12)).astype(np.float32)
    lines = [f"# onnxruntime profile {dt.date.today().isoformat()} on {platform.node()}", "",
             f"onnxruntime {ort.__version__}, CPU provider, batch 64; kernel time per run (profiler on).", ""]
    for name in ("model.onnx", "model.int8.onnx"):
        total, ops = profile(args.export_dir / name, x)
        lines += [f"## {name}: {total:.0f} ms per batch", "", "| op | ms | share |", "| --- | --- | --- |"]
        lines += [f"| {op} | {ms:.1f} | {ms / total:.1%} |" for op, ms in ops[:10]]
        lines.append("")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"profile-{dt.date.today().isoformat()}-{platform.node() or 'host'}.md"
    atomic_write_text(out, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Export measurements: time, file sizes and parity per precision on real records, written to
benchmarks/results/export-<date>-<host>.md.

    python benchmarks/export_report.py [MODEL.keras|model.hdf5] --records ../shared/data/wfdb

Without a model it trains nothing: it exports the model home's model if there is one (after
`ecg-edge demo`), else the architecture with random weights.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from ecg_edge.backends.base import infer_all
from ecg_edge.backends.onnxruntime import OnnxRuntimeBackend
from ecg_edge.export.pipeline import ExportOptions, export_model, load_ecgs
from ecg_edge.home import home_model_path
from ecg_edge.spec import called

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path, nargs="?")
    parser.add_argument("--records", type=Path, action="append", default=[])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or (home_model_path() if home_model_path().exists() else None)
        if model is None:
            import keras

            from ecg_edge.training.models import build_ribeiro

            keras.utils.set_random_seed(0)
            model = Path(tmp) / "random.keras"
            build_ribeiro().save(model)
        out = Path(tmp) / "export"
        start = time.perf_counter()
        result = export_model(model, out, ExportOptions(), validation=args.records, log=print)
        seconds = time.perf_counter() - start
        manifest = result.manifest
        thresholds = np.array([manifest["thresholds"][c] for c in manifest["output"]["classes"]])
        real_rows = []
        if args.records:
            x, _ = load_ecgs(args.records)
            outputs = {}
            for name in manifest["files"]:
                with OnnxRuntimeBackend(out / name) as backend:
                    outputs[name] = infer_all(backend, x)
            ref = outputs["model.onnx"]
            for name, probs in outputs.items():
                agree = (called(probs, thresholds) == called(ref, thresholds)).mean()
                real_rows.append((name, len(x), float(np.abs(probs - ref).max()), float(agree)))

    lines = [f"# Export {dt.date.today().isoformat()} on {platform.node()}", "",
             f"Model: {model} ({manifest['model']['kind']}, thresholds: {manifest['thresholds_source']}).",
             f"Whole export (Keras -> ONNX, FP16, INT8 with {len(manifest['files']['model.int8.onnx']['candidates'])}"
             f" calibration recipes measured, every parity gate): {seconds:.0f} s on {platform.processor() or 'CPU'}.",
             f"INT8 recipe chosen: {manifest['calibration']['recipe']}.", "",
             "| file | precision | MB | vs | max abs diff | mean abs diff | findings agree | exams all agree |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, e in manifest["files"].items():
        p = e["parity"]
        lines.append(f"| {name} | {e['precision']} | {e['bytes'] / 1e6:.1f} | {p['reference']} | "
                     f"{p['max_abs_diff']:.2e} | {p['mean_abs_diff']:.2e} | {p['findings_agreement']:.1%} | "
                     f"{p['exams_all_agree']:.1%} |")
    held_out = "; ".join(f"{v['source']} ({v['n']})" for v in manifest["validation"])
    lines += ["", f"Held-out set of the gates: {held_out}"]
    if real_rows:
        lines += ["", "On the real records alone, against FP32 ONNX:", "",
                  "| file | records | max abs diff | findings agree |", "| --- | --- | --- | --- |"]
        lines += [f"| {n} | {k} | {d:.2e} | {a:.1%} |" for n, k, d, a in real_rows]
    lines += ["", "INT8 candidates (against FP32 ONNX):", "", "| recipe | max abs diff | findings agree |",
              "| --- | --- | --- |"]
    lines += [f"| {c['recipe']} | {c['max_abs_diff']:.2e} | {c['findings_agreement']:.1%} |"
              for c in manifest["files"]["model.int8.onnx"]["candidates"]]
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"export-{dt.date.today().isoformat()}-{platform.node() or 'host'}.md"
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Export measurements: time, file sizes, every INT8 candidate and every gate, written to
benchmarks/results/export-<date>-<host>.md.

    python benchmarks/export_report.py [MODEL.keras|model.hdf5] --records ../shared/data/wfdb \
        [--records ../shared/data/formats] [--search wide]

The real records are split three ways by the export itself (calibration, recipe choice, gate), so
every figure on real records below comes from exams the file was neither calibrated nor chosen on.
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

from ecg_edge.atomic_files import atomic_write_text
from ecg_edge.export.pipeline import ExportGateError, ExportOptions, export_model
from ecg_edge.home import home_model_path
from ecg_edge.manifest import load_manifest
from ecg_edge.training.models import load_keras_model

RESULTS = Path(__file__).parent / "results"


def _agreement(p: dict | None) -> str:
    if not p:
        return "-"
    low, high = p["exam_agreement_ci95"]
    return f"{p['exam_agreement']:.1%} ({p['n_exams'] - p['exams_changed']}/{p['n_exams']}; {low:.0%}-{high:.0%})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path, nargs="?")
    parser.add_argument("--records", type=Path, action="append", default=[])
    parser.add_argument("--search", choices=("quick", "wide"), default="quick")
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
        try:
            export_model(load_keras_model(model), out, ExportOptions(int8_search=args.search),
                         validation=args.records, log=print, warn=print)
            failed = ""
        except ExportGateError as exc:
            failed = str(exc)
        seconds = time.perf_counter() - start
        manifest = load_manifest(out)

    int8 = manifest.get("int8", {})
    candidates = int8.get("candidates", [])
    lines = [f"# Export {dt.date.today().isoformat()} on {platform.node()}", "",
             f"Model: {model} ({manifest['model']['kind']}, thresholds: {manifest['thresholds_source']}).",
             f"Whole export (Keras -> ONNX, FP16, INT8 with {len(candidates)} recipes measured, every gate): "
             f"{seconds:.0f} s on {platform.processor() or 'CPU'}.", ""]
    val, cal = manifest["validation"], manifest["calibration"]
    lines += [f"ECGs: calibration {cal['real']} real + {cal['synthetic']} synthetic; recipe choice "
              f"{val['choice']['real']} real + {val['choice']['synthetic']} synthetic; "
              f"gate {val['gate']['real']} real + {val['gate']['synthetic']} synthetic (disjoint; real records from "
              f"{', '.join(map(str, args.records)) or 'none'}).", ""]
    if failed:
        lines += [f"Gate failures: {failed}", ""]
    lines += ["Files against FP32 ONNX (FP32 against Keras) on the gate set; exams unchanged with the 95% Wilson "
              "interval:", "",
              "| file | precision | MB | vs | max abs diff | exams unchanged (all) | exams unchanged (real only) |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, e in manifest["files"].items():
        p = e.get("parity")
        lines.append(f"| {name} | {e['precision']} {e['variant']} | {e['bytes'] / 1e6:.1f} | {p['reference']} | "
                     f"{p['max_abs_diff']:.2e} | {_agreement(p)} | {_agreement(e.get('parity_real'))} |")
    for name, p in manifest.get("rejected", {}).items():
        lines.append(f"| {name} (rejected) | | | {p['reference']} | {p['max_abs_diff']:.2e} | {_agreement(p)} | |")
    if int8.get("expected_agreement"):
        x = int8["expected_agreement"]
        lines += ["", f"INT8 agreement to expect on real ECGs: {x['agreement']:.1%} of exams keep their findings "
                  f"(95% CI {x['ci95'][0]:.1%}-{x['ci95'][1]:.1%}, {x['exams']} real exams)."]
    if candidates:
        lines += ["", f"INT8 candidates, scored on the choice set (chosen: {int8.get('recipe')}):", "",
                  "| recipe | exams unchanged (all) | real only | max abs diff | ms/exam |",
                  "| --- | --- | --- | --- | --- |"]
        lines += [f"| {'**' if c.get('chosen') else ''}{c['recipe']}{'**' if c.get('chosen') else ''} | "
                  f"{_agreement(c['choice'])} | {_agreement(c.get('choice_real'))} | "
                  f"{c['choice']['max_abs_diff']:.2e} | {c['ms_per_exam']:.1f} |" for c in candidates]
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"export-{dt.date.today().isoformat()}-{platform.node() or 'host'}.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

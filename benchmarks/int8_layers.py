"""Which layers make INT8 change findings on real ECGs, and what keeping them in float buys.

Three disjoint sets of the real recordings, as export makes them (calibration, choice, gate). On the
choice set, each convolution (and the classifier) is kept in float alone and the INT8 file's per-exam
agreement with FP32 measured: the layers whose float copy helps most are the ones that flip
findings. Then those layers, one more at a time, are kept in float together, each file measured on
the choice set, and the best few measured once on the gate set (never used to choose), with the
speed of each against plain INT8 and FP32 in the same run.

    python benchmarks/int8_layers.py MODEL.keras REAL_DIR_OR_FILES... [--top 4]

(e.g. the demo's home model and ../shared/data/real's labelled set converted by the demo:
~/.ecg-edge/model.keras ~/.ecg-edge/data/labelled.h5). Writes benchmarks/results/int8-layers-<date>.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ecg_edge.atomic_files import atomic_write_text
from ecg_edge.backends.base import infer_all
from ecg_edge.backends.onnxruntime import OnnxRuntimeBackend
from ecg_edge.host import cpu_model
from ecg_edge.parity import compare
from ecg_edge.spec import called

RESULTS = Path(__file__).parent / "results"


def outputs(path: Path, x: np.ndarray) -> tuple[np.ndarray, float]:
    with OnnxRuntimeBackend(path, precision="int8") as runner:
        infer_all(runner, x[:8], batch=8)  # warm
        start = time.perf_counter()
        out = infer_all(runner, x, batch=32)
        return out, (time.perf_counter() - start) * 1e3 / len(x)


def threshold_crowding(ref: np.ndarray, out: np.ndarray, thresholds: np.ndarray, classes: list[str]) -> list[str]:
    """Where INT8's flips come from: per class, how many exams flip and how close FP32 put them to the
    threshold. A model whose probabilities crowd a threshold flips exams at any small change."""
    flips = called(ref, thresholds) != called(out, thresholds)
    margin = np.abs(ref - thresholds)
    change = np.abs(out - ref)
    lines = ["| class | threshold | exams flipped | FP32 within 0.02 of the threshold | median FP32 distance, "
             "flipped exams | median |dp| |", "|---|---|---|---|---|---|"]
    for k, c in enumerate(classes):
        flipped = flips[:, k]
        lines.append(f"| {c} | {thresholds[k]:.3f} | {int(flipped.sum())} of {len(ref)} | "
                     f"{(margin[:, k] < 0.02).mean():.0%} | "
                     f"{f'{np.median(margin[flipped, k]):.4f}' if flipped.any() else '-'} | "
                     f"{np.median(change[:, k]):.4f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    import onnx

    from ecg_edge.export.heldout import held_out_sets
    from ecg_edge.export.onnx_export import keras_to_onnx
    from ecg_edge.export.pipeline import ExportOptions
    from ecg_edge.export.precision import Int8Recipe, preprocess_for_quantization, quantize_int8
    from ecg_edge.training.models import load_keras_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("real", type=Path, nargs="+")
    parser.add_argument("--top", type=int, default=4, help="layers kept in float together, at most")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--no-layers", dest="layers", action="store_false",
                        help="skip the layer search: plain INT8 on the gate set and where its flips come from")
    args = parser.parse_args(argv)
    loaded = load_keras_model(args.model)
    classes = list(loaded.info["classes"])
    thresholds = np.array([loaded.info["thresholds"][c] for c in classes], np.float32)
    sets = held_out_sets((), args.real, ExportOptions(n_synthetic_validation=0, min_gate_exams=0))
    n = sets.n_real
    lines = [f"# INT8 layer by layer on real ECGs, {dt.date.today()}", "",
             f"{cpu_model()}; model {args.model}; real exams: calibration {n['calibration']}, choice "
             f"{n['choice']}, gate {n['gate']} (disjoint, split as export splits them; no synthetic ECGs).", ""]
    base = Int8Recipe(method="percentile")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        fp32, _ = keras_to_onnx(loaded.model, folder / "model.onnx", loaded.info["task"])
        prepared = preprocess_for_quantization(fp32, folder / "prepared.onnx")
        with OnnxRuntimeBackend(fp32) as runner:
            ref_choice, ref_gate = infer_all(runner, sets.recipe_set, 32), infer_all(runner, sets.gate, 32)
            start = time.perf_counter()
            infer_all(runner, sets.gate, 32)
            fp32_ms = (time.perf_counter() - start) * 1e3 / len(sets.gate)
        graph = onnx.load(str(prepared)).graph
        candidates = [node.name for node in graph.node if node.op_type in ("Conv", "MatMul", "Gemm")]

        def quantized(recipe: Int8Recipe, x: np.ndarray, name: str) -> tuple[np.ndarray, float]:
            return outputs(quantize_int8(prepared, folder / f"{name}.onnx", sets.calibration, recipe), x)

        def scored(out: np.ndarray, ms: float, ref: np.ndarray) -> tuple[float, float, float]:
            parity = compare(ref, out, thresholds, "fp32", classes=classes)
            return parity.exam_agreement, parity.max_abs_diff, ms

        def agreement(recipe: Int8Recipe, x: np.ndarray, ref: np.ndarray, name: str) -> tuple[float, float, float]:
            return scored(*quantized(recipe, x, name), ref)

        plain_gate_out, plain_gate_ms = quantized(base, sets.gate, "gate-plain")
        gate_plain = scored(plain_gate_out, plain_gate_ms, ref_gate)
        crowding = ["", f"Where plain INT8's flips come from, on the gate set ({gate_plain[0]:.1%} of exams keep their "
                    f"findings; FP32 {fp32_ms:.1f} ms/exam, INT8 {gate_plain[2]:.1f}):", "",
                    *threshold_crowding(ref_gate, plain_gate_out, thresholds, classes), ""]
        if not args.layers:
            lines[0] = f"# Where INT8's flips come from on real ECGs, {dt.date.today()}"
            lines += crowding
            return _write(lines, args.out or RESULTS / f"int8-margins-{dt.date.today()}.md")
        plain = agreement(base, sets.recipe_set, ref_choice, "plain")
        print(f"plain INT8 on the choice set: {plain[0]:.1%}", flush=True)
        gains = []
        for k, name in enumerate(candidates):
            got = agreement(replace(base, float_names=(name,)), sets.recipe_set, ref_choice, f"one-{k}")
            gains.append((got[0] - plain[0], name))
            print(f"  {name} in float: {got[0]:.1%} ({got[0] - plain[0]:+.1%})", flush=True)
        gains.sort(reverse=True)
        lines += ["Each layer kept in float alone, on the choice set (plain INT8: "
                  f"{plain[0]:.1%} of exams keep their findings):", "", "| layer | agreement change |", "|---|---|"]
        lines += [f"| {name} | {gain:+.1%} |" for gain, name in gains]
        chosen: list[str] = []
        rows = []
        for _gain, name in gains[: args.top]:
            chosen.append(name)
            recipe = replace(base, float_names=tuple(chosen))
            choice = agreement(recipe, sets.recipe_set, ref_choice, f"top-{len(chosen)}")
            rows.append((len(chosen), recipe, choice))
            print(f"top {len(chosen)} in float: choice {choice[0]:.1%}", flush=True)
        best = max(rows, key=lambda row: (row[2][0], -row[0]))
        gate_best = agreement(best[1], sets.gate, ref_gate, "gate-best")
    lines += ["", "The most helpful layers kept in float together, on the choice set:", "",
              "| layers in float | agreement | max |dp| | ms/exam |", "|---|---|---|---|"]
    lines += [f"| {k} | {c[0]:.1%} | {c[1]:.2e} | {c[2]:.1f} |" for k, _, c in rows]
    lines += ["", f"On the gate set ({n['gate']} real exams, used for nothing else), FP32 {fp32_ms:.1f} ms/exam:", "",
              "| INT8 | agreement | max |dp| | ms/exam |", "|---|---|---|---|",
              f"| plain (percentile) | {gate_plain[0]:.1%} | {gate_plain[1]:.2e} | {gate_plain[2]:.1f} |",
              f"| {best[0]} layers in float ({', '.join(best[1].float_names)}) | {gate_best[0]:.1%} | "
              f"{gate_best[1]:.2e} | {gate_best[2]:.1f} |", "",
              "Target: 97% of real gate exams keep their findings.", *crowding]
    return _write(lines, args.out or RESULTS / f"int8-layers-{dt.date.today()}.md")


def _write(lines: list[str], out: Path) -> int:
    text = "\n".join(lines) + "\n"
    print(text)
    atomic_write_text(out, text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

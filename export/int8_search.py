"""Which INT8 recipe: each candidate quantized and scored on the recipe set, never on the gate set."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ecg_edge.export.gate import Gate, onnx_outputs
from ecg_edge.export.heldout import MIN_REAL_GATE_EXAMS, HeldOut
from ecg_edge.export.options import ONNX_NAMES
from ecg_edge.export.precision import Int8Recipe, quantize_int8
from ecg_edge.parity import compare


def choose_int8_recipe(
    prepared: Path, staging: Path, sets: HeldOut, fp32_path: Path, gate: Gate, log: Callable[[str], None],
) -> tuple[Int8Recipe, Path, list[dict[str, Any]]]:
    """Quantize with each recipe and score it on the recipe set: per-exam agreement with FP32 on its
    real ECGs (where there are at least MIN_REAL_GATE_EXAMS), then on all of it, then max |dp|, then
    measured time per exam. The chosen file becomes the export's INT8 file in `staging`; returns the
    recipe, that file and a row per candidate (the manifest's `candidates`)."""
    fp32_out = onnx_outputs(fp32_path, sets.recipe_set)
    n_real = sets.n_real["choice"]
    best = None
    candidates = []
    for k, recipe in enumerate(gate.options.recipes()):
        path = staging / f"int8-candidate-{k}.onnx"
        quantize_int8(prepared, path, sets.calibration, recipe)
        start = time.perf_counter()
        out = onnx_outputs(path, sets.recipe_set)
        ms = (time.perf_counter() - start) * 1e3 / len(sets.recipe_set)
        parity = compare(fp32_out, out, gate.thresholds, "onnx fp32", classes=gate.classes)
        row: dict[str, Any] = {"recipe": recipe.label, "ms_per_exam": round(ms, 3), "choice": parity.as_dict()}
        if n_real:
            row["choice_real"] = compare(fp32_out[:n_real], out[:n_real], gate.thresholds, "onnx fp32",
                                         classes=gate.classes).as_dict()
        candidates.append(row)
        log(f"  int8 candidate [{recipe.label}]: {parity.summary()}, {ms:.1f} ms/exam")
        # real ECGs first where there are enough to rank by (synthetic ones outnumber them), then all,
        # then the size of the worst change, then speed
        real_agreement = row["choice_real"]["exam_agreement"] if n_real >= MIN_REAL_GATE_EXAMS else 1.0
        key = (real_agreement, parity.exam_agreement, -parity.max_abs_diff, -ms)
        if best is None or key > best[0]:
            best = (key, recipe, path, len(candidates) - 1)
    assert best is not None
    _, recipe, path, chosen = best
    candidates[chosen]["chosen"] = True
    final = staging / ONNX_NAMES["int8"]
    path.replace(final)
    log(f"  chose {recipe.label}")
    return recipe, final, candidates

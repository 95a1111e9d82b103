"""The ECGs an export is calibrated, chosen and gated on: three disjoint sets of real recordings,
each filled up with synthetic ECGs."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ecg_edge.errors import InputError
from ecg_edge.export.options import ExportOptions
from ecg_edge.spec import LEADS, N_SAMPLES

# Below this many real exams the INT8 gate's figure rests mostly on synthetic ECGs (a warning), and
# the recipe search ranks on all its ECGs rather than on its real ones.
MIN_REAL_GATE_EXAMS = 20
# Seeds training never uses, one per set.
SYNTHETIC_SEEDS = {"calibration": 90_002, "recipe_set": 90_003, "gate": 90_001}


def read_exams(
    paths: Sequence[str | Path], limit: int | None = None, scale: float = 1.0
) -> tuple[np.ndarray, list[str], list[str]]:
    """Model inputs, exam ids and sources from any readable recordings, read as `infer` reads them:
    in batches, stopping at `limit` (memory stays bounded whatever the files hold)."""
    from ecg_edge.exams import ReadOptions, iter_batches
    from ecg_edge.readers import expand_inputs

    xs: list[np.ndarray] = []
    ids: list[str] = []
    sources: list[str] = []
    for batch in iter_batches(expand_inputs(paths), 64, ReadOptions(scale=scale, assess=False, measure="off"),
                              lambda message: None):
        xs.append(batch.x)
        ids += batch.ids
        sources += batch.sources
        if limit is not None and len(ids) >= limit:
            break
    if not xs:
        raise InputError(paths[0] if paths else None, "no ECGs found")
    return np.concatenate(xs)[:limit], ids[:limit], sources[:limit]


def load_ecgs(
    paths: Sequence[str | Path], limit: int | None = None, scale: float = 1.0
) -> tuple[np.ndarray, list[str]]:
    """Model inputs and exam ids (see `read_exams`)."""
    x, ids, _ = read_exams(paths, limit, scale)
    return x, ids


def _synthetic(n: int, seed: int) -> np.ndarray:
    from ecg_edge.synthetic import synthesize

    if n <= 0:
        return np.zeros((0, N_SAMPLES, len(LEADS)), np.float32)
    return synthesize(n, seed=seed)[0]


@dataclass
class HeldOut:
    """Three disjoint sets: calibration (INT8 scales), the recipe set (which INT8 recipe; `choice`
    in the manifest) and gate (every file's pass or fail). Real ECGs come first in each set;
    synthetic ones fill up. `n_real` counts the real ones under the manifest's names."""

    calibration: np.ndarray
    recipe_set: np.ndarray
    gate: np.ndarray
    n_real: dict[str, int]
    summary: dict[str, Any]

    @property
    def choice(self) -> np.ndarray:
        warnings.warn("HeldOut.choice is now HeldOut.recipe_set (the alias goes in the next release)",
                      DeprecationWarning, stacklevel=2)
        return self.recipe_set


def exam_key(source: str, exam_id: str) -> str:
    """An exam's name for splitting: file name and exam id, not the folder, so that the split is the
    same wherever the recordings are and however their path was typed."""
    return f"{Path(source).name}#{exam_id}"


def _rank(keys: Sequence[str]) -> list[int]:
    """Indices ordered by a hash of each exam's key: the split depends on the exams, not on the
    order the files were given in, and is the same on every machine."""
    return sorted(range(len(keys)), key=lambda i: hashlib.sha256(keys[i].encode()).hexdigest())


def held_out_sets(
    calibration: Sequence[str | Path], validation: Sequence[str | Path], options: ExportOptions,
) -> HeldOut:
    """Split the real recordings into calibration, recipe and gate parts (disjoint), fill each
    with synthetic ECGs (seeds training never uses), and say where each part came from."""
    real_x = np.zeros((0, N_SAMPLES, len(LEADS)), np.float32)
    keys: list[str] = []
    if validation:
        real_x, ids, sources = read_exams(validation, limit=options.validation_limit)
        keys = [exam_key(src, i) for src, i in zip(sources, ids, strict=True)]
    cal_parts: list[np.ndarray] = []
    overlap = 0
    if calibration:
        cal_x, cal_ids, cal_sources = read_exams(calibration, limit=options.n_calibration)
        cal_parts.append(cal_x)
        cal_keys = {exam_key(src, i) for src, i in zip(cal_sources, cal_ids, strict=True)}
        keep = [i for i, k in enumerate(keys) if k not in cal_keys]  # calibrated on: never gated on
        overlap = len(keys) - len(keep)
        real_x, keys = real_x[keep], [keys[i] for i in keep]
    order = _rank(keys)
    if not calibration and order:
        # a third of the real ECGs calibrate (up to the calibration size); the rest choose and gate
        n_cal = min(options.n_calibration, len(order) // 3)
        cal_parts.append(real_x[sorted(order[:n_cal])])
        order = order[n_cal:]
    recipe_idx, gate_idx = sorted(order[0::2]), sorted(order[1::2])
    n_cal_real = sum(len(p) for p in cal_parts)
    n_cal_synth = max(0, options.n_calibration - n_cal_real)
    n_synth_recipe, n_synth = (max(options.n_synthetic_validation, options.min_gate_exams - len(idx))
                               for idx in (recipe_idx, gate_idx))
    seeds = SYNTHETIC_SEEDS
    sets = HeldOut(
        calibration=np.concatenate(cal_parts + [_synthetic(n_cal_synth, seed=seeds["calibration"])]),
        recipe_set=np.concatenate([real_x[recipe_idx], _synthetic(n_synth_recipe, seed=seeds["recipe_set"])]),
        gate=np.concatenate([real_x[gate_idx], _synthetic(n_synth, seed=seeds["gate"])]),
        n_real={"calibration": n_cal_real, "choice": len(recipe_idx), "gate": len(gate_idx)},
        summary={},
    )
    cal = sets.calibration
    sets.summary = {
        "calibration": {"source": [str(p) for p in calibration or validation], "real": n_cal_real,
                        "synthetic": n_cal_synth, "synthetic_seed": seeds["calibration"], "n": len(cal),
                        "mean_mv": float(cal.mean()), "std_mv": float(cal.std()),
                        "p99_abs_mv": float(np.percentile(np.abs(cal), 99))},
        "validation": {"source": [str(p) for p in validation], "limit": options.validation_limit,
                       "read": len(keys) + overlap, "dropped_as_calibration": overlap,
                       "choice": {"real": len(recipe_idx), "synthetic": n_synth_recipe,
                                  "synthetic_seed": seeds["recipe_set"]},
                       "gate": {"real": len(gate_idx), "synthetic": n_synth, "synthetic_seed": seeds["gate"]},
                       "split": "by sha256 of file name#exam id; calibration, choice and gate are disjoint"},
        "validation_source": "real and synthetic" if gate_idx else "synthetic",
    }
    return sets


def held_out_warning(sets: HeldOut, options: ExportOptions) -> str | None:
    """What a user must know about the gate set before the figures come: too few real ECGs, or none."""
    n_real_gate = sets.n_real["gate"]
    if n_real_gate == 0:
        return ("warning: the gates run on synthetic ECGs only (no --validation recordings): pass real "
                "recordings to learn what INT8 does to real findings")
    if n_real_gate < MIN_REAL_GATE_EXAMS and "int8" in options.precisions:
        return (f"warning: only {n_real_gate} real exams reach the INT8 gate (calibration and recipe choice take "
                f"the others); under {MIN_REAL_GATE_EXAMS} its figure rests mostly on synthetic ECGs")
    return None

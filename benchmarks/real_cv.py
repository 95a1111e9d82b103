"""Fine-tuning on real ECGs, scored by k-fold cross-validation by record: every labelled recording is
scored by models that never trained on it, so each figure rests on all of them, not on a held-out third.

    python benchmarks/real_cv.py [--data ../shared/data/real] [--pretrained SYNTHETIC.keras] [--folds 5]

1. The labelled recordings (`DATA/labels.csv`) converted once, as `demo --records` converts them.
2. The synthetic-only start: `--pretrained` (e.g. the demo's `synthetic.keras`), else trained here on
   `--synthetic` ECGs for `--synthetic-epochs`.
3. Each fold (records ranked by a hash of their key, every k-th held out): the six-class model trained
   further, every layer, with the demo's recipe (`training.train.real_recipe`); the binary transfer model
   (freeze 5, cut 45, three Conv1D + three Dense) with the demo's (`real_transfer_recipe`). Both
   predict the held-out fold at thresholds chosen on that fold's own validation fifth.
4. Pooled over the folds: per class n, positives, AUROC and F1 with 95% bootstrap intervals, for the
   synthetic-only start, the fine-tuned model and the heart-rate rule (CODE's definitions: SB < 50 bpm,
   ST > 100 bpm), all on the same recordings; and the issue's targets beside them.

Bounded: k trainings of `--epochs` epochs (early stopping may end one sooner). Pooled AUROC mixes
the folds' models, each scored on its own fold, whose scores need not be on one scale.
Writes benchmarks/results/real-cv-<date>.md and .json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from rate_rule import RULES, record_rates  # benchmarks/ beside this script

from ecg_edge.atomic_files import atomic_write_text
from ecg_edge.spec import CLASSES, called
from ecg_edge.training.evaluate import evaluate
from ecg_edge.training.labels import (
    labelled_recordings,
    split_by_record,
)
from ecg_edge.training.metrics import auroc, bootstrap_ci, threshold_metrics
from ecg_edge.training.train import (
    REAL_EPOCHS,
    REAL_TRANSFER_EPOCHS,
    TrainOptions,
    finetune_model,
    real_recipe,
    real_transfer_recipe,
    retrain_model,
    train_model,
)

RESULTS = Path(__file__).parent / "results"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
# The targets on real recordings the model never saw.
TARGETS = {"SB": ("f1", 0.85), "ST": ("f1", 0.85), "AF": ("auroc", 0.90), "abnormal": ("auroc", 0.85)}


def figure(y: np.ndarray, value: np.ndarray, metric: str, n_boot: int, seed: int) -> dict[str, Any]:
    """A metric on (labels, scores or 0/1 calls) with its 95% bootstrap interval."""
    def fn(a: np.ndarray, b: np.ndarray) -> float:
        return auroc(a, b) if metric == "auroc" else threshold_metrics(a, b.astype(bool))["f1"]

    lo, hi = bootstrap_ci(fn, y, value, n=n_boot, seed=seed)
    return {"value": fn(y, value), "ci95": [lo, hi]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=DATA, help="a folder of recordings with a labels.csv")
    parser.add_argument("--pretrained", type=Path, help="the synthetic-only six-class model to start from")
    parser.add_argument("--synthetic", type=int, default=1000, help="without --pretrained: synthetic ECGs")
    parser.add_argument("--synthetic-epochs", type=int, default=3)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=REAL_EPOCHS, help="six-class model, per fold")
    parser.add_argument("--transfer-epochs", type=int, default=REAL_TRANSFER_EPOCHS, help="binary model, per fold")
    parser.add_argument("--lr", type=float, help="six-class learning rate (default: the recipe's)")
    parser.add_argument("--no-balance", dest="balance", action="store_false",
                        help="no class weights for the six-class model (the recipe weights rare classes)")
    parser.add_argument("--adapt-bn", action=argparse.BooleanOptionalAction, default=None,
                        help="both models: batch-norm statistics from each fold's real recordings, then fixed "
                             "(default: as the recipe says; --no-adapt-bn for the earlier recipe)")
    parser.add_argument("--models", default="six,binary", help="which to fine-tune: six, binary or both")
    parser.add_argument("--boot", type=int, default=1000, help="bootstrap resamples per figure")
    parser.add_argument("--out", type=Path, default=RESULTS / f"real-cv-{dt.date.today():%Y-%m-%d}")
    args = parser.parse_args()
    models = set(args.models.split(","))
    if not models or models - {"six", "binary"}:
        raise SystemExit(f"--models {args.models!r}: six, binary or six,binary")
    started = time.perf_counter()
    recipe, transfer = real_recipe(epochs=args.epochs), real_transfer_recipe(epochs=args.transfer_epochs)
    recipe = replace(recipe, balance=args.balance, learning_rate=args.lr or recipe.learning_rate,
                     adapt_batch_norm=recipe.adapt_batch_norm if args.adapt_bn is None else args.adapt_bn)
    transfer = replace(transfer,
                       adapt_batch_norm=transfer.adapt_batch_norm if args.adapt_bn is None else args.adapt_bn)

    with tempfile.TemporaryDirectory(prefix="real-cv-") as tmp_name:
        tmp = Path(tmp_name)
        labelled = labelled_recordings([args.data], tmp)
        if labelled is None:
            raise SystemExit(f"{args.data}: no labels.csv keyed by record")
        h5, labels_csv = labelled
        start = args.pretrained
        if start is None:
            from ecg_edge.synthetic import write_synthetic_set

            syn_h5, syn_csv = write_synthetic_set(tmp / "synthetic.h5", args.synthetic, seed=0)
            start, _ = train_model([syn_h5], syn_csv, tmp / "synthetic.keras",
                                   TrainOptions(epochs=args.synthetic_epochs, batch_size=32, validation_fraction=0.1))
        before = evaluate(start, [h5], labels_csv, n_boot=1)
        order = {k: i for i, k in enumerate(before["_ids"])}
        n = len(order)
        p_six, calls = np.full((n, len(CLASSES)), np.nan), np.zeros((n, len(CLASSES)), dtype=bool)
        p_abnormal, calls_abnormal = np.full(n, np.nan), np.zeros(n, dtype=bool)
        y_abnormal = np.full(n, -1)
        folds = []
        for i in range(args.folds):
            t0 = time.perf_counter()
            (fit_h5, fit_csv), (test_h5, test_csv) = split_by_record(h5, labels_csv, 0.0, tmp, seed="cv",
                                                                     fold=(i, args.folds))
            fold: dict[str, Any] = {"fold": i}
            if "six" in models:
                six, six_info = retrain_model(start, [fit_h5], fit_csv, tmp / f"six-{i}.keras", recipe)
                scored = evaluate(six, [test_h5], test_csv, n_boot=1)
                rows = [order[k] for k in scored["_ids"]]
                p_six[rows] = scored["_p"]
                calls[rows] = np.column_stack([called(scored["_p"][:, c], scored["thresholds"][name])
                                               for c, name in enumerate(CLASSES)])
                fold |= {"held_out": len(rows), "epochs_run": six_info.get("epochs_run"),
                         "thresholds": scored["thresholds"]}
            if "binary" in models:
                binary, _ = finetune_model(start, [fit_h5], fit_csv, tmp / f"binary-{i}.keras", transfer)
                abnormal = evaluate(binary, [test_h5], test_csv, n_boot=1)
                rows_b = [order[k] for k in abnormal["_ids"]]
                p_abnormal[rows_b] = abnormal["_p"][:, 0]
                calls_abnormal[rows_b] = called(abnormal["_p"][:, 0],
                                                abnormal["thresholds"][abnormal["classes"][0]])
                y_abnormal[rows_b] = abnormal["_y"][:, 0]
                fold.setdefault("held_out", len(rows_b))
            folds.append(fold | {"seconds": round(time.perf_counter() - t0)})
            print(f"fold {i + 1}/{args.folds}: {fold['held_out']} held out, {folds[-1]['seconds']} s", flush=True)
            for path in (fit_h5, fit_csv, test_h5, test_csv):
                path.unlink()
    assert ("six" not in models or not np.isnan(p_six).any()) and ("binary" not in models or (y_abnormal >= 0).all()), \
        "a record no fold held out"

    y = before["_y"].astype(bool)
    bpm = record_rates(args.data)
    rate = np.array([bpm.get(k, np.nan) for k in before["_ids"]])
    result: dict[str, Any] = {
        "date": f"{dt.date.today():%Y-%m-%d}", "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}", "data": str(args.data), "records": n, "folds": folds,
        "pretrained": str(args.pretrained or f"{args.synthetic} synthetic ECGs, {args.synthetic_epochs} epochs"),
        "recipe": {"six": vars(recipe) if "six" in models else None,
                   "binary": vars(transfer) if "binary" in models else None}, "classes": {},
        "minutes": round((time.perf_counter() - started) / 60, 1)}
    p_before = before["_p"]
    calls_before = np.column_stack([called(p_before[:, c], before["thresholds"][name])
                                    for c, name in enumerate(CLASSES)])
    for c, name in enumerate(CLASSES):
        yc = y[:, c]
        row: dict[str, Any] = {"n": n, "positives": int(yc.sum())}
        for who, p, k in (("synthetic-only", p_before[:, c], calls_before[:, c]), ("fine-tuned", p_six[:, c],
                                                                                  calls[:, c])):
            if who == "fine-tuned" and "six" not in models:
                continue
            row[who] = {"auroc": figure(yc, p, "auroc", args.boot, c), "f1": figure(yc, k, "f1", args.boot, c)}
        if name in RULES:
            with np.errstate(invalid="ignore"):
                rule = RULES[name](rate) & ~np.isnan(rate)
            row["rate rule"] = {"f1": figure(yc, rule, "f1", args.boot, c)}
        result["classes"][name] = row
    yb = y_abnormal.astype(bool)
    if "binary" in models:
        result["classes"]["abnormal"] = {"n": n, "positives": int(yb.sum()), "fine-tuned": {
            "auroc": figure(yb, p_abnormal, "auroc", args.boot, 9),
            "f1": figure(yb, calls_abnormal, "f1", args.boot, 9)}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(result, indent=1, default=str))
    atomic_write_text(args.out.with_suffix(".md"), markdown(result))
    print(markdown(result))


def _cell(s: dict[str, Any] | None) -> str:
    if s is None or np.isnan(s["value"]):
        return "-"
    lo, hi = s["ci95"]
    return f"{s['value']:.2f} ({lo:.2f}-{hi:.2f})"


def markdown(r: dict[str, Any]) -> str:
    six, binary = r["recipe"]["six"], r["recipe"]["binary"]
    lines = [f"# Fine-tuning on real ECGs, {len(r['folds'])}-fold cross-validation "
             f"by record, {r['date']}", "",
             f"{r['records']} real recordings ({r['data']}); {r['machine']}; {r['minutes']} min. Start: "
             f"{r['pretrained']}. "
             + (f"Six-class model trained further, every layer: {six['epochs']} epochs, lr {six['learning_rate']}, "
                f"batch {six['batch_size']}, augmentation {six['augment']}, rare classes weighted {six['balance']}, "
                f"batch-norm statistics from the real recordings {six.get('adapt_batch_norm', False)}, validation "
                "fifth by record (thresholds at its best F1). " if six else "")
             + (f"Binary transfer model (freeze 5, cut 45): {binary['epochs']} epochs, lr {binary['learning_rate']}, "
                f"batch-norm statistics from the real recordings {binary.get('adapt_batch_norm', False)}. "
                if binary else "")
             + "Every recording is scored by the fold that held it out; 95% bootstrap intervals over recordings.", "",
             "| class | n | positives | who | AUROC (95% CI) | F1 (95% CI) | target |", "|---|---|---|---|---|---|---|"]
    for name, row in r["classes"].items():
        target = TARGETS.get(name)
        for who in ("synthetic-only", "fine-tuned", "rate rule"):
            if who not in row:
                continue
            s = row[who]
            mark = ""
            if target and who == "fine-tuned":
                value = s[target[0]]["value"]
                mark = f"{target[0].upper() if target[0] == 'f1' else 'AUROC'} >= {target[1]}: " \
                       f"{'met' if value >= target[1] else 'missed'}"
            lines.append(f"| {name} | {row['n']} | {row['positives']} | {who} | {_cell(s.get('auroc'))} | "
                         f"{_cell(s.get('f1'))} | {mark} |")
    lines += ["", "| fold | held out | epochs run | minutes |", "|---|---|---|---|"]
    lines += [f"| {f['fold'] + 1} | {f['held_out']} | {f.get('epochs_run', '-')} | {f['seconds'] / 60:.1f} |"
              for f in r["folds"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

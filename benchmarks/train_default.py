"""Train the project's default model on the real labelled recordings, resumable, and score it.

    python benchmarks/train_default.py train --data ../shared/data --work /tmp/default-model
    python benchmarks/train_default.py score --data ../shared/data --work /tmp/default-model
    python benchmarks/train_default.py ship --report benchmarks/results/default-model-DATE.json --version 1

`train` prepares `real/`, `ptbxl/` and `cinc-more/` once into a cache, splits by patient (PTB-XL's
patient-wise strat_fold 7 validation, 8 test; the other sources by a hash of the record, 15% each) and
trains `corpus_recipe` from scratch on the rest; thresholds are chosen on the validation part only.
Run it again after an interruption: it resumes from the last finished epoch. `score` scores the test
part (never trained on, never used for a choice) per class and source with 95% intervals and writes
benchmarks/results/default-model-*.md and .json; `ship --report THAT.json` makes the model the package's
default (training/default/), only if its pooled test AUROC beats the shipped one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def corpus_and_parts(data: Path, work: Path):
    from ecg_edge.training.corpus import build_corpus
    from ecg_edge.training.default_model import DEFAULT_FOLDERS, default_parts

    corpus = build_corpus([data / f for f in DEFAULT_FOLDERS], work / "cache", log=lambda line: print(line, flush=True))
    return corpus, default_parts(corpus.rows)


def train(args: argparse.Namespace) -> None:
    from ecg_edge.training.corpus import CORPUS_COLUMNS, part_rows, write_rows
    from ecg_edge.training.train import corpus_recipe, train_model

    corpus, parts = corpus_and_parts(args.data, args.work)
    rows = part_rows(corpus.rows, parts, "train", "validation")
    csv_path = write_rows(rows, args.work / "train-validation.csv", (*CORPUS_COLUMNS, "part"))
    counts = {p: sum(v == p for v in parts.values()) for p in ("train", "validation", "test")}
    print(f"exams: {counts}", flush=True)
    options = corpus_recipe(args.seed, args.epochs)
    start = time.perf_counter()

    def epoch_end(epoch: int, logs: dict) -> None:
        numbers = "  ".join(f"{k} {v:.4g}" for k, v in logs.items() if isinstance(v, float))
        print(f"epoch {epoch + 1}/{options.epochs} done at {time.perf_counter() - start:.0f} s  {numbers}", flush=True)

    def batch_end(epoch: int, done: int, batches: int, rate: float, left: float) -> None:
        print(f"  epoch {epoch + 1} batch {done}/{batches}  {rate:.1f} ECG/s  epoch ends in {left:.0f} s", flush=True)

    path, info = train_model(corpus.files, csv_path, args.work / "model.keras", options, epoch_end, batch_end)
    print(json.dumps({"model": str(path), **info}, indent=1), flush=True)


def score(args: argparse.Namespace) -> None:
    from ecg_edge.spec import CLASSES
    from ecg_edge.training.corpus import part_rows, write_rows
    from ecg_edge.training.data import HDF5Sequence, read_labels_csv
    from ecg_edge.training.default_model import SPLIT_TEXT
    from ecg_edge.training.evaluate import score_classes
    from ecg_edge.training.models import load_keras_model
    from ecg_edge.training.train import predict_sequence

    corpus, parts = corpus_and_parts(args.data, args.work)
    model_path = args.model or args.work / "model.keras"
    _, model, info = load_keras_model(model_path)
    test_rows = part_rows(corpus.rows, parts, "test")
    csv_path = write_rows(test_rows, args.work / "test.csv")
    labels = read_labels_csv(csv_path)
    index = []
    import h5py

    for file_no, path in enumerate(corpus.files):
        with h5py.File(path, "r") as f:
            ids = [v.decode() if isinstance(v, bytes) else str(v) for v in f["exam_id"][:]]
        index += [(file_no, row) for row, exam_id in enumerate(ids) if exam_id in labels]
    seq = HDF5Sequence(corpus.files, labels, index, batch_size=64)
    order = [seq._ids[f][r] for f, r in index]
    y, p = predict_sequence(model, seq)
    source_of = {r["exam_id"]: r["source"] for r in test_rows}
    sources = np.array([source_of[e] for e in order])
    thresholds = info["thresholds"]
    report: dict = {"model": str(model_path), "thresholds": thresholds, "n_test": len(order),
                    "split": SPLIT_TEXT,
                    "pooled": score_classes(y, p, CLASSES, thresholds, n_boot=args.bootstrap), "per_source": {}}
    for source in sorted(set(sources)):
        mask = sources == source
        report["per_source"][source] = {"n": int(mask.sum()),
                                        "scores": score_classes(y[mask], p[mask], CLASSES, thresholds,
                                                                n_boot=args.bootstrap)}
    rates = exam_rates(seq)
    report["rate_rule"] = rate_rule(y, rates, sources, args.bootstrap)
    np.savez(args.work / "test-predictions.npz", y=y, p=p, ids=np.array(order), sources=sources, rates=rates)
    out = RESULTS / f"default-model-{date.today().isoformat()}"
    out.with_suffix(".json").write_text(json.dumps(report, indent=1, default=float))
    out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


RATE_RULES = {"SB < 50 bpm (CODE)": ("SB", lambda bpm: bpm < 50.0), "SB < 60 bpm": ("SB", lambda bpm: bpm < 60.0),
              "ST > 100 bpm": ("ST", lambda bpm: bpm > 100.0)}


def exam_rates(seq) -> np.ndarray:
    """Each exam's heart rate as `infer` measures it (ecg_edge.measure, rate only), NaN where none."""
    from ecg_edge.measure import measure
    from ecg_edge.spec import SAMPLING_RATE_HZ

    rates = []
    for i in range(len(seq)):
        for x in seq[i][0]:
            bpm = measure(x, SAMPLING_RATE_HZ, intervals=False).heart_rate_bpm
            rates.append(np.nan if bpm is None else bpm)
    return np.array(rates)


def rate_rule(y: np.ndarray, rates: np.ndarray, sources: np.ndarray, n_boot: int) -> dict:
    """F1 of calling SB or ST from the measured rate alone (no rate: not called), pooled and per source."""
    from ecg_edge.spec import CLASSES
    from ecg_edge.training.metrics import bootstrap_ci, threshold_metrics

    out: dict = {}
    for name, (cls, rule) in RATE_RULES.items():
        k = CLASSES.index(cls)
        called = np.where(np.isnan(rates), False, rule(np.nan_to_num(rates)))
        out[name] = {}
        for source in ["pooled", *sorted(set(sources))]:
            mask = np.ones(len(y), bool) if source == "pooled" else sources == source
            yk, ck = y[mask, k], called[mask].astype(float)
            f1 = threshold_metrics(yk, ck > 0.5)["f1"]
            ci = bootstrap_ci(lambda a, b: threshold_metrics(a, b > 0.5)["f1"], yk, ck, n=n_boot)
            out[name][source] = {"f1": f1, "ci95": list(ci), "positives": int(yk.sum())}
    return out


def mean_auroc(scores: dict) -> float:
    return float(np.nanmean([s["auroc"] for s in scores.values()]))


def ship(args: argparse.Namespace) -> None:
    """The trained model as the package's default (weights only, no optimizer state), with its info and
    test figures; refused unless its pooled test AUROC beats the one shipped (--force aside)."""
    from ecg_edge.model_info import info_path, write_model_info
    from ecg_edge.training.default_model import DEFAULT_FOLDERS, DEFAULT_MODEL, SPLIT_TEXT
    from ecg_edge.training.models import build_ribeiro, load_keras_model

    report = json.loads(Path(args.report).read_text())
    if args.model is not None and Path(args.model).resolve() != Path(report["model"]).resolve():
        raise SystemExit(f"not shipped: {args.report} scores {report['model']}, not {args.model}")
    new = mean_auroc(report["pooled"])
    if info_path(DEFAULT_MODEL).exists() and not args.force:
        old = json.loads(info_path(DEFAULT_MODEL).read_text()).get("test", {}).get("mean_auroc", 0.0)
        if new <= old:
            raise SystemExit(f"not shipped: pooled test AUROC {new:.3f} does not beat the shipped {old:.3f}")
    _, trained, info = load_keras_model(report["model"])
    corpus, parts = corpus_and_parts(args.data, args.work)
    model = build_ribeiro()
    model.set_weights(trained.get_weights())
    DEFAULT_MODEL.parent.mkdir(parents=True, exist_ok=True)
    model.save(DEFAULT_MODEL)
    info = {**info, "trained_on": list(DEFAULT_FOLDERS), "split": SPLIT_TEXT,
            "version": args.version, "card": "docs/model-card.md",
            # what it learned from and what chose its epoch and thresholds: scores elsewhere leave them out
            "trained_exams": sorted(e for e, p in parts.items() if p == "train"),
            "validation_exams": sorted(e for e, p in parts.items() if p == "validation"),
            "test": {"n": report["n_test"], "mean_auroc": new,
                     "auroc": {c: s["auroc"] for c, s in report["pooled"].items()},
                     "f1": {c: s["f1"] for c, s in report["pooled"].items()}}}
    write_model_info(DEFAULT_MODEL, info)
    print(f"wrote {DEFAULT_MODEL} ({DEFAULT_MODEL.stat().st_size / 1e6:.1f} MB), pooled test AUROC {new:.3f}")


def _cell(scores: dict, metric: str) -> str:
    value, (low, high) = scores[metric], scores["ci95"][metric]
    if value != value:
        return "-"
    return f"{value:.2f} ({low:.2f}-{high:.2f})"


def markdown(report: dict) -> str:
    lines = [f"# Default model on its test part ({report['n_test']} exams)", "", f"Split: {report['split']}.", "",
             "| source | n | class | positives | threshold | AUROC (95% CI) | F1 (95% CI) |",
             "|---|---|---|---|---|---|---|"]
    blocks = [("pooled", report["n_test"], report["pooled"])]
    blocks += [(s, v["n"], v["scores"]) for s, v in report["per_source"].items()]
    for source, n, scores in blocks:
        for c, s in scores.items():
            lines.append(f"| {source} | {n} | {c} | {s['positives']} | {s['threshold']:.3f} | {_cell(s, 'auroc')} | "
                         f"{_cell(s, 'f1')} |")
    lines += ["", "The rate rule on the same exams (the rate as `infer` measures it; no rate: not called): F1 (95% CI)",
              "", "| rule | " + " | ".join(report["rate_rule"][next(iter(report["rate_rule"]))]) + " |",
              "|---|" + "---|" * len(report["rate_rule"][next(iter(report["rate_rule"]))])]
    for name, per in report["rate_rule"].items():
        cells = [f"{v['f1']:.2f} ({v['ci95'][0]:.2f}-{v['ci95'][1]:.2f})" for v in per.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("train", "score", "ship"))
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--work", type=Path, default=Path("/tmp/default-model"))
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--report", type=Path, default=None, help="ship: the score step's JSON")
    parser.add_argument("--version", default="1", help="ship: the shipped model's version")
    parser.add_argument("--force", action="store_true", help="ship even if the figures do not improve")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.epochs is None:
        from ecg_edge.training.train import CORPUS_EPOCHS

        args.epochs = CORPUS_EPOCHS
    {"train": train, "score": score, "ship": ship}[args.step](args)


if __name__ == "__main__":
    sys.exit(main())

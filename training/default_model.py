"""The model the package ships (docs/model-card.md): the six-class network trained from scratch on the
real labelled recordings beside the checkout (`real/`, `ptbxl/`, `cinc-more/`), and the split it was
trained, chosen and scored on, so that the demo and the benchmarks score it only where it never trained.

Retrained by `python benchmarks/train_default.py train` then `score` and `ship`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from ecg_edge.errors import InputError
from ecg_edge.model_info import info_path

DEFAULT_DIR = Path(__file__).resolve().parent / "default"
DEFAULT_MODEL = DEFAULT_DIR / "ribeiro-real.keras"
DEFAULT_FOLDERS = ("real", "ptbxl", "cinc-more")
# PTB-XL's own patient-wise folds: 7 chooses (epochs, thresholds), 8 scores; the other sources' patients
# (records) by a hash, 15% each; folds 1-6 and the other 70% train.
FOLD_PARTS = {"7": "validation", "8": "test"}
OTHER_VALIDATION, OTHER_TEST = 0.15, 0.15
SPLIT_SEED = "default-model"
SPLIT_TEXT = ("PTB-XL strat_fold 1-6 and 70% of the other sources' records train, fold 7 and 15% choose "
              "(epochs, thresholds), fold 8 and 15% are scored; by patient, never by record")


def default_model() -> Path:
    """The shipped model file; InputError where this installation lacks it."""
    if not DEFAULT_MODEL.is_file():
        raise InputError(DEFAULT_MODEL, "the shipped default model is missing from this installation")
    return DEFAULT_MODEL


def default_parts(rows: Sequence[dict[str, str]]) -> dict[str, str]:
    """exam id -> train / validation / test, for corpus rows of DEFAULT_FOLDERS (training.corpus)."""
    from ecg_edge.training.corpus import assign_parts

    return assign_parts(rows, OTHER_VALIDATION, OTHER_TEST, FOLD_PARTS, SPLIT_SEED)


def install_default(home: Path, log: Callable[[str], None] = lambda line: None) -> Path:
    """HOME/model.keras (and its .json) from the shipped default model; what was there moves to
    HOME/previous/ (an export of another model must not answer for this one)."""
    from ecg_edge.fetch import home_stage, publish
    from ecg_edge.home import HOME_MODEL_NAME

    source = default_model()
    with home_stage(home) as stage:
        shutil.copyfile(source, stage / HOME_MODEL_NAME)
        shutil.copyfile(info_path(source), info_path(stage / HOME_MODEL_NAME))
        names = [HOME_MODEL_NAME, info_path(HOME_MODEL_NAME).name]
        aside = publish(stage, home, names, keep_previous=[*names, "export"])
    if aside:
        log(f"moved the previous {', '.join(aside)} to {home / 'previous'}")
    return home / HOME_MODEL_NAME

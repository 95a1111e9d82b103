"""The released network (Ribeiro et al. 2020) as the model home's default model."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from ecg_edge.fetch import RECORDS, home_stage, obtain, publish, source_md5, zip_member
from ecg_edge.home import HOME_MODEL_NAME as MODEL_FILE
from ecg_edge.model_info import default_info, info_path


def _member_name(seed: int | None) -> Callable[[str], bool]:
    """`model/model.hdf5` (the published network) or `model_<seed>.hdf5` (another training seed)."""
    if seed is None:
        return lambda name: Path(name).name == "model.hdf5"
    pattern = re.compile(rf"(^|/)model_{seed}\.hdf5$")
    return lambda name: bool(pattern.search(name))


def fetch_weights(home: Path, seed: int | None = None, from_file: Path | None = None,
                  progress: Callable[[int, int], None] | None = None,
                  log: Callable[[str], None] = lambda line: None) -> Path:
    """HOME/model.keras from the released weights, with the reference thresholds.

    The file is checked three ways before it replaces anything: the record's size and MD5, the
    zip holding the model, and the weights loading into `build_ribeiro()`. A home model or export
    already there moves to HOME/previous/ (an export of another model must not answer for this one).
    """
    from ecg_edge.training.models import load_ribeiro_weights

    record = RECORDS["weights"]
    archive, remote = obtain(record, lambda key: key.lower().endswith(".zip"), from_file, progress, log)
    with home_stage(home) as stage:
        member = "model.hdf5" if seed is None else f"model_{seed}.hdf5"
        weights = zip_member(archive, _member_name(seed), member, stage / "released.hdf5")
        model = load_ribeiro_weights(weights)  # InputError naming the first layer that does not fit
        model.save(stage / MODEL_FILE)
        info = default_info("six", "ribeiro")
        info["source"] = {"record": record.record, "doi": record.doi, "concept_doi": record.concept_doi,
                          "archive": str(archive), "member": member, "seed": seed, "md5": source_md5(archive, remote),
                          "checksum_verified": remote is not None}
        info_path(stage / MODEL_FILE).write_text(json.dumps(info, indent=1))
        aside = publish(stage, home, [MODEL_FILE, info_path(MODEL_FILE).name],
                        keep_previous=[MODEL_FILE, info_path(MODEL_FILE).name, "export"])
        if aside:
            log(f"moved the previous {', '.join(aside)} to {home / 'previous'}")
    return home / MODEL_FILE

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Tests never touch the user's ~/.ecg-edge: one throwaway home for the session (the `home` fixture
# gives a test a fresh one); `auto`'s measured CPU-runtime choice is cached there once per export.
os.environ["ECG_EDGE_HOME"] = tempfile.mkdtemp(prefix="ecg-edge-test-home-")
atexit.register(shutil.rmtree, os.environ["ECG_EDGE_HOME"], ignore_errors=True)  # one per worker process
sys.path.insert(0, str(Path(__file__).parent))

SHARED_WFDB = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wfdb"


def wfdb_records() -> list[Path]:
    return sorted(SHARED_WFDB.glob("*.hea"))


needs_shared = pytest.mark.skipif(not SHARED_WFDB.exists(), reason="../shared/data/wfdb not present")


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh, empty model home."""
    path = tmp_path / "home"
    monkeypatch.setenv("ECG_EDGE_HOME", str(path))
    return path


def write_code_hdf5(path: Path, x: np.ndarray, exam_ids=None, dtype="float32") -> Path:
    import h5py

    with h5py.File(path, "w") as f:
        f.create_dataset("tracings", data=x.astype(dtype))
        if exam_ids is not None:
            f.create_dataset("exam_id", data=np.asarray(exam_ids))
    return path


# Export options that keep tests quick: fewer calibration ECGs, one calibration method.
FAST = dict(n_calibration=32, n_synthetic_validation=24, min_gate_exams=0, int8_methods=("percentile",))
# A random-weight network's probabilities sit near its thresholds, so INT8 changes the findings of more
# of its exams than a trained one's (92.9% unchanged on the seeded model): the fixture's INT8 gate is
# lowered for it; FP16's stays where users get it.
RANDOM_WEIGHT_GATES = {"fp16": 0.995, "bf16": 0.995, "int8": 0.85}


@pytest.fixture(scope="session")
def six_model(tmp_path_factory) -> Path:
    """A random-weight six-class model (seeded), saved once and only read (`six_export` writes beside it)."""
    keras = pytest.importorskip("keras")
    from ecg_edge.training.models import build_ribeiro

    keras.utils.set_random_seed(0)
    model_path = tmp_path_factory.mktemp("six") / "six.keras"
    build_ribeiro().save(model_path)
    return model_path


@pytest.fixture(scope="session")
def six_export(six_model):
    """`six_model` exported to FP32/FP16/INT8 ONNX beside it, shared by tests (read-only: copy to change)."""
    pytest.importorskip("tf2onnx")
    from ecg_edge.export.pipeline import ExportOptions, export_model
    from ecg_edge.training.models import load_keras_model

    validation = [SHARED_WFDB] if SHARED_WFDB.exists() else []
    options = ExportOptions(**FAST, min_exam_agreement=RANDOM_WEIGHT_GATES)
    result = export_model(load_keras_model(six_model), six_model.parent / "export", options, validation=validation)
    return six_model, result


# Fixtures that train or export: a test that uses one (directly or through another fixture) is slow.
SLOW_FIXTURES = {"six_export", "trained", "finetuned"}


@pytest.hookimpl(tryfirst=True)  # before -m selects on the markers
def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)

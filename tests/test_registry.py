"""The backend registry: every backend, built in or registered later, is chosen and opened through
its entry; the manifest view finds each file in one place and hashes it once per process.
Presence facts only: no test here pretends a GPU backend runs."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
from test_infer import tiny_export

from ecg_edge import manifest as manifest_module
from ecg_edge.backends import (
    AUTO_ORDER,
    BACKENDS,
    CPU_BACKENDS,
    GPU_ORDER,
    BackendSpec,
    backend_present,
    choose_backend,
    open_backend,
    register_backend,
    registry,
)
from ecg_edge.backends import reference as stand_in
from ecg_edge.backends.base import Backend
from ecg_edge.errors import InputError
from ecg_edge.manifest import Manifest, load_manifest, verified_path


class ZeroBackend(Backend):
    """Runs nothing: probabilities of 0, for the registry's paths."""

    name = "zero"

    def _activate(self) -> None:
        pass

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return np.zeros((batch.shape[0], 6), np.float32)

    def _deactivate(self) -> None:
        pass


def zero_present(manifest: Manifest, precision: str) -> tuple[bool, str]:
    return (True, "") if precision == "fp32" else (False, "zero runs fp32 only")


def open_zero(manifest: Manifest, precision: str, options) -> ZeroBackend:
    backend = ZeroBackend()
    backend.path = manifest.verified("model.onnx")
    return backend


@pytest.fixture
def specs(monkeypatch):
    """The registry as it is, restored after the test."""
    monkeypatch.setattr(registry, "_SPECS", dict(registry._SPECS))
    return registry._SPECS


def absent(manifest: Manifest, precision: str) -> tuple[bool, str]:
    return False, "absent in this test"


def test_order_and_names():
    assert AUTO_ORDER == ("tensorrt", "ort-tensorrt", "ort-cuda", "ort-cpu", "openvino")
    assert GPU_ORDER == ("tensorrt", "ort-tensorrt", "ort-cuda") and CPU_BACKENDS == ("ort-cpu", "openvino")
    assert BACKENDS == ("tensorrt", "ort-tensorrt", "ort-cuda", "ort-cpu", "openvino", "keras")
    assert [registry.spec_of(name).kind for name in BACKENDS] == ["gpu"] * 3 + ["cpu"] * 2 + ["reference"]
    assert [name for name in BACKENDS if registry.spec_of(name).cuda_graph] == ["ort-cuda"]


def test_unknown_backend_error_text(tmp_path):
    export = tiny_export(tmp_path / "tiny")
    with pytest.raises(InputError) as raised:
        open_backend(export, "nope")
    assert str(raised.value) == ("unknown backend 'nope': choose from auto, tensorrt, ort-tensorrt, ort-cuda, "
                                 "ort-cpu, openvino, keras")
    assert backend_present("nope", load_manifest(export), "fp32") == (False, "unknown backend 'nope'")


def test_auto_asks_in_order_and_says_why_each_is_out(tmp_path, specs):
    export = tiny_export(tmp_path / "tiny")
    asked = []
    for name in BACKENDS:
        def why_not(manifest, precision, name=name):
            asked.append(name)
            return False, f"{name} is out"
        specs[name] = dataclasses.replace(specs[name], present=why_not)
    with pytest.raises(InputError, match="no backend can run it: tensorrt: tensorrt is out; ort-tensorrt: ") as raised:
        open_backend(export, "auto")
    assert asked == list(AUTO_ORDER)  # the reference is named only
    assert str(raised.value).endswith("openvino: openvino is out")


def test_a_registered_backend_is_chosen_and_opened_like_the_others(tmp_path, specs):
    export = tiny_export(tmp_path / "tiny")
    register_backend(BackendSpec("zero", "cpu", zero_present, open_zero))
    runner, manifest = open_backend(export, "zero")
    assert isinstance(runner, ZeroBackend) and runner.path == export / "model.onnx" and runner.chosen_because == ""
    assert manifest == load_manifest(export)
    assert backend_present("zero", manifest, "int8") == (False, "zero runs fp32 only")
    with pytest.raises(InputError, match="backend zero cannot run int8: zero runs fp32 only"):
        open_backend(export, "zero", "int8")
    with pytest.raises(InputError, match=r"choose from auto, .*, keras, zero$"):
        open_backend(export, "nope")
    # auto: with every other CPU runtime out, the registered one is the only one present
    for name in CPU_BACKENDS:
        specs[name] = dataclasses.replace(specs[name], present=absent)
    runner, _ = open_backend(export, "auto")
    assert isinstance(runner, ZeroBackend) and runner.chosen_because == "the only CPU runtime present"
    assert choose_backend(Manifest.load(export)) == ("zero", "the only CPU runtime present")
    with pytest.raises(InputError, match="--cuda-graph needs the ort-cuda backend; auto took zero "
                                         r"\(the only CPU runtime present\)"):
        open_backend(export, "auto", cuda_graph=True)


def test_the_older_registration_still_opens(tmp_path, specs):
    export = tiny_export(tmp_path / "tiny")
    seen = []

    def construct(folder, manifest):
        seen.append((folder, manifest["files"]["model.onnx"]["format"]))
        return ZeroBackend()

    register_backend("zero", construct)
    runner, _ = open_backend(export, "zero")
    assert isinstance(runner, ZeroBackend) and seen == [(export, "onnx")]


def test_keras_registers_over_the_stand_in(tmp_path, specs, monkeypatch):
    export = tiny_export(tmp_path / "tiny")
    manifest = load_manifest(export)
    specs["keras"] = stand_in.STAND_IN  # as before ecg_edge.training.keras_backend is imported
    monkeypatch.setattr(stand_in, "keras_installed", lambda: (False, "TensorFlow/Keras is not installed"))
    assert backend_present("keras", manifest, "fp32") == (False, "TensorFlow/Keras is not installed")
    monkeypatch.setattr(stand_in, "keras_installed", lambda: (True, ""))
    loaded = "the Keras reference is not loaded (import ecg_edge.training.keras_backend)"
    assert backend_present("keras", manifest, "fp32") == (False, loaded)
    with pytest.raises(InputError, match=re.escape(f"backend keras cannot run fp32: {loaded}")):
        open_backend(export, "keras")


def test_importing_the_keras_reference_registers_it():
    """In a fresh process: the stand-in until ecg_edge.training.keras_backend is imported (which
    needs no TensorFlow to import), then the reference's own entry, present where Keras is."""
    script = ("from ecg_edge.backends import registry, reference\n"
              "assert registry.spec_of('keras') is reference.STAND_IN\n"
              "import ecg_edge.training.keras_backend as k\n"
              "spec = registry.spec_of('keras')\n"
              "assert spec.kind == 'reference' and spec.open is k.open_keras and spec.present is k.reference_present\n"
              "k.keras_installed = lambda: (True, '')\n"
              "from ecg_edge.backends import backend_present\n"
              "assert backend_present('keras', {'files': {}}, 'fp32') == (True, '')\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def _aged(path):
    """As an export some minutes old (a file modified just now is hashed each time: see RACY_NS)."""
    old = time.time() - 600
    os.utime(path, (old, old))


@pytest.fixture
def hashes(monkeypatch):
    """Counts sha256_file's calls, with the process's digests forgotten."""
    monkeypatch.setattr(manifest_module, "_DIGESTS", {})
    calls = []
    real = manifest_module.sha256_file

    def counting(path):
        calls.append(os.path.basename(path))
        return real(path)

    monkeypatch.setattr(manifest_module, "sha256_file", counting)
    return calls


def test_auto_hashes_the_model_once_across_its_candidates(tmp_path, home, hashes):
    export = tiny_export(tmp_path / "tiny")
    _aged(export / "model.onnx")
    runner, _ = open_backend(export, "auto", "fp32")  # times each CPU runtime present, then opens one
    assert runner.name in CPU_BACKENDS and hashes == ["model.onnx"]
    for name in CPU_BACKENDS:
        if backend_present(name, load_manifest(export), "fp32")[0]:
            open_backend(export, name, "fp32")
    assert hashes == ["model.onnx"]  # once per process while the file stays as it was
    with open(export / "model.onnx", "ab") as f:
        f.write(b"changed")
    with pytest.raises(InputError, match="sha256 does not match"):
        open_backend(export, "ort-cpu", "fp32")
    assert hashes == ["model.onnx"] * 2


def test_a_file_modified_just_now_is_hashed_each_time(tmp_path, hashes):
    export = tiny_export(tmp_path / "tiny")
    manifest = load_manifest(export)
    verified_path(export, manifest, "model.onnx")
    verified_path(export, manifest, "model.onnx")
    assert hashes == ["model.onnx"] * 2
    view = Manifest.load(export)  # one view checks a file once
    view.verified("model.onnx")
    view.verified("model.onnx")
    assert hashes == ["model.onnx"] * 3


def test_manifest_view_answers_from_one_place(tmp_path):
    export = tiny_export(tmp_path / "tiny")
    data = load_manifest(export)
    data["files"]["model.int8.onnx"] = {"format": "onnx", "precision": "int8", "variant": "default", "sha256": "x"}
    data["files"]["model.int8.sym.onnx"] = {"format": "onnx", "precision": "int8", "variant": "symmetric",
                                            "sha256": "y"}
    view = Manifest(data, export)
    assert view.file_for("onnx", "int8") == "model.int8.onnx"
    assert view.file_for("onnx", "int8", "symmetric") == "model.int8.sym.onnx"
    assert view.file_for("onnx", "fp32", "symmetric") == "model.onnx"  # the variant is a preference
    assert view.file_for("tensorrt", "fp32") is None
    assert view.classes == list(data["output"]["classes"]) and view.thresholds == data["thresholds"]
    assert view.entry("model.onnx")["format"] == "onnx" and view.entry("absent") == {}
    assert view.runtime_gate("bf16") == {}
    with pytest.raises(InputError, match="listed in the manifest is missing"):
        view.verified("model.int8.onnx")
    with pytest.raises(InputError, match="not listed"):
        view.verified("other.onnx")


def test_the_contract_declares_what_callers_read():
    backend = ZeroBackend()
    assert backend.path is None and backend.last_compute_s is None and backend.chosen_because == ""
    backend.chosen_because = "because"
    with pytest.warns(DeprecationWarning, match="chosen_because"):
        assert backend.choice == "because"

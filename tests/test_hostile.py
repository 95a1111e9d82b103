"""A hostile corpus (tests/hostile.py), written here, through `infer`, `convert` and `evaluate`: every file is
exit 2 with one line naming it, at once, reading nothing outside the input; --keep-going skips them all."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from hostile import MARKER, escape_id_file, hdf5_cases
from test_infer import tiny_export
from typer.testing import CliRunner

from ecg_edge.cli import app

# Generous: every case takes well under a second; a case past this hangs (a FIFO opened, a bomb decoded).
HANG_S = 60


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail, rather than wait for ever, when the body blocks (a FIFO's open waits in the kernel: SIGALRM
    interrupts it)."""

    def expire(*_):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run(*args: str):
    with deadline(HANG_S):
        return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    return tiny_export(tmp_path_factory.mktemp("export"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    return hdf5_cases(tmp_path_factory.mktemp("corpus"))


def refused(result, path: Path) -> str:
    """The one line a refusal prints, after checking the exit code and that it names the file."""
    assert result.exit_code == 2, (path, result.exit_code, result.output, result.exception)
    errors = [line for line in result.output.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and path.name in errors[0], (path, result.output)
    assert "Traceback" not in result.output and len(errors[0]) <= 400 and MARKER.decode() not in result.output
    return errors[0]


CASES = ["hdf5 external", "hdf5 virtual", "hdf5 soft-self", "hdf5 soft-other", "hdf5 plugin", "hdf5 fill",
         "hdf5 many", "hdf5 long-id", "hdf5 record-id", "hdf5 external-ids", "hdf5 external-link"]


@pytest.mark.parametrize("case", CASES)
def test_infer_refuses(case, corpus, export):
    refused(run("infer", str(corpus[case]), "--model", str(export)), corpus[case])


@pytest.mark.parametrize("case", CASES)
def test_convert_refuses_and_writes_nothing(case, corpus, tmp_path):
    out = tmp_path / "out.h5"
    refused(run("convert", str(corpus[case]), str(out)), corpus[case])
    assert not out.exists() and not list(tmp_path.iterdir())


def test_hdf5_refusals_say_why(corpus):
    from ecg_edge import InputError, iter_recordings

    why = {"hdf5 external": "external files", "hdf5 virtual": "virtual dataset", "hdf5 soft-self": "soft link",
           "hdf5 plugin": "filter 32004", "hdf5 fill": "declares", "hdf5 many": "declares",
           "hdf5 external-link": "external link", "hdf5 long-id": "exam_id of", "hdf5 record-id": "exam_id",
           "hdf5 external-ids": "external files"}
    for case, words in why.items():
        with pytest.raises(InputError, match=words):
            list(iter_recordings(corpus[case]))


def test_keep_going_skips_every_case_and_reads_the_good_one(corpus, export, tmp_path):
    good = escape_id_file(tmp_path / "good.h5")
    out = tmp_path / "out.json"
    result = run("infer", *(str(corpus[c]) for c in CASES), str(good), "--model", str(export), "--keep-going",
                 "-o", str(out))
    assert result.exit_code == 0, result.output
    assert out.exists() and MARKER not in out.read_bytes()
    for case in CASES:
        assert corpus[case].name in result.output


def test_evaluate_refuses_external_storage(corpus, export, tmp_path):
    pytest.importorskip("keras")
    labels = tmp_path / "labels.csv"
    labels.write_text("exam_id,1dAVb,RBBB,LBBB,SB,AF,ST\nexternal:0,0,0,0,0,0,0\n")
    refused(run("evaluate", str(export), str(corpus["hdf5 external"]), str(labels)), corpus["hdf5 external"])

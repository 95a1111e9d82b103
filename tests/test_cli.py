from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from ecg_edge.cli import app

runner = CliRunner()


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("demo", "synth", "train", "finetune", "evaluate", "export", "infer", "bench"):
        assert command in result.output


def test_no_tensorflow_on_import_or_help():
    code = (
        "import sys, ecg_edge, ecg_edge.cli\n"
        "from typer.testing import CliRunner\n"
        "assert CliRunner().invoke(ecg_edge.cli.app, ['--help']).exit_code == 0\n"
        "bad = [m for m in ('tensorflow', 'keras', 'tf2onnx') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_synth_writes_set(tmp_path):
    result = runner.invoke(app, ["synth", str(tmp_path / "s.h5"), "--n", "12", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s.h5").exists() and (tmp_path / "s.csv").exists()
    assert "12 exams" in result.output


def test_user_error_is_one_line_exit_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ecg_edge.cli", "synth", str(tmp_path / "missing" / "s.h5")],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "missing" in result.stderr and "Traceback" not in result.stderr
    assert not list(tmp_path.rglob("*.h5"))


def test_every_subpackage_is_packaged():
    """A wheel holds only the packages pyproject lists: a new subpackage left out breaks `pip install`."""
    from pathlib import Path

    import pytest

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    root = Path(__file__).resolve().parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(("ecg_edge", *p.parent.relative_to(root / "ecg_edge").parts)) for p in
             (root / "ecg_edge").rglob("__init__.py")}
    assert found <= listed, sorted(found - listed)


def test_imports_point_one_way():
    """Runtime modules (ecg_edge/, the CLI aside) never import export/ or training/, and export/ and
    training/ never import each other, lazily or not: each may import the runtime only. (The Keras
    reference backend lives in training/ and registers itself with the runtime.)"""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    forbidden = {"ecg_edge": ("ecg_edge.export", "ecg_edge.training"), "export": ("ecg_edge.training",),
                 "training": ("ecg_edge.export",)}
    offenders = set()
    for folder, banned in forbidden.items():  # cli/, the top layer, may call all three
        for path in (root / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                    [a.name for a in node.names] if isinstance(node, ast.Import) else []
                offenders |= {f"{path.relative_to(root)} -> {n}" for n in names if n.startswith(banned)}
    assert offenders == set()


def test_exit_codes_documented_are_the_ones_the_commands_use():
    """docs/architecture.md's exit-code table lists what `user_errors` does with each error type."""
    import re
    from pathlib import Path

    import typer

    from ecg_edge.cli import user_errors
    from ecg_edge.errors import GateError, InputError, MachineError

    doc = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text()
    section = doc.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = {int(code) for code in re.findall(r"^\| (\d) \|", section, flags=re.M)}
    raised = {}
    for error in (GateError("gate"), InputError(None, "input"), MachineError("machine", "no")):
        @user_errors
        def command(error: Exception = error) -> None:
            raise error

        try:
            command()
        except typer.Exit as done:
            raised[type(error).__name__] = done.exit_code
    assert raised == {"GateError": 1, "InputError": 2, "MachineError": 3}
    assert documented == {0, *raised.values()}

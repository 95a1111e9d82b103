"""The import graph has no cycle: every module of ecg_edge.* (the runtime, export/, training/, cli/)
imports only modules that do not import it back, lazily or not.

Imports are read from the source with `ast`, as tests/test_cli.py's direction test does: module-level,
inside functions, under TYPE_CHECKING, and importlib.import_module("ecg_edge...") with a literal.
`from ecg_edge.x import y` is an edge to ecg_edge.x.y where that is a module, else to ecg_edge.x.
A package's own __init__ running before its modules is Python's order, not an edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# pyproject's [tool.setuptools.package-dir]: the installed package -> its folder here
FOLDERS = {"ecg_edge": ROOT / "ecg_edge", "ecg_edge.training": ROOT / "training",
           "ecg_edge.export": ROOT / "export", "ecg_edge.cli": ROOT / "cli"}


def modules() -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the installed ecg_edge packages."""
    found: dict[str, Path] = {}
    for package, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


def imported(name: str, path: Path, known: set[str]) -> list[tuple[str, int]]:
    """(module, line) for each ecg_edge module that `name` (at `path`) imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from ..y import z
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            targets = [node.args[0].value]
        for target in targets:
            while target and target not in known:  # `import ecg_edge.a.b.C`-like spellings: the module part
                target = target.rpartition(".")[0]
            if target and target != name:
                out.append((target, node.lineno))
    return out


def import_graph() -> dict[str, dict[str, list[str]]]:
    """module -> {imported module: ["file:line", ...]}."""
    found = modules()
    graph: dict[str, dict[str, list[str]]] = {name: {} for name in found}
    for name, path in found.items():
        for target, line in imported(name, path, set(found)):
            where = graph[name].setdefault(target, [])
            if f"{path.relative_to(ROOT)}:{line}" not in where:  # `from m import a, b`: one line
                where.append(f"{path.relative_to(ROOT)}:{line}")
    return graph


def cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def test_cycle_finder_finds_cycles():
    graph = {"a": {"b": []}, "b": {"c": []}, "c": {"a": [], "d": []}, "d": {}, "e": {"d": []}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b": []}, "b": {}}) == []


def test_no_import_cycle():
    graph = import_graph()
    assert "ecg_edge.backends.choice" in graph and graph["ecg_edge.backends.choice"], "imports were not read"
    found = cycles(graph)
    lines = []
    for component in found:
        lines.append("cycle: " + ", ".join(component))
        lines += [f"  {a} -> {b} ({', '.join(where)})" for a in component for b, where in sorted(graph[a].items())
                  if b in component]
    assert not found, "\n".join(lines)


# Public names that moved, by their old module: importable there for one release, with a DeprecationWarning.
MOVED = {"ecg_edge.bench": {"cpu_model": "ecg_edge.host", "package_versions": "ecg_edge.host",
                            "environment": "ecg_edge.host", "bench_backend": "ecg_edge.timing",
                            "BenchResult": "ecg_edge.timing", "percentiles": "ecg_edge.timing",
                            "N_BUFFERS": "ecg_edge.timing"},
         "ecg_edge.gpu": dict.fromkeys(("nvidia_facts", "parse_nvidia_smi", "jetson_facts", "parse_tegra_release",
                                        "parse_nvpmodel", "JETPACK_OF_L4T"), "ecg_edge.host"),
         "ecg_edge.doctor": {"cpu_isa": "ecg_edge.host", "ISA_FLAGS": "ecg_edge.host"},
         "ecg_edge.infer": {**dict.fromkeys(("Exam", "MEASURE_LEVELS", "count_exams", "iter_exams", "parse_shard",
                                             "shard_of"), "ecg_edge.exams"),
                            **dict.fromkeys(("MAX_TABLE_ROWS", "check_output_path", "merge_results", "results_table",
                                             "write_results"), "ecg_edge.results")},
         "ecg_edge.report": dict.fromkeys(("PNG_DPI", "COLOURS", "GRID_X", "window", "trace_paths", "grid_lines",
                                           "calibration_points"), "ecg_edge.sheet"),
         "ecg_edge.cli": {"resolve_export_dir": "ecg_edge.home", "check_report_dir": "ecg_edge.report",
                          "parse_thresholds": "ecg_edge.request", "infer": "ecg_edge.cli.running",
                          "bench": "ecg_edge.cli.machine", "ScaleOption": "ecg_edge.cli.options"}}


def test_moved_names_still_import_with_a_warning():
    import importlib

    import pytest

    for old, names in MOVED.items():
        module = importlib.import_module(old)
        for name, new in names.items():
            with pytest.warns(DeprecationWarning, match=rf"{old}\.{name} moved to {new}\.{name}"):
                assert getattr(module, name) is getattr(importlib.import_module(new), name)
        with pytest.raises(AttributeError):
            module.no_such_name  # noqa: B018


def test_no_module_here_uses_a_moved_name():
    """Everything in this repository imports moved names from their new module (no warning of ours fires)."""
    folders = [*FOLDERS.values(), ROOT / "benchmarks", ROOT / "tests"]
    offenders = []
    for path in (p for folder in folders for p in folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module in MOVED:
                offenders += [f"{path.relative_to(ROOT)}:{node.lineno}: from {node.module} import {a.name}"
                              for a in node.names if a.name in MOVED[node.module]]
            elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                  and f"ecg_edge.{node.value.id}" in MOVED and node.attr in MOVED[f"ecg_edge.{node.value.id}"]):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.id}.{node.attr}")
    assert offenders == []

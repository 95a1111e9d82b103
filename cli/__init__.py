"""The `ecg-edge` command line: thin commands over importable functions (docs/architecture.md, layers).

`application` holds the Typer app, its consoles and the one place where errors become exit codes;
`options` the options several commands share; each command module registers its commands on the app
with `application.command`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ecg_edge import home, report, request
from ecg_edge.cli.application import app, console, err_console, main, user_errors

__all__ = ["COMMAND_MODULES", "app", "console", "err_console", "main", "user_errors"]

# The command modules, in the order `ecg-edge --help` lists their commands: a new one joins here.
COMMAND_MODULES = ("data", "training", "exporting", "running", "machine")
for _module in COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_module}")

# Names that moved to the runtime: importable from here for one release, with a DeprecationWarning.
_MOVED = {"resolve_export_dir": home, "check_report_dir": report, "parse_thresholds": request}

if not TYPE_CHECKING:  # hidden from mypy, which then flags the old spellings in this repository
    from ecg_edge.deprecation import moved_names

    __getattr__ = moved_names(__name__, _MOVED)

"""The `ecg-edge` command line: thin commands over importable functions (docs/architecture.md, layers).

`application` holds the Typer app, its consoles and the one place where errors become exit codes;
`options` the options several commands share; each command module registers its commands on the app
with `application.command`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ecg_edge.cli.application import app, console, err_console, main, user_errors

__all__ = ["COMMAND_MODULES", "app", "console", "err_console", "main", "user_errors"]

# The command modules, in the order `ecg-edge --help` lists their commands: a new one joins here.
COMMAND_MODULES = ("data", "training", "exporting", "running", "serving", "machine")
for _module in COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_module}")

# Names that moved (to the runtime, to the command modules, to options): importable from here for one
# release, with a DeprecationWarning.
_MOVED_TO = {
    "ecg_edge.home": ("resolve_export_dir",),
    "ecg_edge.report": ("check_report_dir",),
    "ecg_edge.request": ("parse_thresholds",),
    "ecg_edge.cli.data": ("synth", "convert", "fetch"),
    "ecg_edge.cli.training": ("demo", "train", "finetune", "evaluate", "reproduce", "MAX_FLIPS_SHOWN"),
    "ecg_edge.cli.exporting": ("export", "engine", "triton", "check_trt"),
    "ecg_edge.cli.running": ("infer", "merge", "report"),
    "ecg_edge.cli.machine": ("bench", "doctor"),
    "ecg_edge.cli.options": ("RECORDINGS_HELP", "TRAINING_DATA_HELP", "AugmentOption", "BackendOption",
                             "BalanceOption", "BatchOption", "FsOption", "KeepGoingOption", "LeadsOption",
                             "ModelOption", "PrecisionOption", "ScaleOption", "SplitOption", "ThreadsOption",
                             "ThresholdOption"),
}
_MOVED = {name: importlib.import_module(module) for module, names in _MOVED_TO.items() for name in names}

if not TYPE_CHECKING:  # hidden from mypy, which then flags the old spellings in this repository
    from ecg_edge.deprecation import moved_names

    __getattr__ = moved_names(__name__, _MOVED)

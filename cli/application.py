"""The Typer application every command module registers on, its consoles, and the one place where
errors become exit codes."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from ecg_edge.errors import GateError, InputError, MachineError

# TensorFlow's C++ logging drowns the CLI's output; users can still raise it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

app = typer.Typer(
    name="ecg-edge",
    help="The Ribeiro et al. 12-lead ECG network from training to the edge.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)
_state = {"debug": False}

F = TypeVar("F", bound=Callable[..., Any])


def log(line: str) -> None:
    """A line on stderr, as written (no markup, no highlighting): progress notes, skips, warnings."""
    err_console.print(line, markup=False, highlight=False, soft_wrap=True)


def say(line: str) -> None:
    """A line on stdout, as written: what a command did."""
    console.print(line, markup=False, highlight=False, soft_wrap=True)


# Path parameters are declared readable=False: click's own check of an unreadable path prints a
# usage box, while the commands' checks name the file in one line with exit code 2.
def user_errors(fn: F) -> F:
    """A failed gate: exit code 1 with its numbers; bad input: exit code 2; a machine that cannot run
    the work: exit code 3; one line on stderr each time (`--debug` shows the traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (GateError, InputError, MachineError) as exc:
            if _state["debug"]:
                traceback.print_exc()
            code, prefix = next(v for t, v in EXIT_CODES.items() if isinstance(exc, t))
            err_console.print(f"{prefix}: {exc}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(code) from None

    return wrapper  # type: ignore[return-value]


# Error type -> (exit code, how its line starts); docs/architecture.md, "Exit codes".
EXIT_CODES: dict[type[Exception], tuple[int, str]] = {
    GateError: (1, "error"), InputError: (2, "error"), MachineError: (3, "error (this machine)"),
}


def command(name: str | None = None) -> Callable[[F], F]:
    """Register a command on the app, its errors turned into exit codes by `user_errors`."""

    def register(fn: F) -> F:
        wrapped = user_errors(fn)
        app.command(name)(wrapped)
        return wrapped

    return register


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
) -> None:
    _state["debug"] = debug


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM and Ctrl-C raise KeyboardInterrupt in the main thread while inside, and are remembered
    (`ecg_edge.stop`): what Ctrl-C cleans up (the workers, half-written files) SIGTERM cleans up too,
    and an interrupt swallowed on the way still stops the work before it publishes anything.
    Elsewhere than the main thread, nothing."""
    from ecg_edge import stop

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        stop.ask()
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stop.clear()

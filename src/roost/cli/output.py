"""Shared CLI plumbing: exit codes, JSON vs Rich output, error reporting."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import wraps
from typing import Any, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from roost.errors import ConflictError, InvalidInputError, NotFoundError, OperationTimeoutError, RoostError

console = Console()
err_console = Console(stderr=True)

# Numbered exit codes (documented in the README).
EXIT_OK = 0
EXIT_FAILED = 1          # the operation ran and failed (e.g. a deployment ended FAILED)
EXIT_USAGE = 2           # bad command line (Typer/Click)
EXIT_INVALID = 3         # invalid input: recipe, JSON, arguments
EXIT_NOT_FOUND = 4       # unknown component, deployment, file
EXIT_NO_AGENT = 5        # no agent running on that root / cannot connect
EXIT_TIMEOUT = 6         # a wait ran out
EXIT_CONFLICT = 7        # conflicting state (agent already running, deployment ended)
EXIT_UNAUTHORIZED = 8    # credentials refused


def exit_code_for(err: RoostError) -> int:
    if getattr(err, "reauthenticate", False):
        return EXIT_UNAUTHORIZED
    if isinstance(err, InvalidInputError):
        return EXIT_INVALID
    if isinstance(err, NotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(err, OperationTimeoutError):
        return EXIT_TIMEOUT
    if isinstance(err, ConflictError):
        return EXIT_CONFLICT
    if err.code in ("AGENT_NOT_RUNNING", "CONNECT_FAILED"):
        return EXIT_NO_AGENT
    return EXIT_FAILED


def exit_code_for_cause(code: str | None) -> int:
    """The exit code of an operation that ran and failed with error ``code`` (a deployment's failure
    cause): invalid input (a malformed recipe, ``*_INVALID``/``INVALID_*``) is 3, anything else 1."""
    return EXIT_INVALID if code and "INVALID" in code.split("_") else EXIT_FAILED


def fail(err: RoostError, as_json: bool = False) -> NoReturn:
    if as_json:
        print(json.dumps({"error": err.to_dict()}))
    else:
        err_console.print(f"[bold red]error[/] [dim]({err.code})[/]: {escape(err.message)}", highlight=False,
                          soft_wrap=True)
    raise typer.Exit(exit_code_for(err))


P = ParamSpec("P")
R = TypeVar("R")


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn RoostErrors into a one-line message and a numbered exit code, never a traceback."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except RoostError as err:
            fail(err, bool(kwargs.get("as_json")))

    return wrapper


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], ids: Sequence[str] = ("id",)) -> None:
    """A Rich table. Columns named in ``ids`` are never cut or wrapped (whole ids, to copy into
    another command, however narrow the terminal); the others fold rather than lose characters."""
    cells = [["" if v is None else str(v) for v in row] for row in rows]
    t = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        if col in ids:
            t.add_column(col, no_wrap=True, min_width=max([len(col), *(len(r[i]) for r in cells if i < len(r))]))
        else:
            t.add_column(col, overflow="fold")
    for row in cells:
        t.add_row(*row)
    console.print(t)


STATE_STYLE = {"RUNNING": "green", "FINISHED": "blue", "ERRORED": "red", "BROKEN": "bold red",
               "SUCCEEDED": "green", "FAILED": "red", "IN_PROGRESS": "yellow", "QUEUED": "dim",
               "CANCELED": "magenta",
               # the hub's deployment and device statuses (roost.hub.contract)
               "ROLLED_BACK": "magenta", "TIMED_OUT": "red", "ACTIVE": "yellow", "COMPLETED": "green",
               "ABORTED": "red", "SUPERSEDED": "dim", "REVOKED": "red"}


def when(value: datetime | None) -> str | None:
    """A time as the hub's JSON spells it (``2026-01-02T03:04:05.123456Z``); ``None`` stays ``None``."""
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def styled(state: str) -> str:
    style = STATE_STYLE.get(state)
    return f"[{style}]{state}[/]" if style else state

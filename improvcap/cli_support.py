"""What every command of the CLI shares: consoles, one-line errors, JSON output, common options."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from .errors import ImprovcapError

if TYPE_CHECKING:
    from rich.table import Table

err = Console(stderr=True)
out = Console()

OutOption = Annotated[Path, typer.Option("--out", help="Folder that holds the sessions.")]
SessionOption = Annotated[str | None, typer.Option(help="Session (shoot day) name; default: today's date.")]
PerformerOption = Annotated[
    list[str] | None,
    typer.Option("--performer", help="Performer ID from the performers file (repeatable); recorded with consent."),
]
PerformersFileOption = Annotated[
    Path | None, typer.Option("--performers", help="Performers file (default: performers.toml in the session folder).")
]
CalibrationOption = Annotated[
    Path | None, typer.Option("--calibration", help="Folder holding <rig>/ calibrations (default: ./calibration).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
MinFreeOption = Annotated[
    float,
    typer.Option(
        "--min-free-minutes",
        help="Start a take only with room on the disk for this many minutes of the rig's data "
        "(measured by the last take, else estimated from the rig); the live view warns "
        "below twice that.",
    ),
]
NodeKeyOption = Annotated[
    Path | None,
    typer.Option(
        "--key", help="The rig's shared key (improvcap key new): drive the capture nodes that record its other streams."
    ),
]
LslOption = Annotated[
    bool,
    typer.Option(
        "--lsl", help="Publish the takes' events and frame times as LSL streams (as [rig] lsl_outlets = true)."
    ),
]
GroupOption = Annotated[
    str | None,
    typer.Option(
        "--group",
        help="The studio's group: the session's takes belong to it (default: the rig's group; files "
        "are never readable by other users).",
    ),
]


def one_line_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn domain errors into one red line and their exit status (never a traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ImprovcapError as e:
            err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None

    return wrapper


def print_json(data: Any) -> None:
    """One JSON document on stdout: indented for a person at a terminal, compact for a pipe or a file
    (Python's compact encoder is the C one: a day's `verify --json`, megabytes of plot series, is written
    in a third of the time)."""
    indent = 2 if sys.stdout.isatty() else None
    sys.stdout.write(json.dumps(data, indent=indent, default=str, separators=None if indent else (",", ":")) + "\n")
    sys.stdout.flush()


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def new_table(title: str, **options: Any) -> Table:
    """A rich table; rich.table is imported here, not at start (a third of rich's import time)."""
    from rich.table import Table

    return Table(title=title, **options)


class StopRequest:
    """Ctrl-C, SIGTERM and SIGHUP (the terminal or ssh session closed) end a take cleanly: they only set a
    flag the main loop polls, or with `interrupt` raise KeyboardInterrupt as Ctrl-C does (for loops that
    already end cleanly on it). After SIGHUP the terminal is gone: what would be drawn on it goes nowhere,
    so that finalising the take never fails on a write to it."""

    def __init__(self, *, interrupt: bool = False) -> None:
        self.requested = False
        self._interrupt = interrupt
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        if signum == signal.SIGHUP:
            detach_from_terminal()
        if self._interrupt:
            raise KeyboardInterrupt

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def detach_from_terminal() -> None:
    """Point stdin, stdout and stderr at /dev/null (the terminal they were on has closed)."""
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for fd in (0, 1, 2):
            os.dup2(null, fd)
    finally:
        os.close(null)


@contextlib.contextmanager
def progress_bar(what: str) -> Iterator[Callable[[int, int, int, int], None] | None]:
    """verify_paths' progress callback drawing a bar over takes and bytes on a terminal (None elsewhere: a
    transient bar shows nothing in a log, and rich's progress module is not imported for it)."""
    if not err.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), console=err, transient=True)
    task = bar.add_task(what, total=None)

    def progress(done: int, total: int, bytes_done: int, bytes_total: int) -> None:
        # started here, not before: verify_paths forks its workers while it is the only thread
        bar.start()
        bar.update(task, completed=bytes_done, total=bytes_total, description=f"{what} take {done}/{total}")

    try:
        yield progress
    finally:
        bar.stop()

"""What every command of the CLI shares: consoles, one-line errors, JSON output, common options."""
from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Callable, Optional

import typer
from rich.console import Console

from .errors import ImprovcapError

if TYPE_CHECKING:
    from rich.table import Table

err = Console(stderr=True)
out = Console()

OutOption = Annotated[Path, typer.Option("--out", help="Folder that holds the sessions.")]
SessionOption = Annotated[Optional[str], typer.Option(help="Session (shoot day) name; default: today's date.")]
PerformerOption = Annotated[Optional[list[str]], typer.Option(
    "--performer", help="Performer ID from the performers file (repeatable); recorded with consent.")]
PerformersFileOption = Annotated[Optional[Path], typer.Option(
    "--performers", help="Performers file (default: performers.toml in the session folder).")]
CalibrationOption = Annotated[Optional[Path], typer.Option(
    "--calibration", help="Folder holding <rig>/ calibrations (default: ./calibration).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def one_line_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn domain errors into one red line and their exit status (never a traceback)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ImprovcapError as e:
            err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
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
    err.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def new_table(title: str, **options: Any) -> "Table":
    """A rich table; rich.table is imported here, not at start (a third of rich's import time)."""
    from rich.table import Table

    return Table(title=title, **options)

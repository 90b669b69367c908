"""events.csv (DESIGN section 5): `t_ns,kind,stream,detail`, one row per slate, mark, note, fault, drop."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .atomic import Folder, reopen_take_file, write_json_atomic
from .hashing import file_entry, read_small
from .layout import EVENT_COLUMNS, EVENTS, MANIFEST
from .manifest import MAX_MANIFEST_BYTES


def append_event(
    take_dir: Path,
    manifest: dict[str, Any],
    row: tuple[Any, ...],
    folder: Folder | None = None,
    then: Callable[[], Any] | None = None,
) -> None:
    """Add a row to a finished take's events.csv (never through a link) and its new hash to the manifest.
    `folder`: `take_dir` already open (the recorder's), which both files are written in; `then`: what else
    changes the take's files before the manifest is saved (a note goes into the WAVs' iXML)."""
    path = take_dir / EVENTS
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerow(row)
    fd = reopen_take_file(path, folder)
    try:
        os.write(fd, text.getvalue().encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    manifest["files"][EVENTS] = file_entry(path if folder is None else folder.anchored / EVENTS)
    if then is not None:
        then()
    write_json_atomic(take_dir / MANIFEST, manifest, folder=folder)


def read_events(path: Path) -> list[tuple[int, str, str, str]]:
    """Every row of events.csv as (t_ns, kind, stream, detail), in file order (csv module: details may
    hold quoted commas). A malformed file is a ValueError."""
    text = read_small(path, MAX_MANIFEST_BYTES).decode("utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or tuple(rows[0][:2]) != EVENT_COLUMNS[:2]:
        raise ValueError(f"{EVENTS}: no t_ns,kind header")
    out = []
    for i, row in enumerate(rows[1:], start=2):
        if len(row) < 2:
            continue
        try:
            t = int(row[0])
        except ValueError:
            raise ValueError(f"{EVENTS} line {i}: {row[1]} time {row[0]!r} is not an integer") from None
        out.append((t, row[1], row[2] if len(row) > 2 else "", row[3] if len(row) > 3 else ""))
    return out


def read_slates(path: Path) -> list[int]:
    """t_ns of every slate in events.csv, sorted."""
    return sorted(t for t, kind, _, _ in read_events(path) if kind == "slate")

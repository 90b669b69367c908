"""Reading a take's per-stream timing tables into numpy.

Shared by the final clock fit, sync.csv, slate detection, the reader API and verification, so that every
one of them reads the take folder the same way. A torn last row (a crash mid-write) is ignored.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import TakeError
from .hashing import open_regular
from .layout import LAYOUTS, MARKERS, marker_value, table_file

CHUNK_BYTES = 1 << 22
MAX_LINE_BYTES = 1 << 20  # a mocap row of 255 channels is about 4 kB: a longer line is no take table


def read_lines(path: Path, max_line: int = MAX_LINE_BYTES) -> bytes:
    """A table file's bytes, read in chunks; a line (or a cut last line) longer than `max_line` stops the
    read with a TakeError, so that no more than that is ever held for one line. Only regular files, never
    through a link."""
    parts: list[bytes] = []
    line = 0  # bytes of the line still open at the end of what was read
    try:
        with os.fdopen(open_regular(path), "rb") as fh:
            while chunk := fh.read(CHUNK_BYTES):
                ends = np.flatnonzero(np.frombuffer(chunk, np.uint8) == 10)
                if len(ends):
                    longest = max(line + int(ends[0]), int(np.diff(ends).max(initial=0)) - 1)
                    line = len(chunk) - 1 - int(ends[-1])
                else:
                    longest = line = line + len(chunk)
                if max(longest, line) > max_line:
                    raise TakeError(f"{path.name}: a line longer than {max_line} bytes: not a take table")
                parts.append(chunk)
    except TakeError:
        raise
    except OSError as e:
        raise TakeError(f"{path}: cannot read: {e.strerror or e}") from None
    return b"".join(parts)


def read_table(path: Path, dtype: type = np.int64, columns: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Columns of a take CSV by header name (all, or only `columns`: much faster on wide files).

    Empty cells read as 0 for ints, NaN for floats.
    """
    raw = read_lines(path)
    if not raw.endswith(b"\n"):
        raw = raw[: raw.rfind(b"\n") + 1]  # a row cut short by a crash
    header, _, body = raw.partition(b"\n")
    names = header.decode("utf-8", "replace").strip().split(",")
    wanted = list(columns) if columns is not None else names
    missing = [c for c in wanted if c not in names]
    if missing:
        raise TakeError(f"{path}: no column {missing[0]!r}")
    if not body.strip():
        return {n: np.zeros(0, dtype) for n in wanted}
    usecols = [names.index(c) for c in wanted]
    try:
        data: np.ndarray = np.loadtxt(io.BytesIO(body), delimiter=",", dtype=dtype, ndmin=2, usecols=usecols)
    except ValueError as e:
        if b",," not in body and b",\n" not in body:
            raise TakeError(f"{path}: malformed rows: {e}") from None
        # empty cells (an optional column): the slower parser fills them in
        fill = 0 if np.dtype(dtype).kind in "iu" else np.nan
        try:
            data = np.genfromtxt(
                io.BytesIO(body),
                delimiter=",",
                dtype=dtype,
                filling_values=fill,
                usecols=usecols,
                invalid_raise=True,
                ndmin=2,
            )
        except ValueError as e:
            raise TakeError(f"{path}: malformed rows: {e}") from None
    return {n: data[:, i] for i, n in enumerate(wanted)}


TIME_COLUMNS = {kind: layout.time_columns for kind, layout in LAYOUTS.items()}


def stream_table(take_dir: Path, stream: str, kind: str, time_only: bool = False) -> dict[str, np.ndarray]:
    """The table of one stream: frames.csv, blocks.csv or the mocap CSV (`time_only`: its time columns;
    a marker table: always, its text is read by read_markers)."""
    columns = TIME_COLUMNS[kind] if time_only or kind == "markers" else None
    path = take_dir / table_file(stream, kind)
    if kind in ("camera", "audio", "markers") or time_only:
        return read_table(path, columns=columns)
    table = read_table(path, dtype=np.float64)  # mocap channel values are floats
    return {k: (v.astype(np.int64) if k in TIME_COLUMNS[kind] else v) for k, v in table.items()}


def read_markers(path: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    """A marker table (`<stream>.markers.csv`): its time columns (int64) and each marker's text, read with
    the csv module (a marker may hold commas and quotes) and unescaped (layout.marker_value)."""
    raw = read_lines(path)
    raw = raw[: raw.rfind(b"\n") + 1]  # a row cut short by a crash
    rows = csv.reader(raw.decode("utf-8", "replace").splitlines())
    header = next(rows, None)
    if header is None or tuple(header) != MARKERS.columns:
        raise TakeError(f"{path}: not a marker table (expected {','.join(MARKERS.columns)})")
    times: list[list[int]] = []
    values: list[str] = []
    for n, row in enumerate(rows, start=2):
        try:
            if len(row) != len(MARKERS.columns):
                raise ValueError(f"{len(row)} cells")
            times.append([int(c) for c in row[:4]])
        except ValueError as e:
            raise TakeError(f"{path}: line {n} is no marker row ({e})") from None
        values.append(marker_value(row[4]))
    data = np.array(times, dtype=np.int64).reshape(-1, 4)
    return {c: data[:, i] for i, c in enumerate(MARKERS.time_columns)}, values

"""What every writer implements, and the CSV log they share.

A writer owns the files of one stream inside a take folder. The recorder feeds it from one thread, calls
`flush` at least once a second (so that a crash loses at most the last second) and `close` at stop.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from ..records import Record
from ..take.atomic import Folder, create_take_file, reopen_take_file


class Writer(Protocol):
    files: list[Path]
    """Every file this writer created, for the manifest's hashes."""

    def write(self, record: Record) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class CsvLog:
    """A CSV file written row by row, flushed to the OS at least once a second, fsynced on close."""

    def __init__(
        self, path: Path, header: Iterable[str] | None, flush_interval: float = 1.0, *, folder: Folder | None = None
    ) -> None:
        """A new log with `header`; `header=None` reopens an existing log to add rows (a late note).
        `folder`: the take's opened folder, which the file is made in."""
        self.path = path
        # exclusive create (never through a link): a take's files are never overwritten
        fd = create_take_file(path, folder) if header is not None else reopen_take_file(path, folder)
        self._fh = open(fd, "w" if header is not None else "a", newline="", encoding="utf-8")
        self._csv = csv.writer(self._fh, lineterminator="\n")
        if header is not None:
            self._csv.writerow(header)
            self._fh.flush()
        self._interval = flush_interval
        self._last_flush = time.monotonic()
        self.rows = 0

    def row(self, values: Iterable[Any]) -> None:
        self._csv.writerow(values)
        self.rows += 1
        if time.monotonic() - self._last_flush >= self._interval:
            self.flush()

    def flush(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            self._last_flush = time.monotonic()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()

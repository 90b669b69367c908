"""Durability while a take is written: a take folder's data reaches the disk at least once a second.

Writers hand their data to the OS at least once a second (DESIGN section 5), but the OS may keep it in
memory for half a minute before writing it back: a power cut would lose that much, or the whole take
whose folder entry never reached the disk. A FolderSyncer runs on a thread of its own, so that a slow
disk stalls only it, never a writer or a capture thread: every SYNC_INTERVAL_S it opens each regular file
of the folder read-only (its own descriptors: writers are never waited on), fdatasyncs it, and fsyncs the
folder itself (the names of new files) and, once, the folder's parent (the folder's own name).
"""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

from .layout import RESERVE

SYNC_INTERVAL_S = 0.5
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


class FolderSyncer:
    """fdatasync of every file of `folder` and fsync of `folder` every `interval` s, from its own thread.
    `dir_fd`: `folder` already open (the take's; duplicated here), else it is opened by its path."""

    def __init__(self, folder: Path, interval: float = SYNC_INTERVAL_S, *, dir_fd: int | None = None) -> None:
        self.folder = Path(folder)
        self.interval = interval
        self.passes = 0
        self.slowest_s = 0.0  # the longest pass: how far behind a slow disk has fallen
        self.error: str | None = None  # the last failure to sync (the writers meet it too)
        self._fds: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="improvcap-sync", daemon=True)
        self._dir = (
            os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
            if dir_fd is None
            else os.dup(dir_fd)
        )

    def start(self) -> FolderSyncer:
        self._sync_parent()
        self._thread.start()
        return self

    def stop(self) -> None:
        """A last pass, then every descriptor closed. The writers' own close fsyncs what they wrote after it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        try:
            self.sync_once()
        finally:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
            os.close(self._dir)

    def _run(self) -> None:
        # passes are due `interval` apart from start to start: a slow pass (a loaded disk) shortens the wait
        # after it instead of adding to it, so the folder still reaches the disk once a second
        due = time.monotonic() + self.interval
        while not self._stop.wait(max(0.0, due - time.monotonic())):
            due = max(due + self.interval, time.monotonic())
            self.sync_once()

    def _sync_parent(self) -> None:
        try:
            parent = os.open(self.folder.parent, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
            try:
                os.fsync(parent)
            finally:
                os.close(parent)
        except OSError as e:
            self.error = f"{self.folder.parent}: {e.strerror or e}"

    def sync_once(self) -> None:
        started = time.monotonic()
        try:
            with os.scandir(self._dir) as entries:
                # never the reserve: a descriptor held open would keep its room taken after it is removed
                names = [
                    e.name
                    for e in entries
                    if e.name not in self._fds and e.name != RESERVE and e.is_file(follow_symlinks=False)
                ]
            for name in names:
                self._open(name)
            for name, fd in list(self._fds.items()):
                try:
                    os.fdatasync(fd)
                except OSError as e:
                    self.error = f"{name}: {e.strerror or e}"
            os.fsync(self._dir)
        except OSError as e:
            self.error = f"{self.folder}: {e.strerror or e}"
        self.passes += 1
        self.slowest_s = max(self.slowest_s, time.monotonic() - started)

    def _open(self, name: str) -> None:
        try:
            fd = os.open(name, _READ, dir_fd=self._dir)
        except OSError:
            return  # gone again (a temporary renamed away), or not ours to open
        if stat.S_ISREG(os.fstat(fd).st_mode):
            self._fds[name] = fd
        else:
            os.close(fd)

"""Room on a take's disk: the free-space floor a take needs to start, the room kept back for its end, and
telling a full disk from other write failures.

A take that fills the disk must still end well: every stream stops, the writers close their files (the
Matroska trailer, the WAV sizes) and the manifest is written with what reached the disk. That needs room
when there is none, so each take holds a `Reserve` from its start: a preallocated hidden file that is
removed the moment the disk fills (and at every stop), giving back the room its end needs.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import TakeError
from .atomic import Folder, create_take_file
from .layout import RESERVE

RESERVE_BYTES = 16 << 20  # room kept back for a take's end: encoder flush, trailers, manifest, events
RESERVE_SHARE = 0.05  # ... but never more than this share of a small disk
DEFAULT_FLOOR_MINUTES = 3.0  # a take starts only with room for this many minutes of the rig's data
LOW_FACTOR = 2.0  # the dashboard and `ctl status` warn below this many floors of room
SYNC_ROW_BYTES = 24  # per stream and master frame in sync.csv, at most
MANIFEST_ROOM = 256 << 10  # take.json with every stream's summary and file hashes
_FULL = (errno.ENOSPC, errno.EDQUOT)

# Rough data rates of what a rig writes when no take has measured it yet (bytes per second)
ENCODED_BYTES_PER_PIXEL = 0.02  # H.264/H.265 at the default quality: about 1 MB/s for 1080p30
RAW_BYTES_PER_PIXEL = 1.5  # rawvideo/ffv1 and other intra or lossless codecs (4:2:0)
ROW_BYTES = 60  # a timing row: index, t_ns, device_ns, host_ns, counter
CHANNEL_BYTES = 12  # one mocap channel written as text
SAMPLE_BYTES = {"s16": 2, "s24": 3, "f32": 4}


def is_disk_full(error: BaseException | None) -> bool:
    """Whether an error (or one it was raised from) is the disk or the user's quota being full."""
    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, OSError) and error.errno in _FULL:
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


def free_bytes(path: Path) -> int | None:
    """Free bytes for an unprivileged user on the disk holding `path` (its nearest existing ancestor)."""
    path = Path(path).absolute()
    for folder in (path, *path.parents):
        try:
            return shutil.disk_usage(folder).free
        except OSError:
            continue
    return None


def reserve_size(path: Path) -> int:
    """The room kept back for a take's end on the disk holding `path`."""
    try:
        total = shutil.disk_usage(path).total
    except OSError:
        return RESERVE_BYTES
    return max(1 << 20, min(RESERVE_BYTES, int(total * RESERVE_SHARE)))


def rig_data_rate(streams: Iterable[Any]) -> float:
    """Bytes per second a rig writes, estimated from its settings (StreamSpec objects)."""
    rate = 0.0
    for spec in streams:
        s = spec.settings
        if spec.kind == "camera":
            per_pixel = (
                ENCODED_BYTES_PER_PIXEL
                if s.get("codec", "libx264") in ("libx264", "libx265", "h264", "hevc")
                else RAW_BYTES_PER_PIXEL
            )
            rate += s["fps"] * (s["width"] * s["height"] * per_pixel + ROW_BYTES)
        elif spec.kind == "audio":
            rate += (
                s["samplerate"] * s["channels"] * SAMPLE_BYTES.get(s.get("sample_format", "s24"), 4) + 100 * ROW_BYTES
            )
        else:
            rate += spec.nominal_rate * (ROW_BYTES + CHANNEL_BYTES * int(s.get("channels") or 0))
    return rate


def take_data_rate(files: dict[str, Any], duration_s: float | None) -> float | None:
    """Bytes per second a finished take wrote (its manifest's `files` and duration), None if unknown."""
    if not duration_s or duration_s < 1.0:
        return None
    return sum(int(f.get("bytes") or 0) for f in files.values()) / duration_s


class Reserve:
    """A preallocated hidden file in a take folder, holding back room for the take's end; `release()`
    gives it back (once, from any thread). `opened`: the take folder already open, which the file is made
    in and removed from (it must stay open until the release)."""

    def __init__(self, folder: Path, size: int, opened: Folder | None = None) -> None:
        self.path = Path(folder) / RESERVE
        self.size = size
        self._lock = threading.Lock()
        self._folder = opened
        fd = create_take_file(self.path, opened)
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as e:
            os.close(fd)
            self._remove()
            raise TakeError(f"{folder}: cannot keep {size >> 20} MiB back for the take's end: {e.strerror or e}") from e
        os.close(fd)
        self._held = True

    @classmethod
    def in_new_take(cls, take_dir: Path, opened: Folder | None = None) -> Reserve:
        """The reserve of a take folder just made; when there is no room for it, the folder (still empty:
        the take never started, its number stays free) is removed and TakeError raised."""
        try:
            return cls(take_dir, reserve_size(take_dir), opened)
        except TakeError:
            take_dir.rmdir()
            raise

    def release(self) -> bool:
        """Remove the file; True the first time."""
        with self._lock:
            if not self._held:
                return False
            self._held = False
        self._remove()
        return True

    def _remove(self) -> None:
        if self._folder is not None:
            self._folder.unlink(RESERVE)
        else:
            self.path.unlink(missing_ok=True)


def human_bytes(n: float) -> str:
    """12 B, 3.4 KiB, 5.6 MiB, ...: sizes as the live view and messages show them."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def room_line(free: int | None, minutes: float | None, low: bool) -> str:
    """`disk free 1.2 GiB (~14 min)`, with a warning when the room left is low."""
    if free is None:
        return "disk free ?"
    line = f"disk free {human_bytes(free)}" + ("" if minutes is None else f" (~{minutes:.0f} min)")
    return line + (" LOW: make room before the next take" if low else "")


class DiskRoom:
    """How much room a rig's takes need and have: the data rate (estimated from the rig, then measured by
    each finished take) against the free space where the takes go."""

    def __init__(self, streams: Iterable[Any], min_free_minutes: float = DEFAULT_FLOOR_MINUTES) -> None:
        self.rate = rig_data_rate(streams)  # bytes/s
        self.min_free_minutes = min_free_minutes

    def floor_bytes(self) -> int:
        """The free room a take needs to start: min_free_minutes of data, plus the reserve for its end."""
        return int(self.rate * self.min_free_minutes * 60) + RESERVE_BYTES

    def minutes(self, free: int) -> float:
        return max(0.0, free - RESERVE_BYTES) / max(self.rate, 1.0) / 60

    def check(self, out: Path) -> None:
        """Refuse a take (TakeError) when `out` has less room than `floor_bytes()`."""
        free = free_bytes(out)
        if free is not None and free < self.floor_bytes():
            raise TakeError(
                f"{out}: only {human_bytes(free)} free, about {self.minutes(free):.1f} min of this rig's "
                f"{human_bytes(self.rate)}/s; a take needs {self.min_free_minutes:g} min "
                f"({human_bytes(self.floor_bytes())}): make room or lower --min-free-minutes"
            )

    def left(self, where: Path | None) -> tuple[int | None, float | None, bool]:
        """(free bytes, minutes of data they hold, whether that is low) for the disk holding `where`."""
        free = free_bytes(where) if where is not None else None
        if free is None:
            return None, None, False
        minutes = self.minutes(free)
        return free, round(minutes, 1), minutes < LOW_FACTOR * self.min_free_minutes

    def measured(self, files: dict[str, Any], duration_s: float | None) -> None:
        """Take the rate a finished take wrote as the rig's from now on."""
        rate = take_data_rate(files, duration_s)
        if rate is not None:
            self.rate = rate


def refit_room_short(take_dir: Path, tables: Iterable[Path], sync_rows: int, streams: int) -> str | None:
    """Why a take's final refit cannot run for lack of room, or None when there is room: it rewrites one
    table at a time beside itself, then writes sync.csv (`sync_rows` rows of `streams` columns) and the manifest."""
    need = (
        max((p.stat().st_size for p in tables if p.is_file()), default=0)
        + sync_rows * SYNC_ROW_BYTES * streams
        + MANIFEST_ROOM
    )
    free = free_bytes(take_dir)
    if free is None or free >= need:
        return None
    return f"{human_bytes(free)} free, {human_bytes(need)} needed"

"""`improvcap ingest`: a file recorded elsewhere joins a take as one more stream on its shared clock.

The file is copied in unchanged as `<name><its suffix>` beside a timing table as a recorded stream's
(`<name>.frames.csv` / `<name>.blocks.csv`); the rig snapshot lists the stream (driver `ingest`), its
manifest entry records where it came from and how it was aligned, sync.csv is rebuilt with its columns
and the manifest's hashes are updated. Nothing of the take is overwritten: a name in use is refused.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..clock import ClockDomain
from ..errors import TakeError, UsageError
from ..take.atomic import Folder, pid_tag, rewriting, write_bytes_atomic, write_json_atomic
from ..take.hashing import file_entry
from ..take.layout import AUDIO, CAMERA, INGEST_DRIVER, MANIFEST, NAME_RE, SYNC, stream_files
from ..take.reader import Take, open_take
from ..take.sync import build_sync
from .align import Alignment, align, by_hand
from .source import Source, probe

COPY_CHUNK = 1 << 22
BLOCK_S = 1.0  # an ingested WAV's timing rows: one a second (t_ns between them is linear)
FINISHED = ("complete", "repaired")


def ingest(
    take_dir: Path,
    file: Path,
    name: str,
    *,
    by: str | None = None,
    offset_ms: float | None = None,
    channel: int | None = None,
    against: str | None = None,
    on_step: Callable[[str], None] = lambda step: None,
) -> dict[str, Any]:
    """Ingest `file` into the take as stream `name`; returns its manifest entry."""
    if not NAME_RE.match(name):
        raise UsageError(f"--as {name!r}: a stream name is letters, digits, '_', '.' and '-', not starting with '.'")
    src = probe(file)
    try:
        opened = Folder(Path(take_dir), follow=False)
    except OSError as e:
        raise TakeError(f"{take_dir}: not a take folder ({e.strerror or e})") from None
    with opened as folder:
        _lock(folder)
        take = open_take(take_dir)
        m = take.manifest
        if m.get("status") not in FINISHED:
            raise TakeError(
                f"{take.path}: status {m.get('status')!r}: only a finished take takes a file in "
                "(a crashed one: repair it first)"
            )
        names = {s.get("name") for s in m["rig"]["streams"]} | set(m.get("streams") or {})
        if name in names:
            raise UsageError(f"--as {name}: the take has a stream of that name already")
        if file.resolve().parent == take.path.resolve():
            raise UsageError(f"{file}: already in the take")
        on_step(f"aligning {file.name}")
        alignment = (
            by_hand(offset_ms) if offset_ms is not None else align(take, src, by, channel=channel, against=against)
        )
        return _write(take, folder, src, name, alignment, on_step)


def _lock(folder: Folder) -> None:
    """One ingest into a take at a time: each rewrites its manifest."""
    try:
        fcntl.flock(folder.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise TakeError(f"{folder.path}: another ingest into this take is running") from None


def _write(
    take: Take, folder: Folder, src: Source, name: str, a: Alignment, on_step: Callable[[str], None]
) -> dict[str, Any]:
    media, table = stream_files(name, src.kind, {"media": name + src.suffix})[:2]
    for rel in (media, table):
        if folder.exists(rel) or folder.is_link(rel):
            raise UsageError(f"{take.path / rel}: already exists; pick another --as")
    on_step(f"copying {src.path.name}")
    made: list[str] = []
    try:
        digest = _copy(src.path, take.path / media, folder)
        made.append(media)
        rows, text = _table(src, a)
        write_bytes_atomic(take.path / table, text, replace_existing=False, folder=folder)
        made.append(table)
        return _record(take, folder, src, name, a, digest, (media, table), rows, on_step)
    except BaseException:  # the manifest is written last: until then the files made are ours, not the take's
        for rel in made:
            folder.unlink(rel)
        raise


def _record(
    take: Take,
    folder: Folder,
    src: Source,
    name: str,
    a: Alignment,
    digest: str,
    files: tuple[str, str],
    rows: int,
    on_step: Callable[[str], None],
) -> dict[str, Any]:
    """The stream in take.json (rig snapshot and streams), sync.csv rebuilt, the hashes updated."""
    m, kind, (media, table) = take.manifest, src.kind, files
    if kind == "camera":
        assert src.file_ns is not None  # a video's frames' own times
        t_ns = a.t_ns(src.file_ns)
    else:
        t_ns = a.t_ns(np.asarray([0.0, (src.count - 1) * 1e9 / float(src.rate)]))
    spec: dict[str, Any] = {"kind": kind, "name": name, "driver": INGEST_DRIVER, "latency_ms": 0.0}
    if kind == "camera":
        spec.update(width=src.width, height=src.height, fps=float(src.rate))
    else:
        spec.update(channels=src.audio_channels, samplerate=int(src.rate))
    nominal = float(src.rate)
    effective = nominal / (1 + a.drift_ppm * 1e-6)  # samples per second of the take
    record = a.record()
    entry: dict[str, Any] = {
        "kind": kind,
        "driver": INGEST_DRIVER,
        "device": src.describe(),
        "media": media,
        "files": [media, table],
        "nominal_rate": nominal,
        "measured_rate": round(effective, 4),
        "count": src.count,
        "dropped": 0,
        "latency_ms": 0.0,
        "clock": {
            "domain": ClockDomain.FILE.value,
            "method": record["method"],
            "offset_ns": record["offset_ns"],
            "drift_ppm": record["drift_ppm"],
            "residual_p99_ns": _p99(a.residuals_ns()),
            "effective_rate": effective,
            "rows": rows,
        },
        "first_t_ns": int(t_ns[0]),
        "last_t_ns": int(t_ns[-1]),
        "state": "ok",
        "fault": None,
        "ingest": {
            "source": str(src.path.resolve()),
            "source_sha256": digest,
            "ingested_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            **record,
        },
    }
    m["rig"]["streams"].append(spec)
    m["streams"][name] = entry
    on_step(f"rebuilding {SYNC}")
    m["sync"] = build_sync(take.path, m, replace=True, folder=folder)
    hashed = m.setdefault("files", {})
    for rel in (media, table, SYNC):
        hashed[rel] = file_entry(take.path / rel)
    write_json_atomic(take.path / MANIFEST, m, folder=folder)
    return entry


def _copy(source: Path, dest: Path, folder: Folder) -> str:
    """The file copied byte for byte (never over a file of the take), fsynced; its sha256."""
    h = hashlib.sha256()
    try:
        fd = os.open(source, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise UsageError(f"{source}: cannot read: {e.strerror or e}") from None
    try:
        with rewriting(dest, pid_tag(), exclusive=True, folder=folder) as out:
            while chunk := os.read(fd, COPY_CHUNK):
                h.update(chunk)
                out.write(chunk)
    except FileExistsError:
        raise UsageError(f"{dest}: already exists; pick another --as") from None
    except OSError as e:
        raise TakeError(f"{dest}: cannot write: {e.strerror or e}") from None
    finally:
        os.close(fd)
    return h.hexdigest()


def _table(src: Source, a: Alignment) -> tuple[int, bytes]:
    """A recorded stream's timing table for the file (rows, CSV): device_ns its own time, host_ns when its
    data ended on the shared clock (a frame's t_ns, a block's end: where a recorded row's arrival would be)."""
    if src.kind == "camera":
        assert src.file_ns is not None and src.pts is not None
        t = a.t_ns(src.file_ns)
        cols = [np.arange(src.count), t, src.file_ns, t, np.arange(src.count), src.pts]
        header = CAMERA.columns
    else:
        step = max(1, int(round(BLOCK_S * float(src.rate))))
        first = np.arange(0, src.count, step, dtype=np.int64)
        frames = np.minimum(step, src.count - first)
        own = np.rint(first * 1e9 / float(src.rate)).astype(np.int64)
        t = a.t_ns(own)
        cols = [first, t, own, a.t_ns(own + np.rint(frames * 1e9 / float(src.rate))), frames]
        header = AUDIO.columns
    lines = [",".join(header)]
    empty = "," if src.kind == "audio" else ""  # adc_ns: no converter times in a file
    lines += [",".join(str(int(v)) for v in row) + empty for row in zip(*cols)]
    return len(lines) - 1, ("\n".join(lines) + "\n").encode("ascii")


def _p99(values: list[float]) -> float | None:
    return float(np.percentile(np.abs(values), 99)) if values else None

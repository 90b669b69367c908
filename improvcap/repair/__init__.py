"""`improvcap repair TAKE`: make a take cut short by a crash, `kill -9` or a power cut consistent again.

What a crash leaves: take.json still at `recording` with no stream summaries, WAV headers that still hold
their placeholder sizes, a CSV row cut mid-line, and files that end at slightly different moments (each
writer had flushed up to a different point of the last second). Repair restores what is on disk and
makes every stream agree with itself; it never deletes media:

- WAV headers are rebuilt from the data on disk (a torn last partial frame is cut);
- a torn last row (no line end, a wrong number of fields, NUL bytes from a power cut) is dropped from
  every CSV of the take (temporary file, fsync, rename), every complete row is kept;
- Matroska files are demuxed; one that cannot be read to its end cleanly is remuxed (stream copy,
  timestamps kept);
- timing rows and media are reconciled, the shorter one wins, matched frame by frame (cameras: by the
  `pts` column; audio: by sample range). A row whose frame or samples never reached the media is dropped
  (the data is gone). Media without a timing row cannot be placed on the shared clock: the media file is
  rewritten without it, and the untouched original is kept beside it as `<file>.orig` (hard link, then
  rename: at every moment the original bytes exist under one of the names);
- clocks are refitted from the raw columns (t_ns rewritten), sync.csv rebuilt, and take.json rewritten
  with per-stream summaries counted from the files, the hashes of every file (`.orig` files included),
  status `repaired` and a `repair` record: what was lost, what was done, and per stream any fault.

A stream whose files cannot be read is left exactly as found and marked failed with the reason; the
others are repaired. Running repair again (`force=True`) changes nothing material: no further row or
frame is dropped, the refit is deterministic, and the record of what the crash lost is carried over.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import TakeError, UsageError
from ..rig import NAME_RE
from ..take import space
from ..take.atomic import is_temporary
from ..take.layout import FORMAT, KINDS, MANIFEST, RATELESS_KINDS, rate_key
from ..take.manifest import LOAD_ERRORS, load_json
from .stream import one_line, positive
from .take_repair import TakeRepair

REPAIRABLE = ("recording", "interrupted")
ROOM_MARGIN = 1 << 20  # beyond the largest rewrite: the manifest, sync.csv


def repair_take(take: Path, *, force: bool = False) -> dict[str, Any]:
    """Repair the take folder `take` in place and return its new manifest (its `repair` key is the record).

    Refuses (UsageError) a take whose status is `complete` or `repaired` unless `force`, and a take whose
    files another process holds open (a recorder still writing it). A folder without a readable take
    manifest raises TakeError. Both have one-line messages.
    """
    take = Path(take)
    manifest = load_manifest(take)
    status = manifest["status"]
    if status not in REPAIRABLE and not force:
        raise UsageError(f"{take}: take is {status}; repair --force to redo its timing and hashes")
    if (pid := open_in_process(take)) is not None:
        raise UsageError(f"{take}: process {pid} has files of this take open; is it still recording?")
    check_room(take)
    return TakeRepair(take, manifest).run()


def check_room(take: Path) -> None:
    """Refuse (TakeError) before anything changes when the disk cannot hold repair's largest rewrite: each
    rewritten file is written whole beside its original before it replaces it."""
    files = [p for p in take.iterdir() if p.is_file() and not p.is_symlink() and not is_temporary(p.name)]
    need = max((p.stat().st_size for p in files), default=0) + ROOM_MARGIN
    free = space.free_bytes(take)
    if free is not None and free < need:
        raise TakeError(
            f"{take}: repair needs up to {space.human_bytes(need)} free for its rewrites, the disk has "
            f"{space.human_bytes(free)}: make room (or copy the take to a disk with room); nothing "
            "was changed"
        )


def load_manifest(take: Path) -> dict[str, Any]:
    """take.json of `take`, checked enough that stream names are safe to use as file names."""
    if take.is_symlink():
        raise TakeError(f"{take}: is a symbolic link; repair works on a take folder itself, not through a link")
    if not take.is_dir():
        raise TakeError(f"{take}: not a folder")
    path = take / MANIFEST
    if path.is_symlink():
        raise TakeError(f"{path}: {MANIFEST} is a symbolic link; repair reads only the take's own files")
    if not path.is_file():
        raise TakeError(f"{take}: no {MANIFEST}: not a take folder")
    try:
        data = load_json(path)
    except LOAD_ERRORS as e:
        raise TakeError(f"{path}: unreadable: {one_line(e)}") from None

    def bad(problem: str) -> TakeError:
        return TakeError(f"{path}: not a take manifest: {problem}")

    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise bad(f"format is not {FORMAT!r}")
    if not isinstance(data.get("status"), str):
        raise bad("no status")
    if not isinstance(data.get("t0_host_ns"), int) or isinstance(data.get("t0_host_ns"), bool):
        raise bad("no t0_host_ns")
    rig = data.get("rig")
    if not isinstance(rig, dict) or not isinstance(rig.get("streams"), list):
        raise bad("no rig snapshot with streams")
    seen = set()
    for spec in rig["streams"]:
        if not isinstance(spec, dict) or spec.get("kind") not in KINDS or not isinstance(spec.get("driver"), str):
            raise bad("a rig stream without kind or driver")
        name = spec.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name) or name in seen:
            raise bad(f"unsafe or duplicate stream name {name!r}")
        seen.add(name)
        key = rate_key(spec["kind"])
        # 0: a sync box without pulses, an irregular LSL stream, markers
        usable = positive(spec.get(key)) or (spec["kind"] in RATELESS_KINDS and spec.get(key) == 0)
        if not usable or not isinstance(spec.get("latency_ms", 0.0), (int, float)):
            raise bad(f"stream {name}: no usable {key} or latency_ms")
    if rig.get("master") is not None and rig.get("master") not in seen:
        raise bad(f"master {rig.get('master')!r} is not a stream")
    if not isinstance(data.get("streams", {}), dict):
        raise bad("streams is not a table")
    return data


def open_in_process(take: Path) -> int | None:
    """A process (other than this one) holding a file of the take open, found through /proc (Linux)."""
    prefix = str(take.resolve()) + os.sep
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return None
    for pid in pids:
        if pid == os.getpid():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(prefix):
                    return pid
            except OSError:
                continue
    return None


__all__ = ["repair_take"]

"""Take folders (DESIGN section 5): names, exclusive creation, the manifest and file hashes."""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from .errors import TakeError, UsageError

FORMAT = "improvcap.take"
VERSION = 1
MANIFEST = "take.json"
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def check_name(value: str, what: str) -> str:
    """Session and scene names become folder names: no separators, no `..`, nothing hidden."""
    if not _SAFE.match(value) or ".." in value:
        raise UsageError(f"{what} {value!r}: use letters, digits, '_', '-' or '.' (no path separators or '..')")
    return value


def default_session() -> str:
    return _dt.date.today().isoformat()


def session_folder(out: Path, session: str, rig_name: str) -> Path:
    """`<out>/<session>/`, created with its session.json on first use."""
    folder = out / check_name(session, "session")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TakeError(f"{folder}: cannot create the session folder: {e.strerror or e}") from None
    meta = folder / "session.json"
    if not meta.exists():
        write_json_atomic(meta, {
            "format": "improvcap.session",
            "session": session,
            "rig": rig_name,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "performers": [],
        })
    return folder


def add_session_performers(session_dir: Path, entries: list[dict[str, Any]]) -> None:
    """Keep session.json's list of the day's performers (with their consent) up to date."""
    meta = session_dir / "session.json"
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # session.json is a convenience; the takes carry the consent that counts
    known = {p.get("id"): p for p in data.get("performers", []) if isinstance(p, dict)}
    if all(known.get(e["id"]) == e for e in entries):
        return
    known.update({e["id"]: e for e in entries})
    data["performers"] = list(known.values())
    write_json_atomic(meta, data)


def next_take_folder(session_dir: Path, scene: str) -> tuple[Path, int]:
    """Create `<scene>_t<NNN>/` with the next free number; an existing take is never reused."""
    check_name(scene, "scene")
    pattern = re.compile(rf"^{re.escape(scene)}_t(\d{{3,}})$")
    numbers = [int(m.group(1)) for p in session_dir.iterdir() if (m := pattern.match(p.name))]
    number = max(numbers, default=0) + 1
    while True:
        folder = session_dir / f"{scene}_t{number:03d}"
        try:
            folder.mkdir()  # atomic and exclusive: two recorders cannot get the same take
            return folder, number
        except FileExistsError:
            number += 1
        except OSError as e:
            raise TakeError(f"{folder}: cannot create the take folder: {e.strerror or e}") from None


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write to a temporary file, fsync, rename over `path`, fsync the folder: never a torn manifest."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # two recorders may start a session at once
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=False, default=str)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_entry(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def file_entries(take_dir: Path) -> dict[str, dict[str, Any]]:
    """path (relative to the take) -> bytes and sha256, for every file in the take but the manifest."""
    return {str(path.relative_to(take_dir)): file_entry(path) for path in sorted(take_dir.rglob("*"))
            if path.is_file() and path.name != MANIFEST and not path.name.startswith(".")}

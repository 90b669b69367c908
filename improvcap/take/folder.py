"""Session and take folders (DESIGN section 5): safe names, session.json, exclusive creation of `<scene>_t<NNN>/`.

A session folder is worked on as an opened `Folder` (never one that is a link): session.json and the take
folders are made by name inside it."""

from __future__ import annotations

import datetime as _dt
import grp
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

from ..errors import TakeError, UsageError
from .atomic import Folder, write_json_atomic
from .layout import FOLDER_MODE, SESSION_FILE

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def check_name(value: str, what: str) -> str:
    """Session and scene names become folder names: no separators, no `..`, nothing hidden."""
    if not _SAFE.match(value) or ".." in value:
        raise UsageError(f"{what} {value!r}: use letters, digits, '_', '-' or '.' (no path separators or '..')")
    return value


def default_session() -> str:
    return _dt.date.today().isoformat()


def group_id(name: str) -> int:
    """The id of the studio's group `name` (UsageError, one line, when this machine has none)."""
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise UsageError(f"group {name!r}: no such group on this machine") from None


def session_folder(out: Path, session: str, rig_name: str, group: str | None = None) -> Path:
    """`<out>/<session>/`, created for the owner (FOLDER_MODE) with its session.json on first use. With the
    studio's `group`, the folder belongs to it and passes it on to every take and file made in it."""
    folder = out / check_name(session, "session")
    gid = None if group is None else group_id(group)
    try:
        if not folder.is_symlink():  # a link is refused by the Folder below, in one line
            folder.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
        with Folder(folder, follow=False) as opened:
            if gid is not None:
                _give_group(opened, gid)
            if not opened.exists(SESSION_FILE):
                write_json_atomic(
                    folder / SESSION_FILE,
                    {
                        "format": "improvcap.session",
                        "session": session,
                        "rig": rig_name,
                        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                        "performers": [],
                    },
                    folder=opened,
                )
    except TakeError:
        raise
    except OSError as e:
        raise TakeError(f"{folder}: cannot create the session folder: {e.strerror or e}") from None
    return folder


def add_session_performers(session_dir: Path, entries: list[dict[str, Any]]) -> None:
    """Keep session.json's list of the day's performers (with their consent) up to date."""
    meta = session_dir / SESSION_FILE
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # session.json is a convenience; the takes carry the consent that counts
    known = {p.get("id"): p for p in data.get("performers", []) if isinstance(p, dict)}
    if all(known.get(e["id"]) == e for e in entries):
        return
    known.update({e["id"]: e for e in entries})
    data["performers"] = list(known.values())
    with Folder(session_dir, follow=False) as opened:
        write_json_atomic(meta, data, folder=opened)


def next_take_folder(session_dir: Path, scene: str, number: int | None = None) -> tuple[Path, int]:
    """Create `<scene>_t<NNN>/` with the next free number, or with `number` (a capture node recording the
    controller's take: a TakeError if it exists); an existing take is never reused."""
    check_name(scene, "scene")
    pattern = re.compile(rf"^{re.escape(scene)}_t(\d{{3,}})$")
    with Folder(session_dir, follow=False) as session:
        given = number is not None
        if number is None:
            numbers = [int(m.group(1)) for name in os.listdir(session.fd) if (m := pattern.match(name))]
            number = max(numbers, default=0) + 1
        while True:
            name = f"{scene}_t{number:03d}"
            try:
                session.mkdir(name, FOLDER_MODE)  # atomic and exclusive: two recorders cannot get the same take
                session.sync()  # the take's own name survives a power cut
                return session_dir / name, number
            except FileExistsError:
                if given:
                    raise TakeError(f"{session_dir / name}: exists; a take is never overwritten") from None
                number += 1
            except OSError as e:
                raise TakeError(f"{session_dir / name}: cannot create the take folder: {e.strerror or e}") from None


def _give_group(folder: Folder, gid: int) -> None:
    """The folder owned by group `gid`, with the setgid bit: what is made in it gets that group."""
    st = os.fstat(folder.fd)
    if st.st_gid != gid:
        os.fchown(folder.fd, -1, gid)
    if not st.st_mode & stat.S_ISGID:
        os.fchmod(folder.fd, stat.S_IMODE(st.st_mode) | stat.S_ISGID)

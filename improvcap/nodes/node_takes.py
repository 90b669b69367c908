"""The takes a node recorded, as its controller reaches them: put on the controller's clock, listed, read.

A node serves only takes of its own (`<out>/<session>/<take>` whose manifest names this node), only the
files its manifest lists (and the manifest), never through a link and never outside that folder. A
controller hands it its offsets of the node's clock for a take (at the stop, or at collect for a take
the node did not get them for: it died mid-take), and the node refits the take onto the controller's
clock (improvcap.take.controller_clock), events and hashes included.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import TakeError, UsageError
from ..take.atomic import write_bytes_atomic, write_json_atomic
from ..take.controller_clock import CONTROLLER_CLOCK, ControllerClock, controller_clock_entry, events_onto
from ..take.folder import check_name
from ..take.hashing import file_entries, open_regular
from ..take.layout import LSL_CLOCK_COLUMNS, MANIFEST, node_clock_file
from ..take.manifest import load_json
from ..take.refit import refit_take

MAX_READ = 4 << 20  # bytes one read request may ask for (improvcap.link.channel.MAX_BLOB)


def own_take(out: Path, node: str, session: Any, take: Any) -> tuple[Path, dict[str, Any]]:
    """The folder and manifest of a take this node recorded (UsageError for anything else)."""
    if not isinstance(session, str) or not isinstance(take, str):
        raise UsageError("expected a session and a take name")
    folder = out / check_name(session, "session") / check_name(take, "take")
    try:
        if folder.is_symlink() or folder.parent.is_symlink() or not folder.is_dir():
            raise FileNotFoundError
        manifest = load_json(folder / MANIFEST)
    except (OSError, ValueError):
        raise UsageError(f"no take {session}/{take} of this node") from None
    if not isinstance(manifest, dict) or manifest.get("node") != node:
        raise UsageError(f"{session}/{take} is not a take this node recorded")
    return folder, manifest


def put_on_controller_clock(
    folder: Path, manifest: dict[str, Any], node: str, clock_csv: Any, controller_t0_ns: Any
) -> dict[str, Any]:
    """Keep the controller's offsets of this node's clock in the take, refit it onto the controller's
    clock, rehash it; the new manifest."""
    if manifest.get("status") == "recording":
        raise UsageError(f"{folder.name} is still recording or was cut short; repair it on this node first")
    if not isinstance(clock_csv, str) or not isinstance(controller_t0_ns, int):
        raise UsageError("retime: expected the controller's clock rows and its t0")
    header = clock_csv.split("\n", 1)[0].strip()
    if header != ",".join(LSL_CLOCK_COLUMNS):
        raise UsageError(f"retime: the clock rows' header is not {','.join(LSL_CLOCK_COLUMNS)}")
    name = node_clock_file(node)
    write_bytes_atomic(folder / name, clock_csv.encode("utf-8"))
    previous = manifest.get(CONTROLLER_CLOCK) or {}
    manifest[CONTROLLER_CLOCK] = controller_clock_entry(node, name, controller_t0_ns) | {
        "events": bool(previous.get("events")) and previous.get("t0_host_ns") == controller_t0_ns
    }
    try:
        clock = ControllerClock(folder, manifest)
    except (ValueError, TakeError) as e:
        raise UsageError(f"retime: {e}") from None
    if not manifest[CONTROLLER_CLOCK]["events"]:
        events_onto(folder, clock)
        manifest[CONTROLLER_CLOCK]["events"] = True
    failed = refit_take(folder, manifest)
    if failed:
        raise UsageError("retime: " + "; ".join(f"{n}: {why}" for n, why in failed.items()))
    manifest["files"] = file_entries(folder)
    write_json_atomic(folder / MANIFEST, manifest)
    return manifest


def listed_file(folder: Path, manifest: dict[str, Any], name: Any) -> Path:
    """A file of the take that its manifest lists (or the manifest itself), by its name in the take."""
    if not isinstance(name, str) or (name != MANIFEST and name not in manifest.get("files", {})):
        raise UsageError(f"{str(name)[:80]!r} is not a file of {folder.name}")
    path = folder / name
    if (
        any(part in ("", ".", "..") for part in Path(name).parts)
        or Path(name).is_absolute()
        or not path.resolve().is_relative_to(folder.resolve())
    ):
        raise UsageError(f"{name[:80]!r} is not a file of {folder.name}")
    return path


def read_piece(path: Path, offset: Any, length: Any) -> bytes:
    """`length` bytes (at most MAX_READ) of a take file from `offset`; fewer at its end."""
    if not isinstance(offset, int) or not isinstance(length, int) or offset < 0 or not 0 < length <= MAX_READ:
        raise UsageError(f"read: expected an offset and a length of at most {MAX_READ} bytes")
    try:
        fd = open_regular(path)
    except OSError as e:
        raise UsageError(f"{path.name}: cannot read: {e.strerror or e}") from None
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)

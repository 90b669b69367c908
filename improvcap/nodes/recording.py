"""What a node records when a controller tells it: its own streams of the controller's rig, warm between
takes like `session`, each take in `<out>/<session>/<scene>_t<NNN>/` with the controller's take number.

The controller sends the rig file's text; the node keeps the streams whose `node` is its own name and
records them as a rig of its own (improvcap.recorder), on its own clock; at the stop the controller,
which measured the node's clock, hands over its offsets and the take is refitted onto the controller's
clock (`retime`, improvcap.nodes.node_takes). Slates come from the controller at an instant on this
node's clock, and `take_files` / `read` serve the node's finished takes to `collect`.
A controller that goes away changes nothing here: a take being recorded goes on until a stop, or until
the node itself is stopped (which ends it cleanly).
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from pathlib import Path
from typing import Any, TypeGuard

from ..calibrate.store import with_latencies
from ..errors import UsageError
from ..link.wire import canonical
from ..performers import consent_digest, consent_record
from ..recorder import Recorder, RunState
from ..rig import Rig, parse_rig
from ..rig_check import MAX_CHECK_S, check_results
from ..take.controller_clock import CONTROLLER_CLOCK
from ..take.hashing import file_entry
from ..take.layout import MANIFEST, PERFORMERS_RECORD
from .node_takes import listed_file, own_take, put_on_controller_clock, read_piece


def node_rig(rig: Rig, node: str) -> Rig:
    """The streams of `rig` that node `node` records, as a rig of its own (UsageError: none)."""
    mine = tuple(dataclasses.replace(s, node=None) for s in rig.streams if s.node == node)
    if not mine:
        raise UsageError(f'rig {rig.name} gives node {node} no streams (no stream has node = "{node}")')
    master = rig.master if rig.master in {s.name for s in mine} else None
    return dataclasses.replace(rig, streams=mine, nodes=(), master=master)


BLOB = "_blob"  # a reply's bytes, sent after it (improvcap.link.channel)


def _is_number(v: object) -> TypeGuard[int | float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def take_account(folder: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """What the controller keeps of a node's take: its status, streams, files and their sha256, and the
    manifest's own (which collect fetches last)."""
    return {
        "take": folder.name,
        "status": manifest["status"],
        "files": manifest["files"],
        "faults": manifest["faults"],
        "t0_host_ns": manifest["t0_host_ns"],
        "controller_clock": manifest.get(CONTROLLER_CLOCK),
        "manifest": file_entry(folder / MANIFEST),
        "streams": {
            n: {k: s.get(k) for k in ("kind", "count", "dropped", "first_t_ns", "last_t_ns")}
            for n, s in manifest["streams"].items()
        },
    }


class NodeRecorder:
    """The node's recorder, driven by requests (serialised: one controller's command at a time)."""

    def __init__(self, name: str, out: Path) -> None:
        self.name, self.out = name, out
        self.recorder: Recorder | None = None
        self._opened: bytes | None = None  # what the open recorder was opened with
        self._lock = threading.Lock()

    def handle(self, cmd: str, request: dict[str, Any]) -> dict[str, Any] | None:
        """The reply to a recording command, or None when `cmd` is not one."""
        if cmd in ("take_files", "read"):  # reading a finished take needs no recorder: no lock
            return self._take_files(request) if cmd == "take_files" else self._read(request)
        action = {
            "open": self._open,
            "start": self._start,
            "stop": self._stop,
            "close": self._close,
            "slate": self._slate,
            "retime": self._retime,
            "check": self._check,
        }.get(cmd)
        if action is None:
            return None
        with self._lock:
            return action(request)

    def state(self) -> str:
        return "closed" if self.recorder is None else self.recorder.state.value

    def streams(self) -> list[dict[str, Any]]:
        """Each open stream as the controller's dashboard shows it (improvcap.recorder.StreamStatus)."""
        recorder = self.recorder
        if recorder is None:
            return []
        return [
            dataclasses.asdict(s) | {"peak_dbfs": [p if math.isfinite(p) else None for p in s.peak_dbfs]}
            for s in recorder.status().streams
        ]

    def _open(self, request: dict[str, Any]) -> dict[str, Any]:
        text, name = request.get("rig"), request.get("rig_name")
        latency, calibration = request.get("latency_ms") or {}, request.get("calibration")
        if not isinstance(text, str) or not isinstance(name, str):
            raise UsageError("open: expected the rig file's text and name")
        if not isinstance(latency, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in latency.values()
        ):
            raise UsageError("open: latency_ms must map streams to milliseconds")
        if calibration is not None and not isinstance(calibration, dict):
            raise UsageError("open: calibration must be the controller's take.json entry")
        opened = canonical([text, latency, calibration])
        if self.recorder is not None and opened == self._opened:
            return self._streams()  # already open with this rig and calibration: kept warm
        # the controller's calibration of this node's streams (their latencies), as its own streams get it
        rig = with_latencies(node_rig(parse_rig(text, Path(f"controller:{name}")), self.name), latency)
        self._close({})
        recorder = Recorder(rig, calibration=calibration)
        recorder.open()
        self.recorder, self._opened = recorder, opened
        return self._streams()

    def _streams(self) -> dict[str, Any]:
        assert self.recorder is not None
        return {"streams": {s.name: s.kind for s in self.recorder.rig.streams}}

    def _start(self, request: dict[str, Any]) -> dict[str, Any]:
        if self.recorder is None:
            raise UsageError("start: no rig is open on this node (open first)")
        session, scene, number = request.get("session"), request.get("scene"), request.get("number")
        if (
            not isinstance(session, str)
            or not isinstance(scene, str)
            or not isinstance(number, int)
            or isinstance(number, bool)
            or number < 1
        ):
            raise UsageError("start: expected a session, a scene and a take number")
        entries = request.get("performers", [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise UsageError("start: performers must be a list of the controller's performer records")
        # the take's consent record as the controller resolved it: the same bytes, the same hash
        extra = {
            "node": self.name,
            "controller_take": request.get("take"),
            "performers": entries,
            "performers_sha256": consent_digest(entries),
        }
        take = self.recorder.start_take(
            self.out,
            session,
            scene,
            number=number,
            extra=extra,
            attachments={PERFORMERS_RECORD: consent_record(entries)},
        )
        assert self.recorder.origin is not None
        return {"take": take.name, "t0_host_ns": self.recorder.origin.t0_ns}

    def _stop(self, request: dict[str, Any]) -> dict[str, Any]:
        if self.recorder is None or self.recorder.state is not RunState.RECORDING:
            raise UsageError("stop: no take is recording on this node")
        assert self.recorder.take_dir is not None
        at = request.get("at_node_ns")
        if isinstance(at, int) and not isinstance(at, bool):  # the controller's stop instant on this clock
            self.recorder.halt(at)
        manifest = self.recorder.stop_take()
        return take_account(self.recorder.take_dir, manifest)

    def _check(self, request: dict[str, Any]) -> dict[str, Any]:
        """`rig check` of this node's streams: what they deliver over `seconds` against the rig file."""
        seconds, tolerance = request.get("seconds"), request.get("tolerance")
        if self.recorder is None or self.recorder.state is not RunState.IDLE:
            raise UsageError("check: no rig is open and idle on this node")
        if not (_is_number(seconds) and _is_number(tolerance) and 0 < seconds <= MAX_CHECK_S and 0 < tolerance < 1):
            raise UsageError(f"check: expected seconds (at most {MAX_CHECK_S:g}) and a tolerance below 1")
        time.sleep(seconds)
        return {"streams": check_results(self.recorder, self.recorder.status(), tolerance)}

    def _slate(self, request: dict[str, Any]) -> dict[str, Any]:
        """The controller's slate, at the instant it gives on this node's clock (its devices render it)."""
        at = request.get("at_node_ns")
        if self.recorder is None or self.recorder.state is not RunState.RECORDING:
            raise UsageError("slate: no take is recording on this node")
        if not isinstance(at, int) or isinstance(at, bool):
            raise UsageError("slate: expected the instant on this node's clock")
        return {"t_ns": self.recorder.slate(at_ns=at)}

    def _retime(self, request: dict[str, Any]) -> dict[str, Any]:
        """A finished take of this node put on the controller's clock from the offsets the controller gives."""
        folder, manifest = own_take(self.out, self.name, request.get("session"), request.get("take"))
        if (
            self.recorder is not None
            and self.recorder.state is RunState.RECORDING
            and self.recorder.take_dir is not None
            and self.recorder.take_dir.resolve() == folder.resolve()
        ):
            raise UsageError(f"retime: {folder.name} is recording")
        manifest = put_on_controller_clock(folder, manifest, self.name, request.get("clock"), request.get("t0_host_ns"))
        return take_account(folder, manifest)

    def _take_files(self, request: dict[str, Any]) -> dict[str, Any]:
        folder, manifest = own_take(self.out, self.name, request.get("session"), request.get("take"))
        return take_account(folder, manifest)

    def _read(self, request: dict[str, Any]) -> dict[str, Any]:
        folder, manifest = own_take(self.out, self.name, request.get("session"), request.get("take"))
        path = listed_file(folder, manifest, request.get("file"))
        return {BLOB: read_piece(path, request.get("offset"), request.get("length"))}

    def _close(self, request: dict[str, Any]) -> dict[str, Any]:
        if self.recorder is not None:
            recorder, self.recorder, self._opened = self.recorder, None, None
            recorder.close()  # a take still recording is stopped cleanly first
        return {}

"""Take control for a running recorder: what the keyboard, the control socket and the CLI ask of it.

`TakeControl` serialises start / stop / slate / mark / note / scene changes behind one lock, so that a
key press and two socket clients cannot interleave a start with a stop. It knows nothing of screens or
sockets: `handle(request)` takes the control protocol's dicts and returns its replies.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import UsageError
from .nodes.controller import SLATE_LEAD_S, NodeController
from .performers import consent_digest, consent_record, default_path, take_performers
from .recorder import Recorder, RunState
from .take import folder as take_folder
from .take.layout import PERFORMERS_RECORD


def next_scene_name(scene: str) -> str:
    """scene1 → scene2, s09 → s10, intro → intro2."""
    m = re.match(r"^(.*?)(\d+)$", scene)
    if not m:
        return f"{scene}2"
    digits = m.group(2)
    return f"{m.group(1)}{int(digits) + 1:0{len(digits)}d}"


OPEN_WAIT_S = 30.0  # how long a start waits for the devices to finish opening


class TakeControl:
    def __init__(
        self,
        recorder: Recorder,
        out: Path,
        session: str,
        scene: str,
        *,
        performers: Sequence[str] = (),
        performers_file: Path | None = None,
        single_take: bool = False,
        nodes: NodeController | None = None,
    ) -> None:
        """`nodes`: the capture nodes that record the rig's other streams, started and stopped with each take."""
        self.recorder = recorder
        self.nodes = nodes
        self.out = out
        self.session = take_folder.check_name(session, "session")
        self.scene = take_folder.check_name(scene, "scene")
        self.session_dir = out / session
        self.performers_file = performers_file
        self.performers = list(performers)
        self.single_take = single_take  # `record`: one take, and stopping it ends the program
        self.last_take: dict[str, Any] | None = None
        self.quit = threading.Event()
        self._lock = threading.RLock()
        recorder.out = out  # its room is watched from now on, not only once a take has a folder
        recorder.on_end = self._end_soon

    # --- performers --------------------------------------------------------------------------------
    def resolve_performers(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        """The take.json entries of `ids`; unknown or revoked performers refuse the take. Read again at
        every start, so that a revocation during the day stops the next take."""
        return take_performers(ids, self.performers_file or default_path(self.session_dir))

    # --- commands ----------------------------------------------------------------------------------
    def start(self, scene: str | None = None, performers: Sequence[str] | None = None) -> dict[str, Any]:
        # a request that arrives while the devices are still opening waits for them, not fails
        if self.recorder.state is RunState.CLOSED and not self.recorder.settled.wait(OPEN_WAIT_S):
            raise UsageError(f"the devices are still opening after {OPEN_WAIT_S:g} s; try again")
        with self._lock:
            if self.recorder.state is RunState.RECORDING:
                raise UsageError(f"already recording {self.recorder.take_dir}")
            if self.single_take and self.last_take is not None:
                raise UsageError("this recorder records one take; use `improvcap session` for more")
            # a refused start changes nothing: the scene and performers become the session's once the take runs
            new_scene = self.scene if scene is None else take_folder.check_name(scene, "scene")
            new_performers = self.performers if performers is None else list(dict.fromkeys(performers))
            entries = self.resolve_performers(new_performers)
            extra = {"performers": entries, "performers_sha256": consent_digest(entries)}
            take_dir = self.recorder.start_take(
                self.out, self.session, new_scene, extra=extra, attachments={PERFORMERS_RECORD: consent_record(entries)}
            )
            if self.nodes is not None:  # the same take on every node: its number, session, scene, consent
                self.nodes.start_take(
                    self.recorder, take_dir, self.session, new_scene, self.recorder.manifest["take"], entries
                )
            self.scene, self.performers = new_scene, new_performers
            live = self.recorder.wait_live()
            take_folder.add_session_performers(self.session_dir, entries)
            return {
                "take": str(take_dir.resolve()),
                "scene": self.scene,
                "number": self.recorder.manifest["take"],
                "first_record_ms": live,
            }

    def stop(self) -> dict[str, Any]:
        with self._lock:
            if self.recorder.state is not RunState.RECORDING:
                raise UsageError("no take is recording")
            if self.nodes is not None:  # the nodes stop at the instant the controller's streams do
                self.nodes.stop_take(self.recorder, self.recorder.halt())
            manifest = self.recorder.stop_take()
            assert self.recorder.take_dir is not None
            self.last_take = take_summary(self.recorder.take_dir, manifest)
            if self.single_take:
                self.quit.set()
            return self.last_take

    def end_take(self) -> dict[str, Any] | None:
        """Stop the take if one is recording (the recorder asked for it, or the program is ending)."""
        with self._lock:
            return self.stop() if self.recorder.state is RunState.RECORDING else None

    def _end_soon(self, reason: str) -> None:
        # called from a writer thread, which must not wait for the take's end (it is part of it)
        threading.Thread(target=self.end_take, name="improvcap-end", daemon=True).start()

    def toggle(self) -> dict[str, Any]:
        with self._lock:
            return self.stop() if self.recorder.state is RunState.RECORDING else self.start()

    def slate(self, delay_s: float = 0.0) -> dict[str, Any]:
        """A slate `delay_s` from now, on the nodes' devices too (at the same instant on their clocks)."""
        with self._lock:
            recording = self.recorder.state is RunState.RECORDING
            if self.nodes is not None and recording:
                delay_s = max(delay_s, SLATE_LEAD_S)
            t = self.recorder.slate(delay_s)
            if self.nodes is not None and recording and self.recorder.origin is not None:
                self.nodes.slate(self.recorder, self.recorder.origin.t0_ns + t)
            return {"t_ns": t, "recording": recording}

    def annotate(self, kind: str, text: str, at_ns: int | None = None) -> dict[str, Any]:
        with self._lock:
            return self.recorder.annotate(kind, text, at_ns)

    def next_scene(self, scene: str | None = None) -> dict[str, Any]:
        with self._lock:
            self.scene = take_folder.check_name(scene, "scene") if scene else next_scene_name(self.scene)
            return {"scene": self.scene}

    def status(self) -> dict[str, Any]:
        status = self.recorder.status()
        return {
            "state": status.state.value,
            "session": self.session,
            "scene": self.scene,
            "take": str(status.take) if status.take else None,
            "number": self.recorder.manifest.get("take") if status.take else None,
            "elapsed_s": round(status.elapsed_s, 3),
            "performers": self.performers,
            "disk_free_bytes": status.disk_free_bytes,
            "disk_minutes_left": status.disk_minutes_left,
            "disk_low": status.disk_low,
            "streams": [
                {
                    "name": s.name,
                    "kind": s.kind,
                    "rate": round(s.rate, 3),
                    "nominal": s.nominal,
                    "count": s.count,
                    "dropped": s.dropped,
                    "fault": s.fault,
                    "peak_dbfs": [p if p > -1e9 else None for p in s.peak_dbfs],
                }
                for s in status.streams
            ],
            "last_take": self.last_take,
            **({"nodes": self.nodes.status()} if self.nodes is not None else {}),
        }

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """One control-protocol request → its reply (errors raise ImprovcapError for the server)."""
        cmd = request["cmd"]
        text = request.get("text", "")
        if not isinstance(text, str):
            raise UsageError('"text" must be a string')
        if cmd == "status":
            result = self.status()
        elif cmd == "start":
            scene, performers = request.get("scene"), request.get("performers")
            if scene is not None and not isinstance(scene, str):
                raise UsageError('"scene" must be a string')
            if performers is not None and not (
                isinstance(performers, list) and all(isinstance(p, str) for p in performers)
            ):
                raise UsageError('"performers" must be a list of performer IDs')
            result = self.start(scene, performers or None)
        elif cmd == "stop":
            result = self.stop()
        elif cmd == "slate":
            result = self.slate()
        elif cmd in ("mark", "note", "circle"):
            if cmd == "note" and not text.strip():
                raise UsageError("a note needs text")
            result = self.annotate(cmd, text if cmd != "circle" else "")
        elif cmd == "scene":
            result = self.next_scene(request.get("scene") or None)
        elif cmd == "quit":
            if self.recorder.state is RunState.RECORDING and not request.get("force"):
                raise UsageError("a take is recording: stop it first (or quit with force)")
            self.quit.set()
            result = {"quitting": True}
        else:
            raise UsageError(f"unknown command {cmd!r} (status, start, stop, slate, mark, note, circle, scene, quit)")
        return {"ok": True, **result}


def take_summary(take_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """The short account of a finished take that `record` prints and `status` reports."""
    return {
        "take": str(take_dir.resolve()),
        "status": manifest["status"],
        "duration_s": manifest["duration_s"],
        "faults": manifest["faults"],
        "performers": [p["id"] for p in manifest.get("performers", [])],
        "streams": {
            name: {k: s.get(k) for k in ("kind", "count", "dropped", "nominal_rate", "measured_rate", "state")}
            for name, s in manifest["streams"].items()
        },
    }

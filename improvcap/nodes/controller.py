"""The controller's side of a take across PCs: its nodes opened with the rig, started and stopped with
each take, their clocks logged, their takes accounted for in the controller's take.json.

`record` and `session` on a rig with streams on nodes record their own streams (`controller_rig`) and
drive the nodes through a NodeController: at open every node with streams of the rig is found, proved
the key and sent the rig (a node missing is a one-line error, nothing recorded); at each start, once the
controller's own take has its number, every node starts the take of that number and the controller
logs the node's clock offsets into `<node>.node-clock.csv` in its take; at the stop the nodes stop
first, and `take.json` → `nodes.<name>` holds what each recorded (its take folder, status, streams,
files and their sha256) and its clock fit (offset and drift onto the controller's clock, per segment).
A node that fails at a start or a stop is a fault of the take; the other streams go on. The nodes' files
stay on the nodes until they are brought together.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..clock import now_ns
from ..errors import DeviceError, ImprovcapError
from ..link.keys import SharedKey
from ..recorder import Recorder, StreamStatus
from ..records import Event
from ..rig import Rig
from ..take.controller_clock import fit_node_clock, segment_entries
from ..take.layout import node_clock_file
from .client import NodeLink
from .clock import NodeClockLog

FIND_TIMEOUT_S = 10.0
MONITOR_S = 1.0  # the dashboard's view of the nodes is this fresh
SLATE_LEAD_S = 0.1  # a slate is this far ahead at least: its message reaches every node before its instant


def account(reply: dict[str, Any]) -> dict[str, Any]:
    """The fields of a node's reply that the controller's take.json keeps."""
    return {
        k: reply[k]
        for k in ("take", "status", "t0_host_ns", "streams", "files", "faults", "manifest", "controller_clock")
        if k in reply
    }


def retime(link: NodeLink, session: str, take: str, clock_file: Path, t0_ns: int) -> dict[str, Any]:
    """The node's take refitted onto the controller's clock from the controller's offsets of the node's."""
    return link.request("retime", session=session, take=take, clock=clock_file.read_text("utf-8"), t0_host_ns=t0_ns)


def stream_status(entry: dict[str, Any]) -> StreamStatus:
    """A node's stream as its status reply gave it (improvcap.nodes.recording.NodeRecorder.streams)."""
    peaks = tuple(float("-inf") if p is None else float(p) for p in entry.get("peak_dbfs") or ())
    return StreamStatus(
        str(entry["name"]),
        str(entry["kind"]),
        str(entry.get("driver", "")),
        float(entry["rate"]),
        float(entry["nominal"]),
        int(entry["count"]),
        int(entry["dropped"]),
        peaks,
        {str(k): int(v) for k, v in (entry.get("device") or {}).items()},
        entry.get("fault"),
    )


def measure_clock(link: NodeLink, timeout: float = 5.0) -> None:
    """liblsl's first estimate of the node's clock, before any take (later ones are then at hand at once)."""
    try:
        link.found.clock_offset(timeout)
    except Exception as e:  # liblsl's TimeoutError and its kin: the node's clock cannot be measured
        raise DeviceError(f"node {link.spec.name}: its clock cannot be measured: {type(e).__name__}: {e}") from None


def on_every_node(
    links: dict[str, NodeLink], work: Callable[[str, NodeLink], None], name: str
) -> list[threading.Thread]:
    """`work(node, link)` for every node at once, a thread each (one node's answer delays no other's); the
    threads, started (join them)."""
    threads = [threading.Thread(target=work, args=item, name=f"{name}-{item[0]}") for item in links.items()]
    for thread in threads:
        thread.start()
    return threads


def joined(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join()


def offset_ms(link: NodeLink, timeout: float = 0.2) -> float | None:
    """The node's clock offset now in ms, None when liblsl has no estimate at hand (a cut link)."""
    try:
        return round(link.found.clock_offset(timeout)[0] / 1e6, 3)
    except Exception:  # liblsl's TimeoutError and its kin: nothing waits on it
        return None


def on_node_clock(link: NodeLink, at_ns: int) -> int:
    """Host time `at_ns` of this PC on the node's clock, by the offset measured now."""
    return at_ns - link.found.clock_offset(timeout=0.5)[0]


def controller_rig(rig: Rig) -> Rig:
    """The streams the controller records itself: those with no node (and the master camera, when it is
    one of them; the timeline of a master on a node is that node's take's)."""
    own = tuple(s for s in rig.streams if s.node is None)
    master = rig.master if rig.master in {s.name for s in own} else None
    return dataclasses.replace(rig, streams=own, master=master)


class NodeController:
    def __init__(
        self, rig: Rig, key: SharedKey, calibration: dict[str, Any] | None = None, timeout: float = FIND_TIMEOUT_S
    ) -> None:
        """`rig`: the whole rig, with the calibration applied whose take.json entry is `calibration`."""
        self.rig, self.key, self.timeout, self.calibration = rig, key, timeout, calibration
        self.nodes = [n for n in rig.nodes if any(s.node == n.name for s in rig.streams)]
        self.links: dict[str, NodeLink] = {}
        self._clocks: dict[str, NodeClockLog] = {}
        self._live: dict[str, tuple[float | None, list[StreamStatus]]] = {}  # the monitor's latest, per node
        self._closing = threading.Event()

    def open(self) -> None:
        """Every node found, its key proved, its streams opened (ImprovcapError naming the first that fails;
        the others are closed again)."""
        try:
            for node in self.nodes:
                link = self.links[node.name] = NodeLink.connect(node, self.key, self.timeout)
                link.request(
                    "open",
                    rig=self.rig.text,
                    rig_name=self.rig.name,
                    calibration=self.calibration,
                    latency_ms={
                        s.name: s.settings.get("latency_ms", 0.0) for s in self.rig.streams if s.node == node.name
                    },
                )
                measure_clock(link)
        except BaseException:
            self.close()
            raise

    def start_take(
        self,
        recorder: Recorder,
        take_dir: Path,
        session: str,
        scene: str,
        number: int,
        performers: list[dict[str, Any]],
    ) -> None:
        """Every node starts the take at once (a thread each: one node's answer does not delay the next's
        start), and its clock is logged from then on."""
        assert recorder.origin is not None
        t0 = recorder.origin.t0_ns

        def start(name: str, link: NodeLink) -> None:
            try:
                link.request(
                    "start", session=session, scene=scene, number=number, take=take_dir.name, performers=performers
                )
                self._clocks[name] = NodeClockLog(link.found, take_dir / node_clock_file(name), t0).start()
            except (ImprovcapError, OSError, ConnectionError) as e:
                self._fault(recorder, name, f"did not start the take: {e}")

        joined(on_every_node(self.links, start, "start"))

    def stop_take(self, recorder: Recorder, at_ns: int) -> None:
        """Stop every node's take at host time `at_ns` (a thread each), hand it the controller's offsets of
        its clock (the node refits its take onto the controller's clock) and account for it in the
        recorder's manifest (before its own stop)."""
        assert recorder.origin is not None and recorder.take_dir is not None
        entries: dict[str, Any] = {}

        def stop(name: str, link: NodeLink) -> None:
            entries[name] = self._stop_node(recorder, name, link, at_ns)

        joined(on_every_node(self.links, stop, "stop"))
        recorder.manifest["nodes"] = {name: entries[name] for name in self.links}

    def _stop_node(self, recorder: Recorder, name: str, link: NodeLink, at_ns: int) -> dict[str, Any]:
        assert recorder.origin is not None and recorder.take_dir is not None
        entry: dict[str, Any] = {"clock_file": node_clock_file(name)}
        try:
            entry.update(account(link.request("stop", at_node_ns=on_node_clock(link, at_ns))))
        except (ImprovcapError, OSError, ConnectionError, RuntimeError) as e:
            entry["error"] = str(e)
            self._fault(recorder, name, f"did not stop its take: {e}")
        clock = self._clocks.pop(name, None)
        if clock is not None:
            clock.stop()
            try:
                entry["clock"] = {"domain": "lsl", "segments": segment_entries(fit_node_clock(clock.path))}
            except (ValueError, ImprovcapError) as e:
                self._fault(recorder, name, f"its clock could not be fitted: {e}")
        if "clock" in entry and "error" not in entry:
            try:
                entry.update(
                    account(
                        retime(
                            link,
                            recorder.manifest["session"],
                            entry["take"],
                            recorder.take_dir / entry["clock_file"],
                            recorder.origin.t0_ns,
                        )
                    )
                )
            except (ImprovcapError, OSError, ConnectionError) as e:
                self._fault(recorder, name, f"its take is not on this clock: {e}")
        return entry

    def slate(self, recorder: Recorder, at_ns: int) -> None:
        """The controller's slate at host time `at_ns`, rendered by every node's devices at that instant on
        its own clock (by the offset measured now)."""
        for name, link in self.links.items():
            try:
                link.request("slate", at_node_ns=on_node_clock(link, at_ns))
            except (ImprovcapError, OSError, ConnectionError, RuntimeError) as e:
                self._fault(recorder, name, f"did not slate: {e}")

    def status(self) -> list[dict[str, Any]]:
        """Each node: where it is reached, its streams of the rig and its clock's offset now (ms, None when
        liblsl has no estimate at hand)."""
        out = []
        for node in self.nodes:
            link = self.links.get(node.name)
            out.append(
                {
                    "node": node.name,
                    "connected": link is not None,
                    "address": f"{link.address}:{link.found.port}" if link else None,
                    "clock_offset_ms": offset_ms(link) if link is not None else None,
                    "streams": [s.name for s in self.rig.streams if s.node == node.name],
                }
            )
        return out

    def check(self, seconds: float, tolerance: float) -> Callable[[], list[dict[str, Any]]]:
        """`rig check` on every node at once (a thread each): returns what waits for their verdicts, each
        stream's row with its node (a node that fails has one row saying why)."""
        rows: dict[str, list[dict[str, Any]]] = {}

        def check(name: str, link: NodeLink) -> None:
            try:
                rows[name] = [
                    r | {"node": name} for r in link.request("check", seconds=seconds, tolerance=tolerance)["streams"]
                ]
            except (ImprovcapError, OSError, ConnectionError) as e:
                rows[name] = [
                    {
                        "node": name,
                        "stream": "—",
                        "kind": "",
                        "measured_rate": 0.0,
                        "nominal_rate": 0,
                        "peak_dbfs": [],
                        "device": {},
                        "ok": False,
                        "problems": [str(e)],
                    }
                ]

        threads = on_every_node(self.links, check, "check")

        def verdicts() -> list[dict[str, Any]]:
            joined(threads)
            return [row for name in self.links for row in rows.get(name, [])]

        return verdicts

    def monitor(self, interval_s: float = MONITOR_S) -> None:
        """Poll every node's streams and clock offset from a thread, for live(), until close()."""

        def poll() -> None:
            while not self._closing.is_set():
                for name, link in list(self.links.items()):
                    try:
                        streams = [stream_status(s) for s in link.request("status").get("streams", [])]
                    except Exception:  # a node not answering now: the dashboard shows it so
                        streams = []
                    self._live[name] = (offset_ms(link) if streams else None, streams)
                self._closing.wait(interval_s)

        threading.Thread(target=poll, name="node-monitor", daemon=True).start()

    def live(self) -> list[tuple[str, float | None, StreamStatus]]:
        """(node, its clock offset in ms, one of its streams) as last polled; a node with no answer has a row
        of its own with no stream."""
        rows: list[tuple[str, float | None, StreamStatus]] = []
        for node in self.nodes:
            offset, streams = self._live.get(node.name, (None, []))
            rows += [(node.name, offset, s) for s in streams] or [
                (node.name, None, StreamStatus("—", "", "", 0.0, 0.0, 0, 0, fault="not answering"))
            ]
        return rows

    def _fault(self, recorder: Recorder, node: str, detail: str) -> None:
        t0 = recorder.origin.t0_ns if recorder.origin is not None else now_ns()
        recorder.event(Event(now_ns() - t0, "fault", "", f"node {node}: {detail}"))

    def close(self) -> None:
        self._closing.set()
        for clock in self._clocks.values():
            clock.stop()
        self._clocks.clear()
        for link in self.links.values():
            try:
                link.request("close")
            except (ImprovcapError, OSError, ConnectionError):
                pass
            link.close()
        self.links.clear()

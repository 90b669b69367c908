"""The take published to Lab Streaming Layer (`[rig] lsl_outlets = true`, `record/session --lsl`).

LabRecorder users record our takes beside their EEG and physiology into one XDF file. The recorder
offers them, for as long as its devices are open:

- `improvcap.<rig>.events` (type Markers, one string channel, irregular): `start <session>/<take>`,
  `stop <session>/<take>`, and every line of events.csv (`slate`, `mark <text>`, `note <text>`,
  `fault <stream>: <detail>`, `drop ...`), each stamped at its shared-clock instant;
- `improvcap.<rig>.<stream>` per camera (type VideoFrames) and per mocap stream (MocapFrames): one sample
  per frame or row written, channels `index` (its row in frames.csv or the mocap CSV) and `take` (the take
  number), stamped at the frame's `t_ns`.

Stamps are on liblsl's `local_clock`: host time (t0 + t_ns) plus the offset between the two clocks measured
when the outlets open (both read CLOCK_MONOTONIC on Linux, so it is a few hundred ns). The outlets live
from the recorder's open to its close, across takes, so that an LSL consumer attached while the devices
warm up gets every take from its first frame. An LSL stream's description is fixed when it is created
(and LabRecorder keeps the first it sees), so it carries the rig, the stream and the host; the take is in
every sample (`take`) and in the events stream's start and stop markers. Source ids are
`improvcap.<rig>.<stream>@<host>`: the same across takes and restarts, so LabRecorder re-attaches them.
The frame streams declare `can_drop_samples` (pyxdf then keeps the times as they are instead of
dejittering them onto a line).
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from .. import __version__
from ..clock import now_ns
from ..devices.lsl_inlet import pylsl_module
from ..errors import DeviceError
from ..records import Event, Record
from ..rig import Rig, StreamSpec

FRAME_TYPES = {"camera": "VideoFrames", "mocap": "MocapFrames"}
CLOSE_GRACE_S = 0.3  # consumers still attached get the last samples before the outlets go


def local_clock_offset_ns(samples: int = 9) -> int:
    """liblsl's local_clock minus our host clock, in ns: the read between two host reads that took least."""
    pylsl = pylsl_module()
    best: tuple[int, int] | None = None
    for _ in range(samples):
        a = now_ns()
        lsl = pylsl.local_clock()
        b = now_ns()
        if best is None or b - a < best[0]:
            best = (b - a, round(lsl * 1e9) - (a + b) // 2)
    assert best is not None
    return best[1]


def event_text(event: Event) -> str:
    """An events.csv line as a marker string: kind, then `stream:` when it has one, then its detail."""
    return " ".join(p for p in (event.kind, f"{event.stream}:" if event.stream else "", event.detail) if p)


class NoOutlets:
    """A rig that publishes nothing: the recorder calls the same methods."""

    def started(self, take: str, number: int, t0_ns: int) -> None: ...
    def event(self, event: Event) -> None: ...
    def frame(self, record: Record) -> None: ...
    def close(self) -> None: ...


def open_outlets(rig: Rig) -> LslOutlets | NoOutlets:
    return LslOutlets(rig) if rig.lsl_outlets else NoOutlets()


class LslOutlets:
    """The rig's LSL outlets; every method is safe from any thread and never raises once open."""

    def __init__(self, rig: Rig) -> None:
        pylsl = pylsl_module()
        self.rig = rig.name
        self.host = socket.gethostname()
        self._lock = threading.Lock()
        self._take, self._take_name, self._t0_ns = 0, "", 0
        try:
            self._offset_ns = local_clock_offset_ns()
            self._events = pylsl.StreamOutlet(self._info("events", "Markers", 1, 0.0, pylsl.cf_string, None))
            self._frames = {
                s.name: pylsl.StreamOutlet(
                    self._info(s.name, FRAME_TYPES[s.kind], 2, s.nominal_rate, pylsl.cf_double64, s)
                )
                for s in rig.streams
                if s.kind in FRAME_TYPES
            }
        except Exception as e:
            raise DeviceError(f"cannot publish LSL outlets: {type(e).__name__}: {e}") from None

    def _info(self, stream: str, kind: str, channels: int, rate: float, fmt: int, spec: StreamSpec | None) -> Any:
        pylsl = pylsl_module()
        name = f"improvcap.{self.rig}.{stream}"
        info = pylsl.StreamInfo(name, kind, channels, rate, fmt, f"{name}@{self.host}")
        desc = info.desc()
        meta = desc.append_child("improvcap")
        for key, value in (
            ("rig", self.rig),
            ("stream", stream),
            ("kind", spec.kind if spec else "events"),
            ("host", self.host),
            ("version", __version__),
        ):
            meta.append_child_value(key, value)
        if spec is None:
            desc.append_child("channels").append_child("channel").append_child_value("label", "event")
            return info
        channel_list = desc.append_child("channels")
        for label, what in (("index", "the frame's row in the take's timing table"), ("take", "the take number")):
            ch = channel_list.append_child("channel")
            ch.append_child_value("label", label)
            ch.append_child_value("type", what)
        desc.append_child("synchronization").append_child_value("can_drop_samples", "true")
        return info

    def _stamp(self, host_ns: int) -> float:
        return (host_ns + self._offset_ns) / 1e9

    def started(self, take: str, number: int, t0_ns: int) -> None:
        """A take (`<session>/<take folder>`) began at host time t0_ns: its frames carry `number` from now on,
        its events are stamped from t0_ns."""
        with self._lock:
            self._take, self._take_name, self._t0_ns = number, take, t0_ns
        self._marker(f"start {take}", t0_ns)

    def event(self, event: Event) -> None:
        """A line of the current (or, for a late note, the last) take's events.csv; its stop names the take."""
        text = f"stop {self._take_name}" if event.kind == "stop" else event_text(event)
        self._marker(text, self._t0_ns + event.t_ns)

    def _marker(self, text: str, host_ns: int) -> None:
        with self._lock:
            if self._events is not None:
                self._events.push_sample([text], self._stamp(host_ns))

    def frame(self, record: Record) -> None:
        """A frame or row written to the take: one sample per frame or row."""
        outlet = self._frames.get(record.stream)
        if outlet is not None:
            for i in range(record.count):
                outlet.push_sample([float(record.index + i), float(self._take)], self._stamp(self._t0_ns + record.t_ns))

    def close(self) -> None:
        with self._lock:
            outlets = [o for o in (self._events, *self._frames.values()) if o is not None]
            if any(o.have_consumers() for o in outlets):
                time.sleep(CLOSE_GRACE_S)
            self._events, self._frames = None, {}
        del outlets  # liblsl destroys an outlet with its last reference

"""The device protocol every driver and demo twin implements, its optional capabilities, and helpers.

Life cycle: open() → start() → read()… → stop() → close(). `read` blocks up to `timeout` seconds and
returns one `Sample` (or None on timeout); the recorder calls it from one pump thread per device. Drivers
whose data arrive on a callback or a reader thread of their own put them into a `SampleBuffer`, so the
real-time side only copies and returns.

Two capabilities beyond the protocol, which the recorder asks for with `isinstance`: `FiresSlate`, a
device that fires a slate in hardware (a sync box's LED and beep) and says when, and `MapsToHost`, a
device that maps its own stamps onto the host clock (a sync box's round-trip fit).
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..errors import DeviceError
from ..records import Sample

SILENCE_S = 2.0
"""A streaming device that delivers nothing for this long has stopped (a sender gone, a cable pulled, a
device hung): every driver that can wait on its transport gives up after it, and the recorder says so
for any stream that goes this long without data during a take."""
NETWORK_OPEN_TIMEOUT_S = 5.0
"""Connecting to a network camera may take longer than a silence: a dead one still fails at open in seconds."""

if TYPE_CHECKING:
    from ..rig import StreamSpec


class StreamEnded(DeviceError):
    """The source has no more data (end of a file, camera unplugged)."""


@runtime_checkable
class Device(Protocol):
    spec: StreamSpec

    def open(self) -> None:
        """Acquire the hardware; raise DeviceError with a one-line reason when it cannot be opened."""

    def start(self) -> None:
        """Begin producing samples."""

    def read(self, timeout: float) -> Sample | None:
        """Next sample, or None after `timeout` s; raise StreamEnded/DeviceError when the source is gone."""

    def stop(self) -> None:
        """Stop producing; samples already buffered may still be read."""

    def close(self) -> None:
        """Release the hardware. Safe to call more than once and after a failed open."""

    def describe(self) -> dict[str, Any]:
        """What writers need and take.json stores: format, rates, channels, driver details."""

    def stats(self) -> dict[str, int]:
        """Device-side counters (overflows, parse errors, CRC failures, counter gaps, ...)."""

    def slate(self, host_ns: int) -> None:
        """Render a slate at host time `host_ns` (demo twins); real devices ignore it."""


@dataclass(frozen=True, slots=True)
class SlateFire:
    """A slate the box confirmed: its id, the tick it fired at, that in box ns and on the host clock."""

    id: int
    ticks: int
    box_ns: int
    host_ns: int


@runtime_checkable
class FiresSlate(Protocol):
    def fire_slate(self, timeout: float = ...) -> SlateFire:
        """Fire the slate now; return once the device has confirmed when it fired (DeviceError if not)."""


@runtime_checkable
class MapsToHost(Protocol):
    def to_host(self, device_ns: int) -> int:
        """A stamp of the device's own clock on the host's monotonic clock, by the device's own fit."""


@dataclass
class SampleBuffer:
    """A bounded hand-over from a callback/reader thread to `read`. A full buffer drops and counts."""

    depth: int
    overflows: int = 0
    _q: queue.Queue[Sample | BaseException] = field(init=False)

    def __post_init__(self) -> None:
        self._q = queue.Queue(self.depth)

    def put(self, sample: Sample) -> None:
        try:
            self._q.put_nowait(sample)
        except queue.Full:
            self.overflows += 1

    def put_waiting(self, sample: Sample, timeout: float) -> bool:
        """Blocking hand-over for sources that can wait (files read faster than real time). False on timeout."""
        try:
            self._q.put(sample, timeout=timeout)
            return True
        except queue.Full:
            return False

    def fail(self, error: BaseException) -> None:
        """Hand an error from the producer to the reader; it is raised by the next `get` once drained."""
        try:
            self._q.put(error, timeout=1.0)
        except queue.Full:  # pragma: no cover - reader stalled for a whole second
            pass

    def get(self, timeout: float) -> Sample | None:
        try:
            item = self._q.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(item, BaseException):
            raise item
        return item


class ProducerThread:
    """A named daemon thread running `target`; an exception ends it and is handed to `buffer`."""

    def __init__(self, name: str, target: Any, buffer: SampleBuffer) -> None:
        self._target = target
        self._buffer = buffer
        self.stop_event = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            self._target(self.stop_event)
        except DeviceError as e:
            self._buffer.fail(e)
        except Exception as e:  # a driver bug must still reach the take as a fault, not vanish
            self._buffer.fail(DeviceError(f"{type(e).__name__}: {e}"))

    def stop(self, timeout: float = 5.0) -> None:
        self.stop_event.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)


class ThreadedDevice:
    """The life cycle shared by devices fed by one producer thread through a SampleBuffer.

    A subclass calls `_start_producer(target)` from start(); `target(stop_event)` runs on the thread
    and puts samples into `self._buffer`. `_producer_busy` stays set while the target runs, so a driver
    whose reader can hang inside a backend (FFmpeg, OpenCV) can refuse to restart or to free the backend
    under it.
    """

    def __init__(self, spec: StreamSpec, depth: int) -> None:
        self.spec = spec
        self._buffer = SampleBuffer(depth)
        self._producer: ProducerThread | None = None
        self._producer_busy = threading.Event()

    def _start_producer(self, target: Any) -> None:
        if self._producer is not None:
            return
        if self._producer_busy.is_set():
            raise DeviceError(f"{self.spec.name}: still stuck in its last read")

        def run(stop: threading.Event) -> None:
            try:
                target(stop)
            finally:
                self._producer_busy.clear()

        self._producer_busy.set()
        self._producer = ProducerThread(f"{self.spec.kind}-{self.spec.name}", run, self._buffer)
        self._producer.start()

    def read(self, timeout: float) -> Sample | None:
        return self._buffer.get(timeout)

    def stop(self) -> None:
        if self._producer is not None:
            self._producer.stop()
            self._producer = None

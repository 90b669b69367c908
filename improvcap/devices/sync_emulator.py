"""A sync box emulated on a pseudo-terminal, with a ground truth.

Its firmware speaks `protocols.syncbox`: anything that opens `port_name` (the pty's slave side) with
pyserial talks to it as to a USB-serial box. Its timer follows `DemoTiming`: it boots BOOT_NS before
`start()` and runs `drift_ppm` fast or slow (`offset_ms` shifts it; a round-trip fit absorbs that). What
the host writes reaches the box `transport_ms` later; what the box sends reaches the host `transport_ms`
plus an exponential jitter of mean `jitter_ms` later (in order, as from a UART), and a fraction
`drop_rate` of it never does. The box answers a query, fires a slate and identifies itself when it reads
the request, stamped with its timer at that moment; trigger pulses are timed by the timer itself (edge k
of a train at a whole tick), each announced by a `P` message.

Ground truth: `true_of_ticks(ticks)` is the host time at which the timer read `ticks`, so
`pulse_true_ns(count)` is when pulse `count` rose and `fired` lists when each slate truly fired.
Test faults: `go_silent()` hangs the firmware (the port stays, nothing answers), `vanish()` pulls the cable.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque

from ..clock import now_ns
from ..protocols.syncbox import (
    PULSE_WRAP,
    Fired,
    Identify,
    Identity,
    Message,
    Pulse,
    Query,
    Reply,
    Slate,
    SyncParser,
    Trigger,
    encode,
)
from ..rig import StreamSpec
from .demo_timing import DemoTiming
from .pty_port import PtyPort

BOOT_NS = 100_000_000_000
TICK_HZ = 1_000_000
NAME = "improvcap syncbox emulator"
VERSION = 1
IDLE_WAIT_S = 0.02
QUERY_TRUTH = 4096  # round trips whose truth is kept


class SyncBoxEmulator:
    def __init__(self, spec: StreamSpec, *, tick_hz: int = TICK_HZ, name: str = NAME, version: int = VERSION) -> None:
        self.spec = spec
        self.tick_hz = tick_hz
        self.name = name
        self.version = version
        self.timing = DemoTiming(spec)
        self._parser = SyncParser()
        self._requests: deque[tuple[int, Message]] = deque()  # (host time the box reads it, message)
        self._out: deque[tuple[int, bytes]] = deque()  # (host arrival time, bytes), in order
        self._last_arrival = 0
        self.pulse_count = 0  # pulses since boot (not wrapped)
        self._period_ticks = 0
        self._next_edge: int | None = None
        self._trains: list[tuple[int, int, int]] = []  # (pulses before it, first edge, period) in ticks
        self.fired: list[tuple[int, int, int]] = []  # slates: (id, true host ns, ticks)
        self.queries: OrderedDict[int, int] = OrderedDict()  # query id -> true host ns it was answered at
        self.sent = 0
        self.dropped = 0
        self.tx_overruns = 0
        self.silent = False
        self.vanished = False
        self._lock = threading.Lock()  # guards the truth lists
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._port = PtyPort()
        self.port_name = self._port.name

    # --- life cycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Power on (the timer has been running BOOT_NS already)."""
        if self._thread is not None:
            return
        self.timing.reset()
        self._thread = threading.Thread(target=self._run, name=f"syncbox-emulator-{self.spec.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5.0)

    def close(self) -> None:
        self.stop()
        self._port.close()

    def go_silent(self) -> None:
        """The firmware hangs: requests are read and ignored, no reply and no pulse goes out any more."""
        self.silent = True

    def vanish(self) -> None:
        """Pull the cable: the pty's master side closes and readers of the port fail."""
        self._port.hang_up()
        self.vanished = True
        self._stop.set()

    # --- the timer and the truth --------------------------------------------------------------------

    def ticks(self, true_ns: int) -> int:
        """The timer's reading at true host time `true_ns`."""
        box_ns = self.timing.device_ns(true_ns) - self.timing.origin_ns + BOOT_NS
        return box_ns * self.tick_hz // 1_000_000_000

    def true_of_ticks(self, ticks: int) -> int:
        """True host time at which the timer reads `ticks`."""
        box_ns = ticks * 1_000_000_000 / self.tick_hz
        return self.timing.true_ns(box_ns - BOOT_NS - self.timing.offset_ns)

    def pulse_true_ns(self, count: int) -> int | None:
        """True host time of the rising edge of pulse `count` (counted from 1 since boot, not wrapped)."""
        with self._lock:
            trains = list(self._trains)
        for before, first, period in reversed(trains):
            if count > before:
                return self.true_of_ticks(first + (count - before - 1) * period)
        return None

    def stats(self) -> dict[str, int]:
        return {
            "sent": self.sent,
            "dropped": self.dropped,
            "pulses": self.pulse_count,
            "slates": len(self.fired),
            "tx_overruns": self.tx_overruns,
        }

    # --- the firmware -------------------------------------------------------------------------------

    def _run(self) -> None:
        stop = self._stop
        while not stop.is_set():
            now = now_ns()
            while self._requests and self._requests[0][0] <= now:
                self._serve(self._requests.popleft()[1])
            while self._next_edge is not None and not self.silent and self.true_of_ticks(self._next_edge) <= now:
                self._pulse(self._next_edge)
                self._next_edge += self._period_ticks
            while self._out and self._out[0][0] <= now:
                self._send(self._out.popleft()[1])
            due = [now + int(IDLE_WAIT_S * 1e9)]
            if self._requests:
                due.append(self._requests[0][0])
            if self._out:
                due.append(self._out[0][0])
            if self._next_edge is not None and not self.silent:
                due.append(self.true_of_ticks(self._next_edge))
            self._listen(max(0.0, (min(due) - now_ns()) / 1e9))

    def _listen(self, timeout: float) -> None:
        """Wait up to `timeout` s for bytes from the host; queue the requests they complete."""
        data = self._port.read(timeout)
        if data is None:  # closed under us (vanish/close), or the host side hung up
            self._stop.wait(timeout)
            return
        if not data:
            return
        arrival = now_ns() + self.timing.transport_ns  # the host → box leg of the transport
        for message in self._parser.feed(data):
            self._requests.append((arrival, message))

    def _serve(self, message: Message) -> None:
        if self.silent:
            return
        t = now_ns()
        ticks = self.ticks(t)
        if isinstance(message, Query):
            with self._lock:
                self.queries[message.id] = t
                while len(self.queries) > QUERY_TRUTH:
                    self.queries.popitem(last=False)
            self._reply(Reply(message.id, self.pulse_count % PULSE_WRAP, ticks), t)
        elif isinstance(message, Slate):
            with self._lock:
                self.fired.append((message.id, t, ticks))  # LED on, buzzer on: now
            self._reply(Fired(message.id, ticks), t)
        elif isinstance(message, Trigger):
            period = message.period_us * self.tick_hz // 1_000_000
            if message.period_us and period == 0:
                period = 1
            self._period_ticks = period
            self._next_edge = ticks + 1 if period else None  # the first edge on the next tick
            if period:
                with self._lock:
                    self._trains.append((self.pulse_count, ticks + 1, period))
        elif isinstance(message, Identify):
            self._reply(Identity(self.version, self.tick_hz, self.name), t)

    def _pulse(self, edge: int) -> None:
        self.pulse_count += 1
        self._reply(Pulse(self.pulse_count % PULSE_WRAP, edge), self.true_of_ticks(edge))

    def _reply(self, message: Message, true_ns: int) -> None:
        """Queue a message sent at `true_ns`: it arrives after transport and jitter, in order, or never."""
        if self.timing.dropped():
            self.dropped += 1
            return
        arrival = self.timing.arrival_ns(true_ns) - self.timing.offset_ns  # transport + jitter
        self._last_arrival = max(arrival, self._last_arrival)
        self._out.append((self._last_arrival, encode(message)))

    def _send(self, data: bytes) -> None:
        written = self._port.write(data)
        if written is None:
            return  # hung up; the loop ends at the next stop check
        if written < len(data):
            self.tx_overruns += 1  # nobody reads: the tail is lost, as from a UART's full buffer
        self.sent += 1

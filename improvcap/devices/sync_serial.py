"""Sync box driver (`[[sync]]`, driver "serial"): trigger pulses, box-timed slates and the box's clock.

The box (protocol in `protocols.syncbox`) is opened exclusively with pyserial and identified (`I` → `V`);
a few timing queries seed the clock fit before anything records. `start()` sets the trigger period and a
reader thread then sends a query `query_hz` times a second and reads everything the box sends:

- a reply `R` to query `id` sent at host time t1 and read at t2, carrying box time T, is a round trip:
  it feeds the live `RoundTripClock` and becomes a Sample (payload `RoundTrip`, count 0: it is no pulse,
  so it advances no row index) that the writer stores in `<name>.roundtrips.csv` for the final fit;
- a pulse `P` becomes a Sample: device_ns = its edge's ticks in ns, seq = the pulse count (unwrapped),
  payload `MocapFrame(count, ())` — a row of `<name>.csv`;
- a slate confirmation `F` wakes `fire_slate()`.

Stamps are mapped to the host clock with the round-trip fit (`to_host`, describe()["clock"] = ROUNDTRIP),
never with arrival times: a USB-serial adapter delivers bytes in bursts (an FTDI chip every 16 ms by
default). A box that answers no query for SILENCE_S (at least three query periods) is a device failure,
as is a box clock that steps back (the box restarted): the recorder logs a fault, the other streams go on.
"""

from __future__ import annotations

import threading
from typing import Any

import serial

from ..clock import ClockDomain, now_ns
from ..errors import DeviceError
from ..protocols.syncbox import (
    PULSE_WRAP,
    Fired,
    Identity,
    Message,
    Pulse,
    Query,
    Reply,
    Slate,
    SyncParser,
    Trigger,
    encode,
    identify,
)
from ..records import MocapFrame, Sample
from ..rig import StreamSpec
from ..roundtrip import RoundTrip, RoundTripClock
from .base import SILENCE_S, SlateFire, ThreadedDevice
from .serial_port import open_port, port_failed, read_waiting, release_port
from .serial_time import Unwrapper

READ_TIMEOUT_S = 0.01  # a read waits this long for a first byte: the query pacing and stop() latency
IDENTIFY_TIMEOUT_S = 3.0  # boards that reset when the port opens (many Arduinos) need a second or two
IDENTIFY_RETRY_S = 0.5
SEED_ROUND_TRIPS = 5  # round trips made in open(), so that the first pulse already maps
SEED_TIMEOUT_S = 1.0
SLATE_TIMEOUT_S = 1.0
RESET_NS = 1_000_000_000  # a box clock stepping back more than this restarted


def _identity(ser: serial.Serial, name: str, port: str) -> Identity:
    """SerialSyncBox.open's question: the box's identity, with a timer that counts."""
    deadline = now_ns() + int(IDENTIFY_TIMEOUT_S * 1e9)
    identity = None
    while identity is None and now_ns() < deadline:  # asked again: a booting box missed the first
        identity = identify(ser, IDENTIFY_RETRY_S)
    if identity is None:
        raise DeviceError(
            f"{name}: no sync box answers on {port} (no identity within {IDENTIFY_TIMEOUT_S:g} s of asking)"
        )
    if identity.tick_hz <= 0:
        raise DeviceError(f"{name}: the sync box on {port} reports a timer of {identity.tick_hz} Hz")
    return identity


class SerialSyncBox(ThreadedDevice):
    """Device protocol for `[[sync]] driver = "serial"`. `port` overrides the rig's port (the demo's pty)."""

    def __init__(self, spec: StreamSpec, port: str | None = None) -> None:
        s = spec.settings
        super().__init__(spec, max(256, int(2 * (s["trigger_fps"] + s["query_hz"]))))
        self.port: str = port if port is not None else s["port"]
        self.baudrate: int = s["baudrate"]
        self.query_hz: float = s["query_hz"]
        fps = s["trigger_fps"]
        self.period_us = min(max(1, round(1e6 / fps)), PULSE_WRAP - 1) if fps > 0 else 0
        self.clock = RoundTripClock()
        self.identity: Identity | None = None
        self._serial: serial.Serial | None = None
        self._parser = SyncParser()
        self._write_lock = threading.Lock()
        self._pending: dict[int, int] = {}  # query id -> host send time
        self._query_id = 0
        self._slate_id = 0
        self._slate_lock = threading.Lock()  # one slate at a time
        self._fired = threading.Condition()
        self._awaiting: int | None = None  # the slate id fire_slate waits for ...
        self._fired_ticks: int | None = None  # ... and the ticks its F reported
        self._pulses = Unwrapper(PULSE_WRAP)
        # the latest box time of each message kind, for _box_ns: a pulse's edge may be older than a reply sent
        # before it (the box sends the pulse when it can), so only a step back within a kind is a restart
        self._last_box_ns: dict[type, int] = {}
        self._last_answer_ns = 0
        self.silence_s = max(SILENCE_S, 3.0 / self.query_hz)
        self.queries_sent = 0
        self.round_trips = 0
        self.queries_lost = 0
        self.late_replies = 0
        self.slates_fired = 0
        self.bytes_read = 0

    # --- life cycle ---------------------------------------------------------------------------------

    def open(self) -> None:
        if self._serial is not None:
            return
        name = self.spec.name
        self._serial = open_port(name, self.port, self.baudrate, READ_TIMEOUT_S)
        try:
            self._serial.reset_input_buffer()
            self.identity = _identity(self._serial, name, self.port)
            self._seed()
        except DeviceError:
            self.close()
            raise
        except (serial.SerialException, OSError, ValueError) as e:
            self.close()
            raise port_failed(name, self.port, e) from None

    def _seed(self) -> None:
        """A few round trips before start: the clock fit must exist before the first pulse is mapped."""
        ser = self._serial
        assert ser is not None
        deadline = now_ns() + int(SEED_TIMEOUT_S * 1e9)
        while self.clock.count < SEED_ROUND_TRIPS and now_ns() < deadline:
            self._query()
            wait_until = min(deadline, now_ns() + 200_000_000)
            answered = self.round_trips
            while self.round_trips == answered and now_ns() < wait_until:
                data = ser.read(max(1, ser.in_waiting))
                host = now_ns()
                for message in self._parser.feed(data):
                    self._handle(message, host)  # pulses of a box left running are not recorded
        if self.clock.count == 0:
            raise DeviceError(
                f"{self.spec.name}: the sync box on {self.port} identifies itself but answers "
                f"no timing query within {SEED_TIMEOUT_S:g} s"
            )
        self._pending.clear()

    def start(self) -> None:
        if self._producer is not None:
            return
        if self._serial is None or self.identity is None:
            raise DeviceError(f"{self.spec.name}: serial port {self.port} is not open")
        try:
            # bytes queued since open() would arrive in one burst; their pulses were never recorded
            self._serial.reset_input_buffer()
        except (serial.SerialException, OSError) as e:
            raise port_failed(self.spec.name, self.port, e) from None
        self._parser = SyncParser()
        self._last_answer_ns = now_ns()
        self._start_producer(self._run)
        self._write(encode(Trigger(self.period_us)))  # the reader is up: the first pulse is not missed

    def stop(self) -> None:
        if self._producer is not None and self._serial is not None:
            try:
                self._write(encode(Trigger(0)))  # cameras wired to the box stop with the recording
            except DeviceError:
                pass  # the box is gone; nothing to stop
        super().stop()

    def close(self) -> None:
        self.stop()
        if self._serial is not None:
            release_port(self._serial)
            self._serial = None

    # --- the reader thread --------------------------------------------------------------------------

    def _run(self, stop: threading.Event) -> None:
        ser, put = self._serial, self._buffer.put
        assert ser is not None
        period_ns = int(1e9 / self.query_hz)
        silence_ns = int(self.silence_s * 1e9)
        next_query = now_ns()
        while not stop.is_set():
            now = now_ns()
            if now >= next_query:
                self._query()
                next_query += period_ns
                if next_query < now:  # fell behind (a stalled host): no burst of queries to catch up
                    next_query = now + period_ns
            data = read_waiting(ser, self.spec.name, self.port, stop)
            if data is None:
                return
            host = now_ns()
            if data:
                self.bytes_read += len(data)
                for message in self._parser.feed(data):
                    sample = self._handle(message, host)
                    if sample is not None:
                        put(sample)
            if host - self._last_answer_ns > silence_ns:
                raise DeviceError(
                    f"{self.spec.name}: the sync box on {self.port} answered no query for "
                    f"{self.silence_s:g} s: it stopped answering"
                )
            stale = [q for q, t1 in self._pending.items() if host - t1 > silence_ns]
            for q in stale:
                del self._pending[q]
            self.queries_lost += len(stale)

    def _query(self) -> None:
        with self._write_lock:
            qid = self._query_id
            self._query_id = (qid + 1) & 0xFFFF
            message = encode(Query(qid))
            self._pending[qid] = now_ns()  # just before the write: the round trip's lower bound
            self._raw_write(message)
        self.queries_sent += 1

    def _handle(self, message: Message, host: int) -> Sample | None:
        if isinstance(message, Reply):
            t1 = self._pending.pop(message.id, None)
            if t1 is None:
                self.late_replies += 1  # an answer to a query given up on, or to someone else's
                return None
            box_ns = self._box_ns(message)
            self.clock.add(t1, host, box_ns)
            self.round_trips += 1
            self._last_answer_ns = host
            return Sample(host_ns=host, device_ns=box_ns, payload=RoundTrip(message.id, t1, host, box_ns), count=0)
        if isinstance(message, Pulse):
            count = self._pulses(message.pulse_count)
            return Sample(host_ns=host, device_ns=self._box_ns(message), payload=MocapFrame(count, ()), seq=count)
        if isinstance(message, Fired):
            with self._fired:
                if message.id == self._awaiting:
                    self._fired_ticks = message.ticks
                    self._fired.notify_all()
        return None  # identities, and the host's own message types echoed back, mean nothing here

    def _box_ns(self, message: Reply | Pulse) -> int:
        """A reply's reading or a pulse's edge; a step back against the last of its kind is a restart."""
        assert self.identity is not None
        box_ns = message.ticks * 1_000_000_000 // self.identity.tick_hz
        last = self._last_box_ns.get(type(message))
        if last is not None and box_ns < last - RESET_NS:
            raise DeviceError(
                f"{self.spec.name}: the sync box's clock stepped back {(last - box_ns) / 1e9:.3f} s: the box restarted"
            )
        self._last_box_ns[type(message)] = max(box_ns, last or 0)
        return box_ns

    def _write(self, data: bytes) -> None:
        with self._write_lock:
            self._raw_write(data)

    def _raw_write(self, data: bytes) -> None:
        if self._serial is None:
            raise DeviceError(f"{self.spec.name}: serial port {self.port} is not open")
        try:
            self._serial.write(data)
        except (serial.SerialException, OSError) as e:
            raise port_failed(self.spec.name, self.port, e) from None

    # --- the box's own services ---------------------------------------------------------------------

    def to_host(self, device_ns: int) -> int:
        """Box time (ns since its boot) on the host's monotonic clock, by the live round-trip fit."""
        return self.clock.to_host(device_ns)

    def fire_slate(self, timeout: float = SLATE_TIMEOUT_S) -> SlateFire:
        """Fire the LED and the beep now; returns when the box has confirmed when it fired (`F`)."""
        if self._producer is None or self.identity is None:
            raise DeviceError(f"{self.spec.name}: the sync box is not running")
        with self._slate_lock:
            sid = self._slate_id
            self._slate_id = (sid + 1) & 0xFFFF
            with self._fired:
                self._awaiting, self._fired_ticks = sid, None
            self._write(encode(Slate(sid)))
            with self._fired:
                self._fired.wait_for(lambda: self._fired_ticks is not None, timeout)
                ticks, self._awaiting, self._fired_ticks = self._fired_ticks, None, None
        if ticks is None:
            raise DeviceError(
                f"{self.spec.name}: the sync box on {self.port} did not confirm the slate within {timeout:g} s"
            )
        self.slates_fired += 1
        box_ns = ticks * 1_000_000_000 // self.identity.tick_hz
        return SlateFire(sid, ticks, box_ns, self.clock.to_host(box_ns))

    # --- Device protocol ----------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        ident = self.identity
        return {
            "clock": ClockDomain.ROUNDTRIP,
            "port": self.port,
            "baudrate": self.baudrate,
            "box": ident.name if ident else None,
            "firmware_version": ident.version if ident else None,
            "tick_hz": ident.tick_hz if ident else None,
            "trigger_period_us": self.period_us,
            "trigger_fps": round(1e6 / self.period_us, 6) if self.period_us else 0.0,
            "query_hz": self.query_hz,
        }

    def stats(self) -> dict[str, int]:
        return {
            **self._parser.stats(),
            "queries_sent": self.queries_sent,
            "round_trips": self.round_trips,
            "queries_lost": self.queries_lost,
            "late_replies": self.late_replies,
            "slates_fired": self.slates_fired,
            "overflows": self._buffer.overflows,
            "bytes_read": self.bytes_read,
        }

    def slate(self, host_ns: int) -> None:
        """The box fires only when asked to (`fire_slate`): a slate at a host time means nothing to it."""

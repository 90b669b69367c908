"""Serial mocap hardware emulated on a pseudo-terminal, with a ground truth.

The emulator writes frames into the master side of a pty; anything that opens `port_name` (the slave, e.g.
/dev/pts/3) with pyserial reads them exactly as from a USB-serial device. Its timing follows `DemoTiming`:
frame k truly happens at host time `timing.true_ns(k × period)` — so with `drift_ppm` the device's rate is
off — it is stamped by the device's drifting clock and written at its arrival time (transport + jitter);
a frame lost in transport is not written, but the counter moves on.

Device time: the frame's µs field is the device clock since its own boot, which happened `BOOT_NS`
before streaming started (100 s: more than any demo `offset_ms`, so the field never goes negative).
"""
from __future__ import annotations

import math
import os
import pty
import random
import threading
import tty
import zlib

from ..clock import now_ns
from ..rig import StreamSpec
from .demo_timing import DemoTiming
from .serial_protocols import COUNTER_MOD, encode_binary, encode_csv

BOOT_NS = 100_000_000_000
SPIKE = 1000.0
SPIKE_FRAMES = 2
_JUNK = b"\x00\x01\x5a\x7f\xff\x0d\x0aQZ"  # binary garbage: never 0xA5, so it forges no magic


class MocapEmulator:
    """Emulated serial mocap on a pty. `spec` is a demo mocap stream (rate, channels, protocol, timing keys).

    Test-only faults (constructor parameters, not rig keys):
    - `corrupt_every`: every Nth frame is damaged (binary: one byte of its values flipped, so its CRC
      fails; csv: one value turned into a non-number);
    - `garbage_every`: every Nth frame is preceded by junk (binary: bytes that contain no magic; csv: a
      junk line);
    - `first_counter`: the counter of frame 0 (start near 2**32 to exercise the wrap).
    """

    def __init__(self, spec: StreamSpec, *, corrupt_every: int = 0, garbage_every: int = 0,
                 first_counter: int = 0, csv_newline: bytes = b"\r\n") -> None:
        s = spec.settings
        self.spec = spec
        self.protocol: str = s["protocol"]
        self.channels: int = s["channels"]
        self.rate: float = s["rate"]
        self.period_ns = 1e9 / self.rate
        self.timing = DemoTiming(spec)
        self.corrupt_every = corrupt_every
        self.garbage_every = garbage_every
        self.first_counter = first_counter % COUNTER_MOD
        self.csv_newline = csv_newline
        self._rng = random.Random(zlib.crc32(spec.name.encode()) ^ 0x5EED)
        # what the emulator did, for tests and stats
        self.sent = 0
        self.dropped = 0
        self.corrupted = 0
        self.garbage_bytes = 0
        self.garbage_lines = 0
        self.tx_overruns = 0
        self.vanished = False
        self._slates: list[int] = []  # pending slate times
        self._spike_until = 0  # frames k < this carry the spike
        self._lock = threading.Lock()  # guards fds against a concurrent vanish()/close(), and _slates
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._master, self._slave = pty.openpty()
        # raw: no echo, no CR/LF translation, no signal or flow-control characters — bytes pass unaltered
        tty.setraw(self._slave)
        # a real UART keeps sending whether or not the host reads; a full pty buffer must not block us
        os.set_blocking(self._master, False)
        self.port_name = os.ttyname(self._slave)

    # --- life cycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Power on: frame 0 happens now."""
        if self._thread is not None:
            return
        self.timing.reset()
        self._thread = threading.Thread(target=self._run, name=f"mocap-emulator-{self.spec.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5.0)

    def close(self) -> None:
        self.stop()
        with self._lock:
            for fd in (self._master, self._slave):
                if fd >= 0:
                    os.close(fd)
            self._master = self._slave = -1

    def vanish(self) -> None:
        """Pull the cable: the master side closes and the device stops, so readers of the port fail as
        with an unplugged USB-serial adapter."""
        with self._lock:
            if self._master >= 0:
                os.close(self._master)
                self._master = -1
            self.vanished = True
        self._stop.set()

    # --- truth and slate ----------------------------------------------------------------------------

    def true_ns(self, counter: int) -> int:
        """True host time of the frame carrying `counter` (valid once started, for 2**32 frames)."""
        k = (counter - self.first_counter) % COUNTER_MOD
        return self.timing.true_ns(k * self.period_ns)

    def slate(self, host_ns: int) -> None:
        """Spike every channel to SPIKE in the first SPIKE_FRAMES frames whose true time is at or after
        `host_ns` (the next frames, if that moment has already passed)."""
        with self._lock:
            self._slates.append(host_ns)

    def write_raw(self, data: bytes) -> int:
        """Write bytes as they are to the port (garbage, or a transparency check); returns bytes written."""
        with self._lock:
            if self._master < 0:
                return 0
            try:
                return os.write(self._master, data)
            except BlockingIOError:
                return 0

    def stats(self) -> dict[str, int]:
        return {"sent": self.sent, "dropped": self.dropped, "corrupted": self.corrupted,
                "garbage_bytes": self.garbage_bytes, "garbage_lines": self.garbage_lines,
                "tx_overruns": self.tx_overruns}

    # --- the device ---------------------------------------------------------------------------------

    def _run(self) -> None:
        timing, stop = self.timing, self._stop
        last_arrival = 0
        k = 0
        while not stop.is_set():
            true = timing.true_ns(k * self.period_ns)
            dropped = timing.dropped()
            if not dropped:
                last_arrival = max(timing.arrival_ns(true), last_arrival)
            # a lost frame still paces the loop: the device sent it, the host never saw it
            delay = ((true if dropped else last_arrival) - now_ns()) / 1e9
            if delay > 0 and stop.wait(delay):
                break
            # after the wait, so that a slate for a moment already passed by `true` still lands
            spike = self._slated(k, true)
            if dropped:
                self.dropped += 1
            else:
                self._send(self._frame(k, true, spike))
            k += 1

    def _slated(self, k: int, true: int) -> bool:
        """Whether frame k carries a slate spike; dropped frames count, so a spike is never stretched."""
        with self._lock:
            if self._slates and min(self._slates) <= true:
                self._slates = [s for s in self._slates if s > true]
                self._spike_until = k + SPIKE_FRAMES
        return k < self._spike_until

    def _values(self, true: int, spike: bool) -> tuple[float, ...]:
        if spike:
            return (SPIKE,) * self.channels
        # smooth motion: each channel a slow sine of its own phase and frequency, tens of degrees
        t = (true - self.timing.origin_ns) / 1e9
        n = self.channels
        return tuple(45.0 * math.sin(2 * math.pi * (0.5 + 0.05 * c) * t + 2 * math.pi * c / n) for c in range(n))

    def _frame(self, k: int, true: int, spike: bool) -> bytes:
        counter = (self.first_counter + k) % COUNTER_MOD
        device_us = (self.timing.device_ns(true) - self.timing.origin_ns + BOOT_NS) // 1000
        values = self._values(true, spike)
        n = k + 1
        if self.protocol == "binary":
            frame = encode_binary(counter, device_us, values)
            if self.corrupt_every and n % self.corrupt_every == 0:
                i = 16 + self._rng.randrange(4 * self.channels)  # inside the values: the CRC must fail
                frame = frame[:i] + bytes([frame[i] ^ 0xFF]) + frame[i + 1:]
                self.corrupted += 1
            if self.garbage_every and n % self.garbage_every == 0:
                junk = bytes(self._rng.choice(_JUNK) for _ in range(self._rng.randint(1, 40)))
                self.garbage_bytes += len(junk)
                frame = junk + frame
        else:
            frame = encode_csv(counter, device_us, values, self.csv_newline)
            if self.corrupt_every and n % self.corrupt_every == 0:
                fields = frame.split(b",")
                c = 2 + self._rng.randrange(self.channels)
                fields[c] = b"x" + fields[c][1:]
                frame = b",".join(fields)
                self.corrupted += 1
            if self.garbage_every and n % self.garbage_every == 0:
                junk = b"#\x00noise " + bytes(self._rng.randrange(32, 127) for _ in range(self._rng.randint(1, 30)))
                junk = junk.replace(b",", b";") + self.csv_newline
                self.garbage_bytes += len(junk)
                self.garbage_lines += 1
                frame = junk + frame
        return frame

    def _send(self, data: bytes) -> None:
        with self._lock:
            if self._master < 0:
                return
            try:
                written = os.write(self._master, data)
            except BlockingIOError:
                written = 0
            except OSError:
                return  # closed under us (vanish); the thread ends on the next stop check
        if written < len(data):
            self.tx_overruns += 1  # nobody is reading: the tail is lost, as from a UART's full buffer
        self.sent += 1

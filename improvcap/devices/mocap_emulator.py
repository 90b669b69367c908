"""Serial mocap hardware emulated on a pseudo-terminal, with a ground truth.

The emulator writes frames into the master side of a pty; anything that opens `port_name` (the slave, e.g.
/dev/pts/3) with pyserial reads them exactly as from a USB-serial device. Its timing follows `DemoTiming`:
frame k truly happens at host time `timing.true_ns(k × period)` — so with `drift_ppm` the device's rate is
off — it is stamped by the device's drifting clock and written at its arrival time (transport + jitter);
a frame lost in transport is not written, but the counter moves on.

Device time: the device clock counts since its own boot, which happened `BOOT_NS` before streaming
started (100 s: more than any demo `offset_ms`, so the time never goes negative; the rig's `uptime_s`
sets it, to run a device clock into its wrap). What goes on the wire is the protocol's business: an
`EmulatorCodec` (improvcap.protocols) encodes each frame, damages one for the fault options, makes junk, and
answers what the host sends (configuration commands, probes) — from the moment the pty exists, as a
powered device does, not only once it streams.
"""

from __future__ import annotations

import math
import random
import threading
import zlib
from collections.abc import Sequence
from typing import Any

from ..clock import now_ns
from ..protocols import EmulatorCodec, channel_names, protocol_module
from ..protocols.binary import encode_binary
from ..protocols.csv_lines import encode_csv
from ..protocols.parsing import COUNTER_MOD
from ..rig import StreamSpec
from .demo_timing import DemoTiming
from .pty_port import PtyPort

BOOT_NS = 100_000_000_000
SPIKE = 1000.0
SPIKE_FRAMES = 2
_JUNK = b"\x00\x01\x5a\x7f\xff\x0d\x0aQZ"  # binary garbage: never 0xA5, so it forges no magic


class BinaryCodec:
    """The frames of protocols.binary."""

    has_counter = True

    def encode(self, counter: int, device_ns: int, values: Sequence[float]) -> bytes:
        return encode_binary(counter, device_ns // 1000, values)

    def corrupt(self, frame: bytes, rng: random.Random) -> bytes:
        i = 16 + rng.randrange(len(frame) - 18)  # inside the values: the CRC must fail
        return frame[:i] + bytes([frame[i] ^ 0xFF]) + frame[i + 1 :]

    def garbage(self, rng: random.Random) -> bytes:
        return bytes(rng.choice(_JUNK) for _ in range(rng.randint(1, 40)))

    def respond(self, request: bytes) -> bytes:
        return b""


class CsvCodec:
    """The lines of protocols.csv_lines."""

    has_counter = True

    def __init__(self, newline: bytes = b"\r\n") -> None:
        self.newline = newline

    def encode(self, counter: int, device_ns: int, values: Sequence[float]) -> bytes:
        return encode_csv(counter % COUNTER_MOD, device_ns // 1000, values, self.newline)

    def corrupt(self, frame: bytes, rng: random.Random) -> bytes:
        fields = frame.split(b",")
        c = 2 + rng.randrange(len(fields) - 2)
        fields[c] = b"x" + fields[c][1:]  # one value no longer a number
        return b",".join(fields)

    def respond(self, request: bytes) -> bytes:
        return b""

    def garbage(self, rng: random.Random) -> bytes:
        junk = b"#\x00noise " + bytes(rng.randrange(32, 127) for _ in range(rng.randint(1, 30)))
        return junk.replace(b",", b";") + self.newline


def make_codec(settings: dict[str, Any], csv_newline: bytes = b"\r\n") -> EmulatorCodec:
    protocol = settings["protocol"]
    if protocol == "binary":
        return BinaryCodec()
    if protocol == "csv":
        return CsvCodec(csv_newline)
    return protocol_module(protocol).emulator_codec(settings)


class MocapEmulator:
    """Emulated serial mocap on a pty. `spec` is a demo mocap stream (rate, channels, protocol, timing keys).

    Test-only faults (constructor parameters, not rig keys):
    - `corrupt_every`: every Nth frame is damaged so that its check fails (binary: one byte of its values
      flipped, so its CRC fails; csv: one value turned into a non-number);
    - `garbage_every`: every Nth frame is preceded by junk (binary: bytes that contain no magic; csv: a
      junk line; see each codec);
    - `first_counter`: the counter of frame 0 (start near the counter's wrap to exercise it); default the
      rig's `first_counter`;
    - `boot_ns`: the device clock's reading when streaming starts; default the rig's `uptime_s`, else BOOT_NS.
    """

    def __init__(
        self,
        spec: StreamSpec,
        *,
        corrupt_every: int = 0,
        garbage_every: int = 0,
        first_counter: int | None = None,
        boot_ns: int | None = None,
        csv_newline: bytes = b"\r\n",
    ) -> None:
        s = spec.settings
        self.spec = spec
        self.protocol: str = s["protocol"]
        self.channels = len(channel_names(s))
        self.rate: float = s["rate"]
        self.period_ns = 1e9 / self.rate
        self.timing = DemoTiming(spec)
        self.codec = make_codec(s, csv_newline)
        self.corrupt_every = corrupt_every
        self.garbage_every = garbage_every
        self.first_counter: int = s.get("first_counter", 0) if first_counter is None else first_counter
        uptime_s = s.get("uptime_s")
        self.boot_ns: int = (
            boot_ns if boot_ns is not None else BOOT_NS if uptime_s is None else int(round(uptime_s * 1e9))
        )
        self._rng = random.Random(zlib.crc32(spec.name.encode()) ^ 0x5EED)
        # what the emulator did, for tests and stats
        self.sent = 0
        self.dropped = 0
        self.corrupted = 0
        self.garbage_bytes = 0
        self.garbage_runs = 0  # junk insertions
        self.tx_overruns = 0
        self.vanished = False
        self._slates: list[int] = []  # pending slate times
        self._spike_until = 0  # frames k < this carry the spike
        self._lock = threading.Lock()  # guards _slates
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._port = PtyPort()
        self.port_name = self._port.name
        # until streaming starts, a standby thread answers the host (configuration, probes)
        self._standby_stop = threading.Event()
        self._standby = threading.Thread(
            target=self._answer_until_started, name=f"mocap-emulator-{spec.name}-standby", daemon=True
        )
        self._standby.start()

    # --- life cycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Power on: frame 0 happens now."""
        if self._thread is not None:
            return
        self._end_standby()
        self.timing.reset()
        self._thread = threading.Thread(target=self._run, name=f"mocap-emulator-{self.spec.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._end_standby()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5.0)

    def close(self) -> None:
        self.stop()
        self._port.close()

    def vanish(self) -> None:
        """Pull the cable: the master side closes and the device stops, so readers of the port fail as
        with an unplugged USB-serial adapter."""
        self._port.hang_up()
        self.vanished = True
        self._stop.set()
        self._standby_stop.set()

    # --- truth and slate ----------------------------------------------------------------------------

    def true_ns(self, counter: int, device_ns: int | None = None) -> int:
        """True host time of the frame with running (unwrapped) `counter`; for a protocol whose frames
        carry no counter, of the frame stamped `device_ns` (the device time since boot, unwrapped)."""
        if not self.codec.has_counter and device_ns is not None:
            k = round((device_ns - self.boot_ns - self.timing.offset_ns) / self.period_ns)
        else:
            k = counter - self.first_counter
        return self.timing.true_ns(k * self.period_ns)

    def slate(self, host_ns: int) -> None:
        """Spike every channel to SPIKE in the first SPIKE_FRAMES frames whose true time is at or after
        `host_ns` (the next frames, if that moment has already passed)."""
        with self._lock:
            self._slates.append(host_ns)

    def write_raw(self, data: bytes) -> int:
        """Write bytes as they are to the port (garbage, or a transparency check); returns bytes written."""
        return self._port.write(data) or 0

    def stats(self) -> dict[str, int]:
        return {
            "sent": self.sent,
            "dropped": self.dropped,
            "corrupted": self.corrupted,
            "garbage_bytes": self.garbage_bytes,
            "garbage_runs": self.garbage_runs,
            "tx_overruns": self.tx_overruns,
        }

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
            self._answer()
            # after the wait, so that a slate for a moment already passed by `true` still lands
            spike = self._slated(k, true)
            if dropped:
                self.dropped += 1
            else:
                frame = self._frame(k, true, spike)
                if frame:  # a device being configured sends no data
                    self._send(frame)
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
        device_ns = self.timing.device_ns(true) - self.timing.origin_ns + self.boot_ns
        frame = self.codec.encode(self.first_counter + k, device_ns, self._values(true, spike))
        n = k + 1
        if frame and self.corrupt_every and n % self.corrupt_every == 0:
            frame = self.codec.corrupt(frame, self._rng)
            self.corrupted += 1
        if frame and self.garbage_every and n % self.garbage_every == 0:
            junk = self.codec.garbage(self._rng)
            self.garbage_bytes += len(junk)
            self.garbage_runs += 1
            frame = junk + frame
        return frame

    def _end_standby(self) -> None:
        self._standby_stop.set()
        if self._standby is not threading.current_thread():
            self._standby.join(5.0)

    def _answer_until_started(self) -> None:
        while not self._standby_stop.wait(0.005):
            self._answer()

    def _answer(self) -> None:
        """Reply to whatever the host sent (configuration, probes), as the device would."""
        request = self._port.read()
        if request:
            reply = self.codec.respond(request)
            if reply:
                self._send(reply, frame=False)

    def _send(self, data: bytes, frame: bool = True) -> None:
        written = self._port.write(data)
        if written is None:
            return  # hung up (vanish); the thread ends on the next stop check
        if written < len(data):
            self.tx_overruns += 1  # nobody is reading: the tail is lost, as from a UART's full buffer
        self.sent += frame

"""The shared clock: host monotonic time and a take's origin.

Every stored `t_ns` is nanoseconds since the take's `t0` on `time.monotonic_ns()`. Mapping the devices'
own clocks onto it is `clockfit`'s work.
"""

from __future__ import annotations

import datetime as _dt
import enum
import time
from dataclasses import dataclass
from fractions import Fraction

now_ns = time.monotonic_ns


class ClockDomain(enum.StrEnum):
    """Where a stream's `device_ns` comes from (a device's `describe()["clock"]`, stored in take.json).

    DEVICE: the device's own clock, fitted to host arrivals; HOST: its stamps already are the host's
    monotonic clock (V4L2 buffer times); ARRIVAL: no clock, stamped on arrival; ROUNDTRIP: a sync box's
    clock, fitted from the round trips of its timing queries; LSL: an LSL sender's local_clock, fitted from
    liblsl's time-correction offsets (improvcap.lslclock); FILE: a file recorded elsewhere, its own times
    put on the shared clock by its alignment (`improvcap ingest`). A StrEnum: stored and printed as its value.
    """

    DEVICE = "device"
    HOST = "host"
    ARRIVAL = "arrival"
    ROUNDTRIP = "roundtrip"
    LSL = "lsl"
    FILE = "file"

    @classmethod
    def named(cls, value: object) -> ClockDomain | None:
        """The domain named by `value` (a stored string), None when it names none."""
        try:
            return cls(value) if isinstance(value, str) else None
        except ValueError:
            return None

    @classmethod
    def of(cls, value: object, default: ClockDomain) -> ClockDomain:
        """The domain named by `value`, else `default`."""
        return cls.named(value) or default


@dataclass(frozen=True, slots=True)
class TakeOrigin:
    """A take's t0 on the host clock, with the matching wall-clock time for editors."""

    t0_ns: int
    utc: _dt.datetime

    @classmethod
    def now(cls) -> TakeOrigin:
        # Read both clocks back to back; the wall time is only for humans and editors.
        t0 = now_ns()
        return cls(t0, _dt.datetime.now(_dt.UTC))

    def seconds_since_midnight(self) -> Fraction:
        """t0 as seconds since local midnight, to the microsecond (timecode and BWF time_reference count
        from there)."""
        local = self.utc.astimezone()
        return Fraction(local.hour * 3600 + local.minute * 60 + local.second) + Fraction(local.microsecond, 10**6)

    def samples_since_midnight(self, samplerate: int) -> int:
        """BWF `time_reference`: t0 as samples since local midnight."""
        return round(self.seconds_since_midnight() * samplerate)

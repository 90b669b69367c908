"""The shared clock: host monotonic time, take origin, and the mapping of device clocks onto it.

Every stored `t_ns` is nanoseconds since the take's `t0` on `time.monotonic_ns()`. Devices have clocks of
their own; `OnlineClock` maps a device clock onto the host clock live, from (device time, host arrival)
pairs. Arrival = event + transport delay + jitter, and the delay is never negative, so the smallest
(host - device) difference seen is the best live estimate of the clock offset (the lower envelope).
"""
from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass

now_ns = time.monotonic_ns


@dataclass(frozen=True, slots=True)
class TakeOrigin:
    """A take's t0 on the host clock, with the matching wall-clock time for editors."""

    t0_ns: int
    utc: _dt.datetime

    @classmethod
    def now(cls) -> "TakeOrigin":
        # Read both clocks back to back; the wall time is only for humans and editors.
        t0 = now_ns()
        return cls(t0, _dt.datetime.now(_dt.timezone.utc))

    def timecode(self, fps: float) -> str:
        """SMPTE timecode (non-drop) of t0 in local time of day, at `fps` frames per second."""
        local = self.utc.astimezone()
        seconds = local.hour * 3600 + local.minute * 60 + local.second
        frames = int(local.microsecond / 1e6 * round(fps))
        return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}:{frames:02d}"

    def samples_since_midnight(self, samplerate: int) -> int:
        """BWF `time_reference`: t0 as samples since local midnight."""
        local = self.utc.astimezone()
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        return int(round((local - midnight).total_seconds() * samplerate))


class OnlineClock:
    """Live device→host mapping: offset from the lower envelope of arrival delays.

    `observe` takes a device time and the host time at which data stamped with it arrived; `to_host`
    maps any device time onto the host clock. Until the first observation the mapping is the identity.
    """

    __slots__ = ("offset_ns", "observations")

    def __init__(self) -> None:
        self.offset_ns: int | None = None
        self.observations = 0

    def observe(self, device_ns: int, host_ns: int) -> None:
        delay = host_ns - device_ns
        if self.offset_ns is None or delay < self.offset_ns:
            self.offset_ns = delay
        self.observations += 1

    def to_host(self, device_ns: int) -> int:
        return device_ns + (self.offset_ns or 0)

"""The shared clock: host monotonic time and a take's origin.

Every stored `t_ns` is nanoseconds since the take's `t0` on `time.monotonic_ns()`. Mapping the devices'
own clocks onto it is `clockfit`'s work.
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

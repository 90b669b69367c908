"""SMPTE timecode at an exact rational rate, drop-frame where editors expect it (29.97 and 59.94).

A rate is stored as a fraction (30000/1001, never 29.97): editors place clips by frame counts, and a
float rate drifts by a frame every few minutes. Drop-frame timecode skips frame labels 0 and 1 (0-3 at
59.94) at the start of every minute except every tenth, so that the label keeps up with the wall clock;
its frames are separated by ';'.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from ..errors import TakeError

# the NTSC rates as cameras report them in floats, and their exact values
NTSC = {
    23.976: Fraction(24000, 1001),
    29.97: Fraction(30000, 1001),
    47.952: Fraction(48000, 1001),
    59.94: Fraction(60000, 1001),
    119.88: Fraction(120000, 1001),
}
DROP_FRAME = (Fraction(30000, 1001), Fraction(60000, 1001))
_TIMECODE = re.compile(r"^(\d{2}):(\d{2}):(\d{2})([:;.,])(\d{2,3})$")
SECONDS_PER_DAY = 86400
DEFAULT_TIMECODE_FPS = 30  # a take's timecode rate when its rig has no camera to give one


@dataclass(frozen=True)
class TimecodeRate:
    """A timecode's frame rate (exact) and whether its labels drop frames."""

    rate: Fraction
    drop: bool = False

    @classmethod
    def of(cls, fps: float | Fraction | str) -> TimecodeRate:
        """The timecode rate of a stream running at `fps` (a float as a camera reports it, a fraction, or
        "30000/1001"): NTSC rates exactly, drop-frame at 29.97 and 59.94; any other rate as given."""
        if isinstance(fps, str):
            try:
                rate = Fraction(fps)
            except (ValueError, ZeroDivisionError):
                raise TakeError(f"timecode rate {fps!r} is not a number or fraction") from None
        elif isinstance(fps, Fraction):
            rate = fps
        else:
            rate = next((exact for near, exact in NTSC.items() if abs(float(fps) - near) < 0.005), None) or Fraction(
                fps
            ).limit_denominator(1001)
        if rate <= 0:
            raise TakeError(f"timecode rate {fps!r} is not positive")
        return cls(rate, rate in DROP_FRAME)

    @property
    def nominal(self) -> int:
        """Frames a timecode second counts (30 at 29.97)."""
        return round(self.rate)

    @property
    def flag(self) -> str:
        """iXML's TIMECODE_FLAG."""
        return "DF" if self.drop else "NDF"

    def label(self) -> str:
        """ "30000/1001 DF": how the rate is stated in the manifest and the editorial files."""
        return f"{self.rate.numerator}/{self.rate.denominator} {self.flag}"

    def frames_in_day(self) -> int:
        return int(SECONDS_PER_DAY * self.rate) if not self.drop else self.frame_number("24:00:00;00")

    def frame_at(self, seconds: Fraction | float) -> int:
        """The frame running at `seconds` since midnight (frames counted from midnight at the real rate)."""
        return int(Fraction(seconds) * self.rate)

    def timecode(self, frame: int) -> str:
        """The label of frame `frame` since midnight (wrapping at 24 h)."""
        n = self.nominal
        frame %= self.frames_in_day()
        if self.drop:
            dropped = 2 * (n // 30)  # labels skipped a minute
            per_minute = 60 * n - dropped
            per_ten = 10 * per_minute + dropped  # the tenth minute keeps them
            tens, rest = divmod(frame, per_ten)
            extra = dropped * 9 * tens
            if rest > dropped:
                extra += dropped * ((rest - dropped) // per_minute)
            frame += extra
        ff = frame % n
        seconds = frame // n
        sep = ";" if self.drop else ":"
        return f"{seconds // 3600 % 24:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}{sep}{ff:02d}"

    def frame_number(self, timecode: str) -> int:
        """Frames since midnight of a label "HH:MM:SS:FF" (or ';' for drop-frame)."""
        m = _TIMECODE.match(timecode.strip())
        if m is None:
            raise TakeError(f"{timecode!r} is not a timecode (HH:MM:SS:FF)")
        hh, mm, ss, _, ff = m.groups()
        h, mi, s, f = int(hh), int(mm), int(ss), int(ff)
        n = self.nominal
        if mi > 59 or s > 59 or f >= n or h > 24:
            raise TakeError(f"{timecode!r} is not a timecode at {self.label()}")
        total_minutes = 60 * h + mi
        frame = (3600 * h + 60 * mi + s) * n + f
        if self.drop:
            dropped = 2 * (n // 30)
            if s == 0 and f < dropped and mi % 10:
                raise TakeError(f"{timecode!r} is a label drop-frame timecode skips")
            frame -= dropped * (total_minutes - total_minutes // 10)
        return frame


def take_rate(manifest: Mapping[str, Any]) -> TimecodeRate:
    """A take's timecode rate (`timecode_rate`, "30000/1001 DF"; before it was stored, 30 fps)."""
    label = str(manifest.get("timecode_rate") or DEFAULT_TIMECODE_FPS).split()
    rate = TimecodeRate.of(label[0])
    return TimecodeRate(rate.rate, label[1] == "DF") if len(label) > 1 else rate


def t0_since_midnight(manifest: Mapping[str, Any]) -> Fraction:
    """A take's t0 as seconds since the local midnight its timecode counts from: from `t0_local` to the
    microsecond, else (a take from before it was stored) from its timecode label, to the frame. A take
    jam-synced to LTC has it from the LTC (`timecode_t0_s`)."""
    jammed = manifest.get("timecode_t0_s")
    if isinstance(jammed, (int, float)) and not isinstance(jammed, bool):
        return Fraction(jammed)
    local = manifest.get("t0_local")
    if isinstance(local, str):
        try:
            t = _dt.datetime.fromisoformat(local)
            return Fraction(t.hour * 3600 + t.minute * 60 + t.second) + Fraction(t.microsecond, 10**6)
        except ValueError:
            pass
    rate = take_rate(manifest)
    return Fraction(rate.frame_number(str(manifest.get("timecode") or "00:00:00:00")), 1) / rate.rate


def take_ns_of_day(manifest: Mapping[str, Any], seconds: np.ndarray) -> np.ndarray:
    """The take's t_ns at times of day (s since midnight, on the studio's timecode): a take jam-synced to
    LTC through the line fitted to its LTC (its offset and drift), else from its own t0's time of day.
    A time of day within 12 hours either side of t0's (a take across midnight)."""
    t0 = float(t0_since_midnight(manifest))
    ltc = manifest.get("ltc")
    if not isinstance(ltc, dict):
        ltc = {}
    slope = 1 + (ltc.get("drift_ppm") or 0.0) * 1e-6 if manifest.get("timecode_t0_s") is not None else 1.0
    d = (np.asarray(seconds, np.float64) - t0 + SECONDS_PER_DAY / 2) % SECONDS_PER_DAY - SECONDS_PER_DAY / 2
    return d / slope * 1e9

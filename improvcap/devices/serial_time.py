"""Running counters and device times from the wrapping fields serial devices send.

A 16-bit packet counter wraps every 65 536 frames (under three minutes at 400 Hz) and a 10 kHz 32-bit tick
counter every five days; the shared clock needs device time that keeps counting. The rule is the one of
`clockfit.unwrap_counter`, applied one frame at a time as frames arrive.
"""

from __future__ import annotations

from ..protocols import Frame, FrameParser


class Unwrapper:
    """A wrapping value made monotonic through its wraps, online. A step down by more than half the
    modulus is a wrap; a step up by more than half is a late value from before a wrap; smaller backward
    steps (a repeat, a reset) are kept as they are."""

    def __init__(self, modulus: int) -> None:
        if modulus <= 0:
            raise ValueError(f"modulus must be positive, got {modulus}")
        self.modulus = modulus
        self._last: int | None = None
        self._turns = 0

    def __call__(self, value: int) -> int:
        last, self._last = self._last, value
        if last is not None:
            step = value - last
            if step < -self.modulus / 2:
                self._turns += 1
            elif step > self.modulus / 2:
                self._turns -= 1
        return value + self._turns * self.modulus


class FrameClock:
    """(counter, device_ns) of each frame that keep counting, whatever the protocol sends.

    - the counter is unwrapped; a protocol without one gets the frame's position on the device clock,
      in nominal periods since the first frame (so lost frames still show as counter gaps);
    - the device time is unwrapped; a frame without one gets counter × nominal period (DESIGN section 3:
      "the counter × nominal period when the device has no time field"); with neither, frames received ×
      period.
    """

    def __init__(self, parser: FrameParser, rate: float) -> None:
        self.period_ns = 1e9 / rate
        self._counter = Unwrapper(parser.counter_wrap)
        self._time = Unwrapper(parser.time_wrap_ns) if parser.time_wrap_ns else None
        self._first_counter: int | None = None
        self._first_ns: int | None = None
        self._received = 0

    def __call__(self, frame: Frame) -> tuple[int, int]:
        self._received += 1
        counter = None if frame.counter is None else self._counter(frame.counter)
        device_ns = frame.device_ns
        if device_ns is not None and self._time is not None:
            device_ns = self._time(device_ns)
        if counter is None:
            if device_ns is None:
                counter = self._received - 1
            else:
                if self._first_ns is None:
                    self._first_ns = device_ns
                counter = round((device_ns - self._first_ns) / self.period_ns)
        if device_ns is None:
            if self._first_counter is None:
                self._first_counter = counter
            device_ns = round((counter - self._first_counter) * self.period_ns)
        return counter, device_ns

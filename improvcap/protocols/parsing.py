"""What every frame parser counts, and the byte buffer it resynchronises in.

A parser is fed bytes in chunks of any size and keeps back at most one unfinished frame in `_buf`. It
counts what it accepts (`frames`) and what it rejects (`crc_errors`, `parse_errors`, `bytes_skipped`),
and reads its device's frame counter by the wrapping-counter rule of `improvcap.take.counters`: a counter
gap is any step other than +1 (lost frames, a repeat or a device reset), and `frames_missed` adds up the
numbers skipped by forward steps.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from ..take import counters

MAX_CHANNELS = 255  # values a frame may carry (binary frames count them in a u8)
COUNTER_MOD = counters.COUNTER_WRAP  # the u32 frame counter of binary and csv frames


class CountingParser:
    """The counters and the buffer shared by the protocols' parsers. `channels`, when given, is checked
    against MAX_CHANNELS; `counter_wrap` and `time_wrap_ns` say where the device's counter and clock wrap
    (a subclass sets its own)."""

    counter_wrap = COUNTER_MOD
    time_wrap_ns: int | None = None

    def __init__(self, channels: int | None) -> None:
        if channels is not None and not 1 <= channels <= MAX_CHANNELS:
            raise ValueError(f"channels must be 1..{MAX_CHANNELS}, got {channels}")
        self.channels = channels
        self.frames = 0
        self.crc_errors = 0
        self.parse_errors = 0
        self.bytes_skipped = 0
        self.counter_gaps = 0
        self.frames_missed = 0
        self._last: int | None = None
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for the rest of a frame or line."""
        return len(self._buf)

    def _track(self, counter: int | None) -> None:
        self.frames += 1
        if counter is None:
            return
        last, self._last = self._last, counter
        if last is None:
            return
        step = counters.step(last, counter, self.counter_wrap)
        if step != 1:
            self.counter_gaps += 1
            self.frames_missed += int(counters.skipped(step, self.counter_wrap))

    def _next_start(self, buf: bytearray, pos: int, preamble: bytes) -> tuple[int, bool]:
        """(position of the next `preamble` at or after `pos`, found); the bytes before it are counted as
        skipped. When there is none: the position to keep from, since a trailing first byte of a
        two-byte preamble may be completed by the next chunk."""
        i = buf.find(preamble, pos)
        if i < 0:
            end = len(buf)
            keep = 1 if end > pos and buf[end - 1] == preamble[0] else 0
            self.bytes_skipped += end - keep - pos
            return end - keep, False
        self.bytes_skipped += i - pos
        return i, True

    def stats(self) -> dict[str, int]:
        return {
            "frames": self.frames,
            "crc_errors": self.crc_errors,
            "parse_errors": self.parse_errors,
            "bytes_skipped": self.bytes_skipped,
            "counter_gaps": self.counter_gaps,
            "frames_missed": self.frames_missed,
        }


def numbered_channels(settings: Mapping[str, Any]) -> list[str]:
    """The value columns of a protocol whose frames carry `channels` plain values: ch00, ch01, ..."""
    return [f"ch{i:02d}" for i in range(settings["channels"])]


def outputs_problem(outputs: Sequence[str], known: Collection[str], protocol: str) -> tuple[str, str] | None:
    """(rig key, problem) when a protocol's `outputs` setting names an unknown output or one twice."""
    seen: set[str] = set()
    for out in outputs:
        if out not in known:
            return "outputs", f"unknown {protocol} output {out!r} (expected {', '.join(known)})"
        if out in seen:
            return "outputs", f"{out!r} is listed twice"
        seen.add(out)
    return None

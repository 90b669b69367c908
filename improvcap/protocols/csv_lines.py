"""The `csv` mocap protocol: one text line per frame (`protocol = "csv"`).

    counter,device_us,v1,...,vN

ended by `\\n` or `\\r\\n`; the counter is a u32, the device time in µs, the values decimal numbers. A line
carries the rig's `channels` values, named ch00, ch01, ... The parser's buffer never holds more than one
line (`max_line`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from . import Frame
from .parsing import COUNTER_MOD, MAX_CHANNELS, CountingParser, numbered_channels

channel_names = numbered_channels


def encode_csv(counter: int, device_us: int, values: Sequence[float], newline: bytes = b"\r\n") -> bytes:
    """One csv line; values keep float32 precision ('%.9g')."""
    return b"%d,%d," % (counter, device_us) + b",".join(b"%.9g" % v for v in values) + newline


class CsvParser(CountingParser):
    """Incremental parser of csv lines. `channels`, when given, fixes the field count (2 + channels).

    Lines that do not parse are parse errors; a line longer than `max_line` bytes is discarded whole and
    counted once as a parse error, whether or not its end has arrived yet (the buffer stays bounded).
    Blank lines are ignored. `skip_partial=True` drops everything up to the first newline: a reader that
    joins a running stream starts mid-line, and a line cut on its left may still look valid.
    """

    def __init__(self, channels: int | None = None, max_line: int | None = None, skip_partial: bool = False) -> None:
        super().__init__(channels)
        # a generous bound: '%.9g' of a float32 takes at most 16 characters
        self.max_line = max_line or 64 + 24 * (channels or MAX_CHANNELS)
        self._discarding = False  # inside an overlong line, until its newline
        self._skipping_partial = skip_partial

    def feed(self, data: bytes) -> list[Frame]:
        buf = self._buf
        buf += data
        out: list[Frame] = []
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            line = buf[start:nl]
            length = nl + 1 - start
            start = nl + 1
            if self._skipping_partial:
                self._skipping_partial = False
                self.bytes_skipped += length
            elif self._discarding:
                self._discarding = False
                self.bytes_skipped += length
            elif len(line) > self.max_line:
                self.parse_errors += 1
                self.bytes_skipped += length
            else:
                frame = self._parse(line)
                if frame is None:
                    if line.strip():
                        self.parse_errors += 1
                    self.bytes_skipped += length
                else:
                    out.append(frame)
                    self._track(frame.counter)
        rest = len(buf) - start
        if rest > self.max_line or (rest and (self._discarding or self._skipping_partial)):
            if not (self._discarding or self._skipping_partial):
                self.parse_errors += 1
                self._discarding = True
            self.bytes_skipped += rest
            start = len(buf)
        del buf[:start]
        return out

    def _parse(self, line: bytearray) -> Frame | None:
        fields = line.split(b",")
        if len(fields) < 3 or (self.channels is not None and len(fields) != self.channels + 2):
            return None
        try:
            counter = int(fields[0])
            device_us = int(fields[1])
            values = tuple(map(float, fields[2:]))
        except ValueError:
            return None
        if not 0 <= counter < COUNTER_MOD or len(values) > MAX_CHANNELS:
            return None
        return Frame(counter, device_us * 1000, values)


def make_parser(settings: Mapping[str, Any], *, skip_partial: bool = False) -> CsvParser:
    """A parser for the stream's `channels`; `skip_partial`: the stream is joined mid-line."""
    return CsvParser(settings.get("channels"), skip_partial=skip_partial)

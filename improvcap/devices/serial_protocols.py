"""Mocap frame formats on a byte stream, apart from any transport (serial port, pty, file replay).

`binary` — little-endian frames:

    A5 5A | u8 version (1) | u8 N | u32 counter | u64 device time (µs) | N × f32 | u16 CRC

The CRC is CRC-16/CCITT-FALSE over every byte after the magic and before the CRC. `csv` — one line per
frame, `counter,device_us,v1,...,vN`, ended by `\\n` or `\\r\\n`.

Parsers are fed whatever bytes arrive, in chunks of any size, and return the frames completed so far. They
never raise on bad input: corruption is skipped, counted and the parser resynchronises, so a frame that
starts inside a damaged region is still found. The frames returned do not depend on how the bytes were
split into chunks, and the internal buffer never holds more than one frame or line.

Every protocol (these two, and the device families in `protocol_xsens` and `protocol_vectornav`) is a
module with the same face, found through `protocol_module(name)`:

- `make_parser(settings, *, skip_partial=False) -> FrameParser` — settings are the stream's rig settings;
- `channel_names(settings) -> list[str]` — the value columns its frames carry, in order;
- optionally `check_settings(settings) -> tuple[str, str] | None` — (rig key, problem) for `rig check`;
- optionally `configure(port, settings, stream) -> None` — set the device up after the port opens
  (raises DeviceError);
- optionally `probe(port) -> bool` — a harmless question that tells whether a port speaks it;
- optionally `emulator_codec(settings) -> EmulatorCodec` — how its pty emulator writes frames.

A `Frame` carries the device's counter and time *as sent* (they may wrap: `FrameParser.counter_wrap`,
`FrameParser.time_wrap_ns`); the serial driver unwraps them (`serial_time.FrameClock`).
"""
from __future__ import annotations

import binascii
import importlib
import random
import struct
from typing import Any, Mapping, NamedTuple, Protocol, Sequence

MAGIC = b"\xa5\x5a"
VERSION = 1
MAX_CHANNELS = 255
COUNTER_MOD = 1 << 32

_HEAD = struct.Struct("<BBIQ")  # version, N, counter, device_us
_CRC = struct.Struct("<H")
_HEAD_END = len(MAGIC) + _HEAD.size  # values start here
_VALUES: dict[int, struct.Struct] = {}  # N -> "<Nf", compiled once per channel count


class Frame(NamedTuple):
    counter: int | None       # the device's frame counter as sent; None when the protocol has none
    device_ns: int | None     # the device's clock as sent, in ns; None when the frame carries no time
    values: tuple[float, ...]


def crc16_ccitt(data: bytes | bytearray | memoryview, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final xor."""
    # binascii.crc_hqx is exactly this polynomial, unreflected, computed in C
    return binascii.crc_hqx(data, crc)


def _values_struct(n: int) -> struct.Struct:
    s = _VALUES.get(n)
    if s is None:
        s = _VALUES[n] = struct.Struct(f"<{n}f")
    return s


def binary_frame_size(channels: int) -> int:
    return _HEAD_END + 4 * channels + _CRC.size


def encode_binary(counter: int, device_us: int, values: tuple[float, ...] | list[float]) -> bytes:
    """One binary frame; `counter` is taken modulo 2**32."""
    n = len(values)
    if not 1 <= n <= MAX_CHANNELS:
        raise ValueError(f"a frame carries 1 to {MAX_CHANNELS} channels, got {n}")
    body = _HEAD.pack(VERSION, n, counter % COUNTER_MOD, device_us) + _values_struct(n).pack(*values)
    return MAGIC + body + _CRC.pack(crc16_ccitt(body))


def encode_csv(counter: int, device_us: int, values: tuple[float, ...] | list[float],
               newline: bytes = b"\r\n") -> bytes:
    """One csv line; values keep float32 precision ('%.9g')."""
    return b"%d,%d," % (counter, device_us) + b",".join(b"%.9g" % v for v in values) + newline


class FrameParser(Protocol):
    counter_wrap: int             # the counter counts modulo this
    time_wrap_ns: int | None      # the device time wraps at this (None: never in practice)
    frames: int
    crc_errors: int
    parse_errors: int
    bytes_skipped: int
    counter_gaps: int
    frames_missed: int
    buffered: int

    def feed(self, data: bytes) -> list[Frame]: ...

    def stats(self) -> dict[str, int]: ...


class _Counters:
    """What both parsers count. A counter gap is any discontinuity of the device counter (lost frames,
    a repeat or a device reset); `frames_missed` adds up the frames skipped by forward jumps."""

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
        wrap = self.counter_wrap
        step = (counter - last) % wrap
        if step != 1:
            self.counter_gaps += 1
            if 1 < step < wrap // 2:  # forward jump; otherwise a repeat or a counter reset
                self.frames_missed += step - 1

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


class BinaryParser(_Counters):
    """Incremental parser of binary frames. `channels`, when given, is the only channel count accepted.

    A magic followed by an impossible header (version, N) is a parse error; a frame whose CRC fails is a
    CRC error. Either way the search for the next magic resumes one byte later, so nothing inside the
    rejected bytes is lost. Bytes outside accepted frames add to `bytes_skipped`.
    """

    def __init__(self, channels: int | None = None) -> None:
        super().__init__(channels)

    def feed(self, data: bytes) -> list[Frame]:
        buf = self._buf
        buf += data
        out: list[Frame] = []
        pos, end = 0, len(buf)
        expected = self.channels
        while True:
            pos, found = self._next_start(buf, pos, MAGIC)
            if not found:
                break
            if end - pos < _HEAD_END:
                break
            version, n, counter, device_us = _HEAD.unpack_from(buf, pos + 2)
            if version != VERSION or n == 0 or (expected is not None and n != expected):
                self.parse_errors += 1
                self.bytes_skipped += 1
                pos += 1
                continue
            size = _HEAD_END + 4 * n + 2
            if end - pos < size:
                break
            crc_at = pos + size - 2
            if crc16_ccitt(buf[pos + 2:crc_at]) != _CRC.unpack_from(buf, crc_at)[0]:
                self.crc_errors += 1
                self.bytes_skipped += 1
                pos += 1
                continue
            out.append(Frame(counter, device_us * 1000, _values_struct(n).unpack_from(buf, pos + _HEAD_END)))
            self._track(counter)
            pos += size
        del buf[:pos]
        return out


class CsvParser(_Counters):
    """Incremental parser of csv lines. `channels`, when given, fixes the field count (2 + channels).

    Lines that do not parse are parse errors; a line longer than `max_line` bytes is discarded whole and
    counted once as a parse error, whether or not its end has arrived yet (the buffer stays bounded).
    Blank lines are ignored. `skip_partial=True` drops everything up to the first newline: a reader that
    joins a running stream starts mid-line, and a line cut on its left may still look valid.
    """

    def __init__(self, channels: int | None = None, max_line: int | None = None,
                 skip_partial: bool = False) -> None:
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


# protocol name -> module (imported on use)
PROTOCOLS: dict[str, str] = {
    "binary": "improvcap.devices.serial_protocols",
    "csv": "improvcap.devices.serial_protocols",
    "xsens": "improvcap.devices.protocol_xsens",
    "vectornav": "improvcap.devices.protocol_vectornav",
}


def protocol_module(protocol: str) -> Any:
    """The module that speaks `protocol` (see the module docstring for its face)."""
    try:
        return importlib.import_module(PROTOCOLS[protocol])
    except KeyError:
        raise ValueError(f"unknown serial protocol {protocol!r} (expected {', '.join(PROTOCOLS)})") from None


def make_parser(settings: Mapping[str, Any], *, skip_partial: bool = False) -> FrameParser:
    """A fresh parser for a stream's settings (`protocol`, `channels`)."""
    protocol = settings["protocol"]
    if protocol == "binary":
        return BinaryParser(settings.get("channels"))
    if protocol == "csv":
        return CsvParser(settings.get("channels"), skip_partial=skip_partial)
    return protocol_module(protocol).make_parser(settings, skip_partial=skip_partial)


def channel_names(settings: Mapping[str, Any]) -> list[str]:
    if settings["protocol"] in ("binary", "csv"):
        return [f"ch{i:02d}" for i in range(settings["channels"])]
    return protocol_module(settings["protocol"]).channel_names(settings)


class EmulatorCodec(Protocol):
    """How a pty emulator speaks a protocol (see mocap_emulator). `device_ns` is the device clock since its
    boot; the codec converts it (and the counter) into the protocol's units and wraps."""

    has_counter: bool       # frames carry a counter (else the truth comes from device time)

    def encode(self, counter: int, device_ns: int, values: Sequence[float]) -> bytes: ...

    def corrupt(self, frame: bytes, rng: random.Random) -> bytes: ...     # a damaged copy its check rejects

    def garbage(self, rng: random.Random) -> bytes: ...                   # junk between frames

    def respond(self, request: bytes) -> bytes: ...                       # reply to bytes from the host

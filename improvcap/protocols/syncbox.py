"""The sync box protocol on a byte stream, apart from any transport (serial port, pty, file replay).

An open protocol modelled on open trigger boxes, the same framing both ways:

    AA 55 | type u8 | len u8 | payload (len bytes, little-endian fields) | sum u8

`sum` makes the 8-bit sum of every byte after the preamble — type, len, payload and sum — zero.

| dir  | type        | payload                                    | meaning                                   |
| ---- | ----------- | ------------------------------------------ | ----------------------------------------- |
| host | `Q` 0x51    | id u16                                     | timing query                              |
| host | `S` 0x53    | id u16                                     | fire the LED and the beep now             |
| host | `T` 0x54    | period_us u32                              | trigger pulse period; 0 stops the pulses  |
| host | `I` 0x49    | (none)                                     | identify yourself                         |
| box  | `R` 0x52    | id u16, pulse_count u32, ticks u64         | reply to Q: pulses so far, timer now      |
| box  | `P` 0x50    | pulse_count u32, ticks u64                 | one trigger pulse: its number and edge    |
| box  | `F` 0x46    | id u16, ticks u64                          | the slate of S `id` fired at `ticks`      |
| box  | `V` 0x56    | version u8, tick_hz u32, name (ASCII)      | reply to I                                |

`ticks` is the box's free-running timer since its boot, counting `tick_hz` per second (u64: it never
wraps); `pulse_count` counts trigger pulses since boot (u32, wraps). A `P` message goes out at the rising
edge of every pulse, stamped with that edge's tick. Check vectors: `I` is `AA 55 49 00 B7`; `Q` id 1 is
`AA 55 51 02 01 00 AC`; `R` id 1, pulse_count 2, ticks 1 000 000 is
`AA 55 52 0E 01 00 02 00 00 00 40 42 0F 00 00 00 00 00 0C`.

`SyncParser` is fed whatever bytes arrive, in chunks of any size, and returns the messages completed so
far, whichever direction they belong to. It never raises on bad input: a known type with an impossible
length is a parse error, a wrong sum a checksum error (`crc_errors`), and either way the search for the
next preamble resumes one byte later; a message of an unknown type with a good sum is skipped whole by
its length. The messages returned do not depend on how the bytes were split, and the buffer never holds
more than one message (260 bytes).
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from typing import Any

from .parsing import CountingParser

PREAMBLE = b"\xaa\x55"
MAX_NAME = 64  # bytes of the identity's name
MAX_MESSAGE = 4 + 255 + 1  # preamble, type, len, payload, sum
PULSE_WRAP = 1 << 32

QUERY, SLATE, TRIGGER, IDENTIFY = 0x51, 0x53, 0x54, 0x49  # host → box
REPLY, PULSE, FIRED, IDENTITY = 0x52, 0x50, 0x46, 0x56  # box → host


@dataclass(frozen=True, slots=True)
class Query:
    id: int


@dataclass(frozen=True, slots=True)
class Slate:
    id: int


@dataclass(frozen=True, slots=True)
class Trigger:
    period_us: int


@dataclass(frozen=True, slots=True)
class Identify:
    pass


@dataclass(frozen=True, slots=True)
class Reply:
    id: int
    pulse_count: int
    ticks: int


@dataclass(frozen=True, slots=True)
class Pulse:
    pulse_count: int
    ticks: int


@dataclass(frozen=True, slots=True)
class Fired:
    id: int
    ticks: int


@dataclass(frozen=True, slots=True)
class Identity:
    version: int
    tick_hz: int
    name: str


Message = Query | Slate | Trigger | Identify | Reply | Pulse | Fired | Identity

# type -> (class, struct of the fixed fields); the identity's name follows its fixed fields
_LAYOUT: dict[int, tuple[type, struct.Struct]] = {
    QUERY: (Query, struct.Struct("<H")),
    SLATE: (Slate, struct.Struct("<H")),
    TRIGGER: (Trigger, struct.Struct("<I")),
    IDENTIFY: (Identify, struct.Struct("<")),
    REPLY: (Reply, struct.Struct("<HIQ")),
    PULSE: (Pulse, struct.Struct("<IQ")),
    FIRED: (Fired, struct.Struct("<HQ")),
    IDENTITY: (Identity, struct.Struct("<BI")),
}
_TYPE = {cls: (code, layout) for code, (cls, layout) in _LAYOUT.items()}


def checksum(body: bytes | bytearray | memoryview) -> int:
    """The sum byte for `body` (type, len, payload): the 8-bit sum of body and sum is zero."""
    return -sum(body) & 0xFF


def encode(message: Message) -> bytes:
    """One framed message. Raises ValueError for a field out of its range or a name that is not ASCII."""
    code, layout = _TYPE[type(message)]
    if isinstance(message, Identity):
        name = message.name.encode("ascii")
        if len(name) > MAX_NAME:
            raise ValueError(f"identity name longer than {MAX_NAME} bytes")
        fields: tuple[int, ...] = (message.version, message.tick_hz)
    else:
        name = b""
        fields = tuple(getattr(message, f) for f in message.__slots__)
    try:
        payload = layout.pack(*fields) + name
    except struct.error as e:
        raise ValueError(f"{type(message).__name__}: {e}") from None
    body = bytes((code, len(payload))) + payload
    return PREAMBLE + body + bytes((checksum(body),))


def _length_ok(code: int, length: int) -> bool:
    size = _LAYOUT[code][1].size
    return size <= length <= size + MAX_NAME if code == IDENTITY else length == size


def _decode(code: int, payload: bytes) -> Message | None:
    cls, layout = _LAYOUT[code]
    fields = layout.unpack_from(payload)
    if code == IDENTITY:
        name = payload[layout.size :]
        if not all(32 <= b < 127 for b in name):
            return None
        return Identity(fields[0], fields[1], name.decode("ascii"))
    return cls(*fields)


class SyncParser(CountingParser):
    """Incremental parser of sync box messages (both directions). Counts what it rejects and, among the
    `P` messages, gaps in the pulse count (`pulse_gaps`, and `pulses_missed` by forward jumps)."""

    counter_wrap = PULSE_WRAP

    def __init__(self) -> None:
        super().__init__(None)
        self.messages = 0
        self.unknown = 0

    def feed(self, data: bytes) -> list[Message]:
        buf = self._buf
        buf += data
        out: list[Message] = []
        pos, end = 0, len(buf)
        while True:
            pos, found = self._next_start(buf, pos, PREAMBLE)
            if not found:
                break
            if end - pos < 4:
                break
            code, length = buf[pos + 2], buf[pos + 3]
            if code in _LAYOUT and not _length_ok(code, length):
                self.parse_errors += 1
                self.bytes_skipped += 1
                pos += 1
                continue
            size = 4 + length + 1
            if end - pos < size:
                break
            if sum(buf[pos + 2 : pos + size]) & 0xFF:
                self.crc_errors += 1
                self.bytes_skipped += 1
                pos += 1
                continue
            if code not in _LAYOUT:
                self.unknown += 1  # a newer firmware's message: skipped by its length
                pos += size
                continue
            message = _decode(code, bytes(buf[pos + 4 : pos + 4 + length]))
            if message is None:
                self.parse_errors += 1
                self.bytes_skipped += 1
                pos += 1
                continue
            self.messages += 1
            if isinstance(message, Pulse):
                self._track(message.pulse_count)
            out.append(message)
            pos += size
        del buf[:pos]
        return out

    def stats(self) -> dict[str, int]:
        return {
            "messages": self.messages,
            "pulses": self.frames,
            "crc_errors": self.crc_errors,
            "parse_errors": self.parse_errors,
            "unknown_messages": self.unknown,
            "bytes_skipped": self.bytes_skipped,
            "pulse_gaps": self.counter_gaps,
            "pulses_missed": self.frames_missed,
        }


def make_parser() -> SyncParser:
    return SyncParser()


def identify(port: Any, timeout: float = 0.5) -> Identity | None:
    """Ask an open port (pyserial-like: write, read, in_waiting, timeout) who it is: sends `I` and waits
    up to `timeout` s for a `V`, ignoring whatever else the box sends meanwhile (pulses, late replies).
    None when nothing answers; OSError/ValueError from the port are left to the caller."""
    parser = SyncParser()
    old_timeout = port.timeout
    try:
        port.timeout = min(0.05, timeout)
        port.write(encode(Identify()))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in parser.feed(port.read(max(1, port.in_waiting))):
                if isinstance(message, Identity):
                    return message
        return None
    finally:
        try:
            port.timeout = old_timeout
        except (OSError, ValueError):
            pass


def probe(port: Any, timeout: float = 0.5) -> bool:
    """Whether `port` (open) is a sync box: `I` is harmless (it changes nothing on the box)."""
    try:
        return identify(port, timeout) is not None
    except (OSError, ValueError):  # pyserial's SerialException is an OSError
        return False

"""Wire protocols of serial devices: parsers and encoders on a byte stream, apart from any transport.

A protocol turns whatever bytes arrive (from a serial port, a pseudo-terminal or a file replay) into
frames, and frames into bytes for the emulators. Its parsers are fed chunks of any size and return the
frames completed so far. They never raise on bad input: corruption is skipped, counted and the parser
resynchronises, so a frame that starts inside a damaged region is still found. The frames returned do not
depend on how the bytes were split into chunks, and the buffer stays bounded.

The mocap protocols (`binary`, `csv_lines`, `xsens`, `vectornav`, named in `improvcap.registry.PROTOCOLS`)
are modules with the same face, found through `protocol_module(name)`:

- `make_parser(settings, *, skip_partial=False) -> FrameParser` — settings are the stream's rig settings;
- `channel_names(settings) -> list[str]` — the value columns its frames carry, in order;
- optionally `check_settings(settings) -> tuple[str, str] | None` — (rig key, problem) for `rig check`;
- optionally `configure(port, settings, stream) -> None` — set the device up after the port opens
  (raises DeviceError);
- optionally `probe(port) -> bool` — a harmless question that tells whether a port speaks it;
- optionally `emulator_codec(settings) -> EmulatorCodec` — how its pty emulator writes frames.

`port` is an open pyserial-like object (write, read, in_waiting, timeout); opening it is the drivers'
business. A `Frame` carries the device's counter and time *as sent* (they may wrap:
`FrameParser.counter_wrap`, `FrameParser.time_wrap_ns`); the serial driver unwraps them
(`devices.serial_time.FrameClock`). The sync box protocol (`syncbox`) is no mocap protocol: its messages
are pulses, slates and clock queries, and it has a face of its own.
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from ..registry import PROTOCOLS


class Frame(NamedTuple):
    counter: int | None  # the device's frame counter as sent; None when the protocol has none
    device_ns: int | None  # the device's clock as sent, in ns; None when the frame carries no time
    values: tuple[float, ...]


class FrameParser(Protocol):
    counter_wrap: int  # the counter counts modulo this
    time_wrap_ns: int | None  # the device time wraps at this (None: never in practice)
    frames: int
    crc_errors: int
    parse_errors: int
    bytes_skipped: int
    counter_gaps: int
    frames_missed: int
    buffered: int

    def feed(self, data: bytes) -> list[Frame]: ...

    def stats(self) -> dict[str, int]: ...


class EmulatorCodec(Protocol):
    """How a pty emulator speaks a protocol (see devices.mocap_emulator). `device_ns` is the device clock
    since its boot; the codec converts it (and the counter) into the protocol's units and wraps."""

    has_counter: bool  # frames carry a counter (else the truth comes from device time)

    def encode(self, counter: int, device_ns: int, values: Sequence[float]) -> bytes: ...

    def corrupt(self, frame: bytes, rng: random.Random) -> bytes: ...  # a damaged copy its check rejects

    def garbage(self, rng: random.Random) -> bytes: ...  # junk between frames

    def respond(self, request: bytes) -> bytes: ...  # reply to bytes from the host


def protocol_module(protocol: str) -> Any:
    """The module that speaks `protocol` (see the module docstring for its face)."""
    try:
        return importlib.import_module(PROTOCOLS[protocol])
    except KeyError:
        raise ValueError(f"unknown serial protocol {protocol!r} (expected {', '.join(PROTOCOLS)})") from None


def make_parser(settings: Mapping[str, Any], *, skip_partial: bool = False) -> FrameParser:
    """A fresh parser for a stream's settings (`protocol`, and what that protocol reads)."""
    parser: FrameParser = protocol_module(settings["protocol"]).make_parser(settings, skip_partial=skip_partial)
    return parser


def channel_names(settings: Mapping[str, Any]) -> list[str]:
    names: list[str] = protocol_module(settings["protocol"]).channel_names(settings)
    return names

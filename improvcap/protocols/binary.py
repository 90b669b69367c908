"""The `binary` mocap protocol: little-endian frames with a CRC (`protocol = "binary"`).

    A5 5A | u8 version (1) | u8 N | u32 counter | u64 device time (µs) | N × f32 | u16 CRC

The CRC is CRC-16/CCITT-FALSE over every byte after the magic and before the CRC. A frame carries the
rig's `channels` values, named ch00, ch01, ... The parser's buffer never holds more than one frame.
"""

from __future__ import annotations

import binascii
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from . import Frame
from .parsing import COUNTER_MOD, MAX_CHANNELS, CountingParser, numbered_channels

MAGIC = b"\xa5\x5a"
VERSION = 1

_HEAD = struct.Struct("<BBIQ")  # version, N, counter, device_us
_CRC = struct.Struct("<H")
_HEAD_END = len(MAGIC) + _HEAD.size  # values start here
_VALUES: dict[int, struct.Struct] = {}  # N -> "<Nf", compiled once per channel count

channel_names = numbered_channels


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


def encode_binary(counter: int, device_us: int, values: Sequence[float]) -> bytes:
    """One binary frame; `counter` is taken modulo 2**32."""
    n = len(values)
    if not 1 <= n <= MAX_CHANNELS:
        raise ValueError(f"a frame carries 1 to {MAX_CHANNELS} channels, got {n}")
    body = _HEAD.pack(VERSION, n, counter % COUNTER_MOD, device_us) + _values_struct(n).pack(*values)
    return MAGIC + body + _CRC.pack(crc16_ccitt(body))


class BinaryParser(CountingParser):
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
            if crc16_ccitt(buf[pos + 2 : crc_at]) != _CRC.unpack_from(buf, crc_at)[0]:
                self.crc_errors += 1
                self.bytes_skipped += 1
                pos += 1
                continue
            out.append(Frame(counter, device_us * 1000, _values_struct(n).unpack_from(buf, pos + _HEAD_END)))
            self._track(counter)
            pos += size
        del buf[:pos]
        return out


def make_parser(settings: Mapping[str, Any], *, skip_partial: bool = False) -> BinaryParser:
    """A parser for the stream's `channels`. `skip_partial` needs nothing here: a frame cut on its left has
    lost its magic."""
    return BinaryParser(settings.get("channels"))

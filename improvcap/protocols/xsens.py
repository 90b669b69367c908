"""Xsens MTi inertial trackers: the Xbus message format and MTData2 data packets (`protocol = "xsens"`).

An Xbus message is

    FA | BID FF | MID | LEN | DATA (LEN bytes) | CS

where LEN = 0xFF announces a big-endian u16 length after it (the extended form, for data longer than 254
bytes; at most MAX_DATA here), and CS makes the 8-bit sum of every byte after the FA preamble, CS
included, zero. Measurement data come as MTData2 (MID 0x36): repeated items `{DataID u16, size u8,
value}`, big-endian. The items read here:

    0x1020 PacketCounter u16       -> Frame.counter (wraps at 65 536)
    0x1060 SampleTimeFine u32      -> Frame.device_ns = ticks × 100 µs (10 kHz, wraps after ~5 days)
    0x1070 SampleTimeCoarse u32 s  0x2010 Quaternion 4×f32     0x2030 Euler angles 3×f32
    0x4020 Acceleration 3×f32      0x8020 Rate of turn 3×f32   0xC020 Magnetic field 3×f32
    0xE020 StatusWord u32

The low nibble of a float DataID selects precision (bits 0-1) and coordinate frame (bits 2-3). Only the
float32 forms are decoded (in any frame: ENU, NED or NWU have the same layout); the fixed-point and
float64 forms (e.g. 0x2013, quaternion as fp16.32) count as unknown DataIDs and are skipped by their size,
so the channels they would fill stay NaN. Unknown DataIDs are skipped by their size. Messages other than
MTData2 (acknowledgements, errors) are skipped by their length and counted as `other_messages`.

The 8-bit sum passes one damaged message in 256, so two more checks back it: a packet whose items do not
tile its data, or whose known items have the wrong size, is rejected; so is a message that runs into a
later valid message with no preamble right after it (a message cut short, whose claimed length takes in
the next one's first bytes). What still gets through is a cut message whose claimed length runs into
garbage or into another damaged message and whose sum matches by chance: its last item carries foreign
bytes (about 1 in 10 000 damaged messages in random corruption tests).

Rig settings: `outputs` lists the data fields each frame carries, in order (empty: quaternion,
acceleration, rate_of_turn):

    quaternion          quat_w, quat_x, quat_y, quat_z
    euler               roll, pitch, yaw (degrees)
    acceleration        acc_x, acc_y, acc_z (m/s²)
    rate_of_turn        gyr_x, gyr_y, gyr_z (rad/s)
    magnetic_field      mag_x, mag_y, mag_z (arbitrary units)
    status              status (the StatusWord; its defined bits end at bit 27, so it fits 9 digits)
    sample_time_coarse  time_coarse_s

`configure = true` makes the driver set the device up on open: GoToConfig, SetOutputConfiguration with
PacketCounter, SampleTimeFine and the outputs (measurements at `rate` Hz, counter, times and status with
every packet), GoToMeasurement. Device time: SampleTimeFine; without it the driver falls back on
PacketCounter.
"""

from __future__ import annotations

import math
import random
import struct
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import DeviceError
from . import Frame
from .parsing import CountingParser, outputs_problem

PREAMBLE = b"\xfa\xff"  # FA, then the bus id of the master device (always FF on an MTi)
MAX_DATA = 2048  # the longest message data an MTi sends (extended length)
MAX_MESSAGE = 6 + MAX_DATA + 1
MAX_BUFFER = 2 * MAX_MESSAGE  # what a parser may hold back between feeds
TICK_NS = 100_000  # SampleTimeFine counts at 10 kHz

MID_REQ_DID = 0x00
MID_DEVICE_ID = 0x01
MID_GOTO_MEASUREMENT = 0x10
MID_GOTO_CONFIG = 0x30
MID_MTDATA2 = 0x36
MID_ERROR = 0x42
MID_SET_OUTPUT_CONFIGURATION = 0xC0
MID_NAMES = {
    MID_REQ_DID: "ReqDID",
    MID_GOTO_MEASUREMENT: "GoToMeasurement",
    MID_GOTO_CONFIG: "GoToConfig",
    MID_SET_OUTPUT_CONFIGURATION: "SetOutputConfiguration",
}
ERRORS = {
    0x03: "period out of range",
    0x04: "invalid message",
    0x1E: "timer overflow",
    0x20: "invalid baud rate",
    0x21: "parameter invalid or out of range",
    0x28: "device error",
    0x29: "data overflow",
    0x2A: "buffer overflow",
}

PACKET_COUNTER = 0x1020
SAMPLE_TIME_FINE = 0x1060
EVERY_PACKET = 0xFFFF  # SetOutputConfiguration rate of fields that go with every packet

# output name -> (DataID, channel names, struct of the value); floats are the float32 forms
OUTPUTS: dict[str, tuple[int, tuple[str, ...], struct.Struct]] = {
    "quaternion": (0x2010, ("quat_w", "quat_x", "quat_y", "quat_z"), struct.Struct(">4f")),
    "euler": (0x2030, ("roll", "pitch", "yaw"), struct.Struct(">3f")),  # degrees
    "acceleration": (0x4020, ("acc_x", "acc_y", "acc_z"), struct.Struct(">3f")),  # m/s²
    "rate_of_turn": (0x8020, ("gyr_x", "gyr_y", "gyr_z"), struct.Struct(">3f")),  # rad/s
    "magnetic_field": (0xC020, ("mag_x", "mag_y", "mag_z"), struct.Struct(">3f")),  # arbitrary units
    "status": (0xE020, ("status",), struct.Struct(">I")),
    "sample_time_coarse": (0x1070, ("time_coarse_s",), struct.Struct(">I")),
}
DEFAULT_OUTPUTS = ("quaternion", "acceleration", "rate_of_turn")
_FLOAT_IDS = {did for did, _, s in OUTPUTS.values() if s.format[-1] == "f"}
_COORDINATES = (0x0, 0x4, 0x8)  # ENU, NED, NWU: same layout
_U32 = struct.Struct(">I")


def checksum(body: bytes | bytearray) -> int:
    """The CS byte for `body` = every byte after the FA preamble and before CS."""
    return -sum(body) & 0xFF


def encode_message(mid: int, data: bytes = b"") -> bytes:
    """One Xbus message to or from the master device; data longer than 254 bytes take the extended length."""
    n = len(data)
    if n > MAX_DATA:
        raise ValueError(f"Xbus data hold at most {MAX_DATA} bytes, got {n}")
    head = bytes((0xFF, mid, n)) if n < 0xFF else bytes((0xFF, mid, 0xFF, n >> 8, n & 0xFF))
    body = head + data
    return b"\xfa" + body + bytes((checksum(body),))


def outputs_of(settings: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(settings.get("outputs") or DEFAULT_OUTPUTS)


def channel_names(settings: Mapping[str, Any]) -> list[str]:
    return [name for out in outputs_of(settings) for name in OUTPUTS[out][1]]


def check_settings(settings: Mapping[str, Any]) -> tuple[str, str] | None:
    if problem := outputs_problem(outputs_of(settings), OUTPUTS, "xsens"):
        return problem
    rate = settings.get("rate", 0)
    if settings.get("configure") and (rate != int(rate) or not 1 <= rate < EVERY_PACKET):
        return "rate", f"configure = true sets a whole output rate in Hz (1 to {EVERY_PACKET - 1}), got {rate:g}"
    return None


class XsensParser(CountingParser):
    """Incremental parser of Xbus messages; MTData2 packets become Frames with values in the order of
    `outputs` (NaN for a field a packet lacks). Other messages are counted in `other_messages` and, with
    `keep_messages`, kept as (MID, data) in `messages` (the configuration dialogue reads its answers there).

    A preamble followed by an impossible length is a parse error, a message whose checksum fails a CRC
    error, an MTData2 packet whose items do not add up a parse error; each time the search for the next
    preamble resumes one byte later, so a message that starts inside the rejected bytes is still found.
    A message that passes its checksum but runs into a later valid one, with no preamble right after
    it, is a parse error too (see `_overruns`). The buffer holds at most two messages' worth of bytes
    (MAX_BUFFER), the second only while deciding that.
    """

    counter_wrap = 1 << 16
    time_wrap_ns = (1 << 32) * TICK_NS

    def __init__(self, outputs: Sequence[str] = DEFAULT_OUTPUTS, *, keep_messages: bool = False) -> None:
        names = [name for out in outputs for name in OUTPUTS[out][1]]
        super().__init__(len(names))
        self.outputs = tuple(outputs)
        self.other_messages = 0
        self.messages: list[tuple[int, bytes]] | None = [] if keep_messages else None
        self._nan = [math.nan] * len(names)
        # DataID -> (size, first channel or None when not asked for, struct); counter and time apart
        self._fields: dict[int, tuple[int, int | None, struct.Struct]] = {}
        slots = {}
        at = 0
        for out in outputs:
            slots[out] = at
            at += len(OUTPUTS[out][1])
        for out, (did, _, s) in OUTPUTS.items():
            for variant in _COORDINATES if did in _FLOAT_IDS else (0,):
                self._fields[did | variant] = (s.size, slots.get(out), s)

    def feed(self, data: bytes) -> list[Frame]:
        buf = self._buf
        buf += data
        out: list[Frame] = []
        pos, end = 0, len(buf)
        while True:
            pos, found = self._next_start(buf, pos, PREAMBLE)
            if not found:
                break
            if end - pos < 4:
                break
            length = buf[pos + 3]
            head = 4
            if length == 0xFF:
                if end - pos < 6:
                    break
                length = (buf[pos + 4] << 8) | buf[pos + 5]
                head = 6
                if length > MAX_DATA:
                    self.parse_errors += 1
                    self.bytes_skipped += 1
                    pos += 1
                    continue
            size = head + length + 1
            if end - pos < size:
                break
            if sum(buf[pos + 1 : pos + size]) & 0xFF:
                self.crc_errors += 1
                self.bytes_skipped += 1
                pos += 1
                continue
            mid = buf[pos + 2]
            frame = self._packet(buf, pos + head, pos + head + length) if mid == MID_MTDATA2 else None
            bad: bool | None = mid == MID_MTDATA2 and frame is None  # its items do not add up
            if not bad:
                bad = self._overruns(buf, pos, size, end)
                if bad is None:
                    break
            if bad:
                self.parse_errors += 1
                self.bytes_skipped += 1
                pos += 1
                continue
            if frame is not None:
                out.append(frame)
                self._track(frame.counter)
            else:
                self.other_messages += 1
                if self.messages is not None:
                    self.messages.append((mid, bytes(buf[pos + head : pos + head + length])))
            pos += size
        del buf[:pos]
        return out

    def _overruns(self, buf: bytearray, pos: int, size: int, end: int) -> bool | None:
        """Whether the message at `pos` (checksum good) runs into a later message: one cut short takes
        the next one's first bytes as the rest of its claimed length, and the 8-bit checksum lets 1 in
        256 of those through. Its tell: a valid message starts inside it and ends beyond it, and its own
        end is not followed by a preamble (in a stream of back-to-back messages a genuine one is).
        None: undecided until more bytes arrive."""
        stop = pos + size
        q = buf.find(PREAMBLE, pos + 2, stop)
        if q < 0:
            return False  # nearly always: decided without looking further
        if end == stop:
            return None
        if buf[stop] == 0xFA:
            return False
        while q >= 0:
            whole = self._whole(buf, q, end)
            if whole is None:
                return None
            if q + whole > stop:
                return True
            q = buf.find(PREAMBLE, q + 1, stop)
        return False

    def _whole(self, buf: bytearray, at: int, end: int) -> int | None:
        """The size of the valid message at `at`, 0 if it is not one, None if it has not all arrived."""
        if end - at < 4:
            return None
        length, head = buf[at + 3], 4
        if length == 0xFF:
            if end - at < 6:
                return None
            length, head = (buf[at + 4] << 8) | buf[at + 5], 6
            if length > MAX_DATA:
                return 0
        size = head + length + 1
        if end - at < size:
            return None
        if sum(buf[at + 1 : at + size]) & 0xFF:
            return 0
        if buf[at + 2] == MID_MTDATA2 and self._packet(buf, at + head, at + head + length) is None:
            return 0
        return size

    def _packet(self, buf: bytearray, at: int, end: int) -> Frame | None:
        """The Frame of MTData2 data buf[at:end]; None if its items do not add up."""
        values = self._nan.copy()
        counter = ticks = None
        fields = self._fields
        while at < end:
            if end - at < 3:
                return None
            did = (buf[at] << 8) | buf[at + 1]
            size = buf[at + 2]
            at += 3
            if at + size > end:
                return None
            if did == PACKET_COUNTER:
                if size != 2:
                    return None
                counter = (buf[at] << 8) | buf[at + 1]
            elif did == SAMPLE_TIME_FINE:
                if size != 4:
                    return None
                ticks = _U32.unpack_from(buf, at)[0]
            else:
                field = fields.get(did)
                if field is not None:
                    want, slot, s = field
                    if size != want:
                        return None
                    if slot is not None:
                        got = s.unpack_from(buf, at)
                        if len(got) == 1:
                            values[slot] = float(got[0])  # status, coarse time: u32 as a float
                        else:
                            values[slot : slot + len(got)] = got
            at += size
        return Frame(counter, None if ticks is None else ticks * TICK_NS, tuple(values))

    def stats(self) -> dict[str, int]:
        return {**super().stats(), "other_messages": self.other_messages}


def make_parser(settings: Mapping[str, Any], *, skip_partial: bool = False) -> XsensParser:
    """A parser for the stream's outputs. `skip_partial` needs nothing here: a message cut on its left
    fails its checksum and the search resumes."""
    return XsensParser(outputs_of(settings))


# --- talking to the device ------------------------------------------------------------------------


def output_configuration(settings: Mapping[str, Any]) -> bytes:
    """SetOutputConfiguration data: {DataID u16, rate u16} for PacketCounter, SampleTimeFine and the
    outputs; counter, times and status go with every packet (0xFFFF), the measurements at `rate` Hz."""
    rate = int(settings["rate"])
    pairs = [(PACKET_COUNTER, EVERY_PACKET), (SAMPLE_TIME_FINE, EVERY_PACKET)]
    for out in outputs_of(settings):
        did = OUTPUTS[out][0]
        pairs.append((did, rate if did in _FLOAT_IDS else EVERY_PACKET))
    return b"".join(struct.pack(">HH", did, r) for did, r in pairs)


def _port_name(port: Any) -> str:
    return str(getattr(port, "port", None) or getattr(port, "name", "serial port"))


def request(port: Any, mid: int, data: bytes = b"", *, stream: str, timeout: float = 1.0) -> bytes:
    """Send one message and wait for its acknowledgement (MID + 1); returns the acknowledgement's data.
    Measurement data arriving meanwhile are parsed and passed over. An error message (MID 0x42), no
    answer within `timeout` or a failing port raise DeviceError, one line naming the stream and port."""
    name = _port_name(port)
    what = MID_NAMES.get(mid, f"message 0x{mid:02X}")
    parser = XsensParser(keep_messages=True)
    old_timeout = port.timeout
    try:
        port.timeout = min(0.05, timeout)  # each read returns soon, so the deadline holds
        port.write(encode_message(mid, data))
        deadline = time.monotonic() + timeout
        while True:
            assert parser.messages is not None
            for got, payload in parser.messages:
                if got == (mid + 1) & 0xFF:
                    return payload
                if got == MID_ERROR:
                    code = payload[0] if payload else -1
                    reason = ERRORS.get(code, "unknown error")
                    raise DeviceError(
                        f"{stream}: the Xsens device on {name} refused {what}: error 0x{code & 0xFF:02X} ({reason})"
                    )
            parser.messages.clear()
            if time.monotonic() >= deadline:
                raise DeviceError(
                    f"{stream}: no answer to {what} from {name} within {timeout:g} s "
                    f"(is an Xsens MTi connected at {getattr(port, 'baudrate', '?')} baud?)"
                )
            parser.feed(port.read(max(1, port.in_waiting)))
    except DeviceError:
        raise
    except OSError as e:  # pyserial's SerialException is an OSError
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DeviceError(f"{stream}: serial port {name} failed while sending {what}: {reason}") from None
    finally:
        try:
            port.timeout = old_timeout
        except (OSError, ValueError):
            pass  # the port failed; the error above says so


def configure(port: Any, settings: Mapping[str, Any], stream: str) -> None:
    """With `configure = true`: GoToConfig, SetOutputConfiguration, GoToMeasurement, each acknowledged."""
    if not settings.get("configure"):
        return
    request(port, MID_GOTO_CONFIG, stream=stream)
    request(port, MID_SET_OUTPUT_CONFIGURATION, output_configuration(settings), stream=stream)
    request(port, MID_GOTO_MEASUREMENT, stream=stream)


def probe(port: Any, timeout: float = 0.5) -> bool:
    """Whether `port` (open) speaks Xbus: asks for the device id (ReqDID, harmless in any state) and
    listens; a DeviceID or Error answer, or two MTData2 packets, say yes."""
    parser = XsensParser(keep_messages=True)
    old_timeout = port.timeout
    try:
        port.timeout = min(0.05, timeout)
        port.write(encode_message(MID_REQ_DID))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            parser.feed(port.read(max(1, port.in_waiting)))
            assert parser.messages is not None
            if any(mid in (MID_DEVICE_ID, MID_ERROR) for mid, _ in parser.messages) or parser.frames >= 2:
                return True
        return False
    except (OSError, ValueError):
        return False
    finally:
        try:
            port.timeout = old_timeout
        except (OSError, ValueError):
            pass


# --- the emulated device --------------------------------------------------------------------------

DEVICE_ID = 0x0370_1234  # what the emulator answers to ReqDID
_JUNK = bytes(b for b in range(256) if b != 0xFA)  # junk bytes that cannot start a preamble


class XsensCodec:
    """An MTi for mocap_emulator: MTData2 with PacketCounter, SampleTimeFine and the stream's outputs, in
    the order of `outputs`. It starts measuring (as a configured MTi does at power-up) and answers
    GoToConfig, SetOutputConfiguration (only in config state; it honours the DataIDs asked for, which
    must be among its outputs, at its rig rate or 0xFFFF), GoToMeasurement and ReqDID; any other message
    gets an Error (0x42). In config state it sends no data. Integer fields (status, coarse time) carry the
    absolute value given, rounded, so that a slate spike reaches every channel.

    `garbage()` holds false preambles that the parser must reject: complete messages with a wrong checksum
    (counted in `false_checksums`) and impossible extended lengths (`false_lengths`)."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.outputs = outputs_of(settings)
        self.rate = int(round(settings["rate"]))
        self.measuring = True
        self.false_checksums = 0
        self.false_lengths = 0
        at = 0
        self._slices: dict[int, tuple[int, int, struct.Struct]] = {}  # DataID -> (first value, count, struct)
        for out in self.outputs:
            did, names, s = OUTPUTS[out]
            self._slices[did] = (at, len(names), s)
            at += len(names)
        self._requests = XsensParser(keep_messages=True)
        self._set_fields([PACKET_COUNTER, SAMPLE_TIME_FINE, *self._slices])

    def _set_fields(self, dids: list[int]) -> None:
        self.fields = dids
        self.has_counter = PACKET_COUNTER in dids
        fmt = ">"
        for did in dids:
            if did == PACKET_COUNTER:
                fmt += "HBH"
            elif did == SAMPLE_TIME_FINE:
                fmt += "HBI"
            else:
                s = self._slices[did][2]
                fmt += "HB" + s.format.lstrip(">")
        self._packet = struct.Struct(fmt)

    def encode(self, counter: int, device_ns: int, values: Sequence[float]) -> bytes:
        if not self.measuring:
            return b""
        args: list[Any] = []
        for did in self.fields:
            if did == PACKET_COUNTER:
                args += (did, 2, counter % 65536)
            elif did == SAMPLE_TIME_FINE:
                args += (did, 4, (device_ns // TICK_NS) % (1 << 32))
            else:
                at, n, s = self._slices[did]
                args += (did, s.size)
                if did in _FLOAT_IDS:
                    args += values[at : at + n]
                else:
                    args.append(round(abs(values[at])) % (1 << 32))
        return encode_message(MID_MTDATA2, self._packet.pack(*args))

    def corrupt(self, frame: bytes, rng: random.Random) -> bytes:
        """One data byte changed: the checksum must fail (any change of one byte changes the sum)."""
        head = 6 if frame[3] == 0xFF else 4
        i = head + rng.randrange(len(frame) - head - 1)
        flipped = frame[i] ^ 0xFF
        if flipped == 0xFA:
            flipped = frame[i] ^ 0x01  # forge no preamble
        return frame[:i] + bytes((flipped,)) + frame[i + 1 :]

    def garbage(self, rng: random.Random) -> bytes:
        parts = [bytes(rng.choice(_JUNK) for _ in range(rng.randint(0, 12)))]
        for k in range(rng.randint(1, 3)):
            kind = rng.random() * (0.8 if k == 0 else 1.0)  # at least one false preamble
            if kind < 0.5:  # a whole message with a wrong checksum
                body = (
                    bytes((0xFF, rng.choice(_JUNK)))
                    + bytes((n := rng.randint(0, 40),))
                    + bytes(rng.choice(_JUNK) for _ in range(n))
                )
                cs = checksum(body) ^ rng.randint(1, 255)
                if cs == 0xFA:
                    cs ^= 0x01  # still wrong, and no preamble
                parts.append(b"\xfa" + body + bytes((cs,)))
                self.false_checksums += 1
            elif kind < 0.8:  # an extended length beyond MAX_DATA
                parts.append(b"\xfa\xff" + bytes((rng.choice(_JUNK), 0xFF, rng.randint(0x09, 0xF9), rng.choice(_JUNK))))
                self.false_lengths += 1
            else:  # a lone FA
                parts.append(b"\xfa" + bytes((rng.choice(_JUNK[:-1]),)))  # never FA FF
            parts.append(bytes(rng.choice(_JUNK) for _ in range(rng.randint(0, 12))))
        return b"".join(parts)

    def respond(self, request: bytes) -> bytes:
        self._requests.feed(request)
        assert self._requests.messages is not None
        replies = [self._answer(mid, data) for mid, data in self._requests.messages]
        self._requests.messages.clear()
        return b"".join(replies)

    def _answer(self, mid: int, data: bytes) -> bytes:
        if mid == MID_GOTO_CONFIG:
            self.measuring = False
            return encode_message(mid + 1)
        if mid == MID_GOTO_MEASUREMENT:
            self.measuring = True
            return encode_message(mid + 1)
        if mid == MID_REQ_DID:
            return encode_message(MID_DEVICE_ID, _U32.pack(DEVICE_ID))
        if mid == MID_SET_OUTPUT_CONFIGURATION:
            if self.measuring:
                return encode_message(MID_ERROR, b"\x04")
            if len(data) % 4:
                return encode_message(MID_ERROR, b"\x21")
            pairs = [struct.unpack_from(">HH", data, i) for i in range(0, len(data), 4)]
            for did, rate in pairs:
                known = did in (PACKET_COUNTER, SAMPLE_TIME_FINE) or did in self._slices
                if not known or (did in _FLOAT_IDS and rate not in (self.rate, EVERY_PACKET)):
                    return encode_message(MID_ERROR, b"\x21")
            self._set_fields([did for did, _ in pairs])
            return encode_message(mid + 1, data)
        return encode_message(MID_ERROR, b"\x04")


def emulator_codec(settings: Mapping[str, Any]) -> XsensCodec:
    return XsensCodec(settings)

"""VectorNav inertial sensors (VN-100, VN-200, VN-300...): binary output and ASCII (`protocol = "vectornav"`).

A binary output packet is

    FA | group u8 | one field mask u16 per group bit set | the selected fields | CRC u16

all little-endian except the CRC, which is big-endian CRC-16/XMODEM (poly 0x1021, init 0) over every
byte after FA, so that the CRC over the whole packet after FA, CRC included, is 0. Fields come in group
order, then bit order. The groups read here are the Common group (bit 0) alone, with its fields:

    bit  0 TimeStartup u64 ns   -> Frame.device_ns       bit  8 Accel 3×f32 m/s²
    bit  1 TimeGps u64 ns          (not offered)         bit  9 Imu 6×f32: uncompensated accel, gyro
    bit  2 TimeSyncIn u64 ns                             bit 10 MagPres 5×f32: mag (gauss), °C, kPa
    bit  3 YawPitchRoll 3×f32 deg                        bit 11 DeltaThetaVel 7×f32: s, 3× deg, 3× m/s
    bit  4 Quaternion 4×f32 (x, y, z, w)                 bit 12 InsStatus u16
    bit  5 AngularRate 3×f32 rad/s                       bit 13 SyncInCnt u32
    bit  6 Position 3×f64 (lat, lon deg; alt m)          bit 14 TimeGpsPps u64 ns (not offered)
    bit  7 Velocity 3×f32 m/s (NED)

The other groups (Time, IMU, GNSS, Attitude, INS) are not sized here, so a packet that selects any of
them, or a Common mask with its extension bit 15, cannot be measured from its header. Such a packet is
skipped whole: its end is the first place after its header where the CRC over the bytes since FA is 0
and the next output (FA or `$`) begins; it counts in `unknown_packets` and yields no frame. When no such
place comes within MAX_PACKET bytes it is a parse error and the search resumes one byte after its FA.
(A false end, one chance in 65 536 per output start passed, would take what precedes it along.)

The frames carry no counter (Frame.counter is None: the driver derives one from the device time) and
their device time is TimeStartup, which never wraps in practice (None in a packet without it).

ASCII output is one line per message, `$VNxxx,f1,...,fn*HH\\r\\n`, HH the hex XOR of the bytes between
`$` and `*` (or `*HHHH`, the CRC-16 above, when the device is set to it). The data messages read here
fill the channels they map to (others stay NaN):

    VNYPR yaw pitch roll           VNQTN quaternion          VNMAG mag     VNACC accel     VNGYR gyro
    VNYMR ypr mag accel gyro       VNQMR quaternion mag accel gyro       VNMAR mag accel gyro
    VNIMU (uncompensated mag) imu accel, imu gyro, temperature, pressure  VNDTV delta theta/velocity

ASCII lines carry no time (device_ns None: the driver counts frames received × the nominal period).
Binary and ASCII may be interleaved on one port (a VN-100 streams its ASCII output, VNYMR at 40 Hz from
the factory, beside a binary output): both are parsed, but once a binary packet has been seen only the
binary packets, which carry the device time, become frames; later ASCII data lines count in
`lines_ignored`, as do register replies and messages not read here. Turn the ASCII output off
(`$VNWRG,06,0`) when streaming binary, so that an ASCII line cannot come first.

Rig settings: `outputs` lists the data fields each frame carries, in order; each output is one Common
field and gives these channels:

    ypr             yaw, pitch, roll                  accel            acc_x, acc_y, acc_z
    quaternion      quat_x, quat_y, quat_z, quat_w    imu              imu_acc_x.._z, imu_gyr_x.._z
    angular_rate    gyr_x, gyr_y, gyr_z               mag_pres         mag_x, mag_y, mag_z, temp_c, pres_kpa
    position        lat_deg, lon_deg, alt_m           delta_theta_vel  dtime_s, dtheta_x.._z, dvel_x.._z
    velocity        vel_n, vel_e, vel_d               ins_status       ins_status
    sync_in_count   sync_in_count                     time_sync_in     time_sync_in_ns

Empty: ypr, quaternion, accel, angular_rate, sync_in_count, time_sync_in. The device's binary output
register must select these fields and TimeStartup; this module does not set the device up, so
`configure = true` is refused. With a camera trigger wired to SYNC_IN, `sync_in_count` (edges since
startup) and `time_sync_in` (ns since the last edge: small, so it survives the CSV's 9 significant digits)
tie every sample to a trigger edge. TimeGps and TimeGpsPps are not offered: their 19 digits (ns since
the GPS epoch) would not survive those 9.
"""

from __future__ import annotations

import binascii
import math
import operator
import random
import re
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from . import Frame
from .parsing import CountingParser, outputs_problem

SYNC = 0xFA
DOLLAR = 0x24
COMMON = 0x01
EXTENSION = 0x8000  # a field mask's bit 15: another mask follows (newer firmware); not sized here
MAX_PACKET = 1024  # the longest binary packet searched for (all groups of a VN-300 fit)
MAX_LINE = 256  # the longest ASCII line (VNIMU takes about 120 characters)
TRIGGER_HZ = 30  # the emulator's camera trigger on SYNC_IN

# Common group fields in bit order: (name, struct format of the value)
COMMON_FIELDS: tuple[tuple[str, str], ...] = (
    ("TimeStartup", "Q"),
    ("TimeGps", "Q"),
    ("TimeSyncIn", "Q"),
    ("YawPitchRoll", "3f"),
    ("Quaternion", "4f"),
    ("AngularRate", "3f"),
    ("Position", "3d"),
    ("Velocity", "3f"),
    ("Accel", "3f"),
    ("Imu", "6f"),
    ("MagPres", "5f"),
    ("DeltaThetaVel", "7f"),
    ("InsStatus", "H"),
    ("SyncInCnt", "I"),
    ("TimeGpsPps", "Q"),
)
FIELD_SIZES = tuple(struct.calcsize("<" + fmt) for _, fmt in COMMON_FIELDS)
_VALUE_COUNTS = tuple(int(fmt[:-1] or 1) for _, fmt in COMMON_FIELDS)
TIME_STARTUP, TIME_SYNC_IN, INS_STATUS, SYNC_IN_CNT = 0, 2, 12, 13

# output name -> (Common group bit, channel names); each output is one whole field
OUTPUTS: dict[str, tuple[int, tuple[str, ...]]] = {
    "ypr": (3, ("yaw", "pitch", "roll")),
    "quaternion": (4, ("quat_x", "quat_y", "quat_z", "quat_w")),
    "angular_rate": (5, ("gyr_x", "gyr_y", "gyr_z")),
    "position": (6, ("lat_deg", "lon_deg", "alt_m")),
    "velocity": (7, ("vel_n", "vel_e", "vel_d")),
    "accel": (8, ("acc_x", "acc_y", "acc_z")),
    "imu": (9, ("imu_acc_x", "imu_acc_y", "imu_acc_z", "imu_gyr_x", "imu_gyr_y", "imu_gyr_z")),
    "mag_pres": (10, ("mag_x", "mag_y", "mag_z", "temp_c", "pres_kpa")),
    "delta_theta_vel": (11, ("dtime_s", "dtheta_x", "dtheta_y", "dtheta_z", "dvel_x", "dvel_y", "dvel_z")),
    "ins_status": (12, ("ins_status",)),
    "sync_in_count": (13, ("sync_in_count",)),
    "time_sync_in": (2, ("time_sync_in_ns",)),
}
DEFAULT_OUTPUTS = ("ypr", "quaternion", "accel", "angular_rate", "sync_in_count", "time_sync_in")

_YPR, _QUAT, _IMU = OUTPUTS["ypr"][1], OUTPUTS["quaternion"][1], OUTPUTS["imu"][1]
_GYR, _ACC, _MAG = OUTPUTS["angular_rate"][1], OUTPUTS["accel"][1], OUTPUTS["mag_pres"][1][:3]
# ASCII data message -> channel of each field (None: not read)
ASCII_MESSAGES: dict[bytes, tuple[str | None, ...]] = {
    b"VNYPR": _YPR,
    b"VNQTN": _QUAT,
    b"VNQMR": _QUAT + _MAG + _ACC + _GYR,
    b"VNYMR": _YPR + _MAG + _ACC + _GYR,
    b"VNMAG": _MAG,
    b"VNACC": _ACC,
    b"VNGYR": _GYR,
    b"VNMAR": _MAG + _ACC + _GYR,
    b"VNIMU": (None, None, None) + _IMU + ("temp_c", "pres_kpa"),
    b"VNDTV": OUTPUTS["delta_theta_vel"][1],
}

_START = re.compile(rb"[\xfa$]")  # where a binary packet or an ASCII line may begin
_LINE_END = re.compile(rb"[^\x20-\x7e\r]")  # the first byte that cannot be inside an ASCII line
_LINE = re.compile(rb"\$(VN[A-Z0-9]{3})((?:,[^,*]*)*)\*([0-9A-Fa-f]{4}|[0-9A-Fa-f]{2})\r?")
_NUMBER = re.compile(rb"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_REPLY = re.compile(rb"\$VNRRG,0?1,[\x20-\x29\x2b-\x7e]*\*[0-9A-Fa-f]{2}")


def _size_table(bits: range) -> tuple[int, ...]:
    """Payload bytes of every combination of 8 mask bits starting at bits[0]."""
    return tuple(
        sum(FIELD_SIZES[b] for b in bits if m >> (b - bits[0]) & 1 and b < len(FIELD_SIZES)) for m in range(256)
    )


_SIZE_LO, _SIZE_HI = _size_table(range(0, 8)), _size_table(range(8, 16))


def crc16(data: bytes | bytearray, crc: int = 0) -> int:
    """CRC-16/XMODEM: poly 0x1021, init 0, no reflection, no final xor."""
    return binascii.crc_hqx(data, crc)


def xor8(data: bytes | bytearray) -> int:
    x = 0
    for b in data:
        x ^= b
    return x


def packet_size(mask: int) -> int:
    """Bytes of a Common-group packet with field mask `mask` (bit 15 clear), FA and CRC included."""
    return 6 + _SIZE_LO[mask & 0xFF] + _SIZE_HI[mask >> 8]


def encode_packet(groups: int, masks: Sequence[int], payload: bytes) -> bytes:
    """A binary packet with its CRC, from the group byte, its field masks and the packed fields."""
    body = bytes((groups,)) + b"".join(struct.pack("<H", m) for m in masks) + payload
    return b"\xfa" + body + crc16(body).to_bytes(2, "big")


def encode_common(fields: Mapping[int, Any]) -> bytes:
    """A Common-group packet from {bit: value}: a number for the one-value fields, else a sequence."""
    mask, fmt = 0, "<"
    args: list[Any] = []
    for bit in sorted(fields):
        mask |= 1 << bit
        fmt += COMMON_FIELDS[bit][1]
        value = fields[bit]
        args += value if isinstance(value, (tuple, list)) else [value]
    return encode_packet(COMMON, [mask], struct.pack(fmt, *args))


def ascii_message(body: str | bytes, crc: bool = False) -> bytes:
    """`$body*HH\\r\\n` (or `*HHHH` with the CRC-16) for a body such as "VNRRG,01"."""
    data = body.encode() if isinstance(body, str) else body
    check = b"%04X" % crc16(data) if crc else b"%02X" % xor8(data)
    return b"$" + data + b"*" + check + b"\r\n"


def outputs_of(settings: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(settings.get("outputs") or DEFAULT_OUTPUTS)


def _names(outputs: Sequence[str]) -> list[str]:
    try:
        return [name for out in outputs for name in OUTPUTS[out][1]]
    except KeyError as e:
        raise ValueError(f"unknown vectornav output {e.args[0]!r} (expected {', '.join(OUTPUTS)})") from None


def channel_names(settings: Mapping[str, Any]) -> list[str]:
    return _names(outputs_of(settings))


def check_settings(settings: Mapping[str, Any]) -> tuple[str, str] | None:
    if problem := outputs_problem(outputs_of(settings), OUTPUTS, "vectornav"):
        return problem
    if settings.get("configure"):
        return "configure", (
            "the vectornav protocol does not set the device up; select TimeStartup and the "
            "outputs' fields in its binary output register, then set configure = false"
        )
    return None


class _Layout(NamedTuple):
    """How to read the fields of one Common field mask."""

    values: struct.Struct  # every field of the mask, in bit order
    pick: Callable[[tuple], tuple]  # unpacked fields + (NaN,) -> the channels, in order
    has_time: bool  # TimeStartup present: the first value


class VectorNavParser(CountingParser):
    """Incremental parser of VectorNav binary packets and ASCII lines; frames carry the channels of
    `outputs` in order (NaN for a field the packet or line lacks).

    A packet whose CRC fails and an ASCII line whose checksum fails are CRC errors; an impossible header
    (no group, a zero field mask), a malformed line or an unsizable packet whose end is not found are
    parse errors. Either way the search for the next FA or `$` resumes one byte later, so a packet or line
    that starts inside the rejected bytes is still found. Bytes outside frames add to `bytes_skipped`
    (skipped packets and ignored lines included). The frames do not depend on how the bytes were split
    into chunks, and the buffer never holds more than MAX_PACKET bytes.
    """

    LAYOUTS_KEPT = 64  # field masks remembered; a device uses one, corruption can show many

    def __init__(self, outputs: Sequence[str] = DEFAULT_OUTPUTS) -> None:
        outputs = tuple(outputs) or DEFAULT_OUTPUTS
        names = _names(outputs)
        super().__init__(len(names))
        self.outputs = outputs
        self.names = names
        self.unknown_packets = 0  # binary packets of groups not read here, skipped whole
        self.lines_ignored = 0  # ASCII lines that are not frames (replies, other messages, beside binary)
        self.binary_seen = False
        self._slots = {name: i for i, name in enumerate(names)}
        self._layouts: dict[int, _Layout] = {}
        self._ascii = {
            msg: tuple(self._slots.get(ch, -1) if ch else -1 for ch in chans) for msg, chans in ASCII_MESSAGES.items()
        }
        self._scan: tuple[int, int, int] | None = None  # resumable end search of an unsizable packet

    def stats(self) -> dict[str, int]:
        return {**super().stats(), "unknown_packets": self.unknown_packets, "lines_ignored": self.lines_ignored}

    def feed(self, data: bytes) -> list[Frame]:
        buf = self._buf
        buf += data
        out: list[Frame] = []
        pos, end = 0, len(buf)
        crc_hqx = binascii.crc_hqx
        while pos < end:
            first = buf[pos]
            if first != SYNC and first != DOLLAR:
                m = _START.search(buf, pos)
                if m is None:
                    self.bytes_skipped += end - pos
                    pos = end
                    break
                self.bytes_skipped += m.start() - pos
                pos = m.start()
                first = buf[pos]
            if first == DOLLAR:
                step = self._line(buf, pos, end, out)
            elif end - pos < 4:
                break
            elif buf[pos + 1] == COMMON and (mask := buf[pos + 2] | buf[pos + 3] << 8) and not mask & EXTENSION:
                # the common case, inline: a Common-group packet
                size = 6 + _SIZE_LO[mask & 0xFF] + _SIZE_HI[mask >> 8]
                if end - pos < size:
                    break
                if crc_hqx(buf[pos + 1 : pos + size], 0):
                    self.crc_errors += 1
                    step = 1
                else:
                    layout = self._layouts.get(mask) or self._layout(mask)
                    raw = layout.values.unpack_from(buf, pos + 4)
                    values = tuple(map(float, layout.pick(raw + (math.nan,))))
                    out.append(Frame(None, raw[0] if layout.has_time else None, values))
                    self._track(None)
                    self.binary_seen = True
                    pos += size
                    continue
            else:
                step = self._other_packet(buf, pos, end)
            if step == 0:  # the rest has not arrived yet
                break
            if step == 1:  # rejected: skip its first byte (skipped packets and lines count their own)
                self.bytes_skipped += 1
            pos += step
        del buf[:pos]
        return out

    def _layout(self, mask: int) -> _Layout:
        if len(self._layouts) >= self.LAYOUTS_KEPT:
            self._layouts.clear()
        fmt, start, at = "<", {}, 0
        for bit, (_, f) in enumerate(COMMON_FIELDS):
            if mask >> bit & 1:
                fmt += f
                start[bit] = at
                at += _VALUE_COUNTS[bit]
        nan = at  # the index of the NaN appended after the unpacked values
        picks = []
        for out in self.outputs:
            bit, chans = OUTPUTS[out]
            picks += [start[bit] + i if bit in start else nan for i in range(len(chans))]
        getter = operator.itemgetter(*picks)
        pick = getter if len(picks) > 1 else (lambda raw: (getter(raw),))
        layout = self._layouts[mask] = _Layout(struct.Struct(fmt), pick, bool(mask & 1))
        return layout

    def _other_packet(self, buf: bytearray, pos: int, end: int) -> int:
        """A packet at `pos` that is not a plain Common-group packet (at least 4 bytes are there): rejected,
        or skipped whole by its CRC. Returns the bytes consumed: 1 when rejected, 0 to wait for more."""
        groups = buf[pos + 1]
        if groups == 0:
            self.parse_errors += 1
            return 1
        head = 2 + 2 * bin(groups).count("1")
        if end - pos < head:
            return 0
        for i in range(pos + 2, pos + head, 2):
            if buf[i] == 0 and buf[i + 1] == 0:  # a group selected with no field
                self.parse_errors += 1
                return 1
        # its end: the first start of an output after it where the CRC since FA is 0
        if self._scan is not None:
            c, at, crc = (pos + self._scan[0], pos + self._scan[1], self._scan[2])
        else:
            c, at, crc = pos + head + 2, pos + 1, 0
        stop = min(end, pos + MAX_PACKET + 1)
        while (m := _START.search(buf, c, stop)) is not None:
            c = m.start()
            crc = binascii.crc_hqx(buf[at:c], crc)
            at = c
            if crc == 0:
                self._scan = None
                self.unknown_packets += 1
                self.bytes_skipped += c - pos
                return c - pos
            c += 1
        if end > pos + MAX_PACKET:
            self._scan = None
            self.parse_errors += 1
            return 1
        self._scan = (c - pos, at - pos, crc)  # the buffer will start at pos when the search resumes
        return 0

    def _line(self, buf: bytearray, pos: int, end: int, out: list[Frame]) -> int:
        """An ASCII line at `pos`: a frame, an ignored line or a rejection (bytes consumed; 0: wait)."""
        have = min(end - pos, 3)
        if buf[pos + 1 : pos + have] != b"VN"[: have - 1]:
            return 1  # a lone '$', no error: binary data hold them
        if have < 3:
            return 0
        m = _LINE_END.search(buf, pos + 3, min(end, pos + MAX_LINE))
        if m is None:
            if end - pos >= MAX_LINE:
                self.parse_errors += 1
                return 1
            return 0
        stop = m.start()
        if buf[stop] != 0x0A:  # a byte that no line holds: not a line
            self.parse_errors += 1
            return 1
        line = _LINE.fullmatch(buf, pos, stop)
        if line is None:
            self.parse_errors += 1
            return 1
        body = buf[pos + 1 : line.start(3) - 1]
        given = int(line.group(3), 16)
        if (crc16(body) if len(line.group(3)) == 4 else xor8(body)) != given:
            self.crc_errors += 1
            return 1
        length = stop + 1 - pos
        slots = self._ascii.get(line.group(1))
        if slots is None or self.binary_seen:
            self.lines_ignored += 1
            self.bytes_skipped += length
            return length
        fields = line.group(2).split(b",")[1:]
        if len(fields) != len(slots) or not all(_NUMBER.fullmatch(f) for f in fields):
            self.parse_errors += 1
            return 1
        values = [math.nan] * len(self.names)
        for slot, field in zip(slots, fields):
            if slot >= 0:
                values[slot] = float(field)
        out.append(Frame(None, None, tuple(values)))
        self._track(None)
        return length


def make_parser(settings: Mapping[str, Any], *, skip_partial: bool = False) -> VectorNavParser:
    """A parser for the stream's outputs. `skip_partial` needs nothing here: a packet cut on its left fails
    its CRC, and a line cut on its left has lost its `$`."""
    return VectorNavParser(outputs_of(settings))


# --- talking to the device ------------------------------------------------------------------------

PROBE = ascii_message("VNRRG,01")  # read register 1, the model number: harmless in any state


def _is_reply(data: bytes | bytearray) -> bool:
    for m in _REPLY.finditer(data):
        line = m.group()
        if xor8(line[1:-3]) == int(line[-2:], 16):
            return True
    return False


def probe(port: Any, timeout: float = 0.5) -> bool:
    """Whether `port` (open) speaks VectorNav: asks for the model number (`$VNRRG,01`) and listens for
    its `$VNRRG,01,<model>` answer; two valid binary packets or data lines also say yes (a device busy
    streaming)."""
    parser = VectorNavParser()
    got = bytearray()
    old_timeout = port.timeout
    try:
        port.timeout = min(0.05, timeout)
        port.write(PROBE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = port.read(max(1, port.in_waiting))
            parser.feed(chunk)
            got += chunk
            if _is_reply(got) or parser.frames >= 2:
                return True
            del got[:-MAX_LINE]  # keep a reply cut between reads, nothing more
        return False
    except (OSError, ValueError):  # pyserial's SerialException is an OSError
        return False
    finally:
        try:
            port.timeout = old_timeout
        except (OSError, ValueError):
            pass


# --- the emulated device --------------------------------------------------------------------------

MODEL = "VN-100T-CR"  # what the emulator answers to VNRRG,01
_JUNK = bytes(b for b in range(256) if b not in (SYNC, DOLLAR))  # junk that starts no packet or line
_ERR_CHECKSUM, _ERR_COMMAND, _ERR_REGISTER = 3, 4, 8


def trigger(device_ns: int, hz: int = TRIGGER_HZ) -> tuple[int, int]:
    """(SyncInCnt, TimeSyncIn) at device time `device_ns` for a trigger at `hz` on SYNC_IN since boot:
    edge j (j >= 1) at ceil(j × 1e9 / hz) ns."""
    count = device_ns * hz // 1_000_000_000
    last = -(-count * 1_000_000_000 // hz)
    return count, device_ns - last


class VectorNavCodec:
    """A VN-100 for mocap_emulator: binary Common-group packets with TimeStartup and the stream's outputs.
    SyncInCnt and TimeSyncIn follow a TRIGGER_HZ camera trigger on the device clock; InsStatus carries the
    absolute value given, rounded; the other fields carry the values given, so that a slate spike reaches
    them. `ascii_every` N > 0 adds a `$VNYMR` line after every Nth packet (a device with its ASCII output
    left on); `binary=False` sends only the lines (no device time). It answers `$VNRRG,01` with MODEL and
    anything else with `$VNERR`.

    `garbage()` holds false starts that the parser must reject as parse errors (counted in
    `false_starts`): FA with no group, a Common group with a zero mask, a zero second mask, a `$VN` line
    without its checksum."""

    has_counter = False

    def __init__(self, outputs: Sequence[str] = DEFAULT_OUTPUTS, *, ascii_every: int = 0, binary: bool = True) -> None:
        self.outputs = tuple(outputs) or DEFAULT_OUTPUTS
        self.ascii_every = ascii_every
        self.binary = binary
        self.false_starts = 0
        self.lines_sent = 0
        # bit -> first value of the field in `values`; TimeStartup always
        self._at: dict[int, int] = {}
        at = 0
        for out in self.outputs:
            bit, chans = OUTPUTS[out]
            self._at[bit] = at
            at += len(chans)
        self._slots = {name: i for i, name in enumerate(_names(self.outputs))}
        self._bits = sorted({TIME_STARTUP, *self._at})
        self._mask = sum(1 << b for b in self._bits)
        self._struct = struct.Struct("<" + "".join(COMMON_FIELDS[b][1] for b in self._bits))
        self._head = bytes((COMMON,)) + struct.pack("<H", self._mask)
        self._pending = b""

    def encode(self, counter: int, device_ns: int, values: Sequence[float]) -> bytes:
        out = self._packet(device_ns, values) if self.binary else b""
        if not self.binary or (self.ascii_every and counter % self.ascii_every == 0):
            out += self._ymr(values)
            self.lines_sent += 1
        return out

    def _packet(self, device_ns: int, values: Sequence[float]) -> bytes:
        count, since = trigger(device_ns)
        args: list[Any] = []
        for bit in self._bits:
            if bit == TIME_STARTUP:
                args.append(device_ns)
            elif bit == TIME_SYNC_IN:
                args.append(since)
            elif bit == SYNC_IN_CNT:
                args.append(count & 0xFFFFFFFF)
            elif bit == INS_STATUS:
                args.append(round(abs(values[self._at[bit]])) & 0xFFFF)
            else:
                at = self._at[bit]
                args += values[at : at + _VALUE_COUNTS[bit]]
        body = self._head + self._struct.pack(*args)
        return b"\xfa" + body + crc16(body).to_bytes(2, "big")

    def _ymr(self, values: Sequence[float]) -> bytes:
        chans = ASCII_MESSAGES[b"VNYMR"]
        fields = (values[self._slots[c]] if c in self._slots else 0.0 for c in chans)
        return ascii_message("VNYMR," + ",".join(f"{v:+.5f}" for v in fields))

    def corrupt(self, frame: bytes, rng: random.Random) -> bytes:
        """One data byte changed: the CRC (or the line's checksum) must fail; no false start is forged."""
        if frame[:1] == b"$":
            digits = [i for i in range(7, frame.index(b"*")) if frame[i] in b"0123456789"]
            i = rng.choice(digits)  # a digit stays a digit: the line still parses, its checksum fails
            flipped = frame[i] ^ 0x01
        else:
            i = 4 + rng.randrange(self._struct.size)  # inside the fields: CRC-16 catches any one byte
            flipped = frame[i] ^ 0xFF
            if flipped in (SYNC, DOLLAR):
                flipped = frame[i] ^ 0x01
        return frame[:i] + bytes((flipped,)) + frame[i + 1 :]

    def garbage(self, rng: random.Random) -> bytes:
        parts = [bytes(rng.choice(_JUNK) for _ in range(rng.randint(0, 12)))]
        for _ in range(rng.randint(1, 3)):
            parts.append(
                rng.choice(
                    (b"\xfa\x00", b"\xfa\x01\x00\x00", b"\xfa\x11\x20\x00\x00\x00", b"$VNYMR,+1.0,-2.5,+0.25\r\n")
                )
            )
            self.false_starts += 1
            parts.append(bytes(rng.choice(_JUNK) for _ in range(rng.randint(1, 12))))
        return b"".join(parts)

    def respond(self, request: bytes) -> bytes:
        data = self._pending + request
        lines = data.split(b"\n")
        self._pending = lines.pop()[-MAX_LINE:]  # a command cut between reads waits for its end
        return b"".join(self._answer(line.strip()) for line in lines if b"$" in line)

    def _answer(self, line: bytes) -> bytes:
        m = re.fullmatch(rb".*?\$([^*$]*)\*([0-9A-Fa-f]{2}|XX)", line)
        if m is None:
            return ascii_message(f"VNERR,{_ERR_COMMAND:02d}")
        body, check = m.group(1), m.group(2)
        if check != b"XX" and int(check, 16) != xor8(body):  # the device takes XX as "unchecked"
            return ascii_message(f"VNERR,{_ERR_CHECKSUM:02d}")
        fields = body.split(b",")
        if fields[0] == b"VNRRG" and len(fields) == 2 and fields[1] in (b"1", b"01"):
            return ascii_message("VNRRG,01," + MODEL)
        if fields[0] == b"VNRRG":
            return ascii_message(f"VNERR,{_ERR_REGISTER:02d}")
        return ascii_message(f"VNERR,{_ERR_COMMAND:02d}")


def emulator_codec(settings: Mapping[str, Any]) -> VectorNavCodec:
    return VectorNavCodec(outputs_of(settings))

"""VectorNav binary output and ASCII: check vectors, corruption, fuzzing, the emulator on a real pty through
the real serial driver, the demo twin's ground truth and a recorded take."""
from __future__ import annotations

import csv
import json
import math
import random
import struct
import subprocess
import sys
import time
from functools import reduce
from pathlib import Path

import pytest
import serial
from hypothesis import given, settings, strategies as st

from improvcap.clock import now_ns
from improvcap.devices.mocap_demo import DemoMocap
from improvcap.devices.mocap_emulator import BOOT_NS, SPIKE, MocapEmulator
from improvcap.errors import RigError
from improvcap.protocols import Frame, make_parser
from improvcap.protocols.vectornav import (
    COMMON_FIELDS, DEFAULT_OUTPUTS, FIELD_SIZES, MAX_LINE, MAX_PACKET, MODEL, OUTPUTS, PROBE, TRIGGER_HZ,
    VectorNavCodec, VectorNavParser, ascii_message, channel_names, check_settings, crc16, encode_common,
    encode_packet, packet_size, probe, trigger,
)
from improvcap.rig import StreamSpec

from helpers import arrival_lift_ns, collect, crc16_bitwise, demo_rig, mocap_spec, run_for

SYNC_CHANNELS = ("sync_in_count", "time_sync_in_ns")


def crc_bitwise(data: bytes) -> int:
    """CRC-16/XMODEM straight from its definition."""
    return crc16_bitwise(data, 0)


def xor_checksum(body: bytes) -> int:
    return reduce(lambda a, b: a ^ b, body, 0)


def f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


def same(a: list[Frame], b: list[Frame]) -> bool:
    return list(map(repr, a)) == list(map(repr, b))  # repr: NaN equals itself


def feed_chunked(parser: VectorNavParser, data: bytes, rng: random.Random) -> list[Frame]:
    out, i = [], 0
    while i < len(data):
        n = rng.choice([1, 2, 3, 7, 50, 113, 500])
        out += parser.feed(data[i:i + n])
        i += n
    return out


def vn_spec(driver: str = "demo", **keys: object) -> StreamSpec:
    return mocap_spec(driver, name="imu", **{"protocol": "vectornav", **keys})


# --- packets and their CRC -------------------------------------------------------------------------

def test_check_vector() -> None:
    packet = bytes.fromhex("FA 01 01 00 00 CA 9A 3B 00 00 00 00 9A E0")
    assert encode_common({0: 1_000_000_000}) == packet
    assert crc16(packet[1:]) == crc_bitwise(packet[1:]) == 0
    assert crc16(b"123456789") == crc_bitwise(b"123456789") == 0x31C3  # the CRC-16/XMODEM check value
    p = VectorNavParser()
    [frame] = p.feed(packet)
    assert frame.counter is None and frame.device_ns == 1_000_000_000
    assert len(frame.values) == len(channel_names({})) and all(math.isnan(v) for v in frame.values)
    assert p.stats()["frames"] == 1 and p.buffered == 0


def test_common_group_field_sizes() -> None:
    assert FIELD_SIZES == (8, 8, 8, 12, 16, 12, 24, 12, 12, 24, 20, 28, 2, 4, 8)
    assert packet_size(0x0001) == 14 and packet_size(0x7FFF) == 6 + sum(FIELD_SIZES)


def every_field() -> dict[int, object]:
    return {0: 123_456_789_012, 1: 1_300_000_000_000_000_000, 2: 12_345_678, 3: (10.5, -20.25, 30.125),
            4: (0.5, -0.5, 0.25, 0.625), 5: (0.01, -0.02, 0.03), 6: (45.123456789, -122.987654321, 12.5),
            7: (1.5, -2.5, 0.125), 8: (0.1, 0.2, -9.81), 9: (0.11, 0.21, -9.8, 0.011, 0.021, 0.031),
            10: (0.2, 0.3, 0.4, 25.5, 101.325), 11: (0.0025, 0.1, 0.2, 0.3, 0.01, 0.02, 0.03), 12: 0x0123,
            13: 4_000_000, 14: 1_300_000_000_500_000_000}


def test_every_common_field_in_the_order_of_outputs() -> None:
    fields = every_field()
    outputs = ["time_sync_in", "quaternion", "position", "ypr", "imu", "ins_status", "mag_pres",
               "delta_theta_vel", "sync_in_count", "velocity", "accel", "angular_rate"]
    assert sorted(outputs) == sorted(OUTPUTS)
    p = VectorNavParser(outputs)
    [frame] = p.feed(encode_common(fields))
    assert frame.device_ns == fields[0]
    expected: list[float] = []
    for out in outputs:
        bit = OUTPUTS[out][0]
        value = fields[bit]
        if isinstance(value, tuple):  # f32, except Position's f64
            expected += value if bit == 6 else map(f32, value)
        else:
            expected.append(float(value))
    assert list(frame.values) == expected
    assert all(type(v) is float for v in frame.values)
    assert channel_names({"outputs": outputs})[:5] == ["time_sync_in_ns", "quat_x", "quat_y", "quat_z", "quat_w"]


def test_missing_fields_are_nan_and_fields_not_asked_for_are_ignored() -> None:
    p = VectorNavParser(["ypr", "accel", "sync_in_count"])
    # no TimeStartup, no Accel; TimeGps, Quaternion and InsStatus are there but not asked for
    packet = encode_common({1: 5, 3: (1.0, 2.0, 3.0), 4: (0.0, 0.0, 0.0, 1.0), 12: 7, 13: 42})
    [frame] = p.feed(packet)
    assert frame.device_ns is None and frame.counter is None
    assert frame.values[:3] == (1.0, 2.0, 3.0) and all(math.isnan(v) for v in frame.values[3:6])
    assert frame.values[6] == 42.0


def test_multi_field_packets_round_trip_whole_and_byte_by_byte() -> None:
    rng = random.Random(4)
    codec = VectorNavCodec()
    frames, data = [], b""
    for k in range(200):
        device_ns = 100_000_000_000 + k * 2_500_000
        values = [rng.uniform(-180, 180) for _ in range(15)]
        data += codec.encode(k, device_ns, values)
        count, since = trigger(device_ns)
        frames.append(Frame(None, device_ns, tuple(map(f32, values[:13])) + (float(count), float(since))))
    whole = VectorNavParser()
    assert whole.feed(data) == frames
    assert whole.stats() == {"frames": 200, "crc_errors": 0, "parse_errors": 0, "bytes_skipped": 0,
                             "counter_gaps": 0, "frames_missed": 0, "unknown_packets": 0, "lines_ignored": 0}
    single = VectorNavParser()
    assert [f for i in range(len(data)) for f in single.feed(data[i:i + 1])] == frames
    assert single.buffered == 0


def test_trigger_counts_edges_and_time_since_the_last() -> None:
    assert TRIGGER_HZ == 30
    assert trigger(0) == (0, 0)
    assert trigger(33_333_333) == (0, 33_333_333)  # the first edge comes at 33 333 333.3 ns
    assert trigger(33_333_334) == (1, 0)
    for d in (1_000_000_000, 100_000_000_000, 123_456_789_123):
        count, since = trigger(d)
        edge = d - since  # the first whole ns at or after edge `count`, and the next edge is still to come
        assert edge * 30 >= count * 10**9 > (edge - 1) * 30 and (count + 1) * 10**9 > d * 30


# --- unknown groups ---------------------------------------------------------------------------------

def unknown_packet(groups: int, rng: random.Random, size: int = 60) -> bytes:
    """A packet of groups not read here; its payload holds false starts of packets and lines."""
    masks = [rng.randrange(1, 0x8000) for _ in range(bin(groups).count("1"))]
    payload = bytes(rng.randrange(256) for _ in range(size)) + b"\xfa\x01\x01\x00$VNYMR,1*00\r\n\xfa"
    return encode_packet(groups, masks, payload)


def test_packets_of_other_groups_are_skipped_whole_by_their_crc() -> None:
    rng = random.Random(1)
    good = [encode_common({0: 10**9 + i, 3: (1.0, 2.0, float(i))}) for i in range(4)]
    extension = encode_packet(0x01, [0x8001], bytes(rng.randrange(256) for _ in range(30)))  # mask bit 15
    data = (good[0] + unknown_packet(0x10, rng) + good[1] + unknown_packet(0x01 | 0x04 | 0x20, rng)
            + extension + ascii_message("VNRRG,01,VN-100") + good[2] + unknown_packet(0x7F, rng) + good[3])
    for chunked in (False, True):
        p = VectorNavParser(["ypr"])
        got = feed_chunked(p, data, random.Random(2)) if chunked else p.feed(data)
        assert [f.device_ns for f in got] == [10**9 + i for i in range(4)]
        assert (p.unknown_packets, p.lines_ignored, p.crc_errors, p.parse_errors) == (4, 1, 0, 0)
        assert p.bytes_skipped + sum(map(len, good)) == len(data) and p.buffered == 0


def test_an_unsizable_packet_without_an_end_is_one_parse_error() -> None:
    # the CRC of an unknown packet is damaged: no end validates within MAX_PACKET bytes
    bad = bytearray(encode_packet(0x02, [0x0003], bytes(range(100))))  # no false start inside
    bad[-1] ^= 0x55
    good = [encode_common({0: i, 13: i}) for i in range(1, 4)]
    tail = bytes(MAX_PACKET)  # padding: the search needs MAX_PACKET bytes to give up
    p = VectorNavParser(["sync_in_count"])
    out = p.feed(bytes(bad) + good[0] + good[1])
    assert out == [] and p.buffered <= MAX_PACKET  # still looking for the unknown packet's end
    out += p.feed(good[2] + tail)
    assert [f.device_ns for f in out] == [1, 2, 3]
    assert (p.parse_errors, p.crc_errors, p.unknown_packets) == (1, 0, 0)


# --- bad input --------------------------------------------------------------------------------------

def test_header_validation_and_lone_starts() -> None:
    good = encode_common({0: 5, 13: 9})
    zero_group = b"\xfa\x00" + good[2:]
    zero_mask = b"\xfa\x01\x00\x00"
    zero_second_mask = b"\xfa\x03\x01\x00\x00\x00"
    p = VectorNavParser(["sync_in_count"])
    out = p.feed(zero_group + zero_mask + zero_second_mask + b"$$V$X" + good)
    assert out == [Frame(None, 5, (9.0,))]
    assert (p.parse_errors, p.crc_errors) == (3, 0)


def test_corruption_keeps_every_intact_frame_and_invents_none() -> None:
    codec = VectorNavCodec()
    junk_bytes = bytes(b for b in range(256) if b not in (0xFA, 0x24))
    checked = 0
    for seed in range(30):
        rng = random.Random(seed)
        parts: list[bytes] = []
        intact: list[bytes] = []
        damaged = 0
        for k in range(300):
            raw = bytearray(codec.encode(k, 100_000_000_000 + k * 4_166_667,
                                         [rng.uniform(-180, 180) for _ in range(15)]))
            action = rng.random()
            if action < 0.12:  # one bit flipped anywhere after FA: header, fields or CRC
                raw[rng.randrange(1, len(raw))] ^= 1 << rng.randrange(8)
                damaged += 1
            elif action < 0.2:  # cut short; the next packet follows straight away
                raw = raw[:rng.randrange(1, len(raw) - 1)]
                damaged += 1
            else:
                intact.append(bytes(raw))
            if rng.random() < 0.1:
                parts.append(bytes(rng.choice(junk_bytes) for _ in range(rng.randint(1, 30))))
            parts.append(bytes(raw))
        data = b"".join(parts) + bytes(MAX_PACKET + 1)  # a damaged last packet is judged once its bytes are in
        expected = VectorNavParser().feed(b"".join(intact))
        for chunked in (False, True):
            p = VectorNavParser()
            got = feed_chunked(p, data, rng) if chunked else p.feed(data)
            assert same(got, expected), seed
            assert p.crc_errors + p.parse_errors >= damaged
            assert p.bytes_skipped + sum(map(len, intact)) + p.buffered == len(data)
        checked += 1
    assert checked == 30


def test_buffer_stays_bounded_on_junk_and_false_starts() -> None:
    rng = random.Random(9)
    p = VectorNavParser()
    total = 0
    for i in range(300):
        chunk = rng.randbytes(3000)
        if i % 3 == 0:  # dense false starts: FA with sizable and unsizable headers, `$VN` lines never ended
            chunk = b"".join(rng.choice([b"\xfa\x01", b"\xfa\x7e\x01\x01", b"$VN", b"$VNYMR,1,2,3", b"\xfa"])
                             + rng.randbytes(rng.randint(0, 40)) for _ in range(100))
        total += len(chunk)
        assert p.feed(chunk) == []
        assert p.buffered <= MAX_PACKET
    assert p.bytes_skipped + p.buffered == total


# --- ASCII ------------------------------------------------------------------------------------------

def test_ascii_checksums_and_messages() -> None:
    assert PROBE == b"$VNRRG,01*%02X\r\n" % xor_checksum(b"VNRRG,01")
    ymr = ascii_message("VNYMR,+006.380,+000.023,-001.953,+1.0640,-0.2531,+3.0614,+00.005,+00.344,-09.758,"
                        "-0.001222,-0.000450,-0.001218")
    assert ymr.endswith(b"*%02X\r\n" % xor_checksum(ymr[1:-5]))
    qmr = ascii_message("VNQMR,0.1,0.2,0.3,0.9,1,2,3,4,5,6,7,8,9", crc=True)  # the CRC-16 form
    assert qmr.endswith(b"*%04X\r\n" % crc_bitwise(qmr[1:-7]))
    outputs = ["quaternion", "ypr", "mag_pres", "accel", "angular_rate", "time_sync_in"]
    p = VectorNavParser(outputs)
    names = channel_names({"outputs": outputs})
    lf_only = ascii_message("VNYPR,10,20,30").replace(b"\r\n", b"\n")
    out = p.feed(ymr + qmr + ascii_message("VNQTN,1,0,0,0") + lf_only)
    assert [(f.counter, f.device_ns) for f in out] == [(None, None)] * 4
    first = dict(zip(names, out[0].values))
    assert (first["yaw"], first["pitch"], first["roll"]) == (6.38, 0.023, -1.953)
    assert (first["mag_x"], first["acc_z"], first["gyr_z"]) == (1.064, -9.758, -0.001218)
    assert all(math.isnan(first[n]) for n in ("quat_x", "quat_w", "temp_c", "pres_kpa", "time_sync_in_ns"))
    second = dict(zip(names, out[1].values))
    assert [second[n] for n in ("quat_x", "quat_y", "quat_z", "quat_w", "mag_x", "acc_x", "gyr_z")] == \
        [0.1, 0.2, 0.3, 0.9, 1.0, 4.0, 9.0]
    assert math.isnan(second["yaw"])
    assert dict(zip(names, out[2].values))["quat_x"] == 1.0
    assert dict(zip(names, out[3].values))["roll"] == 30.0
    assert p.stats()["crc_errors"] == p.stats()["parse_errors"] == 0


def test_ascii_bad_lines_are_counted_and_skipped() -> None:
    good = ascii_message("VNYPR,1,2,3")
    body = b"VNYPR,1,2,3"
    wrong_xor = b"$" + body + b"*%02X\r\n" % (xor_checksum(body) ^ 0x10)
    flipped_digit = good.replace(b",2,", b",3,")
    wrong_crc = b"$" + body + b"*%04X\r\n" % (crc_bitwise(body) ^ 0x0100)
    too_few = ascii_message("VNYPR,1,2")
    not_a_number = ascii_message("VNYPR,1,x,3")
    no_checksum = b"$VNYPR,1,2,3\r\n"
    binary_inside = b"$VNYPR,1,\x01,3*00\r\n"
    overlong = b"$VNYPR," + b"1" * MAX_LINE + b"\r\n"
    reply = ascii_message("VNRRG,01,VN-100T-CR")
    error = ascii_message("VNERR,03")
    p = VectorNavParser(["ypr"])
    data = (wrong_xor + flipped_digit + wrong_crc + too_few + not_a_number + no_checksum + binary_inside
            + overlong + reply + error + good)
    out = feed_chunked(p, data, random.Random(1))
    assert out == [Frame(None, None, (1.0, 2.0, 3.0))]
    assert p.crc_errors == 3
    assert p.parse_errors == 5
    assert p.lines_ignored == 2
    whole = VectorNavParser(["ypr"])
    assert whole.feed(data) == out and whole.stats() == p.stats()


def test_binary_and_ascii_interleaved() -> None:
    """ASCII lines are frames until binary packets (which carry the device time) appear; then they are
    passed over, and every packet is kept."""
    lines = [ascii_message(f"VNYMR,{i},0,0,0,0,0,0,0,0,0,0,0") for i in range(3)]
    packets = [encode_common({0: 10**9 + i, 3: (float(i), 0.0, 0.0)}) for i in range(3)]
    data = lines[0] + lines[1] + packets[0] + lines[2] + packets[1] + ascii_message("VNRRG,01,X") + packets[2]
    for chunked in (False, True):
        p = VectorNavParser(["ypr"])
        out = feed_chunked(p, data, random.Random(5)) if chunked else p.feed(data)
        assert [(f.device_ns, f.values[0]) for f in out] == \
            [(None, 0.0), (None, 1.0), (10**9, 0.0), (10**9 + 1, 1.0), (10**9 + 2, 2.0)]
        assert p.lines_ignored == 2 and p.crc_errors == p.parse_errors == 0


# --- settings ---------------------------------------------------------------------------------------

def test_outputs_channels_and_settings_checks() -> None:
    assert channel_names({"outputs": []}) == [
        "yaw", "pitch", "roll", "quat_x", "quat_y", "quat_z", "quat_w", "acc_x", "acc_y", "acc_z",
        "gyr_x", "gyr_y", "gyr_z", "sync_in_count", "time_sync_in_ns"]
    assert DEFAULT_OUTPUTS == ("ypr", "quaternion", "accel", "angular_rate", "sync_in_count", "time_sync_in")
    assert channel_names({"outputs": ["mag_pres"]}) == ["mag_x", "mag_y", "mag_z", "temp_c", "pres_kpa"]
    assert check_settings({"outputs": ["ypr", "accel"]}) is None
    key, problem = check_settings({"outputs": ["ypr", "euler"]})
    assert key == "outputs" and "'euler'" in problem and all(name in problem for name in OUTPUTS)
    assert check_settings({"outputs": ["ypr", "accel", "ypr"]}) == ("outputs", "'ypr' is listed twice")
    assert check_settings({"outputs": [], "configure": True})[0] == "configure"
    with pytest.raises(ValueError, match="unknown vectornav output 'euler'"):
        channel_names({"outputs": ["euler"]})


def test_rig_file_takes_vectornav_outputs() -> None:
    spec = vn_spec(outputs=["quaternion", "sync_in_count"])
    assert spec.settings["channels"] == 5
    assert isinstance(make_parser(spec.settings), VectorNavParser)
    assert vn_spec().settings["channels"] == 15
    with pytest.raises(RigError, match=r"mocap\[0\]\.outputs: unknown vectornav output 'gps'"):
        vn_spec(outputs=["gps"])
    with pytest.raises(RigError, match=r"mocap\[0\]\.configure: "):
        vn_spec(configure=True)


# --- fuzz: never raises, chunking does not matter, the buffer stays bounded -------------------------

_masks = st.integers(1, 0x7FFF)


def _random_common(mask: int, seed: int) -> bytes:
    """A Common-group packet with every field of `mask`, filled from `seed`."""
    rng = random.Random(seed)
    fields: dict[int, object] = {}
    for bit, (_, fmt) in enumerate(COMMON_FIELDS):
        if mask >> bit & 1:
            fields[bit] = tuple(rng.uniform(-1e3, 1e3) for _ in range(int(fmt[:-1]))) if fmt[:-1] \
                else rng.randrange(1 << 16)
    return encode_common(fields)


_common = st.builds(_random_common, _masks, st.integers(0, 1000))
_other = st.builds(lambda g, seed, n: unknown_packet(g, random.Random(seed), n),
                   st.integers(2, 0xFF), st.integers(0, 1000), st.integers(0, 80))
_line = st.builds(lambda name, vals, crc: ascii_message(name + "," + ",".join("%g" % v for v in vals), crc),
                  st.sampled_from(["VNYMR", "VNQTN", "VNYPR", "VNIMU", "VNRRG", "VNDTV"]),
                  st.lists(st.floats(-1e4, 1e4), max_size=14), st.booleans())


def _material() -> st.SearchStrategy[bytes]:
    frame = st.one_of(_common, _other, _line)
    mangled = st.tuples(frame, st.integers(0, 300), st.integers(0, 255)).map(
        lambda t: t[0][:t[1]] + bytes([t[2]]) + t[0][t[1] + 1:])
    cut = st.tuples(frame, st.integers(0, 300)).map(lambda t: t[0][:t[1]])
    return st.lists(st.one_of(frame, mangled, cut, st.binary(max_size=60), st.sampled_from(
        [b"\xfa", b"$", b"$VN", b"\r\n", b"\xfa\x01", b"\xfa\x01\x00\x80"])), max_size=30).map(b"".join)


def _check_chunking(stream: bytes, cuts: list[int], outputs: list[str]) -> None:
    whole = VectorNavParser(outputs)
    expected = whole.feed(stream)
    assert whole.buffered <= MAX_PACKET
    chunked = VectorNavParser(outputs)
    got: list[Frame] = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)]):
        got += chunked.feed(stream[a:b])
        assert chunked.buffered <= MAX_PACKET
    assert same(got, expected)
    assert chunked.stats() == whole.stats() and chunked.buffered == whole.buffered
    assert all(len(f.values) == len(channel_names({"outputs": outputs})) for f in got)
    assert chunked.bytes_skipped + chunked.buffered <= len(stream)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_fuzz_mutated_streams(data: st.DataObject) -> None:
    stream = data.draw(_material())
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    outputs = data.draw(st.sampled_from([[], ["ypr"], ["imu", "sync_in_count", "position"], list(OUTPUTS)]))
    _check_chunking(stream, cuts, outputs)


@settings(max_examples=200, deadline=None)
@given(stream=st.binary(max_size=4000), cuts=st.lists(st.integers(0, 4000), max_size=10))
def test_fuzz_random_bytes(stream: bytes, cuts: list[int]) -> None:
    _check_chunking(stream, sorted(c for c in cuts if c <= len(stream)), [])


# --- the emulator codec -----------------------------------------------------------------------------

def test_codec_answers_the_probe_and_refuses_the_rest() -> None:
    codec = VectorNavCodec()
    assert codec.respond(PROBE) == ascii_message(f"VNRRG,01,{MODEL}")
    # split between reads, with the device's "unchecked" XX checksum
    assert codec.respond(b"$VNRRG,1*") == b""
    assert codec.respond(b"XX\r\n") == ascii_message(f"VNRRG,01,{MODEL}")
    assert codec.respond(b"$VNRRG,01*00\r\n") == ascii_message("VNERR,03")
    assert codec.respond(ascii_message("VNWRG,06,0")) == ascii_message("VNERR,04")
    assert codec.respond(ascii_message("VNRRG,75")) == ascii_message("VNERR,08")
    reply = VectorNavParser()
    reply.feed(codec.respond(PROBE))
    assert reply.lines_ignored == 1 and reply.crc_errors == 0


def test_codec_damage_and_garbage_are_what_the_parser_rejects() -> None:
    rng = random.Random(7)
    for binary in (True, False):
        codec = VectorNavCodec(binary=binary)
        frames: list[bytes] = []
        for k in range(1000):  # frames holding no second start, so that each error is counted once
            f = codec.encode(k, 10**11 + k * 10**7, [rng.uniform(-45, 45) for _ in range(15)])
            if f.count(b"\xfa") + f.count(b"$") == 1 and len(frames) < 200:
                frames.append(f)
        assert len(frames) == 200
        corrupted = [codec.corrupt(f, rng) for f in frames[::5]]
        junk = [codec.garbage(rng) for _ in range(40)]
        data = b"".join(j + c + f for j, c, f in zip(junk, corrupted, frames[1::5]))
        p = VectorNavParser()
        out = p.feed(data)
        assert len(out) == 40 and p.crc_errors == 40 and p.parse_errors == codec.false_starts
        assert all((f.device_ns is not None) == binary for f in out)


# --- on a real pty through the real serial driver ---------------------------------------------------

def named(sample, names: list[str]) -> dict[str, float]:
    return dict(zip(names, sample.payload.values))


def test_emulator_frames_through_the_serial_driver(bench) -> None:
    spec = vn_spec(rate=400)
    names = channel_names(spec.settings)
    b = bench(spec)
    samples = b.run(1.2)
    assert len(samples) == b.emulator.sent > 400
    # no counter on the wire: the driver derives one from TimeStartup
    assert [s.seq for s in samples] == list(range(len(samples)))
    assert samples[0].device_ns == pytest.approx(BOOT_NS, abs=1000)
    steps = {b.device_ns - a.device_ns for a, b in zip(samples, samples[1:])}
    assert steps == {2_500_000}
    span = (samples[-1].host_ns - samples[0].host_ns) / 1e9
    assert (len(samples) - 1) / span == pytest.approx(400, rel=0.03)
    for s in samples:
        v = named(s, names)
        assert (v["sync_in_count"], v["time_sync_in_ns"]) == trigger(s.device_ns)
        assert all(abs(v[n]) <= 45.0 for n in names if n not in SYNC_CHANNELS)
    stats = b.driver.stats()
    assert stats["frames"] == len(samples)
    assert stats["crc_errors"] == stats["parse_errors"] == stats["bytes_skipped"] == stats["overflows"] == 0


def test_corrupted_stream_through_the_serial_driver(bench) -> None:
    b = bench(vn_spec(), corrupt_every=7, garbage_every=5)
    samples = b.run(1.2)
    sent = b.emulator.sent
    assert b.emulator.corrupted == sent // 7 > 10
    # the counter derived from device time shows each damaged frame as a gap; none is invented
    assert [s.seq for s in samples] == [c for c in range(sent) if (c + 1) % 7 != 0]
    stats = b.driver.stats()
    assert stats["crc_errors"] >= b.emulator.corrupted
    assert stats["parse_errors"] >= b.emulator.codec.false_starts > 0
    assert stats["bytes_skipped"] >= b.emulator.garbage_bytes


def test_ascii_beside_binary_through_the_serial_driver(bench) -> None:
    spec = vn_spec()
    codec = VectorNavCodec(ascii_every=10)
    b = bench(spec, codec=codec)
    samples = b.run(1.0)
    assert [s.seq for s in samples] == list(range(b.emulator.sent))
    stats = b.driver.stats()
    assert stats["lines_ignored"] == codec.lines_sent > 20
    assert (stats["crc_errors"], stats["parse_errors"]) == (0, 0)


def test_ascii_only_device_through_the_serial_driver(bench) -> None:
    outputs = ["ypr", "mag_pres", "accel", "angular_rate"]
    spec = vn_spec(rate=100, outputs=outputs)
    names = channel_names(spec.settings)
    codec = VectorNavCodec(outputs, binary=False)
    b = bench(spec, codec=codec, corrupt_every=9)
    samples = b.run(1.0)
    kept = [c for c in range(b.emulator.sent) if (c + 1) % 9 != 0]
    # no time in ASCII: frames received × the nominal period
    assert [s.seq for s in samples] == list(range(len(kept)))
    assert [s.device_ns for s in samples] == [i * 10_000_000 for i in range(len(kept))]
    assert b.driver.stats()["crc_errors"] == b.emulator.corrupted > 5
    v = named(samples[0], names)
    assert math.isnan(v["temp_c"]) and math.isnan(v["pres_kpa"]) and abs(v["yaw"]) <= 45.0


def test_probe_finds_the_emulator_and_nothing_else() -> None:
    vectornav = MocapEmulator(vn_spec())
    other = MocapEmulator(vn_spec(protocol="binary", channels=4))
    try:
        with serial.Serial(vectornav.port_name, 115200, timeout=0.05) as port:
            assert probe(port) is True
        with serial.Serial(other.port_name, 115200, timeout=0.05) as port:
            t = time.monotonic()
            assert probe(port, timeout=0.3) is False
            assert time.monotonic() - t < 1.0
    finally:
        vectornav.close()
        other.close()


def test_demo_twin_ground_truth_and_slate() -> None:
    spec = vn_spec(transport_ms=3.0, jitter_ms=0.5, drift_ppm=300.0, offset_ms=2.0)
    names = channel_names(spec.settings)
    device = DemoMocap(spec)
    try:
        device.open()
        assert device.describe()["channel_names"] == names
        device.start()
        time.sleep(0.2)
        slate_ns = now_ns() + 300_000_000
        device.slate(slate_ns)
        samples = collect(device, 1.0)
        device.stop()
    finally:
        device.close()
    # true time from device time: every frame arrives offset + transport after it happened
    assert min(s.host_ns - s.true_ns for s in samples) >= 5_000_000
    period = 1e9 / 240
    true_steps = [b.true_ns - a.true_ns for a, b in zip(samples, samples[1:])]
    assert all(abs(step - period / 1.0003) <= 1 for step in true_steps)
    floats = [n for n in names if n not in SYNC_CHANNELS]
    spikes = [s for s in samples if all(named(s, names)[n] == SPIKE for n in floats)]
    assert len(spikes) == 2 and spikes[1].seq == spikes[0].seq + 1
    assert 0 <= spikes[0].true_ns - slate_ns < period + 1
    for s in spikes:  # the trigger fields stay the trigger's
        v = named(s, names)
        assert (v["sync_in_count"], v["time_sync_in_ns"]) == trigger(s.device_ns)


def test_demo_drops_show_as_gaps_of_the_derived_counter() -> None:
    samples, stats = run_for(DemoMocap(vn_spec(drop_rate=0.05)), 1.0)
    counters = [s.seq for s in samples]
    missing = counters[-1] - counters[0] + 1 - len(counters)
    assert counters == sorted(set(counters)) and missing > 0
    assert stats["emulator_dropped"] >= missing
    # each gap is a whole number of periods on the device clock
    for a, b in zip(samples, samples[1:]):
        assert b.device_ns - a.device_ns == pytest.approx((b.seq - a.seq) * 1e9 / 240, abs=2)
    assert stats["crc_errors"] == stats["parse_errors"] == 0


# --- throughput -------------------------------------------------------------------------------------

def minute_at_400_hz() -> bytes:
    codec = VectorNavCodec()
    return b"".join(codec.encode(k, 100_000_000_000 + k * 2_500_000,
                                 [45.0 * math.sin(0.01 * k + c) for c in range(15)]) for k in range(400 * 60))


def test_a_recorded_minute_at_400_hz_parses_whole() -> None:
    """Every frame of a minute in 4 KiB reads (its speed: bench/serial_parsers.py)."""
    data = minute_at_400_hz()
    p = VectorNavParser()
    frames = sum(len(p.feed(data[i:i + 4096])) for i in range(0, len(data), 4096))
    assert frames == 24_000 and p.crc_errors == 0 and p.buffered == 0


# --- a recorded take --------------------------------------------------------------------------------

@pytest.mark.slow
def test_recorded_take_with_a_vectornav_stream(tmp_path: Path) -> None:
    rig = tmp_path / "vn.toml"
    rig.write_text(demo_rig("vn", cameras=(), audio=None, mocap="imu", rate=400, settings={"imu": {
        "protocol": "vectornav", "transport_ms": 2.0, "jitter_ms": 0.3, "drift_ppm": 80.0, "truth": True}}))
    result = subprocess.run([sys.executable, "-m", "improvcap", "record", str(rig), "--duration", "2", "--json"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    take = Path(json.loads(result.stdout)["take"])
    manifest = json.loads((take / "take.json").read_text())
    entry = manifest["streams"]["imu"]
    assert manifest["faults"] == [] and entry["state"] == "ok"
    with open(take / "imu.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[5:] == channel_names({})
    # the rows the take's own length says were due, but those a starved emulator never made (counted)
    due = 400 * manifest["duration_s"]
    assert abs(len(rows) + entry["dropped"] - due) <= 0.02 * due, (len(rows), entry["dropped"], due)
    counters = [int(r["counter"]) for r in rows]
    assert counters == list(range(counters[0], counters[0] + len(rows)))
    for r in rows:  # every sample tied to its trigger edge on the device clock
        count, since = int(float(r["sync_in_count"])), int(float(r["time_sync_in_ns"]))
        assert (count, since) == trigger(int(r["device_ns"]))
    clock = entry["clock"]
    assert clock["domain"] == "device" and clock["resets"] == 0
    with open(take / "imu.truth.csv", newline="") as fh:
        truth = {int(r["index"]): int(r["true_t_ns"]) for r in csv.DictReader(fh)}
    # mapped through the device clock, each row lands at its true time plus the transport delay: late
    # arrivals (a busy start) leave the fit alone, but a load that delays every arrival of a window lifts it
    lift = arrival_lift_ns([int(r["host_ns"]) for r in rows], [truth[int(r["index"])] for r in rows],
                           clock["window_ns"])
    errors = sorted(int(r["t_ns"]) - truth[int(r["index"])] for r in rows)
    assert errors[len(errors) // 2] == pytest.approx(2_000_000, abs=500_000 + lift), lift
    assert errors[-1] - errors[0] < 300_000 + lift, lift

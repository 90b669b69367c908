"""Xsens MTi (Xbus / MTData2): check vectors, parsing and resync on bytes, the emulated MTi on a real pty
through the real serial driver (clean, corrupted, configured, refused), wraps, and a recorded take."""
from __future__ import annotations

import csv
import json
import math
import random
import struct
import time
from pathlib import Path

import pytest
import serial
from hypothesis import given, settings, strategies as st

from improvcap.devices.mocap_demo import DemoMocap
from improvcap.devices.mocap_emulator import SPIKE, MocapEmulator
from improvcap.devices.mocap_serial import SerialMocap
from improvcap.errors import DeviceError, RigError
from improvcap.protocols import Frame, make_parser
from improvcap.protocols.xsens import (
    MAX_BUFFER, MAX_DATA, MAX_MESSAGE, OUTPUTS, XsensCodec, XsensParser, channel_names, check_settings,
    encode_message, output_configuration, probe, request,
)
from improvcap.rig import StreamSpec

from helpers import collect, demo_rig, mocap_spec

NAN = math.nan
WRAP_TICKS = 1 << 32
WRAP_NS = WRAP_TICKS * 100_000


def spec(driver: str = "demo", **keys: object) -> StreamSpec:
    return mocap_spec(driver, name="imu", **{"protocol": "xsens", "rate": 400, **keys})


def item(did: int, fmt: str, *values: object) -> bytes:
    value = struct.pack(">" + fmt, *values)
    return struct.pack(">HB", did, len(value)) + value


def packet(counter: int | None = None, ticks: int | None = None, *items: bytes) -> bytes:
    head = b""
    if counter is not None:
        head += item(0x1020, "H", counter)
    if ticks is not None:
        head += item(0x1060, "I", ticks)
    return encode_message(0x36, head + b"".join(items))


def f32(x: float) -> float:
    return struct.unpack(">f", struct.pack(">f", x))[0]


def same(a: list[Frame], b: list[Frame]) -> bool:
    return list(map(repr, a)) == list(map(repr, b))  # repr: NaN equals itself


def feed_chunked(parser: XsensParser, data: bytes, rng: random.Random) -> list[Frame]:
    out: list[Frame] = []
    i = 0
    while i < len(data):
        n = rng.choice([1, 2, 3, 5, 7, 64, 300, 4096])
        out += parser.feed(data[i:i + n])
        i += n
    return out


# --- check vectors and framing ------------------------------------------------------------------------

def test_check_vectors() -> None:
    assert packet(1) == bytes.fromhex("FA FF 36 05 10 20 02 00 01 93")
    assert encode_message(0x31) == bytes.fromhex("FA FF 31 00 D0")  # GoToConfig acknowledgement
    p = XsensParser(keep_messages=True)
    frames = p.feed(bytes.fromhex("FA FF 36 05 10 20 02 00 01 93 FA FF 31 00 D0"))
    assert len(frames) == 1 and frames[0].counter == 1 and frames[0].device_ns is None
    assert all(math.isnan(v) for v in frames[0].values) and len(frames[0].values) == 10
    assert p.messages == [(0x31, b"")]
    assert p.stats() == {"frames": 1, "crc_errors": 0, "parse_errors": 0, "bytes_skipped": 0,
                         "counter_gaps": 0, "frames_missed": 0, "other_messages": 1}


def test_checksum_makes_the_byte_sum_zero() -> None:
    rng = random.Random(4)
    for n in (0, 1, 17, 254, 255, 256, 1000, MAX_DATA):
        msg = encode_message(rng.randrange(256), rng.randbytes(n))
        assert sum(msg[1:]) % 256 == 0
        assert len(msg) == (5 if n < 255 else 7) + n


def test_extended_length() -> None:
    data = bytes(range(256)) + bytes(44)
    msg = encode_message(0x99, data)
    assert msg[:6] == bytes.fromhex("FA FF 99 FF 01 2C")
    p = XsensParser(keep_messages=True)
    assert p.feed(msg) == [] and p.messages == [(0x99, data)]
    # an MTData2 packet longer than 254 bytes: padded with an unknown DataID, skipped by its size
    big = packet(7, 123, item(0x4020, "3f", 1.0, 2.0, 3.0), item(0x7F00, "250s", b"\xfa\xff" * 125),
                 item(0x2010, "4f", 1.0, 0.0, 0.5, -0.5))
    assert big[3] == 0xFF
    got = XsensParser().feed(big + packet(8))  # preambles inside: decided by the byte after it (below)
    assert same(got[:1], [Frame(7, 12_300_000, (1.0, 0.0, 0.5, -0.5, 1.0, 2.0, 3.0, NAN, NAN, NAN))])
    assert [f.counter for f in got] == [7, 8]
    assert len(encode_message(0x36, bytes(MAX_DATA))) == MAX_MESSAGE
    with pytest.raises(ValueError):
        encode_message(0x36, bytes(MAX_DATA + 1))


def test_impossible_length_is_refused_before_waiting_for_it() -> None:
    good = packet(5, 10)
    lying = bytes.fromhex("FA FF 36 FF 08 01")  # 2049 bytes announced: more than an MTi ever sends
    p = XsensParser()
    got = p.feed(lying + good)
    assert [f.counter for f in got] == [5] and p.parse_errors == 1 and p.buffered == 0
    # a plausible extended length is waited for, but never more than one message's worth is held
    q = XsensParser()
    assert q.feed(bytes.fromhex("FA FF 36 FF 08 00") + bytes(1000)) == []
    assert q.buffered == 1006
    for _ in range(10):
        q.feed(bytes(1000))
        assert q.buffered <= MAX_MESSAGE
    assert q.crc_errors == 1


def test_mtdata2_fields_order_missing_and_unknown() -> None:
    outputs = ["euler", "status", "quaternion", "magnetic_field", "rate_of_turn", "acceleration",
               "sample_time_coarse"]
    assert channel_names({"outputs": outputs}) == [
        "roll", "pitch", "yaw", "status", "quat_w", "quat_x", "quat_y", "quat_z", "mag_x", "mag_y", "mag_z",
        "gyr_x", "gyr_y", "gyr_z", "acc_x", "acc_y", "acc_z", "time_coarse_s"]
    data = packet(
        65535, WRAP_TICKS - 1,
        item(0x2013, "12s", bytes(12)),            # quaternion as fp16.32: not decoded, skipped by size
        item(0x4024, "3f", 0.5, -9.75, 1.25),      # acceleration in NED: float32, decoded
        item(0x5555, "7s", b"\xfa\xff\x36\x05\x10\x20\x02"),  # unknown, with a false preamble inside
        item(0xE020, "I", (1 << 27) | 3),
        item(0x2030, "3f", 10.0, -20.0, 179.5),
        item(0x8020, "3f", 0.1, 0.2, 0.3),
        item(0x1070, "I", 86_400),
        item(0x2040, "9f", *range(9)),              # rotation matrix: not asked for, ignored
    )
    p = XsensParser(outputs)
    frame, _ = p.feed(data + packet(0))
    assert frame.counter == 65535 and frame.device_ns == (WRAP_TICKS - 1) * 100_000
    expected = (10.0, -20.0, 179.5, float((1 << 27) | 3), NAN, NAN, NAN, NAN, NAN, NAN, NAN,
                f32(0.1), f32(0.2), f32(0.3), 0.5, -9.75, 1.25, 86400.0)
    assert repr(frame.values) == repr(expected)
    # the same packet for a stream asking for other outputs: only those, in its order
    other, _ = XsensParser(["acceleration", "euler"]).feed(data + packet(0))
    assert other.values == (0.5, -9.75, 1.25, 10.0, -20.0, 179.5)
    # a packet with no counter or time
    [bare] = XsensParser(["acceleration"]).feed(packet(None, None, item(0x4020, "3f", 1, 2, 3)))
    assert bare == Frame(None, None, (1.0, 2.0, 3.0))


def test_packet_whose_items_do_not_add_up_is_rejected_and_the_search_goes_on() -> None:
    good = packet(9, 90)
    overrun = encode_message(0x36, item(0x1020, "H", 1) + bytes.fromhex("40 20 0C 00"))  # claims 12, has 1
    short_item = encode_message(0x36, item(0x1020, "H", 1) + b"\x10")                    # half a header
    wrong_size = encode_message(0x36, item(0x1020, "I", 1))                              # counter of 4 bytes
    wrong_float = encode_message(0x36, item(0x2010, "3f", 1, 2, 3))                      # quaternion of 3
    # a rejected packet (its item overruns it) hides a whole good one: found in the search that goes on
    hiding = encode_message(0x36, struct.pack(">HB", 0x7000, 250) + good)
    p = XsensParser()
    got = p.feed(overrun + short_item + wrong_size + wrong_float + hiding)
    assert [f.counter for f in got] == [9]
    assert p.parse_errors == 5 and p.crc_errors == 0


def test_a_message_cut_short_that_passes_the_checksum_by_chance_is_caught() -> None:
    codec = XsensCodec({"rate": 400.0, "outputs": []})
    frames = [codec.encode(c, 10**11 + 2_500_000 * c, [float(c)] * 10) for c in range(5)]
    # cut frame 1 wherever its claimed length, now running into frame 2, sums to zero by chance
    wanted = None
    for value in range(1000):
        trial = codec.encode(1, 10**11, [value / 7] * 10)
        for cut in range(20, len(trial) - 2):
            if sum((trial[:cut] + frames[2])[1:len(trial)]) % 256 == 0:
                wanted = trial[:cut]
                break
        if wanted:
            break
    assert wanted is not None
    data = frames[0] + wanted + b"".join(frames[2:])
    p = XsensParser()
    assert [f.counter for f in p.feed(data)] == [0, 2, 3, 4]
    assert p.parse_errors == 1 and p.buffered == 0
    # chunking does not matter, nor does it when a message with a preamble inside ends a chunk
    q = XsensParser()
    assert [f.counter for f in feed_chunked(q, data, random.Random(1))] == [0, 2, 3, 4]
    assert q.stats() == p.stats()


def test_a_message_with_a_preamble_inside_waits_for_the_next_byte() -> None:
    inside = packet(1, 0xFAFF_0000)  # SampleTimeFine bytes FA FF ...
    p = XsensParser()
    assert p.feed(inside) == [] and p.buffered == len(inside)
    assert [f.counter for f in p.feed(b"\xfa")] == [1]  # a preamble follows: genuine
    assert [f.counter for f in XsensParser().feed(packet(2))] == [2]  # no preamble inside: at once


def test_other_messages_are_skipped_by_their_length() -> None:
    frames = [packet(c, 25 * c) for c in range(6)]
    other = [encode_message(0x31), encode_message(0x42, b"\x04"), encode_message(0x99, bytes(300)),
             encode_message(0xC1, bytes.fromhex("10 20 FF FF FA FF 36 05"))]
    data = b"".join(f + o for f, o in zip(frames, other + [b"", b""]))
    p = XsensParser(keep_messages=True)
    got = p.feed(data)
    assert [f.counter for f in got] == list(range(6))
    assert p.other_messages == 4 and [m for m, _ in p.messages or []] == [0x31, 0x42, 0x99, 0xC1]
    assert (p.crc_errors, p.parse_errors, p.bytes_skipped) == (0, 0, 0)


def test_counter_wraps_at_16_bits_and_gaps() -> None:
    p = XsensParser()
    p.feed(b"".join(packet(c) for c in (65534, 65535, 0, 1)))
    assert (p.frames, p.counter_gaps, p.frames_missed) == (4, 0, 0)
    p.feed(packet(4))
    assert (p.counter_gaps, p.frames_missed) == (1, 2)
    q = XsensParser()
    q.feed(packet(65535) + packet(2))  # 0 and 1 lost across the wrap
    assert (q.counter_gaps, q.frames_missed) == (1, 2)
    assert (XsensParser.counter_wrap, XsensParser.time_wrap_ns) == (65536, WRAP_NS)


# --- corruption, on bytes alone ---------------------------------------------------------------------------

def stream_of(n: int, seed: int, first: int = 0) -> tuple[list[Frame], list[bytes]]:
    rng = random.Random(seed)
    codec = XsensCodec({"rate": 400.0, "outputs": []})
    frames, raw = [], []
    for k in range(n):
        values = [f32(rng.uniform(-50, 50)) for _ in range(10)]
        device_ns = 100_000 * (WRAP_TICKS - 3000 + 25 * k)
        raw.append(codec.encode(first + k, device_ns, values))
        frames.append(Frame((first + k) % 65536, (device_ns // 100_000 % WRAP_TICKS) * 100_000, tuple(values)))
    return frames, raw


def test_corruption_keeps_every_intact_frame_and_invents_none() -> None:
    for seed in range(30):
        rng = random.Random(seed)
        frames, raw = stream_of(300, seed, first=65400)
        codec = XsensCodec({"rate": 400.0, "outputs": []})
        parts: list[bytes] = []
        intact: list[Frame] = []
        intact_bytes = damaged = 0
        for f, msg in zip(frames, raw):
            action = rng.random()
            if action < 0.12:  # a data byte changed (the emulator's fault)
                msg = codec.corrupt(msg, rng)
                damaged += 1
            elif action < 0.2:  # a bit flipped anywhere after the preamble, length byte included
                b = bytearray(msg)
                b[rng.randrange(2, len(b))] ^= 1 << rng.randrange(8)
                msg = bytes(b)
                damaged += 1
            elif action < 0.27:  # cut short after its preamble, the next message follows straight away
                msg = msg[:rng.randrange(2, len(msg) - 1)]
                damaged += 1
            else:
                intact.append(f)
                intact_bytes += len(msg)
            if rng.random() < 0.1:
                parts.append(codec.garbage(rng))
            parts.append(msg)
        data = b"".join(parts) + bytes(MAX_MESSAGE)  # a damaged last message is judged once it has all arrived
        for how in ("whole", "chunked"):
            p = XsensParser()
            got = p.feed(data) if how == "whole" else feed_chunked(p, data, rng)
            assert same(got, intact), (seed, how)
            # every damaged message and false preamble is rejected at least once
            false = codec.false_checksums + codec.false_lengths
            assert p.crc_errors + p.parse_errors >= damaged + false
            assert p.bytes_skipped + intact_bytes + p.buffered == len(data)
            assert p.buffered <= MAX_BUFFER and p.other_messages == 0
            counters = [f.counter for f in intact]
            steps = [(b - a) % 65536 for a, b in zip(counters, counters[1:])]
            assert p.counter_gaps == sum(s != 1 for s in steps)
            assert p.frames_missed == sum(s - 1 for s in steps)


def test_emulator_garbage_is_junk_with_false_preambles() -> None:
    codec = XsensCodec({"rate": 100.0, "outputs": ["euler"]})
    rng = random.Random(2)
    pieces = [codec.garbage(rng) for _ in range(200)]
    assert all(b"\xfa\xff" in junk for junk in pieces)
    junk = b"".join(pieces)
    assert junk.count(b"\xfa\xff") == codec.false_checksums + codec.false_lengths >= 200
    assert codec.false_checksums > 50 and codec.false_lengths > 50
    p = XsensParser(["euler"])
    assert p.feed(junk) == [] and p.other_messages == 0
    assert (p.crc_errors, p.parse_errors) == (codec.false_checksums, codec.false_lengths)


# --- fuzz: never raises, chunking does not matter, buffer bounded ------------------------------------------

def _material() -> st.SearchStrategy[bytes]:
    floats = st.floats(-1e6, 1e6, width=32)
    frame = st.builds(lambda c, t, v, extra: packet(c, t, item(0x2010, "4f", *v[:4]),
                                                    item(0x4020, "3f", *v[4:7]), *extra),
                      st.integers(0, 65535), st.integers(0, WRAP_TICKS - 1),
                      st.lists(floats, min_size=7, max_size=7),
                      st.lists(st.builds(lambda d, b: struct.pack(">HB", d, len(b)) + b,
                                         st.integers(0, 65535), st.binary(max_size=20)), max_size=2))
    other = st.builds(encode_message, st.integers(0, 255), st.binary(max_size=300))
    junk = st.binary(max_size=60)
    mangled = st.tuples(frame, st.integers(0, 80), st.integers(0, 255)).map(
        lambda t: t[0][:t[1]] + bytes([t[2]]) + t[0][t[1] + 1:])
    cut = st.tuples(frame, st.integers(0, 80)).map(lambda t: t[0][:t[1]])
    preambles = st.sampled_from([b"\xfa", b"\xfa\xff", b"\xfa\xff\x36", b"\xfa\xff\x36\xff",
                                 b"\xfa\xff\x36\xff\x08\x00", b"\xfa\xff\x36\xff\x07\xff"])
    return st.lists(st.one_of(frame, other, junk, mangled, cut, preambles), max_size=30).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_fuzz_parser_never_raises_and_chunking_never_matters(data: st.DataObject) -> None:
    stream = data.draw(st.one_of(_material(), st.binary(max_size=3000)))
    outputs = data.draw(st.sampled_from([[], ["quaternion", "acceleration"], list(OUTPUTS)]))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    whole = make_parser({"protocol": "xsens", "outputs": outputs})
    expected = whole.feed(stream)
    chunked = make_parser({"protocol": "xsens", "outputs": outputs})
    got: list[Frame] = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)]):
        got += chunked.feed(stream[a:b])
        assert chunked.buffered <= MAX_BUFFER
    assert same(got, expected)
    assert chunked.stats() == whole.stats()
    assert chunked.buffered == whole.buffered <= MAX_BUFFER
    n = len(channel_names({"outputs": outputs}))
    assert all(len(f.values) == n for f in got)
    assert all(f.counter is None or 0 <= f.counter < 65536 for f in got)
    assert all(f.device_ns is None or 0 <= f.device_ns < WRAP_NS for f in got)


# --- settings and rig files ---------------------------------------------------------------------------

def test_outputs_in_the_rig_file() -> None:
    s = spec(outputs=["acceleration", "quaternion", "status"])
    assert s["channels"] == 8
    assert channel_names(s.settings)[:4] == ["acc_x", "acc_y", "acc_z", "quat_w"]
    default = spec()
    assert channel_names(default.settings) == ["quat_w", "quat_x", "quat_y", "quat_z", "acc_x", "acc_y", "acc_z",
                                               "gyr_x", "gyr_y", "gyr_z"]
    assert default["channels"] == 10
    with pytest.raises(RigError) as failure:
        spec(outputs=["quaternion", "gps"])
    message = str(failure.value)
    assert message.startswith("t.toml: mocap[0].outputs: unknown xsens output 'gps' (expected quaternion, ")
    assert all(name in message for name in OUTPUTS)
    with pytest.raises(RigError, match=r"mocap\[0\]\.outputs: 'euler' is listed twice"):
        spec(outputs=["euler", "acceleration", "euler"])
    with pytest.raises(RigError, match=r"mocap\[0\]\.rate: configure = true sets a whole output rate"):
        spec(configure=True, rate=99.5)
    with pytest.raises(RigError, match=r"mocap\[0\]\.channels: the xsens outputs give 10 channels, not 24"):
        spec(channels=24)
    assert check_settings({"outputs": [], "rate": 99.5, "configure": False}) is None


def test_output_configuration_pairs() -> None:
    data = output_configuration(spec(outputs=["euler", "status"], rate=100).settings)
    assert data == bytes.fromhex("1020 FFFF 1060 FFFF 2030 0064 E020 FFFF")


# --- the emulated device's dialogue ----------------------------------------------------------------------

def test_emulated_mti_answers_like_one() -> None:
    codec = XsensCodec({"rate": 400.0, "outputs": ["quaternion", "euler", "acceleration"]})
    values = [0.5] * 4 + [10.0, 20.0, 30.0] + [1.0, 2.0, 3.0]
    assert codec.encode(1, 10**11, values)[2] == 0x36
    assert codec.respond(encode_message(0xC0, bytes.fromhex("1020FFFF"))) == encode_message(0x42, b"\x04")
    assert codec.respond(encode_message(0x30)) == bytes.fromhex("FA FF 31 00 D0")
    assert codec.encode(2, 10**11, values) == b""  # in config state: no data
    assert codec.respond(encode_message(0x00)) == encode_message(0x01, bytes.fromhex("03701234"))
    assert codec.respond(encode_message(0x77)) == encode_message(0x42, b"\x04")
    refused = bytes.fromhex("1020FFFF 40200064")  # acceleration at 100 Hz from a 400 Hz device
    assert codec.respond(encode_message(0xC0, refused)) == encode_message(0x42, b"\x21")
    config = bytes.fromhex("1020FFFF 1060FFFF 40200190 20100190")
    # two requests in one write, the second cut in two: both answered, in order
    both = encode_message(0xC0, config) + encode_message(0x10)
    assert codec.respond(both[:-3]) == encode_message(0xC1, config)
    assert codec.respond(both[-3:]) == encode_message(0x11)
    msg = codec.encode(65536 + 3, 12_345_678 * 100_000 + 99_999, values)
    p = XsensParser(["quaternion", "acceleration", "euler"])
    assert same(p.feed(msg), [Frame(3, 12_345_678 * 100_000, (0.5,) * 4 + (1.0, 2.0, 3.0) + (NAN,) * 3)])


# --- on a real pty through the real serial driver ---------------------------------------------------------

def test_clean_stream_through_both_wraps(bench) -> None:
    # PacketCounter wraps after 135 frames, SampleTimeFine 0.3 s in
    boot = WRAP_NS - 300_000_000
    b = bench(spec(outputs=["quaternion", "acceleration", "rate_of_turn", "status"]),
              first_counter=65536 - 135, boot_ns=boot)
    samples = b.run(1.0)
    first = 65536 - 135
    assert [s.seq for s in samples] == [first + i for i in range(len(samples))]
    assert len(samples) == b.emulator.sent > 300
    assert [s.payload.counter for s in samples] == [s.seq for s in samples]
    # device time from SampleTimeFine, unwrapped: 25 ticks a frame straight through the wrap
    assert samples[0].device_ns == boot
    assert [s.device_ns for s in samples] == [boot + 2_500_000 * i for i in range(len(samples))]
    assert samples[-1].device_ns > WRAP_NS
    assert all(len(s.payload.values) == 11 and all(abs(v) <= 45.0 for v in s.payload.values) for s in samples)
    stats = b.driver.stats()
    assert stats["frames"] == len(samples)
    assert (stats["crc_errors"], stats["parse_errors"], stats["counter_gaps"], stats["bytes_skipped"]) == (0,) * 4


def test_corrupted_stream_keeps_intact_frames_and_counts_the_rest(bench) -> None:
    b = bench(spec(rate=240), corrupt_every=7, garbage_every=5, first_counter=65300)
    samples = b.run(1.2)
    sent = b.emulator.sent
    assert b.emulator.corrupted == sent // 7 > 10
    assert [s.seq for s in samples] == [65300 + c for c in range(sent) if (c + 1) % 7 != 0]
    codec = b.emulator.codec
    stats = b.driver.stats()
    assert b.emulator.garbage_runs == sent // 5
    assert stats["crc_errors"] == b.emulator.corrupted + codec.false_checksums
    assert stats["parse_errors"] == codec.false_lengths > 0
    assert stats["bytes_skipped"] >= b.emulator.garbage_bytes
    lost_inside = sum(1 for c in range(sent - 1) if (c + 1) % 7 == 0)
    assert stats["counter_gaps"] == stats["frames_missed"] == lost_inside


def test_configuration_is_acknowledged_and_takes_effect(bench) -> None:
    # the device streams quaternion, euler and acceleration; the rig asks for acceleration and quaternion
    device = spec(outputs=["quaternion", "euler", "acceleration"])
    host = spec(outputs=["acceleration", "quaternion"], configure=True)
    b = bench(device, host)
    started = time.monotonic()
    b.driver.open()  # before the device streams: the standby device answers
    assert time.monotonic() - started < 0.5
    codec = b.emulator.codec
    assert codec.measuring and codec.fields == [0x1020, 0x1060, 0x4020, 0x2010]
    b.driver.start()
    b.emulator.start()
    samples = collect(b.driver, 0.5)
    b.emulator.stop()
    b.driver.stop()
    assert len(samples) > 150
    assert all(len(s.payload.values) == 7 and not any(math.isnan(v) for v in s.payload.values) for s in samples)
    assert b.driver.bytes_read <= (5 + 5 + 7 + 15 + 19) * (len(samples) + 2)  # euler no longer sent


def test_configuration_amid_measurement_data(bench) -> None:
    b = bench(spec(configure=True, rate=1000))
    b.emulator.start()  # already streaming when the host configures it
    time.sleep(0.2)
    b.driver.open()
    assert b.emulator.codec.measuring and b.emulator.sent > 100
    b.driver.start()
    samples = collect(b.driver, 0.3)
    assert len(samples) > 150
    counters = [s.seq for s in samples]
    assert counters == list(range(counters[0], counters[0] + len(counters)))


def test_configuration_refused_or_unanswered_is_one_line(bench) -> None:
    b = bench(spec(rate=400), spec(rate=100, configure=True))
    with pytest.raises(DeviceError) as refused:
        b.driver.open()
    port = b.emulator.port_name
    assert str(refused.value) == (f"imu: the Xsens device on {port} refused SetOutputConfiguration: "
                                  "error 0x21 (parameter invalid or out of range)")
    again = SerialMocap(spec(), port=port)
    again.open()
    again.close()
    # a device that does not speak Xbus never answers
    mute = bench(spec(protocol="binary", channels=4), spec(configure=True))
    started = time.monotonic()
    with pytest.raises(DeviceError) as silent:
        mute.driver.open()
    assert 0.9 < time.monotonic() - started < 2.0
    assert str(silent.value) == (f"imu: no answer to GoToConfig from {mute.emulator.port_name} within 1 s "
                                 "(is an Xsens MTi connected at 921600 baud?)")


def test_request_error_message_and_probe() -> None:
    xsens = MocapEmulator(spec())
    binary = MocapEmulator(spec(protocol="binary", channels=4))
    try:
        with serial.Serial(xsens.port_name, 115200, timeout=0.2) as port:
            assert request(port, 0x00, stream="imu") == bytes.fromhex("03701234")  # ReqDID -> DeviceID
            with pytest.raises(DeviceError, match=r"^imu: the Xsens device on /dev/pts/\d+ refused message "
                                                  r"0x77: error 0x04 \(invalid message\)$"):
                request(port, 0x77, stream="imu")
            assert port.timeout == 0.2  # restored
            assert probe(port)  # standby: answers ReqDID
        xsens.start()
        with serial.Serial(xsens.port_name, 115200, timeout=0.2) as port:
            assert probe(port)  # streaming
        with serial.Serial(binary.port_name, 115200, timeout=0.2) as port:
            started = time.monotonic()
            assert not probe(port)  # silent
            assert time.monotonic() - started < 1.0
        binary.start()
        with serial.Serial(binary.port_name, 115200, timeout=0.2) as port:
            assert not probe(port)  # streaming another protocol
    finally:
        xsens.close()
        binary.close()


def test_demo_twin_renders_a_slate_on_every_channel() -> None:
    from improvcap.clock import now_ns

    device = DemoMocap(spec(outputs=["quaternion", "status", "sample_time_coarse"], configure=True,
                            transport_ms=2.0, jitter_ms=0.3))
    try:
        device.open()
        info = device.describe()
        assert info["protocol"] == "xsens"
        assert info["channel_names"] == ["quat_w", "quat_x", "quat_y", "quat_z", "status", "time_coarse_s"]
        device.start()
        time.sleep(0.2)
        slate_ns = now_ns() + 200_000_000
        device.slate(slate_ns)
        samples = collect(device, 0.6)
        device.stop()
    finally:
        device.close()
    spikes = [s for s in samples if all(v == SPIKE for v in s.payload.values)]
    assert len(spikes) == 2 and spikes[1].seq == spikes[0].seq + 1
    assert 0 <= spikes[0].true_ns - slate_ns < 2_500_001
    assert all(s.true_ns is not None and s.host_ns - s.true_ns >= 2_000_000 for s in samples)


# --- a recorded take ----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_recorded_take_counts_through_both_wraps(cli, tmp_path: Path) -> None:
    # the counter wraps 1.34 s and SampleTimeFine 1.23 s after the device starts streaming (room for a slow start
    # on a loaded machine: the take must begin before both)
    rig = tmp_path / "xsens-rig.toml"
    rig.write_text(demo_rig("xsens-rig", size=(160, 120), audio=None, mocap="imu", rate=400, settings={"imu": {
        "protocol": "xsens", "configure": True, "outputs": ["quaternion", "acceleration", "rate_of_turn"],
        "first_counter": 65000, "uptime_s": 429495.5, "drift_ppm": 80.0, "transport_ms": 2.0, "jitter_ms": 0.2,
        "truth": True}}))
    # 4 s: long enough for the drift fit to hold under a loaded machine's scheduling delays
    result = cli("record", str(rig), "--out", "out", "--duration", "4", "--json")
    assert result.returncode == 0, result.stderr
    take = Path(json.loads(result.stdout)["take"])
    manifest = json.loads((take / "take.json").read_text())
    assert manifest["status"] == "complete" and manifest["faults"] == []
    imu = manifest["streams"]["imu"]
    assert imu["device"]["channel_names"][0] == "quat_w" and imu["device"]["device_boot_ns"] == 4294955 * 10**8
    stats = imu["device_stats"]
    assert (stats["crc_errors"], stats["parse_errors"], stats["counter_gaps"]) == (0, 0, 0)

    with open(take / "imu.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert abs(len(rows) - 400 * manifest["duration_s"]) < 40  # the rows the take's own length says were due
    counters = [int(r["counter"]) for r in rows]
    assert counters == list(range(counters[0], counters[0] + len(rows)))
    assert counters[0] < 65536 < counters[-1]  # running through the u16 wrap
    device_ns = [int(r["device_ns"]) for r in rows]
    steps = {b - a for a, b in zip(device_ns, device_ns[1:])}
    assert steps == {2_500_000}  # running through the SampleTimeFine wrap
    assert device_ns[0] < WRAP_NS < device_ns[-1]

    # the clock fit: small residual, and the stored times match the truth up to a constant delay
    clock = imu["clock"]
    assert clock["domain"] == "device" and clock["resets"] == 0
    assert clock["residual_p50_ns"] < 1_000_000
    assert clock["drift_ppm"] == pytest.approx(80.0, abs=60.0)
    with open(take / "imu.truth.csv", newline="") as fh:
        truth = [int(r["true_t_ns"]) for r in csv.DictReader(fh)]
    errors = [int(r["t_ns"]) - t for r, t in zip(rows, truth)]
    assert len(truth) == len(rows)
    assert max(errors) - min(errors) < 200_000

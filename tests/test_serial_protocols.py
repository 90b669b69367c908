"""Mocap framing on bytes alone: CRC, binary and csv frames, corruption, counter wrap, chunking."""
from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings, strategies as st

from improvcap.protocols import Frame, make_parser
from improvcap.protocols.binary import MAGIC, BinaryParser, binary_frame_size, crc16_ccitt, encode_binary
from improvcap.protocols.csv_lines import CsvParser, encode_csv

from helpers import crc16_bitwise


def crc_bitwise(data: bytes) -> int:
    """CRC-16/CCITT-FALSE straight from its definition, to check the fast one against."""
    return crc16_bitwise(data, 0xFFFF)


def f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


def frames_for(counters: list[int], channels: int, seed: int = 1) -> list[Frame]:
    rng = random.Random(seed)
    return [Frame(c, 1000 * (1_000_000 + 4167 * i), tuple(f32(rng.uniform(-180, 180)) for _ in range(channels)))
            for i, c in enumerate(counters)]


def wire(f: Frame) -> tuple[int, int, tuple[float, ...]]:
    """A frame's fields as the wire formats take them (device time in µs)."""
    return f.counter, f.device_ns // 1000, f.values


def feed_chunked(parser, data: bytes, rng: random.Random) -> list[Frame]:
    out, i = [], 0
    while i < len(data):
        n = rng.choice([1, 2, 3, 7, 50, 113, 500])
        out += parser.feed(data[i:i + n])
        i += n
    return out


# --- CRC ---------------------------------------------------------------------------------------------

def test_crc_check_value() -> None:
    assert crc16_ccitt(b"123456789") == 0x29B1
    assert crc_bitwise(b"123456789") == 0x29B1


def test_crc_matches_definition_on_random_data() -> None:
    rng = random.Random(3)
    for n in (0, 1, 2, 17, 114, 1000):
        data = bytes(rng.randrange(256) for _ in range(n))
        assert crc16_ccitt(data) == crc_bitwise(data)


# --- binary ------------------------------------------------------------------------------------------

def test_binary_layout() -> None:
    frame = encode_binary(0x01020304, 0x1122334455, [1.0, -2.5])
    assert len(frame) == binary_frame_size(2) == 2 + 1 + 1 + 4 + 8 + 8 + 2
    assert frame[:2] == b"\xa5\x5a"
    assert frame[2] == 1 and frame[3] == 2
    assert frame[4:8] == bytes([4, 3, 2, 1])
    assert frame[8:16] == (0x1122334455).to_bytes(8, "little")
    assert struct.unpack("<2f", frame[16:24]) == (1.0, -2.5)
    assert int.from_bytes(frame[24:26], "little") == crc_bitwise(frame[2:24])


def test_binary_round_trip_whole_and_byte_by_byte() -> None:
    frames = frames_for(list(range(50)), 24)
    data = b"".join(encode_binary(*wire(f)) for f in frames)
    whole = BinaryParser(24)
    assert whole.feed(data) == frames
    assert whole.stats() == {"frames": 50, "crc_errors": 0, "parse_errors": 0, "bytes_skipped": 0,
                             "counter_gaps": 0, "frames_missed": 0}
    single = BinaryParser(24)
    got = [f for i in range(len(data)) for f in single.feed(data[i:i + 1])]
    assert got == frames and single.buffered == 0


def test_binary_corruption_keeps_every_intact_frame_and_counts_every_damaged_one() -> None:
    channels = 24
    size = binary_frame_size(channels)
    clean = 0
    for seed in range(40):
        rng = random.Random(seed)
        frames = frames_for(list(range(300)), channels, seed)
        parts: list[bytes] = []
        intact: list[Frame] = []
        damaged = garbage = 0
        for f in frames:
            raw = bytearray(encode_binary(*wire(f)))
            action = rng.random()
            if action < 0.15:  # one byte flipped anywhere after the magic: header, values or CRC
                raw[rng.randrange(2, size)] ^= 1 << rng.randrange(8)
                damaged += 1
            elif action < 0.25:  # cut short, the next frame follows straight away
                raw = raw[:rng.randrange(3, size - 1)]
                damaged += 1
            else:
                intact.append(f)
            if rng.random() < 0.1:
                junk = bytes(rng.choice(b"\x00\x11\x5a\xfe\x0d\x0a") for _ in range(rng.randint(1, 30)))
                parts.append(junk)
                garbage += len(junk)
            parts.append(bytes(raw))
        # trailing padding: a damaged last frame is judged only once the bytes it claims have arrived
        data = b"".join(parts) + bytes(size)
        if data.count(MAGIC) != len(frames):
            continue  # a flip or a value happened to forge a magic; exactness needs a clean case
        clean += 1
        for parser_data in ("whole", "chunked"):
            p = BinaryParser(channels)
            got = p.feed(data) if parser_data == "whole" else feed_chunked(p, data, rng)
            assert got == intact
            assert p.crc_errors + p.parse_errors == damaged
            assert p.bytes_skipped + size * len(intact) + p.buffered == len(data)
            assert p.bytes_skipped >= garbage
            counters = [f.counter for f in intact]
            steps = [b - a for a, b in zip(counters, counters[1:])]
            assert p.counter_gaps == sum(s != 1 for s in steps)
            assert p.frames_missed == sum(s - 1 for s in steps)
    assert clean >= 20


def test_binary_frame_inside_a_damaged_region_is_found() -> None:
    # the bad frame's claimed length swallows a whole good frame; the good one must still come out
    good = frames_for([7], 2)[0]
    lying = bytearray(encode_binary(6, 0, [0.0] * 200))[:20]  # header says 200 channels
    p = BinaryParser()
    data = bytes(lying) + encode_binary(*wire(good)) + b"\x00" * 900
    assert p.feed(data) == [good]
    assert p.crc_errors == 1


def test_binary_header_validation() -> None:
    good = encode_binary(1, 10, [1.0, 2.0, 3.0])
    wrong_version = bytearray(good)
    wrong_version[2] = 2
    wrong_version[-2:] = struct.pack("<H", crc16_ccitt(wrong_version[2:-2]))
    zero_channels = MAGIC + bytes([1, 0]) + bytes(12)
    p = BinaryParser(3)
    out = p.feed(bytes(wrong_version) + zero_channels + encode_binary(2, 20, [1.0, 2.0]) + good)
    assert [f.counter for f in out] == [1]
    assert p.parse_errors == 3  # version 2, N = 0, N = 2 when 3 are expected
    assert p.crc_errors == 0
    # with no expected count any N is accepted
    assert [f.values for f in BinaryParser().feed(encode_binary(2, 20, [1.0, 2.0]))] == [(1.0, 2.0)]


def test_counter_wrap_and_gaps() -> None:
    top = 2**32
    p = BinaryParser(1)
    p.feed(b"".join(encode_binary(c, 0, [0.0]) for c in (top - 2, top - 1, 0, 1)))
    assert (p.frames, p.counter_gaps, p.frames_missed) == (4, 0, 0)
    p.feed(encode_binary(4, 0, [0.0]))  # 2 and 3 lost
    assert (p.counter_gaps, p.frames_missed) == (1, 2)
    p.feed(encode_binary(2, 0, [0.0]))  # backwards: a reset, not 4 billion lost frames
    assert (p.counter_gaps, p.frames_missed) == (2, 2)
    q = BinaryParser(1)
    q.feed(encode_binary(top - 1, 0, [0.0]) + encode_binary(2, 0, [0.0]))  # 0 and 1 lost across the wrap
    assert (q.counter_gaps, q.frames_missed) == (1, 2)
    assert encode_binary(top + 5, 0, [0.0]) == encode_binary(5, 0, [0.0])


def test_binary_buffer_stays_bounded_on_junk() -> None:
    rng = random.Random(9)
    p = BinaryParser()
    for _ in range(200):
        assert p.feed(rng.randbytes(5000)) == []
        assert p.buffered <= binary_frame_size(255)
    assert p.bytes_skipped + p.buffered == 200 * 5000


# --- csv ---------------------------------------------------------------------------------------------

def test_csv_lines_crlf_lf_and_junk() -> None:
    data = (b"0,1000,1.5,-2,3e2\r\n"
            b"1,2000,1.5,-2,300\n"
            b"\r\n"                              # blank: ignored
            b"2,3000,1.5,-2\r\n"                 # too few fields
            b"3,4000,1.5,abc,3\r\n"              # not a number
            b"#\x00\xff garbage\r\n"
            b"4,5000,1.5,-2,3,4\n"               # too many fields
            b"-1,6000,1,2,3\n"                   # negative counter
            b"7,8000,0.25,0.5,0.75\r\n")
    p = CsvParser(3)
    out = p.feed(data)
    assert out == [Frame(0, 1_000_000, (1.5, -2.0, 300.0)), Frame(1, 2_000_000, (1.5, -2.0, 300.0)),
                   Frame(7, 8_000_000, (0.25, 0.5, 0.75))]
    assert p.parse_errors == 5
    assert (p.counter_gaps, p.frames_missed) == (1, 5)
    assert p.buffered == 0


def test_csv_round_trip_keeps_float32_values() -> None:
    frames = frames_for(list(range(20)), 24)
    data = b"".join(encode_csv(*wire(f)) for f in frames)
    got = CsvParser(24).feed(data)
    assert [(g.counter, g.device_ns) for g in got] == [(f.counter, f.device_ns) for f in frames]
    assert all(tuple(map(f32, g.values)) == f.values for g, f in zip(got, frames))


def test_csv_overlong_line_is_discarded_and_counted_once() -> None:
    p = CsvParser(2, max_line=100)
    assert p.feed(b"1,2,3,4\n" + b"9" * 80) == [Frame(1, 2000, (3.0, 4.0))]
    for _ in range(50):  # keeps coming without a newline: the buffer must not grow
        assert p.feed(b"9" * 80) == []
        assert p.buffered <= 100
    assert p.feed(b"99\n5,6,7,8\n") == [Frame(5, 6000, (7.0, 8.0))]
    assert p.parse_errors == 1
    # the same bytes in one piece give the same result
    q = CsvParser(2, max_line=100)
    both = [Frame(1, 2000, (3.0, 4.0)), Frame(5, 6000, (7.0, 8.0))]
    assert q.feed(b"1,2,3,4\n" + b"9" * 80 * 51 + b"99\n5,6,7,8\n") == both
    assert q.stats() == p.stats()


def test_csv_skip_partial_drops_the_first_line() -> None:
    p = make_parser({"protocol": "csv", "channels": 2}, skip_partial=True)
    assert p.feed(b"4,56780000,1,2\n5,") == []
    assert p.feed(b"1000,1,2\n") == [Frame(5, 1_000_000, (1.0, 2.0))]
    assert p.parse_errors == 0


def test_make_parser_refuses_unknown_protocol() -> None:
    with pytest.raises(ValueError, match="unknown serial protocol"):
        make_parser({"protocol": "json", "channels": 3})


# --- fuzz: never raises, chunking does not matter ----------------------------------------------------

def _material(protocol: str) -> st.SearchStrategy[bytes]:
    encode = encode_binary if protocol == "binary" else encode_csv
    frame = st.builds(lambda c, t, v: encode(c, t, v),
                      st.integers(0, 2**32 - 1), st.integers(0, 2**63),
                      st.lists(st.floats(-1e6, 1e6, width=32), min_size=3, max_size=3))
    junk = st.binary(max_size=60)
    mangled = st.tuples(frame, st.integers(0, 200), st.integers(0, 255)).map(
        lambda t: t[0][:t[1]] + bytes([t[2]]) + t[0][t[1] + 1:])
    return st.lists(st.one_of(frame, junk, mangled, st.just(b"\r\n"), st.just(MAGIC)), max_size=40).map(b"".join)


@pytest.mark.parametrize("protocol", ["binary", "csv"])
@pytest.mark.parametrize("channels", [3, None])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_fuzz_chunking_never_matters(protocol: str, channels: int | None, data: st.DataObject) -> None:
    stream = data.draw(_material(protocol))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    whole = make_parser({"protocol": protocol, "channels": channels})
    expected = whole.feed(stream)
    chunked = make_parser({"protocol": protocol, "channels": channels})
    got: list[Frame] = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)]):
        got += chunked.feed(stream[a:b])
    assert list(map(repr, got)) == list(map(repr, expected))  # repr: a NaN value equals itself
    assert chunked.stats() == whole.stats()
    assert chunked.buffered == whole.buffered
    assert all(len(f.values) == 3 for f in got) or channels is None

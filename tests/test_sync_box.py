"""The sync box: its protocol on bytes, the round-trip clock fit, the emulator on a real pty read through the
real driver, and takes recorded with a box (slates fired by the box, seen in every stream)."""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from improvcap.devices import Device, make_device
from improvcap.devices.sync_demo import DemoSyncBox
from improvcap.devices.sync_emulator import BOOT_NS, SyncBoxEmulator
from improvcap.devices.sync_serial import SEED_ROUND_TRIPS, SerialSyncBox
from improvcap.errors import DeviceError, RigError
from improvcap.protocols.syncbox import (MAX_MESSAGE, Fired, Identify, Identity, Pulse, Query, Reply, Slate,
                                         SyncParser, Trigger, encode, identify)
from improvcap.recorder import Recorder
from improvcap.rig import StreamSpec, parse_rig
from improvcap.roundtrip import RoundTrip, RoundTripClock, fit_roundtrips
from improvcap.take.refit import fit_roundtrips_file
from improvcap.slates import detect_take
from improvcap.take.tables import read_table

from helpers import collect, demo_rig, fit_bound_ns, sync_spec, table, write_rig


MESSAGES = [Query(1), Slate(7), Trigger(33_333), Identify(), Reply(1, 2, 1_000_000), Pulse(5, 123),
            Fired(7, 99), Identity(1, 1_000_000, "box")]


# --- protocol ------------------------------------------------------------------------------------

def test_check_vectors() -> None:
    assert encode(Identify()) == bytes.fromhex("AA 55 49 00 B7")
    assert encode(Query(1)) == bytes.fromhex("AA 55 51 02 01 00 AC")
    assert encode(Reply(1, 2, 1_000_000)) == bytes.fromhex("AA 55 52 0E 01 00 02 00 00 00 40 42 0F 00 00 00 00 00 0C")
    assert encode(Slate(7)) == bytes.fromhex("AA 55 53 02 07 00 A4")
    assert encode(Trigger(33_333)) == bytes.fromhex("AA 55 54 04 35 82 00 00 F1")
    assert encode(Pulse(5, 123)) == bytes.fromhex("AA 55 50 0C 05 00 00 00 7B 00 00 00 00 00 00 00 24")
    assert encode(Fired(7, 99)) == bytes.fromhex("AA 55 46 0A 07 00 63 00 00 00 00 00 00 00 46")
    assert encode(Identity(1, 1_000_000, "box")) == bytes.fromhex("AA 55 56 08 01 40 42 0F 00 62 6F 78 C7")
    for m in MESSAGES:
        raw = encode(m)
        assert sum(raw[2:]) % 256 == 0  # every byte after the preamble, sum included, sums to zero
        assert SyncParser().feed(raw) == [m]


def test_fields_out_of_range_are_refused() -> None:
    for bad in (Query(65536), Trigger(-1), Reply(1, 2**32, 0), Identity(1, 1, "é"), Identity(1, 1, "x" * 65)):
        with pytest.raises(ValueError):
            encode(bad)


def test_resync_after_garbage_corruption_and_truncation() -> None:
    good = [Reply(3, 10, 5_000_000), Pulse(11, 5_010_000), Fired(2, 5_020_000), Identity(2, 1_000_000, "b")]
    flipped = bytearray(encode(Reply(4, 10, 6_000_000)))
    flipped[9] ^= 0x10                                              # a payload bit: the sum fails
    unknown = b"\x7a\x03abc"                                        # a newer message type, sum fine
    unknown = b"\xaa\x55" + unknown + bytes([-sum(unknown) & 0xFF])
    stream = (b"\x00\xaa\x55\x51\x07junk"                           # false preamble: Q with an impossible length
              + encode(good[0])
              + b"\xaa\x55\x52\x0e\x01"                             # false preamble: an R cut short
              + encode(good[1])
              + bytes(flipped)
              + unknown
              + encode(good[2])
              + encode(Identity(1, 1, "ok"))[:-4] + b"\x01\x02\x03\x04"  # truncated identity, then junk
              + encode(good[3]) + b"\xaa")
    parser = SyncParser()
    assert parser.feed(stream) == good
    stats = parser.stats()
    assert stats["messages"] == 4 and stats["pulses"] == 1
    assert stats["crc_errors"] >= 2 and stats["parse_errors"] >= 1 and stats["unknown_messages"] == 1
    assert parser.buffered == 1  # a trailing first half of a preamble waits for the next chunk
    # byte by byte: the same
    bytewise = SyncParser()
    assert [m for b in stream for m in bytewise.feed(bytes([b]))] == good
    assert bytewise.stats() == stats


def test_pulse_count_gaps_and_wrap_are_counted() -> None:
    parser = SyncParser()
    counts = [2**32 - 2, 2**32 - 1, 0, 1, 4, 5]  # through the u32 wrap, then 2 and 3 lost
    parser.feed(b"".join(encode(Pulse(c, 1000 * i)) for i, c in enumerate(counts)))
    assert parser.stats()["pulse_gaps"] == 1 and parser.stats()["pulses_missed"] == 2


_message = st.one_of(
    st.builds(Query, st.integers(0, 65535)), st.builds(Slate, st.integers(0, 65535)),
    st.builds(Trigger, st.integers(0, 2**32 - 1)), st.just(Identify()),
    st.builds(Reply, st.integers(0, 65535), st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)),
    st.builds(Pulse, st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)),
    st.builds(Fired, st.integers(0, 65535), st.integers(0, 2**64 - 1)),
    st.builds(Identity, st.integers(0, 255), st.integers(0, 2**32 - 1),
              st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=64)),
)
_raw = _message.map(encode)


def _material() -> st.SearchStrategy[bytes]:
    mangled = st.tuples(_raw, st.integers(0, 80), st.integers(0, 255)).map(
        lambda t: t[0][:t[1]] + bytes([t[2]]) + t[0][t[1] + 1:])
    cut = st.tuples(_raw, st.integers(0, 80)).map(lambda t: t[0][:t[1]])
    return st.lists(st.one_of(_raw, st.binary(max_size=60), mangled, cut, st.just(b"\xaa\x55"), st.just(b"\xaa")),
                    max_size=40).map(b"".join)


@settings(max_examples=200, deadline=None, database=None)
@given(data=st.data())
def test_fuzz_never_raises_is_chunking_independent_and_invents_nothing(data: st.DataObject) -> None:
    stream = data.draw(_material())
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    whole = SyncParser()
    expected = whole.feed(stream)
    chunked = SyncParser()
    got = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)]):
        got += chunked.feed(stream[a:b])
        assert chunked.buffered < MAX_MESSAGE
    assert got == expected
    assert chunked.stats() == whole.stats() and chunked.buffered == whole.buffered
    assert all(encode(m) in stream for m in got)  # every message returned was sent whole


@settings(max_examples=150, deadline=None, database=None)
@given(messages=st.lists(_message, max_size=20), junk=st.lists(st.binary(max_size=30), max_size=21))
def test_fuzz_every_intact_message_is_kept(messages: list, junk: list[bytes]) -> None:
    junk = [j.replace(b"\xaa", b"\x55") for j in junk]  # junk without preambles: nothing to mistake
    junk += [b""] * (len(messages) + 1 - len(junk))
    stream = b"".join(j + encode(m) for j, m in zip(junk, messages)) + b"".join(junk[len(messages):])
    assert SyncParser().feed(stream) == messages


@settings(max_examples=100, deadline=None, database=None)
@given(st.binary(max_size=2000))
def test_fuzz_random_bytes(stream: bytes) -> None:
    parser = SyncParser()
    out = parser.feed(stream)
    assert parser.buffered < MAX_MESSAGE
    assert all(encode(m) in stream for m in out)


# --- the round-trip clock fit, alone --------------------------------------------------------------

def _round_trips(seconds: float, hz: float, drift_ppm: float, jitter_ns: float, seed: int = 1,
                 host0: int = 7_000_000_000_000, boot: int = 10**15):
    """Synthetic round trips: the box reads its clock at host time h, T = boot + (h - host0)(1 + drift)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * hz)
    h = host0 + np.arange(n) * int(1e9 / hz) + rng.integers(0, 1_000_000, n)
    t1 = h - 60_000 - rng.exponential(10_000, n).astype(np.int64)
    t2 = h + 60_000 + rng.exponential(10_000, n).astype(np.int64) + rng.exponential(jitter_ns, n).astype(np.int64)
    box = boot + np.rint((h - host0) * (1 + drift_ppm * 1e-6)).astype(np.int64)
    return t1, t2, box, h


def test_fit_recovers_offset_and_drift_from_jittery_round_trips() -> None:
    t1, t2, box, h = _round_trips(60, 20, drift_ppm=50.0, jitter_ns=2e6)
    fit = fit_roundtrips(t1, t2, box)
    err = fit.map(box) - h
    assert np.abs(err).max() < 100_000               # within 0.1 ms over a minute, with 2 ms of reply jitter
    assert fit.drift_ppm == pytest.approx(50.0, abs=1.0)
    assert fit.n == len(box) and fit.used + fit.rejected == 60 and fit.used >= 55 and fit.rtt_min_ns >= 120_000
    d = fit.as_dict()
    assert d["offset_ns"] == fit.offset_ns and d["rtt_median_ns"] > 2 * d["rtt_min_ns"] and d["resets"] == 0
    # a least-squares fit on all midpoints (no RTT selection) is far worse: the selection matters
    mid = (t1 + t2) // 2
    naive = np.polyval(np.polyfit((box - box[0]).astype(float), (mid - h[0]).astype(float), 1),
                       (box - box[0]).astype(float)) + h[0] - h
    assert np.abs(naive).max() > 5 * np.abs(err).max()


def test_fit_is_exact_without_jitter_at_large_epochs() -> None:
    h = 9_000_000_000_000 + np.arange(200) * 50_000_000
    box = 2**62 + np.rint((h - h[0]) * (1 - 120e-6)).astype(np.int64)
    fit = fit_roundtrips(h - 100_000, h + 100_000, box)
    assert np.abs(fit.map(box) - h).max() <= 2
    assert fit.drift_ppm == pytest.approx(-120.0, abs=1e-3)


def test_fit_edge_cases() -> None:
    with pytest.raises(ValueError, match="no round trips"):
        fit_roundtrips([], [], [])
    with pytest.raises(ValueError, match="no round trips"):
        fit_roundtrips([10], [5], [100])  # a reply before its query is no round trip
    one = fit_roundtrips([1000], [3000], [50])
    assert one.drift_ppm == 0.0 and one.map_one(50) == 2000 and one.used == 1


def test_one_slow_window_does_not_move_the_fit() -> None:
    t1, t2, box, h = _round_trips(20, 20, drift_ppm=0.0, jitter_ns=100_000)
    slow = (h > h[0] + 10e9) & (h < h[0] + 11e9)
    t2 = t2 + np.where(slow, 30_000_000, 0)  # a whole second of replies 30 ms late (host stalled)
    fit = fit_roundtrips(t1, t2, box)
    assert fit.rejected == 1 and np.abs(fit.map(box) - h).max() < 30_000


def test_live_clock_follows_the_final_fit() -> None:
    t1, t2, box, h = _round_trips(30, 20, drift_ppm=-80.0, jitter_ns=1e6)
    clock = RoundTripClock()
    assert not clock.ready and clock.to_host(123) == 123 and clock.offset_ns is None
    for a, b, c in zip(t1.tolist(), t2.tolist(), box.tolist()):
        clock.add(a, b, c)
    assert clock.ready and clock.count == len(box)
    live = np.array([clock.to_host(int(c)) for c in box])
    assert np.abs(live - h).max() < 100_000
    assert clock.drift_ppm == pytest.approx(-80.0, abs=5.0)


# --- rig -----------------------------------------------------------------------------------------

def test_rig_keys_defaults_and_refusals() -> None:
    spec = sync_spec("serial", port="/dev/ttyUSB0")
    assert (spec.kind, spec.driver) == ("sync", "serial")
    assert spec["baudrate"] == 115200 and spec["trigger_fps"] == 0.0 and spec["query_hz"] == 20.0
    assert spec.nominal_rate == 0.0
    demo = sync_spec(trigger_fps=30, jitter_ms=2, truth=True)
    assert demo.nominal_rate == 30.0 and demo["truth"] is True and demo["drift_ppm"] == 0.0

    def refused(body: str) -> str:
        with pytest.raises(RigError) as e:
            parse_rig('[rig]\nname = "t"\n' + body, Path("r.toml"))
        assert "\n" not in str(e.value)
        return str(e.value)

    box = '[[sync]]\nname = "b"\ndriver = "{}"\n'
    assert "sync[0].port: missing" in refused(box.format("serial"))
    assert "at most one sync box" in refused(box.format("demo") + box.format("demo").replace('"b"', '"a"'))
    assert "sync[0].trigger_fps" in refused(box.format("demo") + "trigger_fps = 2000\nbaudrate = 9600\n")
    assert "sync[0].jitter_ms: unknown key" in refused(box.format("serial") + 'port = "/dev/x"\njitter_ms = 1\n')
    assert "sync[0].query_hz" in refused(box.format("demo") + "query_hz = 0\n")


# --- the emulator on a pty, through the real driver -------------------------------------------------

@pytest.fixture
def boxes():
    """`boxes(spec)` -> (emulator, driver): a powered emulator and a SerialSyncBox on its pty; cleaned up."""
    made: list[tuple[SyncBoxEmulator, SerialSyncBox]] = []

    def make(spec: StreamSpec, start: bool = True) -> tuple[SyncBoxEmulator, SerialSyncBox]:
        emulator = SyncBoxEmulator(spec)
        if start:
            emulator.start()
        made.append((emulator, SerialSyncBox(spec, port=emulator.port_name)))
        return made[-1]

    yield make
    for emulator, driver in made:
        driver.close()
        emulator.close()


def test_every_driver_implements_the_device_protocol() -> None:
    assert isinstance(SerialSyncBox(sync_spec("serial")), Device)
    assert isinstance(DemoSyncBox(sync_spec()), Device)
    assert isinstance(make_device(sync_spec()), DemoSyncBox)


@pytest.mark.slow
def test_clock_fit_within_a_tenth_of_a_millisecond_of_the_truth(boxes) -> None:
    spec = sync_spec(trigger_fps=100, query_hz=100, jitter_ms=2.0, drift_ppm=50.0)
    emulator, box = boxes(spec)
    box.open()
    assert box.identity == Identity(1, 1_000_000, "improvcap syncbox emulator")
    box.start()
    samples = collect(box, 10.0)
    live = [(s, box.to_host(s.device_ns)) for s in samples[-100:] if s.seq is not None]
    box.stop()
    while (s := box.read(0.2)) is not None:  # what arrived before the reader stopped
        samples.append(s)
    trips = [s.payload for s in samples if isinstance(s.payload, RoundTrip)]
    pulses = [s for s in samples if s.seq is not None]
    assert len(trips) > 500 and len(pulses) > 500
    assert all(s.count == 0 for s in samples if isinstance(s.payload, RoundTrip))
    fit = fit_roundtrips([r.host_send_ns for r in trips], [r.host_recv_ns for r in trips], [r.box_ns for r in trips])
    truth = np.array([emulator.pulse_true_ns(p.seq) for p in pulses])
    err = np.array([fit.map_one(p.device_ns) for p in pulses]) - truth
    # the fit's own bound (fit_bound_ns); typically 50-110 µs off against a half RTT of 130-270 µs on an idle
    # machine
    bound = max(150_000, fit_bound_ns(fit))
    assert np.abs(err).max() < bound, \
        f"final fit off by up to {np.abs(err).max() / 1e3:.1f} µs (half RTT {fit.half_rtt_ns / 1e3:.1f} µs)"
    # over 10 s, errors within ±bound leave the slope uncertain by up to 2 × bound / 10 s
    assert fit.drift_ppm == pytest.approx(50.0, abs=max(35.0, 2 * bound / 10e9 * 1e6))
    live_err = np.array([t - emulator.pulse_true_ns(s.seq) for s, t in live])
    assert np.abs(live_err).max() < max(200_000, bound)  # the live fit, late in the run
    # pulses: consecutive counts, 10 ms apart on the box's clock (1 MHz ticks, drift included)
    counts = [p.seq for p in pulses]
    assert counts == list(range(counts[0], counts[0] + len(counts)))
    steps = np.diff([p.device_ns for p in pulses])
    assert set(steps.tolist()) == {10_000_000}
    assert pulses[0].device_ns > BOOT_NS
    stats = box.stats()
    assert stats["round_trips"] == SEED_ROUND_TRIPS + len(trips)  # open() seeds the fit with a few
    assert stats["crc_errors"] == stats["pulse_gaps"] == stats["queries_lost"] == 0


def test_a_box_that_restarts_is_a_fault_and_one_busy_with_its_pulses_is_not(boxes) -> None:
    """A box's replies read its timer now, its pulse messages the edge they report: a box busy with other
    work sends a pulse after a reply read later than its edge, which is no restart (the kinds are compared
    apart). A power cycle steps the timer back for both, and reading the box then fails, naming it."""
    from improvcap.devices.sync_emulator import BOOT_NS

    emulator, box = boxes(sync_spec(query_hz=50, trigger_fps=30))
    box.open()
    box.start()
    assert collect(box, 1.5)
    reply = Reply(1, 10, (BOOT_NS + 3_000_000_000) // 1000)  # read 3 s after boot ...
    pulse = Pulse(11, (BOOT_NS + 1_500_000_000) // 1000)     # ... then a pulse whose edge was 1.5 s before it
    assert box._box_ns(reply) - box._box_ns(pulse) == 1_500_000_000
    emulator.timing.reset()  # power cycled: the timer restarts from its boot reading
    with pytest.raises(DeviceError, match=r"box: the sync box's clock stepped back .* s: the box restarted"):
        collect(box, 5.0)


def test_slate_fires_on_command_and_is_timed_by_the_box(boxes) -> None:
    emulator, box = boxes(sync_spec(query_hz=50, jitter_ms=0.5))
    box.open()
    with pytest.raises(DeviceError, match="not running"):
        box.fire_slate()
    box.start()
    collect(box, 1.0)
    fire = box.fire_slate()
    (sid, true_ns, ticks), = emulator.fired
    assert (fire.id, fire.ticks, fire.box_ns) == (sid, ticks, ticks * 1000)
    assert abs(fire.host_ns - true_ns) < 300_000  # the live fit after one second
    assert box.stats()["slates_fired"] == 1


def test_trigger_period_is_set_on_start_and_stopped_on_stop(boxes) -> None:
    emulator, box = boxes(sync_spec(trigger_fps=50))
    box.open()
    assert emulator.pulse_count == 0  # no pulses before start
    box.start()
    pulses = [s for s in collect(box, 1.0) if s.seq is not None]
    assert 45 <= len(pulses) <= 52 and box.describe()["trigger_period_us"] == 20_000
    box.stop()
    count = emulator.pulse_count
    time.sleep(0.3)
    assert emulator.pulse_count == count  # T 0 stopped the train


@pytest.mark.slow
def test_box_that_goes_silent_is_a_device_failure(boxes) -> None:
    emulator, box = boxes(sync_spec(trigger_fps=30))
    box.open()
    box.start()
    collect(box, 0.5)
    emulator.go_silent()
    silent_at = time.monotonic()
    with pytest.raises(DeviceError, match="stopped answering") as e:
        while time.monotonic() - silent_at < 5:
            box.read(0.1)
    assert 1.5 < time.monotonic() - silent_at < 3.5
    assert "box" in str(e.value) and emulator.port_name in str(e.value)


def test_unplugged_box_fails_at_once(boxes) -> None:
    emulator, box = boxes(sync_spec())
    box.open()
    box.start()
    collect(box, 0.3)
    emulator.vanish()
    with pytest.raises(DeviceError, match="failed|stopped answering"):
        end = time.monotonic() + 3
        while time.monotonic() < end:
            box.read(0.1)


def test_open_failures_are_one_line_naming_the_port(boxes) -> None:
    with pytest.raises(DeviceError) as e:
        SerialSyncBox(sync_spec("serial", port="/dev/ttyUSB97")).open()
    assert str(e.value).startswith("box: cannot open serial port /dev/ttyUSB97") and "\n" not in str(e.value)
    emulator, box = boxes(sync_spec(), start=False)  # a port where nothing answers
    with pytest.raises(DeviceError, match=f"no sync box answers on {emulator.port_name}"):
        box.open()


def test_devices_probe_recognises_a_box(boxes) -> None:
    from improvcap.devices.serial_port import probe_protocol

    emulator, _ = boxes(sync_spec("demo"))
    assert probe_protocol(emulator.port_name) == "syncbox"


def test_identify_ignores_pulses_of_a_box_left_running(boxes) -> None:
    import serial
    emulator, _ = boxes(sync_spec())
    with serial.Serial(emulator.port_name, 115200, timeout=0.05) as port:
        port.write(encode(Trigger(2_000)))  # 500 pulses a second
        time.sleep(0.2)
        assert identify(port) == Identity(1, 1_000_000, "improvcap syncbox emulator")
        port.write(encode(Trigger(0)))


# --- takes ---------------------------------------------------------------------------------------

# Demo twins render a slate only in data they have not delivered yet: a 20 ms pipeline (calibrated
# away by latency_ms) gives the box's confirmation time to reach them.
LATE = {"transport_ms": 20, "latency_ms": 20}  # the demo devices' data reach the host 20 ms after the event
BOXED = demo_rig("boxed", rate=1000, settings={"cam0": LATE, "mic": LATE, "suit": LATE},
                 tables=[table("sync", name="box", driver="demo", trigger_fps=30, query_hz=50, jitter_ms=1,
                               drift_ppm=50, truth=True)])


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_demo_take_slates_through_the_box_land_in_every_stream_and_verify(cli, tmp_path: Path) -> None:
    write_rig(tmp_path, "boxed", BOXED)
    result = cli("record", "boxed", "--out", "out", "--duration", "3", "--slate", "--json")
    assert result.returncode == 0, result.stderr
    take = Path(json.loads(result.stdout)["take"])
    manifest = json.loads((take / "take.json").read_text())
    assert manifest["faults"] == []

    slates = [e for e in csv_rows(take / "events.csv") if e["kind"] == "slate"]
    assert len(slates) == 2 and all(e["stream"] == "box" and e["detail"].startswith("box ticks=") for e in slates)
    onsets = detect_take(take)
    assert set(onsets) == {"cam0", "mic", "suit"}  # the box has no media to search
    # The devices are told of a box slate once the box confirms it fired. The demo devices still hold the
    # 20 ms of data their transport delays, so they mark the slate where it fired (the camera on its first
    # frame exposed after it); a confirmation slower than that (a round trip on the box's link at that
    # moment, which a loaded machine lengthens) reaches them with that moment's data already delivered, and
    # they mark the first data they still hold.
    trips = read_table(take / "box.roundtrips.csv")
    for s in (int(e["t_ns"]) for e in slates):
        around = np.abs(trips["host_send_ns"] - s) < 500_000_000
        late = max(0, int((trips["host_recv_ns"] - trips["host_send_ns"])[around].max()) - 20_000_000)
        limits = {"cam0": (-1e6, 1e9 / 30 + late + 1e6), "mic": (-2e6, late + 2e6), "suit": (-2e6, late + 2e6)}
        for name, (lo, hi) in limits.items():
            near = [o.t_ns - s for o in onsets[name] if abs(o.t_ns - s) < 400_000_000]
            assert len(near) == 1 and lo <= near[0] <= hi, (name, s, near, late)

    # pulses on the host clock from the round-trip fit: against the box's truth
    pulses = read_table(take / "box.csv")
    truth = read_table(take / "box.truth.csv")
    assert list(truth["index"]) == list(pulses["index"]) and len(pulses["index"]) >= 85
    err = np.abs(pulses["t_ns"] - truth["true_t_ns"]).max()
    bound = fit_bound_ns(fit_roundtrips_file(take / "box.roundtrips.csv"))
    assert err < bound, f"pulse t_ns off the truth by up to {err / 1e3:.0f} µs, the fit's bound {bound / 1e3:.0f} µs"
    assert np.array_equal(np.diff(pulses["counter"]), np.ones(len(pulses["counter"]) - 1))
    # the raw round trips are kept: refitting them gives the stored t_ns again
    trips = read_table(take / "box.roundtrips.csv")
    # every query of the take that was answered, one row each (how many the driver sent, 50 a second at
    # most, is up to how busy the machine was), in order
    ids = trips["id"]
    assert len(ids) > 10 and np.all(np.diff(ids) >= 1) and (trips["host_recv_ns"] > trips["host_send_ns"]).all()
    lost = manifest["streams"]["box"]["device_stats"]["queries_lost"]
    assert ids[-1] - ids[0] + 1 - len(ids) <= lost, (len(ids), lost)
    assert -200_000_000 < trips["host_send_ns"][0] < 200_000_000  # since t0, like every host_ns
    fit = fit_roundtrips_file(take / "box.roundtrips.csv")
    assert np.array_equal(fit.map(pulses["device_ns"]), pulses["t_ns"])
    entry = manifest["streams"]["box"]
    assert entry["kind"] == "sync" and entry["count"] == len(pulses["index"]) and entry["dropped"] == 0
    assert entry["clock"]["domain"] == "roundtrip" and entry["clock"]["offset_ns"] == fit.offset_ns
    assert entry["clock"]["rtt_min_ns"] > 0 and entry["clock"]["rtt_median_ns"] >= entry["clock"]["rtt_min_ns"]
    assert {"box.csv", "box.roundtrips.csv", "box.truth.csv"} <= set(manifest["files"])
    assert "box_index" not in (take / "sync.csv").read_text().splitlines()[0]

    verified = cli("verify", str(take), "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = json.loads(verified.stdout)["takes"][0]
    assert report["verdict"] in ("OK", "WARN") and not [r for r in report["reasons"] if r.startswith("FAIL")]
    assert report["streams"]["box"]["round_trips"] == len(trips["id"])
    assert report["streams"]["box"]["clock_domain"] == "roundtrip"
    for name in ("cam0", "mic", "suit"):
        assert all(v is not None for v in report["streams"][name]["slate_offsets_ms"])


SILENT = demo_rig("silent", size=(160, 120), audio=None, mocap_channels=4, settings={"cam0": LATE, "suit": LATE},
                  tables=[table("sync", name="box", driver="demo", trigger_fps=30)])


@pytest.mark.slow
def test_box_going_silent_mid_take_is_a_fault_and_the_others_record_on(tmp_path: Path) -> None:
    rig = parse_rig(SILENT, tmp_path / "silent.toml")
    recorder = Recorder(rig)
    recorder.open()
    try:
        take = recorder.start_take(tmp_path / "out", "s", "scene")
        time.sleep(0.5)
        t = recorder.slate()  # box-timed: its true fire time, on the take's clock
        box = next(r.device for r in recorder.runners if r.spec.kind == "sync")
        (_, true_ns, _), = box.emulator.fired
        assert abs(t - (true_ns - recorder.origin.t0_ns)) < 500_000
        box.emulator.go_silent()
        t_fallback = recorder.slate()  # the box does not confirm: a fault, then a host-timed slate
        time.sleep(3.0)
        manifest = recorder.stop_take()
    finally:
        recorder.close()
    faults = manifest["faults"]
    assert [f["stream"] for f in faults] == ["box", "box"]
    assert "slate not fired" in faults[0]["detail"] and "stopped answering" in faults[1]["detail"]
    assert manifest["streams"]["box"]["state"] == "failed"
    for name, rate in (("cam0", 30), ("suit", 240)):
        entry = manifest["streams"][name]
        assert entry["state"] == "ok" and entry["count"] >= rate * 3.8
    events = csv_rows(take / "events.csv")
    assert [(e["kind"], e["stream"]) for e in events if e["kind"] == "slate"] == [("slate", "box"), ("slate", "")]
    assert int([e for e in events if e["kind"] == "slate"][1]["t_ns"]) == t_fallback
    pulses = read_table(take / "box.csv")
    assert 10 <= len(pulses["index"]) <= 40  # about 0.5 s (+ the slate's wait) of pulses, then nothing


@pytest.mark.slow
def test_take_with_a_box_killed_mid_take_is_repaired_and_refitted(cli, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    from improvcap.repair import repair_take

    write_rig(tmp_path, "boxed", BOXED)
    proc = subprocess.Popen([sys.executable, "-m", "improvcap", "record", "boxed", "--out", "out", "--session", "s"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    take = tmp_path / "out" / "s" / "scene_t001"
    deadline = time.monotonic() + 60
    while not (take / "take.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    time.sleep(3.0)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    with open(take / "box.roundtrips.csv", "a") as fh:
        fh.write("999,12")  # a row torn by the kill
    manifest = repair_take(take)
    entry = manifest["streams"]["box"]
    assert entry["state"] == "ok" and entry["clock"]["domain"] == "roundtrip"
    assert set(entry["files"]) == {"box.csv", "box.roundtrips.csv", "box.truth.csv"}
    pulses = read_table(take / "box.csv")
    assert entry["count"] == len(pulses["index"]) >= 30 and entry["dropped"] == 0
    fit = fit_roundtrips_file(take / "box.roundtrips.csv")
    assert np.array_equal(fit.map(pulses["device_ns"]), pulses["t_ns"])
    truth = read_table(take / "box.truth.csv")
    err = np.abs(pulses["t_ns"] - truth["true_t_ns"][:len(pulses["t_ns"])]).max()
    assert err < fit_bound_ns(fit), f"pulse t_ns after repair off the truth by up to {err / 1e3:.0f} µs"
    verified = cli("verify", str(take), "--json")
    report = json.loads(verified.stdout)["takes"][0]
    assert verified.returncode == 0 and report["verdict"] == "WARN", report["reasons"]

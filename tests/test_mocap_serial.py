"""Serial mocap through a real pseudo-terminal and real pyserial: the emulator, the driver, the demo twin
and the CSV writer."""
from __future__ import annotations

import csv
import os
import struct
import time
from pathlib import Path

import pytest
import serial

from improvcap.clock import now_ns
from improvcap.devices import Device
from improvcap.devices.mocap_demo import DemoMocap
from improvcap.devices.mocap_emulator import BOOT_NS, SPIKE, MocapEmulator
from improvcap.devices.mocap_serial import SerialMocap
from improvcap.devices.serial_port import list_serial_ports, probe_protocol
from improvcap.errors import DeviceError
from improvcap.records import Record
from improvcap.writers.mocap_csv import MocapWriter

from helpers import collect, mocap_spec, run_for


def test_pty_passes_every_byte_unaltered() -> None:
    emulator = MocapEmulator(mocap_spec())
    try:
        payload = bytes(range(256)) * 4 + b"\r\n\r\r\n\n\x03\x04\x11\x13\x1a\x7f"
        with serial.Serial(emulator.port_name, 921600, timeout=0.5) as port:
            assert emulator.write_raw(payload) == len(payload)
            got = b""
            while len(got) < len(payload) and (chunk := port.read(len(payload) - len(got))):
                got += chunk
        assert got == payload
    finally:
        emulator.close()


@pytest.mark.parametrize("protocol", ["binary", "csv"])
def test_frames_arrive_at_rate_with_consecutive_counters(bench, protocol: str) -> None:
    spec = mocap_spec(protocol=protocol)
    first = 2**32 - 120 if protocol == "binary" else 0  # the binary run crosses the u32 wrap
    b = bench(spec, first_counter=first)
    samples = b.run(1.5)
    counters = [s.seq for s in samples]
    # the u32 counter on the wire wraps; the stored counter keeps counting through it
    assert counters == [first + i for i in range(len(samples))]
    assert len(samples) == b.emulator.sent
    # in real time: no frame arrives before the device made it (its rate is the device clock's, below)
    assert samples[-1].host_ns - samples[0].host_ns >= samples[-1].device_ns - samples[0].device_ns - 5_000_000
    # the device clock: frame k at k periods after streaming began, counted from the device's boot
    assert samples[0].device_ns == pytest.approx(BOOT_NS, abs=1000)
    steps = [b.device_ns - a.device_ns for a, b in zip(samples, samples[1:])]
    assert max(steps) - min(steps) <= 2000 and sum(steps) / len(steps) == pytest.approx(1e9 / 240, rel=1e-5)
    assert all(len(s.payload.values) == 24 and all(abs(v) <= 45.0 for v in s.payload.values) for s in samples)
    assert all(s.payload.counter == s.seq for s in samples)
    stats = b.driver.stats()
    assert stats["frames"] == len(samples)
    assert (stats["crc_errors"], stats["parse_errors"], stats["counter_gaps"], stats["overflows"]) == (0, 0, 0, 0)


def test_drifting_device_clock_runs_the_host_rate_off_nominal(bench) -> None:
    b = bench(mocap_spec(drift_ppm=10_000.0))  # 1 % fast: 242.4 frames per host second
    samples = b.run(3.0)
    span = (samples[-1].host_ns - samples[0].host_ns) / 1e9
    # over 3 s, a few ms of scheduling delay on the first or last arrival stay well inside 0.5 %
    assert (len(samples) - 1) / span == pytest.approx(240 * 1.01, rel=0.005)
    device_span = (samples[-1].device_ns - samples[0].device_ns) / 1e9
    assert (len(samples) - 1) / device_span == pytest.approx(240, rel=1e-4)  # the device believes in 240 Hz


@pytest.mark.parametrize("protocol", ["binary", "csv"])
def test_corrupted_stream_keeps_intact_frames_and_counts_the_rest(bench, protocol: str) -> None:
    b = bench(mocap_spec(protocol=protocol), corrupt_every=7, garbage_every=5)
    samples = b.run(1.2)
    sent = b.emulator.sent
    assert b.emulator.corrupted == sent // 7 > 10
    expected = [c for c in range(sent) if (c + 1) % 7 != 0]
    assert [s.seq for s in samples] == expected
    stats = b.driver.stats()
    if protocol == "binary":
        assert stats["crc_errors"] == b.emulator.corrupted
        assert stats["bytes_skipped"] >= b.emulator.garbage_bytes
    else:
        assert stats["parse_errors"] == b.emulator.corrupted + b.emulator.garbage_runs
    lost_inside = sum(1 for c in range(sent - 1) if (c + 1) % 7 == 0)  # a damaged last frame shows no gap
    assert stats["counter_gaps"] == stats["frames_missed"] == lost_inside


def test_demo_mocap_slate_spikes_every_channel_at_the_slate_time() -> None:
    spec = mocap_spec(transport_ms=3.0, jitter_ms=0.5, drift_ppm=300.0)
    device = DemoMocap(spec)
    assert isinstance(device, Device)
    try:
        device.open()
        info = device.describe()
        assert info["emulated"] is True and info["pty"].startswith("/dev/pts/") and os.path.exists(info["pty"])
        assert info["channel_names"][0] == "ch00" and info["channel_names"][-1] == "ch23"
        device.start()
        time.sleep(0.2)
        slate_ns = now_ns() + 300_000_000
        device.slate(slate_ns)
        samples = collect(device, 1.0)
        device.stop()
    finally:
        device.close()
    assert all(s.true_ns is not None for s in samples)
    # every frame reaches the host after it happened plus the transport delay
    assert min(s.host_ns - s.true_ns for s in samples) >= 3_000_000
    spikes = [s for s in samples if all(v == SPIKE for v in s.payload.values)]
    assert len(spikes) == 2 and spikes[1].seq == spikes[0].seq + 1
    first = spikes[0]
    assert 0 <= first.true_ns - slate_ns < 1e9 / 240 + 1
    assert abs(first.host_ns - slate_ns) < 30_000_000
    before = next(s for s in samples if s.seq == first.seq - 1)
    assert before.true_ns < slate_ns and max(map(abs, before.payload.values)) <= 45.0
    assert device.stats()["frames"] >= len(samples)


def test_demo_mocap_drops_show_as_counter_gaps() -> None:
    samples, stats = run_for(DemoMocap(mocap_spec(drop_rate=0.05)), 1.0)
    counters = [s.seq for s in samples]
    missing = counters[-1] - counters[0] + 1 - len(counters)
    assert missing > 0
    assert stats["frames_missed"] == missing
    assert stats["emulator_dropped"] >= missing
    assert stats["crc_errors"] == 0


def test_port_vanishing_mid_take_raises_device_error(bench) -> None:
    b = bench(mocap_spec())
    b.driver.open()
    b.driver.start()
    b.emulator.start()
    got = collect(b.driver, 0.4)
    b.emulator.vanish()  # the cable is pulled
    with pytest.raises(DeviceError) as failure:
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            if b.driver.read(0.2) is not None:
                got.append(None)
    message = str(failure.value)
    assert "\n" not in message and message.startswith(f"suit: serial port {b.emulator.port_name} failed: ")
    assert 80 <= len(got) <= 110  # the frames sent before the cable was pulled were all delivered
    b.driver.stop()


def test_opening_a_missing_port_is_one_clear_line() -> None:
    device = SerialMocap(mocap_spec("serial", port="/dev/ttyIMPROVCAP404"))
    assert isinstance(device, Device)
    with pytest.raises(DeviceError) as failure:
        device.open()
    assert str(failure.value) == "suit: cannot open serial port /dev/ttyIMPROVCAP404: No such file or directory"
    device.close()  # safe after a failed open
    with pytest.raises(DeviceError, match="^suit: cannot open serial port /dev/null: not a serial device$"):
        SerialMocap(mocap_spec("serial", port="/dev/null")).open()


def test_a_port_already_in_use_is_refused() -> None:
    emulator = MocapEmulator(mocap_spec())
    first = SerialMocap(mocap_spec("serial"), port=emulator.port_name)
    try:
        first.open()
        with pytest.raises(DeviceError, match="in use by another program"):
            SerialMocap(mocap_spec("serial"), port=emulator.port_name).open()
    finally:
        first.close()
        emulator.close()


def test_list_serial_ports_shape() -> None:
    ports = list_serial_ports()
    assert isinstance(ports, list)
    for p in ports:
        assert set(p) == {"device", "description", "vid_pid", "serial_number", "manufacturer", "protocol"}
        assert p["protocol"] is None or p["vid_pid"] is not None  # only USB adapters are probed
        assert p["device"].startswith("/dev/")
        assert p["vid_pid"] is None or len(p["vid_pid"]) == 9 and p["vid_pid"][4] == ":"


def test_mocap_writer_output_reads_back(tmp_path: Path) -> None:
    spec = mocap_spec(channels=6, protocol="binary")
    device = DemoMocap(spec)
    try:
        device.open()
        info = device.describe()
        device.start()
        samples = collect(device, 0.5)
        device.stop()
    finally:
        device.close()
    t0 = samples[0].host_ns
    writer = MocapWriter(tmp_path, spec, info)
    for i, s in enumerate(samples):
        writer.write(Record(stream="suit", index=i, t_ns=s.host_ns - t0, device_ns=s.device_ns,
                            host_ns=s.host_ns - t0, payload=s.payload, seq=s.seq))
    writer.flush()
    writer.close()
    assert writer.files == [tmp_path / "suit.csv"]
    with open(tmp_path / "suit.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["index", "t_ns", "device_ns", "host_ns", "counter", *(f"ch{i:02d}" for i in range(6))]
    assert len(rows) - 1 == len(samples) > 100
    for row, s in zip(rows[1:], samples):
        assert int(row[2]) == s.device_ns and int(row[4]) == s.seq
        # '%.9g' gives back exactly the float32 the device sent
        assert tuple(struct.unpack("<f", struct.pack("<f", float(v)))[0] for v in row[5:]) == s.payload.values
    with pytest.raises(FileExistsError):
        MocapWriter(tmp_path, spec, info)



@pytest.mark.parametrize("protocol", ["xsens", "vectornav", "binary"])
def test_probe_names_the_protocol_a_port_answers(protocol: str) -> None:
    """`improvcap devices` asks each port harmless questions; a streaming binary suit answers none."""
    spec = mocap_spec(protocol=protocol)
    emulator = MocapEmulator(spec)
    try:
        emulator.start()
        assert probe_protocol(emulator.port_name) == (None if protocol == "binary" else protocol)
    finally:
        emulator.close()


def test_probe_of_a_missing_port_is_none() -> None:
    assert probe_protocol("/dev/does-not-exist") is None


@pytest.mark.parametrize("protocol", ["binary", "xsens"])
def test_a_device_that_stops_sending_is_a_device_failure(bench, protocol: str) -> None:
    """The port stays open but nothing comes: after SILENCE_S the driver raises, so the recorder logs a
    fault for this stream while the others record on."""
    from improvcap.devices.mocap_serial import SILENCE_S

    b = bench(mocap_spec(protocol=protocol))
    b.driver.open()
    b.driver.start()
    b.emulator.start()
    assert collect(b.driver, 0.5)
    b.emulator.stop()
    stopped = time.monotonic()
    with pytest.raises(DeviceError, match=r"^suit: no data from serial port .* the device stopped answering$"):
        while time.monotonic() - stopped < SILENCE_S + 3.0:
            b.driver.read(0.2)
    assert SILENCE_S <= time.monotonic() - stopped < SILENCE_S + 1.0

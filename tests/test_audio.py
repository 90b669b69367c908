"""Audio: PortAudio input through a real PulseAudio daemon, the demo twin, and the BWF writer."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from improvcap.devices import Device, driver_class
from improvcap.devices.audio_demo import DemoAudio
from improvcap.devices.audio_portaudio import PortAudioInput, list_audio_inputs
from improvcap.errors import DeviceError
from improvcap.records import Record, Sample
from improvcap.registry import DRIVERS
from improvcap.rig import StreamSpec
from improvcap.writers.audio import AudioWriter
from improvcap.take.wav import WavWriter, read_wav, repair_wav_header, wav_info

from helpers import audio_spec, collect_frames


SR = 48000


def write_take(tmp_path: Path, spec: StreamSpec, info: dict, samples: list[Sample]) -> AudioWriter:
    """Feed samples to an AudioWriter as the recorder does (t_ns, host_ns since t0)."""
    t0 = samples[0].host_ns
    writer = AudioWriter(tmp_path, spec, info)
    index = 0
    for s in samples:
        writer.write(Record(spec.name, index, s.host_ns - t0, s.device_ns, s.host_ns - t0, s.payload, s.count))
        index += s.count
    writer.close()
    return writer


def blocks_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def ffprobe(path: Path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


def test_audio_drivers_implement_the_device_protocol():
    for (kind, driver) in [k for k in DRIVERS if k[0] == "audio"]:
        dev = driver_class(kind, driver)(audio_spec(driver))
        assert isinstance(dev, Device)


# --- PortAudio through PulseAudio ----------------------------------------------------------------

def test_list_audio_inputs_sees_the_pulse_devices(pulse_server):
    names = {d["name"] for d in list_audio_inputs()}
    assert {"pulse", "default"} <= names
    d = next(d for d in list_audio_inputs() if d["name"] == "pulse")
    assert d["max_input_channels"] > 0 and d["hostapi"] == "ALSA" and isinstance(d["index"], int)


@pytest.mark.parametrize("device", ["pulse", "default"])
def test_portaudio_records_the_sine_source_into_a_bwf(pulse_server, tmp_path: Path, device: str):
    spec = audio_spec("portaudio", device=device, channels=2, samplerate=SR)
    dev = PortAudioInput(spec)
    dev.open()
    try:
        info = dev.describe()
        dev.start()
        # module-sine-source hands over ~2 s at once, then pauses ~2 s
        samples = collect_frames(dev, 2 * SR, timeout=8.0)
        dev.stop()
    finally:
        dev.close()
    assert info["device"] == device and info["samplerate"] == SR and info["channels"] == 2
    assert info["dtype"] == "int32" and info["sample_format"] == "s24"
    total = sum(s.count for s in samples)
    assert total >= 2 * SR
    assert all(s.count == 480 and s.payload.data.shape == (480, 2) for s in samples)
    # the device clock is the sample counter, counted from the first block
    assert [s.device_ns for s in samples] == [round(i * 480 * 1e9 / SR) for i in range(len(samples))]
    adc = [s.payload.adc_ns for s in samples]
    # raw and host-API specific (the wall clock here, not even monotonic at a stream's start): only stored
    assert all(a is not None and a > 0 for a in adc)
    assert dev.stats()["blocks"] >= len(samples) and dev.stats()["buffer_overflows"] == 0

    writer = write_take(tmp_path, spec, {**info, "time_reference": 123_456_789}, samples)
    wav, log = tmp_path / "room.wav", tmp_path / "room.blocks.csv"
    assert writer.files == [wav, log]
    rows = blocks_csv(log)
    assert list(rows[0]) == ["first_sample", "t_ns", "device_ns", "host_ns", "frames", "adc_ns"]
    assert sum(int(r["frames"]) for r in rows) == total == wav_info(wav)["frames"]
    assert [int(r["first_sample"]) for r in rows] == list(range(0, total, 480))
    assert int(rows[-1]["adc_ns"]) == adc[-1]

    meta = wav_info(wav)
    assert (meta["format"], meta["bits"], meta["channels"], meta["rate"]) == ("pcm", 24, 2, SR)
    assert meta["header_complete"] and meta["time_reference"] == 123_456_789 and "room" in meta["description"]
    data = read_wav(wav)
    for ch in range(2):
        assert abs(peak_hz(data[:, ch], SR) - 440.0) < 1.0
    assert 0.45 < np.abs(data).max() < 0.55  # the sine source's amplitude is 0.5

    probe = ffprobe(wav)
    stream = probe["streams"][0]
    assert stream["codec_name"] == "pcm_s24le" and stream["sample_rate"] == str(SR) and stream["channels"] == 2
    assert float(stream["duration"]) == pytest.approx(total / SR, abs=1e-3)
    assert probe["format"]["tags"]["time_reference"] == "123456789"


def test_portaudio_open_errors_are_one_line(pulse_server):
    dev = PortAudioInput(audio_spec("portaudio", name="mic", device="no-such-interface"))
    with pytest.raises(DeviceError) as e:
        dev.open()
    msg = str(e.value)
    assert msg.startswith("mic: cannot open audio input 'no-such-interface': ") and "\n" not in msg
    dev.close()  # safe after a failed open

    dev = PortAudioInput(audio_spec("portaudio", name="mic", device="pulse", channels=64))
    with pytest.raises(DeviceError, match=r"^mic: cannot open audio input 'pulse': .*channels") as e:
        dev.open()
    assert "\n" not in str(e.value)
    dev.close()


@pytest.mark.parametrize("sample_format", ["s16", "f32"])
def test_portaudio_sample_formats(pulse_server, tmp_path: Path, sample_format: str):
    spec = audio_spec("portaudio", device="pulse", channels=1, sample_format=sample_format)
    dev = PortAudioInput(spec)
    dev.open()
    try:
        dev.start()
        samples = collect_frames(dev, SR // 2, timeout=8.0)
    finally:
        dev.close()
    assert samples[0].payload.data.dtype == {"s16": np.int16, "f32": np.float32}[sample_format]
    write_take(tmp_path, spec, dev.describe(), samples)
    data = read_wav(tmp_path / "room.wav")
    assert wav_info(tmp_path / "room.wav")["sample_format"] == sample_format
    assert abs(peak_hz(data[:, 0], SR) - 440.0) < 2.0 and 0.45 < np.abs(data).max() < 0.55


# --- the demo twin ------------------------------------------------------------------------------

def test_demo_delivers_blocks_in_real_time():
    """A second of sound in 100 blocks, not sooner than a second (its CPU cost is bench/demo_devices.py's)."""
    spec = audio_spec("demo", channels=4, transport_ms=3.0)
    dev = DemoAudio(spec)
    dev.open()
    wall0 = time.monotonic()
    dev.start()
    try:
        samples = collect_frames(dev, SR, timeout=30.0)
    finally:
        dev.stop()
        dev.close()
    wall = time.monotonic() - wall0
    assert sum(s.count for s in samples) == SR and len(samples) == 100
    assert wall > 0.95  # paced by its clock (at most the first block's transport early)
    for s in samples:
        assert s.payload.data.shape == (480, 4) and s.payload.data.dtype == np.float32
        # delivered after the block's last sample was captured, plus the transport delay
        assert s.host_ns >= s.true_ns + round(479 * 1e9 / SR) + 3_000_000
    data = np.concatenate([s.payload.data for s in samples])
    assert [round(peak_hz(data[:, c], SR)) for c in range(4)] == [440, 550, 660, 770]
    level_dbfs = 20 * np.log10(np.abs(data).max(axis=0))
    assert np.all(np.abs(level_dbfs + 12) < 0.5)


def test_demo_slate_beeps_at_the_exact_sample():
    drift_ppm = 250.0
    dev = DemoAudio(audio_spec("demo", channels=2, drift_ppm=drift_ppm, jitter_ms=2.0))
    dev.open()
    dev.start()
    try:
        at = time.monotonic_ns() + 300_000_000
        dev.slate(at)
        samples = collect_frames(dev, SR // 2 + 4800, timeout=3.0)
    finally:
        dev.close()
    origin = samples[0].true_ns  # sample 0 was captured at the device's origin

    def true_ns(k: int) -> int:
        return origin + round(k * 1e9 / SR / (1 + drift_ppm * 1e-6))

    assert [s.true_ns for s in samples] == [true_ns(round(s.device_ns * SR / 1e9)) for s in samples]
    data = np.concatenate([s.payload.data for s in samples])
    loud = np.abs(data) > 0.6  # the tone peaks at 0.25; the beep starts at 0.9
    for ch in range(2):
        k = int(np.argmax(loud[:, ch]))
        assert loud[k, ch] and true_ns(k) >= at > true_ns(k - 1), (k, true_ns(k) - at)
        burst = data[k:k + 2400, ch]
        assert abs(peak_hz(burst, SR) - 1500) < 300 and np.abs(burst).max() > 0.85
        assert not loud[k + 2400:, ch].any()  # 50 ms, then the tone again


def test_demo_drops_leave_a_gap_in_the_counter_not_in_the_file(tmp_path: Path):
    spec = audio_spec("demo", channels=2, drop_rate=0.2, sample_format="s16")
    dev = DemoAudio(spec)
    dev.open()
    dev.start()
    try:
        samples = collect_frames(dev, SR // 2, timeout=3.0)
    finally:
        dev.close()
    firsts = [round(s.device_ns * SR / 1e9) for s in samples]
    gaps = sum(b - a - 480 for a, b in zip(firsts, firsts[1:]))
    assert gaps > 0 and gaps % 480 == 0 and dev.stats()["dropped_blocks"] >= gaps // 480

    # the writer numbers samples by what it wrote, whatever index it is handed
    writer = AudioWriter(tmp_path, spec, dev.describe())
    for s in samples:
        writer.write(Record("room", 999, 0, s.device_ns, 0, s.payload, s.count))
    writer.close()
    rows = blocks_csv(tmp_path / "room.blocks.csv")
    written = sum(s.count for s in samples)
    assert [int(r["first_sample"]) for r in rows] == list(range(0, written, 480))
    assert [int(r["device_ns"]) for r in rows] == [s.device_ns for s in samples]
    assert all(r["adc_ns"] == "" for r in rows)
    assert wav_info(tmp_path / "room.wav")["frames"] == written


# --- the WAV writer -----------------------------------------------------------------------------

def tone(frames: int, channels: int) -> np.ndarray:
    t = np.arange(frames)[:, None] / SR
    return (0.5 * np.sin(2 * np.pi * 440 * t * (1 + np.arange(channels)))).astype(np.float32)


@pytest.mark.parametrize("sample_format,codec,bits", [("s16", "pcm_s16le", 16), ("s24", "pcm_s24le", 24),
                                                      ("f32", "pcm_f32le", 32)])
@pytest.mark.parametrize("source", ["float32", "int16", "int32"])
def test_formats_round_trip(tmp_path: Path, sample_format: str, codec: str, bits: int, source: str):
    x = tone(4801, 3)  # odd frame count: an odd-sized s24 mono/3-ch data chunk needs its pad byte
    block = {"float32": x, "int16": np.round(x * 32767).astype(np.int16),
             "int32": (np.round(x * 8388607).astype(np.int32) << 8)}[source]
    path = tmp_path / "x.wav"
    w = WavWriter(path, 3, SR, sample_format, description="x", time_reference=SR * 3600)
    for i in range(0, len(block), 480):
        w.write(block[i:i + 480])
    w.close()
    meta = wav_info(path)
    assert (meta["sample_format"], meta["bits"], meta["channels"], meta["frames"]) == (sample_format, bits, 3, 4801)
    assert meta["header_complete"] and meta["time_reference"] == SR * 3600
    tolerance = {"s16": 2 / 32768, "s24": 2 / 8388608, "f32": 1e-7}[sample_format]
    if source == "int16":
        tolerance = max(tolerance, 1 / 32768)
    assert np.abs(read_wav(path) - x).max() <= tolerance + 1e-6
    probe = ffprobe(path)
    s = probe["streams"][0]
    assert (s["codec_name"], s["sample_rate"], s["channels"], s["duration_ts"]) == (codec, str(SR), 3, 4801)
    assert probe["format"]["tags"]["time_reference"] == str(SR * 3600)
    assert probe["format"]["tags"]["creation_time"]  # bext OriginationTime


def test_float_input_is_clipped(tmp_path: Path):
    path = tmp_path / "clip.wav"
    w = WavWriter(path, 1, SR, "s24")
    w.write(np.array([[2.0], [-2.0], [1.0], [-1.0]], dtype=np.float32))
    w.close()
    raw = path.read_bytes()[wav_info(path)["data_offset"]:][:12]
    assert raw == bytes.fromhex("ffff7f" "000080" "ffff7f" "000080")


def test_never_overwrites(tmp_path: Path):
    (tmp_path / "room.wav").write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        AudioWriter(tmp_path, audio_spec("demo"), {})
    assert (tmp_path / "room.wav").read_bytes() == b"precious"
    (tmp_path / "room.wav").unlink()
    (tmp_path / "room.blocks.csv").write_text("precious")
    with pytest.raises(FileExistsError):
        AudioWriter(tmp_path, audio_spec("demo"), {})
    assert (tmp_path / "room.blocks.csv").read_text() == "precious"


def test_repair_after_a_crash(tmp_path: Path):
    x = tone(SR * 2, 2)
    path, crashed = tmp_path / "live.wav", tmp_path / "crashed.wav"
    w = WavWriter(path, 2, SR, "s24", time_reference=42)
    for i in range(0, SR, 480):
        w.write(x[i:i + 480])
    w.flush()  # the recorder's once-a-second flush
    for i in range(SR, 2 * SR, 480):
        w.write(x[i:i + 480])
    w._fh.flush()  # bytes reach the OS, but the header never hears of them: the process dies here
    shutil.copy(path, crashed)
    with open(crashed, "ab") as f:
        f.write(b"\x01\x02\x03\x04")  # a torn last frame (6 bytes per frame)
    before = wav_info(crashed)
    assert not before["header_complete"] and before["frames"] == SR and before["frames_on_disk"] == 2 * SR

    assert repair_wav_header(crashed) == 2 * SR
    after = wav_info(crashed)
    assert after["header_complete"] and after["frames"] == 2 * SR and after["time_reference"] == 42
    assert crashed.stat().st_size == after["data_offset"] + 2 * SR * 6
    assert np.abs(read_wav(crashed) - x).max() < 1e-6
    assert float(ffprobe(crashed)["streams"][0]["duration"]) == pytest.approx(2.0, abs=1e-4)
    assert repair_wav_header(crashed) == 2 * SR  # idempotent
    w.close()


def test_repair_before_the_first_flush_and_of_float(tmp_path: Path):
    path = tmp_path / "f.wav"
    w = WavWriter(path, 1, SR, "f32", flush_interval=3600)
    w.write(tone(1000, 1))
    w._fh.flush()  # crash before any header patch: placeholders say "up to the end"
    copy = tmp_path / "copy.wav"
    shutil.copy(path, copy)
    w.close()
    assert wav_info(copy)["frames_on_disk"] == 1000 and not wav_info(copy)["header_complete"]
    assert repair_wav_header(copy) == 1000
    assert wav_info(copy)["header_complete"] and copy.read_bytes() == path.read_bytes()  # fact chunk too


def test_rf64_when_riff_outgrows_its_32_bit_sizes(tmp_path: Path):
    # The switch happens at 4 GiB; a lowered limit exercises the same code on a small file.
    path = tmp_path / "big.wav"
    w = WavWriter(path, 2, SR, "f32", riff_limit=100_000)
    x = tone(SR, 2)
    for i in range(0, SR, 4800):
        w.write(x[i:i + 4800])
        w.flush()
    w.close()
    meta = wav_info(path)
    assert meta["rf64"] and meta["frames"] == SR and meta["header_complete"]
    assert path.read_bytes()[:4] == b"RF64"
    s = ffprobe(path)["streams"][0]
    assert s["duration_ts"] == SR and s["channels"] == 2
    with open(path, "ab") as f:
        f.write(bytes(8 * 100 + 3))
    assert repair_wav_header(path) == SR + 100
    assert ffprobe(path)["streams"][0]["duration_ts"] == SR + 100

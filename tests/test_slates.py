"""Slate detection in recorded media: demo takes with ground truth, and synthetic signals at known times."""
from __future__ import annotations

import csv
import json
import shutil
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from improvcap.errors import TakeError, UsageError
from improvcap.recorder import Recorder
from improvcap.rig import load_rig
from improvcap.slates import (AUDIO_CHUNK_BLOCKS, Onset, detect_audio, detect_mocap, detect_take, detect_video,
                              luma_onsets, match_slates, open_video, slate_offsets, spike_fraction)
from improvcap.take.tables import read_table
from improvcap.take.wav import WavWriter

from helpers import demo_rig

RATE = 48000
SAMPLE_NS = 1e9 / RATE
MS = 1_000_000

TRUTH = {"truth": True}
RIG = demo_rig("slates", cameras=("cam0", "cam1"), size=(640, 360), master="cam0",
               settings={"cam0": TRUTH, "cam1": TRUTH, "mic": TRUTH, "suit": TRUTH})


# --- demo takes -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def takes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two takes from one open demo rig: one slated at the start, in the middle and before the stop
    (the last with no lead time, as `record --slate` does), and one never slated."""
    root = tmp_path_factory.mktemp("slates")
    rig_path = root / "slates.toml"
    rig_path.write_text(RIG)
    recorder = Recorder(load_rig(rig_path))
    recorder.open()
    try:
        slated = recorder.start_take(root / "out", "day", "slated")
        recorder.slate(0.3)
        time.sleep(2.3)
        recorder.slate(0.2)
        time.sleep(2.3)
        recorder.slate(0.0)
        time.sleep(0.5)
        recorder.stop_take()
        quiet = recorder.start_take(root / "out", "day", "quiet")
        time.sleep(3.5)
        recorder.stop_take()
    finally:
        recorder.close()
    return {"slated": slated, "quiet": quiet}


@pytest.fixture(scope="module")
def found(takes: dict[str, Path]) -> dict[str, list[Onset]]:
    return detect_take(takes["slated"])


def slate_times(take: Path) -> list[int]:
    with open(take / "events.csv", newline="") as fh:
        return [int(row["t_ns"]) for row in csv.DictReader(fh) if row["kind"] == "slate"]


def first_row_at(take: Path, stream: str, t_ns: int) -> int:
    """The row (frame or mocap sample) of the first one truly captured at or after t_ns."""
    truth = read_table(take / f"{stream}.truth.csv")
    return int(truth["index"][np.argmax(truth["true_t_ns"] >= t_ns)])


def audio_true_ns(take: Path, stream: str, sample: int) -> float:
    """True capture time of a sample, from the block truth (no drift in these rigs)."""
    truth = read_table(take / f"{stream}.truth.csv")
    b = np.searchsorted(truth["index"], sample, side="right") - 1
    return float(truth["true_t_ns"][b] + (sample - truth["index"][b]) * SAMPLE_NS)


@pytest.mark.slow
def test_every_stream_finds_each_slate_once(takes, found):
    slates = slate_times(takes["slated"])
    assert len(slates) == 3
    assert set(found) == {"cam0", "cam1", "mic", "suit"}
    for stream, onsets in found.items():
        assert len(onsets) == 3, (stream, onsets)
        assert all(o.stream == stream for o in onsets)


@pytest.mark.slow
def test_audio_onsets_are_the_first_beep_sample(takes, found):
    take = takes["slated"]
    for onset, slate in zip(found["mic"], slate_times(take)):
        # the demo beep starts at the first sample captured at or after the slate time
        true = audio_true_ns(take, "mic", onset.index)
        assert -1000 <= true - slate < 3 * SAMPLE_NS, (onset, slate, true)
        assert abs(onset.t_ns - slate) <= 1 * MS, (onset, slate)
        assert onset.strength > 10


@pytest.mark.slow
def test_mocap_onsets_are_the_first_spiked_row(takes, found):
    take = takes["slated"]
    period = 1e9 / 240
    for onset, slate in zip(found["suit"], slate_times(take)):
        assert onset.index == first_row_at(take, "suit", slate)
        assert -1 * MS <= onset.t_ns - slate <= period + 1 * MS, (onset, slate)


@pytest.mark.slow
@pytest.mark.parametrize("camera", ["cam0", "cam1"])
def test_video_onsets_are_the_flash_frame(takes, found, camera):
    take = takes["slated"]
    period = 1e9 / 30
    slates = slate_times(take)
    onsets = found[camera]
    # announced ahead of time or for "now": the flash is the first frame exposed at or after the slate
    for onset, slate in zip(onsets, slates):
        assert onset.index == first_row_at(take, camera, slate), (onset, slate)
        assert -1 * MS <= onset.t_ns - slate <= period + 1 * MS, (onset, slate)
        assert onset.strength > 40


@pytest.mark.slow
def test_matched_slates_give_offsets_within_a_frame(found):
    matches = match_slates(found, "mic")
    assert len(matches) == 3
    for m in matches:
        assert all(o is not None for o in m.onsets.values())
        assert m.offsets_ns["mic"] == 0
        assert -1 * MS <= m.offsets_ns["suit"] <= 1e9 / 240 + 1 * MS
    summary = slate_offsets(matches)
    assert summary["mic"] == {"median_ns": 0, "spread_ns": 0, "mad_ns": 0, "n": 3, "missed": 0}
    for cam in ("cam0", "cam1"):
        assert summary[cam]["n"] == 3 and summary[cam]["missed"] == 0
        assert -1 * MS <= summary[cam]["median_ns"] <= 1e9 / 30 + 1 * MS
        assert summary[cam]["spread_ns"] <= 2e9 / 30


@pytest.mark.slow
def test_an_unfinished_take_is_searched_by_its_rig(takes, found, tmp_path: Path):
    """A take that crashed has no stream summaries in take.json yet; its files are still searched."""
    copy = tmp_path / "crashed"
    shutil.copytree(takes["slated"], copy)
    manifest = json.loads((copy / "take.json").read_text())
    manifest.update(status="recording", streams={})
    (copy / "take.json").write_text(json.dumps(manifest))
    assert detect_take(copy) == found


@pytest.mark.slow
def test_a_take_without_slates_yields_no_onsets(takes):
    quiet = takes["quiet"]
    assert slate_times(quiet) == []
    onsets = detect_take(quiet)
    assert set(onsets) == {"cam0", "cam1", "mic", "suit"}
    assert onsets == {"cam0": [], "cam1": [], "mic": [], "suit": []}


# --- synthetic audio ------------------------------------------------------------------------------

T0_NS = 7_000_000


def background(n: int, channels: int = 2, seed: int = 1) -> np.ndarray:
    """The demo's background: a -12 dBFS tone per channel (440 Hz × 1, 1.25, ...) and -60 dBFS noise."""
    k = np.arange(n)[:, None]
    f = 440.0 * (1 + 0.25 * np.arange(channels))[None, :]
    tone = 0.25 * np.sin(2 * np.pi * f * k / RATE + np.arange(channels) * np.pi / 3)
    return tone + np.random.default_rng(seed).normal(0, 1e-3, (n, channels))


def beep(x: np.ndarray, at: int) -> None:
    """The demo slate: a 50 ms 1-2 kHz chirp at 0.9 full scale replacing the signal on every channel."""
    t = np.arange(int(0.05 * RATE)) / RATE
    chirp = 0.9 * np.cos(2 * np.pi * (1000 * t + 1000 / (2 * 0.05) * t * t))
    n = min(len(chirp), len(x) - at)
    x[at:at + n] = chirp[:n, None]


def clap(x: np.ndarray, at: int, seed: int, channels: slice = slice(None)) -> None:
    """A hand clap: a noise burst with a sharp attack and a 15 ms decay, added to the signal."""
    n = min(int(0.1 * RATE), len(x) - at)
    burst = np.random.default_rng(seed).normal(0, 0.3, n) * np.exp(-np.arange(n) / (0.015 * RATE))
    x[at:at + n, channels] += np.clip(burst, -0.7, 0.7)[:, None]


def write_audio(folder: Path, x: np.ndarray, name: str = "mic") -> tuple[Path, Path]:
    """A WAV and its blocks.csv (10 ms blocks, t_ns = T0_NS + sample period × first sample)."""
    wav = WavWriter(folder / f"{name}.wav", x.shape[1], RATE, "s24")
    wav.write(x.astype(np.float32))
    wav.close()
    blocks = folder / f"{name}.blocks.csv"
    with open(blocks, "w") as fh:
        fh.write("first_sample,t_ns,device_ns,host_ns,frames,adc_ns\n")
        for first in range(0, len(x), 480):
            t = T0_NS + round(first * SAMPLE_NS)
            fh.write(f"{first},{t},{t},{t},{min(480, len(x) - first)},\n")
    return folder / f"{name}.wav", blocks


def test_a_window_to_the_end_of_a_wav_is_searched_to_its_end(tmp_path: Path):
    """A window reaching past the last sample is cut to it; the last sample's time mapped back can round a
    hair past the end, and the window must still be searched (it was once dropped, losing its slates)."""
    from improvcap.take.timeline import AudioTimeline

    x = background(int(2.5 * RATE))
    beep(x, int(0.3 * RATE))
    beep(x, int(2.2 * RATE))
    wav, blocks = write_audio(tmp_path, x)
    header, *rows = blocks.read_text().splitlines()
    firsts = [int(r.split(",")[0]) for r in rows]
    for ppm in range(1, 400):  # a device clock this fast whose last sample's time rounds past the end
        t = [T0_NS + round(f * SAMPLE_NS * (1 + ppm * 1e-6)) for f in firsts]
        timeline = AudioTimeline.from_blocks({"first_sample": np.array(firsts), "t_ns": np.array(t),
                                              "frames": np.full(len(firsts), 480)}, RATE)
        if np.isnan(timeline.sample_at(float(timeline.t_ns_of(timeline.total - 1)))):
            break
    else:
        pytest.fail("no clock rate rounds the last sample's time past the end: the case is not made")
    blocks.write_text("\n".join([header, *(f"{f},{v},{v},{v},480," for f, v in zip(firsts, t))]) + "\n")
    whole = detect_audio(wav, blocks, RATE)
    assert len(whole) == 2
    assert detect_audio(wav, blocks, RATE, windows=[(0, 10**12)]) == whole
    assert detect_audio(wav, blocks, RATE, windows=[(t[-1] - 500_000_000, 10**12)]) == whole[1:]


def expected_t_ns(sample: int) -> int:
    return T0_NS + round(sample * SAMPLE_NS)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(beep_at=st.integers(int(0.3 * RATE), int(0.9 * RATE)), clap_at=st.integers(int(1.5 * RATE), int(2.2 * RATE)),
       seed=st.integers(0, 2**16))
def test_beep_and_clap_onsets_in_tone_and_noise_within_a_quarter_millisecond(tmp_path_factory, beep_at, clap_at, seed):
    folder = tmp_path_factory.mktemp("audio")
    x = background(int(2.6 * RATE), seed=seed)
    beep(x, beep_at)
    clap(x, clap_at, seed)
    onsets = detect_audio(*write_audio(folder, x), RATE)
    assert [o.index for o in onsets] == pytest.approx([beep_at, clap_at], abs=12)
    for o, at in zip(onsets, (beep_at, clap_at)):
        assert abs(o.t_ns - expected_t_ns(at)) <= 250_000
        assert o.stream == "mic" and o.strength > 10


def test_clap_on_one_channel_and_onsets_across_read_chunks(tmp_path: Path):
    chunk = AUDIO_CHUNK_BLOCKS * 480  # samples per read; an onset right before a boundary
    events = [int(0.73 * RATE) + 5, chunk - 7, chunk + int(1.1 * RATE) + 17]
    x = background(chunk + int(1.5 * RATE), seed=3)
    clap(x, events[0], 10, slice(1, 2))  # heard by the second microphone only
    beep(x, events[1])
    clap(x, events[2], 11)
    onsets = detect_audio(*write_audio(tmp_path, x), RATE)
    assert [o.index for o in onsets] == pytest.approx(events, abs=12)


def test_echoes_of_one_slate_are_one_onset(tmp_path: Path):
    at = int(0.5 * RATE) + 3
    x = background(2 * RATE)
    clap(x, at, 5)
    clap(x, at + int(0.12 * RATE), 6)  # a second clap (or an echo) 120 ms later belongs to the same slate
    clap(x, at + int(0.3 * RATE), 7)
    onsets = detect_audio(*write_audio(tmp_path, x), RATE)
    assert [o.index for o in onsets] == pytest.approx([at], abs=12)


def test_steady_tone_and_noise_have_no_onsets(tmp_path: Path):
    x = background(3 * RATE)
    x[RATE:] *= np.linspace(1.0, 2.0, 2 * RATE)[:, None]  # a slow swell (+6 dB over 2 s) is not a slate
    assert detect_audio(*write_audio(tmp_path, x), RATE) == []


def test_empty_and_short_audio(tmp_path: Path):
    empty = tmp_path / "empty"
    short = tmp_path / "short"
    empty.mkdir()
    short.mkdir()
    wav = WavWriter(empty / "mic.wav", 2, RATE, "s24")
    wav.close()
    (empty / "mic.blocks.csv").write_text("first_sample,t_ns,device_ns,host_ns,frames,adc_ns\n")
    assert detect_audio(empty / "mic.wav", empty / "mic.blocks.csv", RATE) == []
    x = background(300)
    beep(x, 150)
    assert detect_audio(*write_audio(short, x), RATE) == []  # no background to compare with


# --- synthetic video ------------------------------------------------------------------------------

LUMA = np.array([80.0] * 10 + [235.0] * 3 + [80.0] * 17 + [235.0] + [80.0] * 9 + [80.0 + 3 * i for i in range(20)])
# onsets: the three-frame flash at 10 and the single white frame at 30; the fade from 40 is gradual


def write_video(folder: Path, codec: str, pix_fmt: str, luma: np.ndarray = LUMA,
                options: dict[str, str] | None = None) -> tuple[Path, Path]:
    """A small clip whose frames have the given mean luma (plus texture), and its frames.csv."""
    mkv, rows = folder / "cam.mkv", folder / "cam.frames.csv"
    w, h = 160, 120
    texture = np.random.default_rng(0).integers(-12, 13, (h, w))
    with av.open(str(mkv), "w", format="matroska") as out:
        stream = out.add_stream(codec, rate=30, options=options or {})
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        stream.codec_context.time_base = Fraction(1, 1000)
        out.start_encoding()  # the header, even for a clip with no frames
        for i, y in enumerate(luma):
            img = np.full((h * 3 // 2, w), 128, np.uint8)
            img[:h] = np.clip(y + texture, 16, 235)
            frame = av.VideoFrame.from_ndarray(img, format="yuv420p").reformat(format=pix_fmt)
            frame.pts, frame.time_base = i * 33, Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    with open(rows, "w") as fh:
        fh.write("index,t_ns,device_ns,host_ns,seq,pts\n")
        for i in range(len(luma)):
            fh.write(f"{i},{1_000_000 + i * 33_333_333},0,0,{i},{i * 33}\n")
    return mkv, rows


@pytest.mark.parametrize("codec, pix_fmt", [
    ("libx264", "yuv420p"),      # 8-bit luma plane
    ("mjpeg", "yuvj422p"),       # decoded at reduced size (lowres)
    ("ffv1", "yuv420p10le"),     # 16-bit luma plane
    ("ffv1", "bgr0"),            # no luma plane: converted to gray
])
def test_video_flash_frames_in_every_pixel_layout(tmp_path: Path, codec: str, pix_fmt: str):
    onsets = detect_video(*write_video(tmp_path, codec, pix_fmt))
    assert [o.index for o in onsets] == [10, 30]
    assert [o.t_ns for o in onsets] == [1_000_000 + 10 * 33_333_333, 1_000_000 + 30 * 33_333_333]
    assert all(o.stream == "cam" and 120 < o.strength < 190 for o in onsets)  # full range: larger


@pytest.mark.parametrize("codec, pix_fmt, options", [
    ("libx264", "yuv420p", {"bf": "3", "g": "12"}),    # B-frames: a reorder delay the probe does not guess
    ("libx264", "yuv420p", {"qp": "0", "g": "30"}),    # lossless, as the demo cameras write
    ("libx265", "yuv420p", {"x265-params": "bframes=4:log-level=error"}),
    ("mjpeg", "yuvj422p", {}),
])
def test_the_short_probe_decodes_the_frames_a_default_open_does(tmp_path: Path, codec: str, pix_fmt: str,
                                                                  options: dict[str, str]):
    mkv, _ = write_video(tmp_path, codec, pix_fmt, options=options)

    def frames(container) -> list[tuple[int, bytes]]:
        with container:
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1
            return [(f.pts, bytes(f.planes[0])) for p in container.demux(stream) for f in p.decode()]

    default = frames(av.open(str(mkv)))
    assert len(default) == len(LUMA) and frames(open_video(mkv)) == default


def test_luma_onsets_rearm_only_after_the_picture_falls_back():
    luma = np.array([100.0] * 12 + [200.0] * 40 + [170.0] * 5 + [100.0] * 12 + [200.0] * 3)
    assert [i for i, _ in luma_onsets(luma)] == [12, 69]
    assert luma_onsets(np.full(50, 120.0) + np.arange(50) * 3.5) == []  # a steady brightening


def test_empty_and_unreadable_video(tmp_path: Path):
    mkv, rows = write_video(tmp_path, "libx264", "yuv420p", LUMA[:0])
    assert detect_video(mkv, rows) == []          # a header and no frames
    (tmp_path / "zero.mkv").write_bytes(b"")
    assert detect_video(tmp_path / "zero.mkv", rows) == []
    garbage = tmp_path / "garbage.mkv"
    garbage.write_bytes(b"\x1aE\xdf\xa3 not a matroska file at all" * 10)
    with pytest.raises(TakeError, match="garbage.mkv"):
        detect_video(garbage, rows)
    with pytest.raises(TakeError, match="missing.mkv"):
        detect_video(tmp_path / "missing.mkv", rows)


# --- synthetic mocap ------------------------------------------------------------------------------

def write_mocap(path: Path, values: np.ndarray) -> Path:
    with open(path, "w") as fh:
        fh.write("index,t_ns,device_ns,host_ns,counter," + ",".join(f"ch{c:02d}" for c in range(values.shape[1])) + "\n")
        for i, row in enumerate(values):
            t = 2_000_000 + round(i * 1e9 / 240)
            fh.write(f"{i},{t},{t},{t},{i}," + ",".join("%.9g" % v for v in row) + "\n")
    return path


def motion(n: int, channels: int = 8) -> np.ndarray:
    t = np.arange(n)[:, None] / 240
    c = np.arange(channels)[None, :]
    x = 45 * np.sin(2 * np.pi * (0.5 + 0.05 * c) * t + 2 * np.pi * c / channels)
    x += np.random.default_rng(2).normal(0, 0.05, x.shape)
    x[:, 6] = 3.0                      # a constant channel (MAD 0)
    x[:, 7] = np.round(x[:, 7] / 5)    # a coarsely quantised one
    return x


def test_mocap_spike_on_most_channels_is_an_onset(tmp_path: Path):
    x = motion(1200)
    x[300:302, :] = 1000.0             # every channel
    x[700, :6] = -500.0                # 6 of 8 channels (75 %), one row: a tap
    x[1000:1002, :5] = 1000.0          # 5 of 8: not enough
    onsets = detect_mocap(write_mocap(tmp_path / "suit.csv", x))
    assert [o.index for o in onsets] == [300, 700]
    assert onsets[0].t_ns == 2_000_000 + round(300 * 1e9 / 240)
    assert all(o.stream == "suit" and o.strength > 8 for o in onsets)


def test_mocap_motion_alone_has_no_onsets(tmp_path: Path):
    x = motion(2400)
    frac, _ = spike_fraction(x)
    assert frac.max() < 0.5            # smooth motion, a constant and a quantised channel
    assert detect_mocap(write_mocap(tmp_path / "suit.csv", x)) == []


def test_empty_and_short_mocap(tmp_path: Path):
    assert detect_mocap(write_mocap(tmp_path / "empty.csv", np.zeros((0, 8)))) == []
    assert detect_mocap(write_mocap(tmp_path / "short.csv", np.full((5, 8), 1000.0))) == []
    bad = tmp_path / "bad.csv"
    bad.write_text("index,t_ns,device_ns,host_ns,counter,ch00\n0,1,2,3,4,five\n")
    with pytest.raises(TakeError, match="bad.csv"):
        detect_mocap(bad)


# --- matching ----------------------------------------------------------------------------------

def test_match_slates_pairs_nearest_onsets_within_tolerance():
    onsets = {
        "ref": [Onset("ref", 1_000 * MS, 30, 100.0), Onset("ref", 5_000 * MS, 150, 100.0),
                Onset("ref", 9_000 * MS, 270, 100.0)],
        "mic": [Onset("mic", 1_002 * MS, 48_000, 20.0), Onset("mic", 4_990 * MS, 240_000, 20.0),
                Onset("mic", 9_006 * MS, 432_000, 20.0)],
        "suit": [Onset("suit", 999 * MS, 240, 50.0), Onset("suit", 5_400 * MS, 1300, 50.0)],  # missed the 2nd
        "cam": [],
    }
    matches = match_slates(onsets, "ref")
    assert [m.t_ns for m in matches] == [1_000 * MS, 5_000 * MS, 9_000 * MS]
    assert [m.offsets_ns["mic"] for m in matches] == [2 * MS, -10 * MS, 6 * MS]
    assert [m.offsets_ns["suit"] for m in matches] == [-1 * MS, None, None]
    assert matches[1].onsets["suit"] is None and matches[0].onsets["suit"].index == 240
    assert all(m.offsets_ns["cam"] is None and m.offsets_ns["ref"] == 0 for m in matches)
    summary = slate_offsets(matches)
    assert summary["mic"] == {"median_ns": 2 * MS, "spread_ns": 16 * MS, "mad_ns": 4 * MS, "n": 3, "missed": 0}
    assert summary["suit"] == {"median_ns": -1 * MS, "spread_ns": 0, "mad_ns": 0, "n": 1, "missed": 2}
    assert summary["cam"] == {"median_ns": None, "spread_ns": None, "mad_ns": None, "n": 0, "missed": 3}
    assert match_slates(onsets, "ref", tolerance_ns=5 * MS)[1].offsets_ns["mic"] is None
    with pytest.raises(UsageError, match="'nope'"):
        match_slates(onsets, "nope")


def test_detect_take_needs_a_manifest(tmp_path: Path):
    with pytest.raises(TakeError, match="take.json"):
        detect_take(tmp_path)

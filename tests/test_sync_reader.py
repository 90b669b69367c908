"""sync.csv and the reader API: matching rules on arrays, then demo takes recorded end to end."""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import shutil
import tracemalloc
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from improvcap import open_take
from improvcap.errors import TakeError
from improvcap.take.sync import build_sync, format_sync_csv, match_frames, sync_table
from improvcap.take.tables import read_table
from improvcap.take.wav import read_wav

from helpers import demo_rig
from recording import open_rig, record

TICK = 1e9 / 30

RIGS = {
    # a master at 30 fps, a faster and a slower camera
    "mixed": demo_rig("mixed", cameras=("cam0", "fast", "slow"), master="cam0",
                      settings={"fast": {"fps": 60}, "slow": {"fps": 15}}),
    # a second 30 fps camera that loses a tenth of its frames in transport
    "drops": demo_rig("drops", cameras=("cam0", "cam1"), master="cam0", settings={"cam1": {"drop_rate": 0.1}}),
}


def ensure_sync(take: Path) -> Path:
    """sync.csv as the recorder leaves it, or built here if this recorder does not write it yet."""
    if not (take / "sync.csv").exists():
        build_sync(take, json.loads((take / "take.json").read_text()))
    return take


@pytest.fixture(scope="module")
def takes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both demo rigs recorded for 4 s, one after the other (a session each)."""
    base = tmp_path_factory.mktemp("takes")
    out = {}
    for name, text in RIGS.items():
        rig = base / f"{name}.toml"
        rig.write_text(text)
        with open_rig(rig, base / "out", name) as control:
            out[name] = ensure_sync(record(control, name, 4.0))
    return out


def sync_rows(take: Path) -> tuple[list[str], list[list[str]]]:
    with open(take / "sync.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def column(header: list[str], rows: list[list[str]], name: str) -> np.ndarray:
    """A sync.csv column as float64, NaN for an empty cell."""
    i = header.index(name)
    return np.array([float(r[i]) if r[i] else np.nan for r in rows])


# --- the matching rule on arrays ----------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(rate=st.sampled_from([15.0, 30.0, 60.0, 240.0]), phase=st.floats(0, 1), seed=st.integers(0, 2**32 - 1),
       drop=st.floats(0, 0.5))
def test_regular_streams_match_the_frame_whose_slot_holds_the_tick(rate: float, phase: float, seed: int,
                                                                    drop: float):
    """With regular timestamps: the frame within half a period of the tick, or a gap if it was dropped."""
    period = 1e9 / rate
    ticks = np.rint(np.arange(60) * TICK).astype(np.int64)
    k = np.arange(-1, int(2.2 * rate))
    true_t = phase * period + k * period
    # the frame whose slot [t - P/2, t + P/2) holds each tick; keep clear of slot boundaries (ties)
    slot = np.ceil((ticks - true_t[0] - period / 2) / period).astype(int)
    edge = np.abs((ticks - true_t[0] - period / 2) / period - np.round((ticks - true_t[0] - period / 2) / period))
    assume(edge.min() * period > 10)
    kept = np.random.default_rng(seed).random(len(k)) >= drop
    rows = np.flatnonzero(kept)
    t_ns = np.rint(true_t[rows]).astype(np.int64)
    row, off = match_frames(ticks, t_ns, period, unique=rate >= 30)
    inside = (slot >= 0) & (slot < len(k))
    expected = np.where(inside & kept[np.clip(slot, 0, len(k) - 1)], slot, -1)
    got = np.where(row >= 0, rows[np.maximum(row, 0)], -1)
    assert np.array_equal(got, expected)
    assert np.all(np.abs(off[row >= 0]) <= period / 2)


def test_faster_and_slower_streams_against_a_30_fps_master():
    ticks = np.rint(np.arange(90) * TICK).astype(np.int64) + 1_000_000
    fast = np.rint(np.arange(200) * 1e9 / 60).astype(np.int64)
    row, off = match_frames(ticks, fast, 1e9 / 60, unique=True)
    assert np.array_equal(row, np.arange(90) * 2)  # every other frame, none repeated
    slow = np.rint(np.arange(50) * 1e9 / 15 + 5_000_000).astype(np.int64)
    row, off = match_frames(ticks, slow, 1e9 / 15, unique=False)
    assert np.array_equal(row, np.arange(90) // 2)  # each frame on the two ticks in its slot
    assert np.abs(off).max() <= 1e9 / 30
    # a slow frame dropped: both of its ticks are gaps, the neighbours are not stretched over them
    row, _ = match_frames(ticks, np.delete(slow, 10), 1e9 / 15, unique=False)
    assert list(row[18:24]) == [9, 9, -1, -1, 10, 10]  # rows after the deleted one shift by one


def test_jittered_same_rate_stream_never_repeats_a_frame():
    rng = np.random.default_rng(7)
    ticks = np.rint(np.arange(3000) * TICK + rng.normal(0, 3e6, 3000)).astype(np.int64)
    ticks.sort()
    frames = np.rint(np.arange(3000) * TICK + 12e6 + rng.normal(0, 3e6, 3000)).astype(np.int64)
    frames.sort()
    row, off = match_frames(ticks, frames, TICK, unique=True)
    used = row[row >= 0]
    assert len(np.unique(used)) == len(used)
    # a gap only where both frames around the tick went to other ticks
    for i in np.flatnonzero(row < 0):
        pos = np.searchsorted(frames, ticks[i])
        assert all(j in set(used.tolist()) for j in (pos - 1, pos) if 0 <= j < len(frames))
    assert (row < 0).mean() < 0.05


def test_one_hour_sync_table():
    """A one-hour take: 30 fps master, a 30 fps camera with drops, 10 ms audio blocks, 240 Hz mocap."""
    rng = np.random.default_rng(1)
    n = 108_000
    ticks = np.rint(np.arange(n) * TICK + rng.normal(0, 2e5, n)).astype(np.int64) + 5_000_000
    cam_t = np.rint(np.arange(n) * TICK + 7e6 + rng.normal(0, 2e5, n)).astype(np.int64)[rng.random(n) > 0.01]
    blocks = {"first_sample": np.arange(360_000) * 480, "t_ns": np.arange(360_000, dtype=np.int64) * 10_000_000,
              "frames": np.full(360_000, 480)}
    mocap_t = np.rint(np.arange(864_000) * 1e9 / 240).astype(np.int64)
    streams = [("cam1", "camera", 30.0, {"index": np.arange(len(cam_t)), "t_ns": cam_t}),
               ("room", "audio", 48000.0, blocks),
               ("suit", "mocap", 240.0, {"index": np.arange(864_000), "t_ns": mocap_t})]
    columns = sync_table(np.arange(n), ticks, streams, master_rate=30.0)  # its speed: bench/sync.py
    data = format_sync_csv(columns)
    lines = data.decode().splitlines()
    assert len(lines) == n + 1
    assert lines[0] == "tick,t_ns,cam1_index,cam1_offset_ns,room_sample,suit_index,suit_offset_ns"
    gaps = (columns["cam1_index"] < 0).sum()
    assert 0.005 * n < gaps < 0.015 * n  # about the 1 % of frames dropped
    assert np.all(np.diff(columns["cam1_index"][columns["cam1_index"] >= 0]) > 0)


# --- recorded takes -----------------------------------------------------------------------------

@pytest.mark.slow
def test_one_row_per_master_frame_and_offsets_within_the_slots(takes):
    take = takes["mixed"]
    header, rows = sync_rows(take)
    assert header == ["tick", "t_ns", "fast_index", "fast_offset_ns", "slow_index", "slow_offset_ns",
                      "mic_sample", "suit_index", "suit_offset_ns"]
    master = read_table(take / "cam0.frames.csv")
    assert [int(r[0]) for r in rows] == master["index"].tolist()
    assert [int(r[1]) for r in rows] == master["t_ns"].tolist()
    t = column(header, rows, "t_ns")

    for name, fps in (("fast", 60), ("slow", 15), ("suit", 240)):
        period = 1e9 / fps
        kind = "mocap" if name == "suit" else "camera"
        frames = read_table(take / (f"{name}.csv" if kind == "mocap" else f"{name}.frames.csv"),
                            np.float64 if kind == "mocap" else np.int64)
        ft = frames["t_ns"].astype(np.int64)
        idx, off = column(header, rows, f"{name}_index"), column(header, rows, f"{name}_offset_ns")
        ok = ~np.isnan(idx)
        assert ok.sum() >= len(rows) - 4, f"{name}: too many gaps"
        k = idx[ok].astype(int)
        assert np.array_equal(ft[k] - t[ok], off[ok])  # offset = t_other - t_tick
        # within half a period, or half the spacing of the two frames around the tick when that is longer
        neighbour = np.where(off[ok] > 0, ft[np.maximum(k - 1, 0)], ft[np.minimum(k + 1, len(ft) - 1)])
        bound = np.maximum(period, np.abs(ft[k] - neighbour)) / 2
        assert np.all(np.abs(off[ok]) <= bound + 1), name
        assert np.median(np.abs(off[ok])) <= period / 2
        steps = np.diff(k)
        if name == "slow":
            assert steps.min() >= 0 and np.bincount(k).max() <= 3  # a 15 fps frame serves about two ticks
            assert np.median(np.bincount(k)[np.bincount(k) > 0]) == 2
        else:
            assert steps.min() > 0  # at least as fast as the master: never the same frame twice
        if name == "fast":
            assert np.median(steps) == 2
        if name == "suit":
            assert np.median(steps) == 8 and steps.min() >= 5 and steps.max() <= 11

    mic = column(header, rows, "mic_sample")
    cells = [r[header.index("mic_sample")] for r in rows]
    assert all(re.fullmatch(r"\d+\.\d{3}", c) for c in cells if c)
    valid = ~np.isnan(mic)
    assert valid.sum() >= len(rows) - 4
    assert abs(np.median(np.diff(mic[valid])) - 1600) <= 2
    span = (mic[valid][-1] - mic[valid][0]) / (t[valid][-1] - t[valid][0]) * 1e9
    assert abs(span - 48000) < 48000 * 0.005


@pytest.mark.slow
def test_dropped_frames_are_gaps_exactly_where_frames_are_missing(takes):
    take = takes["drops"]
    header, rows = sync_rows(take)
    t = column(header, rows, "t_ns")
    idx = column(header, rows, "cam1_index")
    assert [r[header.index("cam1_offset_ns")] == "" for r in rows] == list(np.isnan(idx))
    frames = read_table(take / "cam1.frames.csv")
    ft, seq = frames["t_ns"], frames["seq"]
    period, tol = TICK, 1e6
    jumps = np.flatnonzero(np.diff(seq) > 1)
    assert np.diff(seq)[jumps].sum() - len(jumps) >= 3, "the demo camera should have lost frames"
    holes = [(ft[a] + period / 2, ft[a + 1] - period / 2) for a in jumps]  # the slots of the missing frames
    used = set(idx[~np.isnan(idx)].astype(int).tolist())
    for i in range(len(rows)):
        in_hole = any(lo + tol <= t[i] < hi - tol for lo, hi in holes)
        near_hole = any(lo - tol <= t[i] < hi + tol for lo, hi in holes)
        outside = t[i] < ft[0] - period / 2 + tol or t[i] >= ft[-1] + period / 2 - tol
        if in_hole:
            assert np.isnan(idx[i]), f"tick {i} matched although its frame was dropped"
        if np.isnan(idx[i]) and not (near_hole or outside):
            pos = np.searchsorted(ft, t[i])  # one to one: both frames around it went to other ticks
            assert {pos - 1, pos} <= used, f"tick {i} is a gap although frames {pos - 1}, {pos} are free"
    matched = idx[~np.isnan(idx)].astype(int)
    assert np.all(np.diff(matched) > 0)  # a 30 fps camera never repeats a frame on consecutive ticks
    assert np.isnan(idx).sum() >= np.diff(seq)[jumps].sum() - len(jumps) - 2


@pytest.mark.slow
def test_build_sync_summary_and_exclusive_rebuild(takes, tmp_path: Path):
    take = tmp_path / "take"
    shutil.copytree(takes["drops"], take, ignore=shutil.ignore_patterns("*.mkv", "*.wav", "sync.csv"))
    manifest = json.loads((take / "take.json").read_text())
    summary = build_sync(take, manifest)
    rows = (take / "sync.csv").read_text().splitlines()[1:]
    assert set(summary) == {"cam0", "cam1", "mic", "suit"}
    for name, s in summary.items():
        assert s["matched"] + s["gaps"] == len(rows)
        assert s["worst_abs_ns"] >= s["p99_abs_ns"] >= s["p50_abs_ns"] >= 0
    assert summary["cam1"]["gaps"] >= 3 and summary["cam0"]["worst_abs_ns"] == 0
    assert summary["mic"]["worst_abs_ns"] <= 1e9 / 48000 / 2 + 1
    assert summary["suit"]["p99_abs_ns"] <= 1e9 / 240 / 2
    first = (take / "sync.csv").read_bytes()
    with pytest.raises(TakeError, match="already exists"):
        build_sync(take, manifest)
    assert build_sync(take, manifest, replace=True) == summary
    assert (take / "sync.csv").read_bytes() == first
    assert not [p for p in take.iterdir() if p.name.startswith(".")]  # no temporary file left behind


@pytest.mark.slow
def test_rig_without_cameras_gets_30_hz_ticks(takes, tmp_path: Path):
    take = tmp_path / "take"
    shutil.copytree(takes["mixed"], take, ignore=shutil.ignore_patterns("*.mkv", "*.frames.csv", "sync.csv"))
    manifest = json.loads((take / "take.json").read_text())
    manifest["rig"]["master"] = None
    manifest["rig"]["streams"] = [s for s in manifest["rig"]["streams"] if s["kind"] != "camera"]
    summary = build_sync(take, manifest)
    assert set(summary) == {"mic", "suit"}
    sync = read_table(take / "sync.csv", np.float64)
    assert list(sync) == ["tick", "t_ns", "mic_sample", "suit_index", "suit_offset_ns"]
    assert np.array_equal(sync["tick"], np.arange(len(sync["tick"])))
    assert np.all(np.abs(np.diff(sync["t_ns"]) - TICK) <= 1)
    suit = read_table(take / "suit.csv", np.float64)["t_ns"]
    assert sync["t_ns"][0] <= suit[0] and abs(sync["t_ns"][-1] - suit[-1]) <= TICK * 2
    assert summary["suit"]["gaps"] <= 2


def decoded_hashes(mkv: Path) -> list[str]:
    with av.open(str(mkv)) as container:
        return [hashlib.sha256(f.to_ndarray(format="rgb24").tobytes()).hexdigest()
                for f in container.decode(video=0)]


@pytest.mark.slow
def test_frames_yields_aligned_bundles(takes):
    path = takes["drops"]
    take = open_take(path)
    assert take.master == "cam0" and list(take.streams) == ["cam0", "cam1", "mic", "suit"]
    assert take.streams["mic"].channels == 2 and take.streams["mic"].samplerate == 48000
    assert take.streams["suit"].channels == 8 and take.streams["cam1"].width == 320
    header, rows = sync_rows(path)
    cam1_hashes = decoded_hashes(path / "cam1.mkv")
    suit = take.mocap("suit")
    assert suit["values"].shape == (len(suit["t_ns"]), 8)

    bundles = 0
    audio = []
    for bundle, row in zip(take.frames(), rows, strict=True):
        bundles += 1
        assert bundle.tick == int(row[0]) and bundle.t_ns == int(row[1])
        assert bundle.video["cam0"] is not None and bundle.video["cam0"].shape == (240, 320, 3)
        cell = row[header.index("cam1_index")]
        if cell:
            frame = bundle.video["cam1"]
            assert frame is not None and frame.shape == (240, 320, 3) and frame.dtype == np.uint8
            assert hashlib.sha256(frame.tobytes()).hexdigest() == cam1_hashes[int(cell)]
        else:
            assert bundle.video["cam1"] is None
        cell = row[header.index("suit_index")]
        if cell:
            assert np.array_equal(bundle.mocap["suit"], suit["values"][int(cell)])
        else:
            assert bundle.mocap["suit"] is None
        chunk = bundle.audio["mic"]
        assert chunk.dtype == np.float32 and chunk.shape[1] == 2
        audio.append(chunk)
    assert bundles == len(rows)

    # the chunks tile the audio between the first and the last tick, one tick period each
    lengths = np.array([len(a) for a in audio])
    assert np.median(lengths) in (1600, 1601)
    mic = column(header, rows, "mic_sample")
    valid = np.flatnonzero(~np.isnan(mic))
    first, last = valid[0], valid[-1]
    assert abs(lengths[first:last].sum() - (mic[last] - mic[first])) <= 1
    start = math.ceil(mic[0]) if not np.isnan(mic[0]) else 0
    assert np.array_equal(np.concatenate(audio), read_wav(path / "mic.wav", start, int(lengths.sum())))


def rss_bytes() -> int:
    """Resident memory of this process (decoded frames live in FFmpeg buffers, invisible to tracemalloc)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
def test_frames_runs_in_constant_memory(takes):
    take = open_take(takes["mixed"])
    bundle_bytes = 3 * 320 * 240 * 3  # three cameras' frames per tick
    tracemalloc.start()
    try:
        bundles = take.frames()
        for _ in range(10):
            next(bundles)
        tracemalloc.reset_peak()
        traced, _ = tracemalloc.get_traced_memory()
        resident = peak_resident = rss_bytes()
        count = 10
        for bundle in bundles:
            count += 1
            del bundle
            peak_resident = max(peak_resident, rss_bytes())
        traced_now, traced_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count > 100
    # kept, the bundles would take count x bundle_bytes (~80 MB); the budget is a few bundles' worth
    assert peak_resident - resident < 20 * bundle_bytes, f"{(peak_resident - resident) / 1e6:.1f} MB more resident"
    assert traced_peak - traced < 4e6 and traced_now - traced < 1e6  # audio window and mocap rows


@pytest.mark.slow
def test_partial_walks_and_random_access(takes):
    path = takes["mixed"]
    take = open_take(path)
    full = {b.tick: b for b in take.frames(["slow", "suit"], video_format="gray", start_tick=40, stop_tick=50)}
    assert sorted(full) == list(range(40, 50))
    for bundle in full.values():
        assert set(bundle.video) == {"slow"} and set(bundle.mocap) == {"suit"} and bundle.audio == {}
        assert bundle.video["slow"] is not None and bundle.video["slow"].shape == (240, 320)
    again = {b.tick: b for b in take.frames(["slow"], video_format="gray")}
    for tick, bundle in full.items():
        assert np.array_equal(bundle.video["slow"], again[tick].video["slow"])  # a seek gives the same frames

    times = take.frame_times("cam0")
    assert len(times) == len(sync_rows(path)[1]) and np.all(np.diff(times) > 0)
    one_second = take.audio("mic", 1_000_000_000, 2_000_000_000)
    assert one_second.shape[1] == 2 and abs(len(one_second) - 48000) <= 48 * 5
    assert take.audio("mic", -10_000_000_000, -9_000_000_000).shape == (0, 2)
    suit = take.mocap("suit")
    assert np.array_equal(suit["index"], np.arange(len(suit["index"])))
    assert np.array_equal(suit["t_ns"], take.frame_times("suit"))
    with pytest.raises(TakeError, match="no audio stream 'suit'"):
        take.audio("suit", 0, 1)
    with pytest.raises(TakeError, match="no stream 'nope'"):
        take.frames(["nope"])


def test_paths_that_are_not_takes(tmp_path: Path):
    with pytest.raises(TakeError, match="not a take folder"):
        open_take(tmp_path / "missing")
    with pytest.raises(TakeError, match="not a take folder"):
        open_take(tmp_path)
    (tmp_path / "take.json").write_text('{"format": "something else"}')
    with pytest.raises(TakeError, match="not an improvcap take manifest"):
        open_take(tmp_path)
    (tmp_path / "take.json").write_text("{not json")
    with pytest.raises(TakeError, match="unreadable manifest"):
        open_take(tmp_path)


def test_take_without_sync_csv_says_how_to_rebuild(tmp_path: Path):
    manifest = {"format": "improvcap.take", "version": 1, "status": "interrupted",
                "rig": {"name": "r", "master": None, "streams": []}}
    (tmp_path / "take.json").write_text(json.dumps(manifest))
    with pytest.raises(TakeError) as err:
        open_take(tmp_path)
    assert "no sync.csv" in str(err.value) and "build_sync" in str(err.value) and "\n" not in str(err.value)

"""Slate detection in a take's recorded media: where each stream saw the slate, in its own t_ns.

A slate is one physical event every device records (a flash, a beep or clap, a tap on the suit). Found
in the media themselves — not in the event log — its time in each stream measures how far that stream's
timestamps are off from the others: `calibrate sync` turns the offsets into latency corrections and
`verify` checks them.

- video: mean luma per frame (luma plane only, every 4th pixel and row); an onset is a frame more than
  VIDEO_STEP levels above the median of the VIDEO_HISTORY frames before it, and not again until the
  picture falls back. Precision: one frame.
- audio: energy in 1 ms hops of the first difference of the signal (a gentle high-pass: claps and beeps
  are rich in high frequencies, room rumble and tones are not), against the median of the 200 ms before;
  each candidate is refined to the first sample above a threshold between the background's peak and the
  event's peak. Precision: a few samples. The WAV is read in chunks (constant memory).
- mocap: per channel, deviation from the median of the previous rows in MAD units; an onset is a row
  where at least MOCAP_FRACTION of the channels jump together. Precision: one row.

Onsets closer than MERGE_NS in one stream are one slate (the earliest is kept).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .errors import TakeError, UsageError
from .take.layout import MANIFEST, MOCAP, stream_media, stream_of_table, table_file
from .take.manifest import LOAD_ERRORS, load_json
from .take.mkv import open_video
from .take.tables import read_table, stream_table
from .take.timeline import AudioTimeline
from .take.wav import read_wav, wav_info

MERGE_NS = 500_000_000

VIDEO_STEP = 40.0  # 8-bit luma levels above the recent median: a full-frame flash
VIDEO_HISTORY = 10  # frames
VIDEO_MIN_HISTORY = 3  # no onset in a take's first frames (a real camera may still be settling)
VIDEO_SUBSAMPLE = 4  # every 4th pixel of every 4th row

AUDIO_HOP_S = 0.001
AUDIO_BLOCK_HOPS = 10  # background is the median of 10 ms block energies ...
AUDIO_BG_BLOCKS = 20  # ... over the 200 ms before the hop's block
AUDIO_MIN_BG_BLOCKS = 5  # at the start of the file, at least 50 ms of background
AUDIO_STEP_DB = 10.0
AUDIO_FLOOR = 1e-8  # background energy floor (about -80 dBFS): silence does not make clicks slates
AUDIO_CHUNK_BLOCKS = 1000  # 10 s per read
AUDIO_REFINE_PRE_S = 0.050
AUDIO_REFINE_POST_S = 0.005
AUDIO_REFINE_FRACTION = 0.15  # threshold: this far from the background's peak to the event's peak

MOCAP_HISTORY = 16  # rows of the rolling median and MAD
MOCAP_MIN_HISTORY = 6  # ... fewer for the first rows of a take, down to this many
MOCAP_Z = 8.0  # deviation in robust standard deviations
MOCAP_FRACTION = 0.75  # of the channels, at the same row
MOCAP_CHUNK_ROWS = 8192  # rows per rolling-median pass (about 25 MB for 24 channels)
MOCAP_TIME_COLUMNS = MOCAP.time_columns


@dataclass(frozen=True)
class Onset:
    """One slate as one stream recorded it: `index` is the frame row, audio sample or mocap row."""

    stream: str
    t_ns: int
    index: int
    strength: float
    """How clear it is: luma step in levels (video), energy step in dB (audio), channels' median z (mocap)."""


@dataclass(frozen=True)
class SlateMatch:
    """One slate event: the reference stream's onset and every stream's offset from it."""

    reference: str
    t_ns: int
    onsets: dict[str, Onset | None]
    offsets_ns: dict[str, int | None]
    """t_stream - t_reference per stream (0 for the reference); None where the stream missed the slate."""


def _merge(onsets: list[Onset], merge_ns: int = MERGE_NS) -> list[Onset]:
    """One onset per slate: the earliest of each cluster, with the cluster's strongest strength."""
    out: list[Onset] = []
    for o in sorted(onsets, key=lambda o: o.t_ns):
        if out and o.t_ns - out[-1].t_ns < merge_ns:
            first = out[-1]
            out[-1] = Onset(first.stream, first.t_ns, first.index, max(first.strength, o.strength))
        else:
            out.append(o)
    return out


# --- video ----------------------------------------------------------------------------------------

# Decoder options that cost nothing in mean brightness: MJPEG decoded at 1/4 size (its DCT gives the
# block means directly), H.264/HEVC without the deblocking filter (a local smoothing; measured 5-15 % less
# CPU on deblocked streams). No frame is ever skipped: each may be the flash.
_DECODER_OPTIONS = {"mjpeg": {"lowres": "2"}, "h264": {"skip_loop_filter": "all"}, "hevc": {"skip_loop_filter": "all"}}


def _luma_mean(frame: av.VideoFrame, step: int = VIDEO_SUBSAMPLE) -> float:
    """Mean luma on an 8-bit scale from every `step`-th pixel of the luma plane, without converting."""
    fmt = frame.format
    comps = fmt.components
    if (
        not fmt.is_rgb
        and not fmt.is_bayer
        and not fmt.has_palette
        and comps
        and comps[0].plane == 0
        and sum(c.plane == 0 for c in comps) == 1
    ):
        plane = frame.planes[0]
        bits = comps[0].bits
        if bits <= 8:
            rows = np.frombuffer(memoryview(plane), np.uint8).reshape(-1, plane.line_size)
            return float(rows[: frame.height : step, : frame.width : step].mean())
        dtype = ">u2" if fmt.is_big_endian else "<u2"
        rows = np.frombuffer(memoryview(plane), dtype).reshape(-1, plane.line_size // 2)
        return float(rows[: frame.height : step, : frame.width : step].mean()) / (1 << (bits - 8))
    # packed YUV, RGB, Bayer, palettes: swscale shrinks and converts to gray in one step
    small = frame.reformat(width=max(1, frame.width // step), height=max(1, frame.height // step), format="gray")
    plane = small.planes[0]
    rows = np.frombuffer(memoryview(plane), np.uint8).reshape(-1, plane.line_size)
    return float(rows[: small.height, : small.width].mean())


def video_luma_windows(
    mkv: Path, threads: int = 0, windows: Sequence[tuple[int, int]] | None = None, container: Any = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(pts, mean luma) of every decodable frame of the file's first video stream, in output order: in each
    of several pts windows, or in the whole file when `windows` is None; the file is opened once.

    `threads`: decoder threads (frame and slice threads; 0 = FFmpeg's choice, 1 = none). Several cameras
    decoded side by side are faster with one thread each than with threads in each (measured on 2 cores).
    A window is (first_pts, last_pts) in the stream's time base: seek to the keyframe at or before
    first_pts and stop after last_pts; frames outside are decoded (later frames need them) but not
    measured, and frames without a pts are left out. `container`: the file opened by open_video, left open
    (it may have been demuxed or searched before).
    """
    mkv = Path(mkv)
    empty = (np.zeros(0, np.int64), np.zeros(0))
    count = 1 if windows is None else len(windows)
    if container is None:
        try:
            container = open_video(mkv)
        except av.EOFError:
            return [empty] * count  # a header and no frames
        except (av.FFmpegError, OSError) as e:
            if mkv.is_file() and mkv.stat().st_size == 0:
                return [empty] * count  # created, never written
            raise TakeError(f"{mkv}: cannot read video: {getattr(e, 'strerror', None) or e}") from None
        with container:
            return video_luma_windows(mkv, threads, windows, container)
    if not container.streams.video:
        raise TakeError(f"{mkv}: no video stream")
    stream = container.streams.video[0]
    ctx = stream.codec_context
    options = _DECODER_OPTIONS.get(ctx.name, {})
    if not ctx.is_open:  # a container searched before keeps its decoder
        ctx.options = dict(options)
        ctx.thread_type = "AUTO"
        ctx.thread_count = threads
    step = max(1, VIDEO_SUBSAMPLE >> int(options.get("lowres", 0)))
    if windows is None:
        try:
            container.seek(0)  # a container demuxed before (count_packets) stands at its end
        except av.FFmpegError:
            pass
        return [_luma_series(container, stream, None, step)]
    out = []
    for window in windows:
        try:
            container.seek(int(window[0]), stream=stream, backward=True, any_frame=False)
        except av.FFmpegError:
            pass  # no index to seek with (a crashed take): decode from where the demuxer stands
        out.append(_luma_series(container, stream, window, step))
    return out


def _luma_series(
    container: Any, stream: Any, window: tuple[int, int] | None, step: int
) -> tuple[np.ndarray, np.ndarray]:
    pts: list[int] = []
    luma: list[float] = []
    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.InvalidDataError:
                continue  # one damaged packet (e.g. the torn end of a crashed take)
            for frame in frames:
                if window is not None:
                    if frame.pts is None or frame.pts < window[0]:
                        continue
                    if frame.pts > window[1]:
                        return np.asarray(pts, np.int64), np.asarray(luma, np.float64)
                pts.append(-1 if frame.pts is None else int(frame.pts))
                luma.append(_luma_mean(frame, step))
    except av.FFmpegError:
        pass  # demuxing stops at a truncated tail; what came before stands
    return np.asarray(pts, np.int64), np.asarray(luma, np.float64)


def _frame_rows(frame_pts: np.ndarray, rows: dict[str, np.ndarray]) -> np.ndarray:
    """Row of frames.csv for each decoded frame: by pts (robust to reordering and to frames the decoder
    could not produce) when every frame's pts names one row, else in order (row i = i-th frame)."""
    n_rows = len(rows["t_ns"])
    table_pts = rows.get("pts")
    if table_pts is not None and len(np.unique(table_pts)) == n_rows and len(frame_pts):
        order = np.argsort(table_pts)
        i = np.clip(np.searchsorted(table_pts[order], frame_pts), 0, n_rows - 1)
        if (table_pts[order][i] == frame_pts).all():
            return order[i]
    return np.arange(min(len(frame_pts), n_rows))


def luma_onsets(luma: np.ndarray, step: float = VIDEO_STEP, history: int = VIDEO_HISTORY) -> list[tuple[int, float]]:
    """(frame, step) of every brightness onset: a frame `step` levels above the median of the `history`
    frames before it; the next onset needs the picture back below that median + step / 2 first."""
    out: list[tuple[int, float]] = []
    bright_base: float | None = None  # median before the current flash, while it lasts
    for i in range(VIDEO_MIN_HISTORY, len(luma)):
        if bright_base is not None:
            if luma[i] < bright_base + step / 2:
                bright_base = None
            continue
        base = float(np.median(luma[max(0, i - history) : i]))
        if luma[i] - base > step:
            out.append((i, float(luma[i] - base)))
            bright_base = base
    return out


def merge_windows(windows: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted (start, end) ranges with overlapping ones joined."""
    out: list[tuple[int, int]] = []
    for a, b in sorted((int(a), int(b)) for a, b in windows if b >= a):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _detect_video_windows(
    mkv: Path, rows: dict[str, np.ndarray], windows: Sequence[tuple[int, int]], threads: int, container: Any = None
) -> list[Onset]:
    """Flash onsets inside t_ns windows, decoding only from the keyframe before each window to its end."""
    t_ns, table_pts = rows["t_ns"], rows["pts"]
    row_by_pts = {int(p): i for i, p in enumerate(table_pts.tolist())}
    onsets: list[Onset] = []
    pts_windows = []
    for a, b in merge_windows(windows):
        inside = np.flatnonzero((t_ns >= a) & (t_ns <= b))
        if len(inside):
            pts_windows.append((int(table_pts[inside].min()), int(table_pts[inside].max())))
    for frame_pts, luma in video_luma_windows(mkv, threads, pts_windows, container) if pts_windows else []:
        known = [k for k, p in enumerate(frame_pts.tolist()) if p in row_by_pts]
        row_of = [row_by_pts[int(frame_pts[k])] for k in known]
        for i, s in luma_onsets(luma[known]):
            onsets.append(Onset(mkv.stem, int(t_ns[row_of[i]]), int(row_of[i]), round(s, 2)))
    return _merge(onsets)


def detect_video(
    mkv: Path,
    frames_csv: Path,
    *,
    threads: int = 0,
    windows: Sequence[tuple[int, int]] | None = None,
    table: dict[str, np.ndarray] | None = None,
    container: Any = None,
) -> list[Onset]:
    """Flash onsets in a camera stream; t_ns is the flash frame's t_ns from frames.csv.

    `windows`: (start, end) t_ns ranges to search instead of the whole file (each needs about
    VIDEO_HISTORY frames of lead-in before a flash). Only frames from the keyframe before each window to
    its end are decoded, found through the container pts that frames.csv records. `table`: frames.csv's
    columns, when the caller has read them already; `container`: the file opened by open_video (left open).
    """
    mkv, frames_csv = Path(mkv), Path(frames_csv)
    rows = read_table(frames_csv) if table is None else table
    if windows is not None and "pts" in rows and "t_ns" in rows and len(np.unique(rows["pts"])) == len(rows["pts"]):
        return _detect_video_windows(mkv, rows, windows, threads, container)
    frame_pts, luma = video_luma_windows(mkv, threads, None, container)[0]
    if len(luma) < 2 or "t_ns" not in rows or not len(rows["t_ns"]):
        return []
    row_of = _frame_rows(frame_pts, rows)
    t_ns = rows["t_ns"]
    onsets = [
        Onset(mkv.stem, int(t_ns[row_of[i]]), int(row_of[i]), round(s, 2))
        for i, s in luma_onsets(luma)
        if i < len(row_of)
    ]
    if windows is not None:
        onsets = [o for o in onsets if any(a <= o.t_ns <= b for a, b in windows)]
    return _merge(onsets)


# --- audio ----------------------------------------------------------------------------------------


def _diff(x: np.ndarray) -> np.ndarray:
    """First difference along time; `x[0]` is the sample before the first output sample."""
    return x[1:] - x[:-1]


def _hop_size(samplerate: float) -> int:
    return max(1, int(round(samplerate * AUDIO_HOP_S)))


def audio_candidates(
    wav: Path, samplerate: float, windows: Sequence[tuple[int, int]] | None = None
) -> list[tuple[int, float]]:
    """(hop index, dB step) of every rising energy step in the WAV, read in chunks.

    `windows`: (first, end) sample ranges to search instead of the whole file; each is read with the
    background before it, so a step is judged exactly as in a whole-file search.
    """
    info = wav_info(wav)
    total = int(info["frames"])
    hop = _hop_size(samplerate)
    block = hop * AUDIO_BLOCK_HOPS
    chunk = block * AUDIO_CHUNK_BLOCKS
    context = block * (AUDIO_BG_BLOCKS + 1)  # background blocks plus the hop before a chunk's first hop
    if windows is None:
        ranges = [(start, min(total, start + chunk)) for start in range(0, total, chunk)]
    else:  # window starts moved back to a block boundary, like the chunks', and long ones cut into chunks
        ranges = [
            (start, min(total, b, start + chunk))
            for a, b in merge_windows(windows)
            for start in range((max(0, a) // block) * block, min(total, b), chunk)
        ]
    found: list[tuple[int, float]] = []
    for start, end in ranges:
        if end <= start:
            continue
        a = max(0, start - context)  # block-aligned: start and context are whole blocks
        if a > 0:
            x = read_wav(wav, a - 1, end - a + 1)
        else:
            x = read_wav(wav, 0, end)
            x = np.concatenate([x[:1], x]) if len(x) else x
        y = _diff(x.astype(np.float32, copy=False))
        n_hops, channels = len(y) // hop, y.shape[1]
        n_blocks = n_hops // AUDIO_BLOCK_HOPS
        if n_blocks < AUDIO_MIN_BG_BLOCKS:
            continue  # too short to have a background
        hops = y[: n_hops * hop].reshape(n_hops, hop, channels)
        energy = np.einsum("ijk,ijk->ik", hops, hops) / hop  # (hops, channels): mean square, one pass
        blocks = energy[: n_blocks * AUDIO_BLOCK_HOPS].reshape(n_blocks, AUDIO_BLOCK_HOPS, channels).mean(axis=1)
        # bg[b]: median of the blocks before block b (AUDIO_BG_BLOCKS of them; fewer at the file's start)
        bg = np.full((n_hops // AUDIO_BLOCK_HOPS + 1, energy.shape[1]), np.nan, np.float64)
        if n_blocks >= AUDIO_BG_BLOCKS:
            recent = sliding_window_view(blocks, AUDIO_BG_BLOCKS, axis=0)  # (n_blocks - BG + 1, ch, BG)
            bg[AUDIO_BG_BLOCKS : AUDIO_BG_BLOCKS + len(recent)] = np.median(recent, axis=-1)
        if a == 0:
            for b in range(AUDIO_MIN_BG_BLOCKS, min(AUDIO_BG_BLOCKS, n_blocks + 1, len(bg))):
                bg[b] = np.median(blocks[:b], axis=0)
        hop_bg = bg[np.arange(n_hops) // AUDIO_BLOCK_HOPS]
        with np.errstate(invalid="ignore"):
            ratio = 10 * np.log10(np.maximum(energy, 1e-30) / np.maximum(hop_bg, AUDIO_FLOOR))
        ratio = np.nan_to_num(ratio, nan=-np.inf).max(axis=1)
        above = ratio > AUDIO_STEP_DB
        first_hop = a // hop
        own = (start - a) // hop  # hops before this are context, judged by the previous chunk
        rising = np.flatnonzero(above[1:] & ~above[:-1]) + 1
        for j in rising[rising >= max(own, 1)]:
            found.append((first_hop + int(j), float(ratio[j])))
    return found


def refine_onset(wav: Path, hop_index: int, samplerate: float, total: int) -> int | None:
    """The first sample of the event whose energy step was found in hop `hop_index`."""
    hop = _hop_size(samplerate)
    pre, post = int(AUDIO_REFINE_PRE_S * samplerate), int(AUDIO_REFINE_POST_S * samplerate)
    search_from = max(0, (hop_index - 2) * hop)  # a sharp onset lies in this hop or the one before
    a = max(0, search_from - pre)
    b = min(total, (hop_index + 1) * hop + post)
    if b - a < 4 or search_from - a < hop:
        return None  # no background to compare with
    x = read_wav(wav, a, b - a)
    y = np.abs(_diff(x))  # y[i] is sample a + 1 + i
    s0 = search_from - a - 1
    bg_peak = y[:s0].max(axis=0)
    ev = y[s0:]
    ev_peak = ev.max(axis=0)
    c = int(np.argmax(ev_peak / np.maximum(bg_peak, 1e-9)))  # the channel where the event stands out most
    threshold = bg_peak[c] + AUDIO_REFINE_FRACTION * (ev_peak[c] - bg_peak[c])
    hits = np.flatnonzero(ev[:, c] > threshold)
    if not len(hits):
        return None
    return a + 1 + s0 + int(hits[0])


def detect_audio(
    wav: Path,
    blocks_csv: Path,
    samplerate: float,
    windows: Sequence[tuple[int, int]] | None = None,
    table: dict[str, np.ndarray] | None = None,
) -> list[Onset]:
    """Sharp onsets (claps, beeps) in an audio stream, to the sample; t_ns through the stream's blocks.

    `windows`: (start, end) t_ns ranges to search instead of the whole file (only those are read, with
    the 200 ms of background before each). `table`: blocks.csv's first_sample, t_ns and frames columns,
    when the caller has read them already.
    """
    wav, blocks_csv = Path(wav), Path(blocks_csv)
    # fast: adc_ns is often empty
    blocks = read_table(blocks_csv, columns=("first_sample", "t_ns", "frames")) if table is None else table
    try:
        total = int(wav_info(wav)["frames"])
        if not len(blocks.get("first_sample", ())) or total < 2:
            return []
        timeline = AudioTimeline.from_blocks(blocks, samplerate)
        sample_windows = None
        if windows is not None:
            bounds = np.asarray(windows, np.float64).reshape(-1, 2)
            t_first, t_last = timeline.t_ns[0], float(timeline.t_ns_of(total - 1))
            clipped = np.clip(bounds, t_first, t_last)
            # inside the recorded samples now: a NaN is the last sample's time rounded a hair past its end
            samples = timeline.sample_at(clipped)
            samples = np.where(np.isnan(samples) & (clipped >= t_last), total - 1.0, samples)
            sample_windows = [
                (int(np.floor(a)), int(np.ceil(b)) + 1) for a, b in samples if a == a and b == b
            ]  # a == a: not NaN
        onsets = []
        for hop_index, step_db in audio_candidates(wav, samplerate, sample_windows):
            sample = refine_onset(wav, hop_index, samplerate, total)
            if sample is not None:
                t_ns = int(round(float(timeline.t_ns_of(sample))))
                onsets.append(Onset(wav.stem, t_ns, sample, round(step_db, 2)))
    except TakeError:
        raise
    except OSError as e:  # missing or unreadable WAV
        raise TakeError(f"{wav}: cannot read: {e.strerror or e}") from None
    return _merge(onsets)


# --- mocap ----------------------------------------------------------------------------------------


def spike_fraction(
    values: np.ndarray, history: int = MOCAP_HISTORY, z: float = MOCAP_Z, rows: Sequence[tuple[int, int]] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the fraction of channels more than `z` robust SDs from the median of the `history` rows
    before, and the median z over channels. The scale is 1.4826 × MAD, floored at the channel's mean
    absolute step over the whole take (a constant or coarsely quantised channel has a MAD of 0).

    `rows`: (start, end) row ranges to compute (zeros elsewhere) instead of every row; each row's figures
    are the same as in a whole-take pass.
    """
    n, channels = values.shape
    frac = np.zeros(n)
    zmed = np.zeros(n)
    if n <= MOCAP_MIN_HISTORY or channels == 0:
        return frac, zmed
    with np.errstate(invalid="ignore"):
        floor = np.maximum(np.nanmean(np.abs(np.diff(values, axis=0)), axis=0), 1e-9)
    floor = np.nan_to_num(floor, nan=1e-9)
    # the first rows are judged against every row before them: a slow stream (a 32 Hz LSL sensor) has
    # only a few rows before a slate just after the start
    wanted = [(0, n)] if rows is None else list(rows)
    for k in range(MOCAP_MIN_HISTORY, min(history, n)):
        if any(a <= k < b for a, b in wanted):
            before = values[:k]
            med = np.median(before, axis=0)
            scale = np.maximum(1.4826 * np.median(np.abs(before - med), axis=0), floor)
            dev = np.abs(values[k] - med) / scale
            frac[k], zmed[k] = (dev > z).sum() / channels, float(np.median(np.nan_to_num(dev)))
    if n <= history:
        return frac, zmed
    ranges = [(history, n)] if rows is None else [(max(history, a), min(n, b)) for a, b in merge_windows(rows)]
    chunks = [(start, min(b, start + MOCAP_CHUNK_ROWS)) for a, b in ranges for start in range(a, b, MOCAP_CHUNK_ROWS)]
    for start, end in chunks:
        # windows[k] covers rows start+k-history .. start+k-1, the rows before row start+k
        windows = sliding_window_view(values[start - history : end - 1], history, axis=0)  # (rows, ch, history)
        med = np.median(windows, axis=-1)
        mad = np.median(np.abs(windows - med[..., None]), axis=-1)
        scale = np.maximum(1.4826 * mad, floor)
        dev = np.abs(values[start:end] - med) / scale
        frac[start:end] = (dev > z).sum(axis=1) / channels  # NaN (an empty cell) never counts
        zmed[start:end] = np.median(np.nan_to_num(dev), axis=1)
    return frac, zmed


def detect_mocap(
    csv: Path, *, windows: Sequence[tuple[int, int]] | None = None, table: dict[str, np.ndarray] | None = None
) -> list[Onset]:
    """Rows where most channels spike together; t_ns from the row.

    `windows`: (start, end) t_ns ranges to search instead of the whole take (the same onsets as a
    whole-take search finds there). `table`: the file's stream_table, when the caller has read it already.
    """
    csv = Path(csv)
    if table is None:
        table = stream_table(csv.parent, stream_of_table(csv.name), "mocap")
    names = [k for k in table if k not in MOCAP_TIME_COLUMNS]
    if not names or not len(table.get("t_ns", ())):
        return []
    t_ns = table["t_ns"]
    values = np.column_stack([table[k] for k in names]).astype(np.float64)
    rows = None
    if windows is not None:  # each window's rows, and the row before its first (a rise needs it)
        rows = [
            (max(0, int(np.searchsorted(t_ns, a)) - 1), int(np.searchsorted(t_ns, b, side="right"))) for a, b in windows
        ]
    frac, zmed = spike_fraction(values, rows=rows)
    above = frac >= MOCAP_FRACTION
    rising: np.ndarray | list[Any] = np.flatnonzero(above[1:] & ~above[:-1]) + 1
    if windows is not None:
        rising = [i for i in rising if any(a <= t_ns[i] <= b for a, b in windows)]
    return _merge([Onset(csv.stem, int(t_ns[i]), int(i), round(float(zmed[i]), 2)) for i in rising])


# --- takes ----------------------------------------------------------------------------------------


def _manifest(take_dir: Path) -> dict[str, Any]:
    path = take_dir / MANIFEST
    try:
        return load_json(path)
    except OSError as e:
        raise TakeError(f"{path}: cannot read: {e.strerror or e}") from None
    except LOAD_ERRORS as e:
        raise TakeError(f"{path}: not a take manifest: {e}") from None


def detect_take(take_dir: Path) -> dict[str, list[Onset]]:
    """Slate onsets of every stream of a take, by stream name. The streams are the manifest's; a take that
    never finished (no stream summaries yet) is searched by its rig's streams.

    Streams are searched side by side: decoding and numpy release the GIL, and several one-thread video
    decoders beat threads inside each (measured on 2 cores).
    """
    take_dir = Path(take_dir)
    manifest = _manifest(take_dir)
    settings = {s.get("name"): s for s in (manifest.get("rig") or {}).get("streams", [])}
    streams = {
        name: (s.get("kind") or settings.get(name, {}).get("kind"))
        for name, s in (manifest.get("streams") or {}).items()
    } or {name: s.get("kind") for name, s in settings.items()}
    entries = manifest.get("streams") or {}
    cpus = os.cpu_count() or 1
    cameras = sum(kind == "camera" for kind in streams.values())
    threads = max(1, cpus // max(1, cameras))

    def detect(name: str, kind: str) -> list[Onset]:
        table = take_dir / table_file(name, kind)
        if kind == "camera":
            return detect_video(take_dir / stream_media(name, kind, entries.get(name)), table, threads=threads)
        if kind == "audio":
            wav = take_dir / stream_media(name, kind, entries.get(name))
            rate = settings.get(name, {}).get("samplerate") or wav_info(wav)["samplerate"]
            return detect_audio(wav, table, float(rate))
        return detect_mocap(table)

    # the media a slate shows in: not a sync box (it fires them) nor markers (text)
    known = {name: kind for name, kind in streams.items() if kind in ("camera", "audio", "mocap", "lsl")}
    # cameras first: they take longest
    order = sorted(known, key=lambda n: known[n] != "camera")
    with ThreadPoolExecutor(max_workers=max(1, min(cpus, len(order)))) as pool:
        futures = {name: pool.submit(detect, name, known[name]) for name in order}
        return {name: futures[name].result() for name in known}


def match_slates(onsets: dict[str, list[Onset]], reference: str, tolerance_ns: int = 300_000_000) -> list[SlateMatch]:
    """One SlateMatch per onset of `reference`: every stream's nearest onset within the tolerance."""
    if reference not in onsets:
        raise UsageError(f"reference stream {reference!r} is not among the streams ({', '.join(onsets)})")
    ordered = {s: sorted(lst, key=lambda o: o.t_ns) for s, lst in onsets.items()}
    times = {s: np.array([o.t_ns for o in lst], np.int64) for s, lst in ordered.items()}
    matches = []
    for ref in ordered[reference]:
        found: dict[str, Onset | None] = {}
        offsets: dict[str, int | None] = {}
        for s, t in times.items():
            if s == reference:
                found[s], offsets[s] = ref, 0
                continue
            best: Onset | None = None
            if len(t):
                i = int(np.searchsorted(t, ref.t_ns))
                near = [k for k in (i - 1, i) if 0 <= k < len(t)]
                k = min(near, key=lambda k: abs(int(t[k]) - ref.t_ns))
                if abs(int(t[k]) - ref.t_ns) <= tolerance_ns:
                    best = ordered[s][k]
            found[s] = best
            offsets[s] = None if best is None else best.t_ns - ref.t_ns
        matches.append(SlateMatch(reference, ref.t_ns, found, offsets))
    return matches


def slate_offsets(matches: list[SlateMatch]) -> dict[str, dict[str, Any]]:
    """Per stream over all slates: median offset from the reference (ns), spread_ns = max - min of the
    offsets (the range: with few slates a clearer warning than a MAD), mad_ns (median absolute deviation
    from the median), n = slates the stream saw and missed = slates it did not. None where n = 0."""
    streams: list[str] = []
    for m in matches:
        streams += [s for s in m.offsets_ns if s not in streams]
    out: dict[str, dict[str, Any]] = {}
    for s in streams:
        seen = np.array([m.offsets_ns[s] for m in matches if m.offsets_ns.get(s) is not None], np.int64)
        if not len(seen):
            out[s] = {"median_ns": None, "spread_ns": None, "mad_ns": None, "n": 0, "missed": len(matches)}
            continue
        med = float(np.median(seen))
        out[s] = {
            "median_ns": int(round(med)),
            "spread_ns": int(seen.max() - seen.min()),
            "mad_ns": int(round(float(np.median(np.abs(seen - med))))),
            "n": len(seen),
            "missed": len(matches) - len(seen),
        }
    return out

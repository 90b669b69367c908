"""A take's LTC: the frames decoded from its timecode channel into `<stream>.ltc.csv`, and the take's
timecode jam-synced to them (`[rig] timecode = "ltc:<audio stream>:<channel>"`), at the take's stop.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..ltc import LtcDecoder, LtcFrame
from ..take.atomic import Folder
from ..take.layout import LTC_COLUMNS, ltc_file, media_file
from ..take.tables import stream_table
from ..take.timecode import TimecodeRate, take_rate
from ..take.timeline import AudioTimeline
from ..take.wav import pcm_ints, read_pcm, wav_info
from .base import CsvLog

PIECE = 1 << 16  # WAV frames read and decoded at a time
STEP_TOLERANCE_NS = 2_000_000  # an LTC frame starting further than this from one frame after the last: a jump


def decode_take(
    take_dir: Path, manifest: dict[str, Any], stream: str, channel: int, folder: Folder | None = None
) -> dict[str, Any]:
    """Decode LTC from `channel` (from 1) of the take's `stream` WAV into `<stream>.ltc.csv` (each frame's
    start on the shared clock, its sample, label and user bits) and jam-sync the take: the manifest's
    `timecode` becomes LTC's at t0 (a line fitted through every frame, so one misread frame moves nothing),
    `timecode_t0_s` its exact time of day. Returns the `ltc` entry of the manifest (also set there)."""
    rate = take_rate(manifest)
    wav = (folder.anchored if folder is not None else take_dir) / media_file(stream, "audio")
    info = wav_info(wav)
    blocks = stream_table(folder.anchored if folder is not None else take_dir, stream, "audio", time_only=True)
    timeline = AudioTimeline.from_blocks(blocks, float(info["rate"]))
    decoder = LtcDecoder(float(info["rate"]), rate)
    frames: list[LtcFrame] = []
    try:
        for at in range(0, int(info["frames"]), PIECE):
            n = min(PIECE, int(info["frames"]) - at)
            data = pcm_ints(read_pcm(wav, at, n, info), info["sample_format"], info["channels"])
            scale = 1.0 if data.dtype.kind == "f" else float(np.iinfo(data.dtype).max) + 1  # s24: top-aligned
            frames.extend(decoder.write(data[:, channel - 1].astype(np.float32) / scale, at))
    finally:
        decoder.close()
    frames = [f for f in frames if not f.reverse and 0 <= f.sample < int(info["frames"])]
    t_ns = [int(round(float(timeline.t_ns_of(f.sample)))) for f in frames] if frames else []
    log = CsvLog(take_dir / ltc_file(stream), LTC_COLUMNS, folder=folder)
    try:
        for f, t in zip(frames, t_ns):
            log.row((t, f.sample, f.timecode, f"{f.user_bits:08x}"))
    finally:
        log.close()
    entry = ltc_summary(rate, t_ns, [f.timecode for f in frames])
    entry.update(stream=stream, channel=channel)
    manifest["ltc"] = entry
    if entry.get("t0_s") is not None:
        t0_s = entry["t0_s"]
        manifest["timecode"] = rate.timecode(rate.frame_at(t0_s))
        manifest["timecode_t0_s"] = t0_s
        manifest["timecode_source"] = f"ltc:{stream}:{channel}"
    return entry


def ltc_summary(rate: TimecodeRate, t_ns: Sequence[int], labels: Sequence[str]) -> dict[str, Any]:
    """Continuity of decoded LTC (frames, jumps: a label not one after the last or a start not one frame
    after it) and the line through it: t0's time of day on the LTC, its drift against the take's clock."""
    numbers = [rate.frame_number(label) for label in labels]
    day = rate.frames_in_day()
    for i in range(1, len(numbers)):  # across midnight the labels start again
        while numbers[i] < numbers[i - 1] - day // 2:
            numbers[i] += day
    period = 1e9 / float(rate.rate)
    jumps = [
        i
        for i in range(1, len(numbers))
        if numbers[i] - numbers[i - 1] != 1 or abs(t_ns[i] - t_ns[i - 1] - period) > STEP_TOLERANCE_NS
    ]
    entry: dict[str, Any] = {
        "frames": len(numbers),
        "rate": rate.label(),
        "jumps": len(jumps),
        "first_jumps": [labels[i] for i in jumps[:5]],
        "t0_s": None,
    }
    if len(numbers) >= 2:
        t = np.asarray(t_ns, np.float64) / 1e9
        tc = np.asarray(numbers, np.float64) / float(rate.rate)
        slope, intercept = np.polyfit(t, tc, 1)
        entry.update(
            t0_s=float(intercept % 86400),
            drift_ppm=float((slope - 1) * 1e6),
            residual_ms_max=float(np.abs(tc - (slope * t + intercept)).max() * 1e3),
        )
    return entry

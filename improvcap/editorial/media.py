"""A take's media as editors load them: each camera remuxed into MOV (never re-encoded) with a `tmcd`
track, and each WAV copied with its `bext` time_reference and iXML moved to its first sample.

The MOV's first frame is at time 0 and its timecode track labels it with the timecode of the shared-clock
instant the frame was taken at (t0's time of day + its t_ns, to the nearest frame at the take's exact
rate). Every frame keeps its own time (its t_ns since the first: a variable frame rate, and drops, stay
visible), in a track timescale that is a multiple of the rate's numerator, so that the timecode track's
frame rate is exact. A recorded WAV's time_reference is t0, while its first
sample arrived a little later (the first block): the copy says when its first sample was.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from ..errors import TakeError
from ..take.atomic import Folder, rewriting
from ..take.ixml import rewrite_fields
from ..take.mkv import open_video, video_packets
from ..take.timecode import TimecodeRate
from ..take.wav import set_time_reference

IO_BUFFER = 1 << 20


@dataclass(frozen=True)
class Placed:
    """A stream's file in the editorial folder and where it sits on the shared clock."""

    stream: str
    kind: str  # "camera" or "audio"
    file: str  # name in the take's editorial folder
    first_t_ns: int  # the first frame's or sample's time
    end_t_ns: int  # just after the last frame or sample
    rate: Fraction  # frames or samples per second of the media
    start: int  # the first frame's timecode frame (cameras) or sample since midnight (audio)
    count: int  # frames or samples
    timecode: str = ""


def mov_timescale(rate: TimecodeRate) -> int:
    """Ticks per second of a MOV's tracks: a multiple of 1000 (milliseconds, as recorded) and of the rate's
    numerator (whole ticks a frame: 1001 at 30000/1001), at least 10000 (the muxer's floor)."""
    ticks = math.lcm(1000, rate.rate.numerator)
    while ticks < 10000:
        ticks *= 2
    return ticks


def remux_mov(
    mkv: Path, t_ns: np.ndarray, folder: Folder, name: str, rate: TimecodeRate, start_frame: int, reel: str
) -> int:
    """`mkv`'s video packets into `name` (a new MOV in `folder`), each at its frames.csv time since the
    first (`t_ns`: the final clock fit, finer than the Matroska file's milliseconds), with a tmcd track
    starting at frame `start_frame` since midnight; the frames written."""
    src = open_video(mkv)
    try:
        if not src.streams.video:
            raise TakeError(f"{mkv.name}: no video stream")
        ist = src.streams.video[0]
        time_base = Fraction(1, mov_timescale(rate))
        ticks, last = [], -1
        for t in (t_ns - t_ns[0]).tolist():
            last = max(int(round(t * time_base.denominator / 1e9)), last + 1)  # strictly increasing
            ticks.append(last)
        frame_ticks = round(time_base.denominator / rate.rate)
        errors: list[str] = []
        frames = 0
        with rewriting(folder.path / name, "editorial", exclusive=True, folder=folder) as fh:
            with av.open(fh, "w", format="mov", buffer_size=IO_BUFFER) as dst:
                ost = dst.add_stream_from_template(ist)
                ost.codec_context.framerate = rate.rate  # the tmcd track's rate comes from it
                ost.time_base = time_base
                ost.metadata["timecode"] = rate.timecode(start_frame)
                ost.metadata["reel_name"] = reel
                for packet in video_packets(src, ist, errors):
                    if frames >= len(ticks):
                        raise TakeError(f"{mkv.name}: more packets than frames.csv rows ({len(ticks)})")
                    packet.stream = ost
                    packet.time_base = time_base
                    packet.pts = packet.dts = ticks[frames]  # recorded without reordering: one pts a row
                    packet.duration = frame_ticks  # the last frame lasts a frame, as editors show it
                    dst.mux(packet)
                    frames += 1
        if errors:
            raise TakeError(f"{mkv.name}: {errors[0]}")
        return frames
    finally:
        src.close()


def copy_wav(wav: Path, folder: Folder, name: str, samples_since_midnight: int) -> None:
    """`wav` copied into `name` (new, in `folder`), its bext time_reference and iXML timestamp set to
    `samples_since_midnight` (its first sample's time of day), the audio as it is."""
    with rewriting(folder.path / name, "editorial", exclusive=True, folder=folder) as fh:
        with open(wav, "rb") as src:
            shutil.copyfileobj(src, fh, IO_BUFFER)
        fh.flush()
        set_time_reference(fh.fileno(), wav, samples_since_midnight)
        rewrite_fields(fh.fileno(), wav, samples_since_midnight=samples_since_midnight)


def placed_dict(p: Placed) -> dict[str, Any]:
    return {
        "stream": p.stream,
        "kind": p.kind,
        "file": p.file,
        "first_t_ns": p.first_t_ns,
        "end_t_ns": p.end_t_ns,
        "rate": f"{p.rate.numerator}/{p.rate.denominator}",
        "start": p.start,
        "count": p.count,
        **({"timecode": p.timecode} if p.timecode else {}),
    }

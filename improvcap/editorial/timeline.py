"""OpenTimelineIO timelines: every camera and audio stream of a take on its own track, placed by its
shared-clock time; a session's timeline holds its takes one after another, each at its own time.

A clip's source range is its media's own: a camera's from its first frame's timecode at the take's rate,
for as long as its frames span; an audio stream's in samples from its first sample's time of day. Where
it sits on the track is its first frame's (sample's) t_ns since the timeline's start, to the nanosecond
(a gap before it; OTIO times are rational, so nothing is rounded to a frame here).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import opentimelineio as otio

from ..take.timecode import TimecodeRate
from .media import Placed, placed_dict

# the OTIO adapters tried after the timeline's .otio, by the file name they write
ADAPTERS = {"fcpx_xml": ".fcpxml", "cmx_3600": ".edl"}


@dataclass(frozen=True)
class Entry:
    """One stream's clip of one take, `at` seconds after the timeline's start."""

    take: str
    folder: str  # the take's editorial folder, relative to where the timeline is written
    placed: Placed
    at: Fraction


def timeline(name: str, rate: TimecodeRate, start_frame: int, entries: Sequence[Entry]) -> Any:
    """A timeline starting at timecode frame `start_frame` (since midnight, at `rate`)."""
    fps = float(rate.rate)
    tl = otio.schema.Timeline(name=name, global_start_time=otio.opentime.RationalTime(start_frame, fps))
    tl.metadata["improvcap"] = {"timecode_rate": rate.label(), "start_timecode": rate.timecode(start_frame)}
    tracks: dict[str, Any] = {}
    ends: dict[str, Fraction] = {}
    for e in sorted(entries, key=lambda e: (e.at, e.placed.stream)):
        p = e.placed
        track = tracks.get(p.stream)
        if track is None:
            kind = otio.schema.TrackKind.Video if p.kind == "camera" else otio.schema.TrackKind.Audio
            track = tracks[p.stream] = otio.schema.Track(name=p.stream, kind=kind)
            ends[p.stream] = Fraction(0)
        if e.at > ends[p.stream]:
            gap = float((e.at - ends[p.stream]) * rate.rate)
            track.append(
                otio.schema.Gap(source_range=otio.opentime.TimeRange(duration=otio.opentime.RationalTime(gap, fps)))
            )
        span = Fraction(p.end_t_ns - p.first_t_ns, 10**9)
        media_rate = float(p.rate)
        available = otio.opentime.TimeRange(
            otio.opentime.RationalTime(p.start, media_rate),
            otio.opentime.RationalTime(float(span * p.rate), media_rate),
        )
        ref = otio.schema.ExternalReference(target_url=str(Path(e.folder) / p.file), available_range=available)
        clip = otio.schema.Clip(name=f"{e.take} {p.stream}", media_reference=ref, source_range=available)
        clip.metadata["improvcap"] = {"take": e.take, **placed_dict(p)}
        track.append(clip)
        ends[p.stream] = e.at + span
    video = [t for t in tracks.values() if t.kind == otio.schema.TrackKind.Video]
    audio = [t for t in tracks.values() if t.kind == otio.schema.TrackKind.Audio]
    tl.tracks.extend(video + audio)  # video first, as editors stack them
    return tl


# the rates the FCP XML and EDL adapters know, as they spell them
ADAPTER_RATES = (23.98, 24.0, 25.0, 29.97, 30.0, 50.0, 59.94, 60.0)


def conformed(tl: Any, rate: TimecodeRate) -> Any:
    """A copy of `tl` with every time in whole frames at the video rate as the adapters spell it (29.97,
    not 30000/1001; audio clips too): the FCP XML and EDL adapters know a few rates, one rate per
    timeline, and frames. The .otio keeps the exact times."""
    fps = min(ADAPTER_RATES, key=lambda r: abs(r - float(rate.rate)))
    if abs(fps - float(rate.rate)) > 0.01:
        fps = float(rate.rate)
    out = tl.deepcopy()

    def at(t: Any) -> Any:  # whole frames: an EDL's record durations are sums of its events' frames
        return otio.opentime.RationalTime(round(t.to_seconds() * float(rate.rate)), fps)

    def span(r: Any) -> Any:
        return otio.opentime.TimeRange(at(r.start_time), at(r.duration))

    out.global_start_time = at(out.global_start_time) if out.global_start_time is not None else None
    for item in out.find_children():
        if isinstance(item, (otio.schema.Clip, otio.schema.Gap)) and item.source_range is not None:
            item.source_range = span(item.source_range)
        if isinstance(item, otio.schema.Clip) and item.media_reference.available_range is not None:
            item.media_reference.available_range = span(item.media_reference.available_range)
    return out


def on_storyline(tl: Any) -> Any:
    """A copy of `tl` whose first track is one gap as long as the timeline, every stream's track connected
    to it: FCP X XML connects a clip to the primary storyline's item at its start, and a stream that starts
    before the first track's clip (or between two takes) would have none."""
    out = tl.deepcopy()
    spine = otio.schema.Track(name="storyline", kind=otio.schema.TrackKind.Video)
    spine.append(otio.schema.Gap(source_range=otio.opentime.TimeRange(duration=tl.duration())))
    out.tracks.insert(0, spine)
    return out


def installed_adapters() -> list[str]:
    """The OTIO adapters of ADAPTERS that this installation has (plugins: `pip install improvcap[editorial]`)."""
    names = {a.name for a in otio.plugins.ActiveManifest().adapters}
    return [a for a in ADAPTERS if a in names]


def single_video(tl: Any, camera: str) -> Any:
    """A copy of `tl` with one picture track, `camera`'s: a CMX 3600 EDL holds one (its audio tracks stay)."""
    out = tl.deepcopy()
    for track in list(out.tracks):
        if track.kind == otio.schema.TrackKind.Video and track.name != camera:
            out.tracks.remove(track)
    return out

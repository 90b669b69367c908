"""A take's clips as WebDataset samples: `<key>.<camera>.mp4`, `<key>.<audio>.flac`, `<key>.<stream>.npy`
and `<key>.json` with the scene, take, clip range, every stream's per-row t_ns, the sync.csv rows of the
clip and the performers with the consent that admitted it.

The key is `<session>/<take>/<clip number>` (dots become '_': WebDataset splits a name at its first dot).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..take.events import read_events
from ..take.layout import EVENTS, SYNC, table_file
from ..take.reader import Take
from ..take.tables import read_markers, read_table, stream_table
from ..take.timeline import AudioTimeline
from .clip_media import CameraClips, TableRows, audio_extension, write_audio, write_json, write_npy
from .clips import MARKS, Clip, cut
from .shards import ShardWriter

TABLE_KINDS = ("mocap", "lsl")  # a .npy of channel values per clip
TIME_ONLY_KINDS = ("sync",)  # t_ns in the JSON only (a sync box's pulses)


def take_prefix(session: str, take: str) -> str:
    clean = lambda s: re.sub(r"[^A-Za-z0-9_-]", "_", s)  # noqa: E731
    return f"{clean(session)}/{clean(take)}"


def sample_key(session: str, take: str, clip: int) -> str:
    return f"{take_prefix(session, take)}/{clip:05d}"


@dataclass
class _Stream:
    name: str
    kind: str
    table: dict[str, np.ndarray]
    timeline: AudioTimeline | None = None
    values: list[str] | None = None  # markers' text

    def rows(self, clip: Clip) -> range:
        t = self.table["t_ns"]
        return range(int(np.searchsorted(t, clip.start_ns, "left")), int(np.searchsorted(t, clip.end_ns, "left")))

    def end_ns(self) -> int | None:
        if self.timeline is not None and self.timeline.total:
            return int(np.ceil(self.timeline.t_ns_of(self.timeline.total - 1)))
        return int(self.table["t_ns"][-1]) if len(self.table["t_ns"]) else None


class TakeSamples:
    """The clips of one take and the streams they are cut from."""

    def __init__(self, take: Take, clip_mode: str | float) -> None:
        self.take = take
        self.manifest = take.manifest
        self.streams: list[_Stream] = []
        for name, info in take.streams.items():
            if info.kind == "markers":
                table, values = read_markers(take.path / table_file(name, "markers"))
                self.streams.append(_Stream(name, info.kind, table, values=values))
                continue
            table = stream_table(take.path, name, info.kind, time_only=True)
            timeline = AudioTimeline.from_blocks(table, float(info.samplerate or 0)) if info.kind == "audio" else None
            self.streams.append(_Stream(name, info.kind, table, timeline))
        events = read_events(take.path / EVENTS) if (take.path / EVENTS).is_file() else []
        self.events = sorted(events)
        starts = [int(s.table["t_ns"][0]) for s in self.streams if len(s.table["t_ns"])]
        ends = [e for s in self.streams if (e := s.end_ns()) is not None]
        span = (min(starts), max(ends) + 1) if starts else (0, 0)
        marks = [(t, detail) for t, kind, _, detail in self.events if kind == "mark"]
        self.clips = cut(clip_mode, span, marks)
        self.clip_mode = clip_mode
        self.sync = read_table(take.path / SYNC, dtype=np.float64) if (take.path / SYNC).is_file() else {}

    def no_clip_reason(self) -> str | None:
        if self.clips:
            return None
        if self.clip_mode == MARKS:
            marks = sum(kind == "mark" for _, kind, _, _ in self.events)
            return f"no clips: {marks} mark{'s' if marks != 1 else ''} (--clip marks cuts between two marks)"
        return "no clips: the take holds no rows"

    def write(
        self,
        shards: ShardWriter,
        performers: Sequence[dict[str, Any]],
        scope: str,
        done: Callable[[str], bool] = lambda key: False,
    ) -> Iterator[str]:
        """Write every clip as one sample (skipping keys `done` says are written); yields each key written."""
        m = self.manifest
        cameras = {s.name: CameraClips(self.take.media(s.name, "camera")) for s in self.streams if s.kind == "camera"}
        tables = {
            s.name: TableRows(self.take.path / table_file(s.name, s.kind), len(s.table))
            for s in self.streams
            if s.kind in TABLE_KINDS
        }
        try:
            for clip in self.clips:
                key = sample_key(str(m["session"]), self.take.path.name, clip.index)
                if done(key):
                    continue
                with shards.sample(key) as member:
                    streams: dict[str, Any] = {}
                    for s in self.streams:
                        streams[s.name] = self._stream_clip(s, clip, member, cameras, tables)
                    with member("json") as fh:
                        write_json(self._description(clip, streams, performers, scope), fh)
                yield key
        finally:
            for c in cameras.values():
                c.close()
            for t in tables.values():
                t.close()

    def _stream_clip(
        self, s: _Stream, clip: Clip, member: Callable, cameras: dict[str, CameraClips], tables: dict[str, TableRows]
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {"kind": s.kind}
        if s.kind == "audio":
            assert s.timeline is not None
            samples = range(s.timeline.first_sample_at(clip.start_ns), s.timeline.first_sample_at(clip.end_ns))
            blocks = s.rows(clip)
            wav = self.take.media(s.name, "audio")
            ext = audio_extension(wav)
            with member(f"{s.name}.{ext}") as fh:
                entry.update(write_audio(wav, samples, fh))
            entry.update(
                file=f"{s.name}.{ext}",
                first_sample=samples.start,
                first_sample_t_ns=int(round(float(s.timeline.t_ns_of(samples.start)))) if len(samples) else None,
                blocks={
                    "first_sample": s.table["first_sample"][blocks.start : blocks.stop],
                    "t_ns": s.table["t_ns"][blocks.start : blocks.stop],
                },
            )
            return entry
        rows = s.rows(clip)
        entry["index"] = s.table["index"][rows.start : rows.stop]
        entry["t_ns"] = s.table["t_ns"][rows.start : rows.stop]
        if s.kind == "camera":
            with member(f"{s.name}.mp4") as fh:
                entry.update(
                    cameras[s.name].write_mp4(rows, s.table["t_ns"], clip.start_ns, fh, more=clip is not self.clips[-1])
                )
            entry["file"] = f"{s.name}.mp4"
        elif s.kind in TABLE_KINDS:
            with member(f"{s.name}.npy") as fh:
                entry.update(write_npy(tables[s.name], rows, fh))
            entry["file"] = f"{s.name}.npy"
        elif s.kind == "markers" and s.values is not None:
            entry["values"] = s.values[rows.start : rows.stop]
        return entry

    def _description(
        self, clip: Clip, streams: dict[str, Any], performers: Sequence[dict[str, Any]], scope: str
    ) -> dict[str, Any]:
        m = self.manifest
        sync: dict[str, Any] = {}
        if self.sync:
            t = self.sync["t_ns"]
            a, b = int(np.searchsorted(t, clip.start_ns, "left")), int(np.searchsorted(t, clip.end_ns, "left"))
            for col, values in self.sync.items():
                piece = values[a:b]
                sync[col] = piece
        return {
            "session": m.get("session"),
            "scene": m.get("scene"),
            "take": self.take.path.name,
            "take_number": m.get("take"),
            "t0_utc": m.get("t0_utc"),
            "timecode": m.get("timecode"),
            "status": m.get("status"),
            "master": m.get("rig", {}).get("master"),
            "clip": {
                **clip.as_dict(),
                "mode": self.clip_mode if isinstance(self.clip_mode, str) else "seconds",
                **({"seconds": self.clip_mode} if not isinstance(self.clip_mode, str) else {}),
            },
            "streams": streams,
            "sync": sync,
            "events": [
                {"t_ns": t, "kind": k, "stream": st, "detail": d}
                for t, k, st, d in self.events
                if clip.start_ns <= t < clip.end_ns
            ],
            "scope": scope,
            "performers": list(performers),
        }

"""The reader API (DESIGN section 4): `open_take(path)` and aligned bundles along the master timeline.

`Take.frames()` walks sync.csv row by row and keeps one cursor per stream: a PyAV decoder per camera
holding only its current frame, a buffered window of about a second per WAV file, and a line reader per
mocap CSV. Memory therefore stays flat however long the take; besides the bundle being yielded, it holds
each camera's frame timestamp table (a few numbers per frame) and one second of audio per stream.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import av
import numpy as np

from ..errors import TakeError
from .layout import (
    FORMAT,
    LAYOUTS,
    MANIFEST,
    MOCAP,
    NAME_RE,
    SYNC,
    SYNC_INDEX,
    SYNC_LEAD_COLUMNS,
    SYNC_SAMPLE,
    stream_media,
    table_file,
)
from .manifest import LOAD_ERRORS, load_json
from .sync import SYNTHETIC_RATE, has_sync_columns, nominal_rate
from .tables import read_markers, read_table, stream_table
from .timeline import AudioTimeline
from .wav import read_wav, wav_info

REBUILD_HINT = "rebuild it with improvcap.take.sync.build_sync(take_dir, manifest)"
_TIME_COLUMNS = MOCAP.time_columns  # a mocap table's columns before its channels


@dataclass(frozen=True)
class StreamInfo:
    """One stream of a take. channels/samplerate: audio (channels also mocap); width/height: cameras."""

    name: str
    kind: str
    driver: str
    nominal_rate: float
    channels: int | None = None
    samplerate: int | None = None
    width: int | None = None
    height: int | None = None
    channel_names: tuple[str, ...] = ()
    count: int | None = None
    files: tuple[Path, ...] = ()


@dataclass
class Bundle:
    """Everything recorded at one tick of the master timeline.

    video: camera -> decoded frame (H x W x 3 for rgb24/bgr24), None at a gap.
    audio: stream -> float32 (samples, channels): the samples whose time lies in [t_ns, next tick's t_ns).
    mocap: stream -> float32 channel values of the matched row, None at a gap.
    """

    tick: int
    t_ns: int
    video: dict[str, np.ndarray | None] = field(default_factory=dict)
    audio: dict[str, np.ndarray] = field(default_factory=dict)
    mocap: dict[str, np.ndarray | None] = field(default_factory=dict)


# --- per-stream cursors for frames() ------------------------------------------------------------


class _VideoCursor:
    """Decodes one camera's mkv forward, keeping only the current frame; frames are found by their pts."""

    def __init__(self, mkv: Path, table: dict[str, np.ndarray], video_format: str) -> None:
        order = np.argsort(table["index"], kind="stable")
        self._index = table["index"][order]
        self._pts = table["pts"][order]
        self._format = video_format
        try:
            self._container = av.open(str(mkv))
            self._stream = self._container.streams.video[0]
        except (av.FFmpegError, IndexError) as e:
            raise TakeError(f"{mkv}: cannot open the video: {e}") from None
        self._stream.thread_type = "AUTO"
        self._decoded: Iterator[av.VideoFrame] | None = None
        self._current: av.VideoFrame | None = None
        self._current_pts = -math.inf
        self._cached: tuple[int, np.ndarray] | None = None

    def _start(self, pts: int) -> None:
        if pts > 0:  # start at the keyframe before the first frame wanted, not at the file's start
            try:
                self._container.seek(pts, stream=self._stream, backward=True)
            except av.FFmpegError:
                self._container.seek(0)
        self._decoded = self._container.decode(self._stream)

    def get(self, index: int) -> np.ndarray | None:
        if self._cached is not None and self._cached[0] == index:
            return self._cached[1]  # a slower camera: the same frame on consecutive ticks
        k = int(np.searchsorted(self._index, index))
        if k >= len(self._index) or self._index[k] != index:
            return None
        target = int(self._pts[k])
        if self._decoded is None:
            self._start(target if k > 0 else 0)
        assert self._decoded is not None
        try:
            while self._current_pts < target:
                self._current = next(self._decoded)
                pts = self._current.pts
                self._current_pts = -math.inf if pts is None else pts
        except (StopIteration, av.FFmpegError):
            self._current_pts = math.inf  # the file ends early (a crash cut it): no more frames
            return None
        if self._current_pts != target or self._current is None:
            return None  # the row's frame is not in the file
        frame = self._current.to_ndarray(format=self._format)
        self._cached = (index, frame)
        return frame

    def close(self) -> None:
        self._container.close()


class _AudioCursor:
    """Reads a WAV file forward through a window of about a second."""

    def __init__(self, path: Path) -> None:
        info = wav_info(path)
        self.path = path
        self.total = int(info["frames"])
        self.channels = int(info["channels"])
        self._chunk = max(1, int(info["rate"]))
        self._start = 0
        self._buffer = np.zeros((0, self.channels), np.float32)

    def take(self, a: int, b: int) -> np.ndarray:
        a, b = max(0, min(a, self.total)), max(0, min(b, self.total))
        if b <= a:
            return np.zeros((0, self.channels), np.float32)
        if not (self._start <= a and b <= self._start + len(self._buffer)):
            self._start = a
            self._buffer = read_wav(self.path, a, max(b - a, self._chunk))
        return self._buffer[a - self._start : b - self._start].copy()


class _MocapCursor:
    """Reads a mocap CSV forward line by line; parses only the rows asked for."""

    def __init__(self, path: Path) -> None:
        try:
            self._fh: TextIO = open(path, encoding="utf-8", newline="")
        except OSError as e:
            raise TakeError(f"{path}: cannot read: {e.strerror or e}") from None
        names = self._fh.readline().strip().split(",")
        self._values = [i for i, n in enumerate(names) if n not in _TIME_COLUMNS]
        self._row = -1
        self._line = ""
        self._cached: tuple[int, np.ndarray] | None = None

    def get(self, index: int) -> np.ndarray | None:
        if self._cached is not None and self._cached[0] == index:
            return self._cached[1]
        while self._row < index:
            line = self._fh.readline()
            if not line.endswith("\n"):  # the end, or a row torn by a crash
                self._row = 1 << 62
                return None
            self._row, self._line = int(line[: line.index(",")]), line
        if self._row != index:
            return None
        cells = self._line.rstrip("\r\n").split(",")
        values = np.array([cells[i] for i in self._values], dtype=np.float32)
        self._cached = (index, values)
        return values

    def close(self) -> None:
        self._fh.close()


def _boundary(cell: str, seen_valid: bool, total: int) -> int:
    """First sample at or after a tick: ceil of its fractional index; outside the audio, 0 or the end."""
    if cell:
        return min(total, max(0, math.ceil(float(cell))))
    return total if seen_valid else 0


# --- the take -----------------------------------------------------------------------------------


class Take:
    """A recorded take folder: manifest, streams and aligned access along the master timeline."""

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest
        self.master: str | None = manifest["rig"].get("master")
        self.streams: dict[str, StreamInfo] = {}
        for spec in manifest["rig"]["streams"]:
            name = spec.get("name")
            # a stream's name becomes a file name: a manifest's name that is not one never leaves the take
            if not isinstance(name, str) or not NAME_RE.match(name) or spec.get("kind") not in LAYOUTS:
                raise TakeError(
                    f"{path}: {MANIFEST} names a stream {str(name)!r} of kind "
                    f"{str(spec.get('kind'))!r}: not a stream of a take"
                )
            if (path / table_file(spec["name"], spec["kind"])).exists():
                self.streams[spec["name"]] = self._info(spec)
        self.master_rate = nominal_rate(manifest, self.master) if self.master else SYNTHETIC_RATE
        self._timelines: dict[str, AudioTimeline] = {}

    def __repr__(self) -> str:
        return f"Take({str(self.path)!r}, master={self.master!r}, streams={list(self.streams)})"

    def media(self, name: str, kind: str) -> Path:
        """The stream's media file (an ingested one under its own suffix)."""
        return self.path / stream_media(name, kind, (self.manifest.get("streams") or {}).get(name))

    def _info(self, spec: dict[str, Any]) -> StreamInfo:
        name, kind = spec["name"], spec["kind"]
        summary = (self.manifest.get("streams") or {}).get(name) or {}
        device = summary.get("device") or {}
        listed = summary.get("files")
        files = (
            tuple(self.path / f for f in listed)
            if listed
            else tuple(p for f in LAYOUTS[kind].files(name) if (p := self.path / f).exists())
        )
        info: dict[str, Any] = {
            "name": name,
            "kind": kind,
            "driver": spec["driver"],
            "nominal_rate": nominal_rate(self.manifest, name),
            "count": summary.get("count"),
            "files": files,
        }
        if kind == "camera":
            info["width"] = int(device.get("width") or spec["width"])
            info["height"] = int(device.get("height") or spec["height"])
        elif kind == "audio":
            wav = self.media(name, kind)
            fmt = wav_info(wav) if wav.exists() else {}
            info["channels"] = int(fmt.get("channels") or spec["channels"])
            info["samplerate"] = int(fmt.get("rate") or spec["samplerate"])
        else:
            with open(self.path / table_file(name, kind), encoding="utf-8") as fh:
                header = fh.readline().strip().split(",")
            info["channel_names"] = tuple(n for n in header if n not in LAYOUTS[kind].columns)
            info["channels"] = len(info["channel_names"])
        return StreamInfo(**info)

    def _stream(self, name: str, kind: str | None = None) -> StreamInfo:
        info = self.streams.get(name)
        if info is None or (kind is not None and info.kind != kind):
            what = f"{kind} stream" if kind else "stream"
            have = ", ".join(n for n, s in self.streams.items() if kind is None or s.kind == kind) or "none"
            raise TakeError(f"{self.path}: no {what} {name!r} (this take has: {have})")
        return info

    # random access

    def frame_times(self, stream: str) -> np.ndarray:
        """t_ns (int64) of every frame of a camera, every row of a mocap stream, every block of an audio stream."""
        info = self._stream(stream)
        return stream_table(self.path, stream, info.kind)["t_ns"]

    def mocap(self, stream: str) -> dict[str, np.ndarray]:
        """A mocap stream's columns: index, t_ns, device_ns, host_ns, counter (int64) and
        values (n, channels) float32, in the order of StreamInfo.channel_names."""
        return self._rows(self._stream(stream, "mocap"))

    def lsl(self, stream: str) -> dict[str, np.ndarray]:
        """An LSL stream's columns: index, t_ns, device_ns, host_ns (int64) and values (n, channels)
        float32, in the order of StreamInfo.channel_names (the stream's channel labels)."""
        return self._rows(self._stream(stream, "lsl"))

    def markers(self, stream: str) -> tuple[dict[str, np.ndarray], list[str]]:
        """An LSL marker stream's columns index, t_ns, device_ns, host_ns (int64), and each marker's text."""
        return read_markers(self.path / table_file(stream, self._stream(stream, "markers").kind))

    def _rows(self, info: StreamInfo) -> dict[str, np.ndarray]:
        table = stream_table(self.path, info.name, info.kind)
        out = {k: table[k] for k in LAYOUTS[info.kind].time_columns if k in table}
        out["values"] = (
            np.stack([table[c] for c in info.channel_names], axis=1).astype(np.float32)
            if info.channel_names
            else np.zeros((len(table["t_ns"]), 0), np.float32)
        )
        return out

    def audio(self, stream: str, t0_ns: int, t1_ns: int) -> np.ndarray:
        """The samples of an audio stream whose time lies in [t0_ns, t1_ns), float32 (samples, channels)."""
        info = self._stream(stream, "audio")
        timeline = self._timelines.get(stream)
        if timeline is None:  # kept: random access is usually many short reads
            blocks = stream_table(self.path, stream, "audio")
            timeline = self._timelines[stream] = AudioTimeline.from_blocks(blocks, float(info.samplerate or 0))
        if timeline.total == 0:
            return np.zeros((0, info.channels or 0), np.float32)
        a, b = timeline.first_sample_at(t0_ns), timeline.first_sample_at(t1_ns)
        return read_wav(self.media(stream, "audio"), a, max(0, b - a))

    def sync(self) -> dict[str, np.ndarray]:
        """sync.csv as float64 columns (NaN in the gaps), for analysis; frames() reads it lazily instead."""
        return read_table(self.path / SYNC, dtype=np.float64)

    # the aligned walk

    def frames(
        self,
        streams: list[str] | None = None,
        video_format: str = "rgb24",
        start_tick: int = 0,
        stop_tick: int | None = None,
    ) -> Iterator[Bundle]:
        """Bundles for the ticks start_tick <= tick < stop_tick, lazily, in constant memory.

        `streams` picks streams by name (default: every stream in sync.csv and the master camera: not a sync
        box, markers or an irregular stream; `frame_times` gives their t_ns, `markers` the markers).
        `video_format` is any PyAV pixel format ("rgb24", "bgr24", "gray", ...).
        """
        wanted = (
            [n for n, s in self.streams.items() if n == self.master or has_sync_columns(s.kind, s.nominal_rate)]
            if streams is None
            else list(streams)
        )
        for name in wanted:
            self._stream(name)  # an unknown name fails here, not at the first bundle
        return self._walk(wanted, video_format, start_tick, stop_tick)

    def _walk(self, wanted: list[str], video_format: str, start_tick: int, stop_tick: int | None) -> Iterator[Bundle]:
        with open(self.path / SYNC, encoding="utf-8", newline="") as fh:
            rows = csv.reader(fh)
            header = next(rows, None)
            if header is None or tuple(header[:2]) != SYNC_LEAD_COLUMNS:
                raise TakeError(f"{self.path / SYNC}: not a sync table; {REBUILD_HINT}")
            col = {n: i for i, n in enumerate(header)}
            for name in wanted:
                if name != self.master and not ({name + SYNC_INDEX, name + SYNC_SAMPLE} & col.keys()):
                    raise TakeError(f"{self.path / SYNC}: no column for {name}; {REBUILD_HINT}")
            yield from self._bundles(rows, col, wanted, video_format, start_tick, stop_tick)

    def _bundles(
        self,
        rows: Iterator[list[str]],
        col: dict[str, int],
        wanted: list[str],
        video_format: str,
        start_tick: int,
        stop_tick: int | None,
    ) -> Iterator[Bundle]:
        video: dict[str, _VideoCursor] = {}
        audio: dict[str, _AudioCursor] = {}
        mocap: dict[str, _MocapCursor] = {}
        try:
            for name in wanted:
                kind = self.streams[name].kind
                if kind == "camera":
                    video[name] = _VideoCursor(
                        self.media(name, kind), stream_table(self.path, name, "camera"), video_format
                    )
                elif kind == "audio":
                    audio[name] = _AudioCursor(self.media(name, kind))
                else:
                    mocap[name] = _MocapCursor(self.path / table_file(name, kind))
            seen = dict.fromkeys(audio, False)  # audio cells are empty before the audio starts and after it ends
            per_tick = {n: self.streams[n].samplerate / self.master_rate for n in audio}  # type: ignore[operator]
            row = next(rows, None)
            while row is not None:
                following = next(rows, None)
                tick = int(row[0])
                if stop_tick is not None and tick >= stop_tick:
                    break
                starts = {}
                for name, cursor in audio.items():
                    cell = row[col[name + SYNC_SAMPLE]]
                    starts[name] = _boundary(cell, seen[name], cursor.total)
                    seen[name] = seen[name] or bool(cell)
                if tick < start_tick:
                    row = following
                    continue
                bundle = Bundle(tick=tick, t_ns=int(row[1]))
                for name, vc in video.items():
                    cell = str(tick) if name == self.master else row[col[name + SYNC_INDEX]]
                    bundle.video[name] = vc.get(int(cell)) if cell else None
                for name, cursor in audio.items():
                    cell = row[col[name + SYNC_SAMPLE]]
                    if following is not None:
                        end = _boundary(following[col[name + SYNC_SAMPLE]], seen[name], cursor.total)
                    elif cell:  # the last tick spans one nominal master period
                        end = min(cursor.total, math.ceil(float(cell) + per_tick[name]))
                    else:
                        end = starts[name]
                    bundle.audio[name] = cursor.take(starts[name], end)
                for name, mc in mocap.items():
                    cell = row[col[name + SYNC_INDEX]]
                    bundle.mocap[name] = mc.get(int(cell)) if cell else None
                yield bundle
                row = following
        finally:
            closing: list[_VideoCursor | _MocapCursor] = [*video.values(), *mocap.values()]
            for c in closing:
                c.close()


def open_take(path: str | Path) -> Take:
    """Open a take folder for reading; TakeError (one line) if it is not a take or has no sync.csv."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise TakeError(f"{path}: not a take folder (no {MANIFEST})")
    try:
        manifest = load_json(manifest_path)
    except LOAD_ERRORS as e:
        raise TakeError(f"{manifest_path}: unreadable manifest: {e}") from None
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != FORMAT
        or not isinstance(manifest.get("rig"), dict)
        or not isinstance(manifest["rig"].get("streams"), list)
    ):
        raise TakeError(f"{path}: {MANIFEST} is not an improvcap take manifest")
    if not (path / SYNC).is_file():
        raise TakeError(f"{path}: no sync.csv; {REBUILD_HINT}")
    return Take(path, manifest)

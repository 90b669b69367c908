"""A file recorded elsewhere, as ingest sees it: its kind, rate, each frame's or sample's own time, the
timecode it carries, and its audio read in pieces (a WAV, or a video file's first audio track)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..errors import UsageError
from ..take.layout import INGEST_SUFFIXES
from ..take.mkv import video_packets
from ..take.wav import read_wav, wav_info

PIECE = 1 << 16  # audio frames read at a time


@dataclass(frozen=True)
class Source:
    """What ingest needs of a file. Times are the file's own, in ns from its first frame (a video) or
    sample (a WAV); a video's audio track starts `audio_start_ns` after its first frame."""

    path: Path
    kind: str  # "camera" or "audio"
    suffix: str
    rate: Fraction  # frames per second (video) or samples per second (audio)
    count: int
    pts: np.ndarray | None  # a video's packets' pts in display order
    file_ns: np.ndarray | None  # a video's frames' own times
    timecode: str | None  # a video's start timecode (QuickTime/MXF tmcd), as its container spells it
    time_reference: int | None  # a BWF's first sample in samples since midnight
    audio_rate: int | None
    audio_channels: int
    audio_start_ns: int
    width: int | None = None
    height: int | None = None
    codec: str | None = None

    def describe(self) -> dict[str, object]:
        """The file as the stream's `device` entry of take.json records it."""
        out: dict[str, object] = {"driver": "ingest", "file": self.path.name}
        if self.kind == "camera":
            out.update(
                width=self.width, height=self.height, fps=float(self.rate), codec=self.codec, timecode=self.timecode
            )
        else:
            out.update(samplerate=int(self.rate), channels=self.audio_channels, time_reference=self.time_reference)
        return out


def probe(path: Path) -> Source:
    """The file's kind from its suffix, then what it holds; UsageError for one that cannot be ingested."""
    suffix = path.suffix.lower()
    kind = next((k for k, suffixes in INGEST_SUFFIXES.items() if suffix in suffixes), None)
    if kind is None:
        known = ", ".join(s for suffixes in INGEST_SUFFIXES.values() for s in suffixes)
        raise UsageError(f"{path.name}: not a file ingest reads (video or audio files: {known})")
    if not path.is_file() or path.is_symlink():
        raise UsageError(f"{path}: not a regular file")
    return _video(path, suffix) if kind == "camera" else _wav(path, suffix)


def _wav(path: Path, suffix: str) -> Source:
    try:
        info = wav_info(path)
        read_wav(path, 0, 1)  # a sample format this reads
    except Exception as e:  # noqa: BLE001 - any unreadable header is one line
        raise UsageError(f"{path.name}: not a readable WAV ({e})") from None
    if not info["frames"]:
        raise UsageError(f"{path.name}: holds no samples")
    # a recorder given no timecode writes 0 (and a take at midnight itself is not worth the confusion)
    reference = info["time_reference"] or None
    return Source(
        path,
        "audio",
        suffix,
        Fraction(int(info["rate"])),
        int(info["frames"]),
        None,
        None,
        None,
        reference,
        int(info["rate"]),
        int(info["channels"]),
        0,
    )


# frame rates cameras are set to: a file's average rate (29.9998 from its timestamps) is taken as the one
# it is within 0.1 % of
STANDARD_FPS = (
    Fraction(24000, 1001),
    Fraction(24),
    Fraction(25),
    Fraction(30000, 1001),
    Fraction(30),
    Fraction(48),
    Fraction(50),
    Fraction(60000, 1001),
    Fraction(60),
    Fraction(100),
    Fraction(120000, 1001),
    Fraction(120),
)


def _nominal(rate: Fraction | None) -> Fraction | None:
    if not rate:
        return None
    near = min(STANDARD_FPS, key=lambda r: abs(r - rate))
    return near if abs(near / Fraction(rate) - 1) < Fraction(1, 1000) else Fraction(rate)


def _timecode(container: object) -> str | None:
    for meta in [getattr(s, "metadata", {}) for s in container.streams] + [container.metadata]:  # type: ignore[attr-defined]
        if isinstance(meta.get("timecode"), str):
            return meta["timecode"]
    return None


def _video(path: Path, suffix: str) -> Source:
    try:
        container = av.open(str(path))
    except av.FFmpegError as e:
        raise UsageError(f"{path.name}: not a readable video ({getattr(e, 'strerror', None) or e})") from None
    try:
        if not container.streams.video:
            raise UsageError(f"{path.name}: no video stream")
        video = container.streams.video[0]
        rate = _nominal(video.average_rate or video.guessed_rate)
        if not rate or rate <= 0:
            raise UsageError(f"{path.name}: its video has no frame rate")
        audio = container.streams.audio[0] if container.streams.audio else None
        errors: list[str] = []
        pts = [p.pts for p in video_packets(container, video, errors)]
        if errors or not pts or any(p is None for p in pts):
            raise UsageError(
                f"{path.name}: its video cannot be read to the end"
                + (f" ({errors[0]})" if errors else " (packets without times)")
            )
        stored = np.asarray(pts, np.int64)
        if len(stored) > 1 and (np.diff(stored) <= 0).any():
            # a take's streams keep their frames in the order they are shown (one pts a row, in file order),
            # which editorial and the exports rely on
            raise UsageError(
                f"{path.name}: its video stores frames out of display order (B-frames), which a take's "
                "streams do not: bring it in as ProRes, DNxHR, MJPEG or H.264/HEVC without B-frames"
            )
        if video.time_base is None:  # PyAV's None for a 0/0 time base, which FFmpeg gives no demuxed stream
            raise UsageError(f"{path.name}: its video stream has no time base")
        tb = Fraction(video.time_base)
        file_ns = np.asarray([round((int(p) - int(stored[0])) * tb * 10**9) for p in stored], np.int64)
        start_ns = 0
        if audio is not None and audio.start_time is not None and video.start_time is not None:
            if audio.time_base is None:
                raise UsageError(f"{path.name}: its audio stream has no time base")
            start_ns = round((audio.start_time * Fraction(audio.time_base) - int(stored[0]) * tb) * 10**9)
        return Source(
            path,
            "camera",
            suffix,
            Fraction(rate),
            len(stored),
            stored,
            file_ns,
            _timecode(container),
            None,
            audio.codec_context.sample_rate if audio is not None else None,
            audio.codec_context.layout.nb_channels if audio is not None else 0,
            start_ns,
            video.codec_context.width,
            video.codec_context.height,
            video.codec_context.name,
        )
    finally:
        container.close()


def audio_pieces(src: Source) -> Iterator[tuple[int, np.ndarray]]:
    """The file's audio in order as (first sample, float32 (frames, channels)) pieces."""
    if src.kind == "audio":
        for at in range(0, src.count, PIECE):
            yield at, read_wav(src.path, at, min(PIECE, src.count - at))
        return
    if src.audio_rate is None:
        raise UsageError(f"{src.path.name}: has no audio track")
    with av.open(str(src.path)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout=stream.layout.name, rate=stream.codec_context.sample_rate)
        at = 0
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                data = out.to_ndarray().reshape(-1, src.audio_channels)
                yield at, data
                at += len(data)


def audio_windows(src: Source, windows: list[tuple[int, int]]) -> list[np.ndarray]:
    """The file's samples [a, b) for each window, read in one pass (float32 (frames, channels))."""
    out = [np.zeros((0, src.audio_channels), np.float32) for _ in windows]
    if src.kind == "audio":
        return [read_wav(src.path, a, b - a) for a, b in windows]
    for at, data in audio_pieces(src):
        for i, (a, b) in enumerate(windows):
            lo, hi = max(a, at), min(b, at + len(data))
            if lo < hi:
                out[i] = np.concatenate([out[i], data[lo - at : hi - at]])
        if windows and at > max(b for _, b in windows):
            break
    return out

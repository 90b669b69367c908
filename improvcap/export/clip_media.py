"""One clip of one stream as the file a training pipeline loads: MP4 per camera, FLAC per audio stream,
`.npy` per mocap or LSL stream. Each writer streams into a seekable binary file (a shard member).

Cameras are walked forward once per take (clips come in order): H.264 (or another codec MP4 holds) is
copied packet for packet when the clip starts on a keyframe, else the clip is decoded from the keyframe
before it and re-encoded. Either way every frame keeps its own time: its pts is its t_ns since the clip's
start, in microseconds (a variable frame rate, as recorded; drops stay visible).
"""

from __future__ import annotations

import io
import itertools
import json
import math
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

import av
import numpy as np

from ..errors import TakeError
from ..take.mkv import open_video, video_packets
from ..take.wav import pcm_ints, read_pcm, wav_info

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

MICROSECOND = Fraction(1, 1_000_000)
MP4_OPTIONS = {"movie_timescale": "1000000"}  # the edit list keeps the first frame's time to the microsecond
# codecs an MP4 holds as recorded; anything else (FFV1, raw video) is re-encoded
COPYABLE = {"h264", "hevc", "mjpeg", "av1", "vp9"}
# what writing a clip can fail with besides our own errors: the disk (a muxer wraps it in its callback's error)
WRITE_ERRORS = (OSError, av.FFmpegError)
REENCODE = {"codec": "libx264", "options": {"preset": "veryfast", "crf": "18"}, "pix_fmt": "yuv420p"}
IO_BUFFER = 1 << 20  # bytes a muxer hands to the shard at a time (FFmpeg's default, 32 kB, costs 30x the calls)
AUDIO_PIECE = 1 << 16  # frames read, converted and encoded at a time
ROWS_PIECE = 1 << 14  # table rows parsed at a time


def microseconds(t_ns: np.ndarray, origin_ns: int) -> list[int]:
    """Frame times as µs since `origin_ns`, strictly increasing (two frames within a µs stay apart)."""
    out, last = [], -1
    for t in t_ns.tolist():
        us = max(int(round((t - origin_ns) / 1000)), last + 1)
        out.append(us)
        last = us
    return out


class CameraClips:
    """One camera's Matroska file, read forward once for all clips of a take."""

    def __init__(self, mkv: Path) -> None:
        self.path = mkv
        self._container = open_video(mkv)
        if not self._container.streams.video:
            raise TakeError(f"{mkv.name}: no video stream")
        self.stream = self._container.streams.video[0]
        self.codec = self.stream.codec_context.name
        self._errors: list[str] = []
        self._packets = video_packets(self._container, self.stream, self._errors)
        self._pos = 0  # index of the next packet
        self._gop: list[Any] = []  # packets since the last keyframe, to decode a clip starting after it
        self._lead: list[Any] = []  # the clip's way in: the packets a re-encode decodes before its first

    def close(self) -> None:
        self._container.close()

    def _next(self) -> Any:
        packet = next(self._packets, None)
        if packet is None:
            raise TakeError(
                f"{self.path.name}: ends at packet {self._pos}" + (f" ({self._errors[0]})" if self._errors else "")
            )
        self._pos += 1
        return packet

    def _skip_to(self, row: int) -> None:
        while self._pos < row:
            packet = self._next()
            if packet.is_keyframe:
                self._gop = []
            self._gop.append(packet)

    def write_mp4(
        self, rows: range, t_ns: np.ndarray, origin_ns: int, out: BinaryIO, more: bool = True
    ) -> dict[str, Any]:
        """Frames `rows` (frames.csv rows = packets in file order) as an MP4 into `out`, streamed: packets
        are muxed as they are read, whatever the clip's length. `more`: a later clip of this take follows
        (the packets from this clip's last keyframe on are kept for it: muxing empties a packet)."""
        if rows.start < self._pos:
            raise TakeError(f"{self.path.name}: clips out of order")
        self._skip_to(rows.start)
        times = microseconds(t_ns[rows.start : rows.stop], origin_ns)
        first = self._next() if len(rows) else None
        copy = (
            first is not None
            and first.is_keyframe
            and self.codec in COPYABLE
            and not self.stream.codec_context.has_b_frames
        )
        packets = self._clip_packets(first, len(rows), more)
        with av.open(out, "w", format="mp4", options=MP4_OPTIONS, buffer_size=IO_BUFFER) as dst:
            if copy:
                self._copy(dst, packets, times)
            else:
                self._reencode(dst, packets, times)
        return {
            "frames": len(times),
            "video": "copied" if copy else "re-encoded",
            "codec": self.codec if copy else "h264",
        }

    def _clip_packets(self, first: Any, count: int, more: bool) -> Iterator[Any]:
        """The clip's packets from `first` on; with `more`, each is also kept (a copy) from the last
        keyframe on, as the next clip's way in. Sets the clip's way in (`_lead`) at once."""
        before = self._gop if first is not None and not first.is_keyframe else []
        self._gop = list(map(_copy_packet, before)) if more else []
        self._lead = before

        def packets() -> Iterator[Any]:
            for i in range(count):
                packet = first if i == 0 else self._next()
                if more:
                    if packet.is_keyframe:
                        self._gop = []
                    self._gop.append(_copy_packet(packet))
                yield packet

        return packets()

    def _copy(self, dst: Any, packets: Iterator[Any], times: list[int]) -> None:
        ost = dst.add_stream_from_template(self.stream)
        ost.time_base = MICROSECOND
        for packet, us in zip(packets, times):
            packet.stream = ost
            packet.time_base = MICROSECOND
            packet.pts = packet.dts = us
            dst.mux(packet)

    def _reencode(self, dst: Any, packets: Iterator[Any], times: list[int]) -> None:
        src = self.stream.codec_context
        ost = dst.add_stream(REENCODE["codec"], options=REENCODE["options"])
        ost.width, ost.height, ost.pix_fmt = src.width, src.height, REENCODE["pix_fmt"]
        ost.time_base = MICROSECOND
        ost.codec_context.time_base = MICROSECOND
        if not times:
            return
        decoder = av.CodecContext.create(self.codec, "r")
        if src.extradata:
            decoder.extradata = src.extradata
        for packet in self._lead:  # from the keyframe before the clip: the frames before it are not kept
            decoder.decode(packet)
        wanted: dict[int, int] = {}
        for packet in itertools.chain(_recorded_times(packets, times, wanted), [None]):
            for frame in decoder.decode(packet):
                us = wanted.pop(frame.pts, None)
                if us is None:
                    continue
                frame = frame.reformat(format=REENCODE["pix_fmt"])
                frame.pts, frame.time_base = us, MICROSECOND
                for out_packet in ost.encode(frame):
                    dst.mux(out_packet)
        for out_packet in ost.encode(None):
            dst.mux(out_packet)
        if wanted:
            raise TakeError(f"{self.path.name}: {len(wanted)} frames of the clip did not decode")


def _recorded_times(packets: Iterator[Any], times: list[int], wanted: dict[int, int]) -> Iterator[Any]:
    """The packets, each one's clip time noted in `wanted` (by pts) as it passes."""
    for packet, us in zip(packets, times):
        wanted[packet.pts] = us
        yield packet


def _copy_packet(packet: Any) -> Any:
    """A packet for a second decoder: the original stays muxable."""
    copy = av.Packet(bytes(packet))
    copy.pts, copy.dts, copy.time_base = packet.pts, packet.dts, packet.time_base
    return copy


def audio_extension(wav: Path) -> str:
    """The clip file of a WAV: FLAC for integer PCM, WAV for float PCM (FLAC holds only integers)."""
    return "wav" if wav_info(wav)["sample_format"] == "f32" else "flac"


def write_audio(wav: Path, samples: range, out: BinaryIO) -> dict[str, Any]:
    """Samples `samples` of a WAV as FLAC (integer PCM, bit for bit) or, for float PCM, as a float WAV."""
    info = wav_info(wav)
    fmt, channels, rate = info["sample_format"], info["channels"], info["rate"]
    if fmt not in ("s16", "s24", "f32"):
        raise TakeError(f"{wav.name}: unsupported sample format {info['format']} {info['bits']}-bit")
    # a literal codec name: add_stream's stubs then know the stream is audio
    codec: Literal["flac", "pcm_f32le"] = "flac" if fmt != "f32" else "pcm_f32le"
    container = "flac" if fmt != "f32" else "wav"
    av_format = ("s16" if fmt == "s16" else "s32") if fmt != "f32" else "flt"
    layout = av.AudioLayout(f"{channels}c").name  # FFmpeg's default layout of that many channels
    with av.open(out, "w", format=container, buffer_size=IO_BUFFER) as dst:
        ost = dst.add_stream(codec, rate=rate, layout=layout)
        ost.codec_context.format = av_format
        for at in range(samples.start, samples.stop, AUDIO_PIECE):
            raw = read_pcm(wav, at, min(AUDIO_PIECE, samples.stop - at), info)
            data = np.frombuffer(raw, "<f4").reshape(-1, channels) if fmt == "f32" else pcm_ints(raw, fmt, channels)
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(data).reshape(1, -1), format=av_format, layout=layout
            )
            frame.sample_rate, frame.pts = rate, at - samples.start
            for packet in ost.encode(frame):
                dst.mux(packet)
        for packet in ost.encode(None):
            dst.mux(packet)
    return {"samples": len(samples), "samplerate": rate, "channels": channels, "sample_format": fmt, "codec": codec}


class TableRows:
    """A mocap or LSL table's channel values, read forward in pieces (never the whole file at once)."""

    def __init__(self, path: Path, time_columns: int) -> None:
        self.path = path
        self._fh = open(path, "rb")
        header = self._fh.readline().decode("utf-8", "replace").strip().split(",")
        self.channels = header[time_columns:]
        self._skip = time_columns
        self._row = 0

    def close(self) -> None:
        self._fh.close()

    def pieces(self, rows: range) -> Iterator[np.ndarray]:
        """float32 (n, channels) pieces of rows `rows` (clips in order)."""
        if rows.start < self._row:
            raise TakeError(f"{self.path.name}: clips out of order")
        while self._row < rows.start:
            if not self._fh.readline():
                raise TakeError(f"{self.path.name}: ends at row {self._row}")
            self._row += 1
        left = len(rows)
        while left:
            lines = [self._fh.readline() for _ in range(min(ROWS_PIECE, left))]
            lines = [line for line in lines if line.endswith(b"\n")]
            if not lines:
                raise TakeError(f"{self.path.name}: ends at row {self._row}")
            self._row += len(lines)
            left -= len(lines)
            yield _parse_rows(b"".join(lines), self._skip, len(self.channels), self.path)


def _parse_rows(body: bytes, skip: int, channels: int, path: Path) -> np.ndarray:
    cols = range(skip, skip + channels)
    if not channels:
        return np.zeros((body.count(b"\n"), 0), np.float32)
    try:
        data = np.loadtxt(io.BytesIO(body), delimiter=",", dtype=np.float64, ndmin=2, usecols=cols)
    except ValueError:
        try:  # an empty cell: a channel with no value in that row
            data = np.genfromtxt(
                io.BytesIO(body),
                delimiter=",",
                dtype=np.float64,
                usecols=cols,
                ndmin=2,
                filling_values=np.nan,
                invalid_raise=True,
            )
        except ValueError as e:
            raise TakeError(f"{path.name}: malformed rows: {e}") from None
    return data.astype(np.float32)


def write_npy(table: TableRows, rows: range, out: BinaryIO) -> dict[str, Any]:
    """Rows `rows` of a table's channels as a float32 `.npy` (rows, channels), streamed."""
    header = {"descr": "<f4", "fortran_order": False, "shape": (len(rows), len(table.channels))}
    np.lib.format.write_array_header_1_0(out, header)
    written = 0
    for piece in table.pieces(rows):
        out.write(np.ascontiguousarray(piece, "<f4").tobytes())
        written += len(piece)
    if written != len(rows):
        raise TakeError(f"{table.path.name}: {written} rows where {len(rows)} were expected")
    return {"rows": len(rows), "channels": list(table.channels), "dtype": "float32"}


# --- the sample's JSON, streamed --------------------------------------------------------------------

JSON_PIECE = 1 << 15


def write_json(value: Any, out: SupportsWrite[bytes]) -> None:
    """`value` as JSON into `out`; numpy arrays are written a piece at a time (NaN as null), so a long
    clip's per-frame times never become one string in memory."""
    if isinstance(value, np.ndarray):
        out.write(b"[")
        for at in range(0, len(value), JSON_PIECE):
            piece = value[at : at + JSON_PIECE]
            if piece.dtype.kind == "f":
                cells = [
                    "null" if not math.isfinite(v) else str(int(v)) if v.is_integer() else repr(v)
                    for v in piece.tolist()
                ]
            else:
                cells = [str(v) for v in piece.tolist()]
            out.write((b"," if at else b"") + ",".join(cells).encode())
        out.write(b"]")
    elif isinstance(value, dict):
        out.write(b"{")
        for i, (k, v) in enumerate(value.items()):
            out.write((b"," if i else b"") + json.dumps(str(k)).encode() + b":")
            write_json(v, out)
        out.write(b"}")
    elif isinstance(value, (list, tuple)) and any(isinstance(v, (np.ndarray, dict)) for v in value):
        out.write(b"[")
        for i, v in enumerate(value):
            out.write(b"," if i else b"")
            write_json(v, out)
        out.write(b"]")
    else:
        out.write(json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8"))

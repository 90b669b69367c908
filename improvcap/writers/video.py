"""Camera streams to `<stream>.mkv` plus `<stream>.frames.csv`, timestamps on the take's shared clock.

Matroska is written with `flush_packets` and a one-second cluster limit, so after `kill -9` the file reads
back up to about the last second. Container pts are the records' `t_ns` in milliseconds (Matroska's own
time base), kept strictly increasing (with `copy`, dts is, so B-frame reordering survives). Frames are
encoded with `spec["codec"]` (libx264 by default); with `codec = "copy"` the camera's packets are remuxed
untouched, which needs the input stream the camera describes under "_template".
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from ..errors import ImprovcapError, TakeError
from ..records import Record
from ..rig import StreamSpec
from ..take.atomic import Folder, create_take_file, fd_path
from ..take.layout import CAMERA, media_file, table_file
from .base import CsvLog

TIME_BASE = Fraction(1, 1000)
NS_PER_TICK = 1_000_000
MKV_OPTIONS = {"flush_packets": "1", "cluster_time_limit": "1000"}
_X26X = ("libx264", "libx265")
FAST_PRESETS = ("ultrafast", "superfast", "veryfast")
ONE_THREAD_PIXEL_RATE = 1920 * 1080 * 30


class VideoWriter:
    def __init__(self, take_dir: Path, spec: StreamSpec, info: dict[str, Any], *, folder: Folder | None = None) -> None:
        """`folder`: `take_dir` already open, which the files are made in."""
        self.spec = spec
        self.copy = spec["codec"] == "copy"
        self.mkv = take_dir / media_file(spec.name, "camera")
        self.files: list[Path] = []
        template = info.get("_template")
        if self.copy and template is None:
            raise ImprovcapError(
                f'{spec.name}: codec = "copy" needs a camera that hands over its compressed stream (the ffmpeg driver)'
            )
        try:
            # Created exclusively (never overwritten, never through a link); FFmpeg then writes it with its
            # own file I/O through a path to this very file, never to whatever holds its name later.
            self._fd = create_take_file(self.mkv, folder)
        except OSError as e:
            raise TakeError(f"{spec.name}: cannot create {self.mkv}: {e.strerror}") from None
        self.files.append(self.mkv)
        try:
            self._open(info, template)
            self.csv = CsvLog(take_dir / table_file(spec.name, "camera"), CAMERA.columns, folder=folder)
        except BaseException:
            os.close(self._fd)
            raise
        self.files.append(self.csv.path)
        self._last_pts = -1
        self._last_dts = -1
        self._closed = False

    def _open(self, info: dict[str, Any], template: Any) -> None:
        """The Matroska muxer and its stream, the header written."""
        spec = self.spec
        try:
            self._out = av.open(fd_path(self._fd, self.mkv), "w", format="matroska", options=MKV_OPTIONS)
            self._out.metadata["title"] = spec.name
            if self.copy:
                self._stream = self._out.add_stream_from_template(template)
            else:
                self._stream = self._encoder_stream(info)
            self._stream.time_base = TIME_BASE
            if info.get("timecode"):
                self._stream.metadata["timecode"] = str(info["timecode"])
            self._stream.metadata["title"] = spec.name
            self._out.start_encoding()  # header on disk now; an encoder that cannot open fails here, not mid-take
        except (av.FFmpegError, ValueError) as e:
            raise TakeError(f"{spec.name}: cannot set up {self.mkv.name}: {e}") from None

    def _encoder_stream(self, info: dict[str, Any]) -> av.video.stream.VideoStream:
        spec = self.spec
        codec_name = spec["codec"]
        options = {"preset": spec["preset"], "crf": str(spec["crf"])} if codec_name in _X26X else {}
        fps = Fraction(info.get("fps") or spec["fps"]).limit_denominator(1001)
        stream = self._out.add_stream(codec_name, rate=fps, options=options)
        stream.width = info.get("width") or spec["width"]
        stream.height = info.get("height") or spec["height"]
        formats = [f.name for f in (stream.codec_context.codec.video_formats or ())]
        stream.pix_fmt = "yuv420p" if not formats or "yuv420p" in formats else formats[0]
        stream.codec_context.time_base = TIME_BASE
        # A keyframe every second (x264's default is 250 frames): a file cut by a crash decodes from at
        # most a second before its end, and a slate check decodes under a second of lead-in.
        stream.codec_context.gop_size = max(1, round(float(fps)))
        # One encoder thread per camera when it easily keeps up (fast presets, up to 1080p30): measured
        # 3-7 % less CPU than x264's own threads here, no frame delay, and several cameras still spread
        # over the cores. Bigger or slower encodes keep PyAV's default: x264 slice threads, auto count.
        pixel_rate = stream.width * stream.height * float(fps)
        if codec_name in _X26X and spec["preset"] in FAST_PRESETS and pixel_rate <= ONE_THREAD_PIXEL_RATE:
            stream.codec_context.thread_count = 1
        return stream

    def _pts(self, t_ns: int) -> int:
        pts = t_ns // NS_PER_TICK
        if pts <= self._last_pts:
            pts = self._last_pts + 1  # two frames in one tick: bump, so the muxer keeps every frame
        self._last_pts = pts
        return pts

    def write(self, record: Record) -> None:
        payload = record.payload
        try:
            if self.copy:
                pts = self._remux(payload, record.t_ns // NS_PER_TICK)
            else:
                pts = self._pts(record.t_ns)
                payload.pts = pts
                payload.time_base = TIME_BASE
                for packet in self._stream.encode(payload):
                    self._out.mux(packet)
        except (av.FFmpegError, ValueError, TypeError) as e:
            raise TakeError(f"{self.spec.name}: cannot write frame {record.index}: {e}") from None
        seq = "" if record.seq is None else record.seq
        self.csv.row((record.index, record.t_ns, record.device_ns, record.host_ns, seq, pts))

    def _remux(self, packet: av.Packet, pts: int) -> int:
        """Mux a source packet at `pts` (ms); returns the pts written.

        Packets come in decode order, so with B-frames their pts are not monotonic: only dts is kept
        strictly increasing, and the source's pts - dts (reordering) and duration are carried over.
        """
        tb = packet.time_base
        lag = int((packet.pts - packet.dts) * tb * 1000) if packet.pts is not None and packet.dts is not None else 0
        duration = int(packet.duration * tb * 1000) if packet.duration else 0
        dts = max(pts - lag, self._last_dts + 1)
        pts = max(pts, dts)
        self._last_dts = dts
        packet.pts, packet.dts = pts, dts
        packet.duration = duration
        packet.time_base = TIME_BASE
        packet.stream = self._stream
        self._out.mux(packet)  # the muxer takes the packet's data: read nothing from it afterwards
        return pts

    def flush(self) -> None:
        self.csv.flush()  # the muxer flushes every packet itself

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        error: Exception | None = None
        try:
            if not self.copy:
                for packet in self._stream.encode(None):
                    self._out.mux(packet)
        except (av.FFmpegError, ValueError) as e:
            error = e
        finally:
            try:
                self._out.close()
            except (av.FFmpegError, OSError, ValueError) as e:
                error = error or e
            self.csv.close()
        try:
            os.fsync(self._fd)
        except OSError as e:
            error = error or e
        finally:
            os.close(self._fd)
        if error is not None:
            raise TakeError(f"{self.spec.name}: cannot finish {self.mkv.name}: {error}") from None

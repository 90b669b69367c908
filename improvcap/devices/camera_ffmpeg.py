"""Cameras read through FFmpeg (PyAV): V4L2 devices, RTSP/HTTP streams, lavfi test graphs and video files.

Frames pass through as `av.VideoFrame`s (or, with `codec = "copy"`, as the source's own `av.Packet`s), so
the path to the encoder adds no conversion of its own. Device time is the frame's pts in ns: V4L2 stamps
its buffers with CLOCK_MONOTONIC (the host clock), lavfi graphs and files give stream time from 0.

Source forms (the rig's `source`):
  "lavfi:<graph>"        an FFmpeg filter graph, e.g. "lavfi:testsrc2=size=1280x720:rate=30"
  "/dev/videoN" or N     a V4L2 device; width/height/fps/input_format are asked of the driver
  "rtsp://…", "http(s)://…"  network cameras; a dead one fails within a few seconds
  anything else          a video file, paced by its timestamps when `realtime` (like `ffmpeg -re`)

lavfi graphs are paced the same way when `realtime`, so a test pattern delivers at its frame rate like a
camera whether or not the graph ends in FFmpeg's own `realtime` filter (both together do no harm).

`describe()` holds, in copy mode, the input stream under "_template" (what the writer needs for
`add_stream_from_template`). Keys starting with "_" are not JSON: the recorder drops them from take.json.
"""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import av
import av.logging

from ..clock import ClockDomain, now_ns
from ..records import Sample
from ..rig import StreamSpec
from .base import NETWORK_OPEN_TIMEOUT_S, SILENCE_S, DeviceError, StreamEnded, ThreadedDevice

BEHIND_NS = 500_000_000
"""Paced sources that fall this far behind (a slow disk, a busy CPU) start pacing afresh instead of bursting."""
_NONE = av.video.frame.PictureType.NONE


def source_kind(source: str) -> str:
    """'lavfi', 'v4l2', 'rtsp', 'http' or 'file'."""
    if source.startswith("lavfi:"):
        return "lavfi"
    if source.startswith("/dev/video"):
        return "v4l2"
    scheme = source.split("://", 1)[0].lower() if "://" in source else ""
    if scheme in ("rtsp", "rtsps"):
        return "rtsp"
    if scheme:
        return "http"  # http, https, udp, srt…: a live network stream either way
    return "file"


def _open_args(spec: StreamSpec, kind: str, source: str) -> dict[str, Any]:
    """Keyword arguments of `av.open` for one source."""
    if kind == "lavfi":
        return {"file": source[len("lavfi:") :], "format": "lavfi"}
    if kind == "v4l2":
        options = {
            "video_size": f"{spec['width']}x{spec['height']}",
            "framerate": f"{spec['fps']:g}",
            "timestamps": "default",
        }  # kernel buffer times: CLOCK_MONOTONIC, the host clock
        if spec["input_format"]:
            options["input_format"] = spec["input_format"]
        return {"file": source, "format": "video4linux2", "options": options}
    if kind == "rtsp":
        return {
            "file": source,
            "options": {"rtsp_transport": "tcp", "timeout": str(int(SILENCE_S * 1e6))},
            "timeout": (NETWORK_OPEN_TIMEOUT_S, SILENCE_S),
        }
    if kind == "http":
        return {"file": source, "timeout": (NETWORK_OPEN_TIMEOUT_S, SILENCE_S)}
    return {"file": source}


def _reason(e: BaseException, logs: Sequence[tuple[int, str, str]] = ()) -> str:
    """One line: FFmpeg's error text, with its first logged detail (e.g. which filter option is wrong)."""
    text = getattr(e, "strerror", None) or str(e)
    detail = next((m.strip() for _, _, m in logs if m.strip()), "")
    # a detail that only repeats the error ("Cannot open video device …: No such file…") adds nothing
    line = f"{text} ({detail})" if detail and text not in detail and detail not in text else text
    return " ".join(line.split())


def _check_copyable(stream: av.video.stream.VideoStream) -> None:
    """Raise ValueError when Matroska cannot hold this stream's packets untouched."""
    out = av.open(io.BytesIO(), "w", format="matroska")
    try:
        out.add_stream_from_template(stream)
        out.start_encoding()
    finally:
        try:
            out.close()
        except (av.FFmpegError, ValueError):
            pass


class FfmpegCamera(ThreadedDevice):
    def __init__(self, spec: StreamSpec) -> None:
        super().__init__(spec, depth=max(8, int(spec["fps"] * 2)))
        source = str(spec["source"]).strip()
        self.source = f"/dev/video{source}" if source.isdigit() else source  # an index, as OpenCV takes it
        self.kind = source_kind(self.source)
        self.copy = spec["codec"] == "copy"
        self._container: av.container.InputContainer | None = None
        self._stream: av.video.stream.VideoStream | None = None
        self._format: dict[str, Any] = {}  # what open() found; describe() still answers after close()
        self._pending: Sample | None = None
        self._loop_ns = 0  # added to file times after each restart, so device time keeps rising
        self._first_ns: int | None = None  # the file's first timestamp
        self._end_ns = 0  # end of the latest frame so far (with _loop_ns)
        self._frames = 0
        self._loops = 0
        self._repaced = 0

    # --- life cycle ---------------------------------------------------------------------------------

    def open(self) -> None:
        name = self.spec.name
        args = _open_args(self.spec, self.kind, self.source)
        if self.kind == "file" and not Path(self.source).exists():
            raise DeviceError(f"{name}: cannot open {self.source}: No such file or directory")
        previous = av.logging.get_level()
        av.logging.set_level(av.logging.ERROR)  # only while opening: to catch FFmpeg's reason for a refusal
        try:
            with av.logging.Capture() as logs:
                try:
                    self._container = av.open(**args)
                except (av.FFmpegError, OSError, ValueError) as e:
                    raise DeviceError(f"{name}: cannot open {self.source}: {_reason(e, logs)}") from None
        finally:
            av.logging.set_level(previous)
        if not self._container.streams.video:
            self.close()
            raise DeviceError(f"{name}: cannot open {self.source}: no video stream in it")
        self._stream = self._container.streams.video[0]
        s, cc = self._stream, self._stream.codec_context
        self._format = {
            "width": cc.width,
            "height": cc.height,
            "average_rate": float(s.average_rate) if s.average_rate else None,
            "pix_fmt": cc.pix_fmt,
            "codec": cc.name,
            "time_base": str(s.time_base),
        }
        if self.copy:
            try:
                _check_copyable(self._stream)
            except (av.FFmpegError, ValueError) as e:
                codec = self._stream.codec_context.name
                self.close()
                raise DeviceError(
                    f'{name}: codec = "copy" cannot keep {codec} from {self.source} in Matroska '
                    f"({_reason(e)}); use an encoder such as libx264"
                ) from None

    def start(self) -> None:
        if self._container is None:
            raise DeviceError(f"{self.spec.name}: start() before open()")
        self._start_producer(self._produce)

    def close(self) -> None:
        self.stop()
        if self._producer_busy.is_set():
            # The reader is still blocked inside FFmpeg (a stalled device or network): closing the container
            # under it would crash the process, so leave it to the reader, which ends at FFmpeg's timeout.
            return
        if self._container is not None:
            try:
                self._container.close()
            except (av.FFmpegError, OSError):
                pass
            self._container = None
            self._stream = None

    # --- reading -------------------------------------------------------------------------------------

    def _items(self) -> Iterator[Any]:
        assert self._container is not None and self._stream is not None
        if self.copy:
            return self._container.demux(self._stream)
        return self._container.decode(self._stream)

    def _put_waiting(self, stop: threading.Event, sample: Sample) -> None:
        """Hand over without dropping; a sample still in hand at stop() goes first at the next start()."""
        self._pending = sample
        while not stop.is_set():
            if self._buffer.put_waiting(sample, timeout=0.1):
                self._pending = None
                return

    def _produce(self, stop: threading.Event) -> None:
        assert self._stream is not None
        name = self.spec.name
        tb = self._stream.time_base
        if tb is None:  # PyAV's None for a 0/0 time base, which FFmpeg gives no demuxed stream
            raise DeviceError(f"{name}: {self.source}: its video stream has no time base")
        num, den = tb.numerator * 1_000_000_000, tb.denominator
        paced = self.spec["realtime"] and self.kind in ("file", "lavfi")
        loop = self.spec["loop"] and self.kind == "file"
        # A file read faster than real time is a batch job: it waits for the reader instead of dropping.
        put = self._buffer.put if paced or self.kind != "file" else partial(self._put_waiting, stop)
        if self._pending is not None:
            put(self._pending)
        frame_ns = int(1e9 / self.spec["fps"])
        anchor_host = anchor_media = 0
        anchored = False
        while not stop.is_set():
            try:
                for item in self._items():
                    if self.copy and item.size == 0:
                        continue  # the demuxer's end-of-stream marker
                    pts = item.pts if item.pts is not None else item.dts
                    if pts is None:
                        continue  # nothing to place on a timeline; FFmpeg drops these too
                    device = pts * num // den + self._loop_ns
                    if self._first_ns is None:
                        self._first_ns = device
                    end = device + (item.duration * num // den if item.duration else frame_ns)
                    self._end_ns = max(self._end_ns, end)
                    if paced:
                        # decode order for packets (dts), presentation order for frames (pts)
                        media = (item.dts if self.copy and item.dts is not None else pts) * num // den + self._loop_ns
                        now = now_ns()
                        due = anchor_host + media - anchor_media
                        if not anchored or now - due > BEHIND_NS:
                            self._repaced += anchored
                            anchored, anchor_host, anchor_media, due = True, now, media, now
                        if due > now and stop.wait((due - now) / 1e9):
                            return
                    if not self.copy:
                        item.pict_type = _NONE  # the source's I/P/B choices must not steer the encoder
                    put(Sample(host_ns=now_ns(), device_ns=device, payload=item))
                    self._frames += 1
                    if stop.is_set():
                        return
            except av.error.ExitError:  # FFmpeg's read timeout on a network source
                if stop.is_set():
                    return
                raise DeviceError(
                    f"{name}: no data from {self.source} for {SILENCE_S:g} s: the sender stopped "
                    "(camera off or crashed, or the network cut)"
                ) from None
            except (av.FFmpegError, OSError) as e:
                raise DeviceError(f"{name}: {self.source}: {_reason(e)}") from None
            if stop.is_set():
                return
            if not loop:
                raise StreamEnded(f"{name}: end of {self.source}")
            if self._first_ns is None:
                raise StreamEnded(f"{name}: {self.source} holds no frames to loop over")
            # The next pass starts where this one ended: its first frame lands one frame after the last.
            self._loop_ns = self._end_ns - self._first_ns
            self._loops += 1
            try:
                self._container.seek(0)  # type: ignore[union-attr]
            except (av.FFmpegError, OSError) as e:
                raise DeviceError(f"{name}: cannot loop {self.source}: {_reason(e)}") from None

    # --- information ---------------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "driver": "ffmpeg",
            "source": self.source,
            "input": self.kind,
            "fps": float(self.spec["fps"]),
            "copy": self.copy,
            **self._format,
            # V4L2 buffer times are CLOCK_MONOTONIC, the host clock itself
            "clock": ClockDomain.HOST if self.kind == "v4l2" else ClockDomain.DEVICE,
        }
        if self.copy and self._stream is not None:
            info["_template"] = self._stream
        return info

    def stats(self) -> dict[str, int]:
        return {
            "frames": self._frames,
            "overflows": self._buffer.overflows,
            "loops": self._loops,
            "repaced": self._repaced,
        }

    def slate(self, host_ns: int) -> None:
        """A real camera sees the physical slate; nothing to render."""


def _sysfs_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def list_cameras(sysfs: Path = Path("/sys/class/video4linux"), dev: Path = Path("/dev")) -> list[dict[str, Any]]:
    """V4L2 video nodes with their driver-reported name and, for USB cameras, vendor:product ids.

    A USB camera usually shows two nodes: `index` 0 captures, 1 carries metadata.
    """
    found: list[dict[str, Any]] = []
    try:
        nodes = sorted(sysfs.iterdir(), key=lambda p: int(re.sub(r"\D", "", p.name) or 0))
    except OSError:
        return found
    for node in nodes:
        if not node.name.startswith("video"):
            continue
        entry: dict[str, Any] = {
            "path": str(dev / node.name),
            "name": _sysfs_text(node / "name") or node.name,
            "driver": "ffmpeg",
        }
        index = _sysfs_text(node / "index")
        if index is not None and index.isdigit():
            entry["index"] = int(index)
        # device -> the USB interface; its parent holds idVendor/idProduct
        for usb in (node / "device", node / "device" / ".."):
            vendor, product = _sysfs_text(usb / "idVendor"), _sysfs_text(usb / "idProduct")
            if vendor and product:
                entry["usb_id"] = f"{vendor}:{product}"
                break
        found.append(entry)
    return found

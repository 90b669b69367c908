"""Cameras read through OpenCV's VideoCapture: a device index (V4L2 on Linux), a file or a URL.

Device time is CAP_PROP_POS_MSEC where the backend gives one: for V4L2 it is the buffer timestamp
(CLOCK_MONOTONIC, the host clock), for files the position in the file. Backends without it (or which
report 0) fall back to host arrival. Frames are handed on as `av.VideoFrame`s in bgr24; the encoder
converts them to its own pixel format.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import av
import cv2

from ..clock import ClockDomain, now_ns
from ..records import Sample
from ..rig import StreamSpec
from .base import NETWORK_OPEN_TIMEOUT_S, SILENCE_S, DeviceError, StreamEnded, ThreadedDevice

BEHIND_NS = 500_000_000
"""A paced file that falls this far behind starts pacing afresh instead of bursting."""


def _index(source: str | int) -> int | None:
    if isinstance(source, int):
        return source
    return int(source) if source.strip().isdigit() else None


class OpenCVCamera(ThreadedDevice):
    def __init__(self, spec: StreamSpec) -> None:
        super().__init__(spec, depth=max(8, int(spec["fps"] * 2)))
        self.source = spec["source"]
        self.index = _index(self.source)
        self.is_file = self.index is None and "://" not in str(self.source)
        self._cap: cv2.VideoCapture | None = None
        self._device_clock = False  # True once POS_MSEC has given a non-zero time
        self._format: dict[str, Any] = {}
        self._frames = 0
        self._repaced = 0

    def open(self) -> None:
        name = self.spec.name
        if self.spec["codec"] == "copy":
            raise DeviceError(f'{name}: codec = "copy" needs the ffmpeg driver; OpenCV hands over decoded frames')
        linux = sys.platform.startswith("linux")
        label = str(self.source)
        if self.index is not None:
            label = f"camera {self.index}" + (f" (/dev/video{self.index})" if linux else "")
            missing = linux and not Path(f"/dev/video{self.index}").exists()
        else:
            missing = self.is_file and not Path(label).exists()
        if missing:
            raise DeviceError(f"{name}: cannot open {label}: No such file or directory")
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # the one-line error says it all
        try:
            if self.index is not None:
                cap = cv2.VideoCapture(self.index, cv2.CAP_V4L2 if linux else cv2.CAP_ANY)
            elif self.is_file:
                cap = cv2.VideoCapture(label)
            else:  # a dead network camera must fail in seconds, not hang the take
                cap = cv2.VideoCapture(
                    label,
                    cv2.CAP_ANY,
                    [
                        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                        int(NETWORK_OPEN_TIMEOUT_S * 1000),
                        cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                        int(SILENCE_S * 1000),
                    ],
                )
        finally:
            cv2.utils.logging.setLogLevel(level)
        if not cap.isOpened():
            cap.release()
            raise DeviceError(f"{name}: cannot open {label}: OpenCV cannot read it")
        if not self.is_file:
            # Ask; the backend may ignore what it cannot do, and describe() reports what it gives.
            fourcc = self.spec["input_format"]
            if fourcc:
                if len(fourcc) != 4:
                    cap.release()
                    raise DeviceError(f"{name}: input_format {fourcc!r} is not a FOURCC such as MJPG or YUYV")
                cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*fourcc))
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.spec["width"])
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.spec["height"])
            cap.set(cv2.CAP_PROP_FPS, float(self.spec["fps"]))
        self._cap = cap
        fourcc = int(cap.get(cv2.CAP_PROP_FOURCC))
        self._format = {  # what the backend gives, which may differ from what was asked
            "width": int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            "height": int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            "average_rate": cap.get(cv2.CAP_PROP_FPS) or None,
            "backend": cap.getBackendName(),
            "fourcc": fourcc.to_bytes(4, "little").decode("ascii", "replace").strip("\x00 ") if fourcc else "",
        }

    def start(self) -> None:
        if self._cap is None:
            raise DeviceError(f"{self.spec.name}: start() before open()")
        self._start_producer(self._produce)

    def close(self) -> None:
        self.stop()
        if self._producer_busy.is_set():
            return  # the reader is stuck in the backend: releasing under it would crash; it ends on its own
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def _produce(self, stop: threading.Event) -> None:
        cap = self._cap
        assert cap is not None
        paced = self.spec["realtime"] and self.is_file
        anchored = False
        anchor_host = anchor_media = 0
        while not stop.is_set():
            ok, bgr = cap.read()
            if not ok:
                if self.is_file:
                    raise StreamEnded(f"{self.spec.name}: end of {self.source}")
                raise DeviceError(f"{self.spec.name}: {self.source}: no frame from the camera")
            pos_ms = cap.get(cv2.CAP_PROP_POS_MSEC)
            # A file's first frame is at position 0; a live backend that reports 0 has no clock to give.
            has_clock = self.is_file or pos_ms > 0
            media = int(round(pos_ms * 1e6)) if has_clock else 0
            if paced:
                now = now_ns()
                due = anchor_host + media - anchor_media
                if not anchored or now - due > BEHIND_NS:
                    self._repaced += anchored
                    anchored, anchor_host, anchor_media, due = True, now, media, now
                if due > now and stop.wait((due - now) / 1e9):
                    return
            host = now_ns()
            self._device_clock = self._device_clock or (has_clock and not self.is_file)
            # cv2's stubs type a frame as any dtype; from_ndarray refuses anything but bgr24's uint8 itself
            frame = av.VideoFrame.from_ndarray(bgr, format="bgr24")  # type: ignore[arg-type]
            self._buffer.put(Sample(host_ns=host, device_ns=media if has_clock else host, payload=frame))
            self._frames += 1

    def describe(self) -> dict[str, Any]:
        return {
            "driver": "opencv",
            "source": self.source,
            "fps": float(self.spec["fps"]),
            "copy": False,
            "pix_fmt": "bgr24",
            "codec": "rawvideo",
            **self._format,
            # what device_ns holds: file position, V4L2 buffer time, or (no clock seen yet) host arrival
            "device_time": "position" if self.is_file else "buffer" if self._device_clock else "arrival",
            # V4L2 buffer times and arrival times are both on the host's monotonic clock
            "clock": ClockDomain.DEVICE if self.is_file else ClockDomain.HOST,
        }

    def stats(self) -> dict[str, int]:
        return {"frames": self._frames, "overflows": self._buffer.overflows, "repaced": self._repaced}

    def slate(self, host_ns: int) -> None:
        """A real camera sees the physical slate; nothing to render."""

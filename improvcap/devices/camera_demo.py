"""The demo camera: a moving pattern with its frame number and time burned in, on a modelled clock.

Frame k is exposed at true host time `timing.true_ns(k * period)` (the camera's own clock ticks the
frames), stamped `timing.device_ns(true)` like a V4L2 buffer timestamp from a drifting clock, and reaches
the host at `timing.arrival_ns(true)`. Frames lost in transport are skipped while the counter (`seq`) runs
on. A slate turns the first frame exposed at or after the slate time, and the two after it, white.

Rendering is kept cheap (two 720p30 demo cameras use a few percent of a core): frames are drawn directly
in yuv420p — a slice of a precomputed wide stripe pattern, text drawn on the luma plane, constant chroma.

With `trigger = "<box>"` the camera is exposed by the demo sync box's trigger pulses instead of its own
clock: frame k is exposed at the true time of a pulse the box actually sent, its counter (`seq`) counting
exposures since it opened (a frame lost in transport, `drop_rate`, is a gap in it, as on a real
triggered camera); its stamps stay on its own drifting clock, and the final fit puts every frame at its
pulse's time (improvcap.take.trigger).

With `board = true` the camera films a ChArUco board instead (improvcap.calibrate.render): a pinhole camera
with `focal_px`, `center_offset_px`, `distortion` and `pose` in the rig frame, the board on its path as a
function of the true exposure time, so all demo cameras of a rig see the same board at the same instant
(1-2 ms a 720p frame). describe() then carries the camera's truth for comparison with a calibration.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import av
import cv2
import numpy as np

from ..clock import now_ns
from ..records import Sample
from ..rig import StreamSpec
from .base import DeviceError, ThreadedDevice
from .demo_timing import DemoTiming

PATTERN_PERIOD = 256  # px: the stripes repeat this often, so any shift is a slice of one wide image
SPEED = 4  # px per frame the pattern moves
FLASH_FRAMES = 3
FLASH_LUMA = 235  # video-range white
TEXT_LUMA = 235
BOX_LUMA = 16


class DemoCamera(ThreadedDevice):
    def __init__(self, spec: StreamSpec) -> None:
        super().__init__(spec, depth=max(8, int(spec["fps"] * 2)))
        self.width: int = spec["width"]
        self.height: int = spec["height"]
        self.fps = float(spec["fps"])
        self.period_ns = 1e9 / self.fps
        self.timing = DemoTiming(spec)
        self._lock = threading.Lock()
        self._slates: list[int] = []  # pending slate times, host ns
        self._flash_until = -1  # last frame number that flashes
        self._next_k = 0
        self._started_ns: int | None = None
        self._frames = 0
        self._dropped = 0
        self._wide: np.ndarray | None = None
        self._yuv: np.ndarray | None = None
        self._board: Any = None  # (BoardSpec, PinholeCamera, BoardRenderer, path) in board mode
        self._trigger: str = spec["trigger"]
        self._first_pulse: int | None = None  # triggered: the box's count of the first pulse exposed
        self._next_pulse = 0
        self._resume = False
        self._last_arrival = 0

    # --- life cycle ---------------------------------------------------------------------------------

    def open(self) -> None:
        name = self.spec.name
        if self.spec["codec"] == "copy":
            raise DeviceError(
                f'{name}: codec = "copy" needs a compressed source (the ffmpeg driver); '
                "the demo camera gives raw frames"
            )
        if self.width % 2 or self.height % 2:
            raise DeviceError(
                f"{name}: demo camera needs an even width and height for yuv420p, got {self.width}x{self.height}"
            )
        w, h = self.width, self.height
        if self.spec.get("board", False):
            self._board = self._open_board()
        # Diagonal triangle-wave stripes, periodic in x: frame k is wide[:, s:s+w] for s = k*SPEED mod period.
        x = np.arange(w + PATTERN_PERIOD)[None, :]
        y = np.arange(h)[:, None]
        phase = ((x + y // 2) % PATTERN_PERIOD) / (PATTERN_PERIOD / 2) - 1.0
        self._wide = (16 + 184 * np.abs(phase)).astype(np.uint8)
        # yuv420p as PyAV takes it: (h * 3/2, w) rows — Y, then U and V planes back to back.
        self._yuv = np.full((h * 3 // 2, w), 128, np.uint8)

    def _open_board(self) -> tuple[Any, Any, Any, Any]:
        from ..calibrate.board import BoardSpec
        from ..calibrate.render import BoardRenderer, PinholeCamera, board_pose_at
        from ..errors import ImprovcapError

        name, s = self.spec.name, self.spec.settings
        try:
            board = BoardSpec.from_toml(s["board_spec"]) if s["board_spec"] else BoardSpec()
        except ImprovcapError as e:
            raise DeviceError(f"{name}: {e}") from None
        camera = PinholeCamera.from_pose(
            (self.width, self.height), s["focal_px"], s["distortion"], s["pose"], s["center_offset_px"]
        )
        renderer = BoardRenderer(board, camera)
        if renderer.max_model_error > 0.05:
            raise DeviceError(
                f"{name}: distortion = {s['distortion']} folds over within the image "
                f"(its inverse is off by {renderer.max_model_error:.2g} px); use smaller coefficients"
            )
        return board, camera, renderer, board_pose_at

    def start(self) -> None:
        if self._yuv is None:
            raise DeviceError(f"{self.spec.name}: start() before open()")
        if self._producer is not None:
            return
        if self._started_ns is None:
            self.timing.reset()
            self._started_ns = self.timing.origin_ns
            self._next_k = 0
        else:
            # Kept open between takes: the camera's clock and counter ran on; resume at the next exposure.
            elapsed_device = (now_ns() - self.timing.origin_ns) * (1.0 + self.timing.drift)
            self._next_k = max(self._next_k, math.ceil(elapsed_device / self.period_ns))
        self._resume = True
        self._start_producer(self._produce_triggered if self._trigger else self._produce)

    def close(self) -> None:
        self.stop()

    def slate(self, host_ns: int) -> None:
        with self._lock:
            self._slates.append(host_ns)

    # --- producing ------------------------------------------------------------------------------------

    def _produce(self, stop: threading.Event) -> None:
        self._last_arrival = 0
        while not stop.is_set():
            k = self._next_k
            self._next_k = k + 1
            if not self._expose(stop, k, self.timing.true_ns(k * self.period_ns)):
                return

    def _expose(self, stop: threading.Event, k: int, true: int) -> bool:
        """Frame `k`, exposed at true host time `true`: dropped in transport, or delivered when it arrives.
        False: stopped meanwhile."""
        timing = self.timing
        flash = self._flashes(k, true)
        if timing.dropped():
            self._dropped += 1
            return True
        arrival = self._last_arrival = max(timing.arrival_ns(true), self._last_arrival)
        frame = self._render(k, true, flash)
        wait = arrival - now_ns()
        if wait > 0 and stop.wait(wait / 1e9):
            return False
        if self._flashes(k, true) != flash:  # a slate asked for while this frame waited
            frame = self._render(k, true, not flash)
        self._buffer.put(Sample(host_ns=now_ns(), device_ns=timing.device_ns(true), payload=frame, seq=k, true_ns=true))
        self._frames += 1
        return True

    def _produce_triggered(self, stop: threading.Event) -> None:
        from .sync_demo import running_box  # demo twins only: the box's emulator runs in this process

        self._last_arrival = 0
        while not stop.is_set():
            box = running_box(self._trigger)
            pulses = box.pulse_count if box is not None else 0
            if box is None or pulses == 0:  # the box is not open, or sends no pulses yet
                stop.wait(0.005)
                continue
            if self._first_pulse is None:
                self._first_pulse = self._next_pulse = pulses + 1
            elif self._resume:  # kept open between takes, it was exposed by every pulse meanwhile
                self._next_pulse = max(self._next_pulse, pulses + 1)
            self._resume = False
            c = self._next_pulse
            true = box.pulse_true_ns(c)
            if true is None or true > now_ns() + 1_000_000_000:  # no train that reaches it (pulses stopped)
                stop.wait(0.005)
                continue
            if stop.wait(max(0.0, (true - now_ns()) / 1e9)):
                return
            if box.pulse_count < c:  # not sent yet (the box's own thread is a little late), or never
                stop.wait(0.0005)
                continue
            self._next_pulse = c + 1
            if not self._expose(stop, c - self._first_pulse, true):
                return

    def _flashes(self, k: int, true_ns: int) -> bool:
        with self._lock:
            due = [t for t in self._slates if t <= true_ns]
            if due:
                self._slates = [t for t in self._slates if t > true_ns]
                self._flash_until = k + FLASH_FRAMES - 1
        return k <= self._flash_until

    def _render(self, k: int, true_ns: int, flash: bool) -> av.VideoFrame:
        assert self._wide is not None and self._yuv is not None
        w, h = self.width, self.height
        luma = self._yuv[:h]
        if flash:
            luma.fill(FLASH_LUMA)
        elif self._board is not None:
            board, _, renderer, path = self._board
            np.copyto(luma, renderer.render(*path(true_ns / 1e9, board)))
        else:
            shift = k * SPEED % PATTERN_PERIOD
            np.copyto(luma, self._wide[:, shift : shift + w])
            scale = max(h / 720, 0.3)
            thick = max(1, round(2 * scale))
            origin = self._started_ns or self.timing.origin_ns
            lines = (f"{self.spec.name}  #{k:07d}", f"t {(true_ns - origin) / 1e9:10.3f} s")
            line_h = int(44 * scale)
            x0, y0 = int(16 * scale), int(16 * scale)
            cv2.rectangle(
                luma, (x0, y0), (x0 + int(560 * scale), y0 + line_h * len(lines) + int(12 * scale)), BOX_LUMA, -1
            )
            for i, text in enumerate(lines):
                cv2.putText(
                    luma,
                    text,
                    (x0 + int(10 * scale), y0 + line_h * (i + 1)),
                    cv2.FONT_HERSHEY_SIMPLEX,
                    1.2 * scale,
                    TEXT_LUMA,
                    thick,
                    cv2.LINE_AA,
                )
        return av.VideoFrame.from_ndarray(self._yuv, format="yuv420p")

    # --- information ----------------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "driver": "demo",
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
            "pix_fmt": "yuv420p",
            "codec": "rawvideo",
            "copy": False,
        }
        if self._board is not None:
            board, camera, _, _ = self._board
            # rotation/translation: rig frame (mm) into this camera, as in a cameras calibration
            info["board_truth"] = {**camera.truth(), "board": board.to_dict()}
        return info

    def stats(self) -> dict[str, int]:
        return {"frames": self._frames, "dropped": self._dropped, "overflows": self._buffer.overflows}

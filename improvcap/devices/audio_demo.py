"""Demo twin of an audio interface: a tone per channel plus low noise, with a ground truth.

The ADC runs at samplerate * (1 + drift): sample k is captured at true host time
`timing.true_ns(k * 1e9 / samplerate)`. A block is complete at the true time of its last sample and reaches
the host `timing.arrival_ns` of that. The device clock is the sample counter, as on real hardware; a block
lost in transport leaves a jump in it. `slate` renders a beep burst starting at the first sample captured
at or after the requested host time, on every channel but an LTC one. With `ltc_channel`, that channel
carries LTC (libltc's encoder) at `ltc_fps`, as a studio's master timecode reaches an input: its frames
label the time of day of the samples they start at, `ltc_offset_s` ahead of this PC's clock.
"""

from __future__ import annotations

import datetime as _dt
import math
import threading
import time
from typing import Any

import numpy as np

from ..clock import now_ns
from ..errors import DeviceError
from ..records import AudioBlock, Sample
from ..rig import StreamSpec
from .base import ThreadedDevice
from .demo_timing import DemoTiming

TONE_DBFS = -12.0
NOISE_RMS = 1e-3  # about -60 dBFS
BEEP_S = 0.050
BEEP_HZ = (1000.0, 2000.0)  # a linear chirp: its onset is sharp and it correlates well
BEEP_LEVEL = 0.9
BUFFER_SECONDS = 5.0


class DemoAudio(ThreadedDevice):
    def __init__(self, spec: StreamSpec) -> None:
        self.samplerate = int(spec["samplerate"])
        self.channels = int(spec["channels"])
        self.blocksize = int(spec["blocksize"]) or self.samplerate // 100
        nyquist_guard = 0.45 * self.samplerate
        # A different pitch and phase per channel, so a swapped or duplicated channel shows.
        self.tones_hz = [min(spec["tone_hz"] * (1 + 0.25 * c), nyquist_guard) for c in range(self.channels)]
        self._w = 2 * np.pi * np.array(self.tones_hz) / self.samplerate
        self._phase = np.arange(self.channels) * (np.pi / 3)
        self._amp = 10 ** (TONE_DBFS / 20)
        rng = np.random.default_rng(0)
        # One second of noise (plus a block, so any start has a contiguous slice), reused cyclically.
        self._noise = rng.standard_normal((self.samplerate + self.blocksize, self.channels)) * NOISE_RMS
        t = np.arange(int(round(BEEP_S * self.samplerate))) / self.samplerate
        f0, f1 = BEEP_HZ
        # cos starts at its peak: the first beep sample is already at full level (sharp onset)
        self._beep = BEEP_LEVEL * np.cos(2 * np.pi * (f0 * t + (f1 - f0) / (2 * BEEP_S) * t * t))
        self.timing = DemoTiming(spec)
        super().__init__(spec, max(64, int(BUFFER_SECONDS * self.samplerate / self.blocksize)))
        self._slate_ns: list[int] = []  # requested host times, placed on samples once the clock has started
        self._slates: list[int] = []  # first sample of each beep still to render
        self._lock = threading.Lock()
        self._opened = False
        self._delivered = 0
        self._dropped = 0
        self.ltc_channel = int(spec["ltc_channel"]) - 1 if spec["ltc_channel"] else None
        if self.ltc_channel is not None and self.ltc_channel >= self.channels:
            raise DeviceError(f"{spec.name}: ltc_channel {spec['ltc_channel']} of {self.channels} channels")
        self._ltc: _LtcTrack | None = None

    def open(self) -> None:
        self._opened = True

    def start(self) -> None:
        if not self._opened:
            raise DeviceError(f"{self.spec.name}: demo audio not open")
        if self._producer is not None:
            return
        self.timing.reset()
        self._start_producer(self._run)

    def _true_ns(self, k: int) -> int:
        """True host time at which sample k was captured."""
        return self.timing.true_ns(k * 1e9 / self.samplerate)

    def _run(self, stop: threading.Event) -> None:
        n, sr = self.blocksize, self.samplerate
        k = 0
        last_arrival = 0
        while not stop.is_set():
            complete = self._true_ns(k + n - 1)  # a block is complete when its last sample is captured
            if self.timing.dropped():
                self._dropped += 1
                k += n
                wait_s = (complete - now_ns()) / 1e9  # keep pace even when (nearly) everything is lost
                if wait_s > 0 and stop.wait(wait_s):
                    return
                continue
            # arrival order is kept, as a USB/ALSA stream keeps it
            last_arrival = max(self.timing.arrival_ns(complete), last_arrival)
            wait_s = (last_arrival - now_ns()) / 1e9
            if wait_s > 0 and stop.wait(wait_s):
                return
            data = self._render(k, n)
            self._buffer.put(
                Sample(
                    host_ns=now_ns(),
                    device_ns=round(k * 1_000_000_000 / sr),
                    payload=AudioBlock(data),
                    count=n,
                    true_ns=self._true_ns(k),
                )
            )
            self._delivered += 1
            k += n

    def _render(self, k: int, n: int) -> np.ndarray:
        out = self._render_tones(k, n)
        if self.ltc_channel is not None:
            if self._ltc is None:
                self._ltc = _LtcTrack(self.spec, self.samplerate, self._true_ns(0))
            out[:, self.ltc_channel] = self._ltc.samples(k, n)
        return out

    def _render_tones(self, k: int, n: int) -> np.ndarray:
        idx = np.arange(k, k + n, dtype=np.float64)
        out = self._amp * np.sin(np.outer(idx, self._w) + self._phase)
        start = k % self.samplerate
        out += self._noise[start : start + n]
        with self._lock:
            self._slates += [self._first_sample_at(h) for h in self._slate_ns]
            self._slate_ns.clear()
            self._slates = [s for s in self._slates if s + len(self._beep) > k]
            slates = list(self._slates)
        for s in slates:
            a, b = max(s, k), min(s + len(self._beep), k + n)
            if a < b:
                out[a - k : b - k, :] = self._beep[a - s : b - s, None]  # the LTC channel is rendered over it
        return out.astype(np.float32)

    def close(self) -> None:
        self.stop()
        self._opened = False

    def slate(self, host_ns: int) -> None:
        """Beep from the first sample captured at or after true host time `host_ns`."""
        with self._lock:
            self._slate_ns.append(host_ns)

    def _first_sample_at(self, host_ns: int) -> int:
        t = self.timing
        k = max(0, math.ceil((host_ns - t.origin_ns) * (1 + t.drift) * self.samplerate / 1e9))
        while k > 0 and self._true_ns(k - 1) >= host_ns:  # settle the rounding of true_ns
            k -= 1
        while self._true_ns(k) < host_ns:
            k += 1
        return k

    def describe(self) -> dict[str, Any]:
        return {
            "driver": "demo",
            "device": "demo tone generator",
            "channels": self.channels,
            "samplerate": self.samplerate,
            "blocksize": self.blocksize,
            "sample_format": self.spec["sample_format"],
            "dtype": "float32",
            "device_clock": "sample counter",
            "tones_hz": [round(f, 3) for f in self.tones_hz],
            "drift_ppm": self.spec["drift_ppm"],
            **(
                {
                    "ltc_channel": self.ltc_channel + 1,
                    "ltc_fps": self.spec["ltc_fps"],
                    "ltc_offset_s": self.spec["ltc_offset_s"],
                }
                if self.ltc_channel is not None
                else {}
            ),
        }

    def stats(self) -> dict[str, int]:
        return {"blocks": self._delivered, "dropped_blocks": self._dropped, "buffer_overflows": self._buffer.overflows}


class _LtcTrack:
    """LTC for the demo's LTC channel, rendered ahead of the samples asked for, one LTC frame at a time."""

    def __init__(self, spec: StreamSpec, samplerate: int, first_true_ns: int) -> None:
        from ..ltc import LtcEncoder
        from ..take.timecode import TimecodeRate

        rate = TimecodeRate.of(float(spec["ltc_fps"]))
        # the time of day (local, as timecode counts it) of sample 0 on the master clock
        wall_ns = first_true_ns + (time.time_ns() - now_ns())
        local = _dt.datetime.fromtimestamp(wall_ns / 1e9).astimezone()
        tod = (
            local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6 + float(spec["ltc_offset_s"])
        ) % 86400
        first = math.ceil(tod * float(rate.rate))  # the first whole LTC frame starts after sample 0
        lead = int(round((first / float(rate.rate) - tod) * samplerate))
        self._encoder = LtcEncoder(samplerate, rate, first % rate.frames_in_day())
        self._buffer = np.zeros(lead, np.float32)
        self._at = 0  # sample index of the buffer's start

    def samples(self, k: int, n: int) -> np.ndarray:
        while self._at + len(self._buffer) < k + n:
            self._buffer = np.concatenate([self._buffer, self._encoder.next_frame()])
        out = self._buffer[k - self._at : k - self._at + n]
        self._buffer, self._at = self._buffer[k + n - self._at :], k + n
        return out

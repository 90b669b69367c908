"""Audio input through PortAudio (python-sounddevice).

The real-time callback only copies the block into a SampleBuffer (sounddevice's `rec_unlimited` pattern).
The device clock is the sample counter: the ADC's sample clock is the truth for audio, and the recorder
fits it against host arrival times. PortAudio's own `inputBufferAdcTime` is kept beside it as `adc_ns`;
its clock is host-API specific (the wall clock under ALSA), so it is stored raw, never mixed with host time.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ..errors import DeviceError
from ..records import AudioBlock, Sample
from ..rig import StreamSpec
from .base import SampleBuffer, StreamEnded

DTYPES = {"f32": "float32", "s16": "int16", "s24": "int32"}  # s24: the writer keeps the top 24 bits
BUFFER_SECONDS = 5.0  # bursty host APIs (PulseAudio sources) hand over seconds of audio at once


def _device_arg(device: str | int) -> str | int | None:
    return None if device == "" else device


class PortAudioInput:
    def __init__(self, spec: StreamSpec) -> None:
        self.spec = spec
        self.samplerate = int(spec["samplerate"])
        self.channels = int(spec["channels"])
        self.blocksize = int(spec["blocksize"]) or self.samplerate // 100
        self.sample_format = spec["sample_format"]
        self.dtype = DTYPES[self.sample_format]
        self._stream: Any = None
        self._info: dict[str, Any] = {}
        self._buffer = SampleBuffer(max(64, int(BUFFER_SECONDS * self.samplerate / self.blocksize)))
        self._next_sample = 0
        self._blocks = 0
        self._input_overflows = 0
        self._other_status = 0
        self._stopping = False
        self._lock = threading.Lock()

    def _fail_line(self, message: object) -> DeviceError:
        text = " ".join(str(message).split())
        return DeviceError(f"{self.spec.name}: cannot open audio input {self.spec['device']!r}: {text}")

    def open(self) -> None:
        try:
            import sounddevice as sd
        except OSError as e:  # libportaudio missing
            raise self._fail_line(e) from None
        try:
            stream = sd.InputStream(
                device=_device_arg(self.spec["device"]),
                channels=self.channels,
                samplerate=self.samplerate,
                blocksize=self.blocksize,
                dtype=self.dtype,
                callback=self._callback,
                finished_callback=self._finished,
            )
        except (sd.PortAudioError, ValueError, TypeError) as e:
            raise self._fail_line(e) from None
        self._stream = stream
        dev = sd.query_devices(stream.device)
        self._info = {
            "driver": "portaudio",
            "device": dev["name"],
            "device_index": int(stream.device),
            "hostapi": sd.query_hostapis(dev["hostapi"])["name"],
            "channels": self.channels,
            "samplerate": int(stream.samplerate),
            "blocksize": self.blocksize,
            "sample_format": self.sample_format,
            "dtype": self.dtype,
            "latency_s": float(stream.latency),
            "device_clock": "sample counter",
        }

    def _callback(self, indata: Any, frames: int, t: Any, status: Any) -> None:
        # Real-time thread: stamp, copy, hand over. Nothing here may block.
        host_ns = time.monotonic_ns()
        first = self._next_sample
        self._next_sample = first + frames
        self._blocks += 1
        if status:
            if status.input_overflow:
                self._input_overflows += 1
            else:
                self._other_status += 1
        adc = t.inputBufferAdcTime
        self._buffer.put(
            Sample(
                host_ns=host_ns,
                device_ns=round(first * 1_000_000_000 / self.samplerate),
                payload=AudioBlock(indata.copy(), round(adc * 1e9) if adc else None),
                count=frames,
            )
        )

    def _finished(self) -> None:
        if not self._stopping:
            self._buffer.fail(StreamEnded(f"{self.spec.name}: audio input {self._info.get('device', '')!r} stopped"))

    def start(self) -> None:
        if self._stream is None:
            raise DeviceError(f"{self.spec.name}: audio input not open")
        self._stopping = False
        try:
            self._stream.start()
        except Exception as e:
            raise DeviceError(f"{self.spec.name}: cannot start audio input {self.spec['device']!r}: {e}") from None

    def read(self, timeout: float) -> Sample | None:
        return self._buffer.get(timeout)

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            if self._stream is not None and self._stream.active:
                # abort, not stop: stop drains the host's buffers, which a PulseAudio source fills only
                # every ~2 s; blocks after the stop are not wanted anyway
                self._stream.abort(ignore_errors=True)

    def close(self) -> None:
        with self._lock:
            self._stopping = True
            stream, self._stream = self._stream, None
        if stream is not None:
            stream.close(ignore_errors=True)

    def describe(self) -> dict[str, Any]:
        return dict(self._info) or {
            "driver": "portaudio",
            "device": str(self.spec["device"]),
            "channels": self.channels,
            "samplerate": self.samplerate,
            "blocksize": self.blocksize,
            "sample_format": self.sample_format,
        }

    def stats(self) -> dict[str, int]:
        return {
            "blocks": self._blocks,
            "frames": self._next_sample,
            "input_overflows": self._input_overflows,
            "other_status": self._other_status,
            "buffer_overflows": self._buffer.overflows,
        }

    def slate(self, host_ns: int) -> None:
        """A real microphone hears the physical slate; nothing to render."""


def list_audio_inputs() -> list[dict[str, Any]]:
    """PortAudio's input devices; [] when PortAudio lists none or its library is missing."""
    try:
        import sounddevice as sd

        devices = sd.query_devices()
        hostapis = sd.query_hostapis()
    except Exception:  # OSError: no libportaudio; PortAudioError: a broken host API
        return []
    return [
        {
            "index": i,
            "name": d["name"],
            "hostapi": hostapis[d["hostapi"]]["name"],
            "max_input_channels": d["max_input_channels"],
            "default_samplerate": d["default_samplerate"],
        }
        for i, d in enumerate(devices)
        if d["max_input_channels"] > 0
    ]

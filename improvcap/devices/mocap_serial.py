"""Serial motion capture: frames from a serial port (USB-serial suit or IMU, pty emulator) via pyserial.

A reader thread reads whatever bytes are waiting, feeds them to the protocol's parser and hands each frame
on as a `Sample`: `host_ns` is when the read that completed the frame returned, `device_ns` is the
device's own clock in ns, unwrapped (the recorder maps it onto the host clock), `seq` and the stored
counter its frame counter, unwrapped too (see serial_time.FrameClock). The port is opened exclusively
(`serial_port`) and, when its protocol has a `configure`, the device is set up on open. A port that stays
silent for SILENCE_S once streaming is a device failure: the recorder logs a fault and the other streams
go on.
"""

from __future__ import annotations

from typing import Any

import serial

from ..clock import now_ns
from ..errors import DeviceError
from ..protocols import FrameParser, channel_names, make_parser, protocol_module
from ..records import MocapFrame, Sample
from ..rig import StreamSpec
from .base import SILENCE_S, ThreadedDevice
from .serial_port import open_port, port_failed, read_waiting, release_port
from .serial_time import FrameClock


class SerialMocap(ThreadedDevice):
    """Device protocol for `driver = "serial"`. `port` overrides the rig's port (the demo's pty)."""

    def __init__(self, spec: StreamSpec, port: str | None = None) -> None:
        s = spec.settings
        # two seconds of frames between the reader thread and the recorder's pump
        super().__init__(spec, max(256, int(s["rate"] * 2)))
        self.port: str = port if port is not None else s["port"]
        self.baudrate: int = s["baudrate"]
        self.protocol: str = s["protocol"]
        self.rate: float = s["rate"]
        self.channel_names = channel_names(s)
        self.channels = len(self.channel_names)
        self._parser: FrameParser = make_parser(s)
        self._serial: serial.Serial | None = None
        self.bytes_read = 0

    def open(self) -> None:
        if self._serial is not None:
            return
        self._serial = open_port(self.spec.name, self.port, self.baudrate)
        configure = getattr(protocol_module(self.protocol), "configure", None)
        if configure is not None:
            try:
                configure(self._serial, self.spec.settings, self.spec.name)
            except BaseException:
                self.close()
                raise

    def start(self) -> None:
        if self._producer is not None:
            return
        if self._serial is None:
            raise DeviceError(f"{self.spec.name}: serial port {self.port} is not open")
        try:
            # bytes queued since open() would arrive in one burst with misleading arrival times
            pending = self._serial.in_waiting
            self._serial.reset_input_buffer()
        except (serial.SerialException, OSError) as e:
            raise port_failed(self.spec.name, self.port, e) from None
        # a device that was already streaming is cut mid-line by the flush
        self._parser = make_parser(self.spec.settings, skip_partial=pending > 0)
        self._start_producer(self._run)

    def _run(self, stop: Any) -> None:
        ser, parser, put = self._serial, self._parser, self._buffer.put
        assert ser is not None
        clock = FrameClock(parser, self.rate)
        last_byte = now_ns()
        while not stop.is_set():
            data = read_waiting(ser, self.spec.name, self.port, stop)
            if data is None:
                return
            host = now_ns()
            if not data:
                if host - last_byte > SILENCE_S * 1e9:
                    raise DeviceError(
                        f"{self.spec.name}: no data from serial port {self.port} "
                        f"for {SILENCE_S:g} s: the device stopped answering"
                    )
                continue
            last_byte = host
            self.bytes_read += len(data)
            for f in parser.feed(data):
                counter, device_ns = clock(f)
                put(Sample(host_ns=host, device_ns=device_ns, payload=MocapFrame(counter, f.values), seq=counter))

    def close(self) -> None:
        self.stop()
        if self._serial is not None:
            release_port(self._serial)
            self._serial = None

    def describe(self) -> dict[str, Any]:
        return {
            "channels": self.channels,
            "rate": self.rate,
            "protocol": self.protocol,
            "port": self.port,
            "baudrate": self.baudrate,
            "channel_names": list(self.channel_names),
        }

    def stats(self) -> dict[str, int]:
        return {**self._parser.stats(), "overflows": self._buffer.overflows, "bytes_read": self.bytes_read}

    def slate(self, host_ns: int) -> None:
        """Real hardware renders no slate."""

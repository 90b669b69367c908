"""Serial motion capture: frames from a serial port (USB-serial suit or IMU, pty emulator) via pyserial.

A reader thread reads whatever bytes are waiting, feeds them to the protocol's parser and hands each frame
on as a `Sample`: `host_ns` is when the read that completed the frame returned, `device_ns` is the
device's own clock in ns, unwrapped (the recorder maps it onto the host clock), `seq` and the stored
counter its frame counter, unwrapped too (see serial_time.FrameClock). A port that stays silent for
SILENCE_S once streaming is a device failure: the recorder logs a fault and the other streams go on.
"""

from __future__ import annotations

import errno
import os
import termios
from typing import Any

import serial
import serial.tools.list_ports

from ..clock import now_ns
from ..errors import DeviceError
from ..records import MocapFrame, Sample
from ..rig import StreamSpec
from .base import ThreadedDevice
from .serial_protocols import FrameParser, channel_names, make_parser, protocol_module
from .serial_time import FrameClock

READ_TIMEOUT_S = 0.05  # how long a read waits for the first byte; bounds how fast stop() returns
SILENCE_S = 2.0        # no byte for this long: the device stopped answering


def _errno(e: BaseException | None) -> int | None:
    """The errno behind an error, following pyserial's re-raises (termios errors carry it in args)."""
    while e is not None:
        code = getattr(e, "errno", None)
        if isinstance(code, int) and code > 0:
            return code
        if isinstance(e, termios.error) and e.args and isinstance(e.args[0], int):
            return e.args[0]
        e = e.__cause__ or e.__context__
    return None


def _reason(e: BaseException) -> str:
    """pyserial's messages repeat the port and nest errno texts; keep the part a user needs."""
    code = _errno(e)
    if code in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY):
        return "port is in use by another program"
    if code == errno.ENOTTY:
        return "not a serial device"
    if code is not None:
        return os.strerror(code)
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def open_port(stream: str, port: str, baudrate: int, timeout: float = READ_TIMEOUT_S) -> serial.Serial:
    """`port` opened exclusively (a second program reading it would steal half of every message), reads
    waiting `timeout` s for a first byte; or a one-line DeviceError naming the stream and the port."""
    try:
        return serial.Serial(port, baudrate, timeout=timeout, exclusive=True)
    except (serial.SerialException, OSError, ValueError) as e:
        raise DeviceError(f"{stream}: cannot open serial port {port}: {_reason(e)}") from None


def port_failed(stream: str, port: str, error: BaseException) -> DeviceError:
    """The one-line error of a port that failed after it opened (unplugged, I/O error)."""
    return DeviceError(f"{stream}: serial port {port} failed: {_reason(error)}")


def release_port(port: serial.Serial) -> None:
    try:
        port.close()
    except (serial.SerialException, OSError):
        pass  # the port may already be gone; nothing left to release


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
            try:
                data = ser.read(max(1, ser.in_waiting))
            except (serial.SerialException, OSError) as e:
                if stop.is_set():
                    return
                raise port_failed(self.spec.name, self.port, e) from None
            host = now_ns()
            if not data:
                if host - last_byte > SILENCE_S * 1e9:
                    raise DeviceError(f"{self.spec.name}: no data from serial port {self.port} "
                                      f"for {SILENCE_S:g} s: the device stopped answering")
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


PROBE_BAUDRATES = (115200, 921600)  # the factory defaults of the devices probed


def probe_protocol(device: str, baudrates: tuple[int, ...] = PROBE_BAUDRATES) -> str | None:
    """The protocol a port answers, asked with each protocol's harmless probe (a read-only request such as
    a device id or model number); None when nothing answers or the port cannot be opened."""
    from . import protocol_syncbox
    from .serial_protocols import PROTOCOLS

    probes = [(name, getattr(protocol_module(name), "probe", None)) for name in PROTOCOLS]
    probes.append(("syncbox", protocol_syncbox.probe))
    for baudrate in baudrates:
        try:
            port = open_port("probe", device, baudrate)
        except DeviceError:
            return None
        try:
            for name, probe in probes:
                if probe is not None and probe(port):
                    return name
        except (serial.SerialException, OSError):
            return None
        finally:
            release_port(port)
    return None


def list_serial_ports(probe: bool = True) -> list[dict[str, Any]]:
    """Serial ports the OS knows, for `improvcap devices`; USB ones are probed for a protocol (`probe`)."""
    ports = []
    for p in sorted(serial.tools.list_ports.comports(), key=lambda p: p.device):
        usb = p.vid is not None and p.pid is not None
        ports.append({
            "device": p.device,
            "description": p.description if p.description and p.description != "n/a" else None,
            "vid_pid": f"{p.vid:04x}:{p.pid:04x}" if usb else None,
            "serial_number": p.serial_number,
            "manufacturer": p.manufacturer,
            # only USB adapters: a built-in UART may drive something that a stray byte would upset
            "protocol": probe_protocol(p.device) if probe and usb else None,
        })
    return ports

"""Serial ports for the serial drivers (mocap, sync box): open, read, fail, release, and what a port speaks.

A port is opened exclusively with pyserial (a second program reading it would steal half of every
message); every error becomes one DeviceError line naming the stream and the port, with pyserial's nested
errno texts cut down to the part a user needs. `read_waiting` is the read step of the drivers' reader
threads. `probe_protocol` and `list_serial_ports` serve `improvcap devices`.
"""

from __future__ import annotations

import errno
import os
import termios
import threading
from typing import Any

import serial
import serial.tools.list_ports

from ..errors import DeviceError
from ..protocols import protocol_module, syncbox
from ..registry import PROTOCOLS

READ_TIMEOUT_S = 0.05  # how long a read waits for the first byte; bounds how fast a reader thread stops
PROBE_BAUDRATES = (115200, 921600)  # the factory defaults of the devices probed


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
    """`port` opened exclusively, reads waiting `timeout` s for a first byte; or a one-line DeviceError
    naming the stream and the port."""
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


def read_waiting(ser: serial.Serial, stream: str, port: str, stop: threading.Event) -> bytes | None:
    """The bytes waiting on `ser` (at least one, waiting up to its timeout for it; b"" when none came).
    None when the port failed after `stop` was set (closed under the reader); otherwise a failing port
    raises `port_failed`."""
    try:
        data: bytes = ser.read(max(1, ser.in_waiting))
        return data
    except (serial.SerialException, OSError) as e:
        if stop.is_set():
            return None
        raise port_failed(stream, port, e) from None


def probe_protocol(device: str, baudrates: tuple[int, ...] = PROBE_BAUDRATES) -> str | None:
    """The protocol a port answers, asked with each protocol's harmless probe (a read-only request such as
    a device id or model number); None when nothing answers or the port cannot be opened."""
    probes = [(name, getattr(protocol_module(name), "probe", None)) for name in PROTOCOLS]
    probes.append(("syncbox", syncbox.probe))
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
        ports.append(
            {
                "device": p.device,
                "description": p.description if p.description and p.description != "n/a" else None,
                "vid_pid": f"{p.vid:04x}:{p.pid:04x}" if usb else None,
                "serial_number": p.serial_number,
                "manufacturer": p.manufacturer,
                # only USB adapters: a built-in UART may drive something that a stray byte would upset
                "protocol": probe_protocol(p.device) if probe and usb else None,
            }
        )
    return ports

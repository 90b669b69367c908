"""Demo twin of a serial mocap suit: an emulator on a pseudo-terminal, read by the real serial driver.

Everything after the pty — pyserial, the reader thread, the parser — is the code path of real hardware;
only the device itself is emulated. Samples carry the emulator's ground truth in `true_ns`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..records import Sample
from ..rig import StreamSpec
from .mocap_emulator import BOOT_NS, MocapEmulator
from .mocap_serial import SerialMocap


class DemoMocap:
    def __init__(self, spec: StreamSpec) -> None:
        self.spec = spec
        self._emulator: MocapEmulator | None = None
        self._serial: SerialMocap | None = None

    def open(self) -> None:
        if self._serial is not None:
            return
        self._emulator = MocapEmulator(self.spec)
        self._serial = SerialMocap(self.spec, port=self._emulator.port_name)
        try:
            self._serial.open()
        except BaseException:
            self.close()
            self._serial = self._emulator = None
            raise

    def start(self) -> None:
        assert self._serial is not None and self._emulator is not None, "open() first"
        self._serial.start()  # reader first: the device's frame 0 must not be flushed away
        self._emulator.start()

    def read(self, timeout: float) -> Sample | None:
        assert self._serial is not None and self._emulator is not None, "open() first"
        sample = self._serial.read(timeout)
        if sample is None or sample.seq is None:
            return sample
        return dataclasses.replace(sample, true_ns=self._emulator.true_ns(sample.seq, sample.device_ns))

    def stop(self) -> None:
        if self._emulator is not None:
            self._emulator.stop()
        if self._serial is not None:
            self._serial.stop()

    def close(self) -> None:
        # both objects stay, so describe() and stats() still answer for the take's manifest
        if self._serial is not None:
            self._serial.close()
        if self._emulator is not None:
            self._emulator.close()

    def describe(self) -> dict[str, Any]:
        serial = self._serial or SerialMocap(self.spec, port="")
        boot_ns = self._emulator.boot_ns if self._emulator is not None else BOOT_NS
        return {**serial.describe(), "emulated": True, "pty": serial.port or None, "device_boot_ns": boot_ns}

    def stats(self) -> dict[str, int]:
        out = self._serial.stats() if self._serial is not None else {}
        if self._emulator is not None:
            out["emulator_sent"] = self._emulator.sent
            out["emulator_dropped"] = self._emulator.dropped
        return out

    def slate(self, host_ns: int) -> None:
        if self._emulator is not None:
            self._emulator.slate(host_ns)

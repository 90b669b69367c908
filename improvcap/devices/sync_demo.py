"""Demo twin of a sync box: the emulator on a pseudo-terminal, driven by the real `serial` driver.

Everything after the pty — pyserial, the reader thread, the parser, the round-trip clock fit — is the code
path of real hardware; only the box is emulated. It is powered on at open() (a box is on while plugged
in), so the driver identifies it and seeds its clock fit as it would a real one. Pulses carry the
emulator's ground truth in `true_ns` (`truth = true` writes it to `<name>.truth.csv`).

Slates: the recorder asks the box to fire and hands the confirmed fire time to the other devices; demo
twins render it only into data they have not delivered yet. Give them a transport delay (`transport_ms`,
with `latency_ms` to match) longer than the box's confirmation takes — a few ms — for every slate to
land where the box fired it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..records import Sample
from ..rig import StreamSpec
from .base import SlateFire
from .sync_emulator import BOOT_NS, SyncBoxEmulator
from .sync_serial import SerialSyncBox

_RUNNING: dict[str, SyncBoxEmulator] = {}  # the demo boxes open in this process, by stream name


def running_box(name: str) -> SyncBoxEmulator | None:
    """The emulator of the demo box `name`, while it is open: what a triggered demo camera exposes on."""
    return _RUNNING.get(name)


class DemoSyncBox:
    def __init__(self, spec: StreamSpec) -> None:
        self.spec = spec
        self.emulator: SyncBoxEmulator | None = None
        self._serial: SerialSyncBox | None = None

    def open(self) -> None:
        if self._serial is not None:
            return
        self.emulator = SyncBoxEmulator(self.spec)
        self.emulator.start()
        self._serial = SerialSyncBox(self.spec, port=self.emulator.port_name)
        try:
            self._serial.open()
        except BaseException:
            self.close()
            self._serial = self.emulator = None
            raise
        _RUNNING[self.spec.name] = self.emulator

    def start(self) -> None:
        assert self._serial is not None, "open() first"
        self._serial.start()

    def read(self, timeout: float) -> Sample | None:
        assert self._serial is not None and self.emulator is not None, "open() first"
        sample = self._serial.read(timeout)
        if sample is None or sample.seq is None:
            return sample  # round trips carry no truth: they are not rows of the pulse table
        return dataclasses.replace(sample, true_ns=self.emulator.pulse_true_ns(sample.seq))

    def stop(self) -> None:
        if self._serial is not None:
            self._serial.stop()

    def close(self) -> None:
        # both objects stay, so describe() and stats() still answer for the take's manifest
        if self.emulator is not None and _RUNNING.get(self.spec.name) is self.emulator:
            del _RUNNING[self.spec.name]
        if self._serial is not None:
            self._serial.close()
        if self.emulator is not None:
            self.emulator.close()

    def to_host(self, device_ns: int) -> int:
        assert self._serial is not None, "open() first"
        return self._serial.to_host(device_ns)

    def fire_slate(self, timeout: float = 1.0) -> SlateFire:
        assert self._serial is not None, "open() first"
        return self._serial.fire_slate(timeout)

    def describe(self) -> dict[str, Any]:
        serial = self._serial or SerialSyncBox(self.spec, port="")
        return {
            **serial.describe(),
            "emulated": True,
            "pty": serial.port or None,
            "device_boot_ns": BOOT_NS,
            "drift_ppm": self.spec["drift_ppm"],
            "jitter_ms": self.spec["jitter_ms"],
        }

    def stats(self) -> dict[str, int]:
        out = self._serial.stats() if self._serial is not None else {}
        if self.emulator is not None:
            out["emulator_sent"] = self.emulator.sent
            out["emulator_dropped"] = self.emulator.dropped
        return out

    def slate(self, host_ns: int) -> None:
        """Like the real box: it fires only when asked to (`fire_slate`)."""

"""A serial device emulator on a pseudo-terminal read by the real `serial` driver, for the serial tests.

A pytest plugin (conftest's `pytest_plugins`): the fixture `bench(device_spec, host_spec=None, codec=None,
**emulator_options)` makes a `Bench` that is always closed after the test.
"""
from __future__ import annotations

from typing import Any, Iterator

import pytest

from improvcap.devices.mocap_emulator import MocapEmulator
from improvcap.devices.mocap_serial import SerialMocap
from improvcap.records import Sample
from improvcap.rig import StreamSpec

from helpers import collect, drain


class Bench:
    """An emulator of `device_spec` on a pty, read by SerialMocap configured with `host_spec` (default: the
    same), optionally with another `codec` in the emulator (the same device with other output settings)."""

    def __init__(self, device_spec: StreamSpec, host_spec: StreamSpec | None = None, codec: Any = None,
                 **emulator_options: Any) -> None:
        self.emulator = MocapEmulator(device_spec, **emulator_options)
        if codec is not None:
            self.emulator.codec = codec
        self.driver = SerialMocap(host_spec or device_spec, port=self.emulator.port_name)

    def run(self, seconds: float) -> list[Sample]:
        self.driver.open()
        self.driver.start()  # reader first: the device's frame 0 must not be flushed away
        self.emulator.start()
        samples = collect(self.driver, seconds)
        self.emulator.stop()
        samples += drain(self.driver)
        self.driver.stop()
        return samples

    def close(self) -> None:
        self.driver.close()
        self.emulator.close()


@pytest.fixture
def bench() -> Iterator[Any]:
    benches: list[Bench] = []

    def make(*args: Any, **options: Any) -> Bench:
        benches.append(Bench(*args, **options))
        return benches[-1]

    yield make
    for b in benches:
        b.close()

"""`fail_after_s` on a demo device: it fails that long after it starts, to rehearse a mid-take fault."""

from __future__ import annotations

from typing import Any

from ..clock import now_ns
from ..errors import DeviceError
from ..records import Sample
from .base import Device, FiresSlate, MapsToHost, SlateFire


class FailAfter:
    """Wraps a device; `read` raises DeviceError once `seconds` have passed since `start`."""

    def __init__(self, device: Device, seconds: float) -> None:
        self._device = device
        self._seconds = seconds
        self._deadline_ns: int | None = None
        self.spec = device.spec

    def start(self) -> None:
        self._device.start()
        self._deadline_ns = now_ns() + int(self._seconds * 1e9)

    def read(self, timeout: float) -> Sample | None:
        if self._deadline_ns is not None and now_ns() >= self._deadline_ns:
            raise DeviceError(f"{self.spec.name}: scripted failure after {self._seconds:g} s (fail_after_s)")
        return self._device.read(timeout)

    def __getattr__(self, name: str) -> Any:  # open, stop, close, describe, stats, slate
        return getattr(self._device, name)


class FailAfterBox(FailAfter):
    """A failing sync box: until it fails it still fires slates and maps its clock (the capabilities are
    spelled out, so that `isinstance` finds them without looking through `__getattr__`)."""

    def fire_slate(self, timeout: float | None = None) -> SlateFire:
        device: Any = self._device
        fire: SlateFire = device.fire_slate() if timeout is None else device.fire_slate(timeout)
        return fire

    def to_host(self, device_ns: int) -> int:
        device: Any = self._device
        host: int = device.to_host(device_ns)
        return host


def fail_after(device: Device, seconds: float) -> Device:
    """`device` wrapped to fail `seconds` after it starts, with the optional capabilities it has."""
    if isinstance(device, FiresSlate) and isinstance(device, MapsToHost):
        return FailAfterBox(device, seconds)
    return FailAfter(device, seconds)

"""Device drivers, their demo twins and emulators, picked by the rig file's (kind, driver).

The table of drivers is `improvcap.registry.DRIVERS`; a driver's module is imported only when a rig uses
it, so that `rig check` of a camera rig needs no audio stack. Importing this package loads the device
protocol (`base`) and the registry: no driver, and not `improvcap.rig` (which reads the registry too).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ..registry import DRIVERS
from .base import Device

if TYPE_CHECKING:
    from ..rig import StreamSpec


def driver_class(kind: str, driver: str) -> type:
    module, _, cls = DRIVERS[(kind, driver)].partition(":")
    found: type = getattr(importlib.import_module(module), cls)
    return found


def make_device(spec: StreamSpec) -> Device:
    """An unopened device for one rig stream."""
    device: Device = driver_class(spec.kind, spec.driver)(spec)
    if spec.get("fail_after_s"):
        from .scripted_fault import fail_after

        return fail_after(device, spec["fail_after_s"])
    return device


__all__ = ["Device", "driver_class", "make_device"]

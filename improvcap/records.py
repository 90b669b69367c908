"""Immutable timestamped records: what devices emit and what writers receive.

A device emits `Sample`s stamped on the absolute host clock (`time.monotonic_ns()` at arrival) and, where it
has one, its own clock. The recorder maps each sample onto the take's shared clock and hands writers a
`Record`, whose times are nanoseconds since the take's `t0`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class Sample:
    host_ns: int
    """Host monotonic time at which the sample reached the host."""
    device_ns: int
    """The device's own clock for the first frame/sample of the payload, in ns (host time if it has none)."""
    payload: Any
    count: int = 1
    """Audio: frames (samples per channel) in the block; 1 otherwise."""
    seq: int | None = None
    """The device's own frame counter, where it sends one."""
    true_ns: int | None = None
    """Demo devices only: the host time at which the event truly happened (ground truth)."""


@dataclass(frozen=True, slots=True)
class Record:
    stream: str
    index: int
    """Per take: frame or row number from 0; for audio the first sample's number."""
    t_ns: int
    """Shared clock: ns since the take's t0, after device-clock mapping and latency correction."""
    device_ns: int
    host_ns: int
    """Arrival on the host, ns since t0."""
    payload: Any
    count: int = 1
    seq: int | None = None
    true_ns: int | None = None
    """Demo devices only: true time of the event, ns since t0."""


@dataclass(frozen=True, slots=True)
class Event:
    """A line of events.csv: slate, mark, note, fault, drop."""

    t_ns: int
    kind: str
    stream: str = ""
    detail: str = ""


def full_scale(data: np.ndarray) -> float:
    """Integer samples are full-scale at their type's maximum; float samples at 1.0."""
    return float(np.iinfo(data.dtype).max) if data.dtype.kind == "i" else 1.0


@dataclass(frozen=True, slots=True)
class AudioBlock:
    """Payload of an audio Sample: `data` is (frames, channels), float32, int16 or int32 full-scale."""

    data: Any
    adc_ns: int | None = None
    """The driver's own ADC time of the first frame (PortAudio's inputBufferAdcTime), if any."""


@dataclass(frozen=True, slots=True)
class MocapFrame:
    """Payload of a mocap Sample: the device's frame counter and its channel values."""

    counter: int
    values: tuple[float, ...]

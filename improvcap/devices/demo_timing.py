"""The ground-truth timing model shared by the demo twins.

A demo device sees an event at true host time `true_ns`. Its own clock started in step with the host
clock when the device opened, then runs `drift_ppm` fast or slow. Its whole timing chain is biased by
`offset_ms` against what it recorded (like a sensor whose exposure or ADC pipeline precedes its stamp):
the data of an event at `true_ns` is stamped and sent as if the event were `offset_ms` later. Data reach
the host `transport_ms` after that, plus a jitter with a long tail (exponential with mean `jitter_ms`),
and a fraction `drop_rate` never arrives. After mapping device time onto host arrivals, a stream's
timestamps are thus late by offset_ms + transport_ms, which is what `latency_ms` (calibration) removes.
"""

from __future__ import annotations

import random
import zlib

from ..clock import now_ns
from ..rig import StreamSpec


class DemoTiming:
    def __init__(self, spec: StreamSpec) -> None:
        s = spec.settings
        self.drift = s["drift_ppm"] * 1e-6
        self.offset_ns = int(round(s["offset_ms"] * 1e6))
        self.jitter_ns = s["jitter_ms"] * 1e6
        self.transport_ns = int(round(s["transport_ms"] * 1e6))
        self.drop_rate = s["drop_rate"]
        # Seeded by the stream name: a demo take is reproducible apart from the host's own scheduling.
        self.rng = random.Random(zlib.crc32(spec.name.encode()))
        self.origin_ns = now_ns()

    def reset(self) -> None:
        self.origin_ns = now_ns()

    def device_ns(self, true_ns: int) -> int:
        """The device clock's reading for an event at true host time `true_ns`."""
        elapsed = true_ns - self.origin_ns
        return self.origin_ns + elapsed + int(round(elapsed * self.drift)) + self.offset_ns

    def true_ns(self, device_elapsed_ns: float) -> int:
        """True host time at which the device clock has advanced `device_elapsed_ns` since it opened."""
        return self.origin_ns + int(round(device_elapsed_ns / (1.0 + self.drift)))

    def arrival_ns(self, true_ns: int) -> int:
        jitter = self.rng.expovariate(1.0 / self.jitter_ns) if self.jitter_ns > 0 else 0.0
        return true_ns + self.offset_ns + self.transport_ns + int(jitter)

    def dropped(self) -> bool:
        return self.drop_rate > 0 and self.rng.random() < self.drop_rate

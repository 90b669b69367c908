"""What a repaired take lost, counted from its files: counter gaps, time gaps, audio device-clock jumps."""

from __future__ import annotations

import numpy as np

from ..take import counters
from ..take.counters import time_gaps

__all__ = ["audio_gaps", "counter_gaps", "time_gaps"]


def counter_gaps(counter: np.ndarray) -> int:
    """Numbers a u32 counter skipped (as the recorder counts them: a backwards jump is a reset)."""
    if len(counter) < 2:
        return 0
    counter = counter.astype(np.int64)
    return int(counters.skipped(counters.step(counter[:-1], counter[1:])).sum())


def audio_gaps(device_ns: np.ndarray, frames: np.ndarray, samplerate: float) -> int:
    """Samples lost between blocks: the device clock (its sample counter) jumping past a block's end."""
    if len(device_ns) < 2:
        return 0
    period = 1e9 / samplerate
    expected = device_ns[:-1] + np.rint(frames[:-1] * period).astype(np.int64)
    gap = (device_ns[1:] - expected).astype(np.float64)
    return int(np.rint(gap[gap > period / 2] / period).sum())

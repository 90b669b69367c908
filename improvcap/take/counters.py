"""The wrapping-counter rule: how a step of a device's frame or pulse counter is read.

Counters on the wire wrap (mocap frames and sync box pulses carry a u32, some devices a u16). A step of the
counter, taken modulo its wrap, is *forward* when it is positive and less than half the wrap: it skipped
`step - 1` numbers (lost frames). A step of 0 is a repeat; a longer step is a step back (a device reset or a
late frame), which loses nothing. Every counter in the project (the recorder's live drop count, the
parsers' statistics, verify and repair) is read by this rule. The functions take ints or numpy arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np

COUNTER_WRAP = 1 << 32


def step(previous: Any, current: Any, wrap: int = COUNTER_WRAP) -> Any:
    """`current - previous` modulo `wrap` (elementwise for arrays)."""
    return (current - previous) % wrap


def is_forward(steps: Any, wrap: int = COUNTER_WRAP) -> Any:
    return (steps > 0) & (steps < wrap // 2)


def is_back(steps: Any, wrap: int = COUNTER_WRAP) -> Any:
    return steps >= wrap // 2


def skipped(steps: Any, wrap: int = COUNTER_WRAP) -> Any:
    """Numbers skipped by forward steps (0 for repeats and steps back), elementwise."""
    return (steps - 1) * is_forward(steps, wrap)


def time_gaps(t_ns: Any, period_ns: float) -> int:
    """Frames missing between timestamps more than 1.5 periods apart (for streams with no counter)."""
    if len(t_ns) < 2:
        return 0
    steps = np.diff(np.asarray(t_ns).astype(np.float64))
    big = steps > 1.5 * period_ns
    return int(np.rint(steps[big] / period_ns).sum() - big.sum())

"""Figures for verify's results: rounding that stays JSON-ready, compact series for plots."""

from __future__ import annotations

import math

import numpy as np

PLOT_POINTS = 2000


def rounded(v: float | None, digits: int = 3) -> float | None:
    return None if v is None or not math.isfinite(v) else round(float(v), digits)


def downsample(t_s: np.ndarray, values: np.ndarray, points: int = PLOT_POINTS) -> tuple[list, list]:
    """At most `points` (time, value) pairs: each bucket's maximum at the bucket's first time."""
    values = np.asarray(values, np.float64)
    t_s = np.asarray(t_s, np.float64)
    if len(values) > points:
        edges = np.linspace(0, len(values), points + 1).astype(np.int64)[:-1]
        values, t_s = np.maximum.reduceat(values, edges), t_s[edges]
    ok = np.isfinite(values) & np.isfinite(t_s)
    return np.round(t_s[ok], 4).tolist(), np.round(values[ok], 4).tolist()

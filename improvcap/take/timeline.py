"""Mapping an audio stream's samples to and from t_ns through its blocks.csv rows."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AudioTimeline:
    """Sample index ↔ t_ns for one audio stream, from its blocks (piecewise linear between block starts)."""

    first_sample: np.ndarray
    t_ns: np.ndarray
    samplerate: float
    total: int

    @classmethod
    def from_blocks(cls, blocks: dict[str, np.ndarray], samplerate: float) -> AudioTimeline:
        first = blocks["first_sample"].astype(np.float64)
        total = int(first[-1] + blocks["frames"][-1]) if len(first) else 0
        return cls(first, blocks["t_ns"].astype(np.float64), float(samplerate), total)

    def t_ns_of(self, sample: np.ndarray | float) -> np.ndarray:
        """t_ns of (fractional) sample indices; beyond the last block start, extrapolated at the rate."""
        s = np.asarray(sample, dtype=np.float64)
        if len(self.first_sample) < 2:
            return self.t_ns[0] + (s - self.first_sample[0]) * 1e9 / self.samplerate
        i = np.clip(np.searchsorted(self.first_sample, s, side="right") - 1, 0, len(self.first_sample) - 2)
        s0, s1 = self.first_sample[i], self.first_sample[i + 1]
        t0, t1 = self.t_ns[i], self.t_ns[i + 1]
        return t0 + (s - s0) * (t1 - t0) / (s1 - s0)

    def sample_at(self, t_ns: np.ndarray | float) -> np.ndarray:
        """Fractional sample index at t_ns (inverse of t_ns_of); NaN outside the recorded samples."""
        t = np.asarray(t_ns, dtype=np.float64)
        if len(self.t_ns) == 0:
            return np.full(t.shape, np.nan)
        if len(self.t_ns) < 2:
            s = self.first_sample[0] + (t - self.t_ns[0]) * self.samplerate / 1e9
        else:
            i = np.clip(np.searchsorted(self.t_ns, t, side="right") - 1, 0, len(self.t_ns) - 2)
            s0, s1 = self.first_sample[i], self.first_sample[i + 1]
            t0, t1 = self.t_ns[i], self.t_ns[i + 1]
            s = s0 + (t - t0) * (s1 - s0) / (t1 - t0)
        return np.where((s >= 0) & (s <= self.total - 1), s, np.nan)

    def first_sample_at(self, t_ns: float) -> int:
        """The first sample whose time is t_ns or later: 0 before the first sample, `total` after the last.
        [first_sample_at(a), first_sample_at(b)) are the samples of [a, b)."""
        if self.total == 0:
            return 0
        s = float(self.sample_at(float(t_ns)))
        return math.ceil(s) if s == s else (0 if t_ns <= float(self.t_ns_of(0)) else self.total)

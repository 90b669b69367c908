"""Reading a take's per-stream timestamp tables into numpy, and mapping audio samples to and from t_ns.

Shared by the final clock fit, sync.csv, slate detection, the reader API and verification, so that every
one of them reads the take folder the same way. A torn last row (a crash mid-write) is ignored.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import TakeError


def read_table(path: Path, dtype: type = np.int64, columns: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Columns of a take CSV by header name (all, or only `columns`: much faster on wide files).

    Empty cells read as 0 for ints, NaN for floats.
    """
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise TakeError(f"{path}: cannot read: {e.strerror or e}") from None
    if not raw.endswith(b"\n"):
        raw = raw[: raw.rfind(b"\n") + 1]  # a row cut short by a crash
    header, _, body = raw.partition(b"\n")
    names = header.decode("utf-8", "replace").strip().split(",")
    wanted = list(columns) if columns is not None else names
    missing = [c for c in wanted if c not in names]
    if missing:
        raise TakeError(f"{path}: no column {missing[0]!r}")
    if not body.strip():
        return {n: np.zeros(0, dtype) for n in wanted}
    usecols = [names.index(c) for c in wanted]
    try:
        data = np.loadtxt(io.BytesIO(body), delimiter=",", dtype=dtype, ndmin=2, usecols=usecols)
    except ValueError as e:
        if b",," not in body and b",\n" not in body:
            raise TakeError(f"{path}: malformed rows: {e}") from None
        # empty cells (an optional column): the slower parser fills them in
        fill = 0 if np.dtype(dtype).kind in "iu" else np.nan
        try:
            data = np.genfromtxt(io.BytesIO(body), delimiter=",", dtype=dtype, filling_values=fill,
                                 usecols=usecols, invalid_raise=True, ndmin=2)
        except ValueError as e:
            raise TakeError(f"{path}: malformed rows: {e}") from None
    return {n: data[:, i] for i, n in enumerate(wanted)}


TIME_COLUMNS = {
    "camera": ("index", "t_ns", "device_ns", "host_ns"),
    "audio": ("first_sample", "t_ns", "device_ns", "host_ns", "frames"),
    "mocap": ("index", "t_ns", "device_ns", "host_ns", "counter"),
    "sync": ("index", "t_ns", "device_ns", "host_ns", "counter"),  # a sync box's trigger pulses
}


def stream_table(take_dir: Path, stream: str, kind: str, time_only: bool = False) -> dict[str, np.ndarray]:
    """The table of one stream: frames.csv, blocks.csv or the mocap CSV (`time_only`: its time columns)."""
    columns = TIME_COLUMNS[kind] if time_only else None
    if kind == "camera":
        return read_table(take_dir / f"{stream}.frames.csv", columns=columns)
    if kind == "audio":
        return read_table(take_dir / f"{stream}.blocks.csv", columns=columns)
    path = take_dir / f"{stream}.csv"
    if time_only:
        return read_table(path, columns=columns)
    table = read_table(path, dtype=np.float64)
    return {k: (v.astype(np.int64) if k in TIME_COLUMNS["mocap"] else v) for k, v in table.items()}


@dataclass(frozen=True)
class AudioTimeline:
    """Sample index ↔ t_ns for one audio stream, from its blocks (piecewise linear between block starts)."""

    first_sample: np.ndarray
    t_ns: np.ndarray
    samplerate: float
    total: int

    @classmethod
    def from_blocks(cls, blocks: dict[str, np.ndarray], samplerate: float) -> "AudioTimeline":
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

"""Hardware-triggered cameras: every frame at the time of the trigger pulse that exposed it.

A camera with `trigger = "<box>"` is exposed once per pulse of the rig's sync box. Its frame counter
(`seq` in frames.csv) counts exposures and the box's pulse counter (`counter` in its table) counts pulses,
so both move together: frame seq s was exposed by pulse c0 + s. c0 is what most frames say, each paired
with the pulse nearest its own (fitted) time, which the camera's latency puts within half a period of it.
From there, matching is by count only, never by time: a frame lost in transport is a gap in
the frame counter (a pulse with no frame, counted), and a pulse whose message was lost is a gap in the
pulse counter that the box's regular timer fills (its time interpolated between its neighbours, counted);
an index is never shifted. A frame whose pulse lies just outside the pulses recorded (exposed before the
take's first pulse row) is put on the line through them (counted as extrapolated). Each frame's t_ns is
its pulse's t_ns minus the camera's latency (the exposure offset a sync calibration measures).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .layout import table_file
from .tables import read_table


def pulse_times(
    frame_seq: np.ndarray, frame_t_ns: np.ndarray, counter: np.ndarray, pulse_t_ns: np.ndarray, latency_ns: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """(t_ns of every frame, what the matching found) from the frames' counter and times and the box's
    pulse counter and (refitted) times, both in table order."""
    seq = np.asarray(frame_seq, dtype=np.int64)
    t = np.asarray(frame_t_ns, dtype=np.int64)
    order = np.argsort(counter, kind="stable")
    counter = np.asarray(counter, dtype=np.int64)[order]
    pulses = np.asarray(pulse_t_ns, dtype=np.int64)[order]
    info: dict[str, Any] = {"frames": int(len(seq)), "pulses": int(len(counter))}
    if len(seq) == 0 or len(counter) < 2:
        return t.copy(), {
            **info,
            "matched": 0,
            "first_pulse": None,
            "frames_missing": 0,
            "pulses_interpolated": 0,
            "pulses_extrapolated": 0,
            "frames_unmatched": int(len(seq)),
        }
    # each frame's nearest pulse by its own time says which pulse count its counter starts at: the most
    # common answer is the one (a frame from before the first pulse recorded, or late, is outvoted)
    pos = np.clip(np.searchsorted(pulses, t + latency_ns), 1, len(pulses) - 1)
    nearest = np.where(np.abs(pulses[pos] - t - latency_ns) < np.abs(pulses[pos - 1] - t - latency_ns), pos, pos - 1)
    values, votes = np.unique(counter[nearest] - seq, return_counts=True)
    base = int(values[np.argmax(votes)])
    counts = base + seq
    pos = np.searchsorted(counter, counts)
    present = counter[np.minimum(pos, len(counter) - 1)] == counts
    # the box's timer is regular: a pulse whose message was lost lies on the line between its neighbours,
    # one from just before or after the take's pulses on the line through them
    c, p = counter.astype(np.float64), pulses.astype(np.float64)
    slope = (p[-1] - p[0]) / (c[-1] - c[0])
    times = np.interp(counts.astype(np.float64), c, p)
    times = np.where(counts < counter[0], p[0] + (counts - c[0]) * slope, times)
    times = np.where(counts > counter[-1], p[-1] + (counts - c[-1]) * slope, times)
    t = np.rint(times).astype(np.int64) - latency_ns
    outside = (counts < counter[0]) | (counts > counter[-1])
    span = int(counts[-1] - counts[0] + 1)
    info.update(
        matched=int(present.sum()),
        first_pulse=int(counts[0]),
        frames_missing=max(0, span - len(seq)),
        pulses_interpolated=int((~present & ~outside).sum()),
        pulses_extrapolated=int(outside.sum()),
        frames_unmatched=0,
    )
    return t, info


def triggered_frame_times(
    take_dir: Path, camera: str, box: str, latency_ms: float
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(the t_ns its frames.csv holds, the t_ns of their pulses, what the matching found) for a camera of
    a take triggered by sync box `box`; a camera without a frame counter is matched in frame order."""
    frames = read_table(take_dir / table_file(camera, "camera"), columns=("t_ns", "seq"))
    pulses = read_table(take_dir / table_file(box, "sync"), columns=("t_ns", "counter"))
    seq = frames["seq"]
    counted = bool(seq.any()) or len(seq) < 2
    t, info = pulse_times(
        seq if counted else np.arange(len(seq)),
        frames["t_ns"],
        pulses["counter"],
        pulses["t_ns"],
        int(round(latency_ms * 1e6)),
    )
    return frames["t_ns"], t, {"by": "frame counter" if counted else "frame order", **info}

"""`calibrate sync`: each stream's latency from the slates of a take, found in the media themselves.

A slate happens at one instant s for every sensor. A stream's first sample showing it was captured at or
after s and the sample before it before s, so with its stored times the stream's remaining latency error
X lies in (t_prev − s, t_onset − s]: an interval one sample period wide (33 ms for 30 fps video, 20 µs
for 48 kHz audio). Slates at different phases of the frame clock give different intervals, and X lies in
all of them: their intersection narrows a camera's latency well below one frame period. When the
intervals do not intersect (jitter), the median of their midpoints is used.

The slate instant is the host time at which the slate was requested (events.csv), which is exact for
slates the host triggers (demo devices, a sync box). Takes whose slates the host did not time (a clap)
fall back to offsets relative to the master stream, which keeps its latency.
"""
from __future__ import annotations

import datetime as _dt
import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from ..slates import Onset, detect_take, match_slates, slate_offsets
from ..take import MANIFEST, sha256_file
from ..timeline import read_table, stream_table
from .store import CalibrationError

GOLDEN = (5 ** 0.5 - 1) / 2
MATCH_BEFORE_NS = 50_000_000    # an onset may be stamped this much before its slate (negative latency)
MATCH_AFTER_NS = 400_000_000    # ... or this much after it


def slate_schedule(count: int, frame_period_s: float, spacing_s: float = 0.6) -> list[float]:
    """Slate times (s from the first) whose phase against a frame clock of `frame_period_s` steps by the
    golden ratio of a period each time: any number of them covers the period nearly evenly, so the
    intersection of their intervals narrows fast, and slower clocks get well-spread phases too."""
    step = round(spacing_s / frame_period_s) * frame_period_s + GOLDEN * frame_period_s
    return [i * step for i in range(count)]


def record_slated_take(recorder: Any, out: Path, session: str, count: int, frame_period_s: float) -> Path:
    """Record a take with `count` host-timed slates on `slate_schedule` (the recorder's devices open)."""
    import time

    take = recorder.start_take(out, session, "sync-calibration")
    start = time.monotonic() + 0.5
    for at in slate_schedule(count, frame_period_s):
        recorder.slate(max(0.0, start + at - time.monotonic()))  # the slate instant itself is exact
        time.sleep(max(0.0, start + at + 0.1 - time.monotonic()))
    time.sleep(0.3)
    recorder.stop_take()
    return take


def _slate_times(take: Path) -> list[int]:
    events = take / "events.csv"
    if not events.exists():
        return []
    table = read_table(events, dtype=str)
    return [int(t) for t, kind in zip(table["t_ns"], table["kind"]) if kind == "slate"]


def _previous_t_ns(take: Path, name: str, kind: str, onset: Onset, rate: float) -> float:
    """Stored time of the sample just before the onset sample."""
    if kind == "audio":
        return onset.t_ns - 1e9 / rate
    table = stream_table(take, name, kind, time_only=True)
    row = int(np.searchsorted(table["index"], onset.index))
    return float(table["t_ns"][row - 1]) if row > 0 else onset.t_ns - 1e9 / rate


def _estimate(intervals: list[tuple[float, float]]) -> tuple[float, float, bool]:
    """Latency error from (low, high] intervals: intersection midpoint (and its width), or median."""
    low = max(lo for lo, _ in intervals)
    high = min(hi for _, hi in intervals)
    if low < high:
        return (low + high) / 2, high - low, True
    return statistics.median((lo + hi) / 2 for lo, hi in intervals), float("nan"), False


def latency_from_take(take: Path) -> dict[str, Any]:
    """The sync calibration of a take: per stream, the latency to apply from now on (ms)."""
    try:
        manifest = json.loads((take / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise CalibrationError(f"{take}: not a readable take ({e})") from None
    # a sync box fires the slates and records no media to find them in
    streams = {n: s for n, s in (manifest.get("streams") or {}).items() if s.get("kind") != "sync"}
    settings = {s["name"]: s for s in manifest["rig"]["streams"]}
    onsets = detect_take(take)
    slates = _slate_times(take)
    missing = [n for n in streams if not onsets.get(n)]
    if missing:
        raise CalibrationError(f"{take}: no slate found in the media of {', '.join(missing)} "
                               f"({len(slates)} slates requested in events.csv)")
    result: dict[str, Any] = {"take": str(take.resolve()), "take_manifest_sha256": sha256_file(take / MANIFEST),
                              "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                              "streams": {}}
    if slates:
        result["reference"] = "slate requests (host time)"
        for name, stream in streams.items():
            used_ms = stream["clock"].get("latency_ns", 0) / 1e6
            rate = float(stream["nominal_rate"])
            intervals = []
            for s in slates:
                near = [o for o in onsets[name] if -MATCH_BEFORE_NS <= o.t_ns - s <= MATCH_AFTER_NS]
                if near:
                    prev = _previous_t_ns(take, name, stream["kind"], near[0], rate)
                    intervals.append((prev - s, float(near[0].t_ns - s)))
            if len(intervals) < max(1, len(slates) // 2):
                raise CalibrationError(f"{name}: matched {len(intervals)} of {len(slates)} slates; "
                                       "too few to calibrate")
            error_ns, width_ns, consistent = _estimate(intervals)
            mids = [(lo + hi) / 2 for lo, hi in intervals]
            result["streams"][name] = {
                "kind": stream["kind"], "latency_ms": round(used_ms + error_ns / 1e6, 4),
                "previous_latency_ms": used_ms, "correction_ms": round(error_ns / 1e6, 4),
                "uncertainty_ms": round(width_ns / 2e6, 4) if consistent else None,
                "spread_ms": round((max(mids) - min(mids)) / 1e6, 4), "slates": len(intervals),
                "consistent": consistent, "rig_latency_ms": settings[name].get("latency_ms", 0.0),
            }
    else:
        master = manifest["rig"].get("master") or next(iter(streams))
        result["reference"] = f"master stream {master}"
        offsets = slate_offsets(match_slates(onsets, master))
        for name, stream in streams.items():
            used_ms = stream["clock"].get("latency_ns", 0) / 1e6
            o = offsets.get(name) or {}
            if not o.get("n"):
                raise CalibrationError(f"{name}: no slate matched the master's ({master})")
            result["streams"][name] = {
                "kind": stream["kind"], "latency_ms": round(used_ms + o["median_ns"] / 1e6, 4),
                "previous_latency_ms": used_ms, "correction_ms": round(o["median_ns"] / 1e6, 4),
                "spread_ms": round(o["spread_ns"] / 1e6, 4), "slates": o["n"],
                "rig_latency_ms": settings[name].get("latency_ms", 0.0),
            }
    return result

"""`calibrate sync`: each stream's latency from the slates of takes, found in the media themselves.

A slate happens at one instant s for every sensor. A stream's first sample showing it was captured at or
after s and the sample before it before s, so with its stored times the stream's remaining latency error
X lies in (t_prev − s, t_onset − s]: an interval one sample period wide (33 ms for 30 fps video, 20 µs
for 48 kHz audio). Slates at different phases of the frame clock give different intervals, and X lies in
all of them: their intersection narrows a camera's latency well below one frame period, and its half
width is the uncertainty (±). When the intervals do not intersect (jitter), the median of their midpoints
is used and ± is the 95 % confidence half-width of that median.

The slate instant is the host time at which the slate was requested (events.csv), which is exact for
slates the host triggers (demo devices, a sync box). Takes whose slates the host did not time (a clap)
fall back to offsets relative to the master stream, which keeps its latency.

Several takes recorded with the same latencies combine: their intervals (or offsets) are pooled. That is
how `SlatingRounds` records take after take until every stream's ± is below a target.

A stream whose times were mapped from another machine's clock through measured offsets (an LSL sender's)
is known no better than that mapping: its ± is at least the clock fit's p99 residual, however narrow the
intersection of its intervals (each interval's ends carry the mapping's error), and its latency may be
negative by up to half the offsets' round trip (unequal one-way delays, which no probe can see): the
correction calibrate measures is what removes that.

A result warns about every stream whose ± exceeds one frame period — a camera's own, and for audio and
mocap the master camera's (the frames the timeline is cut on; a rig without cameras: 1/30 s, the
timecode's rate) — or is unknown, and about every latency that is negative by more than its ±.
"""

from __future__ import annotations

import datetime as _dt
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from ..clock import ClockDomain
from ..rig import Rig
from ..slates import Onset, SlateMatch, detect_take, match_slates, slate_offsets
from ..take.hashing import sha256_file
from ..take.layout import EVENTS, MANIFEST
from ..take.manifest import LOAD_ERRORS, load_json
from ..take.sync import has_sync_columns
from ..take.tables import read_table, stream_table
from ..take.timecode import DEFAULT_TIMECODE_FPS
from .store import CalibrationError

GOLDEN = (5**0.5 - 1) / 2
MATCH_BEFORE_NS = 50_000_000  # an onset may be stamped this much before its slate (negative latency)
MATCH_AFTER_NS = 400_000_000  # ... or this much after it
TIMECODE_FPS = float(DEFAULT_TIMECODE_FPS)  # the frame of a rig without cameras (the timecode rate)
# 95 % normal quantile x the median's standard error in standard deviations (sqrt(pi / 2)) x the MAD's
# scale to a standard deviation: the median's 95 % confidence half-width is MEDIAN_CI95 * MAD / sqrt(n)
MEDIAN_CI95 = 1.96 * math.sqrt(math.pi / 2) * 1.4826
FIRST_ROUND = 34  # slates of the first round of --until (then Fibonacci totals, below)


def slate_schedule(count: int, frame_period_s: float, spacing_s: float = 0.6, first: int = 0) -> list[float]:
    """Times (s from slate 0) of slates first .. first + count − 1, whose phase against a frame clock of
    `frame_period_s` steps by the golden ratio of a period each time: any number of them covers the period
    nearly evenly (most evenly at Fibonacci counts), so the intersection of their intervals narrows fast,
    and slower clocks get well-spread phases too."""
    step = round(spacing_s / frame_period_s) * frame_period_s + GOLDEN * frame_period_s
    return [i * step for i in range(first, first + count)]


def record_slated_take(
    recorder: Any,
    out: Path,
    session: str,
    count: int,
    frame_period_s: float,
    first: int = 0,
    anchor: float | None = None,
) -> tuple[Path, float]:
    """Record a take with slates first .. first + count − 1 of `slate_schedule`, host-timed (the recorder's
    devices open). Slate 0 is at `anchor` (time.monotonic() s; default: half a second after the start)
    and the take's slates are moved on by whole frame periods only, so that later takes given the same
    anchor continue the golden-ratio phases of the earlier ones while the master camera keeps its rate.
    Returns the take and the anchor. An exception (Ctrl-C) leaves the take for recorder.close() to stop."""
    take = recorder.start_take(out, session, "sync-calibration")
    times = slate_schedule(count, frame_period_s, first=first)
    ready = time.monotonic() + 0.5
    if anchor is None:
        anchor = ready - times[0]
    shift = max(0, math.ceil((ready - anchor - times[0]) / frame_period_s)) * frame_period_s
    for at in times:
        at += anchor + shift
        recorder.slate(max(0.0, at - time.monotonic()))  # the slate instant itself is exact
        time.sleep(max(0.0, at + 0.1 - time.monotonic()))
    time.sleep(0.3)
    recorder.stop_take()
    return take, anchor


# --- one take ------------------------------------------------------------------------------------


@dataclass
class StreamSlates:
    """What one take's slates say about one stream (its intervals filled in by `measure_take`)."""

    kind: str
    used_ms: float  # the latency the take was recorded with
    rig_latency_ms: float
    period_ns: float  # one sample period of the stream
    frame_ms: float  # the frame period its uncertainty is judged against ...
    frame_of: str  # ... in words
    intervals: list[tuple[float, float]] = field(default_factory=list)  # host-timed: (low, high] of X, ns
    clock_ns: float = 0.0  # the error its clock mapping may add (an LSL fit's p99 residual) ...
    bias_ns: float = 0.0  # ... and the offset it may carry either way (half the probes' round trip)


@dataclass(frozen=True)
class SlatedTake:
    """The slates of one take, measured in its media: combined with other takes' by `latency_from_takes`."""

    path: Path
    manifest_sha256: str
    rig: str
    master: str  # the master camera, or the first stream of a rig without cameras
    requested: int  # host-timed slates in events.csv (0: the slates were not host-timed)
    unslated: tuple[str, ...]  # streams of the take that show no slates (markers, irregular streams)
    streams: dict[str, StreamSlates]
    matches: list[SlateMatch]  # not host-timed: every slate matched to the master's onsets


def _slate_times(take: Path) -> list[int]:
    events = take / EVENTS
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


def _read_manifest(take: Path) -> tuple[dict[str, Any], dict[str, StreamSlates]]:
    """The manifest and what it says of each media stream (a sync box fires the slates and records no
    media to find them in), its slates not yet measured."""
    try:
        manifest = load_json(take / MANIFEST)
        settings = {s["name"]: s for s in manifest["rig"]["streams"]}
        # a sync box fires the slates; markers and an irregular stream have no samples at a rate to show one
        streams = {
            n: s
            for n, s in (manifest.get("streams") or {}).items()
            if has_sync_columns(s.get("kind"), float(s.get("nominal_rate") or 0.0))
        }
        master = manifest["rig"].get("master")
        if master in streams:
            master_ms = 1e3 / float(streams[master]["nominal_rate"])
            master_frame = f"a frame of the master camera {master}"
        else:
            master_ms, master_frame = 1e3 / TIMECODE_FPS, f"a frame at the timecode's {TIMECODE_FPS:g} fps"
        measured = {}
        for name, s in streams.items():
            rate = float(s["nominal_rate"])
            camera = s["kind"] == "camera"
            clock = s["clock"]
            measured[name] = StreamSlates(
                kind=s["kind"],
                used_ms=float(clock.get("latency_ns", 0)) / 1e6,
                rig_latency_ms=float(settings[name].get("latency_ms", 0.0)),
                period_ns=1e9 / rate,
                frame_ms=1e3 / rate if camera else master_ms,
                frame_of="its frame period" if camera else master_frame,
                **(_mapping_error(clock) if clock.get("domain") == ClockDomain.LSL else _MappingError()),
            )
    except LOAD_ERRORS as e:
        raise CalibrationError(f"{take}: not a readable take ({e})") from None
    except (KeyError, TypeError, AttributeError, ZeroDivisionError) as e:
        raise CalibrationError(f"{take}: not a take manifest of improvcap ({type(e).__name__}: {e})") from None
    if not measured:
        raise CalibrationError(f"{take}: the take has no streams to calibrate")
    return manifest, measured


class _MappingError(TypedDict, total=False):
    clock_ns: float
    bias_ns: float


def _mapping_error(clock: dict[str, Any]) -> _MappingError:
    """What a clock mapped through measured offsets adds to a stream's latency: the fit's scatter, and the
    offset of unequal one-way delays, at most half the round trip (liblsl's own bound)."""
    return {
        "clock_ns": float(clock.get("residual_p99_ns") or 0.0),
        "bias_ns": float(clock.get("rtt_median_ns") or 0.0) / 2,
    }


def measure_take(take: Path) -> SlatedTake:
    """Find the slates of a take in its media and what each says about every stream's latency."""
    manifest, streams = _read_manifest(take)
    onsets = detect_take(take)
    slates = _slate_times(take)
    missing = [n for n in streams if not onsets.get(n)]
    if missing:
        raise CalibrationError(
            f"{take}: no slate found in the media of {', '.join(missing)} "
            f"({len(slates)} slates requested in events.csv)"
        )
    for name, stream in streams.items():
        for s in slates:
            near = [o for o in onsets[name] if -MATCH_BEFORE_NS <= o.t_ns - s <= MATCH_AFTER_NS]
            if near:
                prev = _previous_t_ns(take, name, stream.kind, near[0], 1e9 / stream.period_ns)
                stream.intervals.append((prev - s, float(near[0].t_ns - s)))
        if slates and len(stream.intervals) < max(1, len(slates) // 2):
            raise CalibrationError(
                f"{take}: {name} matched {len(stream.intervals)} of {len(slates)} slates; too few to calibrate"
            )
    master = manifest["rig"].get("master")
    reference = master if master in streams else next(iter(streams))
    return SlatedTake(
        path=take.resolve(),
        manifest_sha256=sha256_file(take / MANIFEST),
        rig=str(manifest["rig"].get("name")),
        master=reference,
        requested=len(slates),
        unslated=tuple(n for n, s in manifest["streams"].items() if n not in streams and s["kind"] != "sync"),
        streams=streams,
        matches=[] if slates else match_slates(onsets, reference),
    )


# --- takes combined ------------------------------------------------------------------------------


def _median_ci_ns(mad_ns: float, n: int, floor_sd_ns: float) -> float | None:
    """95 % confidence half-width of a median of n values whose spread is `mad_ns` (but at least a standard
    deviation of `floor_sd_ns`, what each value's own quantisation leaves); None below 3 values."""
    if n < 3:
        return None
    return MEDIAN_CI95 * max(mad_ns, floor_sd_ns / 1.4826) / math.sqrt(n)


def _estimate(intervals: list[tuple[float, float]]) -> tuple[float, float | None, bool]:
    """Latency error from (low, high] intervals and its ±: the midpoint of their intersection and half its
    width, or the median of their midpoints and its 95 % confidence half-width (see the module)."""
    low = max(lo for lo, _ in intervals)
    high = min(hi for _, hi in intervals)
    if low < high:
        return (low + high) / 2, (high - low) / 2, True
    mids = [(lo + hi) / 2 for lo, hi in intervals]
    med = statistics.median(mids)
    mad = statistics.median(abs(m - med) for m in mids)
    width = statistics.median(hi - lo for lo, hi in intervals)
    return med, _median_ci_ns(mad, len(mids), width / math.sqrt(12)), False  # uniform within an interval


def _check_combinable(takes: Sequence[SlatedTake], rig: Rig) -> None:
    """Every take was recorded with `rig`'s streams and the same latencies, and all or none host-timed."""
    wanted = sorted(s.name for s in rig.streams if s.kind != "sync")
    first = takes[0]
    for t in takes:
        if t.rig != rig.name:
            raise CalibrationError(f"{t.path}: recorded with rig {t.rig}, not {rig.name}")
        if sorted([*t.streams, *t.unslated]) != wanted:
            raise CalibrationError(
                f"{t.path}: its streams ({', '.join(sorted(t.streams))}) are not those of "
                f"rig {rig.name} ({', '.join(wanted)})"
            )
        if bool(t.requested) != bool(first.requested):
            raise CalibrationError(
                f"{t.path} and {first.path}: one has host-timed slates and the other not; "
                "calibrate from takes of one kind"
            )
        for name, s in t.streams.items():
            if abs(s.used_ms - first.streams[name].used_ms) > 1e-6:
                raise CalibrationError(
                    f"{t.path} and {first.path}: recorded with different latencies for {name} "
                    f"({s.used_ms:g} and {first.streams[name].used_ms:g} ms); calibrate from takes recorded "
                    "with one calibration"
                )


def latency_from_takes(takes: Sequence[SlatedTake], rig: Rig) -> dict[str, Any]:
    """The sync calibration from the pooled slates of takes of `rig`: per stream, the latency to apply from
    now on (ms), its ± and the warnings (see the module)."""
    _check_combinable(takes, rig)
    result: dict[str, Any] = {
        "rig_sha256": rig.sha256,
        "takes": [{"path": str(t.path), "manifest_sha256": t.manifest_sha256} for t in takes],
        # the single take of older results, kept for scripts that read it: the last take
        "take": str(takes[-1].path),
        "take_manifest_sha256": takes[-1].manifest_sha256,
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "streams": {},
    }
    first = takes[0]
    if first.requested:
        result["reference"] = "slate requests (host time)"
        for name, s in first.streams.items():
            intervals = [iv for t in takes for iv in t.streams[name].intervals]
            error_ns, plus_minus_ns, consistent = _estimate(intervals)
            if plus_minus_ns is not None:
                plus_minus_ns = max(plus_minus_ns, max(t.streams[name].clock_ns for t in takes))
            mids = [(lo + hi) / 2 for lo, hi in intervals]
            result["streams"][name] = {
                "kind": s.kind,
                "latency_ms": round(s.used_ms + error_ns / 1e6, 4),
                "previous_latency_ms": s.used_ms,
                "correction_ms": round(error_ns / 1e6, 4),
                "uncertainty_ms": None if plus_minus_ns is None else round(plus_minus_ns / 1e6, 4),
                "spread_ms": round((max(mids) - min(mids)) / 1e6, 4),
                "slates": len(intervals),
                "consistent": consistent,
                "rig_latency_ms": s.rig_latency_ms,
            }
    else:
        master = first.master
        if any(t.master != master for t in takes):
            raise CalibrationError("the takes have different master streams; calibrate from takes of one rig")
        result["reference"] = f"master stream {master}"
        offsets = slate_offsets([m for t in takes for m in t.matches])
        for name, s in first.streams.items():
            o = offsets.get(name) or {}
            if not o.get("n"):
                raise CalibrationError(f"{name}: no slate matched the master's ({master})")
            # each offset is quantised by both streams' sample periods
            floor_sd = math.hypot(s.period_ns, first.streams[master].period_ns) / math.sqrt(12)
            plus_minus = 0.0 if name == master else _median_ci_ns(o["mad_ns"], o["n"], floor_sd)
            if plus_minus is not None and name != master:
                plus_minus = max(plus_minus, max(t.streams[name].clock_ns for t in takes))
            result["streams"][name] = {
                "kind": s.kind,
                "latency_ms": round(s.used_ms + o["median_ns"] / 1e6, 4),
                "previous_latency_ms": s.used_ms,
                "correction_ms": round(o["median_ns"] / 1e6, 4),
                "uncertainty_ms": None if plus_minus is None else round(plus_minus / 1e6, 4),
                "spread_ms": round(o["spread_ns"] / 1e6, 4),
                "slates": o["n"],
                "rig_latency_ms": s.rig_latency_ms,
            }
    result["warnings"] = _warnings(result["streams"], first.streams)
    return result


def _warnings(streams: dict[str, dict[str, Any]], measured: dict[str, StreamSlates]) -> list[str]:
    out = []
    for name, s in streams.items():
        plus_minus, frame = s.get("uncertainty_ms"), measured[name].frame_ms
        if plus_minus is None:
            out.append(
                f"{name}: latency uncertainty unknown ({s['slates']} slates disagree, too few to "
                "estimate it): record more slates"
            )
            continue
        if plus_minus > frame:
            out.append(
                f"{name}: latency uncertainty ±{plus_minus:.3f} ms exceeds {measured[name].frame_of} "
                f"({frame:.3f} ms): record more slates (calibrate sync --until MS)"
            )
        bias_ms = measured[name].bias_ns / 1e6  # a mapped clock's offset may be negative
        if s["latency_ms"] + plus_minus + bias_ms < 0:
            offset = f", and {bias_ms:.3f} ms its clock's offset may be off" if bias_ms else ""
            out.append(
                f"{name}: latency {s['latency_ms']:.3f} ms is negative beyond its uncertainty "
                f"(±{plus_minus:.3f} ms{offset}): its timestamps come before the slates it shows; check "
                "the device's clock and the slates"
            )
    return out


def short_of(result: dict[str, Any], until_ms: float) -> dict[str, float | None]:
    """The streams whose ± is not below `until_ms` (None: unknown), with the ± they reached."""
    return {
        name: s.get("uncertainty_ms")
        for name, s in result["streams"].items()
        if s.get("uncertainty_ms") is None or s["uncertainty_ms"] >= until_ms
    }


# --- slating until a target ----------------------------------------------------------------------


def _fibonacci_above(n: int) -> int:
    a, b = 1, 2
    while b <= n:
        a, b = b, a + b
    return b


class SlatingRounds:
    """Slated takes recorded one after another, their slates pooled, until every stream's ± is below
    `until_ms` or `max_slates` are recorded (`until_ms` None: one take of `max_slates` slates).

    Each round is a take of its own, complete before the next starts (takes number on, never overwritten). The
    rounds continue one golden-ratio schedule, so the pooled phases stay even, and end on Fibonacci totals
    (where such a schedule is most even): the next total is the first one at which the ± measured so far,
    shrinking as 1/n (intersections) or 1/√n (medians), would be below the target.
    """

    def __init__(
        self, recorder: Any, rig: Rig, out: Path, session: str, max_slates: int, until_ms: float | None = None
    ) -> None:
        self.recorder, self.rig, self.out, self.session = recorder, rig, out, session
        self.max_slates, self.until_ms = max_slates, until_ms
        # the phases step against the master camera's frame clock, the one the timeline is cut on
        self.frame_period_s = 1.0 / (rig.stream(rig.master)["fps"] if rig.master else TIMECODE_FPS)
        self.takes: list[SlatedTake] = []

    @property
    def slates(self) -> int:
        return sum(t.requested for t in self.takes)

    def run(self, progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
        anchor = None
        total = self.max_slates if self.until_ms is None else min(self.max_slates, FIRST_ROUND)
        while True:
            target = "" if self.until_ms is None else f" (until ± < {self.until_ms:g} ms, at most {self.max_slates})"
            progress(f"recording slates {self.slates + 1}–{total}{target}…")
            take, anchor = record_slated_take(
                self.recorder,
                self.out,
                self.session,
                total - self.slates,
                self.frame_period_s,
                first=self.slates,
                anchor=anchor,
            )
            progress(f"finding {total} slates in the media…")
            self.takes.append(measure_take(take))
            result = latency_from_takes(self.takes, self.rig)
            if self.until_ms is None:
                return result
            short = short_of(result, self.until_ms)
            if not short or total >= self.max_slates:
                return result
            total = min(self.max_slates, self._next_total(result, short))

    def _next_total(self, result: dict[str, Any], short: dict[str, float | None]) -> int:
        assert self.until_ms is not None
        n = self.slates
        need = float(n)
        for name, plus_minus in short.items():
            if plus_minus is None:
                need = max(need, 2.0 * n)
            elif result["streams"][name].get("consistent", True):
                need = max(need, n * plus_minus / self.until_ms)
            else:
                need = max(need, n * (plus_minus / self.until_ms) ** 2)
        return _fibonacci_above(max(n, math.ceil(need) - 1))

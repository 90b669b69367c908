"""Fitting a Lab Streaming Layer sender's clock onto ours from liblsl's time-correction offsets.

An LSL sample carries its sender's `local_clock` (device_ns here). liblsl measures the offset between
that clock and ours in the background (`time_correction`: ours = theirs + offset, with an uncertainty,
the round trip of the probe it chose); the driver polls it every few seconds and the take keeps every
new value in `<stream>.clock.csv` (`host_ns,remote_ns,offset_ns,rtt_ns`: when on our clock, since t0, and
on theirs, the offset and its round trip), so the fit can be made again at any time.

The final fit is the one XDF importers make, with two differences that matter on a studio network:

- offsets: a robust (Huber) line through the offsets against the sender's time, each weighted by its own
  round trip (a probe that came back slowly says less), split into segments where the sender's clock
  steps (a restart, a machine rebooted: the offset jumps by more than any drift could explain);
- samples: each sample is assigned to the clock segment in force when it arrived (by our arrival time,
  which never steps), not by its stamp, and for a regular stream its stamps are dejittered by a line
  against the sample number within runs without a break, as pyxdf does by default.

t_ns = dejittered stamp + the segment's offset line at it − t0 − latency. A stream with too few offsets
over too short a span has its offset only (no drift), and says so.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .clockfit import MIN_DRIFT_SPAN_NS, DeviceLine

METHOD = "lsl-time-correction-huber"
POLL_S = 1.0  # the driver asks liblsl for its latest offset this often (liblsl probes every 2 s)
RESET_FLOOR_NS = 5_000_000  # an offset step beyond this (and beyond any drift) is a clock reset
RESET_MAX_PPM = 2000.0  # ... any drift: no crystal is off by more than this
RTT_FLOOR_NS = 20_000  # a round trip this short is trusted as much as a shorter one
HUBER_K = 1.345
MIN_FIT_OFFSETS = 3  # a drift is fitted from at least this many offsets (over MIN_DRIFT_SPAN_NS)
BREAK_MIN_NS = 250_000_000  # a regular stream's stamps are dejittered within runs without a gap this long
BREAK_PERIODS = 20  # ... or this many sample periods


@dataclass(frozen=True, slots=True)
class ClockOffset:
    """One time-correction estimate: measured at `host_ns` on our clock (absolute as a Sample payload,
    since t0 in a take's CSV), `remote_ns` on the sender's; ours = theirs + offset_ns; rtt_ns is the round
    trip of the probe it rests on (liblsl's uncertainty)."""

    host_ns: int
    remote_ns: int
    offset_ns: int
    rtt_ns: int
    polled_ns: int = 0  # as a Sample payload: when it was read (the Sample's host_ns), which gives t0


@dataclass(frozen=True, slots=True)
class OffsetSegment(DeviceLine):
    """One stretch of the sender's clock without a step: clock rows [start, stop), the line through them,
    and the samples [first_row, last_row) that arrived while it held."""

    start: int
    stop: int
    offset_ns: int
    drift_ppm: float
    ref_device_ns: int
    span_ns: int
    n: int = 0  # clock rows
    fitted: bool = True  # False: too few offsets over too short a span, the offset only
    first_row: int = 0
    last_row: int = 0

    def as_dict(self) -> dict:
        return {
            "clock_rows": [self.start, self.stop],
            "rows": [self.first_row, self.last_row],
            "offset_ns": self.offset_ns,
            "ref_device_ns": self.ref_device_ns,
            "drift_ppm": self.drift_ppm,
        }


@dataclass(frozen=True, slots=True)
class LslFit:
    segments: tuple[OffsetSegment, ...]
    n_offsets: int
    residual_p50_ns: float
    residual_p99_ns: float
    rtt_median_ns: int
    dejittered: bool
    dejitter_p99_ns: float

    @property
    def main(self) -> OffsetSegment | None:
        return max(self.segments, key=lambda s: s.stop - s.start, default=None)

    @property
    def resets(self) -> int:
        return max(len(self.segments) - 1, 0)

    def as_dict(self) -> dict:
        main = self.main
        short = main is not None and not main.fitted
        return {
            **(
                {
                    "note": f"offset only: {main.n} offset{'s' if main.n != 1 else ''} over {main.span_ns / 1e9:.1f} s "
                    f"are too few to fit a drift (at least {MIN_FIT_OFFSETS} over {MIN_DRIFT_SPAN_NS / 1e9:g} s)"
                }
                if short and main
                else {}
            ),
            "method": METHOD,
            "offset_ns": main.offset_ns if main else None,
            "ref_device_ns": main.ref_device_ns if main else None,
            "drift_ppm": main.drift_ppm if main else None,
            "residual_p50_ns": self.residual_p50_ns,
            "residual_p99_ns": self.residual_p99_ns,
            "n": self.n_offsets,
            "rtt_median_ns": self.rtt_median_ns,
            "resets": self.resets,
            "dejittered": self.dejittered,
            "dejitter_p99_ns": self.dejitter_p99_ns,
            "segments": [s.as_dict() for s in self.segments],
        }


def _huber_line(x: np.ndarray, y: np.ndarray, scale: np.ndarray, iterations: int = 30) -> tuple[float, float]:
    """(intercept, slope) of y against x minimising a Huber loss of residuals in units of `scale`."""
    w = 1.0 / scale**2
    a = b = 0.0
    for _ in range(iterations):
        sw = w.sum()
        xm, ym = (w * x).sum() / sw, (w * y).sum() / sw
        sxx = (w * (x - xm) ** 2).sum()
        b_new = (w * (x - xm) * (y - ym)).sum() / sxx if sxx > 0 else 0.0
        a_new = ym - b_new * xm
        r = np.abs(y - a_new - b_new * x) / scale
        spread = max(1.4826 * float(np.median(r)), 1.0)  # in units of the round trips, never below them
        w = np.where(r <= HUBER_K * spread, 1.0, HUBER_K * spread / np.maximum(r, 1e-12)) / scale**2
        if abs(a_new - a) < 1.0 and abs(b_new - b) < 1e-12:
            return a_new, b_new
        a, b = a_new, b_new
    return a, b


def _resets(host: np.ndarray, offset: np.ndarray) -> list[int]:
    """Clock rows where a new segment starts: the offset stepped by more than drift can explain."""
    starts = [0]
    for i in range(1, len(offset)):
        allowed = max(RESET_FLOOR_NS, RESET_MAX_PPM * 1e-6 * float(host[i] - host[i - 1]))
        if abs(float(offset[i] - offset[i - 1])) > allowed:
            starts.append(i)
    return starts


def fit_offsets(
    host_ns: np.ndarray, remote_ns: np.ndarray, offset_ns: np.ndarray, rtt_ns: np.ndarray
) -> list[OffsetSegment]:
    """The offset lines of the clock rows, one per segment between clock steps; a segment's clock rows
    [start, stop) are positions in the rows sorted by our time."""
    host = np.asarray(host_ns, dtype=np.int64)
    remote = np.asarray(remote_ns, dtype=np.int64)
    offset = np.asarray(offset_ns, dtype=np.int64)
    rtt = np.asarray(rtt_ns, dtype=np.int64)
    order = np.argsort(host, kind="stable")
    host, remote, offset, rtt = host[order], remote[order], offset[order], rtt[order]
    bounds = [*_resets(host, offset), len(offset)]
    segments = []
    for start, stop in zip(bounds, bounds[1:]):
        r, o = remote[start:stop], offset[start:stop]
        ref = int(r[0])
        span = int(r[-1] - r[0])
        ref_offset = int(o[0])
        fitted = stop - start >= MIN_FIT_OFFSETS and span >= MIN_DRIFT_SPAN_NS
        if fitted:
            x = (r - ref).astype(np.float64)
            y = (o - ref_offset).astype(np.float64)
            a, slope = _huber_line(x, y, np.maximum(rtt[start:stop], RTT_FLOOR_NS).astype(np.float64))
            line_offset = ref_offset + int(round(a))
        else:  # offset only: the median, robust to one slow probe
            slope, line_offset = 0.0, int(np.median(o))
        # host = device + offset + slope·(device − ref): beta = slope, so drift = −beta / (1 + beta)
        drift = -slope / (1.0 + slope) * 1e6 if slope else 0.0
        segments.append(OffsetSegment(start, stop, line_offset, drift, ref, span, stop - start, fitted))
    return segments


def _segment_rows(
    device_ns: np.ndarray,
    arrival_ns: np.ndarray,
    segments: list[OffsetSegment],
    clock_host_ns: np.ndarray,
    origin_ns: int,
) -> list[int]:
    """Sample rows where each segment's samples begin. Between one segment's last clock row and the next
    one's first (by our arrival time, which never steps), the step is where the next segment's line
    starts to put the samples nearer their arrivals than the previous one's. The lines map onto our
    absolute clock; arrivals + `origin_ns` are on it too."""
    arrival_ns = arrival_ns + origin_ns
    bounds = [0]
    for prev, seg in zip(segments, segments[1:]):
        lo = int(np.searchsorted(arrival_ns, clock_host_ns[prev.stop - 1] + origin_ns, side="left"))
        hi = int(np.searchsorted(arrival_ns, clock_host_ns[seg.start] + origin_ns, side="right"))
        d, a = device_ns[lo:hi], arrival_ns[lo:hi]
        nearer = np.abs(a - seg.map(d)) < np.abs(a - prev.map(d))
        bounds.append(lo + int(np.argmax(nearer)) if nearer.any() else hi)
    return bounds + [len(arrival_ns)]


def dejitter(stamps_ns: np.ndarray, rate: float) -> np.ndarray:
    """A regular stream's stamps replaced by a line against the sample number, run by run (a run ends at
    a step of BREAK_MIN_NS or BREAK_PERIODS periods either way: a gap, or the sender's clock set back).
    A small step back is jitter, not a break: with 2 ms of jitter at 100 Hz one sample in a few thousand
    is stamped before the one sent ahead of it."""
    t = np.asarray(stamps_ns, dtype=np.int64)
    if rate <= 0 or len(t) < 3:
        return t.copy()
    gap = max(BREAK_MIN_NS, BREAK_PERIODS * 1e9 / rate)
    steps = np.diff(t)
    cuts = [0, *(np.flatnonzero(np.abs(steps) > gap) + 1).tolist(), len(t)]
    out = t.copy()
    for a, b in zip(cuts, cuts[1:]):
        if b - a < 3:
            continue
        k = np.arange(b - a, dtype=np.float64)
        y = (t[a:b] - t[a]).astype(np.float64)
        slope, intercept = np.polyfit(k, y, 1)
        out[a:b] = t[a] + np.rint(intercept + slope * k).astype(np.int64)
    return out


def fit_lsl(
    device_ns: np.ndarray, arrival_ns: np.ndarray, clock: dict[str, np.ndarray], rate: float
) -> tuple[np.ndarray, LslFit]:
    """Host times (absolute, ns) of the samples with stamps `device_ns` that arrived at `arrival_ns` (any
    origin, sorted), from the clock rows `clock` (CLOCK_COLUMNS, host_ns on the same origin as arrivals);
    `rate` > 0 dejitters a regular stream. ValueError without clock rows."""
    if len(clock["offset_ns"]) == 0:
        raise ValueError("no time-correction offsets to fit the sender's clock from")
    segments = fit_offsets(clock["host_ns"], clock["remote_ns"], clock["offset_ns"], clock["rtt_ns"])
    order = np.argsort(np.asarray(clock["host_ns"], dtype=np.int64), kind="stable")
    clock_host = np.asarray(clock["host_ns"], dtype=np.int64)[order]
    device = np.asarray(device_ns, dtype=np.int64)
    arrival = np.asarray(arrival_ns, dtype=np.int64)
    # clock rows and arrivals share an origin (a take's t0); a clock row's remote + offset is absolute
    remote = np.asarray(clock["remote_ns"], dtype=np.int64)[order]
    offset = np.asarray(clock["offset_ns"], dtype=np.int64)[order]
    origin = int(remote[0] + offset[0] - clock_host[0])
    rows = _segment_rows(device, arrival, segments, clock_host, origin)
    host = np.empty(len(device), dtype=np.int64)
    stamps = np.empty(len(device), dtype=np.int64)
    placed = []
    for seg, a, b in zip(segments, rows, rows[1:]):
        stamps[a:b] = dejitter(device[a:b], rate)
        host[a:b] = seg.map(stamps[a:b])
        placed.append(dataclasses.replace(seg, first_row=a, last_row=b))
    # residuals: how far each measured offset lies off its segment's line
    residual = np.concatenate(
        [
            np.abs(offset[s.start : s.stop] - (s.map(remote[s.start : s.stop]) - remote[s.start : s.stop]))
            for s in segments
        ]
    ).astype(np.float64)
    p50, p99 = np.percentile(residual, [50, 99])
    moved = np.abs(stamps - device).astype(np.float64)
    fit = LslFit(
        tuple(placed),
        len(offset),
        float(p50),
        float(p99),
        int(np.median(np.asarray(clock["rtt_ns"], dtype=np.int64))),
        rate > 0,
        float(np.percentile(moved, 99)) if len(moved) else 0.0,
    )
    return host, fit

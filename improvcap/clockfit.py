"""Fitting a device clock onto the host clock: offset + drift from (device time, host arrival) pairs.

Data stamped `device` on the device clock reach the host at

    host = map(device) + delay,    map(device) = device + offset + (device - ref) * beta,

where the delay (transport + scheduling jitter) is never negative, has a long tail, and comes in bursts on
some transports (PulseAudio's sine source delivers 2 s of audio at once). The wanted mapping is the lower
envelope of the arrival delays: a line that the arrivals lie on or above and that hugs their minima.

Conventions:
- `drift_ppm` is the device clock's rate error against the host clock: positive means the device clock runs
  fast, advancing (1 + drift) ns per host ns. It has the sign of a demo device's `drift_ppm` setting, and
  an audio stream's effective sample rate is nominal * (1 + drift) (`ClockFit.effective_rate`).
  Host ns per device ns is therefore 1 / (1 + drift) = 1 + beta.
- `offset_ns` is host minus device time at the segment's `ref_device_ns` (its first sample's device
  time), on the lower envelope: map(ref_device_ns) = ref_device_ns + offset_ns. It includes the transport
  delay that every arrival carries, which calibration (`latency_ms`) removes later.

The final fit (`fit_clock`): split the take into segments at clock resets, take the minimum-delay point of
each window of device time, drop minima far below the band of the lowest ones (bad timestamps: arrivals
before the event are impossible), and take the lower convex hull of the rest: its edge above the minima's
mean position is the line under all of them with the least total gap (the linear-programming envelope
estimate, which is also the maximum-likelihood line for exponential delays). Minima above it — late
windows, whole bursts — cannot move it, however many there are. Large values are handled in int64
relative to the segment's first sample, so nanoseconds stay exact whatever the device epoch.
`LiveClock` applies the same estimate incrementally while recording.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

METHOD = "window-min-lower-envelope"
_MIN_POINTS = 6  # fewer points in a segment: no drift, offset from the minimum delay
# A segment spanning less device time gets no drift either: over a second, 1 ms of arrival jitter left in
# the window minima would already be a 1000 ppm slope
MIN_DRIFT_SPAN_NS = 1_000_000_000
_MIN_WINDOWS = 8  # a segment spanning fewer windows is split into this many smaller windows
_RESET_SPAN_NS = 5_000_000_000  # device time either side of a suspected reset used to confirm it
_BACK_RISE_NS = 10_000_000  # a backward step is a reset if the delay envelope rises by more than this
_EARLY_MIN = 8  # fewer window minima: none can be told to be too early
_K_LOW = 8.0  # minima this many robust spreads below the lowest band are dropped as too early
_MAX_SLOPE = 0.05  # the quantile line's slope is searched within ±5 %
_GOLDEN_STEPS = 36  # golden-section steps for it: 0.618**36 * 0.1 < 1e-8
_K_HIGH = 24.0  # minima this many lower-quartile gaps above the envelope are counted out as late
_MIN_SCALE_NS = 1_000.0  # floor for the spreads and gaps above (jitter-free data has none)


class DeviceLine:
    """A device→host clock line: host = device + offset_ns + (device - ref_device_ns) × beta. Mixed into the
    dataclasses that carry those three fields (a clock segment here, a round-trip fit in roundtrip.py)."""

    __slots__ = ()
    offset_ns: int  # host - device at ref_device_ns
    drift_ppm: float  # device clock rate error: > 0 runs fast
    ref_device_ns: int

    @property
    def beta(self) -> float:
        """Host ns per device ns, minus one: 1 / (1 + drift) - 1."""
        d = self.drift_ppm * 1e-6
        return -d / (1.0 + d)

    def map(self, device_ns: np.ndarray) -> np.ndarray:
        d = np.asarray(device_ns, dtype=np.int64)
        # The small correction term in float64; the large parts stay exact int64.
        corr = np.rint((d - self.ref_device_ns).astype(np.float64) * self.beta).astype(np.int64)
        return d + self.offset_ns + corr

    def map_one(self, device_ns: int) -> int:
        return int(device_ns) + self.offset_ns + round((int(device_ns) - self.ref_device_ns) * self.beta)


@dataclass(frozen=True, slots=True)
class Segment(DeviceLine):
    """One stretch of a device clock without resets: rows [start, stop) of the fitted arrays."""

    start: int
    stop: int
    offset_ns: int  # host - device at ref_device_ns, on the lower envelope
    drift_ppm: float  # device clock rate error: > 0 runs fast
    ref_device_ns: int
    span_ns: int = 0  # device time from its first row to its last

    def as_dict(self) -> dict:
        return {
            "start": self.start,
            "stop": self.stop,
            "offset_ns": self.offset_ns,
            "ref_device_ns": self.ref_device_ns,
            "drift_ppm": self.drift_ppm,
        }


@dataclass(frozen=True, slots=True)
class ClockFit:
    """The fitted device→host mapping of one stream, segment by segment, with its residual statistics.

    Residuals are host - map(device) over every input point: the arrival delay above the envelope
    (>= 0 apart from rejected early outliers). `outliers_rejected` counts rejected window minima.
    """

    segments: tuple[Segment, ...]
    n: int
    residual_p50_ns: float
    residual_p99_ns: float
    outliers_rejected: int
    window_ns: int

    @property
    def resets(self) -> int:
        return max(len(self.segments) - 1, 0)

    @property
    def main(self) -> Segment | None:
        """The segment with the most points: the one that speaks for the stream in summaries."""
        return max(self.segments, key=lambda s: s.stop - s.start, default=None)

    @property
    def drift_ppm(self) -> float:
        main = self.main
        return main.drift_ppm if main is not None else 0.0

    def apply(self, device_ns: np.ndarray) -> np.ndarray:
        """Map device times POSITION-ALIGNED with the fitted arrays (same length; row i uses row i's segment).

        E.g. an audio fit on block end times applied to the same blocks' start times.
        """
        d = np.asarray(device_ns, dtype=np.int64)
        if d.shape != (self.n,):
            raise ValueError(f"apply needs {self.n} device times aligned with the fit, got shape {d.shape}")
        out = np.empty(self.n, dtype=np.int64)
        for seg in self.segments:
            out[seg.start : seg.stop] = seg.map(d[seg.start : seg.stop])
        return out

    def map_one(self, device_ns: int, segment: int = -1) -> int:
        """Map one device time with one segment's line (default: the last segment)."""
        if not self.segments:
            raise ValueError("an empty clock fit maps nothing")
        return self.segments[segment].map_one(device_ns)

    def _offset_only(self) -> str | None:
        """Why the main segment has no drift, when it spans too little device time to fit one."""
        main = self.main
        if main is None or main.drift_ppm != 0.0 or main.span_ns >= MIN_DRIFT_SPAN_NS:
            return None
        return (
            f"offset only: {main.span_ns / 1e9:.1f} s of device time is too short to fit a drift "
            f"(at least {MIN_DRIFT_SPAN_NS / 1e9:g} s)"
        )

    def effective_rate(self, nominal: float) -> float:
        """Samples per host second of a device clocked at `nominal` per device second: nominal * (1 + drift).

        A 48 kHz ADC running 200 ppm fast (drift +200 ppm) delivers 48009.6 samples per host second.
        """
        return nominal * (1.0 + self.drift_ppm * 1e-6)

    def as_dict(self) -> dict:
        """The per-stream clock entry of take.json; offset/drift are the main (longest) segment's."""
        main = self.main
        short = self._offset_only()
        return {
            **({"note": short} if short else {}),
            "method": METHOD,
            "offset_ns": main.offset_ns if main else None,
            "ref_device_ns": main.ref_device_ns if main else None,
            "drift_ppm": main.drift_ppm if main else None,
            "residual_p50_ns": self.residual_p50_ns,
            "residual_p99_ns": self.residual_p99_ns,
            "n": self.n,
            "resets": self.resets,
            "outliers_rejected": self.outliers_rejected,
            "window_ns": self.window_ns,
            "segments": [s.as_dict() for s in self.segments],
        }


def unwrap_counter(values: np.ndarray, modulus: int) -> np.ndarray:
    """A wrapping hardware counter made monotonic through its wraps (int64).

    A step down by more than modulus/2 is a wrap (the counter went past modulus - 1 to 0); a step up by
    more than modulus/2 is a sample from before a wrap arriving after it. Anything smaller, such as a small
    backwards step, is left as it is. Gaps of modulus/2 or more alias and cannot be told from wraps.
    """
    if modulus <= 0:
        raise ValueError(f"counter modulus must be positive, got {modulus}")
    v = np.asarray(values).astype(np.int64)
    if v.size < 2:
        return v.copy()
    step = np.diff(v)
    half = modulus / 2
    turns = np.cumsum((step < -half).astype(np.int64) - (step > half).astype(np.int64))
    out = v.copy()
    out[1:] += turns * np.int64(modulus)
    return out


def fit_clock(
    device_ns: np.ndarray,
    host_ns: np.ndarray,
    *,
    window_ns: int = 1_000_000_000,
    reset_threshold_ns: int = 1_000_000_000,
) -> ClockFit:
    """Fit host arrival times against device times: one lower-envelope line per segment between resets.

    A reset starts a new segment where the device clock is discontinuous: the device time steps backwards
    and the envelope of the delay (host - device) after the step lies more than 10 ms above the one before,
    or it steps forward by more than `reset_threshold_ns` and the envelope drops by more than that. The
    envelopes are the third-smallest delay over about 5 s of device time either side, so one glitched
    timestamp is not a reset. Resets closer together than that may be missed. Wrapping counters must go
    through `unwrap_counter` first. A segment with fewer than 6 points gets drift 0 and the minimum delay
    as offset; one spanning fewer than 8 windows is cut into 8 smaller windows instead.
    """
    d = _as_ns(device_ns, "device_ns")
    h = _as_ns(host_ns, "host_ns")
    if d.shape != h.shape:
        raise ValueError(f"device_ns and host_ns differ in length: {d.size} vs {h.size}")
    if window_ns <= 0 or reset_threshold_ns <= 0:
        raise ValueError("window_ns and reset_threshold_ns must be positive")
    n = d.size
    if n == 0:
        return ClockFit((), 0, 0.0, 0.0, 0, int(window_ns))
    bounds = _segment_bounds(d, h, reset_threshold_ns)
    segments, rejected = [], 0
    for start, stop in zip(bounds[:-1], bounds[1:]):
        seg, rej = _fit_segment(d[start:stop], h[start:stop], float(window_ns), int(start))
        segments.append(seg)
        rejected += rej
    fit = ClockFit(tuple(segments), n, 0.0, 0.0, rejected, int(window_ns))
    residual = h - fit.apply(d)
    p50, p99 = np.percentile(residual, [50, 99])
    return ClockFit(fit.segments, n, float(p50), float(p99), rejected, int(window_ns))


def _as_ns(values: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(values)
    if a.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {a.shape}")
    return np.rint(a).astype(np.int64) if a.dtype.kind == "f" else a.astype(np.int64)


def _segment_bounds(d: np.ndarray, h: np.ndarray, threshold: int) -> list[int]:
    """Row indices where segments start, plus len(d) at the end."""
    n = d.size
    bounds = [0]
    if n < 2:
        return bounds + [n]
    step = np.diff(d)
    candidates = np.flatnonzero((step < 0) | (step > threshold)) + 1
    if candidates.size == 0:
        return bounds + [n]
    delay = h - d
    forward = step[step > 0]
    period = float(np.median(forward[:: max(1, forward.size // 20_000)])) if forward.size else 1.0
    span = int(min(max(np.ceil(_RESET_SPAN_NS / max(period, 1.0)), 3), n))
    for c in candidates.tolist():
        before = delay[max(bounds[-1], c - span) : c]
        after = delay[c : c + span]
        if after.size < 3:
            continue
        rise = _envelope(after) - _envelope(before)
        if (step[c - 1] < 0 and rise > _BACK_RISE_NS) or (step[c - 1] > threshold and rise < -threshold):
            bounds.append(c)
    return bounds + [n]


def _envelope(delay: np.ndarray) -> int:
    """Third-smallest delay (the smallest when fewer): a floor that one bad timestamp cannot move."""
    k = min(2, delay.size - 1)
    return int(np.partition(delay, k)[k])


def _fit_segment(d: np.ndarray, h: np.ndarray, window: float, start: int) -> tuple[Segment, int]:
    """Lower-envelope line of one segment; returns it and the number of rejected window minima."""
    ref_d = int(d[0])
    c0 = int(h[0]) - ref_d
    x_int = d - ref_d
    y_int = (h - d) - c0  # delay relative to the first point's: small, exact in float64
    x = x_int.astype(np.float64)
    span = float(x.max() - x.min())
    if d.size < _MIN_POINTS or span < MIN_DRIFT_SPAN_NS:
        return Segment(start, start + d.size, c0 + int(y_int.min()), 0.0, ref_d, int(span)), 0
    if span < _MIN_WINDOWS * window:
        window = span / _MIN_WINDOWS
    idx = _window_minima(x, y_int, window)
    xm, ym = x[idx], y_int[idx].astype(np.float64)
    if xm.size < 3:
        return Segment(start, start + d.size, c0 + int(y_int.min()), 0.0, ref_d, int(span)), 0
    a, b, kept = _robust_line(xm, ym)
    drift = -b / (1.0 + b)
    return Segment(start, start + d.size, c0 + int(round(a)), float(drift * 1e6), ref_d, int(span)), int(xm.size - kept)


def _window_minima(x: np.ndarray, y: np.ndarray, window: float) -> np.ndarray:
    """Index of the minimum of y in each window of x (first one on ties), in window order."""
    w = np.floor((x - x.min()) / window).astype(np.int64)
    if np.all(w[1:] >= w[:-1]):
        starts = np.concatenate(([0], np.flatnonzero(np.diff(w)) + 1))
        mins = np.minimum.reduceat(y, starts)
        gid = np.repeat(np.arange(starts.size), np.diff(np.append(starts, y.size)))
        hits = np.flatnonzero(y == mins[gid])
        g = gid[hits]
        return hits[np.concatenate(([True], g[1:] != g[:-1]))]
    order = np.lexsort((y, w))  # device time not monotonic (glitches): sort by window, then delay
    ws = w[order]
    return order[np.concatenate(([True], ws[1:] != ws[:-1]))]


def _robust_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float, int]:
    """Lower-support line y = a + b*x of window minima, robust to minima far above or below.

    The line is the lower convex hull edge above the minima's mean position: the line under all of them
    with the least total gap (the linear-programming estimate, and the maximum-likelihood line for
    exponential delays). Minima above it (late windows, bursts) cannot move it, whatever their number.
    Minima below it can, so too-early ones (bad timestamps) go first: with at least 8 minima, those more
    than 8 robust spreads (25 %–45 % quantile distance) below a 25 % quantile regression line are dropped;
    up to about a fifth of the minima may be bad. Minima far above the final line are counted out.
    Returns (a, b, number of minima kept).
    """
    xc = float(x.mean())
    x0 = x - xc
    bq = _quantile_slope(x0, y, 0.25)
    r0 = y - bq * x0  # detrended: the hull works on small numbers
    keep = np.ones(x.size, dtype=bool)
    if x.size >= _EARLY_MIN:
        q25, q45 = np.quantile(r0, [0.25, 0.45])
        keep = r0 >= q25 - _K_LOW * max(q45 - q25, _MIN_SCALE_NS)
    a, b = _hull_edge(x0, r0, keep)
    r = r0 - (a + b * x0)
    late = keep & (r > _K_HIGH * max(float(np.quantile(r[keep], 0.25)), _MIN_SCALE_NS))
    if late.any():
        keep &= ~late
        a, b = _hull_edge(x0, r0, keep)
    b += bq
    return a - b * xc, b, int(keep.sum())  # intercept at x = 0, the segment's first sample


def _quantile_slope(x: np.ndarray, y: np.ndarray, q: float) -> float:
    """Slope of the q-quantile regression line (pinball loss), by golden-section search.

    The loss minimised over the intercept is convex in the slope; the intercept for a slope is the
    q-quantile of y - slope*x. Slopes within ±5 % are searched: clocks that far apart are not one rig's.
    """
    k = max(int(np.ceil(q * x.size)) - 1, 0)

    def loss(b: float) -> float:
        r = y - b * x
        r -= np.partition(r, k)[k]
        return float(q * r.sum() - r[r < 0].sum())

    lo, hi = -_MAX_SLOPE, _MAX_SLOPE
    g = (np.sqrt(5) - 1) / 2
    m1, m2 = hi - g * (hi - lo), lo + g * (hi - lo)
    f1, f2 = loss(m1), loss(m2)
    for _ in range(_GOLDEN_STEPS):
        if f1 <= f2:
            hi, m2, f2 = m2, m1, f1
            m1 = hi - g * (hi - lo)
            f1 = loss(m1)
        else:
            lo, m1, f1 = m1, m2, f2
            m2 = lo + g * (hi - lo)
            f2 = loss(m2)
    return (lo + hi) / 2


def _hull_edge(x: np.ndarray, y: np.ndarray, keep: np.ndarray) -> tuple[float, float]:
    """Line (a, b) through the lower hull edge of the kept points that lies above their mean x."""
    idx = np.flatnonzero(keep)
    hull = idx[_lower_hull(x[idx], y[idx])]
    if hull.size == 1:
        return float(y[hull[0]]), 0.0
    k = int(np.clip(np.searchsorted(x[hull], float(x[idx].mean())) - 1, 0, hull.size - 2))
    i, j = hull[k], hull[k + 1]
    b = float((y[j] - y[i]) / (x[j] - x[i]))
    return float(y[i] - b * x[i]), b


def _lower_hull(x: np.ndarray, y: np.ndarray) -> list[int]:
    """Indices of the lower convex hull's vertices (Andrew's monotone chain), by increasing x."""
    order = np.lexsort((y, x)).tolist()
    xs, ys = x.tolist(), y.tolist()
    hull: list[int] = []
    for p in order:
        px, py = xs[p], ys[p]
        if hull and px == xs[hull[-1]]:
            continue  # same x: the lower one came first
        while len(hull) >= 2:
            o, q = hull[-2], hull[-1]
            if (xs[q] - xs[o]) * (py - ys[o]) - (ys[q] - ys[o]) * (px - xs[o]) > 0:
                break
            hull.pop()
        hull.append(p)
    return hull


class LiveClock:
    """Live device→host mapping while recording, the incremental twin of `fit_clock`.

    `observe` takes a device time and the host time its data arrived; `to_host` maps a device time onto
    the host clock. Until the first observation the mapping is the identity; until `min_windows` windows
    of device time have closed it is the minimum delay so far with no drift; then it is the lower-envelope
    line through the minima of the last `history` windows, refitted whenever a window closes (O(1)
    amortised per observation). A device time that steps backwards, or arrives more than
    `reset_threshold_ns` earlier than the line allows, is held back; `confirm` such observations in a row
    mean the device clock was reset and the estimate restarts from them, while one alone is dropped as a
    glitch. Meanwhile device times nearer the held-back ones map through their own minimum delay.
    """

    __slots__ = (
        "window_ns",
        "reset_threshold_ns",
        "min_windows",
        "confirm",
        "observations",
        "resets",
        "_ref_d",
        "_c0",
        "_a",
        "_b",
        "_last_d",
        "_ymin",
        "_win",
        "_wx",
        "_wy",
        "_minima",
        "_pending",
    )

    def __init__(
        self,
        window_ns: int = 1_000_000_000,
        reset_threshold_ns: int = 1_000_000_000,
        *,
        history: int = 120,
        min_windows: int = 3,
        confirm: int = 3,
    ) -> None:
        self.window_ns = int(window_ns)
        self.reset_threshold_ns = int(reset_threshold_ns)
        self.min_windows = max(int(min_windows), 2)
        self.confirm = max(int(confirm), 1)
        self.observations = 0
        self.resets = 0
        self._minima: deque[tuple[float, float]] = deque(maxlen=max(int(history), self.min_windows))
        self._pending: list[tuple[int, int]] = []
        self._ref_d: int | None = None
        self._start_segment()

    def _start_segment(self) -> None:
        self._ref_d = None
        self._c0 = 0  # host - device of the segment's first observation
        self._a = 0.0  # line: host - device - c0 = a + b * (device - ref)
        self._b = 0.0
        self._last_d = 0
        self._ymin = 0
        self._win = 0
        self._wx = 0
        self._wy = 0
        self._minima.clear()

    @property
    def offset_ns(self) -> int | None:
        """Host minus device time now (at the latest observed device time); None before any observation."""
        if self._ref_d is None:
            return None
        return self.to_host(self._last_d) - self._last_d

    @property
    def drift_ppm(self) -> float:
        """Device clock rate error, > 0 when it runs fast (0 until the line is fitted)."""
        return -self._b / (1.0 + self._b) * 1e6

    def observe(self, device_ns: int, host_ns: int) -> None:
        d, h = int(device_ns), int(host_ns)
        self.observations += 1
        if self._ref_d is None:
            self._accept(d, h)
            return
        if d < self._last_d or h - self._line(d, self._ref_d) < -self.reset_threshold_ns:
            self._pending.append((d, h))
            if len(self._pending) >= self.confirm:
                held, self._pending = self._pending, []
                self._start_segment()
                self.resets += 1
                for pd, ph in held:
                    self._accept(pd, ph)
            return
        self._pending.clear()  # a lone glitch: dropped
        self._accept(d, h)

    def to_host(self, device_ns: int) -> int:
        d = int(device_ns)
        if self._ref_d is None:
            return d
        if self._pending and abs(d - self._pending[-1][0]) < abs(d - self._last_d):
            return d + min(ph - pd for pd, ph in self._pending)
        return self._line(d, self._ref_d)

    def _line(self, d: int, ref_d: int) -> int:
        """The fitted host time of device time d; ref_d: the segment's first device time (self._ref_d, once set)."""
        return d + self._c0 + round(self._a + self._b * (d - ref_d))

    def _accept(self, d: int, h: int) -> None:
        if self._ref_d is None:
            self._ref_d, self._c0 = d, h - d
            self._last_d, self._win, self._wx, self._wy = d, 0, 0, 0
            return
        x = d - self._ref_d
        y = h - d - self._c0
        self._last_d = d
        win = x // self.window_ns
        if win == self._win:
            if y < self._wy:
                self._wx, self._wy = x, y
        else:
            self._minima.append((float(self._wx), float(self._wy)))
            self._win, self._wx, self._wy = win, x, y
            if len(self._minima) >= self.min_windows:
                xm, ym = np.array(self._minima).T
                self._a, self._b, _ = _robust_line(xm, ym)
        if len(self._minima) < self.min_windows and y < self._ymin:
            self._ymin = y
            self._a = float(y)

    def __repr__(self) -> str:
        return f"LiveClock(offset_ns={self.offset_ns}, drift_ppm={self.drift_ppm:.2f}, n={self.observations})"

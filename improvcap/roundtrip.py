"""Fitting a device clock onto the host clock from round trips (a sync box answering timing queries).

The host sends a query at host time `host_send_ns` (t1) and reads the reply at `host_recv_ns` (t2); the
reply carries the device's clock `box_ns` (T), read somewhere between the two. T is paired with the
midpoint (t1 + t2) / 2, which is off by half the difference of the two transport delays — at most half
the round-trip time (RTT). Round trips that come back fastest are the ones whose midpoint is best, so the
fit keeps, in each window of device time (WINDOW_NS, cut smaller when the round trips span fewer than
MIN_WINDOWS windows), the round trip with the smallest RTT, fits

    host = T + offset + (T - ref) * beta        (least squares on those minima)

weighting each minimum by how close its RTT came to the fastest one (a window where no reply came back
quickly, such as a partial window at the end, hardly counts), rejects minima far from the line once (a
whole window of slow replies) and refits. Unlike the arrival fit of `clockfit`, this needs no assumption
about one-way delays beyond their symmetry on the fastest round trips, and jitter only thins those out.

Conventions are those of `clockfit`: `drift_ppm` > 0 means the device clock runs fast; `offset_ns` is
host minus device time at `ref_device_ns`; host ns per device ns is 1 + beta = 1 / (1 + drift).

`RoundTripClock` is the live twin (thread-safe: round trips come from a reader thread, mappings are asked
from the recorder's pump); `fit_roundtrips` is the final fit over a whole take, from the columns of its
`<stream>.roundtrips.csv` (improvcap.take.refit reads them; host times in ns since the take's t0).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

from .clockfit import DeviceLine

METHOD = "roundtrip-min-rtt-least-squares"
WINDOW_NS = 1_000_000_000
MIN_WINDOWS = 4  # a shorter span is cut into this many windows
REJECT_SIGMAS = 5.0  # minima this many robust spreads off the first line are refitted without
REJECT_FLOOR_NS = 100_000  # ... and never those closer than this
SIGMA_FLOOR_NS = 25_000  # a round trip this much slower than the fastest is trusted about as much


@dataclass(frozen=True, slots=True)
class RoundTrip:
    """One answered query: host send and receive times and the device clock it read, all in ns.

    As a Sample payload the host times are absolute (monotonic); in a take's CSV they are since t0."""

    id: int
    host_send_ns: int
    host_recv_ns: int
    box_ns: int

    @property
    def rtt_ns(self) -> int:
        return self.host_recv_ns - self.host_send_ns


@dataclass(frozen=True, slots=True)
class RoundTripFit(DeviceLine):
    """A fitted device→host line and what it was fitted from.

    `residual_*` are |midpoint - line| over the round trips used; `half_rtt_ns` is the median half RTT of
    those: how far unequal one-way delays could move the line at most."""

    offset_ns: int
    ref_device_ns: int
    drift_ppm: float
    n: int
    used: int
    rejected: int
    window_ns: int
    rtt_min_ns: int
    rtt_median_ns: int
    half_rtt_ns: int
    residual_p50_ns: float
    residual_p99_ns: float

    def as_dict(self) -> dict:
        """The stream's `clock` entry in take.json."""
        return {
            "method": METHOD,
            "offset_ns": self.offset_ns,
            "ref_device_ns": self.ref_device_ns,
            "drift_ppm": self.drift_ppm,
            "residual_p50_ns": self.residual_p50_ns,
            "residual_p99_ns": self.residual_p99_ns,
            "n": self.n,
            "used": self.used,
            "rejected": self.rejected,
            "window_ns": self.window_ns,
            "rtt_min_ns": self.rtt_min_ns,
            "rtt_median_ns": self.rtt_median_ns,
            "half_rtt_ns": self.half_rtt_ns,
            "resets": 0,
        }


def _line(box: np.ndarray, mid: np.ndarray, rtt: np.ndarray) -> tuple[int, int, float, np.ndarray]:
    """Weighted least-squares line of (mid - box) against box: (ref, offset at ref, beta, residuals).

    A midpoint can be off by up to half its RTT; what a round trip took beyond the fastest one is how much
    less it is to be trusted, so each point weighs 1 / sigma², sigma = (rtt - fastest) / 2 + SIGMA_FLOOR_NS.
    Works on differences from the first point so that large epochs stay exact in float64."""
    ref = int(box[0])
    c0 = int(mid[0]) - ref
    x = (box - ref).astype(np.float64)
    y = ((mid - box) - c0).astype(np.float64)
    w = 1.0 / ((rtt - rtt.min()) / 2.0 + SIGMA_FLOOR_NS) ** 2
    xm, ym = np.average(x, weights=w), np.average(y, weights=w)
    sxx = float(np.sum(w * (x - xm) ** 2))
    if len(x) < 3 or sxx <= 0:  # two points would make any jitter a drift
        a, b = ym, 0.0
    else:
        b = float(np.sum(w * (x - xm) * (y - ym)) / sxx)
        a = ym - b * xm
    return ref, c0 + int(round(a)), b, y - (a + b * x)


def _fit_minima(box: np.ndarray, mid: np.ndarray, rtt: np.ndarray) -> tuple[int, int, float, np.ndarray, int]:
    """The line through window minima, refitted once without the far ones. (ref, offset, beta, kept, rejected)."""
    ref, offset, beta, r = _line(box, mid, rtt)
    keep = np.ones(len(box), dtype=bool)
    if len(box) >= 4:
        # distances from the residuals' median: an outlier may still tilt the line a little
        dev = np.abs(r - np.median(r))
        keep = dev <= max(REJECT_SIGMAS * 1.4826 * float(np.median(dev)), REJECT_FLOOR_NS)
        if keep.sum() >= 2 and not keep.all():
            ref, offset, beta, _ = _line(box[keep], mid[keep], rtt[keep])
        else:
            keep[:] = True
    return ref, offset, beta, keep, int((~keep).sum())


def window_minima(box_ns: np.ndarray, rtt_ns: np.ndarray, window_ns: float) -> np.ndarray:
    """Index of the smallest-RTT round trip in each window of device time (`box_ns` sorted)."""
    w = ((box_ns - box_ns[0]) // window_ns).astype(np.int64)
    order = np.lexsort((rtt_ns, w))
    ws = w[order]
    return np.sort(order[np.concatenate(([True], ws[1:] != ws[:-1]))])


def fit_roundtrips(
    host_send_ns: np.ndarray, host_recv_ns: np.ndarray, box_ns: np.ndarray, *, window_ns: int = WINDOW_NS
) -> RoundTripFit:
    """The device→host line from a take's round trips (see the module docstring). ValueError without any."""
    t1 = np.asarray(host_send_ns, dtype=np.int64)
    t2 = np.asarray(host_recv_ns, dtype=np.int64)
    box = np.asarray(box_ns, dtype=np.int64)
    if not (t1.shape == t2.shape == box.shape) or t1.ndim != 1:
        raise ValueError("round trips: host_send_ns, host_recv_ns and box_ns differ in shape")
    valid = t2 >= t1  # a reply before its query is a corrupt row
    t1, t2, box = t1[valid], t2[valid], box[valid]
    if len(box) == 0:
        raise ValueError("no round trips to fit the device clock from")
    order = np.argsort(box, kind="stable")
    t1, t2, box = t1[order], t2[order], box[order]
    rtt = t2 - t1
    mid = t1 + rtt // 2
    span = int(box[-1] - box[0])
    # a short span: MIN_WINDOWS windows (+1 ns, or the last round trip would sit in a window of its own)
    window = window_ns if span >= MIN_WINDOWS * window_ns else span / MIN_WINDOWS + 1.0
    idx = window_minima(box, rtt, window)
    ref, offset, beta, keep, rejected = _fit_minima(box[idx], mid[idx], rtt[idx])
    used = idx[keep]
    fit = RoundTripFit(
        offset,
        ref,
        -beta / (1.0 + beta) * 1e6,
        len(box),
        len(used),
        rejected,
        int(round(window)),
        int(rtt.min()),
        int(np.median(rtt)),
        int(np.median(rtt[used]) // 2),
        0.0,
        0.0,
    )
    residual = np.abs(mid[used] - fit.map(box[used])).astype(np.float64)
    p50, p99 = np.percentile(residual, [50, 99])
    return RoundTripFit(
        fit.offset_ns,
        fit.ref_device_ns,
        fit.drift_ppm,
        fit.n,
        fit.used,
        fit.rejected,
        fit.window_ns,
        fit.rtt_min_ns,
        fit.rtt_median_ns,
        fit.half_rtt_ns,
        float(p50),
        float(p99),
    )


class RoundTripClock:
    """The live device→host mapping from round trips as they come, refitted on each one.

    Keeps the smallest-RTT round trip of each window of device time for the last `history` windows
    (and the current window's best so far) and fits the line of `fit_roundtrips` through them. Until the
    first round trip `to_host` has nothing to go on and returns the device time unchanged (`ready` is
    False); with one window, the line has no drift yet.
    """

    def __init__(self, window_ns: int = WINDOW_NS, history: int = 120) -> None:
        self.window_ns = int(window_ns)
        self._lock = threading.Lock()
        self._minima: deque[tuple[int, int, int]] = deque(maxlen=max(int(history), 2))  # (box, mid, rtt)
        self._window: int | None = None
        self._best: tuple[int, int, int] | None = None
        self._ref = 0
        self._offset = 0
        self._beta = 0.0
        self.count = 0
        self.rtt_min_ns: int | None = None

    @property
    def ready(self) -> bool:
        return self._best is not None

    def add(self, host_send_ns: int, host_recv_ns: int, box_ns: int) -> None:
        t1, t2, box = int(host_send_ns), int(host_recv_ns), int(box_ns)
        rtt = t2 - t1
        if rtt < 0:
            return
        point = (box, t1 + rtt // 2, rtt)
        window = box // self.window_ns
        with self._lock:
            self.count += 1
            self.rtt_min_ns = rtt if self.rtt_min_ns is None else min(self.rtt_min_ns, rtt)
            if self._best is not None and window != self._window:
                self._minima.append(self._best)
                self._best = None
            if self._best is None or rtt < self._best[2]:
                self._best = point
            self._window = window
            points = np.array(sorted([*self._minima, self._best]), dtype=np.int64)
            self._ref, self._offset, self._beta, _, _ = _fit_minima(points[:, 0], points[:, 1], points[:, 2])

    def to_host(self, box_ns: int) -> int:
        d = int(box_ns)
        with self._lock:
            if self._best is None:
                return d
            return d + self._offset + round((d - self._ref) * self._beta)

    @property
    def drift_ppm(self) -> float:
        b = self._beta
        return -b / (1.0 + b) * 1e6

    @property
    def offset_ns(self) -> int | None:
        """Host minus device time at the newest round trip; None before any."""
        with self._lock:
            best = self._best
        return None if best is None else self.to_host(best[0]) - best[0]

    def __repr__(self) -> str:
        return f"RoundTripClock(offset_ns={self.offset_ns}, drift_ppm={self.drift_ppm:.2f}, n={self.count})"

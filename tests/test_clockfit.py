"""The device→host clock fit on seeded synthetic arrivals.

Arrivals follow the demo twins' timing model: an event at true host time t is stamped by a device clock
running `drift_ppm` fast from its own epoch, and reaches the host `transport` later plus exponential jitter,
with rare late outliers of 100–500 ms. The right answer is the envelope: true time + transport.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

from improvcap.clockfit import ClockFit, LiveClock, fit_clock, unwrap_counter

MS = 1_000_000
S = 1_000_000_000
HOST0 = 700 * S  # host monotonic time of the first event
TRANSPORT = 20 * MS


def arrivals(seed: int, *, rate: float, seconds: float, drift_ppm: float, jitter_ms: float,
             epoch: int = 10**12, late_frac: float = 0.005) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(device_ns, host_ns, envelope_ns) of a regular stream; envelope = true event time + transport."""
    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    true = HOST0 + np.rint(np.arange(n) * (S / rate)).astype(np.int64)
    device = epoch + np.rint((true - HOST0) * (1 + drift_ppm * 1e-6)).astype(np.int64)
    envelope = true + TRANSPORT
    host = envelope + np.rint(rng.exponential(jitter_ms * MS, n)).astype(np.int64)
    late = rng.random(n) < late_frac
    host[late] += rng.integers(100 * MS, 500 * MS, late.sum())
    return device, host, envelope


def errors(fit: ClockFit, device: np.ndarray, envelope: np.ndarray) -> np.ndarray:
    return np.abs(fit.apply(device) - envelope)


def assert_tracks(fit: ClockFit, device: np.ndarray, envelope: np.ndarray, *, p99_ns: float = 0.2 * MS,
                  max_ns: float = 1 * MS) -> None:
    err = errors(fit, device, envelope)
    assert np.percentile(err, 99) <= p99_ns, f"p99 {np.percentile(err, 99) / 1e3:.1f} µs"
    assert err.max() <= max_ns, f"max {err.max() / 1e3:.1f} µs"


@settings(max_examples=60, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), rate=st.sampled_from([30, 100, 240]), seconds=st.integers(10, 120),
       drift_ppm=st.floats(-300, 300), jitter_ms=st.floats(1, 10),
       epoch=st.integers(-10**18, 2 * 10**18))
@example(seed=1, rate=30, seconds=10, drift_ppm=300.0, jitter_ms=10.0, epoch=10**12)
@example(seed=2, rate=30, seconds=60, drift_ppm=-300.0, jitter_ms=10.0, epoch=1_800_000_000_000_000_000)
@example(seed=3, rate=100, seconds=60, drift_ppm=250.0, jitter_ms=5.0, epoch=4 * 10**15)
@example(seed=4, rate=240, seconds=120, drift_ppm=299.0, jitter_ms=10.0, epoch=-10**18)
def test_fit_hugs_the_arrival_envelope(seed, rate, seconds, drift_ppm, jitter_ms, epoch):
    device, host, envelope = arrivals(seed, rate=rate, seconds=seconds, drift_ppm=drift_ppm,
                                      jitter_ms=jitter_ms, epoch=epoch)
    fit = fit_clock(device, host)
    assert fit.resets == 0 and fit.n == device.size
    # The envelope of n exponential delays is known to about jitter/n: a 10 s, 30 fps take with 10 ms of
    # jitter (the maximum-likelihood line is what is fitted) cannot reach 0.2 ms everywhere.
    informative = rate * seconds / jitter_ms >= 100
    assert_tracks(fit, device, envelope, p99_ns=0.2 * MS if informative else 0.6 * MS)
    if seconds >= 60:
        assert abs(fit.drift_ppm - drift_ppm) <= 2.0
    # Residuals are the delays above the envelope: the exponential jitter's median, roughly.
    assert 0.4 * jitter_ms * MS < fit.residual_p50_ns < 1.2 * jitter_ms * MS


@pytest.mark.parametrize("rate", [30, 100, 240])
def test_late_outliers_do_not_lift_the_line(rate):
    device, host, envelope = arrivals(7, rate=rate, seconds=60, drift_ppm=-170, jitter_ms=5, late_frac=0.05)
    fit = fit_clock(device, host)
    assert_tracks(fit, device, envelope)
    assert abs(fit.drift_ppm + 170) <= 2.0


def test_a_two_second_burst_of_late_arrivals():
    device, host, envelope = arrivals(3, rate=100, seconds=60, drift_ppm=250, jitter_ms=3)
    held = slice(3000, 3200)  # 2 s of audio held back and delivered at once
    host[held] = host[held].max()
    fit = fit_clock(device, host)
    assert_tracks(fit, device, envelope)
    assert fit.outliers_rejected >= 1  # the burst's late window minima
    assert abs(fit.drift_ppm - 250) <= 2.0


def test_pulseaudio_like_bursts_throughout():
    """Every block is held until the next 2 s boundary: half of the 1 s windows hold only late blocks."""
    rng = np.random.default_rng(11)
    n = 120 * 100
    true_end = HOST0 + np.arange(1, n + 1) * 10 * MS  # block end times, 100 blocks/s
    device = 5 * S + np.rint((true_end - HOST0) * (1 - 230e-6)).astype(np.int64)
    delivered = HOST0 + -(-(true_end - HOST0) // (2 * S)) * (2 * S)
    host = delivered + TRANSPORT + np.rint(rng.exponential(0.3 * MS, n)).astype(np.int64)
    fit = fit_clock(device, host)
    assert_tracks(fit, device, true_end + TRANSPORT)
    assert abs(fit.drift_ppm + 230) <= 2.0
    assert fit.outliers_rejected >= 50
    assert fit.residual_p99_ns > 1.9 * S  # the fit reports how late the data really came


@pytest.mark.parametrize("rate,seconds", [(30, 60), (100, 60), (240, 30)])
def test_too_early_timestamps_do_not_drag_the_line(rate, seconds):
    device, host, envelope = arrivals(5, rate=rate, seconds=seconds, drift_ppm=150, jitter_ms=5)
    clean = fit_clock(device, host)
    rng = np.random.default_rng(5)
    bad = np.arange(5) * (device.size // 5) + rng.integers(0, device.size // 5, 5)  # one per fifth
    host[bad] = envelope[bad] - rng.integers(1 * MS, 50 * MS, bad.size)  # impossible: before the event
    fit = fit_clock(device, host)
    good = np.setdiff1d(np.arange(device.size), bad)
    err = np.abs(fit.apply(device) - envelope)[good]
    assert err.max() <= max(2 * errors(clean, device, envelope).max(), 0.1 * MS)
    assert fit.outliers_rejected >= bad.size


@pytest.mark.parametrize("jump_ns", [-10**12, 5 * S, -300 * MS], ids=["back-to-zero", "forward-5s", "back-300ms"])
def test_clock_reset_starts_a_new_segment(jump_ns):
    device, host, envelope = arrivals(2, rate=100, seconds=60, drift_ppm=120, jitter_ms=5)
    device[2500:] += jump_ns
    fit = fit_clock(device, host)
    assert [(s.start, s.stop) for s in fit.segments] == [(0, 2500), (2500, 6000)]
    assert fit.resets == 1
    assert_tracks(fit, device, envelope)
    for seg in fit.segments:
        assert abs(seg.drift_ppm - 120) <= 5.0
    assert fit.as_dict()["segments"][1]["ref_device_ns"] == device[2500]


def test_glitches_and_gaps_are_not_resets():
    device, host, envelope = arrivals(4, rate=100, seconds=60, drift_ppm=-90, jitter_ms=5)
    device[1000] -= S  # one timestamp out of order
    device[2000] += 3 * S  # one timestamp far ahead
    keep = np.r_[0:3000, 3400:6000]  # 4 s lost in transport: device and host time jump together
    device, host, envelope = device[keep], host[keep], envelope[keep]
    fit = fit_clock(device, host)
    assert fit.resets == 0
    good = np.setdiff1d(np.arange(device.size), [1000, 2000])
    assert errors(fit, device, envelope)[good].max() <= 0.2 * MS


def test_mocap_counter_wrap_is_unwrapped_not_reset():
    rng = np.random.default_rng(9)
    rate, drift = 240, 75e-6
    k = np.arange(60 * rate)
    start = 2**32 - 5000  # wraps after about 21 s
    true = HOST0 + np.rint(k * S / (rate * (1 + drift))).astype(np.int64)  # the device ticks 75 ppm fast
    counter = ((start + k) % 2**32).astype(np.uint32)
    host = true + TRANSPORT + np.rint(rng.exponential(2 * MS, k.size)).astype(np.int64)
    device = np.rint(unwrap_counter(counter, 2**32) * (S / rate)).astype(np.int64)
    assert np.all(np.diff(device) > 0)
    fit = fit_clock(device, host)
    assert fit.resets == 0
    assert_tracks(fit, device, true + TRANSPORT)
    assert abs(fit.drift_ppm - 75) <= 2.0
    # Without unwrapping, the wrap is a clock jump the fit has to treat as a reset.
    wrapped = np.rint(counter.astype(np.int64) * (S / rate)).astype(np.int64)
    assert fit_clock(wrapped, host).resets == 1


def test_unwrap_counter():
    m = 2**16
    values = np.array([65530, 65534, 2, 6, 5, 65535, 9, 13], dtype=np.uint16)
    assert unwrap_counter(values, m).tolist() == [65530, 65534, 65538, 65542, 65541, 65535, 65545, 65549]
    assert unwrap_counter(np.array([3]), m).tolist() == [3]
    assert unwrap_counter(np.array([], dtype=np.int64), m).tolist() == []
    many = (np.arange(0, 10 * m, 1000) % m).astype(np.int64)  # ten wraps
    assert np.array_equal(unwrap_counter(many, m), np.arange(0, 10 * m, 1000))
    with pytest.raises(ValueError):
        unwrap_counter(values, 0)


def test_effective_rate_of_a_fast_adc():
    """A "48 kHz" ADC really sampling at 48000 * (1 + 200e-6) Hz delivers 48009.6 samples per host second."""
    rng = np.random.default_rng(1)
    nominal, real, block = 48_000, 48_000 * (1 + 200e-6), 480
    ends = np.arange(1, 6001) * block  # sample counter after each block: 60 s
    true_end = HOST0 + np.rint(ends / real * S).astype(np.int64)
    device_end = np.rint(ends * S / nominal).astype(np.int64)  # the sample counter is the device clock
    host = true_end + TRANSPORT + np.rint(rng.exponential(5 * MS, ends.size)).astype(np.int64)
    fit = fit_clock(device_end, host)
    assert fit.drift_ppm == pytest.approx(200, abs=2)
    assert fit.effective_rate(nominal) == pytest.approx(48_009.6, abs=0.1)
    # Fitted on block ends, applied to the same blocks' starts (position-aligned).
    device_start = device_end - round(block * S / nominal)
    true_start = HOST0 + np.rint((ends - block) / real * S).astype(np.int64)
    assert np.abs(fit.apply(device_start) - (true_start + TRANSPORT)).max() <= 0.2 * MS


def test_apply_goes_by_position_and_map_one_agrees():
    device, host, envelope = arrivals(6, rate=100, seconds=30, drift_ppm=40, jitter_ms=2)
    device[1500:] -= 10**12  # reset
    fit = fit_clock(device, host)
    assert fit.resets == 1
    mapped = fit.apply(device)
    assert fit.map_one(int(device[10]), 0) == mapped[10]
    assert fit.map_one(int(device[2000])) == mapped[2000]  # default: last segment
    # A row's segment is its position, whatever its value: shifting every device time by one block
    # period shifts every mapped time by about that much, across the reset too.
    shifted = fit.apply(device - 10 * MS)
    assert np.abs(mapped - shifted - 10 * MS).max() <= 1_000
    with pytest.raises(ValueError):
        fit.apply(device[:-1])


def test_short_and_empty_takes():
    empty = fit_clock(np.array([], dtype=np.int64), np.array([], dtype=np.int64))
    assert empty.segments == () and empty.n == 0 and empty.apply(np.array([], dtype=np.int64)).size == 0
    assert empty.as_dict()["offset_ns"] is None and empty.effective_rate(100.0) == 100.0
    # A handful of points: no drift, offset from the smallest delay.
    device = np.array([0, 10, 20, 30]) * MS + 5 * S
    host = device + np.array([7, 3, 9, 4]) * MS + HOST0
    few = fit_clock(device, host)
    assert few.drift_ppm == 0.0 and few.segments[0].offset_ns == HOST0 + 3 * MS
    # A 2 s take is cut into smaller windows and still fits.
    device, host, envelope = arrivals(8, rate=30, seconds=2, drift_ppm=300, jitter_ms=2)
    fit = fit_clock(device, host)
    assert errors(fit, device, envelope).max() <= 0.5 * MS
    with pytest.raises(ValueError):
        fit_clock(device, host[:-1])


def test_an_hour_without_jitter_is_exact_at_any_epoch():
    device, host, envelope = arrivals(0, rate=240, seconds=3600, drift_ppm=-287.3, jitter_ms=1,
                                      epoch=1_800_000_000_000_000_000, late_frac=0)
    fit = fit_clock(device, envelope)  # arrivals exactly on the envelope
    assert np.abs(fit.apply(device) - envelope).max() <= 2  # ns: only the integer rounding of the inputs
    assert fit.drift_ppm == pytest.approx(-287.3, abs=1e-4)
    # With jitter, an hour pins the drift far below a ppm.
    assert abs(fit_clock(device, host).drift_ppm + 287.3) <= 0.05


def test_as_dict_is_json_for_take_json():
    device, host, envelope = arrivals(1, rate=30, seconds=20, drift_ppm=-50, jitter_ms=4)
    d = json.loads(json.dumps(fit_clock(device, host).as_dict()))
    assert {"method", "offset_ns", "drift_ppm", "residual_p50_ns", "residual_p99_ns", "segments", "resets",
            "n", "outliers_rejected"} <= d.keys()
    assert d["resets"] == 0 and d["n"] == device.size and len(d["segments"]) == 1
    assert abs(d["offset_ns"] - (HOST0 + TRANSPORT - 10**12)) <= 0.5 * MS


def live_errors(clock: LiveClock, device: np.ndarray, host: np.ndarray, envelope: np.ndarray) -> np.ndarray:
    out = np.empty(device.size, dtype=np.int64)
    for i, (d, h) in enumerate(zip(device.tolist(), host.tolist())):
        clock.observe(d, h)
        out[i] = clock.to_host(d)
    return np.abs(out - envelope)


@pytest.mark.parametrize("rate,jitter_ms,drift_ppm", [(30, 5, 300), (100, 5, -300), (240, 2, 200), (100, 10, 50)])
def test_live_clock_is_within_a_millisecond_after_five_seconds(rate, jitter_ms, drift_ppm):
    device, host, envelope = arrivals(rate, rate=rate, seconds=30, drift_ppm=drift_ppm, jitter_ms=jitter_ms,
                                      late_frac=0.01)
    clock = LiveClock()
    err = live_errors(clock, device, host, envelope)
    assert err[device - device[0] >= 5 * S].max() <= 1 * MS
    assert clock.observations == device.size and clock.resets == 0
    assert clock.drift_ppm == pytest.approx(drift_ppm, abs=20)


def test_live_clock_restarts_after_a_reset_and_ignores_a_glitch():
    device, host, envelope = arrivals(12, rate=100, seconds=40, drift_ppm=-150, jitter_ms=3)
    device[700] += 4 * S  # a lone glitch
    device[2000:] -= 10**12  # reset
    clock = LiveClock()
    err = live_errors(clock, device, host, envelope)
    assert clock.resets == 1
    since_start = np.arange(device.size) / 100
    assert err[(since_start >= 5) & (since_start < 20) & (np.arange(device.size) != 700)].max() <= 1 * MS
    assert err[since_start >= 25].max() <= 1 * MS


def test_live_clock_has_the_online_clock_interface():
    clock = LiveClock()
    assert clock.offset_ns is None and clock.observations == 0 and clock.to_host(12345) == 12345
    clock.observe(1_000, 50_000)
    assert clock.offset_ns == 49_000 and clock.to_host(2_000) == 51_000 and clock.drift_ppm == 0.0
    clock.observe(2_000, 50_500)  # a smaller delay: the minimum so far is the offset
    assert clock.offset_ns == 48_500 and clock.observations == 2


def test_a_span_too_short_for_a_drift_is_fitted_by_its_offset_alone():
    rng = np.random.default_rng(7)
    # 0.3 s of a 240 Hz device, arrivals jittered by up to 3 ms: any slope through them is noise
    device = np.arange(72, dtype=np.int64) * 4_166_667 + 10**12
    host = device + 5_000_000 + rng.integers(0, 3_000_000, device.size)
    fit = fit_clock(device, host)
    assert fit.drift_ppm == 0.0
    entry = fit.as_dict()
    assert entry["drift_ppm"] == 0.0 and "offset only" in entry["note"] and "0.3 s" in entry["note"]
    assert 5_000_000 <= entry["offset_ns"] <= 5_100_000  # the lowest arrivals
    long = np.arange(2400, dtype=np.int64) * 4_166_667 + 10**12  # 10 s: the drift is fitted
    fitted = fit_clock(long, long + np.rint(long * 1e-4).astype(np.int64) + 5_000_000)
    assert "note" not in fitted.as_dict() and abs(fitted.drift_ppm + 100) < 1

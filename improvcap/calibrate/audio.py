"""`calibrate audio`: input levels per channel, and the input–output latency through a loopback.

Levels are accumulated block by block in constant memory (sums, a peak, a histogram of 50 ms window
levels), so any duration can be measured. dBFS is relative to digital full scale with no sine
correction: a full-scale sine has a peak of 0 dBFS and an RMS of −3.01 dBFS.

Verdict per channel, first match wins:
- "dead": digital silence, or a noise floor below DEAD_FLOOR_DBFS with a peak below DEAD_PEAK_DBFS
  (an unplugged or muted input, not a quiet room);
- "clipping": any clipped sample — at or above CLIP_LEVEL of full scale, or in a flat top: a run of
  two or more equal consecutive samples at or above FLAT_LEVEL, which is how converters and drivers that
  saturate just below full scale show their clipping;
- "too hot": peak above HOT_PEAK_DBFS (no headroom left);
- "too quiet": peak below QUIET_PEAK_DBFS;
- "good" otherwise.

Loopback latency: a windowed log sweep is played on a PortAudio output while a PortAudio input records.
Both streams of one PortAudio instance share its stream clock (not `time.monotonic`), so the latency is
the input's ADC time of the sample where the sweep is found (cross-correlation) minus the output's DAC
time of the sweep's first sample: the delay outside the computer (cables, converters, room), with the
buffering PortAudio already accounts for removed.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..devices.base import Device
from ..errors import DeviceError
from ..records import full_scale
from ..rig import StreamSpec

# --- level thresholds (dBFS unless stated) ------------------------------------------------------
CLIP_LEVEL = 0.999  # fraction of full scale: a sample this high is clipped
FLAT_LEVEL = 0.98  # fraction of full scale (−0.18 dBFS): flat tops this high are clipping
DEAD_FLOOR_DBFS = -90.0
DEAD_PEAK_DBFS = -80.0
QUIET_PEAK_DBFS = -30.0
HOT_PEAK_DBFS = -3.0
NOISE_WINDOW_S = 0.050  # the noise floor is a low percentile of the RMS of windows this long
NOISE_PERCENTILE = 10.0
_HIST_LO_DBFS, _HIST_STEP_DB, _HIST_BINS = -200.0, 0.05, 4400  # -200 … +20 dBFS; silence in bin 0

VERDICTS = ("dead", "clipping", "too hot", "too quiet", "good")


def _dbfs(x: float) -> float:
    return 20.0 * math.log10(x) if x > 0 else -math.inf


@dataclass(frozen=True)
class ChannelLevel:
    channel: int  # from 1
    frames: int
    peak_dbfs: float  # -inf for digital silence
    rms_dbfs: float
    noise_floor_dbfs: float
    dc_offset: float  # mean, in full-scale units (−1 … 1)
    dc_offset_dbfs: float
    clipped: int  # clipped samples
    verdict: str


class LevelMeter:
    """Streaming per-channel level statistics; `add` blocks of (frames, channels), then `levels()`."""

    def __init__(self, channels: int, samplerate: float) -> None:
        self.channels = channels
        self.frames = 0
        self._peak = np.zeros(channels)
        self._sum = np.zeros(channels)
        self._sumsq = np.zeros(channels)
        self._clip = np.zeros(channels, dtype=np.int64)
        self._window = max(1, int(round(NOISE_WINDOW_S * samplerate)))
        self._win_sumsq = np.zeros(channels)  # the window still being filled
        self._win_fill = 0
        self._hist = np.zeros((channels, _HIST_BINS), dtype=np.int64)
        # flat-top runs may span blocks: the last sample and whether it continued a run
        self._last = np.full(channels, np.nan)
        self._last_in_run = np.zeros(channels, dtype=bool)

    def add(self, block: np.ndarray) -> None:
        block = np.asarray(block)
        if block.ndim == 1:
            block = block[:, None]
        if block.shape[1] != self.channels:
            raise ValueError(f"block has {block.shape[1]} channels, expected {self.channels}")
        n = block.shape[0]
        if n == 0:
            return
        x = block.astype(np.float64) / full_scale(block)
        a = np.abs(x)
        self._peak = np.maximum(self._peak, a.max(axis=0))
        self._sum += x.sum(axis=0)
        sq = x * x
        self._sumsq += sq.sum(axis=0)
        self._clip += self._clipped(x, a)
        self._add_windows(sq)
        self.frames += n

    def _clipped(self, x: np.ndarray, a: np.ndarray) -> np.ndarray:
        over = (a >= CLIP_LEVEL).sum(axis=0)
        # flat tops below CLIP_LEVEL (those above are already counted): samples equal to their predecessor
        flat = (a >= FLAT_LEVEL) & (a < CLIP_LEVEL)
        prev = np.vstack([self._last[None, :], x[:-1]])
        cont = flat & (x == prev)  # continues a run (NaN never compares equal)
        cont_prev = np.vstack([self._last_in_run[None, :], cont[:-1]])
        starts = cont & ~cont_prev  # a new run: its first sample counts too
        self._last = x[-1].copy()
        self._last_in_run = cont[-1].copy()
        return over + cont.sum(axis=0) + starts.sum(axis=0)

    def _add_windows(self, sq: np.ndarray) -> None:
        w, i, n = self._window, 0, sq.shape[0]
        if self._win_fill:  # complete the window left open by the previous block
            take = min(w - self._win_fill, n)
            self._win_sumsq += sq[:take].sum(axis=0)
            self._win_fill += take
            i = take
            if self._win_fill == w:
                self._count_windows((self._win_sumsq / w)[None, :])
                self._win_sumsq[:] = 0
                self._win_fill = 0
        full = (n - i) // w
        if full:
            self._count_windows(sq[i : i + full * w].reshape(full, w, self.channels).mean(axis=1))
            i += full * w
        if i < n:
            self._win_sumsq += sq[i:].sum(axis=0)
            self._win_fill += n - i

    def _count_windows(self, mean_square: np.ndarray) -> None:
        """Add (windows, channels) mean squares to the level histograms; silence goes to bin 0."""
        with np.errstate(divide="ignore"):
            db = 10.0 * np.log10(mean_square)
        idx = np.clip(np.floor((db - _HIST_LO_DBFS) / _HIST_STEP_DB), 0, _HIST_BINS - 1)
        idx = np.where(np.isfinite(db), idx, 0).astype(np.int64)
        np.add.at(self._hist, (np.broadcast_to(np.arange(self.channels), idx.shape), idx), 1)

    def _noise_floor(self, c: int, rms: float) -> float:
        h = self._hist[c]
        total = int(h.sum())
        if total == 0:  # shorter than one window
            return _dbfs(rms)
        k = int(np.searchsorted(np.cumsum(h), math.ceil(total * NOISE_PERCENTILE / 100.0)))
        if k == 0:  # that many windows are digital silence (or below -200 dBFS)
            return -math.inf
        return _HIST_LO_DBFS + (k + 0.5) * _HIST_STEP_DB

    def levels(self) -> list[ChannelLevel]:
        out = []
        for c in range(self.channels):
            n = max(self.frames, 1)
            rms = math.sqrt(self._sumsq[c] / n)
            dc = float(self._sum[c] / n)
            peak = float(self._peak[c])
            floor = self._noise_floor(c, rms)
            out.append(
                ChannelLevel(
                    channel=c + 1,
                    frames=self.frames,
                    peak_dbfs=_dbfs(peak),
                    rms_dbfs=_dbfs(rms),
                    noise_floor_dbfs=floor,
                    dc_offset=dc,
                    dc_offset_dbfs=_dbfs(abs(dc)),
                    clipped=int(self._clip[c]),
                    verdict=verdict(_dbfs(peak), floor, int(self._clip[c])),
                )
            )
        return out


def verdict(peak_dbfs: float, noise_floor_dbfs: float, clipped: int) -> str:
    if peak_dbfs == -math.inf or (noise_floor_dbfs < DEAD_FLOOR_DBFS and peak_dbfs < DEAD_PEAK_DBFS):
        return "dead"
    if clipped:
        return "clipping"
    if peak_dbfs > HOT_PEAK_DBFS:
        return "too hot"
    if peak_dbfs < QUIET_PEAK_DBFS:
        return "too quiet"
    return "good"


def measure_levels_from_blocks(
    blocks: Iterable[np.ndarray], samplerate: float, channels: int | None = None
) -> list[ChannelLevel]:
    """Levels of a stream of (frames, channels) blocks (int full-scale or float)."""
    meter: LevelMeter | None = LevelMeter(channels, samplerate) if channels else None
    for block in blocks:
        block = np.asarray(block)
        if meter is None:
            meter = LevelMeter(1 if block.ndim == 1 else block.shape[1], samplerate)
        meter.add(block)
    if meter is None or meter.frames == 0:
        raise ValueError("no audio to measure")
    return meter.levels()


def measure_levels(device: Device, seconds: float, *, stall_s: float = 5.0) -> list[ChannelLevel]:
    """Levels of `seconds` of audio from an opened and started improvcap audio device.

    PulseAudio sources hand over audio in bursts seconds apart, so the device may be silent for a while;
    `stall_s` without any block is a DeviceError.
    """
    info = device.describe()
    samplerate = float(info.get("samplerate") or device.spec["samplerate"])
    channels = int(info.get("channels") or device.spec["channels"])
    want = max(1, int(round(seconds * samplerate)))
    meter = LevelMeter(channels, samplerate)
    last = time.monotonic()
    while meter.frames < want:
        sample = device.read(0.2)
        now = time.monotonic()
        if sample is None:
            if now - last > stall_s:
                raise DeviceError(
                    f"{device.spec.name}: no audio from {info.get('device', '?')!r} "
                    f"for {stall_s:g} s ({meter.frames} of {want} samples measured)"
                )
            continue
        last = now
        meter.add(sample.payload.data[: want - meter.frames])
    return meter.levels()


def _db_or_none(x: float, digits: int = 3) -> float | None:
    return round(x, digits) if math.isfinite(x) else None


def levels_report(levels: list[ChannelLevel], loopback: dict[str, Any] | None = None) -> dict[str, Any]:
    """JSON-serialisable result: dBFS of digital silence (−∞) become None."""
    channels = []
    for lv in levels:
        d = asdict(lv)
        for k in ("peak_dbfs", "rms_dbfs", "noise_floor_dbfs", "dc_offset_dbfs"):
            d[k] = _db_or_none(d[k])
        d["dc_offset"] = float(f"{lv.dc_offset:.6g}")
        channels.append(d)
    return {
        "channels": channels,
        "thresholds": {
            "clip_level": CLIP_LEVEL,
            "flat_level": FLAT_LEVEL,
            "dead_floor_dbfs": DEAD_FLOOR_DBFS,
            "dead_peak_dbfs": DEAD_PEAK_DBFS,
            "quiet_peak_dbfs": QUIET_PEAK_DBFS,
            "hot_peak_dbfs": HOT_PEAK_DBFS,
            "noise_window_s": NOISE_WINDOW_S,
            "noise_percentile": NOISE_PERCENTILE,
        },
        "loopback": loopback,
    }


# --- loopback latency ---------------------------------------------------------------------------
CHIRP_S = 0.5
CHIRP_HZ = (200.0, 8000.0)
CHIRP_LEVEL = 0.5  # −6 dBFS peak
MIN_PSR_DB = 10.0  # a chirp is found when its correlation peak stands this far above the rest
SIDELOBE_GUARD_S = 0.002  # the main lobe of the Hann-windowed sweep's autocorrelation, left out of the PSR
SETTLE_S = 0.3  # both streams' time/sample relations must hold this long before the first chirp
SETTLE_TOLERANCE_S = 0.010  # stream times through PulseAudio wander a few ms; start-up errors are 100s of ms
SETTLE_TIMEOUT_S = 5.0  # then chirp anyway: the neighbourhood medians below absorb jitter
TIME_NEIGHBOURS = 5  # callbacks each side whose stream times are pooled (median) for one instant
START_LEAD_S = 0.1  # first chirp this long after the streams have settled


def chirp(
    samplerate: float,
    seconds: float = CHIRP_S,
    f0: float = CHIRP_HZ[0],
    f1: float = CHIRP_HZ[1],
    level: float = CHIRP_LEVEL,
) -> np.ndarray:
    """A Hann-windowed logarithmic sweep: its autocorrelation has one narrow peak and low sidelobes."""
    t = np.arange(int(round(seconds * samplerate))) / samplerate
    k = math.log(f1 / f0)
    sweep = np.sin(2 * np.pi * f0 * seconds / k * np.expm1(t * k / seconds))
    return (level * np.hanning(len(t)) * sweep).astype(np.float32)


@dataclass(frozen=True)
class ChirpMatch:
    onset: float  # sample index (sub-sample) in the searched signal where the chirp starts
    psr_db: float  # correlation peak over the highest value outside the main lobe
    gain_db: float  # level of the chirp heard relative to the chirp played
    inverted: bool  # heard with inverted polarity
    channel: int  # from 1; the channel where it stood out most


def find_chirp(signal: np.ndarray, reference: np.ndarray, samplerate: float) -> ChirpMatch:
    """Where `reference` starts in `signal` (frames, channels), by FFT cross-correlation per channel."""
    x = np.asarray(signal, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    r = np.asarray(reference, dtype=np.float64)
    lags = x.shape[0] - len(r) + 1
    if lags < 1:
        raise ValueError("signal shorter than the reference")
    n = 1 << int(math.ceil(math.log2(x.shape[0] + len(r))))
    spec_r = np.conj(np.fft.rfft(r, n))
    guard = max(1, int(round(SIDELOBE_GUARD_S * samplerate)))
    best: ChirpMatch | None = None
    for c in range(x.shape[1]):
        corr = np.fft.irfft(np.fft.rfft(x[:, c], n) * spec_r, n)[:lags]
        mag = np.abs(corr)
        k = int(np.argmax(mag))
        side = np.concatenate([mag[: max(0, k - guard)], mag[k + guard + 1 :]])
        peak = float(mag[k])
        if peak == 0:  # digital silence: nothing heard
            psr = -math.inf
        elif side.size and side.max() > 0:
            psr = _dbfs(peak / float(side.max()))
        else:
            psr = math.inf
        frac = 0.0
        if 0 < k < lags - 1:  # parabolic interpolation of the peak
            a, b, d = mag[k - 1], mag[k], mag[k + 1]
            den = a - 2 * b + d
            frac = float(0.5 * (a - d) / den) if den else 0.0
        match = ChirpMatch(
            onset=k + frac,
            psr_db=psr,
            gain_db=_dbfs(peak / float(np.dot(r, r))),
            inverted=bool(corr[k] < 0),
            channel=c + 1,
        )
        if best is None or match.psr_db > best.psr_db:
            best = match
    assert best is not None
    return best


def _stream_time_ns(marks: list[tuple[int, int]], samplerate: float, index: float) -> float:
    """Stream time of sample `index`, from the (first sample, stream time ns) of the callbacks around it."""
    firsts = np.array([m[0] for m in marks])
    j = int(np.clip(np.searchsorted(firsts, index, side="right") - 1, 0, len(marks) - 1))
    near = marks[max(0, j - TIME_NEIGHBOURS) : j + TIME_NEIGHBOURS + 1]
    base = statistics.median(t - i * 1e9 / samplerate for i, t in near)
    return base + index * 1e9 / samplerate


def _index_at(marks: list[tuple[int, int]], samplerate: float, t_ns: float) -> float:
    """Sample index captured at stream time `t_ns` (inverse of _stream_time_ns)."""
    times = np.array([m[1] for m in marks])
    j = int(np.clip(np.searchsorted(times, t_ns, side="right") - 1, 0, len(marks) - 1))
    near = marks[max(0, j - TIME_NEIGHBOURS) : j + TIME_NEIGHBOURS + 1]
    base = statistics.median(t - i * 1e9 / samplerate for i, t in near)
    return (t_ns - base) * samplerate / 1e9


def _settled(marks: list[tuple[int, int]], samplerate: float) -> bool:
    """The last SETTLE_S of callbacks agree on how stream time follows the sample count."""
    if not marks:
        return False
    last = marks[-1][0]
    span = int(SETTLE_S * samplerate)
    recent = [(i, t) for i, t in marks[-2000:] if i >= last - span]
    if not recent or last - recent[0][0] < span * 0.9 or recent[0] == marks[0]:
        return False
    offsets = [t - i * 1e9 / samplerate for i, t in recent]
    return max(offsets) - min(offsets) <= SETTLE_TOLERANCE_S * 1e9


class _ChirpPlayer:
    """A PortAudio output playing silence, and the chirp from the first callback whose DAC time reaches
    each scheduled stream time. Every callback's (first frame, DAC time) is kept for the time mapping."""

    def __init__(self, output: str | int, samplerate: int, reference: np.ndarray) -> None:
        import sounddevice as sd

        self.output = output
        self.samplerate = samplerate
        self.reference = reference
        self.marks: list[tuple[int, int]] = []  # (first frame, outputBufferDacTime in ns)
        self.starts: list[tuple[int, int]] = []  # (first frame, DAC time ns) of each chirp played
        self.underflows = 0
        self._frames = 0
        self._pending: list[float] = []
        self._playing: int | None = None
        try:
            info = sd.query_devices(output, "output")
            self.stream = sd.OutputStream(
                device=output,
                channels=min(2, int(info["max_output_channels"])),
                samplerate=samplerate,
                dtype="float32",
                callback=self._callback,
            )
        except (sd.PortAudioError, ValueError, TypeError) as e:
            raise DeviceError(f"loopback: cannot open audio output {output!r}: {' '.join(str(e).split())}") from None
        self.device_name = str(sd.query_devices(self.stream.device)["name"])

    def _callback(self, outdata: np.ndarray, frames: int, t: Any, status: Any) -> None:
        # Real-time thread: no allocation beyond a tuple, no locks.
        outdata.fill(0)
        first = self._frames
        self._frames = first + frames
        dac_ns = round(t.outputBufferDacTime * 1e9)
        self.marks.append((first, dac_ns))
        if status and status.output_underflow:
            self.underflows += 1
        if self._playing is None and self._pending and dac_ns >= self._pending[0]:
            self._pending.pop(0)
            self._playing = first
            self.starts.append((first, dac_ns))
        if self._playing is not None:
            part = self.reference[first - self._playing : first - self._playing + frames]
            outdata[: len(part)] = part[:, None]
            if first + frames - self._playing >= len(self.reference):
                self._playing = None

    def schedule(self, times_ns: list[float]) -> None:
        self._pending = list(times_ns)

    def start(self) -> None:
        try:
            self.stream.start()
        except Exception as e:
            raise DeviceError(f"loopback: cannot start audio output {self.output!r}: {e}") from None

    def close(self) -> None:
        self.stream.abort(ignore_errors=True)
        self.stream.close(ignore_errors=True)


def _input_spec(source: StreamSpec | str | int, samplerate: int | None) -> StreamSpec:
    if isinstance(source, StreamSpec):
        if source.kind != "audio" or source.driver != "portaudio":
            raise DeviceError(
                f"{source.name}: a loopback needs a PortAudio input, not a {source.driver} {source.kind} stream"
            )
        if samplerate and samplerate != source["samplerate"]:
            return StreamSpec(source.kind, source.name, source.driver, {**source.settings, "samplerate": samplerate})
        return source
    return StreamSpec(
        "audio",
        "loopback",
        "portaudio",
        {
            "device": source,
            "channels": 1,
            "samplerate": samplerate or 48000,
            "blocksize": 0,
            "sample_format": "f32",
            "latency_ms": 0.0,
            "queue": 0,
        },
    )


def loopback_latency(
    source: StreamSpec | str | int,
    output: str | int,
    *,
    samplerate: int | None = None,
    repeats: int = 3,
    interval_s: float = 1.0,
    min_psr_db: float = MIN_PSR_DB,
) -> dict[str, Any]:
    """Input–output latency: play a chirp `repeats` times on PortAudio output `output` and find it in the
    PortAudio input `source` (a rig stream, or a device name/index recorded in mono).

    Latency = ADC time of the sample where the chirp starts − DAC time of the chirp's first sample, both on
    the PortAudio stream clock. Chirps come `interval_s` apart; each is searched from 0.3 to 0.6 of that
    interval around where zero latency would put it. DeviceError when the output cannot be opened or the
    chirp is not heard in most repeats.
    """
    from ..devices.audio_portaudio import PortAudioInput

    spec = _input_spec(source, samplerate)
    sr = int(spec["samplerate"])
    reference = chirp(sr)
    try:
        player = _ChirpPlayer(output, sr, reference)
    except OSError as e:  # libportaudio missing
        raise DeviceError(f"loopback: cannot open audio output {output!r}: {e}") from None
    device = PortAudioInput(spec)
    blocks: list[tuple[int, np.ndarray]] = []
    marks: list[tuple[int, int]] = []  # input (first frame, inputBufferAdcTime ns)
    before, after = 0.3 * interval_s, 0.6 * interval_s
    try:
        device.open()  # before the output starts: a bad input fails without any sound played
        player.start()
        # The input starts once the output runs steadily: a PulseAudio monitor source started earlier
        # reports ADC times a few hundred ms off until its sink begins to play.
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while not _settled(player.marks, sr) and time.monotonic() < deadline:
            time.sleep(0.02)
        device.start()
        deadline = time.monotonic() + SETTLE_TIMEOUT_S + repeats * interval_s + 5.0
        settle_by = time.monotonic() + SETTLE_TIMEOUT_S
        scheduled = False
        end_ns: float | None = None
        while time.monotonic() < deadline:
            sample = device.read(0.05)
            if sample is not None:
                if sample.payload.adc_ns is None:
                    raise DeviceError(f"{spec.name}: audio input {spec['device']!r} gives no ADC times")
                first = round(sample.device_ns * sr / 1e9)
                data = sample.payload.data
                blocks.append((first, (data / full_scale(data)).astype(np.float32)))
                marks.append((first, sample.payload.adc_ns))
            if not scheduled:
                if _settled(marks, sr) or time.monotonic() > settle_by:
                    t0 = (player.stream.time + player.stream.latency + START_LEAD_S) * 1e9
                    player.schedule([t0 + r * interval_s * 1e9 for r in range(repeats)])
                    scheduled = True
            elif end_ns is None and len(player.starts) == repeats:
                end_ns = player.starts[-1][1] + (after + CHIRP_S + 0.05) * 1e9
            if end_ns is not None and marks and marks[-1][1] >= end_ns:
                break
        else:
            raise DeviceError(
                f"loopback: {len(player.starts)} of {repeats} chirps played on {player.device_name!r} "
                f"and {sum(len(b) for _, b in blocks)} samples recorded from {spec['device']!r} "
                f"before the time limit"
            )
        input_info = device.describe()
        stats = device.stats()
        output_latency_s = float(player.stream.latency)
    finally:
        device.stop()
        device.close()
        player.close()

    total = blocks[-1][0] + len(blocks[-1][1])
    recorded = np.zeros((total, blocks[0][1].shape[1]), dtype=np.float32)
    for first, data in blocks:  # a block lost on the way leaves zeros, not a shift
        recorded[first : first + len(data)] = data
    results: list[dict[str, Any]] = []
    for out_first, _ in player.starts:
        t_out = _stream_time_ns(player.marks, sr, out_first)
        zero = _index_at(marks, sr, t_out)  # where the chirp would start with zero latency
        lo = max(0, int(zero - before * sr))
        hi = min(total, int(zero + after * sr) + len(reference))
        if hi - lo < len(reference):
            results.append(
                {"found": False, "latency_ms": None, "psr_db": None, "gain_db": None, "inverted": None, "channel": None}
            )
            continue
        m = find_chirp(recorded[lo:hi], reference, sr)
        latency_ms = (_stream_time_ns(marks, sr, lo + m.onset) - t_out) / 1e6
        found = m.psr_db >= min_psr_db
        results.append(
            {
                "found": found,
                "latency_ms": round(latency_ms, 3),
                "psr_db": _db_or_none(m.psr_db, 2),
                "gain_db": _db_or_none(m.gain_db, 2),
                "inverted": m.inverted,
                "channel": m.channel,
            }
        )
    good = [r for r in results if r["found"]]
    if len(good) * 2 <= repeats:
        best = max((r["psr_db"] for r in results if r["psr_db"] is not None), default=None)
        best_txt = f"best peak-to-sidelobe ratio {best:.1f} dB" if best is not None else "silence"
        raise DeviceError(
            f"loopback: chirp played on output {player.device_name!r} not found in input "
            f"{input_info.get('device', spec['device'])!r} in {repeats - len(good)} of {repeats} "
            f"tries ({best_txt}, {min_psr_db:g} dB needed): is the output looped back to the input?"
        )
    latencies = [r["latency_ms"] for r in good]
    return {
        "input": {
            "stream": spec.name,
            "device": input_info.get("device"),
            "channels": input_info.get("channels"),
            "latency_ms": round(1e3 * input_info.get("latency_s", 0.0), 3),
            "overflows": stats.get("input_overflows", 0) + stats.get("buffer_overflows", 0),
        },
        "output": {
            "device": player.device_name,
            "requested": output,
            "latency_ms": round(1e3 * output_latency_s, 3),
            "underflows": player.underflows,
        },
        "samplerate": sr,
        "chirp": {
            "seconds": CHIRP_S,
            "f0_hz": CHIRP_HZ[0],
            "f1_hz": CHIRP_HZ[1],
            "level_dbfs": round(_dbfs(CHIRP_LEVEL), 2),
        },
        "latency_ms": round(statistics.median(latencies), 3),
        "spread_ms": round(max(latencies) - min(latencies), 3),
        "min_psr_db": min((r["psr_db"] for r in good if r["psr_db"] is not None), default=None),
        "found": len(good),
        "repeats": results,
    }

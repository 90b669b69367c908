"""Where a file recorded elsewhere lies on a take's shared clock: t_ns = offset + own time × (1 + drift).

Four ways, each from what both sides hold: the file's embedded start timecode against the take's
(`timecode`: both jam-synced to one master), LTC on one of its audio channels (`ltc`), the take's slates
found in it (`slates`: flashes in a video, beeps in a WAV), or its sound against one of the take's audio
streams (`audio`, cross-correlation). Each gives the points it rests on and what is left of them once the
line is through them (residuals); an alignment that two answers would fit equally is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import numpy as np

from ..errors import AlignmentError, UsageError
from ..ltc import LtcDecoder
from ..slates import detect_audio, detect_video
from ..take.events import read_slates
from ..take.layout import EVENTS, stream_media
from ..take.reader import Take
from ..take.tables import stream_table
from ..take.timecode import TimecodeRate, take_ns_of_day, take_rate
from ..take.timeline import AudioTimeline
from ..take.wav import read_wav
from ..writers.ltc_table import ltc_summary
from .source import Source, audio_pieces, audio_windows

METHODS = ("timecode", "ltc", "slates", "audio")
SLATE_MATCH_NS = 40_000_000  # a slate and an onset this close under one offset are the same event
CANDIDATES = 5  # correlation peaks judged at the full rate
MIN_COHERENCE = 0.3  # a window correlated less than this is not the same sound
AMBIGUOUS_RESIDUAL = 2.0  # a runner-up leaving less than twice the best's unexplained part: two answers
COARSE_RATE = 8000  # Hz: the whole files correlated at this rate first (whitened) ...
COARSE_MAX = 1 << 22  # ... or lower, to keep both within this many samples (64 MB a spectrum)
FINE_WINDOW_S = 0.5  # ... then windows this long at the full rate around that lag
FINE_WINDOWS = 9
FINE_SLACK_S = 0.02  # searched either side of the coarse lag, plus the largest drift
MAX_DRIFT_PPM = 500.0  # the largest drift searched for
MAX_DRIFT_ERROR_PPM = 20.0  # drift is fitted only where the points measure it this well
PEAK_SEPARATION_S = 0.02  # peaks closer than this to the best are the best's own


@dataclass
class Alignment:
    """The line from the file's own time to the take's: t_ns = offset_ns + file_ns × (1 + drift_ppm 1e-6)."""

    method: str
    offset_ns: float
    drift_ppm: float = 0.0
    points: list[tuple[float, float]] = field(default_factory=list)  # (file ns, take ns) it rests on
    detail: str = ""
    uncertainty_ns: float = 0.0  # how far the file may lie from where it is put: its points' resolution

    def t_ns(self, file_ns: np.ndarray | float) -> np.ndarray:
        return np.rint(self.offset_ns + np.asarray(file_ns, np.float64) * (1 + self.drift_ppm * 1e-6)).astype(np.int64)

    def residuals_ns(self) -> list[float]:
        return [round(float(t - self.t_ns(f)), 1) for f, t in self.points]

    def record(self) -> dict[str, Any]:
        res = self.residuals_ns()
        return {
            "method": self.method,
            "offset_ns": int(round(self.offset_ns)),
            "drift_ppm": round(self.drift_ppm, 4),
            "points": len(self.points),
            "residuals_ns": res[:100],
            "residual_max_ns": max((abs(r) for r in res), default=None),
            "uncertainty_ns": round(self.uncertainty_ns, 1),
            "detail": self.detail,
        }


def fitted(method: str, points: list[tuple[float, float]], detail: str, resolution_ns: float) -> Alignment:
    """The line through `points`, each known to about `resolution_ns`: the offset alone (their median) from
    one point, or where they lie too close together to measure drift to MAX_DRIFT_ERROR_PPM."""
    f = np.asarray([p[0] for p in points], np.float64)
    t = np.asarray([p[1] for p in points], np.float64)
    span = float(np.ptp(f)) if len(points) else 0.0
    if len(points) >= 2 and span > 0 and resolution_ns / span * 1e6 <= MAX_DRIFT_ERROR_PPM:
        slope, intercept = np.polyfit(f, t - f, 1)  # fitted as t - f: the slope is the drift itself
        return Alignment(method, float(intercept), float(slope * 1e6), points, detail, resolution_ns / 2)
    if len(points) >= 2:
        detail += (
            f"; drift not fitted (points {span / 1e9:.1f} s apart, each to {resolution_ns / 1e6:.3g} ms, "
            f"measure it to ±{resolution_ns / span * 1e6:.0f} ppm only)"
        )
    return Alignment(method, float(np.median(t - f)), 0.0, points, detail, resolution_ns / 2)


def by_hand(offset_ms: float) -> Alignment:
    return Alignment("offset", offset_ms * 1e6, 0.0, [], "--offset-ms")


# --- the take's time of day -------------------------------------------------------------------------


def _jammed(manifest: dict[str, Any]) -> str:
    source = manifest.get("timecode_source")
    return f"the take's timecode from {source}" if source else "the take's timecode (this PC's clock at t0)"


# --- embedded timecode ------------------------------------------------------------------------------


def by_timecode(take: Take, src: Source) -> Alignment:
    m = take.manifest
    if src.kind == "camera":
        if src.timecode is None:
            raise AlignmentError(f"{src.path.name}: no embedded timecode (no tmcd track or timecode tag)")
        rate = TimecodeRate.of(src.rate)
        rate = TimecodeRate(rate.rate, rate.drop and ";" in src.timecode)  # 29.97 labels drop frames if they say so
        try:
            start = Fraction(rate.frame_number(src.timecode), 1) / rate.rate
        except Exception as e:  # noqa: BLE001 - a label this rate cannot have
            raise AlignmentError(f"{src.path.name}: timecode {src.timecode!r}: {e}") from None
        label = f"start timecode {src.timecode} at {rate.label()}"
        resolution = 1e9 / float(rate.rate)  # a label names a whole frame
    else:
        if src.time_reference is None:
            raise AlignmentError(f"{src.path.name}: no embedded timecode (no bext time_reference)")
        start = Fraction(src.time_reference, int(src.rate))
        label = f"time_reference {src.time_reference} samples at {int(src.rate)} Hz"
        resolution = 1e9 / float(src.rate)
    t = float(take_ns_of_day(m, np.asarray([float(start)]))[0])
    return fitted("timecode", [(0.0, t)], f"{label}, against {_jammed(m)}", resolution)


# --- LTC --------------------------------------------------------------------------------------------


def ltc_frames(src: Source, rate: TimecodeRate, channel: int | None) -> tuple[int, list[tuple[int, str]]]:
    """(channel, [(sample, label)]) of the file's channel carrying the most LTC (or `channel`, from 1)."""
    if src.audio_rate is None:
        raise AlignmentError(f"{src.path.name}: no audio to read LTC from")
    channels = [channel] if channel is not None else list(range(1, src.audio_channels + 1))
    if channel is not None and not 1 <= channel <= src.audio_channels:
        raise UsageError(f"--channel {channel}: {src.path.name} has {src.audio_channels} channels")
    decoders = {c: LtcDecoder(float(src.audio_rate), rate) for c in channels}
    found: dict[int, list[tuple[int, str]]] = {c: [] for c in channels}
    try:
        for at, data in audio_pieces(src):
            for c, d in decoders.items():
                found[c] += [(f.sample, f.timecode) for f in d.write(data[:, c - 1], at) if not f.reverse]
    finally:
        for d in decoders.values():
            d.close()
    best = max(found, key=lambda c: len(found[c]))
    return best, found[best]


def by_ltc(take: Take, src: Source, channel: int | None) -> Alignment:
    m = take.manifest
    rate = take_rate(m)
    ch, frames = ltc_frames(src, rate, channel)
    audio_rate = cast(int, src.audio_rate)  # ltc_frames refused a file with no audio
    if len(frames) < 2:
        raise AlignmentError(
            f"{src.path.name}: no LTC at {rate.label()} on "
            + (f"channel {channel}" if channel else f"any of its {src.audio_channels} channels")
        )
    seconds = np.asarray([rate.frame_number(label) for _, label in frames], np.float64) / float(rate.rate)
    t = take_ns_of_day(m, seconds)
    file_ns = [src.audio_start_ns + s * 1e9 / audio_rate for s, _ in frames]
    points = list(zip(file_ns, t.tolist()))
    # a jump in the file's LTC (a restarted generator), as verify counts them in a take's: not one line
    continuity = ltc_summary(rate, [round(f) for f in file_ns], [label for _, label in frames])
    if continuity["jumps"]:
        raise AlignmentError(
            f"{src.path.name}: its LTC jumps {continuity['jumps']} time(s) (first at "
            f"{continuity['first_jumps'][0]}): align it by hand with --offset-ms"
        )
    return fitted(
        "ltc",
        points,
        f"{len(frames)} LTC frames on channel {ch} ({frames[0][1]} … {frames[-1][1]}), against {_jammed(m)}",
        2e9 / audio_rate,
    )


# --- slates -----------------------------------------------------------------------------------------


def file_onsets(src: Source) -> list[float]:
    """Slate onsets in the file, in its own ns: flashes (the middle of the frame before and the one that
    shows it: a flash lies between them) in a video, beeps (to the sample) in a WAV."""
    if src.kind == "camera":
        assert src.file_ns is not None and src.pts is not None
        rows = {"index": np.arange(src.count), "t_ns": src.file_ns, "pts": src.pts}
        half = 0.5e9 / float(src.rate)
        return [o.t_ns - half for o in detect_video(src.path, src.path, table=rows)]
    blocks = {
        "first_sample": np.zeros(1, np.int64),
        "t_ns": np.zeros(1, np.int64),
        "frames": np.asarray([src.count], np.int64),
    }
    return [o.index * 1e9 / float(src.rate) for o in detect_audio(src.path, src.path, float(src.rate), table=blocks)]


def by_slates(take: Take, src: Source) -> Alignment:
    events = take.path / EVENTS
    slates = [float(s) for s in read_slates(events)] if events.is_file() else []
    if not slates:
        raise AlignmentError(f"{take.path.name}: the take has no slates to find in {src.path.name}")
    onsets = file_onsets(src)
    what = "flash" if src.kind == "camera" else "beep"
    if not onsets:
        raise AlignmentError(f"{src.path.name}: no slate found (no {what}) for the take's {len(slates)} slates")

    # every pairing of a slate and an onset proposes an offset; its support is the slates it then matches
    def matched(c: float) -> dict[float, float]:
        out: dict[float, float] = {}
        for s in slates:
            near = [o for o in onsets if abs(o + c - s) <= SLATE_MATCH_NS]
            if near:
                out[s] = min(near, key=lambda o: abs(o + c - s))
        return out

    proposals = sorted({s - o for s in slates for o in onsets})
    support = {c: len(matched(c)) for c in proposals}
    most = max(support.values())
    best = min(
        (c for c in proposals if support[c] == most),
        key=lambda c: -sum(1 for d in proposals if abs(d - c) <= SLATE_MATCH_NS),
    )  # the proposal most others agree with
    rivals = sorted({round(c / 1e9, 3) for c in proposals if support[c] == most and abs(c - best) > SLATE_MATCH_NS})
    if rivals:
        plural = "es" if what == "flash" else "s"
        raise AlignmentError(
            f"{src.path.name}: ambiguous: {len(onsets)} {what}{plural} at "
            f"{', '.join(f'{o / 1e9:.3f}' for o in onsets[:6])} s for {len(slates)} slate{'s' * (len(slates) > 1)}; "
            f"offsets {', '.join(f'{o:+.3f}' for o in sorted({round(best / 1e9, 3), *rivals})[:6])} s fit as well: "
            "pick one with --offset-ms"
        )
    points = sorted((o, s) for s, o in matched(best).items())
    found = "flashes" if what == "flash" else "beeps"
    resolution = 1e9 / float(src.rate) if src.kind == "camera" else 2e9 / float(src.rate)
    return fitted("slates", points, f"{len(points)} of the take's {len(slates)} slates found as {found}", resolution)


# --- audio cross-correlation ------------------------------------------------------------------------


def _mono(x: np.ndarray) -> np.ndarray:
    return x.mean(axis=1, dtype=np.float64) if x.ndim == 2 else x.astype(np.float64)


def _decimated(pieces: Any, q: int) -> np.ndarray:
    """The mono mix averaged over blocks of q samples (a crude low-pass, enough to find the lag)."""
    out, rest = [], np.zeros(0)
    for _, data in pieces:
        x = np.concatenate([rest, _mono(data)])
        n = len(x) // q * q
        out.append(x[:n].reshape(-1, q).mean(axis=1))
        rest = x[n:]
    return np.concatenate(out) if out else np.zeros(0)


def _xcorr(a: np.ndarray, b: np.ndarray, whiten: bool = False) -> np.ndarray:
    """c[k] = Σ a[n] b[n + k - (len(a) - 1)]: k = len(a) - 1 is no lag. `whiten`: every frequency weighted
    alike (GCC-PHAT), so that tones and hum, which repeat, do not outweigh what happens only once."""
    n = len(a) + len(b) - 1
    size = 1 << (n - 1).bit_length()
    spectrum = np.fft.rfft(a[::-1], size) * np.fft.rfft(b, size)
    if whiten:
        spectrum /= np.abs(spectrum) + 1e-12
    return np.fft.irfft(spectrum, size)[:n]


def _peak(c: np.ndarray, i: int) -> float:
    """The peak at i to a fraction of a sample (a parabola through it and its neighbours)."""
    if 0 < i < len(c) - 1:
        y0, y1, y2 = c[i - 1], c[i], c[i + 1]
        d = y0 - 2 * y1 + y2
        return i + (0.5 * (y0 - y2) / d if d else 0.0)
    return float(i)


@dataclass
class _Sound:
    """The take's audio stream a file is correlated with: its WAV, timeline and rate."""

    name: str
    wav: Path
    timeline: AudioTimeline
    rate: int

    def window(self, a: int, n: int) -> tuple[int, np.ndarray]:
        a = max(0, a)
        return a, _mono(read_wav(self.wav, a, max(0, min(n, self.timeline.total - a))))


def _coarse_lags(src: Source, ref: _Sound, length: int) -> list[int]:
    """Take samples at the file's first, best first: the highest peaks of a whitened correlation of both
    whole files at about COARSE_RATE."""
    q = max(1, ref.rate // COARSE_RATE, -(-(length + ref.timeline.total) // COARSE_MAX))
    theirs = _decimated((ref.window(a, 1 << 16) for a in range(0, ref.timeline.total, 1 << 16)), q)
    mine = _decimated(audio_pieces(src), q)
    if len(mine) < 16 or len(theirs) < 16:
        raise AlignmentError(f"{src.path.name}: too little audio to correlate")
    c = _xcorr(mine - mine.mean(), theirs - theirs.mean(), whiten=True)
    guard = max(3, int(PEAK_SEPARATION_S * ref.rate / q))
    lags = []
    for _ in range(CANDIDATES):
        i = int(np.argmax(c))
        if not np.isfinite(c[i]) or c[i] <= 0:
            break
        lags.append((i - (len(mine) - 1)) * q)
        c[max(0, i - guard) : i + guard + 1] = -np.inf
    return lags


def _fine(x: np.ndarray, ref: _Sound, at: int, slack: int) -> tuple[float, float] | None:
    """(take sample at x's first, to a fraction; the correlation coefficient there) for a window x of the
    file expected near take sample `at`."""
    r0, r = ref.window(at - slack, len(x) + 2 * slack)
    if len(r) < len(x) or len(x) < 2:
        return None
    cc = _xcorr(x - x.mean(), r - r.mean())[len(x) - 1 : len(r)]  # lags 0 … len(r) - len(x)
    k = int(np.argmax(cc))
    seg = r[k : k + len(x)]
    norm = float(np.linalg.norm(x - x.mean()) * np.linalg.norm(seg - seg.mean()))
    return r0 + _peak(cc, k), (float(cc[k]) / norm if norm else 0.0)


def by_audio(take: Take, src: Source, against: str | None) -> Alignment:
    audio = [n for n, s in take.streams.items() if s.kind == "audio"]
    name = against or next((n for n in audio if take.streams[n].samplerate == src.audio_rate), None)
    if name is None or name not in audio:
        raise UsageError(
            f"--against {against}: not an audio stream of the take ({', '.join(audio) or 'none'})"
            if against
            else f"{take.path.name}: no audio stream at {src.audio_rate} Hz to correlate with"
        )
    rate = int(take.streams[name].samplerate or 0)
    if src.audio_rate != rate:
        raise UsageError(f"{src.path.name}: {src.audio_rate} Hz against {name}'s {rate} Hz: correlation needs one rate")
    ref = _Sound(
        name,
        take.path / stream_media(name, "audio", take.manifest["streams"].get(name)),
        AudioTimeline.from_blocks(stream_table(take.path, name, "audio", time_only=True), float(rate)),
        rate,
    )
    length = src.count if src.kind == "audio" else int(src.count / float(src.rate) * rate)
    n = int(FINE_WINDOW_S * rate)
    slack = int((FINE_SLACK_S + MAX_DRIFT_PPM * 1e-6 * length / rate) * rate)
    # each candidate lag judged at the full rate by how much of the file it explains: sound that repeats
    # (tones, hum, a looped room tone) explains it as well at another lag
    scored = []
    for lag in _coarse_lags(src, ref, length):
        lo, hi = max(0, -lag), min(length, ref.timeline.total - lag) - n
        if hi <= lo:
            continue
        starts = np.unique(np.linspace(lo, hi, 3).astype(np.int64)).tolist()
        fits = [
            _fine(_mono(x), ref, a + lag, slack)
            for a, x in zip(starts, audio_windows(src, [(a, a + n) for a in starts]))
        ]
        r = [f[1] for f in fits if f is not None]
        if r:
            scored.append((float(np.median(r)), lag))
    scored.sort(reverse=True)
    if not scored or scored[0][0] < MIN_COHERENCE:
        raise AlignmentError(
            f"{src.path.name}: its sound is not {name}'s (best correlation "
            f"{scored[0][0] if scored else 0:.2f}): align it by slates or by hand"
        )
    (r_best, lag), rivals = scored[0], scored[1:]
    if rivals and 1 - rivals[0][0] < AMBIGUOUS_RESIDUAL * (1 - r_best):
        raise AlignmentError(
            f"{src.path.name}: ambiguous against {name}: it fits at {lag / rate:+.3f} s "
            f"(correlation {r_best:.3f}) and at {rivals[0][1] / rate:+.3f} s ({rivals[0][0]:.3f}): "
            "pick one with --offset-ms or align by slates"
        )
    lo, hi = max(0, -lag), min(length, ref.timeline.total - lag) - n
    starts = np.unique(np.linspace(lo, hi, FINE_WINDOWS).astype(np.int64)).tolist()
    points = []
    for a, x in zip(starts, audio_windows(src, [(a, a + n) for a in starts])):
        fit = _fine(_mono(x), ref, a + lag, slack)
        if fit is None or fit[1] < MIN_COHERENCE:
            continue
        # the lag found is the window's mean: its middle's (a drifting file's lag changes across it)
        middle = a + n / 2
        points.append((src.audio_start_ns + middle * 1e9 / rate, float(ref.timeline.t_ns_of(fit[0] + n / 2))))
    if not points:
        raise AlignmentError(f"{src.path.name}: no window of it correlates with {name}")
    runner = f"; the next best lag {rivals[0][1] / rate:+.3f} s at {rivals[0][0]:.3f}" if rivals else ""
    return fitted(
        "audio",
        points,
        f"against {name}: {len(points)} windows of {FINE_WINDOW_S:g} s, correlation {r_best:.3f}{runner}",
        1e9 / rate,
    )


def align(
    take: Take, src: Source, by: str | None, *, channel: int | None = None, against: str | None = None
) -> Alignment:
    """The file on the take's clock by `by`, or (None) by the first of timecode, LTC, slates and audio
    that the file and the take both carry; what each found when none does."""
    if by is not None:
        if by not in METHODS:
            raise UsageError(f"--by {by}: one of {', '.join(METHODS)}")
        return _one(take, src, by, channel, against)
    tried = []
    for method in METHODS:
        try:
            return _one(take, src, method, channel, against)
        except (AlignmentError, UsageError) as e:  # what this file or take lacks for that method
            tried.append(f"{method}: {str(e).removeprefix(src.path.name + ': ')}")
    raise AlignmentError(f"{src.path.name}: not aligned ({'; '.join(tried)})")


def _one(take: Take, src: Source, by: str, channel: int | None, against: str | None) -> Alignment:
    if by == "timecode":
        return by_timecode(take, src)
    if by == "ltc":
        return by_ltc(take, src, channel)
    if by == "slates":
        return by_slates(take, src)
    return by_audio(take, src, against)

"""Timing checks of a take: clock fits, slates found in the media, sync.csv recomputed, skew between streams."""

from __future__ import annotations

import csv
from typing import TYPE_CHECKING, Any

import numpy as np

from ..clock import ClockDomain
from ..errors import TakeError
from ..slates import VIDEO_HISTORY, VIDEO_MIN_HISTORY, Onset, detect_audio, detect_mocap, detect_video
from ..take.events import read_slates
from ..take.layout import (
    EVENTS,
    INGEST_DRIVER,
    MANIFEST,
    SYNC,
    SYNC_INDEX,
    SYNC_SAMPLE,
    UNSYNCED_KINDS,
    ltc_file,
    stream_media,
    table_file,
)
from ..take.sync import SYNTHETIC_RATE, StreamInput, has_sync_columns, nominal_rate, sync_table
from ..take.tables import read_table
from ..take.timecode import take_rate
from ..writers.ltc_table import ltc_summary
from .figures import downsample, rounded
from .findings import integer, mapping, number, show

if TYPE_CHECKING:
    from .take_check import TakeCheck

SLATE_BEFORE_NS = 200_000_000  # an onset is looked for this long before its slate ...
SLATE_AFTER_NS = 500_000_000  # ... to this long after it


def check_clock(c: TakeCheck, name: str, entry: dict[str, Any]) -> None:
    clock = mapping(entry.get("clock"))
    out = c.streams[name]
    domain = clock.get("domain")
    out["clock_domain"] = domain if isinstance(domain, str) else None
    drift, p99 = number(clock.get("drift_ppm")), number(clock.get("residual_p99_ns"))
    out["drift_ppm"] = rounded(drift, 3)
    out["residual_p99_ms"] = rounded(p99 / 1e6 if p99 is not None else None, 4)
    resets = integer(clock.get("resets")) or 0
    out["resets"] = resets
    rows = out.get("rows") or 0
    # an LSL stream whose take was shorter than liblsl's probing keeps its live offset (and says so in its note)
    fitted = domain in (ClockDomain.DEVICE, ClockDomain.ROUNDTRIP) or (
        domain == ClockDomain.LSL and "note" not in clock
    )
    if fitted and rows >= 2:
        limit = c.limits.max_drift_ppm
        if drift is None:
            c.f.fail(f"{name}: no clock fit in {MANIFEST} (drift unknown)")
        elif abs(drift) > limit:
            c.f.fail(f"{name}: clock drift {drift:+.1f} ppm beyond ±{limit:g} ppm")
    if p99 is not None and p99 / 1e6 > c.limits.max_residual_ms:
        c.f.warn(
            f"{name}: clock-fit residual p99 {p99 / 1e6:.1f} ms above {c.limits.max_residual_ms:g} ms (late arrivals)"
        )
    if resets:
        c.f.warn(f"{name}: device clock reset {resets} time{'s' if resets > 1 else ''} during the take")
    if isinstance(note := clock.get("note"), str):
        c.f.warn(f"{name}: clock fitted by its {show(note)}")
    table = c.tables.get(name)
    if table is None or not len(table["t_ns"]):
        return
    latency = number(clock.get("latency_ns")) or 0.0
    late = table["host_ns"] - table["t_ns"] - latency
    if c.kinds[name] == "audio":  # arrivals were fitted against each block's end
        late = late - table["frames"] * (1e9 / (out.get("effective_rate") or c.rate(name, entry)))
    t_s, ms = downsample(table["t_ns"] / 1e9, late / 1e6)
    out["clock_residuals_t_s"], out["clock_residuals_ms"] = t_s, ms


def check_slates(c: TakeCheck) -> None:
    events = c.regular(EVENTS)
    if events is None:
        if EVENTS not in c.listing.links:
            c.f.fail(f"{EVENTS} missing: slates not checked")
        return
    c.slates = read_slates(events)
    for name in c.tables:
        c.streams[name]["slate_offsets_ms"] = []
    if not c.slates:
        c.f.warn("no slates: sync not verified in the media")
        return
    for name, table in c.tables.items():
        if (
            name in c.broken
            or c.kinds[name] in UNSYNCED_KINDS
            or c.rate(name, mapping(c.manifest["streams"][name])) <= 0
        ):
            continue  # its media failed already (a search would only repeat that), or it has none (pulses,
            # markers, an irregular stream)
        with c.f.check(f"{name}: slate detection"):
            kind, t_ns = c.kinds[name], table["t_ns"]
            period = 1e9 / c.rate(name, mapping(c.manifest["streams"][name]))
            allowed = on_time(c, kind, period)
            ingested = mapping(mapping(c.manifest["streams"][name]).get("ingest"))
            if (spread := number(ingested.get("uncertainty_ns"))) is not None:  # a file placed to ± this
                allowed = (allowed[0] - spread, allowed[1] + spread)
            onsets = detect(c, name, kind, period)
            offsets: list[float | None] = []
            for s in c.slates:
                if not len(t_ns) or not (t_ns[0] <= s <= t_ns[-1]):
                    offsets.append(None)  # the stream was not recording then
                    continue
                near = [o for o in onsets if -SLATE_BEFORE_NS <= o.t_ns - s <= SLATE_AFTER_NS]
                if not near:
                    offsets.append(None)
                    c.f.warn(f"{name}: slate at {s / 1e9:.3f} s not found in its media")
                    continue
                off = min(near, key=lambda o: abs(o.t_ns - s)).t_ns - s
                offsets.append(round(off / 1e6, 4))
                if not allowed[0] <= off <= allowed[1]:
                    c.f.fail(
                        f"{name}: slate at {s / 1e9:.3f} s seen {off / 1e6:+.3f} ms from it "
                        f"(allowed {allowance(kind, allowed)})"
                    )
            c.streams[name]["slate_offsets_ms"] = offsets


def on_time(c: TakeCheck, kind: str, period: float) -> tuple[float, float]:
    """The offsets (ns) of a slate's onset from the slate that pass. A slate falls between two frames,
    rows or samples, and its onset is in the first one after it: video within the frame period after it
    (±1 ms), mocap within the row period after it ± the tolerance, audio within the tolerance, widened by
    a sample on each side (an onset is found to the sample)."""
    tol = c.limits.slate_tolerance_ms * 1e6
    return {
        "camera": (-1e6, period + 1e6),
        "audio": (-tol - period, tol + period),
        "mocap": (-tol, period + tol),
        "lsl": (-tol, period + tol),
    }[kind]


def allowance(kind: str, allowed: tuple[float, float]) -> str:
    """The window of `on_time` in words, for a failed slate."""
    lo, hi = allowed[0] / 1e6, allowed[1] / 1e6
    if kind == "audio":
        return f"±{hi:.3f} ms: the tolerance and a sample"
    why = "a frame period ± 1 ms" if kind == "camera" else f"a row period + {-lo:g} ms on either side"
    return f"{lo:+.3f} … {hi:+.3f} ms: {why}"


def detect(c: TakeCheck, name: str, kind: str, period: float) -> list[Onset]:
    """Onsets around each slate. Reading and decoding the media is most of a take's check: first only
    where an on-time onset lies, then the whole search window for the slates with no onset there.

    The first search has a short lead-in: video judges a flash against the VIDEO_MIN_HISTORY + 1 frames
    before it (not VIDEO_HISTORY: decoding starts at the keyframe before the lead-in, so each frame of
    lead-in costs a decoded frame per slate; a full-frame flash stands out against a few frames), audio
    reads its background by itself, and its hops rise up to a hop after the onset that is then refined
    to the sample. An on-time onset found first decides its slate, even where a whole-window search
    would report another (an earlier onset less than slates.MERGE_NS before it, such as a clap before
    the slate, or a flash judged against a longer history): sync is checked by the on-time one."""
    lead, lag = {
        "camera": ((VIDEO_MIN_HISTORY + 1) * period, 0),
        "audio": (5e6, 5e6),
        "mocap": (period, 0),
        "lsl": (period, 0),
    }[kind]
    lo, hi = on_time(c, kind, period)
    onsets = search(c, name, kind, [(int(s + lo - lead), int(s + hi + lag)) for s in c.slates])
    late = [s for s in c.slates if not any(lo <= o.t_ns - s <= hi for o in onsets)]
    if late:
        lead = (VIDEO_HISTORY + 2) * period if kind == "camera" else 0  # the detector's whole history
        wide = [(int(s - SLATE_BEFORE_NS - lead), int(s + SLATE_AFTER_NS)) for s in late]
        onsets = sorted({*onsets, *search(c, name, kind, wide)}, key=lambda o: o.t_ns)
    return onsets


def search(c: TakeCheck, name: str, kind: str, windows: list[tuple[int, int]]) -> list[Onset]:
    if kind in ("camera", "audio"):
        media = c.take / stream_media(name, kind, mapping(c.manifest["streams"][name]))
    if kind == "camera":
        return detect_video(
            media,
            c.take / table_file(name, kind),
            threads=1,
            windows=windows,
            table=c.tables[name],
            container=c.videos[name],
        )
    if kind == "audio":
        return detect_audio(
            media,
            c.take / table_file(name, kind),
            c.rate(name, mapping(c.manifest["streams"][name])),
            windows=windows,
            table=c.tables[name],
        )
    return detect_mocap(c.take / table_file(name, kind), windows=windows, table=c.tables[name])  # and LSL rows


def check_sync_csv(c: TakeCheck) -> None:
    path = c.regular(SYNC)
    if path is None:
        if SYNC not in c.listing.links:
            c.f.fail(f"{SYNC} missing")
        return
    rig = mapping(c.manifest.get("rig"))
    specs = [s for s in rig.get("streams", []) if isinstance(s, dict)] if isinstance(rig.get("streams"), list) else []
    master = rig.get("master")
    inputs: list[StreamInput] = []
    for spec in specs:
        name = spec.get("name")
        if (
            name == master
            or name not in c.tables
            or not has_sync_columns(kind := c.kinds[name], rate := nominal_rate(c.manifest, name))
        ):
            continue
        table = c.tables[name]
        cols = (
            {"first_sample": table["first_sample"], "t_ns": table["t_ns"], "frames": table["frames"]}
            if kind == "audio"
            else {"index": table["index"], "t_ns": table["t_ns"]}
        )
        inputs.append((name, kind, rate, cols))
    if master is not None:
        if master not in c.tables:
            c.f.fail(f"{SYNC}: the master camera {show(master)} has no readable {table_file(master, 'camera')}")
            return
        ticks, tick_t_ns = c.tables[master]["index"], c.tables[master]["t_ns"]
        master_rate = nominal_rate(c.manifest, master)
    else:
        spans = [(int(t["t_ns"][0]), int(t["t_ns"][-1])) for *_, t in inputs if len(t["t_ns"])]
        master_rate = SYNTHETIC_RATE
        if spans:
            start, end = min(a for a, _ in spans), max(b for _, b in spans)
            ticks = np.arange(int((end - start) * SYNTHETIC_RATE // 1e9) + 1, dtype=np.int64)
            tick_t_ns = start + np.rint(ticks * (1e9 / SYNTHETIC_RATE)).astype(np.int64)
        else:
            ticks = tick_t_ns = np.zeros(0, np.int64)
    expected = sync_table(ticks, tick_t_ns, inputs, master_rate=master_rate)
    stored = read_table(path, dtype=np.float64)
    if list(stored) != list(expected):
        c.f.fail(f"{SYNC}: columns {','.join(map(show, stored))[:200]} are not the expected {','.join(expected)}")
        return
    n = len(expected["tick"])
    if len(stored["tick"]) != n:
        c.f.fail(f"{SYNC}: {len(stored['tick'])} rows, the master timeline has {n} ticks")
        return
    for col, want in expected.items():
        got = stored[col]
        if col.endswith(SYNC_SAMPLE):
            same = np.isnan(got) == np.isnan(want)
            same &= np.isnan(want) | (np.abs(np.nan_to_num(got) - np.nan_to_num(want)) <= 0.0015)
        else:
            gap = -1 if col.endswith(SYNC_INDEX) else 0
            same = np.where(np.isnan(got), gap, got) == want
        if not same.all():
            bad = np.flatnonzero(~same)
            c.f.fail(
                f"{SYNC}: column {col} differs from the timestamps at {len(bad)} rows (first at row {int(bad[0]) + 1})"
            )


def check_skew(c: TakeCheck) -> None:
    """Streams that start or end far apart. Not those that send when something happens (markers, an
    irregular stream): their first and last rows are events, not where they began and ended; nor a file
    ingested after the take (a camera on its own card rolls when its operator starts it)."""
    ends = {
        n: (int(t["t_ns"][0]), int(t["t_ns"][-1]))
        for n, t in c.tables.items()
        if len(t["t_ns"])
        and c.kinds[n] != "markers"
        and c.rate(n, entry := mapping(c.manifest["streams"][n])) > 0
        and entry.get("driver") != INGEST_DRIVER
    }
    if len(ends) < 2:
        return
    limit = c.limits.max_skew_ms
    for label, i in (("start", 0), ("end", 1)):
        first = min(ends, key=lambda n: ends[n][i])
        last = max(ends, key=lambda n: ends[n][i])
        skew = (ends[last][i] - ends[first][i]) / 1e6
        if skew > limit:
            c.f.warn(
                f"{label} skew {skew:.1f} ms between streams ({first} at {ends[first][i] / 1e9:.3f} s, "
                f"{last} at {ends[last][i] / 1e9:.3f} s) above {limit:g} ms"
            )


def check_ltc(c: TakeCheck) -> None:
    """A take jam-synced to LTC: its `<stream>.ltc.csv` read again and its frames checked to follow one
    another (each label one after the last, each start one frame after it); a jump is a warning (the
    studio's timecode was re-jammed, or a frame was misread), a table unlike what take.json says fails."""
    entry = c.manifest.get("ltc")
    if not isinstance(entry, dict) or not isinstance(entry.get("stream"), str):
        return
    name = entry["stream"]
    rel = ltc_file(name)
    path = c.regular(rel)
    if path is None:
        c.f.fail(f"{rel}: missing (take.json says the take's timecode is LTC on {name})")
        return
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    try:
        t_ns, labels = [int(r[0]) for r in rows], [r[2] for r in rows]
        summary = ltc_summary(take_rate(c.manifest), t_ns, labels)
    except (ValueError, IndexError, TakeError) as e:
        c.f.fail(f"{rel}: malformed: {e}")
        return
    figures = {k: summary.get(k) for k in ("frames", "jumps", "drift_ppm", "residual_ms_max")}
    if name in c.streams:
        c.streams[name]["ltc"] = figures
    if summary["frames"] != entry.get("frames"):
        c.f.fail(f"{rel}: {summary['frames']} LTC frames, take.json says {entry.get('frames')}")
    if summary["jumps"]:
        c.f.warn(f"{name}: the LTC jumps {summary['jumps']} time(s) (at {', '.join(summary['first_jumps'])})")

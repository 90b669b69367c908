"""The checks of each stream kind: its files and table against its media and the manifest, drops and rates.

STREAM_CHECKS maps a kind to its check; each takes the TakeCheck whose state it fills (tables, figures).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import av
import numpy as np

from ..clock import ClockDomain
from ..errors import TakeError
from ..rig import stored_settings_problem
from ..take import counters
from ..take.layout import CAMERA, LAYOUTS, MANIFEST, lsl_clock_file, roundtrips_file, stream_media, table_file
from ..take.layout import stream_files as files_of
from ..take.mkv import count_packets, open_video
from ..take.tables import read_markers, read_table, stream_table
from ..take.trigger import triggered_frame_times
from ..take.wav import wav_info
from .figures import downsample, rounded
from .findings import integer, mapping, number, show

if TYPE_CHECKING:
    from .take_check import TakeCheck

RATE_TOLERANCE = 0.02  # measured rate (drops counted back in) against nominal
MAX_MONOTONIC_NS = 1 << 63  # a host clock reading beyond this is not one (Linux: int64 ns)
DESCRIBED_KEYS = ("fps", "samplerate", "rate", "trigger_fps", "channels", "width", "height")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def stream_entries(c: TakeCheck) -> dict[str, dict[str, Any]]:
    streams = c.manifest.get("streams")
    if not isinstance(streams, dict):
        c.f.fail(f"{MANIFEST}: streams is not an object")
        c.unreadable.add("")  # no stream to recompute sync.csv from
        return {}
    out = {}
    for name, entry in streams.items():
        if not isinstance(name, str) or not _SAFE_NAME.match(name) or ".." in name:
            c.f.fail(f"{MANIFEST}: stream name {show(repr(name))[:80]} is not a safe file name")
            continue
        kind = mapping(entry).get("kind")
        if kind not in LAYOUTS:
            c.f.fail(f"{name}: unknown kind {show(repr(kind))[:40]}")
            continue
        out[name] = entry
        c.kinds[name] = kind
    return out


def check_settings(c: TakeCheck, entries: dict[str, dict[str, Any]]) -> None:
    """Every value the take's timing rests on is one a device can have: the rig snapshot's settings as a rig
    file must give them, what each device described, and t0 as a host clock reading."""
    t0 = c.manifest.get("t0_host_ns")
    if not isinstance(t0, int) or isinstance(t0, bool) or not 0 <= t0 < MAX_MONOTONIC_NS:
        c.f.fail(f"{MANIFEST}: t0_host_ns is not a monotonic clock time in ns ({show(repr(t0)[:40])})")
    rig = mapping(c.manifest.get("rig"))
    specs = rig.get("streams")
    for spec in specs if isinstance(specs, list) else []:
        spec = mapping(spec)
        name, kind = spec.get("name"), spec.get("kind")
        if isinstance(name, str) and kind in LAYOUTS and (problem := stored_settings_problem(kind, spec)):
            c.f.fail(f"{MANIFEST}: rig snapshot: {show(name)}.{problem[0]}: {show(problem[1])}")
    for name, entry in entries.items():
        device = mapping(entry.get("device"))
        described = {k: device[k] for k in DESCRIBED_KEYS if k in device and device[k] is not None}
        if problem := stored_settings_problem(c.kinds[name], described):
            key, text = problem
            c.f.fail(
                f"{MANIFEST}: {name}: device {key} {show(repr(device[key]))[:40]} outside what a rig file "
                f"may give ({show(text)})"
            )


def stream_files(c: TakeCheck, name: str, entry: dict[str, Any]) -> bool:
    """The stream's media are there as regular files (and listed among its files)."""
    ok = True
    listed = entry.get("files")
    listed = listed if isinstance(listed, list) else []
    for rel in files_of(name, c.kinds[name], entry):
        if c.regular(rel) is None:
            if rel not in c.listing.links and rel not in c.listing.special:
                c.f.fail(f"{name}: {rel} missing")
            ok = False
        elif rel not in listed:
            c.f.fail(f"{name}: {rel} not among the stream's files in {MANIFEST}")
    return ok


def report_drops(c: TakeCheck, name: str, entry: dict[str, Any], seen: int, how: str) -> int:
    """WARN about drops: the manifest's count and what the media show (`how`); returns the drops."""
    unit = LAYOUTS[c.kinds[name]].unit
    recorded = integer(entry.get("dropped"))
    drops = max(seen, recorded or 0)
    if recorded is None and c.manifest.get("status") != "repaired":
        c.f.warn(f"{name}: no dropped count in {MANIFEST}; {how} show {seen} {unit} missing")
    elif drops:
        parts = [f"{name}: {drops} {unit} dropped"]
        if recorded is not None:
            detail = [
                f"{k.removeprefix('dropped_').replace('_', ' ')} {entry[k]}"
                for k in ("dropped_by_device", "dropped_in_queue", "dropped_stale", "dropped_behind_rate")
                if integer(entry.get(k))
            ]
            parts.append(f"{MANIFEST}: {recorded}" + (f" ({', '.join(detail)})" if detail else ""))
        parts.append(f"{how}: {seen}")
        # frames a starved device never made are counted behind its rate: no gap in its counter shows them
        if recorded is not None and recorded - (integer(entry.get("dropped_behind_rate")) or 0) != seen:
            parts.append("they disagree")
        c.f.warn("; ".join(parts))
    return drops


def check_rate(c: TakeCheck, name: str, rows: int, missing: int, span_ns: float, nominal: float) -> float | None:
    if rows < 3 or span_ns <= 0:
        return None
    measured = (rows - 1 + missing) / (span_ns / 1e9)
    if abs(measured / nominal - 1) > RATE_TOLERANCE:
        c.f.warn(f"{c.kinds[name]} {name}: measured {measured:.4g}/s against nominal {nominal:.4g}/s")
    return measured


def increasing(c: TakeCheck, name: str, rel: str, t_ns: np.ndarray) -> None:
    bad = np.flatnonzero(np.diff(t_ns) <= 0)
    if len(bad):
        i = int(bad[0])
        c.f.fail(
            f"{rel}: t_ns not strictly increasing after data row {i + 1} ({int(t_ns[i])} then "
            f"{int(t_ns[i + 1])}; {len(bad)} such steps)"
        )


def intervals(c: TakeCheck, name: str, t_ns: np.ndarray) -> None:
    if len(t_ns) > 1:
        t_s, ms = downsample(t_ns[1:] / 1e9, np.diff(t_ns) / 1e6)
        c.streams[name]["frame_intervals_t_s"], c.streams[name]["frame_intervals_ms"] = t_s, ms


def check_camera(c: TakeCheck, name: str, entry: dict[str, Any]) -> None:
    rel_csv, rel_mkv = table_file(name, "camera"), stream_media(name, "camera", entry)
    table = read_table(c.take / rel_csv, columns=(*CAMERA.time_columns, "pts"))
    c.tables[name] = table
    t_ns, rows = table["t_ns"], len(table["t_ns"])
    count = integer(entry.get("count"))
    try:
        container = c.videos[name] = open_video(c.take / rel_mkv)
    except av.FFmpegError as e:
        raise ValueError(f"{rel_mkv}: not a readable video ({getattr(e, 'strerror', None) or e})") from None
    pts, error = count_packets(c.take / rel_mkv, container)
    out = c.streams[name]
    out.update(rows=rows, packets=len(pts))
    if error is not None:
        c.f.fail(f"{rel_mkv}: demuxing stopped after {len(pts)} packets: {show(error)}")
        c.broken.add(name)
    if not (rows == len(pts) == count):
        c.f.fail(f"{name}: {rel_csv} has {rows} rows, {rel_mkv} {len(pts)} packets, {MANIFEST} count {count}")
    elif "pts" in table and not np.array_equal(np.sort(pts), np.sort(table["pts"])):
        c.f.fail(f"{name}: the pts in {rel_csv} are not the packets' pts in {rel_mkv}")
    if not np.array_equal(table["index"], np.arange(rows)):
        c.f.fail(f"{rel_csv}: index column is not 0…{rows - 1} (rows removed or reordered)")
    increasing(c, name, rel_csv, t_ns)
    nominal = c.rate(name, entry)
    period = 1e9 / nominal
    gaps = np.diff(t_ns)
    gaps = gaps[gaps > 1.5 * period]
    missing = int(np.maximum(np.rint(gaps / period) - 1, 1).sum())
    out["drops"] = report_drops(c, name, entry, missing, "frames.csv timestamps")
    out["measured_rate"] = rounded(
        check_rate(c, name, rows, missing, float(t_ns[-1] - t_ns[0]) if rows else 0, nominal), 4
    )
    intervals(c, name, t_ns)
    rig_streams = mapping(c.manifest.get("rig")).get("streams")
    spec = next(
        (mapping(s) for s in (rig_streams if isinstance(rig_streams, list) else []) if mapping(s).get("name") == name),
        {},
    )
    if spec.get("trigger"):
        check_trigger(c, name, str(spec["trigger"]), spec)


def check_trigger(c: TakeCheck, name: str, box: str, spec: dict[str, Any]) -> None:
    """A triggered camera: every frame at the time of its pulse, matched by count (improvcap.take.trigger)."""
    rel = table_file(box, "sync")
    if c.kinds.get(box) != "sync" or c.regular(rel) is None:
        c.f.fail(f"{name}: triggered by {show(box)}, which has no pulse table in this take")
        return
    stored, expected, info = triggered_frame_times(c.take, name, box, number(spec.get("latency_ms")) or 0.0)
    c.streams[name]["trigger"] = {
        k: info[k]
        for k in ("matched", "frames_missing", "pulses_interpolated", "pulses_extrapolated", "frames_unmatched")
    }
    if not np.array_equal(expected, stored):
        bad = int((expected != stored).sum())
        c.f.fail(
            f"{name}: {bad} frames are not at the times of their trigger pulses from {box} (refit them: repair --force)"
        )
    if info["frames_unmatched"]:
        c.f.warn(f"{name}: {info['frames_unmatched']} frames not on {box}'s pulses (too few pulses recorded)")
    if info["pulses_interpolated"]:
        c.f.warn(f"{name}: {info['pulses_interpolated']} frames on pulses whose messages {box} lost (interpolated)")


def check_audio(c: TakeCheck, name: str, entry: dict[str, Any]) -> None:
    rel_wav, rel_csv = stream_media(name, "audio", entry), table_file(name, "audio")
    info = wav_info(c.take / rel_wav)
    blocks = stream_table(c.take, name, "audio", time_only=True)  # adc_ns (often empty) left out
    c.tables[name] = blocks
    out = c.streams[name]
    frames, first, t_ns = blocks["frames"], blocks["first_sample"], blocks["t_ns"]
    total = int(frames.sum())
    count = integer(entry.get("count"))
    out.update(rows=len(t_ns), samples=int(info["frames"]), samples_on_disk=int(info["frames_on_disk"]))
    if not info["header_complete"]:
        c.f.fail(
            f"{rel_wav}: header declares {info['frames']} sample frames, {info['frames_on_disk']} "
            "are on disk (truncated, or never finalised)"
        )
        c.broken.add(name)
    if not (info["frames"] == total == count):
        c.f.fail(
            f"{name}: {rel_wav} has {info['frames']} sample frames, {rel_csv} blocks sum to {total}, "
            f"{MANIFEST} count {count}"
        )
    expected_first = np.concatenate([[0], np.cumsum(frames)[:-1]]) if len(frames) else frames
    if not np.array_equal(first, expected_first):
        i = int(np.flatnonzero(first != expected_first)[0])
        c.f.fail(
            f"{rel_csv}: first_sample {int(first[i])} at row {i + 1}, expected {int(expected_first[i])} "
            "(blocks removed or reordered)"
        )
    nominal = c.rate(name, entry)
    if int(info["samplerate"]) != int(round(nominal)):
        c.f.fail(f"{rel_wav}: {info['samplerate']} Hz, the stream's rate is {nominal:g} Hz")
    increasing(c, name, rel_csv, t_ns)
    clock = mapping(entry.get("clock"))
    effective = number(clock.get("effective_rate")) or nominal
    out["effective_rate"] = effective
    out["rate_ppm"] = rounded((effective / nominal - 1) * 1e6, 2)
    missing = 0
    if len(t_ns) > 1:
        expected = frames[:-1] * (1e9 / effective)
        excess = np.diff(t_ns) - expected
        block = float(np.median(expected))
        missing = int(np.rint(excess[excess > block / 2] * effective / 1e9).sum())
        span = (t_ns[-1] - t_ns[0]) / 1e9 + frames[-1] / effective
        covered = (total + missing) / effective
        if abs(span - covered) > max(0.02, 1e-3 * covered):
            c.f.warn(
                f"{name}: {total} samples (+{missing} dropped) last {covered:.3f} s at "
                f"{effective:.6g} Hz, its timestamps span {span:.3f} s"
            )
    out["drops"] = report_drops(c, name, entry, missing, "blocks.csv timestamps")
    if len(t_ns) > 1 and t_ns[-1] > t_ns[0]:  # samples from the first block to the start of the last
        out["measured_rate"] = rounded((total - int(frames[-1])) / ((t_ns[-1] - t_ns[0]) / 1e9), 4)
    intervals(c, name, t_ns)


def counted_rows(
    c: TakeCheck, name: str, kind: str, entry: dict[str, Any], time_only: bool = False
) -> tuple[np.ndarray, int, np.ndarray, int]:
    """A stream's table of rows (mocap frames, sync box pulses, LSL samples): rows against the manifest's count, the
    index column, increasing t_ns, and its serial line errors. Returns (t_ns, rows, counter steps,
    counts skipped by forward steps)."""
    rel = table_file(name, kind)
    table = stream_table(c.take, name, kind, time_only=time_only)
    c.tables[name] = table
    t_ns, counter = table["t_ns"], table.get("counter")
    rows, count = len(t_ns), integer(entry.get("count"))
    out = c.streams[name]
    out["rows"] = rows
    if rows != count:
        c.f.fail(f"{name}: {rel} has {rows} rows, {MANIFEST} count {count}")
    if not np.array_equal(table["index"], np.arange(rows)):
        c.f.fail(f"{rel}: index column is not 0…{rows - 1} (rows removed or reordered)")
    increasing(c, name, rel, t_ns)
    stats = mapping(entry.get("device_stats"))
    errors = {k: stats[k] for k in ("crc_errors", "parse_errors") if integer(stats.get(k))}
    out.update({k: integer(stats.get(k)) for k in ("crc_errors", "parse_errors")})
    if errors:
        c.f.warn(f"{name}: serial line errors: " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in errors.items()))
    if counter is None:  # an LSL stream: no frame counter
        return t_ns, rows, np.zeros(0, np.int64), 0
    steps = counters.step(counter[:-1], counter[1:]) if rows > 1 else np.zeros(0, np.int64)
    return t_ns, rows, steps, int(counters.skipped(steps).sum())


def check_mocap(c: TakeCheck, name: str, entry: dict[str, Any]) -> None:
    t_ns, rows, step, missing = counted_rows(c, name, "mocap", entry)
    out = c.streams[name]
    repeats, backwards = int((step == 0).sum()), int(counters.is_back(step).sum())
    out.update(counter_missing=missing, counter_repeats=repeats, counter_resets=backwards)
    if repeats or backwards:
        c.f.warn(f"{name}: frame counter repeats {repeats} times and steps back {backwards} times")
    out["drops"] = report_drops(c, name, entry, missing, "frame counter gaps")
    nominal = c.rate(name, entry)
    out["measured_rate"] = rounded(
        check_rate(c, name, rows, missing, float(t_ns[-1] - t_ns[0]) if rows else 0, nominal), 4
    )
    intervals(c, name, t_ns)


def check_sync_box(c: TakeCheck, name: str, entry: dict[str, Any]) -> None:
    """A sync box: its pulse rows (pulse-count gaps) and the round trips its clock was fitted from."""
    t_ns, rows, _, missing = counted_rows(c, name, "sync", entry, time_only=True)
    out = c.streams[name]
    out["pulses_missed"] = missing
    out["drops"] = report_drops(c, name, entry, missing, "pulse count gaps")
    nominal = number(entry.get("nominal_rate")) or 0.0  # 0: the box sent no trigger pulses
    if nominal > 0:
        out["measured_rate"] = rounded(
            check_rate(c, name, rows, missing, float(t_ns[-1] - t_ns[0]) if rows else 0, nominal), 4
        )
    trips = read_table(c.take / roundtrips_file(name), columns=("host_send_ns", "host_recv_ns"))
    rtt = trips["host_recv_ns"] - trips["host_send_ns"]
    out["round_trips"] = len(rtt)
    clock = mapping(entry.get("clock"))
    if not len(rtt):
        c.f.fail(f"{name}: {roundtrips_file(name)} has no round trips: the box's clock cannot be fitted")
    elif clock.get("domain") != ClockDomain.ROUNDTRIP or number(clock.get("offset_ns")) is None:
        c.f.fail(f"{name}: no round-trip clock fit in {MANIFEST}")
    else:
        out["rtt_median_ms"] = rounded(float(np.median(rtt)) / 1e6, 4)
    intervals(c, name, t_ns)


def check_lsl(c: TakeCheck, name: str, entry: dict[str, Any]) -> None:
    """An LSL inlet: its rows, samples missing from a regular stream's stamps (LSL numbers no samples), and
    the clock offsets its fit rests on."""
    t_ns, rows, _, _ = counted_rows(c, name, c.kinds[name], entry)
    out = c.streams[name]
    nominal = c.rate(name, entry)
    device = c.tables[name]["device_ns"]
    # in the sender's own stamps, within each of its clock segments (a restarted sender's clock steps)
    segments = mapping(entry.get("clock")).get("segments")
    rows_of = [mapping(seg).get("rows") for seg in (segments if isinstance(segments, list) else [])]
    firsts = [integer(r[0]) for r in rows_of if isinstance(r, list) and r]
    cuts = sorted({0, len(device), *(r for r in firsts if r is not None and 0 < r < len(device))})
    # ... and across a step, in the refitted t_ns
    missing = (
        (
            sum(counters.time_gaps(device[a:b], 1e9 / nominal) for a, b in zip(cuts, cuts[1:]))
            + sum(counters.time_gaps(t_ns[b - 1 : b + 1], 1e9 / nominal) for b in cuts[1:-1])
        )
        if nominal > 0
        else 0
    )
    out["drops"] = report_drops(c, name, entry, missing, "sample stamp gaps")
    offsets = read_table(c.take / lsl_clock_file(name), columns=("offset_ns", "rtt_ns"))
    out["clock_offsets"] = len(offsets["offset_ns"])
    if len(offsets["rtt_ns"]):
        out["rtt_median_ms"] = rounded(float(np.median(offsets["rtt_ns"])) / 1e6, 4)
    if nominal > 0:
        out["measured_rate"] = rounded(
            check_rate(c, name, rows, missing, float(t_ns[-1] - t_ns[0]) if rows else 0, nominal), 4
        )
    intervals(c, name, t_ns)


def check_markers(c: TakeCheck, name: str, entry: dict[str, Any]) -> None:
    """An LSL marker stream: as any LSL inlet (it sends at no rate: nothing counts as missing), and every
    row a marker whose text reads back."""
    check_lsl(c, name, entry)
    try:
        _, values = read_markers(c.take / table_file(name, "markers"))
    except TakeError as e:
        c.f.fail(f"{name}: {e}")
    else:
        c.streams[name]["markers"] = len(values)


STREAM_CHECKS = {
    "camera": check_camera,
    "audio": check_audio,
    "mocap": check_mocap,
    "sync": check_sync_box,
    "lsl": check_lsl,
    "markers": check_markers,
}


def check_nodes(c: TakeCheck) -> None:
    """A take across PCs: each node's streams are in that node's own take folder until `collect` brings
    them here, so the take is incomplete, not broken; a node that did not account for its take is a FAIL."""
    nodes = c.manifest.get("nodes")
    if nodes is None:
        return
    if not isinstance(nodes, dict):
        c.f.fail(f"{MANIFEST}: nodes is not an object")
        return
    for name, entry in nodes.items():
        entry = mapping(entry)
        if entry.get("collected"):  # its streams are this take's now, checked with the others
            continue
        if "error" in entry or not isinstance(entry.get("streams"), dict):
            why = show(str(entry.get("error", "none")))[:200]
            c.f.fail(f"node {show(str(name))[:40]}: no account of its take ({why})")
            continue
        streams = ", ".join(show(str(s))[:40] for s in entry["streams"])
        c.f.warn(
            f"incomplete: the streams of node {show(str(name))[:40]} ({streams}) are in its own take "
            f"{show(str(entry.get('take')))[:80]} on that PC, not in this folder (take.json lists their "
            "files and sha256)"
        )

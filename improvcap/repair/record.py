"""The manifest of a repaired take: per-stream entries counted from the files, sync.csv rebuilt, and the
`repair` record of what was lost and done (carried over from an earlier repair)."""

from __future__ import annotations

import csv
import datetime as _dt
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..take.atomic import write_json_atomic
from ..take.hashing import file_entries
from ..take.layout import EVENTS, LAYOUTS, MANIFEST, ORIGINAL, SYNC, nominal_rate, truth_file
from ..take.sync import build_sync
from .stream import RepairStream, clock_domain, int_or_none, positive, reason
from .surgery import originals_of

if TYPE_CHECKING:
    from .take_repair import TakeRepair


def rebuild_sync(r: TakeRepair, streams: dict[str, Any]) -> dict[str, Any] | None:
    """Rebuild sync.csv over the streams that are not failed (the master's ticks if it is one of them)."""
    healthy = {s.name for s in r.streams if s.fault is None} | r.ingested.keys()
    rig = dict(r.manifest["rig"])
    rig["streams"] = [s for s in rig["streams"] if s["name"] in healthy]
    if rig.get("master") is not None and rig["master"] not in healthy:
        r.actions.append(f"{SYNC}: the master {rig['master']} failed; its ticks are synthetic")
        rig["master"] = None
    try:
        return build_sync(r.take, {**r.manifest, "rig": rig, "streams": streams}, replace=True)
    except Exception as e:
        r.actions.append(f"{SYNC} not rebuilt: {reason(e)}")
        return None


def read_events(r: TakeRepair) -> list[dict[str, str]]:
    try:
        with open(r.take / EVENTS, encoding="utf-8", newline="") as fh:
            return list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def take_end_ns(r: TakeRepair, ends: dict[str, int], events: list[dict[str, str]]) -> int:
    """When the take stopped, as far as the disk tells: its latest data, timed or not, or event."""
    candidates = [*ends.values(), *(t for e in events if (t := int_or_none(e.get("t_ns"))) is not None)]
    for s in r.streams:
        if s.untimed and s.kind == "audio" and s.name in ends:
            candidates.append(ends[s.name] + int(round(s.untimed * 1e9 / nominal_rate("audio", s.spec))))
        elif s.untimed_end_ns is not None:
            candidates.append(s.untimed_end_ns)
    if r.previous and isinstance(r.previous.get("end_t_ns"), int):
        candidates.append(r.previous["end_t_ns"])
    if r.stopped and positive(r.manifest.get("duration_s")):
        candidates.append(int(round(r.manifest["duration_s"] * 1e9)))  # the stop the recorder saw
    return max(candidates, default=0)


def write_manifest(r: TakeRepair) -> dict[str, Any]:
    m = r.manifest
    from_status = m["status"]
    events = read_events(r)
    kept = [f for f in m.get("faults") or [] if isinstance(f, dict)] if isinstance(m.get("faults"), list) else []
    faults = kept or [
        {"t_ns": int_or_none(e.get("t_ns")), "stream": e.get("stream") or "", "detail": e.get("detail") or ""}
        for e in events
        if e.get("kind") == "fault"
    ]
    streams = {s.name: stream_entry(r, s, faults) for s in r.streams}
    for name, entry in r.ingested.items():
        streams[name] = entry
        r.actions.append(f"{name}: ingested from {entry.get('ingest', {}).get('source')}, kept as it was aligned")
    sync = rebuild_sync(r, streams)
    # where each stream's data ends: its last frame or row; the end of its last audio block
    ends = {
        s.name: s.entry["last_t_ns"] + (s.entry["_step_ns"] if s.kind == "audio" else 0)
        for s in r.streams
        if s.fault is None and s.entry.get("last_t_ns") is not None
    }
    end_t_ns = take_end_ns(r, ends, events)
    old_lost = (r.previous or {}).get("lost")
    old_lost = old_lost if isinstance(old_lost, dict) else {}
    lost = {
        s.name: stream_loss(
            r,
            s,
            end_t_ns,
            ends.get(s.name),
            old_lost.get(s.name),
            [f for f in streams[s.name]["files"] if ORIGINAL in f],
        )
        for s in r.streams
    }
    record: dict[str, Any] = {
        "repaired_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "tool_version": __version__,
        "from_status": from_status,
        "end_t_ns": end_t_ns,
        "lost": lost,
        "actions": r.actions or ["nothing to repair: every file was consistent"],
        "faults": {s.name: s.fault for s in r.streams if s.fault is not None},
        "note": "end_t_ns is the latest data found on disk; what was captured after it, up to the moment "
        "the recording stopped, was never written and cannot be counted",
    }
    if r.previous:
        record["previous"] = r.previous_records()
    # a take the recorder stopped keeps the duration it measured; a crashed one lasts as long as its data
    duration = (
        m.get("duration_s")
        if r.stopped and positive(m.get("duration_s"))
        else round(max(ends.values(), default=0) / 1e9, 6)
    )
    m.update({"status": "repaired", "duration_s": duration, "streams": streams, "faults": faults})
    if sync is not None:
        m["sync"] = sync
    m["repair"] = record
    m["files"] = file_entries(r.take)
    write_json_atomic(r.take / MANIFEST, m)
    return m


def stream_entry(r: TakeRepair, s: RepairStream, faults: list[dict[str, Any]]) -> dict[str, Any]:
    """The stream's take.json entry: what the recorder wrote, if it did, updated from the files."""
    old = r.old(s)
    entry: dict[str, Any] = (
        dict(old)
        if old
        else {
            "kind": s.kind,
            "driver": s.spec["driver"],
            "device": {
                "driver": s.spec["driver"],
                "clock": clock_domain(s.spec, {}).value,
                **s.device,
                "reconstructed_by_repair": True,
            },
            "files": [],
            "nominal_rate": nominal_rate(s.kind, s.spec),
            "measured_rate": None,
            "count": None,
            "dropped": None,
            "dropped_in_queue": None,
            "dropped_by_device": None,
            "device_stats": None,
            "latency_ms": s.spec.get("latency_ms", 0.0),
            "clock": None,
            "first_t_ns": None,
            "last_t_ns": None,
            "state": "ok",
            "fault": None,
        }
    )
    names = [*LAYOUTS[s.kind].files(s.name), truth_file(s.name)]
    present = [n for n in names if (r.take / n).exists()]
    originals = sorted({*s.originals, *(p.name for n in present for p in originals_of(r.take / n))})
    entry["files"] = present + originals
    if s.fault is not None:
        entry.update({"state": "failed", "fault": f"repair: {s.fault}", "count": None})
        return entry
    entry.update({k: v for k, v in s.entry.items() if not k.startswith("_")})
    if str(entry.get("fault") or "").startswith("repair: "):  # an earlier repair's fault, now gone
        entry.update({"state": "ok", "fault": None})
    if not old:
        own = [f for f in faults if f.get("stream") == s.name]
        if own:
            entry.update({"state": "failed", "fault": own[0]["detail"]})
    return entry


def stream_loss(
    r: TakeRepair, s: RepairStream, end_t_ns: int, stream_end: int | None, old: Any, originals: list[str]
) -> dict[str, Any]:
    """What the stream lost: the stretch before the take's last data, rows dropped, untimed media."""
    unit = LAYOUTS[s.kind].unit
    rate = nominal_rate(s.kind, s.spec)
    rows_dropped, untimed = s.rows_dropped, s.untimed
    if isinstance(old, dict):  # a repeated repair: what the first one found is still the loss
        rows_dropped += int_or_none(old.get("rows_dropped")) or 0
        untimed += int_or_none(old.get("untimed_in_orig")) or 0
    figures: dict[str, Any] = {
        "unit": unit,
        "missing_at_end": None,
        "missing_at_end_s": None,
        "rows_dropped": rows_dropped,
        "untimed_in_orig": untimed,
    }
    if s.fault is not None or stream_end is None:
        return {**figures, "summary": f"unknown: {s.fault}" if s.fault else f"nothing recorded by {s.name}"}
    gap_ns = end_t_ns - stream_end
    step_ns = s.entry["_step_ns"]  # a frame, or the last audio block: shorter gaps are timing noise
    # a take the recorder stopped lost nothing at its end: every stream was drained and closed
    missing = int(gap_ns * rate // 1e9) if gap_ns > 1.5 * step_ns and not r.stopped else 0
    seconds = round(gap_ns / 1e9, 3) if missing else 0.0
    parts = [
        f"about {missing} {unit} ({seconds:.2f} s) missing before the take's last data at {end_t_ns / 1e9:.3f} s"
        if missing
        else "nothing missing at the end"
    ]
    if rows_dropped:
        parts.append(f"{rows_dropped} timing rows dropped (torn, or naming data the media never received)")
    if untimed:
        parts.append(f"{untimed} {unit} without timing rows kept only in {', '.join(originals) or 'the original'}")
    figures.update(missing_at_end=missing, missing_at_end_s=seconds)
    return {**figures, "summary": "; ".join(parts)}

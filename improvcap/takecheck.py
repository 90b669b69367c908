"""The checks of one take for `improvcap verify` (the verdict rules are in improvcap.verify).

Built on improvcap.takefiles (folder, manifest, hashes), reading only in the same way. Each check that can
meet bad input runs inside `Findings.check`, which turns any exception into a FAIL reason.
"""
from __future__ import annotations

import csv
import hashlib
import io
import math
import re
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import av
import numpy as np

from .performers import RECORD_FILE, consent_record, consent_summary
from .slates import VIDEO_HISTORY, VIDEO_MIN_HISTORY, Onset, detect_audio, detect_mocap, detect_video, open_video
from .sync import SYNC_CSV, SYNTHETIC_RATE, StreamInput, nominal_rate, sync_table
from .take import MANIFEST
from .takefiles import MAX_MANIFEST_BYTES, TakeFiles, integer, mapping, number, read_small, show, walk
from .timeline import read_table, stream_table
from .writers.wav import wav_info

if TYPE_CHECKING:
    from .verify import Limits

MAX_RECORD_BYTES = 16 << 20        # performers.json
PLOT_POINTS = 2000
RATE_TOLERANCE = 0.02              # measured rate (drops counted back in) against nominal
SLATE_BEFORE_NS = 200_000_000      # an onset is looked for this long before its slate ...
SLATE_AFTER_NS = 500_000_000       # ... to this long after it
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_KINDS = {"camera": (".mkv", ".frames.csv"), "audio": (".wav", ".blocks.csv"), "mocap": (".csv",),
          "sync": (".csv", ".roundtrips.csv")}
_UNIT = {"camera": "frames", "audio": "samples", "mocap": "rows", "sync": "pulses"}


# --- small helpers ------------------------------------------------------------------------------------

def _r(v: float | None, digits: int = 3) -> float | None:
    return None if v is None or not math.isfinite(v) else round(float(v), digits)


def _downsample(t_s: np.ndarray, values: np.ndarray, points: int = PLOT_POINTS) -> tuple[list, list]:
    """At most `points` (time, value) pairs: each bucket's maximum at the bucket's first time."""
    values = np.asarray(values, np.float64)
    t_s = np.asarray(t_s, np.float64)
    if len(values) > points:
        edges = np.linspace(0, len(values), points + 1).astype(np.int64)[:-1]
        values, t_s = np.maximum.reduceat(values, edges), t_s[edges]
    ok = np.isfinite(values) & np.isfinite(t_s)
    return np.round(t_s[ok], 4).tolist(), np.round(values[ok], 4).tolist()


def count_packets(mkv: Path, container: Any) -> tuple[np.ndarray, str | None]:
    """pts of every packet of the file's first video stream, by demuxing only (no decoding), and the
    error that stopped the demuxer early (None when it read to the end). `container`: open_video(mkv)."""
    pts: list[int] = []
    if not container.streams.video:
        raise ValueError(f"{mkv.name}: no video stream")
    stream = container.streams.video[0]
    try:
        for packet in container.demux(stream):
            if packet.size:  # the demuxer ends with an empty flush packet
                pts.append(-1 if packet.pts is None else int(packet.pts))
    except av.FFmpegError as e:
        return np.asarray(pts, np.int64), str(e)
    return np.asarray(pts, np.int64), None


def _events_slates(path: Path) -> list[int]:
    """t_ns of every slate in events.csv (csv module: details may hold quoted commas)."""
    text = read_small(path, MAX_MANIFEST_BYTES).decode("utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or rows[0][:2] != ["t_ns", "kind"]:
        raise ValueError("events.csv: no t_ns,kind header")
    out = []
    for i, row in enumerate(rows[1:], start=2):
        if len(row) >= 2 and row[1] == "slate":
            try:
                out.append(int(row[0]))
            except ValueError:
                raise ValueError(f"events.csv line {i}: slate time {row[0]!r} is not an integer") from None
    return sorted(out)


# --- one take -------------------------------------------------------------------------------------------

class TakeCheck(TakeFiles):
    """State shared by the checks of one take (folder, manifest and hashes: TakeFiles)."""

    def __init__(self, take: Path, limits: Limits, on_bytes: Callable[[int], None] | None = None, *,
                 hashes: bool = True) -> None:
        super().__init__(take, on_bytes)
        self.hashes = hashes  # False: files are hashed elsewhere (TakeFiles.hash_plan, hashed, with_hashes)
        self.limits = limits
        self.streams: dict[str, dict[str, Any]] = {}   # what the result shows per stream
        self.tables: dict[str, dict[str, np.ndarray]] = {}
        self.kinds: dict[str, str] = {}
        self.slates: list[int] = []
        self.unreadable: set[str] = set()  # streams whose tables could not be read (reported already)
        self.broken: set[str] = set()      # streams whose media could not be read through: no slate search
        self.videos: dict[str, Any] = {}   # camera -> its mkv, open from the packet count to the slate search

    # -- streams ----------------------------------------------------------------------------------
    def stream_entries(self) -> dict[str, dict[str, Any]]:
        streams = self.manifest.get("streams")
        if not isinstance(streams, dict):
            self.f.fail(f"{MANIFEST}: streams is not an object")
            self.unreadable.add("")  # no stream to recompute sync.csv from
            return {}
        out = {}
        for name, entry in streams.items():
            if not isinstance(name, str) or not _SAFE_NAME.match(name) or ".." in name:
                self.f.fail(f"{MANIFEST}: stream name {show(repr(name))[:80]} is not a safe file name")
                continue
            kind = mapping(entry).get("kind")
            if kind not in _KINDS:
                self.f.fail(f"{name}: unknown kind {show(repr(kind))[:40]}")
                continue
            out[name] = entry
            self.kinds[name] = kind
        return out

    def stream_files(self, name: str, entry: dict[str, Any]) -> bool:
        """The stream's media are there as regular files (and listed among its files)."""
        ok = True
        listed = entry.get("files")
        listed = listed if isinstance(listed, list) else []
        for suffix in _KINDS[self.kinds[name]]:
            rel = name + suffix
            if self.regular(rel) is None:
                if rel not in self.listing.links and rel not in self.listing.special:
                    self.f.fail(f"{name}: {rel} missing")
                ok = False
            elif rel not in listed:
                self.f.fail(f"{name}: {rel} not among the stream's files in {MANIFEST}")
        return ok

    def rate(self, name: str, entry: dict[str, Any]) -> float:
        try:
            return nominal_rate(self.manifest, name)
        except Exception:
            value = number(entry.get("nominal_rate"))
            if value is None or value <= 0:
                raise ValueError(f"{name}: no nominal rate") from None
            return value

    def report_drops(self, name: str, entry: dict[str, Any], seen: int, how: str) -> int:
        """WARN about drops: the manifest's count and what the media show (`how`); returns the drops."""
        unit = _UNIT[self.kinds[name]]
        recorded = integer(entry.get("dropped"))
        drops = max(seen, recorded or 0)
        if recorded is None and self.manifest.get("status") != "repaired":
            self.f.warn(f"{name}: no dropped count in {MANIFEST}; {how} show {seen} {unit} missing")
        elif drops:
            parts = [f"{name}: {drops} {unit} dropped"]
            if recorded is not None:
                detail = [f"{k.removeprefix('dropped_').replace('_', ' ')} {entry[k]}"
                          for k in ("dropped_by_device", "dropped_in_queue") if integer(entry.get(k))]
                parts.append(f"{MANIFEST}: {recorded}" + (f" ({', '.join(detail)})" if detail else ""))
            parts.append(f"{how}: {seen}")
            if recorded is not None and recorded != seen:
                parts.append("they disagree")
            self.f.warn("; ".join(parts))
        return drops

    def check_rate(self, name: str, rows: int, missing: int, span_ns: float, nominal: float) -> float | None:
        if rows < 3 or span_ns <= 0:
            return None
        measured = (rows - 1 + missing) / (span_ns / 1e9)
        if abs(measured / nominal - 1) > RATE_TOLERANCE:
            self.f.warn(f"{self.kinds[name]} {name}: measured {measured:.4g}/s against nominal {nominal:.4g}/s")
        return measured

    def increasing(self, name: str, rel: str, t_ns: np.ndarray) -> None:
        bad = np.flatnonzero(np.diff(t_ns) <= 0)
        if len(bad):
            i = int(bad[0])
            self.f.fail(f"{rel}: t_ns not strictly increasing after data row {i + 1} ({int(t_ns[i])} then "
                        f"{int(t_ns[i + 1])}; {len(bad)} such steps)")

    def intervals(self, name: str, t_ns: np.ndarray) -> None:
        if len(t_ns) > 1:
            t_s, ms = _downsample(t_ns[1:] / 1e9, np.diff(t_ns) / 1e6)
            self.streams[name]["frame_intervals_t_s"], self.streams[name]["frame_intervals_ms"] = t_s, ms

    def camera(self, name: str, entry: dict[str, Any]) -> None:
        rel_csv, rel_mkv = f"{name}.frames.csv", f"{name}.mkv"
        table = read_table(self.take / rel_csv, columns=("index", "t_ns", "device_ns", "host_ns", "pts"))
        self.tables[name] = table
        t_ns, rows = table["t_ns"], len(table["t_ns"])
        count = integer(entry.get("count"))
        try:
            container = self.videos[name] = open_video(self.take / rel_mkv)
        except av.FFmpegError as e:
            raise ValueError(f"{rel_mkv}: not a readable video ({getattr(e, 'strerror', None) or e})") from None
        pts, error = count_packets(self.take / rel_mkv, container)
        out = self.streams[name]
        out.update(rows=rows, packets=len(pts))
        if error is not None:
            self.f.fail(f"{rel_mkv}: demuxing stopped after {len(pts)} packets: {show(error)}")
            self.broken.add(name)
        if not (rows == len(pts) == count):
            self.f.fail(f"{name}: {rel_csv} has {rows} rows, {rel_mkv} {len(pts)} packets, {MANIFEST} count {count}")
        elif "pts" in table and not np.array_equal(np.sort(pts), np.sort(table["pts"])):
            self.f.fail(f"{name}: the pts in {rel_csv} are not the packets' pts in {rel_mkv}")
        if not np.array_equal(table["index"], np.arange(rows)):
            self.f.fail(f"{rel_csv}: index column is not 0…{rows - 1} (rows removed or reordered)")
        self.increasing(name, rel_csv, t_ns)
        nominal = self.rate(name, entry)
        period = 1e9 / nominal
        gaps = np.diff(t_ns)
        gaps = gaps[gaps > 1.5 * period]
        missing = int(np.maximum(np.rint(gaps / period) - 1, 1).sum())
        out["drops"] = self.report_drops(name, entry, missing, "frames.csv timestamps")
        out["measured_rate"] = _r(self.check_rate(name, rows, missing, float(t_ns[-1] - t_ns[0]) if rows else 0,
                                                  nominal), 4)
        self.intervals(name, t_ns)

    def audio(self, name: str, entry: dict[str, Any]) -> None:
        rel_wav, rel_csv = f"{name}.wav", f"{name}.blocks.csv"
        info = wav_info(self.take / rel_wav)
        blocks = stream_table(self.take, name, "audio", time_only=True)  # adc_ns (often empty) left out
        self.tables[name] = blocks
        out = self.streams[name]
        frames, first, t_ns = blocks["frames"], blocks["first_sample"], blocks["t_ns"]
        total = int(frames.sum())
        count = integer(entry.get("count"))
        out.update(rows=len(t_ns), samples=int(info["frames"]), samples_on_disk=int(info["frames_on_disk"]))
        if not info["header_complete"]:
            self.f.fail(f"{rel_wav}: header declares {info['frames']} sample frames, {info['frames_on_disk']} "
                        "are on disk (truncated, or never finalised)")
            self.broken.add(name)
        if not (info["frames"] == total == count):
            self.f.fail(f"{name}: {rel_wav} has {info['frames']} sample frames, {rel_csv} blocks sum to {total}, "
                        f"{MANIFEST} count {count}")
        expected_first = np.concatenate([[0], np.cumsum(frames)[:-1]]) if len(frames) else frames
        if not np.array_equal(first, expected_first):
            i = int(np.flatnonzero(first != expected_first)[0])
            self.f.fail(f"{rel_csv}: first_sample {int(first[i])} at row {i + 1}, expected {int(expected_first[i])} "
                        "(blocks removed or reordered)")
        nominal = self.rate(name, entry)
        if int(info["samplerate"]) != int(round(nominal)):
            self.f.fail(f"{rel_wav}: {info['samplerate']} Hz, the stream's rate is {nominal:g} Hz")
        self.increasing(name, rel_csv, t_ns)
        clock = mapping(entry.get("clock"))
        effective = number(clock.get("effective_rate")) or nominal
        out["effective_rate"] = effective
        out["rate_ppm"] = _r((effective / nominal - 1) * 1e6, 2)
        missing = 0
        if len(t_ns) > 1:
            expected = frames[:-1] * (1e9 / effective)
            excess = np.diff(t_ns) - expected
            block = float(np.median(expected))
            missing = int(np.rint(excess[excess > block / 2] * effective / 1e9).sum())
            span = (t_ns[-1] - t_ns[0]) / 1e9 + frames[-1] / effective
            covered = (total + missing) / effective
            if abs(span - covered) > max(0.02, 1e-3 * covered):
                self.f.warn(f"{name}: {total} samples (+{missing} dropped) last {covered:.3f} s at "
                            f"{effective:.6g} Hz, its timestamps span {span:.3f} s")
        out["drops"] = self.report_drops(name, entry, missing, "blocks.csv timestamps")
        if len(t_ns) > 1 and t_ns[-1] > t_ns[0]:  # samples from the first block to the start of the last
            out["measured_rate"] = _r((total - int(frames[-1])) / ((t_ns[-1] - t_ns[0]) / 1e9), 4)
        self.intervals(name, t_ns)

    def counted_rows(self, name: str, kind: str, entry: dict[str, Any], time_only: bool = False,
                     ) -> tuple[np.ndarray, int, np.ndarray, int]:
        """A serial stream's table (mocap frames, sync box pulses): rows against the manifest's count, the
        index column, increasing t_ns, and its serial line errors. Returns (t_ns, rows, counter steps,
        counts skipped by forward steps)."""
        rel = f"{name}.csv"
        table = stream_table(self.take, name, kind, time_only=time_only)
        self.tables[name] = table
        t_ns, counter = table["t_ns"], table["counter"]
        rows, count = len(t_ns), integer(entry.get("count"))
        out = self.streams[name]
        out["rows"] = rows
        if rows != count:
            self.f.fail(f"{name}: {rel} has {rows} rows, {MANIFEST} count {count}")
        if not np.array_equal(table["index"], np.arange(rows)):
            self.f.fail(f"{rel}: index column is not 0…{rows - 1} (rows removed or reordered)")
        self.increasing(name, rel, t_ns)
        stats = mapping(entry.get("device_stats"))
        errors = {k: stats[k] for k in ("crc_errors", "parse_errors") if integer(stats.get(k))}
        out.update({k: integer(stats.get(k)) for k in ("crc_errors", "parse_errors")})
        if errors:
            self.f.warn(f"{name}: serial line errors: " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in errors.items()))
        step = (np.diff(counter) % (1 << 32)) if rows > 1 else np.zeros(0, np.int64)
        return t_ns, rows, step, int((step[(step > 1) & (step < (1 << 31))] - 1).sum())

    def mocap(self, name: str, entry: dict[str, Any]) -> None:
        t_ns, rows, step, missing = self.counted_rows(name, "mocap", entry)
        out = self.streams[name]
        repeats, backwards = int((step == 0).sum()), int((step >= (1 << 31)).sum())
        out.update(counter_missing=missing, counter_repeats=repeats, counter_resets=backwards)
        if repeats or backwards:
            self.f.warn(f"{name}: frame counter repeats {repeats} times and steps back {backwards} times")
        out["drops"] = self.report_drops(name, entry, missing, "frame counter gaps")
        nominal = self.rate(name, entry)
        out["measured_rate"] = _r(self.check_rate(name, rows, missing, float(t_ns[-1] - t_ns[0]) if rows else 0,
                                                  nominal), 4)
        self.intervals(name, t_ns)

    def sync(self, name: str, entry: dict[str, Any]) -> None:
        """A sync box: its pulse rows (pulse-count gaps) and the round trips its clock was fitted from."""
        t_ns, rows, _, missing = self.counted_rows(name, "sync", entry, time_only=True)
        out = self.streams[name]
        out["pulses_missed"] = missing
        out["drops"] = self.report_drops(name, entry, missing, "pulse count gaps")
        nominal = number(entry.get("nominal_rate")) or 0.0  # 0: the box sent no trigger pulses
        if nominal > 0:
            out["measured_rate"] = _r(self.check_rate(name, rows, missing, float(t_ns[-1] - t_ns[0]) if rows else 0,
                                                      nominal), 4)
        trips = read_table(self.take / f"{name}.roundtrips.csv", columns=("host_send_ns", "host_recv_ns"))
        rtt = trips["host_recv_ns"] - trips["host_send_ns"]
        out["round_trips"] = len(rtt)
        clock = mapping(entry.get("clock"))
        if not len(rtt):
            self.f.fail(f"{name}: {name}.roundtrips.csv has no round trips: the box's clock cannot be fitted")
        elif clock.get("domain") != "roundtrip" or number(clock.get("offset_ns")) is None:
            self.f.fail(f"{name}: no round-trip clock fit in {MANIFEST}")
        else:
            out["rtt_median_ms"] = _r(float(np.median(rtt)) / 1e6, 4)
        self.intervals(name, t_ns)

    def clock(self, name: str, entry: dict[str, Any]) -> None:
        clock = mapping(entry.get("clock"))
        out = self.streams[name]
        domain = clock.get("domain")
        out["clock_domain"] = domain if isinstance(domain, str) else None
        drift, p99 = number(clock.get("drift_ppm")), number(clock.get("residual_p99_ns"))
        out["drift_ppm"] = _r(drift, 3)
        out["residual_p99_ms"] = _r(p99 / 1e6 if p99 is not None else None, 4)
        resets = integer(clock.get("resets")) or 0
        out["resets"] = resets
        rows = out.get("rows") or 0
        if domain in ("device", "roundtrip") and rows >= 2:
            limit = self.limits.max_drift_ppm
            if drift is None:
                self.f.fail(f"{name}: no clock fit in {MANIFEST} (drift unknown)")
            elif abs(drift) > limit:
                self.f.fail(f"{name}: clock drift {drift:+.1f} ppm beyond ±{limit:g} ppm")
        if p99 is not None and p99 / 1e6 > self.limits.max_residual_ms:
            self.f.warn(f"{name}: clock-fit residual p99 {p99 / 1e6:.1f} ms above {self.limits.max_residual_ms:g} ms "
                        "(late arrivals)")
        if resets:
            self.f.warn(f"{name}: device clock reset {resets} time{'s' if resets > 1 else ''} during the take")
        table = self.tables.get(name)
        if table is None or not len(table["t_ns"]):
            return
        latency = number(clock.get("latency_ns")) or 0.0
        late = table["host_ns"] - table["t_ns"] - latency
        if self.kinds[name] == "audio":  # arrivals were fitted against each block's end
            late = late - table["frames"] * (1e9 / (out.get("effective_rate") or self.rate(name, entry)))
        t_s, ms = _downsample(table["t_ns"] / 1e9, late / 1e6)
        out["clock_residuals_t_s"], out["clock_residuals_ms"] = t_s, ms

    # -- sync -------------------------------------------------------------------------------------
    def check_slates(self) -> None:
        events = self.regular("events.csv")
        if events is None:
            if "events.csv" not in self.listing.links:
                self.f.fail("events.csv missing: slates not checked")
            return
        self.slates = _events_slates(events)
        for name in self.tables:
            self.streams[name]["slate_offsets_ms"] = []
        if not self.slates:
            self.f.warn("no slates: sync not verified in the media")
            return
        for name, table in self.tables.items():
            if name in self.broken or self.kinds[name] == "sync":
                continue  # its media failed already (a search would only repeat that), or it has none
            with self.f.check(f"{name}: slate detection"):
                kind, t_ns = self.kinds[name], table["t_ns"]
                period = 1e9 / self.rate(name, mapping(self.manifest["streams"][name]))
                allowed = self.on_time(kind, period)
                onsets = self.detect(name, kind, period)
                offsets: list[float | None] = []
                for s in self.slates:
                    if not len(t_ns) or not (t_ns[0] <= s <= t_ns[-1]):
                        offsets.append(None)  # the stream was not recording then
                        continue
                    near = [o for o in onsets if -SLATE_BEFORE_NS <= o.t_ns - s <= SLATE_AFTER_NS]
                    if not near:
                        offsets.append(None)
                        self.f.warn(f"{name}: slate at {s / 1e9:.3f} s not found in its media")
                        continue
                    off = min(near, key=lambda o: abs(o.t_ns - s)).t_ns - s
                    offsets.append(round(off / 1e6, 4))
                    if not allowed[0] <= off <= allowed[1]:
                        self.f.fail(f"{name}: slate at {s / 1e9:.3f} s seen {off / 1e6:+.3f} ms from it "
                                    f"(allowed {allowed[0] / 1e6:+.3f} … {allowed[1] / 1e6:+.3f} ms)")
                self.streams[name]["slate_offsets_ms"] = offsets

    def on_time(self, kind: str, period: float) -> tuple[float, float]:
        """The offsets (ns) of a slate's onset from the slate that pass: video within the frame period after
        it, audio within the tolerance, mocap within the tolerance of the row period after it."""
        tol = self.limits.slate_tolerance_ms * 1e6
        return {"camera": (-1e6, period + 1e6), "audio": (-tol, tol), "mocap": (-tol, period + tol)}[kind]

    def detect(self, name: str, kind: str, period: float) -> list[Onset]:
        """Onsets around each slate. Reading and decoding the media is most of a take's check: first only
        where an on-time onset lies, then the whole search window for the slates with no onset there.

        The first search has a short lead-in: video judges a flash against the VIDEO_MIN_HISTORY + 1 frames
        before it (not VIDEO_HISTORY: decoding starts at the keyframe before the lead-in, so each frame of
        lead-in costs a decoded frame per slate; a full-frame flash stands out against a few frames), audio
        reads its background by itself, and its hops rise up to a hop after the onset that is then refined
        to the sample. An on-time onset found first decides its slate, even where a whole-window search
        would report another (an earlier onset less than slates.MERGE_NS before it, such as a clap before
        the slate, or a flash judged against a longer history): sync is checked by the on-time one."""
        lead, lag = {"camera": ((VIDEO_MIN_HISTORY + 1) * period, 0), "audio": (5e6, 5e6),
                     "mocap": (period, 0)}[kind]
        lo, hi = self.on_time(kind, period)
        onsets = self.search(name, kind, [(int(s + lo - lead), int(s + hi + lag)) for s in self.slates])
        late = [s for s in self.slates if not any(lo <= o.t_ns - s <= hi for o in onsets)]
        if late:
            lead = (VIDEO_HISTORY + 2) * period if kind == "camera" else 0  # the detector's whole history
            wide = [(int(s - SLATE_BEFORE_NS - lead), int(s + SLATE_AFTER_NS)) for s in late]
            onsets = sorted({*onsets, *self.search(name, kind, wide)}, key=lambda o: o.t_ns)
        return onsets

    def search(self, name: str, kind: str, windows: list[tuple[int, int]]) -> list[Onset]:
        if kind == "camera":
            return detect_video(self.take / f"{name}.mkv", self.take / f"{name}.frames.csv", threads=1,
                                windows=windows, table=self.tables[name], container=self.videos[name])
        if kind == "audio":
            return detect_audio(self.take / f"{name}.wav", self.take / f"{name}.blocks.csv",
                                self.rate(name, mapping(self.manifest["streams"][name])), windows=windows,
                                table=self.tables[name])
        return detect_mocap(self.take / f"{name}.csv", windows=windows, table=self.tables[name])

    def check_sync_csv(self) -> None:
        path = self.regular(SYNC_CSV)
        if path is None:
            if SYNC_CSV not in self.listing.links:
                self.f.fail(f"{SYNC_CSV} missing")
            return
        rig = mapping(self.manifest.get("rig"))
        specs = [s for s in rig.get("streams", []) if isinstance(s, dict)] if isinstance(rig.get("streams"), list) else []
        master = rig.get("master")
        inputs: list[StreamInput] = []
        for spec in specs:
            name = spec.get("name")
            if name == master or name not in self.tables or self.kinds[name] == "sync":
                continue  # a sync box has no sync.csv columns (improvcap.sync)
            table = self.tables[name]
            kind = self.kinds[name]
            cols = {"first_sample": table["first_sample"], "t_ns": table["t_ns"], "frames": table["frames"]} \
                if kind == "audio" else {"index": table["index"], "t_ns": table["t_ns"]}
            inputs.append((name, kind, nominal_rate(self.manifest, name), cols))
        if master is not None:
            if master not in self.tables:
                self.f.fail(f"{SYNC_CSV}: the master camera {show(master)} has no readable frames.csv")
                return
            ticks, tick_t_ns = self.tables[master]["index"], self.tables[master]["t_ns"]
            master_rate = nominal_rate(self.manifest, master)
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
            self.f.fail(f"{SYNC_CSV}: columns {','.join(map(show, stored))[:200]} are not the expected "
                        f"{','.join(expected)}")
            return
        n = len(expected["tick"])
        if len(stored["tick"]) != n:
            self.f.fail(f"{SYNC_CSV}: {len(stored['tick'])} rows, the master timeline has {n} ticks")
            return
        for col, want in expected.items():
            got = stored[col]
            if col.endswith("_sample"):
                same = np.isnan(got) == np.isnan(want)
                same &= np.isnan(want) | (np.abs(np.nan_to_num(got) - np.nan_to_num(want)) <= 0.0015)
            else:
                gap = -1 if col.endswith("_index") else 0
                same = np.where(np.isnan(got), gap, got) == want
            if not same.all():
                bad = np.flatnonzero(~same)
                self.f.fail(f"{SYNC_CSV}: column {col} differs from the timestamps at {len(bad)} rows "
                            f"(first at row {int(bad[0]) + 1})")

    def check_skew(self) -> None:
        ends = {n: (int(t["t_ns"][0]), int(t["t_ns"][-1])) for n, t in self.tables.items() if len(t["t_ns"])}
        if len(ends) < 2:
            return
        limit = self.limits.max_skew_ms
        for label, i in (("start", 0), ("end", 1)):
            first = min(ends, key=lambda n: ends[n][i])
            last = max(ends, key=lambda n: ends[n][i])
            skew = (ends[last][i] - ends[first][i]) / 1e6
            if skew > limit:
                self.f.warn(f"{label} skew {skew:.1f} ms between streams ({first} at {ends[first][i] / 1e9:.3f} s, "
                            f"{last} at {ends[last][i] / 1e9:.3f} s) above {limit:g} ms")

    # -- performers -------------------------------------------------------------------------------
    def check_performers(self) -> tuple[list[str], dict[str, Any]]:
        entries = self.manifest.get("performers")
        if not isinstance(entries, list) or not all(
                isinstance(e, dict) and isinstance(e.get("id"), str)
                and isinstance(e.get("allowed", []), list) and isinstance(e.get("denied", []), list)
                for e in entries):
            self.f.fail(f"{MANIFEST}: performers is not a list of performer entries: consent not verified")
            return [], {}
        ids = [e["id"] for e in entries]
        if not entries:
            if self.limits.require_consent:
                self.f.fail("no performers recorded (consent required)")
            else:
                self.f.warn("no performers recorded")
        for e in entries:
            if e.get("revoked") is True:
                self.f.fail(f"performer {show(e['id'])} is recorded with revoked consent")
        summary: dict[str, Any] = {}
        with self.f.check("consent summary"):
            summary = consent_summary([{**e, "allowed": e.get("allowed", []), "denied": e.get("denied", [])}
                                       for e in entries])
        record = self.regular(RECORD_FILE)
        if record is None:
            if RECORD_FILE not in self.listing.links:
                self.f.fail(f"{RECORD_FILE} missing: consent record not in the take")
            return ids, summary
        data = read_small(record, MAX_RECORD_BYTES)
        digest = hashlib.sha256(data).hexdigest()
        expected = None
        with self.f.check("consent record"):
            expected = consent_record(entries)
        if expected is not None and (data != expected or digest != self.manifest.get("performers_sha256")):
            self.f.fail(f"consent record altered: {RECORD_FILE} (sha256 {digest[:12]}…) is not the record of "
                        f"{MANIFEST} performers (performers_sha256 "
                        f"{show(str(self.manifest.get('performers_sha256')))[:12]}…)")
        return ids, summary

    def check_faults(self, entries: Mapping[str, dict[str, Any]]) -> None:
        faults = self.manifest.get("faults")
        named = set()
        for fault in faults if isinstance(faults, list) else []:
            fault = mapping(fault)
            stream, detail = fault.get("stream") or "", fault.get("detail")
            t = number(fault.get("t_ns"))
            named.add(stream)
            at = f" at {t / 1e9:.3f} s" if t is not None else ""
            self.f.fail(f"fault{at}{' in ' + show(stream) if stream else ''}: {show(detail)}")
        for name, entry in entries.items():
            if entry.get("state") == "failed" and name not in named:
                self.f.fail(f"{name}: stream failed: {show(entry.get('fault'))}")

    # -- all --------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        try:
            return self.run_checks()
        finally:
            for container in self.videos.values():
                container.close()
            self.videos.clear()

    def run_checks(self) -> dict[str, Any]:
        f = self.f
        if not self.take.is_dir():
            f.fail("not a folder")
            return self.result([], {})
        self.listing = walk(self.take)
        self.check_folder()
        if not self.load_manifest():
            return self.result([], {})
        if not self.check_status():
            performers = self.manifest.get("performers")
            ids = [e["id"] for e in performers if isinstance(e, dict) and isinstance(e.get("id"), str)] \
                if isinstance(performers, list) else []
            return self.result(ids, {})
        ids: list[str] = []
        consent: dict[str, Any] = {}
        with f.check("performers"):
            ids, consent = self.check_performers()
        listed = self.listed_files()
        hasher: Future | None = None
        with ThreadPoolExecutor(1, thread_name_prefix="improvcap-verify-hash") as pool:
            if listed is not None:
                self.check_unlisted(self.listed)
            if listed is not None and self.hashes:
                # hashing reads and sha256 release the GIL: it overlaps the checks below
                hasher = pool.submit(self.hash_listed, listed)
            entries: dict[str, dict[str, Any]] = {}
            with f.check("faults"):
                entries = self.stream_entries()
                self.check_faults(entries)
            for name, entry in entries.items():
                kind = self.kinds[name]
                self.streams[name] = {"kind": kind, "count": integer(entry.get("count")),
                                      "nominal_rate": number(entry.get("nominal_rate")), "unit": _UNIT[kind]}
                if not self.stream_files(name, entry):
                    self.unreadable.add(name)
                    continue
                checked = False
                with f.check(f"{kind} {name}"):
                    getattr(self, kind)(name, entry)
                    checked = True
                if name not in self.tables:
                    self.unreadable.add(name)
                if not checked:
                    self.broken.add(name)
                with f.check(f"{name}: clock"):
                    self.clock(name, entry)
            with f.check("slates"):
                self.check_slates()
            if not self.unreadable:  # expected columns need every stream's table
                with f.check(SYNC_CSV):
                    self.check_sync_csv()
            with f.check("skew"):
                self.check_skew()
            if hasher is not None:
                hasher.result()
        return self.result(ids, consent)

    def failure(self, text: str) -> dict[str, Any]:
        """The result of a take whose verification itself failed (`text` says how)."""
        self.f.fail(show(text))
        return self.result([], {})

    def result(self, ids: list[str], consent: dict[str, Any]) -> dict[str, Any]:
        m = self.manifest
        self.f.items[:0] = self.hash_f.items  # integrity first, in file order
        drifts = [s["drift_ppm"] for s in self.streams.values() if s.get("drift_ppm") is not None]
        offsets = [(abs(v), v, n) for n, s in self.streams.items() for v in s.get("slate_offsets_ms") or []
                   if v is not None]
        worst = max(offsets) if offsets else None
        text = (lambda v: v if isinstance(v, str) else None)
        return {
            "take": str(self.take), "verdict": self.f.verdict, "reasons": self.f.reasons(),
            "status": text(m.get("status")), "session": text(m.get("session")), "scene": text(m.get("scene")),
            "take_number": integer(m.get("take")), "t0_utc": text(m.get("t0_utc")),
            "duration_s": number(m.get("duration_s")), "streams": self.streams,
            "slates_s": [round(s / 1e9, 6) for s in self.slates],
            "worst_drift_ppm": max(drifts, key=abs) if drifts else None,
            "worst_slate_offset_ms": worst[1] if worst else None,
            "worst_slate_stream": worst[2] if worst else None,
            "performers": ids, "consent": consent, "bytes": self.bytes,
        }

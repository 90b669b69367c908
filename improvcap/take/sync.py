"""sync.csv (DESIGN section 4): every tick of the master timeline with the matching sample of every stream.

The master timeline is the rig's `master` camera: one tick per frame actually received (tick = its
frames.csv index). A rig without cameras has no master; its ticks are then synthetic, every 1/30 s
(SYNTHETIC_RATE) from the earliest first t_ns of any stream to the latest last t_ns.

Columns: `tick,t_ns`, then per other stream in rig order: a camera or mocap stream gives
`<name>_index,<name>_offset_ns` (its row index, and t_other - t_tick), an audio stream gives `<name>_sample`
(the fractional sample index at t_tick, 3 decimals; empty outside the recorded samples). A sync box's
trigger pulses are not media and get no columns.

Matching rule for cameras and mocap (P = that stream's nominal period). A tick gets the stream's frame
nearest to it in t_ns, with two limits:
- next to a missing frame (a drop: consecutive frames 1.5 P or more apart) and before the first or
  after the last frame, a frame reaches only half a period: -P/2 <= t_frame - t_tick < P/2. A dropped
  frame therefore leaves its slot empty and shows as a gap, never as a neighbour stretched over it;
- between two frames less than 1.5 P apart (none missing), the nearer one always matches, so timestamp
  jitter or a stream slightly off its nominal rate (29.97 fps for "30") never opens spurious gaps. The
  offset is then at most half the spacing of those two frames, which is P/2 when timestamps are regular.
A stream slower than the master (15 fps against 30) thus serves each frame on the consecutive ticks
nearest to it (about two). A stream at least as fast as the master (another 30 fps camera, 60 fps,
mocap) is matched one to one: when jitter makes two ticks nearest to one frame, the frame goes to the
nearer tick and the other tick takes its other neighbouring frame if that one is free and allowed by
the limits above, else it is a gap. Such a stream never repeats a frame on consecutive ticks.

The summary returned for take.json: per stream `matched` and `gaps` (ticks with and without a match) and
`worst_abs_ns`, `p99_abs_ns`, `p50_abs_ns` of |offset| over the matched ticks (None when nothing
matched). Audio is matched to the fraction of a sample, so its figures are what rounding to the nearest
whole sample would cost (at most half a sample period). The master itself is listed with every tick
matched and zero offsets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TakeError
from .atomic import Folder, write_bytes_atomic
from .layout import SYNC, SYNC_INDEX, SYNC_LEAD_COLUMNS, SYNC_OFFSET, SYNC_SAMPLE, UNSYNCED_KINDS, rate_key, table_file
from .tables import stream_table
from .timeline import AudioTimeline

SYNTHETIC_RATE = 30.0

# One non-master stream for sync_table: (name, kind, nominal rate in Hz, its stream_table columns).
# camera/mocap tables need "index" and "t_ns"; audio tables need "first_sample", "t_ns" and "frames".
StreamInput = tuple[str, str, float, Mapping[str, np.ndarray]]


# --- matching on arrays -------------------------------------------------------------------------


def _first_claims(j: np.ndarray, off: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Among the ticks in `mask`, the one nearest to each claimed frame j (ties: the earlier tick)."""
    ticks = np.flatnonzero(mask)
    keep = np.zeros(len(j), dtype=bool)
    if len(ticks) == 0:
        return keep
    order = np.lexsort((np.abs(off[ticks]), j[ticks]))
    claimed = j[ticks][order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = claimed[1:] != claimed[:-1]
    keep[ticks[order][first]] = True
    return keep


def match_frames(
    tick_t_ns: np.ndarray, t_ns: np.ndarray, period_ns: float, *, unique: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Row (into `t_ns`, sorted ascending) matched to each tick, -1 for a gap, and offset t_row - t_tick.

    The rule is the module docstring's; `period_ns` is the stream's nominal period, `unique` makes the
    match one to one.
    """
    n_ticks, n = len(tick_t_ns), len(t_ns)
    if n == 0 or n_ticks == 0:
        return np.full(n_ticks, -1, dtype=np.int64), np.zeros(n_ticks, dtype=np.int64)
    half = period_ns / 2.0
    pos = np.searchsorted(t_ns, tick_t_ns, side="left")  # t_ns[pos - 1] < tick <= t_ns[pos]
    left = np.maximum(pos - 1, 0)
    right = np.minimum(pos, n - 1)
    off_left = t_ns[left] - tick_t_ns
    off_right = t_ns[right] - tick_t_ns
    # between two frames with none missing in between: the nearer one, whatever the distance
    bracketed = (pos > 0) & (pos < n) & (t_ns[right] - t_ns[left] < 3.0 * half)
    to_right = np.abs(off_right) < np.abs(off_left)  # a tie goes to the earlier frame: slots are [-P/2, P/2)
    j = np.where(to_right, right, left)
    off = np.where(to_right, off_right, off_left)
    ok = bracketed | ((off >= -half) & (off < half))
    if unique:
        keep = _first_claims(j, off, ok)
        taken = np.zeros(n, dtype=bool)
        taken[j[keep]] = True
        alt = np.where(to_right, left, right)
        off_alt = np.where(to_right, off_left, off_right)
        second = ok & ~keep & (alt != j) & ~taken[alt] & (bracketed | ((off_alt >= -half) & (off_alt < half)))
        keep_alt = _first_claims(alt, off_alt, second)
        j = np.where(keep_alt, alt, j)
        off = np.where(keep_alt, off_alt, off)
        ok = keep | keep_alt
    return np.where(ok, j, -1), np.where(ok, off, 0)


def sync_table(
    ticks: np.ndarray, tick_t_ns: np.ndarray, streams: Sequence[StreamInput], *, master_rate: float
) -> dict[str, np.ndarray]:
    """The columns of sync.csv as arrays, in file order; works on plain arrays (no files).

    ticks, tick_t_ns: the master timeline (int64). streams: the other streams as StreamInput tuples.
    master_rate: the master's nominal rate (Hz); streams at least this fast are matched one to one.
    Returns "tick", "t_ns", then per camera/mocap "<name>_index" (int64, -1 = gap) and
    "<name>_offset_ns" (int64, 0 at gaps), per audio stream "<name>_sample" (float64, NaN = outside).
    """
    tick_t_ns = np.asarray(tick_t_ns, dtype=np.int64)
    tick, t = SYNC_LEAD_COLUMNS
    columns: dict[str, np.ndarray] = {tick: np.asarray(ticks, dtype=np.int64), t: tick_t_ns}
    for name, kind, rate, table in streams:
        if kind == "audio":
            if len(table["t_ns"]) == 0:
                columns[name + SYNC_SAMPLE] = np.full(len(tick_t_ns), np.nan)
                continue
            timeline = AudioTimeline.from_blocks(dict(table), rate)
            columns[name + SYNC_SAMPLE] = timeline.sample_at(tick_t_ns)
            continue
        t_ns = np.asarray(table["t_ns"], dtype=np.int64)
        index = np.asarray(table["index"], dtype=np.int64)
        if len(t_ns) > 1 and np.any(t_ns[1:] < t_ns[:-1]):
            order = np.argsort(t_ns, kind="stable")
            t_ns, index = t_ns[order], index[order]
        row, off = match_frames(tick_t_ns, t_ns, 1e9 / rate, unique=rate >= master_rate * (1 - 1e-6))
        columns[name + SYNC_INDEX] = np.where(row >= 0, index[np.maximum(row, 0)], -1) if len(index) else row
        columns[name + SYNC_OFFSET] = off
    return columns


def summarize(
    columns: Mapping[str, np.ndarray], streams: Sequence[StreamInput], master: str | None
) -> dict[str, dict[str, Any]]:
    """Per-stream matched/gaps and worst/p99/p50 |misalignment| in ns (see the module docstring)."""
    n = len(columns["tick"])
    out: dict[str, dict[str, Any]] = {}
    if master is not None:
        out[master] = {"matched": n, "gaps": 0, "worst_abs_ns": 0, "p99_abs_ns": 0, "p50_abs_ns": 0}
    for name, kind, rate, _ in streams:
        if kind == "audio":
            s = columns[name + SYNC_SAMPLE]
            valid = ~np.isnan(s)
            err = np.abs(np.rint(s[valid]) - s[valid]) * 1e9 / rate
        else:
            valid = columns[name + SYNC_INDEX] >= 0
            err = np.abs(columns[name + SYNC_OFFSET][valid]).astype(np.float64)
        matched = int(valid.sum())
        figures: dict[str, int | None] = {"worst_abs_ns": None, "p99_abs_ns": None, "p50_abs_ns": None}
        if matched:
            worst = np.max(err)
            p99, p50 = np.percentile(err, [99, 50])
            figures = {"worst_abs_ns": int(round(worst)), "p99_abs_ns": int(round(p99)), "p50_abs_ns": int(round(p50))}
        out[name] = {"matched": matched, "gaps": n - matched, **figures}
    return out


# --- the file -----------------------------------------------------------------------------------


def _cells(column: np.ndarray, name: str) -> list[str]:
    if name.endswith(SYNC_SAMPLE):
        return ["" if v != v else f"{v:.3f}" for v in column.tolist()]  # v != v: NaN, outside the samples
    return column.astype(str).tolist()


def format_sync_csv(columns: Mapping[str, np.ndarray]) -> bytes:
    """sync.csv bytes: header, then one line per tick; gaps are empty cells."""
    names = list(columns)
    cells = [_cells(columns[n], n) for n in names]
    for i, name in enumerate(names):
        if name.endswith(SYNC_OFFSET):
            gap = columns[name[: -len(SYNC_OFFSET)] + SYNC_INDEX] < 0
            if gap.any():
                for k in np.flatnonzero(gap).tolist():
                    cells[i - 1][k] = cells[i][k] = ""
    body = "\n".join(map(",".join, zip(*cells)))
    return (",".join(names) + "\n" + body + ("\n" if body else "")).encode()


# --- from a take folder -------------------------------------------------------------------------


def nominal_rate(manifest: dict[str, Any], name: str) -> float:
    """A stream's nominal rate: what its device described (take.json streams), else the rig's setting."""
    spec = next((s for s in manifest["rig"]["streams"] if s["name"] == name), None)
    if spec is None:
        raise TakeError(f"{name}: not a stream of this take's rig")
    key = rate_key(spec["kind"])
    described = (manifest.get("streams", {}).get(name) or {}).get("device") or {}
    value = described.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    return float(spec[key])


def has_sync_columns(kind: str, rate: float) -> bool:
    """Whether a stream has columns in sync.csv: media at a rate. Not a sync box (its pulses are timing),
    markers or an irregular stream (events: no frame period to match a tick within)."""
    return kind not in UNSYNCED_KINDS and rate > 0


def _inputs(take_dir: Path, manifest: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, float, list[StreamInput]]:
    master = manifest["rig"].get("master")
    streams: list[StreamInput] = []
    for spec in manifest["rig"]["streams"]:
        name, kind = spec["name"], spec["kind"]
        if name == master or not has_sync_columns(kind, rate := nominal_rate(manifest, name)):
            continue
        if not (take_dir / table_file(name, kind)).exists():
            continue  # a stream that never recorded has no columns
        table = stream_table(take_dir, name, kind, time_only=True)
        if kind != "audio":
            table = {"index": table["index"], "t_ns": table["t_ns"]}  # drop mocap channel values early
        streams.append((name, kind, rate, table))
    if master is not None:
        if not (take_dir / table_file(master, "camera")).exists():
            raise TakeError(f"{take_dir}: the master camera {master} has no {table_file(master, 'camera')}")
        table = stream_table(take_dir, master, "camera", time_only=True)
        return table["index"], table["t_ns"], nominal_rate(manifest, master), streams
    spans = [(int(t["t_ns"][0]), int(t["t_ns"][-1])) for *_, t in streams if len(t["t_ns"])]
    if not spans:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), SYNTHETIC_RATE, streams
    start, end = min(a for a, _ in spans), max(b for _, b in spans)
    ticks = np.arange(int((end - start) * SYNTHETIC_RATE // 1e9) + 1, dtype=np.int64)
    return ticks, start + np.rint(ticks * (1e9 / SYNTHETIC_RATE)).astype(np.int64), SYNTHETIC_RATE, streams


def build_sync(
    take_dir: Path, manifest: dict[str, Any], *, replace: bool = False, folder: Folder | None = None
) -> dict[str, dict[str, Any]]:
    """Write `<take>/sync.csv` from the t_ns now in the take's tables; return the per-stream summary.

    sync.csv is created exclusively unless `replace` (a rebuild after refitting the clocks). `folder`: the
    take folder already open, which sync.csv is written in.
    """
    take_dir = Path(take_dir)
    ticks, tick_t_ns, master_rate, streams = _inputs(take_dir, manifest)
    columns = sync_table(ticks, tick_t_ns, streams, master_rate=master_rate)
    write_bytes_atomic(take_dir / SYNC, format_sync_csv(columns), replace_existing=replace, folder=folder)
    return summarize(columns, streams, manifest["rig"].get("master"))

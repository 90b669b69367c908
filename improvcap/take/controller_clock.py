"""A capture node's take on its controller's clock: one clock for a take recorded across PCs.

A node records on its own CLOCK_MONOTONIC, and its refit (improvcap.take.refit) puts every stream's t_ns
on that clock, since the node's t0. The controller measures the node's clock against its own while the
take records (liblsl's time_correction, `<node>.node-clock.csv`: LSL_CLOCK_COLUMNS, host_ns since the
controller's t0) and hands those rows to the node at the stop. The node's take then keeps them, and its
manifest's `controller_clock` says how to use them:

    {"node": ..., "file": "<node>.node-clock.csv", "t0_host_ns": <the controller's t0, on its clock>,
     "segments": [...the fit...], "events": true once events.csv is on the controller's clock}

Every refit of the node's take (at the stop, by repair, long after) fits those offsets again and maps each
stored t_ns: t = controller(node_t0 + t) − controller_t0, the same robust line per clock segment as an LSL
stream's (improvcap.lslclock), as improvcap.take.refit writes each stream's refitted t_ns. The raw
columns stay on the node's clock, so a take can always be refitted.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from ..lslclock import OffsetSegment, fit_offsets
from .atomic import Folder, write_bytes_atomic
from .hashing import read_small
from .layout import EVENT_COLUMNS, EVENTS, LSL_CLOCK_COLUMNS
from .manifest import MAX_MANIFEST_BYTES
from .tables import read_table

CONTROLLER_CLOCK = "controller_clock"  # the node take's manifest key


def fit_node_clock(path: Path) -> list[OffsetSegment]:
    """The node's clock lines from a `<node>.node-clock.csv` (ValueError without a row)."""
    rows = read_table(path, columns=LSL_CLOCK_COLUMNS)
    if not len(rows["offset_ns"]):
        raise ValueError(f"{path.name}: no clock offset of the node was measured")
    return fit_offsets(rows["host_ns"], rows["remote_ns"], rows["offset_ns"], rows["rtt_ns"])


def to_controller_ns(segments: list[OffsetSegment], node_ns: np.ndarray) -> np.ndarray:
    """Node clock readings on the controller's clock, by the segment each falls in (the last before it)."""
    node_ns = np.asarray(node_ns, dtype=np.int64)
    starts = np.array([s.ref_device_ns for s in segments], dtype=np.int64)
    which = np.clip(np.searchsorted(starts, node_ns, side="right") - 1, 0, len(segments) - 1)
    out = np.empty_like(node_ns)
    for i, segment in enumerate(segments):
        mask = which == i
        out[mask] = segment.map(node_ns[mask])
    return out


def segment_entries(segments: list[OffsetSegment]) -> list[dict[str, Any]]:
    """The fit as take.json keeps it."""
    return [s.as_dict() | {"fitted": s.fitted} for s in segments]


class ControllerClock:
    """What maps a node take's t_ns onto its controller's: the fit of the offsets its manifest names."""

    def __init__(self, take_dir: Path, manifest: dict[str, Any]) -> None:
        entry = manifest[CONTROLLER_CLOCK]
        self.node_t0_ns = int(manifest["t0_host_ns"])
        self.controller_t0_ns = int(entry["t0_host_ns"])
        self.segments = fit_node_clock(take_dir / Path(str(entry["file"])).name)  # a name, never a path

    def map(self, t_ns: np.ndarray) -> np.ndarray:
        """t_ns since the node's t0 on its clock -> since the controller's t0 on the controller's."""
        return (
            to_controller_ns(self.segments, np.asarray(t_ns, dtype=np.int64) + self.node_t0_ns) - self.controller_t0_ns
        )

    def as_dict(self) -> list[dict[str, Any]]:
        return segment_entries(self.segments)


def controller_clock_entry(node: str, file: str, controller_t0_ns: int) -> dict[str, Any]:
    return {"node": node, "file": file, "t0_host_ns": int(controller_t0_ns), "segments": [], "events": False}


def events_onto(take_dir: Path, clock: ControllerClock, folder: Folder | None = None) -> None:
    """Rewrite events.csv's t_ns onto the controller's clock (once: events have no raw column to refit
    from, so the manifest's `events` flag records that it was done)."""
    path = take_dir / EVENTS
    rows = list(csv.reader(io.StringIO(read_small(path, MAX_MANIFEST_BYTES).decode("utf-8"))))
    if not rows or tuple(rows[0]) != EVENT_COLUMNS:
        raise ValueError(f"{EVENTS}: not a t_ns,kind,stream,detail table")
    body = [r for r in rows[1:] if r]
    mapped = clock.map(np.array([int(r[0]) for r in body], dtype=np.int64)) if body else np.array([], np.int64)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(EVENT_COLUMNS)
    for row, t in zip(body, mapped.tolist()):
        writer.writerow([t, *row[1:]])
    write_bytes_atomic(path, text.getvalue().encode("utf-8"), folder=folder)

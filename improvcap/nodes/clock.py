"""A node's clock on the controller's: liblsl's offsets, polled while a take records, and their fit.

The controller's inlet on a node's advertisement (improvcap.nodes.advert) measures the node's clock as
it measures an LSL sender's: ours = the node's + offset, at the node's time `remote`, over a probe of
round trip `rtt` (liblsl probes every 2 s; polled every POLL_S, a new probe kept once). The rows are the
`<node>.clock.csv` of the controller's take (improvcap.take.layout's LSL clock columns, host_ns since the
take's t0), and `fit_node_clock` is the same robust line per clock segment as an LSL stream's
(improvcap.lslclock): what maps every t_ns the node stored onto the controller's clock, at the stop, in
repair, or long after.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ..devices.lsl_inlet import seconds_to_ns, time_correction_ex
from ..lslclock import POLL_S, OffsetSegment, fit_offsets
from ..take.atomic import Folder
from ..take.layout import LSL_CLOCK_COLUMNS
from ..take.tables import read_table
from ..writers.base import CsvLog
from .advert import FoundNode


class NodeClockLog:
    """`<node>.clock.csv` filled from its own thread until stop()."""

    def __init__(self, node: FoundNode, path: Path, t0_ns: int, folder: Folder | None = None,
                 poll_s: float = POLL_S) -> None:
        self.node, self.path, self.t0_ns, self.poll_s = node, path, t0_ns, poll_s
        self._log = CsvLog(path, LSL_CLOCK_COLUMNS, folder=folder)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"clock-{node.name}", daemon=True)
        self.rows = 0
        self.error: str | None = None   # the last poll that failed (the node gone): the rows before it stay

    def start(self) -> "NodeClockLog":
        self._poll(None)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._log.close()

    def _run(self) -> None:
        last: int | None = None
        while not self._stop.wait(self.poll_s):
            last = self._poll(last)

    def _poll(self, last_remote: int | None) -> int | None:
        try:
            offset, remote, rtt = time_correction_ex(self.node.inlet, 0.0 if last_remote is not None else 2.0)
        except Exception as e:  # no estimate now: a network cut, or the node gone; later polls resume
            self.error = f"{type(e).__name__}: {e}"
            return last_remote
        remote_ns = seconds_to_ns(remote)
        if remote_ns != last_remote:  # a new probe, not the estimate already kept
            offset_ns = seconds_to_ns(offset)
            self._log.row((remote_ns + offset_ns - self.t0_ns, remote_ns, offset_ns, seconds_to_ns(rtt)))
            self._log.flush()
            self.rows += 1
        return remote_ns


def fit_node_clock(path: Path) -> list[OffsetSegment]:
    """The node's clock lines from its `<node>.clock.csv` (ValueError without a row)."""
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

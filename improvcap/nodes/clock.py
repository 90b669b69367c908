"""A node's clock on the controller's: liblsl's offsets, polled while a take records, and their fit.

The controller's inlet on a node's advertisement (improvcap.nodes.advert) measures the node's clock as
it measures an LSL sender's: ours = the node's + offset, at the node's time `remote`, over a probe of
round trip `rtt` (liblsl probes every 2 s; polled every POLL_S, a new probe kept once). The rows are the
`<node>.node-clock.csv` of the controller's take (improvcap.take.layout's LSL clock columns, host_ns since
the take's t0); the node's take gets a copy at the stop, and improvcap.take.controller_clock fits it and
maps every t_ns the node stored onto the controller's clock, at the stop, in repair, or long after.
"""

from __future__ import annotations

import threading
from pathlib import Path

from ..devices.lsl_inlet import seconds_to_ns, time_correction_ex
from ..lslclock import POLL_S
from ..take.atomic import Folder
from ..take.layout import LSL_CLOCK_COLUMNS
from ..writers.base import CsvLog
from .advert import FoundNode


class NodeClockLog:
    """`<node>.node-clock.csv` filled from its own thread until stop()."""

    def __init__(
        self, node: FoundNode, path: Path, t0_ns: int, folder: Folder | None = None, poll_s: float = POLL_S
    ) -> None:
        self.node, self.path, self.t0_ns, self.poll_s = node, path, t0_ns, poll_s
        self._log = CsvLog(path, LSL_CLOCK_COLUMNS, folder=folder)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"clock-{node.name}", daemon=True)
        self.rows = 0
        self.error: str | None = None  # the last poll that failed (the node gone): the rows before it stay

    def start(self) -> NodeClockLog:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._log.close()

    def _run(self) -> None:
        last = self._poll(None)  # liblsl's estimate at hand (it probes from the inlet's first use)
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

"""Sync box writer: `<stream>.csv`, one row per trigger pulse, and `<stream>.roundtrips.csv`, one row per
answered timing query (the raw material of the box's clock fit, so that a take can be refitted later)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..records import MocapFrame, Record
from ..rig import StreamSpec
from ..roundtrip import ROUNDTRIP_COLUMNS, RoundTrip
from .base import CsvLog

PULSE_COLUMNS = ("index", "t_ns", "device_ns", "host_ns", "counter")


class SyncWriter:
    """Pulses: `index,t_ns,device_ns,host_ns,counter` (a mocap CSV without channels; counter = the box's
    pulse count). Round trips: `id,host_send_ns,host_recv_ns,box_ns`, host times in ns since t0."""

    def __init__(self, take_dir: Path, spec: StreamSpec, info: dict[str, Any]) -> None:
        self.path = Path(take_dir) / f"{spec.name}.csv"
        self.roundtrips_path = Path(take_dir) / f"{spec.name}.roundtrips.csv"
        self._pulses = CsvLog(self.path, PULSE_COLUMNS)
        try:
            self._roundtrips = CsvLog(self.roundtrips_path, ROUNDTRIP_COLUMNS)
        except BaseException:
            self._pulses.close()
            raise
        self.files: list[Path] = [self.path, self.roundtrips_path]

    def write(self, record: Record) -> None:
        payload = record.payload
        if isinstance(payload, RoundTrip):
            # record.host_ns is the reply's arrival since t0: it gives t0 for the send time too
            t0 = payload.host_recv_ns - record.host_ns
            self._roundtrips.row((payload.id, payload.host_send_ns - t0, record.host_ns, payload.box_ns))
            return
        frame: MocapFrame = payload
        self._pulses.row((record.index, record.t_ns, record.device_ns, record.host_ns, frame.counter))

    def flush(self) -> None:
        self._pulses.flush()
        self._roundtrips.flush()

    def close(self) -> None:
        try:
            self._pulses.close()
        finally:
            self._roundtrips.close()

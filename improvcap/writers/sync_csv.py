"""Sync box writer: `<stream>.csv`, one row per trigger pulse, and `<stream>.roundtrips.csv`, one row per
answered timing query (the raw material of the box's clock fit, so that a take can be refitted later)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..records import MocapFrame, Record
from ..rig import StreamSpec
from ..roundtrip import RoundTrip
from ..take.atomic import Folder
from ..take.layout import ROUNDTRIP_COLUMNS, SYNC_BOX, roundtrips_file, table_file
from .base import CsvLog


class SyncWriter:
    """Pulses: `index,t_ns,device_ns,host_ns,counter` (a mocap CSV without channels; counter = the box's
    pulse count). Round trips: `id,host_send_ns,host_recv_ns,box_ns`, host times in ns since t0."""

    def __init__(self, take_dir: Path, spec: StreamSpec, info: dict[str, Any], *, folder: Folder | None = None) -> None:
        self.path = Path(take_dir) / table_file(spec.name, "sync")
        self.roundtrips_path = Path(take_dir) / roundtrips_file(spec.name)
        self._pulses = CsvLog(self.path, SYNC_BOX.columns, folder=folder)
        try:
            self._roundtrips = CsvLog(self.roundtrips_path, ROUNDTRIP_COLUMNS, folder=folder)
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

"""Mocap stream writer: `<stream>.csv`, one row per frame received (DESIGN section 5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..records import MocapFrame, Record
from ..rig import StreamSpec
from ..take.atomic import Folder
from ..take.layout import MOCAP, table_file
from .base import CsvLog


class MocapWriter:
    """Rows `index,t_ns,device_ns,host_ns,counter,<channel>...`; values as '%.9g', the precision of a
    float32, so that a binary device's values survive the round trip to text exactly."""

    def __init__(self, take_dir: Path, spec: StreamSpec, info: dict[str, Any], *, folder: Folder | None = None) -> None:
        names = info.get("channel_names") or [f"ch{i:02d}" for i in range(spec.settings["channels"])]
        self.path = Path(take_dir) / table_file(spec.name, "mocap")
        self._log = CsvLog(self.path, [*MOCAP.columns, *names], folder=folder)
        self.files: list[Path] = [self.path]

    def write(self, record: Record) -> None:
        frame: MocapFrame = record.payload
        self._log.row(
            [
                record.index,
                record.t_ns,
                record.device_ns,
                record.host_ns,
                frame.counter,
                *[f"{v:.9g}" for v in frame.values],
            ]
        )

    def flush(self) -> None:
        self._log.flush()

    def close(self) -> None:
        self._log.close()

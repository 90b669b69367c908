"""LSL inlet writer: `<stream>.csv`, one row per sample (a marker stream: `<stream>.markers.csv`, one row per
marker), and `<stream>.clock.csv`, one row per clock offset liblsl measured (the raw material of the final
fit, improvcap.lslclock, so that a take can be refitted)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..lslclock import ClockOffset
from ..records import Record
from ..rig import StreamSpec
from ..take.atomic import Folder
from ..take.layout import LAYOUTS, LSL_CLOCK_COLUMNS, lsl_clock_file, marker_text, table_file
from .base import CsvLog

# each channel format's values at the precision it has: a float32 survives '%.9g' exactly
_FORMATS = {"float32": "%.9g", "double64": "%.17g"}


class LslWriter:
    """Rows `index,t_ns,device_ns,host_ns,<channel>...` (the stream's labels, else ch00...), or for a marker
    stream `index,t_ns,device_ns,host_ns,value`; clock rows `host_ns,remote_ns,offset_ns,rtt_ns`, host_ns
    since t0 (when the offset was measured, on our clock)."""

    def __init__(self, take_dir: Path, spec: StreamSpec, info: dict[str, Any], *, folder: Folder | None = None) -> None:
        self._markers = spec.kind == "markers"
        names = (
            []
            if self._markers
            else info.get("channel_names") or [f"ch{i:02d}" for i in range(int(info.get("channels") or 0))]
        )
        self._format = _FORMATS.get((info.get("lsl") or {}).get("channel_format", ""), "%d")
        self.path = Path(take_dir) / table_file(spec.name, spec.kind)
        self.clock_path = Path(take_dir) / lsl_clock_file(spec.name)
        self._rows = CsvLog(self.path, [*LAYOUTS[spec.kind].columns, *names], folder=folder)
        try:
            self._clock = CsvLog(self.clock_path, LSL_CLOCK_COLUMNS, folder=folder)
        except BaseException:
            self._rows.close()
            raise
        self.files: list[Path] = [self.path, self.clock_path]

    def write(self, record: Record) -> None:
        payload = record.payload
        if isinstance(payload, ClockOffset):
            t0 = payload.polled_ns - record.host_ns  # record.host_ns: the poll since t0
            self._clock.row((payload.host_ns - t0, payload.remote_ns, payload.offset_ns, payload.rtt_ns))
            return
        if self._markers:
            self._rows.row([record.index, record.t_ns, record.device_ns, record.host_ns, marker_text(str(payload))])
            return
        fmt = self._format
        self._rows.row([record.index, record.t_ns, record.device_ns, record.host_ns, *[fmt % v for v in payload]])

    def flush(self) -> None:
        self._rows.flush()
        self._clock.flush()

    def close(self) -> None:
        try:
            self._rows.close()
        finally:
            self._clock.close()

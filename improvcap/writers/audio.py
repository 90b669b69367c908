"""One audio stream of a take: `<stream>.wav` (BWF) and `<stream>.blocks.csv`, one row per received block."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

from ..records import Record
from ..rig import StreamSpec
from ..take.atomic import Folder
from ..take.layout import AUDIO, media_file, table_file
from ..take.wav import WavWriter
from .base import CsvLog


class AudioWriter:
    """Streams an audio stream's blocks into a BWF file and logs each block's times.

    `first_sample` is this writer's own count of frames written, so it always addresses the WAV: blocks
    the device lost leave no hole in the file, and their absence shows as a jump in `device_ns`.
    """

    def __init__(self, take_dir: Path, spec: StreamSpec, info: dict[str, Any], *, folder: Folder | None = None) -> None:
        self.spec = spec
        channels = int(info.get("channels", spec["channels"]))
        samplerate = int(round(info.get("samplerate", spec["samplerate"])))
        sample_format = info.get("sample_format", spec["sample_format"])
        time_reference = int(info.get("time_reference", 0))
        device = info.get("device", spec.get("device", ""))
        # The bext origination time is t0's time of day, as time_reference states it in samples.
        origination = _dt.datetime.now().astimezone()
        if time_reference:
            midnight = origination.replace(hour=0, minute=0, second=0, microsecond=0)
            origination = midnight + _dt.timedelta(seconds=time_reference / samplerate)
        self.wav_path = take_dir / media_file(spec.name, "audio")
        self.csv_path = take_dir / table_file(spec.name, "audio")
        self.files: list[Path] = []
        self._wav = WavWriter(
            self.wav_path,
            channels,
            samplerate,
            sample_format,
            description=f"improvcap take {take_dir.name}, stream {spec.name}: {device} ({spec.driver}, {channels} ch)",
            originator_reference=f"{take_dir.name}/{spec.name}",
            origination=origination,
            time_reference=time_reference,
            ixml=info.get("ixml"),
            folder=folder,
        )
        self.files.append(self.wav_path)
        try:
            self._csv = CsvLog(self.csv_path, AUDIO.columns, folder=folder)
        except BaseException:
            self._wav.close()
            raise
        self.files.append(self.csv_path)

    @property
    def frames(self) -> int:
        return self._wav.frames

    def write(self, record: Record) -> None:
        block = record.payload
        first = self._wav.frames
        self._wav.write(block.data)  # samples before their row: a row never names audio that is not in the file
        self._csv.row(
            (
                first,
                record.t_ns,
                record.device_ns,
                record.host_ns,
                self._wav.frames - first,
                "" if block.adc_ns is None else block.adc_ns,
            )
        )

    def flush(self) -> None:
        self._wav.flush()
        self._csv.flush()

    def close(self) -> None:
        try:
            self._wav.close()
        finally:
            self._csv.close()

"""One take as an MCAP file for lossless review and interchange (it opens in Foxglove).

Every stream at its own rate, one message per recorded row, `log_time` = the take's UTC t0 + t_ns:
cameras as `foxglove.CompressedVideo` (H.264/H.265 in Annex B, one frame a message, as recorded) or
`foxglove.CompressedImage` (MJPEG), audio as `foxglove.RawAudio` (one message per recorded block, the
WAV's own PCM: Foxglove plays `pcm-s16`), mocap, LSL and sync-box rows as JSON-schema messages, markers and
events as `foxglove.Log`. take.json, the consent record and the calibration files are attachments, the
take's identity and the export's consent metadata. Messages are merged across streams in time order, each
stream read forward once: memory stays flat whatever the take's length.
"""

from __future__ import annotations

import base64
import datetime as _dt
import heapq
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import av
from mcap.writer import CompressionType, Writer

from ..errors import TakeError
from ..take.events import read_events
from ..take.hashing import read_small, sha256_file
from ..take.layout import EVENTS, LAYOUTS, MANIFEST, PERFORMERS_RECORD, marker_value, table_file
from ..take.manifest import MAX_MANIFEST_BYTES
from ..take.mkv import open_video, video_packets
from ..take.reader import Take
from ..take.tables import stream_table
from ..take.wav import read_pcm, wav_info

_TIME = {
    "type": "object",
    "properties": {
        "sec": {"type": "integer", "minimum": 0},
        "nsec": {"type": "integer", "minimum": 0, "maximum": 999999999},
    },
}
_BYTES = {"type": "string", "contentEncoding": "base64"}
SCHEMAS: dict[str, dict[str, Any]] = {
    "foxglove.CompressedVideo": {
        "timestamp": _TIME,
        "frame_id": {"type": "string"},
        "data": _BYTES,
        "format": {"type": "string"},
    },
    "foxglove.CompressedImage": {
        "timestamp": _TIME,
        "frame_id": {"type": "string"},
        "data": _BYTES,
        "format": {"type": "string"},
    },
    "foxglove.RawAudio": {
        "timestamp": _TIME,
        "data": _BYTES,
        "format": {"type": "string"},
        "sample_rate": {"type": "integer"},
        "number_of_channels": {"type": "integer"},
    },
    "foxglove.Log": {
        "timestamp": _TIME,
        "level": {"type": "integer"},
        "message": {"type": "string"},
        "name": {"type": "string"},
        "file": {"type": "string"},
        "line": {"type": "integer"},
    },
}
ANNEX_B = {"h264": "h264_mp4toannexb", "hevc": "hevc_mp4toannexb"}
VIDEO_FORMAT = {"h264": "h264", "hevc": "h265"}
LOG_INFO, LOG_ERROR = 2, 4
STOP_POLL = 256  # messages between two looks at a stop request
# one message: (log_time, channel id, JSON body)
Message = tuple[int, int, bytes]


def utc_ns(t0_utc: str) -> int:
    """The take's t0 (ISO 8601 with an offset) as nanoseconds since the Unix epoch, exactly."""
    t = _dt.datetime.fromisoformat(t0_utc)
    if t.tzinfo is None:
        raise TakeError(f"t0_utc {t0_utc!r} has no UTC offset")
    return (t - _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)) // _dt.timedelta(microseconds=1) * 1000


def _stamp(ns: int) -> dict[str, int]:
    return {"sec": ns // 1_000_000_000, "nsec": ns % 1_000_000_000}


def _body(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def _row_schema(title: str, columns: Sequence[str], channels: Sequence[str]) -> dict[str, Any]:
    props: dict[str, Any] = {"timestamp": _TIME, **{c: {"type": "integer"} for c in columns}}
    if channels:
        props["values"] = {"type": "object", "properties": {c: {"type": ["number", "null"]} for c in channels}}
    return {"title": title, "type": "object", "properties": props}


class TakeMcap:
    """Writes one take's MCAP file."""

    def __init__(self, take: Take, consent: Mapping[str, Any], calibration_dir: Path | None = None) -> None:
        self.take, self.m = take, take.manifest
        self.t0 = utc_ns(str(self.m.get("t0_utc")))
        self.consent = consent
        self.calibration_dir = calibration_dir

    def write(self, out: BinaryIO, stop: Callable[[], bool] = lambda: False) -> dict[str, int]:
        """The file into `out`; returns the messages written per topic. `stop` is polled as messages are
        written (KeyboardInterrupt when it says so)."""
        writer = Writer(out, compression=CompressionType.ZSTD)
        writer.start(profile="", library="improvcap")
        schemas: dict[str, int] = {}

        def schema(title: str, doc: dict[str, Any] | None = None) -> int:
            if title not in schemas:
                doc = doc or {"title": title, "type": "object", "properties": SCHEMAS[title]}
                schemas[title] = writer.register_schema(title, "jsonschema", _body(doc))
            return schemas[title]

        sources: list[Iterator[Message]] = []
        topics: dict[int, str] = {}
        for name, info in self.take.streams.items():
            title, source, meta = self._source(name, info.kind)
            sid = schema(title, None if title in SCHEMAS else self._table_schema(name, info.kind, title))
            cid = writer.register_channel(f"/{name}", "json", sid, {"kind": info.kind, **meta})
            topics[cid] = f"/{name}"
            sources.append(source(cid))
        if (self.take.path / EVENTS).is_file():
            cid = writer.register_channel("/events", "json", schema("foxglove.Log"), {"kind": "events"})
            topics[cid] = "/events"
            sources.append(self._events(cid))
        counts = {t: 0 for t in topics.values()}
        for n, (log_time, cid, data) in enumerate(heapq.merge(*sources, key=lambda m: m[0])):
            if n % STOP_POLL == 0 and stop():
                raise KeyboardInterrupt
            writer.add_message(cid, log_time=log_time, publish_time=log_time, data=data, sequence=counts[topics[cid]])
            counts[topics[cid]] += 1
        self._attach(writer)
        writer.finish()
        return counts

    # --- streams ------------------------------------------------------------------------------------

    def _source(self, name: str, kind: str) -> tuple[str, Any, dict[str, str]]:
        if kind == "camera":
            codec = open_video(self.take.media(name, kind)).streams.video[0].codec_context.name
            if codec in ANNEX_B:
                return "foxglove.CompressedVideo", lambda cid: self._video(name, cid, codec), {"codec": codec}
            if codec == "mjpeg":
                return "foxglove.CompressedImage", lambda cid: self._video(name, cid, codec), {"codec": codec}
            raise TakeError(f"{name}: {codec} video has no Foxglove message (H.264, H.265 or MJPEG)")
        if kind == "audio":
            info = wav_info(self.take.media(name, kind))
            return (
                "foxglove.RawAudio",
                lambda cid: self._audio(name, cid, info),
                {"sample_format": str(info["sample_format"])},
            )
        if kind == "markers":
            return "foxglove.Log", lambda cid: self._markers(name, cid), {}
        return f"improvcap.{kind}", lambda cid: self._rows(name, kind, cid), {}

    def _table_schema(self, name: str, kind: str, title: str) -> dict[str, Any]:
        layout = LAYOUTS[kind]
        with open(self.take.path / table_file(name, kind), encoding="utf-8") as fh:
            header = fh.readline().strip().split(",")
        return _row_schema(title, layout.columns, header[len(layout.columns) :])

    def _video(self, name: str, cid: int, codec: str) -> Iterator[Message]:
        t_ns = stream_table(self.take.path, name, "camera", time_only=True)["t_ns"].tolist()
        container = open_video(self.take.media(name, "camera"))
        try:
            stream = container.streams.video[0]
            bsf = av.bitstream.BitStreamFilterContext(ANNEX_B[codec], stream) if codec in ANNEX_B else None
            fmt = VIDEO_FORMAT.get(codec, "jpeg")
            errors: list[str] = []
            i = 0
            for packet in video_packets(container, stream, errors):
                for out in bsf.filter(packet) if bsf is not None else [packet]:
                    if i >= len(t_ns):
                        raise TakeError(f"{name}: more packets than frames.csv rows")
                    log = self.t0 + int(t_ns[i])
                    yield (
                        log,
                        cid,
                        _body(
                            {
                                "timestamp": _stamp(log),
                                "frame_id": name,
                                "format": fmt,
                                "data": base64.b64encode(bytes(out)).decode("ascii"),
                            }
                        ),
                    )
                    i += 1
            if errors or i != len(t_ns):
                raise TakeError(
                    f"{name}: {i} packets for {len(t_ns)} frames.csv rows" + (f" ({errors[0]})" if errors else "")
                )
        finally:
            container.close()

    def _audio(self, name: str, cid: int, info: dict[str, Any]) -> Iterator[Message]:
        blocks = stream_table(self.take.path, name, "audio", time_only=True)
        wav = self.take.media(name, "audio")
        fmt = f"pcm-{info['sample_format']}"
        for first, frames, t in zip(
            blocks["first_sample"].tolist(), blocks["frames"].tolist(), blocks["t_ns"].tolist()
        ):
            log = self.t0 + int(t)
            raw = read_pcm(wav, int(first), int(frames), info)
            yield (
                log,
                cid,
                _body(
                    {
                        "timestamp": _stamp(log),
                        "format": fmt,
                        "sample_rate": info["rate"],
                        "number_of_channels": info["channels"],
                        "data": base64.b64encode(raw).decode("ascii"),
                    }
                ),
            )

    def _rows(self, name: str, kind: str, cid: int) -> Iterator[Message]:
        layout = LAYOUTS[kind]
        n = len(layout.columns)
        with open(self.take.path / table_file(name, kind), encoding="utf-8") as fh:
            header = fh.readline().strip().split(",")
            for line in fh:
                if not line.endswith("\n"):
                    break  # a row cut short by a crash
                cells = line.rstrip("\n").split(",")
                row: dict[str, Any] = {c: int(v) if v else None for c, v in zip(header[:n], cells[:n])}
                log = self.t0 + int(row["t_ns"])
                doc: dict[str, Any] = {"timestamp": _stamp(log), **row}
                if len(header) > n:
                    doc["values"] = {c: (float(v) if v else None) for c, v in zip(header[n:], cells[n:])}
                yield log, cid, _body(doc)

    def _markers(self, name: str, cid: int) -> Iterator[Message]:
        import csv

        with open(self.take.path / table_file(name, "markers"), encoding="utf-8", newline="") as fh:
            rows = csv.reader(fh)
            next(rows, None)
            for row in rows:
                if len(row) != len(LAYOUTS["markers"].columns):
                    continue
                log = self.t0 + int(row[1])
                yield (
                    log,
                    cid,
                    _body(
                        {
                            "timestamp": _stamp(log),
                            "level": LOG_INFO,
                            "name": name,
                            "message": marker_value(row[4]),
                            "file": "",
                            "line": 0,
                        }
                    ),
                )

    def _events(self, cid: int) -> Iterator[Message]:
        for t, kind, stream, detail in sorted(read_events(self.take.path / EVENTS)):
            log = self.t0 + t
            yield (
                log,
                cid,
                _body(
                    {
                        "timestamp": _stamp(log),
                        "level": LOG_ERROR if kind == "fault" else LOG_INFO,
                        "name": kind,
                        "message": f"{stream}: {detail}" if stream else detail,
                        "file": "",
                        "line": 0,
                    }
                ),
            )

    # --- the take's documents -------------------------------------------------------------------------

    def _attach(self, writer: Writer) -> None:
        m = self.m
        writer.add_metadata(
            "improvcap.take",
            {
                k: str(m.get(k))
                for k in (
                    "session",
                    "scene",
                    "take",
                    "status",
                    "t0_utc",
                    "timecode",
                    "duration_s",
                    "rig_sha256",
                    "performers_sha256",
                )
            },
        )
        writer.add_metadata("improvcap.consent", {k: json.dumps(v, sort_keys=True) for k, v in self.consent.items()})
        documents = [
            (MANIFEST, "application/json", self.take.path / MANIFEST),
            (PERFORMERS_RECORD, "application/json", self.take.path / PERFORMERS_RECORD),
        ]
        for rel, want in calibration_files(m):
            if (
                self.calibration_dir is not None
                and (path := self.calibration_dir / rel).is_file()
                and sha256_file(path) == want
            ):
                documents.append((f"calibration/{rel}", "application/toml", path))
        for name, media, path in documents:
            if path.is_file():
                writer.add_attachment(
                    create_time=self.t0,
                    log_time=self.t0,
                    name=name,
                    media_type=media,
                    data=read_small(path, MAX_MANIFEST_BYTES),
                )


def calibration_files(manifest: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(file name, sha256) of the calibration files the take recorded. Only the name is taken from the
    take, never its folder: the files are looked for in the studio's calibration folder and attached only
    when their hash is the recorded one."""
    files = (manifest.get("calibration") or {}).get("files") or {}
    out = []
    for entry in files.values() if isinstance(files, dict) else []:
        if isinstance(entry, dict) and isinstance(entry.get("path"), str) and isinstance(entry.get("sha256"), str):
            name = Path(entry["path"]).name
            if name not in ("", ".", ".."):
                out.append((name, entry["sha256"]))
    return out

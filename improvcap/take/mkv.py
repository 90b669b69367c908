"""Reading a take's Matroska video: a short-probe open, the packets of its video stream, torn-end checks.

Shared by verify (packet counts against frames.csv), repair (what survived a crash) and slate detection.
Only demuxing here, no decoding: a take's cameras are checked without spending a decoder on them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from ..errors import TakeError

EBML_SEGMENT = 0x18538067
_PROBE_OPTIONS = {"probesize": "32", "fpsprobesize": "0"}


def open_video(mkv: Path) -> Any:
    """The file opened for reading with a short probe. FFmpeg's default probe decodes about seven frames
    (to guess H.264's reorder delay, which the decoder finds by itself) and reads a second of packets for a
    frame rate nothing here uses; the first packet gives the decoder all it needs (the same frames decode:
    tested). Per open of a 720p lossless file, 13 ms → 6 ms of CPU."""
    return av.open(str(mkv), options=_PROBE_OPTIONS)


def video_packets(container: Any, stream: Any, errors: list[str], file_size: int | None = None) -> Iterator[Any]:
    """Every non-empty packet of `stream`, in file order. A demuxing error ends the walk and is appended
    to `errors`; with `file_size`, packets reaching beyond it (a cut file) are skipped and noted once."""
    cut = False
    try:
        for packet in container.demux(stream):
            if not packet.size:  # the demuxer ends with an empty flush packet
                continue
            if (
                file_size is not None
                and packet.pos is not None
                and packet.pos >= 0
                and packet.pos + packet.size > file_size
            ):
                if not cut:
                    errors.append("a packet runs past the end of the file")
                    cut = True
                continue
            yield packet
    except av.FFmpegError as e:
        errors.append(str(e))


def count_packets(mkv: Path, container: Any) -> tuple[np.ndarray, str | None]:
    """pts of every packet of the file's first video stream, by demuxing only (no decoding), and the
    error that stopped the demuxer early (None when it read to the end). `container`: open_video(mkv)."""
    if not container.streams.video:
        raise ValueError(f"{mkv.name}: no video stream")
    errors: list[str] = []
    pts = [-1 if p.pts is None else int(p.pts) for p in video_packets(container, container.streams.video[0], errors)]
    return np.asarray(pts, np.int64), errors[0] if errors else None


def ms_per_tick(stream: Any) -> Fraction:
    """Milliseconds per pts unit of a video stream (a take's Matroska time base is 1 ms)."""
    return Fraction(stream.time_base or Fraction(1, 1000)) * 1000


@dataclass
class MkvScan:
    pts: list[int]  # ms, of every complete packet of the first video stream, in file order
    torn: bool  # the file ends inside an element, or demuxing stopped on an error
    complete: int
    finished: bool  # the muxer wrote its end (a duration): a crash leaves a file without one
    width: int | None
    height: int | None
    codec: str | None


def scan_mkv(path: Path) -> MkvScan:
    """Demux (no decoding) the first video stream of a Matroska file; TakeError when it cannot be read."""
    size = path.stat().st_size
    torn = ebml_torn(path)
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as e:
        raise TakeError(f"{path.name} cannot be opened: {' '.join(str(e).split()) or type(e).__name__}") from None
    with container:
        if not container.streams.video:
            raise TakeError(f"{path.name} has no video stream")
        stream = container.streams.video[0]
        ms = ms_per_tick(stream)
        errors: list[str] = []
        pts = [int(round(p.pts * ms)) for p in video_packets(container, stream, errors, size) if p.pts is not None]
        ctx = stream.codec_context
        return MkvScan(
            pts,
            torn or bool(errors),
            len(pts),
            container.duration is not None,
            ctx.width or None,
            ctx.height or None,
            ctx.name,
        )


def _vint(data: bytes, marker: bool) -> tuple[int, int, bool] | None:
    """An EBML variable-length integer: (value, length, all ones = unknown size); None if cut short."""
    if not data or data[0] == 0:
        return None
    length = 9 - data[0].bit_length()
    if len(data) < length:
        return None
    value = data[0] & (0xFF >> length) if marker else data[0]
    for byte in data[1:length]:
        value = value << 8 | byte
    return value, length, marker and value == (1 << (7 * length)) - 1


def ebml_torn(path: Path) -> bool:
    """Whether a Matroska file ends inside a top-level element (a cluster cut by a crash or a copy).

    Walks the EBML header and the Segment's children by their sizes only. A Segment of unknown size (as
    a crash leaves it) runs to the end of the file; an element of unknown size cannot be checked this
    way, so it counts as intact and demuxing decides.
    """
    size = path.stat().st_size
    pos, end = 0, size
    with open(path, "rb") as fh:
        while pos < end:
            fh.seek(pos)
            head = fh.read(12)
            ident = _vint(head, marker=False)
            if ident is None:
                return True
            length = _vint(head[ident[1] :], marker=True)
            if length is None:
                return True
            start = pos + ident[1] + length[1]
            if ident[0] == EBML_SEGMENT:
                pos = start
                if not length[2]:
                    end = start + length[0]
                    if end > size:
                        return True
                continue
            if length[2]:
                return False
            if start + length[0] > size:
                return True
            pos = start + length[0]
    return pos > end

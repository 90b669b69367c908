"""Streaming Broadcast WAV (EBU Tech 3285) written by hand, so that a crash leaves a repairable file.

Layout: RIFF/WAVE, a 28-byte JUNK chunk reserved for an RF64 `ds64` (EBU Tech 3306: a file that outgrows
4 GiB is turned into RF64 in place), `fmt `, `fact` (IEEE float only, as the WAVE spec requires for
non-PCM formats), `bext` (v1), `iXML` (a fixed room, rewritten in place: ixml.py) and `data` last. PCM is
appended as blocks arrive; the RIFF/data sizes are patched on every flush (at least once a second) and at
close, and `repair_wav_header` restores them from the file length after a crash.
"""

from __future__ import annotations

import datetime as _dt
import os
import struct
import time
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..errors import TakeError
from .atomic import Folder, create_take_file

WAVE_FORMAT_PCM = 0x0001
WAVE_FORMAT_IEEE_FLOAT = 0x0003
WAVE_FORMAT_EXTENSIBLE = 0xFFFE
FORMATS = {"s16": (WAVE_FORMAT_PCM, 16), "s24": (WAVE_FORMAT_PCM, 24), "f32": (WAVE_FORMAT_IEEE_FLOAT, 32)}
BEXT_FIXED = 602  # bext v1: every field up to and including the reserved block
BEXT_TIME_REFERENCE = 338  # its offset in the chunk: after description, originator, reference, date, time
DS64_SIZE = 28  # riffSize u64, dataSize u64, sampleCount u64, tableLength u32
U32_MAX = 0xFFFFFFFF


def _chunk(tag: bytes, body: bytes) -> bytes:
    return tag + struct.pack("<I", len(body)) + body + (b"\0" if len(body) % 2 else b"")


def _ascii(text: str, size: int) -> bytes:
    return text.encode("ascii", "replace")[:size].ljust(size, b"\0")


def bext_body(
    *,
    description: str,
    originator: str,
    originator_reference: str,
    origination: _dt.datetime,
    time_reference: int,
    coding_history: str,
) -> bytes:
    """The `bext` chunk body, version 1 layout (UMID left zero, loudness fields are v2 and stay reserved)."""
    fixed = (
        _ascii(description, 256)
        + _ascii(originator, 32)
        + _ascii(originator_reference, 32)
        + _ascii(origination.strftime("%Y-%m-%d"), 10)
        + _ascii(origination.strftime("%H:%M:%S"), 8)
        + struct.pack("<IIH", time_reference & U32_MAX, time_reference >> 32, 1)
        + bytes(64)
    )
    fixed = fixed.ljust(BEXT_FIXED, b"\0")
    history = coding_history.encode("ascii", "replace")
    return fixed + history + (b"\0" if len(history) % 2 else b"")


def to_format(data: np.ndarray, sample_format: str) -> bytes:
    """Little-endian frame bytes of `data` (frames, channels) in the file's format.

    float input is full scale at ±1.0 and clipped; int16 and int32 are full-scale integers (int32 carries
    24-bit converters in its top bits, as PortAudio delivers them).
    """
    kind = data.dtype.kind
    if sample_format == "f32":
        if kind == "f":
            out = data.astype("<f4", copy=False)
        else:
            out = (data.astype(np.float64) / (32768.0 if data.dtype.itemsize == 2 else 2147483648.0)).astype("<f4")
        return out.tobytes()
    bits = 16 if sample_format == "s16" else 24
    if kind == "f":
        scale = float(1 << (bits - 1))
        ints = np.clip(np.rint(data.astype(np.float64) * scale), -scale, scale - 1).astype("<i4")
    elif data.dtype.itemsize == 2:
        ints = data.astype("<i4") << (bits - 16)
    else:
        ints = data.astype("<i4") >> (32 - bits)
    if bits == 16:
        return ints.astype("<i2").tobytes()
    return ints.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()


class WavWriter:
    """Appends frames to a new BWF file; never overwrites (exclusive create)."""

    def __init__(
        self,
        path: Path,
        channels: int,
        samplerate: int,
        sample_format: str = "s24",
        *,
        description: str = "",
        originator: str = "improvcap",
        originator_reference: str = "",
        origination: _dt.datetime | None = None,
        time_reference: int = 0,
        ixml: bytes | None = None,
        flush_interval: float = 1.0,
        riff_limit: int = U32_MAX,
        folder: Folder | None = None,
    ) -> None:
        """`ixml`: the iXML chunk's body (ixml.document); `folder`: `path`'s folder, already open, which the
        file is made in."""
        if sample_format not in FORMATS:
            raise ValueError(f"unknown sample format {sample_format!r} (expected s16, s24, f32)")
        self.path = Path(path)
        self.channels = channels
        self.samplerate = samplerate
        self.sample_format = sample_format
        tag, bits = FORMATS[sample_format]
        self.block_align = channels * bits // 8
        self.frames = 0
        self._riff_limit = riff_limit  # RF64 beyond this RIFF size; lowered only to exercise RF64 cheaply
        self._rf64 = False
        self._interval = flush_interval
        self._last_flush = time.monotonic()

        fmt = struct.pack("<HHIIHH", tag, channels, samplerate, samplerate * self.block_align, self.block_align, bits)
        if tag != WAVE_FORMAT_PCM:
            fmt += struct.pack("<H", 0)  # cbSize: non-PCM fmt chunks carry it
        layout = b"WAVE" + _chunk(b"JUNK", bytes(DS64_SIZE)) + _chunk(b"fmt ", fmt)
        self._fact_at: int | None = None
        if tag != WAVE_FORMAT_PCM:
            self._fact_at = 8 + len(layout) + 8  # file offset of dwSampleLength
            layout += _chunk(b"fact", struct.pack("<I", 0))
        mode = {1: "mono", 2: "stereo"}.get(channels, "multichannel")
        history = f"A=PCM,F={samplerate},W={bits},M={mode},T=improvcap\r\n"
        origination = origination or _dt.datetime.now().astimezone()
        layout += _chunk(
            b"bext",
            bext_body(
                description=description,
                originator=originator,
                originator_reference=originator_reference,
                origination=origination,
                time_reference=time_reference,
                coding_history=history,
            ),
        )
        if ixml is not None:
            layout += _chunk(b"iXML", ixml)
        self._data_size_at = 8 + len(layout) + 4
        self.data_offset = self._data_size_at + 4
        header = b"RIFF" + struct.pack("<I", U32_MAX) + layout + b"data" + struct.pack("<I", U32_MAX)
        # Exclusive create; the placeholder sizes (0xFFFFFFFF: "up to the end") hold until the first flush.
        self._fh: BinaryIO = open(create_take_file(self.path, folder), "wb")
        self._fh.write(header)
        self._fh.flush()

    def write(self, data: np.ndarray) -> None:
        if data.ndim == 1:
            data = data.reshape(-1, 1)
        if data.shape[1] != self.channels:
            raise TakeError(f"{self.path.name}: block has {data.shape[1]} channels, file has {self.channels}")
        self._fh.write(to_format(data, self.sample_format))
        if time.monotonic() - self._last_flush >= self._interval:
            self._fh.flush()  # first: frames count only what the OS took (a full disk refuses the rest)
            self.frames += data.shape[0]
            self.flush()
        else:
            self.frames += data.shape[0]

    def flush(self) -> None:
        """Hand buffered frames to the OS and make the header describe them (all complete frames)."""
        if self._fh.closed:
            return
        self._fh.flush()
        if self.frames:  # until then the placeholders keep saying "data runs to the end of the file"
            self._patch(self.frames * self.block_align)
        self._last_flush = time.monotonic()

    def close(self) -> None:
        """Finish the file with exactly the frames counted: after a failed write (a full disk) the bytes of
        the block that failed, whether or not some reached the file, are cut with it."""
        if self._fh.closed:
            return
        fd = os.dup(self._fh.fileno())
        try:
            try:
                self._fh.close()  # hands the buffer to the OS; what it refuses is dropped with the file object
            except OSError:
                pass
            on_disk = max(0, os.fstat(fd).st_size - self.data_offset) // self.block_align
            self.frames = min(self.frames, on_disk)
            data_size = self.frames * self.block_align
            os.ftruncate(fd, self.data_offset + data_size)
            if data_size % 2:
                os.pwrite(fd, b"\0", self.data_offset + data_size)  # RIFF pads odd chunks; not part of the data
            self._patch(data_size, fd)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _patch(self, data_size: int, fd: int | None = None) -> None:
        self._rf64 = _write_sizes(
            self._fh.fileno() if fd is None else fd,
            self.data_offset,
            data_size,
            self.block_align,
            self._fact_at,
            self._rf64,
            self._riff_limit,
        )


def _write_sizes(
    fd: int,
    data_offset: int,
    data_size: int,
    block_align: int,
    fact_at: int | None,
    rf64: bool,
    riff_limit: int = U32_MAX,
) -> bool:
    """Patch RIFF, data and fact sizes in place (pwrite: the buffered writer's position is untouched).

    Returns whether the file is now RF64. Once RF64, always RF64: readers may already have seen it.
    """
    riff_size = data_offset + data_size + data_size % 2 - 8
    frames = data_size // block_align
    if rf64 or riff_size > riff_limit:
        os.pwrite(fd, b"ds64" + struct.pack("<IQQQI", DS64_SIZE, riff_size, data_size, frames, 0), 12)
        os.pwrite(fd, struct.pack("<I", U32_MAX), data_offset - 4)
        if fact_at is not None:
            os.pwrite(fd, struct.pack("<I", U32_MAX), fact_at)
        os.pwrite(fd, b"RF64" + struct.pack("<I", U32_MAX), 0)  # last: the magic announces a complete ds64
        return True
    os.pwrite(fd, struct.pack("<I", data_size), data_offset - 4)
    if fact_at is not None:
        os.pwrite(fd, struct.pack("<I", frames), fact_at)
    os.pwrite(fd, struct.pack("<I", riff_size), 4)
    return False


# --- reading ------------------------------------------------------------------------------------


def _parse(path: Path, f: BinaryIO | None = None) -> dict[str, Any]:
    """Chunks up to `data`: format fields, bext fields, where data starts and its declared size. `f`: the
    file already open (read from its start), else `path` is opened."""
    if f is None:
        with open(path, "rb") as fh:
            return _parse(path, fh)
    f.seek(0)
    head = f.read(12)
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
        raise TakeError(f"{path}: not a WAV file")
    info: dict[str, Any] = {
        "rf64": head[:4] == b"RF64",
        "description": "",
        "originator": "",
        "time_reference": None,
        "coding_history": "",
        "fact_at": None,
        "ds64_slot": False,
        "ixml": None,
    }
    ds64_data: int | None = None
    while True:
        ch = f.read(8)
        if len(ch) < 8:
            raise TakeError(f"{path}: no data chunk (header incomplete)")
        tag, size = ch[:4], struct.unpack("<I", ch[4:])[0]
        at = f.tell()
        if at == 20 and tag in (b"JUNK", b"ds64") and size == DS64_SIZE:
            info["ds64_slot"] = True  # room to become RF64 in place
        if tag == b"data":
            if info.get("channels") is None:
                raise TakeError(f"{path}: data chunk before fmt chunk")
            info["data_offset"] = at
            declared = ds64_data if info["rf64"] and ds64_data is not None and size == U32_MAX else size
            info["declared_size"] = declared
            return info
        body = f.read(min(size, 1 << 20))
        if len(body) < min(size, 1 << 20):
            raise TakeError(f"{path}: truncated {tag.decode('latin-1')!r} chunk")
        if tag == b"fmt ":
            if len(body) < 16:
                raise TakeError(f"{path}: fmt chunk of {len(body)} bytes, a WAV's has at least 16")
            fmt_tag, info["channels"], info["rate"], _, info["block_align"], info["bits"] = struct.unpack(
                "<HHIIHH", body[:16]
            )
            if (
                not info["channels"]
                or not info["rate"]
                or info["block_align"] != info["channels"] * ((info["bits"] + 7) // 8)
                or not info["bits"]
            ):
                raise TakeError(
                    f"{path}: not a usable WAV: {info['channels']} channels, {info['rate']} Hz, "
                    f"{info['bits']} bits, {info['block_align']} bytes per frame"
                )
            if fmt_tag == WAVE_FORMAT_EXTENSIBLE and len(body) >= 26:
                fmt_tag = struct.unpack("<H", body[24:26])[0]  # first two bytes of the SubFormat GUID
            info["format"] = {WAVE_FORMAT_PCM: "pcm", WAVE_FORMAT_IEEE_FLOAT: "float"}.get(fmt_tag, hex(fmt_tag))
        elif tag == b"fact":
            info["fact_at"] = at
        elif tag == b"iXML":
            info["ixml"] = (at, size)
        elif tag == b"ds64":
            ds64_data = struct.unpack("<Q", body[8:16])[0]
        elif tag == b"bext" and len(body) >= BEXT_FIXED:
            info["bext_at"] = at
            info["description"] = body[:256].rstrip(b"\0").decode("ascii", "replace")
            info["originator"] = body[256:288].rstrip(b"\0").decode("ascii", "replace")
            lo, hi = struct.unpack("<II", body[BEXT_TIME_REFERENCE : BEXT_TIME_REFERENCE + 8])
            info["time_reference"] = lo | hi << 32
            info["coding_history"] = body[BEXT_FIXED:].rstrip(b"\0").decode("ascii", "replace")
        f.seek(at + size + size % 2)


def wav_info(path: Path | str) -> dict[str, Any]:
    """Format, channels, rate (alias samplerate), bits, frames, frames_on_disk, time_reference, description, ...

    `frames` is what the header declares (whatever is on disk while it still holds placeholders);
    `frames_on_disk` is what `repair_wav_header` would keep; `header_complete` says whether they agree.
    """
    path = Path(path)
    p = _parse(path)
    on_disk = max(0, path.stat().st_size - p["data_offset"]) // p["block_align"]
    declared = p["declared_size"]
    frames = on_disk if declared in (U32_MAX, 0) and on_disk else declared // p["block_align"]
    sample_format = {("pcm", 16): "s16", ("pcm", 24): "s24", ("float", 32): "f32"}.get((p["format"], p["bits"]))
    return {
        "format": p["format"],
        "sample_format": sample_format,
        "channels": p["channels"],
        "rate": p["rate"],
        "samplerate": p["rate"],
        "bits": p["bits"],
        "block_align": p["block_align"],
        "frames": frames,
        "frames_on_disk": on_disk,
        "header_complete": declared not in (U32_MAX, 0) and declared // p["block_align"] == on_disk,
        "rf64": p["rf64"],
        "data_offset": p["data_offset"],
        "time_reference": p["time_reference"],
        "description": p["description"],
        "originator": p["originator"],
        "coding_history": p["coding_history"],
    }


def ixml_span(path: Path | str) -> tuple[int, int] | None:
    """(offset, size) of the WAV's iXML chunk body, None when it has none."""
    return _parse(Path(path))["ixml"]


def set_time_reference(fd: int, layout_of: Path | str, samples: int) -> bool:
    """Set the bext time_reference of the WAV open as `fd` (laid out as `layout_of`) in place; False
    without bext."""
    at = _parse(Path(layout_of)).get("bext_at")
    if at is None:
        return False
    os.pwrite(fd, struct.pack("<II", samples & U32_MAX, samples >> 32), at + BEXT_TIME_REFERENCE)
    return True


def read_ixml(path: Path | str) -> bytes | None:
    """The WAV's iXML document (its padding stripped), None when it has none."""
    span = ixml_span(path)
    if span is None:
        return None
    with open(path, "rb") as f:
        f.seek(span[0])
        return f.read(span[1]).rstrip(b" \0")


def read_pcm(path: Path | str, start: int = 0, frames: int | None = None, info: dict[str, Any] | None = None) -> bytes:
    """The data bytes of frames [start, start+frames), as stored (interleaved little-endian PCM). `info`:
    wav_info(path) already read (a reader walking a file in pieces parses its header once)."""
    info = info or wav_info(path)
    ba = info["block_align"]
    count = max(0, info["frames"] - start) if frames is None else max(0, min(frames, info["frames"] - start))
    with open(path, "rb") as f:
        f.seek(info["data_offset"] + start * ba)
        return f.read(count * ba)


def pcm_ints(raw: bytes, sample_format: str | None, channels: int) -> np.ndarray:
    """Stored PCM as integers (frames, channels): s16 as int16, s24 as int32 scaled to 32 bits (the 24
    bits in the top three bytes, as FLAC and FFmpeg's s32 hold 24-bit audio). Exact: no sample changes."""
    if sample_format == "s16":
        return np.frombuffer(raw, "<i2").reshape(-1, channels)
    if sample_format == "s24":
        # each 3-byte sample into the top of a little-endian int32 (a byte copy: 9x faster than shifts)
        wide = np.zeros((len(raw) // 3, 4), np.uint8)
        wide[:, 1:] = np.frombuffer(raw, np.uint8).reshape(-1, 3)
        return wide.view("<i4").reshape(-1, channels)
    raise TakeError(f"not integer PCM: {sample_format}")


def read_wav(path: Path | str, start: int = 0, frames: int | None = None) -> np.ndarray:
    """Frames [start, start+frames) as float32 (frames, channels), full scale ±1.0."""
    info = wav_info(path)
    raw, ch, fmt = read_pcm(path, start, frames, info), info["channels"], info["sample_format"]
    if fmt == "f32":
        return np.frombuffer(raw, "<f4").reshape(-1, ch).copy()
    if fmt in ("s16", "s24"):
        return pcm_ints(raw, fmt, ch).astype(np.float32) / (32768.0 if fmt == "s16" else 2147483648.0)
    raise TakeError(f"{path}: unsupported sample format {info['format']} {info['bits']}-bit")


def repair_wav_header(path: Path | str, f: BinaryIO | None = None) -> int:
    """Restore RIFF/data/fact sizes from the length on disk after a crash; returns the frames kept.

    The data chunk must be the file's last chunk (as WavWriter writes it). A torn last frame is cut off.
    `f`: the file already open for reading and writing (else `path` is opened).
    """
    path = Path(path)
    if f is None:
        with open(path, "r+b") as fh:
            return repair_wav_header(path, fh)
    p = _parse(path, f)
    ba, offset = p["block_align"], p["data_offset"]
    frames = max(0, os.fstat(f.fileno()).st_size - offset) // ba
    data_size = frames * ba
    if offset + data_size - 8 > U32_MAX and not (p["rf64"] or p["ds64_slot"]):
        raise TakeError(f"{path}: {data_size} bytes of data need RF64, but the file has no room for a ds64 chunk")
    f.truncate(offset + data_size)
    if data_size % 2:
        f.seek(offset + data_size)
        f.write(b"\0")
        f.flush()
    _write_sizes(f.fileno(), offset, data_size, ba, p["fact_at"], p["rf64"])
    os.fsync(f.fileno())
    return frames

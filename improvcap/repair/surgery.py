"""File surgery on a take: torn CSV tails cut, rows kept by mask, media cut to their timed part.

Every rewrite goes through a hidden temporary (`.<file>.repair`, created inside the opened take folder,
never through a link: improvcap.take.atomic) that is fsynced and renamed into place; a media file that
loses data is first hard-linked as `<file>.orig`, so at every moment the original bytes exist under one
of the names. Files are read only when they are regular files, not links.
"""

from __future__ import annotations

import csv
import itertools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import av
import numpy as np

from ..errors import TakeError
from ..take.atomic import REPAIR_TAG, Folder, rewriting, temporary_name
from ..take.hashing import open_regular
from ..take.layout import is_original_of, original_name
from ..take.mkv import ms_per_tick, video_packets
from ..take.wav import repair_wav_header, wav_info

TAIL_BYTES = 1 << 20
COPY_CHUNK = 1 << 24


def _fields(line: bytes) -> list[str]:
    return next(csv.reader([line.decode("utf-8", "replace").rstrip("\r\n")]), [])


def torn_tail(path: Path) -> tuple[int, int]:
    """(bytes to keep, rows to drop) for a CSV whose last row may be torn.

    Torn: text after the last line end (a row cut short), NUL bytes (blocks a power cut never wrote), or
    a last complete row with another number of fields than the header.
    """
    with _read(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        header = fh.readline()
        if not header.endswith(b"\n") or b"\0" in header:
            raise TakeError(f"{path.name}: no complete header line")
        width = len(_fields(header))
        start = max(len(header), size - TAIL_BYTES)
        fh.seek(start)
        tail = fh.read()
    cut = tail.rfind(b"\n")
    if cut < 0 and start > len(header):
        raise TakeError(f"{path.name}: its last line is longer than {TAIL_BYTES} bytes")
    end = start + cut + 1
    dropped = 1 if end < size else 0
    if end > len(header):
        prev = tail.rfind(b"\n", 0, cut)
        if prev < 0 and start > len(header):
            raise TakeError(f"{path.name}: its last line is longer than {TAIL_BYTES} bytes")
        line_start = start + prev + 1
        line = tail[prev + 1 : cut + 1]
        if b"\0" in line or len(_fields(line)) != width:
            end, dropped = line_start, dropped + 1
    return end, dropped


def rewrite_csv(path: Path, end: int, keep: np.ndarray | None = None, append: bytes = b"") -> None:
    """Replace `path` by its first `end` bytes, or its header and the data rows where `keep` is True, then
    the rows in `append`.

    Written to a hidden temporary file, fsynced, renamed over the original, folder fsynced.
    """
    with _read(path) as src, rewriting(path, REPAIR_TAG) as dst:
        if keep is None:
            copy_bytes(src, dst, end)
        else:
            dst.write(src.readline())
            rows = 0
            for i, line in enumerate(src):
                if i >= len(keep):
                    raise TakeError(f"{path.name}: more rows than expected")
                if keep[i]:
                    dst.write(line)
                rows += 1
            if rows != len(keep):
                raise TakeError(f"{path.name}: fewer rows than expected")
        dst.write(append)


def copy_bytes(src: Any, dst: Any, count: int) -> None:
    """The first `count` bytes of src into dst, in the kernel where it can (reflinks on btrfs/XFS)."""
    src.seek(0)
    done = 0
    try:
        while done < count:
            n = os.copy_file_range(src.fileno(), dst.fileno(), min(COPY_CHUNK, count - done), done, done)
            if n == 0:
                break
            done += n
    except OSError:
        pass  # not supported here: copy the rest in user space
    src.seek(done)
    dst.seek(done)
    while done < count:
        block = src.read(min(COPY_CHUNK, count - done))
        if not block:
            break
        dst.write(block)
        done += len(block)
    if done != count:
        raise TakeError(f"{src.name}: shorter than expected ({done} of {count} bytes)")


def keep_original(path: Path, folder: Folder) -> str:
    """Hard-link `path` as `<name>.orig` (or `.orig2`, ... if taken) in its open `folder`: the bytes stay
    whatever replaces it. Returns the original's name."""
    for n in itertools.count(1):
        original = original_name(path.name, n)
        try:
            folder.link(path.name, original)
            return original
        except FileExistsError:
            if not folder.is_link(original) and folder.same_file(path.name, original):
                return original  # an earlier repair was cut off right here
        except OSError:  # no hard links on this file system (exFAT, FAT): copy instead
            try:
                fd = folder.create(original)
            except FileExistsError:
                continue
            with _read(path) as src, os.fdopen(fd, "wb") as dst:
                copy_bytes(src, dst, os.fstat(src.fileno()).st_size)
                dst.flush()
                os.fsync(dst.fileno())
            return original
    raise AssertionError("unreachable")


def originals_of(path: Path) -> list[Path]:
    """The originals repair kept of `path` (`<name>.orig`, `.orig2`, ...)."""
    return sorted(p for p in path.parent.iterdir() if is_original_of(path.name, p.name))


def replace_keeping_original(path: Path, write: Callable[[BinaryIO], None]) -> Path:
    """Replace `path` by what `write(fh)` writes into a new temporary file, after hard-linking the original
    as `<name>.orig`; returns the original's path. A failed write leaves `path` as it was."""
    with Folder(path.parent) as folder:
        tmp = temporary_name(path.name, REPAIR_TAG)
        try:
            with os.fdopen(folder.fresh(tmp), "w+b") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            folder.unlink(tmp)
            raise
        original = keep_original(path, folder)
        folder.replace(tmp, path.name)
        folder.sync()
    return path.with_name(original)


def remux_mkv(path: Path, keep_pts: set[int]) -> Path:
    """Rewrite `path` with only the video packets whose pts (ms) are in `keep_pts` (stream copy, pts and
    dts kept), after hard-linking the original as `<name>.orig`; returns the original's path."""

    def write(fh: BinaryIO) -> None:
        with _read(path) as raw, av.open(raw) as src, av.open(fh, "w", format="matroska") as dst:
            size = os.fstat(raw.fileno()).st_size
            video = src.streams.video[0]
            out = dst.add_stream_from_template(video)
            out.metadata.update({k: v for k, v in video.metadata.items() if k.upper() != "DURATION"})
            if src.metadata.get("title"):
                dst.metadata["title"] = src.metadata["title"]
            ms = ms_per_tick(video)
            for packet in video_packets(src, video, [], size):  # a torn end: everything before it is in
                if packet.pts is None or packet.dts is None or int(round(packet.pts * ms)) not in keep_pts:
                    continue
                packet.stream = out
                dst.mux(packet)

    return replace_keeping_original(path, write)


def cut_wav(path: Path, frames: int) -> Path:
    """Rewrite a WAV with its first `frames` frames only, after hard-linking the original as `.orig`."""
    info = wav_info(path)

    def write(fh: BinaryIO) -> None:
        with _read(path) as src:
            copy_bytes(src, fh, info["data_offset"] + frames * info["block_align"])
        repair_wav_header(path, fh)  # sizes from the length: exactly `frames`

    return replace_keeping_original(path, write)


def _read(path: Path) -> BinaryIO:
    """`path` opened for reading, refused if it is a link or not a regular file."""
    return os.fdopen(open_regular(path), "rb")

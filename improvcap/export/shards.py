"""WebDataset shards: tar files of whole samples, written in one pass, each byte once.

A member's size is known only once it is written (a remuxed MP4, a FLAC), so its header is reserved, the
content streamed in place after it (the muxers seek inside their member, never outside), and the header
written last. A shard is written under a hidden temporary name and linked to `shard-NNNNNN.tar` when it is
closed: a name that exists is never overwritten, and no half-written shard ever has a final name. A
sample that fails half-way is cut off again, so a shard holds only whole samples; on an interruption the
shard written so far is closed with its whole samples (or removed when it cannot be).
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO

from ..take.atomic import Folder, temporary_name
from ..take.layout import FILE_MODE

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

BLOCK = 512
END_OF_ARCHIVE = b"\0" * (2 * BLOCK)
SHARD_NAME = "shard-{:06d}.tar"
CHUNK = 1 << 20  # bytes read back at a time to hash


class MemberWindow(io.RawIOBase):
    """A seekable, write-only view of the shard from a member's first content byte on."""

    def __init__(self, fh: BinaryIO, base: int) -> None:
        super().__init__()
        self._fh, self._base, self.end = fh, base, base

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer) -> int:
        n = self._fh.write(data)
        self.end = max(self.end, self._fh.tell())
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = self._fh.seek(self._base + offset)
        elif whence == io.SEEK_END:
            pos = self._fh.seek(self.end + offset)
        else:
            pos = self._fh.seek(offset, io.SEEK_CUR)
        if pos < self._base:
            self._fh.seek(self._base)
            raise OSError("a member cannot be written before its start")
        return pos - self._base

    def tell(self) -> int:
        return self._fh.tell() - self._base


@dataclass
class ShardRecord:
    """A closed shard: its name, size, sha256 and the keys of its samples, in order."""

    name: str
    bytes: int = 0
    sha256: str = ""
    keys: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"path": self.name, "bytes": self.bytes, "sha256": self.sha256, "samples": list(self.keys)}


class _Shard:
    def __init__(self, folder: Folder, number: int) -> None:
        self.record = ShardRecord(SHARD_NAME.format(number))
        self.tmp = temporary_name(self.record.name, f"{os.getpid()}.partial")
        self._folder = folder
        # write-only: a BufferedRandom writes 4x slower here (it keeps its buffer ready for reads)
        self.fh: BinaryIO = os.fdopen(folder.fresh(self.tmp, FILE_MODE), "wb")
        self.whole = 0  # end of the last whole sample
        self._hash = hashlib.sha256()
        # whole samples are hashed on a thread of their own (read back: their headers were written after
        # their content) while the next sample is written; bytes before `whole` never change again
        self._hashing = ThreadPoolExecutor(1, thread_name_prefix="improvcap-shard-hash")
        self._hashed: list[Future] = []

    def take_sample(self, key: str) -> None:
        """The sample ending at the file's position is whole: count it, and hash its bytes."""
        end = self.fh.tell()
        self.fh.flush()
        self._hashed.append(self._hashing.submit(self._hash_range, self.whole, end))
        self.whole = end
        self.record.keys.append(key)

    def _hash_range(self, pos: int, end: int) -> None:
        fd = self.fh.fileno()
        while pos < end:
            chunk = os.pread(fd, min(CHUNK, end - pos), pos)
            if not chunk:
                raise OSError(f"{self.tmp}: shorter than written")
            self._hash.update(chunk)
            pos += len(chunk)

    def _digest(self, tail: bytes) -> str:
        """The shard's sha256, once every whole sample is hashed, with `tail` (the archive's end) after them."""
        try:
            for f in self._hashed:
                f.result()
        finally:
            self._hashing.shutdown()
        self._hash.update(tail)
        return self._hash.hexdigest()

    def cut(self) -> None:
        """Drop what follows the last whole sample."""
        self.fh.seek(self.whole)
        self.fh.truncate(self.whole)

    def close(self) -> ShardRecord:
        """End the archive, make it durable and give it its name (never over an existing file)."""
        self.cut()
        self.fh.write(END_OF_ARCHIVE)
        self.fh.flush()
        digest = self._digest(END_OF_ARCHIVE)
        os.fsync(self.fh.fileno())
        self.fh.close()
        self._folder.link(self.tmp, self.record.name)
        self._folder.unlink(self.tmp)
        self._folder.sync()
        self.record.bytes, self.record.sha256 = self.whole + len(END_OF_ARCHIVE), digest
        return self.record

    def discard(self) -> None:
        try:
            self._hashing.shutdown(cancel_futures=True)
            self.fh.close()
        finally:
            self._folder.unlink(self.tmp)


class ShardWriter:
    """Samples into shards of about `max_bytes` (a shard is closed before the sample that would start
    beyond it, so a shard exceeds it by at most one sample). `on_shard(record)` follows every closed shard."""

    def __init__(
        self,
        folder: Folder,
        max_bytes: int,
        on_shard: Callable[[ShardRecord], None],
        first_number: int = 0,
        stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self._folder, self._max, self._on_shard = folder, max_bytes, on_shard
        self._stop = stop  # polled before each sample and member: a stop request ends at a clean point
        self._number = first_number
        self._shard: _Shard | None = None
        self._mtime = int(time.time())

    @contextmanager
    def sample(self, key: str) -> Iterator[Callable[[str], AbstractContextManager[MemberWindow]]]:
        """`with writer.sample(key) as member: with member("cam0.mp4") as fh: ...`. An exception inside
        leaves the shard as it was before the sample."""
        self._stopping()
        if self._shard is not None and self._shard.whole >= self._max:
            self._close()
        if self._shard is None:
            self._shard = _Shard(self._folder, self._number)
            self._number += 1
        shard = self._shard
        try:
            yield lambda ext: self._member(shard, f"{key}.{ext}")
        except BaseException:
            shard.cut()
            raise
        shard.take_sample(key)

    @contextmanager
    def _member(self, shard: _Shard, name: str) -> Iterator[MemberWindow]:
        self._stopping()
        info = tarfile.TarInfo(name)
        info.mode, info.mtime = FILE_MODE, self._mtime
        header = info.tobuf(tarfile.GNU_FORMAT)  # GNU: sizes beyond 8 GiB fit the same header
        start = shard.fh.tell()
        shard.fh.write(b"\0" * len(header))
        window = MemberWindow(shard.fh, start + len(header))
        yield window
        size = window.end - window._base
        shard.fh.seek(window.end)
        shard.fh.write(b"\0" * (-size % BLOCK))
        end = shard.fh.tell()
        info.size = size
        final = info.tobuf(tarfile.GNU_FORMAT)
        assert len(final) == len(header), "a tar header changed length with its size"
        shard.fh.seek(start)
        shard.fh.write(final)
        shard.fh.seek(end)

    def _stopping(self) -> None:
        if self._stop():
            raise KeyboardInterrupt

    def _close(self) -> None:
        assert self._shard is not None
        shard, self._shard = self._shard, None
        self._on_shard(shard.close())

    def close(self) -> None:
        """Close the shard in progress (a shard without samples is removed)."""
        if self._shard is None:
            return
        if not self._shard.record.keys:
            shard, self._shard = self._shard, None
            shard.discard()
            return
        self._close()

    def abandon(self) -> None:
        """After an interruption: keep the whole samples written so far in a closed shard if that can be
        done (a full disk may refuse even the archive's end), else remove the shard."""
        shard, self._shard = self._shard, None
        if shard is None:
            return
        if not shard.record.keys:
            shard.discard()
            return
        try:
            record = shard.close()
        except OSError:
            shard.discard()
            return
        self._on_shard(record)

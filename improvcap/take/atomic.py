"""Atomic writes inside a take: never a torn or half-written file under a take's own name, never a write
outside the folder.

Every rewrite of a take file (the manifest, sync.csv, the final refit's t_ns, repair's surgery, the
report) goes the same way: write a hidden temporary file beside it, fsync it, rename it into place (or
link it, when the name must not exist yet), fsync the folder so that the rename itself survives a power cut.

All of it happens inside a `Folder`: a directory opened once, whose names are resolved against the open
descriptor. Files are created exclusively and never through a link (`O_EXCL | O_NOFOLLOW`); a temporary
name already taken (a crash's leftover, or a link planted there) is unlinked first, which removes the name
itself, never what a link points to; renames and links happen between names of that one folder.

A recording keeps its take's Folder open for the take's life and creates, reopens and rewrites every file
through it (`folder=`): a take folder renamed away and replaced by a link meanwhile is never written
through. What reads by path (PyAV, the final refit's tables, the hashes) is given `Folder.anchored` or
`fd_path`, paths that lead to the opened folder or file itself.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import TakeError
from .layout import FILE_MODE, MANIFEST, RESERVE, SYNC

REPAIR_TAG = "repair"  # repair's rewrites: .<file>.repair
RETIME_TAG = "retime"  # the final refit's t_ns rewrites: .<file>.retime
# the hidden temporaries an interrupted write leaves: repair's and the refit's, the manifest's and sync.csv's,
# and a recording's reserve
_TEMPORARY = re.compile(
    rf"^\..+\.({REPAIR_TAG}|{RETIME_TAG})$"
    rf"|^\.({re.escape(MANIFEST)}|{re.escape(SYNC)})\.(\d+\.)?tmp$|^{re.escape(RESERVE)}$"
)


def is_temporary(name: str) -> bool:
    """Whether `name` is a temporary file of an unfinished atomic write (never the only copy of anything)."""
    return _TEMPORARY.match(name) is not None


_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NEW = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC
_APPEND = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | _CLOEXEC
_PATCH = os.O_RDWR | os.O_NOFOLLOW | _CLOEXEC
_FD_LINKS = Path("/proc/self/fd")  # Linux: each descriptor as a path that leads to what it has open


def fd_path(fd: int, fallback: Path) -> str:
    """A path to what `fd` has open, for a library that opens by path (PyAV): `/proc/self/fd/<fd>`, which
    stays with the file whatever happens to its name; `fallback` where there is no /proc."""
    return str(_FD_LINKS / str(fd)) if _FD_LINKS.is_dir() else str(fallback)


class Folder:
    """A directory opened once; files inside it are created, renamed, linked and removed by name against
    that descriptor. `follow=False` refuses a folder that is itself a symbolic link (TakeError, one line);
    a folder that cannot be opened raises the OSError."""

    def __init__(self, path: Path, *, follow: bool = True) -> None:
        self.path = Path(path)
        flags = os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC | (0 if follow else os.O_NOFOLLOW)
        try:
            self.fd = os.open(self.path, flags)
        except OSError as e:  # other errors stay OSErrors: each caller words its own message
            if not follow and e.errno in (errno.ELOOP, errno.ENOTDIR) and self.path.is_symlink():
                raise TakeError(
                    f"{self.path}: is a symbolic link; not followed (only a real folder is written into)"
                ) from None
            raise

    def __enter__(self) -> Folder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    @property
    def anchored(self) -> Path:
        """A path for readers that open by path: it leads to this opened folder even after the folder was
        renamed and a link put in its place (`/proc/self/fd/<fd>`; the folder's path where there is no /proc)."""
        return Path(fd_path(self.fd, self.path))

    def create(self, name: str, mode: int = FILE_MODE) -> int:
        """A new file `name`, opened for reading and writing; FileExistsError if the name is taken (by a link too)."""
        return os.open(name, _NEW, mode, dir_fd=self.fd)

    def append(self, name: str) -> int:
        """The existing file `name`, opened for appending; never through a link (OSError)."""
        return os.open(name, _APPEND, dir_fd=self.fd)

    def exists(self, name: str) -> bool:
        """Whether the name `name` is taken (a link counts, followed or not)."""
        try:
            os.stat(name, dir_fd=self.fd, follow_symlinks=False)
            return True
        except FileNotFoundError:
            return False

    def mkdir(self, name: str, mode: int) -> None:
        """A new folder `name`; FileExistsError if the name is taken."""
        os.mkdir(name, mode, dir_fd=self.fd)

    def fresh(self, name: str, mode: int = FILE_MODE) -> int:
        """A new file under a temporary `name`: whatever held the name before (a leftover, a link) is
        unlinked first, which never touches what a link points to."""
        self.unlink(name)
        return self.create(name, mode)

    def unlink(self, name: str) -> bool:
        """Remove the name `name` (a link itself, never its target); False when there was none."""
        try:
            os.unlink(name, dir_fd=self.fd)
            return True
        except FileNotFoundError:
            return False

    def is_link(self, name: str) -> bool:
        try:
            return stat.S_ISLNK(os.stat(name, dir_fd=self.fd, follow_symlinks=False).st_mode)
        except FileNotFoundError:
            return False

    def replace(self, src: str, dst: str) -> None:
        """Rename `src` over `dst`: a link at `dst` is replaced by the file, its target left alone."""
        os.replace(src, dst, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def link(self, src: str, dst: str) -> None:
        """A second name `dst` for the file `src` (never what a link `src` points to); FileExistsError if
        `dst` is taken."""
        os.link(src, dst, src_dir_fd=self.fd, dst_dir_fd=self.fd, follow_symlinks=False)

    def same_file(self, a: str, b: str) -> bool:
        sa, sb = (os.stat(n, dir_fd=self.fd, follow_symlinks=False) for n in (a, b))
        return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)

    def sync(self) -> None:
        """fsync the folder: its new names and renames survive a power cut."""
        os.fsync(self.fd)


def create_take_file(path: Path, folder: Folder | None = None) -> int:
    """A new take file at `path`, for the owner and the studio's group (FILE_MODE), created exclusively
    and never through a link: a descriptor open for reading and writing. `folder`: `path`'s folder, already
    open (the name is made in it), else `path` is opened as it is (only its last part is never a link)."""
    if folder is not None:
        return folder.create(path.name)
    return os.open(path, _NEW, FILE_MODE)


def reopen_take_file(path: Path, folder: Folder | None = None) -> int:
    """An existing take file at `path` opened for appending (a late note), never through a link; `folder`
    as for create_take_file."""
    if folder is not None:
        return folder.append(path.name)
    return os.open(path, _APPEND)


def patch_take_file(path: Path, folder: Folder | None = None) -> int:
    """An existing take file at `path` opened to be written in place (a WAV's iXML), never through a link;
    `folder` as for create_take_file."""
    if folder is not None:
        return os.open(path.name, _PATCH, dir_fd=folder.fd)
    return os.open(path, _PATCH)


def temporary_name(name: str, tag: str) -> str:
    """`.<name>.<tag>`: hidden, beside the file, recognisable by repair as an unfinished write."""
    return f".{name}.{tag}"


def pid_tag() -> str:
    """A temporary's tag unique to this process: two processes may write the same file at once."""
    return f"{os.getpid()}.tmp"


@contextmanager
def rewriting(path: Path, tag: str, *, exclusive: bool = False, folder: Folder | None = None) -> Iterator[BinaryIO]:
    """A file (read and write) to put `path`'s new content into; on a clean exit it is fsynced and put in
    place, and the folder fsynced.

    `exclusive`: `path` must not exist yet (linked into place: FileExistsError if the name is taken, by a
    link too); else it is replaced. On an error the temporary file is removed and `path` is left as it
    was. `folder`: `path`'s folder, already open (else it is opened here, following the path to it).
    """
    d = folder or Folder(path.parent)
    tmp = temporary_name(path.name, tag)
    try:
        try:
            with os.fdopen(d.fresh(tmp), "w+b") as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            if exclusive:
                d.link(tmp, path.name)  # fails if the name is taken: never overwritten unless asked
                d.unlink(tmp)
            else:
                d.replace(tmp, path.name)
        except BaseException:
            d.unlink(tmp)
            raise
        d.sync()
    finally:
        if folder is None:
            d.close()


def write_bytes_atomic(path: Path, data: bytes, *, replace_existing: bool = True, folder: Folder | None = None) -> None:
    """`data` into `path` atomically; without `replace_existing` an existing `path` is a TakeError. `folder`
    as for rewriting."""
    try:
        with rewriting(path, pid_tag(), exclusive=not replace_existing, folder=folder) as fh:
            fh.write(data)
    except FileExistsError:
        raise TakeError(f"{path}: already exists (pass replace=True to rebuild it)") from None
    except OSError as e:
        raise TakeError(f"{path}: cannot write: {e.strerror or e}") from None


def write_json_atomic(path: Path, data: dict[str, Any], *, folder: Folder | None = None) -> None:
    """A JSON document (the manifest, session.json) written atomically: never a torn manifest. `folder` as
    for rewriting."""
    text = json.dumps(data, indent=2, sort_keys=False, default=str) + "\n"
    with rewriting(path, pid_tag(), folder=folder) as fh:  # two recorders may start a session at once
        fh.write(text.encode("utf-8"))

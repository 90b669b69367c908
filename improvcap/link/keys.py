"""The rig's shared key: one file, the same on every PC of a rig, that lets a controller drive its nodes.

`improvcap key new FILE` writes 32 random bytes as hex (one line), created exclusively with mode 0600.
A key is read only from a regular file (never through a link) that no one but its owner can read or
write: a key others can read authenticates nobody. Its id (the first 16 hex digits of the sha256 of
the key, with a domain prefix) names it in logs and hellos without giving it away.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError

KEY_BYTES = 32
FORMAT = "improvcap-key-1"
_MAX_FILE = 4096


@dataclass(frozen=True, repr=False)
class SharedKey:
    secret: bytes
    path: Path

    @property
    def id(self) -> str:
        return hashlib.sha256(b"improvcap key id\0" + self.secret).hexdigest()[:16]

    def __repr__(self) -> str:  # never the secret, in a log or a traceback
        return f"SharedKey(id={self.id}, path={str(self.path)!r})"


def new_key(path: Path) -> SharedKey:
    """A new key in `path` (which must not exist), mode 0600."""
    secret = secrets.token_bytes(KEY_BYTES)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o600)
    except FileExistsError:
        raise UsageError(f"{path}: exists; a key is never overwritten (choose another file)") from None
    except OSError as e:
        raise UsageError(f"{path}: cannot create: {e.strerror or e}") from None
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, f"{FORMAT} {secret.hex()}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return SharedKey(secret, Path(path))


def load_key(path: Path) -> SharedKey:
    """The key in `path`; a UsageError (one line) for a link, a file others may read or write, or no key."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise UsageError(f"{path}: no such key file (make one with `improvcap key new FILE`)") from None
    except OSError as e:
        if os.path.islink(path):
            raise UsageError(f"{path}: is a symbolic link; give the key file itself") from None
        raise UsageError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"{path}: not a regular file")
        if st.st_mode & 0o077:
            raise UsageError(
                f"{path}: mode {stat.S_IMODE(st.st_mode):04o} lets others read or write the key; chmod 600 {path}"
            )
        if st.st_uid != os.geteuid():
            raise UsageError(f"{path}: owned by uid {st.st_uid}, not this user ({os.geteuid()})")
        text = os.read(fd, _MAX_FILE + 1)
    finally:
        os.close(fd)
    parts = text.decode("ascii", "replace").split()
    if len(text) > _MAX_FILE or len(parts) != 2 or parts[0] != FORMAT or len(parts[1]) != 2 * KEY_BYTES:
        raise UsageError(f"{path}: not an improvcap key file (make one with `improvcap key new FILE`)")
    try:
        return SharedKey(bytes.fromhex(parts[1]), Path(path))
    except ValueError:
        raise UsageError(f"{path}: not an improvcap key file (make one with `improvcap key new FILE`)") from None

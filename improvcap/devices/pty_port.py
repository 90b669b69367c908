"""The device end of a pseudo-terminal, for hardware emulators.

Whatever the emulator writes comes out of `name` (the slave side, e.g. /dev/pts/3) exactly as from a
USB-serial adapter, and whatever the host writes there can be read back here. The slave is raw (no echo,
no CR/LF translation, no signal or flow-control characters), so bytes pass unaltered; the master never
blocks, since a real UART keeps sending whether or not the host reads. Safe to use from several threads.
"""

from __future__ import annotations

import os
import pty
import select
import threading
import tty


class PtyPort:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._master, self._slave = pty.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.name = os.ttyname(self._slave)

    @property
    def connected(self) -> bool:
        return self._master >= 0

    def write(self, data: bytes) -> int | None:
        """Bytes written (fewer when nobody reads and the buffer is full); None once hung up or closed."""
        with self._lock:
            if self._master < 0:
                return None
            try:
                return os.write(self._master, data)
            except BlockingIOError:
                return 0
            except OSError:
                return None

    def read(self, timeout: float = 0.0) -> bytes | None:
        """What the host wrote, waiting up to `timeout` s for it (b"" when nothing came); None once hung up."""
        with self._lock:
            fd = self._master
        if fd < 0:
            return None
        try:
            if timeout > 0 and not select.select([fd], [], [], timeout)[0]:
                return b""
            with self._lock:
                return os.read(self._master, 4096) if self._master >= 0 else None
        except (BlockingIOError, InterruptedError):
            return b""
        except (OSError, ValueError):  # closed under us, or the host side hung up
            return None

    def hang_up(self) -> None:
        """Pull the cable: the master side closes, so readers of the port fail as with an unplugged adapter."""
        with self._lock:
            if self._master >= 0:
                os.close(self._master)
                self._master = -1

    def close(self) -> None:
        with self._lock:
            for fd in (self._master, self._slave):
                if fd >= 0:
                    os.close(fd)
            self._master = self._slave = -1

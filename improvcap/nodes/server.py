"""The node's side (`improvcap node`): advertise on LSL, accept controllers, obey only those that prove
they hold the rig's key.

Each connection is handshaken (improvcap.link.channel) and then served request by request, one JSON
object each way: `{"cmd": "status"}` -> `{"ok": true, "node": ..., "clock_ns": ...}`, and the recording
commands open, start, stop and close (improvcap.nodes.recording). A connection that
fails the handshake or sends a message that is not authentic is logged (stderr and `<out>/node.log`) and
closed; it changes nothing. Controllers may come and go: the node keeps listening.
"""

from __future__ import annotations

import datetime as _dt
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import __version__
from ..clock import now_ns
from ..errors import AuthError, ImprovcapError, UsageError
from ..link.channel import node_handshake
from ..link.keys import SharedKey
from ..take.layout import FILE_MODE
from .advert import advertise
from .recording import BLOB, NodeRecorder

LOG_FILE = "node.log"
QUIET = ("read",)  # commands too many to log each (collect reads a take piece by piece)
_LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class NodeLog:
    """Lines to stderr and to `<out>/node.log` (appended; never through a link)."""

    def __init__(self, out: Path, echo: Callable[[str], None]) -> None:
        self.path = out / LOG_FILE
        self._echo = echo
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        stamp = _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")
        with self._lock:
            self._echo(line)
            try:
                fd = os.open(self.path, _LOG_FLAGS, FILE_MODE)
                try:
                    os.write(fd, f"{stamp} {line}\n".encode())
                finally:
                    os.close(fd)
            except OSError as e:
                self._echo(f"warning: {self.path}: cannot log: {e.strerror or e}")


class NodeServer:
    """Listens on `port` (all interfaces) and serves authenticated controllers until close()."""

    def __init__(self, name: str, out: Path, key: SharedKey, port: int, log: Callable[[str], None]) -> None:
        self.name, self.out, self.key, self.log = name, out, key, log
        try:
            self._listener = socket.create_server(("0.0.0.0", port), reuse_port=False)
        except OSError as e:
            raise UsageError(f"node {name}: cannot listen on port {port}: {e.strerror or e}") from None
        self.port = self._listener.getsockname()[1]
        self.recording = NodeRecorder(name, out)
        self._advert: Any = None
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="node-accept", daemon=True)

    def start(self) -> NodeServer:
        self._advert = advertise(self.name, self.port, self.key.id)
        self._thread.start()
        return self

    def close(self) -> None:
        """No more controllers; a take being recorded is stopped cleanly and the devices closed."""
        self._closed.set()
        self._listener.close()
        self.recording.handle("close", {})
        self._advert = None  # the outlet goes with its last reference

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, addr = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(conn, f"{addr[0]}:{addr[1]}"), daemon=True).start()

    def _serve(self, conn: socket.socket, peer: str) -> None:
        try:
            channel = node_handshake(conn, self.key, self.name, peer)
        except (AuthError, ConnectionError, OSError) as e:
            self.log(f"refused {peer}: {str(e).removeprefix(peer + ': ')}")
            conn.close()
            return
        self.log(f"controller {peer} connected")
        try:
            while True:
                reply = self._reply(channel.recv())
                channel.send(reply, reply.pop(BLOB, None))
        except AuthError as e:
            self.log(f"refused {peer}: {str(e).removeprefix(peer + ': ')}; the connection is closed, nothing was done")
        except (ConnectionError, OSError):
            self.log(f"controller {peer} went away")
        finally:
            channel.close()

    def _reply(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request.get("cmd")
        try:
            if cmd == "status":
                return {
                    "ok": True,
                    "node": self.name,
                    "version": __version__,
                    "host": socket.gethostname(),
                    "clock_ns": now_ns(),
                    "out": str(self.out),
                    "state": self.recording.state(),
                    "streams": self.recording.streams(),
                }
            reply = self.recording.handle(str(cmd), request)
            if reply is None:
                raise UsageError(f"unknown command {str(cmd)[:40]!r}")
            if cmd not in QUIET:
                self.log(f"{cmd}: done")
            return {"ok": True, **reply}
        except ImprovcapError as e:
            self.log(f"{cmd}: {e}")
            return {"ok": False, "error": str(e)}
        except Exception as e:  # a bug must not take the node down: the controller hears of it
            self.log(f"{cmd}: internal error: {type(e).__name__}: {e}")
            return {"ok": False, "error": f"internal error: {type(e).__name__}: {e}"}

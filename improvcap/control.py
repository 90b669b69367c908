"""The control socket: drive a running `session` or `record` from scripts and other terminals.

A Unix domain socket `control.sock` in the session folder, mode 0600 (only the owner may drive the
recorder; peers of another uid are refused even where file modes do not bind, as for root). One JSON
request per line, one JSON reply per line: `{"cmd": "status"}` → `{"ok": true, ...}` or
`{"ok": false, "error": "..."}`. Several clients may be connected at once; a malformed request gets an
error reply and changes nothing. A socket left behind by a crashed process is detected and replaced.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import socketserver
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import ImprovcapError, UsageError
from .link.wire import strict_loads
from .take.layout import CONTROL_SOCKET

SOCKET_NAME = CONTROL_SOCKET
MAX_LINE = 64 * 1024
Handler = Callable[[dict[str, Any]], dict[str, Any]]


def socket_path(session_dir: Path) -> Path:
    return session_dir / SOCKET_NAME


def _peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def decode_request(line: bytes) -> dict[str, Any]:
    """A request line as a dict with a string `cmd`; anything else is an ImprovcapError."""
    try:
        request = strict_loads(line)
    except ValueError as e:  # not UTF-8, not JSON, a repeated key, nested too deeply
        raise UsageError(f"malformed request: {e}") from None
    if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
        raise UsageError('malformed request: expected a JSON object with a "cmd" string')
    return request


class _Connection(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        if _peer_uid(self.connection) != os.getuid():
            self._reply({"ok": False, "error": "permission denied: only the owner may drive this recorder"})
            return
        while True:
            line = self.rfile.readline(MAX_LINE + 1)
            if not line:
                return
            if len(line) > MAX_LINE:
                self._reply({"ok": False, "error": f"malformed request: longer than {MAX_LINE} bytes"})
                return
            if not line.strip():
                continue
            try:
                reply = self.server.handler(decode_request(line))
            except ImprovcapError as e:
                reply = {"ok": False, "error": str(e)}
            except Exception as e:  # a bug must not kill the recorder; the client gets told
                reply = {"ok": False, "error": f"internal error: {type(e).__name__}: {e}"}
            if not self._reply(reply):
                return

    def _reply(self, reply: dict[str, Any]) -> bool:
        try:
            self.wfile.write(json.dumps(reply, default=str).encode() + b"\n")
            self.wfile.flush()
            return True
        except OSError:  # the client went away
            return False


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    request_queue_size = socket.SOMAXCONN  # connections waiting to be accepted: a burst of clients is served
    handler: Handler


class ControlServer:
    """Serves `handler` on `<session_dir>/control.sock` from a background thread."""

    def __init__(self, session_dir: Path, handler: Handler) -> None:
        self.path = socket_path(session_dir)
        self._handler = handler
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._inode: int | None = None

    def start(self) -> None:
        _clear_stale(self.path)
        old_umask = os.umask(0o177)  # the socket is born 0600: no window in which others may connect
        try:
            server = _Server(str(self.path), _Connection)
        except OSError as e:
            raise UsageError(f"{self.path}: cannot create the control socket: {e.strerror or e}") from None
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        server.handler = self._handler
        self._server = server
        self._inode = self.path.stat().st_ino
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="improvcap-control", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server = None
        if self._thread is not None:
            self._thread.join(5.0)
        try:  # remove the socket only if it is still ours
            if self.path.stat().st_ino == self._inode:
                self.path.unlink()
        except FileNotFoundError:
            pass


def refuse_if_driven(session_dir: Path) -> None:
    """UsageError (one line) when a live recorder serves this session's control socket; a socket left by a
    crashed recorder is removed."""
    _clear_stale(socket_path(session_dir))


def _clear_stale(path: Path) -> None:
    """Replace a socket nobody listens on; refuse to steal one that a live recorder serves."""
    if not path.exists() and not path.is_symlink():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except OSError as e:
        if e.errno in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK):
            path.unlink(missing_ok=True)  # a crashed recorder left it behind
            return
        raise UsageError(f"{path}: cannot check the existing control socket: {e.strerror or e}") from None
    finally:
        probe.close()
    raise UsageError(f"{path.parent}: a recorder is already running in this session (its control socket answers)")


def request(session_dir: Path, payload: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """Send one request to the recorder of `session_dir` and return its reply."""
    path = socket_path(session_dir)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except FileNotFoundError:
            raise UsageError(f"{session_dir}: no recorder is running in this session (no {SOCKET_NAME})") from None
        except ConnectionRefusedError:
            raise UsageError(f"{session_dir}: no recorder is running in this session (stale {SOCKET_NAME})") from None
        except OSError as e:
            raise UsageError(f"{path}: cannot connect: {e.strerror or e}") from None
        sock.sendall(json.dumps(payload).encode() + b"\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    except TimeoutError:
        raise UsageError(f"{path}: no reply within {timeout:g} s") from None
    finally:
        sock.close()
    try:
        return json.loads(reply)
    except json.JSONDecodeError:
        raise UsageError(f"{path}: the recorder sent no valid reply") from None

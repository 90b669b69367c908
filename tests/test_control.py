"""The control socket under a crowd and under hostile requests, through a real Unix socket."""
from __future__ import annotations

import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from improvcap.control import ControlServer, request


@pytest.fixture
def served(tmp_path: Path):
    """A control server whose handler records every request it is given and answers at once."""
    seen: list[dict[str, Any]] = []
    lock = threading.Lock()

    def handler(req: dict[str, Any]) -> dict[str, Any]:
        with lock:
            seen.append(req)
        return {"ok": True, "cmd": req["cmd"]}

    server = ControlServer(tmp_path, handler)
    server.start()
    try:
        yield tmp_path, seen
    finally:
        server.close()


def _raw(session: Path, line: bytes) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(session / "control.sock"))
        sock.sendall(line + b"\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    return json.loads(reply)


def test_a_burst_of_clients_is_served(served):
    session, seen = served
    with ThreadPoolExecutor(200) as pool:
        replies = list(pool.map(lambda i: request(session, {"cmd": "status", "n": i}, timeout=10), range(200)))
    assert all(r == {"ok": True, "cmd": "status"} for r in replies)
    assert sorted(r["n"] for r in seen) == list(range(200))


def test_duplicate_keys_are_refused_and_change_nothing(served):
    session, seen = served
    reply = _raw(session, b'{"cmd":"status","cmd":"stop"}')
    assert reply["ok"] is False and "duplicate key" in reply["error"] and "cmd" in reply["error"]
    reply = _raw(session, b'{"cmd":"start","performers":["ana"],"extra":{"a":1,"a":2}}')
    assert reply["ok"] is False and "duplicate key" in reply["error"]
    assert seen == []


def test_deep_nesting_is_a_malformed_request(served):
    session, seen = served
    reply = _raw(session, b'{"cmd":"status","x":' + b"[" * 30_000 + b"]" * 30_000 + b"}")
    assert reply["ok"] is False and reply["error"].startswith("malformed request")
    assert "internal error" not in reply["error"] and "Recursion" not in reply["error"]
    assert seen == []

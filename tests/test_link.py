"""The rig's shared key and the authenticated link between a controller and a node, over real TCP sockets:
forged, replayed, reflected and other-key messages are refused and change nothing."""
from __future__ import annotations

import contextlib
import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from improvcap.errors import AuthError, UsageError
from improvcap.link.channel import Channel, controller_handshake, node_handshake
from improvcap.link.keys import load_key, new_key
from improvcap.link.wire import dump_line


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "improvcap", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60)


def test_key_new_makes_a_private_file_and_never_overwrites(tmp_path):
    made = cli(tmp_path, "key", "new", "rig.key")
    assert made.returncode == 0, made.stderr
    path = tmp_path / "rig.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = load_key(path)
    assert len(key.secret) == 32 and key.id in made.stdout and key.secret.hex() not in repr(key)
    before = path.read_bytes()
    again = cli(tmp_path, "key", "new", "rig.key")
    assert again.returncode == 2 and again.stderr.strip() == "error: rig.key: exists; a key is never overwritten " \
        "(choose another file)" and path.read_bytes() == before


def test_a_key_others_can_read_a_link_or_no_key_is_refused_in_one_line(tmp_path):
    key = new_key(tmp_path / "k")
    os.chmod(key.path, 0o640)
    with pytest.raises(UsageError, match="mode 0640 lets others read or write the key; chmod 600"):
        load_key(key.path)
    os.chmod(key.path, 0o600)
    (tmp_path / "link").symlink_to(key.path)
    with pytest.raises(UsageError, match="is a symbolic link"):
        load_key(tmp_path / "link")
    bad = tmp_path / "bad"
    bad.write_text("improvcap-key-1 nothex\n")
    bad.chmod(0o600)
    with pytest.raises(UsageError, match="not an improvcap key file"):
        load_key(bad)
    with pytest.raises(UsageError, match="no such key file"):
        load_key(tmp_path / "missing")


class Pair:
    """A node listening on localhost TCP and a controller connected to it, both ends' channels."""

    def __init__(self, node_key, controller_key) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.node: Channel | None = None
        self.node_error: Exception | None = None
        self._thread = threading.Thread(target=self._accept, args=(node_key,), daemon=True)
        self._thread.start()
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        self.controller_key = controller_key

    def _accept(self, key) -> None:
        conn, addr = self.server.accept()
        try:
            self.node = node_handshake(conn, key, "node-a", peer=f"{addr[0]}:{addr[1]}")
        except Exception as e:
            self.node_error = e
            conn.close()

    def handshake(self) -> Channel:
        channel, name = controller_handshake(self.sock, self.controller_key, peer=f"127.0.0.1:{self.port}")
        self._thread.join(5)
        assert name == "node-a"
        return channel

    def close(self) -> None:
        self.sock.close()
        self.server.close()


@pytest.fixture
def keys(tmp_path):
    return new_key(tmp_path / "a.key"), new_key(tmp_path / "b.key")


@contextlib.contextmanager
def connected(key):
    """(pair, controller's channel, node's channel) of a handshaken connection, closed afterwards."""
    pair = Pair(key, key)
    try:
        controller = pair.handshake()
        assert pair.node is not None, pair.node_error
        yield pair, controller, pair.node
    finally:
        pair.close()


def test_messages_flow_both_ways_in_order(keys):
    with connected(keys[0]) as (_, controller, node):
        controller.send({"cmd": "start", "take": "scene_t001"})
        controller.send({"cmd": "stop"})
        assert node.recv() == {"cmd": "start", "take": "scene_t001"}
        assert node.recv() == {"cmd": "stop"}
        node.send({"ok": True, "ü": "✓"})
        assert controller.recv() == {"ok": True, "ü": "✓"}


def test_a_controller_with_another_key_is_refused_by_both_ends(keys):
    pair = Pair(keys[0], keys[1])
    try:
        with pytest.raises(AuthError, match="holds another key"):
            pair.handshake()
    finally:
        pair.close()


def test_a_controller_that_fakes_the_key_id_cannot_prove_the_key(keys):
    """The hello's key id is public: answering with it is not enough, the proof is checked."""
    pair = Pair(keys[0], keys[0])
    try:
        reader = pair.sock.makefile("rb")
        hello = __import__("json").loads(reader.readline())
        pair.sock.sendall(dump_line({"nonce": "0" * 32, "proof": "f" * 64}))
        pair._thread.join(5)
        assert isinstance(pair.node_error, AuthError) and "does not hold this rig's key" in str(pair.node_error)
        assert hello["node"] == "node-a" and "key" not in hello  # the hello gives the id, never the key
        assert reader.readline() == b""  # the node closed the connection
    finally:
        pair.close()


def test_forged_replayed_and_reflected_messages_are_refused(keys):
    import json

    with connected(keys[0]) as (pair, controller, node):
        # what the controller sends is captured on the wire by reading the node's socket ourselves
        controller.send({"cmd": "start"})
        line = node._reader.readline()
        message = json.loads(line)
        assert message["seq"] == 1 and message["body"] == {"cmd": "start"}
        # forged: the body changed, the signature kept
        pair.sock.sendall(dump_line(dict(message, seq=2, body={"cmd": "stop"})))
        with pytest.raises(AuthError, match="signature is not of this rig's key"):
            node.recv()

    with connected(keys[0]) as (pair, controller, node):
        controller.send({"cmd": "mark"})
        assert node.recv() == {"cmd": "mark"}
        # replayed from the first connection: its nonces are not this one's
        pair.sock.sendall(line)
        with pytest.raises(AuthError, match="signature is not of this rig's key"):
            node.recv()
        with pytest.raises((ConnectionError, OSError, ValueError)):  # the node closed the connection
            node.recv()

    with connected(keys[0]) as (pair, controller, node):
        controller.send({"cmd": "mark"})
        wire = node._reader.readline()  # taken off the wire: then delivered, and replayed in its own connection
        pair.sock.sendall(wire + wire)
        assert node.recv() == {"cmd": "mark"}
        with pytest.raises(AuthError, match="message 1 where 2 was due"):
            node.recv()

    with connected(keys[0]) as (pair, controller, node):
        node.send({"ok": True})
        pair.sock.sendall(controller._reader.readline())  # the node's own message sent back to it
        with pytest.raises(AuthError, match="signature is not of this rig's key"):
            node.recv()


@pytest.mark.parametrize("line", [b'{"cmd": "start"}\n', b'not json\n', b'{"seq":1,"seq":2,"body":{},"mac":""}\n',
                                  b"[" * 100000 + b"\n", b"x" * (2 << 20)])
def test_an_unauthenticated_or_malformed_message_is_refused(keys, line):
    with connected(keys[0]) as (pair, _, node):
        pair.sock.sendall(line)
        with pytest.raises(AuthError):
            node.recv()

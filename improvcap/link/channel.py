"""An authenticated channel between a controller and a capture node, over one TCP connection.

Both ends hold the rig's shared key (improvcap.link.keys); the channel proves that, and that every
message is fresh, without sending the key or trusting a clock:

1. the node, on accepting a connection, sends its hello: protocol, node name, key id and a random nonce Nn;
2. the controller answers with its own nonce Nc and a proof, HMAC(key, "controller" | Nn | Nc);
3. the node checks the proof and answers with HMAC(key, "node" | Nn | Nc).

Every later message is one JSON line `{"seq": n, "body": {...}, "mac": ...}`, the MAC over the direction,
both nonces, the sequence number and the body's canonical bytes; each side's numbers count up from 1
with no gap. A message may carry bytes (a piece of a take file being collected): they follow its line,
and its body, which the MAC covers, gives their length and sha256. So a message forged without the key, one
replayed (from this connection, whose number is spent, or from an earlier one, whose nonces differ), one
reflected back to its sender (the direction differs) or made with another key is refused with an AuthError,
and the receiver closes the connection having changed nothing. The channel authenticates; it does not
encrypt (media never travel on it).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import socket
import threading
from typing import Any

from ..errors import AuthError
from .keys import SharedKey
from .wire import canonical, dump_line, strict_loads

PROTOCOL = "improvcap-link-1"
MAX_LINE = 1 << 20  # control messages only: a longer line is refused
MAX_BLOB = 4 << 20  # the bytes one message may carry
BLOB_BYTES, BLOB_SHA256 = "blob_bytes", "blob_sha256"
HANDSHAKE_TIMEOUT_S = 5.0
NONCE_BYTES = 16
TO_NODE, TO_CONTROLLER = "to-node", "to-controller"


def _mac(key: SharedKey, *parts: str | bytes) -> str:
    data = b"\0".join(p.encode() if isinstance(p, str) else p for p in (PROTOCOL, *parts))
    return hmac.new(key.secret, data, hashlib.sha256).hexdigest()


class Channel:
    """Messages (JSON objects) sent and received in order, each authenticated; one per connection."""

    def __init__(
        self,
        sock: socket.socket,
        key: SharedKey,
        *,
        node_nonce: str,
        controller_nonce: str,
        outgoing: str,
        peer: str,
        reader: Any = None,
    ) -> None:
        self.sock = sock
        self.peer = peer  # what the other end is, for logs and errors
        self._key = key
        self._nonces = (node_nonce, controller_nonce)
        self._out = outgoing
        self._in = TO_CONTROLLER if outgoing == TO_NODE else TO_NODE
        self._sent = self._received = 0
        self._reader = reader if reader is not None else sock.makefile("rb")
        if sock.family in (socket.AF_INET, socket.AF_INET6):  # requests and replies go at once, not batched
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._send_lock = threading.Lock()
        self.blob: bytes | None = None  # the bytes the last message received carried

    def _sign(self, direction: str, seq: int, body: dict[str, Any]) -> str:
        return _mac(self._key, direction, *self._nonces, str(seq), canonical(body))

    def send(self, body: dict[str, Any], blob: bytes | None = None) -> None:
        """One message; `blob`: bytes it carries (at most MAX_BLOB), after its line."""
        if blob is not None:
            body = {**body, BLOB_BYTES: len(blob), BLOB_SHA256: hashlib.sha256(blob).hexdigest()}
        with self._send_lock:
            self._sent += 1
            line = dump_line({"seq": self._sent, "body": body, "mac": self._sign(self._out, self._sent, body)})
            # one send: a small line then the bytes in a second would wait on the peer's delayed ACK
            self.sock.sendall(line + blob if blob else line)

    def recv(self) -> dict[str, Any]:
        """The next message's body. AuthError: not from the key's holder, or out of order (the connection
        is closed: nothing after such a message is believed); ConnectionError: the other end closed."""
        try:
            return self._recv()
        except AuthError:
            self.close()
            raise

    def _recv(self) -> dict[str, Any]:
        message = read_line(self._reader, self.peer)
        seq, body, mac = message.get("seq"), message.get("body"), message.get("mac")
        if (
            set(message) != {"seq", "body", "mac"}
            or not isinstance(seq, int)
            or not isinstance(body, dict)
            or not isinstance(mac, str)
        ):
            raise AuthError(f"{self.peer}: not a signed message")
        if not hmac.compare_digest(mac, self._sign(self._in, seq, body)):
            raise AuthError(
                f"{self.peer}: a message whose signature is not of this rig's key (forged, "
                "from another connection, or reflected)"
            )
        if seq != self._received + 1:
            raise AuthError(f"{self.peer}: message {seq} where {self._received + 1} was due (replayed or lost)")
        self._received = seq
        self.blob = self._read_blob(body)
        return body

    def _read_blob(self, body: dict[str, Any]) -> bytes | None:
        size, digest = body.get(BLOB_BYTES), body.get(BLOB_SHA256)
        if size is None:
            return None
        if (
            not isinstance(size, int)
            or isinstance(size, bool)
            or not 0 <= size <= MAX_BLOB
            or not isinstance(digest, str)
        ):
            raise AuthError(f"{self.peer}: a message with bytes of no stated size")
        blob = self._reader.read(size)
        if len(blob) < size:
            raise ConnectionError(f"{self.peer}: the connection closed in the middle of a message")
        if not hmac.compare_digest(hashlib.sha256(blob).hexdigest(), digest):
            raise AuthError(f"{self.peer}: bytes that are not those its signed message names")
        return blob

    def close(self) -> None:
        try:
            self.sock.close()
        finally:
            try:
                self._reader.close()
            except OSError:
                pass


def read_line(reader: Any, peer: str) -> dict[str, Any]:
    """One JSON object line, at most MAX_LINE bytes; AuthError for anything else."""
    line = reader.readline(MAX_LINE + 1)
    if not line:
        raise ConnectionError(f"{peer}: the connection closed")
    if len(line) > MAX_LINE or not line.endswith(b"\n"):
        raise AuthError(f"{peer}: a line longer than {MAX_LINE} bytes")
    try:
        value = strict_loads(line)
    except ValueError as e:
        raise AuthError(f"{peer}: not a message of the link protocol ({e})") from None
    if not isinstance(value, dict):
        raise AuthError(f"{peer}: not a message of the link protocol")
    return value


def node_handshake(
    sock: socket.socket, key: SharedKey, node: str, peer: str, timeout: float = HANDSHAKE_TIMEOUT_S
) -> Channel:
    """The node's side, on a connection it accepted: the controller must prove it holds the key."""
    sock.settimeout(timeout)
    reader = sock.makefile("rb")
    try:
        nn = secrets.token_hex(NONCE_BYTES)
        sock.sendall(dump_line({"hello": PROTOCOL, "node": node, "key_id": key.id, "nonce": nn}))
        answer = read_line(reader, peer)
        nc, proof = answer.get("nonce"), answer.get("proof")
        if not isinstance(nc, str) or len(nc) != 2 * NONCE_BYTES or not isinstance(proof, str):
            raise AuthError(f"{peer}: no controller's answer to the hello (not an improvcap controller)")
        if not hmac.compare_digest(proof, _mac(key, "controller", nn, nc)):
            raise AuthError(f"{peer}: the controller does not hold this rig's key (key id {key.id})")
        sock.sendall(dump_line({"proof": _mac(key, "node", nn, nc)}))
        sock.settimeout(None)
    except BaseException:
        _abandon(sock, reader)
        raise
    return Channel(sock, key, node_nonce=nn, controller_nonce=nc, outgoing=TO_CONTROLLER, peer=peer, reader=reader)


def _abandon(sock: socket.socket, reader: Any) -> None:
    """A connection whose handshake failed: closed at once (the reader holds the socket open too)."""
    reader.close()
    sock.close()


def controller_handshake(
    sock: socket.socket, key: SharedKey, peer: str, expect_node: str | None = None, timeout: float = HANDSHAKE_TIMEOUT_S
) -> tuple[Channel, str]:
    """The controller's side, on a connection to a node: (channel, the node's name). The node must prove
    that it holds the key too (a node that does not cannot be driven, nor pass off data as the rig's)."""
    sock.settimeout(timeout)
    reader = sock.makefile("rb")
    try:
        hello = read_line(reader, peer)
        nn, name = hello.get("nonce"), hello.get("node")
        if (
            hello.get("hello") != PROTOCOL
            or not isinstance(nn, str)
            or len(nn) != 2 * NONCE_BYTES
            or not isinstance(name, str)
        ):
            raise AuthError(f"{peer}: not an improvcap node ({PROTOCOL})")
        if expect_node is not None and name != expect_node:
            raise AuthError(f"{peer}: answers as node {name!r}, not {expect_node!r}")
        if hello.get("key_id") != key.id:
            raise AuthError(f"{peer}: node {name} holds another key (id {hello.get('key_id')!s:.16}, ours {key.id})")
        nc = secrets.token_hex(NONCE_BYTES)
        sock.sendall(dump_line({"nonce": nc, "proof": _mac(key, "controller", nn, nc)}))
        answer = read_line(reader, peer)
        proof = answer.get("proof")
        if not isinstance(proof, str) or not hmac.compare_digest(proof, _mac(key, "node", nn, nc)):
            raise AuthError(f"{peer}: node {name} does not prove it holds this rig's key")
        sock.settimeout(None)
    except BaseException:
        _abandon(sock, reader)
        raise
    return Channel(sock, key, node_nonce=nn, controller_nonce=nc, outgoing=TO_NODE, peer=peer, reader=reader), name

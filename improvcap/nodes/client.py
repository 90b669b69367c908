"""The controller's side: find each node of a rig, connect, prove the key, and ask.

A node is found on LSL by its name (improvcap.nodes.advert); the connection goes to the rig's `host` for
it when given, else to the addresses it advertised, in order. The node must answer as the node named
and prove it holds the same key (improvcap.link.channel).
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from typing import Any

from ..errors import DeviceError
from ..link.channel import Channel, controller_handshake
from ..link.keys import SharedKey
from ..rig import NodeSpec
from .advert import FoundNode, find_node

CONNECT_TIMEOUT_S = 3.0


@dataclass
class NodeLink:
    """An authenticated connection to one node, and its advertisement (whose inlet measures its clock)."""

    spec: NodeSpec
    found: FoundNode
    channel: Channel
    address: str
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def connect(cls, spec: NodeSpec, key: SharedKey, timeout: float) -> NodeLink:
        found = find_node(spec.name, timeout)
        try:
            candidates = [spec.host] if spec.host else found.addresses
            problems = []
            for address in candidates:
                try:
                    sock = socket.create_connection((address, found.port), timeout=CONNECT_TIMEOUT_S)
                except OSError as e:
                    problems.append(f"{address}:{found.port}: {e.strerror or e}")
                    continue
                channel, _ = controller_handshake(
                    sock, key, f"node {spec.name} at {address}:{found.port}", expect_node=spec.name
                )
                return cls(spec, found, channel, address)
            raise DeviceError(
                f"node {spec.name}: cannot connect to its control port ("
                + ("; ".join(problems) or "it advertised no address")
                + ")"
            )
        except BaseException:
            found.close()
            raise

    def request(self, cmd: str, **args: Any) -> dict[str, Any]:
        """The node's reply to a command (DeviceError when it refuses); one request at a time on a link."""
        return self._exchange(cmd, args)[0]

    def request_bytes(self, cmd: str, **args: Any) -> bytes:
        """The bytes the node's reply carries (a piece of a file)."""
        return self._exchange(cmd, args)[1] or b""

    def _exchange(self, cmd: str, args: dict[str, Any]) -> tuple[dict[str, Any], bytes | None]:
        with self._lock:  # the dashboard's polls and the take's commands share the link
            self.channel.send({"cmd": cmd, **args})
            reply, blob = self.channel.recv(), self.channel.blob
        if reply.get("ok") is not True:
            raise DeviceError(f"node {self.spec.name}: {reply.get('error', 'refused')}")
        return reply, blob

    def close(self) -> None:
        try:
            self.channel.close()
        finally:
            self.found.close()

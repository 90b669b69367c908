"""A node on LSL: an outlet `improvcap.node.<name>` (type `improvcap.node`) whose description gives its
control port, addresses, key id and version. A controller resolves it by name (multicast) or through the
rig's `host` (liblsl's KnownPeers, where multicast is blocked), reads the description through an inlet,
and keeps that inlet: its time_correction() is the node's clock offset from the controller's."""

from __future__ import annotations

import socket
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from .. import __version__
from ..devices.lsl_inlet import add_known_peers, pylsl_module, seconds_to_ns, time_correction_ex
from ..errors import DeviceError
from .addresses import local_ipv4

TYPE = "improvcap.node"
DEFAULT_PORT = 7371


def stream_name(node: str) -> str:
    return f"{TYPE}.{node}"


def advertise(node: str, port: int, key_id: str) -> Any:
    """The node's outlet; advertised until it is deleted (the node's process ends)."""
    pylsl = pylsl_module()
    info = pylsl.StreamInfo(stream_name(node), TYPE, 1, 0.0, "string", f"{stream_name(node)}@{socket.gethostname()}")
    desc = info.desc()
    for key, value in (("node", node), ("port", str(port)), ("key_id", key_id), ("version", __version__)):
        desc.append_child_value(key, value)
    addresses = desc.append_child("addresses")
    for address in local_ipv4():
        addresses.append_child_value("address", address)
    return pylsl.StreamOutlet(info)


@dataclass
class FoundNode:
    """A node's advertisement as a controller read it, with the inlet that measures its clock."""

    name: str
    port: int
    addresses: list[str]
    key_id: str
    version: str
    inlet: Any

    def clock_offset(self, timeout: float = 2.0) -> tuple[int, int]:
        """(offset, round trip) in ns: the node's clock + offset is ours (liblsl's latest estimate)."""
        offset, _, rtt = time_correction_ex(self.inlet, timeout)  # the call LSL streams are fitted from
        return seconds_to_ns(offset), seconds_to_ns(rtt)

    def close(self) -> None:
        self.inlet.close_stream()


def configure_known_peers(hosts: list[str]) -> None:
    """Where multicast is blocked: liblsl asks these hosts directly (before its first use only)."""
    if hosts:
        add_known_peers(hosts)


def find_node(node: str, timeout: float) -> FoundNode:
    """The node's advertisement (DeviceError, one line, when it does not answer within `timeout`)."""
    pylsl = pylsl_module()
    found = pylsl.resolve_bypred(f"name='{stream_name(node)}' and type='{TYPE}'", 1, timeout)
    if not found:
        raise DeviceError(
            f"node {node}: not found on the network within {timeout:g} s (is `improvcap node "
            f"--name {node}` running there, and multicast or its host reachable?)"
        )
    inlet = pylsl.StreamInlet(found[0], recover=False)
    try:
        root = ET.fromstring(inlet.info(timeout).as_xml())
    except Exception as e:
        inlet.close_stream()
        raise DeviceError(f"node {node}: its advertisement cannot be read: {type(e).__name__}: {e}") from None
    desc = root.find("desc")

    def text(key: str) -> str:
        return ((desc.findtext(key) if desc is not None else None) or "").strip()

    try:
        port = int(text("port"))
    except ValueError:
        inlet.close_stream()
        raise DeviceError(f"node {node}: its advertisement names no control port") from None
    addresses = [a.text.strip() for a in (desc.findall("addresses/address") if desc is not None else []) if a.text]
    return FoundNode(node, port, addresses, text("key_id"), text("version"), inlet)

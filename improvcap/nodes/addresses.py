"""This machine's IPv4 addresses, for a node to say where a controller can reach it."""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct

_SIOCGIFADDR = 0x8915  # Linux


def local_ipv4() -> list[str]:
    """Every IPv4 address of an interface that is up, loopback last (reached only from this machine)."""
    found: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            try:
                raw = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:  # no IPv4 address, or down
                continue
            found.append(socket.inet_ntoa(raw[20:24]))
    return sorted(set(found), key=lambda a: (ipaddress.ip_address(a).is_loopback, a))

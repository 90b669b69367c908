"""Several hosts on this machine, for tests of capture nodes: network namespaces joined by a bridge, each
process optionally in a time namespace whose CLOCK_MONOTONIC differs from ours by a known offset.

Needs root, iproute2 and util-linux's unshare; `Hosts.skip_reason()` says why not where they are missing.
Everything made is removed by close(), processes started through `start` included.
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass, field


def _ip(*args: str, ns: str | None = None) -> None:
    cmd = ["ip", *(["netns", "exec", ns, "ip"] if ns else []), *args]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=20)


@dataclass
class Host:
    name: str
    netns: str
    address: str
    bridge_port: str    # its veth's end on the bridge: down cuts the host off the network


@dataclass
class Hosts:
    """`names` on one bridge (one subnet: LSL finds them by multicast); `routed` each on a subnet of its
    own behind a router, which multicast and broadcast do not cross, as on a network that blocks them:
    they reach the others by address only."""

    names: list[str]
    routed: list[str] = field(default_factory=list)
    hosts: dict[str, Host] = field(default_factory=dict)
    procs: list[subprocess.Popen] = field(default_factory=list)

    @staticmethod
    def skip_reason() -> str | None:
        if os.geteuid() != 0:
            return "network and time namespaces need root"
        missing = [t for t in ("ip", "unshare") if shutil.which(t) is None]
        if missing:
            return f"{' and '.join(missing)} not installed (iproute2, util-linux)"
        return None

    def __post_init__(self) -> None:
        tag = uuid.uuid4().hex[:5]
        self.bridge = f"icb{tag}"
        subnet = f"10.{random.randint(100, 250)}.{random.randint(0, 255)}"
        self._router = f"ic{tag}rt"
        try:
            _ip("link", "add", self.bridge, "type", "bridge", "mcast_snooping", "0")
            _ip("link", "set", self.bridge, "up")
            for i, name in enumerate(self.names):
                ns, inner = self._attach(tag, i, name)
                self.hosts[name].address = f"{subnet}.{i + 2}"
                _ip("addr", "add", f"{subnet}.{i + 2}/24", "dev", inner, ns=ns)
                _ip("route", "add", "224.0.0.0/4", "dev", inner, ns=ns)  # LSL's discovery by multicast
            if self.routed:
                self._route(tag, subnet)
        except BaseException:
            self.close()
            raise

    def _attach(self, tag: str, i: int, name: str) -> tuple[str, str]:
        """Namespace `name` with a veth whose other end is on the bridge; (namespace, its interface)."""
        ns, port, inner = f"ic{tag}{name}", f"icp{tag}{i}", f"ici{tag}{i}"
        _ip("netns", "add", ns)
        self.hosts[name] = Host(name, ns, "", port)
        _ip("link", "add", port, "type", "veth", "peer", "name", inner)
        _ip("link", "set", port, "master", self.bridge, "up")
        _ip("link", "set", inner, "netns", ns)
        _ip("link", "set", "lo", "up", ns=ns)
        _ip("link", "set", inner, "up", ns=ns)
        return ns, inner

    def _route(self, tag: str, subnet: str) -> None:
        """A router on the bridge (.254) with a point-to-point subnet per routed host."""
        router, inner = self._attach(tag, 99, "rt")
        _ip("addr", "add", f"{subnet}.254/24", "dev", inner, ns=router)
        subprocess.run(["ip", "netns", "exec", router, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"], check=True,
                       capture_output=True, timeout=20)
        for i, name in enumerate(self.routed):
            ns, outer, own = f"ic{tag}{name}", f"icr{tag}{i}", f"ico{tag}{i}"
            net = f"172.{16 + i}.{random.randint(0, 255)}"
            _ip("netns", "add", ns)
            _ip("link", "add", outer, "type", "veth", "peer", "name", own)
            _ip("link", "set", outer, "netns", router)
            _ip("link", "set", own, "netns", ns)
            _ip("addr", "add", f"{net}.1/24", "dev", outer, ns=router)
            _ip("link", "set", outer, "up", ns=router)
            _ip("link", "set", "lo", "up", ns=ns)
            _ip("addr", "add", f"{net}.2/24", "dev", own, ns=ns)
            _ip("link", "set", own, "up", ns=ns)
            _ip("route", "add", "default", "via", f"{net}.1", ns=ns)
            self.hosts[name] = Host(name, ns, f"{net}.2", outer)
            for other in self.names:
                _ip("route", "add", f"{net}.0/24", "via", f"{subnet}.254", ns=self.hosts[other].netns)

    def command(self, name: str, args: list[str], monotonic_offset_s: int = 0) -> list[str]:
        """`args` run on host `name`, its CLOCK_MONOTONIC `monotonic_offset_s` ahead of ours (or behind)."""
        # --kill-child: the process forked into the time namespace dies with unshare (killed at close)
        clock = ["unshare", "--time", "--monotonic", str(monotonic_offset_s), "--fork", "--kill-child"] \
            if monotonic_offset_s else []
        return ["ip", "netns", "exec", self.hosts[name].netns, *clock, *args]

    def start(self, name: str, args: list[str], monotonic_offset_s: int = 0, **popen) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        # a session of its own: close() kills its whole process group, whatever it forked
        proc = subprocess.Popen(self.command(name, args, monotonic_offset_s), env=env, start_new_session=True,
                                **popen)
        self.procs.append(proc)
        return proc

    def run(self, name: str, args: list[str], monotonic_offset_s: int = 0, timeout: float = 120,
            **kwargs) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        return subprocess.run(self.command(name, args, monotonic_offset_s), env=env, capture_output=True,
                              text=True, timeout=timeout, **kwargs)

    def cut(self, name: str, up: bool) -> None:
        """Take host `name` off the network (its link on the bridge down), or back on (hosts on the bridge)."""
        _ip("link", "set", self.hosts[name].bridge_port, "up" if up else "down")

    @staticmethod
    def kill_matching(text: str) -> int:
        """SIGKILL every process whose command line holds `text` (a host dying); how many there were."""
        killed = 0
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
                if text in cmdline and int(pid) != os.getpid():
                    os.kill(int(pid), signal.SIGKILL)
                    killed += 1
            except (OSError, ValueError):
                continue  # gone meanwhile
        return killed

    def close(self) -> None:
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        for ns in [h.netns for h in self.hosts.values()]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, timeout=20)

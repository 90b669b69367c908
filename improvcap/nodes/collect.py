"""`improvcap collect`: the nodes' files of a take across PCs brought into the controller's take folder.

For each take under the paths whose take.json names nodes not yet collected, each node is found as
`record` finds it (the rig snapshot's nodes: name, host), proved the key, and asked for its take. A node
take not yet on the controller's clock (the node died before the stop, and was repaired since) is first
refitted onto it from the controller's `<node>.node-clock.csv`. Then every file its take.json lists
arrives over the link, piece by piece, into a hidden `.<name>.collecting` beside its final name:

- resumable: a partial file left by an interrupted collect is continued from its end;
- checked: a file whose sha256 is not the one the node's take.json gives is refused and its partial
  removed; the node's take.json arrives last, checked against the hash the node gave for it;
- never overwriting: a final name is made by a hard link, which fails if the name exists (a file
  already there with the right sha256 counts as collected; one with other bytes is an error).

A node's stream files keep their names in the take (stream names are unique in a rig); its other files
(events.csv, sync.csv, consent record, clock offsets, and its take.json as node-take.json) go to
`nodes/<node>/`. The controller's take.json then holds the node's streams and rig settings like its own,
every collected file with its hash, and `nodes.<node>.collected`; sync.csv is rebuilt over every stream, so
that `verify` checks the take as one (slates, skew and the rest across PCs).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ImprovcapError, TakeError
from ..link.keys import SharedKey
from ..rig import NodeSpec
from ..take.atomic import write_json_atomic
from ..take.hashing import file_entry, sha256_file
from ..take.layout import FILE_MODE, FOLDER_MODE, MANIFEST, NODE_MANIFEST, SYNC, node_folder
from ..take.manifest import load_json
from ..take.sync import build_sync
from .advert import configure_known_peers
from .client import NodeLink
from .controller import retime
from .node_takes import MAX_READ as PIECE  # bytes asked for per read

PARTIAL = ".collecting"
_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


@dataclass
class NodeCollected:
    """What one node's part of a take came to."""

    take: Path
    node: str
    files: int = 0
    bytes: int = 0
    resumed: int = 0  # files continued from a partial left by an earlier collect
    already: int = 0  # files already here with the right sha256
    seconds: float = 0.0  # from finding the node to its files' last byte
    transfer_seconds: float = 0.0  # of which moving the files (asking, receiving, checking, writing)
    error: str | None = None
    streams: list[str] = field(default_factory=list)


def pending_nodes(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    nodes = manifest.get("nodes")
    return (
        {n: e for n, e in nodes.items() if isinstance(e, dict) and not e.get("collected")}
        if isinstance(nodes, dict)
        else {}
    )


def node_specs(manifest: dict[str, Any]) -> dict[str, NodeSpec]:
    return {
        n["name"]: NodeSpec(n["name"], n.get("host"))
        for n in manifest.get("rig", {}).get("nodes", [])
        if isinstance(n, dict) and isinstance(n.get("name"), str)
    }


def configure_peers(manifests: list[dict[str, Any]]) -> None:
    """Where multicast is blocked: every rig's node hosts, before liblsl's first use."""
    configure_known_peers(sorted({s.host for m in manifests for s in node_specs(m).values() if s.host}))


def destination(node: str, streams: list[str], name: str) -> str:
    """Where a node's file goes in the controller's take: a stream's file keeps its name."""
    if any(name.startswith(s + ".") for s in streams) and "/" not in name:
        return name
    return f"{node_folder(node)}/{NODE_MANIFEST if name == MANIFEST else name}"


class TakeCollector:
    """Collects one take's nodes, through links it opens with `key`."""

    def __init__(
        self, take_dir: Path, key: SharedKey, timeout: float, progress: Callable[[str, int], None] | None = None
    ) -> None:
        self.take, self.key, self.timeout = take_dir, key, timeout
        self.progress = progress or (lambda name, n: None)
        self.manifest = load_json(take_dir / MANIFEST)

    def collect(self) -> list[NodeCollected]:
        """Every pending node at once (a thread and a link each); their parts merged one by one, each into
        the manifest as it is written, so that what arrived stays collected whatever fails after."""
        specs = node_specs(self.manifest)
        results = {name: NodeCollected(self.take, name) for name in pending_nodes(self.manifest)}
        fetched: dict[str, tuple[str, dict[str, dict[str, Any]]]] = {}

        def collect_node(name: str, entry: dict[str, Any]) -> None:
            result, started = results[name], time.monotonic()
            try:
                if name not in specs:
                    raise TakeError(f"node {name} is not in the take's rig snapshot")
                fetched[name] = self._collect_node(specs[name], entry, result)
            except (ImprovcapError, OSError, ConnectionError) as e:
                result.error = str(e)
            except (KeyError, TypeError, ValueError) as e:  # a take.json or a reply not as written
                result.error = f"node {name}: {MANIFEST} or the node's account is malformed ({type(e).__name__}: {e})"
            result.seconds = round(time.monotonic() - started, 3)

        threads = [
            threading.Thread(target=collect_node, args=item, name=f"collect-{item[0]}")
            for item in pending_nodes(self.manifest).items()
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for name, (node_manifest, arrived) in sorted(fetched.items()):
            try:
                self._merge(name, load_json(self.take / node_manifest), arrived)
            except (ImprovcapError, OSError, ValueError, KeyError) as e:
                results[name].error = f"node {name}: its files arrived but could not be merged: {e}"
        return list(results.values())

    def _collect_node(
        self, spec: NodeSpec, entry: dict[str, Any], result: NodeCollected
    ) -> tuple[str, dict[str, dict[str, Any]]]:
        """The node's files brought here: (where its manifest went, every file's entry by its name here)."""
        session, take = self.manifest["session"], str(entry.get("take") or self.take.name)
        link = NodeLink.connect(spec, self.key, self.timeout)
        try:
            account = link.request("take_files", session=session, take=take)
            clock = account.get("controller_clock") or {}
            if clock.get("t0_host_ns") != self.manifest["t0_host_ns"]:
                clock_file = self.take / entry.get("clock_file", "")
                if not entry.get("clock_file") or not clock_file.is_file():
                    raise TakeError(
                        f"node {spec.name}: its take is not on this take's clock and no offsets of "
                        "its clock were measured"
                    )
                account = retime(link, session, take, clock_file, self.manifest["t0_host_ns"])
            if account["status"] not in ("complete", "repaired"):
                raise TakeError(f"node {spec.name}: its take {take} is {account['status']}; repair it there first")
            streams = sorted(account["streams"])
            result.streams = streams
            arrived: dict[str, dict[str, Any]] = {}
            started = time.monotonic()
            for name, expected in sorted(account["files"].items()):
                dest = destination(spec.name, streams, name)
                arrived[dest] = self._fetch(link, session, take, name, expected, dest, result)
            node_manifest = destination(spec.name, streams, MANIFEST)
            arrived[node_manifest] = self._fetch(
                link, session, take, MANIFEST, account["manifest"], node_manifest, result
            )
            result.transfer_seconds = round(time.monotonic() - started, 3)
        finally:
            link.close()
        return node_manifest, arrived

    def _fetch(
        self,
        link: NodeLink,
        session: str,
        take: str,
        name: str,
        expected: dict[str, Any],
        dest: str,
        result: NodeCollected,
    ) -> dict[str, Any]:
        size, digest = int(expected["bytes"]), str(expected["sha256"])
        final = self.take / dest
        if final.parent != self.take:
            final.parent.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
        if final.exists() or final.is_symlink():
            if not final.is_symlink() and final.is_file() and sha256_file(final) == digest:
                result.already += 1
                return {"bytes": size, "sha256": digest}
            raise TakeError(f"{final}: exists with other bytes than node's {name}; a file is never overwritten")
        partial = final.parent / f".{final.name}{PARTIAL}"
        fd = os.open(partial, _OPEN_FLAGS, FILE_MODE)
        try:
            h = hashlib.sha256()
            offset = os.fstat(fd).st_size
            if offset > size:
                os.ftruncate(fd, 0)
                offset = 0
            if offset:  # an earlier collect's piece: continued, its bytes hashed first
                result.resumed += 1
                with open(partial, "rb") as fh:
                    while chunk := fh.read(1 << 20):
                        h.update(chunk)
            os.lseek(fd, offset, os.SEEK_SET)
            while offset < size:
                piece = link.request_bytes(
                    "read", session=session, take=take, file=name, offset=offset, length=min(PIECE, size - offset)
                )
                if not piece:
                    raise TakeError(f"node {link.spec.name}: {name} ended at {offset} of its {size} bytes")
                os.write(fd, piece)
                h.update(piece)
                offset += len(piece)
                result.bytes += len(piece)
                self.progress(dest, len(piece))
            os.fsync(fd)
        finally:
            os.close(fd)
        if h.hexdigest() != digest:
            partial.unlink()
            raise TakeError(
                f"node {link.spec.name}: {name} arrived with sha256 {h.hexdigest()[:12]}…, not the "
                f"{digest[:12]}… its take.json gives; it was not kept"
            )
        os.link(partial, final)  # fails if the name exists: never overwriting
        partial.unlink()
        dir_fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        result.files += 1
        return {"bytes": size, "sha256": digest}

    def _merge(self, node: str, node_manifest: dict[str, Any], arrived: dict[str, dict[str, Any]]) -> None:
        """The node's streams, settings and files into the controller's take.json, and sync.csv over all."""
        manifest = self.manifest
        for name, stream in node_manifest["streams"].items():
            manifest["streams"][name] = stream | {"node": node}
        rig = manifest["rig"]
        known = {s["name"] for s in rig["streams"]}
        rig["streams"] += [s | {"node": node} for s in node_manifest["rig"]["streams"] if s["name"] not in known]
        if rig.get("master") is None and node_manifest["rig"].get("master"):
            rig["master"] = node_manifest["rig"]["master"]
        manifest["files"].update(arrived)
        manifest["faults"] += [f | {"node": node} for f in node_manifest.get("faults", [])]
        manifest["nodes"][node]["collected"] = {
            "utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "files": len(arrived),
            "bytes": sum(e["bytes"] for e in arrived.values()),
        }
        manifest["sync"] = build_sync(self.take, manifest, replace=True)
        manifest["files"][SYNC] = file_entry(self.take / SYNC)
        write_json_atomic(self.take / MANIFEST, manifest)

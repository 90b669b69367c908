"""The command line of capture nodes: `key new`, `node` (run on a capture PC), `nodes` (check a rig's) and
`collect` (bring a take's node files to the controller)."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from .cli_support import JsonOption, StopRequest, err, escape, new_table, one_line_errors, out, print_json
from .errors import CheckFailed, ImprovcapError, UsageError
from .rig import load_rig

key_app = typer.Typer(no_args_is_help=True, help="The rig's shared key, which lets a controller drive its nodes.")
KeyOption = Annotated[Path, typer.Option("--key", help="The rig's shared key file (improvcap key new FILE).")]


@key_app.command("new")
@one_line_errors
def key_new(
    file: Annotated[Path, typer.Argument(help="The key file to create (it must not exist); copy it to every PC.")],
) -> None:
    """Make a new shared key: a file of mode 0600 that `node --key` and the controller's commands take."""
    from .link.keys import new_key

    key = new_key(file)
    out.print(
        f"{file}: key {key.id} (mode 0600; copy it to every PC of the rig, keep it from everyone else)",
        highlight=False,
        markup=False,
    )


@one_line_errors
def node_command(
    key: KeyOption,
    name: Annotated[str | None, typer.Option(help="The node's name in rig files (default: the host name).")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Where this node's takes and log go.")] = Path("takes"),
    port: Annotated[int, typer.Option(help="The control port (0: any free one).")] = 7371,
) -> None:
    """Run a capture node: advertise on LSL and serve the controllers that hold the rig's key, until Ctrl-C."""
    from .link.keys import load_key
    from .nodes.server import NodeLog, NodeServer
    from .rig import NAME_RE

    node_name = name or socket.gethostname().split(".")[0]
    if not NAME_RE.match(node_name):
        raise UsageError(f"--name {node_name!r}: must be letters, digits, '_', '-' or '.'")
    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be 0-65535, got {port}")
    shared = load_key(key)
    try:
        out_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
    except OSError as e:
        raise UsageError(f"{out_dir}: cannot create: {e.strerror or e}") from None
    log = NodeLog(out_dir, lambda line: err.print(line, highlight=False, markup=False))
    server = NodeServer(node_name, out_dir, shared, port, log).start()
    from .nodes.addresses import local_ipv4

    log(f"node {node_name}: listening on port {server.port} ({', '.join(local_ipv4())}), key {shared.id}")
    with StopRequest() as stop:
        try:
            while not stop.requested:
                time.sleep(0.2)
        finally:
            server.close()
            log(f"node {node_name}: stopped")


@one_line_errors
def nodes_command(
    rig: Annotated[str, typer.Argument(help="Rig file path or name.")],
    key: KeyOption,
    timeout: Annotated[float, typer.Option(help="Seconds to find each node.")] = 5.0,
    as_json: JsonOption = False,
) -> None:
    """Find every node of a rig, prove the key to it and measure its clock: exit status 1 when one fails."""
    from .link.keys import load_key
    from .nodes.advert import configure_known_peers
    from .nodes.client import NodeLink

    spec = load_rig(rig)
    if not spec.nodes:
        raise UsageError(f"{spec.path}: names no [[node]]")
    shared = load_key(key)
    configure_known_peers([n.host for n in spec.nodes if n.host])
    rows: list[dict[str, Any]] = []
    for node in spec.nodes:
        row: dict[str, Any] = {"node": node.name, "ok": False}
        try:
            link = NodeLink.connect(node, shared, timeout)
            try:
                status = link.request("status")
                offset, rtt = link.found.clock_offset()
                row.update(
                    ok=True,
                    address=f"{link.address}:{link.found.port}",
                    version=status["version"],
                    host=status["host"],
                    clock_offset_ms=round(offset / 1e6, 3),
                    rtt_ms=round(rtt / 1e6, 3),
                )
            finally:
                link.close()
        except ImprovcapError as e:
            row["error"] = str(e)
        rows.append(row)
    if as_json:
        print_json({"rig": spec.name, "nodes": rows})
    else:
        table = new_table(f"nodes of {spec.name}")
        for column in ("node", "address", "host", "clock offset ms", "rtt ms", "verdict"):
            table.add_column(column)
        for r in rows:
            table.add_row(
                escape(r["node"]),
                escape(r.get("address", "")),
                escape(r.get("host", "")),
                f"{r['clock_offset_ms']:+.3f}" if r["ok"] else "",
                f"{r['rtt_ms']:.3f}" if r["ok"] else "",
                "ok" if r["ok"] else escape(r["error"]),
            )
        out.print(table)
    failed = [r for r in rows if not r["ok"]]
    if failed:
        raise CheckFailed("; ".join(r["error"] for r in failed))


@one_line_errors
def collect_command(
    paths: Annotated[list[Path], typer.Argument(help="Takes, or folders of takes, on the controller.")],
    key: KeyOption,
    timeout: Annotated[float, typer.Option(help="Seconds to find each node.")] = 10.0,
    as_json: JsonOption = False,
) -> None:
    """Bring the nodes' files of takes across PCs into the controller's take folders (resumable, checked by
    sha256, never overwriting): exit status 1 when a node's part could not be collected."""
    from .link.keys import load_key
    from .nodes.collect import NodeCollected, TakeCollector, configure_peers, pending_nodes
    from .take.layout import MANIFEST
    from .take.manifest import load_json
    from .verify.paths import find_takes

    shared = load_key(key)
    takes = find_takes(paths)
    if not takes:
        raise UsageError("no take under " + ", ".join(str(p) for p in paths))
    manifests: dict[Path, Any] = {}
    results: list[NodeCollected] = []
    for t in takes:
        try:
            manifests[t] = load_json(t / MANIFEST)
        except (OSError, ValueError) as e:  # that take is named as failed; the others are collected
            results.append(NodeCollected(t, "", error=f"{MANIFEST} cannot be read: {e}"))
    todo = [t for t, m in manifests.items() if isinstance(m, dict) and pending_nodes(m)]
    configure_peers([manifests[t] for t in todo])
    results += [r for t in todo for r in TakeCollector(t, shared, timeout).collect()]
    rows: list[dict[str, Any]] = [
        {
            "take": str(r.take),
            "node": r.node,
            "streams": r.streams,
            "files": r.files,
            "bytes": r.bytes,
            "resumed": r.resumed,
            "already_here": r.already,
            "seconds": r.seconds,
            "transfer_seconds": r.transfer_seconds,
            "ok": r.error is None,
            **({"error": r.error} if r.error else {}),
        }
        for r in results
    ]
    if as_json:
        print_json({"takes": len(takes), "collected": rows})
    elif not rows:
        out.print(f"{len(takes)} take(s): nothing to collect", highlight=False, markup=False)
    else:
        table = new_table("collected")
        for column in ("take", "node", "files", "MB", "resumed", "verdict"):
            table.add_column(column)
        for r in rows:
            table.add_row(
                escape(Path(r["take"]).name),
                escape(r["node"]),
                str(r["files"]),
                f"{r['bytes'] / 1e6:.1f}",
                str(r["resumed"]),
                "ok" if r["ok"] else escape(r["error"]),
            )
        out.print(table)
    failed = [r for r in rows if not r["ok"]]
    if failed:
        raise CheckFailed("; ".join(f"{Path(r['take']).name}: {r['error']}" for r in failed))

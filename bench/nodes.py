"""Capture nodes: one take across four PCs, on one clock, against the truth of each PC's own clock.

Four hosts on this machine (network namespaces on a bridge, the test suite's tests/hosts.py): the
controller, running `improvcap session`, and three nodes running `improvcap node`, each node in a time
namespace whose CLOCK_MONOTONIC is a known offset from the controller's (+500 s, -250 s, +1000 s). Every
PC records a demo camera 640x480@30, a demo audio interface 48 kHz and a demo mocap suit 120 Hz with
60 ppm drift and 1 ms jitter, all with their ground truth. The demo devices have no fixed latency, so a
sync calibration has nothing to correct here: the times are compared as recorded.

Measured, driven through the controller's control socket as `improvcap ctl` does:
- one take of --seconds with a slate every 10 s, collected onto the controller (`improvcap collect`):
  p50 / p99 of |t0_host_ns + t_ns - truth| per stream per PC, each node's truth (true_host_ns, on its own
  clock) converted by the offset the benchmark gave its namespace, never by the tool's estimate; verify's
  verdict and its slate offsets;
- start skew: the spread of the first t_ns of the cameras (and of all streams) across the PCs;
- `ctl start` and `ctl stop` latency (request to reply), over --short-takes takes of 3 s, median and max;
- `improvcap collect` throughput against `cp -r` of the same node take folders (MB/s, ratio): the whole
  command's wall time, and the files' transfer alone (the nodes are collected at once, the slowest counts).

    python bench/nodes.py [--seconds 60] [--short-takes 5]      (as root)
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from hosts import Hosts  # noqa: E402

from improvcap.control import request  # noqa: E402
from improvcap.link.keys import new_key  # noqa: E402

OFFSETS = {"ctl": 0, "pc2": 500, "pc3": -250, "pc4": 1000}  # each PC's CLOCK_MONOTONIC ahead of the controller's


def streams(pc: str) -> str:
    node = "" if pc == "ctl" else f'node = "{pc}"\n'
    return f"""
[[camera]]
name = "cam_{pc}"
driver = "demo"
width = 640
height = 480
fps = 30
truth = true
{node}
[[audio]]
name = "mic_{pc}"
driver = "demo"
channels = 2
truth = true
{node}
[[mocap]]
name = "suit_{pc}"
driver = "demo"
channels = 24
rate = 120
drift_ppm = 60
jitter_ms = 1
truth = true
{node}"""


RIG = (
    '[rig]\nname = "four-pc"\nmaster = "cam_ctl"\n'
    + "".join(f'\n[[node]]\nname = "{n}"\n' for n in OFFSETS if n != "ctl")
    + "".join(streams(pc) for pc in OFFSETS)
)


def improvcap(*args: str) -> list[str]:
    return [sys.executable, "-m", "improvcap", *args]


def wait_for(check, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def timed(session_dir: Path, cmd: str) -> tuple[float, dict]:
    start = time.perf_counter()
    reply = request(session_dir, {"cmd": cmd}, timeout=60)
    ms = (time.perf_counter() - start) * 1e3
    if not reply.get("ok"):
        raise SystemExit(f"ctl {cmd}: {reply}")
    return ms, reply


def errors_ms(take: Path, manifest: dict, stream: str, kind: str, ahead_s: int) -> np.ndarray:
    """|t0_host_ns + t_ns - truth| of a stream, its truth on its own PC's clock converted by the known offset."""
    with open(take / f"{stream}.truth.csv") as fh:
        truth = {int(r["index"]): int(r["true_host_ns"]) - ahead_s * 10**9 for r in csv.DictReader(fh)}
    table = {"camera": ".frames.csv", "audio": ".blocks.csv", "mocap": ".csv"}[kind]
    index = "first_sample" if kind == "audio" else "index"
    with open(take / f"{stream}{table}") as fh:
        rows = [(int(r[index]), int(r["t_ns"])) for r in csv.DictReader(fh)]
    return np.array([abs(manifest["t0_host_ns"] + t - truth[i]) / 1e6 for i, t in rows if i in truth])


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--short-takes", type=int, default=5)
    args = ap.parse_args()
    if (reason := Hosts.skip_reason()) is not None:
        raise SystemExit(reason)
    work = Path(tempfile.mkdtemp(prefix="improvcap-nodes-bench-"))
    hosts = Hosts(list(OFFSETS))
    try:
        run(hosts, work, args)
    finally:
        hosts.close()
        shutil.rmtree(work, ignore_errors=True)


def run(hosts: Hosts, work: Path, args: argparse.Namespace) -> None:
    key = new_key(work / "rig.key").path
    rig_file = work / "rig.toml"
    rig_file.write_text(RIG)
    for pc, ahead in OFFSETS.items():
        if pc == "ctl":
            continue
        hosts.start(
            pc,
            improvcap("node", "--name", pc, "--key", str(key), "--out", str(work / pc)),
            ahead,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(
            lambda pc=pc: (work / pc / "node.log").exists() and "listening" in (work / pc / "node.log").read_text(),
            f"node {pc}",
        )
    session_dir = work / "ctl" / "day"
    hosts.start(
        "ctl",
        improvcap("session", str(rig_file), "--key", str(key), "--out", str(work / "ctl"), "--session", "day"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=open(work / "session.log", "w"),
    )
    wait_for(
        lambda: (
            (session_dir / "control.sock").exists() and request(session_dir, {"cmd": "status"}).get("state") == "idle"
        ),
        "the session to open",
        120,
    )
    # the long take, with slates
    start_ms, started = timed(session_dir, "start")
    take = Path(started["take"])
    t_end = time.monotonic() + args.seconds
    time.sleep(0.5)
    while time.monotonic() < t_end - 1.0:
        request(session_dir, {"cmd": "slate"})
        time.sleep(min(10.0, max(0.0, t_end - 1.0 - time.monotonic())))
    stop_ms, _ = timed(session_dir, "stop")
    starts, stops = [start_ms], [stop_ms]
    for _ in range(args.short_takes):
        ms, _ = timed(session_dir, "start")
        starts.append(ms)
        time.sleep(3.0)
        ms, _ = timed(session_dir, "stop")
        stops.append(ms)
    request(session_dir, {"cmd": "quit"})
    # collect against cp of the same node folders
    node_takes = [work / pc / "day" / take.name for pc in OFFSETS if pc != "ctl"]
    copied = work / "cp"
    copied.mkdir()
    t = time.perf_counter()
    for folder in node_takes:
        subprocess.run(["cp", "-r", str(folder), str(copied / folder.parent.parent.name)], check=True)
    cp_s = time.perf_counter() - t
    t = time.perf_counter()
    collected = hosts.run("ctl", improvcap("collect", str(take), "--key", str(key), "--json"), timeout=600)
    collect_s = time.perf_counter() - t
    if collected.returncode != 0:
        raise SystemExit(f"collect: {collected.stderr}")
    rows = json.loads(collected.stdout)["collected"]
    # the nodes are collected at once: the slowest one's time is the collect's
    moved, transfer_s = sum(r["bytes"] for r in rows), max(r["transfer_seconds"] for r in rows)
    total = sum(folder_bytes(f) for f in node_takes)
    checked = subprocess.run(improvcap("verify", str(take), "--json"), capture_output=True, text=True, timeout=300)
    verdict = json.loads(checked.stdout)["takes"][0]
    manifest = json.loads((take / "take.json").read_text())
    report(take, manifest, verdict, starts, stops, cp_s, (collect_s, transfer_s), moved, total, args)


def report(
    take: Path,
    manifest: dict,
    verdict: dict,
    starts: list[float],
    stops: list[float],
    cp_s: float,
    collect: tuple[float, float],
    moved: int,
    total: int,
    args: argparse.Namespace,
) -> None:
    collect_s, transfer_s = collect
    print(f"take of {args.seconds:g} s across {len(OFFSETS)} PCs: {take.name}; verify {verdict['verdict']}")
    for reason in verdict["reasons"]:
        print(f"  {reason}")
    print("\n| PC | stream | p50 ms | p99 ms | max ms | first t_ns (ms) | slate offsets (ms) |")
    print("|---|---|---:|---:|---:|---:|---|")
    firsts: dict[str, dict[str, float]] = {}
    for pc, ahead in OFFSETS.items():
        for kind, stream in (("camera", f"cam_{pc}"), ("audio", f"mic_{pc}"), ("mocap", f"suit_{pc}")):
            e = errors_ms(take, manifest, stream, kind, ahead)
            first = manifest["streams"][stream]["first_t_ns"] / 1e6
            firsts.setdefault(kind, {})[pc] = first
            slates = verdict["streams"].get(stream, {}).get("slate_offsets_ms") or []
            print(
                f"| {pc} | {stream} | {np.percentile(e, 50):.3f} | {np.percentile(e, 99):.3f} | {e.max():.3f} | "
                f"{first:.1f} | {', '.join(f'{s:+.2f}' for s in slates)} |"
            )
    print()
    for kind, by_pc in firsts.items():
        print(
            f"start skew of the {kind}s across PCs (first t_ns, max - min): "
            f"{max(by_pc.values()) - min(by_pc.values()):.1f} ms"
        )
    print(f"ctl start: median {statistics.median(starts):.0f} ms, max {max(starts):.0f} ms over {len(starts)} takes")
    print(f"ctl stop:  median {statistics.median(stops):.0f} ms, max {max(stops):.0f} ms over {len(stops)} takes")
    print(
        f"collect: {moved / 1e6:.1f} MB in {collect_s:.2f} s wall (the command, Python's start included) = "
        f"{moved / 1e6 / collect_s:.1f} MB/s; {transfer_s:.2f} s moving the files (the slowest node) = "
        f"{moved / 1e6 / transfer_s:.1f} MB/s"
    )
    print(
        f"cp -r: {total / 1e6:.1f} MB in {cp_s:.2f} s = {total / 1e6 / cp_s:.1f} MB/s; ratio collect/cp "
        f"{(moved / collect_s) / (total / cp_s):.2f} wall, {(moved / transfer_s) / (total / cp_s):.2f} transfer"
    )
    print(f"\n    python bench/nodes.py --seconds {args.seconds:g} --short-takes {args.short_takes}")


if __name__ == "__main__":
    if os.geteuid() != 0:
        raise SystemExit("network and time namespaces need root")
    main()

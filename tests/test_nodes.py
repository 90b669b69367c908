"""Capture nodes on other hosts (network namespaces on a bridge, each node in a time namespace of its own):
found on LSL, driven only with the rig's key, their clocks measured against the controller's."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import rig_text, table
from hosts import Hosts
from improvcap.link.keys import new_key

# the nodes' CLOCK_MONOTONIC against the controller's: what the test knows, not what the tool measures
OFFSETS = {"pc2": 500, "pc3": -250}


@pytest.fixture
def hosts():
    if (reason := Hosts.skip_reason()) is not None:
        pytest.skip(reason)
    try:
        made = Hosts(["ctl", "pc2", "pc3"])
    except Exception as e:  # a kernel or container without namespaces
        pytest.skip(f"cannot make network namespaces here: {e}")
    yield made
    made.close()


def start_node(hosts: Hosts, name: str, key: Path, out: Path):
    log = out / name / "node.log"
    before = log.read_text().count("listening") if log.exists() else 0
    proc = hosts.start(name, [sys.executable, "-m", "improvcap", "node", "--name", name, "--key", str(key),
                              "--out", str(out / name)], OFFSETS.get(name, 0),
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if log.exists() and log.read_text().count("listening") > before:
            return proc
        if proc.poll() is not None:
            raise AssertionError(proc.communicate()[1])
        time.sleep(0.1)
    raise AssertionError(f"node {name} did not start")


def rig(path: Path, hosts: Hosts, *, host_of: dict[str, str] | None = None, extra: str = "") -> Path:
    nodes = [table("node", name=n, **({"host": host_of[n]} if host_of and n in host_of else {})) for n in ("pc2", "pc3")]
    path.write_text(rig_text("three-pc", *nodes, extra, table("camera", name="cam0", driver="demo")))
    return path


def nodes_check(hosts: Hosts, rig_file: Path, key: Path, *extra: str):
    return hosts.run("ctl", [sys.executable, "-m", "improvcap", "nodes", str(rig_file), "--key", str(key),
                             "--timeout", "5", "--json", *extra])


def test_nodes_are_found_across_hosts_and_their_clocks_measured(hosts, tmp_path):
    key = new_key(tmp_path / "rig.key").path
    for name in ("pc2", "pc3"):
        start_node(hosts, name, key, tmp_path)
    result = nodes_check(hosts, rig(tmp_path / "rig.toml", hosts), key)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {r["node"]: r for r in json.loads(result.stdout)["nodes"]}
    for name, ahead_s in OFFSETS.items():
        row = rows[name]
        assert row["ok"] and row["address"].startswith(hosts.hosts[name].address + ":"), row
        # the node's clock + offset is the controller's: a node 500 s ahead is -500 s off, within a millisecond
        assert row["clock_offset_ms"] == pytest.approx(-ahead_s * 1000, abs=1.0), row
        assert 0 < row["rtt_ms"] < 50
    for name in OFFSETS:
        assert "controller" in (tmp_path / name / "node.log").read_text()


def test_a_node_is_found_by_its_host_where_multicast_is_blocked(tmp_path):
    if (reason := Hosts.skip_reason()) is not None:
        pytest.skip(reason)
    hosts = Hosts(["pc2", "pc3"], routed=["ctl"])  # the controller behind a router: no multicast reaches it
    try:
        check_found_by_host(hosts, tmp_path)
    finally:
        hosts.close()


def check_found_by_host(hosts: Hosts, tmp_path: Path) -> None:
    key = new_key(tmp_path / "rig.key").path
    for name in ("pc2", "pc3"):
        start_node(hosts, name, key, tmp_path)
    addresses = {n: hosts.hosts[n].address for n in ("pc2", "pc3")}
    blind = nodes_check(hosts, rig(tmp_path / "blind.toml", hosts), key)
    assert blind.returncode == 1 and "not found on the network" in blind.stderr, blind.stdout + blind.stderr
    found = nodes_check(hosts, rig(tmp_path / "rig.toml", hosts, host_of=addresses), key)
    assert found.returncode == 0, found.stdout + found.stderr
    rows = {r["node"]: r for r in json.loads(found.stdout)["nodes"]}
    assert rows["pc2"]["clock_offset_ms"] == pytest.approx(-500_000, abs=1.0)


def test_a_controller_with_another_key_is_refused_and_logged_and_a_missing_node_named(hosts, tmp_path):
    key = new_key(tmp_path / "rig.key").path
    other = new_key(tmp_path / "other.key").path
    start_node(hosts, "pc2", key, tmp_path)  # pc3 is not running
    result = nodes_check(hosts, rig(tmp_path / "rig.toml", hosts), other)
    assert result.returncode == 1, result.stdout + result.stderr
    rows = {r["node"]: r for r in json.loads(result.stdout)["nodes"]}
    assert not rows["pc2"]["ok"] and "holds another key" in rows["pc2"]["error"], rows
    assert not rows["pc3"]["ok"] and rows["pc3"]["error"].startswith("node pc3: not found on the network"), rows
    assert "error: " in result.stderr and result.stderr.count("\n") == 1, result.stderr
    log = (tmp_path / "pc2" / "node.log").read_text()
    assert "refused" in log and "connected" not in log.replace("refused", ""), log


CONTROLLER = """
import json, sys, time
from pathlib import Path
from improvcap.link.keys import load_key
from improvcap.nodes.client import NodeLink
from improvcap.rig import load_rig
rig_file, key, commands = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
rig = load_rig(rig_file)
link = NodeLink.connect(rig.nodes[0], load_key(Path(key)), 10)
for cmd, args in commands:
    if cmd == "sleep":
        time.sleep(args)
        continue
    try:
        print(json.dumps({"cmd": cmd, **link.request(cmd, **args)}), flush=True)
    except Exception as e:
        print(json.dumps({"cmd": cmd, "error": str(e)}), flush=True)
link.close()
"""

PC2 = table("node", name="pc2")
CAM9 = table("camera", name="cam9", driver="demo", width=320, height=240, node="pc2", truth=True)
SUIT9 = table("mocap", name="suit9", driver="demo", channels=6, node="pc2", truth=True)
NODE_RIG = rig_text("two-pc", PC2, CAM9, SUIT9, table("audio", name="local", driver="demo"))


def control(hosts: Hosts, rig_file: Path, key: Path, *commands) -> list[dict]:
    result = hosts.run("ctl", [sys.executable, "-c", CONTROLLER, str(rig_file), str(key), json.dumps(commands)])
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_a_node_records_its_streams_of_the_rig_and_outlives_its_controller(hosts, tmp_path):
    key = new_key(tmp_path / "rig.key").path
    start_node(hosts, "pc2", key, tmp_path)
    (tmp_path / "rig.toml").write_text(NODE_RIG)
    start = {"session": "day", "scene": "scene", "number": 4, "take": "scene_t004"}
    calibration = {"folder": "calibration/two-pc", "files": {}, "latency_ms": {"cam9": 4.5}, "sha256": None}
    first = control(hosts, tmp_path / "rig.toml", key,
                    ("open", {"rig": NODE_RIG, "rig_name": "two-pc", "latency_ms": {"cam9": 4.5, "local": 1.0},
                              "calibration": calibration}),
                    ("start", start), ("sleep", 1.0))
    assert first[0]["streams"] == {"cam9": "camera", "suit9": "mocap"}  # not the controller's own stream
    assert first[1]["take"] == "scene_t004" and "error" not in first[1], first
    # the controller went away mid-take; the node recorded on, and a new controller stops the take
    time.sleep(2.0)
    # a node serves only what its takes' manifests list, of takes it recorded
    served = control(hosts, tmp_path / "rig.toml", key,
                     ("read", {"session": "day", "take": "scene_t004", "file": "../../node.log", "offset": 0,
                               "length": 100}),
                     ("read", {"session": "day", "take": "scene_t004", "file": "cam9.mkv", "offset": 0,
                               "length": 100}),
                     ("take_files", {"session": "..", "take": "pc2"}))
    assert all("error" in r for r in served), served
    assert "is not a file of scene_t004" in served[0]["error"]
    assert "is not a file of scene_t004" in served[1]["error"]  # listed once the take is stopped, not before
    second = control(hosts, tmp_path / "rig.toml", key, ("status", {}), ("stop", {}), ("start", start))
    assert second[0]["state"] == "recording"
    stop = second[1]
    assert stop["take"] == "scene_t004" and stop["status"] == "complete" and stop["faults"] == [], stop
    assert set(stop["streams"]) == {"cam9", "suit9"} and stop["streams"]["cam9"]["count"] > 30 * 2.5
    assert "exists; a take is never overwritten" in second[2]["error"]  # the same number again: refused
    take = tmp_path / "pc2" / "day" / "scene_t004"
    manifest = json.loads((take / "take.json").read_text())
    assert manifest["node"] == "pc2" and manifest["take"] == 4 and set(manifest["files"]) == set(stop["files"])
    # the controller's calibration of the node's streams, applied as the controller's own are
    assert manifest["calibration"] == calibration
    assert {s["name"]: s["latency_ms"] for s in manifest["rig"]["streams"]} == {"cam9": 4.5, "suit9": 0.0}
    # on the node's own clock (500 s ahead of the controller's): its t0 is a reading of that clock
    assert manifest["t0_host_ns"] == stop["t0_host_ns"] == first[1]["t0_host_ns"]
    with open(take / "cam9.truth.csv") as fh:
        truth = [int(r["true_t_ns"]) for r in csv.DictReader(fh)]
    assert truth and truth[0] >= 0
    checked = subprocess.run([sys.executable, "-m", "improvcap", "verify", str(take), "--json"],
                             capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, json.loads(checked.stdout)["takes"][0]["reasons"]
    log = (tmp_path / "pc2" / "node.log").read_text()
    assert "start: done" in log and "stop: done" in log and "exists; a take is never overwritten" in log


CLOCK = """
import json, sys, time
from pathlib import Path
from improvcap.clock import now_ns
from improvcap.link.keys import load_key
from improvcap.nodes.client import NodeLink
from improvcap.nodes.clock import NodeClockLog
from improvcap.take.controller_clock import fit_node_clock, to_controller_ns
from improvcap.rig import NodeSpec
link = NodeLink.connect(NodeSpec("pc2"), load_key(Path(sys.argv[1])), 10)
path = Path(sys.argv[2])
t0 = now_ns()
log = NodeClockLog(link.found, path, t0, poll_s=0.25).start()
time.sleep(float(sys.argv[3]))
log.stop()
segments = fit_node_clock(path)
before = now_ns()
node_ns = link.request("status")["clock_ns"]
after = now_ns()
print(json.dumps({"rows": log.rows, "offsets": [s.offset_ns for s in segments], "fitted": [s.fitted for s in segments],
                  "node_ns": node_ns, "mapped": int(to_controller_ns(segments, [node_ns])[0]),
                  "before": before, "after": after}))
link.close()
"""


def test_the_controller_logs_a_node_clock_and_fits_it_onto_its_own(hosts, tmp_path):
    key = new_key(tmp_path / "rig.key").path
    start_node(hosts, "pc2", key, tmp_path)
    result = hosts.run("ctl", [sys.executable, "-c", CLOCK, str(key), str(tmp_path / "pc2.clock.csv"), "7"])
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["rows"] >= 3 and out["fitted"] == [True], out  # liblsl probes every 2 s
    with open(tmp_path / "pc2.clock.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["host_ns", "remote_ns", "offset_ns", "rtt_ns"] and len(rows) == out["rows"]
    # the node's clock is 500 s ahead (its time namespace): the fit says so, within a millisecond ...
    assert out["offsets"][0] == pytest.approx(-500e9, abs=1e6)
    # ... and maps a reading of the node's clock to the controller's instant it was taken at
    assert out["mapped"] == pytest.approx(out["node_ns"] - 500 * 10**9, abs=1e6)
    assert out["before"] - 1e6 <= out["mapped"] <= out["after"] + 1e6


TWO_NODE_RIG = rig_text("two-pc", PC2, table("node", name="pc3"), CAM9, SUIT9,
                        table("audio", name="local", driver="demo"),
                        table("camera", name="cam8", driver="demo", width=320, height=240, node="pc3", truth=True),
                        table("audio", name="mic8", driver="demo", node="pc3"))


def truth_errors_ms(take: Path, manifest: dict, stream: str, table: str, ahead_s: int) -> list[float]:
    """|t0_host_ns + t_ns - truth| of a node's stream, its truth on the node's own clock converted by the
    offset the test gave that node's time namespace (not the tool's estimate of it)."""
    with open(take / f"{stream}.truth.csv") as fh:
        truth = {int(r["index"]): int(r["true_host_ns"]) - ahead_s * 10**9 for r in csv.DictReader(fh)}
    with open(take / table) as fh:
        t = {int(r["index"]): int(r["t_ns"]) for r in csv.DictReader(fh)}
    return sorted(abs(manifest["t0_host_ns"] + t[i] - truth[i]) / 1e6 for i in t if i in truth)


def verify_reasons(take: Path, expect: int = 0) -> list[str]:
    checked = subprocess.run([sys.executable, "-m", "improvcap", "verify", str(take), "--json"],
                             capture_output=True, text=True, timeout=120)
    reasons = json.loads(checked.stdout)["takes"][0]["reasons"]
    assert checked.returncode == expect, reasons
    return reasons


def collect(hosts: Hosts, key: Path, *paths: Path):
    result = hosts.run("ctl", [sys.executable, "-m", "improvcap", "collect", *map(str, paths), "--key", str(key),
                               "--json"])
    return result.returncode, json.loads(result.stdout or "null"), result.stderr


def test_a_take_across_two_nodes_is_on_one_clock_collected_and_verified_as_one(hosts, tmp_path):
    key = new_key(tmp_path / "rig.key").path
    for name in ("pc2", "pc3"):
        start_node(hosts, name, key, tmp_path)
    rig_file = tmp_path / "rig.toml"
    rig_file.write_text(TWO_NODE_RIG)
    proc = hosts.start("ctl", [sys.executable, "-m", "improvcap", "record", str(rig_file), "--key", str(key), "--out",
                               str(tmp_path / "ctl"), "--session", "day", "--duration", "6", "--slate", "--json"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_recording(tmp_path / "pc2" / "day")
    deadline = time.monotonic() + 30
    while not (tmp_path / "ctl" / "day" / "control.sock").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    # `ctl status` shows the nodes: each reached, its streams and its clock's offset
    status = subprocess.run([sys.executable, "-m", "improvcap", "ctl", "status", "--out", str(tmp_path / "ctl"),
                             "--session", "day", "--json"], capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    nodes = {n["node"]: n for n in json.loads(status.stdout)["nodes"]}
    assert [(n, nodes[n]["connected"], nodes[n]["streams"]) for n in sorted(nodes)] == \
        [("pc2", True, ["cam9", "suit9"]), ("pc3", True, ["cam8", "mic8"])]
    assert nodes["pc3"]["clock_offset_ms"] == pytest.approx(250_000, abs=1.0)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    # the dashboard (a status line when not on a terminal) shows the nodes' streams beside its own
    line = next(line for line in err.splitlines() if line.startswith("recording "))
    assert all(f"{n}:{s} " in line for n, s in (("pc2", "cam9"), ("pc2", "suit9"), ("pc3", "cam8"))), line
    take = Path(json.loads(out)["take"])
    manifest = json.loads((take / "take.json").read_text())
    assert set(manifest["streams"]) == {"local"} and manifest["faults"] == []  # its own stream only
    for name, ahead_s in OFFSETS.items():
        node = manifest["nodes"][name]
        assert node["take"] == take.name and node["status"] == "complete" and node["faults"] == []
        assert node["clock_file"] == f"{name}.node-clock.csv" and node["clock_file"] in manifest["files"]
        assert node["clock"]["segments"][0]["offset_ns"] == pytest.approx(-ahead_s * 1e9, abs=1e6)
        # the node's own take: on the controller's clock, with the files and hashes the controller holds
        on_node = tmp_path / name / "day" / take.name
        node_manifest = json.loads((on_node / "take.json").read_text())
        assert node_manifest["files"] == node["files"]
        assert node_manifest["controller_clock"]["t0_host_ns"] == manifest["t0_host_ns"]
        assert node_manifest["performers_sha256"] == manifest["performers_sha256"]
        assert not any("incomplete" in r for r in verify_reasons(on_node))
    for name, stream, rows in (("pc2", "cam9", "cam9.frames.csv"), ("pc2", "suit9", "suit9.csv"),
                               ("pc3", "cam8", "cam8.frames.csv")):
        errors = truth_errors_ms(tmp_path / name / "day" / take.name, manifest, stream, rows, OFFSETS[name])
        assert len(errors) > 100 and errors[len(errors) // 2] < 0.5 and errors[-1] < 2.0, (stream, errors[-5:])
    # repair on a node refits its take onto the controller's clock again, from the offsets it keeps
    on_pc3 = tmp_path / "pc3" / "day" / take.name
    before = (on_pc3 / "cam8.frames.csv").read_text()
    repaired = subprocess.run([sys.executable, "-m", "improvcap", "repair", str(on_pc3), "--force", "--json"],
                              capture_output=True, text=True, timeout=120)
    assert repaired.returncode == 0, repaired.stderr
    assert (on_pc3 / "cam8.frames.csv").read_text() == before
    # before collect: incomplete, naming each node, not broken
    reasons = verify_reasons(take)
    assert f"WARN: incomplete: the streams of node pc2 (cam9, suit9) are in its own take {take.name} on that PC, " \
        "not in this folder (take.json lists their files and sha256)" in reasons, reasons
    # a collect interrupted earlier left part of a file: continued; a file in the way is never overwritten
    (take / ".cam9.mkv.collecting").write_bytes((tmp_path / "pc2" / "day" / take.name / "cam9.mkv").read_bytes()[:5000])
    (take / "nodes" / "pc3").mkdir(parents=True)
    (take / "nodes" / "pc3" / "events.csv").write_text("not the node's\n")
    rc, first, stderr = collect(hosts, key, tmp_path / "ctl")
    assert rc == 1 and "never overwritten" in stderr and stderr.count("\n") == 1, stderr
    rows = {r["node"]: r for r in first["collected"]}
    assert rows["pc2"]["ok"] and rows["pc2"]["resumed"] == 1 and not rows["pc3"]["ok"], rows
    (take / "nodes" / "pc3" / "events.csv").unlink()
    rc, second, stderr = collect(hosts, key, take)
    assert rc == 0 and [r["node"] for r in second["collected"]] == ["pc3"], (stderr, second)
    assert collect(hosts, key, take)[:2] == (0, {"takes": 1, "collected": []})  # nothing left to bring
    # one take: every stream, on one clock, verified whole (slates across PCs)
    manifest = json.loads((take / "take.json").read_text())
    assert set(manifest["streams"]) == {"local", "cam9", "suit9", "cam8", "mic8"}
    assert all(manifest["nodes"][n]["collected"] for n in OFFSETS)
    assert not list(take.rglob("*.collecting"))
    reasons = verify_reasons(take)
    assert not any("incomplete" in r for r in reasons), reasons
    checked = json.loads(subprocess.run([sys.executable, "-m", "improvcap", "verify", str(take), "--json"],
                                        capture_output=True, text=True, timeout=120).stdout)["takes"][0]
    for stream in ("cam9", "cam8", "mic8", "local"):
        offsets = checked["streams"][stream]["slate_offsets_ms"]
        assert len(offsets) == 2, (stream, checked["streams"][stream])
    # the collected take calibrates the rig's latencies, the nodes' streams too; --record is this PC's only
    cal = [sys.executable, "-m", "improvcap", "calibrate", "sync", str(rig_file), "--calibration", str(tmp_path / "cal")]
    calibrated = subprocess.run([*cal, "--take", str(take), "--json"], capture_output=True, text=True, timeout=120)
    assert calibrated.returncode == 0, calibrated.stderr
    assert set(json.loads(calibrated.stdout)["streams"]) == {"local", "cam9", "suit9", "cam8", "mic8"}
    refused = subprocess.run([*cal, "--record", "5"], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "improvcap collect" in refused.stderr and refused.stderr.count("\n") == 1


def test_rig_check_measures_the_streams_of_every_node_and_its_own(hosts, tmp_path):
    key = new_key(tmp_path / "rig.key").path
    start_node(hosts, "pc2", key, tmp_path)
    rig_file = tmp_path / "rig.toml"
    rig_file.write_text(NODE_RIG)
    result = hosts.run("ctl", [sys.executable, "-m", "improvcap", "rig", "check", str(rig_file), "--key", str(key),
                               "--seconds", "2", "--json"])
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {r["stream"]: r for r in json.loads(result.stdout)["streams"]}
    assert {s: rows[s].get("node") for s in rows} == {"local": None, "cam9": "pc2", "suit9": "pc2"}
    assert all(r["ok"] for r in rows.values()) and rows["cam9"]["measured_rate"] == pytest.approx(30, rel=0.05)
    # a stream that delivers other than the rig says fails, named with its node
    strict = hosts.run("ctl", [sys.executable, "-m", "improvcap", "rig", "check", str(rig_file), "--key", str(key),
                               "--seconds", "1", "--tolerance", "0.0001", "--json"])
    failed = [r for r in json.loads(strict.stdout)["streams"] if not r["ok"]]
    assert strict.returncode == 1 and any(r.get("node") == "pc2" for r in failed), strict.stdout


def test_a_node_missing_at_the_start_is_one_line_and_nothing_is_recorded(hosts, tmp_path):
    key = new_key(tmp_path / "rig.key").path
    rig_file = tmp_path / "rig.toml"
    rig_file.write_text(NODE_RIG)  # pc2 is not running
    result = hosts.run("ctl", [sys.executable, "-m", "improvcap", "record", str(rig_file), "--key", str(key),
                               "--out", str(tmp_path / "ctl"), "--duration", "2"])
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: node pc2: not found on the network"), result.stderr
    assert not (tmp_path / "ctl").exists()


def record_in_background(hosts: Hosts, rig_file: Path, key: Path, out: Path, seconds: float):
    return hosts.start("ctl", [sys.executable, "-m", "improvcap", "record", str(rig_file), "--key", str(key),
                               "--out", str(out), "--session", "day", "--duration", str(seconds), "--json"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def recording_across(hosts: Hosts, tmp_path: Path, seconds: float):
    """pc2 running with the rig's key and `record` of NODE_RIG on the controller, once pc2 records."""
    key = new_key(tmp_path / "rig.key").path
    start_node(hosts, "pc2", key, tmp_path)
    rig_file = tmp_path / "rig.toml"
    rig_file.write_text(NODE_RIG)
    proc = record_in_background(hosts, rig_file, key, tmp_path / "ctl", seconds)
    wait_recording(tmp_path / "pc2" / "day")
    return proc


def wait_recording(take_parent: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not list(take_parent.glob("*/cam9.frames.csv")):
        assert time.monotonic() < deadline, "the node never started the take"
        time.sleep(0.1)


def test_a_network_cut_mid_take_loses_nothing(hosts, tmp_path):
    proc = recording_across(hosts, tmp_path, 12)
    time.sleep(2.0)
    hosts.cut("pc2", up=False)  # 5 s without a network: the node records on, the clock log waits
    time.sleep(5.0)
    hosts.cut("pc2", up=True)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    manifest = json.loads((Path(json.loads(out)["take"]) / "take.json").read_text())
    node = manifest["nodes"]["pc2"]
    assert node["status"] == "complete" and node["faults"] == []
    cam = node["streams"]["cam9"]
    assert cam["dropped"] == 0 and cam["count"] >= 30 * 11, cam  # every frame of the 12 s, the cut's too
    # the clock fit spans the cut: offsets before and after it, one segment, still 500 s
    with open(Path(json.loads(out)["take"]) / node["clock_file"]) as fh:
        host_s = [int(r["host_ns"]) / 1e9 for r in csv.DictReader(fh)]
    assert min(host_s) < 3 and max(host_s) > 9, host_s
    segments = node["clock"]["segments"]
    assert len(segments) == 1 and segments[0]["offset_ns"] == pytest.approx(-500e9, abs=1e6)


def test_a_node_killed_mid_take_is_a_fault_the_rest_finishes_and_its_take_is_repairable(hosts, tmp_path):
    proc = recording_across(hosts, tmp_path, 6)
    time.sleep(2.0)
    assert hosts.kill_matching(f"--out {tmp_path / 'pc2'}") >= 1
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err  # the take is complete, with a fault someone must look at
    take = Path(json.loads(out)["take"])
    manifest = json.loads((take / "take.json").read_text())
    assert manifest["status"] == "complete" and manifest["streams"]["local"]["count"] > 48000 * 5
    details = [f["detail"] for f in manifest["faults"]]
    assert details and details[0].startswith("node pc2: did not stop its take"), details
    assert "error" in manifest["nodes"]["pc2"]
    checked = subprocess.run([sys.executable, "-m", "improvcap", "verify", str(take), "--json"],
                             capture_output=True, text=True, timeout=120)
    assert checked.returncode == 1 and any(r.startswith("FAIL: node pc2: no account of its take")
                                           for r in json.loads(checked.stdout)["takes"][0]["reasons"])
    # on the node: a take cut short, which repair makes whole with its loss stated
    on_node = tmp_path / "pc2" / "day" / take.name
    repaired = subprocess.run([sys.executable, "-m", "improvcap", "repair", str(on_node), "--json"],
                              capture_output=True, text=True, timeout=120)
    assert repaired.returncode == 0, repaired.stderr
    node_manifest = json.loads((on_node / "take.json").read_text())
    assert node_manifest["status"] == "repaired" and "controller_clock" not in node_manifest
    # the node back: collect puts its take on the controller's clock from the offsets logged until it died
    start_node(hosts, "pc2", tmp_path / "rig.key", tmp_path)
    rc, collected, stderr = collect(hosts, tmp_path / "rig.key", take)
    assert rc == 0 and collected["collected"][0]["streams"] == ["cam9", "suit9"], (stderr, collected)
    assert json.loads((on_node / "take.json").read_text())["controller_clock"]["t0_host_ns"] == manifest["t0_host_ns"]
    errors = truth_errors_ms(take, manifest, "cam9", "cam9.frames.csv", OFFSETS["pc2"])
    assert errors[len(errors) // 2] < 0.5 and errors[-1] < 2.0, errors[-5:]
    reasons = verify_reasons(take, expect=1)
    assert not any("no account" in r or "incomplete" in r for r in reasons), reasons


ATTACKER = """
import json, socket, sys
from pathlib import Path
from improvcap.link.channel import controller_handshake
from improvcap.link.keys import load_key
from improvcap.link.wire import dump_line

address, key_file, rig_text = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
key = load_key(key_file)
port = 7371
outcome = {}

def connect():
    return socket.create_connection((address, port), timeout=10)

def answered(sock):
    sock.settimeout(5)
    try:
        data = sock.recv(1 << 16)
    except OSError:
        return "closed"
    return "closed" if not data else data.decode()

# 1. a command with no handshake at all
sock = connect()
sock.makefile("rb").readline()  # the node's hello
sock.sendall(dump_line({"cmd": "open", "rig": rig_text, "rig_name": "two-pc"}))
outcome["unauthenticated"] = answered(sock)
sock.close()
# 2. the rig's controller, its lines captured on the wire: an open, then a close
wire = []
sock = connect()
channel, _ = controller_handshake(sock, key, "pc2")
class Tap:  # what the controller sends, as it goes on the wire
    def sendall(self, data):
        wire.append(data)
        sock.sendall(data)
channel.sock = Tap()
for cmd in ({"cmd": "open", "rig": rig_text, "rig_name": "two-pc"}, {"cmd": "close"}):
    channel.send(cmd)
    outcome.setdefault("real", []).append(channel.recv()["ok"])
# ... its open again on that connection: replayed
sock.sendall(wire[0])
outcome["replayed"] = answered(sock)
sock.close()
# 3. a new connection, the captured line replayed there (another connection's nonces)
sock = connect()
channel, _ = controller_handshake(sock, key, "pc2")
sock.sendall(wire[0])
outcome["replayed_elsewhere"] = answered(sock)
sock.close()
# 4. a forged open: the right form, a signature made without the key
sock = connect()
channel, _ = controller_handshake(sock, key, "pc2")
line = json.loads(dump_line({"seq": 1, "body": {"cmd": "open", "rig": rig_text, "rig_name": "two-pc"},
                              "mac": "0" * 64}))
sock.sendall(dump_line(line))
outcome["forged"] = answered(sock)
sock.close()
print(json.dumps(outcome))
"""


def test_forged_replayed_and_unauthenticated_commands_from_another_host_change_nothing(hosts, tmp_path):
    key = new_key(tmp_path / "rig.key").path
    start_node(hosts, "pc2", key, tmp_path)
    result = hosts.run("ctl", [sys.executable, "-c", ATTACKER, hosts.hosts["pc2"].address, str(key), NODE_RIG])
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome.pop("real") == [True, True]  # the controller's own open and close were obeyed
    assert outcome == {k: "closed" for k in ("unauthenticated", "replayed", "replayed_elsewhere", "forged")}, outcome
    # the replayed and forged opens opened nothing; each refusal is in the node's log, with what it was
    after = control(hosts, rig(tmp_path / "rig.toml", hosts), key, ("status", {}))
    assert after[0]["state"] == "closed"
    assert not (tmp_path / "pc2" / "day").exists() and sorted(p.name for p in (tmp_path / "pc2").iterdir()) == ["node.log"]
    log = (tmp_path / "pc2" / "node.log").read_text()
    assert log.count("open: done") == 1 and log.count("close: done") == 1, log  # the real ones only
    refused = [line for line in log.splitlines() if " refused " in line]
    assert len(refused) == 4, log
    assert "no controller's answer to the hello" in refused[0]
    assert "message 1 where 3 was due (replayed or lost)" in refused[1]
    assert "not of this rig's key (forged, from another connection, or reflected)" in refused[2]
    assert "not of this rig's key" in refused[3]

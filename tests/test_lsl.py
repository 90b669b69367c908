"""LSL inlets on real liblsl: senders in child processes (one in a time namespace of its own, one whose
clock drifts under libfaketime), read by the `lsl` driver, and the clock fit against their ground truth."""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from dataclasses import dataclass, field

import numpy as np
import pytest

from improvcap.errors import DeviceError
from improvcap.devices.lsl_inlet import seconds_to_ns
from improvcap.lslclock import ClockOffset, dejitter, fit_lsl, fit_offsets
from improvcap.rig import StreamSpec

from helpers import demo_rig, rig_text, rows_on_disk, table, wait_for




def lsl_spec(stream: str, **settings) -> StreamSpec:
    return StreamSpec("lsl", "wrist", settings.pop("driver", "lsl"),
                      {"name": "wrist", "stream": stream, "timeout_s": 5.0, "channels": None, "rate": None,
                       "latency_ms": 0.0, "drift_ppm": 0.0, "offset_ms": 0.0, "jitter_ms": 0.0, "truth": True,
                       **settings})


# --- the fit, on synthetic clocks -----------------------------------------------------------------

def synthetic(drift_ppm: float, offset_s: float, seconds: float, jitter_ns: float, seed: int = 1):
    rng = np.random.default_rng(seed)
    true = (np.arange(0, seconds, 1 / 32) * 1e9 + 1e12).astype(np.int64)
    stamps = (true * (1 + drift_ppm * 1e-6) + offset_s * 1e9 + rng.normal(0, jitter_ns, len(true))).astype(np.int64)
    arrival = true + 3_000_000
    at = np.arange(1e12, 1e12 + seconds * 1e9, 2e9).astype(np.int64)
    rtt = (60e3 + rng.exponential(30e3, len(at))).astype(np.int64)
    remote = (at * (1 + drift_ppm * 1e-6) + offset_s * 1e9).astype(np.int64)
    offset = (at - remote + rng.normal(0, 1, len(at)) * rtt / 4).astype(np.int64)
    return true, stamps, arrival, {"host_ns": at, "remote_ns": remote, "offset_ns": offset, "rtt_ns": rtt}


def test_fit_recovers_offset_and_drift_and_dejitters():
    true, stamps, arrival, clock = synthetic(100.0, 500.0, 120.0, 2e6)
    host, fit = fit_lsl(stamps, arrival, clock, 32.0)
    err = np.abs(host - true)
    assert np.percentile(err, 99) < 200_000, np.percentile(err, 99)  # 2 ms of stamp jitter, dejittered
    assert fit.as_dict()["drift_ppm"] == pytest.approx(100.0, abs=2.0)
    assert fit.resets == 0 and fit.dejittered
    raw, _ = fit_lsl(stamps, arrival, clock, 0.0)  # an irregular stream keeps its stamps as they are
    assert np.percentile(np.abs(raw - true), 99) > 3_000_000


def test_a_clock_step_splits_the_fit_and_each_part_keeps_its_own_line():
    true, stamps, arrival, clock = synthetic(50.0, 10.0, 60.0, 0.0)
    step = 7_000_000_000  # the sender restarted with its clock 7 s on, 30 s into the take
    late = true >= true[0] + 30_000_000_000
    stamps = stamps + np.where(late, step, 0)
    clock["remote_ns"] = clock["remote_ns"] + np.where(clock["host_ns"] >= true[0] + 30_000_000_000, step, 0)
    clock["offset_ns"] = clock["host_ns"] - clock["remote_ns"]
    host, fit = fit_lsl(stamps, arrival, clock, 32.0)
    assert fit.resets == 1
    assert np.abs(host - true).max() < 100_000
    t0 = int(true[0]) - 1_000_000  # as a take stores them: arrivals and clock rows since t0
    since_t0, _ = fit_lsl(stamps, arrival - t0, {**clock, "host_ns": clock["host_ns"] - t0}, 32.0)
    assert np.abs(since_t0 - true).max() < 100_000


def test_short_span_fits_the_offset_only_and_says_so():
    true, stamps, arrival, clock = synthetic(300.0, 1.0, 3.0, 0.0)
    host, fit = fit_lsl(stamps, arrival, clock, 32.0)
    entry = fit.as_dict()
    assert entry["drift_ppm"] == 0.0 and entry["note"].startswith("offset only: ")
    assert np.abs(host - true).max() < 2_000_000  # 300 ppm over 3 s, unfitted: under a millisecond


def test_dejitter_keeps_runs_apart_at_a_gap():
    t = np.concatenate([np.arange(100) * 31_250_000, 10_000_000_000 + np.arange(100) * 31_250_000]).astype(np.int64)
    jittered = t + np.random.default_rng(3).normal(0, 1e6, len(t)).astype(np.int64)
    assert np.abs(dejitter(jittered, 32.0) - t).max() < 1_000_000


def test_dejitter_reads_a_small_step_back_as_jitter_not_a_break():
    t = (np.arange(6000) * 10_000_000).astype(np.int64)  # 100 Hz for a minute, 3 ms of jitter
    jittered = t + np.random.default_rng(4).normal(0, 3e6, len(t)).astype(np.int64)
    assert (np.diff(jittered) < 0).sum() > 10  # stamps out of order, as such jitter gives
    assert np.percentile(np.abs(dejitter(jittered, 100.0) - t), 99) < 200_000


def test_offsets_weighted_by_their_round_trips():
    at = np.arange(20) * 2_000_000_000
    offset = np.full(20, 1_000_000, dtype=np.int64)
    rtt = np.full(20, 50_000, dtype=np.int64)
    offset[5], rtt[5] = 4_000_000, 8_000_000  # one slow probe, far off: hardly counts
    (seg,) = fit_offsets(at, at - offset, offset, rtt)
    assert abs(seg.offset_ns - 1_000_000) < 20_000 and abs(seg.drift_ppm) < 1.0


# --- real senders ---------------------------------------------------------------------------------

@dataclass
class Sender:
    """The demo sender in a child process, optionally in a time namespace; its truth lines collected."""

    proc: subprocess.Popen[str]
    source_id: str
    truth: dict[int, int] = field(default_factory=dict)

    def collect(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            parts = line.split()
            if len(parts) == 3:
                self.truth[round(float(parts[2]) * 1e6)] = int(parts[1])

    def true_ns(self, device_ns: int) -> int | None:
        key = round(device_ns / 1e3)
        return next((self.truth[k] for k in (key, key - 1, key + 1) if k in self.truth), None)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def start_sender(*prefix: str, source_id: str | None = None, rate: float = 32.0, jitter_ms: float = 0.0) -> Sender:
    sid = source_id or f"test-{uuid.uuid4().hex[:12]}"
    proc = subprocess.Popen([*prefix, sys.executable, "-m", "improvcap.devices.lsl_sender", "--name", "wrist-test",
                             "--source-id", sid, "--rate", str(rate), "--jitter-ms", str(jitter_ms)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.stdout is not None
    ready = proc.stdout.readline()
    if not ready.startswith("ready"):
        proc.kill()
        err = proc.communicate()[1]
        if prefix:
            pytest.skip(f"cannot start a sender under {' '.join(prefix)}: {err.strip()[:200]}")
        raise AssertionError(err)
    sender = Sender(proc, sid)
    threading.Thread(target=sender.collect, daemon=True).start()
    return sender


def record(device, seconds: float):
    device.open()
    device.start()
    samples, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        s = device.read(0.2)
        if s is not None:
            samples.append(s)
    device.stop()
    return samples


def fitted_errors(samples, truth_of, rate: float) -> tuple[np.ndarray, object]:
    data = [s for s in samples if s.count]
    offs = [s.payload for s in samples if isinstance(s.payload, ClockOffset)]
    clock = {k: np.array([getattr(o, k) for o in offs], dtype=np.int64) for k in ("host_ns", "remote_ns", "offset_ns", "rtt_ns")}
    host, fit = fit_lsl(np.array([s.device_ns for s in data]), np.array([s.host_ns for s in data]), clock, rate)
    truth = [truth_of(s) for s in data]
    known = np.array([t is not None for t in truth])
    assert known.mean() > 0.95, f"{known.sum()} of {len(data)} samples matched to their truth"
    return np.abs(host[known] - np.array([t for t in truth if t is not None])), fit


def test_the_driver_reads_a_sender_with_its_labels_and_clock():
    from improvcap.devices.lsl_inlet import LslInlet

    sender = start_sender()
    inlet = LslInlet(lsl_spec(f"source_id='{sender.source_id}'", channels=2, rate=32.0))
    try:
        samples = record(inlet, 6.0)
        info = inlet.describe()
    finally:
        inlet.close()
        sender.stop()
    assert info["clock"] == "lsl" and info["channel_names"] == ["heart_rate", "skin_conductance"]
    assert info["lsl"]["channel_units"] == ["bpm", "uS"] and info["lsl"]["nominal_srate"] == 32.0
    data = [s for s in samples if s.count]
    assert 32 * 5 <= len(data) <= 32 * 7 and all(len(s.payload) == 2 for s in data)
    assert sum(isinstance(s.payload, ClockOffset) for s in samples) >= 2
    err, fit = fitted_errors(samples, lambda s: sender.true_ns(s.device_ns), 32.0)
    assert np.percentile(err, 99) < 1_000_000, np.percentile(err, [50, 99])
    assert abs(fit.as_dict()["offset_ns"]) < 1_000_000  # the same host: the same clock


def test_a_sender_in_its_own_time_namespace_is_fitted_within_a_millisecond():
    from improvcap.devices.lsl_inlet import LslInlet

    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        pytest.skip("time namespaces need root and unshare (util-linux)")
    sender = start_sender(unshare, "--time", "--monotonic", "500", "--fork", jitter_ms=1.0)
    inlet = LslInlet(lsl_spec(f"source_id='{sender.source_id}'"))
    try:
        samples = record(inlet, 8.0)
    finally:
        inlet.close()
        sender.stop()
    err, fit = fitted_errors(samples, lambda s: sender.true_ns(s.device_ns), 32.0)
    assert fit.as_dict()["offset_ns"] == pytest.approx(-500e9, abs=1e6)  # its clock is 500 s ahead of ours
    assert np.percentile(err, 99) < 1_000_000, np.percentile(err, [50, 99])


def test_the_demo_twin_drifts_through_liblsl_own_probes():
    from improvcap.devices.lsl_demo import DemoLsl, faketime_library

    if faketime_library() is None:
        pytest.skip("the demo sender's drift needs libfaketime (Debian package libfaketime)")
    demo = DemoLsl(lsl_spec("", driver="demo", rate=32.0, drift_ppm=200.0, offset_ms=250.0, jitter_ms=2.0))
    try:
        samples = record(demo, 10.0)
    finally:
        demo.close()
    err, fit = fitted_errors(samples, lambda s: s.true_ns, 32.0)
    assert fit.as_dict()["drift_ppm"] == pytest.approx(200.0, abs=20.0)
    assert np.percentile(err, 99) < 1_000_000, np.percentile(err, [50, 99])


def test_a_marker_stream_arrives_as_strings():
    from improvcap.devices.lsl_inlet import LslInlet

    sid = f"markers-{uuid.uuid4().hex[:12]}"
    script = ("import pylsl, sys, time\n"
              f"o = pylsl.StreamOutlet(pylsl.StreamInfo('cues', 'Markers', 1, 0, 'string', '{sid}'))\n"
              "print('ready', flush=True)\n"
              "time.sleep(2.0)\n"
              "for word in ('scene one', 'laugh', 'cut'):\n"
              "    o.push_sample([word]); time.sleep(0.3)\n"
              "time.sleep(3)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None and proc.stdout.readline().startswith("ready")
    inlet = LslInlet(lsl_spec(f"source_id='{sid}'", rate=0.0))
    try:
        samples = record(inlet, 4.0)
        info = inlet.describe()
    finally:
        inlet.close()
        proc.kill()
        proc.wait()
    assert info["markers"] and info["rate"] == 0.0
    assert [s.payload for s in samples if s.count] == ["scene one", "laugh", "cut"]


@pytest.mark.parametrize("settings, message", [
    ({"channels": 3}, "the rig says channels = 3, the LSL stream wrist-test has 2"),
    ({"rate": 100.0}, "the rig says rate = 100, the LSL stream wrist-test sends at 32 Hz"),
])
def test_a_rig_that_does_not_match_the_stream_is_refused_in_one_line(settings, message):
    from improvcap.devices.lsl_inlet import LslInlet

    sender = start_sender()
    try:
        with pytest.raises(DeviceError) as e:
            LslInlet(lsl_spec(f"source_id='{sender.source_id}'", **settings)).open()
    finally:
        sender.stop()
    assert str(e.value) == f"wrist: {message}"


def test_no_stream_and_a_bad_query_are_one_line_errors():
    from improvcap.devices.lsl_inlet import LslInlet

    t = time.monotonic()
    with pytest.raises(DeviceError, match=r"wrist: no LSL stream matches source_id='nobody-here' within 1 s"):
        LslInlet(lsl_spec("source_id='nobody-here'", timeout_s=1.0)).open()
    assert time.monotonic() - t < 5
    with pytest.raises(DeviceError, match=r"^wrist: unbalanced brackets in the stream query \"name='x' and \(\"$"):
        LslInlet(lsl_spec("name='x' and (", timeout_s=1.0)).open()


def test_a_sender_that_comes_back_is_reattached():
    from improvcap.devices.lsl_inlet import LslInlet

    first = start_sender()
    inlet = LslInlet(lsl_spec(f"source_id='{first.source_id}'"))
    try:
        inlet.open()
        inlet.start()
        got: list = []

        def pull(seconds: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                s = inlet.read(0.2)
                if s is not None and s.count:
                    got.append(s)
        pull(2.0)
        before = len(got)
        first.stop()
        pull(1.5)
        second = start_sender(source_id=first.source_id)
        try:
            pull(6.0)
        finally:
            second.stop()
    finally:
        inlet.close()
    again = [s for s in got[before:] if second.true_ns(s.device_ns) is not None]
    assert before > 40 and len(again) > 32, (before, len(got), len(again))


# --- LSL streams in takes -------------------------------------------------------------------------

def run(cwd, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "improvcap", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def test_a_take_of_the_demo_lsl_rig_is_on_the_shared_clock_and_verifies(tmp_path, studio_day):
    """The studio day's 8 s slated take of the shipped demo-lsl rig (studio_day.py)."""
    import csv
    import json

    if "lsl" not in studio_day.takes:
        pytest.skip("the demo-lsl rig's drifting sender needs libfaketime (Debian package libfaketime)")
    take = studio_day["lsl"]
    manifest = json.loads((take / "take.json").read_text())
    wrist = manifest["streams"]["wrist"]
    assert wrist["kind"] == "lsl" and wrist["device"]["lsl"]["channel_labels"] == ["heart_rate", "skin_conductance"]
    assert wrist["clock"]["domain"] == "lsl" and wrist["clock"]["drift_ppm"] == pytest.approx(100, abs=40)
    assert {"wrist.csv", "wrist.clock.csv"} <= set(manifest["files"])
    with open(take / "wrist.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[:6] == ["index", "t_ns", "device_ns", "host_ns", "heart_rate", "skin_conductance"]
    with open(take / "wrist.truth.csv") as fh:
        truth = {int(r["index"]): int(r["true_t_ns"]) for r in csv.DictReader(fh)}
    err = np.array([abs(int(r["t_ns"]) - truth[int(r["index"])]) for r in rows if int(r["index"]) in truth])
    assert len(err) > 0.95 * len(rows) and len(rows) == wrist["count"] > 32 * 7
    assert np.percentile(err, 99) < 1_000_000, np.percentile(err, [50, 99])
    checked = run(tmp_path, "verify", str(take), "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    report = json.loads(checked.stdout)["takes"][0]
    assert report["reasons"] == ["WARN: no performers recorded"], report["reasons"]
    offsets = report["streams"]["wrist"]["slate_offsets_ms"]
    assert len(offsets) == 2 and all(v is not None and -2 <= v <= 1000 / 32 + 2 for v in offsets), offsets
    # what `calibrate sync` and `slates` search: the sensor's rows too
    from improvcap.slates import detect_take
    assert {name: len(found) for name, found in detect_take(take).items()} == {"cam0": 2, "room": 2, "wrist": 2}


def lsl_rig(path: Path, source_id: str, **extra: object) -> None:
    """A demo camera and the LSL stream `wrist` of the sender with `source_id` (`extra`: its other keys)."""
    path.write_text(demo_rig("lsl-test", audio=None, mocap=None, master="cam0", tables=[
        table("lsl", name="wrist", driver="lsl", stream=f"source_id='{source_id}'", timeout_s=2, **extra)]))


def test_rig_check_refuses_a_stream_unlike_the_rig_in_one_line(tmp_path):
    sender = start_sender()
    try:
        lsl_rig(tmp_path / "rig.toml", sender.source_id, channels=3)
        result = run(tmp_path, "rig", "check", "rig.toml", "--seconds", "1")
    finally:
        sender.stop()
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip()
    assert line == "error: wrist: the rig says channels = 3, the LSL stream wrist-test has 2", line


def test_a_sender_that_dies_mid_take_is_a_fault_and_the_camera_goes_on(tmp_path):
    import json
    import signal

    sender = start_sender()
    lsl_rig(tmp_path / "rig.toml", sender.source_id)
    proc = subprocess.Popen([sys.executable, "-m", "improvcap", "record", "rig.toml", "--out", "out", "--session", "s",
                             "--json"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    take = tmp_path / "out" / "s" / "scene_t001"
    try:
        wait_for(lambda: rows_on_disk(take / "wrist.csv") >= 32, "a second of the sender's samples", proc)
        sender.stop()
        # the silence limit is the stream's timeout_s (2 s): the fault is in events.csv within a second of it
        wait_for(lambda: ",fault,wrist," in read_text(take / "events.csv"), "the fault", proc)
        wait_for(lambda: rows_on_disk(take / "cam0.frames.csv") >= 60 + camera_rows_at_fault(take),
                 "two more seconds of the camera", proc)
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the take ends cleanly
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "wrist: no samples for" in err and "the device stopped sending" in err, err
    manifest = json.loads((take / "take.json").read_text())
    assert manifest["status"] == "complete"
    fault_ns = next(f["t_ns"] for f in manifest["faults"] if f["stream"] == "wrist")
    cam = manifest["streams"]["cam0"]
    # the camera went on recording after the sender died, to the end of the take
    assert cam["state"] == "ok" and cam["last_t_ns"] > fault_ns + 1_500_000_000
    assert 32 <= manifest["streams"]["wrist"]["count"] <= 32 * (fault_ns / 1e9)


def read_text(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def camera_rows_at_fault(take: Path) -> int:
    """cam0's rows stamped before the first fault of events.csv."""
    fault = next(int(line.split(",")[0]) for line in read_text(take / "events.csv").splitlines() if ",fault," in line)
    return sum(1 for line in read_text(take / "cam0.frames.csv").splitlines()[1:]
               if line.count(",") > 1 and int(line.split(",")[1]) <= fault)


def test_devices_lists_the_lsl_streams_on_the_network(tmp_path):
    import json

    sender = start_sender()
    try:
        result = run(tmp_path, "devices", "--json")
        shown = subprocess.run([sys.executable, "-m", "improvcap", "devices"], cwd=tmp_path, capture_output=True,
                               text=True, timeout=120, env={**os.environ, "COLUMNS": "250"})
    finally:
        sender.stop()
    assert result.returncode == 0, result.stderr
    mine = [s for s in json.loads(result.stdout)["lsl_streams"] if s["source_id"] == sender.source_id]
    assert mine == [{"name": "wrist-test", "type": "Physio", "host": os.uname().nodename, "rate": 32.0, "channels": 2,
                     "format": "float32", "source_id": sender.source_id, "query": f"source_id='{sender.source_id}'"}]
    assert "lsl_streams" in shown.stdout and sender.source_id in shown.stdout


def test_a_sender_restarted_with_its_clock_stepped_is_reattached_within_the_take(tmp_path):
    """The sender dies 3 s into the take and comes back a second later with the same source_id in a time
    namespace (its local_clock 500 s on): liblsl re-attaches it, the take keeps both parts, and the final
    fit splits the sender's clock into two segments that each put their samples on the truth."""
    import json

    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        pytest.skip("time namespaces need root and unshare (util-linux)")
    first = start_sender(jitter_ms=1.0)
    lsl_rig(tmp_path / "rig.toml", first.source_id)
    proc = subprocess.Popen([sys.executable, "-m", "improvcap", "record", "rig.toml", "--out", "out", "--session", "s",
                             "--duration", "12", "--json"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    take = tmp_path / "out" / "s" / "scene_t001"
    second = None
    try:
        deadline = time.monotonic() + 60
        while not (take / "wrist.csv").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(3.0)
        first.stop()
        time.sleep(1.0)
        second = start_sender(unshare, "--time", "--monotonic", "500", "--fork", source_id=first.source_id,
                              jitter_ms=1.0)
        out, err = proc.communicate(timeout=120)
    finally:
        for sender in (first, second):
            if sender is not None:
                sender.stop()
    # the second missing is the sender's loss: a fault of the stream, in those words; the camera has none
    assert proc.returncode == 1, err
    manifest = json.loads((take / "take.json").read_text())
    assert [(f["stream"], f["detail"].split(": ")[-1]) for f in manifest["faults"]] == [
        ("wrist", "the sender paused or went away meanwhile (an LSL sender's own stamps say which)")], manifest["faults"]
    assert manifest["status"] == "complete"
    fit = manifest["streams"]["wrist"]["clock"]
    assert fit["resets"] == 1, fit
    with open(take / "wrist.csv") as fh:
        rows = list(csv.DictReader(fh))
    device = np.array([int(r["device_ns"]) for r in rows])
    assert np.diff(device).max() > 490e9  # the second sender's clock, 500 s on
    t0 = manifest["t0_host_ns"]
    err_ms = []
    for r in rows:
        d = int(r["device_ns"])
        true = first.true_ns(d) or second.true_ns(d)
        if true is not None:
            err_ms.append(abs(int(r["t_ns"]) + t0 - true) / 1e6)
    before, after = (device < device[0] + 100e9).sum(), (device > device[0] + 100e9).sum()
    assert before >= 32 * 2.5 and after >= 32 * 4, (before, after)
    assert len(err_ms) > 0.9 * len(rows), (len(err_ms), len(rows))
    assert np.percentile(err_ms, 99) < 1.0, np.percentile(err_ms, [50, 99, 100])
    # verify fails the take for its fault only: no stamp gap across the clock step, the rate as sent
    verified = run(tmp_path, "verify", str(take), "--json")
    assert verified.returncode == 1, verified.stderr
    result = json.loads(verified.stdout)["takes"][0]
    assert [r for r in result["reasons"] if r.startswith("FAIL")] == [
        f"FAIL: fault at {manifest['faults'][0]['t_ns'] / 1e9:.3f} s in wrist: {manifest['faults'][0]['detail']}"]
    assert result["streams"]["wrist"]["drops"] < 32 * 3 and 31 < result["streams"]["wrist"]["measured_rate"] < 33


MARKER_TEXTS = ["scene one", "laugh, then a pause", 'she said "cut"', "line one\nline two\r\n", "back\\slash \\n",
                "ünïcode ✓", "", "x" * 2000]


def test_a_marker_stream_is_recorded_as_markers_one_row_each_and_read_back(tmp_path):
    """A real string outlet in another process: every marker reaches `<name>.markers.csv`, one line per
    row whatever its text, stamped on the shared clock; the reader, verify and repair read them back."""
    import json

    from improvcap import open_take

    sid = f"cues-{uuid.uuid4().hex[:12]}"
    script = ("import json, pylsl, sys, time\n"
              f"o = pylsl.StreamOutlet(pylsl.StreamInfo('cues', 'Markers', 1, 0, 'string', '{sid}'))\n"
              # and an irregular numeric stream beside it: a button pad's button and pressure
              f"pad = pylsl.StreamOutlet(pylsl.StreamInfo('pad', 'Buttons', 2, 0, 'int32', '{sid}-pad'))\n"
              "print('ready', flush=True)\n"
              "sys.stdin.readline()\n"
              f"for n, text in enumerate({MARKER_TEXTS!r}):\n"
              "    stamp = pylsl.local_clock()\n"
              "    o.push_sample([text], stamp)\n"
              "    pad.push_sample([n, 100 * n], stamp)\n"
              "    print(json.dumps(stamp), flush=True)\n"
              "    time.sleep(0.2)\n"
              "time.sleep(30)\n")
    sender = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    assert sender.stdout is not None and sender.stdin is not None and sender.stdout.readline().startswith("ready")
    (tmp_path / "rig.toml").write_text(rig_text(
        "cues-test", table("camera", name="cam0", driver="demo", width=320, height=240, fps=30),
        table("lsl", name="cues", driver="lsl", stream=f"source_id='{sid}'", timeout_s=2),
        table("lsl", name="pad", driver="lsl", stream=f"source_id='{sid}-pad'", timeout_s=2)))
    proc = subprocess.Popen([sys.executable, "-m", "improvcap", "record", "rig.toml", "--out", "out", "--session", "s",
                             "--duration", "5", "--slate", "--json"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    take = tmp_path / "out" / "s" / "scene_t001"
    try:
        deadline = time.monotonic() + 60
        while not (take / "cues.markers.csv").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        sender.stdin.write("go\n")
        sender.stdin.flush()
        stamps = [json.loads(sender.stdout.readline()) for _ in MARKER_TEXTS]
        out, err = proc.communicate(timeout=120)
    finally:
        sender.kill()
        sender.wait()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    manifest = json.loads((take / "take.json").read_text())
    cues = manifest["streams"]["cues"]
    assert cues["kind"] == "markers" and cues["count"] == len(MARKER_TEXTS)
    assert manifest["duration_s"] < 6, "the start waited for a first marker"
    assert cues["device"]["lsl"]["channel_format"] == "string" and cues["device"]["lsl"]["type"] == "Markers"
    assert {"cues.markers.csv", "cues.clock.csv"} <= set(manifest["files"]) and not (take / "cues.csv").exists()
    raw = (take / "cues.markers.csv").read_text(encoding="utf-8")
    assert raw.count("\n") == len(MARKER_TEXTS) + 1  # one line per marker, the header's first
    assert raw.splitlines()[0] == "index,t_ns,device_ns,host_ns,value"
    times, values = open_take(take).markers("cues")
    assert values == MARKER_TEXTS
    assert list(times["index"]) == list(range(len(MARKER_TEXTS)))
    assert [seconds_to_ns(s) for s in stamps] == list(times["device_ns"])
    # a sender on this host: its local_clock is ours, so each t_ns is its stamp (the fit within a ms of it)
    err_ms = np.abs(times["t_ns"] + manifest["t0_host_ns"] - np.array([seconds_to_ns(s) for s in stamps])) / 1e6
    assert err_ms.max() < 1.0, err_ms
    assert "cues" not in manifest["sync"] and not any(c.startswith("cues") for c in
                                                      (take / "sync.csv").read_text().splitlines()[0].split(","))
    checked = run(tmp_path, "verify", str(take), "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    report = json.loads(checked.stdout)["takes"][0]
    # liblsl probes a sender's clock every few seconds: a 5 s take has too few offsets to fit a drift
    assert [r for r in report["reasons"] if "clock fitted by its offset only" not in r] == [
        "WARN: no performers recorded"], report["reasons"]
    assert report["streams"]["cues"]["markers"] == len(MARKER_TEXTS) and report["streams"]["cues"]["drops"] == 0
    # the irregular numeric stream: its rows, no rate, no stamp gaps, on the same clock
    pad = open_take(take).lsl("pad")
    assert pad["values"].tolist() == [[n, 100 * n] for n in range(len(MARKER_TEXTS))]
    assert list(pad["device_ns"]) == list(times["device_ns"]) and np.abs(pad["t_ns"] - times["t_ns"]).max() < 1e6
    assert manifest["streams"]["pad"]["nominal_rate"] == 0 and report["streams"]["pad"]["drops"] == 0
    # a torn last row (a crash mid-write) is dropped by repair, every marker before it kept
    with open(take / "cues.markers.csv", "a", encoding="utf-8") as fh:
        fh.write('8,123,456,789,"half a mar')
    repaired = run(tmp_path, "repair", str(take), "--force")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert open_take(take).markers("cues")[1] == MARKER_TEXTS
    assert json.loads((take / "take.json").read_text())["streams"]["cues"]["count"] == len(MARKER_TEXTS)
    assert run(tmp_path, "verify", str(take)).returncode == 0

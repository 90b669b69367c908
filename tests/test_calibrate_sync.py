"""`calibrate sync`: latencies from slates in the media, applied to the next takes; `calibrate show`."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from improvcap.take.tables import read_table, stream_table

from helpers import demo_rig, wait_for

pytestmark = pytest.mark.slow

OFFSET_MS = {"cam0": 4.0, "cam1": -3.0, "mic": 9.0, "suit": 2.0}
TRANSPORT_MS = 10.0


# every stream stamped late by its offset and delayed in transport
RIG = demo_rig("off", cameras=("cam0", "cam1"), master="cam0", mocap_channels=6,
               settings={name: {"offset_ms": ms, "transport_ms": TRANSPORT_MS, "truth": True}
                         for name, ms in OFFSET_MS.items()})


def cli(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "improvcap", *args], cwd=workdir, capture_output=True,
                          text=True, timeout=180)


def events(take: Path, kind: str) -> list[str]:
    table = read_table(take / "events.csv", dtype=str)
    return [t for t, k in zip(table["t_ns"], table["kind"]) if k == kind]


def truth_error_ms(take: Path, name: str, kind: str) -> np.ndarray:
    table = stream_table(take, name, kind, time_only=True)
    truth = read_table(take / f"{name}.truth.csv")
    return np.abs(table["t_ns"] - truth["true_t_ns"]) / 1e6


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sync")
    (folder / "rigs").mkdir()
    (folder / "rigs" / "off.toml").write_text(RIG)
    return folder


@pytest.fixture(scope="module")
def calibrated(workdir: Path) -> dict:
    """`calibrate sync off --record 21`: one take of 21 host-timed slates (a Fibonacci total: its phases are
    most even), the latencies found from the slates in the media."""
    result = cli(workdir, "calibrate", "sync", "off", "--record", "21", "--out", "out", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_latencies_from_the_slates_in_the_media_match_the_truth(workdir: Path, calibrated: dict):
    slated = Path(calibrated["takes"][0]["path"])
    assert np.median(truth_error_ms(slated, "mic", "audio")) > 15  # uncalibrated: late by offset + transport
    slates = sum(len(events(Path(t["path"]), "slate")) for t in calibrated["takes"])
    assert slates == 21 and "until_ms" not in calibrated and calibrated["warnings"] == []
    assert all(s["slates"] == slates and 0 < s["uncertainty_ms"] < 1000 / 30 for s in calibrated["streams"].values())
    # each latency within the ± the slates give it (a camera's: where its frame boundaries' phases
    # intersect, about ±0.5–1 ms after 21 slates), or within 0.3 ms (1 ms for a camera) where that is wider
    for name, offset in OFFSET_MS.items():
        got, plus_minus = (calibrated["streams"][name][k] for k in ("latency_ms", "uncertainty_ms"))
        tolerance = max(plus_minus, 1.0 if name.startswith("cam") else 0.3)
        assert got == pytest.approx(offset + TRANSPORT_MS, abs=tolerance), (name, got, plus_minus)
    assert Path(calibrated["file"]).parent == workdir / "calibration" / "off"


def test_calibrated_latencies_make_the_next_take_match_the_truth(workdir: Path, calibrated: dict):
    take = cli(workdir, "record", "off", "--out", "out", "--session", "after", "--duration", "3", "--json")
    assert take.returncode == 0, take.stderr
    assert "no sync calibration" not in take.stderr
    path = Path(json.loads(take.stdout)["take"])
    for name, kind, limit in (("cam0", "camera", 1.0), ("cam1", "camera", 1.0), ("mic", "audio", 0.5),
                              ("suit", "mocap", 0.5)):
        # the take's own timing, and the latency it was calibrated with, to within that calibration's ±
        err = truth_error_ms(path, name, kind)
        bound = limit + calibrated["streams"][name]["uncertainty_ms"]
        assert np.percentile(err, 99) <= bound, (name, np.percentile(err, [50, 99]), bound)
    manifest = json.loads((path / "take.json").read_text())
    assert manifest["calibration"]["files"]["sync"]["path"] == calibrated["file"]
    assert len(manifest["calibration_sha256"]) == 64
    assert manifest["calibration"]["latency_ms"]["mic"] == calibrated["streams"]["mic"]["latency_ms"]

    show = cli(workdir, "calibrate", "show", "off", "--json")
    assert show.returncode == 0, show.stderr
    kinds = json.loads(show.stdout)["kinds"]
    assert kinds["sync"]["file"] == calibrated["file"] and kinds["cameras"] is None


def test_rounds_end_on_fibonacci_totals_sized_by_the_measured_uncertainty(workdir: Path, calibrated: dict):
    """After a round, --until plans the next total from what the slates so far measured: the first
    Fibonacci total at which each stream's ± (shrinking as 1/n for intersections, 1/√n for medians) would
    be below the target; the first round is FIRST_ROUND slates."""
    from improvcap.calibrate.latency import FIRST_ROUND, SlatingRounds, latency_from_takes, measure_take, short_of
    from improvcap.rig import load_rig

    assert FIRST_ROUND == 34
    rig = load_rig(str(workdir / "rigs" / "off.toml"))
    rounds = SlatingRounds(None, rig, workdir / "out", "unused", max_slates=1000, until_ms=0.2)
    rounds.takes = [measure_take(Path(calibrated["takes"][0]["path"]))]
    result = latency_from_takes(rounds.takes, rig)
    short = short_of(result, 0.2)
    assert short and rounds.slates == 21
    total = rounds._next_total(result, short)
    fibonacci = [34, 55, 89, 144, 233, 377, 610, 987, 1597]
    assert total in fibonacci
    needed = max(21 * (u / 0.2 if result["streams"][n].get("consistent", True) else (u / 0.2) ** 2)
                 for n, u in short.items() if u is not None)
    assert total >= needed - 1 and (total == 34 or fibonacci[fibonacci.index(total) - 1] < needed - 1)


def test_missing_calibration_warns_and_a_take_without_slates_is_refused(workdir: Path, tmp_path: Path):
    (tmp_path / "rigs").mkdir()
    (tmp_path / "rigs" / "off.toml").write_text(RIG)
    take = cli(tmp_path, "record", "off", "--out", "out", "--duration", "1.5", "--json")
    assert take.returncode == 0 and "warning: no sync calibration for rig off" in take.stderr
    refused = cli(tmp_path, "calibrate", "sync", "off", "--take", json.loads(take.stdout)["take"])
    assert refused.returncode == 2 and "no slate found" in refused.stderr
    assert not (tmp_path / "calibration" / "off").exists() or not list((tmp_path / "calibration" / "off").iterdir())
    nothing = cli(tmp_path, "calibrate", "sync", "off", "--take", str(tmp_path))
    assert nothing.returncode == 2 and "not a take folder" in nothing.stderr


def drift_rig(mic_offset_ms: float, name: str = "drift") -> str:
    """cam1 stamps 40 ms early (its latency is negative); the microphone's offset is the test's to change."""
    return demo_rig(name, cameras=("cam0", "cam1"), master="cam0", mocap=None,
                    settings={"cam1": {"offset_ms": -40}, "mic": {"offset_ms": mic_offset_ms}})


def test_uncertain_or_negative_latencies_are_warned_and_takes_pool(tmp_path: Path):
    (tmp_path / "rigs").mkdir()
    rig = tmp_path / "rigs" / "drift.toml"
    rig.write_text(drift_rig(0))
    first = cli(tmp_path, "calibrate", "sync", "drift", "--record", "3", "--out", "out", "--json")
    assert first.returncode == 0, first.stderr
    warnings = json.loads(first.stdout)["warnings"]
    # three slates time every stream to well within a frame; cam1's -40 ms is below zero beyond its ±
    assert not [w for w in warnings if "exceeds" in w], warnings
    assert [w for w in warnings if w.startswith("cam1: latency -") and "negative beyond its uncertainty" in w]
    assert [line for line in first.stderr.splitlines() if line.startswith("warning: cam1: latency -")]

    rig.write_text(drift_rig(100))  # the microphone now runs 100 ms later, its latency setting unchanged
    second = cli(tmp_path, "calibrate", "sync", "drift", "--record", "3", "--out", "out", "--json")
    assert second.returncode == 0, second.stderr
    takes = [json.loads(r.stdout)["takes"][0]["path"] for r in (first, second)]
    pooled = cli(tmp_path, "calibrate", "sync", "drift", "--take", takes[0], "--take", takes[1], "--json")
    assert pooled.returncode == 0, pooled.stderr
    result = json.loads(pooled.stdout)
    assert [t["path"] for t in result["takes"]] == takes
    assert result["streams"]["cam1"]["slates"] == 6 and result["streams"]["cam1"]["consistent"]
    mic = result["streams"]["mic"]
    # two sets of slates 100 ms apart do not intersect: the median's ± is far wider than a frame
    assert not mic["consistent"] and mic["uncertainty_ms"] > 1000 / 30
    exceeds = "exceeds a frame of the master camera cam0 (33.333 ms)"
    assert [w for w in result["warnings"] if w.startswith("mic: latency uncertainty ±") and exceeds in w]
    show = cli(tmp_path, "calibrate", "show", "drift")
    assert show.returncode == 0 and "warning: mic: latency uncertainty" in show.stdout, show.stdout

    (tmp_path / "rigs" / "other.toml").write_text(drift_rig(0, name="other"))
    other = cli(tmp_path, "calibrate", "sync", "other", "--take", takes[0])
    assert other.returncode == 2 and "recorded with rig drift, not other" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1 and not (tmp_path / "calibration" / "other").exists()


def test_until_stops_at_the_cap_with_what_it_reached(workdir: Path):
    # ±0.2 ms needs about 90 slates on a 30 fps camera: a cap of 5 stops it after a first round of 5
    result = cli(workdir, "calibrate", "sync", "off", "--until", "0.2", "--record", "5", "--out", "capped",
                 "--json")
    assert result.returncode == 1, result.stderr
    calibration = json.loads(result.stdout)
    takes = [Path(t["path"]) for t in calibration["takes"]]
    assert [t.name for t in takes] == ["sync-calibration_t001"]
    assert [len(events(t, "slate")) for t in takes] == [5]
    assert all(json.loads((t / "take.json").read_text())["status"] == "complete" for t in takes)
    assert Path(calibration["file"]).is_file()  # written all the same
    short = {n: s["uncertainty_ms"] for n, s in calibration["streams"].items() if s["uncertainty_ms"] >= 0.2}
    line = result.stderr.strip().splitlines()[-1]
    assert short and line.startswith("error: after 5 slates not below ±0.2 ms: ")
    assert all(f"{name} ±{u:.3f} ms" in line for name, u in short.items()), (line, short)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_ctrl_c_while_slating_keeps_the_take_and_writes_nothing(workdir: Path, sig: signal.Signals):
    """Ctrl-C, SIGTERM and a closed terminal (SIGHUP) all end the slated take cleanly."""
    out = workdir / f"interrupted-{sig.name}"
    before = sorted((workdir / "calibration").glob("*/*"))
    proc = subprocess.Popen([sys.executable, "-m", "improvcap", "calibrate", "sync", "off", "--record", "40",
                             "--out", str(out)], cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    manifest = out / "calibration" / "sync-calibration_t001" / "take.json"
    wait_for(manifest.exists, "the slated take", proc)
    events_csv = manifest.parent / "events.csv"
    wait_for(lambda: events_csv.exists() and ",slate," in events_csv.read_text(), "a slate", proc)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    if sig != signal.SIGHUP:  # after SIGHUP the terminal is gone: nothing is said
        assert "interrupted: no calibration written" in stderr
    assert json.loads(manifest.read_text())["status"] == "complete"
    assert sorted((workdir / "calibration").glob("*/*")) == before


@pytest.mark.parametrize("args, message", [
    ((), "give either --take TAKE"),
    (("--take", "x", "--until", "1"), "give either --take TAKE"),
    (("--until", "0"), "--until must be a positive number of milliseconds"),
    (("--until", "nan"), "--until must be a positive number of milliseconds"),
    (("--until", "-1"), "--until must be a positive number of milliseconds"),
    (("--until", "1", "--record", "2"), "--record needs at least 3 slates"),
    (("--take", "nowhere"), "nowhere: not a take folder"),
])
def test_bad_sync_arguments_get_one_line(workdir: Path, args: tuple[str, ...], message: str):
    result = cli(workdir, "calibrate", "sync", "off", *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

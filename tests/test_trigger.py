"""Hardware-triggered cameras: frames matched to the sync box's trigger pulses by count, never shifted; the
demo camera exposed by the demo box's pulses, through the recorder, verify and repair."""
from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from improvcap.errors import RigError
from improvcap.rig import parse_rig
from improvcap.take.refit import fit_roundtrips_file
from improvcap.take.trigger import pulse_times

from helpers import demo_rig, fit_bound_ns, table
from recording import open_rig, record

PERIOD = 33_333_333


def test_frames_take_their_pulses_times_by_count_with_gaps_on_either_side():
    counter = np.arange(100, 130)                     # pulses 100..129 ...
    pulse_t = 5_000_000 + (counter - 100) * PERIOD
    keep = ~np.isin(counter, [110, 111])               # ... two of whose messages were lost
    seq = np.array([s for s in range(0, 40) if s not in (3, 17)])  # frames 3 and 17 lost in transport
    # the camera's own clock: about a millisecond late and jittery, which only the first pair relies on
    own = pulse_t[0] + (seq - 2) * PERIOD + 1_200_000 + np.random.default_rng(1).integers(-300_000, 300_000, len(seq))
    t, info = pulse_times(seq + 7, own, counter[keep], pulse_t[keep], latency_ns=0)  # the counter starts anywhere
    # frame seq 2 is the one exposed by the first pulse: each frame at pulse 100 + (seq - 2), gaps kept
    # (outside the pulses recorded, on the line through them: the box's timer is regular)
    assert np.array_equal(t, pulse_t[0] + (seq - 2) * PERIOD)
    inside = (seq - 2 >= 0) & (seq - 2 < 30)
    assert info["first_pulse"] == 100 - 2 and info["pulses_interpolated"] == 2
    assert info["pulses_extrapolated"] == int((~inside).sum()) and info["frames_missing"] == 2
    assert info["matched"] == int(inside.sum()) - 2 and info["frames_unmatched"] == 0


def test_the_latency_is_the_exposure_offset():
    counter = np.arange(1, 11)
    pulse_t = counter * PERIOD
    t, _ = pulse_times(np.arange(10), pulse_t + 4_000_000, counter, pulse_t, latency_ns=-4_000_000)
    assert np.array_equal(t, pulse_t + 4_000_000)


RIG = demo_rig("trig", audio=None, mocap=None,
               settings={"cam0": {"trigger": "box", "drop_rate": 0.1, "drift_ppm": 80, "jitter_ms": 3, "truth": True}},
               tables=[table("sync", name="box", driver="demo", trigger_fps=30, jitter_ms=1, drift_ppm=40, query_hz=50,
                             truth=True)])


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace('trigger = "box"', 'trigger = "bx"'),
     "camera[0].trigger: 'bx' is not the rig's sync box (box)"),
    (lambda t: t.replace("fps = 30\ntrigger", "fps = 60\ntrigger"),
     "camera[0].fps: 60 differs from box's trigger_fps 30: a triggered camera exposes once per pulse"),
    (lambda t: t[:t.index("[[sync]]")], "camera[0].trigger: 'box' is not the rig's sync box (it has none"),
])
def test_a_trigger_the_rig_cannot_give_is_one_line(edit, message):
    with pytest.raises(RigError, match="^" + re.escape("rig.toml: " + message)):
        parse_rig(edit(RIG), Path("rig.toml"))


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "improvcap", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=180)


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_a_triggered_demo_camera_is_put_on_its_pulses_and_verified(tmp_path):
    (tmp_path / "rig.toml").write_text(RIG)
    with open_rig(tmp_path / "rig.toml", tmp_path / "out", "s") as control:
        take = record(control, "scene", 6.0)
    assert take == tmp_path / "out" / "s" / "scene_t001"
    manifest = json.loads((take / "take.json").read_text())
    trigger = manifest["streams"]["cam0"]["trigger"]
    frames = rows(take / "cam0.frames.csv")
    truth = {int(r["index"]): int(r["true_t_ns"]) for r in rows(take / "cam0.truth.csv")}
    assert trigger["box"] == "box" and trigger["by"] == "frame counter" and len(frames) > 150
    assert trigger["frames_missing"] > 5 and trigger["pulses_interpolated"] == 0 == trigger["frames_unmatched"]
    assert trigger["matched"] + trigger["pulses_extrapolated"] == len(frames)
    # never a shifted index: each frame is at the pulse its counter names, the very pulse that exposed it
    pulses = {int(r["counter"]): (int(r["index"]), int(r["t_ns"])) for r in rows(take / "box.csv")}
    box_truth = {int(r["index"]): int(r["true_t_ns"]) for r in rows(take / "box.truth.csv")}
    first = trigger["first_pulse"] - int(frames[0]["seq"])
    for f in frames:
        if first + int(f["seq"]) in pulses:  # (a frame exposed before the take's first pulse row: extrapolated)
            index, t_ns = pulses[first + int(f["seq"])]
            assert int(f["t_ns"]) == t_ns and truth[int(f["index"])] == box_truth[index]
    err = np.array([int(f["t_ns"]) - truth[int(f["index"])] for f in frames]) / 1e6  # truth: since t0 too
    # typically 0.03 ms at p99 (the box's round-trip fit), within 0.2 ms or the fit's own bound, which a
    # loaded machine's slower replies widen
    bound_ms = max(0.2, fit_bound_ns(fit_roundtrips_file(take / "box.roundtrips.csv")) / 1e6)
    assert np.percentile(np.abs(err), 99) < bound_ms, (np.percentile(np.abs(err), [50, 99]), bound_ms)
    checked = run(tmp_path, "verify", str(take), "--json")
    assert checked.returncode == 0, checked.stdout
    report = json.loads(checked.stdout)["takes"][0]
    assert report["streams"]["cam0"]["trigger"]["frames_missing"] == trigger["frames_missing"]
    assert report["streams"]["cam0"]["drops"] == trigger["frames_missing"]
    # a frame moved off its pulse fails verify; repair --force puts it back from the raw columns
    table = (take / "cam0.frames.csv").read_text().splitlines()
    cells = table[5].split(",")
    table[5] = ",".join([cells[0], str(int(cells[1]) + 1000), *cells[2:]])
    (take / "cam0.frames.csv").write_text("\n".join(table) + "\n")
    tampered = run(tmp_path, "verify", str(take))
    assert tampered.returncode == 1
    assert "1 frames are not at the times of their trigger pulses from box" in tampered.stdout
    assert run(tmp_path, "repair", str(take), "--force").returncode == 0
    assert [int(f["t_ns"]) for f in rows(take / "cam0.frames.csv")] == [int(f["t_ns"]) for f in frames]
    assert run(tmp_path, "verify", str(take)).returncode == 0

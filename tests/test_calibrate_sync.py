"""`calibrate sync`: latencies from slates in the media, applied to the next takes; `calibrate show`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from improvcap.timeline import read_table, stream_table

pytestmark = pytest.mark.slow

OFFSET_MS = {"cam0": 4.0, "cam1": -3.0, "mic": 9.0, "suit": 2.0}
TRANSPORT_MS = 10.0


def demo(name: str, kind: str, extra: str) -> str:
    return (f'[[{kind}]]\nname = "{name}"\ndriver = "demo"\n{extra}\noffset_ms = {OFFSET_MS[name]}\n'
            f"transport_ms = {TRANSPORT_MS}\ntruth = true\n")


RIG = "\n".join([
    '[rig]\nname = "off"\nmaster = "cam0"\n',
    demo("cam0", "camera", "width = 320\nheight = 240"),
    demo("cam1", "camera", "width = 320\nheight = 240"),
    demo("mic", "audio", "channels = 2"),
    demo("suit", "mocap", "channels = 6"),
])


def cli(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "improvcap", *args], cwd=workdir, capture_output=True,
                          text=True, timeout=180)


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


def test_calibrated_latencies_make_the_next_take_match_the_truth(workdir: Path):
    # records its own take with 36 host-timed slates, then calibrates from the slates found in the media
    result = cli(workdir, "calibrate", "sync", "off", "--record", "36", "--out", "out", "--json")
    assert result.returncode == 0, result.stderr
    calibration = json.loads(result.stdout)
    slated = Path(calibration["take"])
    assert np.median(truth_error_ms(slated, "mic", "audio")) > 15  # uncalibrated: late by offset + transport
    assert all(s["slates"] == 36 for s in calibration["streams"].values())
    for name, offset in OFFSET_MS.items():
        got = calibration["streams"][name]["latency_ms"]
        tolerance = 1.0 if name.startswith("cam") else 0.3
        assert got == pytest.approx(offset + TRANSPORT_MS, abs=tolerance), (name, got)
    assert Path(calibration["file"]).parent == workdir / "calibration" / "off"

    take = cli(workdir, "record", "off", "--out", "out", "--session", "after", "--duration", "4", "--json")
    assert take.returncode == 0, take.stderr
    assert "no sync calibration" not in take.stderr
    path = Path(json.loads(take.stdout)["take"])
    for name, kind, limit in (("cam0", "camera", 1.0), ("cam1", "camera", 1.0), ("mic", "audio", 0.5),
                              ("suit", "mocap", 0.5)):
        err = truth_error_ms(path, name, kind)
        assert np.percentile(err, 99) <= limit, (name, np.percentile(err, [50, 99]))
    manifest = json.loads((path / "take.json").read_text())
    assert manifest["calibration"]["files"]["sync"]["path"] == calibration["file"]
    assert len(manifest["calibration_sha256"]) == 64
    assert manifest["calibration"]["latency_ms"]["mic"] == calibration["streams"]["mic"]["latency_ms"]

    show = cli(workdir, "calibrate", "show", "off", "--json")
    assert show.returncode == 0, show.stderr
    kinds = json.loads(show.stdout)["kinds"]
    assert kinds["sync"]["file"] == calibration["file"] and kinds["cameras"] is None


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

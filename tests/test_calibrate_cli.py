"""`improvcap calibrate audio` and `calibrate show` from the command line, on real PortAudio input."""
from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from helpers import demo_rig

pytestmark = pytest.mark.slow

RIG = demo_rig("mics", cameras=(), audio="lav", mocap=None, channels=1,  # PortAudio through PulseAudio
               settings={"lav": {"driver": "portaudio", "device": "pulse"}})


def cli(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "improvcap", *args], cwd=workdir, capture_output=True,
                          text=True, timeout=120)


def test_calibrate_audio_measures_the_sine_source(pulse_server, tmp_path: Path):
    (tmp_path / "rigs").mkdir()
    (tmp_path / "rigs" / "mics.toml").write_text(RIG)
    result = cli(tmp_path, "calibrate", "audio", "mics", "--seconds", "2", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    (channel,) = report["streams"]["lav"]["channels"]
    assert channel["verdict"] == "good"
    assert channel["peak_dbfs"] == pytest.approx(-6.02, abs=0.5)   # module-sine-source: amplitude 0.5
    assert channel["rms_dbfs"] == pytest.approx(-9.03, abs=0.5)
    stored = tomllib.loads(Path(report["file"]).read_text())
    assert stored["streams"]["lav"]["channels"][0]["verdict"] == "good"
    assert Path(report["file"]).parent == tmp_path / "calibration" / "mics"

    show = cli(tmp_path, "calibrate", "show", "mics", "--json")
    assert show.returncode == 0, show.stderr
    kinds = json.loads(show.stdout)["kinds"]
    assert kinds["audio"]["file"] == report["file"] and kinds["sync"] is None
    assert "lav: ch1 good" in kinds["audio"]["summary"][0]


def test_calibrate_audio_bad_input(tmp_path: Path):
    (tmp_path / "rigs").mkdir()
    (tmp_path / "rigs" / "cams.toml").write_text('[rig]\nname = "cams"\n[[camera]]\nname = "c"\ndriver = "demo"\n')
    none = cli(tmp_path, "calibrate", "audio", "cams")
    assert none.returncode == 2 and "no audio streams" in none.stderr
    demo = cli(tmp_path, "calibrate", "audio", "demo", "--loopback", "pulse")
    assert demo.returncode == 2 and "needs a portaudio audio stream" in demo.stderr
    assert not (tmp_path / "calibration").exists()


@pytest.fixture(scope="module")
def board_take(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 9 s take of the shipped demo-board rig (three demo cameras filming a moving ChArUco board through
    known lenses), recorded in this process; its folder's parent's parent is the working folder."""
    from improvcap.rig import load_rig
    from recording import open_rig, record

    work = tmp_path_factory.mktemp("board")
    with open_rig(load_rig("demo-board").path, work / "out", "s") as control:
        return record(control, "scene", 9.0)


def test_board_is_drawn_once(tmp_path: Path):
    board = cli(tmp_path, "calibrate", "board", "--out", "board.png")
    assert board.returncode == 0, board.stderr
    assert (tmp_path / "board.png").stat().st_size > 10_000 and (tmp_path / "board.toml").exists()
    again = cli(tmp_path, "calibrate", "board", "--out", "board.png")
    assert again.returncode == 2 and "not overwritten" in again.stderr


@pytest.fixture(scope="module")
def calibrated(board_take: Path) -> dict:
    """`calibrate cameras demo-board --take` of the board take, with the board drawn by `calibrate board`."""
    work = board_take.parents[2]
    assert cli(work, "calibrate", "board", "--out", "board.png").returncode == 0
    result = cli(work, "calibrate", "cameras", "demo-board", "--take", str(board_take), "--board", "board.toml",
                 "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_cameras_calibrated_from_a_demo_take_match_their_truth(board_take: Path, calibrated: dict):
    stored = tomllib.loads(Path(calibrated["file"]).read_text())
    assert [stored[k]["name"] for k in ("cam_0", "cam_1", "cam_2")] == ["front", "right", "high"]
    assert stored["metadata"]["error"] < 1.0 and not stored["metadata"]["flagged"]
    truth = json.loads((board_take / "take.json").read_text())["streams"]
    for key in ("cam_0", "cam_1", "cam_2"):
        cam = stored[key]
        fx_true = truth[cam["name"]]["device"]["board_truth"]["matrix"][0][0]
        assert cam["matrix"][0][0] == pytest.approx(fx_true, rel=0.015)


def test_the_next_take_records_the_camera_calibration(board_take: Path, calibrated: dict):
    after = cli(board_take.parents[2], "record", "demo-board", "--out", "out", "--duration", "1", "--json")
    assert after.returncode == 0, after.stderr
    manifest = json.loads((Path(json.loads(after.stdout)["take"]) / "take.json").read_text())
    assert manifest["calibration"]["files"]["cameras"]["path"] == calibrated["file"]


def test_calibrate_cameras_bad_input(tmp_path: Path):
    import numpy as np
    import cv2

    for name, size in (("front", (960, 540)), ("right", (960, 540))):
        folder = tmp_path / name
        folder.mkdir()
        for i in range(3):
            cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((size[1], size[0]), 128, np.uint8))
    cv2.imwrite(str(tmp_path / "right" / "003.png"), np.full((100, 100), 128, np.uint8))
    cv2.imwrite(str(tmp_path / "front" / "003.png"), np.full((540, 960), 128, np.uint8))
    sizes = cli(tmp_path, "calibrate", "cameras", "demo-board", "--images", "front=front", "--images", "right=right")
    assert sizes.returncode == 2 and "different sizes" in sizes.stderr
    (tmp_path / "right" / "003.png").unlink()
    (tmp_path / "front" / "003.png").unlink()
    blank = cli(tmp_path, "calibrate", "cameras", "demo-board", "--images", "front=front", "--images", "right=right")
    assert blank.returncode == 2 and "found in 0 of 3 frames" in blank.stderr
    unknown = cli(tmp_path, "calibrate", "cameras", "demo-board", "--images", "door=front")
    assert unknown.returncode == 2 and "not a camera of rig demo-board" in unknown.stderr
    assert not (tmp_path / "calibration").exists()

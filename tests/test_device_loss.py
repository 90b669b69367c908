"""A device lost or starved mid-take: said within seconds in words, its late data kept out of the clock fit,
frames that never came counted. The network camera is a real FFmpeg sender over TCP, read by the real
ffmpeg driver; the starved camera is the demo camera asked for more than this machine can render."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from improvcap.recorder import STALE_NS

from helpers import demo_rig, rig_text, rows_on_disk, table, wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _record_until_written(folder: Path, rig: str, frames: int) -> tuple[subprocess.Popen[str], Path]:
    """A 10 s `record` of `rig` in `folder` and its take, once its camera has `frames` rows on disk."""
    recording = subprocess.Popen([sys.executable, "-m", "improvcap", "record", rig, "--out", "out", "--duration", "10",
                                  "--json"], cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    [rows] = wait_for(lambda: list((folder / "out").glob("*/scene_t001/cam0.frames.csv")), "the take", recording)
    wait_for(lambda: rows_on_disk(rows) >= frames, f"{frames} frames on disk", recording)
    return recording, rows.parent


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command as a network camera")
def test_a_network_camera_whose_sender_hangs_is_a_fault_within_two_seconds(tmp_path: Path, cli) -> None:
    port = _free_port()
    # the camera an FFmpeg stream over TCP, a demo suit beside it
    (tmp_path / "net.toml").write_text(demo_rig("net", master="cam0", audio=None, mocap_channels=4, rate=100, settings={
        "cam0": {"driver": "ffmpeg", "source": f"tcp://127.0.0.1:{port}"}}))
    sender = subprocess.Popen(["ffmpeg", "-loglevel", "error", "-re", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=30",
                               "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "30",
                               "-f", "mpegts", f"tcp://127.0.0.1:{port}?listen=1"])
    try:
        time.sleep(0.5)
        recording, _ = _record_until_written(tmp_path, "net.toml", frames=90)  # 3 s of the camera
        sender.send_signal(signal.SIGSTOP)  # the sender hangs: its socket stays open, nothing more comes
        out, err = recording.communicate(timeout=60)
    finally:
        sender.kill()
        sender.wait()
    assert recording.returncode == 1, err
    assert "Traceback" not in err
    take = Path(json.loads(out)["take"])
    manifest = json.loads((take / "take.json").read_text())
    events = (take / "events.csv").read_text()
    first = next(f for f in manifest["faults"] if f["stream"] == "cam0")
    assert first["detail"].endswith("for 2 s: the sender stopped (camera off or crashed, or the network cut)"), first
    cam = manifest["streams"]["cam0"]
    last_frame_s = cam["last_t_ns"] / 1e9
    assert 1.9 < first["t_ns"] / 1e9 - last_frame_s < 3.0, (first, last_frame_s)  # said after 2 s of silence
    assert "Immediate exit requested" not in events  # FFmpeg's words for its timeout are not the technician's
    # frames flushed seconds late once the sender was given up are left out (later than STALE_NS after a
    # silence): the fit stays clean (a frame of the flush under that, 0.56 s on a loaded machine, stays in)
    assert cam["clock"]["residual_p99_ns"] < STALE_NS, cam["clock"]
    assert cam["dropped_stale"] == cam["dropped"] - cam["dropped_behind_rate"] - cam["dropped_by_device"]
    assert manifest["streams"]["suit"]["state"] == "ok"  # the other streams went on
    assert manifest["streams"]["suit"]["count"] > 900


@pytest.mark.slow
def test_a_starved_camera_counts_the_frames_it_never_delivered(tmp_path: Path, cli) -> None:
    # a thousand 1080p frames a second: more than this machine renders
    (tmp_path / "fast.toml").write_text(demo_rig("fast", master="cam0", size=(1920, 1080), fps=1000, audio=None,
                                                 mocap=None))
    done = cli("record", "fast.toml", "--out", "out", "--duration", "3", "--json")
    assert done.returncode == 1, done.stderr
    summary = json.loads(done.stdout)
    manifest = json.loads((Path(summary["take"]) / "take.json").read_text())
    cam = manifest["streams"]["cam0"]
    assert cam["dropped_by_device"] == 0 and cam["dropped_in_queue"] == 0  # every frame it made was numbered
    assert cam["dropped_behind_rate"] > 1000 and cam["dropped"] >= cam["dropped_behind_rate"]
    assert cam["count"] + cam["dropped"] == pytest.approx(1000 * manifest["duration_s"], abs=10)
    fault = next(f["detail"] for f in manifest["faults"] if f["stream"] == "cam0")
    assert fault.startswith(f"delivered {cam['count']} of the ") and "cannot keep up" in fault
    assert "cannot keep up" in done.stderr.strip().splitlines()[-1]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command as a camera's sender")
def test_any_stream_silent_mid_take_is_a_fault_even_when_its_driver_waits_on(tmp_path: Path) -> None:
    """A camera read from a pipe has no timeout of its own (FFmpeg waits on a file for ever): the recorder
    itself says the stream went silent."""
    pipe = tmp_path / "camera.ts"
    os.mkfifo(pipe)
    (tmp_path / "pipe.toml").write_text(rig_text("pipe", table("camera", name="cam0", driver="ffmpeg", source=str(pipe),
                                                               width=320, height=240, fps=30)))
    sender = subprocess.Popen(["ffmpeg", "-loglevel", "error", "-y", "-re", "-f", "lavfi", "-i",
                               "testsrc=size=320x240:rate=30", "-c:v", "libx264", "-preset", "ultrafast", "-tune",
                               "zerolatency", "-g", "30", "-f", "mpegts", str(pipe)])
    try:
        recording, take = _record_until_written(tmp_path, "pipe.toml", frames=60)  # 2 s of the camera
        sender.send_signal(signal.SIGSTOP)
        wait_for(lambda: ",fault,cam0," in (take / "events.csv").read_text(), "the silence said", recording)
    finally:
        sender.kill()  # the pipe's end: the reader blocked in FFmpeg sees it and ends
        sender.wait()
    out, err = recording.communicate(timeout=60)
    assert recording.returncode == 1, err
    manifest = json.loads((Path(json.loads(out)["take"]) / "take.json").read_text())
    first = manifest["faults"][0]
    assert first["stream"] == "cam0" and re.match(r"no frames for 2\.\d s: the device stopped sending",
                                                  first["detail"]), manifest["faults"]
    assert 2.4 < first["t_ns"] / 1e9 - manifest["streams"]["cam0"]["last_t_ns"] / 1e9 < 3.5

"""`improvcap record` end to end, as a technician runs it, with the files checked by real readers."""
from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from improvcap.writers.wav import wav_info

pytestmark = pytest.mark.slow


def ffprobe_packets(path: Path) -> int:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_packets", "-select_streams", "v:0",
         "-show_entries", "stream=nb_read_packets", "-of", "json", str(path)],
        capture_output=True, text=True, check=True).stdout
    return int(json.loads(out)["streams"][0]["nb_read_packets"])


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def write_rig(folder: Path, name: str, body: str) -> Path:
    (folder / "rigs").mkdir(exist_ok=True)
    path = folder / "rigs" / f"{name}.toml"
    path.write_text(f'[rig]\nname = "{name}"\n{body}')
    return path


SMALL = """
[[camera]]
name = "cam0"
driver = "demo"
width = 320
height = 240
fps = 30
{camera_extra}

[[audio]]
name = "mic"
driver = "demo"
channels = 2
samplerate = 48000

[[mocap]]
name = "suit"
driver = "demo"
rate = 240
channels = 8
"""


def test_demo_rig_take_is_complete_and_readable(cli, tmp_path: Path):
    result = cli("record", "demo", "--out", "out", "--session", "day1", "--scene", "intro",
                 "--duration", "5", "--slate", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    take = Path(summary["take"])
    assert take == tmp_path / "out" / "day1" / "intro_t001"
    manifest = json.loads((take / "take.json").read_text())
    assert manifest["format"] == "improvcap.take" and manifest["status"] == "complete"
    assert manifest["session"] == "day1" and manifest["scene"] == "intro" and manifest["take"] == 1
    assert manifest["faults"] == []
    assert len(manifest["rig_sha256"]) == 64 and manifest["rig"]["name"] == "demo"
    duration = manifest["duration_s"]
    assert 5.0 <= duration < 7.0

    # every file listed with its size and hash, and every listed file present
    on_disk = {p.name for p in take.iterdir()} - {"take.json"}
    assert set(manifest["files"]) == on_disk
    for name, entry in manifest["files"].items():
        assert (take / name).stat().st_size == entry["bytes"]

    for cam in ("cam0", "cam1"):
        rows = csv_rows(take / f"{cam}.frames.csv")
        assert ffprobe_packets(take / f"{cam}.mkv") == len(rows) == manifest["streams"][cam]["count"]
        assert abs(len(rows) - 30 * duration) <= 0.03 * 30 * duration
        t = [int(r["t_ns"]) for r in rows]
        assert all(b > a for a, b in zip(t, t[1:]))
        assert manifest["streams"][cam]["dropped"] == 0

    info = wav_info(take / "room.wav")
    blocks = csv_rows(take / "room.blocks.csv")
    assert info["channels"] == 4 and info["samplerate"] == 48000
    assert info["frames"] == sum(int(b["frames"]) for b in blocks) == manifest["streams"]["room"]["count"]
    assert abs(info["frames"] - 48000 * duration) <= 0.01 * 48000 * duration

    mocap = csv_rows(take / "suit.csv")
    assert abs(len(mocap) - 240 * duration) <= 0.01 * 240 * duration
    assert len([k for k in mocap[0] if k.startswith("ch")]) == 24

    events = csv_rows(take / "events.csv")
    assert [e["kind"] for e in events].count("slate") == 2

    # the next take of the scene gets the next number; the first is untouched
    before = (take / "take.json").read_bytes()
    again = cli("record", "demo", "--out", "out", "--session", "day1", "--scene", "intro", "--duration", "1", "--json")
    assert again.returncode == 0, again.stderr
    assert Path(json.loads(again.stdout)["take"]).name == "intro_t002"
    assert (take / "take.json").read_bytes() == before


def test_unopenable_device_named_before_any_folder(cli, tmp_path: Path):
    write_rig(tmp_path, "broken", SMALL.format(camera_extra="") + """
[[camera]]
name = "door"
driver = "ffmpeg"
source = "/dev/video99"
""")
    result = cli("record", "broken", "--out", "out", "--duration", "2")
    assert result.returncode == 2
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert "door" in line and "/dev/video99" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args", [
    ["--scene", "../escape"], ["--session", "a/b"], ["--scene", ".."], ["--duration", "-1"],
])
def test_bad_names_and_arguments_refused(cli, tmp_path: Path, args):
    result = cli("record", "demo", "--out", "out", *args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.strip()
    assert not (tmp_path / "out").exists() and not (tmp_path / "escape").exists()


def test_device_failing_mid_take_leaves_other_streams_recording(cli, tmp_path: Path):
    write_rig(tmp_path, "flaky", SMALL.format(camera_extra="fail_after_s = 1.5"))
    result = cli("record", "flaky", "--out", "out", "--duration", "4", "--json")
    assert result.returncode == 0, result.stderr
    take = Path(json.loads(result.stdout)["take"])
    manifest = json.loads((take / "take.json").read_text())
    assert manifest["status"] == "complete"
    assert [f["stream"] for f in manifest["faults"]] == ["cam0"]
    assert "scripted failure" in manifest["faults"][0]["detail"]
    assert manifest["streams"]["cam0"]["state"] == "failed"
    cam_rows = len(csv_rows(take / "cam0.frames.csv"))
    assert cam_rows < 30 * 2.5 and ffprobe_packets(take / "cam0.mkv") == cam_rows
    assert manifest["streams"]["mic"]["state"] == "ok"
    assert len(csv_rows(take / "suit.csv")) >= 240 * 3.8
    assert any(e["kind"] == "fault" and e["stream"] == "cam0" for e in csv_rows(take / "events.csv"))


def _start_recording(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], Path]:
    proc = subprocess.Popen([sys.executable, "-m", "improvcap", "record", "demo", "--out", "out",
                             "--session", "s", *args], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    manifest = tmp_path / "out" / "s" / "scene_t001" / "take.json"
    deadline = time.monotonic() + 60
    while not manifest.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "take never started"
        time.sleep(0.05)
    return proc, manifest.parent


def test_kill_9_leaves_everything_but_the_last_second(tmp_path: Path):
    proc, take = _start_recording(tmp_path)
    time.sleep(5.0)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    manifest = json.loads((take / "take.json").read_text())
    assert manifest["status"] == "recording"
    for cam in ("cam0", "cam1"):
        packets = ffprobe_packets(take / f"{cam}.mkv")
        rows = csv_rows(take / f"{cam}.frames.csv")
        assert packets >= 30 * 3.5, packets            # everything but the last second or so
        assert len(rows) >= 30 * 3.5 and abs(len(rows) - packets) <= 45
    info = wav_info(take / "room.wav")                  # readable despite the unpatched header
    assert info["frames"] >= 48000 * 3.5
    mocap = csv_rows(take / "suit.csv")
    assert len(mocap) >= 240 * 3.5
    assert all(r["ch23"] not in (None, "") for r in mocap[:-1])


def test_ctrl_c_stops_cleanly_and_status_lines_without_terminal(tmp_path: Path):
    proc, take = _start_recording(tmp_path, "--json")
    time.sleep(6.0)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert json.loads(stdout)["status"] == "complete"
    assert json.loads((take / "take.json").read_text())["status"] == "complete"
    assert "cam0" in stderr and "/s" in stderr  # the plain status line of a non-terminal


def test_rig_check_reports_and_fails_on_mismatch(cli, tmp_path: Path):
    ok = cli("rig", "check", "demo", "--seconds", "3", "--json")
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    assert report["ok"] and {s["stream"] for s in report["streams"]} == {"cam0", "cam1", "room", "suit"}
    room = next(s for s in report["streams"] if s["stream"] == "room")
    assert len(room["peak_dbfs"]) == 4 and all(p is not None and -40 < p <= 0 for p in room["peak_dbfs"])

    write_rig(tmp_path, "slow", """
[[camera]]
name = "cam"
driver = "ffmpeg"
source = "lavfi:testsrc2=size=320x240:rate=15"
width = 320
height = 240
fps = 30
""")
    bad = cli("rig", "check", "slow", "--seconds", "3", "--json")
    assert bad.returncode == 1, bad.stderr
    stream = json.loads(bad.stdout)["streams"][0]
    assert not stream["ok"] and "rate" in stream["problems"][0]
    assert 13 < stream["measured_rate"] < 17


def test_devices_lists_every_kind(cli):
    result = cli("devices", "--json")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert set(found) >= {"cameras", "audio_inputs", "serial_ports", "notes"}

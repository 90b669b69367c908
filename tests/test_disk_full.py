"""A full disk: no take starts without room for it, a take that fills the disk ends cleanly with what was
written, and repair refuses to start a rewrite it has no room for. The disks are real tmpfs mounts."""
from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from improvcap.control import request

from helpers import demo_rig
from test_session import wait_ready

# about 6 MB/s, nearly all of it the audio
FILL_RIG = demo_rig("fill", master="cam0", audio="room", channels=8, samplerate=192000, mocap_channels=24,
                    settings={"room": {"sample_format": "f32"}})


@pytest.fixture
def small_disk(tmp_path: Path):
    """`small_disk(mib)`: a tmpfs of that size mounted in tmp_path (root only), unmounted afterwards."""
    mounts: list[Path] = []

    def mount(mib: int) -> Path:
        point = tmp_path / f"disk{len(mounts)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m,mode=0755", "tmpfs", str(point)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounts.append(point)
        return point

    yield mount
    for point in mounts:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def _resize(point: Path, mib: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={mib}m", str(point)], check=True)


def _listing(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _ffprobe(path: Path) -> dict:
    done = subprocess.run(["ffprobe", "-v", "error", "-show_format", "-show_streams", "-count_packets", "-of", "json",
                           str(path)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def _fill(folder: Path, cli, disk: Path) -> subprocess.CompletedProcess[str]:
    """`record` the fill rig onto `disk` with no floor, for longer than the disk holds."""
    rig = folder / "fill.toml"
    rig.write_text(FILL_RIG)
    return cli("record", str(rig), "--out", str(disk / "takes"), "--duration", "30", "--min-free-minutes", "0",
               "--json", timeout=90)


@pytest.mark.slow
def test_a_take_that_fills_the_disk_ends_cleanly_with_what_was_written(tmp_path: Path, cli, small_disk) -> None:
    disk = small_disk(24)
    started = time.monotonic()
    done = _fill(tmp_path, cli, disk)
    took = time.monotonic() - started
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "disk full" in last and "keeps what reached the disk" in last, last
    assert took < 25  # the take ended when the disk filled, not at --duration

    take = Path(json.loads(done.stdout)["take"])
    manifest = json.loads((take / "take.json").read_text())
    assert manifest["status"] == "complete" and manifest["duration_s"] < 20
    assert any(f["stream"] == "" and f["detail"].startswith("disk full") for f in manifest["faults"])
    assert not (take / ".reserve").exists()
    assert set(manifest["streams"]) == {"cam0", "room", "suit"}
    for name, entry in manifest["files"].items():  # every file listed as it is on disk
        assert (take / name).stat().st_size == entry["bytes"], name
    assert {"cam0.mkv", "cam0.frames.csv", "room.wav", "room.blocks.csv", "suit.csv", "sync.csv"} <= set(manifest["files"])

    # the media were closed properly: ffprobe reads a duration, and as many frames as timing rows
    video = _ffprobe(take / "cam0.mkv")
    with open(take / "cam0.frames.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert float(video["format"]["duration"]) > 1.0
    assert int(video["streams"][0]["nb_read_packets"]) == len(rows) == manifest["streams"]["cam0"]["count"]
    audio = _ffprobe(take / "room.wav")
    assert float(audio["format"]["duration"]) > 1.0
    assert int(audio["streams"][0]["duration_ts"]) == manifest["streams"]["room"]["count"]

    # verify fails the take for its faults only: its files agree with its manifest
    checked = cli("verify", str(take))
    assert checked.returncode == 1
    fails = [line for line in checked.stdout.splitlines() if " FAIL: " in line]
    assert fails and all(" FAIL: fault at " in line for line in fails), fails


@pytest.mark.slow
def test_no_take_starts_below_the_free_space_floor(tmp_path: Path, cli, small_disk) -> None:
    disk = small_disk(24)
    rig = tmp_path / "fill.toml"
    rig.write_text(FILL_RIG)
    started = time.monotonic()
    done = cli("record", str(rig), "--out", str(disk / "takes"), "--duration", "5")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {disk / 'takes'}: only ") and "a take needs 3 min" in line, line
    assert "--min-free-minutes" in line
    assert time.monotonic() - started < 10  # refused before the devices opened
    assert not (disk / "takes").exists() or not any((disk / "takes").rglob("take.json"))
    bad = cli("record", str(rig), "--out", str(disk / "takes"), "--min-free-minutes", "-1")
    assert bad.returncode == 2 and bad.stderr.strip().endswith("--min-free-minutes must be 0 or more, got -1.0")


@pytest.mark.slow
def test_session_warns_of_low_room_before_the_first_take_and_refuses_a_start(tmp_path: Path, small_disk) -> None:
    disk = small_disk(24)
    (tmp_path / "fill.toml").write_text(FILL_RIG)
    proc = subprocess.Popen([sys.executable, "-m", "improvcap", "session", "fill.toml", "--out", str(disk), "--session", "day"],
                            cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        wait_ready(disk / "day", proc)
        status = request(disk / "day", {"cmd": "status"})
        assert status["disk_free_bytes"] is not None and status["disk_free_bytes"] > 20 << 20
        assert status["disk_low"] is True and status["disk_minutes_left"] < 1
        refused = request(disk / "day", {"cmd": "start"})
        assert not refused["ok"] and "a take needs 3 min" in refused["error"]
        assert request(disk / "day", {"cmd": "status"})["state"] == "idle"
        shown = subprocess.run([sys.executable, "-m", "improvcap", "ctl", "status", "--out", str(disk), "--session", "day"],
                               capture_output=True, text=True, timeout=30)
        assert "LOW: make room before the next take" in shown.stdout
        request(disk / "day", {"cmd": "quit"})
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert not list((disk / "day").glob("*_t*"))  # the refused start left no take folder


@pytest.mark.slow
def test_repair_on_a_full_disk_changes_nothing_and_says_so(tmp_path: Path, cli, small_disk) -> None:
    disk = small_disk(24)
    done = _fill(tmp_path, cli, disk)
    take = Path(json.loads(done.stdout)["take"])
    filler = disk / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M", "count=64"], capture_output=True)
    before = _listing(take)
    refused = cli("repair", "--force", str(take))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "repair needs up to" in refused.stderr and "nothing was changed" in refused.stderr
    assert _listing(take) == before
    filler.unlink()
    _resize(disk, 64)
    repaired = cli("repair", "--force", str(take))
    assert repaired.returncode == 0, repaired.stderr
    assert json.loads((take / "take.json").read_text())["status"] == "repaired"

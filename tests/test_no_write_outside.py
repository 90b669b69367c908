"""No writer follows a link it did not make: a take folder swapped for a link while it records, a calibration
folder or a report (or its folder) that is a link. Everything runs as a technician runs it."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from improvcap.calibrate import store
from improvcap.control import request
from improvcap.errors import UsageError
from improvcap.verify.report import write_report

from helpers import demo_rig, table, write_rig
from recording import open_rig, record

pytestmark = pytest.mark.slow


def small_rig(sync: bool = True) -> str:
    """A demo camera (with truth), microphone and 4-channel suit, and a demo sync box unless not `sync`."""
    return demo_rig("small", mocap_channels=4, settings={"cam0": {"truth": True}},
                    tables=[table("sync", name="box", driver="demo", trigger_fps=30)] if sync else [])


SMALL = small_rig()

# every file the writers make, once the take has started
WRITTEN = {"take.json", "events.csv", "performers.json", "cam0.mkv", "cam0.frames.csv", "cam0.truth.csv", "mic.wav",
           "mic.blocks.csv", "suit.csv", "box.csv", "box.roundtrips.csv"}


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under `root`, links not followed: a file's sha256, a link's target, a folder."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = "link to " + os.readlink(path)
            elif path.is_dir():
                out[rel] = "folder"
            else:
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def an_outside_folder(tmp_path: Path) -> Path:
    """A folder that must stay as it is, holding names a take or a report might want to write."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not the take's\n")
    (outside / "events.csv").write_text("t_ns,kind,stream,detail\n")
    (outside / "take.json").write_text("{}\n")
    return outside


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "improvcap", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=180)


def one_line_refusal(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("warning:")]
    assert len(lines) == 1 and all(w in lines[0] for w in words), result.stderr


def wait_for_files(take: Path, proc: subprocess.Popen[str], frames: int = 0) -> None:
    """Until every file the writers make is in `take` and cam0 has `frames` rows on disk."""
    deadline = time.monotonic() + 60
    rows = take / "cam0.frames.csv"
    while not (take.is_dir() and WRITTEN <= {p.name for p in take.iterdir()}
               and rows.read_bytes().count(b"\n") > frames):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"the take never started or recorded {frames} frames"
        time.sleep(0.05)


def swap_for_a_link(take: Path, outside: Path) -> Path:
    """Rename the take folder away and put a link to `outside` under its name; the folder's new path."""
    real = take.with_name(take.name + ".real")
    os.rename(take, real)
    os.symlink(outside, take)
    return real


def assert_complete(real: Path, cwd: Path) -> dict:
    manifest = json.loads((real / "take.json").read_text())
    assert manifest["status"] == "complete"
    assert set(manifest["files"]) == {p.name for p in real.iterdir()} - {"take.json"}
    assert WRITTEN | {"sync.csv"} <= {p.name for p in real.iterdir()}
    check = run(cwd, "verify", str(real), "--json")
    assert check.returncode == 0, check.stdout + check.stderr
    assert json.loads(check.stdout)["takes"][0]["verdict"] != "FAIL"
    return manifest


def test_a_take_folder_swapped_for_a_link_is_never_written_through(tmp_path: Path):
    write_rig(tmp_path, "small", SMALL)
    outside = an_outside_folder(tmp_path)
    before = snapshot(outside)
    proc = subprocess.Popen([sys.executable, "-m", "improvcap", "record", "small", "--out", "out", "--session", "s",
                             "--duration", "6", "--json"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    take = tmp_path / "out" / "s" / "scene_t001"
    try:
        wait_for_files(take, proc, frames=30)  # a second recorded
        real = swap_for_a_link(take, outside)
        assert request(tmp_path / "out" / "s", {"cmd": "mark", "text": "after the swap"}).get("ok")
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert json.loads(stdout)["status"] == "complete"
    assert snapshot(outside) == before
    assert take.is_symlink() and os.readlink(take) == str(outside)
    manifest = assert_complete(real, tmp_path)
    assert manifest["faults"] == [] and manifest["streams"]["cam0"]["count"] >= 30 * 5
    events = (real / "events.csv").read_text()
    assert "after the swap" in events and ",stop," in events


def test_a_late_note_after_the_swap_goes_into_the_take(tmp_path: Path):
    write_rig(tmp_path, "small", SMALL)
    outside = an_outside_folder(tmp_path)
    before = snapshot(outside)
    session = tmp_path / "out" / "day"
    proc = subprocess.Popen([sys.executable, "-m", "improvcap", "session", "small", "--out", "out", "--session", "day"],
                            cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 60
        while not (reply := _ask(session, "start")).get("ok"):  # devices still opening
            assert proc.poll() is None and time.monotonic() < deadline, (reply, proc.communicate())
            time.sleep(0.2)
        take = Path(reply["take"])
        wait_for_files(take, proc, frames=30)  # a second recorded
        real = swap_for_a_link(take, outside)
        stop = run(tmp_path, "ctl", "stop", "--out", "out", "--session", "day")
        assert stop.returncode == 0, stop.stderr
        note = run(tmp_path, "ctl", "note", "lav slipped", "--out", "out", "--session", "day")
        assert note.returncode == 0, note.stderr
        assert run(tmp_path, "ctl", "quit", "--out", "out", "--session", "day").returncode == 0
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert snapshot(outside) == before
    manifest = assert_complete(real, tmp_path)
    assert "lav slipped" in (real / "events.csv").read_text()
    assert manifest["files"]["events.csv"]["sha256"] == hashlib.sha256((real / "events.csv").read_bytes()).hexdigest()


def _ask(session: Path, cmd: str) -> dict:
    try:
        return request(session, {"cmd": cmd}, timeout=5)
    except Exception as e:  # the socket is not there yet
        return {"ok": False, "error": str(e)}


def test_a_calibration_folder_that_is_a_link_is_refused(tmp_path: Path):
    write_rig(tmp_path, "small", small_rig(sync=False))
    outside = an_outside_folder(tmp_path)
    before = snapshot(outside)
    (tmp_path / "cal").mkdir()
    (tmp_path / "cal" / "small").symlink_to(outside)
    linked = run(tmp_path, "calibrate", "sync", "small", "--record", "3", "--out", "takes", "--calibration", "cal")
    one_line_refusal(linked, "cal/small", "symbolic link")
    assert snapshot(outside) == before

    # the slated takes it recorded, measured again into a dangling link: nothing is made where it points
    takes = sorted((tmp_path / "takes").glob("*/*/take.json"))
    assert takes, linked.stderr
    (tmp_path / "cal2").mkdir()
    (tmp_path / "cal2" / "small").symlink_to(tmp_path / "nowhere")
    dangling = run(tmp_path, "calibrate", "sync", "small", "--take", str(takes[0].parent), "--calibration", "cal2")
    one_line_refusal(dangling, "cal2/small", "symbolic link")
    assert not (tmp_path / "nowhere").exists()


def test_the_calibration_store_never_follows_a_link_at_a_file_name(tmp_path: Path):
    outside = an_outside_folder(tmp_path)
    before = snapshot(outside)
    folder = tmp_path / "calibration" / "small"
    folder.mkdir(parents=True)
    now = time.time()
    planted = []
    for second in range(4):  # the names of this second and the next few, taken by links
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now + second))
        (folder / f"sync-{stamp}.toml").symlink_to(outside / "keep.txt")
        (folder / f"sync-{stamp}-2.toml").symlink_to(tmp_path / "nowhere.toml")
        planted += [f"sync-{stamp}.toml", f"sync-{stamp}-2.toml"]
    path = store.write(folder, "sync", {"rig": "small", "streams": {}})
    assert path.name not in planted and path.parent == folder
    assert path.is_file() and not path.is_symlink() and store.load(path)["rig"] == "small"
    assert all((folder / name).is_symlink() for name in planted)
    assert snapshot(outside) == before and not (tmp_path / "nowhere.toml").exists()

    (tmp_path / "linked").symlink_to(tmp_path / "nowhere", target_is_directory=True)
    with pytest.raises(store.CalibrationError, match="symbolic link"):
        store.write(tmp_path / "linked", "sync", {"rig": "small"})
    assert not (tmp_path / "nowhere").exists()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("report")
    with open_rig(write_rig(folder, "small", SMALL), folder / "out", "s") as control:
        return record(control, "scene", 2.0)


def test_a_report_is_never_written_through_a_link(recorded: Path, tmp_path: Path):
    outside = an_outside_folder(tmp_path)
    before = snapshot(outside)
    (tmp_path / "reports").symlink_to(outside)
    into_link = run(tmp_path, "verify", str(recorded), "--report", "reports/day.html")
    one_line_refusal(into_link, "reports", "symbolic link")
    (tmp_path / "day.html").symlink_to(outside / "day.html")  # dangling: nothing is there yet
    at_link = run(tmp_path, "verify", str(recorded), "--report", "day.html")
    one_line_refusal(at_link, "day.html", "symbolic link")
    assert snapshot(outside) == before

    (tmp_path / "old.html").symlink_to(outside / "keep.txt")  # even when overwriting is allowed
    with pytest.raises(UsageError, match="symbolic link"):
        write_report([], tmp_path / "old.html", overwrite=True)
    assert (tmp_path / "old.html").is_symlink() and snapshot(outside) == before
    write_report([], tmp_path / "new.html")
    assert (tmp_path / "new.html").is_file()

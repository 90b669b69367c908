"""`repair_take` on copies of the studio day's takes (one cut short by `kill -9` of the CLI), checked with real
readers."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from improvcap.errors import ImprovcapError, TakeError, UsageError
from improvcap.repair import repair_take
from improvcap.take.mkv import ebml_torn
from improvcap.take.wav import read_wav, wav_info

pytestmark = pytest.mark.slow

CAMERAS = ("cam0", "cam1")


@pytest.fixture(scope="module")
def killed(studio_day) -> Path:
    """The studio day's take whose recorder got SIGKILL about 3.5 s in (studio_day.py): read-only, copied."""
    return studio_day["killed"]


@pytest.fixture(scope="module")
def complete(studio_day) -> Path:
    """The studio day's unslated take, finished as recorded: read-only, copied."""
    return studio_day["quiet"]


@pytest.fixture
def take(killed: Path, tmp_path: Path) -> Path:
    """A fresh copy of the killed take for one test."""
    return Path(shutil.copytree(killed, tmp_path / "take"))


# --- real readers -------------------------------------------------------------------------------

def ffprobe_pts(path: Path) -> list[int]:
    """Container pts (ms) of every video packet, as ffprobe demuxes them."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts",
                          "-of", "json", str(path)], capture_output=True, text=True, check=True).stdout
    return [int(p["pts"]) for p in json.loads(out)["packets"]]


def csv_rows(path: Path) -> list[list[str]]:
    """Every row, with the csv module; the file must end with a line end and every row be as wide as the header."""
    data = path.read_bytes()
    assert data.endswith(b"\n") and b"\0" not in data, path.name
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert all(len(r) == len(rows[0]) for r in rows), path.name
    return rows


def table(path: Path) -> list[dict[str, str]]:
    header, *rows = csv_rows(path)
    return [dict(zip(header, r)) for r in rows]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_consistent(take: Path, manifest: dict) -> None:
    """What a repaired take promises: every stream agrees with its media, and the manifest with the files."""
    assert manifest["status"] == "repaired"
    assert json.loads((take / "take.json").read_text()) == json.loads(json.dumps(manifest, default=str))
    failed = {n for n, s in manifest["streams"].items() if s["state"] == "failed"}
    for path in take.glob("*.csv"):
        if path.name.split(".")[0] not in failed:
            csv_rows(path)
    for cam in CAMERAS:
        if cam in failed:
            continue
        rows = table(take / f"{cam}.frames.csv")
        assert ffprobe_pts(take / f"{cam}.mkv") == [int(r["pts"]) for r in rows]
        assert manifest["streams"][cam]["count"] == len(rows)
        t = [int(r["t_ns"]) for r in rows]
        assert all(b > a for a, b in zip(t, t[1:]))
        assert manifest["streams"][cam]["last_t_ns"] == t[-1]
    info = wav_info(take / "mic.wav")
    blocks = table(take / "mic.blocks.csv")
    assert info["header_complete"]
    assert info["frames"] == sum(int(b["frames"]) for b in blocks) == manifest["streams"]["mic"]["count"]
    suit = table(take / "suit.csv")
    assert manifest["streams"]["suit"]["count"] == len(suit)

    sync = table(take / "sync.csv")
    master = table(take / "cam0.frames.csv")
    assert [s["tick"] for s in sync] == [m["index"] for m in master]

    on_disk = {p.name for p in take.iterdir() if p.is_file()} - {"take.json"}
    assert set(manifest["files"]) == on_disk
    for name, entry in manifest["files"].items():
        assert entry == {"bytes": (take / name).stat().st_size, "sha256": sha256(take / name)}, name


# --- tests --------------------------------------------------------------------------------------

def test_killed_take_is_repaired_with_its_loss_stated(take: Path):
    rows_before = {cam: len(table_lenient(take / f"{cam}.frames.csv")) for cam in CAMERAS}
    torn = {cam: not (take / f"{cam}.frames.csv").read_bytes().endswith(b"\n") for cam in CAMERAS}
    packets_before = {cam: len(ffprobe_pts(take / f"{cam}.mkv")) for cam in CAMERAS}
    wav_before = wav_info(take / "mic.wav")["frames_on_disk"]

    manifest = repair_take(take)

    assert_consistent(take, manifest)
    record = manifest["repair"]
    assert record["from_status"] == "recording" and record["tool_version"] and record["repaired_utc"]
    assert record["faults"] == {} and record["actions"]
    for cam in CAMERAS:
        stream = manifest["streams"][cam]
        assert stream["count"] == min(rows_before[cam], packets_before[cam]) >= 30 * 2
        lost = record["lost"][cam]
        # rows for frames the crash kept out of the mkv are dropped, and counted
        assert lost["rows_dropped"] == rows_before[cam] - stream["count"] + torn[cam]
        assert lost["unit"] == "frames" and isinstance(lost["missing_at_end"], int) and lost["summary"]
        assert stream["dropped"] == 0 and stream["state"] == "ok"
        assert abs(stream["measured_rate"] - 30) < 0.3
        assert stream["device"]["clock"] == "device" and stream["device"]["width"] == 320
    # the crash cut the streams at different moments: the earliest-cut ones lost the rest of the take
    assert sum(lost["missing_at_end"] for lost in record["lost"].values() if lost["unit"] == "frames") > 0
    assert record["end_t_ns"] >= max(s["last_t_ns"] for s in manifest["streams"].values())

    mic = manifest["streams"]["mic"]
    # every whole sample on disk is kept (those after the last block row timed by the sample counter)
    assert mic["count"] == wav_before and abs(mic["measured_rate"] - 48000) < 48
    assert record["lost"]["mic"]["untimed_in_orig"] == 0 and not (take / "mic.wav.orig").exists()
    last_block_s = int(table(take / "mic.blocks.csv")[-1]["frames"]) / 48000
    ends = [s["last_t_ns"] / 1e9 + (last_block_s if name == "mic" else 0) for name, s in manifest["streams"].items()]
    assert manifest["duration_s"] == pytest.approx(max(ends), abs=0.05)
    assert 2.5 < manifest["duration_s"] < 8

    # ground truth keeps only rows of records that are still there
    truth = {int(r["index"]) for r in table(take / "cam0.truth.csv")}
    assert truth <= {int(r["index"]) for r in table(take / "cam0.frames.csv")}
    assert manifest["sync"]["cam0"]["matched"] == manifest["streams"]["cam0"]["count"]


def table_lenient(path: Path) -> list[str]:
    """Complete data rows of a CSV that may still end in a torn row."""
    return path.read_bytes().split(b"\n")[1:-1]


def test_second_repair_needs_force_and_changes_nothing(take: Path):
    first = repair_take(take)
    with pytest.raises(UsageError) as refused:
        repair_take(take)
    assert "repaired" in str(refused.value) and "--force" in str(refused.value)
    assert "\n" not in str(refused.value) and refused.value.exit_code == 2

    second = repair_take(take, force=True)
    assert_consistent(take, second)
    assert second["files"] == first["files"]  # every byte of every file, media included
    assert second["repair"]["lost"] == first["repair"]["lost"]
    assert second["repair"]["end_t_ns"] == first["repair"]["end_t_ns"]
    assert second["duration_s"] == first["duration_s"]
    for name, stream in second["streams"].items():
        for key in ("count", "dropped", "first_t_ns", "last_t_ns", "measured_rate", "files", "clock"):
            assert stream[key] == first["streams"][name][key], (name, key)
    assert second["repair"]["actions"] == ["nothing to repair: every file was consistent"]
    assert [r["from_status"] for r in second["repair"]["previous"]] == ["recording"]


def test_complete_take_refused_unless_forced(complete: Path, tmp_path: Path):
    take = Path(shutil.copytree(complete, tmp_path / "take"))
    before = json.loads((take / "take.json").read_text())
    manifest_bytes = (take / "take.json").read_bytes()
    with pytest.raises(UsageError) as refused:
        repair_take(take)
    message = str(refused.value)
    assert "complete" in message and "repair --force" in message and "\n" not in message
    assert (take / "take.json").read_bytes() == manifest_bytes

    after = repair_take(take, force=True)
    assert_consistent(take, after)
    assert after["repair"]["from_status"] == "complete"
    assert after["duration_s"] == before["duration_s"]
    for name, lost in after["repair"]["lost"].items():
        assert (lost["missing_at_end"], lost["rows_dropped"], lost["untimed_in_orig"]) == (0, 0, 0), name
    assert after["files"] == before["files"]  # the same clock fit, the same sync.csv: every byte as it was
    for name, stream in before["streams"].items():
        assert after["streams"][name]["count"] == stream["count"]
        assert after["streams"][name]["device_stats"] == stream["device_stats"]  # the recorder's own figures stay
        assert after["streams"][name]["clock"]["drift_ppm"] == pytest.approx(stream["clock"]["drift_ppm"])


def test_truncated_mkv_is_remuxed_and_its_original_kept(take: Path):
    mkv = take / "cam1.mkv"
    with open(mkv, "r+b") as fh:
        fh.truncate(int(mkv.stat().st_size * 0.6))
    truncated = mkv.read_bytes()
    readable = len(ffprobe_pts(mkv))
    assert ebml_torn(mkv)

    manifest = repair_take(take)

    assert_consistent(take, manifest)
    assert (take / "cam1.mkv.orig").read_bytes() == truncated
    assert not ebml_torn(mkv)
    assert manifest["streams"]["cam1"]["count"] == readable
    assert manifest["streams"]["cam1"]["files"] == ["cam1.mkv", "cam1.frames.csv", "cam1.mkv.orig"]
    assert any("cam1.mkv: remuxed" in a and "cam1.mkv.orig" in a for a in manifest["repair"]["actions"])
    assert manifest["repair"]["lost"]["cam1"]["missing_at_end"] > manifest["repair"]["lost"]["cam0"]["missing_at_end"]
    with av.open(str(mkv)) as container:  # decodable, timestamps as the frames.csv rows say
        frames = [f.pts for f in container.decode(video=0)]
    assert frames == [int(r["pts"]) for r in table(take / "cam1.frames.csv")]
    # cam0 was cut by the kill itself: its end may be torn too (then it is remuxed, and says so), but its
    # original is kept only with such an action
    cam0_remuxed = any(a.startswith("cam0.mkv: remuxed") for a in manifest["repair"]["actions"])
    assert (take / "cam0.mkv.orig").exists() == cam0_remuxed


def test_torn_rows_dropped_every_complete_row_kept(take: Path):
    suit_rows = table_lenient(take / "suit.csv")
    events_rows = table_lenient(take / "events.csv")
    with open(take / "suit.csv", "ab") as fh:          # cut mid-row
        fh.write(b"99999,4000000000,17,4000000000,12")
    with open(take / "events.csv", "ab") as fh:        # a row of the wrong width
        fh.write(b"4000000000,mark\n")
    with open(take / "cam0.frames.csv", "ab") as fh:   # blocks a power cut never wrote
        fh.write(b"\0" * 300)

    manifest = repair_take(take)

    assert_consistent(take, manifest)
    def without_t_ns(fields: list[bytes]) -> list[bytes]:
        return fields[:1] + fields[2:]  # the refit rewrites t_ns; every other byte of a row stays

    after = [without_t_ns([c.encode() for c in r]) for r in csv_rows(take / "suit.csv")[1:]]
    assert after == [without_t_ns(r.split(b",")) for r in suit_rows]
    assert manifest["streams"]["suit"]["count"] == len(suit_rows)
    assert len(csv_rows(take / "events.csv")) - 1 == len(events_rows)
    actions = " | ".join(manifest["repair"]["actions"])
    assert "suit.csv: dropped a torn last row" in actions and "events.csv: dropped a torn last row" in actions
    assert "cam0.frames.csv: dropped a torn last row" in actions


def test_media_without_timing_rows_is_kept_in_the_original(take: Path):
    """frames.csv lost more than the mkv; blocks.csv names samples the WAV never got."""
    pts = ffprobe_pts(take / "cam0.mkv")
    frames_csv = take / "cam0.frames.csv"
    header = frames_csv.read_bytes().split(b"\n")[0]
    kept = [r for r in table_lenient(frames_csv) if int(r.split(b",")[5]) in set(pts[:-10])]
    frames_csv.write_bytes(b"\n".join([header, *kept]) + b"\n")
    untimed = len(pts) - len(kept)
    assert untimed >= 10
    original_mkv = (take / "cam0.mkv").read_bytes()

    wav = take / "mic.wav"
    info = wav_info(wav)
    blocks = table_lenient(take / "mic.blocks.csv")
    torn_before = not (take / "mic.blocks.csv").read_bytes().endswith(b"\n")
    first, frames = (int(x) for x in blocks[len(blocks) // 2].split(b",")[::4][:2])  # first_sample, frames
    half = first + frames // 2  # the WAV ends inside a block: that block's row and all later ones go
    with open(wav, "r+b") as fh:
        fh.truncate(info["data_offset"] + half * info["block_align"] + 1)  # and a torn partial frame
    cut_data = read_wav(wav, 0, half)

    manifest = repair_take(take)

    assert_consistent(take, manifest)
    assert (take / "cam0.mkv.orig").read_bytes() == original_mkv
    assert ffprobe_pts(take / "cam0.mkv.orig") == pts
    assert manifest["streams"]["cam0"]["count"] == len(kept)
    lost = manifest["repair"]["lost"]
    assert lost["cam0"]["untimed_in_orig"] == untimed and "cam0.mkv.orig" in lost["cam0"]["summary"]

    # every whole sample on disk is kept: those after the last complete block are timed by the sample counter
    mic = manifest["streams"]["mic"]
    assert mic["count"] == half and wav_info(wav)["frames"] == half
    assert lost["mic"]["rows_dropped"] == len(blocks) - len(blocks) // 2 + torn_before
    assert lost["mic"]["untimed_in_orig"] == 0 and not (take / "mic.wav.orig").exists()
    assert np.array_equal(read_wav(wav), cut_data)
    rows = table(take / "mic.blocks.csv")
    assert (int(rows[-1]["first_sample"]), int(rows[-1]["frames"])) == (first, frames // 2)
    step = int(rows[-2]["frames"]) * 1e9 / 48000
    assert abs(int(rows[-1]["device_ns"]) - int(rows[-2]["device_ns"]) - step) <= 1
    assert 0 < int(rows[-1]["t_ns"]) - int(rows[-2]["t_ns"]) < 2 * step  # refitted on the take's clock
    actions = manifest["repair"]["actions"]
    assert any("mic.blocks.csv: dropped" in a for a in actions)
    assert any("timed by the sample counter" in a for a in actions)


def test_unreadable_stream_is_marked_and_the_others_repaired(take: Path):
    garbage = b"this is no matroska file\n" * 200
    (take / "cam1.mkv").write_bytes(garbage)
    csv_before = (take / "cam1.frames.csv").read_bytes()

    manifest = repair_take(take)

    assert_consistent(take, manifest)
    cam1 = manifest["streams"]["cam1"]
    assert cam1["state"] == "failed" and "cam1.mkv" in cam1["fault"]
    assert "cam1.mkv" in manifest["repair"]["faults"]["cam1"]
    assert manifest["repair"]["lost"]["cam1"]["summary"].startswith("unknown")
    assert (take / "cam1.mkv").read_bytes() == garbage and (take / "cam1.frames.csv").read_bytes() == csv_before
    assert "cam1_index" not in (take / "sync.csv").read_text().splitlines()[0]
    for name in ("cam0", "mic", "suit"):
        assert manifest["streams"][name]["state"] == "ok" and manifest["streams"][name]["count"] > 0


def test_take_still_open_in_a_process_is_refused(take: Path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; f = open(sys.argv[1]); print(1, flush=True); "
                               "time.sleep(60)", str(take / "suit.csv")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "1"
        with pytest.raises(UsageError, match="still recording"):
            repair_take(take)
    finally:
        holder.kill()
        holder.communicate()
    assert json.loads((take / "take.json").read_text())["status"] == "recording"


@pytest.mark.parametrize("content", [None, "", "{not json", '["a list"]', '{"format": "something else"}',
                                     json.dumps({"format": "improvcap.take", "status": "recording", "t0_host_ns": 1,
                                                 "rig": {"streams": [{"kind": "camera", "name": "../../escape",
                                                                      "driver": "demo", "fps": 30}]}})])
def test_not_a_take_is_one_line_error(tmp_path: Path, content: str | None):
    folder = tmp_path / "random"
    folder.mkdir()
    (folder / "notes.txt").write_text("holiday photos\n")
    if content is not None:
        (folder / "take.json").write_text(content)
    with pytest.raises(TakeError) as failed:
        repair_take(folder)
    assert isinstance(failed.value, ImprovcapError) and failed.value.exit_code == 2
    assert "\n" not in str(failed.value) and str(folder) in str(failed.value)
    expected = ["notes.txt"] + (["take.json"] if content is not None else [])
    assert sorted(p.name for p in folder.iterdir()) == sorted(expected)  # nothing written


def test_missing_folder_is_one_line_error(tmp_path: Path):
    with pytest.raises(TakeError, match="not a folder"):
        repair_take(tmp_path / "nowhere")


# --- hostile takes: no write outside the take --------------------------------------------------------

def _surroundings(root: Path, take: Path) -> dict[str, tuple[str, str]]:
    """Every entry under `root` outside `take`: its kind and, for a file, its sha256 (links not followed)."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path == take or take in path.parents:
            continue
        if path.is_symlink():
            out[str(path.relative_to(root))] = ("link", str(path.readlink()))
        elif path.is_file():
            out[str(path.relative_to(root))] = ("file", sha256(path))
        else:
            out[str(path.relative_to(root))] = ("dir", "")
    return out


def test_planted_links_never_make_repair_write_outside_the_take(take: Path, tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    victims = {}
    # every temporary name repair and the refit write through, as links to files of the user's elsewhere
    for i, name in enumerate([".cam0.frames.csv.repair", ".room.blocks.csv.repair", ".room.wav.repair",
                              ".cam0.mkv.repair", ".cam0.frames.csv.retime", ".suit.csv.retime",
                              f".take.json.{os.getpid()}.tmp", f".sync.csv.{os.getpid()}.tmp"]):
        victim = outside / f"victim{i}"
        victim.write_text(f"precious {i}\n")
        (take / name).symlink_to(victim)
        victims[name] = victim
    (take / ".mic.blocks.csv.repair").symlink_to(outside / "not-yet")  # a dangling link: must not be created
    before = _surroundings(tmp_path, take)
    manifest = repair_take(take)
    assert _surroundings(tmp_path, take) == before
    assert not (outside / "not-yet").exists()
    assert manifest["status"] == "repaired"
    assert not [p.name for p in take.iterdir() if p.is_symlink()]  # planted links removed, none put in place
    assert all(p.is_file() for p in take.iterdir())
    removed = [a for a in manifest["repair"]["actions"] if a.startswith("removed")]
    assert len([a for a in removed if "symbolic link" in a]) == len(victims) + 1
    assert "removed the unfinished temporary file .reserve" in removed  # the killed recorder's room for its end
    assert_consistent(take, manifest)


def test_a_take_folder_that_is_a_link_is_refused(take: Path, tmp_path: Path):
    link = tmp_path / "link-to-take"
    link.symlink_to(take)
    listing = {p.name: sha256(p) for p in take.iterdir()}
    with pytest.raises(TakeError) as failed:
        repair_take(link)
    assert failed.value.exit_code == 2 and "\n" not in str(failed.value)
    assert "symbolic link" in str(failed.value) and str(link) in str(failed.value)
    assert {p.name: sha256(p) for p in take.iterdir()} == listing


def test_a_manifest_that_is_a_link_is_refused(take: Path, tmp_path: Path):
    elsewhere = tmp_path / "elsewhere.json"
    shutil.move(take / "take.json", elsewhere)
    (take / "take.json").symlink_to(elsewhere)
    listing = {p.name: sha256(p) for p in take.iterdir() if not p.is_symlink()}
    with pytest.raises(TakeError) as failed:
        repair_take(take)
    assert failed.value.exit_code == 2 and "\n" not in str(failed.value)
    assert "take.json is a symbolic link" in str(failed.value)
    assert {p.name: sha256(p) for p in take.iterdir() if not p.is_symlink()} == listing


def test_a_huge_or_deep_manifest_is_one_line_error(tmp_path: Path):
    folder = tmp_path / "t"
    folder.mkdir()
    with open(folder / "take.json", "wb") as fh:
        fh.truncate(2 << 30)  # 2 GB, sparse: reading it whole would take 2 GB of RAM
    with pytest.raises(TakeError, match="not a take manifest|unreadable") as failed:
        repair_take(folder)
    assert "\n" not in str(failed.value) and failed.value.exit_code == 2
    (folder / "take.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(TakeError) as failed:
        repair_take(folder)
    assert "\n" not in str(failed.value) and "Recursion" not in type(failed.value).__name__


def test_repaired_videos_have_a_proper_end(take: Path):
    unfinished = [p.name for p in sorted(take.glob("*.mkv")) if _ffprobe_duration(p) is None]
    assert unfinished, "a killed take's videos were never finished"
    manifest = repair_take(take)
    for mkv in sorted(take.glob("*.mkv")):
        duration = _ffprobe_duration(mkv)
        assert duration is not None and duration > 1.0, (mkv.name, duration)
        assert (take / f"{mkv.name}.orig").exists()  # the untouched original is kept
    assert_consistent(take, manifest)


def _ffprobe_duration(path: Path) -> float | None:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, check=True).stdout.strip()
    return None if out in ("", "N/A") else float(out)

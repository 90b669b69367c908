"""verify: a shoot day recorded with demo rigs through the CLI, good takes and damaged copies of them."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import demo_rig

from improvcap.errors import UsageError
from improvcap.take.hashing import hash_file
from improvcap.take.manifest import MAX_MANIFEST_BYTES
from improvcap.verify import Limits, find_takes, summary_rows, verify_paths, verify_take

# The takes are the shared studio day's (studio_day.py): recorded once per run, copied here to be damaged.

# A take's arrival delays (the clock-fit residual) grow when the machine is loaded (seen: 400 ms), and a
# camera's first frames, stamped by a live clock estimate that is still settling, can start a take up to a
# few hundred ms before the other streams (start skew). Both are reported faithfully; the good takes are
# judged with those two limits raised, and the defaults are checked to flag nothing else. Both limits are
# tested on their own in test_limits_decide.
RELAXED = Limits(max_residual_ms=5000.0, max_skew_ms=2000.0)
LOAD_WARNINGS = ("residual p99", "start skew", "end skew")


@pytest.fixture(scope="module")
def day(studio_day, tmp_path_factory) -> dict[str, Path]:
    """The studio day's takes (good, good2, noperf, quiet, killed, and bad: its drift take, whose microphone
    clock drifts 800 ppm, whose suit is stamped 10 ms late and whose cam1 and suit lose 3 % and 2 % of their
    frames in transport), and `damaged`: this module's folder of copies to damage."""
    return {**studio_day.takes, "bad": studio_day["drift"], "damaged": tmp_path_factory.mktemp("damaged")}


def damaged(day: dict[str, Path], name: str, source: str = "good") -> Path:
    """A copy of a good take to damage, in <damaged>/<name>/ (a take folder of its own)."""
    dst = day["damaged"] / name
    shutil.copytree(day[source], dst)
    return dst


def fails(result: dict) -> list[str]:
    return [r for r in result["reasons"] if r.startswith("FAIL: ")]


def warns(result: dict) -> list[str]:
    return [r for r in result["reasons"] if r.startswith("WARN: ")]


def handled(result: dict) -> bool:
    """Every reason came from a check, none from the catch-all around the whole take."""
    return not any("verify failed" in r or "Traceback" in r for r in result["reasons"])


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry under root (symlinks not followed): size, mtime and mode."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            st = os.lstat(Path(folder) / name)
            out[str(Path(folder, name).relative_to(root))] = (st.st_size, st.st_mtime_ns, st.st_mode)
    return out


# --- good takes --------------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["good", "good2"])
def test_good_takes_are_ok_and_describe_every_stream(day, key):
    take = day[key]
    result = verify_take(take, RELAXED)
    assert result["verdict"] == "OK", result["reasons"]
    assert result["reasons"] == []
    # with the default limits, nothing but the effects of load (see RELAXED) may be noted
    strict = verify_take(take)
    assert not fails(strict) and all(any(w in r for w in LOAD_WARNINGS) for r in warns(strict)), strict["reasons"]
    manifest = json.loads((take / "take.json").read_text())
    assert result["status"] == "complete" and result["scene"] == key and result["session"] == "day"
    assert result["bytes"] == sum(e["bytes"] for e in manifest["files"].values())
    assert result["performers"] == [p["id"] for p in manifest["performers"]]
    assert result["consent"]["llm-training"]["allowed"] == result["performers"]
    assert "ana" in result["consent"]["emotion-recognition"]["denied"]
    assert len(result["slates_s"]) == 2
    streams = result["streams"]
    assert set(streams) == {"cam0", "cam1", "mic", "suit"}
    for name, s in streams.items():
        m = manifest["streams"][name]
        assert s["count"] == m["count"] and s["drops"] == 0
        assert len(s["slate_offsets_ms"]) == 2 and None not in s["slate_offsets_ms"], (name, s)
        assert s["drift_ppm"] == pytest.approx(m["clock"]["drift_ppm"], abs=1e-3)
        assert 0 < len(s["frame_intervals_ms"]) == len(s["frame_intervals_t_s"]) <= 2000
        assert 0 < len(s["clock_residuals_ms"]) == len(s["clock_residuals_t_s"]) <= 2000
    for cam in ("cam0", "cam1"):
        assert streams[cam]["packets"] == streams[cam]["rows"] == manifest["streams"][cam]["count"]
        assert max(streams[cam]["frame_intervals_ms"]) < 1.5 * 1000 / 30
        assert all(-1 <= v <= 1000 / 30 + 1 for v in streams[cam]["slate_offsets_ms"])
    assert streams["mic"]["samples"] == manifest["streams"]["mic"]["count"]
    assert all(abs(v) <= 2 for v in streams["mic"]["slate_offsets_ms"])
    assert all(-2 <= v <= 1000 / 240 + 2 for v in streams["suit"]["slate_offsets_ms"])
    assert result["worst_slate_offset_ms"] == max((v for s in streams.values() for v in s["slate_offsets_ms"]),
                                                  key=abs)
    json.dumps(result, allow_nan=False)  # JSON-ready, no NaN


def test_limits_decide(day):
    take = day["good"]
    assert any("clock drift" in r for r in fails(verify_take(take, replace(RELAXED, max_drift_ppm=1e-6))))
    assert any("residual p99" in r for r in warns(verify_take(take, replace(RELAXED, max_residual_ms=1e-6))))
    assert any(r.startswith("FAIL: mic: slate at") for r in
               verify_take(take, replace(RELAXED, slate_tolerance_ms=0.001))["reasons"])
    assert any("start skew" in r for r in warns(verify_take(take, replace(RELAXED, max_skew_ms=0.001))))


def test_slate_tolerance_decides_for_mocap_and_reads_for_audio(day):
    """A slate falls between two rows: the suit's onset is on time anywhere in the row period after it,
    give or take the tolerance; audio's window is the tolerance and a sample, said as such."""
    take = damaged(day, "late-suit")
    path = take / "suit.csv"
    header, *rows = path.read_text().splitlines()
    col = header.split(",").index("t_ns")
    path.write_text("\n".join([header, *(",".join(str(int(v) + 6_000_000) if i == col else v
                                                   for i, v in enumerate(r.split(","))) for r in rows)]) + "\n")
    def suit_late(tolerance_ms: float) -> list[str]:
        return [r for r in fails(verify_take(take, replace(RELAXED, slate_tolerance_ms=tolerance_ms)))
                if r.startswith("FAIL: suit: slate at")]
    late = suit_late(0.5)   # 6 ms late plus up to a row (4.2 ms): beyond a row period + 0.5 ms
    assert len(late) == 2 and all("(allowed -0.500 … +4.667 ms: a row period + 0.5 ms on either side)" in r
                                  for r in late), late
    assert suit_late(7.0) == []
    room = [r for r in fails(verify_take(day["good"], replace(RELAXED, slate_tolerance_ms=0.0)))
            if r.startswith("FAIL: mic: slate at")]
    assert room and all(r.endswith("(allowed ±0.021 ms: the tolerance and a sample)") for r in room), room


def test_take_without_performers_warns_or_fails_when_consent_is_required(day):
    result = verify_take(day["noperf"], RELAXED)
    assert result["verdict"] == "WARN" and result["reasons"] == ["WARN: no performers recorded"]
    required = verify_take(day["noperf"], replace(RELAXED, require_consent=True))
    assert required["verdict"] == "FAIL" and fails(required) == ["FAIL: no performers recorded (consent required)"]


def test_take_without_slates_is_not_verified_in_the_media(day):
    result = verify_take(day["quiet"], RELAXED)
    assert result["verdict"] == "WARN"
    assert result["reasons"] == ["WARN: no slates: sync not verified in the media"]


def test_drifting_clock_and_late_stream_fail(day):
    result = verify_take(day["bad"], RELAXED)
    assert result["verdict"] == "FAIL"
    assert result["streams"]["mic"]["drift_ppm"] == pytest.approx(800, abs=100)  # a 3 s fit under load
    assert any(r.startswith("FAIL: mic: clock drift +") and "beyond ±500 ppm" in r for r in result["reasons"])
    late = [r for r in fails(result) if r.startswith("FAIL: suit: slate at")]
    assert len(late) == 2, result["reasons"]                  # mocap stamped 10 ms late at both slates
    # 10 ms late, plus up to a row period; one more when the spike's first row was lost in transport
    assert all(9 <= v <= 10 + 2 * 1000 / 240 + 1 for v in result["streams"]["suit"]["slate_offsets_ms"])
    assert result["worst_drift_ppm"] == result["streams"]["mic"]["drift_ppm"]
    # a wider limit accepts the drift; the late stream still fails
    wider = verify_take(day["bad"], replace(RELAXED, max_drift_ppm=1000))
    assert not any("clock drift" in r for r in wider["reasons"])
    assert [r for r in fails(wider) if not r.startswith("FAIL: cam1: slate")] == late  # (a lost flash frame)


def test_a_camera_flash_far_from_its_slate_is_found_and_fails(day):
    """A flash outside the on-time frames is searched for over the whole window: here cam1's frames are
    stamped 120 ms late, so both its flashes show up 120 ms (plus their usual up to one frame) after their
    slates."""
    take = damaged(day, "late-camera")
    path = take / "cam1.frames.csv"
    header, *rows = path.read_text().splitlines()
    col = header.split(",").index("t_ns")
    shifted = [",".join(str(int(v) + 120_000_000) if i == col else v for i, v in enumerate(r.split(",")))
               for r in rows]
    path.write_text("\n".join([header, *shifted]) + "\n")
    result = verify_take(take, RELAXED)
    offsets = result["streams"]["cam1"]["slate_offsets_ms"]
    assert len(offsets) == 2 and all(120 <= v <= 120 + 1000 / 30 + 1 for v in offsets), offsets
    late = [r for r in fails(result) if r.startswith("FAIL: cam1: slate at")]
    # the reason quotes the offset to the µs (the stored offset is rounded once more, to 0.1 µs)
    seen = [float(r.split(" seen ")[1].split(" ms")[0]) for r in late]
    assert len(late) == 2 and all(abs(a - v) <= 0.0011 for a, v in zip(seen, offsets)), late
    assert all(v is not None and abs(v) <= 1000 / 30 + 1 for v in result["streams"]["cam0"]["slate_offsets_ms"])


def test_dropped_frames_are_counted_from_the_media_and_match_the_manifest(day):
    result = verify_take(day["bad"], RELAXED)
    manifest = json.loads((day["bad"] / "take.json").read_text())
    parts = ("dropped_by_device", "dropped_in_queue", "dropped_stale", "dropped_behind_rate")
    for name, how in (("cam1", "frames.csv timestamps"), ("suit", "frame counter gaps"), ("cam0", "")):
        entry = manifest["streams"][name]
        dropped, unit = entry["dropped"], "frames" if name.startswith("cam") else "rows"
        assert result["streams"][name]["drops"] == dropped and dropped == sum(entry.get(k, 0) for k in parts)
        # lost in transport: gaps in the media. On a loaded machine also frames a starved device never made,
        # behind its rate: no gap shows those, and verify says the two counts agree
        behind = entry.get("dropped_behind_rate", 0)
        if name == "cam0":  # no transport loss: nothing to say, or only what load cost
            assert entry["dropped_by_device"] == 0
            assert not any("cam0" in r for r in result["reasons"]) if not dropped else dropped == behind
            continue
        assert entry["dropped_by_device"] > 0
        detail = ", ".join(f"{k.removeprefix('dropped_').replace('_', ' ')} {entry[k]}" for k in parts if entry.get(k))
        assert (f"WARN: {name}: {dropped} {unit} dropped; take.json: {dropped} ({detail}); {how}: {dropped - behind}"
                in result["reasons"]), result["reasons"]
        assert max(result["streams"][name]["frame_intervals_ms"]) > 1.5 * 1000 / entry["nominal_rate"]
    assert "cam1 " in summary_rows([result])[0]["drops"]


@pytest.mark.parametrize("notes", [None, {"lost": {"mic": {"unit": "samples", "summary": "about 28800 samples (0.60 s) "
                                                             "missing before the take's last data at 3.1 s"},
                                                    "suit": {"summary": "1 timing rows dropped (torn)"}},
                                           "actions": ["mic.wav: header restored"]}])
def test_repaired_take_warns_with_its_loss(day, notes):
    """The `repair` record as improvcap repair writes it (a summary of the loss per stream)."""
    take = damaged(day, f"repaired_{notes is None}")
    manifest = json.loads((take / "take.json").read_text())
    manifest["status"] = "repaired"
    if notes:
        manifest["repair"] = notes
    (take / "take.json").write_text(json.dumps(manifest))
    result = verify_take(take, RELAXED)
    assert result["verdict"] == "WARN" and result["status"] == "repaired"
    stated = ("mic: about 28800 samples (0.60 s) missing before the take's last data at 3.1 s; "
              "suit: 1 timing rows dropped (torn)") if notes else "no repair record in take.json: the loss is not stated"
    assert result["reasons"] == [f"WARN: repaired take: {stated}"]


def test_interrupted_take_is_not_finalised(day):
    take = damaged(day, "interrupted")
    manifest = json.loads((take / "take.json").read_text())
    (take / "take.json").write_text(json.dumps({**manifest, "status": "interrupted"}))
    assert verify_take(take)["reasons"] == ["FAIL: not finalised (status interrupted): run improvcap repair"]


def test_killed_take_is_not_finalised(day):
    result = verify_take(day["killed"])
    assert result["verdict"] == "FAIL" and result["status"] == "recording"
    assert fails(result) == ["FAIL: not finalised (status recording): run improvcap repair"]
    assert result["performers"] == ["ana"]


# --- damaged copies --------------------------------------------------------------------------------

def test_flipped_byte_in_video(day):
    take = damaged(day, "flipped")
    mkv = take / "cam1.mkv"
    data = bytearray(mkv.read_bytes())
    data[len(data) // 2] ^= 0xFF
    mkv.write_bytes(bytes(data))
    result = verify_take(take, RELAXED)
    assert result["verdict"] == "FAIL" and handled(result)
    assert "FAIL: cam1.mkv: sha256 differs from take.json (changed after recording)" in result["reasons"]


def test_truncated_wav(day):
    take = damaged(day, "truncated")
    wav = take / "mic.wav"
    size = wav.stat().st_size
    os.truncate(wav, size - 10001)
    result = verify_take(take, RELAXED)
    assert result["verdict"] == "FAIL" and handled(result)
    assert f"FAIL: mic.wav: {size - 10001} bytes, take.json says {size}" in result["reasons"]
    assert any(r.startswith("FAIL: mic.wav: header declares") for r in result["reasons"])


def test_deleted_frame_row(day):
    take = day["good"]
    copy = damaged(day, "deleted_row")
    lines = (copy / "cam1.frames.csv").read_text().splitlines(keepends=True)
    del lines[40]
    (copy / "cam1.frames.csv").write_text("".join(lines))
    result = verify_take(copy, RELAXED)
    rows = len(lines) - 1
    count = json.loads((take / "take.json").read_text())["streams"]["cam1"]["count"]
    assert result["verdict"] == "FAIL" and handled(result)
    assert (f"FAIL: cam1: cam1.frames.csv has {rows} rows, cam1.mkv {rows + 1} packets, take.json count {count}"
            in result["reasons"])
    assert any(r.startswith("FAIL: cam1.frames.csv: ") and "bytes, take.json says" in r for r in result["reasons"])


def test_sync_csv_that_does_not_match_the_timestamps(day):
    take = damaged(day, "sync")
    lines = (take / "sync.csv").read_text().splitlines(keepends=True)
    header = lines[0].strip().split(",")
    col = header.index("cam1_index")
    cells = lines[20].rstrip("\n").split(",")
    cells[col] = str(int(cells[col]) + 1)
    lines[20] = ",".join(cells) + "\n"
    (take / "sync.csv").write_text("".join(lines))
    result = verify_take(take, RELAXED)
    assert result["verdict"] == "FAIL" and handled(result)
    assert "FAIL: sync.csv: column cam1_index differs from the timestamps at 1 rows (first at row 20)" \
        in result["reasons"]


@pytest.mark.parametrize("side", ["performers.json", "take.json"])
def test_altered_consent(day, side):
    take = damaged(day, f"consent_{side}")
    if side == "performers.json":
        record = json.loads((take / "performers.json").read_text())
        record["performers"][0]["allowed"].append("emotion-recognition")
        (take / "performers.json").write_text(json.dumps(record))
    else:
        manifest = json.loads((take / "take.json").read_text())
        manifest["performers"][0]["denied"] = []
        (take / "take.json").write_text(json.dumps(manifest))
    result = verify_take(take, RELAXED)
    assert result["verdict"] == "FAIL" and handled(result)
    assert any(r.startswith("FAIL: consent record altered") for r in result["reasons"]), result["reasons"]


def test_foreign_files(day):
    take = damaged(day, "foreign")
    (take / "notes.txt").write_text("call back the actor\n")
    (take / "extra.wav").write_bytes(b"RIFF")
    os.mkfifo(take / "pipe")
    result = verify_take(take, RELAXED)
    assert result["verdict"] == "FAIL" and handled(result)
    assert set(result["reasons"]) == {"FAIL: extra.wav: media file not listed in take.json",
                                      "FAIL: pipe is not a regular file",
                                      "WARN: notes.txt: foreign file in the take folder"}


def test_symlinks_are_never_followed(day, tmp_path):
    take = damaged(day, "symlinks")
    outside = tmp_path / "outside"
    (outside / "more").mkdir(parents=True)
    (outside / "more" / "stolen.wav").write_bytes(b"RIFF")
    os.mkfifo(outside / "fifo")  # reading it would block forever: it must not even be opened
    (take / "mic.wav").unlink()
    (take / "mic.wav").symlink_to(outside / "fifo")
    (take / "escape").symlink_to("/etc/passwd")
    (take / "more").symlink_to(outside / "more")
    result = verify_take(take, RELAXED)
    assert result["verdict"] == "FAIL" and handled(result)
    assert f"FAIL: mic.wav is a symlink (to {outside / 'fifo'}): not followed" in result["reasons"]
    assert "FAIL: escape is a symlink (to /etc/passwd): not followed" in result["reasons"]
    assert f"FAIL: more is a symlink (to {outside / 'more'}): not followed" in result["reasons"]
    assert not any("stolen" in r for r in result["reasons"])


def test_garbled_and_hostile_manifests(day):
    good = json.loads((day["good"] / "take.json").read_text())
    cases = {
        "garbled": (take_json := json.dumps(good))[: len(take_json) // 2],
        "not_object": "[1, 2, 3]",
        "deep": "[" * 200_000,
        "binary": "\udcff".encode("utf-8", "surrogateescape").decode("latin-1") * 10,
        "other_format": json.dumps({**good, "format": "something.else"}),
        "new_version": json.dumps({**good, "version": 99}),
        "escaping_paths": json.dumps({**good, "files": {**good["files"],
                                                        "../../etc/passwd": {"bytes": 1, "sha256": "0" * 64},
                                                        "/etc/passwd": {"bytes": 1, "sha256": "0" * 64}}}),
        "wrong_types": json.dumps({**good, "streams": "x", "performers": 5, "faults": {"a": 1},
                                   "files": {**good["files"], "cam0.mkv": "abc"}}),
        "hostile_stream": json.dumps({**good, "streams": {**good["streams"], "../x": good["streams"]["suit"],
                                                          "cam0": {"kind": "camera", "count": "many"}}}),
    }
    expect = {
        "garbled": "FAIL: take.json: not valid JSON",
        "not_object": "FAIL: take.json: not a JSON object",
        "deep": "FAIL: take.json: not valid JSON",
        "binary": "FAIL: take.json: not valid JSON",
        "other_format": "FAIL: take.json: format 'something.else', expected 'improvcap.take'",
        "new_version": "FAIL: take.json: unknown version 99",
        "escaping_paths": "FAIL: take.json: file path '../../etc/passwd' escapes the take",
        "wrong_types": "FAIL: take.json: streams is not an object",
        "hostile_stream": "FAIL: take.json: stream name '../x' is not a safe file name",
    }
    for name, text in cases.items():
        take = damaged(day, f"manifest_{name}")
        (take / "take.json").write_text(text, encoding="latin-1" if name == "binary" else "utf-8")
        result = verify_take(take, RELAXED)
        assert result["verdict"] == "FAIL" and handled(result), (name, result["reasons"])
        assert any(r.startswith(expect[name]) for r in result["reasons"]), (name, result["reasons"])
    assert "FAIL: take.json: file path '/etc/passwd' escapes the take" in \
        verify_take(day["damaged"] / "manifest_escaping_paths", RELAXED)["reasons"]
    wrong = verify_take(day["damaged"] / "manifest_wrong_types", RELAXED)["reasons"]
    assert "FAIL: take.json: malformed entry for cam0.mkv in files" in wrong
    assert "FAIL: take.json: performers is not a list of performer entries: consent not verified" in wrong
    hostile = verify_take(day["damaged"] / "manifest_hostile_stream", RELAXED)["reasons"]
    assert any(r.startswith("FAIL: cam0: cam0.frames.csv has") and "take.json count None" in r for r in hostile)


def test_huge_manifest(day):
    take = damaged(day, "huge")
    size = MAX_MANIFEST_BYTES + 1
    with open(take / "take.json", "wb") as fh:
        fh.truncate(size)  # sparse: cheap to make, still that big to anyone reading it
    result = verify_take(take)
    assert result["reasons"] == [f"FAIL: take.json is {size} bytes: too large to be a take manifest"]
    assert verify_paths([take]) == [result]


def test_bad_media_and_tables(day):
    take = damaged(day, "bad_media")
    size = (take / "cam1.mkv").stat().st_size
    (take / "cam1.mkv").write_bytes(os.urandom(size))          # same size, no video at all
    (take / "suit.csv").write_text("index,t_ns\nnot,numbers\n")  # garbled
    (take / "mic.blocks.csv").unlink()                        # missing
    result = verify_take(take, RELAXED)
    assert result["verdict"] == "FAIL" and handled(result)
    reasons = result["reasons"]
    assert "FAIL: cam1.mkv: sha256 differs from take.json (changed after recording)" in reasons
    assert any(r.startswith("FAIL: camera cam1: ") for r in reasons), reasons
    assert any(r.startswith("FAIL: mocap suit: ") for r in reasons), reasons
    assert "FAIL: mic: mic.blocks.csv missing" in reasons
    assert "FAIL: mic.blocks.csv: missing (listed in take.json)" in reasons
    assert "cam0" not in " ".join(reasons)  # the intact camera is still checked, and passes


# --- a whole day -----------------------------------------------------------------------------------

def test_verify_writes_nothing_and_jobs_give_the_same_results(day):
    for name in ("flipped", "truncated", "deleted_row", "foreign", "symlinks", "bad_media"):
        if not (day["damaged"] / name).exists():  # this test may run alone
            damaged(day, name)
    roots = [day["good"].parent, day["damaged"]]
    before = [snapshot(root) for root in roots]
    calls: list[tuple[int, int, int, int]] = []
    serial = verify_paths(roots, RELAXED, jobs=1, progress=lambda *a: calls.append(a))
    parallel = verify_paths(roots, RELAXED, jobs=2)
    # with another thread running, the worker is spawned instead of forked
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        spawned = verify_paths(roots, RELAXED, jobs=3)
    finally:
        stop.set()
        other.join()
    assert [snapshot(root) for root in roots] == before
    assert json.dumps(serial) == json.dumps(parallel) == json.dumps(spawned)
    takes = find_takes(roots)
    assert [r["take"] for r in serial] == [str(t) for t in takes]
    # one take on its own (hashed inside its check) gives what the day's shared hashing pool gives
    assert json.dumps([verify_take(t, RELAXED) for t in takes]) == json.dumps(serial)
    total = calls[-1][3]
    assert calls[0] == (0, len(takes), 0, total) and calls[-1] == (len(takes), len(takes), total, total)
    assert all(a[2] <= b[2] for a, b in zip(calls, calls[1:]))
    verdicts = {Path(r["take"]).name: r["verdict"] for r in serial}
    assert verdicts[day["good"].name] == "OK" and verdicts["killed_t001"] == "FAIL"
    rows = summary_rows(serial)
    assert [r["take"] for r in rows] == [r["take"] for r in serial]
    assert set(rows[0]) == {"take", "duration_s", "streams", "drops", "worst_drift_ppm", "worst_slate_offset_ms",
                            "verdict", "reasons"}
    good = next(r for r in rows if r["take"] == str(day["good"]))
    assert good["streams"] == 4 and good["drops"] == "" and good["verdict"] == "OK" and good["reasons"] == []


def test_find_takes(day, tmp_path):
    out = day["good"].parents[1]
    takes = find_takes([out])
    assert takes == sorted(takes) and set(takes) == {path for key, path in day.items() if key != "damaged"}
    assert find_takes([day["good"]]) == [day["good"]] == find_takes([day["good"] / "take.json"])
    assert find_takes([out, day["good"]]) == takes                # each take once
    (tmp_path / "link").symlink_to(out, target_is_directory=True)
    assert find_takes([tmp_path]) == []                           # symlinked folders are not followed
    with pytest.raises(UsageError, match="no such file or folder") as e:
        find_takes([out / "nowhere"])
    assert e.value.exit_code == 2
    with pytest.raises(UsageError, match="not a take folder"):
        find_takes([day["good"].parent / "performers.toml"])


def test_not_a_take_folder(tmp_path):
    assert verify_take(tmp_path / "gone")["reasons"] == ["FAIL: not a folder"]
    (tmp_path / "take.json").mkdir()
    assert verify_take(tmp_path)["reasons"] == ["FAIL: no take.json (or it is not a regular file)"]
    assert verify_paths([tmp_path]) == []  # a folder named take.json makes no take


def test_hash_file_matches_hashlib(tmp_path):
    path = tmp_path / "blob"
    data = os.urandom(3 * (1 << 20) + 12345)
    path.write_bytes(data)
    chunks: list[int] = []
    assert hash_file(path, chunks.append) == (hashlib.sha256(data).hexdigest(), len(data))
    assert sum(chunks) == len(data) and max(chunks) == 1 << 20


def test_windowed_slate_search_finds_what_the_whole_search_finds(day):
    from improvcap.slates import detect_audio, detect_mocap, detect_video

    take = day["good"]
    slates = [int(s * 1e9) for s in verify_take(take, RELAXED)["slates_s"]]
    windows = [(s - 700_000_000, s + 500_000_000) for s in slates]
    inside = (lambda onsets: [o for o in onsets if any(a <= o.t_ns <= b for a, b in windows)])
    for cam in ("cam0", "cam1"):
        whole = detect_video(take / f"{cam}.mkv", take / f"{cam}.frames.csv")
        assert len(whole) == 2 and detect_video(take / f"{cam}.mkv", take / f"{cam}.frames.csv",
                                                windows=windows) == inside(whole)
    whole = detect_audio(take / "mic.wav", take / "mic.blocks.csv", 48000)
    assert len(whole) == 2 and detect_audio(take / "mic.wav", take / "mic.blocks.csv", 48000,
                                            windows=windows) == inside(whole)
    assert detect_audio(take / "mic.wav", take / "mic.blocks.csv", 48000, windows=[(0, 10**12)]) == whole
    whole = detect_mocap(take / "suit.csv")
    assert len(whole) == 2 and detect_mocap(take / "suit.csv", windows=windows) == inside(whole)
    assert detect_mocap(take / "suit.csv", windows=windows[:1]) == whole[:1]


def test_a_table_line_beyond_the_bound_fails_in_bounded_memory(day):
    take = damaged(day, "endless_line")
    with open(take / "suit.csv", "r+b") as fh:
        fh.truncate(fh.seek(0, 2) + (1 << 30))  # a 1 GB last "line" (sparse NULs, no line end)
    # the peak is the process's own (VmHWM): getrusage's ru_maxrss keeps the parent's peak across exec
    code = ("import json, re, sys; from improvcap.verify import Limits, verify_take; "
            "r = verify_take(sys.argv[1], Limits(max_residual_ms=5000.0, max_skew_ms=2000.0)); "
            "hwm = int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)); "
            "print(json.dumps([r['reasons'], hwm]))")
    run = subprocess.run([sys.executable, "-c", code, str(take)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    reasons, peak_kib = json.loads(run.stdout)
    assert any(r.startswith("FAIL: mocap suit: suit.csv: a line longer than") for r in reasons), reasons
    assert peak_kib < 400 * 1024, f"peak RSS {peak_kib / 1024:.0f} MB for a 1 GB line"


@pytest.mark.parametrize("where, value, reason", [
    (("rig", "streams", "cam0", "fps"), 1e308, "FAIL: take.json: rig snapshot: cam0.fps: must be <= 1000"),
    (("rig", "streams", "mic", "samplerate"), 1e308, "FAIL: take.json: rig snapshot: mic.samplerate: expected an"),
    (("rig", "streams", "suit", "rate"), 1e-300, "FAIL: take.json: rig snapshot: suit.rate: must be >= 0.001"),
    (("rig", "streams", "mic", "channels"), 0, "FAIL: take.json: rig snapshot: mic.channels: must be >= 1"),
    (("t0_host_ns",), 10**400, "FAIL: take.json: t0_host_ns is not a monotonic clock time in ns"),
    (("streams", "cam0", "device", "fps"), 1e308, "FAIL: take.json: cam0: device fps 1e+308 outside"),
])
def test_values_outside_a_physical_range_fail(day, where, value, reason):
    take = damaged(day, "range_" + "_".join(map(str, where)))
    manifest = json.loads((take / "take.json").read_text())
    node = manifest
    for key in where[:-1]:
        node = next(s for s in node if s["name"] == key) if isinstance(node, list) else node[key]
    node[where[-1]] = value
    (take / "take.json").write_text(json.dumps(manifest))
    result = verify_take(take, RELAXED)
    assert result["verdict"] == "FAIL" and handled(result), result["reasons"]
    assert any(r.startswith(reason) for r in result["reasons"]), result["reasons"]


def test_a_wav_with_no_channels_is_a_reason_not_a_crash(day):
    take = damaged(day, "zero_channels")
    with open(take / "mic.wav", "r+b") as fh:
        data = fh.read(4096)
        at = data.index(b"fmt ") + 8
        fh.seek(at + 2)
        fh.write(b"\0\0")      # channels
        fh.seek(at + 12)
        fh.write(b"\0\0")      # block align
    result = verify_take(take, RELAXED)
    assert result["verdict"] == "FAIL" and handled(result)
    assert not any("division" in r for r in result["reasons"]), result["reasons"]
    assert any(r.startswith("FAIL: audio mic: ") and "0 channels" in r for r in result["reasons"]), result["reasons"]


def test_no_takes_under_the_paths_is_bad_input(tmp_path):
    empty = tmp_path / "wrong-drive"
    empty.mkdir()
    (empty / "holiday.jpg").write_bytes(b"\xff\xd8")
    run = subprocess.run([sys.executable, "-m", "improvcap", "verify", str(empty)], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 2, run.stdout + run.stderr
    assert f"no takes under {empty}" in run.stderr and "\n" not in run.stderr.strip()


def test_a_take_named_twice_is_verified_once(day, tmp_path):
    out = day["good"].parents[1]
    relative = Path(os.path.relpath(day["good"]))
    takes = find_takes([out])
    assert find_takes([out, relative, day["good"] / ".." / day["good"].name]) == takes


@pytest.mark.slow
def test_a_samplerate_other_than_the_default_is_one_a_device_can_have(tmp_path: Path, cli) -> None:
    (tmp_path / "r.toml").write_text(demo_rig("cd", cameras=("cam0", "cam1"), samplerate=44100))
    done = cli("record", "r.toml", "--out", "out", "--duration", "2", "--json")
    assert done.returncode == 0, done.stderr
    checked = cli("verify", json.loads(done.stdout)["take"], "--json")
    result = json.loads(checked.stdout)["takes"][0]
    assert not [f for f in fails(result) if "nominal rate" in f or "mic" in f], fails(result)

"""Exports: a shoot day recorded in this process, exported for two uses with consent judged now, and the
result read back by real clients (webdataset, PyAV, the mcap reader, mlcroissant)."""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import run_cli
from helpers import demo_rig, write_rig
from recording import open_rig, record
from improvcap.take.tables import read_table
from improvcap.take.wav import pcm_ints, read_pcm, wav_info

pytestmark = pytest.mark.slow

FORMS = {"ana": b"%PDF ana", "ben": b"%PDF ben", "cy": b"%PDF cy", "dee": b"%PDF dee", "eve": b"%PDF eve"}
SCOPES = {  # id: (allowed, denied)
    "ana": (["llm-training", "emotion-recognition"], []),
    "ben": (["llm-training"], ["emotion-recognition"]),
    "cy": (["llm-training", "emotion-recognition"], []),
    "dee": (["llm-training", "emotion-recognition"], []),
    "eve": (["emotion-recognition"], ["llm-training"]),
}


def performers_toml(revoked: tuple[str, ...] = ()) -> str:
    out = []
    for pid, (allowed, denied) in SCOPES.items():
        out.append(f'[performers.{pid}]\nname = "{pid.title()} Example"\nconsent_form = "forms/{pid}.pdf"\n'
                   f'consent_sha256 = "{hashlib.sha256(FORMS[pid]).hexdigest()}"\nsigned = "2026-11-20"\n'
                   f'allowed = {json.dumps(allowed)}\ndenied = {json.dumps(denied)}\n'
                   + ('revoked = true\nrevoked_on = "2026-11-30"\n' if pid in revoked else ""))
    return "\n".join(out)


@pytest.fixture(scope="module")
def day(tmp_path_factory) -> Path:
    """good (ana, ben), denied (ana, eve), revoked (cy, revoked after the take), tampered (dee, form changed
    after the take), bare (no performers), broken (ana; a byte of its video flipped)."""
    work = tmp_path_factory.mktemp("export-day")
    rig = write_rig(work, "day", demo_rig("day", mocap_channels=6))
    session = work / "out" / "day"
    session.mkdir(parents=True)
    (session / "forms").mkdir()
    for pid, data in FORMS.items():
        (session / "forms" / f"{pid}.pdf").write_bytes(data)
    (session / "performers.toml").write_text(performers_toml())
    with open_rig(rig, work / "out", "day") as control:  # in this process, the devices open from take to take
        record(control, "good", 3, slate=True, performers=["ana", "ben"], marks=(0.6, 1.5, 2.4))
        record(control, "denied", 3, slate=True, performers=["ana", "eve"])
        record(control, "revoked", 3, slate=True, performers=["cy"])
        record(control, "tampered", 3, slate=True, performers=["dee"])
        record(control, "bare", 3, slate=True)
    shutil.copytree(session / "good_t001", session / "broken_t001")
    mkv = session / "broken_t001" / "cam0.mkv"
    data = bytearray(mkv.read_bytes())
    data[len(data) // 2] ^= 0xFF
    mkv.write_bytes(bytes(data))
    # after the shoot: cy revokes, dee's form on disk is no longer the one signed
    (session / "performers.toml").write_text(performers_toml(revoked=("cy",)))
    (session / "forms" / "dee.pdf").write_bytes(b"%PDF dee, edited")
    return work


def export(day: Path, to: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("export", "out/day", "--to", to, *args, cwd=day, timeout=300)


def decisions(day: Path, to: str) -> dict[str, dict]:
    manifest = json.loads((day / to / "export.json").read_text())
    return {d["take"].split("/")[1]: d for d in manifest["decisions"]}


def test_llm_training_webdataset_holds_exactly_the_admitted_takes(day: Path):
    done = export(day, "llm", "--use", "llm-training", "--format", "webdataset")
    assert done.returncode == 0, done.stderr
    d = decisions(day, "llm")
    assert {k for k, v in d.items() if v["included"]} == {"good_t001"}
    assert any("'eve' denied 'llm-training'" in r for r in d["denied_t001"]["reasons"])
    assert any("'cy' revoked consent on 2026-11-30" in r for r in d["revoked_t001"]["reasons"])
    assert any("dee.pdf does not match" in r for r in d["tampered_t001"]["reasons"])
    assert any("no performers recorded" in r for r in d["bare_t001"]["reasons"])
    assert d["broken_t001"]["verdict"] == "FAIL" and any(r.startswith("verify: ") for r in d["broken_t001"]["reasons"])

    import webdataset as wds
    take = day / "out" / "day" / "good_t001"
    shards = sorted(str(p) for p in (day / "llm").glob("shard-*.tar"))
    samples = list(wds.WebDataset(shards, shardshuffle=False))
    assert [s["__key__"] for s in samples] == ["day/good_t001/00000"]
    s = samples[0]
    meta = json.loads(s["json"])
    assert meta["scene"] == "good" and meta["scope"] == "llm-training"
    assert [p["id"] for p in meta["performers"]] == ["ana", "ben"] and "name" not in meta["performers"][0]
    frames = read_table(take / "cam0.frames.csv")
    assert meta["streams"]["cam0"]["t_ns"] == frames["t_ns"].tolist()
    with av.open(io.BytesIO(s["cam0.mp4"])) as c:
        decoded = list(c.decode(video=0))
    assert meta["streams"]["cam0"]["video"] == "copied"
    assert len(decoded) == len(frames["t_ns"])
    origin = meta["clip"]["start_ns"]
    assert [round(f.time * 1e6) for f in decoded] == [round((t - origin) / 1e3) for t in frames["t_ns"].tolist()]
    # audio bit for bit
    wav = take / "mic.wav"
    info = wav_info(wav)
    with av.open(io.BytesIO(s["mic.flac"])) as c:
        flac = np.concatenate([f.to_ndarray().reshape(-1, info["channels"]) for f in c.decode(audio=0)])
    assert np.array_equal(flac, pcm_ints(read_pcm(wav, 0, None, info), info["sample_format"], info["channels"]))
    # mocap channels and the sync rows
    suit = read_table(take / "suit.csv", dtype=np.float64)
    values = np.load(io.BytesIO(s["suit.npy"]))
    channels = meta["streams"]["suit"]["channels"]
    assert values.shape == (len(suit["t_ns"]), 6)
    assert np.allclose(values, np.stack([suit[c] for c in channels], axis=1).astype(np.float32))
    sync = read_table(take / "sync.csv", dtype=np.float64)
    assert meta["sync"]["tick"] == sync["tick"].astype(int).tolist()


def test_emotion_recognition_in_second_windows_reencodes_off_keyframe_clips(day: Path):
    done = export(day, "emotion", "--use", "emotion-recognition", "--clip", "0.7", "--shard-size", "200kB")
    assert done.returncode == 0, done.stderr
    d = decisions(day, "emotion")
    assert {k for k, v in d.items() if v["included"]} == {"denied_t001"}
    assert any("'ben' denied 'emotion-recognition'" in r for r in d["good_t001"]["reasons"])
    import webdataset as wds
    shards = sorted(str(p) for p in (day / "emotion").glob("shard-*.tar"))
    assert len(shards) > 1
    samples = list(wds.WebDataset(shards, shardshuffle=False))
    take = day / "out" / "day" / "denied_t001"
    t_ns = read_table(take / "cam0.frames.csv")["t_ns"].tolist()
    seen, ways = [], set()
    clips = [json.loads(s["json"])["clip"] for s in samples]
    # windows on the take's clock; the first opens at the take's first row, the last closes after its last
    assert all(c["start_ns"] % 700_000_000 == 0 for c in clips[1:])
    assert all(c["end_ns"] % 700_000_000 == 0 for c in clips[:-1])
    assert all(a["end_ns"] == b["start_ns"] for a, b in zip(clips, clips[1:]))
    for s in samples:
        meta = json.loads(s["json"])
        with av.open(io.BytesIO(s["cam0.mp4"])) as c:
            decoded = list(c.decode(video=0))
        cam = meta["streams"]["cam0"]
        assert len(decoded) == len(cam["t_ns"]) == cam["frames"]
        if decoded:
            assert abs(decoded[0].time - (cam["t_ns"][0] - meta["clip"]["start_ns"]) / 1e9) < 2e-6
        seen += cam["t_ns"]
        ways.add(cam["video"])
    assert seen == t_ns and ways == {"copied", "re-encoded"}


def test_clips_between_marks(day: Path):
    done = export(day, "marks", "--use", "llm-training", "--clip", "marks")
    assert done.returncode == 0, done.stderr
    import webdataset as wds
    samples = list(wds.WebDataset(sorted(str(p) for p in (day / "marks").glob("shard-*.tar")), shardshuffle=False))
    clips = [json.loads(s["json"])["clip"] for s in samples]
    assert [c.get("label") for c in clips] == ["beat 0", "beat 1"]
    assert clips[0]["end_ns"] == clips[1]["start_ns"]


def test_mcap_per_take_reads_back_with_the_mcap_reader(day: Path):
    from mcap.reader import make_reader
    from improvcap.export.mcap_file import utc_ns

    done = export(day, "review", "--use", "llm-training", "--format", "mcap", "--include-unattributed")
    assert done.returncode == 0, done.stderr
    d = decisions(day, "review")
    assert {k for k, v in d.items() if v["included"]} == {"good_t001", "bare_t001"}
    take = day / "out" / "day" / "good_t001"
    manifest = json.loads((take / "take.json").read_text())
    t0 = utc_ns(manifest["t0_utc"])
    with open(day / "review" / "day__good_t001.mcap", "rb") as fh:
        reader = make_reader(fh)
        summary = reader.get_summary()
        counts = {c.topic: summary.statistics.channel_message_counts[i] for i, c in summary.channels.items()}
        assert counts["/cam0"] == len(read_table(take / "cam0.frames.csv")["t_ns"])
        assert counts["/mic"] == len(read_table(take / "mic.blocks.csv")["t_ns"])
        assert counts["/suit"] == len(read_table(take / "suit.csv", columns=["t_ns"])["t_ns"])
        logs = [m.log_time for _, _, m in reader.iter_messages(topics=["/cam0"])]
        assert logs == [t0 + t for t in read_table(take / "cam0.frames.csv")["t_ns"].tolist()]
        first = next(reader.iter_messages(topics=["/cam0"]))
        body = json.loads(first[2].data)
        assert body["format"] == "h264" and body["data"].startswith("AAAAA")  # Annex B start code
        assert {a.name for a in reader.iter_attachments()} >= {"take.json", "performers.json"}
        assert {m.name for m in reader.iter_metadata()} == {"improvcap.take", "improvcap.consent"}


def test_provenance_croissant_and_card(day: Path):
    import mlcroissant as mlc
    if not (day / "llm").exists():
        assert export(day, "llm", "--use", "llm-training").returncode == 0
    manifest = json.loads((day / "llm" / "export.json").read_text())
    assert manifest["state"] == "complete" and manifest["scope"] == "llm-training"
    take = day / "out" / "day" / "good_t001"
    entry = manifest["takes"][0]
    assert entry["take_json_sha256"] == hashlib.sha256((take / "take.json").read_bytes()).hexdigest()
    assert entry["files"]["cam0.mkv"]["sha256"] == hashlib.sha256((take / "cam0.mkv").read_bytes()).hexdigest()
    policies = {p["id"]: p["policy"] for p in manifest["performers"]}
    ben = policies["ben"]
    assert ben["@context"] == "http://www.w3.org/ns/odrl.jsonld" and ben["@type"] == "Set"
    assert [r["constraint"][0]["rightOperand"] for r in ben["permission"]] == ["llm-training"]
    assert [r["constraint"][0] for r in ben["prohibition"]] == [
        {"leftOperand": "purpose", "operator": "eq", "rightOperand": "emotion-recognition"}]
    dataset = mlc.Dataset(str(day / "llm" / "croissant.json"))
    assert dataset.metadata.name == "improvcap-export-llm-training"
    doc = json.loads((day / "llm" / "croissant.json").read_text())
    assert "llm-training" in doc["rai:dataUseCases"] and doc["rai:personalSensitiveInformation"]
    card = (day / "llm" / "README.md").read_text()
    assert "**llm-training** only" in card and "revoked_t001" in card and "Ana Example" not in card


def test_verify_export_finds_a_flipped_byte_and_a_stray_file(day: Path, tmp_path: Path):
    if not (day / "llm").exists():
        assert export(day, "llm", "--use", "llm-training").returncode == 0
    copy = tmp_path / "copy"
    shutil.copytree(day / "llm", copy)
    ok = run_cli("verify-export", str(copy), cwd=day)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    shard = next(copy.glob("shard-*.tar"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0x01
    shard.write_bytes(bytes(data))
    (copy / "extra.txt").write_text("slipped in")
    bad = run_cli("verify-export", str(copy), "--json", cwd=day)
    assert bad.returncode == 1
    problems = json.loads(bad.stdout)["problems"]
    assert any(shard.name in p and "sha256" in p for p in problems)
    assert any("extra.txt: not listed" in p for p in problems)


def test_performers_report(day: Path):
    if not (day / "llm").exists():
        assert export(day, "llm", "--use", "llm-training").returncode == 0
    done = run_cli("performers", "report", "ana", "out", "--exports", "llm", "--json", cwd=day)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert sorted(t["take"] for t in report["takes"]) == ["day/broken_t001", "day/denied_t001", "day/good_t001"]
    assert [e["takes"] for e in report["exports"]] == [["day/good_t001"]]
    cy = json.loads(run_cli("performers", "report", "cy", "out", "--exports", "llm", "--json", cwd=day).stdout)
    assert cy["now"]["revoked"] and cy["now"]["revoked_on"] == "2026-11-30" and cy["exports"] == []
    assert cy["takes"][0]["recorded"]["allowed"] == ["llm-training", "emotion-recognition"]
    text = run_cli("performers", "report", "cy", "out", cwd=day)
    assert "REVOKED on 2026-11-30" in text.stdout


def test_bad_input_is_one_line(day: Path, tmp_path: Path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    busy = export(day, str(tmp_path / "full"), "--use", "llm-training")
    assert busy.returncode == 2 and "not empty" in busy.stderr and "Traceback" not in busy.stderr
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    typo = export(day, str(tmp_path / "typo"), "--use", "llm-trainig", "--dry-run")
    assert typo.returncode == 0 and "did you mean 'llm-training'" in typo.stderr
    assert not (tmp_path / "typo").exists()
    for args, words in ((("--clip", "-1"), "--clip"), (("--format", "zip"), "--format"),
                        (("--shard-size", "big"), "--shard-size")):
        done = export(day, str(tmp_path / "x"), "--use", "llm-training", *args)
        assert done.returncode == 2 and words in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_a_full_disk_keeps_whole_shards_and_resume_finishes(day: Path, tmp_path: Path):
    if subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() != "0":
        pytest.skip("mounting a small disk needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        args = ("--use", "emotion-recognition", "--clip", "0.5", "--shard-size", "100kB")
        stopped = export(day, str(disk / "e"), *args)
        assert stopped.returncode == 1 and "export stopped" in stopped.stderr
        assert "Traceback" not in stopped.stderr
        manifest = json.loads((disk / "e" / "export.json").read_text())
        assert manifest["state"] == "interrupted"
        names = sorted(p.name for p in (disk / "e").iterdir())
        listed = sorted(o["path"] for o in manifest["outputs"])
        assert names == sorted(listed + ["export.json"])  # nothing half-written under a final name
        subprocess.run(["mount", "-o", "remount,size=20m", str(disk)], check=True)
        resumed = export(day, str(disk / "e"), *args, "--resume")
        assert resumed.returncode == 0, resumed.stderr
        assert run_cli("verify-export", str(disk / "e"), cwd=day).returncode == 0
        import webdataset as wds
        keys = [s["__key__"] for s in wds.WebDataset(sorted(str(p) for p in (disk / "e").glob("shard-*.tar")),
                                                      shardshuffle=False)]
        assert len(set(keys)) == len(keys)
        clips = json.loads((disk / "e" / "export.json").read_text())
        assert sum(len(o.get("samples", [])) for o in clips["outputs"]) == len(keys) >= 6
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)



def test_ctrl_c_keeps_whole_shards_and_resume_gives_every_clip_once(day: Path, tmp_path: Path):
    import signal
    import webdataset as wds

    args = ["--use", "llm-training", "--include-unattributed", "--clip", "0.2", "--shard-size", "150kB"]
    full = export(day, str(tmp_path / "full"), *args)
    assert full.returncode == 0, full.stderr
    out = tmp_path / "stopped"
    proc = subprocess.Popen([sys.executable, "-m", "improvcap", "export", "out/day", "--to", str(out), *args],
                            cwd=day, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(out.glob("shard-*.tar")):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["state"] == "interrupted"
    assert sorted(p.name for p in out.iterdir()) == sorted([o["path"] for o in manifest["outputs"]] + ["export.json"])
    assert run_cli("verify-export", str(out), cwd=day).returncode == 1  # not complete, and says so
    resumed = export(day, str(out), *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert run_cli("verify-export", str(out), cwd=day).returncode == 0

    def keys(folder: Path) -> list[str]:
        shards = sorted(str(p) for p in folder.glob("shard-*.tar"))
        return [s["__key__"] for s in wds.WebDataset(shards, shardshuffle=False)]

    assert keys(out) == keys(tmp_path / "full")


def test_a_stream_name_that_is_a_path_never_leaves_the_take(day: Path, tmp_path: Path):
    from improvcap.errors import TakeError
    from improvcap.take.reader import open_take

    take = tmp_path / "s" / "evil_t001"
    shutil.copytree(day / "out" / "day" / "good_t001", take)
    manifest = json.loads((take / "take.json").read_text())
    manifest["rig"]["streams"][0]["name"] = "../../outside"
    (take / "take.json").write_text(json.dumps(manifest))
    with pytest.raises(TakeError, match="not a stream of a take"):
        open_take(take)
    done = run_cli("export", str(take.parent), "--to", str(tmp_path / "e"), "--use", "llm-training",
                   "--performers", str(day / "out" / "day" / "performers.toml"), "--dry-run", cwd=day)
    assert done.returncode == 0 and "exclude" in done.stdout

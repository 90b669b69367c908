"""`improvcap editorial`: MOV remuxes with a tmcd start timecode (ffprobe), WAVs with bext and iXML at their
first sample (wavinfo), and OpenTimelineIO timelines read back with the clips where the streams' t_ns put
them; FCP XML and CMX EDL through the OTIO adapters."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import opentimelineio as otio
import pytest
from wavinfo import WavInfoReader

from improvcap.take.tables import read_table
from improvcap.take.timecode import TimecodeRate
from improvcap.take.timeline import AudioTimeline
from improvcap.take.wav import wav_info

from helpers import demo_rig, write_rig
from recording import open_rig, record

pytestmark = pytest.mark.slow

RIG = demo_rig("cut", cameras=("cam0", "cam1"), fps=29.97, mocap=None, master="cam0",
               settings={"mic": {"channel_names": ["boom", "lav"]}})


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "improvcap", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=180)


@pytest.fixture(scope="module")
def shoot(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("editorial")
    with open_rig(write_rig(root, "cut", RIG), root / "takes", "day") as control:
        for scene in ("hall", "hall"):
            record(control, scene, 2.5)
    done = run("editorial", "takes/day", "--to", "ed", "--json", cwd=root)
    assert done.returncode == 0, done.stderr
    return root


def t0_seconds(manifest: dict) -> Fraction:
    t = dt.datetime.fromisoformat(manifest["t0_local"])
    return Fraction(t.hour * 3600 + t.minute * 60 + t.second) + Fraction(t.microsecond, 10**6)


def ffprobe(path: Path, *args: str) -> dict:
    done = subprocess.run(["ffprobe", "-v", "error", *args, "-of", "json", str(path)], capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout)


def test_movs_carry_the_first_frames_timecode_and_keep_every_frame(shoot: Path):
    rate = TimecodeRate.of(29.97)
    report = json.loads((shoot / "ed" / "editorial.json").read_text())
    assert [t["timecode_rate"] for t in report["takes"]] == ["30000/1001 DF"] * 2
    for n in (1, 2):
        take = shoot / "takes" / "day" / f"hall_t00{n}"
        manifest = json.loads((take / "take.json").read_text())
        for cam in ("cam0", "cam1"):
            t_ns = read_table(take / f"{cam}.frames.csv")["t_ns"]
            mov = shoot / "ed" / "day" / take.name / f"{cam}.mov"
            streams = ffprobe(mov, "-show_streams")["streams"]
            tmcd = [s for s in streams if s.get("codec_tag_string") == "tmcd"]
            assert len(tmcd) == 1, streams
            expected = rate.timecode(round((t0_seconds(manifest) + Fraction(int(t_ns[0]), 10**9)) * rate.rate))
            assert ";" in expected and tmcd[0]["tags"]["timecode"] == expected
            assert tmcd[0]["tags"]["reel_name"] == cam
            assert Fraction(tmcd[0]["avg_frame_rate"]) == Fraction(30000, 1001)  # the timecode's rate, exact
            video = [s for s in streams if s["codec_type"] == "video"][0]
            assert video["codec_name"] == "h264" and int(video["nb_frames"]) == len(t_ns)
            packets = ffprobe(mov, "-select_streams", "v:0", "-show_entries", "packet=pts_time")["packets"]
            times = np.array([float(p["pts_time"]) for p in packets])
            assert len(times) == len(t_ns) and times[0] == 0.0
            # every frame at its time since the first, from frames.csv (the MOV's ticks: 1/30000 s)
            assert np.abs(times - (t_ns - t_ns[0]) / 1e9).max() < 1 / 60000 + 1e-6
            mkv = ffprobe(take / f"{cam}.mkv", "-count_packets", "-show_entries", "stream=nb_read_packets")
            assert int(mkv["streams"][0]["nb_read_packets"]) == len(t_ns)
            assert abs(float(video["duration"]) - (t_ns[-1] - t_ns[0]) / 1e9 - 1001 / 30000) < 0.002


def test_wavs_are_placed_at_their_first_sample_with_the_audio_unchanged(shoot: Path):
    take = shoot / "takes" / "day" / "hall_t001"
    manifest = json.loads((take / "take.json").read_text())
    copy, original = shoot / "ed" / "day" / "hall_t001" / "mic.wav", take / "mic.wav"
    info = wav_info(original)
    first = float(AudioTimeline.from_blocks(read_table(take / "mic.blocks.csv"), info["rate"]).t_ns_of(0))
    expected = round((t0_seconds(manifest) + Fraction(round(first), 10**9)) * info["rate"])
    reader = WavInfoReader(str(copy))
    assert reader.bext.time_reference == expected
    assert int(reader.ixml.raw_xml.findtext("SPEED/TIMESTAMP_SAMPLES_SINCE_MIDNIGHT_LO")) == expected
    assert (reader.ixml.scene, reader.ixml.take) == ("hall", "1")
    assert [t.name for t in reader.ixml.track_list] == ["boom", "lav"]
    assert WavInfoReader(str(original)).bext.time_reference < expected  # the take's says t0

    def audio(path: Path) -> str:
        i = wav_info(path)
        with open(path, "rb") as f:
            f.seek(i["data_offset"])
            return hashlib.sha256(f.read(i["frames"] * i["block_align"])).hexdigest()
    assert audio(copy) == audio(original) and copy.stat().st_size == original.stat().st_size


def starts(timeline) -> dict[str, list[tuple[float, float]]]:
    """Per track, each clip's (start, duration) on the timeline in seconds."""
    return {track.name: [(c.range_in_parent().start_time.to_seconds(), c.range_in_parent().duration.to_seconds())
                         for c in track.find_clips()] for track in timeline.tracks}


def first_and_end(take: Path, stream: str) -> tuple[int, int]:
    if stream == "mic":
        blocks = read_table(take / "mic.blocks.csv")
        tl = AudioTimeline.from_blocks(blocks, 48000)
        return round(float(tl.t_ns_of(0))), round(float(tl.t_ns_of(tl.total - 1))) + 10**9 // 48000
    t = read_table(take / f"{stream}.frames.csv")["t_ns"]
    return int(t[0]), int(t[-1]) + round(1e9 / 29.97)


def test_timelines_place_every_stream_by_its_t_ns(shoot: Path):
    takes = [shoot / "takes" / "day" / f"hall_t00{n}" for n in (1, 2)]
    tl = otio.adapters.read_from_file(str(shoot / "ed" / "day" / "hall_t001" / "hall_t001.otio"))
    placed = starts(tl)
    assert set(placed) == {"cam0", "cam1", "mic"}
    assert [t.kind for t in tl.tracks] == ["Video", "Video", "Audio"]
    spans = {s: first_and_end(takes[0], s) for s in placed}
    for s, [(start, duration)] in placed.items():
        assert abs((start - placed["cam0"][0][0]) - (spans[s][0] - spans["cam0"][0]) / 1e9) < 1e-6
        assert abs(duration - (spans[s][1] - spans[s][0]) / 1e9) < 1e-6
    assert 0 <= min(p[0][0] for p in placed.values()) < 1 / 29.97   # the timeline starts on the frame before
    clip = tl.tracks[0].find_clips()[0]
    assert clip.media_reference.target_url == "cam0.mov"

    session = otio.adapters.read_from_file(str(shoot / "ed" / "day" / "day.otio"))
    cams = starts(session)["cam0"]
    assert len(cams) == 2
    manifests = [json.loads((t / "take.json").read_text()) for t in takes]
    real = [t0_seconds(m) + Fraction(first_and_end(t, "cam0")[0], 10**9) for m, t in zip(manifests, takes)]
    assert abs((cams[1][0] - cams[0][0]) - float(real[1] - real[0])) < 1e-6
    assert [c.media_reference.target_url for c in session.tracks[0].find_clips()] == \
        ["hall_t001/cam0.mov", "hall_t002/cam0.mov"]


def test_fcp_xml_and_edls_read_back(shoot: Path):
    folder = shoot / "ed" / "day" / "hall_t001"
    report = json.loads((shoot / "ed" / "editorial.json").read_text())
    assert report["adapters"] == ["fcpx_xml", "cmx_3600"] and report["warnings"] == []
    assert report["sessions"][0]["files"] == ["day.otio", "day.fcpxml", "day.cam0.edl", "day.cam1.edl"]
    edl = otio.adapters.read_from_file(str(folder / "hall_t001.cam0.edl"), rate=30000 / 1001)
    [clip] = list(edl.find_clips())
    mov = ffprobe(folder / "cam0.mov", "-show_streams")["streams"]
    tc = [s for s in mov if s.get("codec_tag_string") == "tmcd"][0]["tags"]["timecode"]
    assert otio.opentime.to_timecode(clip.source_range.start_time, 30000 / 1001, drop_frame=True) == tc
    fcp = otio.adapters.read_from_file(str(folder / "hall_t001.fcpxml"))
    assert {c.name for c in fcp.find_clips()} >= {"hall_t001 cam0", "hall_t001 cam1"}


def test_a_folder_not_empty_is_refused(shoot: Path):
    done = run("editorial", "takes/day", "--to", "ed", cwd=shoot)
    assert done.returncode == 2 and "never overwrites" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr

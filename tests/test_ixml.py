"""iXML in every recorded WAV, read back by wavinfo; circling and noting a take rewrite it in place;
timecode at exact rational rates, drop-frame at 29.97."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
from wavinfo import WavInfoReader

from improvcap.take.timecode import TimecodeRate
from improvcap.take.wav import wav_info

from helpers import demo_rig, table, write_rig
from test_session import ctl, ok, quit_session, start_session


def small_rig(name: str = "small", mic_channels: tuple[str, ...] = ("boom", "lav ana")) -> str:
    """A 29.97 fps camera, a 2-channel microphone with its channels named and a 1-channel room microphone."""
    return demo_rig(name, fps=29.97, mocap=None, settings={"mic": {"channel_names": list(mic_channels)}},
                    tables=[table("audio", name="room", driver="demo", channels=1)])


RIG = small_rig()


def test_drop_frame_timecode_labels():
    df = TimecodeRate.of(29.97)
    assert (df.rate, df.drop, df.label()) == (Fraction(30000, 1001), True, "30000/1001 DF")
    assert df.timecode(1799) == "00:00:59;29" and df.timecode(1800) == "00:01:00;02"  # ;00 and ;01 dropped
    assert df.timecode(17982) == "00:10:00;00"      # every tenth minute keeps them
    assert df.frame_number("01:00:00;00") == 107892 and df.frames_in_day() == 2589408
    assert TimecodeRate.of(59.94).timecode(3600) == "00:01:00;04"
    ndf = TimecodeRate.of(25)
    assert (ndf.drop, ndf.timecode(90000)) == (False, "01:00:00:00")
    assert TimecodeRate.of(23.976).label() == "24000/1001 NDF"
    for rate in (df, ndf, TimecodeRate.of(59.94), TimecodeRate.of(24)):
        assert all(rate.frame_number(rate.timecode(f)) == f for f in range(0, rate.frames_in_day(), 4999))


def data_sha256(wav: Path) -> str:
    info = wav_info(wav)
    with open(wav, "rb") as f:
        f.seek(info["data_offset"])
        return hashlib.sha256(f.read(info["frames"] * info["block_align"])).hexdigest()


def ixml_of(wav: Path):
    ixml = WavInfoReader(str(wav)).ixml
    assert ixml is not None, f"{wav.name}: no iXML"
    return ixml


def verified(take: Path) -> bool:
    """`verify` passes the take (no performers and no slates only warn here)."""
    done = subprocess.run([sys.executable, "-m", "improvcap", "verify", str(take), "--json"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)["takes"][0]
    return result["verdict"] in ("OK", "WARN") and not any(r.startswith("FAIL") for r in result["reasons"])


@pytest.mark.slow
def test_wavs_carry_ixml_and_circling_rewrites_it_in_place(tmp_path: Path):
    write_rig(tmp_path, "small", RIG)
    proc = start_session(tmp_path, "--scene", "kitchen", session="day3")
    try:
        no_take = ctl(tmp_path, "circle", session="day3")
        assert no_take.returncode == 2 and "no take to circle" in no_take.stderr
        assert len(no_take.stderr.strip().splitlines()) == 1
        take = Path(ok(ctl(tmp_path, "start", session="day3"))["take"])
        ok(ctl(tmp_path, "note", "ana's best line", session="day3"))
        ok(ctl(tmp_path, "stop", session="day3"))

        manifest = json.loads((take / "take.json").read_text())
        assert manifest["timecode_rate"] == "30000/1001 DF" and ";" in manifest["timecode"]
        assert manifest["circled"] is False
        mic, room = take / "mic.wav", take / "room.wav"
        ixml = ixml_of(mic)
        assert (ixml.project, ixml.scene, ixml.take, ixml.tape) == ("day3", "kitchen", "1", "day3")
        assert [t.name for t in ixml.track_list] == ["boom", "lav ana"]
        assert [t.name for t in ixml_of(room).track_list] == ["room 1"]
        xml = ixml.raw_xml
        assert xml.findtext("CIRCLED") == "FALSE" and xml.findtext("NOTE") == "ana's best line"
        assert xml.findtext("SPEED/TIMECODE_RATE") == "30000/1001" and xml.findtext("SPEED/TIMECODE_FLAG") == "DF"
        assert xml.findtext("SPEED/FILE_SAMPLE_RATE") == "48000"
        bext = WavInfoReader(str(mic)).bext
        assert int(xml.findtext("SPEED/TIMESTAMP_SAMPLES_SINCE_MIDNIGHT_LO")) == bext.time_reference
        assert ixml.family_uid is None and len(xml.findtext("FILE_UID")) == 32
        assert xml.findtext("FILE_UID") != ixml_of(room).raw_xml.findtext("FILE_UID")
        assert verified(take)

        audio_before, size_before = data_sha256(mic), mic.stat().st_size
        circled = ok(ctl(tmp_path, "circle", session="day3"))
        assert circled["after_stop"] is True and Path(circled["take"]) == take
        ok(ctl(tmp_path, "note", "keep for the trailer", session="day3"))
        for wav in (mic, room):
            xml = ixml_of(wav).raw_xml
            assert xml.findtext("CIRCLED") == "TRUE"
            assert xml.findtext("NOTE") == "ana's best line | keep for the trailer"
        assert data_sha256(mic) == audio_before and mic.stat().st_size == size_before  # the audio untouched
        manifest = json.loads((take / "take.json").read_text())
        assert manifest["circled"] is True
        assert manifest["files"]["mic.wav"]["sha256"] == hashlib.sha256(mic.read_bytes()).hexdigest()
        assert verified(take)   # the hashes follow the rewrite

        second = Path(ok(ctl(tmp_path, "start", session="day3"))["take"])
        assert ok(ctl(tmp_path, "circle", session="day3"))["after_stop"] is False  # the take recording
        ok(ctl(tmp_path, "stop", session="day3"))
        assert ixml_of(second / "mic.wav").raw_xml.findtext("CIRCLED") == "TRUE"
        assert json.loads((second / "take.json").read_text())["circled"] is True
        assert ixml_of(mic).raw_xml.findtext("CIRCLED") == "TRUE"  # the first take stays circled
    finally:
        quit_session(tmp_path, proc, session="day3")


def test_channel_names_must_match_the_channels(tmp_path: Path):
    write_rig(tmp_path, "bad", small_rig("bad", mic_channels=("boom",)))
    done = subprocess.run([sys.executable, "-m", "improvcap", "rig", "check", "bad", "--seconds", "0.1"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "audio[0].channel_names: 1 names for 2 channels" in done.stderr

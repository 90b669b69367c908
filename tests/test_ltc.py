"""LTC through libltc: encoded and decoded exactly (drop-frame too); a demo microphone carrying the
studio's master timecode on a channel jam-syncs the take; verify reports its continuity."""
from __future__ import annotations

import csv
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from improvcap.ltc import LtcDecoder, LtcEncoder
from improvcap.take.timecode import TimecodeRate
from improvcap.writers.ltc_table import ltc_summary

from helpers import demo_rig, write_rig
from recording import open_rig, record


def ltc_rig(name: str = "ltc", timecode: str = "ltc:mic:2") -> str:
    """A 29.97 fps camera and a microphone whose second channel carries LTC at 29.97 fps, an hour and a quarter
    second ahead of this PC's clock; the takes' timecode from `timecode`."""
    return demo_rig(name, fps=29.97, mocap=None, master="cam0", rig_keys={"timecode": timecode},
                    settings={"mic": {"ltc_channel": 2, "ltc_fps": 29.97, "ltc_offset_s": 3600.25}})


RIG = ltc_rig()


@pytest.mark.parametrize("fps,start", [(29.97, "10:00:59;20"), (25, "23:59:59:20"), (30, "01:09:59:25")])
def test_libltc_round_trip(fps: float, start: str):
    rate = TimecodeRate.of(fps)
    first = rate.frame_number(start)
    encoder = LtcEncoder(48000, rate, first, user_bits=0xCAFE)
    pieces = [np.zeros(500, np.float32)] + [encoder.next_frame() for _ in range(60)]
    signal = np.concatenate(pieces)
    decoder = LtcDecoder(48000, rate)
    frames = decoder.write(signal[:30000], 0) + decoder.write(signal[30000:], 30000)
    decoder.close()
    encoder.close()
    assert len(frames) >= 57  # the decoder locks on within the first frames
    starts = np.cumsum([len(p) for p in pieces])[:-1]  # where each encoded frame began
    day = rate.frames_in_day()
    for i, f in enumerate(frames):
        k = (rate.frame_number(f.timecode) - first) % day
        # libltc's start of a frame right after silence is approximate; then it follows the signal
        assert abs(f.sample - starts[k]) <= (20 if i == 0 else 2), (f, starts[k])
        assert f.user_bits == 0xCAFE and f.drop == rate.drop
    numbers = [(rate.frame_number(f.timecode) - first) % day for f in frames]
    assert numbers == list(range(numbers[0], numbers[0] + len(frames))) and numbers[-1] >= 58


def test_ltc_summary_counts_jumps():
    rate = TimecodeRate.of(25)
    labels = [rate.timecode(1000 + i) for i in range(10)] + [rate.timecode(2000 + i) for i in range(10)]
    t_ns = [i * 40_000_000 for i in range(20)]
    s = ltc_summary(rate, t_ns, labels)
    assert s["frames"] == 20 and s["jumps"] == 1 and s["first_jumps"] == [rate.timecode(2000)]


@pytest.mark.slow
def test_a_take_jam_synced_to_ltc(tmp_path: Path):
    with open_rig(write_rig(tmp_path, "ltc", RIG), tmp_path / "takes", "d") as control:
        take = record(control, "scene", 3.0)
    m = json.loads((take / "take.json").read_text())
    rate = TimecodeRate.of(29.97)
    assert m["timecode_source"] == "ltc:mic:2" and m["faults"] == []
    local = dt.datetime.fromisoformat(m["t0_local"])
    clock_s = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6
    assert abs(m["timecode_t0_s"] - (clock_s + 3600.25) % 86400) < 0.002  # the master's offset, found
    assert m["timecode"] == rate.timecode(rate.frame_at(m["timecode_t0_s"])) and ";" in m["timecode"]
    with open(take / "mic.ltc.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    numbers = [rate.frame_number(r["timecode"]) for r in rows]
    assert len(rows) >= 3 * 29.97 - 3 and all(b - a == 1 for a, b in zip(numbers, numbers[1:]))
    starts = np.array([int(r["t_ns"]) for r in rows])
    # every frame one frame after the last (the first one's start after the lead-in is libltc's estimate)
    assert np.abs(np.diff(starts)[1:] - 1e9 / 29.97).max() < 0.1e6 and abs(starts[1] - starts[0] - 1e9 / 29.97) < 1e6
    # a frame's label is the master's time at its start: t0's LTC time + its t_ns
    for r in rows[::10]:
        assert abs(rate.frame_number(r["timecode"]) / float(rate.rate)
                   - (m["timecode_t0_s"] + int(r["t_ns"]) / 1e9)) < 0.0005
    verified = subprocess.run([sys.executable, "-m", "improvcap", "verify", str(take), "--json"],
                              capture_output=True, text=True, timeout=120)
    result = json.loads(verified.stdout)["takes"][0]
    assert result["streams"]["mic"]["ltc"]["frames"] == len(rows) and result["streams"]["mic"]["ltc"]["jumps"] == 0
    assert not any(r.startswith("FAIL") for r in result["reasons"])

    # repair decodes it again from the audio (a take that crashed before its stop has no ltc.csv yet)
    (take / "mic.ltc.csv").unlink()
    repaired = subprocess.run([sys.executable, "-m", "improvcap", "repair", "--force", str(take)],
                              capture_output=True, text=True, timeout=120)
    assert repaired.returncode == 0, repaired.stderr
    again = json.loads((take / "take.json").read_text())
    assert again["status"] == "repaired" and again["ltc"]["frames"] == len(rows)
    assert abs(again["timecode_t0_s"] - m["timecode_t0_s"]) < 1e-4
    with open(take / "mic.ltc.csv", newline="") as fh:
        assert [r["timecode"] for r in csv.DictReader(fh)] == [r["timecode"] for r in rows]

    # editorial places the take on the studio's timecode
    ed = subprocess.run([sys.executable, "-m", "improvcap", "editorial", str(take), "--to", "ed", "--json"],
                        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert ed.returncode == 0, ed.stderr
    probe = json.loads(subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json",
                                       str(tmp_path / "ed" / "d" / take.name / "cam0.mov")],
                                      capture_output=True, text=True, check=True).stdout)
    tmcd = [s for s in probe["streams"] if s.get("codec_tag_string") == "tmcd"][0]["tags"]["timecode"]
    first = int(next(csv.DictReader(open(take / "cam0.frames.csv")))["t_ns"])
    assert tmcd == rate.timecode(round((m["timecode_t0_s"] + first / 1e9) * float(rate.rate)))


def test_a_timecode_source_that_is_not_an_audio_channel_is_refused(tmp_path: Path):
    for bad, words in (("ltc:nope:1", "'nope' is not an audio stream"), ("ltc:mic:3", "channels 1…2, not 3"),
                       ("gps", 'expected "clock" or "ltc:')):
        write_rig(tmp_path, "bad", ltc_rig("bad", timecode=bad))
        done = subprocess.run([sys.executable, "-m", "improvcap", "rig", "check", "bad", "--seconds", "0.1"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and "rig.timecode" in done.stderr and words in done.stderr, done.stderr

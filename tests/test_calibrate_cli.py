"""`improvcap calibrate audio` and `calibrate show` from the command line, on real PortAudio input."""
from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

RIG = """
[rig]
name = "mics"
[[audio]]
name = "lav"
driver = "portaudio"
device = "pulse"
channels = 1
samplerate = 48000
"""


def cli(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "improvcap", *args], cwd=workdir, capture_output=True,
                          text=True, timeout=120)


def test_calibrate_audio_measures_the_sine_source(pulse_server, tmp_path: Path):
    (tmp_path / "rigs").mkdir()
    (tmp_path / "rigs" / "mics.toml").write_text(RIG)
    result = cli(tmp_path, "calibrate", "audio", "mics", "--seconds", "2", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    (channel,) = report["streams"]["lav"]["channels"]
    assert channel["verdict"] == "good"
    assert channel["peak_dbfs"] == pytest.approx(-6.02, abs=0.5)   # module-sine-source: amplitude 0.5
    assert channel["rms_dbfs"] == pytest.approx(-9.03, abs=0.5)
    stored = tomllib.loads(Path(report["file"]).read_text())
    assert stored["streams"]["lav"]["channels"][0]["verdict"] == "good"
    assert Path(report["file"]).parent == tmp_path / "calibration" / "mics"

    show = cli(tmp_path, "calibrate", "show", "mics", "--json")
    assert show.returncode == 0, show.stderr
    kinds = json.loads(show.stdout)["kinds"]
    assert kinds["audio"]["file"] == report["file"] and kinds["sync"] is None
    assert "lav: ch1 good" in kinds["audio"]["summary"][0]


def test_calibrate_audio_bad_input(tmp_path: Path):
    (tmp_path / "rigs").mkdir()
    (tmp_path / "rigs" / "cams.toml").write_text('[rig]\nname = "cams"\n[[camera]]\nname = "c"\ndriver = "demo"\n')
    none = cli(tmp_path, "calibrate", "audio", "cams")
    assert none.returncode == 2 and "no audio streams" in none.stderr
    demo = cli(tmp_path, "calibrate", "audio", "demo", "--loopback", "pulse")
    assert demo.returncode == 2 and "needs a portaudio audio stream" in demo.stderr
    assert not (tmp_path / "calibration").exists()

"""An audio source that PulseAudio silently replaces mid-take: the recording goes on (PulseAudio moves it to
the default source, here a silent monitor) and the take says what happened. Real PulseAudio, real
PortAudio through ALSA's pulse plugin."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import demo_rig, samples_on_disk, wait_for
from pulse_audio import SOURCE

# the microphone through PortAudio and PulseAudio's ALSA plugin, a demo suit beside it
RIG = demo_rig("booth", cameras=(), audio="booth", channels=1, mocap_channels=4, rate=100,
               settings={"booth": {"driver": "portaudio", "device": "pulse"}})


@pytest.mark.slow
def test_a_source_replaced_by_silence_is_a_fault(pulse_server, tmp_path: Path) -> None:
    pactl = shutil.which("pactl")
    if pactl is None:
        pytest.skip("needs pactl (Debian: pulseaudio-utils)")

    def pa(*args: str) -> str:
        return subprocess.run([pactl, "-s", pulse_server.server, *args], check=True, capture_output=True,
                              text=True).stdout.strip()

    module = pa("load-module", "module-sine-source", "source_name=booth_mic", "frequency=1000", "rate=48000")
    (tmp_path / "booth.toml").write_text(RIG)
    try:
        recording = subprocess.Popen([sys.executable, "-m", "improvcap", "record", "booth.toml", "--out", "out",
                                      "--duration", "12", "--json"], cwd=tmp_path, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env={**os.environ, "PULSE_SOURCE": "booth_mic"})
        [blocks] = wait_for(lambda: list((tmp_path / "out").glob("*/scene_t001/booth.blocks.csv")), "the take",
                            recording)
        wait_for(lambda: samples_on_disk(blocks) >= 4 * 48000, "4 s of the source on disk", recording)
        pa("set-default-source", pulse_server.monitor)  # where PulseAudio moves the orphaned recording
        pa("unload-module", module)
        module = ""
        out, err = recording.communicate(timeout=60)
    finally:
        if module:
            pa("unload-module", module)
        pa("set-default-source", SOURCE)
    assert recording.returncode == 1, err
    take = Path(json.loads(out)["take"])
    manifest = json.loads((take / "take.json").read_text())
    # PulseAudio takes a moment to move the recording (no samples meanwhile), then hands over the silence
    silence = [f for f in manifest["faults"] if f["stream"] == "booth" and f["detail"].startswith(
        "digital silence for 2 s after a signal: the source was replaced")]
    assert len(silence) == 1 and 5.0 < silence[0]["t_ns"] / 1e9 < 11.0, manifest["faults"]
    assert manifest["streams"]["booth"]["count"] > 8 * 48000  # it recorded on: nothing is lost
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("error: ")

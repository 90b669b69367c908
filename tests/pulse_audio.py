"""A private PulseAudio daemon, so that PortAudio has real input devices on a machine with no sound card.

The daemon runs a 440 Hz `module-sine-source` (`studio_mic`, the default source) and a null sink
(`studio_out`, whose `studio_out.monitor` source records what is played into it). PortAudio then lists the
ALSA devices `pulse` and `default`, routed to it through libasound2-plugins.

Use it with `from pulse_audio import pulse_server` in a test module, or session-wide with
`pytest_plugins = ["pulse_audio"]` in tests/conftest.py.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

SOURCE, SINK = "studio_mic", "studio_out"
ENV_KEYS = ("PULSE_SERVER", "PULSE_RUNTIME_PATH", "XDG_RUNTIME_DIR", "PULSE_COOKIE")


@dataclass(frozen=True)
class PulseServer:
    server: str            # what PULSE_SERVER holds: "unix:<runtime>/native"
    runtime_dir: Path
    log: Path
    source: str = SOURCE
    sink: str = SINK

    @property
    def monitor(self) -> str:
        return f"{self.sink}.monitor"


def refresh_portaudio() -> None:
    """PortAudio enumerates devices once, at initialisation (sounddevice's import); make it look again."""
    import sounddevice as sd

    sd._terminate()
    sd._initialize()


def _wait_ready(proc: subprocess.Popen[bytes], server: str, socket: Path, log: Path) -> None:
    pactl = shutil.which("pactl")
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"pulseaudio exited with status {proc.returncode}:\n{log.read_text(errors='replace')[-2000:]}")
        if socket.exists():
            if pactl is None:
                time.sleep(0.5)  # modules load in script order; the socket comes first
                return
            r = subprocess.run([pactl, "-s", server, "list", "short", "sources"], capture_output=True, text=True)
            if r.returncode == 0 and SOURCE in r.stdout:
                return
        time.sleep(0.05)
    pytest.fail(f"pulseaudio did not come up in 15 s:\n{log.read_text(errors='replace')[-2000:]}")


@pytest.fixture(scope="session")
def pulse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PulseServer]:
    exe = shutil.which("pulseaudio")
    if exe is None:
        pytest.skip("pulseaudio is not installed (Debian: apt-get install pulseaudio)")
    root = tmp_path_factory.mktemp("pulse")
    runtime = root / "run"
    runtime.mkdir(mode=0o700)
    script = root / "default.pa"
    script.write_text(
        "load-module module-native-protocol-unix auth-anonymous=1\n"
        f"load-module module-null-sink sink_name={SINK}\n"
        f"load-module module-sine-source source_name={SOURCE} frequency=440 rate=48000\n"
        f"set-default-source {SOURCE}\n"
        f"set-default-sink {SINK}\n")
    server = f"unix:{runtime / 'native'}"
    env = {"PULSE_SERVER": server, "PULSE_RUNTIME_PATH": str(runtime), "XDG_RUNTIME_DIR": str(root),
           "PULSE_COOKIE": str(root / "cookie")}
    log = root / "pulseaudio.log"
    # HOME too, for the daemon only: it keeps its state and cookie out of the real home.
    daemon_env = {**os.environ, **env, "HOME": str(root), "XDG_CONFIG_HOME": str(root / "config")}
    with open(log, "wb") as log_fh:
        proc = subprocess.Popen(
            [exe, "--daemonize=no", "--exit-idle-time=-1", "-n", "-F", str(script), "--use-pid-file=no",
             "--log-target=stderr"],
            stdout=log_fh, stderr=subprocess.STDOUT, env=daemon_env)
    saved = {k: os.environ.get(k) for k in ENV_KEYS}
    try:
        _wait_ready(proc, server, runtime / "native", log)
        # Every later PortAudio initialisation in this process (and in child processes) finds this daemon.
        os.environ.update(env)
        refresh_portaudio()
        yield PulseServer(server=server, runtime_dir=runtime, log=log)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        try:
            refresh_portaudio()  # forget the daemon's devices
        except OSError:
            pass

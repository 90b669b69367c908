"""Shared fixtures: the CLI as a user runs it, and a guard against leaked threads."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# `pulse_server`: a PulseAudio daemon with a sine source, the tests' stand-in microphone
# `bench`: serial device emulators on a pty read by the real serial driver (serial_bench.py)
pytest_plugins = ["pulse_audio", "serial_bench"]


@pytest.fixture(autouse=True)
def no_leaked_threads():
    """A test must not leave capture threads behind (they would hold devices and files open)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5.0
    while True:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()
                  and (t.name.startswith(("pump-", "writer-", "improvcap")) or not t.daemon)]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not leaked, f"threads left running: {[t.name for t in leaked]}"


def run_cli(*args: str, cwd: Path, timeout: float = 120, env: dict[str, str] | None = None,
            ) -> subprocess.CompletedProcess[str]:
    """Run `improvcap ARGS` in a fresh process, as a technician would."""
    return subprocess.run([sys.executable, "-m", "improvcap", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture
def cli(tmp_path: Path):
    """`cli(*args)` runs improvcap in an empty working folder (tmp_path)."""
    def run(*args: str, **kw) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, cwd=kw.pop("cwd", tmp_path), **kw)
    return run

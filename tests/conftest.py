"""Shared fixtures: the CLI as a user runs it, a guard against leaked threads, and no silent skip in CI.

In CI (the environment variable CI=true) every prerequisite is installed by `.ci/run`, so a test that
skips for want of one (root, namespaces, tmpfs, Chromium, strace, import-linter, ...) fails the run
instead, naming what is missing; on a developer's machine it still skips with its reason.
"""
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
# `studio_day`: a small shoot day recorded once per run, read-only (studio_day.py)
pytest_plugins = ["pulse_audio", "serial_bench", "studio_day"]

IN_CI = os.environ.get("CI", "").lower() == "true"


def _skip_reason(longrepr: object) -> str:
    # a skip's longrepr is (file, line, "Skipped: reason")
    text = str(longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else longrepr)
    return text.removeprefix("Skipped: ")


def _fail_skip_in_ci(report: pytest.TestReport | pytest.CollectReport) -> None:
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where .ci/run installs every prerequisite: {_skip_reason(report.longrepr)}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    outcome = yield
    _fail_skip_in_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    """A module skipped as a whole (importorskip at its top) fails in CI too."""
    outcome = yield
    _fail_skip_in_ci(outcome.get_result())


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

"""A small shoot day, recorded once per test run and handed to every test that only reads takes.

`studio_day` (session scope) is a working folder as a studio keeps one: `rigs/day.toml` and
`rigs/drifty.toml`, and the session `out/day/` with its performers file, the performers' signed forms and
these takes, each about 2.5 seconds of two demo cameras (cam0 with truth), a 2-channel microphone and an
8-channel suit (an emulator on a pseudo-terminal read through the real serial driver):

| take         | how                                                                              |
|--------------|----------------------------------------------------------------------------------|
| good_t001    | slated, performer ana                                                            |
| good2_t001   | slated, performers ana and ben                                                   |
| noperf_t001  | slated, no performers                                                            |
| quiet_t001   | not slated, performer ana                                                        |
| drift_t001   | rig drifty: the microphone's clock 800 ppm fast, the suit stamped 10 ms late and |
|              | losing 2 % of its rows, cam1 losing 3 % of its frames; slated, ana               |
| killed_t001  | `improvcap record` killed with SIGKILL about 3.5 s in, left as the crash left it |

and, in the session `out/day-lsl/`, `lsl_t001`: 8 s of the shipped demo-lsl rig (a camera, a microphone and
a wristband publishing through liblsl from a process of its own, its clock drifting), slated (none where
libfaketime, which drifts that clock, is missing).

The takes are recorded in this process through the recorder and take control, with the devices kept open
from take to take (as `improvcap session` does); the killed take by the command line (the only way to kill
a recorder), side by side with the first of them; the LSL take in a thread, side by side with them all. Under pytest-xdist the first worker records the day and the others wait for it (a lock beside
their own temporary folders). The day is read-only: a test that changes a take works on `day.copy(...)`,
and a run in which the shared day changed fails at its end, naming what changed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import demo_rig, rows_on_disk, wait_for
from recording import open_rig, record

from improvcap.rig import load_rig

SESSION = "day"
LSL_SESSION = "day-lsl"
TAKE_S = 2.5
LSL_TAKE_S = 8.0  # the wristband's drift is fitted over this much
KILLED_AFTER_FRAMES = 105  # cam0's rows on disk when the recorder is killed: 3.5 s at 30 fps
FORMS = {"ana": b"%PDF-1.4 signed consent form of Ana Example\n", "ben": b"%PDF-1.4 signed consent form of Ben\n"}
PERFORMERS = """
[performers.ana]
name = "Ana Example"
consent_form = "forms/ana.pdf"
consent_sha256 = "{ana}"
signed = "2025-01-10"
allowed = ["llm-training"]
denied = ["emotion-recognition"]

[performers.ben]
name = "Ben Example"
consent_form = "forms/ben.pdf"
consent_sha256 = "{ben}"
signed = "2025-01-11"
allowed = ["llm-training", "voice-synthesis"]
"""
TRUTH = {"truth": True}
DAY_RIG = demo_rig("day", cameras=("cam0", "cam1"), master="cam0", settings={"cam0": TRUTH, "mic": TRUTH, "suit": TRUTH})
DRIFTY_RIG = demo_rig("drifty", cameras=("cam0", "cam1"), master="cam0",
                      settings={"cam1": {"drop_rate": 0.03}, "mic": {"drift_ppm": 800.0},
                                "suit": {"offset_ms": 10.0, "drop_rate": 0.02}})


@dataclass(frozen=True)
class StudioDay:
    root: Path                 # the working folder: rigs/ and out/
    takes: dict[str, Path]     # good, good2, noperf, quiet, drift, killed, and lsl where it could be recorded

    def __getitem__(self, key: str) -> Path:
        return self.takes[key]

    @property
    def session(self) -> Path:
        return self.root / "out" / SESSION

    def copy(self, key: str, dest: Path) -> Path:
        """A copy of take `key` at `dest` (a take folder of its own), for a test that changes it."""
        return Path(shutil.copytree(self.takes[key], dest, symlinks=True))


class _KilledTake:
    """`improvcap record day` in a process of its own, killed with SIGKILL once cam0 has KILLED_AFTER_FRAMES
    rows on disk. It records while this process records the other takes: `started()` returns once it has
    recorded a second (its writes to the session folder are done by then), `killed()` once it is killed."""

    def __init__(self, root: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "improvcap", "record", "day", "--out", "out", "--session",
                                      SESSION, "--scene", "killed", "--performer", "ana"], cwd=root,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.take = root / "out" / SESSION / "killed_t001"
        self._killer = threading.Thread(target=self._kill_at, args=(KILLED_AFTER_FRAMES,), name="studio-day-kill")
        self._error: str | None = None

    def _wait(self, rows: int) -> None:
        wait_for(lambda: rows_on_disk(self.take / "cam0.frames.csv") >= rows, f"{rows} frames of the take to kill",
                 self.proc, timeout=120)

    def _kill_at(self, rows: int) -> None:
        try:
            self._wait(rows)
        except AssertionError as e:
            self._error = str(e)
        finally:
            self.proc.kill()  # SIGKILL

    def started(self) -> None:
        try:
            self._wait(30)
        except BaseException:
            self.proc.kill()
            raise
        self._killer.start()

    def killed(self) -> Path:
        self._killer.join()
        self.proc.communicate(timeout=30)
        assert self._error is None, self._error
        assert json.loads((self.take / "take.json").read_text())["status"] == "recording"
        return self.take


def record_day(root: Path) -> dict[str, Path]:
    (root / "rigs").mkdir(parents=True)
    (root / "rigs" / "day.toml").write_text(DAY_RIG)
    (root / "rigs" / "drifty.toml").write_text(DRIFTY_RIG)
    session = root / "out" / SESSION
    (session / "forms").mkdir(parents=True)
    for pid, form in FORMS.items():
        (session / "forms" / f"{pid}.pdf").write_bytes(form)
    (session / "performers.toml").write_text(
        PERFORMERS.format(**{pid: hashlib.sha256(form).hexdigest() for pid, form in FORMS.items()}))
    out = root / "out"
    lsl = _LslTake(out)
    killed = _KilledTake(root)
    try:
        with open_rig(root / "rigs" / "day.toml", out, SESSION) as control:
            killed.started()  # one recorder at a time opens the session's takes; from here on they record side by side
            takes = {"good": record(control, "good", TAKE_S, slate=True, performers=["ana"]),
                     "good2": record(control, "good2", TAKE_S, slate=True, performers=["ana", "ben"]),
                     "noperf": record(control, "noperf", TAKE_S, slate=True),
                     "quiet": record(control, "quiet", TAKE_S, performers=["ana"])}
        with open_rig(root / "rigs" / "drifty.toml", out, SESSION) as control:
            takes["drift"] = record(control, "drift", TAKE_S, slate=True, performers=["ana"])
    finally:
        if killed.proc.poll() is None and not killed._killer.is_alive():
            killed.proc.kill()
        taken = lsl.taken()
    takes["killed"] = killed.killed()
    if taken is not None:
        takes["lsl"] = taken
    return takes


class _LslTake:
    """A slated take of the shipped demo-lsl rig (a camera, a microphone and a wristband publishing through
    liblsl from a process of its own, its clock 100 ppm fast under libfaketime) in the session `LSL_SESSION`,
    recorded in a thread of this process beside the other takes. Without libfaketime there is none."""

    def __init__(self, out: Path) -> None:
        from improvcap.devices.lsl_demo import faketime_library

        self.out, self.take, self.error = out, None, None
        self.thread = threading.Thread(target=self._record, name="studio-day-lsl")
        if faketime_library() is not None:
            self.thread.start()

    def _record(self) -> None:
        try:
            with open_rig(load_rig("demo-lsl").path, self.out, LSL_SESSION) as control:
                self.take = record(control, "lsl", LSL_TAKE_S, slate=True)
        except BaseException as e:  # reported by taken()
            self.error = f"{type(e).__name__}: {e}"

    def taken(self) -> Path | None:
        if self.thread.is_alive() or self.thread.ident is not None:
            self.thread.join()
        assert self.error is None, f"the LSL take: {self.error}"
        return self.take


def _snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            st = os.lstat(os.path.join(folder, name))
            out[os.path.relpath(os.path.join(folder, name), root)] = (st.st_size, st.st_mtime_ns, st.st_mode)
    return out


@pytest.fixture(scope="session")
def studio_day(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StudioDay]:
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # one folder for every worker
    root = shared / "studio-day"
    index = shared / "studio-day.json"
    with open(shared / "studio-day.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not index.exists():
            if root.exists():  # a worker that failed halfway: start again
                shutil.rmtree(root)
            takes = record_day(root)
            index.write_text(json.dumps({k: str(v) for k, v in takes.items()}))
        takes = {k: Path(v) for k, v in json.loads(index.read_text()).items()}
    before = _snapshot(root)
    yield StudioDay(root, takes)
    after = _snapshot(root)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"a test changed the shared studio day (use day.copy): {changed[:10]}"

"""`improvcap session` and `improvcap ctl`: takes driven over the control socket and from the keyboard."""
from __future__ import annotations

import csv
import json
import re
import os
import pty
import select
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from improvcap.control import request

from helpers import demo_rig, write_rig

pytestmark = pytest.mark.slow

RIG = demo_rig("small", mocap_channels=4)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    write_rig(tmp_path, "small", RIG)
    return tmp_path


def start_session(workdir: Path, *args: str, session: str = "day") -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "improvcap", "session", "small", "--out", "out",
                             "--session", session, *args], cwd=workdir, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_ready(workdir / "out" / session, proc)
    return proc


def wait_ready(session_dir: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "session never became ready"
        if (session_dir / "control.sock").exists():
            try:
                if request(session_dir, {"cmd": "status"}, timeout=5)["state"] == "idle":
                    return  # devices open and streaming
            except Exception:
                pass
        time.sleep(0.1)


def wait_status(session_dir: Path, done, what: str, timeout: float = 60.0,
                proc: subprocess.Popen[str] | None = None) -> dict:
    """The recorder's status (over its socket, as `ctl status` asks) once `done(status)`; `proc`: the
    recorder, whose own words are shown if it ends meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the recorder ended before {what}: {proc.communicate()[1][-2000:]}")
        if done(status := request(session_dir, {"cmd": "status"}, timeout=5)):
            return status
        assert time.monotonic() < deadline, f"no {what} in {timeout:g} s: {status}"
        time.sleep(0.1)


def ctl(workdir: Path, *args: str, session: str = "day", as_json: bool = True) -> subprocess.CompletedProcess[str]:
    """`improvcap ctl ...` from another process, as a second terminal or a script would."""
    return subprocess.run([sys.executable, "-m", "improvcap", "ctl", *args, "--out", "out", "--session", session,
                           *(["--json"] if as_json else [])], cwd=workdir, capture_output=True, text=True, timeout=60)


def ok(result: subprocess.CompletedProcess[str]) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def events(take: Path) -> list[dict[str, str]]:
    with open(take / "events.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def quit_session(workdir: Path, proc: subprocess.Popen[str], session: str = "day") -> None:
    ok(ctl(workdir, "quit", session=session))
    proc.communicate(timeout=60)
    assert proc.returncode == 0


def test_ctl_replies_read_as_words_without_json(workdir: Path):
    proc = start_session(workdir, "--scene", "words", session="words")
    try:
        def said(*args: str) -> str:
            result = ctl(workdir, *args, session="words", as_json=False)
            assert result.returncode == 0, result.stderr
            assert not result.stdout.lstrip().startswith("{"), result.stdout
            return result.stdout.strip()
        take = workdir / "out" / "words" / "words_t001"
        assert said("start") == f"recording {take}  (scene words, take 1)"
        time.sleep(0.5)
        assert re.fullmatch(r"slate at \d+\.\d{3} s", said("slate"))
        assert re.fullmatch(rf"mark at \d+\.\d{{3}} s in {re.escape(str(take))}", said("mark", "laugh"))
        assert re.fullmatch(rf"stopped {re.escape(str(take))}  \(\d+\.\d s, complete\)", said("stop"))
        assert re.fullmatch(rf"note at \d+\.\d{{3}} s after the stop of {re.escape(str(take))}", said("note", "ok"))
        assert said("slate") == "slate (no take recording)"
        assert said("scene") == "next scene words2"
    finally:
        assert ctl(workdir, "quit", session="words", as_json=False).stdout.strip() == "the recorder is quitting"
        proc.communicate(timeout=60)


def test_session_over_the_control_socket(workdir: Path):
    proc = start_session(workdir, "--scene", "alpha1")
    try:
        # devices stay open and streaming between takes
        wait_status(workdir / "out" / "day", lambda st: all(s["rate"] > 0 for s in st["streams"]), "rates")
        status = ok(ctl(workdir, "status"))
        assert status["state"] == "idle" and status["scene"] == "alpha1"
        assert {s["name"] for s in status["streams"]} == {"cam0", "mic", "suit"}

        t1 = ok(ctl(workdir, "start"))
        assert Path(t1["take"]).name == "alpha1_t001"
        assert all(ms is not None and ms < 1000 for ms in t1["first_record_ms"].values())
        wait_status(workdir / "out" / "day", lambda st: next(s for s in st["streams"] if s["name"] == "cam0")["count"]
                    > 30, "second of cam0")
        ok(ctl(workdir, "slate"))
        ok(ctl(workdir, "mark", "laugh"))
        busy = ctl(workdir, "start")
        assert busy.returncode == 2 and "already recording" in busy.stderr
        time.sleep(0.5)
        first = ok(ctl(workdir, "stop"))
        assert first["status"] == "complete" and first["streams"]["cam0"]["count"] > 30
        ok(ctl(workdir, "note", "lav slipped"))   # a note on the take that just stopped

        t2 = ok(ctl(workdir, "start"))
        assert Path(t2["take"]).name == "alpha1_t002"
        time.sleep(0.5)
        ok(ctl(workdir, "mark", "second"))
        ok(ctl(workdir, "stop"))
        assert ok(ctl(workdir, "scene"))["scene"] == "alpha2"
        t3 = ok(ctl(workdir, "start"))
        assert Path(t3["take"]).name == "alpha2_t001"
        time.sleep(0.5)
        ok(ctl(workdir, "stop"))
        t4 = ok(ctl(workdir, "start", "--scene", "beta"))
        assert Path(t4["take"]).name == "beta_t001"
        time.sleep(0.3)
        ok(ctl(workdir, "stop"))
    finally:
        quit_session(workdir, proc)

    day = workdir / "out" / "day"
    assert not (day / "control.sock").exists()
    one, two = day / "alpha1_t001", day / "alpha1_t002"
    kinds = [(e["kind"], e["detail"]) for e in events(one)]
    assert ("slate", "requested") in kinds and ("mark", "laugh") in kinds and ("note", "lav slipped") in kinds
    assert [(e["kind"], e["detail"]) for e in events(two) if e["kind"] in ("mark", "slate", "note")] == [("mark", "second")]
    manifest = json.loads((one / "take.json").read_text())
    assert manifest["status"] == "complete"
    # the late note kept the manifest's hash of events.csv true
    import hashlib
    assert manifest["files"]["events.csv"]["sha256"] == hashlib.sha256((one / "events.csv").read_bytes()).hexdigest()

    # numbering resumes after a restart, and a finished take is never touched
    before = (one / "take.json").read_bytes()
    proc = start_session(workdir, "--scene", "alpha1")
    try:
        assert Path(ok(ctl(workdir, "start"))["take"]).name == "alpha1_t003"
        time.sleep(0.3)
        ok(ctl(workdir, "stop"))
    finally:
        quit_session(workdir, proc)
    assert (one / "take.json").read_bytes() == before


def test_socket_is_private_and_robust(workdir: Path):
    proc = start_session(workdir)
    session_dir = workdir / "out" / "day"
    sock_path = session_dir / "control.sock"
    try:
        assert stat.S_IMODE(sock_path.stat().st_mode) == 0o600
        assert stat.S_ISSOCK(sock_path.stat().st_mode)
        # two clients connected at once, each getting its own replies
        a, b = socket.socket(socket.AF_UNIX), socket.socket(socket.AF_UNIX)
        a.connect(str(sock_path))
        b.connect(str(sock_path))
        fa, fb = a.makefile("rwb"), b.makefile("rwb")

        def ask(f, raw: bytes) -> dict:
            f.write(raw + b"\n")
            f.flush()
            return json.loads(f.readline())

        for raw, error in [(b"not json", "malformed request"), (b"[1, 2]", "malformed request"),
                           (b'{"cmd": 3}', "malformed request"), (b'{"cmd": "explode"}', "unknown command"),
                           (b'{"cmd": "start", "scene": "../x"}', "no path separators"),
                           (b'{"cmd": "start", "performers": "ana"}', "list of performer IDs"),
                           (b'{"cmd": "note"}', "needs text"), (b'{"cmd": "stop"}', "no take is recording")]:
            reply = ask(fa, raw)
            assert reply["ok"] is False and error in reply["error"], (raw, reply)
        assert ask(fb, b'{"cmd": "status"}')["state"] == "idle"   # nothing changed
        started = ask(fa, b'{"cmd": "start", "scene": "s"}')
        assert started["ok"] and ask(fb, b'{"cmd": "status"}')["state"] == "recording"
        assert ask(fb, b'{"cmd": "quit"}')["ok"] is False           # quitting mid-take must be forced
        assert ask(fb, b'{"cmd": "stop"}')["ok"]
        a.close()
        b.close()
        assert not list((session_dir).glob("x*")) and not (workdir / "out" / "x").exists()

        # a second recorder on the same session is refused, and leaves the live socket alone
        second = subprocess.run([sys.executable, "-m", "improvcap", "session", "small", "--out", "out",
                                 "--session", "day"], cwd=workdir, capture_output=True, text=True, timeout=60)
        assert second.returncode == 2 and "already running" in second.stderr
        assert ok(ctl(workdir, "status"))["state"] == "idle"
    finally:
        quit_session(workdir, proc)


def test_stale_socket_is_replaced(workdir: Path):
    session_dir = workdir / "out" / "day"
    session_dir.mkdir(parents=True)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(session_dir / "control.sock"))  # bound, never listening: what a killed recorder leaves
    stale.close()
    missing = ctl(workdir, "status")
    assert missing.returncode == 2 and "no recorder is running" in missing.stderr
    proc = start_session(workdir)
    try:
        assert ok(ctl(workdir, "status"))["state"] == "idle"
    finally:
        quit_session(workdir, proc)


def test_session_keys_through_a_terminal(workdir: Path):
    pid, fd = pty.fork()
    if pid == 0:  # the child: the session, on a real terminal
        os.chdir(workdir)
        os.environ.update({"COLUMNS": "120", "LINES": "40", "TERM": "xterm"})
        os.execv(sys.executable, [sys.executable, "-m", "improvcap", "session", "small", "--out", "out",
                                  "--session", "keys", "--scene", "k1"])
    screen = bytearray()

    def pump(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ready, _, _ = select.select([fd], [], [], 0.05)
            if ready:
                try:
                    screen.extend(os.read(fd, 65536))
                except OSError:
                    return

    def key(data: bytes, wait: float = 0.8) -> None:
        os.write(fd, data)
        pump(wait)

    session_dir = workdir / "out" / "keys"
    try:
        deadline = time.monotonic() + 60
        while b"space/enter" not in screen:
            assert time.monotonic() < deadline, screen[-2000:]
            pump(0.2)
        key(b" ", 1.5)             # start
        key(b"s")                  # slate
        key(b"m")                  # mark, then a note typed into the prompt
        key(b"great take\r")
        key(b" ", 2.0)             # stop
        key(b"n")                  # next scene
        key(b"\r", 1.0)            # Enter starts too
        key(b"q")                  # asks first while recording
        key(b"x")                  # anything but y keeps recording
        assert (session_dir / "k2_t001" / "take.json").exists()
        key(b"q")
        key(b"y", 3.0)             # stop and quit
        _, status = os.waitpid(pid, 0)
        pid = 0
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    text = screen.decode("utf-8", "replace")
    assert "recording" in text.lower() and "stop it and quit" in text
    first = events(session_dir / "k1_t001")
    assert [e["kind"] for e in first if e["kind"] != "stop"] == ["slate", "mark"]  # one mark carrying its note
    assert first[1]["detail"] == "great take"
    # the mark is when m was pressed (0.8 s after the slate), not when its note was saved (0.8 s later)
    assert int(first[0]["t_ns"]) < int(first[1]["t_ns"]) < int(first[0]["t_ns"]) + 1_450_000_000
    for take in ("k1_t001", "k2_t001"):
        assert json.loads((session_dir / take / "take.json").read_text())["status"] == "complete"


PERFORMERS = """
[performers.ana]
name = "Ana Example"
consent_form = "forms/ana.pdf"
consent_sha256 = "{ana_sha}"
signed = "2026-11-20"
allowed = ["llm-training", "voice-synthesis"]
denied = ["emotion-recognition"]

[performers.cam]
name = "Cam Example"
consent_form = "forms/cam.pdf"
consent_sha256 = "{cam_sha}"
signed = 2026-11-19
allowed = ["llm-training"]
revoked = true
revoked_on = "2026-11-21"
"""


def test_performers_refused_or_recorded_with_consent(workdir: Path):
    import hashlib

    (workdir / "forms").mkdir()
    (workdir / "forms" / "ana.pdf").write_bytes(b"%PDF signed by ana")
    ana_sha = hashlib.sha256(b"%PDF signed by ana").hexdigest()
    (workdir / "people.toml").write_text(PERFORMERS.format(ana_sha=ana_sha, cam_sha="c" * 64))

    def record(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "improvcap", "record", "small", "--out", "out", "--session",
                               "day", "--duration", "1.5", "--json", "--performers", "people.toml", *args],
                              cwd=workdir, capture_output=True, text=True, timeout=120)

    for args, message in [(["--performer", "bob"], "unknown performer 'bob'"),
                          (["--performer", "ana", "--performer", "cam"], "performer 'cam' has revoked consent")]:
        refused = record(*args)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
        assert "\n" not in refused.stderr.strip() and "Traceback" not in refused.stderr
        assert not (workdir / "out").exists()   # refused before anything records

    done = record("--performer", "ana")
    assert done.returncode == 0, done.stderr
    take = Path(json.loads(done.stdout)["take"])
    manifest = json.loads((take / "take.json").read_text())
    (ana,) = manifest["performers"]
    assert ana["id"] == "ana" and ana["consent_form_verified"] is True
    assert ana["allowed"] == ["llm-training", "voice-synthesis"] and ana["denied"] == ["emotion-recognition"]
    record_bytes = (take / "performers.json").read_bytes()
    assert json.loads(record_bytes)["performers"] == manifest["performers"]
    assert manifest["performers_sha256"] == hashlib.sha256(record_bytes).hexdigest()
    assert manifest["files"]["performers.json"]["sha256"] == manifest["performers_sha256"]

    session = json.loads((workdir / "out" / "day" / "session.json").read_text())
    assert [p["id"] for p in session["performers"]] == ["ana"]

    # a consent form changed after it was recorded in the performers file is refused too
    (workdir / "forms" / "ana.pdf").write_bytes(b"%PDF edited")
    tampered = record("--performer", "ana")
    assert tampered.returncode == 2 and "does not match consent_sha256" in tampered.stderr


def test_a_refused_start_changes_nothing(workdir: Path):
    import hashlib

    (workdir / "forms").mkdir()
    (workdir / "forms" / "ana.pdf").write_bytes(b"%PDF signed by ana")
    ana_sha = hashlib.sha256(b"%PDF signed by ana").hexdigest()
    (workdir / "people.toml").write_text(PERFORMERS.format(ana_sha=ana_sha, cam_sha="c" * 64))
    proc = start_session(workdir, "--performers", "people.toml", "--performer", "ana", "--scene", "intro")
    try:
        refused = ctl(workdir, "start", "--performer", "nobody", "--scene", "elsewhere")
        assert refused.returncode == 2 and "unknown performer 'nobody'" in refused.stderr, refused.stderr
        status = ok(ctl(workdir, "status"))
        assert status["performers"] == ["ana"] and status["scene"] == "intro" and status["state"] == "idle"
        take = Path(ok(ctl(workdir, "start"))["take"])
        assert take.name == "intro_t001"
        ok(ctl(workdir, "stop"))
        manifest = json.loads((take / "take.json").read_text())
        assert [p["id"] for p in manifest["performers"]] == ["ana"]
    finally:
        quit_session(workdir, proc)


def test_record_is_refused_on_a_session_another_recorder_drives(workdir: Path):
    proc = start_session(workdir)
    try:
        second = subprocess.run([sys.executable, "-m", "improvcap", "record", "small", "--out", "out", "--session",
                                 "day", "--duration", "1"], cwd=workdir, capture_output=True, text=True, timeout=60)
        assert second.returncode == 2, second.stderr
        assert "already running in this session" in second.stderr and "\n" not in second.stderr.strip()
        assert not list((workdir / "out" / "day").glob("*_t*"))   # nothing recorded
    finally:
        quit_session(workdir, proc)


def test_a_start_while_the_devices_open_waits_for_them(workdir: Path):
    proc = subprocess.Popen([sys.executable, "-m", "improvcap", "session", "small", "--out", "out", "--session",
                             "day"], cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    session_dir = workdir / "out" / "day"
    try:
        deadline = time.monotonic() + 60
        while not (session_dir / "control.sock").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.01)
        started = request(session_dir, {"cmd": "start"}, timeout=60)  # at once: the devices are still opening
        assert started["ok"], started
        wait_status(session_dir, lambda st: next(s for s in st["streams"] if s["name"] == "cam0")["count"] > 10,
                    "frames of cam0", proc=proc)
        assert request(session_dir, {"cmd": "stop"})["ok"]
        manifest = json.loads((Path(started["take"]) / "take.json").read_text())
        assert manifest["status"] == "complete" and manifest["streams"]["cam0"]["count"] > 10
    finally:
        quit_session(workdir, proc)

"""A shoot day end to end: the studio day copied, damaged and its crashed take repaired, then `verify` of the
whole day from the command line, as a technician runs it."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

LOAD_WARNINGS = ("residual p99", "start skew", "end skew")  # what a loaded machine may add to a good take


@pytest.fixture(scope="module")
def day(studio_day, tmp_path_factory) -> Path:
    """A copy of the studio day (studio_day.py) in a working folder of its own: its killed take repaired by
    the command line, and three copies of the good take damaged (a flipped byte, a cut WAV, a lost row)."""
    workdir = tmp_path_factory.mktemp("shoot")
    session = workdir / "out" / "day"
    # (not the killed recorder's control socket, which a copy cannot take)
    shutil.copytree(studio_day.session, session, symlinks=True, ignore=shutil.ignore_patterns("control.sock"))
    good = session / "good_t001"
    for name in ("flipped", "truncated", "rowless"):
        shutil.copytree(good, session / f"{name}_t001")
    mkv = session / "flipped_t001" / "cam0.mkv"
    data = bytearray(mkv.read_bytes())
    data[len(data) // 2] ^= 0xFF
    mkv.write_bytes(bytes(data))
    wav = session / "truncated_t001" / "mic.wav"
    wav.write_bytes(wav.read_bytes()[: wav.stat().st_size // 2])
    rows = (session / "rowless_t001" / "cam0.frames.csv").read_text().splitlines(keepends=True)
    (session / "rowless_t001" / "cam0.frames.csv").write_text("".join(rows[:10] + rows[11:]))

    repaired = subprocess.run([sys.executable, "-m", "improvcap", "repair", str(session / "killed_t001"), "--json"],
                              cwd=workdir, capture_output=True, text=True, timeout=120)
    assert repaired.returncode == 0, repaired.stderr
    assert json.loads(repaired.stdout)["status"] == "repaired"
    return workdir


def test_verify_a_shoot_day(day: Path):
    before = sorted((p, p.stat().st_size, p.stat().st_mtime_ns) for p in (day / "out").rglob("*"))
    result = subprocess.run([sys.executable, "-m", "improvcap", "verify", "out/day", "--jobs", "2", "--json",
                             "--report", "report.html"], cwd=day, capture_output=True, text=True, timeout=300)
    after = sorted((p, p.stat().st_size, p.stat().st_mtime_ns) for p in (day / "out").rglob("*"))
    assert before == after  # verify writes nothing into the takes
    assert result.returncode == 1, result.stderr  # some takes fail
    takes = {Path(r["take"]).name: r for r in json.loads(result.stdout)["takes"]}
    assert set(takes) == {"good_t001", "good2_t001", "noperf_t001", "quiet_t001", "drift_t001", "killed_t001",
                          "flipped_t001", "truncated_t001", "rowless_t001"}

    def reasons(name: str) -> str:
        return " | ".join(takes[name]["reasons"])

    for name in ("good_t001", "good2_t001"):  # OK, or only what load adds (test_verify: the limits on their own)
        assert all(r.startswith("WARN: ") and any(w in r for w in LOAD_WARNINGS) for r in takes[name]["reasons"]), \
            reasons(name)
    assert takes["noperf_t001"]["verdict"] == "WARN" and "no performers recorded" in reasons("noperf_t001")
    assert takes["quiet_t001"]["verdict"] == "WARN" and "no slates" in reasons("quiet_t001")
    assert takes["drift_t001"]["verdict"] == "FAIL" and "drift" in reasons("drift_t001")
    for name, word in (("flipped_t001", "cam0.mkv"), ("truncated_t001", "mic.wav"), ("rowless_t001", "cam0.frames.csv")):
        assert takes[name]["verdict"] == "FAIL" and word in reasons(name), reasons(name)
    crash = takes["killed_t001"]
    assert crash["verdict"] in ("OK", "WARN") and crash["status"] == "repaired", reasons("killed_t001")
    assert "repaired take" in reasons("killed_t001") and "missing" in reasons("killed_t001")  # the loss, stated

    class Collect(HTMLParser):
        text: list[str] = []

        def handle_data(self, data: str) -> None:
            self.text.append(data)

    page = (day / "report.html").read_text()
    parser = Collect()
    parser.feed(page)
    text = " ".join(parser.text)
    assert all(name in text for name in takes) and "<script" not in page.lower()
    assert page.count("<svg") >= len(takes)


@pytest.mark.parametrize("columns", [80, 200])
def test_verify_table_shows_every_reason(day: Path, columns: int):
    """The table a technician reads: at 80 columns the reasons are listed under it (a column would be a few
    letters wide), from 120 on they are its last column."""
    env = {**os.environ, "COLUMNS": str(columns)}
    shown = subprocess.run([sys.executable, "-m", "improvcap", "verify", "out/day"], cwd=day, capture_output=True,
                           text=True, timeout=300, env=env)
    as_json = subprocess.run([sys.executable, "-m", "improvcap", "verify", "out/day", "--json"], cwd=day,
                             capture_output=True, text=True, timeout=300)
    assert shown.returncode == as_json.returncode == 1, shown.stderr
    takes = json.loads(as_json.stdout)["takes"]
    lines = shown.stdout.splitlines()
    assert all(len(line) <= columns for line in lines if line[:1] in "┏┃┡│└")  # the table fits
    header = next(line for line in lines if "verdict" in line)
    if columns == 80:
        assert "reasons" not in header
        for r in takes:
            name = "/".join(Path(r["take"]).parts[-2:])
            assert all(f"{name}  {reason}" in lines for reason in r["reasons"]), (name, shown.stdout)
    else:
        assert "reasons" in header
        bare = next(line for line in lines if "noperf_t001" in line)
        assert "WARN: no performers recorded" in bare


def test_verify_shows_a_progress_bar_on_a_terminal(day: Path):
    """On a terminal, a bar counts takes and bytes while verify runs (and is cleared at the end); in a pipe
    nothing but the table is printed (the other tests)."""
    main, sub = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "improvcap", "verify", "out/day", "--jobs", "2"], cwd=day,
                            stdin=sub, stdout=sub, stderr=sub, env={**os.environ, "COLUMNS": "100"})
    os.close(sub)
    shown = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(main)
    assert proc.wait(timeout=300) == 1
    text = shown.decode("utf-8", "replace")
    assert "verifying take 0/9" in text and "verifying take 9/9" in text
    assert re.search(r"\d+(\.\d+)?/\d+(\.\d+)? [kMG]B", text)  # bytes hashed of all
    assert "good_t001" in text and "FAIL" in text


def test_verify_table_shows_names_as_they_are(day: Path, tmp_path: Path):
    """A folder name that looks like rich markup is printed as it is, not read as markup."""
    shutil.copytree(day / "out" / "day" / "good_t001", tmp_path / "[red]day" / "good[bold]_t001")
    shown = subprocess.run([sys.executable, "-m", "improvcap", "verify", str(tmp_path)], capture_output=True,
                           text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "[red]day/good[bold]_t001" in shown.stdout

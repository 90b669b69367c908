"""The live dashboard renders what the recorder reports, on a terminal and as plain lines."""
from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from improvcap import dashboard
from improvcap.recorder import Recorder, RunState, StreamStatus
from improvcap.rig import parse_rig

from helpers import demo_rig

RIG = demo_rig("dash", size=(160, 120), channels=3, mocap_channels=4)


def test_dashboard_shows_every_stream_while_recording(tmp_path: Path):
    recorder = Recorder(parse_rig(RIG, tmp_path / "dash.toml"))
    recorder.open()
    try:
        recorder.start_take(tmp_path, "s", "scene")
        ticks = iter(range(12))
        out = io.StringIO()
        dashboard.watch(recorder, lambda: next(ticks) >= 11, console=Console(file=io.StringIO()), plain=out)
        status = recorder.status()
        assert status.state is RunState.RECORDING and status.elapsed_s > 1.0
        assert status.disk_free_bytes and status.disk_free_bytes > 0
        console = Console(record=True, width=160, force_terminal=True)
        console.print(dashboard.render(status, "take"))
        text = console.export_text()
        recorder.stop_take()
    finally:
        recorder.close()
    assert "RECORDING" in text and "disk free" in text
    for name in ("cam0", "mic", "suit"):
        assert name in text
    mic = next(s for s in status.streams if s.name == "mic")
    assert len(mic.peak_dbfs) == 3 and all(-20 < p < -6 for p in mic.peak_dbfs)  # demo tone at -12 dBFS
    assert 25 < next(s for s in status.streams if s.name == "cam0").rate < 35
    line = out.getvalue().splitlines()[0]
    assert line.startswith("recording") and "cam0" in line and "suit" in line


def test_the_streams_of_capture_nodes_show_with_their_node_and_its_clock_offset(tmp_path: Path):
    recorder = Recorder(parse_rig(RIG, tmp_path / "dash.toml"))
    recorder.open()
    try:
        status = recorder.status()
    finally:
        recorder.close()
    remote = StreamStatus("cam9", "camera", "demo", 29.9, 30.0, 120, 0)
    lost = StreamStatus("—", "", "", 0.0, 0.0, 0, 0, fault="not answering")
    console = Console(record=True, width=200, force_terminal=True)
    console.print(dashboard.render(status, "take", nodes=[("pc2", -500000.25, remote), ("pc3", None, lost)]))
    text = console.export_text()
    assert "this PC" in text and "pc2 (-500,000.250 ms)" in text and "pc3 (offset ?)" in text, text
    assert "not answering" in text
    assert "pc2:cam9 29.9/s n=120" in dashboard.plain_line(status, [("pc2", -500000.25, remote)])

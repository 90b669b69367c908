"""End to end: demo devices with drifting clocks, jitter and transport delay, against their ground truth."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import arrival_lift_ns
from improvcap.recorder import Recorder
from improvcap.rig import parse_rig
from improvcap.take.tables import read_table, stream_table

from helpers import demo_rig

pytestmark = pytest.mark.slow

DRIFT = {"cam0": 250.0, "mic": -300.0, "suit": 180.0}
# every stream's clock drifting, its timestamps jittered and its data delayed in transport
DELAYED = {"jitter_ms": 2.0, "transport_ms": 15.0, "latency_ms": 15.0, "truth": True}
RIG = demo_rig("clock", mocap_channels=6, settings={name: {"drift_ppm": ppm, **DELAYED} for name, ppm in DRIFT.items()})


@pytest.fixture(scope="module")
def take(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clock")
    recorder = Recorder(parse_rig(RIG, out / "clock.toml"))
    recorder.open()
    try:
        take = recorder.start_take(out, "s", "clock")
        time.sleep(12.0)
        recorder.stop_take()
    finally:
        recorder.close()
    return take


def errors_ms(take: Path, name: str, kind: str) -> tuple[np.ndarray, float]:
    """|stored t_ns - truth| of every row (ms), and how far the machine's load lifted the arrivals the fit
    hugs (ms, helpers.arrival_lift_ns): the bounds below widen by exactly that."""
    table = stream_table(take, name, kind, time_only=True)
    truth = read_table(take / f"{name}.truth.csv")
    key = "first_sample" if kind == "audio" else "index"
    assert np.array_equal(table[key], truth["index"])  # one truth row per stored row
    window_ns = json.loads((take / "take.json").read_text())["streams"][name]["clock"]["window_ns"]
    lift = arrival_lift_ns(table["host_ns"], truth["true_t_ns"], window_ns)
    return np.abs(table["t_ns"] - truth["true_t_ns"]) / 1e6, lift / 1e6


@pytest.mark.parametrize("name, kind", [("cam0", "camera"), ("mic", "audio"), ("suit", "mocap")])
def test_stored_t_ns_match_the_truth(take: Path, name: str, kind: str):
    err, lift = errors_ms(take, name, kind)
    figures = (np.percentile(err, [50, 99]), err.max(), lift)
    assert np.percentile(err, 99) < 0.5 + lift and err.max() < 1.0 + lift, figures
    clock = json.loads((take / "take.json").read_text())["streams"][name]["clock"]
    assert clock["domain"] == "device" and clock["resets"] == 0
    # a line within ±lift at both ends of 12 s is that much steeper or flatter
    assert clock["drift_ppm"] == pytest.approx(DRIFT[name], abs=30 + 2 * lift * 1e3 / 12)
    assert 0 <= clock["residual_p50_ns"] < 5e6


def test_effective_rate_and_raw_columns_kept_for_refitting(take: Path):
    manifest = json.loads((take / "take.json").read_text())
    room = manifest["streams"]["mic"]
    assert room["clock"]["effective_rate"] == pytest.approx(48000 * (1 - 300e-6), abs=1.0)
    # raw device and host times are still there, so the take can be refitted
    table = stream_table(take, "suit", "mocap", time_only=True)
    assert np.all(np.diff(table["device_ns"]) > 0) and np.all(table["host_ns"] > table["t_ns"])
    assert manifest["t0_host_ns"] > 0 and (take / "sync.csv").exists()

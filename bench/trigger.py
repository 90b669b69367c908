"""Triggered cameras: frame times from the sync box's pulses against the camera's own clock fit.

One take of two demo cameras 640x480@30 side by side, the same timing model each (80 ppm drift, 3 ms mean
jitter, 10 ms transport, 2 % of frames lost): `trig` exposed by the demo sync box's
pulses (40 ppm drift, 1 ms reply jitter, 50 queries/s) and put on them (improvcap.take.trigger), `free`
running on its own clock, fitted to arrivals as every untriggered camera is (and as a capture tool without
a sync box must), its latency_ms = 10 the transport a sync calibration would measure. The triggered
camera's latency_ms is its exposure offset from the pulse: 0 for the demo camera. Reported per camera:
p50 / p99 / max of |t_ns - true exposure time| (the demo's ground truth), frames matched and missing.

    python bench/trigger.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from improvcap.recorder import Recorder
from improvcap.rig import parse_rig

CAMERA = """
[[camera]]
name = "{name}"
driver = "demo"
width = 640
height = 480
fps = 30
drift_ppm = 80
jitter_ms = 3
transport_ms = 10
drop_rate = 0.02
truth = true
{extra}"""

RIG = f"""[rig]
name = "trigger-bench"
master = "trig"
{CAMERA.format(name="trig", extra='trigger = "box"')}
{CAMERA.format(name="free", extra="latency_ms = 10")}
[[sync]]
name = "box"
driver = "demo"
trigger_fps = 30
jitter_ms = 1
drift_ppm = 40
query_hz = 50
"""


def errors_ms(take: Path, camera: str) -> np.ndarray:
    with open(take / f"{camera}.frames.csv") as fh:
        t = {int(r["index"]): int(r["t_ns"]) for r in csv.DictReader(fh)}
    with open(take / f"{camera}.truth.csv") as fh:
        truth = {int(r["index"]): int(r["true_t_ns"]) for r in csv.DictReader(fh)}
    return np.array([abs(t[i] - truth[i]) for i in truth if i in t]) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rig = parse_rig(RIG, Path(tmp) / "rig.toml")
        recorder = Recorder(rig)
        recorder.open()
        try:
            take = recorder.start_take(Path(tmp), "bench", "scene")
            time.sleep(args.seconds)
            manifest = recorder.stop_take()
        finally:
            recorder.close()
        result = {
            "seconds": args.seconds,
            "faults": manifest["faults"],
            "trigger": manifest["streams"]["trig"]["trigger"],
        }
        for camera in ("trig", "free"):
            err = errors_ms(take, camera)
            result[camera] = {
                "frames": len(err),
                "p50_ms": round(float(np.percentile(err, 50)), 4),
                "p99_ms": round(float(np.percentile(err, 99)), 4),
                "max_ms": round(float(err.max()), 4),
            }
        result["p99_ratio_trig_to_free"] = round(result["trig"]["p99_ms"] / result["free"]["p99_ms"], 4)
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

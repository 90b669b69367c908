"""Shared-clock accuracy: stored t_ns against the demo devices' ground truth, slate detection, fit speed.

1. A take of the demo rig whose devices drift by -200..+200 ppm, with 5 ms mean jitter (exponential, so
   long-tailed) and 20 ms transport delay, `truth = true`. Every stream's `latency_ms` is 20, standing in
   for the per-device latency a sync calibration measures (the fit maps device clocks onto arrival times;
   what is left, the constant transport delay, is what calibration removes). A slate every 10 s.
   Reported per stream: p50 / p99 / max of |t_ns - true_t_ns|, and each slate onset found in the media
   against the true slate time.
2. The final fit and sync.csv of a one-hour take of the demo rig from synthetic timestamps (same clock
   model): wall time of fit_clock + apply for every stream plus sync_table.

    python bench/sync.py [--seconds 60] [--hours 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from improvcap.clockfit import fit_clock
from improvcap.recorder import Recorder
from improvcap.rig import parse_rig
from improvcap.slates import detect_take
from improvcap.take.sync import format_sync_csv, sync_table
from improvcap.take.tables import read_table, stream_table

DRIFT_PPM = {"cam0": 150.0, "cam1": -200.0, "room": 200.0, "suit": -120.0}
JITTER_MS, TRANSPORT_MS = 5.0, 20.0


def rig_text() -> str:
    demo = (
        f"jitter_ms = {JITTER_MS}\ntransport_ms = {TRANSPORT_MS}\n"
        f"offset_ms = 0.0\nlatency_ms = {TRANSPORT_MS}\ntruth = true\n"
    )
    return f"""
[rig]
name = "sync-bench"
master = "cam0"
[[camera]]
name = "cam0"
driver = "demo"
drift_ppm = {DRIFT_PPM["cam0"]}
{demo}
[[camera]]
name = "cam1"
driver = "demo"
drift_ppm = {DRIFT_PPM["cam1"]}
{demo}
[[audio]]
name = "room"
driver = "demo"
channels = 4
drift_ppm = {DRIFT_PPM["room"]}
{demo}
[[mocap]]
name = "suit"
driver = "demo"
rate = 240
channels = 24
drift_ppm = {DRIFT_PPM["suit"]}
{demo}
"""


def record(workdir: Path, seconds: float) -> Path:
    rig = parse_rig(rig_text(), workdir / "sync-bench.toml")
    recorder = Recorder(rig)
    recorder.open()
    try:
        take = recorder.start_take(workdir, "bench", "sync")
        start = time.monotonic()
        next_slate = 2.0
        while (elapsed := time.monotonic() - start) < seconds:
            if elapsed >= next_slate:
                recorder.slate(0.1)
                next_slate += 10.0
            time.sleep(0.05)
        recorder.stop_take()
    finally:
        recorder.close()
    return take


def truth_errors(take: Path, manifest: dict) -> dict:
    out = {}
    for name, stream in manifest["streams"].items():
        table = stream_table(take, name, stream["kind"])
        key = "first_sample" if stream["kind"] == "audio" else "index"
        truth = read_table(take / f"{name}.truth.csv")
        true_by_index = dict(zip(truth["index"].tolist(), truth["true_t_ns"].tolist()))
        pairs = [
            (t, true_by_index[i]) for i, t in zip(table[key].tolist(), table["t_ns"].tolist()) if i in true_by_index
        ]
        err = np.abs(np.array([t - true for t, true in pairs], dtype=np.float64)) / 1e6
        out[name] = {
            "rows": len(pairs),
            "p50_ms": round(float(np.percentile(err, 50)), 4),
            "p99_ms": round(float(np.percentile(err, 99)), 4),
            "max_ms": round(float(err.max()), 4),
            "fitted_drift_ppm": round(stream["clock"]["drift_ppm"], 2),
            "true_drift_ppm": DRIFT_PPM[name],
        }
    return out


def slate_errors(take: Path, manifest: dict) -> dict:
    events = read_table(take / "events.csv", dtype=str)
    slates = [int(t) for t, kind in zip(events["t_ns"], events["kind"]) if kind == "slate"]
    onsets = detect_take(take)
    out = {}
    for name, found in onsets.items():
        kind = manifest["streams"][name]["kind"]
        truth = read_table(take / f"{name}.truth.csv")
        true_by_index = dict(zip(truth["index"].tolist(), truth["true_t_ns"].tolist()))
        period_ms = 1e3 / manifest["streams"][name]["nominal_rate"]
        rows = []
        for slate in slates:
            near = [o for o in found if abs(o.t_ns - slate) < 200_000_000]
            if not near:
                rows.append({"slate_ns": slate, "found": False})
                continue
            o = near[0]
            row = {"slate_ns": slate, "found": True, "onset_minus_slate_ms": round((o.t_ns - slate) / 1e6, 4)}
            if kind != "audio" and o.index in true_by_index:
                # the stream's sample of the slate is the first one truly at or after it; its stored time
                # against its true time is the clock error the slate measures
                row["stored_minus_true_ms"] = round((o.t_ns - true_by_index[o.index]) / 1e6, 4)
            rows.append(row)
        errors = [abs(r["onset_minus_slate_ms"]) for r in rows if r["found"]]
        out[name] = {
            "kind": kind,
            "slates": len(slates),
            "found": sum(r["found"] for r in rows),
            "max_abs_onset_minus_slate_ms": round(max(errors), 4) if errors else None,
            "sample_period_ms": round(period_ms, 4),
            "per_slate": rows,
        }
    return out


def synthetic_hour(hours: float, seed: int = 1) -> dict:
    """Timestamps of the demo rig over `hours` with the same clock model; time the fit and sync.csv.

    Generating the timestamps is not timed; fitting every stream, mapping every row, matching the
    master timeline and formatting sync.csv are.
    """
    rng = np.random.default_rng(seed)
    seconds = hours * 3600
    streams = {
        "cam0": ("camera", 30.0, 1),
        "cam1": ("camera", 30.0, 1),
        "room": ("audio", 48000.0, 480),
        "suit": ("mocap", 240.0, 1),
    }
    tables, fits = {}, {}
    for name, (kind, rate, block) in streams.items():
        n = int(seconds * rate / block)
        true = np.arange(n) * (block / rate * 1e9) / (1 + DRIFT_PPM[name] * 1e-6)
        device = (true * (1 + DRIFT_PPM[name] * 1e-6)).astype(np.int64) + 10**12
        end = device + int(block / rate * 1e9) if kind == "audio" else device
        host = (
            true
            + (block / rate * 1e9 if kind == "audio" else 0)
            + TRANSPORT_MS * 1e6
            + rng.exponential(JITTER_MS * 1e6, n)
        )
        fits[name] = (kind, end, host.astype(np.int64), device, rate, block)
    t_fit0 = time.perf_counter()
    for name, (kind, end, host, device, rate, block) in fits.items():
        t_ns = fit_clock(end, host).apply(device) - int(TRANSPORT_MS * 1e6)
        tables[name] = (kind, t_ns, rate, block)
    t_fit = time.perf_counter() - t_fit0
    t_sync0 = time.perf_counter()
    _, master_t, master_rate, _ = tables["cam0"]
    others = []
    for name, (kind, t_ns, rate, block) in tables.items():
        if name == "cam0":
            continue
        if kind == "audio":
            table = {"first_sample": np.arange(len(t_ns)) * block, "t_ns": t_ns, "frames": np.full(len(t_ns), block)}
        else:
            table = {"index": np.arange(len(t_ns)), "t_ns": t_ns}
        others.append((name, kind, rate, table))
    columns = sync_table(np.arange(len(master_t)), master_t, others, master_rate=master_rate)
    csv_bytes = format_sync_csv(columns)  # the file's content, as build_sync writes it
    t_sync = time.perf_counter() - t_sync0
    return {
        "hours": hours,
        "rows": {k: len(v[1]) for k, v in tables.items()},
        "fit_s": round(t_fit, 3),
        "sync_table_s": round(t_sync, 3),
        "fit_plus_sync_s": round(t_fit + t_sync, 3),
        "sync_rows": int(len(columns["t_ns"])),
        "sync_csv_mib": round(len(csv_bytes) / 2**20, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--hours", type=float, default=1.0)
    args = ap.parse_args()
    result: dict = {"command": " ".join(["bench/sync.py", *sys.argv[1:]])}
    with tempfile.TemporaryDirectory(prefix="improvcap-sync-") as tmp:
        take = record(Path(tmp), args.seconds)
        manifest = json.loads((take / "take.json").read_text())
        result["take_seconds"] = manifest["duration_s"]
        result["t_ns_vs_truth"] = truth_errors(take, manifest)
        result["slates"] = slate_errors(take, manifest)
        result["sync_misalignment"] = manifest.get("sync")
    result["one_hour"] = synthetic_hour(args.hours)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""LSL clock sync against pyxdf's, on the same data, and the CPU of the LSL inlet path.

Sync: the demo LSL sender (improvcap.devices.lsl_sender) runs in a time namespace of its own (its
CLOCK_MONOTONIC 1000 s ahead; root) under libfaketime (its clock 100 ppm fast), pushing RATE Hz with 2 ms
of normal stamp jitter for SECONDS. The real `lsl` driver reads it; its samples, liblsl's clock offsets and
the sender's ground truth are kept. Then the same stamps and offsets are put on our clock twice:
improvcap's fit (improvcap.lslclock.fit_lsl) and pyxdf's own synchronisation, its internal `_clock_sync`
then `_jitter_removal` (what `load_xdf` runs with `synchronize_clocks=True, dejitter_timestamps=True`),
fed the offsets as LabRecorder stores them (collection time on the sender's clock, offset). Reported:
p50/p99 of |t - truth| for both.

CPU: a sender at 1 kHz x 32 channels, recorded by `improvcap record` of a rig with only that stream for
CPU_SECONDS; CPU seconds (user + system, wait4) over the take's wall time, in percent of one core.

    pip install pyxdf   # the anchor, a benchmark dependency only
    python bench/lsl_sync.py [--seconds 300] [--rate 100] [--cpu-seconds 30]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from improvcap.devices.lsl_demo import faketime_library  # noqa: E402
from improvcap.devices.lsl_inlet import LslInlet  # noqa: E402
from improvcap.lslclock import ClockOffset, fit_lsl  # noqa: E402
from improvcap.rig import StreamSpec  # noqa: E402


def sender(args: list[str], drift_ppm: float, namespace_s: int) -> tuple[subprocess.Popen[str], dict[int, int]]:
    env = dict(os.environ)
    lib = faketime_library()
    if drift_ppm and lib is None:
        raise SystemExit("the drifting sender needs libfaketime (apt install libfaketime)")
    if drift_ppm:
        env.update({"LD_PRELOAD": lib, "FAKETIME_NO_CACHE": "1", "FAKETIME": f"+0 x{1 + drift_ppm * 1e-6:.9f}"})
    prefix = ["unshare", "--time", "--monotonic", str(namespace_s), "--fork"] if namespace_s else []
    proc = subprocess.Popen(
        [*prefix, sys.executable, "-m", "improvcap.devices.lsl_sender", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    if not proc.stdout.readline().startswith("ready"):
        raise SystemExit("the sender did not start")
    truth: dict[int, int] = {}

    def collect() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            parts = line.split()
            if len(parts) == 3:
                truth[round(float(parts[2]) * 1e6)] = int(parts[1])

    threading.Thread(target=collect, daemon=True).start()
    return proc, truth


def pyxdf_sync(stamps_s: np.ndarray, offsets: list[ClockOffset], rate: float) -> np.ndarray:
    import pyxdf.pyxdf as px

    class Stream:  # the fields of pyxdf's StreamData that its synchronisation reads and writes
        pass

    s = Stream()
    s.time_stamps = stamps_s.copy()
    s.clock_times = [o.remote_ns / 1e9 for o in offsets]
    s.clock_values = [o.offset_ns / 1e9 for o in offsets]
    s.clock_segments, s.segments = [], []
    s.srate, s.tdiff, s.effective_srate = rate, 1.0 / rate, 0.0
    streams = px._clock_sync({1: s})
    streams = px._jitter_removal(streams)
    return streams[1].time_stamps


def sync_figures(seconds: float, rate: float) -> dict:
    sid = f"bench-{uuid.uuid4().hex[:10]}"
    root = os.geteuid() == 0 and shutil.which("unshare") is not None
    proc, truth = sender(
        ["--name", "bench-wrist", "--source-id", sid, "--rate", str(rate), "--jitter-ms", "2"],
        100.0,
        1000 if root else 0,
    )
    spec = StreamSpec(
        "lsl",
        "wrist",
        "lsl",
        {
            "name": "wrist",
            "stream": f"source_id='{sid}'",
            "timeout_s": 10.0,
            "channels": None,
            "rate": None,
            "latency_ms": 0.0,
        },
    )
    inlet = LslInlet(spec)
    samples = []
    try:
        inlet.open()
        inlet.start()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if (s := inlet.read(0.2)) is not None:
                samples.append(s)
    finally:
        inlet.close()
        proc.kill()
        proc.wait()
    data = [s for s in samples if s.count]
    offsets = [s.payload for s in samples if isinstance(s.payload, ClockOffset)]
    device = np.array([s.device_ns for s in data], dtype=np.int64)
    arrival = np.array([s.host_ns for s in data], dtype=np.int64)
    true = [truth.get(round(d / 1e3)) for d in device]
    known = np.array([t is not None for t in true])
    true_ns = np.array([t or 0 for t in true], dtype=np.int64)
    clock = {
        k: np.array([getattr(o, k) for o in offsets], dtype=np.int64)
        for k in ("host_ns", "remote_ns", "offset_ns", "rtt_ns")
    }
    ours, fit = fit_lsl(device, arrival, clock, rate)
    ours_err = np.abs(ours - true_ns)[known] / 1e6
    # pyxdf in float seconds, as it works; its result and the truth both on our clock
    theirs = pyxdf_sync(device / 1e9, offsets, rate)
    theirs_err = np.abs(theirs - true_ns / 1e9)[known] * 1e3
    p = lambda e: [round(float(v), 4) for v in np.percentile(e, [50, 99])]  # noqa: E731
    return {
        "seconds": seconds,
        "rate": rate,
        "samples": len(data),
        "with_truth": int(known.sum()),
        "offsets": len(offsets),
        "time_namespace_s": 1000 if root else 0,
        "drift_ppm_true": 100.0,
        "drift_ppm_fitted": round(fit.as_dict()["drift_ppm"], 3),
        "improvcap_err_ms_p50_p99": p(ours_err),
        "pyxdf_err_ms_p50_p99": p(theirs_err),
    }


def cpu_figures(seconds: float) -> dict:
    sid = f"bench-{uuid.uuid4().hex[:10]}"
    proc, _ = sender(
        ["--name", "bench-eeg", "--source-id", sid, "--rate", "1000", "--channels", "32", "--quiet"], 0.0, 0
    )
    with tempfile.TemporaryDirectory() as tmp:
        rig = Path(tmp) / "rig.toml"
        rig.write_text(
            f'[rig]\nname = "lsl-cpu"\n\n[[lsl]]\nname = "eeg"\ndriver = "lsl"\n'
            f"stream = \"source_id='{sid}'\"\nchannels = 32\nrate = 1000\n"
        )
        started = time.monotonic()
        run = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "improvcap",
                "record",
                str(rig),
                "--out",
                "out",
                "--duration",
                str(seconds),
                "--json",
            ],
            cwd=tmp,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        out = run.stdout.read() if run.stdout else ""
        _, status, usage = os.wait4(run.pid, 0)
        wall = time.monotonic() - started
        proc.kill()
        proc.wait()
        summary = json.loads(out)
    cpu = usage.ru_utime + usage.ru_stime
    stream = summary["streams"]["eeg"]
    return {
        "seconds": seconds,
        "exit": os.waitstatus_to_exitcode(status),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "cpu_percent_of_one_core": round(100 * cpu / wall, 1),
        "samples": stream["count"],
        "dropped": stream["dropped"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--cpu-seconds", type=float, default=30.0)
    args = ap.parse_args()
    print(json.dumps({"sync": sync_figures(args.seconds, args.rate), "cpu": cpu_figures(args.cpu_seconds)}, indent=2))


if __name__ == "__main__":
    main()

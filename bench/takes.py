"""Start and stop latency of takes in a running session of the demo rig, driven over the control socket.

A `improvcap session demo` process keeps the devices warm; this script, a second process, starts and
stops TAKES takes of SECONDS each, then LONG_TAKES takes of LONG seconds. Reported, median and max:
- start latency: from the session receiving `start` to the first record of every stream written in the
  take's files (the session measures it and returns it in the reply), and the client's round trip;
- stop latency: from sending `stop` to the reply, which comes once the take is finalised (writers
  drained, clocks refitted, sync.csv, hashes, manifest written).

    python bench/takes.py [--takes 20] [--seconds 3] [--long-takes 3] [--long 60]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from improvcap.control import request


def wait_idle(session_dir: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("the session ended early")
        try:
            if request(session_dir, {"cmd": "status"}, timeout=5)["state"] == "idle":
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise SystemExit("the session never became ready")


def one_take(session_dir: Path, seconds: float) -> dict:
    t = time.perf_counter()
    started = request(session_dir, {"cmd": "start"})
    start_rtt = (time.perf_counter() - t) * 1e3
    assert started["ok"], started
    time.sleep(seconds)
    t = time.perf_counter()
    stopped = request(session_dir, {"cmd": "stop"}, timeout=120)
    stop_ms = (time.perf_counter() - t) * 1e3
    assert stopped["ok"], stopped
    first = started["first_record_ms"]
    return {
        "start_ms": max(first.values()),
        "start_rtt_ms": start_rtt,
        "stop_ms": stop_ms,
        "per_stream_start_ms": first,
        "dropped": sum(s["dropped"] for s in stopped["streams"].values()),
    }


def summary(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 1), "max": round(max(values), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--takes", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--long-takes", type=int, default=3)
    ap.add_argument("--long", type=float, default=60.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="improvcap-takes-") as tmp:
        workdir = Path(tmp)
        proc = subprocess.Popen(
            [sys.executable, "-m", "improvcap", "session", "demo", "--out", "out", "--session", "bench"],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        session_dir = workdir / "out" / "bench"
        try:
            wait_idle(session_dir, proc)
            time.sleep(2.0)  # a warm rig, as between takes in a shoot
            short = [one_take(session_dir, args.seconds) for _ in range(args.takes)]
            long = [one_take(session_dir, args.long) for _ in range(args.long_takes)]
        finally:
            request(session_dir, {"cmd": "quit", "force": True})
            proc.wait(60)
    result = {
        "command": " ".join(["bench/takes.py", *sys.argv[1:]]),
        "takes": args.takes,
        "seconds": args.seconds,
        "start_first_record_ms": summary([r["start_ms"] for r in short]),
        "start_round_trip_ms": summary([r["start_rtt_ms"] for r in short]),
        "stop_ms_short_takes": summary([r["stop_ms"] for r in short]),
        "long_takes": args.long_takes,
        "long_seconds": args.long,
        "stop_ms_long_takes": summary([r["stop_ms"] for r in long]) if long else None,
        "start_first_record_ms_long": summary([r["start_ms"] for r in long]) if long else None,
        "dropped_total": sum(r["dropped"] for r in short + long),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Verification throughput against `openssl dgst -sha256` on a synthetic shoot day, in one run.

The day: TAKES takes of a demo rig (two cameras with lossless video, libx264 crf 0, a 64-channel 96 kHz
32-bit float audio interface, which makes the large files, and a mocap suit), then copied into further
take folders until the day holds at least GB gigabytes (each copy is a complete, valid take). The page
cache is warmed by reading every file twice before timing (warm cache). Then, alternating, REPEATS times:
`improvcap verify DAY --jobs JOBS --json` and one `openssl dgst -sha256` process over the same files.
Reported: wall time, throughput (bytes/s), their ratio (target: verify at least 1.5 × openssl with --jobs 2
on 2 cores), and verify's peak memory (largest process) against the largest file.

    python bench/verify.py [--gb 2] [--takes 2] [--seconds 20] [--jobs 2] [--repeats 3] [--day DIR]

`--day DIR` times an existing folder of takes (a real shoot day, or one recorded earlier) instead of
recording one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RIG = """
[rig]
name = "bench-day"
[[camera]]
name = "cam0"
driver = "demo"
crf = 0
[[camera]]
name = "cam1"
driver = "demo"
crf = 0
[[audio]]
name = "room"
driver = "demo"
channels = 64
samplerate = 96000
sample_format = "f32"
[[mocap]]
name = "suit"
driver = "demo"
"""


def make_day(
    root: Path, takes: int, seconds: float, gb: float, rig: str = RIG, record_args: tuple[str, ...] = ()
) -> tuple[Path, int, int]:
    """TAKES takes of `rig` (named bench-day) recorded in root/out/day, then copied until the day holds GB."""
    (root / "rigs").mkdir(parents=True, exist_ok=True)
    (root / "rigs" / "bench-day.toml").write_text(rig)
    for _ in range(takes):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "improvcap",
                "record",
                "bench-day",
                "--out",
                "out",
                "--session",
                "day",
                "--duration",
                str(seconds),
                "--slate",
                "--json",
                *record_args,
            ],
            cwd=root,
            check=True,
            capture_output=True,
        )
    day = root / "out" / "day"
    originals = sorted(p for p in day.iterdir() if (p / "take.json").exists())
    size = sum(f.stat().st_size for p in originals for f in p.iterdir())
    copies = 0
    while size < gb * 1e9:
        source = originals[copies % len(originals)]
        shutil.copytree(source, day / f"copy{copies:03d}_t001")
        size += sum(f.stat().st_size for f in source.iterdir())
        copies += 1
    largest = max(f.stat().st_size for p in day.iterdir() if p.is_dir() for f in p.iterdir())
    return day, size, largest


def all_files(day: Path) -> list[str]:
    return sorted(str(f) for take in day.iterdir() if take.is_dir() for f in take.iterdir() if f.is_file())


def timed(cmd: list[str], cwd: Path) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (KiB) of the largest process of the tree, stdout."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        raise SystemExit(f"{cmd[0]} failed")
    return wall, usage.ru_maxrss, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=2.0)
    ap.add_argument("--takes", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--day", type=Path, help="an existing day to time (nothing is recorded)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="improvcap-verify-", dir=os.environ.get("BENCH_DIR")) as tmp:
        root = Path(tmp)
        if args.day is not None:
            day = args.day.resolve()
            sizes = [f.stat().st_size for p in day.iterdir() if p.is_dir() for f in p.iterdir()]
            size, largest = sum(sizes), max(sizes)
        else:
            day, size, largest = make_day(root, args.takes, args.seconds, args.gb)
        files = all_files(day)
        takes = len([p for p in day.iterdir() if (p / "take.json").exists()])
        for _ in range(2):  # warm the page cache: both tools then read from memory
            subprocess.run(["cat", *files], stdout=subprocess.DEVNULL, check=True)
        ours, theirs, rss, verdicts = [], [], [], {}
        for _ in range(args.repeats):
            wall, peak, out = timed(
                [sys.executable, "-m", "improvcap", "verify", str(day), "--jobs", str(args.jobs), "--json"], root
            )
            ours.append(wall)
            rss.append(peak)
            verdicts = {}
            for r in json.loads(out)["takes"]:
                verdicts[r["verdict"]] = verdicts.get(r["verdict"], 0) + 1
            wall, _, _ = timed(["openssl", "dgst", "-sha256", *files], root)
            theirs.append(wall)
    t_ours, t_theirs = statistics.median(ours), statistics.median(theirs)
    print(
        json.dumps(
            {
                "command": " ".join(["bench/verify.py", *sys.argv[1:]]),
                "bytes": size,
                "gb": round(size / 1e9, 3),
                "files": len(files),
                "takes": takes,
                "largest_file_mb": round(largest / 1e6, 1),
                "cache": "warm (every file read twice before timing)",
                "verify_wall_s": [round(x, 2) for x in ours],
                "openssl_wall_s": [round(x, 2) for x in theirs],
                "verify_mb_per_s_median": round(size / t_ours / 1e6, 1),
                "openssl_mb_per_s_median": round(size / t_theirs / 1e6, 1),
                "throughput_ratio": round(t_theirs / t_ours, 3),
                "verify_peak_rss_mb": round(max(rss) / 1024, 1),
                "verdicts": verdicts,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

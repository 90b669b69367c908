"""Export throughput against `tar` writing the same files, on a synthetic shoot day, in one run.

The day: TAKES takes of a demo rig (two 1920x1080 cameras with lossless H.264, libx264 crf 0: video makes
the bytes, as in a studio; a stereo 48 kHz 24-bit microphone; a mocap suit), each with a performer who allowed
the use, copied into further take folders until the day holds at least GB gigabytes. The copy path: one
clip per take (`--clip take`), so every clip starts on a keyframe and video is copied, audio becomes
FLAC. Warm cache (every file read twice before timing). Alternating, REPEATS times, each writing a new
folder on the same disk: `improvcap export DAY --use llm-training --to OUT --format webdataset` (the
whole command: verifying every take first, then writing) and `tar -cf OUT.tar` of the take folders.
Also timed: `improvcap verify DAY` followed by that tar (what a careful user does without export).
Reported: wall times, throughput of the day's bytes, their ratio (target ≥ 0.7 × tar), and the export's
peak memory; with `--long SECONDS`, also the peak memory of exporting one take of that length (memory
must not grow with the take).

    python bench/export.py [--gb 2] [--takes 2] [--seconds 20] [--repeats 3] [--long 120]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from verify import all_files, make_day, timed  # noqa: E402  (the same synthetic day and timing)

RIG = """
[rig]
name = "bench-day"
master = "cam0"
[[camera]]
name = "cam0"
driver = "demo"
width = 1920
height = 1080
crf = 0
[[camera]]
name = "cam1"
driver = "demo"
width = 1920
height = 1080
crf = 0
[[audio]]
name = "room"
driver = "demo"
channels = 2
samplerate = 48000
[[mocap]]
name = "suit"
driver = "demo"
"""


def performers(root: Path) -> None:
    session = root / "out" / "day"
    (session / "forms").mkdir(parents=True, exist_ok=True)
    (session / "forms" / "ana.pdf").write_bytes(b"%PDF ana")
    (session / "performers.toml").write_text(
        '[performers.ana]\nname = "Ana"\nconsent_form = "forms/ana.pdf"\n'
        f'consent_sha256 = "{hashlib.sha256(b"%PDF ana").hexdigest()}"\nsigned = "2026-11-20"\n'
        'allowed = ["llm-training"]\n'
    )


def export_run(day: Path, out: Path) -> tuple[float, int]:
    wall, peak, _ = timed(
        [sys.executable, "-m", "improvcap", "export", str(day), "--use", "llm-training", "--to", str(out), "--json"],
        day.parent,
    )
    return wall, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=2.0)
    ap.add_argument("--takes", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--long", type=float, default=0.0, help="also export one take this long (memory)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="improvcap-export-", dir=os.environ.get("BENCH_DIR")) as tmp:
        root = Path(tmp)
        performers(root)
        day, size, largest = make_day(root, args.takes, args.seconds, args.gb, RIG, ("--performer", "ana"))
        files = all_files(day)
        takes = sorted(p.name for p in day.iterdir() if (p / "take.json").exists())
        for _ in range(2):
            os.system("cat " + " ".join(files) + " > /dev/null")
        ours, theirs, checked, rss = [], [], [], []
        for i in range(args.repeats):
            out = root / f"export{i}"
            wall, peak = export_run(day, out)
            manifest = json.loads((out / "export.json").read_text())
            assert manifest["state"] == "complete" and len(manifest["takes"]) == len(takes), manifest["decisions"]
            ours.append(wall)
            rss.append(peak)
            shutil.rmtree(out)
            wall, _, _ = timed(["tar", "-cf", str(root / f"tar{i}.tar"), "-C", str(day), *takes], root)
            theirs.append(wall)
            (root / f"tar{i}.tar").unlink()
            # what a careful user does instead: verify the day, then tar it (consent left to them)
            check, _, _ = timed(
                [sys.executable, "-m", "improvcap", "verify", str(day), "--jobs", str(os.cpu_count()), "--json"],
                day.parent,
            )
            checked.append(check + wall)
        long_rss = None
        if args.long:
            other = root / "long"
            other.mkdir()
            performers(other)
            long_day, _, _ = make_day(other, 1, args.long, 0.0, RIG, ("--performer", "ana"))
            _, long_rss = export_run(long_day, other / "export")
    t_ours, t_theirs = statistics.median(ours), statistics.median(theirs)
    print(
        json.dumps(
            {
                "command": " ".join(["bench/export.py", *sys.argv[1:]]),
                "bytes": size,
                "gb": round(size / 1e9, 3),
                "files": len(files),
                "takes": len(takes),
                "largest_file_mb": round(largest / 1e6, 1),
                "cache": "warm (every file read twice before timing)",
                "export_wall_s": [round(x, 2) for x in ours],
                "tar_wall_s": [round(x, 2) for x in theirs],
                "export_mb_per_s_median": round(size / t_ours / 1e6, 1),
                "tar_mb_per_s_median": round(size / t_theirs / 1e6, 1),
                "throughput_ratio": round(t_theirs / t_ours, 3),
                "verify_then_tar_wall_s": [round(x, 2) for x in checked],
                "ratio_to_verify_then_tar": round(statistics.median(checked) / t_ours, 3),
                "export_peak_rss_mb": round(max(rss) / 1024, 1),
                **({"long_take_s": args.long, "long_take_peak_rss_mb": round(long_rss / 1024, 1)} if long_rss else {}),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

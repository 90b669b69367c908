"""Editorial throughput against `ffmpeg -c copy` remuxing the same camera files to MOV, in one run.

The day: TAKES takes of the export benchmark's rig (two 1920x1080 cameras in lossless H.264, a stereo
48 kHz 24-bit microphone, a mocap suit), copied into further take folders until the day holds at least
GB gigabytes. Warm cache (every file read twice before timing). Alternating, REPEATS times, each into a
new folder on the same disk: `improvcap editorial DAY --to OUT` (the whole command: every camera remuxed
to MOV with its timecode track, every WAV copied and placed, the timelines of every take and the session
with their FCP XML and EDLs) against `ffmpeg -c copy` of every camera's .mkv to a .mov (one ffmpeg per
file, one after another, as a script would; `-timecode` given, as an editor would need), and against that
plus `cp` of the WAVs (the same files written). Reported: wall times, the camera bytes' throughput and
the ratios (target ≥ 0.8 × ffmpeg).

    python bench/editorial.py [--gb 1] [--takes 1] [--seconds 60] [--repeats 3]
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

sys.path.insert(0, str(Path(__file__).parent))
from export import RIG  # noqa: E402  (the same rig as the export benchmark)
from verify import all_files, make_day, timed  # noqa: E402


def ffmpeg_remux(day: Path, out: Path, wavs: bool) -> float:
    start = time.perf_counter()
    for take in sorted(p for p in day.iterdir() if (p / "take.json").exists()):
        dest = out / take.name
        dest.mkdir(parents=True)
        for mkv in sorted(take.glob("*.mkv")):
            subprocess.run(
                [
                    "ffmpeg",
                    "-v",
                    "error",
                    "-nostdin",
                    "-i",
                    str(mkv),
                    "-map",
                    "0:v",
                    "-c",
                    "copy",
                    "-timecode",
                    "01:00:00:00",
                    str(dest / (mkv.stem + ".mov")),
                ],
                check=True,
            )
        if wavs:
            for wav in sorted(take.glob("*.wav")):
                shutil.copyfile(wav, dest / wav.name)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--takes", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="improvcap-editorial-", dir=os.environ.get("BENCH_DIR")) as tmp:
        root = Path(tmp)
        day, size, _ = make_day(root, args.takes, args.seconds, args.gb, RIG)
        files = all_files(day)
        cameras = sum(os.path.getsize(f) for f in files if f.endswith(".mkv"))
        for _ in range(2):
            os.system("cat " + " ".join(files) + " > /dev/null")
        ours, theirs, with_wavs, rss = [], [], [], []
        for i in range(args.repeats):
            out = root / f"ed{i}"
            wall, peak, _ = timed(
                [sys.executable, "-m", "improvcap", "editorial", str(day), "--to", str(out), "--json"], root
            )
            report = json.loads((out / "editorial.json").read_text())
            assert not report["warnings"], report["warnings"]
            ours.append(wall)
            rss.append(peak)
            shutil.rmtree(out)
            theirs.append(ffmpeg_remux(day, root / f"ff{i}", wavs=False))
            shutil.rmtree(root / f"ff{i}")
            with_wavs.append(ffmpeg_remux(day, root / f"fw{i}", wavs=True))
            shutil.rmtree(root / f"fw{i}")
    t_ours = statistics.median(ours)
    print(
        json.dumps(
            {
                "command": " ".join(["bench/editorial.py", *sys.argv[1:]]),
                "bytes": size,
                "camera_bytes": cameras,
                "takes": len({Path(f).parent for f in files}),
                "cache": "warm (every file read twice before timing)",
                "editorial_wall_s": [round(x, 2) for x in ours],
                "ffmpeg_wall_s": [round(x, 2) for x in theirs],
                "ffmpeg_and_cp_wall_s": [round(x, 2) for x in with_wavs],
                "editorial_camera_mb_per_s_median": round(cameras / t_ours / 1e6, 1),
                "ffmpeg_camera_mb_per_s_median": round(cameras / statistics.median(theirs) / 1e6, 1),
                "throughput_ratio": round(statistics.median(theirs) / t_ours, 3),
                "ratio_to_ffmpeg_and_cp": round(statistics.median(with_wavs) / t_ours, 3),
                "editorial_peak_rss_mb": round(max(rss) / 1024, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

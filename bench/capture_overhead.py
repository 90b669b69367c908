"""Capture overhead: improvcap against K plain `ffmpeg` processes doing the same capture, in one run.

K `lavfi:testsrc2` sources at 1280x720@30 paced in real time are encoded with libx264 ultrafast for
SECONDS, once by one `improvcap record` process (K ffmpeg-driver cameras) and once by K `ffmpeg` command-line
processes, alternating, REPEATS times. Reported: median CPU seconds (user + system, from wait4's rusage
of each process tree), their ratio, dropped frames in the improvcap takes, and improvcap's peak resident
memory for a short and a long take (it must not grow with take length).

    python bench/capture_overhead.py [--cameras 3] [--seconds 20] [--repeats 3] [--long 60]
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
from pathlib import Path

GRAPH = "testsrc2=size=1280x720:rate=30"


def run_measured(cmd: list[str], cwd: Path) -> tuple[float, int, str]:
    """Run `cmd`, return (CPU seconds of it and its children, peak RSS in KiB, stdout)."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    stdout = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd[0]} failed with status {os.waitstatus_to_exitcode(status)}")
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss, stdout


def improvcap_run(workdir: Path, cameras: int, seconds: float) -> dict:
    rig = workdir / "rigs" / "bench.toml"
    rig.parent.mkdir(parents=True, exist_ok=True)
    rig.write_text(
        '[rig]\nname = "bench"\n'
        + "".join(
            f'\n[[camera]]\nname = "cam{i}"\ndriver = "ffmpeg"\nsource = "lavfi:{GRAPH}"\n'
            f'width = 1280\nheight = 720\nfps = 30\ncodec = "libx264"\npreset = "ultrafast"\n'
            for i in range(cameras)
        )
    )
    cpu, rss, out = run_measured(
        [sys.executable, "-m", "improvcap", "record", "bench", "--out", "takes", "--duration", str(seconds), "--json"],
        workdir,
    )
    summary = json.loads(out)
    manifest = json.loads((Path(summary["take"]) / "take.json").read_text())
    frames = sum(s["count"] for s in manifest["streams"].values())
    dropped = sum(s["dropped"] for s in manifest["streams"].values())
    shutil.rmtree(Path(summary["take"]))
    return {"cpu_s": cpu, "rss_kib": rss, "frames": frames, "dropped": dropped, "duration_s": manifest["duration_s"]}


def ffmpeg_run(workdir: Path, cameras: int, seconds: float) -> dict:
    """K ffmpeg processes started together; CPU summed over all of them."""
    procs = []
    for i in range(cameras):
        out = workdir / f"ffmpeg{i}.mkv"
        cmd = [
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"{GRAPH},realtime",
            "-t",
            str(seconds),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            str(out),
        ]
        procs.append(subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    cpu, rss = 0.0, 0
    for p in procs:
        _, status, usage = os.wait4(p.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit("ffmpeg failed")
        cpu += usage.ru_utime + usage.ru_stime
        rss = max(rss, usage.ru_maxrss)
    frames = 0
    for i in range(cameras):
        probe = subprocess.run(
            [
                "ffprobe",
                "-v",
                "error",
                "-count_packets",
                "-select_streams",
                "v:0",
                "-show_entries",
                "stream=nb_read_packets",
                "-of",
                "csv=p=0",
                str(workdir / f"ffmpeg{i}.mkv"),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        frames += int(probe.stdout.strip())
        (workdir / f"ffmpeg{i}.mkv").unlink()
    return {"cpu_s": cpu, "rss_kib": rss, "frames": frames}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cameras", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--long", type=float, default=60.0, help="length of the long take for the memory check")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="improvcap-bench-") as tmp:
        workdir = Path(tmp)
        ours, theirs = [], []
        for r in range(args.repeats):
            ours.append(improvcap_run(workdir, args.cameras, args.seconds))
            theirs.append(ffmpeg_run(workdir, args.cameras, args.seconds))
            print(
                f"repeat {r + 1}: improvcap {ours[-1]['cpu_s']:.1f} CPU-s ({ours[-1]['frames']} frames, "
                f"{ours[-1]['dropped']} dropped), ffmpeg {theirs[-1]['cpu_s']:.1f} CPU-s "
                f"({theirs[-1]['frames']} frames)",
                flush=True,
            )
        long_take = improvcap_run(workdir, args.cameras, args.long) if args.long else None

    cpu_ours = statistics.median(o["cpu_s"] for o in ours)
    cpu_theirs = statistics.median(t["cpu_s"] for t in theirs)
    result = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "cameras": args.cameras,
        "seconds": args.seconds,
        "repeats": args.repeats,
        "improvcap_cpu_s_median": round(cpu_ours, 2),
        "ffmpeg_cpu_s_median": round(cpu_theirs, 2),
        "cpu_ratio": round(cpu_ours / cpu_theirs, 3),
        "improvcap_cpu_s_per_stream_second": round(cpu_ours / (args.cameras * args.seconds), 4),
        "ffmpeg_cpu_s_per_stream_second": round(cpu_theirs / (args.cameras * args.seconds), 4),
        "improvcap_dropped_total": sum(o["dropped"] for o in ours),
        "improvcap_frames": [o["frames"] for o in ours],
        "ffmpeg_frames": [t["frames"] for t in theirs],
        "improvcap_peak_rss_mib_short": round(max(o["rss_kib"] for o in ours) / 1024, 1),
        "ffmpeg_peak_rss_mib_per_process": round(max(t["rss_kib"] for t in theirs) / 1024, 1),
    }
    if long_take:
        result.update(
            {
                "long_seconds": args.long,
                "improvcap_peak_rss_mib_long": round(long_take["rss_kib"] / 1024, 1),
                "improvcap_dropped_long": long_take["dropped"],
            }
        )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

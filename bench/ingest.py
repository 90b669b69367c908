"""Ingest accuracy per method: files made with a known place on a recorded take's clock, found again.

The take: SECONDS s of a demo camera (320x240, 30 fps) and a stereo 48 kHz demo microphone carrying the
studio's LTC on channel 2 (the take jam-synced to it), with `--slate` (a slate at its start and end).
Per trial, with offsets drawn at random (seed 1), each into a fresh copy of the take:

- slates, video: a camera that rolled 0.5–3 s before the take, its two flash frames the first exposed
  after each slate (H.264 MOV);
- slates, WAV: a field recorder that rolled 0.1–1 s before, its clock 50 ppm fast, beeps at the slates;
- ltc: a recorder starting 0.5–3 s into the take with the same LTC from a whole frame;
- audio: 6 s of the take's own microphone (tones and LTC) from a random sample, resampled 50 ppm fast,
  with hiss of its own, correlated against the microphone;
- timecode: `editorial`'s MOV (tmcd) and BWF (time_reference) of the take, back onto their streams (one
  trial: they are the same every time).

Reported per method: the median and worst error of the offset (and of the drift where one is fitted),
and the median wall time of an ingest beside `cp` of the same file.

    python bench/ingest.py [--seconds 20] [--trials 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from external_media import FPS, RATE, RIG, make_video, make_wav  # noqa: E402

from improvcap.take.events import read_slates  # noqa: E402
from improvcap.take.tables import stream_table  # noqa: E402
from improvcap.take.timecode import TimecodeRate, t0_since_midnight  # noqa: E402
from improvcap.take.timeline import AudioTimeline  # noqa: E402
from improvcap.take.wav import WavWriter, read_wav  # noqa: E402


def improvcap(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "improvcap", *args], cwd=cwd, capture_output=True, text=True, check=False
    )


def ingest(take: Path, file: Path, *args: str) -> tuple[dict, float, float]:
    """The ingested entry, the ingest's wall seconds, and `cp`'s of the same file."""
    trial = Path(shutil.copytree(take, take.parent / f"trial_{time.monotonic_ns()}"))
    start = time.perf_counter()
    done = improvcap("ingest", str(trial), str(file), "--as", "ext", *args, "--json", cwd=take.parent)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"ingest {file.name} {args}: {done.stderr.strip()}")
    start = time.perf_counter()
    subprocess.run(["cp", str(file), str(trial / "copied")], check=True)
    cp = time.perf_counter() - start
    shutil.rmtree(trial)
    return json.loads(done.stdout), wall, cp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--trials", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        root = Path(tmp)
        (root / "rigs").mkdir()
        (root / "rigs" / "ingest.toml").write_text(RIG)
        done = improvcap(
            "record",
            "ingest",
            "--out",
            "out",
            "--session",
            "day",
            "--duration",
            str(args.seconds),
            "--slate",
            "--json",
            cwd=root,
        )
        if done.returncode:
            raise SystemExit(done.stderr)
        take = Path(json.loads(done.stdout)["take"])
        s1, s2 = read_slates(take / "events.csv")
        manifest = json.loads((take / "take.json").read_text())
        mic = AudioTimeline.from_blocks(stream_table(take, "mic", "audio"), RATE)
        results: dict[str, dict[str, list[float]]] = {}

        def note(method: str, **values: float) -> None:
            for k, v in values.items():
                results.setdefault(method, {}).setdefault(k, []).append(v)

        for i in range(args.trials):
            start = -rng.uniform(0.5, 3.0) * 1e9
            flashes = [int(np.ceil((s - start) * FPS / 1e9)) for s in (s1, s2)]
            video = root / f"cam_{i}.mov"
            make_video(video, flashes[1] + 30, flashes)
            e, wall, cp = ingest(take, video, "--by", "slates")
            note("slates, video", offset_error_ms=(e["ingest"]["offset_ns"] - start) / 1e6, wall_s=wall, cp_s=cp)

            start, fast = -rng.uniform(0.1, 1.0) * 1e9, 50e-6
            beeps = [int(round((s - start) * RATE * (1 + fast) / 1e9)) for s in (s1, s2)]
            wav = root / f"beeps_{i}.wav"
            make_wav(wav, beeps[1] + RATE, beeps)
            e, wall, cp = ingest(take, wav, "--by", "slates")
            note(
                "slates, WAV 50 ppm",
                offset_error_ms=(e["ingest"]["offset_ns"] - start) / 1e6,
                drift_error_ppm=e["ingest"]["drift_ppm"] - (1 / (1 + fast) - 1) * 1e6,
                wall_s=wall,
                cp_s=cp,
            )

            rate = TimecodeRate.of(FPS)
            day = float(t0_since_midnight(manifest))
            first = rate.frame_at(day + rng.uniform(0.5, 3.0)) + 1
            start = (float(Fraction(first) / rate.rate) - day) * 1e9
            wav = root / f"ltc_{i}.wav"
            make_wav(wav, int((args.seconds - 4) * RATE), [], ltc=(rate, first))
            e, wall, cp = ingest(take, wav, "--by", "ltc")
            note(
                "ltc",
                offset_error_ms=(e["ingest"]["offset_ns"] - start) / 1e6,
                drift_ppm=e["ingest"]["drift_ppm"],
                wall_s=wall,
                cp_s=cp,
            )

            k, n = int(rng.uniform(1.0, args.seconds - 8) * RATE), 6 * RATE
            recorded = read_wav(take / "mic.wav").astype(np.float64)
            at = k + np.arange(n) * (1 + fast)
            excerpt = np.stack([np.interp(at, np.arange(len(recorded)), recorded[:, c]) for c in range(2)], axis=1)
            excerpt += rng.standard_normal(excerpt.shape) * 0.01
            wav = root / f"sound_{i}.wav"
            w = WavWriter(wav, 2, RATE, "s24")
            w.write(excerpt.astype(np.float32))
            w.close()
            t_first, t_last = float(mic.t_ns_of(at[0])), float(mic.t_ns_of(at[-1]))
            drift = ((t_last - t_first) / ((n - 1) * 1e9 / RATE) - 1) * 1e6
            e, wall, cp = ingest(take, wav, "--by", "audio")
            note(
                "audio",
                offset_error_ms=(e["ingest"]["offset_ns"] - t_first) / 1e6,
                drift_error_ppm=e["ingest"]["drift_ppm"] - drift,
                wall_s=wall,
                cp_s=cp,
            )

        done = improvcap("editorial", str(take), "--to", str(root / "ed"), cwd=root)
        if done.returncode:
            raise SystemExit(done.stderr)
        made = root / "ed" / take.parent.name / take.name
        for stream, suffix, table in (("cam0", ".mov", "camera"), ("mic", ".wav", "audio")):
            e, wall, cp = ingest(take, made / (stream + suffix), "--by", "timecode")
            first = int(stream_table(take, stream, table, time_only=True)["t_ns"][0])
            note(
                f"timecode, {suffix[1:].upper()}", offset_error_ms=(e["first_t_ns"] - first) / 1e6, wall_s=wall, cp_s=cp
            )

    print(f"python bench/ingest.py --seconds {args.seconds:g} --trials {args.trials}")
    print("| method | trials | offset error, median | worst | drift error, median | worst | ingest s | cp s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for method, r in results.items():
        off = [abs(v) for v in r["offset_error_ms"]]
        drift = [abs(v) for v in r.get("drift_error_ppm", [])]
        cells = [
            method,
            str(len(off)),
            f"{statistics.median(off):.4f} ms",
            f"{max(off):.4f} ms",
            f"{statistics.median(drift):.2f} ppm" if drift else "–",
            f"{max(drift):.2f} ppm" if drift else "–",
            f"{statistics.median(r['wall_s']):.2f}",
            f"{statistics.median(r['cp_s']):.3f}",
        ]
        print("| " + " | ".join(cells) + " |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()

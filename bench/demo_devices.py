"""Demo devices' cost: CPU share of a core taken by the demo twins that stand in for hardware.

The demo devices run in every demo take and every test; they must leave most of a core to the recorder.
For SECONDS, this process reads (a) two 1280x720@30 demo cameras (rendering and hand-over), (b) one
4-channel 48 kHz demo microphone, REPEATS times each. Reported: the median share of one core (user +
system CPU seconds of this process per wall second) and what was delivered per second. The comparison a
user would make is against the device itself (a real camera costs its driver nearly nothing): so the
figure is judged against the targets below, not against another tool.

Targets: two demo cameras under 35 % of a core; the demo microphone under 25 %.

    python bench/demo_devices.py [--seconds 5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from improvcap.devices.audio_demo import DemoAudio
from improvcap.devices.camera_demo import DemoCamera
from improvcap.rig import parse_rig

RIG = """[rig]
name = "bench"
[[camera]]
name = "cam0"
driver = "demo"
[[camera]]
name = "cam1"
driver = "demo"
[[audio]]
name = "mic"
driver = "demo"
channels = 4
samplerate = 48000
"""


def measure(devices: list, seconds: float) -> tuple[float, float]:
    """Share of a core and records per second over `seconds` of reading every device."""
    for d in devices:
        d.open()
        d.start()
    try:
        for d in devices:  # past the warm-up: the first frame of each
            while d.read(0.5) is None:
                pass
        before, started, count = os.times(), time.monotonic(), 0
        while time.monotonic() - started < seconds:
            for d in devices:
                if d.read(0.005) is not None:
                    count += 1
        after, wall = os.times(), time.monotonic() - started
    finally:
        for d in devices:
            d.stop()
            d.close()
    cpu = (after.user + after.system) - (before.user + before.system)
    return cpu / wall, count / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    streams = {s.name: s for s in parse_rig(RIG, Path("bench.toml")).streams}
    out = {}
    for label, make in (
        ("two 720p30 demo cameras", lambda: [DemoCamera(streams["cam0"]), DemoCamera(streams["cam1"])]),
        ("one 4-channel 48 kHz demo microphone", lambda: [DemoAudio(streams["mic"])]),
    ):
        runs = [measure(make(), args.seconds) for _ in range(args.repeats)]
        out[label] = {
            "core_share_median": round(statistics.median(r[0] for r in runs), 3),
            "records_per_s_median": round(statistics.median(r[1] for r in runs), 1),
            "core_share_runs": [round(r[0], 3) for r in runs],
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

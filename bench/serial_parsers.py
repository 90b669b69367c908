"""Serial protocols: parser throughput on one core, and CPU of the whole serial path at a high frame rate.

1. Parser throughput: for each protocol, one minute of frames at 400 Hz (the demo emulator's own encoder,
   the protocol's default outputs, 24 channels for binary and csv) is fed to a fresh parser in 4 KiB
   chunks, REPEATS times; reported: the median time for the minute and frames per second of one core.
2. Serial path CPU: the emulator of each protocol runs in a child process at RATE Hz on a pseudo-terminal;
   this process reads it for SECONDS through the real `serial` driver (pyserial, reader thread, parser,
   unwrapping) and consumes every sample as the recorder's pump would. Reported: CPU seconds of this
   process per second of data and as a share of one core, frames received, parser errors.

    python bench/serial_parsers.py [--repeats 5] [--rate 2000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from improvcap.devices.mocap_emulator import BOOT_NS, MocapEmulator, make_codec
from improvcap.devices.mocap_serial import SerialMocap
from improvcap.protocols import make_parser
from improvcap.rig import StreamSpec, parse_rig

PROTOCOLS = ("binary", "csv", "xsens", "vectornav")
CHUNK = 4096


def spec(protocol: str, rate: float) -> StreamSpec:
    channels = "channels = 24\n" if protocol in ("binary", "csv") else ""
    text = (
        f'[rig]\nname = "bench"\n[[mocap]]\nname = "imu"\ndriver = "demo"\nprotocol = "{protocol}"\n'
        f"rate = {rate}\n{channels}"
    )
    return parse_rig(text, Path("bench.toml")).streams[0]


def recorded_minute(protocol: str, rate: float = 400.0) -> tuple[bytes, int]:
    """One minute of the emulator's frames as bytes on the wire, and how many frames."""
    s = spec(protocol, rate)
    codec = make_codec(s.settings)
    emulator = MocapEmulator(s)  # for its channel count and value model only; never started
    try:
        n = int(60 * rate)
        period = 1e9 / rate
        values = [tuple(float(i % 90) + c * 0.25 for c in range(emulator.channels)) for i in range(64)]
        data = b"".join(codec.encode(k, BOOT_NS + round(k * period), values[k % 64]) for k in range(n))
    finally:
        emulator.close()
    return data, n


def parse_time(protocol: str, data: bytes, frames: int) -> float:
    parser = make_parser(spec(protocol, 400.0).settings)
    start = time.perf_counter()
    got = 0
    for i in range(0, len(data), CHUNK):
        got += len(parser.feed(data[i : i + CHUNK]))
    elapsed = time.perf_counter() - start
    if got != frames:
        raise SystemExit(f"{protocol}: parsed {got} of {frames} frames")
    return elapsed


CHILD = """
import sys, time
import importlib.util
from improvcap.devices.mocap_emulator import MocapEmulator
spec_mod = importlib.util.spec_from_file_location("bench_serial", {path!r})
m = importlib.util.module_from_spec(spec_mod); spec_mod.loader.exec_module(m)
e = MocapEmulator(m.spec({protocol!r}, {rate}))
print(e.port_name, flush=True)
sys.stdin.readline()          # the reader has the port open: stream
e.start()
time.sleep({seconds} + 1.0)
e.close()
"""


def serial_path_cpu(protocol: str, rate: float, seconds: float) -> dict[str, float | int]:
    code = CHILD.format(path=str(Path(__file__).resolve()), protocol=protocol, rate=rate, seconds=seconds)
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdin is not None
        port = child.stdout.readline().strip()
        driver = SerialMocap(spec(protocol, rate), port=port)
        driver.open()
        driver.start()
        child.stdin.write("go\n")
        child.stdin.flush()
        while driver.read(0.5) is None:  # the first frame
            pass
        frames = 0
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            if driver.read(0.2) is not None:
                frames += 1
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
        stats = driver.stats()
        driver.close()
    finally:
        child.kill()
        child.wait()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "frames": frames,
        "frames_per_s": round(frames / wall, 1),
        "cpu_s_per_s": round(cpu / wall, 4),
        "core_percent": round(100 * cpu / wall, 2),
        "errors": stats.get("crc_errors", 0) + stats.get("parse_errors", 0),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rate", type=float, default=2000.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    parsers, paths = {}, {}
    for protocol in PROTOCOLS:
        data, n = recorded_minute(protocol)
        times = [parse_time(protocol, data, n) for _ in range(args.repeats)]
        t = statistics.median(times)
        parsers[protocol] = {
            "frames": n,
            "bytes": len(data),
            "minute_s_median": round(t, 4),
            "frames_per_s": round(n / t),
            "runs_s": [round(x, 4) for x in times],
        }
        print(f"{protocol}: a minute at 400 Hz parses in {t * 1e3:.1f} ms ({n / t:,.0f} frames/s)", file=sys.stderr)
    for protocol in PROTOCOLS:
        paths[protocol] = serial_path_cpu(protocol, args.rate, args.seconds)
        print(f"{protocol} at {args.rate:g} Hz: {paths[protocol]}", file=sys.stderr)
    print(
        json.dumps(
            {
                "command": " ".join(["bench/serial_parsers.py", *sys.argv[1:]]),
                "parser_400hz_minute": parsers,
                f"serial_path_{args.rate:g}hz": paths,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

"""The demo LSL sender: a child process publishing a physiological stream as a real LSL outlet.

Heart rate (bpm) and skin conductance (µS) at `rate` Hz, each sample stamped with this process's own
`local_clock` at its scheduled instant plus `jitter_ms` of normal jitter (the sample clock of a wristband
forwarded by its app). The parent (improvcap.devices.lsl_demo) runs it under libfaketime when the sender's
clock is to drift or be offset (`drift_ppm`, `offset_ms`), so that liblsl's own time probes see that clock,
as they would a second PC's.

Its standard input takes `slate <true_ns>` lines (a time on the parent's clock): the first sample at or
after it carries a spike on every channel. Its standard output tells the parent, per sample,
`<n> <true_ns> <stamp>`: the instant it was scheduled for on the parent's clock and its LSL stamp, read with
the raw clock_gettime system call (which libfaketime does not see) less this process's time-namespace
offset, if any.
"""

from __future__ import annotations

import argparse
import ctypes
import math
import os
import select
import sys
import time

_SYS_CLOCK_GETTIME = 228  # x86_64
_CLOCK_MONOTONIC = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _namespace_offset_ns() -> int:
    """How far this process's CLOCK_MONOTONIC is ahead of the parent's (a time namespace), in ns."""
    try:
        with open("/proc/self/timens_offsets") as fh:
            for line in fh:
                parts = line.split()
                if parts and parts[0] in ("monotonic", "1"):
                    return int(parts[1]) * 1_000_000_000 + int(parts[2])
    except OSError:
        pass
    return 0


_LIBC = ctypes.CDLL(None, use_errno=True)
_RAW = os.uname().machine == "x86_64"  # the system call number above is x86_64's
_TS = _Timespec()


def _raw_monotonic_ns() -> int:
    """CLOCK_MONOTONIC straight from the kernel, past any LD_PRELOAD clock (libfaketime). Called per sample."""
    if not _RAW or _LIBC.syscall(_SYS_CLOCK_GETTIME, _CLOCK_MONOTONIC, ctypes.byref(_TS)) != 0:
        return time.monotonic_ns()
    return _TS.tv_sec * 1_000_000_000 + _TS.tv_nsec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="improvcap-lsl-sender")
    ap.add_argument("--name", required=True)
    ap.add_argument("--type", default="Physio")
    ap.add_argument("--source-id", required=True)
    ap.add_argument("--rate", type=float, default=32.0)
    ap.add_argument("--jitter-ms", type=float, default=0.0)
    ap.add_argument("--seconds", type=float, default=0.0, help="stop after this long (0: until stdin closes)")
    ap.add_argument("--channels", type=int, default=2, help="2: heart rate and skin conductance; more: and noise")
    ap.add_argument("--quiet", action="store_true", help="no truth lines (a load test)")
    args = ap.parse_args(argv)

    import numpy as np
    import pylsl

    info = pylsl.StreamInfo(args.name, args.type, args.channels, args.rate, "float32", args.source_id)
    channels = info.desc().append_child("channels")
    extra = [(f"noise{i:02d}", "") for i in range(args.channels - 2)]
    for label, unit in (("heart_rate", "bpm"), ("skin_conductance", "uS"), *extra):
        ch = channels.append_child("channel")
        ch.append_child_value("label", label)
        ch.append_child_value("unit", unit)
    info.desc().append_child_value("manufacturer", "improvcap demo")
    outlet = pylsl.StreamOutlet(info, chunk_size=1)
    rng = np.random.default_rng()
    noise = rng.normal(0, 1, (256, len(extra))).tolist()  # precomputed: a 1 kHz sender must keep up
    ns_offset = _namespace_offset_ns()
    period_ns = 1e9 / args.rate
    # the schedule on the true (kernel) clock; each stamp is read from this process's own clock
    true0 = _raw_monotonic_ns() - ns_offset + 500_000_000
    slates: list[int] = []
    print("ready", flush=True)
    n = 0
    try:
        while args.seconds <= 0 or n < args.seconds * args.rate:
            due_true = true0 + round(n * period_ns)
            # sleep on the true clock: libfaketime scales sleeps as it scales the clock
            while (left := due_true - (_raw_monotonic_ns() - ns_offset)) > 0:
                ready, _, _ = select.select([sys.stdin], [], [], min(left / 1e9, 0.05))
                if ready:
                    line = sys.stdin.readline()
                    if not line:
                        return 0
                    if line.startswith("slate "):
                        slates.append(int(line.split()[1]))
            now_true = _raw_monotonic_ns() - ns_offset
            now_local = pylsl.local_clock()
            # this sample's instant on our own clock: now, less how late we woke, plus the sample clock's jitter
            stamp = now_local - (now_true - due_true) / 1e9 + rng.normal(0.0, args.jitter_ms / 1e3)
            t = n / args.rate
            values = [
                70.0 + 8.0 * math.sin(2 * math.pi * t / 20.0) + rng.normal(0, 0.3),
                4.0 + 0.5 * math.sin(2 * math.pi * t / 45.0) + rng.normal(0, 0.01),
                *noise[n % len(noise)],
            ]
            if slates and due_true >= slates[0]:
                slates.pop(0)
                values = [250.0, 40.0, *[50.0] * len(extra)]  # the spike: far outside every signal's range
            if not args.quiet:
                print(n, due_true, repr(stamp), flush=True)  # before the sample: its truth is there when it arrives
            outlet.push_sample(values, stamp)
            n += 1
    except (BrokenPipeError, KeyboardInterrupt):
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())

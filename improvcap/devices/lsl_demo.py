"""Demo twin of an LSL sensor (`[[lsl]] driver = "demo"`): a child process publishing heart rate and skin
conductance as a real LSL outlet (improvcap.devices.lsl_sender), read through the real `lsl` driver.

Everything from the outlet on — liblsl's discovery, transport and time probes, the inlet, the clock
offsets — is the code path of a real sensor app. `drift_ppm` and `offset_ms` give the sender a clock of
its own: the child runs under libfaketime (Debian package libfaketime), which makes its CLOCK_MONOTONIC,
and so its LSL `local_clock`, run that much fast and ahead, as liblsl's probes then measure. Samples
carry the child's ground truth (`true_ns`, the instant each was scheduled for on our clock); slates are
sent to the child, which puts a spike on every channel of the first sample at or after the slate.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from ..errors import DeviceError
from ..records import Sample
from ..rig import StreamSpec
from .lsl_inlet import LslInlet

FAKETIME_LIBS = (
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/faketime/libfaketimeMT.so.1",
)
TRUTH_KEPT = 1 << 16


def faketime_library() -> str | None:
    return next((p for p in FAKETIME_LIBS if Path(p).exists()), None)


class DemoLsl:
    def __init__(self, spec: StreamSpec) -> None:
        self.spec = spec
        self.source_id = f"improvcap-demo-{spec.name}-{os.getpid()}-{id(self):x}"
        inlet_spec = dataclasses.replace(spec, settings={**spec.settings, "stream": f"source_id='{self.source_id}'"})
        self._inlet = LslInlet(inlet_spec)
        self._child: subprocess.Popen[str] | None = None
        self._truth: dict[int, int] = {}  # the child's stamps, in µs -> the true instant (ns, our clock)
        self._order: collections.deque[int] = collections.deque()
        self._truth_lock = threading.Lock()
        self._reader: threading.Thread | None = None

    def _environment(self) -> dict[str, str]:
        s = self.spec.settings
        env = dict(os.environ)
        if s["drift_ppm"] or s["offset_ms"]:
            lib = faketime_library()
            if lib is None:
                raise DeviceError(
                    f"{self.spec.name}: drift_ppm and offset_ms of a demo LSL sender need libfaketime "
                    "(apt install libfaketime)"
                )
            env.update(
                {
                    "LD_PRELOAD": lib,
                    "FAKETIME_NO_CACHE": "1",
                    "DONT_FAKE_MONOTONIC": "0",
                    "FAKETIME": f"{s['offset_ms'] / 1e3:+.6f} x{1 + s['drift_ppm'] * 1e-6:.9f}",
                }
            )
        return env

    def open(self) -> None:
        if self._child is not None:
            return
        s = self.spec.settings
        cmd = [
            sys.executable,
            "-m",
            "improvcap.devices.lsl_sender",
            "--name",
            f"improvcap-demo-{self.spec.name}",
            "--source-id",
            self.source_id,
            "--rate",
            str(s["rate"]),
            "--jitter-ms",
            str(s["jitter_ms"]),
        ]
        self._child = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=self._environment(),
            start_new_session=True,
        )
        try:
            ready = self._child.stdout.readline() if self._child.stdout else ""
            if not ready.startswith("ready"):
                raise DeviceError(f"{self.spec.name}: the demo LSL sender did not start")
            self._reader = threading.Thread(target=self._read_truth, name=f"lsl-demo-{self.spec.name}", daemon=True)
            self._reader.start()
            self._inlet.open()
        except BaseException:
            self.close()
            raise

    def _read_truth(self) -> None:
        assert self._child is not None and self._child.stdout is not None
        for line in self._child.stdout:
            parts = line.split()
            if len(parts) == 3:
                key = round(float(parts[2]) * 1e6)
                with self._truth_lock:
                    self._truth[key] = int(parts[1])
                    self._order.append(key)
                    while len(self._order) > TRUTH_KEPT:  # samples from before the inlet connected
                        self._truth.pop(self._order.popleft(), None)

    def start(self) -> None:
        self._inlet.start()

    def read(self, timeout: float) -> Sample | None:
        sample = self._inlet.read(timeout)
        if sample is None or sample.count == 0 or not self.spec.settings["truth"]:
            return sample
        with self._truth_lock:  # matched by its stamp: the inlet sees only what was sent once it connected
            key = round(sample.device_ns / 1e3)
            true_ns = next((self._truth[k] for k in (key, key - 1, key + 1) if k in self._truth), None)
        return dataclasses.replace(sample, true_ns=true_ns)

    def stop(self) -> None:
        self._inlet.stop()

    def close(self) -> None:
        self._inlet.close()
        child, self._child = self._child, None
        if child is not None:
            for stream in (child.stdin,):
                try:
                    if stream:
                        stream.close()
                except OSError:
                    pass
            try:
                child.wait(timeout=2)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

    def describe(self) -> dict[str, Any]:
        return {
            **self._inlet.describe(),
            "demo": {k: self.spec.settings[k] for k in ("drift_ppm", "jitter_ms", "offset_ms")},
        }

    def stats(self) -> dict[str, int]:
        return self._inlet.stats()

    def to_host(self, device_ns: int) -> int:
        return self._inlet.to_host(device_ns)

    def slate(self, host_ns: int) -> None:
        child = self._child
        if child is not None and child.stdin is not None:
            try:
                child.stdin.write(f"slate {int(host_ns)}\n")
                child.stdin.flush()
            except OSError:
                pass

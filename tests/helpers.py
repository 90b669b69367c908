"""What the tests share: streams and rig files as a technician writes them, and reading a device.

`from helpers import camera_spec, collect, ...` in a test module. A spec is parsed from rig text by
`parse_rig`, so it holds exactly what a rig file gives (schema defaults filled in, checks applied); a
rig error names the file `t.toml`.
"""
from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from improvcap.devices.base import StreamEnded
from improvcap.records import Sample
from improvcap.rig import StreamSpec, parse_rig

SERIAL_PLACEHOLDER = "/dev/null"  # the port of a serial stream that is never opened


def table(kind: str, **keys: object) -> str:
    """One `[[kind]]` table of a rig file; values are written as TOML (strings, numbers, booleans, lists)."""
    return f"[[{kind}]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items())


def rig_text(name: str, *tables: str) -> str:
    """A rig file named `name` with the given stream tables."""
    return f"[rig]\nname = {json.dumps(name)}\n" + "".join(tables)


def demo_rig(name: str, *, cameras: Sequence[str] = ("cam0",), audio: str | None = "mic", mocap: str | None = "suit",
             size: tuple[int, int] = (320, 240), fps: float = 30, channels: int = 2, samplerate: int = 48000,
             mocap_channels: int = 8, rate: int = 240, master: str | None = None,
             settings: Mapping[str, Mapping[str, object]] | None = None, tables: Sequence[str] = (),
             rig_keys: Mapping[str, object] | None = None) -> str:
    """The text of a rig of demo devices, as a technician writes it: `cameras` at `size` and `fps`, a
    microphone `audio` with `channels` at `samplerate`, a suit `mocap` (an emulator on a pseudo-terminal read
    through the real serial driver) with `mocap_channels` at `rate` (binary and csv frames; the other
    protocols' channels follow from their outputs); `settings[stream]`: that stream's other
    keys (truth, drift_ppm, offset_ms, drop_rate, ...), or its own value of a key given above (a camera's
    `fps`, `width`, a suit's `protocol`, ...); `tables`: more tables (`table(...)`) at the end; `rig_keys`:
    the `[rig]` table's other keys (timecode, lsl_outlets, group)."""
    own = dict(settings or {})
    width, height = size
    streams = [table("camera", **{"name": cam, "driver": "demo", "width": width, "height": height, "fps": fps,
                                  **own.pop(cam, {})}) for cam in cameras]
    if audio is not None:
        streams.append(table("audio", **{"name": audio, "driver": "demo", "channels": channels,
                                         "samplerate": samplerate, **own.pop(audio, {})}))
    if mocap is not None:
        suit = {"name": mocap, "driver": "demo", "protocol": "binary", "rate": rate, **own.pop(mocap, {})}
        if suit["protocol"] in ("binary", "csv"):  # the other protocols' channels follow from their outputs
            suit.setdefault("channels", mocap_channels)
        streams.append(table("mocap", **suit))
    assert not own, f"settings for streams the rig does not have: {sorted(own)}"
    head = f"[rig]\nname = {json.dumps(name)}\n" + (f"master = {json.dumps(master)}\n" if master else "")
    head += "".join(f"{k} = {json.dumps(v)}\n" for k, v in (rig_keys or {}).items())
    return head + "\n".join([*streams, *tables])


def stream_spec(kind: str, driver: str, name: str, **keys: object) -> StreamSpec:
    """The spec of one stream of `kind`, as a rig file gives it. A serial stream without a port gets a
    placeholder (nothing is opened until open())."""
    if driver == "serial":
        keys.setdefault("port", SERIAL_PLACEHOLDER)
    return parse_rig(rig_text("t", table(kind, name=name, driver=driver, **keys)), Path("t.toml")).streams[0]


def camera_spec(driver: str, name: str = "cam0", **settings: object) -> StreamSpec:
    return stream_spec("camera", driver, name, **settings)


def audio_spec(driver: str, name: str = "room", **settings: object) -> StreamSpec:
    return stream_spec("audio", driver, name, **settings)


def mocap_spec(driver: str = "demo", name: str = "suit", **keys: object) -> StreamSpec:
    """A mocap stream at 240 Hz; binary and csv frames carry 24 values unless `channels` says otherwise (the
    other protocols' channels follow from their outputs)."""
    own_channels = keys.get("protocol", "binary") in ("binary", "csv")
    return stream_spec("mocap", driver, name, **{"rate": 240, **({"channels": 24} if own_channels else {}), **keys})


def sync_spec(driver: str = "demo", name: str = "box", **keys: object) -> StreamSpec:
    return stream_spec("sync", driver, name, **keys)


def write_rig(folder: Path, name: str, body: str) -> Path:
    """`folder/rigs/<name>.toml`, a rig named `name` with `body` (its stream tables, or a whole rig's text
    from `demo_rig`)."""
    (folder / "rigs").mkdir(exist_ok=True)
    path = folder / "rigs" / f"{name}.toml"
    path.write_text(body if body.startswith("[rig]") else f'[rig]\nname = "{name}"\n{body}')
    return path


def rows_on_disk(path: Path) -> int:
    """The whole rows (header not counted) of a take's table that reached the disk so far; 0 before it exists."""
    return max(0, path.read_bytes().count(b"\n") - 1) if path.exists() else 0


def samples_on_disk(blocks: Path) -> int:
    """The samples an audio stream's `<name>.blocks.csv` says reached the disk so far (whole rows only)."""
    if not blocks.exists():
        return 0
    lines = blocks.read_bytes().split(b"\n")[:-1]
    if not lines:
        return 0
    frames = lines[0].split(b",").index(b"frames")
    return sum(int(line.split(b",")[frames]) for line in lines[1:])


def wait_for(done: Callable[[], Any], what: str, proc: subprocess.Popen[Any] | None = None,
             timeout: float = 60.0) -> Any:
    """Poll `done()` until it is true and return its value; the process `proc` (if any) must stay alive
    meanwhile, and `what` names the event in the failure after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not (value := done()):
        if proc is not None:
            assert proc.poll() is None, f"exited before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"no {what} in {timeout:g} s"
        time.sleep(0.05)
    return value


def collect(device: Any, seconds: float) -> list[Sample]:
    """Every sample `device` delivers in the next `seconds`."""
    out: list[Sample] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if (s := device.read(0.1)) is not None:
            out.append(s)
    return out


def collect_frames(device: Any, frames: int, timeout: float) -> list[Sample]:
    """Samples until they hold `frames` frames (an audio block holds many, a video frame one), `timeout`
    s pass or the source ends (a file)."""
    got: list[Sample] = []
    deadline = time.monotonic() + timeout
    try:
        while sum(s.count for s in got) < frames and time.monotonic() < deadline:
            if (s := device.read(0.2)) is not None:
                got.append(s)
    except StreamEnded:
        pass
    return got


def drain(device: Any, quiet: float = 0.3) -> list[Sample]:
    """The samples still coming, until `device` stays quiet for `quiet` s."""
    out: list[Sample] = []
    while (s := device.read(quiet)) is not None:
        out.append(s)
    return out


def run_for(device: Any, seconds: float) -> tuple[list[Sample], dict[str, int]]:
    """Open and start `device`, collect for `seconds`, stop it and take what is still coming: the samples
    and the device's stats at the end. The device is closed whatever happens."""
    try:
        device.open()
        device.start()
        samples = collect(device, seconds)
        device.stop()
        samples += drain(device)
        return samples, device.stats()
    finally:
        device.close()


def crc16_bitwise(data: bytes, init: int) -> int:
    """CRC-16 with polynomial 0x1021, unreflected, straight from its definition (init 0xFFFF: CCITT-FALSE,
    init 0: XMODEM), to check the fast implementations against."""
    crc = init
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def fit_bound_ns(fit: Any) -> float:
    """How far a round-trip fit's mapping may be from the truth, by its own account: each window minimum's
    midpoint is within half its RTT of the truth (the box reads its clock between the query's send and the
    reply's receipt), and the line through them within about that (the median half RTT, half again for the
    minima above it) plus their scatter about the line. A loaded machine slows the replies, and so widens
    the bound by exactly what it costs."""
    return 1.5 * fit.half_rtt_ns + fit.residual_p99_ns


def arrival_lift_ns(host_ns: Any, true_ns: Any, window_ns: int) -> int:
    """How far a machine's load lifted the arrivals a clock fit hugs: per window of the fit (`window_ns`, as
    the take's clock entry states it), the least delay of an arrival past its row's true time, above the
    least of the whole take. The fit's line follows those window minima (a lower envelope), so a loaded
    machine that delays every arrival of a window moves it by that much; on an idle machine the lift is a
    few µs. Bounds on a fit's accuracy against the truth widen by exactly this."""
    import numpy as np

    host, true = np.asarray(host_ns, np.int64), np.asarray(true_ns, np.int64)
    delay = host - true
    windows = (true - true[0]) // window_ns
    minima = np.array([delay[windows == w].min() for w in np.unique(windows)])
    return int(minima.max() - minima.min())

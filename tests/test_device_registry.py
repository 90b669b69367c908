"""Every driver in the registry implements the device protocol, and records where this machine allows.

One test per (kind, driver) of `improvcap.registry.DRIVERS`. The driver class, built from a spec of a
small rig file, must be a `Device` with every method of the protocol. Then it records a few samples from
the rig's stream: demo twins always; real drivers from what this machine has (FFmpeg's lavfi test
source, a clip written with PyAV for OpenCV, the PulseAudio daemon of `pulse_audio` for PortAudio, a
pty emulator for the serial drivers), skipped with the reason when it lacks it. A driver added to the
registry without a way to record it here fails, so that its author adds one to RECORDABLE.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Callable

import av
import numpy as np
import pytest

from improvcap.devices import Device, driver_class
from improvcap.devices.mocap_emulator import MocapEmulator
from improvcap.devices.sync_emulator import SyncBoxEmulator
from improvcap.records import Sample
from improvcap.registry import DRIVERS
from improvcap.rig import StreamSpec, parse_rig

from helpers import rig_text, table

METHODS = ("open", "start", "read", "stop", "close", "describe", "stats", "slate")
SAMPLES = 12
TIMEOUT_S = 10.0
LAVFI = "lavfi:testsrc2=size=320x240:rate=30"

# (kind, driver) -> the keys of its stream table (name and driver aside) in a small rig; the serial
# drivers' ports and the OpenCV clip are filled in by RECORDABLE once they exist
STREAMS: dict[tuple[str, str], dict[str, Any]] = {
    ("camera", "demo"): {"width": 320, "height": 240, "fps": 30},
    ("camera", "opencv"): {"source": "clip.mkv", "width": 160, "height": 120, "fps": 30},
    ("camera", "ffmpeg"): {"source": LAVFI, "width": 320, "height": 240, "fps": 30},
    ("audio", "demo"): {"channels": 2},
    ("audio", "portaudio"): {"device": "pulse", "channels": 1},
    ("mocap", "demo"): {"rate": 240, "channels": 6},
    ("mocap", "serial"): {"port": "/dev/null", "rate": 240, "channels": 6},
    ("sync", "demo"): {"trigger_fps": 30},
    ("sync", "serial"): {"port": "/dev/null", "trigger_fps": 30},
    ("lsl", "demo"): {"rate": 32},
    ("lsl", "lsl"): {"stream": "source_id='nobody'", "timeout_s": 2},
}


def stream(kind: str, driver: str, **keys: Any) -> StreamSpec:
    """The one stream of a small rig file, parsed as `improvcap record` parses it."""
    text = rig_text("registry", table(kind, name=f"{kind}0", driver=driver, **{**STREAMS[(kind, driver)], **keys}))
    return parse_rig(text, Path("registry.toml")).streams[0]


# --- what each driver records from ------------------------------------------------------------------
# each returns the spec to record with and what to call once the device has started (the emulated
# hardware starts streaming); `stack` closes what it made

Started = Callable[[], None]


def _nothing() -> None:
    pass


def _as_is(kind: str, driver: str) -> Callable[..., tuple[StreamSpec, Started]]:
    return lambda request, tmp_path, stack: (stream(kind, driver), _nothing)


def _ffmpeg_lavfi(request: pytest.FixtureRequest, tmp_path: Path,
                  stack: contextlib.ExitStack) -> tuple[StreamSpec, Started]:
    if "lavfi" not in av.formats_available:
        pytest.skip("this PyAV build has no lavfi input (libavfilter), the ffmpeg driver's test source")
    return stream("camera", "ffmpeg"), _nothing


def _opencv_clip(request: pytest.FixtureRequest, tmp_path: Path,
                 stack: contextlib.ExitStack) -> tuple[StreamSpec, Started]:
    if "mjpeg" not in av.codecs_available:
        pytest.skip("this PyAV build has no MJPEG encoder to write a clip for OpenCV")
    clip = tmp_path / "clip.mkv"
    with av.open(str(clip), "w") as out:
        video = out.add_stream("mjpeg", rate=30)
        video.width, video.height, video.pix_fmt = 160, 120, "yuvj420p"
        for i in range(2 * SAMPLES):
            frame = av.VideoFrame.from_ndarray(np.full((120, 160, 3), 8 * i, np.uint8), format="rgb24")
            out.mux(video.encode(frame))
        out.mux(video.encode())
    return stream("camera", "opencv", source=str(clip)), _nothing


def _portaudio_pulse(request: pytest.FixtureRequest, tmp_path: Path,
                     stack: contextlib.ExitStack) -> tuple[StreamSpec, Started]:
    request.getfixturevalue("pulse_server")  # skips when PulseAudio is not installed
    from improvcap.devices.audio_portaudio import list_audio_inputs

    if not any(d["name"] == "pulse" for d in list_audio_inputs()):
        pytest.skip("PortAudio lists no 'pulse' input (is libasound2-plugins installed?)")
    return stream("audio", "portaudio"), _nothing


def _serial_mocap(request: pytest.FixtureRequest, tmp_path: Path,
                  stack: contextlib.ExitStack) -> tuple[StreamSpec, Started]:
    emulator = MocapEmulator(stream("mocap", "demo"))
    stack.callback(emulator.close)
    return stream("mocap", "serial", port=emulator.port_name), emulator.start  # reader first, then frames


def _serial_sync(request: pytest.FixtureRequest, tmp_path: Path,
                 stack: contextlib.ExitStack) -> tuple[StreamSpec, Started]:
    emulator = SyncBoxEmulator(stream("sync", "demo"))
    stack.callback(emulator.close)
    emulator.start()  # powered on before the driver opens: it identifies the box there
    return stream("sync", "serial", port=emulator.port_name), _nothing


def _lsl_sender(request: pytest.FixtureRequest, tmp_path: Path,
                stack: contextlib.ExitStack) -> tuple[StreamSpec, Started]:
    from test_lsl import start_sender

    sender = start_sender(rate=100.0)
    stack.callback(sender.stop)
    return stream("lsl", "lsl", stream=f"source_id='{sender.source_id}'"), _nothing


RECORDABLE: dict[tuple[str, str], Callable[..., tuple[StreamSpec, Started]]] = {
    ("camera", "demo"): _as_is("camera", "demo"),
    ("camera", "opencv"): _opencv_clip,
    ("camera", "ffmpeg"): _ffmpeg_lavfi,
    ("audio", "demo"): _as_is("audio", "demo"),
    ("audio", "portaudio"): _portaudio_pulse,
    ("mocap", "demo"): _as_is("mocap", "demo"),
    ("mocap", "serial"): _serial_mocap,
    ("sync", "demo"): _as_is("sync", "demo"),
    ("sync", "serial"): _serial_sync,
    ("lsl", "demo"): _as_is("lsl", "demo"),
    ("lsl", "lsl"): _lsl_sender,
}


def read_samples(device: Device, count: int, timeout: float) -> list[Sample]:
    got: list[Sample] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        if (s := device.read(0.2)) is not None:
            got.append(s)
    return got


@pytest.mark.parametrize(("kind", "driver"), list(DRIVERS), ids=[f"{k}-{d}" for k, d in DRIVERS])
def test_driver_implements_the_device_protocol_and_records(kind: str, driver: str, request: pytest.FixtureRequest,
                                                           tmp_path: Path) -> None:
    assert (kind, driver) in STREAMS and (kind, driver) in RECORDABLE, \
        f"{kind}/{driver}: add its stream to STREAMS and how it records here to RECORDABLE"
    try:
        cls = driver_class(kind, driver)
    except OSError as e:  # a native library the driver binds to (PortAudio) is missing
        pytest.skip(f"{kind}/{driver} cannot be loaded on this machine: {e}")

    unopened = cls(stream(kind, driver))
    assert isinstance(unopened, Device)
    for method in METHODS:
        assert callable(getattr(unopened, method)), f"{cls.__name__}.{method}"
    unopened.close()  # safe before open

    with contextlib.ExitStack() as stack:
        spec, started = RECORDABLE[(kind, driver)](request, tmp_path, stack)
        device = cls(spec)
        stack.callback(device.close)
        device.open()
        device.start()
        started()
        samples = read_samples(device, SAMPLES, TIMEOUT_S)
        device.stop()
        assert isinstance(device.describe(), dict) and isinstance(device.stats(), dict)

    assert len(samples) == SAMPLES, f"{kind}/{driver}: {len(samples)} samples in {TIMEOUT_S:g} s"
    assert all(isinstance(s, Sample) for s in samples)
    hosts = [s.host_ns for s in samples]
    # non-decreasing: the frames that one serial read completes share that read's time
    assert all(a <= b for a, b in zip(hosts, hosts[1:])) and hosts[-1] > hosts[0], hosts

"""Device drivers and their demo twins, picked by the rig file's (kind, driver)."""
from __future__ import annotations

import importlib

from ..rig import StreamSpec
from .base import Device, DeviceError, SampleBuffer, StreamEnded

# (kind, driver) -> "module:Class"; imported on use so that `rig check` of a camera rig needs no audio stack
REGISTRY: dict[tuple[str, str], str] = {
    ("camera", "demo"): "improvcap.devices.camera_demo:DemoCamera",
    ("camera", "ffmpeg"): "improvcap.devices.camera_ffmpeg:FfmpegCamera",
    ("camera", "opencv"): "improvcap.devices.camera_opencv:OpenCVCamera",
    ("audio", "demo"): "improvcap.devices.audio_demo:DemoAudio",
    ("audio", "portaudio"): "improvcap.devices.audio_portaudio:PortAudioInput",
    ("mocap", "demo"): "improvcap.devices.mocap_demo:DemoMocap",
    ("mocap", "serial"): "improvcap.devices.mocap_serial:SerialMocap",
    ("sync", "demo"): "improvcap.devices.sync_box_demo:DemoSyncBox",
    ("sync", "serial"): "improvcap.devices.sync_box:SerialSyncBox",
}


def driver_class(kind: str, driver: str) -> type:
    module, _, cls = REGISTRY[(kind, driver)].partition(":")
    return getattr(importlib.import_module(module), cls)


def make_device(spec: StreamSpec) -> Device:
    """An unopened device for one rig stream."""
    device = driver_class(spec.kind, spec.driver)(spec)
    if spec.get("fail_after_s"):
        from .scripted_fault import FailAfter
        return FailAfter(device, spec["fail_after_s"])  # type: ignore[return-value]
    return device


__all__ = ["Device", "DeviceError", "SampleBuffer", "StreamEnded", "REGISTRY", "driver_class", "make_device"]

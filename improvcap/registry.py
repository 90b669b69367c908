"""What a rig file may name: the drivers of each stream kind and the serial wire protocols.

One table each, of names and import paths only (nothing is imported until a rig uses it), so that the rig
check, the device factory and the protocol lookup all read the same lists. To add a driver, write
`devices/<kind>_<driver>.py` and add its line to DRIVERS; to add a serial protocol, write
`protocols/<name>.py` and add its line to PROTOCOLS.
"""

from __future__ import annotations

# (kind, driver) -> "module:Class"
DRIVERS: dict[tuple[str, str], str] = {
    ("camera", "demo"): "improvcap.devices.camera_demo:DemoCamera",
    ("camera", "opencv"): "improvcap.devices.camera_opencv:OpenCVCamera",
    ("camera", "ffmpeg"): "improvcap.devices.camera_ffmpeg:FfmpegCamera",
    ("audio", "demo"): "improvcap.devices.audio_demo:DemoAudio",
    ("audio", "portaudio"): "improvcap.devices.audio_portaudio:PortAudioInput",
    ("mocap", "demo"): "improvcap.devices.mocap_demo:DemoMocap",
    ("mocap", "serial"): "improvcap.devices.mocap_serial:SerialMocap",
    ("sync", "demo"): "improvcap.devices.sync_demo:DemoSyncBox",
    ("sync", "serial"): "improvcap.devices.sync_serial:SerialSyncBox",
    ("lsl", "lsl"): "improvcap.devices.lsl_inlet:LslInlet",
    ("lsl", "demo"): "improvcap.devices.lsl_demo:DemoLsl",
}

# serial protocol name -> module that speaks it (see improvcap.protocols for its face)
PROTOCOLS: dict[str, str] = {
    "binary": "improvcap.protocols.binary",
    "csv": "improvcap.protocols.csv_lines",
    "xsens": "improvcap.protocols.xsens",
    "vectornav": "improvcap.protocols.vectornav",
}


def drivers(kind: str) -> tuple[str, ...]:
    """The driver names a rig may give a stream of `kind`, in registry order."""
    return tuple(driver for k, driver in DRIVERS if k == kind)

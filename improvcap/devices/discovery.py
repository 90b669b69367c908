"""`improvcap devices`: what a technician can put in a rig file on this machine."""
from __future__ import annotations

from typing import Any


def discover() -> dict[str, Any]:
    """Cameras, audio inputs and serial ports; a kind whose stack is missing becomes a note."""
    found: dict[str, Any] = {"cameras": [], "audio_inputs": [], "serial_ports": [], "notes": []}
    try:
        from .camera_ffmpeg import list_cameras
        found["cameras"] = list_cameras()
    except Exception as e:  # listing must never stop the others
        found["notes"].append(f"cameras: {e}")
    try:
        from .audio_portaudio import list_audio_inputs
        found["audio_inputs"] = list_audio_inputs()
    except Exception as e:
        found["notes"].append(f"audio: {e}")
    try:
        from .mocap_serial import list_serial_ports
        found["serial_ports"] = list_serial_ports()
    except Exception as e:
        found["notes"].append(f"serial: {e}")
    if not found["audio_inputs"]:
        found["notes"].append("no audio inputs: PortAudio lists none (is a sound server or card present?)")
    return found

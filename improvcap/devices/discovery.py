"""`improvcap devices`: what a technician can put in a rig file on this machine."""

from __future__ import annotations

from typing import Any


def discover() -> dict[str, Any]:
    """Cameras, audio inputs, serial ports and the LSL streams on the network; a kind whose stack is missing
    becomes a note."""
    found: dict[str, Any] = {"cameras": [], "audio_inputs": [], "serial_ports": [], "lsl_streams": [], "notes": []}
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
        from .serial_port import list_serial_ports

        found["serial_ports"] = list_serial_ports()
    except Exception as e:
        found["notes"].append(f"serial: {e}")
    try:
        from .lsl_inlet import list_lsl_streams

        found["lsl_streams"] = list_lsl_streams()
    except Exception as e:
        found["notes"].append(f"lsl: {e}")
    if not found["audio_inputs"]:
        found["notes"].append("no audio inputs: PortAudio lists none (is a sound server or card present?)")
    return found

"""Media as other recorders make it, with a truth the caller keeps: a camera's video with slate flashes
at chosen frames, a field recorder's WAV with beeps at chosen samples and LTC from a chosen frame."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from improvcap.ltc import LtcEncoder
from improvcap.take.timecode import TimecodeRate
from improvcap.take.wav import WavWriter

from helpers import demo_rig

RATE = 48000
FPS = 30
# a rig whose take carries slates and the studio's LTC (channel 2 of its microphone, jam-synced)
RIG = demo_rig("ingest", master="cam0", mocap=None, rig_keys={"timecode": "ltc:mic:2"},
               settings={"mic": {"ltc_channel": 2, "ltc_fps": FPS, "ltc_offset_s": 3600.25}})


def make_video(path: Path, frames: int, flashes: list[int]) -> None:
    """H.264 at 30 fps: grey frames, white at the `flashes` frame numbers (a slate filmed by that camera)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for i in range(frames):
            level = 235 if i in flashes else 60
            frame = av.VideoFrame.from_ndarray(np.full((240, 320, 3), level, np.uint8), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def make_wav(path: Path, samples: int, beeps: list[int], ltc: tuple[TimecodeRate, int] | None = None,
             seed: int = 1) -> None:
    """A field recorder's WAV: low noise on channel 1 with 100 ms 1 kHz beeps starting at `beeps` (samples),
    and (ltc: rate, first frame) LTC on channel 2 from its first sample."""
    rng = np.random.default_rng(seed)
    data = np.zeros((samples, 2), np.float32)
    data[:, 0] = rng.standard_normal(samples) * 1e-3
    burst = 0.5 * np.cos(2 * np.pi * 1000 * np.arange(RATE // 10) / RATE)
    for b in beeps:
        n = min(len(burst), samples - b)
        data[b:b + n, 0] += burst[:n]
    if ltc is not None:
        encoder = LtcEncoder(RATE, ltc[0], ltc[1])
        at = 0
        try:
            while at < samples:
                piece = encoder.next_frame()
                n = min(len(piece), samples - at)
                data[at:at + n, 1] = piece[:n]
                at += n
        finally:
            encoder.close()
    w = WavWriter(path, 2, RATE, "s24")  # a bext with time_reference 0: a recorder given no timecode
    w.write(data)
    w.close()

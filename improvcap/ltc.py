"""LTC (SMPTE linear timecode carried as audio) through libltc, Debian's `libltc11`, by ctypes: no
maintained Python binding exists.

`LtcDecoder` finds LTC frames in a channel's samples and says where each starts (the sample at which its
timecode frame began); `LtcEncoder` renders LTC, a frame at a time, as a studio's master clock does. Both
work on float samples in [-1, 1].
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ImprovcapError
from .take.timecode import TimecodeRate

LTC_TV_525_60, LTC_TV_625_50, LTC_TV_FILM_24 = 0, 1, 3
LTC_FRAME_BYTES = 12  # struct LTCFrame: 80 bits in unsigned int bitfields
QUEUE = 64  # decoded frames libltc keeps until read
LEVEL = 0.5  # the demo's LTC at about -6 dBFS


class LtcError(ImprovcapError):
    """libltc is missing or refused what it was given."""


class _Frame(ctypes.Structure):
    _fields_ = [("bits", ctypes.c_uint8 * LTC_FRAME_BYTES)]


class _FrameExt(ctypes.Structure):
    _fields_ = [
        ("ltc", _Frame),
        ("pad", ctypes.c_uint8 * 4),
        ("off_start", ctypes.c_longlong),
        ("off_end", ctypes.c_longlong),
        ("reverse", ctypes.c_int),
        ("biphase_tics", ctypes.c_float * 80),
        ("sample_min", ctypes.c_uint8),
        ("sample_max", ctypes.c_uint8),
        ("volume", ctypes.c_double),
    ]


class _Smpte(ctypes.Structure):
    _fields_ = [
        ("timezone", ctypes.c_char * 6),
        ("years", ctypes.c_ubyte),
        ("months", ctypes.c_ubyte),
        ("days", ctypes.c_ubyte),
        ("hours", ctypes.c_ubyte),
        ("mins", ctypes.c_ubyte),
        ("secs", ctypes.c_ubyte),
        ("frame", ctypes.c_ubyte),
    ]


_lib: Any = None
_lock = threading.Lock()


def library() -> Any:
    """libltc, loaded once (LtcError naming the package when it is not installed)."""
    global _lib
    with _lock:
        if _lib is None:
            name = ctypes.util.find_library("ltc") or "libltc.so.11"
            try:
                lib = ctypes.CDLL(name)
            except OSError:
                raise LtcError("libltc is not installed (Debian: apt-get install libltc11)") from None
            vp, i64 = ctypes.c_void_p, ctypes.c_longlong
            lib.ltc_decoder_create.restype, lib.ltc_decoder_create.argtypes = vp, [ctypes.c_int, ctypes.c_int]
            lib.ltc_decoder_free.argtypes = [vp]
            lib.ltc_decoder_write_float.argtypes = [vp, ctypes.POINTER(ctypes.c_float), ctypes.c_size_t, i64]
            lib.ltc_decoder_read.restype, lib.ltc_decoder_read.argtypes = ctypes.c_int, [vp, ctypes.POINTER(_FrameExt)]
            lib.ltc_frame_to_time.argtypes = [ctypes.POINTER(_Smpte), ctypes.POINTER(_Frame), ctypes.c_int]
            lib.ltc_frame_get_user_bits.restype = ctypes.c_ulong
            lib.ltc_frame_get_user_bits.argtypes = [ctypes.POINTER(_Frame)]
            lib.ltc_encoder_create.restype = vp
            lib.ltc_encoder_create.argtypes = [ctypes.c_double, ctypes.c_double, ctypes.c_int, ctypes.c_int]
            lib.ltc_encoder_free.argtypes = [vp]
            lib.ltc_encoder_set_timecode.argtypes = [vp, ctypes.POINTER(_Smpte)]
            lib.ltc_encoder_set_user_bits.argtypes = [vp, ctypes.c_ulong]
            lib.ltc_encoder_encode_frame.argtypes = [vp]
            lib.ltc_encoder_get_bufferptr.restype = ctypes.c_int
            lib.ltc_encoder_get_bufferptr.argtypes = [vp, ctypes.POINTER(ctypes.POINTER(ctypes.c_uint8)), ctypes.c_int]
            lib.ltc_encoder_inc_timecode.argtypes = [vp]
            lib.ltc_encoder_set_volume.argtypes = [vp, ctypes.c_double]
            _lib = lib
        return _lib


def _standard(rate: TimecodeRate) -> int:
    return LTC_TV_625_50 if rate.nominal == 25 else LTC_TV_FILM_24 if rate.nominal == 24 else LTC_TV_525_60


@dataclass(frozen=True)
class LtcFrame:
    """One decoded LTC frame: the sample its timecode frame started at, its label and user bits."""

    sample: int
    timecode: str
    user_bits: int
    drop: bool
    reverse: bool


class LtcDecoder:
    """LTC frames in a stream of samples (fed in order, each piece with the index of its first sample)."""

    def __init__(self, samplerate: float, rate: TimecodeRate) -> None:
        self._lib = library()
        self.rate = rate
        self._d = self._lib.ltc_decoder_create(int(round(samplerate / float(rate.rate))), QUEUE)
        if not self._d:
            raise LtcError("libltc could not make a decoder")

    def close(self) -> None:
        if self._d:
            self._lib.ltc_decoder_free(self._d)
            self._d = None

    def write(self, samples: np.ndarray, first_sample: int) -> list[LtcFrame]:
        """Feed one channel's samples (any length: libltc keeps its state); the frames completed."""
        data = np.ascontiguousarray(samples, dtype=np.float32)
        out: list[LtcFrame] = []
        for at in range(0, len(data), 1 << 14):  # within the decoder's queue of frames
            piece = data[at : at + (1 << 14)]
            self._lib.ltc_decoder_write_float(
                self._d, piece.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), len(piece), first_sample + at
            )
            out.extend(self._read())
        return out

    def _read(self) -> list[LtcFrame]:
        frames = []
        ext, stime = _FrameExt(), _Smpte()
        while self._lib.ltc_decoder_read(self._d, ctypes.byref(ext)):
            self._lib.ltc_frame_to_time(ctypes.byref(stime), ctypes.byref(ext.ltc), 0)
            drop = bool(ext.ltc.bits[1] >> 2 & 1)  # little-endian LTCFrame: frame_tens:2, dfbit:1, ...
            sep = ";" if drop else ":"
            frames.append(
                LtcFrame(
                    int(ext.off_start),
                    f"{stime.hours:02d}:{stime.mins:02d}:{stime.secs:02d}{sep}{stime.frame:02d}",
                    int(self._lib.ltc_frame_get_user_bits(ctypes.byref(ext.ltc))),
                    drop,
                    bool(ext.reverse),
                )
            )
        return frames


class LtcEncoder:
    """LTC rendered one timecode frame after another from a starting frame (frames since midnight)."""

    def __init__(self, samplerate: float, rate: TimecodeRate, start_frame: int, user_bits: int = 0) -> None:
        self._lib = library()
        self.rate = rate
        self._e = self._lib.ltc_encoder_create(float(samplerate), float(rate.rate), _standard(rate), 0)
        if not self._e:
            raise LtcError(f"libltc cannot encode LTC at {rate.label()} and {samplerate:g} Hz")
        label = rate.timecode(start_frame)
        hh, mm, ss, ff = int(label[0:2]), int(label[3:5]), int(label[6:8]), int(label[9:11])
        stime = _Smpte(b"+0000", 0, 1, 1, hh, mm, ss, ff)
        self._lib.ltc_encoder_set_timecode(self._e, ctypes.byref(stime))
        self._lib.ltc_encoder_set_user_bits(self._e, user_bits)
        self._lib.ltc_encoder_set_volume(self._e, -6.0)

    def close(self) -> None:
        if self._e:
            self._lib.ltc_encoder_free(self._e)
            self._e = None

    def next_frame(self) -> np.ndarray:
        """The samples of the next LTC frame (float32 in [-1, 1]); the timecode then advances by one."""
        self._lib.ltc_encoder_encode_frame(self._e)
        buf = ctypes.POINTER(ctypes.c_uint8)()
        n = self._lib.ltc_encoder_get_bufferptr(self._e, ctypes.byref(buf), 1)
        out = (
            (np.ctypeslib.as_array(buf, shape=(n,)).astype(np.float32) - 128.0) / 128.0
            if n > 0
            else np.zeros(0, np.float32)
        )
        self._lib.ltc_encoder_inc_timecode(self._e)
        return out

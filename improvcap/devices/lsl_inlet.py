"""LSL inlet driver (`[[lsl]]`, driver "lsl"): any Lab Streaming Layer stream on the network, on liblsl.

open() resolves the rig's query (an LSL predicate such as `name='ShimmerGSR'` or `type='EEG' and
hostname='lab2'`) within `timeout_s`, checks `channels` and `rate` against the stream's own info, opens
the inlet and takes a first time correction. A reader thread then pulls samples as they come and, every
lslclock.POLL_S, asks liblsl for its latest clock offset:

- a sample becomes a Sample: device_ns = its LSL stamp (the sender's local_clock) in ns, payload the
  channel values (a tuple of numbers, or the string of a marker stream);
- a new offset becomes a Sample with payload `ClockOffset` and count 0 (no row), which the writer keeps in
  `<name>.clock.csv` for the final fit (improvcap.lslclock), and which maps stamps live (`to_host`).

The inlet recovers by itself: a sender that goes away and comes back with the same source_id (or, without
one, the same name, type and host) is re-attached by liblsl within the take. A stream silent for its
`timeout_s` is a fault the recorder logs (a marker stream may be silent as long as it likes: its silence is
no fault); data that come again afterwards are recorded and noted. A string stream's markers are
recorded as the take kind `markers` (improvcap.take.layout).
"""

from __future__ import annotations

import ctypes
import math
import os
import threading
import xml.etree.ElementTree as ET
from typing import Any

from ..clock import ClockDomain, now_ns
from ..errors import DeviceError
from ..lslclock import POLL_S, ClockOffset
from ..records import Sample
from ..rig import StreamSpec, lsl_query_problem
from .base import ThreadedDevice

PULL_TIMEOUT_S = 0.05
FIRST_CORRECTION_TIMEOUT_S = 3.0
CHANNEL_FORMATS = {1: "float32", 2: "double64", 3: "string", 4: "int32", 5: "int16", 6: "int8", 7: "int64"}


# liblsl logs to stderr (INFO on start, ERR when a sender goes): it would write over the live view, and
# what matters reaches the take as faults and notes. Its configuration must be set before its first use.
LIBLSL_CONFIG = b"[log]\nlevel = -3\n"
_configured = False
_configure_lock = threading.Lock()
_known_peers: list[str] = []


def add_known_peers(hosts: list[str]) -> None:
    """Hosts liblsl asks directly, besides multicast (its `KnownPeers`): set before liblsl's first use."""
    if _configured:
        raise DeviceError("LSL known peers must be set before LSL is first used")
    _known_peers.extend(h for h in hosts if h not in _known_peers)


def pylsl_module() -> Any:
    """pylsl, its liblsl configured (once) before its first use."""
    global _configured
    try:
        import pylsl
    except ImportError as e:  # pragma: no cover - a dependency of the package
        raise DeviceError(f"LSL streams need pylsl (pip install pylsl): {e}") from None
    with _configure_lock:  # threads resolving at once: none may reach liblsl before it is configured
        if not _configured:
            if "LSLAPICFG" not in os.environ:  # a studio's own liblsl configuration wins
                peers = f"[lab]\nKnownPeers = {{{', '.join(_known_peers)}}}\n".encode() if _known_peers else b""
                pylsl.lib.lib.lsl_set_config_content(LIBLSL_CONFIG + peers)
            _configured = True
    return pylsl


def time_correction_ex(inlet: Any, timeout: float) -> tuple[float, float, float]:
    """(offset, remote_time, uncertainty) in seconds: liblsl's latest estimate, with when (on the sender's
    clock) it was measured and the round trip of the probe it rests on. pylsl wraps only the offset."""
    pylsl = pylsl_module()
    fn = pylsl.lib.lib.lsl_time_correction_ex
    if fn.restype is not ctypes.c_double:  # declared once (polled every second)
        fn.argtypes = [
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_double),
            ctypes.POINTER(ctypes.c_double),
            ctypes.c_double,
            ctypes.POINTER(ctypes.c_int),
        ]
        fn.restype = ctypes.c_double
    remote, uncertainty, err = ctypes.c_double(), ctypes.c_double(), ctypes.c_int()
    offset = fn(inlet.obj, ctypes.byref(remote), ctypes.byref(uncertainty), timeout, ctypes.byref(err))
    pylsl.util.handle_error(err)
    return offset, remote.value, uncertainty.value


def seconds_to_ns(seconds: float) -> int:
    """An LSL time (float seconds) in integer ns, exactly: `seconds * 1e9` as a double keeps only 256 ns
    steps at the 1e9-second clocks some hosts have."""
    whole = math.floor(seconds)
    return whole * 1_000_000_000 + round((seconds - whole) * 1e9)


def stream_info(xml: str) -> dict[str, Any]:
    """The fields of an LSL stream's info XML that a take keeps (and `devices` lists)."""
    root = ET.fromstring(xml)

    def text(path: str) -> str:
        return (root.findtext(path) or "").strip()

    labels, units = [], []
    for ch in root.findall("./desc/channels/channel"):
        labels.append((ch.findtext("label") or "").strip())
        units.append((ch.findtext("unit") or "").strip())
    count = int(text("channel_count") or 0)
    return {
        "name": text("name"),
        "type": text("type"),
        "source_id": text("source_id"),
        "hostname": text("hostname"),
        "nominal_srate": float(text("nominal_srate") or 0.0),
        "channel_format": text("channel_format"),
        "channel_count": count,
        "channel_labels": labels if len(labels) == count else [],
        "channel_units": units if len(units) == count else [],
        "created_at": float(text("created_at") or 0.0),
        "uid": text("uid"),
        "session_id": text("session_id"),
    }


def channel_names(info: dict[str, Any]) -> list[str]:
    """Column names for the channels: the stream's labels where every channel has a distinct usable one,
    else ch00, ch01, ..."""
    labels = info.get("channel_labels") or []
    usable = [lab for lab in labels if lab and lab.replace("_", "").replace("-", "").isalnum()]
    if len(usable) == info["channel_count"] and len(set(usable)) == len(usable) and usable:
        return list(usable)
    return [f"ch{i:02d}" for i in range(info["channel_count"])]


AMBIGUITY_WAIT_S = 0.5  # after the first match, how long to listen for a second


def resolve(query: str, timeout: float) -> list[Any]:
    """The streams matching `query`: as soon as one is found, and any other that answers soon after."""
    if problem := lsl_query_problem(query):
        raise DeviceError(problem)
    pylsl = pylsl_module()
    try:
        found = list(pylsl.resolve_bypred(query, 1, timeout))
        if found:
            found += pylsl.resolve_bypred(query, 0, AMBIGUITY_WAIT_S)
    except Exception as e:
        raise DeviceError(f"LSL query {query!r}: {type(e).__name__}: {e}") from None
    unique = {i.uid(): i for i in found}
    return list(unique.values())


LIST_WAIT_S = 1.0  # LSL streams answer discovery within this (on one network segment)


def list_lsl_streams(wait_s: float = LIST_WAIT_S) -> list[dict[str, Any]]:
    """The LSL streams that answer on the network: what a rig's `stream` query can name."""
    pylsl = pylsl_module()
    found = []
    for info in pylsl.resolve_streams(wait_s):
        found.append(
            {
                "name": info.name(),
                "type": info.type(),
                "host": info.hostname(),
                "rate": info.nominal_srate(),
                "channels": info.channel_count(),
                "format": CHANNEL_FORMATS.get(info.channel_format(), str(info.channel_format())),
                "source_id": info.source_id(),
                "query": f"source_id='{info.source_id()}'" if info.source_id() else f"name='{info.name()}'",
            }
        )
    return sorted(found, key=lambda s: (s["host"], s["name"]))


class LslInlet(ThreadedDevice):
    """Device protocol for `[[lsl]] driver = "lsl"`."""

    def __init__(self, spec: StreamSpec) -> None:
        super().__init__(spec, depth=max(1024, int(4 * max(spec.settings.get("rate") or 0, 256))))
        self.query: str = spec.settings["stream"]
        self.timeout_s: float = spec.settings["timeout_s"]
        self.info: dict[str, Any] = {}
        self._inlet: Any = None
        self._offset_ns = 0
        self._lock = threading.Lock()
        self.offsets = 0
        self.samples = 0
        self.recoveries = 0

    def open(self) -> None:
        if self._inlet is not None:
            return
        pylsl = pylsl_module()
        name = self.spec.name
        try:
            found = resolve(self.query, self.timeout_s)
        except DeviceError as e:
            raise DeviceError(f"{name}: {e}") from None
        if not found:
            raise DeviceError(
                f"{name}: no LSL stream matches {self.query} within {self.timeout_s:g} s "
                "(is its sender running? `improvcap devices` lists the LSL streams seen)"
            )
        ids = {(i.source_id() or i.uid()) for i in found}
        if len(ids) > 1:
            seen = ", ".join(sorted(f"{i.name()}@{i.hostname()} ({i.source_id() or 'no source_id'})" for i in found))
            raise DeviceError(
                f"{name}: {len(found)} LSL streams match {self.query}: {seen}; narrow the query "
                "(source_id='...' or hostname='...')"
            )
        inlet = pylsl.StreamInlet(found[0], max_buflen=360, recover=True, processing_flags=pylsl.proc_none)
        try:
            inlet.open_stream(self.timeout_s)
            info = stream_info(inlet.info(self.timeout_s).as_xml())
            self._check(info)
            offset, remote, rtt = time_correction_ex(inlet, FIRST_CORRECTION_TIMEOUT_S)
        except DeviceError:
            inlet.close_stream()
            raise
        except Exception as e:
            inlet.close_stream()
            raise DeviceError(f"{name}: cannot open LSL stream {self.query}: {type(e).__name__}: {e}") from None
        self.info = info
        self._inlet = inlet
        self._offset_ns = seconds_to_ns(offset)
        self._first_offset = (offset, remote, rtt)

    def _check(self, info: dict[str, Any]) -> None:
        s, name = self.spec.settings, self.spec.name
        if s.get("channels") is not None and s["channels"] != info["channel_count"]:
            raise DeviceError(
                f"{name}: the rig says channels = {s['channels']}, the LSL stream {info['name']} "
                f"has {info['channel_count']}"
            )
        if s.get("rate") is not None and abs(float(s["rate"]) - info["nominal_srate"]) > 1e-6 * max(
            1.0, info["nominal_srate"]
        ):
            raise DeviceError(
                f"{name}: the rig says rate = {s['rate']:g}, the LSL stream {info['name']} sends at "
                f"{info['nominal_srate']:g} Hz" + (" (irregular)" if info["nominal_srate"] == 0 else "")
            )
        if info["channel_format"] == "string" and info["channel_count"] != 1:
            raise DeviceError(f"{name}: a string LSL stream with {info['channel_count']} channels (markers have one)")

    @property
    def markers(self) -> bool:
        return self.info.get("channel_format") == "string"

    def start(self) -> None:
        if self._inlet is None:
            raise DeviceError(f"{self.spec.name}: open() first")
        self._start_producer(self._run)

    def _run(self, stop: threading.Event) -> None:
        inlet, buffer = self._inlet, self._buffer
        offset, remote, rtt = self._first_offset
        self._offset_sample(offset, remote, rtt)
        last_remote, next_poll = remote, now_ns() + int(POLL_S * 1e9)
        while not stop.is_set():
            try:
                values, stamps = inlet.pull_chunk(timeout=PULL_TIMEOUT_S, max_samples=1024)
            except Exception as e:
                raise DeviceError(f"{self.spec.name}: LSL stream lost: {type(e).__name__}: {e}") from None
            arrived = now_ns()
            for value, stamp in zip(values, stamps):
                payload = value[0] if self.markers else tuple(value)
                buffer.put(Sample(arrived, seconds_to_ns(stamp), payload))
                self.samples += 1
            if arrived >= next_poll:
                next_poll = arrived + int(POLL_S * 1e9)
                try:
                    offset, remote, rtt = time_correction_ex(inlet, 0.0)
                except Exception:  # no estimate now (the sender is gone): nothing to keep
                    continue
                if remote != last_remote:  # a new probe, not the estimate already kept
                    last_remote = remote
                    self._offset_sample(offset, remote, rtt)

    def _offset_sample(self, offset: float, remote: float, rtt: float) -> None:
        offset_ns, remote_ns = seconds_to_ns(offset), seconds_to_ns(remote)
        with self._lock:
            self._offset_ns = offset_ns
        self.offsets += 1
        # measured on our clock at its remote time + offset (the recorder maps device_ns = remote_ns with
        # to_host to that instant); the Sample itself arrived now
        polled = now_ns()
        self._buffer.put(
            Sample(
                polled,
                remote_ns,
                ClockOffset(remote_ns + offset_ns, remote_ns, offset_ns, round(rtt * 1e9), polled),
                count=0,
            )
        )

    def to_host(self, device_ns: int) -> int:
        with self._lock:
            return int(device_ns) + self._offset_ns

    def close(self) -> None:
        self.stop()
        if self._inlet is not None:
            try:
                self._inlet.close_stream()
            except Exception:
                pass
            self._inlet = None

    def describe(self) -> dict[str, Any]:
        return {
            "clock": ClockDomain.LSL.value,
            "lsl": dict(self.info),
            "markers": self.markers,
            "channels": 1 if self.markers else self.info.get("channel_count", 0),
            "rate": self.info.get("nominal_srate", 0.0),
            "channel_names": [] if self.markers else channel_names(self.info),
        }

    def stats(self) -> dict[str, int]:
        return {"overflows": self._buffer.overflows, "samples": self.samples, "clock_offsets": self.offsets}

    def slate(self, host_ns: int) -> None:
        """A real sender renders no slate."""

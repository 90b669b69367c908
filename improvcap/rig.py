"""Rig files (DESIGN section 6): find, parse with tomllib and validate into frozen specs.

Validation names the file, the key and the problem in one line (`RigError`, exit status 2). Unknown keys
are refused too: a misspelt `framerate` silently ignored would cost a shoot day.
"""

from __future__ import annotations

import hashlib
import math
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import registry
from .errors import RigError, did_you_mean
from .take.layout import NAME_RE, RIG_KINDS, nominal_rate, rig_kind

SHIPPED_RIGS = Path(__file__).parent / "rigs"
NAME_RE_EMPTY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]*)?$")  # a name, or "" for none


@dataclass(frozen=True)
class StreamSpec:
    """One device of the rig. `settings` holds every validated key of its table, defaults filled in."""

    kind: str
    name: str
    driver: str
    settings: dict[str, Any] = field(hash=False)
    node: str | None = None
    """The capture node (`[[node]]`) that records this stream; None: the controller itself."""

    def __getitem__(self, key: str) -> Any:
        return self.settings[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.settings.get(key, default)

    @property
    def nominal_rate(self) -> float:
        return nominal_rate(self.kind, self.settings)

    @property
    def latency_ns(self) -> int:
        return int(round(self.settings["latency_ms"] * 1e6))


@dataclass(frozen=True)
class Rig:
    name: str
    master: str | None
    streams: tuple[StreamSpec, ...]
    path: Path
    text: str = field(repr=False)
    group: str | None = None
    """The studio's group: its takes belong to it (readable by its members, never by other users)."""
    lsl_outlets: bool = False
    """Publish the takes' events and frame times as LSL streams (improvcap.lsl_outlets)."""
    nodes: tuple[NodeSpec, ...] = ()
    timecode: str | None = None
    """Where takes get their timecode: None, this PC's clock; "ltc:<audio stream>:<channel>", LTC on it."""
    """The capture PCs whose streams are part of the rig (`[[node]]`), in file order."""

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def of_kind(self, kind: str) -> list[StreamSpec]:
        return [s for s in self.streams if s.kind == kind]

    def stream(self, name: str) -> StreamSpec:
        return next(s for s in self.streams if s.name == name)

    def snapshot(self) -> dict[str, Any]:
        """The rig as stored in take.json: name, master and every stream's resolved settings."""
        return {
            "name": self.name,
            "master": self.master,
            **({"group": self.group} if self.group else {}),
            **({"lsl_outlets": True} if self.lsl_outlets else {}),
            **({"timecode": self.timecode} if self.timecode else {}),
            "path": str(self.path),
            **({"nodes": [n.snapshot() for n in self.nodes]} if self.nodes else {}),
            "streams": [
                {
                    "kind": s.kind,
                    "name": s.name,
                    "driver": s.driver,
                    **({"node": s.node} if s.node else {}),
                    **s.settings,
                }
                for s in self.streams
            ],
        }


@dataclass(frozen=True)
class NodeSpec:
    """A capture PC of the rig: found by its `name` on LSL, or at `host` where multicast is blocked."""

    name: str
    host: str | None = None

    def snapshot(self) -> dict[str, Any]:
        return {"name": self.name, **({"host": self.host} if self.host else {})}


# --- value checks -------------------------------------------------------------------------------

Check = Callable[[Any], str | None]  # returns a problem description, or None when the value is fine


def _number(lo: float | None = None, hi: float | None = None, *, integer: bool = False, lo_open: bool = False) -> Check:
    def check(v: Any) -> str | None:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
            return f"expected {'an integer' if integer else 'a number'}, got {v!r}"
        if isinstance(v, float) and not math.isfinite(v):
            return f"expected a finite number, got {v!r}"
        if lo is not None and (v <= lo if lo_open else v < lo):
            return f"must be {'>' if lo_open else '>='} {lo:g}, got {v!r}"
        if hi is not None and v > hi:
            return f"must be <= {hi:g}, got {v!r}"
        return None

    return check


def _string(choices: tuple[str, ...] | None = None, pattern: re.Pattern[str] | None = None) -> Check:
    def check(v: Any) -> str | None:
        if not isinstance(v, str):
            return f"expected a string, got {v!r}"
        if choices is not None and v not in choices:
            return f"must be one of {', '.join(choices)}; got {v!r}"
        if pattern is not None and not pattern.match(v):
            return f"must be letters, digits, '_', '-' or '.', starting with a letter or digit; got {v!r}"
        return None

    return check


def _boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else f"expected true or false, got {v!r}"


def _numbers(count: int, lo: float, hi: float) -> Check:
    def check(v: Any) -> str | None:
        if not isinstance(v, list) or len(v) != count:
            return f"expected a list of {count} numbers, got {v!r}"
        for x in v:
            if problem := _number(lo, hi)(x):
                return problem
        return None

    return check


def _strings() -> Check:
    def check(v: Any) -> str | None:
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            return f"expected a list of strings, got {v!r}"
        return None

    return check


def _both(first: Check, second: Check) -> Check:
    def check(v: Any) -> str | None:
        return first(v) or second(v)

    return check


def lsl_query_problem(query: str) -> str | None:
    """Why `query` cannot be an LSL predicate (an XPath 1.0 condition on a stream's info), if it plainly
    cannot: liblsl itself finds nothing for a malformed one, which would read as a sender not running."""
    if not query.strip():
        return "an empty stream query"
    depth, quote = 0, ""
    for ch in query:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
            if depth < 0:
                break
    if quote:
        return f"unclosed quote {quote} in the stream query {query!r}"
    if depth:
        return f"unbalanced brackets in the stream query {query!r}"
    if not any(op in query for op in ("=", "contains(", "starts-with(")):
        return f"the stream query {query!r} compares nothing (e.g. name='ShimmerGSR')"
    return None


def _lsl_query(v: Any) -> str | None:
    return lsl_query_problem(v) if v else None  # "" is checked against the driver in _parse_stream


# a rate must be positive, and one a device can have: no frame period longer than 1000 s
_RATE_FLOOR = 0.001


def _string_or_int(v: Any) -> str | None:
    return (
        None if isinstance(v, (str, int)) and not isinstance(v, bool) else f"expected a string or an integer, got {v!r}"
    )


# key -> (check, default); a default of REQUIRED makes the key mandatory
REQUIRED = object()
_COMMON: dict[str, tuple[Check, Any]] = {
    "name": (_string(pattern=NAME_RE), REQUIRED),
    "latency_ms": (_number(-10_000, 10_000), 0.0),
    "queue": (_number(1, 100_000, integer=True), 0),  # 0: the writer's default depth
}
# Demo devices carry a ground truth; these shape their clocks and faults.
_DEMO: dict[str, tuple[Check, Any]] = {
    "offset_ms": (_number(-60_000, 60_000), 0.0),
    "drift_ppm": (_number(-10_000, 10_000), 0.0),
    "jitter_ms": (_number(0, 10_000), 0.0),
    "transport_ms": (_number(0, 10_000), 0.0),
    "drop_rate": (_number(0, 1), 0.0),
    "truth": (_boolean, False),
    "fail_after_s": (_number(0, lo_open=True), 0.0),  # 0: never; a scripted mid-take failure
}
# A demo camera can film a ChArUco board moving in front of the rig through a known pinhole camera.
_DEMO_CAMERA: dict[str, tuple[Check, Any]] = {
    "board": (_boolean, False),
    "board_spec": (_string(), ""),  # a board TOML; "" for the default board
    "focal_px": (_number(0, 100_000), 0.0),  # 0: 0.9 x width
    "distortion": (_numbers(5, -10, 10), [-0.12, 0.05, 0.0006, -0.0004, -0.01]),  # k1 k2 p1 p2 k3
    "pose": (_numbers(6, -1e6, 1e6), [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]),  # rx ry rz (Rodrigues), tx ty tz (mm)
    "center_offset_px": (_numbers(2, -100_000, 100_000), [0.0, 0.0]),  # principal point from the image centre
}
_DEMO_LSL = ("offset_ms", "drift_ppm", "jitter_ms", "truth")
DEMO_LSL_RATE = 32.0  # the demo LSL sender's heart rate and skin conductance, per second
# A demo mocap device can start its counter and clock anywhere, e.g. just before they wrap.
_DEMO_MOCAP: dict[str, tuple[Check, Any]] = {
    "first_counter": (_number(0, 2**63, integer=True), 0),  # the counter of the first frame
    "uptime_s": (_number(60, 1e9), 100.0),  # the device clock when streaming starts (s since its boot)
}
_SCHEMA: dict[str, dict[str, tuple[Check, Any]]] = {
    "camera": {
        "driver": (_string(registry.drivers("camera")), REQUIRED),
        "source": (_string_or_int, ""),
        "width": (_number(16, 16384, integer=True), 1280),
        "height": (_number(16, 16384, integer=True), 720),
        "fps": (_both(_number(0, 1000, lo_open=True), _number(_RATE_FLOOR)), 30.0),
        "codec": (_string(), "libx264"),
        "preset": (_string(), "ultrafast"),
        "crf": (_number(0, 51, integer=True), 23),
        "input_format": (_string(), ""),  # ffmpeg/v4l2: e.g. "mjpeg"; opencv: a FOURCC
        "realtime": (_boolean, True),  # ffmpeg files: pace by timestamps, as a camera would
        "loop": (_boolean, False),  # ffmpeg files: start again at the end
        "trigger": (_string(pattern=NAME_RE_EMPTY), ""),  # the sync box whose pulses expose it; "": free-running
    },
    "audio": {
        "driver": (_string(registry.drivers("audio")), REQUIRED),
        "device": (_string_or_int, "default"),
        "channels": (_number(1, 64, integer=True), 2),
        "samplerate": (_number(8000, 384_000, integer=True), 48000),
        "blocksize": (_number(0, 65536, integer=True), 0),  # 0: 10 ms
        "sample_format": (_string(("s16", "s24", "f32")), "s24"),
        "tone_hz": (_number(1, 20000), 440.0),
        "channel_names": (_strings(), []),  # iXML track names, one per channel; default "<name> 1…N"
        "ltc_channel": (_number(0, 64, integer=True), 0),  # demo: this channel (1…) carries LTC; 0: none
        "ltc_fps": (_number(23, 61), 30.0),  # demo: the LTC's frame rate (29.97: drop-frame)
        "ltc_offset_s": (_number(-86400, 86400), 0.0),  # demo: the studio master clock against this PC's
    },
    "mocap": {
        "driver": (_string(registry.drivers("mocap")), REQUIRED),
        "port": (_string(), ""),
        "baudrate": (_number(50, 20_000_000, integer=True), 921600),
        "protocol": (_string(tuple(registry.PROTOCOLS)), "binary"),
        "rate": (_both(_number(0, 100_000, lo_open=True), _number(_RATE_FLOOR)), 240.0),
        "channels": (_number(1, 255, integer=True), 24),  # binary, csv; the others' come from `outputs`
        "outputs": (_strings(), []),  # xsens, vectornav: the data fields each frame carries, in order
        "configure": (_boolean, False),  # xsens: set the device's outputs and rate on open
    },
    "lsl": {  # a Lab Streaming Layer inlet (devices.lsl_inlet); channels and rate, when given, are checked
        "driver": (_string(registry.drivers("lsl")), REQUIRED),
        "stream": (_both(_string(), _lsl_query), ""),  # an LSL predicate: name='ShimmerGSR', type='EEG', ...
        "channels": (_number(1, 65536, integer=True), None),
        "rate": (_number(0, 1_000_000), None),  # 0: an irregular stream (markers)
        "timeout_s": (_number(0, 3600, lo_open=True), 5.0),  # to find the stream at open; silence after it is a fault
    },
    "sync": {  # a sync box (protocols.syncbox): trigger pulses, LED + beep slates, clock queries
        "driver": (_string(registry.drivers("sync")), REQUIRED),
        "port": (_string(), ""),
        "baudrate": (_number(50, 20_000_000, integer=True), 115200),
        "trigger_fps": (_number(0, 10_000), 0.0),  # camera trigger pulses per second; 0: none
        "query_hz": (_number(1, 1000), 20.0),  # clock round trips per second
    },
}


def stored_settings_problem(kind: str, settings: dict[str, Any]) -> tuple[str, str] | None:
    """(key, problem) for the first setting of a stored stream (a take's rig snapshot, or what its device
    described) that a rig file could not have given; None when every known key holds a possible value.
    The stream's name and driver are not judged here (a take names its own; drivers come and go)."""
    schema = {**_COMMON, **_DEMO, **_DEMO_CAMERA, **_DEMO_MOCAP, **_SCHEMA.get(rig_kind(kind), {})}
    for key, value in settings.items():
        if key in ("name", "driver", "kind") or key not in schema:
            continue
        check, default = schema[key]
        if value != default and (problem := check(value)):  # a default may mean "automatic" (queue = 0)
            return key, problem
    return None


def find_rig(arg: str | Path, cwd: Path | None = None) -> Path:
    """`RIG` on the command line: a path, else `rigs/<name>.toml` here, else a shipped rig."""
    cwd = cwd or Path.cwd()
    p = Path(arg)
    if p.suffix == ".toml" or "/" in str(arg) or p.is_file():
        if not (cwd / p).is_file():
            raise RigError(f"{arg}: rig file not found")
        return cwd / p
    for base in (cwd / "rigs", SHIPPED_RIGS):
        candidate = base / f"{arg}.toml"
        if candidate.is_file():
            return candidate
    shipped = ", ".join(sorted(q.stem for q in SHIPPED_RIGS.glob("*.toml")))
    raise RigError(f"{arg}: no such rig in ./rigs or among the shipped rigs ({shipped})")


def load_rig(arg: str | Path, cwd: Path | None = None) -> Rig:
    path = find_rig(arg, cwd)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RigError(f"{path}: cannot read: {e}") from None
    return parse_rig(text, path)


def parse_rig(text: str, path: Path) -> Rig:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RigError(f"{path}: not valid TOML: {e}") from None

    def fail(key: str, problem: str) -> RigError:
        return RigError(f"{path}: {key}: {problem}")

    unknown = set(doc) - {"rig", "node", *RIG_KINDS}
    if unknown:
        key = sorted(unknown)[0]
        raise fail(
            key,
            f"unknown table{did_you_mean(key, ['rig', *RIG_KINDS, 'node'])} "
            f"(expected [rig], {', '.join(f'[[{k}]]' for k in (*RIG_KINDS, 'node'))})",
        )
    head = doc.get("rig")
    if not isinstance(head, dict):
        raise fail("rig", "missing [rig] table")
    head_keys = ["name", "master", "group", "lsl_outlets", "timecode"]
    for key in set(head) - set(head_keys):
        raise fail(f"rig.{key}", f"unknown key{did_you_mean(key, head_keys)} (expected {', '.join(head_keys)})")
    if "group" in head and (problem := _string(pattern=NAME_RE)(head["group"])):
        raise fail("rig.group", problem)
    if "lsl_outlets" in head and (problem := _boolean(head["lsl_outlets"])):
        raise fail("rig.lsl_outlets", problem)
    if "name" not in head:
        raise fail("rig.name", "missing")
    if problem := _string(pattern=NAME_RE)(head["name"]):
        raise fail("rig.name", problem)

    nodes = _parse_nodes(doc.get("node", []), fail)
    streams: list[StreamSpec] = []
    seen: dict[str, str] = {}
    for kind in RIG_KINDS:
        tables = doc.get(kind, [])
        if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
            raise fail(kind, f"expected [[{kind}]] tables")
        if kind == "sync" and len(tables) > 1:
            raise fail("sync[1]", f"at most one sync box per rig ({len(tables)} [[sync]] tables)")
        for i, table in enumerate(tables):
            spec = _parse_stream(kind, i, table, fail, nodes)
            if spec.name in seen:
                raise fail(f"{kind}[{i}].name", f"duplicate stream name {spec.name!r} (also a {seen[spec.name]})")
            seen[spec.name] = kind
            streams.append(spec)
    if not streams:
        raise fail("rig", "no streams: add at least one [[camera]], [[audio]], [[mocap]] or [[lsl]]")

    _check_triggers(streams, fail)
    for i, mic in enumerate(s for s in streams if s.kind == "audio"):
        if mic["channel_names"] and len(mic["channel_names"]) != mic["channels"]:
            raise fail(f"audio[{i}].channel_names", f"{len(mic['channel_names'])} names for {mic['channels']} channels")
    timecode = _check_timecode(head.get("timecode"), streams, fail)
    cameras = [s.name for s in streams if s.kind == "camera"]
    master = head.get("master", cameras[0] if cameras else None)
    if master is not None:
        if problem := _string()(master):
            raise fail("rig.master", problem)
        if master not in cameras:
            raise fail(
                "rig.master", f"{master!r} is not a camera of this rig (cameras: {', '.join(cameras) or 'none'})"
            )
    return Rig(
        name=head["name"],
        master=master,
        streams=tuple(streams),
        path=path,
        text=text,
        group=head.get("group"),
        lsl_outlets=head.get("lsl_outlets", False),
        nodes=nodes,
        timecode=timecode,
    )


LTC_SOURCE = re.compile(r"^ltc:([A-Za-z0-9_-]+):([0-9]+)$")


def ltc_source(timecode: str | None) -> tuple[str, int] | None:
    """(audio stream, channel from 1) of a rig's `timecode = "ltc:<stream>:<channel>"`, else None."""
    m = LTC_SOURCE.match(timecode or "")
    return (m.group(1), int(m.group(2))) if m else None


def _check_timecode(value: Any, streams: list[StreamSpec], fail: Callable[[str, str], RigError]) -> str | None:
    """`[rig] timecode`: absent ("clock": this PC's time of day) or LTC on a channel of an audio stream."""
    if value is None or value == "clock":
        return None
    source = ltc_source(value) if isinstance(value, str) else None
    if source is None:
        raise fail("rig.timecode", f'expected "clock" or "ltc:<audio stream>:<channel>", got {value!r}')
    name, channel = source
    mic = next((s for s in streams if s.kind == "audio" and s.name == name), None)
    if mic is None:
        raise fail("rig.timecode", f"{name!r} is not an audio stream of this rig")
    if not 1 <= channel <= mic["channels"]:
        raise fail("rig.timecode", f"{name} has channels 1…{mic['channels']}, not {channel}")
    if mic.node:
        raise fail("rig.timecode", f"{name} is recorded by node {mic.node}: LTC is read on the controller's audio")
    return str(value)


def _check_triggers(streams: list[StreamSpec], fail: Callable[[str, str], RigError]) -> None:
    """A triggered camera names the rig's sync box, which sends pulses at the camera's frame rate."""
    boxes = {s.name: s for s in streams if s.kind == "sync"}
    for i, cam in enumerate(s for s in streams if s.kind == "camera"):
        box = boxes.get(cam["trigger"]) if cam["trigger"] else None
        if cam["trigger"] and box is None:
            raise fail(
                f"camera[{i}].trigger",
                f"{cam['trigger']!r} is not the rig's sync box "
                f"({', '.join(boxes) or 'it has none: add a [[sync]] table'})",
            )
        if box is not None and box["trigger_fps"] != cam["fps"]:
            raise fail(
                f"camera[{i}].fps",
                f"{cam['fps']:g} differs from {box.name}'s trigger_fps "
                f"{box['trigger_fps']:g}: a triggered camera exposes once per pulse",
            )
        if box is not None and box.node != cam.node:
            raise fail(f"camera[{i}].trigger", f"{box.name} is recorded by another PC than {cam.name}")


_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.:-]{0,252}[A-Za-z0-9])?$")  # a host name, IPv4 or IPv6 address


def _parse_nodes(tables: Any, fail: Callable[[str, str], RigError]) -> tuple[NodeSpec, ...]:
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise fail("node", "expected [[node]] tables")
    nodes: list[NodeSpec] = []
    for i, table in enumerate(tables):
        label = f"node[{i}]"
        for key in set(table) - {"name", "host"}:
            raise fail(
                f"{label}.{key}", f"unknown key for a node{did_you_mean(key, ['name', 'host'])} (expected name, host)"
            )
        if "name" not in table:
            raise fail(f"{label}.name", "missing")
        if problem := _string(pattern=NAME_RE)(table["name"]):
            raise fail(f"{label}.name", problem)
        if any(n.name == table["name"] for n in nodes):
            raise fail(f"{label}.name", f"duplicate node name {table['name']!r}")
        host = table.get("host")
        if host is not None and (not isinstance(host, str) or not _HOST_RE.match(host)):
            raise fail(f"{label}.host", f"expected a host name or address, got {host!r}")
        nodes.append(NodeSpec(table["name"], host))
    return tuple(nodes)


def _parse_stream(
    kind: str, i: int, table: dict[str, Any], fail: Callable[[str, str], RigError], nodes: tuple[NodeSpec, ...] = ()
) -> StreamSpec:
    label = f"{kind}[{i}]"
    node = table.get("node")
    if node is not None and node not in {n.name for n in nodes}:
        known = ", ".join(n.name for n in nodes) or "none: add a [[node]] table"
        raise fail(f"{label}.node", f"{node!r} is not a node of this rig (nodes: {known})")
    table = {k: v for k, v in table.items() if k != "node"}
    schema = {**_COMMON, **_SCHEMA[kind]}
    if table.get("driver") == "demo":
        # the demo LSL sender is a process of its own: its clock and jitter, no transport or faults
        schema.update({k: _DEMO[k] for k in _DEMO_LSL} if kind == "lsl" else _DEMO)
        if kind == "camera":
            schema.update(_DEMO_CAMERA)
        elif kind == "mocap":
            schema.update(_DEMO_MOCAP)
    for key in table:
        if key not in schema:
            driver = table.get("driver")
            what = (
                f"{'an' if str(driver)[:1] in 'aeiou' else 'a'} {driver} {kind}"
                if isinstance(driver, str)
                else f"a {kind}"
            )
            raise fail(
                f"{label}.{key}",
                f"unknown key for {what}" + (did_you_mean(key, schema) or f" (expected {', '.join(sorted(schema))})"),
            )
    settings: dict[str, Any] = {}
    for key, (check, default) in schema.items():
        if key not in table:
            if default is REQUIRED:
                raise fail(f"{label}.{key}", "missing")
            settings[key] = list(default) if isinstance(default, list) else default
            continue
        if problem := check(table[key]):
            raise fail(f"{label}.{key}", problem)
        value = table[key]
        # lists of numbers become floats; lists of names (mocap outputs) stay strings
        settings[key] = (
            float(value)
            if isinstance(default, float)
            else [x if isinstance(x, str) else float(x) for x in value]
            if isinstance(default, list)
            else value
        )
    name, driver = settings.pop("name"), settings.pop("driver")
    if kind in ("mocap", "sync") and driver == "serial" and not settings["port"]:
        raise fail(f"{label}.port", "missing (a serial device such as /dev/ttyUSB0)")
    if kind == "mocap":
        _check_protocol(settings, table, label, fail)
    if kind == "sync":
        _check_sync(settings, label, fail)
    if kind == "lsl":
        _check_lsl(settings, driver, label, fail)
    if kind == "camera" and driver in ("opencv", "ffmpeg") and settings["source"] == "":
        raise fail(f"{label}.source", f"missing (the {driver} driver needs a device, file or URL)")
    return StreamSpec(kind=kind, name=name, driver=driver, settings=settings, node=node)


def _check_lsl(settings: dict[str, Any], driver: str, label: str, fail: Callable[[str, str], RigError]) -> None:
    if driver == "demo":
        if settings["stream"]:
            raise fail(f"{label}.stream", "a demo LSL stream is its own sender's (leave stream out)")
        settings["rate"] = DEMO_LSL_RATE if settings["rate"] is None else settings["rate"]
    elif not settings["stream"]:
        raise fail(f"{label}.stream", "missing (an LSL query such as name='ShimmerGSR' or type='EDA')")
    if settings["rate"] is not None:
        settings["rate"] = float(settings["rate"])


def _check_sync(settings: dict[str, Any], label: str, fail: Callable[[str, str], RigError]) -> None:
    """A trigger period the box can be sent (whole µs in a u32), and messages the port can carry."""
    fps = settings["trigger_fps"]
    if 0 < fps < 0.001:
        raise fail(f"{label}.trigger_fps", f"must be 0 (no pulses) or at least 0.001, got {fps!r}")
    # box → host, 8N1: a pulse message is 17 bytes, a query's reply 19 (protocols.syncbox)
    need = fps * 17 + settings["query_hz"] * 19
    carries = settings["baudrate"] / 10
    if need > 0.8 * carries:
        raise fail(
            f"{label}.trigger_fps",
            f"{fps:g} pulses/s and {settings['query_hz']:g} queries/s need "
            f"{need:.0f} bytes/s, more than baudrate {settings['baudrate']} carries with headroom "
            f"({0.8 * carries:.0f} bytes/s); raise baudrate",
        )


def _check_protocol(
    settings: dict[str, Any], table: dict[str, Any], label: str, fail: Callable[[str, str], RigError]
) -> None:
    """The protocol's own checks (its outputs); `channels` follows from the outputs where it has them."""
    from .protocols import channel_names, protocol_module

    protocol = settings["protocol"]
    if protocol in ("binary", "csv"):
        if settings["outputs"]:
            raise fail(f"{label}.outputs", f"the {protocol} protocol has no outputs to choose; use channels")
        return
    check = getattr(protocol_module(protocol), "check_settings", None)
    if check is not None and (problem := check(settings)):
        raise fail(f"{label}.{problem[0]}", problem[1])
    n = len(channel_names(settings))
    if "channels" in table and table["channels"] != n:
        raise fail(f"{label}.channels", f"the {protocol} outputs give {n} channels, not {table['channels']}")
    settings["channels"] = n

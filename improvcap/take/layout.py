"""The take folder's names (DESIGN section 5): per stream kind its files, table columns, unit and rate key.

Every module that builds a take path or reads a take table gets the names from here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# a name in a rig file (stream, rig, node, group), which becomes part of file names: no separators, no dot first
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
FORMAT = "improvcap.take"
VERSION = 1
MANIFEST = "take.json"
SESSION_FILE = "session.json"  # in the session folder: the day's performers, rig, created
CONTROL_SOCKET = "control.sock"  # in the session folder: the running recorder's control socket
EVENTS = "events.csv"
SYNC = "sync.csv"
PERFORMERS_RECORD = "performers.json"  # the canonical consent record of the take's performers
RESERVE = ".reserve"  # room kept back for the take's end while it records (take.space)
ORIGINAL = ".orig"  # repair keeps an untouched original as <file>.orig, .orig2, ...

EVENT_COLUMNS = ("t_ns", "kind", "stream", "detail")
# demo devices' ground truth: the true instant since the take's t0, and on the recording host's own clock
# (CLOCK_MONOTONIC, absolute: a take across PCs is checked against it on each PC's clock)
TRUTH_SUFFIX, TRUTH_COLUMNS = ".truth.csv", ("index", "true_t_ns", "true_host_ns")
LTC_SUFFIX, LTC_COLUMNS = ".ltc.csv", ("t_ns", "sample", "timecode", "user_bits")  # LTC decoded from audio
ROUNDTRIPS_SUFFIX = ".roundtrips.csv"
ROUNDTRIP_COLUMNS = ("id", "host_send_ns", "host_recv_ns", "box_ns")
SYNC_LEAD_COLUMNS = ("tick", "t_ns")
# sync.csv's columns per other stream: camera/mocap `<name>_index,<name>_offset_ns`, audio `<name>_sample`
SYNC_INDEX, SYNC_OFFSET, SYNC_SAMPLE = "_index", "_offset_ns", "_sample"
MEDIA_SUFFIXES = (
    ".mkv",
    ".wav",
    ".csv",
    ".mov",
    ".mp4",
    ".m4v",
    ".mxf",
    ".avi",
    ".bwf",
)  # unlisted: media out of the manifest
# Performers' data and media are for the owner and the studio's group, never the world: every take file is
# created with FILE_MODE and every session and take folder with FOLDER_MODE (a group-owned session folder
# also has the setgid bit, so that its takes and their files get that group).
FILE_MODE = 0o640
FOLDER_MODE = 0o750


@dataclass(frozen=True)
class KindLayout:
    """What one stream kind writes: `<name><media>` (if any), `<name><table>` and any `extra` files."""

    kind: str
    media: str | None
    table: str
    extra: tuple[str, ...]
    columns: tuple[str, ...]  # the table's columns (mocap: then one per channel)
    time_columns: tuple[str, ...]  # the ones every timing computation reads
    unit: str  # what `count` and drops count
    rate_key: str  # the rig setting that holds the nominal rate

    def files(self, name: str) -> tuple[str, ...]:
        """The stream's files, media first."""
        return tuple(name + s for s in (self.media, self.table, *self.extra) if s is not None)


CAMERA = KindLayout(
    "camera",
    ".mkv",
    ".frames.csv",
    (),
    ("index", "t_ns", "device_ns", "host_ns", "seq", "pts"),
    ("index", "t_ns", "device_ns", "host_ns"),
    "frames",
    "fps",
)
AUDIO = KindLayout(
    "audio",
    ".wav",
    ".blocks.csv",
    (),
    ("first_sample", "t_ns", "device_ns", "host_ns", "frames", "adc_ns"),
    ("first_sample", "t_ns", "device_ns", "host_ns", "frames"),
    "samples",
    "samplerate",
)
MOCAP = KindLayout(
    "mocap",
    None,
    ".csv",
    (),
    ("index", "t_ns", "device_ns", "host_ns", "counter"),
    ("index", "t_ns", "device_ns", "host_ns", "counter"),
    "rows",
    "rate",
)
# a sync box: one row per trigger pulse (a mocap table without channels) and its timing round trips;
# its rate is trigger_fps, 0 when it sends no pulses
SYNC_BOX = KindLayout(
    "sync",
    None,
    ".csv",
    (ROUNDTRIPS_SUFFIX,),
    ("index", "t_ns", "device_ns", "host_ns", "counter"),
    ("index", "t_ns", "device_ns", "host_ns", "counter"),
    "pulses",
    "trigger_fps",
)
# an LSL inlet: one row per sample (then one column per channel) and liblsl's clock offsets (lslclock);
# its rate is the stream's nominal rate, 0 for an irregular one
LSL_CLOCK_SUFFIX = ".clock.csv"
LSL_CLOCK_COLUMNS = ("host_ns", "remote_ns", "offset_ns", "rtt_ns")
LSL = KindLayout(
    "lsl",
    None,
    ".csv",
    (LSL_CLOCK_SUFFIX,),
    ("index", "t_ns", "device_ns", "host_ns"),
    ("index", "t_ns", "device_ns", "host_ns"),
    "samples",
    "rate",
)
# an LSL string (marker) stream: one row per marker, its text in `value` (csv-quoted, one line per row:
# a backslash, newline or carriage return in the text is written \\, \\n, \\r; see marker_text), and the
# same clock offsets. A `[[lsl]]` stream becomes one when it opens: the rig cannot know a stream's format.
MARKERS = KindLayout(
    "markers",
    None,
    ".markers.csv",
    (LSL_CLOCK_SUFFIX,),
    ("index", "t_ns", "device_ns", "host_ns", "value"),
    ("index", "t_ns", "device_ns", "host_ns"),
    "markers",
    "rate",
)
LAYOUTS: dict[str, KindLayout] = {k.kind: k for k in (CAMERA, AUDIO, MOCAP, SYNC_BOX, LSL, MARKERS)}

KINDS = tuple(LAYOUTS)
RIG_KINDS = ("camera", "audio", "mocap", "sync", "lsl")  # the rig file's stream tables
LSL_KINDS = ("lsl", "markers")  # streams on an LSL sender's clock
# kinds not matched to the master's ticks in sync.csv: a sync box's pulses are timing, markers are events
UNSYNCED_KINDS = ("sync", "markers")
# kinds that promise no rate: a sync box without pulses, an irregular LSL stream, markers
RATELESS_KINDS = ("sync", *LSL_KINDS)


def rig_kind(kind: str) -> str:
    """The rig table a take's stream kind comes from (markers: `[[lsl]]`)."""
    return "lsl" if kind == "markers" else kind


def marker_text(value: str) -> str:
    """A marker's text as its `value` cell: one line whatever it holds (read back by marker_value)."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


def marker_value(cell: str) -> str:
    """The marker's text of a `value` cell."""
    out, chars = [], iter(cell)
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, "")
            out.append({"n": "\n", "r": "\r"}.get(nxt, nxt))
        else:
            out.append(ch)
    return "".join(out)


def layout(kind: str) -> KindLayout:
    return LAYOUTS[kind]


def table_file(name: str, kind: str) -> str:
    """The stream's timing table: frames.csv, blocks.csv, or the mocap/pulse CSV."""
    return name + LAYOUTS[kind].table


def media_file(name: str, kind: str) -> str:
    """The stream's media file (cameras: .mkv, audio: .wav); ValueError for a kind whose table is its data."""
    suffix = LAYOUTS[kind].media
    if suffix is None:
        raise ValueError(f"a {kind} stream has no media file")
    return name + suffix


# A stream ingested into a take after it was recorded (`improvcap ingest`): its rig snapshot entry has this
# driver, its media is the file as it was brought in (any of these suffixes, named in its manifest entry's
# `media`), and its table is a recorded stream's, with device_ns the file's own time from its first frame or
# sample and host_ns its t_ns on the recording PC's clock (it never arrived there).
INGEST_DRIVER = "ingest"
INGEST_SUFFIXES: dict[str, tuple[str, ...]] = {
    "camera": (".mov", ".mp4", ".m4v", ".mxf", ".mkv", ".avi"),
    "audio": (".wav", ".bwf"),
}


def is_ingested(spec: Mapping[str, Any]) -> bool:
    """Whether a rig snapshot entry is a stream ingested after the take."""
    return spec.get("driver") == INGEST_DRIVER


def stream_media(name: str, kind: str, entry: Mapping[str, Any] | None = None) -> str:
    """The media file of a stream as its manifest entry names it: an ingested file keeps its own suffix
    (only `<name>` + one of INGEST_SUFFIXES is taken from a manifest); every other stream's is media_file's."""
    media = (entry or {}).get("media")
    if (
        isinstance(media, str)
        and kind in INGEST_SUFFIXES
        and any(media == name + suffix for suffix in INGEST_SUFFIXES[kind])
    ):
        return media
    return media_file(name, kind)


def stream_files(name: str, kind: str, entry: Mapping[str, Any] | None = None) -> tuple[str, ...]:
    """The stream's files, media first (an ingested stream's media under its own suffix)."""
    files = LAYOUTS[kind].files(name)
    return (stream_media(name, kind, entry), *files[1:]) if LAYOUTS[kind].media else files


def truth_file(name: str) -> str:
    return name + TRUTH_SUFFIX


def ltc_file(name: str) -> str:
    """`<audio stream>.ltc.csv`: every LTC frame decoded from the stream's timecode channel."""
    return name + LTC_SUFFIX


def roundtrips_file(name: str) -> str:
    return name + ROUNDTRIPS_SUFFIX


def lsl_clock_file(name: str) -> str:
    return name + LSL_CLOCK_SUFFIX


# in a controller's take: a capture node's clock offsets against the controller's (LSL_CLOCK_COLUMNS)
NODE_CLOCK_SUFFIX = ".node-clock.csv"


def node_clock_file(node: str) -> str:
    return node + NODE_CLOCK_SUFFIX


# in a controller's take, once collected: a node's files that are not its streams' (its events, sync.csv),
# its take.json under another name (the folder is part of a take, not a take: `verify PATH` finds it not)
NODES_FOLDER = "nodes"
NODE_MANIFEST = "node-take.json"


def node_folder(node: str) -> str:
    return f"{NODES_FOLDER}/{node}"


def stream_of_table(filename: str) -> str:
    """The stream name of a mocap or pulse table's file name."""
    return filename.removesuffix(MOCAP.table)


def unit(kind: str) -> str:
    return LAYOUTS[kind].unit


def rate_key(kind: str) -> str:
    return LAYOUTS[kind].rate_key


def nominal_rate(kind: str, settings: Mapping[str, Any]) -> float:
    """Frames (cameras, mocap), samples (audio, LSL) or pulses (sync) per second that the rig file promises;
    0 where it promises none (an LSL stream whose rate is the sender's own, known once it is open)."""
    value = settings.get(LAYOUTS[kind].rate_key)
    return 0.0 if value is None else float(value)


def original_name(filename: str, n: int = 1) -> str:
    """`<file>.orig`, then `.orig2`, ...: where repair keeps an original it replaced."""
    return f"{filename}{ORIGINAL}" if n == 1 else f"{filename}{ORIGINAL}{n}"


def is_original_of(filename: str, candidate: str) -> bool:
    rest = candidate[len(filename) :] if candidate.startswith(filename) else ""
    return rest == ORIGINAL or (rest.startswith(ORIGINAL) and rest[len(ORIGINAL) :].isdigit())

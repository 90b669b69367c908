"""iXML (the production-sound metadata editors read beside `bext`) in a take's WAVs.

Every recorded WAV carries an `iXML` chunk between `bext` and `data` with PROJECT (the session), SCENE,
TAKE, TAPE, CIRCLED, NOTE, FILE_UID, SPEED (timecode rate and flag, sample rate, the start as samples
since midnight) and TRACK_LIST (a name per channel). The chunk has a fixed size, IXML_ROOM, the document
padded with spaces (XML allows whitespace after its root): at the stop, and whenever a take is circled or
noted later, the document is rewritten in place, in one write, without moving the audio; the chunk's
header never changes, so a crash during a rewrite can spoil the document but never the file.
"""

from __future__ import annotations

import os
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import TakeError
from .atomic import Folder, patch_take_file
from .events import read_events
from .hashing import file_entry
from .layout import EVENTS, INGEST_DRIVER, media_file
from .timecode import TimecodeRate, take_rate
from .wav import ixml_span

IXML_ROOM = 16384  # bytes of the chunk's body: a long note is cut to fit
IXML_VERSION = "2.10"
_CUT = " …"


def channel_names(stream: str, channels: int, names: Sequence[str] | None = None) -> list[str]:
    """A name per channel: the rig's `channel_names`, else `<stream> 1…N`."""
    if names:
        return [str(n) for n in names]
    return [f"{stream} {i}" for i in range(1, channels + 1)]


@dataclass(frozen=True)
class IxmlFields:
    """What a WAV's iXML says."""

    project: str
    scene: str
    take: int | str
    tape: str
    file_uid: str
    rate: TimecodeRate
    samplerate: int
    bits: int
    samples_since_midnight: int
    tracks: Sequence[str]
    circled: bool = False
    note: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def file_uid(t0_utc: str, take: str, stream: str) -> str:
    """A file's unique id, the same at every rewrite: derived from the take's start, folder and stream."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"improvcap:{t0_utc}:{take}:{stream}").hex.upper()


def take_document(
    manifest: dict[str, Any],
    take: str,
    stream: str,
    channels: int,
    samplerate: int,
    bits: int,
    time_reference: int,
    names: Sequence[str] | None = None,
) -> bytes:
    """The iXML a stream's WAV starts with: the take's identity and timecode rate from its manifest."""
    return document(
        IxmlFields(
            project=str(manifest.get("session", "")),
            scene=str(manifest.get("scene", "")),
            take=manifest.get("take", ""),
            tape=str(manifest.get("session", "")),
            file_uid=file_uid(str(manifest.get("t0_utc")), take, stream),
            rate=take_rate(manifest),
            samplerate=samplerate,
            bits=bits,
            samples_since_midnight=time_reference,
            tracks=channel_names(stream, channels, names),
        )
    )


def _text(parent: ET.Element, tag: str, value: Any) -> ET.Element:
    e = ET.SubElement(parent, tag)
    e.text = str(value)
    return e


def document(f: IxmlFields) -> bytes:
    """The iXML document of `f`, exactly IXML_ROOM bytes (a note too long for the room is cut)."""
    note = f.note
    while True:
        body = _serialise(f, note)
        if len(body) <= IXML_ROOM:
            return body + b" " * (IXML_ROOM - len(body))
        if not note:
            raise TakeError(f"iXML of {len(body)} bytes does not fit its {IXML_ROOM}-byte room")
        note = note[: max(0, len(note) - (len(body) - IXML_ROOM) - len(_CUT.encode()) - 8)] + _CUT
        if note == _CUT:
            note = ""


def _serialise(f: IxmlFields, note: str) -> bytes:
    root = ET.Element("BWFXML")
    _text(root, "IXML_VERSION", IXML_VERSION)
    _text(root, "PROJECT", f.project)
    _text(root, "SCENE", f.scene)
    _text(root, "TAKE", f.take)
    _text(root, "TAPE", f.tape)
    _text(root, "CIRCLED", "TRUE" if f.circled else "FALSE")
    _text(root, "FILE_UID", f.file_uid)
    _text(root, "NOTE", note)
    speed = ET.SubElement(root, "SPEED")
    rate = f"{f.rate.rate.numerator}/{f.rate.rate.denominator}"
    _text(speed, "MASTER_SPEED", rate)
    _text(speed, "CURRENT_SPEED", rate)
    _text(speed, "TIMECODE_RATE", rate)
    _text(speed, "TIMECODE_FLAG", f.rate.flag)
    _text(speed, "FILE_SAMPLE_RATE", f.samplerate)
    _text(speed, "AUDIO_BIT_DEPTH", f.bits)
    _text(speed, "DIGITIZER_SAMPLE_RATE", f.samplerate)
    _text(speed, "TIMESTAMP_SAMPLES_SINCE_MIDNIGHT_HI", f.samples_since_midnight >> 32)
    _text(speed, "TIMESTAMP_SAMPLES_SINCE_MIDNIGHT_LO", f.samples_since_midnight & 0xFFFFFFFF)
    _text(speed, "TIMESTAMP_SAMPLE_RATE", f.samplerate)
    tracks = ET.SubElement(root, "TRACK_LIST")
    _text(tracks, "TRACK_COUNT", len(f.tracks))
    for i, name in enumerate(f.tracks, start=1):
        track = ET.SubElement(tracks, "TRACK")
        _text(track, "CHANNEL_INDEX", i)
        _text(track, "INTERLEAVE_INDEX", i)
        _text(track, "NAME", name)
        _text(track, "FUNCTION", "")
    for key, value in f.extra.items():
        _text(root, key, value)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8") + b"\n"


def rewrite(path: Path, circled: bool, note: str, folder: Folder | None = None) -> bool:
    """Rewrite a WAV's iXML in place with `circled` and `note` (everything else as it says); False when the
    file has no iXML room (recorded before iXML): it is left as it is. `folder`: the take, already open."""
    fd = patch_take_file(path, folder)
    try:
        return rewrite_fields(fd, path if folder is None else folder.anchored / path.name, circled=circled, note=note)
    finally:
        os.close(fd)


def rewrite_fields(fd: int, layout_of: Path, **changes: Any) -> bool:
    """Rewrite the iXML of the WAV open as `fd` (laid out as `layout_of`) with `changes` to its fields, in
    one write, made durable; False when it has no iXML room."""
    span = ixml_span(layout_of)
    if span is None or span[1] != IXML_ROOM:
        return False
    at, size = span
    body = document(replace(parse(os.pread(fd, size, at)), **changes))
    if os.pwrite(fd, body, at) != len(body):
        raise OSError(f"{layout_of.name}: iXML written short")
    os.fsync(fd)
    return True


def take_marking(take_dir: Path) -> tuple[str, bool]:
    """The take's notes (events.csv `note` rows, in order) as iXML's NOTE, and whether it was circled (a
    `circle` row: `ctl circle`, the `c` key of `session`)."""
    if not (take_dir / EVENTS).is_file():
        return "", False
    events = read_events(take_dir / EVENTS)
    return (
        " | ".join(detail for _, kind, _, detail in events if kind == "note" and detail),
        any(kind == "circle" for _, kind, _, _ in events),
    )


def stamp_take(take_dir: Path, manifest: dict[str, Any], folder: Folder | None = None) -> list[str]:
    """Every WAV of the take told its notes and whether it is circled, which the manifest's `circled` says
    too; the WAVs' entries in the manifest's `files` are updated where it lists them. The WAVs with no iXML
    room (recorded before iXML), by name."""
    anchored = folder.anchored if folder is not None else take_dir
    note, circled = take_marking(anchored)
    manifest["circled"] = circled
    without = []
    for name, stream in (manifest.get("streams") or {}).items():
        if not isinstance(stream, dict) or stream.get("kind") != "audio" or stream.get("driver") == INGEST_DRIVER:
            continue  # an ingested WAV stays as it was brought in
        rel = media_file(name, "audio")
        if not (anchored / rel).is_file():
            continue
        if not rewrite(take_dir / rel, circled, note, folder):
            without.append(rel)
        elif rel in (manifest.get("files") or {}):
            manifest["files"][rel] = file_entry(anchored / rel)
    return without


def parse(body: bytes) -> IxmlFields:
    """The fields of an iXML document this module wrote."""
    try:
        root = ET.fromstring(body.rstrip(b" \0\n").decode("utf-8"))
    except (ET.ParseError, UnicodeDecodeError) as e:
        raise TakeError(f"iXML cannot be read: {e}") from None

    def text(path: str) -> str:
        e = root.find(path)
        return (e.text or "") if e is not None else ""

    hi, lo = text("SPEED/TIMESTAMP_SAMPLES_SINCE_MIDNIGHT_HI"), text("SPEED/TIMESTAMP_SAMPLES_SINCE_MIDNIGHT_LO")
    rate = TimecodeRate.of(text("SPEED/TIMECODE_RATE") or "30")
    take = text("TAKE")
    known = {"IXML_VERSION", "PROJECT", "SCENE", "TAKE", "TAPE", "CIRCLED", "FILE_UID", "NOTE", "SPEED", "TRACK_LIST"}
    return IxmlFields(
        project=text("PROJECT"),
        scene=text("SCENE"),
        take=int(take) if take.isdigit() else take,
        tape=text("TAPE"),
        file_uid=text("FILE_UID"),
        rate=TimecodeRate(rate.rate, text("SPEED/TIMECODE_FLAG") == "DF"),
        samplerate=int(text("SPEED/FILE_SAMPLE_RATE") or 0),
        bits=int(text("SPEED/AUDIO_BIT_DEPTH") or 0),
        samples_since_midnight=(int(hi or 0) << 32) | int(lo or 0),
        tracks=[t.findtext("NAME") or "" for t in root.findall("TRACK_LIST/TRACK")],
        circled=text("CIRCLED").upper() == "TRUE",
        note=text("NOTE"),
        extra={e.tag: e.text or "" for e in root if e.tag not in known},
    )

"""`improvcap editorial`: per take, the cameras as MOV with timecode, the WAVs, a timeline; per session, a
timeline of its takes; `editorial.json` says what was written and where each stream sits.

DIR must be new or empty: nothing is ever overwritten, and each file is written under a temporary name
and linked to its own when whole. Names come from the take folders found and the session names they
record, checked as names (a session name that is a path is refused).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TakeError, UsageError
from ..take.atomic import Folder, write_bytes_atomic
from ..take.layout import FOLDER_MODE, NAME_RE
from ..take.reader import Take, open_take
from ..take.tables import stream_table
from ..take.timecode import TimecodeRate, t0_since_midnight, take_rate
from ..take.timeline import AudioTimeline
from ..take.wav import wav_info
from ..verify import find_takes
from .media import Placed, copy_wav, placed_dict, remux_mov
from .timeline import ADAPTERS, Entry, conformed, installed_adapters, on_storyline, single_video, timeline

MANIFEST = "editorial.json"
NS = 10**9


@dataclass
class TakeEditorial:
    """One take's editorial files."""

    take: Take
    session: str
    rate: TimecodeRate
    t0: Fraction  # t0, seconds since midnight
    placed: list[Placed] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.take.path.name

    def at(self, p: Placed) -> Fraction:
        """When a stream starts, seconds since midnight."""
        return self.t0 + Fraction(p.first_t_ns, NS)


def _session_name(take: Take) -> str:
    session = str(take.manifest.get("session") or take.path.parent.name)
    if not NAME_RE.match(session) or session in (".", ".."):
        raise TakeError(f"{take.path}: session {session!r} is not a name")
    return session


def _frame_period_ns(take: Take, stream: str, t_ns: np.ndarray) -> int:
    fps = float(take.streams[stream].nominal_rate or 0)
    if fps > 0:
        return int(round(NS / fps))
    return int(np.median(np.diff(t_ns))) if len(t_ns) > 1 else 0


def write_take(take: Take, session_folder: Folder, adapters: Sequence[str], warnings: list[str]) -> TakeEditorial:
    """The take's editorial folder `<take>/` in the session's: MOVs, WAVs and its timeline."""
    ed = TakeEditorial(take, _session_name(take), take_rate(take.manifest), t0_since_midnight(take.manifest))
    session_folder.mkdir(ed.name, FOLDER_MODE)
    with Folder(session_folder.path / ed.name) as folder:
        for name, info in take.streams.items():
            if info.kind == "camera":
                ed.placed.append(_camera(ed, name, folder))
            elif info.kind == "audio":
                ed.placed.append(_audio(ed, name, folder))
        if ed.placed:
            start = math.floor(min(ed.at(p) for p in ed.placed) * ed.rate.rate)
            entries = [Entry(ed.name, ".", p, ed.at(p) - start / ed.rate.rate) for p in ed.placed]
            write_timelines(
                folder,
                ed.name,
                timeline(f"{ed.session} {ed.name}", ed.rate, start, entries),
                ed.rate,
                adapters,
                warnings,
            )
    return ed


def _camera(ed: TakeEditorial, name: str, folder: Folder) -> Placed:
    t_ns = stream_table(ed.take.path, name, "camera", time_only=True)["t_ns"]
    if not len(t_ns):
        raise TakeError(f"{name}: no frames")
    first = int(t_ns[0])
    start = round((ed.t0 + Fraction(first, NS)) * ed.rate.rate)
    frames = remux_mov(ed.take.media(name, "camera"), t_ns, folder, f"{name}.mov", ed.rate, start, name)
    if frames != len(t_ns):
        raise TakeError(f"{name}: {frames} packets remuxed for {len(t_ns)} frames recorded")
    end = int(t_ns[-1]) + _frame_period_ns(ed.take, name, t_ns)
    return Placed(name, "camera", f"{name}.mov", first, end, ed.rate.rate, start, frames, ed.rate.timecode(start))


def _audio(ed: TakeEditorial, name: str, folder: Folder) -> Placed:
    wav = ed.take.media(name, "audio")
    info = wav_info(wav)
    rate = int(info["rate"])
    timeline_ = AudioTimeline.from_blocks(stream_table(ed.take.path, name, "audio", time_only=True), rate)
    if not timeline_.total:
        raise TakeError(f"{name}: no samples")
    first = int(round(float(timeline_.t_ns_of(0))))
    end = int(round(float(timeline_.t_ns_of(timeline_.total - 1)))) + NS // rate
    start = round((ed.t0 + Fraction(first, NS)) * rate)
    copy_wav(wav, folder, wav.name, start)
    return Placed(name, "audio", wav.name, first, end, Fraction(rate), start, int(info["frames"]))


def write_timelines(
    folder: Folder, stem: str, tl: Any, rate: TimecodeRate, adapters: Sequence[str], warnings: list[str]
) -> list[str]:
    """`<stem>.otio`, and where their adapters are installed `<stem>.fcpxml` and a CMX 3600 EDL per camera
    (`<stem>.<camera>.edl`: an EDL holds one picture track), at the rate the adapters spell. What an adapter
    could not write goes into `warnings`."""
    import opentimelineio as otio

    written = [f"{stem}.otio"]
    _write(folder, written[0], otio.adapters.write_to_string(tl, "otio_json"))
    if not adapters:
        return written
    near = conformed(tl, rate)
    jobs = [(f"{stem}{ADAPTERS[a]}", a, on_storyline(near)) for a in adapters if a == "fcpx_xml"]
    jobs += [
        (f"{stem}.{camera}{ADAPTERS[a]}", a, single_video(near, camera))
        for a in adapters
        if a == "cmx_3600"
        for camera in [t.name for t in near.video_tracks()]
    ]
    for name, adapter, variant in jobs:
        try:
            text = otio.adapters.write_to_string(variant, adapter)
        except Exception as e:  # a plugin's failure: the .otio holds the timeline whatever the plugins do
            warnings.append(
                f"{folder.path.name}/{name} not written: the {adapter} adapter failed ({type(e).__name__}: {e})"
            )
            continue
        _write(folder, name, text)
        written.append(name)
    return written


def _write(folder: Folder, name: str, text: str) -> None:
    write_bytes_atomic(folder.path / name, text.encode("utf-8"), replace_existing=False, folder=folder)


def editorial(paths: Sequence[Path], out: Path, on_take: Callable[[str], None] = lambda name: None) -> dict[str, Any]:
    """Write DIR; returns editorial.json's content."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out}: not an empty folder; editorial never overwrites (name a new one)")
    takes = find_takes(paths)
    if not takes:
        raise UsageError(f"no takes under {', '.join(map(str, paths))} (no folder holding a take.json)")
    try:
        out.mkdir(parents=True, exist_ok=True, mode=FOLDER_MODE)
    except OSError as e:
        raise UsageError(f"{out}: cannot create: {e.strerror or e}") from None
    done: dict[str, list[TakeEditorial]] = {}
    report: dict[str, Any] = {"takes": [], "sessions": [], "adapters": installed_adapters(), "warnings": []}
    with Folder(out) as root:
        for path in takes:
            take = open_take(path)
            session = _session_name(take)
            if session not in done:
                root.mkdir(session, FOLDER_MODE)
                done[session] = []
            with Folder(out / session) as session_folder:
                ed = write_take(take, session_folder, report["adapters"], report["warnings"])
            done[session].append(ed)
            report["takes"].append(
                {
                    "take": f"{session}/{ed.name}",
                    "source": str(path),
                    "timecode_rate": ed.rate.label(),
                    "streams": [placed_dict(p) for p in ed.placed],
                }
            )
            on_take(f"{session}/{ed.name}")
        for session, eds in done.items():
            placed = [(ed, p) for ed in eds for p in ed.placed]
            if not placed:
                continue
            rate = eds[0].rate
            start = math.floor(min(ed.at(p) for ed, p in placed) * rate.rate)
            entries = [Entry(ed.name, ed.name, p, ed.at(p) - start / rate.rate) for ed, p in placed]
            with Folder(out / session) as session_folder:
                files = write_timelines(
                    session_folder,
                    session,
                    timeline(session, rate, start, entries),
                    rate,
                    report["adapters"],
                    report["warnings"],
                )
            report["sessions"].append(
                {
                    "session": session,
                    "takes": [ed.name for ed in eds],
                    "files": files,
                    "start_timecode": rate.timecode(start),
                }
            )
        _write(root, MANIFEST, json.dumps(report, indent=2) + "\n")
    return report

"""The checks of one take for `improvcap verify` (the verdict rules are in improvcap.verify.paths).

A TakeCheck holds the state the checks share (the take's files, manifest and hashes through a TakeFiles;
per stream its table and figures) and runs the families of checks in order: streams (improvcap.verify.
streams, one check per kind through STREAM_CHECKS), timing and slates (improvcap.verify.timing), consent
and faults (improvcap.verify.consent). Each check that can meet bad input runs inside `Findings.check`,
which turns any exception into a FAIL reason. Reading only, like TakeFiles.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..rig import stored_settings_problem
from ..take.layout import LAYOUTS, SYNC, rate_key, unit
from ..take.sync import nominal_rate
from .consent import check_faults, check_performers
from .files import Listing, TakeFiles, walk
from .findings import Findings, integer, number, show
from .limits import Limits
from .streams import STREAM_CHECKS, check_nodes, check_settings, stream_entries, stream_files
from .timing import check_clock, check_ltc, check_skew, check_slates, check_sync_csv


class TakeCheck:
    """State shared by the checks of one take; `files` is its folder, manifest and hashes."""

    def __init__(
        self, take: Path, limits: Limits, on_bytes: Callable[[int], None] | None = None, *, hashes: bool = True
    ) -> None:
        self.files = TakeFiles(take, on_bytes)
        self.hashes = hashes  # False: files are hashed elsewhere (TakeFiles.hash_plan, hashed, with_hashes)
        self.limits = limits
        self.streams: dict[str, dict[str, Any]] = {}  # what the result shows per stream
        self.tables: dict[str, dict[str, np.ndarray]] = {}
        self.kinds: dict[str, str] = {}
        self.slates: list[int] = []
        self.unreadable: set[str] = set()  # streams whose tables could not be read (reported already)
        self.broken: set[str] = set()  # streams whose media could not be read through: no slate search
        self.videos: dict[str, Any] = {}  # camera -> its mkv, open from the packet count to the slate search

    @property
    def take(self) -> Path:
        return self.files.take

    @property
    def f(self) -> Findings:
        return self.files.f

    @property
    def manifest(self) -> dict[str, Any]:
        return self.files.manifest

    @property
    def listing(self) -> Listing:
        return self.files.listing

    def regular(self, rel: str) -> Path | None:
        return self.files.regular(rel)

    def rate(self, name: str, entry: dict[str, Any]) -> float:
        """The stream's nominal rate; ValueError when there is none a device can have (the timing checks
        would otherwise compute with it)."""
        try:
            value = nominal_rate(self.manifest, name)
        except Exception:
            described = number(entry.get("nominal_rate"))
            if described is None or described <= 0:
                raise ValueError(f"{name}: no nominal rate") from None
            value = described
        kind = self.kinds.get(name, "")
        stored = int(value) if float(value).is_integer() else value  # as a rig file gives it: 44100, not 44100.0
        if kind in LAYOUTS and stored_settings_problem(kind, {rate_key(kind): stored}):
            raise ValueError(f"{name}: nominal rate {value:g}/s is not one a device can have")
        return float(value)

    def run(self) -> dict[str, Any]:
        try:
            return self.run_checks()
        finally:
            for container in self.videos.values():
                container.close()
            self.videos.clear()

    def run_checks(self) -> dict[str, Any]:
        f, files = self.f, self.files
        if not self.take.is_dir():
            f.fail("not a folder")
            return self.result([], {})
        files.listing = walk(self.take)
        files.check_folder()
        if not files.load_manifest():
            return self.result([], {})
        if not files.check_status():
            performers = self.manifest.get("performers")
            listed_ids = (
                [e["id"] for e in performers if isinstance(e, dict) and isinstance(e.get("id"), str)]
                if isinstance(performers, list)
                else []
            )
            return self.result(listed_ids, {})
        ids: list[str] = []
        consent: dict[str, Any] = {}
        with f.check("performers"):
            ids, consent = check_performers(self)
        listed = files.listed_files()
        hasher: Future | None = None
        with ThreadPoolExecutor(1, thread_name_prefix="improvcap-verify-hash") as pool:
            if listed is not None:
                files.check_unlisted(files.listed)
            if listed is not None and self.hashes:
                # hashing reads and sha256 release the GIL: it overlaps the checks below
                hasher = pool.submit(files.hash_listed, listed)
            entries: dict[str, dict[str, Any]] = {}
            with f.check("faults"):
                entries = stream_entries(self)
                check_faults(self, entries)
            with f.check("settings"):
                check_settings(self, entries)
            for name, entry in entries.items():
                self.check_stream(name, entry)
            with f.check("slates"):
                check_slates(self)
            if not self.unreadable:  # expected columns need every stream's table
                with f.check(SYNC):
                    check_sync_csv(self)
            with f.check("skew"):
                check_skew(self)
            with f.check("ltc"):
                check_ltc(self)
            with f.check("nodes"):
                check_nodes(self)
            if hasher is not None:
                hasher.result()
        return self.result(ids, consent)

    def check_stream(self, name: str, entry: dict[str, Any]) -> None:
        """One stream: its files, its kind's check, its clock."""
        f, kind = self.f, self.kinds[name]
        self.streams[name] = {
            "kind": kind,
            "count": integer(entry.get("count")),
            "nominal_rate": number(entry.get("nominal_rate")),
            "unit": unit(kind),
        }
        if not stream_files(self, name, entry):
            self.unreadable.add(name)
            return
        checked = False
        with f.check(f"{kind} {name}"):
            STREAM_CHECKS[kind](self, name, entry)
            checked = True
        if name not in self.tables:
            self.unreadable.add(name)
        if not checked:
            self.broken.add(name)
        with f.check(f"{name}: clock"):
            check_clock(self, name, entry)

    def failure(self, text: str) -> dict[str, Any]:
        """The result of a take whose verification itself failed (`text` says how)."""
        self.f.fail(show(text))
        return self.result([], {})

    def result(self, ids: list[str], consent: dict[str, Any]) -> dict[str, Any]:
        m = self.manifest
        self.f.items[:0] = self.files.hash_f.items  # integrity first, in file order
        drifts = [s["drift_ppm"] for s in self.streams.values() if s.get("drift_ppm") is not None]
        offsets = [
            (abs(v), v, n) for n, s in self.streams.items() for v in s.get("slate_offsets_ms") or [] if v is not None
        ]
        worst = max(offsets) if offsets else None
        text = lambda v: v if isinstance(v, str) else None  # noqa: E731
        return {
            "take": str(self.take),
            "verdict": self.f.verdict,
            "reasons": self.f.reasons(),
            "status": text(m.get("status")),
            "session": text(m.get("session")),
            "scene": text(m.get("scene")),
            "take_number": integer(m.get("take")),
            "t0_utc": text(m.get("t0_utc")),
            "duration_s": number(m.get("duration_s")),
            "streams": self.streams,
            "slates_s": [round(s / 1e9, 6) for s in self.slates],
            "worst_drift_ppm": max(drifts, key=abs) if drifts else None,
            "worst_slate_offset_ms": worst[1] if worst else None,
            "worst_slate_stream": worst[2] if worst else None,
            "performers": ids,
            "consent": consent,
            "bytes": self.files.bytes,
        }

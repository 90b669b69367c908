"""A take's folder and manifest, read safely: listing, manifest, status and the sha256 of every listed file.

The part of `improvcap verify` that needs no media library (no numpy, no PyAV): verify_paths starts hashing
with it while the checks of the media (improvcap.verify.take_check, which holds a TakeFiles) are still importing.

Reading only: every file is opened read-only, symlinks are never followed and only regular files are
opened, so a hostile take cannot make verify read outside it or block on a FIFO.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..take.hashing import hash_file
from ..take.layout import FORMAT, MANIFEST, MEDIA_SUFFIXES, VERSION
from ..take.manifest import MAX_MANIFEST_BYTES, load_json
from .findings import Findings, integer, mapping, show

PROGRESS_EVERY = 16 << 20  # bytes between progress reports while hashing
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


# --- reading a take safely ----------------------------------------------------------------------------


@dataclass
class Listing:
    files: dict[str, int]  # relpath -> size, regular files only
    links: dict[str, str]  # relpath -> link target
    special: list[str]  # FIFOs, sockets, devices
    errors: list[str]


def walk(take: Path) -> Listing:
    """Everything in the take folder, without following symlinks."""
    listing = Listing({}, {}, [], [])
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        try:
            with os.scandir(take / rel_dir if rel_dir else take) as it:
                entries = list(it)
        except OSError as e:
            listing.errors.append(f"{rel_dir or '.'}: cannot list: {e.strerror or e}")
            continue
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as e:
                listing.errors.append(f"{rel}: cannot stat: {e.strerror or e}")
                continue
            if stat.S_ISLNK(st.st_mode):
                try:
                    listing.links[rel] = os.readlink(entry.path)
                except OSError:
                    listing.links[rel] = "?"
            elif stat.S_ISDIR(st.st_mode):
                stack.append(rel)
            elif stat.S_ISREG(st.st_mode):
                listing.files[rel] = st.st_size
            else:
                listing.special.append(rel)
    return listing


class TakeFiles:
    """One take's folder, manifest and file hashes; reasons go into `f`, hashing reasons into `hash_f`."""

    def __init__(self, take: Path, on_bytes: Callable[[int], None] | None = None) -> None:
        self.take = take
        self.on_bytes = on_bytes
        self.f = Findings(take)
        self.hash_f = Findings(take)  # filled while hashing (on another thread), put first in the result
        self.listing = Listing({}, {}, [], [])
        self.manifest: dict[str, Any] = {}
        self.listed: set[str] = set()  # every path take.json lists, well-formed entry or not
        self.bytes = 0

    def regular(self, rel: str) -> Path | None:
        """The path of a regular file of the take, or None (a missing file or a symlink is never read)."""
        return self.take / rel if rel in self.listing.files else None

    # -- manifest ---------------------------------------------------------------------------------
    def load_manifest(self) -> bool:
        f = self.f
        if MANIFEST in self.listing.links:
            f.fail(f"{MANIFEST} is a symlink")
            return False
        if MANIFEST not in self.listing.files:
            f.fail(f"no {MANIFEST} (or it is not a regular file)")
            return False
        size = self.listing.files[MANIFEST]
        if size > MAX_MANIFEST_BYTES:
            f.fail(f"{MANIFEST} is {size} bytes: too large to be a take manifest")
            return False
        try:
            data = load_json(self.take / MANIFEST)
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            f.fail(f"{MANIFEST}: not valid JSON ({show(str(e)[:200])})")
            return False
        except OSError as e:
            f.fail(f"{MANIFEST}: cannot read: {e.strerror or e}")
            return False
        if not isinstance(data, dict):
            f.fail(f"{MANIFEST}: not a JSON object")
            return False
        if data.get("format") != FORMAT:
            f.fail(f"{MANIFEST}: format {show(repr(data.get('format')))[:80]}, expected {FORMAT!r}")
            return False
        if data.get("version") != VERSION:
            f.fail(
                f"{MANIFEST}: unknown version {show(repr(data.get('version')))[:40]} (this improvcap reads "
                f"version {VERSION})"
            )
            return False
        self.manifest = data
        return True

    def check_status(self) -> bool:
        """False when the take is not finalised: its counts and hashes are not written yet."""
        status = self.manifest.get("status")
        if status == "complete":
            return True
        if status == "repaired":
            self.f.warn(f"repaired take: {self.repair_notes()}")
            return True
        if status in ("recording", "interrupted"):
            self.f.fail(f"not finalised (status {status}): run improvcap repair")
        else:
            self.f.fail(f"{MANIFEST}: unknown status {show(repr(status))[:60]}")
        return False

    def repair_notes(self) -> str:
        """What the manifest's repair record says was lost: `repair.lost` (per stream, its `summary`), else
        `repair.notes` (text or a list of texts)."""
        repair = self.manifest.get("repair")
        notes: Any = repair.get("lost", repair.get("notes")) if isinstance(repair, dict) else repair

        def text(v: Any) -> str:
            if isinstance(v, dict) and isinstance(v.get("summary"), str):
                return v["summary"]
            return v if isinstance(v, str) else json.dumps(v, default=str)

        if isinstance(notes, str) and notes.strip():
            return show(notes.strip())
        if isinstance(notes, list) and notes:
            return show("; ".join(text(n) for n in notes))
        if isinstance(notes, dict) and notes:
            return show("; ".join(f"{k}: {text(v)}" for k, v in notes.items()))
        return "no repair record in take.json: the loss is not stated"

    # -- folder, files and hashes -------------------------------------------------------------------
    def check_folder(self) -> None:
        for rel, target in sorted(self.listing.links.items()):
            if rel != MANIFEST:
                self.f.fail(f"{show(rel)} is a symlink (to {show(target)}): not followed")
        for rel in sorted(self.listing.special):
            self.f.fail(f"{show(rel)} is not a regular file")
        for err in self.listing.errors:
            self.f.fail(show(err))

    def listed_files(self) -> list[tuple[str, int, str]] | None:
        """(relpath, bytes, sha256) of every well-formed entry of `files`; reasons for the others."""
        files = self.manifest.get("files")
        if not isinstance(files, dict):
            self.f.fail(f"{MANIFEST}: files is not an object: integrity not checked")
            return None
        self.listed = {rel for rel in files if isinstance(rel, str)}
        out = []
        for rel, entry in files.items():
            parts = PurePosixPath(rel).parts if isinstance(rel, str) else ()
            if (
                not isinstance(rel, str)
                or not rel
                or "\0" in rel
                or "\\" in rel
                or rel.startswith("/")
                or ".." in parts
                or rel != "/".join(p for p in parts if p != ".")
            ):
                self.f.fail(f"{MANIFEST}: file path {show(repr(rel))[:120]} escapes the take")
                continue
            size = integer(mapping(entry).get("bytes"))
            digest = mapping(entry).get("sha256")
            if size is None or size < 0 or not isinstance(digest, str) or not _SHA256.match(digest) or rel == MANIFEST:
                self.f.fail(f"{MANIFEST}: malformed entry for {show(rel)} in files")
                continue
            out.append((rel, size, digest))
        return out

    def check_unlisted(self, listed: set[str]) -> None:
        for rel in sorted(self.listing.files):
            if rel == MANIFEST or rel in listed:
                continue
            if rel.lower().endswith(MEDIA_SUFFIXES):
                self.f.fail(f"{show(rel)}: media file not listed in {MANIFEST}")
            else:
                self.f.warn(f"{show(rel)}: foreign file in the take folder")

    def files_to_hash(self, entries: list[tuple[str, int, str]]) -> list[tuple[str, int, str]]:
        """The entries present as regular files of the listed size, sorted (reasons into hash_f for the others)."""
        f = self.hash_f
        out = []
        for rel, size, digest in sorted(entries):
            if rel in self.listing.links or rel in self.listing.special:
                continue  # reported by check_folder, and never opened
            if rel not in self.listing.files:
                f.fail(f"{show(rel)}: missing (listed in {MANIFEST})")
            elif self.listing.files[rel] != size:
                f.fail(f"{show(rel)}: {self.listing.files[rel]} bytes, {MANIFEST} says {size}")
            else:
                out.append((rel, size, digest))
        return out

    def hashed(self, rel: str, size: int, digest: str, outcome: tuple[str, int] | BaseException) -> None:
        """What hashing `rel` gave (sha256 and bytes read, or the error) against the manifest (into hash_f)."""
        with self.hash_f.check(show(rel)):
            if isinstance(outcome, BaseException):
                raise outcome
            got, n = outcome
            self.bytes += n
            if got != digest:
                self.hash_f.fail(f"{show(rel)}: sha256 differs from {MANIFEST} (changed after recording)")
            elif n != size:
                self.hash_f.fail(f"{show(rel)}: read {n} bytes, {MANIFEST} says {size}")

    def hash_listed(self, entries: list[tuple[str, int, str]]) -> None:
        """Runs on its own thread: present, same size, same sha256 (reasons into hash_f)."""
        done = [0, 0]  # bytes read, bytes at the last report

        def progress(n: int) -> None:
            done[0] += n
            if self.on_bytes is not None and done[0] - done[1] >= PROGRESS_EVERY:
                done[1] = done[0]
                self.on_bytes(done[0])

        for rel, size, digest in self.files_to_hash(entries):
            try:
                outcome: tuple[str, int] | BaseException = hash_file(self.take / rel, progress)
            except Exception as e:
                outcome = e
            self.hashed(rel, size, digest, outcome)
        if self.on_bytes is not None:
            self.on_bytes(self.bytes)

    def hash_plan(self) -> list[tuple[str, int, str]]:
        """For hashing outside this check (`verify_paths`): the files to hash, with the reasons for the listed
        files that cannot be (into hash_f); none for a take whose manifest is unreadable or not final."""
        self.listing = walk(self.take)
        if not self.load_manifest() or not self.check_status():
            return []
        listed = self.listed_files()
        return [] if listed is None else self.files_to_hash(listed)

    def with_hashes(self, result: dict[str, Any]) -> dict[str, Any]:
        """`result` of this take checked without hashing (`hashes=False`), with this check's hashing reasons
        (first, as `run` orders them) and bytes hashed."""
        merged = Findings(self.take)
        merged.items = self.hash_f.items + [tuple(r.split(": ", 1)) for r in result["reasons"]]
        return {**result, "verdict": merged.verdict, "reasons": merged.reasons(), "bytes": self.bytes}

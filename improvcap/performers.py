"""Performers and consent (DESIGN section 1): who performed in a take and what uses each one allowed.

A studio keeps a TOML performers file (by default `performers.toml` in the session folder), one
`[performers.<id>]` table per person. A take records the resolved entries in take.json and, as
`performers.json`, a canonical copy whose sha256 lands in the take's file hashes: consent is then part of
what `verify` checks, and a later edit of either copy shows.

Refusals happen before anything records: an unknown or revoked performer, or a signed consent form on
disk whose sha256 no longer matches the one written down when it was signed.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import PerformersError, did_you_mean

DEFAULT_FILE = "performers.toml"
RECORD_FORMAT = "improvcap.performers"
RECORD_VERSION = 1

ID_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_SHA256_RE = re.compile(r"^[0-9A-Fa-f]{64}$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_KEYS = ("name", "consent_form", "consent_sha256", "signed", "allowed", "denied", "revoked", "revoked_on", "notes")
_REQUIRED = ("name", "consent_form", "consent_sha256", "signed")


@dataclass(frozen=True)
class Performer:
    """One validated `[performers.<id>]` table. `notes` stays in the performers file, never in a take."""

    id: str
    name: str
    consent_form: str
    consent_sha256: str
    signed: _dt.date
    allowed: tuple[str, ...] = ()
    denied: tuple[str, ...] = ()
    revoked: bool = False
    revoked_on: _dt.date | None = None
    notes: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The fields a take records (JSON-ready; `signed` as YYYY-MM-DD)."""
        return {
            "id": self.id,
            "name": self.name,
            "consent_form": self.consent_form,
            "consent_sha256": self.consent_sha256,
            "signed": self.signed.isoformat(),
            "allowed": list(self.allowed),
            "denied": list(self.denied),
            "revoked": self.revoked,
        }

    def form_path(self, base: Path) -> Path:
        """The consent form on disk: relative to the performers file's folder, or absolute."""
        return base / self.consent_form


def default_path(session_dir: Path) -> Path:
    return session_dir / DEFAULT_FILE


# --- loading ------------------------------------------------------------------------------------


def load_performers(path: Path, *, today: _dt.date | None = None) -> dict[str, Performer]:
    """Read and validate a performers file. Every problem is one line naming the file and the key.

    `today` (default: the local date) is what `signed` and `revoked_on` must not lie after.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PerformersError(
            f"{path}: not found ({path.absolute()}; create it, or name another file with --performers FILE)"
        ) from None
    except OSError as e:
        raise PerformersError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise PerformersError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise PerformersError(f"{path}: not valid TOML: {e}") from None
    return parse_performers(doc, path, today=today or _dt.date.today())


def parse_performers(doc: dict[str, Any], path: Path, *, today: _dt.date) -> dict[str, Performer]:
    """Validate an already parsed TOML document (see `load_performers`)."""

    def fail(key: str, problem: str) -> PerformersError:
        return PerformersError(f"{path}: {key}: {problem}")

    for key in doc:
        if key != "performers":
            raise fail(
                key,
                f"unknown key{did_you_mean(key, ['performers'])} "
                "(a performers file holds only [performers.<id>] tables)",
            )
    tables = doc.get("performers", {})
    if not isinstance(tables, dict):
        raise fail("performers", "expected [performers.<id>] tables")
    performers: dict[str, Performer] = {}
    for pid, table in tables.items():
        label = f"performers.{_toml_key(pid)}"
        if not ID_RE.match(pid):
            raise fail(label, "performer id must be letters, digits, '_', '-' or '.'")
        if not isinstance(table, dict):
            raise fail(label, f"expected a table [{label}], got {_shown(table)}")
        performers[pid] = _parse_performer(pid, table, label, today, fail)
    return performers


def _parse_performer(
    pid: str, t: dict[str, Any], label: str, today: _dt.date, fail: Callable[[str, str], PerformersError]
) -> Performer:
    for key in t:
        if key not in _KEYS:
            raise fail(
                f"{label}.{_toml_key(key)}", f"unknown key{did_you_mean(key, _KEYS)} (expected {', '.join(_KEYS)})"
            )
    for key in _REQUIRED:
        if key not in t:
            raise fail(f"{label}.{key}", "missing")

    def text(key: str) -> str:
        v = t[key]
        if not isinstance(v, str):
            raise fail(f"{label}.{key}", f"expected a string, got {_shown(v)}")
        if not v.strip():
            raise fail(f"{label}.{key}", "must not be empty")
        return v

    def date(key: str) -> _dt.date:
        v = t[key]
        if isinstance(v, str) and _DATE_RE.match(v):
            try:
                d = _dt.date.fromisoformat(v)
            except ValueError:
                raise fail(f"{label}.{key}", f"not a valid date: {v!r}") from None
        elif isinstance(v, _dt.date) and not isinstance(v, _dt.datetime):
            d = v
        else:
            raise fail(f"{label}.{key}", f"expected a date YYYY-MM-DD, got {_shown(v)}")
        if d > today:
            raise fail(f"{label}.{key}", f"{d.isoformat()} is in the future (today is {today.isoformat()})")
        return d

    def scopes(key: str) -> tuple[str, ...]:
        v = t.get(key, [])
        if not isinstance(v, list):
            raise fail(f"{label}.{key}", f"expected a list of scope names, got {_shown(v)}")
        for item in v:
            if not isinstance(item, str) or not item.strip():
                raise fail(f"{label}.{key}", f"expected non-empty scope names, got {_shown(item)}")
        return tuple(dict.fromkeys(v))  # a scope named twice is still one scope

    name = text("name")
    consent_form = text("consent_form")
    sha = t["consent_sha256"]
    if not isinstance(sha, str) or not _SHA256_RE.match(sha):
        raise fail(f"{label}.consent_sha256", f"expected 64 hexadecimal digits (a sha256), got {_shown(sha)}")
    signed = date("signed")
    allowed, denied = scopes("allowed"), scopes("denied")
    if both := [s for s in allowed if s in denied]:
        raise fail(f"{label}.denied", f"{both[0]!r} is both allowed and denied")
    revoked = t.get("revoked", False)
    if not isinstance(revoked, bool):
        raise fail(f"{label}.revoked", f"expected true or false, got {_shown(revoked)}")
    revoked_on = None
    if "revoked_on" in t:
        revoked_on = date("revoked_on")
        if not revoked:
            raise fail(f"{label}.revoked_on", "given but revoked is false (set revoked = true, or remove it)")
        if revoked_on < signed:
            raise fail(f"{label}.revoked_on", f"{revoked_on.isoformat()} is before signed ({signed.isoformat()})")
    notes = t.get("notes")
    if notes is not None and not isinstance(notes, str):
        raise fail(f"{label}.notes", f"expected a string, got {_shown(notes)}")
    return Performer(
        id=pid,
        name=name,
        consent_form=consent_form,
        consent_sha256=sha.lower(),
        signed=signed,
        allowed=allowed,
        denied=denied,
        revoked=revoked,
        revoked_on=revoked_on,
        notes=notes,
    )


def _toml_key(key: str) -> str:
    """A key as it would be written in TOML, so the error points at what the user typed."""
    return key if re.match(r"^[A-Za-z0-9_-]+$", key) else json.dumps(key, ensure_ascii=False)


def _shown(v: Any) -> str:
    if isinstance(v, (_dt.date, _dt.time)):
        return v.isoformat()  # a TOML date/datetime, shown as written rather than as a Python repr
    if isinstance(v, dict):
        return "a table"
    return repr(v)


# --- resolving for a take -----------------------------------------------------------------------


def verify_consent_form(performer: Performer, base: Path) -> bool:
    """True when the form is on disk and matches `consent_sha256`, False when it is not on disk.

    A form that is present but different is refused: what the take would record is no longer what was signed.
    """
    path = performer.form_path(base)
    if not path.exists():
        return False
    if not path.is_file():
        raise PerformersError(f"{performer.id}: consent form {performer.consent_form} is not a file")
    try:
        with open(path, "rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError as e:
        raise PerformersError(
            f"{performer.id}: cannot read consent form {performer.consent_form}: {e.strerror or e}"
        ) from None
    if digest != performer.consent_sha256:
        raise PerformersError(
            f"{performer.id}: consent form {performer.consent_form} does not match "
            f"consent_sha256 (the form changed since it was recorded)"
        )
    return True


def resolve(ids: Sequence[str], performers: dict[str, Performer], base: Path) -> list[dict[str, Any]]:
    """The take.json entries for `ids`, in the order given (repeats collapsed). `base` is the performers
    file's folder. Unknown and revoked performers, and changed consent forms, raise PerformersError."""
    unique = list(dict.fromkeys(ids))
    for pid in unique:
        if pid not in performers:
            known = ", ".join(sorted(performers)) or "none"
            raise PerformersError(f"unknown performer {pid!r} (known: {known})")
        p = performers[pid]
        if p.revoked:
            when = f" ({p.revoked_on.isoformat()})" if p.revoked_on else ""
            raise PerformersError(f"performer {pid!r} has revoked consent{when}")
    entries = []
    for pid in unique:
        p = performers[pid]
        entries.append({**p.as_dict(), "consent_form_verified": verify_consent_form(p, base)})
    return entries


def take_performers(ids: Sequence[str], path: Path, *, today: _dt.date | None = None) -> list[dict[str, Any]]:
    """`--performer ID...` with `--performers FILE`: load and resolve. No ids → [] without reading the file,
    so a take without performers does not need one."""
    if not ids:
        return []
    path = Path(path)
    return resolve(ids, load_performers(path, today=today), path.parent)


# --- the tamper-evident record --------------------------------------------------------------------


def consent_record(entries: list[dict[str, Any]]) -> bytes:
    """Canonical bytes of `performers.json` in a take: sorted keys, no spaces, UTF-8, one trailing newline.
    The same entries always give the same bytes, so the file's sha256 can be recomputed from take.json."""
    doc = {"format": RECORD_FORMAT, "version": RECORD_VERSION, "performers": entries}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8") + b"\n"


def consent_digest(entries: list[dict[str, Any]]) -> str:
    """sha256 of `consent_record(entries)` (take.json `performers_sha256`)."""
    return hashlib.sha256(consent_record(entries)).hexdigest()


def consent_summary(entries: list[dict[str, Any]], scopes: Iterable[str] = ()) -> dict[str, dict[str, list[str]]]:
    """Per scope (every scope any performer named, plus `scopes`): performer ids that allow, deny or did
    not say, each in the take's order. A scope is usable downstream only when everyone allowed it."""
    names = set(scopes)
    for e in entries:
        names.update(e["allowed"], e["denied"])
    summary: dict[str, dict[str, list[str]]] = {}
    for scope in sorted(names):
        row: dict[str, list[str]] = {"allowed": [], "denied": [], "unspecified": []}
        for e in entries:
            key = "allowed" if scope in e["allowed"] else "denied" if scope in e["denied"] else "unspecified"
            row[key].append(e["id"])
        summary[scope] = row
    return summary

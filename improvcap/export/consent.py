"""Whether a take's performers allow a use now: the consent half of an export's decision.

Judged against the performers file as it is at export time (by default the session's performers.toml),
never against the copy in the take: a revocation or a withdrawn scope after the shoot removes the take
from every later export. Scopes match exactly, as written in the performers file. Names stay out of what
is exported: a performer is their id and the sha256 of the form they signed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import PerformersError
from ..performers import DEFAULT_FILE, Performer, load_performers, verify_consent_form
from ..take.hashing import sha256_file


@dataclass(frozen=True)
class ConsentRules:
    """What admits a take: the use, and the two choices the export's manifest states."""

    scope: str
    performers_file: Path | None = None  # None: each take's session performers.toml
    include_unattributed: bool = False  # takes that record no performers
    accept_unverified_forms: bool = False  # forms not on disk to re-hash


@dataclass
class PerformersFile:
    """One performers file as read at export time (or why it could not be)."""

    path: Path
    performers: dict[str, Performer] = field(default_factory=dict)
    sha256: str | None = None
    error: str | None = None


class PerformersFiles:
    """The performers files an export reads, each read once."""

    def __init__(self) -> None:
        self._files: dict[Path, PerformersFile] = {}

    def get(self, path: Path) -> PerformersFile:
        path = Path(path).absolute()
        if path not in self._files:
            entry = PerformersFile(path)
            try:
                entry.performers = load_performers(path)
                entry.sha256 = sha256_file(path)
            except (PerformersError, OSError) as e:
                entry.error = str(e)
            self._files[path] = entry
        return self._files[path]

    def read(self) -> list[PerformersFile]:
        return list(self._files.values())

    def scopes(self) -> set[str]:
        """Every scope any performer of these files allowed or denied."""
        return {s for f in self._files.values() for p in f.performers.values() for s in (*p.allowed, *p.denied)}


def performers_file_for(take_dir: Path, rules: ConsentRules) -> Path:
    return rules.performers_file if rules.performers_file is not None else take_dir.parent / DEFAULT_FILE


def recorded_ids(manifest: Mapping[str, Any]) -> list[str]:
    entries = manifest.get("performers")
    return (
        [e["id"] for e in entries if isinstance(e, dict) and isinstance(e.get("id"), str)]
        if isinstance(entries, list)
        else []
    )


def judge_consent(
    take_dir: Path, manifest: Mapping[str, Any], rules: ConsentRules, files: PerformersFiles
) -> tuple[list[str], list[dict[str, Any]]]:
    """(reasons the take is excluded — none when admitted, the performers as exported)."""
    ids = recorded_ids(manifest)
    if not ids:
        if rules.include_unattributed:
            return [], []
        return ["no performers recorded (--include-unattributed exports such takes)"], []
    source = files.get(performers_file_for(take_dir, rules))
    if source.error is not None:
        return [f"consent cannot be judged: {source.error}"], []
    recorded = {e["id"]: e for e in manifest["performers"] if isinstance(e, dict) and isinstance(e.get("id"), str)}
    reasons: list[str] = []
    exported: list[dict[str, Any]] = []
    for pid in ids:
        p = source.performers.get(pid)
        if p is None:
            reasons.append(f"performer {pid!r} is not in {source.path.name} any more")
            continue
        why = _refusal(p, rules, source.path.parent)
        if isinstance(why, str):
            reasons.append(why)
            continue
        exported.append(performer_entry(p, form_verified=why, recorded=recorded[pid]))
    return reasons, exported


def _refusal(p: Performer, rules: ConsentRules, base: Path) -> str | bool:
    """Why `p` does not admit the take, else whether their form was re-hashed on disk."""
    if p.revoked:
        return f"performer {p.id!r} revoked consent" + (f" on {p.revoked_on.isoformat()}" if p.revoked_on else "")
    if rules.scope in p.denied:
        return f"performer {p.id!r} denied {rules.scope!r}"
    if rules.scope not in p.allowed:
        return f"performer {p.id!r} did not allow {rules.scope!r} (allowed: {', '.join(p.allowed) or 'nothing'})"
    try:
        verified = verify_consent_form(p, base)
    except PerformersError as e:
        return str(e)
    if not verified and not rules.accept_unverified_forms:
        return (
            f"performer {p.id!r}: consent form {p.consent_form} is not on disk to check "
            f"(--accept-unverified-forms counts it)"
        )
    return verified


def performer_entry(p: Performer, *, form_verified: bool, recorded: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A performer as an export states them: id, the signed form's hash and the scopes now; no name."""
    entry: dict[str, Any] = {
        "id": p.id,
        "consent_sha256": p.consent_sha256,
        "signed": p.signed.isoformat(),
        "allowed": list(p.allowed),
        "denied": list(p.denied),
        "revoked": p.revoked,
        "form_verified": form_verified,
    }
    if recorded is not None:
        entry["recorded"] = {
            k: recorded.get(k) for k in ("consent_sha256", "allowed", "denied", "consent_form_verified")
        }
    return entry


def unknown_scope_warning(scope: str, files: PerformersFiles) -> str | None:
    """A warning when nobody allowed or denied `scope` (a typo exports nothing), naming the known ones."""
    known = files.scopes()
    if scope in known or not any(f.performers for f in files.read()):
        return None
    from ..errors import did_you_mean

    return (
        f"scope {scope!r} is in nobody's allowed or denied list{did_you_mean(scope, known)}; "
        f"known scopes: {', '.join(sorted(known)) or 'none'}"
    )


def scopes_of(entries: Iterable[Mapping[str, Any]]) -> set[str]:
    return {s for e in entries for s in (*e.get("allowed", ()), *e.get("denied", ()))}

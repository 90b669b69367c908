"""`improvcap performers report ID PATH...`: a performer's right to know.

Every take the performer is in, the scopes they allowed and denied as each take recorded them, their
consent now (from each take's performers file, or the one named), and every export that includes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..take.layout import MANIFEST
from ..take.manifest import LOAD_ERRORS, load_json
from ..verify import find_takes
from .consent import ConsentRules, PerformersFiles, performers_file_for
from .provenance import EXPORT_FORMAT, EXPORT_MANIFEST


def performer_report(
    pid: str, paths: Sequence[Path], exports: Sequence[Path] = (), performers_file: Path | None = None
) -> dict[str, Any]:
    rules = ConsentRules(scope="", performers_file=performers_file)
    files = PerformersFiles()
    takes: list[dict[str, Any]] = []
    now: dict[str, Any] | None = None
    for take in find_takes(paths):
        try:
            m = load_json(take / MANIFEST)
        except LOAD_ERRORS:
            continue
        entries = m.get("performers") if isinstance(m, dict) else None
        entry = (
            next((e for e in entries if isinstance(e, dict) and e.get("id") == pid), None)
            if isinstance(entries, list)
            else None
        )
        if entry is None:
            continue
        source = files.get(performers_file_for(take, rules))
        p = source.performers.get(pid)
        if p is not None and now is None:
            now = {
                "name": p.name,
                "allowed": list(p.allowed),
                "denied": list(p.denied),
                "revoked": p.revoked,
                "revoked_on": p.revoked_on.isoformat() if p.revoked_on else None,
                "consent_sha256": p.consent_sha256,
                "performers_file": str(source.path),
            }
        takes.append(
            {
                "take": f"{m.get('session')}/{take.name}",
                "path": str(take),
                "scene": m.get("scene"),
                "t0_utc": m.get("t0_utc"),
                "status": m.get("status"),
                "recorded": {k: entry.get(k) for k in ("allowed", "denied", "consent_sha256", "signed")},
                "now": None
                if p is None
                else {"allowed": list(p.allowed), "denied": list(p.denied), "revoked": p.revoked},
                "now_error": source.error if p is None else None,
            }
        )
    found = []
    for folder in exports:
        try:
            e = load_json(Path(folder) / EXPORT_MANIFEST)
        except LOAD_ERRORS as err:
            raise UsageError(f"{folder}: not an export ({EXPORT_MANIFEST}: {err})") from None
        if not isinstance(e, dict) or e.get("format") != EXPORT_FORMAT:
            raise UsageError(f"{folder}: not an improvcap export")
        holding = [t["take"] for t in e.get("takes", []) if pid in (t.get("performers") or [])]
        if holding:
            found.append(
                {
                    "export": str(folder),
                    "id": e.get("id"),
                    "scope": e.get("scope"),
                    "created_utc": e.get("created_utc"),
                    "state": e.get("state"),
                    "takes": holding,
                }
            )
    return {"performer": pid, "now": now, "takes": takes, "exports": found}

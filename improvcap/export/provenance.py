"""An export's provenance: `export.json` (what was decided, from what, into which files) and the consent
of every performer as an ODRL policy in JSON-LD, with the use (the scope) as its purpose constraint.

export.json is rewritten atomically after every shard or file, so an interrupted export states exactly
what it wrote; `state` is `writing`, `interrupted` or `complete`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from .. import __version__
from ..take.layout import MANIFEST
from .selection import Decision

EXPORT_MANIFEST = "export.json"
EXPORT_FORMAT = "improvcap.export"
EXPORT_VERSION = 1
ODRL_CONTEXT = "http://www.w3.org/ns/odrl.jsonld"
WRITING, INTERRUPTED, COMPLETE = "writing", "interrupted", "complete"


def consent_policy(performer: Mapping[str, Any], target: str) -> dict[str, Any]:
    """One performer's consent as an ODRL Set: a permission to use `target` for each allowed scope and a
    prohibition for each denied one, the scope as an `odrl:purpose` constraint; the signed form's hash
    names the policy, so a re-signed form is a new policy."""

    def rule(scope: str) -> dict[str, Any]:
        return {
            "target": target,
            "assigner": f"urn:improvcap:performer:{performer['id']}",
            "action": "use",
            "constraint": [{"leftOperand": "purpose", "operator": "eq", "rightOperand": scope}],
        }

    return {
        "@context": ODRL_CONTEXT,
        "@type": "Set",
        "uid": f"urn:improvcap:consent:{performer['id']}:{performer['consent_sha256']}",
        "profile": "urn:improvcap:consent",
        "permission": [rule(s) for s in performer.get("allowed", [])],
        "prohibition": [rule(s) for s in performer.get("denied", [])],
    }


def take_record(d: Decision) -> dict[str, Any]:
    """An included take as the export names it: its manifest's sha256 and every file's hash as verified."""
    manifest_bytes = (d.path / MANIFEST).read_bytes()
    m = d.manifest
    return {
        "take": d.name,
        "session": m.get("session"),
        "scene": m.get("scene"),
        "take_number": m.get("take"),
        "t0_utc": m.get("t0_utc"),
        "duration_s": m.get("duration_s"),
        "status": m.get("status"),
        "take_json_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
        "performers_sha256": m.get("performers_sha256"),
        "files": m.get("files", {}),
        "performers": [p["id"] for p in d.performers],
    }


def new_manifest(
    *,
    scope: str,
    out_format: str,
    options: Mapping[str, Any],
    performers_files: Sequence[Mapping[str, Any]],
    warnings: Sequence[str],
) -> dict[str, Any]:
    """export.json as it starts; `add_decision` adds each take as it is decided."""
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "tool": {"name": "improvcap", "version": __version__},
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "state": WRITING,
        "id": f"urn:uuid:{uuid.uuid4()}",
        "scope": scope,
        "output_format": out_format,
        "options": dict(options),
        "performers_files": list(performers_files),
        "warnings": list(warnings),
        "decisions": [],
        "takes": [],
        "performers": [],
        "outputs": [],
        "interruption": None,
    }


def add_decision(manifest: dict[str, Any], d: Decision) -> None:
    """A take's decision; an included take's record, and each of its performers not yet listed with
    their consent as an ODRL policy on this export."""
    manifest["decisions"].append(d.as_dict())
    if not d.included:
        return
    manifest["takes"].append(take_record(d))
    listed_ids = {p["id"] for p in manifest["performers"]}
    for p in d.performers:  # all read from the performers file now: two takes give the same entry
        if p["id"] not in listed_ids:
            manifest["performers"].append({**p, "policy": consent_policy(p, manifest["id"])})
            listed_ids.add(p["id"])


def output_entry(path: str, size: int, sha256: str, **extra: Any) -> dict[str, Any]:
    return {"path": path, "bytes": size, "sha256": sha256, **extra}


def listed(manifest: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {
        o["path"]: o for o in manifest.get("outputs", []) if isinstance(o, Mapping) and isinstance(o.get("path"), str)
    }

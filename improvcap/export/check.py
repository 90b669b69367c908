"""`improvcap verify-export DIR`: re-hash an export and check it against its export.json, reading only.

Every listed file must be there with its size and sha256, nothing else may be in DIR (a file slipped in,
or a temporary left by a stopped export), and the export must say it is complete.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..take.hashing import hash_file
from ..take.manifest import LOAD_ERRORS, load_json
from .provenance import COMPLETE, EXPORT_FORMAT, EXPORT_MANIFEST, listed


def check_export(folder: Path) -> dict[str, Any]:
    """{"export": DIR, "ok": bool, "problems": [...], "files": n checked, "bytes": n}."""
    problems: list[str] = []
    result: dict[str, Any] = {"export": str(folder), "ok": False, "problems": problems, "files": 0, "bytes": 0}
    try:
        manifest = load_json(folder / EXPORT_MANIFEST)
    except LOAD_ERRORS as e:
        problems.append(f"{EXPORT_MANIFEST}: cannot be read: {e}")
        return result
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
        problems.append(f"{EXPORT_MANIFEST}: not an improvcap export manifest")
        return result
    if manifest.get("state") != COMPLETE:
        problems.append(
            f"the export is {manifest.get('state')}"
            + (f": {manifest['interruption']}" if manifest.get("interruption") else "")
            + " (--resume continues it)"
        )
    outputs = listed(manifest)
    for rel, entry in outputs.items():
        path = folder / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts or path.is_symlink() or not path.is_file():
            problems.append(f"{rel}: missing" if not path.exists() else f"{rel}: not a regular file in the export")
            continue
        digest, size = hash_file(path)
        result["files"] += 1
        result["bytes"] += size
        if size != entry.get("bytes"):
            problems.append(f"{rel}: {size} bytes, {EXPORT_MANIFEST} lists {entry.get('bytes')}")
        elif digest != entry.get("sha256"):
            problems.append(f"{rel}: sha256 {digest[:12]}… is not the listed {str(entry.get('sha256'))[:12]}…")
    for root, dirs, files in os.walk(folder):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            rel = os.path.relpath(os.path.join(root, name), folder)
            if rel != EXPORT_MANIFEST and rel not in outputs:
                problems.append(f"{rel}: not listed in {EXPORT_MANIFEST}")
    result["ok"] = not problems
    return result

"""Which takes an export includes, and why each other one is left out.

A take is included when it verifies (a FAIL verdict excludes it with its reasons; a repaired take passes
with its loss stated) and its performers allow the use now (consent.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..take.layout import MANIFEST
from ..take.manifest import LOAD_ERRORS, load_json
from ..verify import Limits
from ..verify.paths import iter_verified
from .consent import ConsentRules, PerformersFiles, judge_consent, performers_file_for, recorded_ids

FAIL, WARN = "FAIL: ", "WARN: "


@dataclass
class Decision:
    """One take's verdict in an export."""

    path: Path
    manifest: dict[str, Any]
    verdict: str
    reasons: list[str] = field(default_factory=list)  # why it is excluded (none: included)
    notes: list[str] = field(default_factory=list)  # what verify warned of, the loss of a repaired take
    performers: list[dict[str, Any]] = field(default_factory=list)
    performers_file: str | None = None

    @property
    def included(self) -> bool:
        return not self.reasons

    @property
    def name(self) -> str:
        return f"{self.manifest.get('session', self.path.parent.name)}/{self.path.name}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "take": self.name,
            "path": str(self.path),
            "included": self.included,
            "verdict": self.verdict,
            "status": self.manifest.get("status"),
            "reasons": self.reasons,
            "notes": self.notes,
            "performers": recorded_ids(self.manifest),
            "performers_file": self.performers_file,
        }


def decide(
    paths: Sequence[Path],
    rules: ConsentRules,
    files: PerformersFiles,
    *,
    jobs: int = 1,
    progress: Callable[[int, int, int, int], None] | None = None,
) -> Iterator[Decision]:
    """A decision for every take under `paths`, in take order, each as soon as its take is verified (the
    verification goes on in the background while the caller writes the takes decided so far)."""
    for result in iter_verified(paths, Limits(), jobs=jobs, progress=progress, in_take_order=True):
        take = Path(result["take"])
        try:
            manifest = load_json(take / MANIFEST)
        except LOAD_ERRORS as e:
            manifest = {"error": str(e)}
        if not isinstance(manifest, dict):
            manifest = {}
        reasons = [f"verify: {r[len(FAIL) :]}" for r in result.get("reasons", []) if r.startswith(FAIL)]
        notes = [r[len(WARN) :] for r in result.get("reasons", []) if r.startswith(WARN)]
        decision = Decision(take, manifest, str(result.get("verdict")), reasons, notes)
        if "performers" in manifest or not reasons:
            consent_reasons, decision.performers = judge_consent(take, manifest, rules, files)
            decision.reasons += consent_reasons
            if recorded_ids(manifest):
                decision.performers_file = str(performers_file_for(take, rules).absolute())
        yield decision

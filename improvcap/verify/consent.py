"""Consent and fault checks of a take: the performers and their canonical record, faults during the take."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..performers import consent_record, consent_summary
from ..take.hashing import read_small
from ..take.layout import MANIFEST, PERFORMERS_RECORD
from .findings import mapping, number, show

if TYPE_CHECKING:
    from .take_check import TakeCheck

MAX_RECORD_BYTES = 16 << 20  # performers.json


def check_performers(c: TakeCheck) -> tuple[list[str], dict[str, Any]]:
    entries = c.manifest.get("performers")
    if not isinstance(entries, list) or not all(
        isinstance(e, dict)
        and isinstance(e.get("id"), str)
        and isinstance(e.get("allowed", []), list)
        and isinstance(e.get("denied", []), list)
        for e in entries
    ):
        c.f.fail(f"{MANIFEST}: performers is not a list of performer entries: consent not verified")
        return [], {}
    ids = [e["id"] for e in entries]
    if not entries:
        if c.limits.require_consent:
            c.f.fail("no performers recorded (consent required)")
        else:
            c.f.warn("no performers recorded")
    for e in entries:
        if e.get("revoked") is True:
            c.f.fail(f"performer {show(e['id'])} is recorded with revoked consent")
    summary: dict[str, Any] = {}
    with c.f.check("consent summary"):
        summary = consent_summary(
            [{**e, "allowed": e.get("allowed", []), "denied": e.get("denied", [])} for e in entries]
        )
    record = c.regular(PERFORMERS_RECORD)
    if record is None:
        if PERFORMERS_RECORD not in c.listing.links:
            c.f.fail(f"{PERFORMERS_RECORD} missing: consent record not in the take")
        return ids, summary
    data = read_small(record, MAX_RECORD_BYTES)
    digest = hashlib.sha256(data).hexdigest()
    expected = None
    with c.f.check("consent record"):
        expected = consent_record(entries)
    if expected is not None and (data != expected or digest != c.manifest.get("performers_sha256")):
        c.f.fail(
            f"consent record altered: {PERFORMERS_RECORD} (sha256 {digest[:12]}…) is not the record of "
            f"{MANIFEST} performers (performers_sha256 "
            f"{show(str(c.manifest.get('performers_sha256')))[:12]}…)"
        )
    return ids, summary


def check_faults(c: TakeCheck, entries: Mapping[str, dict[str, Any]]) -> None:
    faults = c.manifest.get("faults")
    named = set()
    for fault in faults if isinstance(faults, list) else []:
        fault = mapping(fault)
        stream, detail = fault.get("stream") or "", fault.get("detail")
        t = number(fault.get("t_ns"))
        named.add(stream)
        at = f" at {t / 1e9:.3f} s" if t is not None else ""
        c.f.fail(f"fault{at}{' in ' + show(stream) if stream else ''}: {show(detail)}")
    for name, entry in entries.items():
        if entry.get("state") == "failed" and name not in named:
            c.f.fail(f"{name}: stream failed: {show(entry.get('fault'))}")

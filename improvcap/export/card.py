"""The export's dataset card (`README.md`): what a person reads before using the data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CARD = "README.md"


def _md(text: Any) -> str:
    """A value from a take or a performers file, safe inside a Markdown table cell."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def dataset_card(manifest: Mapping[str, Any]) -> str:
    scope = manifest["scope"]
    options = manifest.get("options", {})
    decisions = manifest.get("decisions", [])
    included = [d for d in decisions if d.get("included")]
    excluded = [d for d in decisions if not d.get("included")]
    lines = [
        f"# Dataset: {_md(scope)} export",
        "",
        f"Exported by improvcap {manifest['tool']['version']} on {manifest['created_utc']} "
        f"as **{manifest['output_format']}** (clips: {options.get('clip')}).",
        "",
        "## Permitted use",
        "",
        f"This data may be used for **{_md(scope)}** only. Every performer in every take below allowed that use "
        "explicitly, none denied it and none had revoked consent, judged against the performers file as it "
        "was at export time. Consent can be revoked later: use the newest export, and do not use this data "
        "for anything else.",
        "",
    ]
    if options.get("include_unattributed"):
        lines += ["Takes that record no performers were included on request (`--include-unattributed`).", ""]
    if options.get("accept_unverified_forms"):
        lines += ["Consent forms that were not on disk to check were accepted (`--accept-unverified-forms`).", ""]
    lines += ["## Takes", "", "| take | status | duration s | performers |", "|---|---|---|---|"]
    takes = {t["take"]: t for t in manifest.get("takes", [])}
    for d in included:
        t = takes.get(d["take"], {})
        lines.append(
            f"| {_md(d['take'])} | {_md(d.get('status'))} | {_md(t.get('duration_s'))} | "
            f"{_md(', '.join(d.get('performers') or []) or '–')} |"
        )
    lines += ["", f"{len(excluded)} take(s) were left out:", ""]
    lines += [f"- {_md(d['take'])}: {_md('; '.join(d['reasons']))}" for d in excluded] or ["- none"]
    lines += [
        "",
        "## Performers and consent",
        "",
        "Performers appear by id, with the sha256 of the consent form they signed; names stay with the "
        "studio. `export.json` holds each one's consent as an ODRL policy.",
        "",
        "| performer | form sha256 | allowed | denied |",
        "|---|---|---|---|",
    ]
    for p in manifest.get("performers", []):
        lines.append(
            f"| {_md(p['id'])} | {_md(p['consent_sha256'][:16])}… | {_md(', '.join(p['allowed']))} | "
            f"{_md(', '.join(p['denied']) or '–')} |"
        )
    lines += [
        "",
        "## Files",
        "",
        "`export.json` lists every file with its sha256 (`improvcap verify-export DIR` checks them); "
        "`croissant.json` describes the dataset in MLCommons Croissant with its Responsible-AI fields.",
        "",
    ]
    if manifest["output_format"] == "webdataset":
        lines += [
            "Each sample is one clip: `<camera>.mp4` (per-frame times as pts since the clip start), "
            "`<audio>.flac`, `<stream>.npy` (mocap and LSL channels, float32) and `json` (scene, take, "
            "clip range, every stream's per-row `t_ns`, the sync.csv rows, the performers).",
            "",
        ]
    else:
        lines += [
            "One MCAP file per take: every stream at its own rate, `log_time` = the take's UTC start + "
            "`t_ns`; take.json, the consent record and the calibration files as attachments.",
            "",
        ]
    return "\n".join(lines)

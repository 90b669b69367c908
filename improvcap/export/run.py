"""Running an export: decide, then write the data files, then the descriptions, into a folder it owns.

Never writes outside DIR and never over a file: DIR must be new or empty (`--resume` continues an export
that stopped), each data file is written under a hidden temporary name and linked to its name when whole.
export.json is rewritten after every file, so an interruption (Ctrl-C, a full disk) leaves it saying
exactly what was written; the shard in progress keeps its whole samples or is removed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ImprovcapError, UsageError
from ..take.atomic import Folder, is_temporary, pid_tag, rewriting, write_bytes_atomic, write_json_atomic
from ..take.hashing import hash_file
from ..take.layout import FOLDER_MODE
from ..take.manifest import LOAD_ERRORS, load_json
from ..take.reader import open_take
from ..verify import find_takes
from .card import CARD, dataset_card
from .clip_media import WRITE_ERRORS
from .consent import ConsentRules, PerformersFiles, performers_file_for, unknown_scope_warning
from .croissant import CROISSANT, croissant
from .mcap_file import TakeMcap
from .provenance import COMPLETE, EXPORT_MANIFEST, INTERRUPTED, add_decision, new_manifest, output_entry
from .selection import Decision, decide
from .shards import ShardWriter

FORMATS = ("webdataset", "mcap")
DEFAULT_SHARD_BYTES = 1_000_000_000
DEFAULT_LICENSE = "LicenseRef-studio-consent-restricted"


class ExportStopped(ImprovcapError):
    """An export stopped before its end (a full disk, a read error, Ctrl-C); export.json says what it wrote."""

    exit_code = 1


@dataclass(frozen=True)
class ExportRequest:
    paths: Sequence[Path]
    out: Path
    rules: ConsentRules
    out_format: str = "webdataset"
    clip: str | float = "take"
    shard_bytes: int = DEFAULT_SHARD_BYTES
    resume: bool = False
    jobs: int = 1
    calibration: Path | None = None
    license: str = DEFAULT_LICENSE

    def options(self) -> dict[str, Any]:
        """What must be the same for `--resume` to continue an export."""
        return {
            "clip": self.clip,
            "shard_bytes": self.shard_bytes,
            "include_unattributed": self.rules.include_unattributed,
            "accept_unverified_forms": self.rules.accept_unverified_forms,
            "performers_file": str(self.rules.performers_file) if self.rules.performers_file else None,
        }


@dataclass
class Plan:
    """The takes to decide on, the performers files they are judged by, and what to warn of first."""

    takes: list[Path]
    files: PerformersFiles
    warnings: list[str] = field(default_factory=list)


def plan(request: ExportRequest) -> Plan:
    """Find the takes and read their performers files (a scope nobody named is a warning before any take
    is verified); `decisions` then judges them."""
    if request.out_format not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got {request.out_format!r}")
    takes = find_takes(request.paths)
    if not takes:
        raise UsageError(f"no takes under {', '.join(map(str, request.paths))} (no folder holding a take.json)")
    files = PerformersFiles()
    for take in takes:
        files.get(performers_file_for(take, request.rules))
    return Plan(takes, files, [w for w in [unknown_scope_warning(request.rules.scope, files)] if w])


def decisions(
    request: ExportRequest, plan_: Plan, progress: Callable[[int, int, int, int], None] | None = None
) -> Iterator[Decision]:
    """Every take's decision in take order, each as soon as its take is verified."""
    return decide(plan_.takes, request.rules, plan_.files, jobs=request.jobs, progress=progress)


def _mcap_name(decision: Decision) -> str:
    clean = lambda s: re.sub(r"[^A-Za-z0-9_.-]", "_", s)  # noqa: E731
    return f"{clean(str(decision.manifest.get('session', 'session')))}__{clean(decision.path.name)}.mcap"


class _Export:
    def __init__(
        self,
        request: ExportRequest,
        decided: Iterable[Decision],
        folder: Folder,
        manifest: dict[str, Any],
        on_sample: Callable[[str], None],
        stop: Callable[[], bool],
    ) -> None:
        self.request, self.folder, self.manifest = request, folder, manifest
        self.decided, self.on_sample, self.stop = decided, on_sample, stop
        self.path = request.out / EXPORT_MANIFEST

    def save(self) -> None:
        write_json_atomic(self.path, self.manifest, folder=self.folder)

    def add_output(self, entry: dict[str, Any]) -> None:
        self.manifest["outputs"].append(entry)
        self.save()

    def included(self) -> Iterator[Decision]:
        """The included takes, as they are decided; every decision goes into export.json first."""
        for d in self.decided:
            if self.stop():
                raise KeyboardInterrupt
            add_decision(self.manifest, d)
            self.save()
            if d.included:
                yield d

    def webdataset(self) -> None:
        from .webdataset import TakeSamples

        done = {k for o in self.manifest["outputs"] for k in o.get("samples", [])}
        shards = sum(1 for o in self.manifest["outputs"] if o.get("kind") == "shard")
        writer = ShardWriter(
            self.folder,
            self.request.shard_bytes,
            lambda r: self.add_output({**r.as_dict(), "kind": "shard"}),
            first_number=shards,
            stop=self.stop,
        )
        try:
            for d in self.included():
                samples = TakeSamples(open_take(d.path), self.request.clip)
                if (why := samples.no_clip_reason()) is not None:
                    self.manifest["decisions"][-1]["notes"].append(why)
                    continue
                for key in samples.write(writer, d.performers, self.request.rules.scope, done.__contains__):
                    self.on_sample(key)
        except BaseException:
            writer.abandon()
            raise
        writer.close()

    def mcap(self) -> None:
        done = {o.get("take") for o in self.manifest["outputs"] if o.get("kind") == "mcap"}
        for d in self.included():
            if d.name in done:
                continue
            name = _mcap_name(d)
            take = open_take(d.path)
            calibration = self.request.calibration or Path.cwd() / "calibration" / str(d.manifest["rig"].get("name"))
            consent = {"scope": self.request.rules.scope, "performers": d.performers}
            with rewriting(self.request.out / name, pid_tag(), exclusive=True, folder=self.folder) as fh:
                counts = TakeMcap(take, consent, calibration).write(fh, self.stop)
            digest, size = hash_file(self.request.out / name)
            self.add_output(output_entry(name, size, digest, kind="mcap", take=d.name, messages=counts))
            self.on_sample(d.name)

    def describe(self) -> None:
        """croissant.json and README.md, then export.json complete."""
        data = [o for o in self.manifest["outputs"] if o.get("kind") in ("shard", "mcap")]
        for name, text in ((CROISSANT, None), (CARD, dataset_card(self.manifest))):
            if text is None:
                import json

                text = json.dumps(croissant(self.manifest, data, self.request.license), indent=2) + "\n"
            write_bytes_atomic(
                self.request.out / name, text.encode("utf-8"), replace_existing=False, folder=self.folder
            )
            digest, size = hash_file(self.request.out / name)
            self.manifest["outputs"].append(output_entry(name, size, digest, kind="description"))
        self.manifest["state"] = COMPLETE
        self.save()


def check_destination(request: ExportRequest) -> dict[str, Any] | None:
    """Check DIR (new or empty, or an export to resume); the manifest to resume, else None."""
    out = request.out
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: not a folder")
    manifest_path = out / EXPORT_MANIFEST
    if not request.resume:
        if out.exists() and any(out.iterdir()):
            raise UsageError(
                f"{out}: not empty; an export never overwrites (name a new folder, or --resume an export that stopped)"
            )
        return None
    if not manifest_path.is_file():
        raise UsageError(f"{out}: no {EXPORT_MANIFEST} to resume")
    try:
        manifest = load_json(manifest_path)
    except LOAD_ERRORS as e:
        raise UsageError(f"{manifest_path}: cannot be read: {e}") from None
    if manifest.get("state") == COMPLETE:
        raise UsageError(f"{out}: the export is complete; nothing to resume")
    mine = {"scope": request.rules.scope, "output_format": request.out_format, "options": request.options()}
    theirs = {k: manifest.get(k) for k in mine}
    if mine != theirs:
        differ = ", ".join(k for k in mine if mine[k] != theirs[k])
        raise UsageError(f"{out}: --resume needs the same {differ} as the export that stopped")
    for o in manifest.get("outputs", []):
        path = out / str(o.get("path"))
        if not path.is_file() or path.stat().st_size != o.get("bytes"):
            raise UsageError(f"{out}: {o.get('path')} is not as {EXPORT_MANIFEST} lists it; start a new export")
    return manifest


def export(
    request: ExportRequest,
    plan_: Plan,
    on_sample: Callable[[str], None] = lambda key: None,
    progress: Callable[[int, int, int, int], None] | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> dict[str, Any]:
    """Decide and write the export; returns its manifest (state complete). Takes are written as they are
    decided, while the next ones are verified; `--resume` decides every take first, since a take already
    written that is no longer admitted must refuse it before anything more is written. `stop()` (Ctrl-C
    seen by the caller) is polled between samples and members: an interruption never falls between a
    shard getting its name and export.json listing it."""
    previous = check_destination(request)
    try:
        request.out.mkdir(parents=True, exist_ok=True, mode=FOLDER_MODE)
    except OSError as e:
        raise UsageError(f"{request.out}: cannot create: {e.strerror or e}") from None
    files = [
        {"path": str(f.path), "sha256": f.sha256, **({"error": f.error} if f.error else {})} for f in plan_.files.read()
    ]
    manifest = new_manifest(
        scope=request.rules.scope,
        out_format=request.out_format,
        options=request.options(),
        performers_files=files,
        warnings=plan_.warnings,
    )
    decided: Iterable[Decision] = decisions(request, plan_, progress)
    if previous is not None:
        decided = list(decided)
        written = {t for o in previous.get("outputs", []) for t in _takes_of(o)}
        if gone := [d for d in decided if not d.included and _names(d) & written]:
            raise UsageError(
                f"{request.out}: {gone[0].name} is in what was written but no longer admitted "
                f"({gone[0].reasons[0]}); start a new export"
            )
        for key in ("outputs", "created_utc", "id"):
            manifest[key] = previous.get(key, manifest[key])
    with Folder(request.out) as folder:
        for name in os.listdir(folder.anchored):
            if is_temporary(name) or name.endswith(".partial"):
                folder.unlink(name)  # what a stopped export left half-written
        job = _Export(request, decided, folder, manifest, on_sample, stop)
        job.save()
        try:
            job.webdataset() if request.out_format == "webdataset" else job.mcap()
        except (KeyboardInterrupt, ImprovcapError, *WRITE_ERRORS) as e:
            reason = _reason(e)
            manifest["state"], manifest["interruption"] = INTERRUPTED, reason
            try:
                job.save()
            except OSError:
                pass
            if isinstance(e, KeyboardInterrupt):
                raise
            raise ExportStopped(
                f"export stopped: {reason}; {len(manifest['outputs'])} file(s) written are listed "
                f"in {request.out / EXPORT_MANIFEST} (--resume continues)"
            ) from None
        job.describe()
    return manifest


def _reason(e: BaseException) -> str:
    """One line for what stopped an export: a muxer reports the disk's error as its own callback's."""
    if isinstance(e, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    cause = e if isinstance(e, OSError) else e.__context__ if isinstance(e.__context__, OSError) else None
    if cause is not None:
        return f"{cause.strerror or cause}" + (f": {cause.filename}" if getattr(cause, "filename", None) else "")
    return str(e)


def _takes_of(output: dict[str, Any]) -> list[str]:
    if output.get("kind") == "mcap":
        return [str(output.get("take"))]
    return [k.rsplit("/", 1)[0] for k in output.get("samples", [])]


def _names(d: Decision) -> set[str]:
    """How a take is named in written outputs: MCAP files by the take, samples by their key's prefix."""
    from .webdataset import take_prefix

    return {d.name, take_prefix(str(d.manifest.get("session")), d.path.name)}

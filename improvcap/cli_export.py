"""The command line of exports: `export` (takes out of the studio, with consent enforced), `verify-export`
and `performers report` (a performer's right to know)."""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any

import typer

from .cli_support import (
    CalibrationOption,
    JsonOption,
    StopRequest,
    err,
    escape,
    new_table,
    one_line_errors,
    out,
    print_json,
    progress_bar,
    warn,
)
from .errors import CheckFailed, UsageError

performers_app = typer.Typer(no_args_is_help=True, help="Performers and their consent.")
PerformersFile = Annotated[
    Path | None,
    typer.Option(
        "--performers", help="Judge consent by this performers file (default: each take's session performers.toml)."
    ),
]
INTERRUPTED_STATUS = 130


def _size(text: str) -> int:
    units = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
    t = text.strip().lower().removesuffix("b")
    number, unit = (t[:-1], t[-1]) if t and t[-1] in units else (t, "")
    try:
        value = int(float(number) * units[unit])
    except ValueError:
        value = 0
    if value <= 0:
        raise UsageError(f"--shard-size must be a size such as 1GB, 500MB or 1000000, got {text!r}")
    return value


@one_line_errors
def export_command(
    paths: Annotated[list[Path], typer.Argument(help="Takes, sessions or whole folders of them.")],
    use: Annotated[
        str,
        typer.Option(
            "--use", help="The use (consent scope) the data is exported for, exactly as in the performers file."
        ),
    ],
    to: Annotated[Path, typer.Option("--to", help="A new or empty folder for the export.")],
    out_format: Annotated[
        str, typer.Option("--format", help="webdataset (tar shards of clips) or mcap (a file a take).")
    ] = "webdataset",
    clip: Annotated[
        str, typer.Option(help="webdataset clips: take, SECONDS windows, or marks (between two marks).")
    ] = "take",
    shard_size: Annotated[
        str, typer.Option(help="Shard size (a shard closes before the sample that would pass it).")
    ] = "1GB",
    performers: PerformersFile = None,
    include_unattributed: Annotated[
        bool, typer.Option("--include-unattributed", help="Also export takes that record no performers.")
    ] = False,
    accept_unverified_forms: Annotated[
        bool, typer.Option("--accept-unverified-forms", help="Count consent forms that are not on disk to re-hash.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the decision for every take; write nothing.")
    ] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an export that stopped, in its folder.")] = False,
    jobs: Annotated[
        int, typer.Option(help="Cores for verifying the takes while they are written (default: all).")
    ] = os.cpu_count() or 1,
    calibration: CalibrationOption = None,
    as_json: JsonOption = False,
) -> None:
    """Export the takes under PATH whose performers all allowed --use, judged against the performers file
    now; every other take is listed with its reason."""
    from .export.clips import parse_clip
    from .export.consent import ConsentRules
    from .export.run import ExportRequest, check_destination, decisions, export, plan

    if jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {jobs}")
    if not use.strip():
        raise UsageError("--use must name a scope")
    request = ExportRequest(
        paths=paths,
        out=to,
        out_format=out_format,
        clip=parse_clip(clip),
        shard_bytes=_size(shard_size),
        resume=resume,
        jobs=jobs,
        calibration=calibration,
        rules=ConsentRules(use, performers, include_unattributed, accept_unverified_forms),
    )
    if not dry_run:
        check_destination(request)  # refused before the takes are verified
    planned = plan(request)
    for line in planned.warnings:
        warn(line)
    if dry_run:
        with progress_bar("verifying") as progress:
            decided = [d.as_dict() for d in decisions(request, planned, progress)]
        _decision_table(decided, use, dry_run, as_json)
        return
    written = [0]
    try:
        # Ctrl-C, SIGTERM, SIGHUP only ask: the export stops at its next clean point (between members)
        with StopRequest() as stop, ExitStack() as shown:
            status: list[Any] = []

            def on_sample(key: str) -> None:
                # the status line (a thread) starts only now: verifying forks its workers while the export
                # is the only thread, which spares each worker a new interpreter
                if not status and err.is_terminal:
                    status.append(shown.enter_context(err.status("exporting…")))
                written[0] += 1
                if status:
                    status[0].update(f"exporting… {written[0]} written ({key})")

            manifest = export(request, planned, on_sample, stop=lambda: stop.requested)
    except KeyboardInterrupt:
        err.print(
            f"[bold red]error:[/] interrupted; what was written is listed in {escape(str(to / 'export.json'))} "
            f"(--resume continues)",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(INTERRUPTED_STATUS) from None
    data = [o for o in manifest["outputs"] if o.get("kind") in ("shard", "mcap")]
    if as_json:
        print_json(
            {
                "export": str(to.resolve()),
                "state": manifest["state"],
                "scope": use,
                "decisions": manifest["decisions"],
                "outputs": manifest["outputs"],
            }
        )
        return
    _decision_table(manifest["decisions"], use, dry_run, False)
    total = sum(o["bytes"] for o in data)
    out.print(
        f"{to}: {len(manifest['takes'])} takes, {written[0]} "
        f"{'samples' if out_format == 'webdataset' else 'files'} in {len(data)} files, "
        f"{total / 1e6:.1f} MB (export.json, croissant.json, README.md)",
        highlight=False,
        markup=False,
    )


def _decision_table(decided: list[dict[str, Any]], scope: str, dry_run: bool, to_stderr: bool) -> None:
    """The decision for every take (export.json's `decisions` entries)."""
    included = sum(bool(d["included"]) for d in decided)
    table = new_table(f"{'would export' if dry_run else 'exported'} {included} of {len(decided)} takes for {scope!r}")
    for col in ("take", "verdict", "decision", "reasons"):
        table.add_column(col, no_wrap=col != "reasons")
    for d in decided:
        why = d["reasons"] if not d["included"] else [f"note: {n}" for n in d["notes"]]
        table.add_row(
            escape(d["take"]),
            d["verdict"],
            "[green]include[/]" if d["included"] else "[red]exclude[/]",
            escape("\n".join(why)),
        )
    (err if to_stderr else out).print(table)


@one_line_errors
def verify_export_command(
    folder: Annotated[Path, typer.Argument(help="An export folder (it holds export.json).")],
    as_json: JsonOption = False,
) -> None:
    """Re-hash every file of an export and check it against its export.json. Exit 1 on any difference."""
    from .export.check import check_export

    if not folder.is_dir():
        raise UsageError(f"{folder}: not a folder")
    with err.status(f"hashing {folder}…"):
        result = check_export(folder)
    if as_json:
        print_json(result)
    else:
        for problem in result["problems"]:
            out.print(f"FAIL: {problem}", highlight=False, markup=False)
        if result["ok"]:
            out.print(
                f"{folder}: OK ({result['files']} files, {result['bytes'] / 1e6:.1f} MB as listed)",
                highlight=False,
                markup=False,
            )
    if not result["ok"]:
        raise CheckFailed(f"{folder}: {len(result['problems'])} problem(s) against export.json")


@performers_app.command("report")
@one_line_errors
def performers_report(
    performer: Annotated[str, typer.Argument(help="The performer's id.")],
    paths: Annotated[list[Path], typer.Argument(help="Takes, sessions or whole folders of them.")],
    exports: Annotated[
        list[Path] | None, typer.Option("--exports", help="Export folders to look in (repeatable).")
    ] = None,
    performers: PerformersFile = None,
    as_json: JsonOption = False,
) -> None:
    """Every take a performer is in, the consent each recorded and their consent now, and every export
    that holds them."""
    from .export.performer_report import performer_report

    for path in paths:
        if not path.exists():
            raise UsageError(f"{path}: no such file or folder")
    report = performer_report(performer, paths, exports or [], performers)
    if as_json:
        print_json(report)
        return
    now = report["now"]
    state = (
        "not in the performers file"
        if now is None
        else ("REVOKED" + (f" on {now['revoked_on']}" if now["revoked_on"] else ""))
        if now["revoked"]
        else f"allows {', '.join(now['allowed']) or 'nothing'}; denies {', '.join(now['denied']) or 'nothing'}"
    )
    name = f" ({now['name']})" if now else ""
    out.print(f"performer {performer}{name}: {state}", highlight=False, markup=False)
    table = new_table(f"{len(report['takes'])} takes")
    for col in ("take", "recorded", "allowed", "denied"):
        table.add_column(col)
    for t in report["takes"]:
        rec = t["recorded"]
        table.add_row(
            escape(t["take"]),
            escape(str(t["t0_utc"])[:19]),
            escape(", ".join(rec["allowed"] or [])),
            escape(", ".join(rec["denied"] or [])),
        )
    out.print(table)
    for e in report["exports"]:
        out.print(
            f"in export {e['export']} for {e['scope']!r} ({e['created_utc']}, {e['state']}): {', '.join(e['takes'])}",
            highlight=False,
            markup=False,
        )
    if not report["exports"]:
        out.print("in no export named", highlight=False, markup=False)

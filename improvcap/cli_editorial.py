"""The command line of `editorial`: a take's cameras, WAVs and timelines as editors open them, synced."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .cli_support import JsonOption, err, new_table, one_line_errors, out, print_json, warn


@one_line_errors
def editorial_command(
    paths: Annotated[list[Path], typer.Argument(help="Takes, sessions or whole folders of them.")],
    to: Annotated[Path, typer.Option("--to", help="A new (or empty) folder to write into.")],
    as_json: JsonOption = False,
) -> None:
    """Per take: the cameras remuxed into MOV with a timecode track, the WAVs with bext and iXML placed at
    their first sample, an OpenTimelineIO timeline (and FCP XML and CMX EDL where the adapters are
    installed); per session, a timeline of its takes."""
    from .editorial.run import editorial

    with err.status("writing…") as status:
        report = editorial(paths, to, on_take=lambda name: status.update(f"written {name}"))
    for line in report["warnings"]:
        warn(line)
    if as_json:
        print_json({"editorial": str(to.resolve()), **report})
        return
    table = new_table(f"{to}  (timelines: .otio{''.join(', ' + a for a in report['adapters'])})")
    for col in ("take", "stream", "file", "first frame / sample", "count"):
        table.add_column(col)
    for take in report["takes"]:
        for s in take["streams"]:
            table.add_row(
                take["take"], s["stream"], s["file"], s.get("timecode") or f"sample {s['start']}", str(s["count"])
            )
    out.print(table)

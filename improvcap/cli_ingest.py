"""The command line of `ingest`: a file recorded elsewhere added to a take, aligned on its shared clock."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .cli_support import JsonOption, err, one_line_errors, out, print_json


@one_line_errors
def ingest_command(
    take: Annotated[Path, typer.Argument(help="The take folder to add the file to.")],
    file: Annotated[Path, typer.Argument(help="A video (.mov .mp4 .mxf .mkv ...) or WAV recorded elsewhere.")],
    name: Annotated[str, typer.Option("--as", help="The new stream's name in the take.")],
    by: Annotated[
        str | None,
        typer.Option(
            "--by",
            help="timecode (embedded: tmcd, bext), ltc (on one of its audio channels), slates (flashes, "
            "beeps), audio (correlated with one of the take's). Default: the first of these that works.",
        ),
    ] = None,
    offset_ms: Annotated[
        float | None,
        typer.Option(
            "--offset-ms", help="Place the file's first frame or sample this many ms after the take's t0, by hand."
        ),
    ] = None,
    channel: Annotated[
        int | None, typer.Option("--channel", help="--by ltc: the channel (from 1) with the LTC.")
    ] = None,
    against: Annotated[str | None, typer.Option("--against", help="--by audio: the take's audio stream.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Copy FILE unchanged into TAKE as stream NAME, with its timing table on the take's clock; the manifest
    records how it was aligned (method, offset, drift, residuals), sync.csv and the hashes are updated."""
    from .ingest.run import ingest

    with err.status("ingesting…") as status:
        entry = ingest(
            take, file, name, by=by, offset_ms=offset_ms, channel=channel, against=against, on_step=status.update
        )
    record = entry["ingest"]
    if as_json:
        print_json({"take": str(take.resolve()), "stream": name, **entry})
        return
    worst = record["residual_max_ns"]
    out.print(
        f"{name}: {entry['media']} ({entry['count']} {'frames' if entry['kind'] == 'camera' else 'samples'}) "
        f"by {record['method']}: first at {entry['first_t_ns'] / 1e9:+.6f} s, drift {record['drift_ppm']:+.2f} ppm"
        + (f", residuals within {worst / 1e6:.3f} ms over {record['points']} points" if worst is not None else "")
        + f" ({record['detail']})",
        highlight=False,
        soft_wrap=True,
    )

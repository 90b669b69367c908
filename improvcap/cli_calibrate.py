"""`improvcap calibrate ...`: board, cameras, sync, audio and show (DESIGN section 6: calibration/<rig>/)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from .calibrate import store
from .cli_support import (
    CalibrationOption,
    JsonOption,
    OutOption,
    StopRequest,
    err,
    escape,
    new_table,
    one_line_errors,
    out,
    print_json,
    warn,
)
from .errors import CheckFailed, UsageError
from .rig import Rig, load_rig
from .take.layout import MANIFEST

SLATING_SESSION = "calibration"  # the session folder of the takes calibrate sync records

calibrate_app = typer.Typer(no_args_is_help=True, help="Calibrate a rig: cameras, stream latencies, audio levels.")


@calibrate_app.command("board")
@one_line_errors
def calibrate_board(
    out_file: Annotated[Path, typer.Option("--out", help="The PNG to write; its spec goes beside it as .toml.")] = Path(
        "charuco-board.png"
    ),
    squares_x: Annotated[int, typer.Option(help="Squares across.")] = 7,
    squares_y: Annotated[int, typer.Option(help="Squares down.")] = 5,
    square_mm: Annotated[float, typer.Option(help="Square side in mm.")] = 35.0,
    marker_mm: Annotated[float, typer.Option(help="ArUco marker side in mm.")] = 26.0,
    dictionary: Annotated[str, typer.Option(help="ArUco dictionary.")] = "DICT_5X5_100",
    dpi: Annotated[int, typer.Option(help="Print resolution of the PNG.")] = 300,
) -> None:
    """A printable ChArUco board (PNG at a stated dpi) and its spec (TOML) for `calibrate cameras`."""
    from .calibrate.board import BoardSpec, write_board

    spec = BoardSpec(
        squares_x=squares_x,
        squares_y=squares_y,
        square_mm=square_mm,
        marker_mm=marker_mm,
        dictionary=dictionary,
        dpi=dpi,
    )
    png, toml = write_board(spec, out_file)
    papers = spec.papers()
    w, h = spec.page_mm
    out.print(
        f"{png}  ({w:.0f} x {h:.0f} mm at {dpi} dpi; print at 100 %"
        + (f" on {' or '.join(papers)})" if papers else ")"),
        highlight=False,
    )
    out.print(f"{toml}  (the board's spec: give it to calibrate cameras --board)", highlight=False, markup=False)
    if not papers:
        warn("the page is larger than A4 and US letter")


@calibrate_app.command("cameras")
@one_line_errors
def calibrate_cameras_command(
    rig: Annotated[str, typer.Argument(help="Rig file path or name.")],
    take: Annotated[Path | None, typer.Option("--take", help="A take in which every camera films the board.")] = None,
    images: Annotated[
        list[str] | None,
        typer.Option("--images", help="NAME=DIR: still images of camera NAME (repeatable; same order = same instant)."),
    ] = None,
    board: Annotated[
        Path | None, typer.Option("--board", help="The board's spec TOML (default board otherwise).")
    ] = None,
    threshold: Annotated[float, typer.Option(help="Flag the result above this RMS reprojection error (px).")] = 1.0,
    calibration: CalibrationOption = None,
    as_json: JsonOption = False,
) -> None:
    """Intrinsics and extrinsics of the rig's cameras from ChArUco views, refined jointly."""
    from rich.progress import Progress

    from .calibrate.board import BoardSpec
    from .calibrate.cameras import calibrate_cameras, views_from_images, views_from_take

    spec = load_rig(rig)
    cameras = [s.name for s in spec.of_kind("camera")]
    if (take is None) == (not images):
        raise UsageError("give either --take TAKE or --images NAME=DIR (one per camera)")
    board_spec = BoardSpec.from_toml(board) if board is not None else BoardSpec()
    if take is not None:
        if not (take / MANIFEST).is_file():
            raise UsageError(f"{take}: not a take folder (no {MANIFEST})")
        views = views_from_take(take, cameras)
    else:
        folders = {}
        for item in images or []:
            name, sep, folder = item.partition("=")
            if not sep or not folder:
                raise UsageError(f"--images {item!r}: expected NAME=DIR")
            if name not in cameras:
                raise UsageError(f"--images {item!r}: {name} is not a camera of rig {spec.name} ({', '.join(cameras)})")
            folders[name] = Path(folder)
        views = views_from_images(folders)
    with Progress(console=err, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int | None) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        result = calibrate_cameras(views, board_spec, progress=progress, threshold_px=threshold)
    result["metadata"]["rig"] = spec.name
    result["metadata"]["rig_sha256"] = spec.sha256  # what `record` compares to tell a changed rig file
    path = store.write(store.calibration_dir(spec.name, calibration), "cameras", result)
    meta = result["metadata"]
    if as_json:
        print_json({"file": str(path), **result})
    else:
        table = new_table(f"camera calibration of {spec.name} → {path}")
        for col in ("camera", "fx", "fy", "cx", "cy", "RMS px", "views", "coverage"):
            table.add_column(col)
        for key, cam in result.items():
            if not key.startswith("cam_"):
                continue
            (fx, _, cx), (_, fy, cy) = cam["matrix"][0], cam["matrix"][1]
            name = cam["name"]
            table.add_row(
                name,
                f"{fx:.1f}",
                f"{fy:.1f}",
                f"{cx:.1f}",
                f"{cy:.1f}",
                f"{meta['per_camera_error'][name]:.3f}",
                str(meta["views_used"][name]),
                f"{meta['coverage'][name]:.0%}",
            )
        out.print(table)
    if meta.get("flagged"):
        warn(f"reprojection error {meta['error']:.3f} px is above {threshold:g} px: check the views and the board")
    low = [n for n, c in meta.get("coverage", {}).items() if c < 0.5]
    if low:
        warn(f"the board covered less than half the image of {', '.join(low)}: the lens model is extrapolated there")


DEFAULT_MAX_SLATES = 300  # --until without --record: about three minutes of slates


@calibrate_app.command("sync")
@one_line_errors
def calibrate_sync(
    rig: Annotated[str, typer.Argument(help="Rig file path or name.")],
    take: Annotated[
        list[Path] | None,
        typer.Option(
            "--take",
            help="A take with slates, recorded with the rig (repeatable: the slates of all are pooled; "
            "the takes must have been recorded with the same latencies).",
        ),
    ] = None,
    record: Annotated[
        int | None,
        typer.Option(
            "--record",
            help="Record host-timed slates first (devices that render slates, or a sync box), about "
            "0.6 s each: one take of N slates; with --until, at most N slates in all.",
        ),
    ] = None,
    until: Annotated[
        float | None,
        typer.Option(
            "--until",
            metavar="MS",
            help="Record slates, in takes of their own, until every stream's latency "
            f"uncertainty is below MS milliseconds, at most --record N slates (default "
            f"{DEFAULT_MAX_SLATES}). Not reached: the calibration is written all the "
            "same and the exit status is 1.",
        ),
    ] = None,
    out_dir: OutOption = Path("takes"),
    calibration: CalibrationOption = None,
    as_json: JsonOption = False,
) -> None:
    """Each stream's latency from the slates of takes (found in the media), applied from then on.

    Warns, and lists under "warnings" in --json, when a stream's uncertainty exceeds one frame period or is unknown,
    and when a latency is negative by more than its uncertainty.
    The frame period is a camera's own; for audio and mocap, a frame of the master camera (no camera: 1/30 s)."""
    from .calibrate.latency import latency_from_takes, measure_take, short_of

    spec = load_rig(rig)
    recording = record is not None or until is not None
    if bool(take) == recording:
        raise UsageError("give either --take TAKE (repeatable) or --record N and/or --until MS")
    if record is not None and record < 3:
        raise UsageError(f"--record needs at least 3 slates, got {record}")
    if until is not None and not (until > 0 and math.isfinite(until)):
        raise UsageError(f"--until must be a positive number of milliseconds, got {until:g}")
    if recording and (remote := sorted({s.node for s in spec.streams if s.node})):
        raise UsageError(
            f"{spec.path}: --record slates the streams of this PC only, and capture nodes "
            f"({', '.join(remote)}) record the others: record slated takes with `improvcap record "
            f"{rig} --key FILE --slate`, bring them together with `improvcap collect`, then give them "
            "with --take"
        )
    if recording:
        result = _record_slates(spec, out_dir, record or DEFAULT_MAX_SLATES, until)
    else:
        for t in take or []:
            if not (t / MANIFEST).is_file():
                raise UsageError(f"{t}: not a take folder (no {MANIFEST})")
        with err.status("finding slates in the media…"):
            result = latency_from_takes([measure_take(t) for t in take or []], spec)
    result = {"rig": spec.name, "kind": "sync", **({} if until is None else {"until_ms": until}), **result}
    short = {} if until is None else short_of(result, until)
    path = store.write(store.calibration_dir(spec.name, calibration), "sync", result)
    if as_json:
        print_json({"file": str(path), **result})
    else:
        table = new_table(escape(f"sync calibration of {spec.name} → {path}"))
        for col in ("stream", "latency ms", "correction ms", "± ms", "spread ms", "slates"):
            table.add_column(col)
        for name, s in result["streams"].items():
            table.add_row(
                escape(name),
                f"{s['latency_ms']:.3f}",
                f"{s['correction_ms']:+.3f}",
                "?" if s.get("uncertainty_ms") is None else f"{s['uncertainty_ms']:.3f}",
                f"{s['spread_ms']:.3f}",
                str(s["slates"]),
            )
        out.print(table)
    for line in result["warnings"]:
        warn(line)
    if short:
        slates = max(s["slates"] for s in result["streams"].values())
        reached = ", ".join(f"{name} {'unknown' if u is None else f'±{u:.3f} ms'}" for name, u in short.items())
        raise CheckFailed(
            f"after {slates} slates not below ±{until:g} ms: {reached} (written all the same; "
            "raise --record N for more slates)"
        )


def _record_slates(spec: Rig, out_dir: Path, max_slates: int, until_ms: float | None) -> dict[str, Any]:
    """Open the rig, record slated takes (`SlatingRounds`) and measure them. Ctrl-C, SIGTERM or SIGHUP end
    the take being recorded cleanly and write no calibration; the takes stay."""
    from .calibrate.latency import SlatingRounds
    from .recorder import Recorder

    recorder = Recorder(spec)
    rounds = SlatingRounds(recorder, spec, out_dir, SLATING_SESSION, max_slates, until_ms)
    try:
        with StopRequest(interrupt=True):  # SIGTERM and SIGHUP end it as Ctrl-C does
            with err.status(f"opening {len(spec.streams)} devices of rig {spec.name}…"):
                recorder.open()
            with err.status("recording slates…") as status:
                return rounds.run(status.update)
    except KeyboardInterrupt:
        pass
    finally:
        recorder.close()
    err.print(
        escape(
            f"interrupted: no calibration written; the slated takes are kept in "
            f"{out_dir / SLATING_SESSION} (calibrate sync {spec.name} --take TAKE... pools them)"
        ),
        highlight=False,
        soft_wrap=True,
    )
    raise typer.Exit(130)


@calibrate_app.command("audio")
@one_line_errors
def calibrate_audio(
    rig: Annotated[str, typer.Argument(help="Rig file path or name.")],
    seconds: Annotated[float, typer.Option(help="How long to listen to every input.")] = 3.0,
    loopback: Annotated[
        str | None,
        typer.Option(help="Output device looped back to an input: measure the input-output latency with a chirp."),
    ] = None,
    stream: Annotated[str | None, typer.Option(help="--loopback: the rig's audio stream that hears it.")] = None,
    calibration: CalibrationOption = None,
    as_json: JsonOption = False,
) -> None:
    """Per channel peak, RMS, noise floor, DC offset, clipping and a verdict; optionally loopback latency.
    Exit status 1 when a channel is not "good" (the result is written all the same)."""
    from .calibrate.audio import levels_report, loopback_latency, measure_levels
    from .devices import make_device

    if not (seconds > 0 and math.isfinite(seconds)):
        raise UsageError(f"--seconds must be a positive number, got {seconds}")
    spec = load_rig(rig)
    inputs = spec.of_kind("audio")
    if not inputs:
        raise UsageError(f"rig {spec.name} has no audio streams")
    looped = None
    if loopback is not None:
        candidates = [s for s in inputs if s.driver == "portaudio" and (stream is None or s.name == stream)]
        if not candidates:
            raise UsageError(
                f"--loopback needs a portaudio audio stream{f' named {stream}' if stream else ''} in rig {spec.name}"
            )
        looped = candidates[0]
    result: dict[str, Any] = {
        "rig": spec.name,
        "rig_sha256": spec.sha256,
        "kind": "audio",
        "seconds": seconds,
        "streams": {},
    }
    for s in inputs:
        device = make_device(s)
        try:
            device.open()
            device.start()
            with err.status(f"listening to {s.name} for {seconds:g} s…"):
                levels = measure_levels(device, seconds)
        finally:
            device.stop()
            device.close()
        latency = None
        if looped is not None and loopback is not None and s.name == looped.name:  # looped: only with --loopback
            with err.status(f"playing chirps on {loopback}…"):
                latency = loopback_latency(looped, loopback)
        result["streams"][s.name] = levels_report(levels, latency)
    path = store.write(store.calibration_dir(spec.name, calibration), "audio", result)
    bad = [(name, c) for name, r in result["streams"].items() for c in r["channels"] if c["verdict"] != "good"]
    if as_json:
        print_json({"file": str(path), **result})
    else:
        table = new_table(escape(f"audio levels of {spec.name} → {path}"))
        for col in ("stream", "ch", "peak dBFS", "RMS dBFS", "floor dBFS", "DC", "clipped", "verdict"):
            table.add_column(col)
        db = lambda v: "-inf" if v is None else f"{v:.1f}"  # noqa: E731
        for name, r in result["streams"].items():
            for c in r["channels"]:
                table.add_row(
                    name,
                    str(c["channel"]),
                    db(c["peak_dbfs"]),
                    db(c["rms_dbfs"]),
                    db(c["noise_floor_dbfs"]),
                    f"{c['dc_offset']:+.4f}",
                    str(c["clipped"]),
                    c["verdict"] if c["verdict"] == "good" else f"[red]{c['verdict']}[/]",
                )
            if r.get("loopback"):
                lb = r["loopback"]
                out.print(
                    f"{name}: loopback latency {lb['latency_ms']:.2f} ms (spread {lb['spread_ms']:.2f} ms)",
                    highlight=False,
                    markup=False,
                )
        out.print(table)
    if bad:
        raise CheckFailed(
            f"{len(bad)} channels not good: " + ", ".join(f"{n} ch{c['channel']} {c['verdict']}" for n, c in bad)
        )


@calibrate_app.command("show")
@one_line_errors
def calibrate_show(
    rig: Annotated[str, typer.Argument(help="Rig file path or name.")],
    calibration: CalibrationOption = None,
    as_json: JsonOption = False,
) -> None:
    """Which calibration of each kind is current, its age and its errors."""
    spec = load_rig(rig)
    folder = store.calibration_dir(spec.name, calibration)
    report: dict[str, Any] = {"rig": spec.name, "folder": str(folder), "kinds": {}}
    for kind in store.KINDS:
        path = store.current(folder, kind)
        if path is None:
            report["kinds"][kind] = None
            continue
        data = store.load(path)
        age_s = time.time() - path.stat().st_mtime
        report["kinds"][kind] = {
            "file": str(path),
            "age_hours": round(age_s / 3600, 2),
            "made_for_another_rig_file": (stale := store.stale(path, spec)),
            "older_than_rig_file": stale,  # its former name, kept for scripts
            "history": len(store.history(folder, kind)),
            "summary": _summary(kind, data),
        }
    if as_json:
        print_json(report)
        return
    for kind, entry in report["kinds"].items():
        if entry is None:
            out.print(f"[yellow]{kind}[/]: none in {escape(str(folder))}", highlight=False)
            continue
        note = " [yellow](made for another version of the rig file)[/]" if entry["made_for_another_rig_file"] else ""
        out.print(
            f"[bold]{kind}[/]: {escape(Path(entry['file']).name)}, {_age(entry['age_hours'])} old, "
            f"{entry['history']} in history{note}",
            highlight=False,
        )
        for line in entry["summary"]:
            out.print(f"  {line}", highlight=False, markup=False)


def _age(hours: float) -> str:
    return f"{hours * 60:.0f} min" if hours < 1 else f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.0f} days"


def _summary(kind: str, data: dict[str, Any]) -> list[str]:
    if kind == "sync":
        return [
            f"{name}: latency {s.get('latency_ms', 0):.3f} ms"
            + ("" if s.get("uncertainty_ms") is None else f" ± {s['uncertainty_ms']:.3f} ms")
            + f", spread {s.get('spread_ms', 0):.3f} ms, {s.get('slates', 0)} slates"
            for name, s in data.get("streams", {}).items()
        ] + [f"warning: {w}" for w in data.get("warnings", [])]
    if kind == "cameras":
        meta = data.get("metadata", {})
        flag = " FLAGGED" if meta.get("flagged") else ""
        cams = [k for k in data if k.startswith("cam_")]
        return [f"{len(cams)} cameras, reprojection error {meta.get('error', float('nan')):.3f} px{flag}"]
    if kind == "audio":
        return [
            f"{stream}: " + ", ".join(f"ch{c.get('channel')} {c.get('verdict')}" for c in s.get("channels", []))
            for stream, s in data.get("streams", {}).items()
        ]
    return []

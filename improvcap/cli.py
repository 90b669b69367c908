"""The command line (DESIGN section 7): thin Typer commands over the recorder and the take format.

Exit status: 0 ok, 1 a check failed, 2 bad input. Every ImprovcapError becomes one line on stderr.
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from . import __version__
from .cli_calibrate import calibrate_app
from .cli_editorial import editorial_command
from .cli_export import export_command, performers_app, verify_export_command
from .cli_ingest import ingest_command
from .cli_nodes import collect_command, key_app, node_command, nodes_command
from .cli_support import (
    CalibrationOption,
    GroupOption,
    LslOption,
    MinFreeOption,
    NodeKeyOption,
    OutOption,
    PerformerOption,
    PerformersFileOption,
    SessionOption,
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
from .errors import CheckFailed, ImprovcapError, UsageError
from .rig import Rig, load_rig
from .take import folder as take_folder
from .take.space import DEFAULT_FLOOR_MINUTES, room_line

if TYPE_CHECKING:  # the recording stack is imported by the commands that record: `verify`, `ctl` start faster
    from .control import ControlServer
    from .nodes.controller import NodeController
    from .recorder import Recorder
    from .session import TakeControl

SLATE_LEAD_S = 0.2  # record --slate: the opening slate this long after the start ...
SLATE_TAIL_S = 0.5  # ... and the closing one this long before the end, for every stream to show it

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Shared-clock capture of cameras, microphones and serial motion capture.",
)
rig_app = typer.Typer(no_args_is_help=True, help="Check rig files and their devices.")
app.add_typer(rig_app, name="rig")
app.add_typer(calibrate_app, name="calibrate")
app.add_typer(key_app, name="key")
app.command("node")(node_command)
app.command("nodes")(nodes_command)
app.command("collect")(collect_command)
app.command("export")(export_command)
app.command("editorial")(editorial_command)
app.command("ingest")(ingest_command)
app.command("verify-export")(verify_export_command)
app.add_typer(performers_app, name="performers")


def _show_version(value: bool) -> None:
    if value:
        out.print(f"improvcap {__version__}", highlight=False, markup=False)
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Shared-clock capture of cameras, microphones and serial motion capture."""


def _check_out(out_dir: Path, session: str) -> None:
    """`--out` and its session must be folders (or not exist yet): refused before any device opens."""
    for folder in (out_dir, out_dir / session):
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"{folder}: not a folder (--out names the folder that holds the sessions)")


@app.command()
@one_line_errors
def record(
    rig: Annotated[str, typer.Argument(help="Rig file path or name (looked up in ./rigs, then shipped rigs).")],
    out_dir: OutOption = Path("takes"),
    session: SessionOption = None,
    scene: Annotated[str, typer.Option(help="Scene name; takes number themselves within it.")] = "scene",
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds (default: Ctrl-C).")] = None,
    slate: Annotated[
        bool,
        typer.Option(
            "--slate",
            help=f"Slate {SLATE_LEAD_S:g} s after the start and {SLATE_TAIL_S:g} s before the end (within --duration).",
        ),
    ] = False,
    performer: PerformerOption = None,
    performers_file: PerformersFileOption = None,
    calibration: CalibrationOption = None,
    group: GroupOption = None,
    min_free_minutes: MinFreeOption = DEFAULT_FLOOR_MINUTES,
    lsl: LslOption = False,
    key: NodeKeyOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the take path and summary as JSON.")] = False,
) -> None:
    """Record one take of a rig into <out>/<session>/<scene>_tNNN/ (ctl stop/slate/mark drive it too)."""
    from . import dashboard
    from .control import refuse_if_driven
    from .recorder import RunState
    from .session import TakeControl

    if duration is not None and not (duration > 0 and math.isfinite(duration)):
        raise UsageError(f"--duration must be a positive number of seconds, got {duration}")
    recorder, warnings, nodes = _calibrated_recorder(rig, calibration, group, min_free_minutes, lsl, key)
    control = TakeControl(
        recorder,
        out_dir,
        session or take_folder.default_session(),
        scene,
        performers=performer or (),
        performers_file=performers_file,
        single_take=True,
        nodes=nodes,
    )
    _check_out(out_dir, control.session)
    control.resolve_performers(control.performers)  # refuse unknown or revoked performers before anything
    refuse_if_driven(control.session_dir)  # a second recorder on a session is refused before any device opens
    recorder.room.check(out_dir)  # so is a take on a disk without room for it
    with StopRequest() as stop:
        _open_devices(recorder, warnings, nodes)
        server: ControlServer | None = None
        try:
            take_dir = Path(control.start()["take"])
            started = time.monotonic()
            server = _serve_quietly(control)
            if slate:
                control.slate(SLATE_LEAD_S)
            # --duration is the whole take: the closing slate and the tail after it come out of it
            tail = min(SLATE_TAIL_S, duration / 2) if slate and duration is not None else SLATE_TAIL_S
            until = None if duration is None else duration - (tail if slate else 0.0)
            done = lambda: (  # noqa: E731
                stop.requested or control.quit.is_set() or (until is not None and time.monotonic() - started >= until)
            )
            dashboard.watch(recorder, done, title=str(take_dir), console=err, nodes=_node_rows(nodes))
            if slate and recorder.state is RunState.RECORDING:
                control.slate(0.0)
                time.sleep(tail)
            _finalise(control)
        finally:
            if server is not None:
                server.close()
            recorder.close()
            if nodes is not None:
                nodes.close()
    summary = control.last_take
    assert summary is not None
    if as_json:
        print_json(summary)
    else:
        _print_summary(summary)
    if recorder.disk_full:
        raise CheckFailed(
            f"{summary['take']}: stopped after {summary['duration_s']:.1f} s: {recorder.disk_full}; "
            "the take keeps what reached the disk"
        )
    if faults := summary["faults"]:  # the take is complete, and someone must look at what went wrong
        first = faults[0]
        raise CheckFailed(
            f"{summary['take']}: recorded with {len(faults)} fault{'s' if len(faults) > 1 else ''}; "
            f"{first['stream'] or 'take'}: {first['detail']}"
        )


def _calibrated_recorder(
    rig_arg: str,
    calibration: Path | None,
    group: str | None = None,
    min_free_minutes: float = DEFAULT_FLOOR_MINUTES,
    lsl: bool = False,
    key: Path | None = None,
) -> tuple[Recorder, list[str], NodeController | None]:
    """A recorder for the rig's own streams with its current calibration applied, what that calibration
    lacks, and the capture nodes that record its other streams (with the shared `key`); `lsl`: publish
    its takes to LSL whatever the rig file says."""
    from .calibrate.store import applied, calibration_dir
    from .recorder import Recorder

    rig = load_rig(rig_arg)
    rig, entry, warnings = applied(rig, calibration_dir(rig.name, calibration))
    if lsl:
        rig = dataclasses.replace(rig, lsl_outlets=True)
    if not (min_free_minutes >= 0 and math.isfinite(min_free_minutes)):
        raise UsageError(f"--min-free-minutes must be 0 or more, got {min_free_minutes}")
    rig, nodes = _split_nodes(rig, key, entry)
    recorder = Recorder(rig, calibration=entry, group=group, min_free_minutes=min_free_minutes)
    if recorder.group is not None:
        take_folder.group_id(recorder.group)  # an unknown group is refused before any device opens
    return recorder, warnings, nodes


def _split_nodes(
    rig: Rig, key: Path | None, calibration: dict[str, Any] | None = None
) -> tuple[Rig, NodeController | None]:
    """The streams this PC records, and the capture nodes that record the others (with the shared `key`;
    `calibration`: the entry of the calibration applied to `rig`, which the nodes apply to their streams)."""
    from .link.keys import load_key
    from .nodes.controller import NodeController, controller_rig

    if not (remote := [s for s in rig.streams if s.node is not None]):
        return rig, None
    if key is None:
        raise UsageError(
            f"{rig.path}: {', '.join(f'{s.name} (node {s.node})' for s in remote)} are recorded "
            "by capture nodes: give the rig's shared key with --key FILE"
        )
    return controller_rig(rig), NodeController(rig, load_key(key), calibration)


def _node_rows(nodes: NodeController | None) -> Callable[[], Sequence[Any]]:
    return nodes.live if nodes is not None else (lambda: ())


def _open_devices(recorder: Recorder, warnings: Sequence[str] = (), nodes: NodeController | None = None) -> None:
    """Open every node and device; then, with the input known to be good, print the calibration's warnings."""
    if nodes is not None:
        with err.status(f"finding {len(nodes.nodes)} capture nodes of rig {recorder.rig.name}…"):
            nodes.open()  # a node missing is a one-line error before anything is recorded
        nodes.monitor()  # the dashboard shows the nodes' streams
    try:
        with err.status(f"opening {len(recorder.rig.streams)} devices of rig {recorder.rig.name}…"):
            recorder.open()
    except BaseException:
        if nodes is not None:
            nodes.close()
        raise
    for message in warnings:
        warn(message)


def _finalise(control: TakeControl) -> None:
    """Stop the take being recorded, if any. A second Ctrl-C must not tear the manifest: it is ignored."""
    from .recorder import RunState

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if control.recorder.state is RunState.RECORDING:
        with err.status("finalising take…"):
            control.end_take()


def _serve_quietly(control: TakeControl) -> ControlServer | None:
    """`record` serves the control socket when it can; a take already recording never fails for it."""
    from .control import ControlServer

    server = ControlServer(control.session_dir, control.handle)
    try:
        server.start()
        return server
    except ImprovcapError as e:
        warn(f"no control socket: {e}")
        return None


@app.command("session")
@one_line_errors
def session_command(
    rig: Annotated[str, typer.Argument(help="Rig file path or name.")],
    out_dir: OutOption = Path("takes"),
    session: SessionOption = None,
    scene: Annotated[str, typer.Option(help="First scene's name (n moves to the next).")] = "scene1",
    performer: PerformerOption = None,
    performers_file: PerformersFileOption = None,
    calibration: CalibrationOption = None,
    group: GroupOption = None,
    min_free_minutes: MinFreeOption = DEFAULT_FLOOR_MINUTES,
    lsl: LslOption = False,
    key: NodeKeyOption = None,
) -> None:
    """Keep a rig's devices open and record take after take (keys or `improvcap ctl`)."""
    from . import dashboard
    from .control import ControlServer
    from .keyboard import HELP, KeyBindings, KeyReader
    from .session import TakeControl

    recorder, warnings, nodes = _calibrated_recorder(rig, calibration, group, min_free_minutes, lsl, key)
    spec = recorder.rig
    control = TakeControl(
        recorder,
        out_dir,
        session or take_folder.default_session(),
        scene,
        performers=performer or (),
        performers_file=performers_file,
        nodes=nodes,
    )
    _check_out(out_dir, control.session)
    control.resolve_performers(control.performers)
    take_folder.session_folder(out_dir, control.session, spec.name, recorder.group)
    server = ControlServer(control.session_dir, control.handle)
    with StopRequest() as stop:
        server.start()  # refuses when another recorder already drives this session
        try:
            _open_devices(recorder, warnings, nodes)
            keys = KeyBindings(control)
            interactive = sys.stdin.isatty()
            title = lambda: _session_title(control)  # noqa: E731
            footer = lambda: [_last_take_line(control.last_take), keys.line, HELP if interactive else ""]  # noqa: E731
            done = lambda: stop.requested or control.quit.is_set()  # noqa: E731
            err.print(f"session {control.session}: control socket {server.path}", highlight=False, markup=False)
            if interactive:
                with KeyReader(sys.stdin.fileno(), keys.press):
                    dashboard.watch(recorder, done, title=title, console=err, footer=footer, nodes=_node_rows(nodes))
            else:
                dashboard.watch(recorder, done, title=title, console=err, footer=footer, nodes=_node_rows(nodes))
            _finalise(control)
        finally:
            server.close()
            recorder.close()
            if nodes is not None:
                nodes.close()


def _session_title(control: TakeControl) -> str:
    from .recorder import RunState

    take = control.recorder.take_dir if control.recorder.state is RunState.RECORDING else None
    return f"session {control.session} · scene {control.scene}" + (f" · {take.name}" if take else "")


def _last_take_line(last: dict[str, Any] | None) -> str:
    if not last:
        return ""
    drops = sum(s["dropped"] or 0 for s in last["streams"].values())
    faults = f", {len(last['faults'])} faults" if last["faults"] else ""
    return f"last take: {Path(last['take']).name} {last['duration_s']:.1f} s, {drops} dropped{faults}"


@app.command()
@one_line_errors
def ctl(
    command: Annotated[
        str, typer.Argument(help="status, start, stop, slate, mark, note, circle (the last take), scene or quit.")
    ],
    text: Annotated[str | None, typer.Argument(help="Text of a mark or note; name of a scene.")] = None,
    out_dir: OutOption = Path("takes"),
    session: SessionOption = None,
    scene: Annotated[str | None, typer.Option(help="start: the scene of the take.")] = None,
    performer: PerformerOption = None,
    force: Annotated[bool, typer.Option("--force", help="quit: even while recording.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the reply as JSON.")] = False,
) -> None:
    """Drive a running `session` or `record` through its control socket."""
    from .control import request as control_request

    payload: dict[str, Any] = {"cmd": command}
    if text is not None:
        payload["scene" if command == "scene" else "text"] = text
    if scene is not None:
        payload["scene"] = scene
    if performer:
        payload["performers"] = performer
    if force:
        payload["force"] = True
    session_dir = out_dir / take_folder.check_name(session or take_folder.default_session(), "session")
    reply = control_request(session_dir, payload)
    if not reply.get("ok"):
        raise UsageError(str(reply.get("error", "the recorder refused")))
    if as_json:
        print_json(reply)
    elif command == "status":
        out.print(
            f"{reply['state']}  session {reply['session']}  scene {reply['scene']}"
            + (f"  {reply['take']}  {reply['elapsed_s']:.1f} s" if reply["take"] else "")
            + f"  {room_line(reply['disk_free_bytes'], reply['disk_minutes_left'], reply['disk_low'])}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        for st in reply["streams"]:
            out.print(
                f"  {st['name']:<12} {st['kind']:<7} {st['rate']:>10.1f}/s  n={st['count']}  "
                f"drops={st['dropped']}" + (f"  FAULT {st['fault']}" if st["fault"] else ""),
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
    else:
        out.print(reply_line(command, reply), highlight=False, markup=False, soft_wrap=True)


def reply_line(command: str, reply: dict[str, Any]) -> str:
    """A control reply other than status, in words (the JSON of --json has every field)."""
    if command == "start":
        return f"recording {reply['take']}  (scene {reply['scene']}, take {reply['number']})"
    if command == "stop":
        faults = reply.get("faults") or []
        return (
            f"stopped {reply['take']}  ({reply['duration_s']:.1f} s, {reply['status']}"
            + (
                f", {len(faults)} fault{'s' if len(faults) != 1 else ''}: "
                + "; ".join(f"{f['stream']}: {f['detail']}" for f in faults)
                if faults
                else ""
            )
            + ")"
        )
    if command == "slate":
        return f"slate at {reply['t_ns'] / 1e9:.3f} s" if reply["recording"] else "slate (no take recording)"
    if command in ("mark", "note"):
        where = "after the stop of" if reply["after_stop"] else "in"
        return f"{command} at {reply['t_ns'] / 1e9:.3f} s {where} {reply['take']}"
    if command == "circle":
        return f"circled {reply['take']}" + ("" if reply["after_stop"] else " (recording)")
    if command == "scene":
        return f"next scene {reply['scene']}"
    return "the recorder is quitting" if reply.get("quitting") else json.dumps(reply, default=str)


def _print_summary(summary: dict[str, Any]) -> None:
    # the take's path on a line of its own, never wrapped (a table title wraps at the table's width)
    out.print(
        f"{summary['take']}  ({summary['duration_s']:.1f} s, {summary['status']})",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    table = new_table("")
    for col in ("stream", "kind", "count", "rate", "nominal", "dropped", "state"):
        table.add_column(col)
    for name, s in summary["streams"].items():
        table.add_row(
            name,
            s["kind"],
            str(s["count"]),
            f"{s['measured_rate'] or 0:.2f}",
            f"{s['nominal_rate']:g}",
            str(s["dropped"]),
            s["state"],
        )
    out.print(table)
    for fault in summary["faults"]:
        err.print(f"[red]fault[/] {escape(str(fault['stream']))}: {escape(str(fault['detail']))}", highlight=False)


@app.command()
@one_line_errors
def devices(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List cameras, audio inputs and serial ports on this machine."""
    from .devices.discovery import discover

    found = discover()
    if as_json:
        print_json(found)
        return
    for kind, items in found.items():
        if kind == "notes":
            continue
        if not items:
            out.print(f"{kind}: none found", highlight=False, markup=False)
            continue
        table = new_table(f"{kind} ({len(items)})", title_justify="left")
        keys = sorted({k for item in items for k in item}, key=lambda k: (k != "device", k != "name", k))
        for k in keys:
            table.add_column(k)
        for item in items:
            table.add_row(*(escape("" if item.get(k) is None else str(item[k])) for k in keys))  # OS names as text
        out.print(table)
    for note in found.get("notes", []):
        err.print(f"note: {note}", highlight=False, markup=False)


@app.command()
@one_line_errors
def verify(
    paths: Annotated[list[Path], typer.Argument(help="Takes, sessions or whole folders of them.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print every take's result as JSON.")] = False,
    report: Annotated[Path | None, typer.Option("--report", help="Also write a self-contained HTML report.")] = None,
    jobs: Annotated[
        int, typer.Option(help="Cores to use: threads hashing files, worker processes checking takes.")
    ] = 1,
    require_consent: Annotated[
        bool, typer.Option("--require-consent", help="A take with no performers fails.")
    ] = False,
    max_drift_ppm: Annotated[float, typer.Option(help="Largest clock drift allowed.")] = 500.0,
    max_residual_ms: Annotated[float, typer.Option(help="Largest p99 arrival delay above the clock fit.")] = 100.0,
    slate_tolerance_ms: Annotated[
        float,
        typer.Option(
            min=0.0, help="Slate offset allowed beyond an audio sample or a mocap row period (video: a frame)."
        ),
    ] = 2.0,
    max_skew_ms: Annotated[float, typer.Option(help="Largest start/end skew between streams.")] = 100.0,
) -> None:
    """Check every take under the paths (reading only): files, drops, clocks, sync, consent. Exit 1 on a FAIL."""
    import dataclasses

    from .verify import Limits, summary_rows, verify_paths
    from .verify.findings import takes

    if jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {jobs}")
    if report is not None and report.exists():
        raise UsageError(f"{report}: already exists; choose another report file")
    limits = Limits(
        max_drift_ppm=max_drift_ppm,
        max_residual_ms=max_residual_ms,
        slate_tolerance_ms=slate_tolerance_ms,
        max_skew_ms=max_skew_ms,
        require_consent=require_consent,
    )
    with progress_bar("verifying") as progress:
        results = verify_paths(paths, limits, jobs=jobs, progress=progress)
    if not results:  # the wrong drive, or a typo: bad input, not a clean day
        raise UsageError(f"no takes under {', '.join(map(str, paths))} (no folder holding a take.json)")
    if report is not None:
        from .verify.report import write_report

        write_report(results, report, limits=dataclasses.asdict(limits))
    failed = sum(r["verdict"] == "FAIL" for r in results)
    if as_json:
        print_json({"limits": dataclasses.asdict(limits), "takes": results})
    else:
        table = new_table(takes(len(results)))
        # a narrow terminal lists the reasons under the table: a column there would be a few letters wide
        inline = out.width >= 120
        for col in ("take", "s", "streams", "drops", "drift ppm", "slate ms", "verdict"):
            table.add_column(col, no_wrap=col in ("take", "verdict"))  # the figures' headers may wrap
        if inline:
            table.add_column("reasons", ratio=1)
        style = {"OK": "green", "WARN": "yellow", "FAIL": "red"}
        fmt = lambda v, spec: "–" if v is None else format(v, spec)  # noqa: E731
        below = []
        for row in summary_rows(results):
            verdict = row["verdict"]
            name = "/".join(Path(str(row["take"])).parts[-2:])  # session/take
            cells = [
                escape(name),
                fmt(row["duration_s"], ".1f"),
                str(row["streams"]),
                escape(row["drops"] or "0"),
                fmt(row["worst_drift_ppm"], ".1f"),
                fmt(row["worst_slate_offset_ms"], ".2f"),
                f"[{style.get(verdict, 'red')}]{verdict}[/]",
            ]
            # names and reasons come from the disk: shown as they are, never read as rich markup
            table.add_row(*cells, *([escape("\n".join(row["reasons"]))] if inline else []))
            if not inline:
                below += [f"{name}  {reason}" for reason in row["reasons"]]
        out.print(table)
        if not inline:
            for line in below:
                out.print(line, highlight=False, markup=False, soft_wrap=True)
        if report is not None:
            out.print(f"report: {report}", highlight=False, markup=False)
    if failed:
        raise CheckFailed(f"{failed} of {takes(len(results))} failed verification")


@app.command()
@one_line_errors
def repair(
    take: Annotated[Path, typer.Argument(help="A take folder left at status recording (crash, kill -9, power cut).")],
    force: Annotated[bool, typer.Option("--force", help="Also redo a complete or repaired take.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the repaired manifest's repair record.")] = False,
) -> None:
    """Recover an interrupted take: headers, torn rows, Matroska, clocks, sync.csv, hashes; never deletes media."""
    from .repair import repair_take

    with err.status(f"repairing {take}…"):
        manifest = repair_take(take, force=force)
    record = manifest["repair"]
    if as_json:
        print_json({"take": str(take.resolve()), "status": manifest["status"], "repair": record})
        return
    out.print(f"{take}: {manifest['status']} ({manifest['duration_s']:.1f} s)", highlight=False, markup=False)
    for name, lost in record.get("lost", {}).items():
        out.print(f"  {name}: {lost.get('summary', lost)}", highlight=False, markup=False)
    for action in record.get("actions", []):
        out.print(f"  · {action}", highlight=False, markup=False)
    for fault in record.get("faults", []):
        warn(f"{fault}")


@rig_app.command("check")
@one_line_errors
def rig_check(
    rig: Annotated[str, typer.Argument(help="Rig file path or name.")],
    seconds: Annotated[float, typer.Option(help="How long to run every device.")] = 3.0,
    tolerance: Annotated[float, typer.Option(help="Allowed relative rate error.")] = 0.05,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    key: NodeKeyOption = None,
) -> None:
    """Open every device of a rig for a few seconds and compare what it delivers with the rig file (on the
    capture nodes too, for their streams)."""
    from .recorder import Recorder
    from .rig_check import MAX_CHECK_S, check_results

    if not (seconds > 0 and math.isfinite(seconds) and seconds <= MAX_CHECK_S):
        raise UsageError(f"--seconds must be a positive number of at most {MAX_CHECK_S:g}, got {seconds}")
    spec = load_rig(rig)
    own, nodes = _split_nodes(spec, key)
    recorder = Recorder(own)
    _open_devices(recorder, (), nodes)
    try:
        with err.status(f"measuring for {seconds:g} s…"):
            checks = nodes.check(seconds, tolerance) if nodes is not None else None
            time.sleep(seconds)
            status = recorder.status()
            results = check_results(recorder, status, tolerance) + (checks() if checks is not None else [])
    finally:
        recorder.close()
        if nodes is not None:
            nodes.close()
    failed = [r for r in results if not r["ok"]]
    if as_json:
        print_json({"rig": spec.name, "ok": not failed, "streams": results})
    else:
        table = new_table(f"rig {spec.name}: {'OK' if not failed else 'MISMATCH'}")
        for col in (("node",) if nodes else ()) + ("stream", "kind", "measured", "nominal", "peak dBFS", "verdict"):
            table.add_column(col)
        for r in results:
            table.add_row(
                *((r.get("node") or "this PC",) if nodes else ()),
                r["stream"],
                r["kind"],
                f"{r['measured_rate']:.2f}",
                f"{r['nominal_rate']:g}",
                " ".join("-inf" if p is None else f"{p:.0f}" for p in r["peak_dbfs"]),
                "[green]ok[/]" if r["ok"] else f"[red]{escape('; '.join(r['problems']))}[/]",
            )
        out.print(table)
    if failed:
        raise CheckFailed(f"{len(failed)} of {len(results)} streams do not match the rig file")


def main() -> None:
    app()


if __name__ == "__main__":
    main()

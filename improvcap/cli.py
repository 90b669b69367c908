"""The command line (DESIGN section 7): thin Typer commands over the recorder and the take format.

Exit status: 0 ok, 1 a check failed, 2 bad input. Every ImprovcapError becomes one line on stderr.
"""
from __future__ import annotations

import functools
import json
import math
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

from . import take as takefmt
from .errors import CheckFailed, ImprovcapError
from .recorder import Recorder, Status
from .rig import load_rig

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Shared-clock capture of cameras, microphones and serial motion capture.")
rig_app = typer.Typer(no_args_is_help=True, help="Check rig files and their devices.")
app.add_typer(rig_app, name="rig")

err = Console(stderr=True)
out = Console()


def _one_line_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn domain errors into one red line and their exit status (never a traceback)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ImprovcapError as e:
            err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
    return wrapper


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


class _StopRequest:
    """Ctrl-C and SIGTERM end a take cleanly: they only set a flag the main loop polls."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopRequest":
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@app.command()
@_one_line_errors
def record(
    rig: Annotated[str, typer.Argument(help="Rig file path or name (looked up in ./rigs, then shipped rigs).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder that holds the sessions.")] = Path("takes"),
    session: Annotated[Optional[str], typer.Option(help="Session (shoot day) name; default: today's date.")] = None,
    scene: Annotated[str, typer.Option(help="Scene name; takes number themselves within it.")] = "scene",
    duration: Annotated[Optional[float], typer.Option(help="Stop after this many seconds (default: Ctrl-C).")] = None,
    slate: Annotated[bool, typer.Option("--slate", help="Slate right after the start and right before the stop.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the take path and summary as JSON.")] = False,
) -> None:
    """Record one take of a rig into <out>/<session>/<scene>_tNNN/."""
    from . import dashboard

    if duration is not None and not (duration > 0 and math.isfinite(duration)):
        raise ImprovcapError(f"--duration must be a positive number of seconds, got {duration}")
    session = takefmt.check_name(session or takefmt.default_session(), "session")
    takefmt.check_name(scene, "scene")
    spec = load_rig(rig)
    recorder = Recorder(spec)
    with _StopRequest() as stop:
        with err.status(f"opening {len(spec.streams)} devices of rig {spec.name}…"):
            recorder.open()
        try:
            take_dir = recorder.start_take(out_dir, session, scene)
            started = time.monotonic()
            if slate:
                recorder.slate(0.2)
            done = lambda: stop.requested or (duration is not None and time.monotonic() - started >= duration)
            dashboard.watch(recorder, done, title=str(take_dir), console=err)
            if slate:
                recorder.slate(0.0)
                time.sleep(0.5)
            # A second Ctrl-C must not tear the manifest: finalising ignores it.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            with err.status("finalising take…"):
                manifest = recorder.stop_take()
        finally:
            recorder.close()
    summary = _take_summary(take_dir, manifest)
    if as_json:
        _print_json(summary)
    else:
        _print_summary(summary)


def _take_summary(take_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    return {
        "take": str(take_dir.resolve()),
        "status": manifest["status"],
        "duration_s": manifest["duration_s"],
        "faults": manifest["faults"],
        "streams": {name: {k: s[k] for k in ("kind", "count", "dropped", "nominal_rate", "measured_rate", "state")}
                    for name, s in manifest["streams"].items()},
    }


def _print_summary(summary: dict[str, Any]) -> None:
    table = Table(title=f"{summary['take']}  ({summary['duration_s']:.1f} s, {summary['status']})")
    for col in ("stream", "kind", "count", "rate", "nominal", "dropped", "state"):
        table.add_column(col)
    for name, s in summary["streams"].items():
        table.add_row(name, s["kind"], str(s["count"]), f"{s['measured_rate'] or 0:.2f}",
                      f"{s['nominal_rate']:g}", str(s["dropped"]), s["state"])
    out.print(table)
    for fault in summary["faults"]:
        err.print(f"[red]fault[/] {fault['stream']}: {fault['detail']}", highlight=False)


@app.command()
@_one_line_errors
def devices(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List cameras, audio inputs and serial ports on this machine."""
    from .devices.discovery import discover

    found = discover()
    if as_json:
        _print_json(found)
        return
    for kind, items in found.items():
        if kind == "notes":
            continue
        table = Table(title=f"{kind} ({len(items)})", title_justify="left")
        keys = sorted({k for item in items for k in item}, key=lambda k: (k != "device", k != "name", k))
        for k in keys:
            table.add_column(k)
        for item in items:
            table.add_row(*(str(item.get(k, "")) for k in keys))
        out.print(table)
    for note in found.get("notes", []):
        err.print(f"note: {note}", highlight=False)


@rig_app.command("check")
@_one_line_errors
def rig_check(
    rig: Annotated[str, typer.Argument(help="Rig file path or name.")],
    seconds: Annotated[float, typer.Option(help="How long to run every device.")] = 3.0,
    tolerance: Annotated[float, typer.Option(help="Allowed relative rate error.")] = 0.05,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Open every device of a rig for a few seconds and compare what it delivers with the rig file."""
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ImprovcapError(f"--seconds must be a positive number, got {seconds}")
    spec = load_rig(rig)
    recorder = Recorder(spec)
    with err.status(f"opening {len(spec.streams)} devices of rig {spec.name}…"):
        recorder.open()
    try:
        with err.status(f"measuring for {seconds:g} s…"):
            time.sleep(seconds)
            status = recorder.status()
        results = _check_results(recorder, status, tolerance)
    finally:
        recorder.close()
    failed = [r for r in results if not r["ok"]]
    if as_json:
        _print_json({"rig": spec.name, "ok": not failed, "streams": results})
    else:
        table = Table(title=f"rig {spec.name}: {'OK' if not failed else 'MISMATCH'}")
        for col in ("stream", "kind", "measured", "nominal", "peak dBFS", "verdict"):
            table.add_column(col)
        for r in results:
            table.add_row(r["stream"], r["kind"], f"{r['measured_rate']:.2f}", f"{r['nominal_rate']:g}",
                          " ".join("-inf" if p is None else f"{p:.0f}" for p in r["peak_dbfs"]),
                          "[green]ok[/]" if r["ok"] else f"[red]{'; '.join(r['problems'])}[/]")
        out.print(table)
    if failed:
        raise CheckFailed(f"{len(failed)} of {len(results)} streams do not match the rig file")


def _check_results(recorder: Recorder, status: Status, tolerance: float) -> list[dict[str, Any]]:
    results = []
    for runner, s in zip(recorder.runners, status.streams):
        problems = []
        if s.fault:
            problems.append(s.fault)
        if s.nominal and abs(s.rate - s.nominal) / s.nominal > tolerance:
            problems.append(f"rate {s.rate:.2f}/s, rig says {s.nominal:g}")
        info = runner.info
        if s.kind == "camera":
            for key in ("width", "height"):
                if key in info and info[key] != runner.spec[key]:
                    problems.append(f"{key} {info[key]}, rig says {runner.spec[key]}")
        if s.kind == "audio" and s.peak_dbfs and all(math.isinf(p) for p in s.peak_dbfs):
            problems.append("silent on every channel")
        results.append({
            "stream": s.name, "kind": s.kind, "measured_rate": round(s.rate, 3), "nominal_rate": s.nominal,
            "peak_dbfs": [p if math.isfinite(p) else None for p in s.peak_dbfs] if s.peak_dbfs else [],
            "device": s.device, "ok": not problems, "problems": problems,
        })
    return results


def main() -> None:
    app()


if __name__ == "__main__":
    main()

"""The live view of a recorder: a rich table on a terminal, a plain status line otherwise.

It only reads `Recorder.status()` snapshots, and the capture nodes' streams as the controller last polled
them (improvcap.nodes.controller.NodeController.live); it never touches devices or files.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .recorder import Recorder, Status, StreamStatus
from .take.space import room_line

PLAIN_INTERVAL_S = 5.0


def disk_line(status: Status) -> str:
    return room_line(status.disk_free_bytes, status.disk_minutes_left, status.disk_low)


def _peaks(s: StreamStatus) -> str:
    return " ".join("-inf" if math.isinf(p) else f"{p:.0f}" for p in s.peak_dbfs)


_TROUBLE = ("error", "gap", "overflow", "drop", "missed", "skipped")


def _device_counters(s: StreamStatus) -> str:
    """Only the device counters that mean trouble (parse errors, CRC failures, overflows...), when non-zero."""
    return " ".join(f"{k}={v}" for k, v in s.device.items() if v and any(t in k for t in _TROUBLE))


# the streams of capture nodes, as the controller last polled them: (node, its clock offset in ms, stream)
NodeRows = Callable[[], Sequence[tuple[str, "float | None", StreamStatus]]]


def _node_cell(node: str, offset_ms: float | None) -> str:
    return f"{node} ({'offset ?' if offset_ms is None else f'{offset_ms:+,.3f} ms'})" if node else "this PC"


def render(
    status: Status,
    title: str = "",
    footer: Sequence[str] = (),
    nodes: Sequence[tuple[str, float | None, StreamStatus]] = (),
) -> Group:
    head = Text.assemble(
        (f"{status.state.value.upper()}", "bold red" if status.state.value == "recording" else "bold"),
        f"  {title}" if title else "",
        f"  {status.elapsed_s:7.1f} s" if status.state.value == "recording" else "",
        (f"  {disk_line(status)}", "bold red" if status.disk_low else ""),
    )
    table = Table(expand=False, pad_edge=False)
    columns = (("node", "left"),) if nodes else ()
    for col, justify in (
        *columns,
        ("stream", "left"),
        ("kind", "left"),
        ("rate/s", "right"),
        ("nominal", "right"),
        ("count", "right"),
        ("drops", "right"),
        ("peak dBFS", "left"),
        ("device", "left"),
    ):
        table.add_column(col, justify=justify)
    rows = [("", None, s) for s in status.streams] + list(nodes)
    for node, offset_ms, s in rows:
        off = s.nominal and abs(s.rate - s.nominal) / s.nominal > 0.05
        table.add_row(
            *((_node_cell(node, offset_ms),) if nodes else ()),
            Text(s.name, style="bold red" if s.fault else ""),
            s.kind,
            Text(f"{s.rate:,.1f}", style="yellow" if off else ""),
            f"{s.nominal:,.0f}",
            f"{s.count:,}",
            Text(str(s.dropped), style="red" if s.dropped else ""),
            _peaks(s),
            Text(s.fault, style="red") if s.fault else _device_counters(s),
        )
    return Group(head, table, *(Text(line) for line in footer if line))


def plain_line(status: Status, nodes: Sequence[tuple[str, float | None, StreamStatus]] = ()) -> str:
    parts = [f"{status.state.value} {status.elapsed_s:.1f}s"] + ([disk_line(status)] if status.disk_low else [])
    for node, _, s in [("", None, s) for s in status.streams] + list(nodes):
        part = f"{node + ':' if node else ''}{s.name} {s.rate:.1f}/s n={s.count} drops={s.dropped}"
        if s.fault:
            part += f" FAULT({s.fault})"
        parts.append(part)
    return " | ".join(parts)


def watch(
    recorder: Recorder,
    done: Callable[[], bool],
    title: str | Callable[[], str] = "",
    console: Console | None = None,
    plain: TextIO | None = None,
    footer: Callable[[], Sequence[str]] = lambda: (),
    nodes: NodeRows = lambda: (),
) -> None:
    """Show the recorder, and the streams of its capture nodes, until `done()` is true. `title` and
    `footer` may change as it runs."""
    console = console or Console(stderr=True)
    heading = title if callable(title) else (lambda: title)
    if console.is_terminal:
        view = lambda: render(recorder.status(), heading(), footer(), nodes())  # noqa: E731
        with Live(view(), console=console, refresh_per_second=8, transient=False) as live:
            while not done():
                time.sleep(0.1)
                live.update(view())
        return
    out = plain or sys.stderr
    last = 0.0
    while not done():
        if time.monotonic() - last >= PLAIN_INTERVAL_S:
            print(plain_line(recorder.status(), nodes()), file=out, flush=True)
            last = time.monotonic()
        time.sleep(0.1)

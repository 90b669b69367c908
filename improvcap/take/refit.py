"""The final clock fit of a take: refit every stream's device clock and rewrite its stored t_ns.

While recording, t_ns comes from a live estimate. At stop (and again on repair) each stream's raw
(device_ns, host_ns) pairs, which the CSVs keep, are fitted over the whole take and the t_ns column is
rewritten from the fit (write a temporary file, fsync, rename): the stored t_ns are the best the take
allows, and the raw columns stay, so a take can always be refitted again.

Clock domains (improvcap.clock.ClockDomain, a device's `describe()["clock"]`): `device` — its own clock,
fitted to host arrivals; `host` — its stamps already are the host's monotonic clock (V4L2 buffer times);
`arrival` — no clock, stamped on arrival; `roundtrip` — a sync box's clock, fitted from the round trips in
`<stream>.roundtrips.csv` (improvcap.roundtrip); `lsl` — an LSL sender's clock, fitted from liblsl's offsets
in `<stream>.clock.csv` (improvcap.lslclock). Every domain then has its calibrated `latency_ms` subtracted.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..clock import ClockDomain
from ..clockfit import fit_clock
from ..errors import TakeError
from ..lslclock import fit_lsl
from ..roundtrip import WINDOW_NS, RoundTripFit, fit_roundtrips
from .atomic import RETIME_TAG, Folder, rewriting
from .controller_clock import CONTROLLER_CLOCK, ControllerClock
from .layout import LSL_CLOCK_COLUMNS, ROUNDTRIP_COLUMNS, lsl_clock_file, nominal_rate, roundtrips_file, table_file
from .sync import build_sync
from .tables import read_table, stream_table
from .trigger import triggered_frame_times

CHUNK_BYTES = 1 << 22


def fit_roundtrips_file(path: Path, window_ns: int = WINDOW_NS) -> RoundTripFit:
    """The final round-trip fit of a sync box from its `<stream>.roundtrips.csv`."""
    rt = read_table(path, columns=ROUNDTRIP_COLUMNS)
    return fit_roundtrips(rt["host_send_ns"], rt["host_recv_ns"], rt["box_ns"], window_ns=window_ns)


def _rows(path: Path) -> Iterator[list[bytes]]:
    """Complete data rows of a take CSV, in chunks of lines (a torn last row is left out)."""
    with open(path, "rb") as fh:
        fh.readline()
        carry = b""
        while chunk := fh.read(CHUNK_BYTES):
            chunk = carry + chunk
            cut = chunk.rfind(b"\n") + 1
            carry = chunk[cut:]
            if cut:
                yield chunk[:cut].splitlines()


def rewrite_t_ns(path: Path, t_ns: np.ndarray, folder: Folder | None = None) -> None:
    """Replace column 1 (t_ns) row by row; every other byte of the file is kept. `folder`: `path`'s folder,
    already open, which the new file is made in."""
    values = iter(t_ns.tolist())
    with open(path, "rb") as src, rewriting(path, RETIME_TAG, folder=folder) as dst:
        dst.write(src.readline())
        for lines in _rows(path):
            out = []
            for line in lines:
                first, _, rest = line.split(b",", 2)
                out.append(b"%s,%d,%s\n" % (first, next(values), rest))
            dst.write(b"".join(out))


def retime_stream(
    take_dir: Path,
    name: str,
    kind: str,
    domain: ClockDomain,
    *,
    latency_ns: int,
    t0_host_ns: int,
    nominal_rate: float,
    folder: Folder | None = None,
    onto: ControllerClock | None = None,
) -> dict[str, Any]:
    """Fit one stream's clock, rewrite its t_ns, return its `clock` entry for take.json. `folder`: the take
    folder already open, which the rewrite is made in (`take_dir` is where the tables are read); `onto`: a
    capture node's take, whose t_ns go onto its controller's clock."""
    path = take_dir / table_file(name, kind)
    table = stream_table(take_dir, name, kind, time_only=True)
    device, host = table["device_ns"], table["host_ns"]
    if kind == "audio":
        frames = table["frames"]
        # a block reaches the host after its last sample: fit the arrival against the block's end
        device_end = device + np.round(frames * (1e9 / nominal_rate)).astype(np.int64)
    else:
        device_end = device
    entry: dict[str, Any] = {"domain": domain.value, "latency_ns": latency_ns, "rows": int(len(device))}
    if domain is ClockDomain.ROUNDTRIP:  # a sync box: fitted from its round trips, pulses or not (roundtrip.py)
        rt_fit = fit_roundtrips_file(take_dir / roundtrips_file(name))
        entry.update(rt_fit.as_dict())
    if len(device) == 0:
        return entry
    if domain is ClockDomain.LSL:  # an LSL inlet: fitted from liblsl's offsets (lslclock.py)
        clock = read_table(take_dir / lsl_clock_file(name), columns=LSL_CLOCK_COLUMNS)
        if len(clock["offset_ns"]):
            mapped, lsl_fit = fit_lsl(device, host, clock, nominal_rate)
            entry.update(lsl_fit.as_dict())
            t_ns = mapped - t0_host_ns - latency_ns  # liblsl's offsets map onto our absolute clock
        elif onto is not None:  # a node's take: the stored t_ns may be on either clock, its arrivals are raw
            entry["note"] = "no clock offset measured during the take: timed by arrival"
            t_ns = host - latency_ns
        else:  # a take shorter than liblsl's probing: the offset it had when the take began stays
            entry["note"] = "no clock offset measured during the take: the live offset kept"
            t_ns = table["t_ns"]
    elif domain is ClockDomain.ROUNDTRIP:
        t_ns = rt_fit.map(device) - latency_ns  # the round trips' host times are since t0 already
    elif domain is ClockDomain.DEVICE:
        fit = fit_clock(device_end, host)
        t_ns = fit.apply(device) - latency_ns
        entry.update(fit.as_dict())
        if kind == "audio":
            entry["effective_rate"] = round(fit.effective_rate(nominal_rate), 4)
    elif domain is ClockDomain.HOST:
        t_ns = device - t0_host_ns - latency_ns
    else:
        t_ns = host - latency_ns
    t_ns = np.asarray(t_ns, dtype=np.int64) if onto is None else onto.map(t_ns)
    rewrite_t_ns(path, t_ns, folder)
    entry["first_t_ns"], entry["last_t_ns"] = int(t_ns[0]), int(t_ns[-1])
    # frames (samples) from the first record to the start of the last, over the time they span
    span_s = (t_ns[-1] - t_ns[0]) / 1e9
    before_last = int(frames[:-1].sum()) if kind == "audio" else len(t_ns) - 1
    entry["measured_rate"] = round(before_last / span_s, 4) if span_s > 0 else None
    return entry


def refit_stream(
    take_dir: Path,
    name: str,
    kind: str,
    domain: ClockDomain,
    settings: dict[str, Any],
    t0_host_ns: int,
    folder: Folder | None = None,
    onto: ControllerClock | None = None,
) -> dict[str, Any]:
    """Refit one stream with its rig settings; its manifest fields: first/last t_ns, measured rate, clock."""
    entry = retime_stream(
        take_dir,
        name,
        kind,
        domain,
        latency_ns=int(round(settings.get("latency_ms", 0.0) * 1e6)),
        t0_host_ns=t0_host_ns,
        nominal_rate=nominal_rate(kind, settings),
        folder=folder,
        onto=onto,
    )
    return {
        "first_t_ns": entry.pop("first_t_ns", None),
        "last_t_ns": entry.pop("last_t_ns", None),
        "measured_rate": entry.pop("measured_rate", None),
        "clock": entry,
    }


def retime_triggered(
    take_dir: Path,
    settings: dict[str, dict[str, Any]],
    entries: dict[str, dict[str, Any]],
    folder: Folder | None = None,
) -> dict[str, str]:
    """Every triggered camera among `entries` (stream name -> its manifest entry, updated in place) at its
    pulses' times, once every stream is refitted (improvcap.take.trigger); {camera: reason} for those that
    could not be."""
    failed = {}
    for name, entry in entries.items():
        box = settings.get(name, {}).get("trigger")
        if entry.get("kind", settings[name].get("kind")) != "camera" or not box:
            continue
        try:
            if box not in entries:
                raise TakeError(f"its trigger box {box} has no pulses in this take")
            _, t, info = triggered_frame_times(take_dir, name, box, settings[name].get("latency_ms", 0.0))
            rewrite_t_ns(take_dir / table_file(name, "camera"), t, folder)
            entry["trigger"] = {"box": box, **info}
            if len(t):
                entry["first_t_ns"], entry["last_t_ns"] = int(t[0]), int(t[-1])
        except Exception as e:  # its own clock's times stay
            failed[name] = f"not put on its trigger pulses: {type(e).__name__}: {e}"
    return failed


def controller_clock(take_dir: Path, manifest: dict[str, Any]) -> tuple[ControllerClock | None, str | None]:
    """A capture node's take: the map onto its controller's clock (its fit kept in the manifest), or why it
    cannot be made (the streams then stay on the node's clock: the raw offsets are kept for a later refit).
    (None, None) for any other take."""
    if CONTROLLER_CLOCK not in manifest:
        return None, None
    try:
        clock = ControllerClock(take_dir, manifest)
    except Exception as e:
        return None, f"not put on the controller's clock: {type(e).__name__}: {e}"
    manifest[CONTROLLER_CLOCK]["segments"] = clock.as_dict()
    return clock, None


def refit_take(take_dir: Path, manifest: dict[str, Any], folder: Folder | None = None) -> dict[str, str]:
    """Refit every stream of a take from its raw columns, rewrite t_ns, rebuild sync.csv.

    Everything needed comes from the manifest (kinds, clock domains, latencies, nominal rates, t0), so a
    take can be refitted long after it was recorded. Updates `manifest` in place. A stream that cannot be
    fitted keeps its live timestamps and does not stop the others: returns {stream: reason} for those.
    `folder`: the take folder already open (the recorder's), which every rewrite is made in; `take_dir` is
    where the tables are read.
    """
    settings = {s["name"]: s for s in manifest["rig"]["streams"]}
    onto, why = controller_clock(take_dir, manifest)
    failed = {name: why for name in manifest["streams"]} if why else {}
    for name, stream in manifest["streams"].items():
        try:
            domain = ClockDomain.of(stream["device"].get("clock", "device"), ClockDomain.ARRIVAL)
            stream.update(
                refit_stream(
                    take_dir, name, stream["kind"], domain, settings[name], manifest["t0_host_ns"], folder, onto
                )
            )
        except Exception as e:  # the raw columns stay on disk: `repair --force` can refit later
            failed[name] = f"{type(e).__name__}: {e}"
    healthy = {n: s for n, s in manifest["streams"].items() if n not in failed}
    failed.update(retime_triggered(take_dir, settings, healthy, folder))
    manifest["sync"] = build_sync(take_dir, manifest, replace=True, folder=folder)
    return failed

"""Per-kind repair of a stream's files: timing rows and media reconciled, the shorter one wins.

KIND_REPAIRS maps a stream kind to its repair; each takes the TakeRepair it reports its actions to.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..clock import ClockDomain
from ..errors import ImprovcapError
from ..take.layout import AUDIO, LAYOUTS, lsl_clock_file, nominal_rate, roundtrips_file, truth_file
from ..take.mkv import scan_mkv
from ..take.tables import read_table
from ..take.wav import repair_wav_header, wav_info
from .stream import RepairStream, StreamFault, one_line
from .surgery import cut_wav, remux_mkv, rewrite_csv

if TYPE_CHECKING:
    from .take_repair import TakeRepair


def repair_camera(r: TakeRepair, stream: RepairStream) -> None:
    mkv, table = r.media(stream), r.table(stream)
    assert mkv is not None
    scan = scan_mkv(mkv)  # before anything changes: an unreadable file leaves the stream as found
    stream.device.update({"width": scan.width, "height": scan.height, "codec": scan.codec})
    r.drop_torn_rows(table, stream)
    pts = read_table(table, columns=("pts",))["pts"]
    rows_kept = np.isin(pts, np.asarray(scan.pts, dtype=np.int64))
    timed = set(pts[rows_kept].tolist())
    untimed = [p for p in scan.pts if p not in timed]
    if scan.torn or untimed or not scan.finished:
        why = [f"its end is torn ({scan.complete} complete packets readable)"] if scan.torn else []
        if not scan.finished and not scan.torn:
            why.append("it was never finished (no duration, no index: players cannot seek in it)")
        if untimed:
            why.append(f"{len(untimed)} frames have no row in {table.name}")
            stream.untimed = len(untimed)
            # container pts are the live t_ns in ms: near enough to say when the take stopped
            stream.untimed_end_ns = max(untimed) * 1_000_000 + int(1e9 / nominal_rate("camera", stream.spec))
        original = remux_mkv(mkv, timed)
        stream.originals.append(original.name)
        r.actions.append(
            f"{mkv.name}: remuxed (stream copy, timestamps kept) to the {len(timed)} frames "
            f"that have timing rows, because {' and '.join(why)}; the original is kept as "
            f"{original.name}"
        )
    dropped = int((~rows_kept).sum())
    if dropped:
        rewrite_csv(table, table.stat().st_size, keep=rows_kept)
        stream.rows_dropped += dropped
        r.actions.append(f"{table.name}: dropped {dropped} rows whose frames never reached {mkv.name}")


def repair_audio(r: TakeRepair, stream: RepairStream) -> None:
    wav, table = r.media(stream), r.table(stream)
    assert wav is not None
    info = wav_info(wav)  # before anything changes: a file that is no WAV leaves the stream as found
    r.drop_torn_rows(table, stream)
    blocks = read_table(table, columns=("first_sample", "frames"))
    if not info["header_complete"]:
        frames = repair_wav_header(wav)
        r.actions.append(f"{wav.name}: header restored from the data on disk ({frames} frames)")
        info = wav_info(wav)
    on_disk = info["frames_on_disk"]
    stream.device.update(
        {"channels": info["channels"], "samplerate": info["samplerate"], "sample_format": info["sample_format"]}
    )
    ends = blocks["first_sample"] + blocks["frames"]
    rows_kept = ends <= on_disk
    dropped = int((~rows_kept).sum())
    timed = int(ends[rows_kept].max()) if rows_kept.any() else 0
    counted = _counter_timed_block(table, rows_kept, timed, on_disk, float(info["samplerate"]))
    if dropped or counted:
        rewrite_csv(table, table.stat().st_size, keep=rows_kept, append=counted)
        stream.rows_dropped += dropped
    if dropped:
        r.actions.append(
            f"{table.name}: dropped {dropped} blocks ({int(blocks['frames'][~rows_kept].sum())} "
            f"samples) whose samples never reached {wav.name}"
        )
    if counted:
        r.actions.append(
            f"{table.name}: {on_disk - timed} samples of {wav.name} after its last complete block "
            "timed by the sample counter (one block row added)"
        )
        timed = on_disk
    if on_disk > timed:
        stream.untimed = on_disk - timed
        original = cut_wav(wav, timed)
        stream.originals.append(original.name)
        r.actions.append(
            f"{wav.name}: cut to the {timed} samples that {table.name} times; "
            f"{stream.untimed} samples without a block row remain in {original.name}"
        )


def _counter_timed_block(table: Path, rows_kept: np.ndarray, timed: int, on_disk: int, samplerate: float) -> bytes:
    """A blocks.csv row for the whole samples on disk after the last complete block (the WAV got more than
    the rows name): the ADC's sample counter is the device clock, so their device time is the last block's
    plus its length, and their arrival is taken at the last block's delay after its end. b"" when there is
    nothing to time or no block to count from."""
    if on_disk <= timed or not rows_kept.any():
        return b""
    last = int(np.flatnonzero(rows_kept)[-1])
    rows = read_table(table, columns=("t_ns", "device_ns", "host_ns", "frames"))
    step = round(int(rows["frames"][last]) * 1e9 / samplerate)
    length = round((on_disk - timed) * 1e9 / samplerate)  # a block arrives after its last sample
    cells = {
        "first_sample": timed,
        "t_ns": int(rows["t_ns"][last]) + step,  # t_ns: refitted from the raw
        "device_ns": int(rows["device_ns"][last]) + step,
        "host_ns": int(rows["host_ns"][last]) + length,
        "frames": on_disk - timed,
    }
    return (",".join(str(cells.get(c, "")) for c in AUDIO.columns) + "\n").encode()


def repair_mocap(r: TakeRepair, stream: RepairStream) -> None:
    """Mocap or LSL rows: torn rows dropped, the channels named by the header (markers have none)."""
    table = r.table(stream)
    r.drop_torn_rows(table, stream)
    with open(table, encoding="utf-8", newline="") as fh:
        header = next(csv.reader(fh), [])
    names = header[len(LAYOUTS[stream.kind].columns) :]
    stream.device.update({"channels": len(names), "channel_names": names})


def repair_lsl(r: TakeRepair, stream: RepairStream) -> None:
    """Sample rows as mocap's; the clock offsets, torn rows dropped, are what the sender's clock is refitted from."""
    repair_mocap(r, stream)
    offsets = r.take / lsl_clock_file(stream.name)
    if offsets.is_symlink() or not offsets.is_file():
        raise StreamFault(f"{offsets.name} is missing")
    r.drop_torn_rows(offsets, None)
    stream.device.setdefault("clock", ClockDomain.LSL.value)


def repair_sync_box(r: TakeRepair, stream: RepairStream) -> None:
    """Pulses and round trips: torn rows dropped. The box's clock is refitted from the round trips."""
    r.drop_torn_rows(r.table(stream), stream)
    roundtrips = r.take / roundtrips_file(stream.name)
    if roundtrips.is_symlink() or not roundtrips.is_file():
        raise StreamFault(f"{roundtrips.name} is missing")
    r.drop_torn_rows(roundtrips, None)


def repair_truth_rows(r: TakeRepair) -> None:
    """`<stream>.truth.csv`: torn rows dropped, and rows of records the stream no longer has."""
    # the column that numbers a stream's records: the truth rows' index
    key = {kind: layout.columns[0] for kind, layout in LAYOUTS.items()}
    for stream in r.streams:
        truth = r.take / truth_file(stream.name)
        if stream.fault is not None or not truth.is_file() or truth.is_symlink():
            continue
        try:
            r.drop_torn_rows(truth, None)
            records = read_table(r.table(stream), columns=(key[stream.kind],))[key[stream.kind]]
            index = read_table(truth, columns=("index",))["index"]
            keep = np.isin(index, records)
            if not keep.all():
                rewrite_csv(truth, truth.stat().st_size, keep=keep)
                r.actions.append(
                    f"{truth.name}: dropped {int((~keep).sum())} rows of records {stream.name} no longer has"
                )
        except (ImprovcapError, OSError, ValueError) as e:
            r.actions.append(f"{truth.name}: left as found: {one_line(e)}")


KIND_REPAIRS = {
    "camera": repair_camera,
    "audio": repair_audio,
    "mocap": repair_mocap,
    "sync": repair_sync_box,
    "lsl": repair_lsl,
    "markers": repair_lsl,
}

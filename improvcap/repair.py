"""`improvcap repair TAKE`: make a take cut short by a crash, `kill -9` or a power cut consistent again.

What a crash leaves: take.json still at `recording` with no stream summaries, WAV headers that still hold
their placeholder sizes, a CSV row cut mid-line, and files that end at slightly different moments (each
writer had flushed up to a different point of the last second). Repair restores what is on disk and
makes every stream agree with itself; it never deletes media:

- WAV headers are rebuilt from the data on disk (a torn last partial frame is cut);
- a torn last row (no line end, a wrong number of fields, NUL bytes from a power cut) is dropped from
  every CSV of the take (temporary file, fsync, rename), every complete row is kept;
- Matroska files are demuxed; one that cannot be read to its end cleanly is remuxed (stream copy,
  timestamps kept);
- timing rows and media are reconciled, the shorter one wins, matched frame by frame (cameras: by the
  `pts` column; audio: by sample range). A row whose frame or samples never reached the media is dropped
  (the data is gone). Media without a timing row cannot be placed on the shared clock: the media file is
  rewritten without it, and the untouched original is kept beside it as `<file>.orig` (hard link, then
  rename: at every moment the original bytes exist under one of the names);
- clocks are refitted from the raw columns (t_ns rewritten), sync.csv rebuilt, and take.json rewritten
  with per-stream summaries counted from the files, the hashes of every file (`.orig` files included),
  status `repaired` and a `repair` record: what was lost, what was done, and per stream any fault.

A stream whose files cannot be read is left exactly as found and marked failed with the reason; the
others are repaired. Running repair again (`force=True`) changes nothing material: no further row or
frame is dropped, the refit is deterministic, and the record of what the crash lost is carried over.
"""
from __future__ import annotations

import csv
import datetime as _dt
import itertools
import json
import os
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from . import __version__
from . import take as takefmt
from .errors import ImprovcapError, TakeError, UsageError
from .retime import refit_stream
from .rig import KINDS, NAME_RE, RATE_KEY, nominal_rate
from .sync import build_sync
from .timeline import read_table, stream_table
from .writers.wav import repair_wav_header, wav_info

REPAIRABLE = ("recording", "interrupted")
TABLE_SUFFIX = {"camera": ".frames.csv", "audio": ".blocks.csv", "mocap": ".csv", "sync": ".csv"}
MEDIA_SUFFIX = {"camera": ".mkv", "audio": ".wav"}
UNIT = {"camera": "frames", "audio": "samples", "mocap": "rows", "sync": "pulses"}
# hidden temporaries: repair's own, the final refit's, take.json's and sync.csv's atomic writes
TEMPORARY = re.compile(r"^\..+\.(repair|retime)$|^\.take\.json\.(\d+\.)?tmp$|^\.sync\.csv\.\d+\.tmp$")
TAIL_BYTES = 1 << 20
COPY_CHUNK = 1 << 24
EBML_SEGMENT = 0x18538067


class _StreamFault(Exception):
    """A stream's files cannot be repaired; the stream is left as found and marked with the reason."""


# --- entry point --------------------------------------------------------------------------------

def repair_take(take: Path, *, force: bool = False) -> dict[str, Any]:
    """Repair the take folder `take` in place and return its new manifest (its `repair` key is the record).

    Refuses (UsageError) a take whose status is `complete` or `repaired` unless `force`, and a take whose
    files another process holds open (a recorder still writing it). A folder without a readable take
    manifest raises TakeError. Both have one-line messages.
    """
    take = Path(take)
    manifest = load_manifest(take)
    status = manifest["status"]
    if status not in REPAIRABLE and not force:
        raise UsageError(f"{take}: take is {status}; repair --force to redo its timing and hashes")
    if (pid := _open_in_process(take)) is not None:
        raise UsageError(f"{take}: process {pid} has files of this take open; is it still recording?")
    return _Repair(take, manifest).run()


def load_manifest(take: Path) -> dict[str, Any]:
    """take.json of `take`, checked enough that stream names are safe to use as file names."""
    if not take.is_dir():
        raise TakeError(f"{take}: not a folder")
    path = take / takefmt.MANIFEST
    if not path.is_file():
        raise TakeError(f"{take}: no {takefmt.MANIFEST}: not a take folder")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise TakeError(f"{path}: unreadable: {_one_line(e)}") from None

    def bad(problem: str) -> TakeError:
        return TakeError(f"{path}: not a take manifest: {problem}")

    if not isinstance(data, dict) or data.get("format") != takefmt.FORMAT:
        raise bad(f"format is not {takefmt.FORMAT!r}")
    if not isinstance(data.get("status"), str):
        raise bad("no status")
    if not isinstance(data.get("t0_host_ns"), int) or isinstance(data.get("t0_host_ns"), bool):
        raise bad("no t0_host_ns")
    rig = data.get("rig")
    if not isinstance(rig, dict) or not isinstance(rig.get("streams"), list):
        raise bad("no rig snapshot with streams")
    seen = set()
    for spec in rig["streams"]:
        if not isinstance(spec, dict) or spec.get("kind") not in KINDS or not isinstance(spec.get("driver"), str):
            raise bad("a rig stream without kind or driver")
        name = spec.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name) or name in seen:
            raise bad(f"unsafe or duplicate stream name {name!r}")
        seen.add(name)
        key = RATE_KEY[spec["kind"]]
        usable = _positive(spec.get(key)) or (spec["kind"] == "sync" and spec.get(key) == 0)  # 0: no pulses
        if not usable or not isinstance(spec.get("latency_ms", 0.0), (int, float)):
            raise bad(f"stream {name}: no usable {key} or latency_ms")
    if rig.get("master") is not None and rig.get("master") not in seen:
        raise bad(f"master {rig.get('master')!r} is not a stream")
    if not isinstance(data.get("streams", {}), dict):
        raise bad("streams is not a table")
    return data


# --- the repair ---------------------------------------------------------------------------------

@dataclass
class _Stream:
    name: str
    kind: str
    spec: dict[str, Any]
    device: dict[str, Any] = field(default_factory=dict)
    rows_dropped: int = 0      # timing rows dropped: torn, or naming data the media never received
    untimed: int = 0           # frames/samples in the media without a timing row (kept in .orig)
    untimed_end_ns: int | None = None
    originals: list[str] = field(default_factory=list)
    fault: str | None = None
    entry: dict[str, Any] = field(default_factory=dict)


class _Repair:
    def __init__(self, take: Path, manifest: dict[str, Any]) -> None:
        self.take = take
        self.manifest = manifest
        self.actions: list[str] = []
        previous = manifest.get("repair")
        self.previous: dict[str, Any] | None = previous if isinstance(previous, dict) else None
        self.streams = [_Stream(s["name"], s["kind"], s) for s in manifest["rig"]["streams"]]
        # whether the recorder stopped this take itself (complete, perhaps repaired on request since)
        self.stopped = "complete" in [manifest["status"], *(r.get("from_status") for r in self._previous_records())]

    def run(self) -> dict[str, Any]:
        self._remove_temporaries()
        for stream in self.streams:
            try:
                self._check_files(stream)
                {"camera": self._camera, "audio": self._audio, "mocap": self._mocap,
                 "sync": self._sync_box}[stream.kind](stream)
            except Exception as e:  # one stream's damage must not stop the repair of the others
                stream.fault = _reason(e)
                self.actions.append(f"{stream.name}: left as found: {stream.fault}")
        events = self.take / "events.csv"
        if events.is_file() and not events.is_symlink():
            try:
                self._drop_torn_rows(events, None)
            except (ImprovcapError, OSError, ValueError) as e:
                self.actions.append(f"events.csv: left as found: {_one_line(e)}")
        self._truth_rows()
        self._refit()
        return self._write_manifest()

    # files ----------------------------------------------------------------------------------------
    def _table(self, stream: _Stream) -> Path:
        return self.take / f"{stream.name}{TABLE_SUFFIX[stream.kind]}"

    def _media(self, stream: _Stream) -> Path | None:
        suffix = MEDIA_SUFFIX.get(stream.kind)
        return self.take / f"{stream.name}{suffix}" if suffix else None

    def _check_files(self, stream: _Stream) -> None:
        for path in (self._table(stream), self._media(stream)):
            if path is None:
                continue
            if path.is_symlink():
                raise _StreamFault(f"{path.name} is a symbolic link; repair only touches files of the take itself")
            if not path.is_file():
                raise _StreamFault(f"{path.name} is missing")

    def _remove_temporaries(self) -> None:
        """Hidden half-written files of an interrupted stop, atomic write or repair: never the only copy."""
        for path in sorted(self.take.iterdir()):
            if TEMPORARY.match(path.name) and path.is_file() and not path.is_symlink():
                path.unlink()
                self.actions.append(f"removed the unfinished temporary file {path.name}")

    def _drop_torn_rows(self, path: Path, stream: _Stream | None) -> None:
        end, dropped = torn_tail(path)
        if dropped:
            rewrite_csv(path, end)
            self.actions.append(f"{path.name}: dropped a torn last row" if dropped == 1
                                else f"{path.name}: dropped {dropped} torn last rows")
            if stream is not None:
                stream.rows_dropped += dropped

    # cameras --------------------------------------------------------------------------------------
    def _camera(self, stream: _Stream) -> None:
        mkv, table = self._media(stream), self._table(stream)
        assert mkv is not None
        scan = scan_mkv(mkv)  # before anything changes: an unreadable file leaves the stream as found
        stream.device.update({"width": scan.width, "height": scan.height, "codec": scan.codec})
        self._drop_torn_rows(table, stream)
        pts = read_table(table, columns=("pts",))["pts"]
        rows_kept = np.isin(pts, np.asarray(scan.pts, dtype=np.int64))
        timed = set(pts[rows_kept].tolist())
        untimed = [p for p in scan.pts if p not in timed]
        if scan.torn or untimed:
            why = [f"its end is torn ({scan.complete} complete packets readable)"] if scan.torn else []
            if untimed:
                why.append(f"{len(untimed)} frames have no row in {table.name}")
                stream.untimed = len(untimed)
                # container pts are the live t_ns in ms: near enough to say when the take stopped
                stream.untimed_end_ns = max(untimed) * 1_000_000 + int(1e9 / nominal_rate("camera", stream.spec))
            original = remux_mkv(mkv, timed)
            stream.originals.append(original.name)
            self.actions.append(f"{mkv.name}: remuxed (stream copy, timestamps kept) to the {len(timed)} frames "
                                f"that have timing rows, because {' and '.join(why)}; the original is kept as "
                                f"{original.name}")
        dropped = int((~rows_kept).sum())
        if dropped:
            rewrite_csv(table, table.stat().st_size, keep=rows_kept)
            stream.rows_dropped += dropped
            self.actions.append(f"{table.name}: dropped {dropped} rows whose frames never reached {mkv.name}")

    # audio ----------------------------------------------------------------------------------------
    def _audio(self, stream: _Stream) -> None:
        wav, table = self._media(stream), self._table(stream)
        assert wav is not None
        info = wav_info(wav)  # before anything changes: a file that is no WAV leaves the stream as found
        self._drop_torn_rows(table, stream)
        blocks = read_table(table, columns=("first_sample", "frames"))
        if not info["header_complete"]:
            frames = repair_wav_header(wav)
            self.actions.append(f"{wav.name}: header restored from the data on disk ({frames} frames)")
            info = wav_info(wav)
        on_disk = info["frames_on_disk"]
        stream.device.update({"channels": info["channels"], "samplerate": info["samplerate"],
                              "sample_format": info["sample_format"]})
        ends = blocks["first_sample"] + blocks["frames"]
        rows_kept = ends <= on_disk
        dropped = int((~rows_kept).sum())
        if dropped:
            rewrite_csv(table, table.stat().st_size, keep=rows_kept)
            stream.rows_dropped += dropped
            self.actions.append(f"{table.name}: dropped {dropped} blocks ({int(blocks['frames'][~rows_kept].sum())} "
                                f"samples) whose samples never reached {wav.name}")
        timed = int(ends[rows_kept].max()) if rows_kept.any() else 0
        if on_disk > timed:
            stream.untimed = on_disk - timed
            original = cut_wav(wav, timed)
            stream.originals.append(original.name)
            self.actions.append(f"{wav.name}: cut to the {timed} samples that {table.name} times; "
                                f"{stream.untimed} samples without a block row remain in {original.name}")

    # mocap ----------------------------------------------------------------------------------------
    def _mocap(self, stream: _Stream) -> None:
        table = self._table(stream)
        self._drop_torn_rows(table, stream)
        with open(table, encoding="utf-8", newline="") as fh:
            header = next(csv.reader(fh), [])
        names = header[5:]
        stream.device.update({"channels": len(names), "channel_names": names})

    # sync box -------------------------------------------------------------------------------------
    def _sync_box(self, stream: _Stream) -> None:
        """Pulses and round trips: torn rows dropped. The box's clock is refitted from the round trips."""
        self._drop_torn_rows(self._table(stream), stream)
        roundtrips = self.take / f"{stream.name}.roundtrips.csv"
        if roundtrips.is_symlink() or not roundtrips.is_file():
            raise _StreamFault(f"{roundtrips.name} is missing")
        self._drop_torn_rows(roundtrips, None)

    # ground truth ---------------------------------------------------------------------------------
    def _truth_rows(self) -> None:
        """`<stream>.truth.csv`: torn rows dropped, and rows of records the stream no longer has."""
        key = {"camera": "index", "audio": "first_sample", "mocap": "index", "sync": "index"}
        for stream in self.streams:
            truth = self.take / f"{stream.name}.truth.csv"
            if stream.fault is not None or not truth.is_file() or truth.is_symlink():
                continue
            try:
                self._drop_torn_rows(truth, None)
                records = read_table(self._table(stream), columns=(key[stream.kind],))[key[stream.kind]]
                index = read_table(truth, columns=("index",))["index"]
                keep = np.isin(index, records)
                if not keep.all():
                    rewrite_csv(truth, truth.stat().st_size, keep=keep)
                    self.actions.append(f"{truth.name}: dropped {int((~keep).sum())} rows of records "
                                        f"{stream.name} no longer has")
            except (ImprovcapError, OSError, ValueError) as e:
                self.actions.append(f"{truth.name}: left as found: {_one_line(e)}")

    # clocks, sync, summaries ----------------------------------------------------------------------
    def _refit(self) -> None:
        """Refit each stream that is not failed; one that cannot be fitted fails alone."""
        t0 = self.manifest["t0_host_ns"]
        for stream in self.streams:
            if stream.fault is not None:
                continue
            try:
                stream.entry = refit_stream(self.take, stream.name, stream.kind,
                                            _clock_domain(stream.spec, self._old(stream)), stream.spec, t0)
                stream.entry.update(self._counts(stream))
            except Exception as e:
                stream.fault = f"its timing could not be rebuilt: {_reason(e)}"
                self.actions.append(f"{stream.name}: {stream.fault}")

    def _old(self, stream: _Stream) -> dict[str, Any]:
        old = self.manifest.get("streams", {}).get(stream.name)
        return old if isinstance(old, dict) else {}

    def _counts(self, stream: _Stream) -> dict[str, Any]:
        """count and dropped, from the files: seq/counter gaps, audio device-clock jumps, else time gaps."""
        table = stream_table(self.take, stream.name, stream.kind, time_only=True)
        rate = nominal_rate(stream.kind, stream.spec)
        if stream.kind == "audio":
            frames = table["frames"]
            count = int(frames.sum())
            dropped = audio_gaps(table["device_ns"], frames, float(stream.device.get("samplerate") or rate))
            step_ns = int(round(int(frames[-1]) * 1e9 / rate)) if len(frames) else 0  # the last block
        else:
            count = len(table["t_ns"])
            if stream.kind in ("mocap", "sync"):  # a sync box's counter is its pulse count
                dropped = counter_gaps(table["counter"])
            else:
                seq = read_table(self._table(stream), columns=("seq",))["seq"]
                dropped = counter_gaps(seq) if seq.any() else time_gaps(table["t_ns"], 1e9 / rate)
            step_ns = int(round(1e9 / rate)) if rate > 0 else 0  # a sync box without trigger pulses
        return {"count": count, "dropped": dropped, "_step_ns": step_ns}

    def _sync(self, streams: dict[str, Any]) -> dict[str, Any] | None:
        """Rebuild sync.csv over the streams that are not failed (the master's ticks if it is one of them)."""
        healthy = {s.name for s in self.streams if s.fault is None}
        rig = dict(self.manifest["rig"])
        rig["streams"] = [s for s in rig["streams"] if s["name"] in healthy]
        if rig.get("master") is not None and rig["master"] not in healthy:
            self.actions.append(f"sync.csv: the master {rig['master']} failed; its ticks are synthetic")
            rig["master"] = None
        try:
            return build_sync(self.take, {**self.manifest, "rig": rig, "streams": streams}, replace=True)
        except Exception as e:
            self.actions.append(f"sync.csv not rebuilt: {_reason(e)}")
            return None

    def _events(self) -> list[dict[str, str]]:
        try:
            with open(self.take / "events.csv", encoding="utf-8", newline="") as fh:
                return list(csv.DictReader(fh))
        except (OSError, UnicodeDecodeError, csv.Error):
            return []

    def _end_t_ns(self, ends: dict[str, int], events: list[dict[str, str]]) -> int:
        """When the take stopped, as far as the disk tells: its latest data, timed or not, or event."""
        candidates = [*ends.values(), *(t for e in events if (t := _int(e.get("t_ns"))) is not None)]
        for s in self.streams:
            if s.untimed and s.kind == "audio" and s.name in ends:
                candidates.append(ends[s.name] + int(round(s.untimed * 1e9 / nominal_rate("audio", s.spec))))
            elif s.untimed_end_ns is not None:
                candidates.append(s.untimed_end_ns)
        if self.previous and isinstance(self.previous.get("end_t_ns"), int):
            candidates.append(self.previous["end_t_ns"])
        if self.stopped and _positive(self.manifest.get("duration_s")):
            candidates.append(int(round(self.manifest["duration_s"] * 1e9)))  # the stop the recorder saw
        return max(candidates, default=0)

    def _previous_records(self) -> list[dict[str, Any]]:
        if not self.previous:
            return []
        older = [r for r in self.previous.get("previous") or [] if isinstance(r, dict)]
        return older + [{k: v for k, v in self.previous.items() if k != "previous"}]

    def _write_manifest(self) -> dict[str, Any]:
        m = self.manifest
        from_status = m["status"]
        events = self._events()
        kept = [f for f in m.get("faults") or [] if isinstance(f, dict)] if isinstance(m.get("faults"), list) else []
        faults = kept or [
            {"t_ns": _int(e.get("t_ns")), "stream": e.get("stream") or "", "detail": e.get("detail") or ""}
            for e in events if e.get("kind") == "fault"]
        streams = {s.name: self._entry(s, faults) for s in self.streams}
        sync = self._sync(streams)
        # where each stream's data ends: its last frame or row; the end of its last audio block
        ends = {s.name: s.entry["last_t_ns"] + (s.entry["_step_ns"] if s.kind == "audio" else 0)
                for s in self.streams if s.fault is None and s.entry.get("last_t_ns") is not None}
        end_t_ns = self._end_t_ns(ends, events)
        old_lost = (self.previous or {}).get("lost")
        old_lost = old_lost if isinstance(old_lost, dict) else {}
        lost = {s.name: self._lost(s, end_t_ns, ends.get(s.name), old_lost.get(s.name),
                                   [f for f in streams[s.name]["files"] if ".orig" in f]) for s in self.streams}
        record: dict[str, Any] = {
            "repaired_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "tool_version": __version__,
            "from_status": from_status,
            "end_t_ns": end_t_ns,
            "lost": lost,
            "actions": self.actions or ["nothing to repair: every file was consistent"],
            "faults": {s.name: s.fault for s in self.streams if s.fault is not None},
            "note": "end_t_ns is the latest data found on disk; what was captured after it, up to the moment "
                    "the recording stopped, was never written and cannot be counted",
        }
        if self.previous:
            record["previous"] = self._previous_records()
        # a take the recorder stopped keeps the duration it measured; a crashed one lasts as long as its data
        duration = m.get("duration_s") if self.stopped and _positive(m.get("duration_s")) else \
            round(max(ends.values(), default=0) / 1e9, 6)
        m.update({"status": "repaired", "duration_s": duration, "streams": streams, "faults": faults})
        if sync is not None:
            m["sync"] = sync
        m["repair"] = record
        m["files"] = takefmt.file_entries(self.take)
        takefmt.write_json_atomic(self.take / takefmt.MANIFEST, m)
        return m

    def _entry(self, s: _Stream, faults: list[dict[str, Any]]) -> dict[str, Any]:
        """The stream's take.json entry: what the recorder wrote, if it did, updated from the files."""
        old = self._old(s)
        entry: dict[str, Any] = dict(old) if old else {
            "kind": s.kind, "driver": s.spec["driver"],
            "device": {"driver": s.spec["driver"], "clock": _clock_domain(s.spec, {}), **s.device,
                       "reconstructed_by_repair": True},
            "files": [], "nominal_rate": nominal_rate(s.kind, s.spec), "measured_rate": None,
            "count": None, "dropped": None, "dropped_in_queue": None, "dropped_by_device": None,
            "device_stats": None, "latency_ms": s.spec.get("latency_ms", 0.0), "clock": None,
            "first_t_ns": None, "last_t_ns": None, "state": "ok", "fault": None,
        }
        names = [f"{s.name}{TABLE_SUFFIX[s.kind]}", f"{s.name}.truth.csv"]
        if s.kind == "sync":
            names.insert(1, f"{s.name}.roundtrips.csv")
        if s.kind in MEDIA_SUFFIX:
            names.insert(0, f"{s.name}{MEDIA_SUFFIX[s.kind]}")
        present = [n for n in names if (self.take / n).exists()]
        originals = sorted({*s.originals, *(p.name for n in present for p in _originals_of(self.take / n))})
        entry["files"] = present + originals
        if s.fault is not None:
            entry.update({"state": "failed", "fault": f"repair: {s.fault}", "count": None})
            return entry
        entry.update({k: v for k, v in s.entry.items() if not k.startswith("_")})
        if str(entry.get("fault") or "").startswith("repair: "):  # an earlier repair's fault, now gone
            entry.update({"state": "ok", "fault": None})
        if not old:
            own = [f for f in faults if f.get("stream") == s.name]
            if own:
                entry.update({"state": "failed", "fault": own[0]["detail"]})
        return entry

    def _lost(self, s: _Stream, end_t_ns: int, stream_end: int | None, old: Any,
              originals: list[str]) -> dict[str, Any]:
        """What the stream lost: the stretch before the take's last data, rows dropped, untimed media."""
        unit = UNIT[s.kind]
        rate = nominal_rate(s.kind, s.spec)
        rows_dropped, untimed = s.rows_dropped, s.untimed
        if isinstance(old, dict):  # a repeated repair: what the first one found is still the loss
            rows_dropped += _int(old.get("rows_dropped")) or 0
            untimed += _int(old.get("untimed_in_orig")) or 0
        figures: dict[str, Any] = {"unit": unit, "missing_at_end": None, "missing_at_end_s": None,
                                   "rows_dropped": rows_dropped, "untimed_in_orig": untimed}
        if s.fault is not None or stream_end is None:
            return {**figures, "summary": f"unknown: {s.fault}" if s.fault else f"nothing recorded by {s.name}"}
        gap_ns = end_t_ns - stream_end
        step_ns = s.entry["_step_ns"]  # a frame, or the last audio block: shorter gaps are timing noise
        # a take the recorder stopped lost nothing at its end: every stream was drained and closed
        missing = int(gap_ns * rate // 1e9) if gap_ns > 1.5 * step_ns and not self.stopped else 0
        seconds = round(gap_ns / 1e9, 3) if missing else 0.0
        parts = [f"about {missing} {unit} ({seconds:.2f} s) missing before the take's last data at "
                 f"{end_t_ns / 1e9:.3f} s" if missing else "nothing missing at the end"]
        if rows_dropped:
            parts.append(f"{rows_dropped} timing rows dropped (torn, or naming data the media never received)")
        if untimed:
            parts.append(f"{untimed} {unit} without timing rows kept only in {', '.join(originals) or 'the original'}")
        figures.update(missing_at_end=missing, missing_at_end_s=seconds)
        return {**figures, "summary": "; ".join(parts)}


# --- CSV ----------------------------------------------------------------------------------------

def _fields(line: bytes) -> list[str]:
    return next(csv.reader([line.decode("utf-8", "replace").rstrip("\r\n")]), [])


def torn_tail(path: Path) -> tuple[int, int]:
    """(bytes to keep, rows to drop) for a CSV whose last row may be torn.

    Torn: text after the last line end (a row cut short), NUL bytes (blocks a power cut never wrote), or
    a last complete row with another number of fields than the header.
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        header = fh.readline()
        if not header.endswith(b"\n") or b"\0" in header:
            raise TakeError(f"{path.name}: no complete header line")
        width = len(_fields(header))
        start = max(len(header), size - TAIL_BYTES)
        fh.seek(start)
        tail = fh.read()
    cut = tail.rfind(b"\n")
    if cut < 0 and start > len(header):
        raise TakeError(f"{path.name}: its last line is longer than {TAIL_BYTES} bytes")
    end = start + cut + 1
    dropped = 1 if end < size else 0
    if end > len(header):
        prev = tail.rfind(b"\n", 0, cut)
        if prev < 0 and start > len(header):
            raise TakeError(f"{path.name}: its last line is longer than {TAIL_BYTES} bytes")
        line_start = start + prev + 1
        line = tail[prev + 1: cut + 1]
        if b"\0" in line or len(_fields(line)) != width:
            end, dropped = line_start, dropped + 1
    return end, dropped


def rewrite_csv(path: Path, end: int, keep: np.ndarray | None = None) -> None:
    """Replace `path` by its first `end` bytes, or its header and the data rows where `keep` is True.

    Written to a hidden temporary file, fsynced, renamed over the original, folder fsynced.
    """
    tmp = path.with_name(f".{path.name}.repair")
    with open(path, "rb") as src, open(tmp, "wb") as dst:
        if keep is None:
            _copy(src, dst, end)
        else:
            dst.write(src.readline())
            rows = 0
            for i, line in enumerate(src):
                if i >= len(keep):
                    raise TakeError(f"{path.name}: more rows than expected")
                if keep[i]:
                    dst.write(line)
                rows += 1
            if rows != len(keep):
                raise TakeError(f"{path.name}: fewer rows than expected")
        dst.flush()
        os.fsync(dst.fileno())
    _replace(tmp, path)


def _copy(src: Any, dst: Any, count: int) -> None:
    """The first `count` bytes of src into dst, in the kernel where it can (reflinks on btrfs/XFS)."""
    src.seek(0)
    done = 0
    try:
        while done < count:
            n = os.copy_file_range(src.fileno(), dst.fileno(), min(COPY_CHUNK, count - done), done, done)
            if n == 0:
                break
            done += n
    except OSError:
        pass  # not supported here: copy the rest in user space
    src.seek(done)
    dst.seek(done)
    while done < count:
        block = src.read(min(COPY_CHUNK, count - done))
        if not block:
            break
        dst.write(block)
        done += len(block)
    if done != count:
        raise TakeError(f"{src.name}: shorter than expected ({done} of {count} bytes)")


def _replace(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- media --------------------------------------------------------------------------------------

def keep_original(path: Path) -> Path:
    """Hard-link `path` as `<name>.orig` (or `.orig2`, ... if taken): the bytes stay whatever replaces it."""
    for n in itertools.count(1):
        original = path.with_name(f"{path.name}.orig" if n == 1 else f"{path.name}.orig{n}")
        try:
            os.link(path, original)
            return original
        except FileExistsError:
            if os.path.samefile(path, original):  # an earlier repair was cut off right here
                return original
        except OSError:  # no hard links on this file system (exFAT, FAT): copy instead
            try:
                with open(path, "rb") as src, open(original, "xb") as dst:
                    _copy(src, dst, path.stat().st_size)
                    dst.flush()
                    os.fsync(dst.fileno())
                return original
            except FileExistsError:
                continue


def _originals_of(path: Path) -> list[Path]:
    return sorted(p for p in path.parent.glob(f"{path.name}.orig*")
                  if p.name[len(path.name) + 5:].isdigit() or p.name == f"{path.name}.orig")


@dataclass
class MkvScan:
    pts: list[int]            # ms, of every complete packet of the first video stream, in file order
    torn: bool                # the file ends inside an element, or demuxing stopped on an error
    complete: int
    width: int | None
    height: int | None
    codec: str | None


def scan_mkv(path: Path) -> MkvScan:
    """Demux (no decoding) the first video stream of a Matroska file."""
    size = path.stat().st_size
    torn = ebml_torn(path)
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as e:
        raise _StreamFault(f"{path.name} cannot be opened: {_one_line(e)}") from None
    with container:
        if not container.streams.video:
            raise _StreamFault(f"{path.name} has no video stream")
        stream = container.streams.video[0]
        ms = Fraction(stream.time_base or Fraction(1, 1000)) * 1000
        pts: list[int] = []
        try:
            for packet in container.demux(stream):
                if packet.size == 0 or packet.pts is None:
                    continue
                if packet.pos is not None and packet.pos >= 0 and packet.pos + packet.size > size:
                    torn = True
                    continue
                pts.append(int(round(packet.pts * ms)))
        except av.FFmpegError:
            torn = True
        ctx = stream.codec_context
        return MkvScan(pts, torn, len(pts), ctx.width or None, ctx.height or None, ctx.name)


def _vint(data: bytes, marker: bool) -> tuple[int, int, bool] | None:
    """An EBML variable-length integer: (value, length, all ones = unknown size); None if cut short."""
    if not data or data[0] == 0:
        return None
    length = 9 - data[0].bit_length()
    if len(data) < length:
        return None
    value = data[0] & (0xFF >> length) if marker else data[0]
    for byte in data[1:length]:
        value = value << 8 | byte
    return value, length, marker and value == (1 << (7 * length)) - 1


def ebml_torn(path: Path) -> bool:
    """Whether a Matroska file ends inside a top-level element (a cluster cut by a crash or a copy).

    Walks the EBML header and the Segment's children by their sizes only. A Segment of unknown size (as
    a crash leaves it) runs to the end of the file; an element of unknown size cannot be checked this
    way, so it counts as intact and demuxing decides.
    """
    size = path.stat().st_size
    pos, end = 0, size
    with open(path, "rb") as fh:
        while pos < end:
            fh.seek(pos)
            head = fh.read(12)
            ident = _vint(head, marker=False)
            if ident is None:
                return True
            length = _vint(head[ident[1]:], marker=True)
            if length is None:
                return True
            start = pos + ident[1] + length[1]
            if ident[0] == EBML_SEGMENT:
                pos = start
                if not length[2]:
                    end = start + length[0]
                    if end > size:
                        return True
                continue
            if length[2]:
                return False
            if start + length[0] > size:
                return True
            pos = start + length[0]
    return pos > end


def remux_mkv(path: Path, keep_pts: set[int]) -> Path:
    """Rewrite `path` with only the video packets whose pts (ms) are in `keep_pts` (stream copy, pts and
    dts kept), after hard-linking the original as `<name>.orig`; returns the original's path."""
    tmp = path.with_name(f".{path.name}.repair")
    size = path.stat().st_size
    try:
        with av.open(str(path)) as src, av.open(str(tmp), "w", format="matroska") as dst:
            video = src.streams.video[0]
            out = dst.add_stream_from_template(video)
            out.metadata.update({k: v for k, v in video.metadata.items() if k.upper() != "DURATION"})
            if src.metadata.get("title"):
                dst.metadata["title"] = src.metadata["title"]
            ms = Fraction(video.time_base or Fraction(1, 1000)) * 1000
            try:
                for packet in src.demux(video):
                    if packet.size == 0 or packet.pts is None or packet.dts is None:
                        continue
                    if packet.pos is not None and packet.pos >= 0 and packet.pos + packet.size > size:
                        continue
                    if int(round(packet.pts * ms)) not in keep_pts:
                        continue
                    packet.stream = out
                    dst.mux(packet)
            except av.FFmpegError:
                pass  # a torn end: everything before it is in
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    original = keep_original(path)
    _replace(tmp, path)
    return original


def cut_wav(path: Path, frames: int) -> Path:
    """Rewrite a WAV with its first `frames` frames only, after hard-linking the original as `.orig`."""
    info = wav_info(path)
    tmp = path.with_name(f".{path.name}.repair")
    try:
        with open(path, "rb") as src, open(tmp, "wb") as dst:
            _copy(src, dst, info["data_offset"] + frames * info["block_align"])
        repair_wav_header(tmp)  # sizes from the length: exactly `frames`, fsynced
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    original = keep_original(path)
    _replace(tmp, path)
    return original


# --- counting -----------------------------------------------------------------------------------

def counter_gaps(counter: np.ndarray) -> int:
    """Numbers a u32 counter skipped (as the recorder counts them: a backwards jump is a reset)."""
    if len(counter) < 2:
        return 0
    step = np.diff(counter.astype(np.int64)) % (1 << 32)
    skipped = step - 1
    return int(skipped[(step >= 1) & (step <= (1 << 31))].sum())


def time_gaps(t_ns: np.ndarray, period_ns: float) -> int:
    """Frames missing between timestamps more than 1.5 periods apart (for streams with no counter)."""
    if len(t_ns) < 2:
        return 0
    step = np.diff(t_ns.astype(np.float64))
    big = step > 1.5 * period_ns
    return int(np.rint(step[big] / period_ns).sum() - big.sum())


def audio_gaps(device_ns: np.ndarray, frames: np.ndarray, samplerate: float) -> int:
    """Samples lost between blocks: the device clock (its sample counter) jumping past a block's end."""
    if len(device_ns) < 2:
        return 0
    period = 1e9 / samplerate
    expected = device_ns[:-1] + np.rint(frames[:-1] * period).astype(np.int64)
    gap = (device_ns[1:] - expected).astype(np.float64)
    return int(np.rint(gap[gap > period / 2] / period).sum())


# --- small helpers ------------------------------------------------------------------------------

def _clock_domain(spec: dict[str, Any], old: dict[str, Any]) -> str:
    """Where a stream's device_ns came from (see retime): what the device described, else from its driver."""
    described = (old.get("device") or {}).get("clock") if isinstance(old.get("device"), dict) else None
    if described in ("device", "host", "arrival", "roundtrip"):
        return described
    if spec["kind"] == "sync":
        return "roundtrip"
    source = str(spec.get("source", ""))
    if spec["kind"] == "camera" and spec["driver"] == "ffmpeg":
        return "host" if source.startswith("/dev/video") else "device"
    if spec["kind"] == "camera" and spec["driver"] == "opencv":
        is_device = source.strip().isdigit() or isinstance(spec.get("source"), int) or "://" in source
        return "host" if is_device else "device"
    return "device"


def _open_in_process(take: Path) -> int | None:
    """A process (other than this one) holding a file of the take open, found through /proc (Linux)."""
    prefix = str(take.resolve()) + os.sep
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return None
    for pid in pids:
        if pid == os.getpid():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(prefix):
                    return pid
            except OSError:
                continue
    return None


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _one_line(e: BaseException | str) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _reason(e: BaseException) -> str:
    """A fault's reason: our own messages as they are, anything else with its type (it is unexpected)."""
    if isinstance(e, (_StreamFault, ImprovcapError)):
        return _one_line(e)
    return f"{type(e).__name__}: {_one_line(e)}"


__all__ = ["repair_take", "load_manifest", "torn_tail", "rewrite_csv", "scan_mkv", "ebml_torn", "remux_mkv",
           "cut_wav", "keep_original", "counter_gaps", "time_gaps", "audio_gaps"]

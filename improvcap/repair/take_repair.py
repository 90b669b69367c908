"""One take under repair: its streams, files and actions; the order of the repair (see improvcap.repair)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ImprovcapError
from ..rig import ltc_source
from ..take.atomic import Folder, is_temporary
from ..take.ixml import stamp_take
from ..take.layout import EVENTS, LAYOUTS, LSL_KINDS, is_ingested, ltc_file, media_file, nominal_rate, table_file
from ..take.refit import controller_clock, refit_stream, retime_triggered
from ..take.tables import read_table, stream_table
from ..writers.ltc_table import decode_take
from .counting import audio_gaps, counter_gaps, time_gaps
from .kinds import KIND_REPAIRS, repair_truth_rows
from .record import write_manifest
from .stream import RepairStream, StreamFault, clock_domain, one_line, reason
from .surgery import rewrite_csv, torn_tail


class TakeRepair:
    def __init__(self, take: Path, manifest: dict[str, Any]) -> None:
        self.take = take
        self.manifest = manifest
        self.actions: list[str] = []
        previous = manifest.get("repair")
        self.previous: dict[str, Any] | None = previous if isinstance(previous, dict) else None
        self.streams = [RepairStream(s["name"], s["kind"], s) for s in manifest["rig"]["streams"] if not is_ingested(s)]
        # files brought in after the take (improvcap ingest) were written whole: kept as they were aligned
        summaries = manifest.get("streams")
        old = summaries if isinstance(summaries, dict) else {}
        self.ingested = {
            s["name"]: old[s["name"]]
            for s in manifest["rig"]["streams"]
            if is_ingested(s) and isinstance(old.get(s["name"]), dict)
        }
        # whether the recorder stopped this take itself (complete, perhaps repaired on request since)
        self.stopped = "complete" in [manifest["status"], *(r.get("from_status") for r in self.previous_records())]

    def run(self) -> dict[str, Any]:
        self._remove_temporaries()
        for stream in self.streams:
            try:
                self._check_files(stream)
                KIND_REPAIRS[stream.kind](self, stream)
            except Exception as e:  # one stream's damage must not stop the repair of the others
                stream.fault = reason(e)
                self.actions.append(f"{stream.name}: left as found: {stream.fault}")
        events = self.take / EVENTS
        if events.is_file() and not events.is_symlink():
            try:
                self.drop_torn_rows(events, None)
            except (ImprovcapError, OSError, ValueError) as e:
                self.actions.append(f"{EVENTS}: left as found: {one_line(e)}")
        repair_truth_rows(self)
        self.refit()
        self.mark_media()
        return write_manifest(self)

    def mark_media(self) -> None:
        """What the stop does after the final fit: the take jam-synced to its LTC again (`[rig] timecode`),
        from the repaired audio, and the WAVs' iXML told the take's notes and circle."""
        source = ltc_source(self.manifest["rig"].get("timecode"))
        healthy = {s.name for s in self.streams if s.fault is None}
        if source is not None and source[0] in healthy:
            try:
                with Folder(self.take, follow=False) as folder:
                    folder.unlink(ltc_file(source[0]))  # derived from the audio: decoded anew
                    entry = decode_take(self.take, self.manifest, *source, folder=folder)
                self.actions.append(
                    f"{source[0]}: {entry['frames']} LTC frames decoded"
                    + ("" if entry.get("t0_s") is not None else ": no LTC, the take keeps the PC's clock")
                )
            except Exception as e:
                self.actions.append(f"{source[0]}: LTC not read: {reason(e)}")
        view = {**self.manifest, "streams": {s.name: {"kind": s.kind} for s in self.streams if s.name in healthy}}
        try:
            with Folder(self.take, follow=False) as folder:
                stamp_take(self.take, view, folder)
            self.manifest["circled"] = view["circled"]
        except Exception as e:
            self.actions.append(f"iXML not updated: {reason(e)}")

    def table(self, stream: RepairStream) -> Path:
        return self.take / table_file(stream.name, stream.kind)

    def media(self, stream: RepairStream) -> Path | None:
        return self.take / media_file(stream.name, stream.kind) if LAYOUTS[stream.kind].media else None

    def _check_files(self, stream: RepairStream) -> None:
        for path in (self.table(stream), self.media(stream)):
            if path is None:
                continue
            if path.is_symlink():
                raise StreamFault(f"{path.name} is a symbolic link; repair only touches files of the take itself")
            if not path.is_file():
                raise StreamFault(f"{path.name} is missing")

    def _remove_temporaries(self) -> None:
        """Hidden half-written files of an interrupted stop, atomic write or repair: never the only copy.
        A link under such a name (planted: no writer of this project makes one) is removed, never followed."""
        with Folder(self.take, follow=False) as folder:
            for path in sorted(self.take.iterdir()):
                if not is_temporary(path.name):
                    continue
                if path.is_symlink():
                    folder.unlink(path.name)
                    self.actions.append(
                        f"removed {path.name}, a symbolic link under a temporary file's name (not followed)"
                    )
                elif path.is_file():
                    folder.unlink(path.name)
                    self.actions.append(f"removed the unfinished temporary file {path.name}")

    def drop_torn_rows(self, path: Path, stream: RepairStream | None) -> None:
        end, dropped = torn_tail(path)
        if dropped:
            rewrite_csv(path, end)
            self.actions.append(
                f"{path.name}: dropped a torn last row"
                if dropped == 1
                else f"{path.name}: dropped {dropped} torn last rows"
            )
            if stream is not None:
                stream.rows_dropped += dropped

    def refit(self) -> None:
        """Refit each stream that is not failed; one that cannot be fitted fails alone."""
        t0 = self.manifest["t0_host_ns"]
        onto, why = controller_clock(self.take, self.manifest)  # a capture node's take: its controller's clock
        if why:
            self.actions.append(f"every stream: {why}")
        for stream in self.streams:
            if stream.fault is not None:
                continue
            try:
                stream.entry = refit_stream(
                    self.take,
                    stream.name,
                    stream.kind,
                    clock_domain(stream.spec, self.old(stream)),
                    stream.spec,
                    t0,
                    onto=onto,
                )
                stream.entry.update(self.counts(stream))
            except Exception as e:
                stream.fault = f"its timing could not be rebuilt: {reason(e)}"
                self.actions.append(f"{stream.name}: {stream.fault}")
        healthy = {s.name: {**s.entry, "kind": s.kind} for s in self.streams if s.fault is None}
        for name, why in retime_triggered(self.take, {s.name: s.spec for s in self.streams}, healthy).items():
            self.actions.append(f"{name}: {why}")
        for stream in self.streams:
            if stream.name in healthy:
                stream.entry.update({k: v for k, v in healthy[stream.name].items() if k != "kind"})

    def old(self, stream: RepairStream) -> dict[str, Any]:
        old = self.manifest.get("streams", {}).get(stream.name)
        return old if isinstance(old, dict) else {}

    def counts(self, stream: RepairStream) -> dict[str, Any]:
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
            elif stream.kind in LSL_KINDS:  # no counter: gaps in the sender's own stamps
                dropped = time_gaps(table["device_ns"], 1e9 / rate) if rate > 0 else 0
            else:
                seq = read_table(self.table(stream), columns=("seq",))["seq"]
                dropped = counter_gaps(seq) if seq.any() else time_gaps(table["t_ns"], 1e9 / rate)
            step_ns = int(round(1e9 / rate)) if rate > 0 else 0  # a sync box without trigger pulses
        return {"count": count, "dropped": dropped, "_step_ns": step_ns}

    def previous_records(self) -> list[dict[str, Any]]:
        if not self.previous:
            return []
        older = [r for r in self.previous.get("previous") or [] if isinstance(r, dict)]
        return older + [{k: v for k, v in self.previous.items() if k != "previous"}]

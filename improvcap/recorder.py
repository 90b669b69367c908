"""The shared-clock recorder: devices → bounded queues → writers, per-take folders.

Data flow, one way: each device has a pump thread (device.read → clock mapping → Record) and, while a take
is recording, a writer thread fed by a bounded queue (a full queue is a counted drop, never unbounded
memory). Devices stay open between takes; a take only attaches writers to the running pumps. The recorder
knows no screen: the CLI and the dashboard read `status()` snapshots.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import math
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .clock import ClockDomain, TakeOrigin, now_ns
from .clockfit import LiveClock
from .devices import Device, make_device
from .devices.base import SILENCE_S, FiresSlate, MapsToHost, StreamEnded
from .errors import DeviceError, ImprovcapError, RigError, TakeError
from .records import AudioBlock, Event, Record, Sample, full_scale
from .rig import Rig, StreamSpec, ltc_source
from .take import counters, space
from .take import folder as take_folder
from .take.atomic import Folder, create_take_file, write_json_atomic
from .take.events import append_event
from .take.hashing import file_entries
from .take.ixml import stamp_take, take_document
from .take.layout import EVENT_COLUMNS, EVENTS, FORMAT, MANIFEST, TRUTH_COLUMNS, VERSION, table_file, truth_file, unit
from .take.refit import refit_take
from .take.syncing import FolderSyncer
from .take.timecode import DEFAULT_TIMECODE_FPS, TimecodeRate
from .take.wav import FORMATS as WAV_FORMATS
from .writers import make_writer
from .writers.base import CsvLog, Writer
from .writers.lsl_outlets import LslOutlets, NoOutlets, open_outlets
from .writers.ltc_table import decode_take

READ_TIMEOUT = 0.2
FLUSH_INTERVAL = 0.5  # writers flush at least twice a second (contract: once a second)
STOP_GRACE_S = 0.3  # data stamped before stop may still be in transport when stop is asked
WARMUP_TIMEOUT_S = 10.0
BEHIND_MIN = 5  # frames short of the nominal rate that are still timing, not loss
BEHIND_SHARE = 0.03  # ... or this share of the take's expected frames
BEHIND_FAULT_SHARE = 0.10  # short by more than this share: the device or machine cannot keep up (a fault)
SILENCE_MARGIN_S = 0.5
STALE_NS = 1_000_000_000  # after a silence, data this much later than its device time is left out
DEFAULT_QUEUE_S = 2.0  # writer queue depth in seconds of data, unless the rig says `queue`


class RunState(str, enum.Enum):  # noqa: UP042 - str() stays "RunState.IDLE"; a StrEnum would print the value
    CLOSED = "closed"
    IDLE = "idle"
    RECORDING = "recording"


@dataclass(frozen=True)
class StreamStatus:
    name: str
    kind: str
    driver: str
    rate: float
    """Measured frames (cameras, mocap) or samples (audio) per second over the last two seconds."""
    nominal: float
    count: int
    """Frames, samples or rows in the current (or last) take."""
    dropped: int
    peak_dbfs: tuple[float, ...] = ()
    device: dict[str, int] = field(default_factory=dict)
    fault: str | None = None


@dataclass(frozen=True)
class Status:
    state: RunState
    take: Path | None
    elapsed_s: float
    streams: tuple[StreamStatus, ...]
    disk_free_bytes: int | None
    disk_minutes_left: float | None = None
    """Free room at the rig's data rate (measured by the last take, else estimated from the rig)."""
    disk_low: bool = False
    """Less room left than LOW_FACTOR floors: the technician should make room before the next take."""


def _queue_depth(spec: StreamSpec) -> int:
    """Writer queue depth: the rig's `queue`, else DEFAULT_QUEUE_S seconds of records."""
    if spec["queue"]:
        return int(spec["queue"])
    # audio: ~10 ms blocks; a sync box: its pulses and its round trips
    per_second = 100.0 if spec.kind == "audio" else spec.nominal_rate + spec.get("query_hz", 0.0)
    return max(8, int(DEFAULT_QUEUE_S * per_second))


class _Meter:
    """Live rate and audio peak over a sliding window, updated from the pump thread."""

    def __init__(self, window_ns: int = 2_000_000_000) -> None:
        self.window_ns = window_ns
        self.arrivals: deque[tuple[int, int]] = deque()
        self.peaks: deque[tuple[int, np.ndarray]] = deque()

    def add(self, host_ns: int, count: int, peak: np.ndarray | None = None) -> None:
        self.arrivals.append((host_ns, count))
        while self.arrivals and host_ns - self.arrivals[0][0] > self.window_ns:
            self.arrivals.popleft()
        if peak is not None:
            self.peaks.append((host_ns, peak))
            while self.peaks and host_ns - self.peaks[0][0] > 1_000_000_000:
                self.peaks.popleft()

    def rate(self) -> float:
        items = list(self.arrivals)
        if len(items) < 2 or items[-1][0] - items[0][0] < self.window_ns // 4:
            return 0.0  # too short a span: start-up bursts would read as absurd rates
        span = (items[-1][0] - items[0][0]) / 1e9
        return sum(c for _, c in items[1:]) / span

    def peak_dbfs(self) -> tuple[float, ...]:
        items = list(self.peaks)
        if not items:
            return ()
        peak = np.max(np.stack([p for _, p in items]), axis=0)
        return tuple(round(20 * math.log10(p), 1) if p > 0 else -math.inf for p in peak)


class _TakeStream:
    """One stream's part of a take: its writer thread, bounded queue and counters."""

    def __init__(
        self,
        spec: StreamSpec,
        open_files: Callable[[], tuple[Writer, CsvLog | None]],
        t0_ns: int,
        depth: int,
        on_event: Callable[[Event], None],
        on_disk_full: Callable[[str], None],
        on_written: Callable[[Record], None] = lambda record: None,
    ) -> None:
        self.spec = spec
        # Files are opened on the writer thread: the take accepts data from t0 on while the encoder and
        # files are still being set up, so no stream starts late.
        self._open_files = open_files
        self.writer: Writer | None = None
        self.truth: CsvLog | None = None
        self.t0_ns = t0_ns
        self.stop_ns: int | None = None
        self.queue: queue.Queue[Record | None] = queue.Queue(depth)
        self.index = 0  # frames/rows queued so far; for audio, samples
        self.written = 0  # of those, handed to the writer without an error
        self.discard = False  # the disk is full: queued records are dropped, the files only closed
        self.received = 0
        self.queue_drops = 0
        self.gaps = 0  # frames/samples the device numbered but never delivered
        self.stale = 0  # frames/samples delivered long after a silence, left out
        self.short = 0  # frames never delivered at the nominal rate (counted at the stop)
        self.first_t_ns: int | None = None
        self.last_t_ns: int | None = None
        self._last_seq: int | None = None
        self._next_device_ns: int | None = None
        self._last_drop_event = 0
        self.failed: str | None = None
        self.first_written_ns: int | None = None  # host time the first record reached the writer's files
        self._on_event = on_event
        self._on_disk_full = on_disk_full
        self._on_written = on_written  # what was written is published (LSL frame times)
        self._thread = threading.Thread(target=self._run, name=f"writer-{spec.name}", daemon=True)
        self._thread.start()

    # pump thread side ---------------------------------------------------------------------------
    def offer(self, sample: Sample, t_host_ns: int) -> bool:
        """Queue one sample mapped to host time `t_host_ns`. False once the take no longer wants data."""
        if t_host_ns < self.t0_ns:
            return True
        if (self.stop_ns is not None and t_host_ns > self.stop_ns) or self.failed or self.discard:
            return False  # a failed writer writes nothing more: neither are its frames counted
        self._count_gaps(sample)
        t_ns = t_host_ns - self.t0_ns
        record = Record(
            self.spec.name,
            self.index,
            t_ns,
            sample.device_ns,
            sample.host_ns - self.t0_ns,
            sample.payload,
            sample.count,
            sample.seq,
            None if sample.true_ns is None else sample.true_ns - self.t0_ns,
        )
        self.received += sample.count
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.queue_drops += sample.count
            if sample.host_ns - self._last_drop_event > 1_000_000_000:
                self._last_drop_event = sample.host_ns
                self._on_event(
                    Event(t_ns, "drop", self.spec.name, f"writer queue full; {self.queue_drops} dropped so far")
                )
            return True
        self.index += sample.count
        if self.first_t_ns is None:
            self.first_t_ns = t_ns
        self.last_t_ns = t_ns
        return True

    def _count_gaps(self, sample: Sample) -> None:
        if sample.seq is not None:
            # counters wrap (mocap frames carry a u32); a step back is a reset, not a loss
            if self._last_seq is not None:
                self.gaps += counters.skipped(counters.step(self._last_seq, sample.seq))
            self._last_seq = sample.seq
        elif self.spec.kind == "audio":
            # audio device time is the sample counter: a jump is a lost block
            period = 1e9 / self.spec["samplerate"]
            if self._next_device_ns is not None and sample.device_ns - self._next_device_ns > period / 2:
                self.gaps += round((sample.device_ns - self._next_device_ns) / period)
            self._next_device_ns = sample.device_ns + round(sample.count * period)

    # writer thread side -------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self.writer, self.truth = self._open_files()
        except Exception as e:
            self._fail(f"cannot open its files: {type(e).__name__}: {e}", 0)
        last_flush = time.monotonic()
        while True:
            try:
                record = self.queue.get(timeout=FLUSH_INTERVAL)
            except queue.Empty:
                record = False  # type: ignore[assignment]
            if record is None:
                break
            if self.failed is None and not (record and self.discard):
                try:
                    if record:
                        assert self.writer is not None
                        self.writer.write(record)
                        self.written += record.count
                        self._on_written(record)
                        if self.first_written_ns is None:
                            self.first_written_ns = now_ns()
                        if self.truth is not None and record.true_ns is not None:
                            self.truth.row((record.index, record.true_ns, record.true_ns + self.t0_ns))
                    if time.monotonic() - last_flush >= FLUSH_INTERVAL and self.writer is not None:
                        self.writer.flush()
                        if self.truth is not None:
                            self.truth.flush()
                        last_flush = time.monotonic()
                except Exception as e:  # a failing writer marks the take; the other streams go on
                    self._fail(f"writer failed: {type(e).__name__}: {e}", record.t_ns if record else 0)
                    if space.is_disk_full(e):  # ... unless the disk is full: then the whole take ends
                        self._on_disk_full(self.spec.name)
        self._close()

    def _fail(self, detail: str, t_ns: int) -> None:
        self.failed = detail
        self._on_event(Event(t_ns, "fault", self.spec.name, detail))

    def _close(self) -> None:
        for closer in (self.writer, self.truth):
            if closer is None:
                continue
            try:
                closer.close()
            except Exception as e:
                if self.failed is None:
                    self._fail(f"closing failed: {type(e).__name__}: {e}", self.last_t_ns or 0)
                    if space.is_disk_full(e):
                        self._on_disk_full(self.spec.name)

    def behind(self, stop_ns: int, nominal: float) -> int:
        """Frames or rows a camera or mocap stream never delivered at its nominal rate between t0 and the stop,
        beyond those already counted (a starved or slow device numbers every frame it makes, but makes too
        few); 0 within BEHIND_MIN frames and BEHIND_SHARE of the expected count. Audio devices keep their
        sample clock (a starved one overflows, which the device counts), and a failed stream has its fault."""
        if self.spec.kind == "audio" or nominal <= 0 or self.failed:
            return 0
        expected = nominal * (stop_ns - self.t0_ns) / 1e9
        short = int(expected - (self.received + self.gaps + self.stale))
        return short if short > max(BEHIND_MIN, BEHIND_SHARE * expected) else 0

    def finish(self, timeout: float = 30.0) -> None:
        self.queue.put(None)
        self._thread.join(timeout)

    @property
    def dropped(self) -> int:
        return self.queue_drops + self.gaps + self.stale + self.short

    @property
    def files(self) -> list[Path]:
        writer_files = list(self.writer.files) if self.writer is not None else []
        return writer_files + ([self.truth.path] if self.truth is not None else [])


class _StreamRunner:
    """One open device and its pump thread; lives from open() to close(), across takes."""

    def __init__(self, spec: StreamSpec, on_event: Callable[[Event], None]) -> None:
        self.spec = spec
        self.device: Device = make_device(spec)
        self.clock = LiveClock()
        self.meter = _Meter()
        self.take: _TakeStream | None = None
        self.last_take: _TakeStream | None = None
        self.fault: str | None = None
        self.first_sample = threading.Event()
        self.info: dict[str, Any] = {}
        self._on_event = on_event
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, name=f"pump-{spec.name}", daemon=True)
        nominal = spec.nominal_rate
        self._device_period_ns = 1e9 / nominal if spec.kind == "audio" else 0.0
        self._silence_ns = _silence_ns(spec)
        self._last_data_ns = 0
        self._silent = False
        self._stale_told, self._stale_until = False, 0  # a decoder's flush: only what comes at once after a silence
        # audio: a signal that turns into exact digital zero for SILENCE_S is a source replaced or muted
        self._zero_limit = int(SILENCE_S * nominal) if spec.kind == "audio" else 0
        self._had_signal, self._zeros = False, 0

    def start(self) -> None:
        self.device.start()
        self.info = self.device.describe()
        self.spec = _described_spec(self.spec, self.info)
        self._silence_ns = _silence_ns(self.spec)
        self._thread.start()

    @property
    def domain(self) -> ClockDomain:
        """Where device_ns comes from (see improvcap.take.refit); a device that does not say has its own clock."""
        return ClockDomain.of(self.info.get("clock"), ClockDomain.DEVICE)

    def _pump(self) -> None:
        device, clock, latency = self.device, self.clock, self.spec.latency_ns
        own_clock, stamped_on_host = self.domain is ClockDomain.DEVICE, self.domain is ClockDomain.HOST
        # a sync box maps its own stamps with the fit of its query round trips, an LSL inlet with liblsl's offsets
        fitted = (
            device.to_host
            if self.domain in (ClockDomain.ROUNDTRIP, ClockDomain.LSL) and isinstance(device, MapsToHost)
            else None
        )
        while not self._stop.is_set():
            try:
                sample = device.read(READ_TIMEOUT)
            except (StreamEnded, DeviceError) as e:
                self._failed(str(e))
                return
            except Exception as e:  # a driver bug must not kill the recorder silently
                self._failed(f"{type(e).__name__}: {e}")
                return
            if sample is None:
                self._watch_silence()
                continue
            quiet = self._silent or (self._last_data_ns and sample.host_ns - self._last_data_ns > STALE_NS)
            if quiet and own_clock and self.spec.kind == "camera" and self._is_stale(sample):
                self._stale(sample)  # held back in the device during its silence: kept out of the take and fit
                continue
            self._heard(sample.host_ns)
            if fitted is not None:
                t_host = fitted(sample.device_ns)
            elif own_clock:
                # Audio blocks arrive after their last sample: pair the arrival with the block's end.
                clock.observe(self._block_end(sample), sample.host_ns)
                t_host = clock.to_host(sample.device_ns)
            else:
                t_host = sample.device_ns if stamped_on_host else sample.host_ns
            peak = None
            if isinstance(sample.payload, AudioBlock):
                data = sample.payload.data
                peak = np.max(np.abs(data), axis=0) / full_scale(data)
                self._watch_zeros(bool(peak.any()), sample)
            self.meter.add(sample.host_ns, sample.count, peak)
            self.first_sample.set()
            take = self.take
            if take is not None and not take.offer(sample, t_host - latency):
                self.last_take, self.take = take, None

    def _watch_silence(self) -> None:
        """A fault, once, when a take's stream has had no data for its silence limit."""
        take = self.take
        if take is None or self._silent or not self._silence_ns:
            return
        quiet = now_ns() - max(self._last_data_ns, take.t0_ns)
        if quiet > self._silence_ns:
            self._silent = True
            self._on_event(
                Event(
                    now_ns() - take.t0_ns,
                    "fault",
                    self.spec.name,
                    f"no {unit(self.spec.kind)} for {quiet / 1e9:.1f} s: the device stopped sending "
                    "(switched off, unplugged, its sender gone or hung)",
                )
            )

    def _watch_zeros(self, signal: bool, sample: Sample) -> None:
        """A fault, once, when audio that had a signal turns into exact digital zero for SILENCE_S (a real
        microphone always has a noise floor): PulseAudio, for one, silently moves a recording to another
        source when its own disappears. A note when the signal comes back."""
        take = self.take
        if signal:
            if self._zeros >= self._zero_limit and self._had_signal and take is not None:
                self._on_event(
                    Event(
                        sample.host_ns - take.t0_ns,
                        "note",
                        self.spec.name,
                        f"signal again after {self._zeros / self.spec.nominal_rate:.1f} s of digital silence",
                    )
                )
            self._had_signal, self._zeros = True, 0
            return
        before, self._zeros = self._zeros, self._zeros + sample.count
        if self._had_signal and take is not None and before < self._zero_limit <= self._zeros:
            self._on_event(
                Event(
                    sample.host_ns - take.t0_ns,
                    "fault",
                    self.spec.name,
                    f"digital silence for {SILENCE_S:g} s after a signal: the source was replaced, "
                    "muted or disconnected (every sample exactly zero)",
                )
            )

    def _heard(self, host_ns: int) -> None:
        take = self.take
        if self._silent and take is not None:
            self._on_event(
                Event(
                    host_ns - take.t0_ns,
                    "note",
                    self.spec.name,
                    f"data again after {(host_ns - self._last_data_ns) / 1e9:.1f} s of silence",
                )
            )
        self._silent, self._stale_told, self._stale_until = False, False, 0
        self._last_data_ns = host_ns

    def _block_end(self, sample: Sample) -> int:
        return sample.device_ns + round(sample.count * self._device_period_ns)

    def _is_stale(self, sample: Sample) -> bool:
        """Whether a sample arriving after a silence is far later than the device clock says it was taken:
        what a decoder or driver held during the silence and flushed when it gave up."""
        if self._stale_until and sample.host_ns > self._stale_until:
            return False  # a stream that goes on after a silence is back, whatever its clock did meanwhile
        return self.clock.observations > 0 and sample.host_ns - self.clock.to_host(self._block_end(sample)) > STALE_NS

    def _stale(self, sample: Sample) -> None:
        """Leave a stale sample out (counted as dropped): its timing cannot be trusted, and it would skew the fit."""
        take = self.take
        if take is None:
            return
        take.stale += sample.count
        if not self._stale_told:
            self._stale_told, self._stale_until = True, sample.host_ns + STALE_NS
            self._on_event(
                Event(
                    sample.host_ns - take.t0_ns,
                    "drop",
                    self.spec.name,
                    f"{unit(self.spec.kind)} delivered over {STALE_NS / 1e9:g} s late after the "
                    "silence are left out (stale)",
                )
            )

    def _failed(self, detail: str) -> None:
        self.fault = detail
        take = self.take
        t_ns = now_ns() - take.t0_ns if take is not None else 0
        self._on_event(Event(t_ns, "fault", self.spec.name, detail))

    def stop(self) -> None:
        self._stop.set()
        try:
            self.device.stop()
        finally:
            if self._thread.is_alive():
                self._thread.join(5.0)

    def status(self) -> StreamStatus:
        take = self.take or self.last_take
        return StreamStatus(
            name=self.spec.name,
            kind=self.spec.kind,
            driver=self.spec.driver,
            rate=self.meter.rate(),
            nominal=self.spec.nominal_rate,
            count=take.index if take else 0,
            dropped=take.dropped if take else 0,
            peak_dbfs=self.meter.peak_dbfs(),
            device=self.device.stats(),
            fault=self.fault or (take.failed if take else None),
        )


def local_rig(rig: Rig) -> Rig:
    """The rig as this recorder records it: every stream its own. RigError for streams of capture nodes:
    a recorder is given its own streams only (improvcap.nodes.controller.controller_rig), the nodes theirs."""
    remote = [s for s in rig.streams if s.node is not None]
    if remote:
        raise RigError(
            f"{rig.path}: {', '.join(f'{s.name} (node {s.node})' for s in remote)}: streams of capture "
            "nodes on other PCs are recorded by their nodes (record and session drive them with --key)"
        )
    return rig


def _described_spec(spec: StreamSpec, info: dict[str, Any]) -> StreamSpec:
    """What an open LSL stream said that its rig table left open: a string stream records markers (a take
    kind of its own), a stream given no rate has its sender's."""
    if spec.kind != "lsl":
        return spec
    if info.get("markers"):
        spec = dataclasses.replace(spec, kind="markers")
    if spec.get("rate") is None or spec.nominal_rate <= 0:  # 0: an irregular stream
        spec = dataclasses.replace(spec, settings={**spec.settings, "rate": float(info.get("rate") or 0.0)})
    return spec


def _silence_ns(spec: StreamSpec) -> int:
    """How long a stream may be silent during a take before that is a fault (0: never, a stream that may
    send nothing: a sync box without pulses, an irregular LSL stream): SILENCE_S, or three frame periods,
    a little past it, so that a driver that watches its own transport says it first, in its words; an
    LSL stream's own timeout_s."""
    nominal = spec.nominal_rate
    if nominal <= 0:
        return 0
    if spec.kind == "markers":  # markers come when someone sends one
        return 0
    limit = spec["timeout_s"] if spec.kind == "lsl" else max(SILENCE_S, 3.0 / nominal)
    return int((limit + SILENCE_MARGIN_S) * 1e9)


def _all_or_none(steps: Iterable[Callable[[], None]], what: str) -> None:
    """Run every step; when devices failed, one DeviceError naming each of them (a technician fixing the
    rig should not find the missing devices one run at a time)."""
    failed: list[str] = []
    for step in steps:
        try:
            step()
        except DeviceError as e:
            failed.append(str(e))
    if len(failed) == 1:
        raise DeviceError(failed[0])
    if failed:
        raise DeviceError(f"{what} {len(failed)} devices: " + "; ".join(failed))


def _first_data(runner: _StreamRunner, deadline: float, timeout: float) -> None:
    if not runner.first_sample.wait(max(0.0, deadline - time.monotonic())):
        detail = runner.fault or f"no data within {timeout:g} s"
        raise DeviceError(f"{runner.spec.name}: {runner.spec.kind} delivers no data: {detail}")


class Recorder:
    """Opens a rig's devices once and records any number of takes from them.

    open() and start_take() raise ImprovcapError subclasses before anything is written when a device
    cannot be opened; faults during a take become events and manifest entries instead.
    """

    def __init__(
        self,
        rig: Rig,
        calibration: dict[str, Any] | None = None,
        group: str | None = None,
        min_free_minutes: float = space.DEFAULT_FLOOR_MINUTES,
    ) -> None:
        """`calibration`: the take.json entry of the calibration applied to `rig` (calibrate.store.applied);
        `group`: the studio's group that takes belong to (default: the rig's, else none); `min_free_minutes`:
        a take starts only with room for this many minutes of the rig's data."""
        self.rig = local_rig(rig)
        self.calibration = calibration
        self.group = group or rig.group
        self.state = RunState.CLOSED
        self.settled = threading.Event()  # set once open() has finished, well or not: a start may then be judged
        self.runners: list[_StreamRunner] = []
        self.take_dir: Path | None = None
        self.origin: TakeOrigin | None = None
        self.manifest: dict[str, Any] = {}
        self._events: CsvLog | None = None
        self._event_lock = threading.Lock()
        self._faults: list[dict[str, Any]] = []
        self._syncer: FolderSyncer | None = None
        self._folder: Folder | None = None  # the last take's folder, open from its start to the next (late notes)
        self._takes: list[tuple[_StreamRunner, _TakeStream]] = []
        self.start_request_ns = 0
        self.out: Path | None = None  # where takes go: watched for room before the first take too
        self.room = space.DiskRoom(rig.streams, min_free_minutes)
        self._reserve: space.Reserve | None = None
        self.disk_full: str | None = None  # set when the disk filled during the take being recorded
        self.on_end: Callable[[str], None] | None = None  # told (from a writer thread) when a take must end
        self.outlets: LslOutlets | NoOutlets = NoOutlets()  # the takes published to LSL (while open)

    # devices --------------------------------------------------------------------------------------
    def open(self, warmup_timeout: float = WARMUP_TIMEOUT_S) -> None:
        """Open and start every device, then wait until each has delivered data."""
        try:
            self.outlets = open_outlets(self.rig)  # before the warm-up: consumers attach meanwhile
            self.runners.extend(_StreamRunner(spec, self.event) for spec in self.rig.streams)
            _all_or_none([r.device.open for r in self.runners], "cannot open")
            for runner in self.runners:
                runner.start()
            deadline = time.monotonic() + warmup_timeout
            warmups = [functools.partial(_first_data, r, deadline, warmup_timeout) for r in self.runners]
            _all_or_none(warmups, "no data from")
            # what the devices said the rig left open (an LSL stream's rate) goes into every take's snapshot
            self.rig = dataclasses.replace(self.rig, streams=tuple(r.spec for r in self.runners))
        except BaseException:
            self.close()
            self.settled.set()
            raise
        self.state = RunState.IDLE
        self.settled.set()

    def close(self) -> None:
        if self.state is RunState.RECORDING:
            self.stop_take()
        for runner in self.runners:
            for end in (runner.stop, runner.device.close):
                with contextlib.suppress(Exception):
                    end()
        self.runners = []
        self.outlets.close()
        if self._folder is not None:
            self._folder.close()
        self.state = RunState.CLOSED

    # takes ----------------------------------------------------------------------------------------
    def start_take(
        self,
        out: Path,
        session: str,
        scene: str,
        extra: dict[str, Any] | None = None,
        attachments: dict[str, bytes] | None = None,
        number: int | None = None,
    ) -> Path:
        """Start a take in `<out>/<session>/<scene>_tNNN/` (the next NNN, or `number`). `extra` goes into take.json,
        `attachments` (name → bytes) into the take folder first, so that their hashes land in the manifest."""
        if self.state is not RunState.IDLE:
            raise ImprovcapError(f"cannot start a take while {self.state.value}")
        self.start_request_ns = now_ns()
        self.out = out
        self.room.check(out)
        session_dir = take_folder.session_folder(out, session, self.rig.name, self.group)
        take_dir, number = take_folder.next_take_folder(session_dir, scene, number)
        folder, self._reserve, events = _open_take(take_dir, attachments or {})
        if self._folder is not None:
            self._folder.close()
        self._folder, self._events, self.disk_full = folder, events, None
        origin = TakeOrigin.now()
        self.take_dir, self.origin, self._faults = take_dir, origin, []
        self.manifest = _new_manifest(self.rig, self.calibration, session, scene, number, origin, extra or {})
        # before the streams: their first frames are published as this take's
        self.outlets.started(f"{session_dir.name}/{take_dir.name}", number, origin.t0_ns)
        # Attach first, then write the manifest: every stream takes data from t0 on.
        self._takes = []
        for runner in self.runners:
            runner.last_take = None
            runner.take = self._attach(runner, folder, origin)
            self._takes.append((runner, runner.take))
        self.state = RunState.RECORDING
        write_json_atomic(take_dir / MANIFEST, self.manifest, folder=folder)
        # the take reaches the disk at least once a second
        self._syncer = FolderSyncer(take_dir, dir_fd=folder.fd).start()
        return take_dir

    def _attach(self, runner: _StreamRunner, folder: Folder, origin: TakeOrigin) -> _TakeStream:
        spec, take_dir = runner.spec, folder.path
        info = _writer_info(runner.info, spec, self.manifest, origin, take_dir)
        open_files = functools.partial(_open_files, take_dir, spec, info, folder)
        return _TakeStream(
            spec, open_files, origin.t0_ns, _queue_depth(spec), self.event, self._disk_filled, self.outlets.frame
        )

    def _disk_filled(self, stream: str) -> None:
        """A writer met a full disk: every stream stops writing, the reserve is given back (for the files'
        ends and the manifest) and the take is ended (on_end)."""
        with self._event_lock:
            if self.disk_full is not None or self.state is not RunState.RECORDING or self.origin is None:
                return
            free = space.free_bytes(self.take_dir) if self.take_dir else None
            self.disk_full = f"disk full ({stream} could not write; {space.human_bytes(free or 0)} free)"
            for _, t in self._takes:
                t.discard = True
        if self._reserve is not None:
            self._reserve.release()
        detail = f"{self.disk_full}: every stream stopped; the take keeps what reached the disk"
        self.event(Event(now_ns() - self.origin.t0_ns, "fault", "", detail))
        if self.on_end is not None:
            self.on_end(self.disk_full)

    def slate(self, delay_s: float = 0.0, at_ns: int | None = None) -> int:
        """Slate `delay_s` from now (or at host time `at_ns`: a controller's); returns its t_ns (or host ns when idle).

        With a sync box in the rig, the box fires its LED and beep (what real cameras and microphones see
        and hear) and the fire time it confirms, mapped by its round-trip fit, is the slate's time: in
        events.csv (stream = the box) and for every other device's slate() (demo twins render it).
        Without a box, or when it does not confirm (a fault), every device renders a slate at that host time.
        """
        origin = self.origin.t0_ns if self.state is RunState.RECORDING and self.origin else 0
        t, events = _fire_slate(self.runners, delay_s, origin, at_ns)
        for event in events:
            self.event(event)
        return t

    def annotate(self, kind: str, text: str = "", at_ns: int | None = None) -> dict[str, Any]:
        """A mark, note or circle at host time `at_ns` (default: now): in the take being recorded, else
        appended to the last take (its manifest's hashes are updated; a note or circle goes into its WAVs'
        iXML too). Returns where it went."""
        take_dir = self.take_dir
        if take_dir is None or self.origin is None:
            raise ImprovcapError(f"no take to {kind}: record one first")
        event = Event((now_ns() if at_ns is None else at_ns) - self.origin.t0_ns, kind, "", text)
        if self.state is RunState.RECORDING:
            self.event(event)
            return {"take": str(take_dir.resolve()), "t_ns": event.t_ns, "after_stop": False}
        ixml = (lambda: stamp_take(take_dir, self.manifest, self._folder)) if kind != "mark" else None
        append_event(take_dir, self.manifest, (event.t_ns, event.kind, event.stream, event.detail), self._folder, ixml)
        self.outlets.event(event)
        return {"take": str(take_dir.resolve()), "t_ns": event.t_ns, "after_stop": True}

    def wait_live(self, timeout: float = 2.0) -> dict[str, float | None]:
        """Wait until every stream of the take that sends at a rate has written its first record (markers,
        an irregular stream or a box without pulses may write none for long); ms from the start request."""
        takes = {r.spec.name: r.take or r.last_take for r in self.runners if r.spec.nominal_rate > 0}
        return _first_records_ms(takes, self.start_request_ns, timeout)

    def stop_take(self) -> dict[str, Any]:
        """Finish the take: drain writers, hash files, write the manifest atomically. Returns it. After a full
        disk too (with the reserve given back); whatever fails, the recorder is idle afterwards."""
        if self.state is not RunState.RECORDING or self.take_dir is None or self.origin is None:
            raise ImprovcapError("no take is recording")
        takes, stop_ns = self._takes, self.halt()
        # Data stamped before the stop may still be on its way; give it the transport grace.
        if self.disk_full is None:
            time.sleep(STOP_GRACE_S)
        for runner, t in takes:
            runner.take, runner.last_take = None, t
        try:
            return self._finish(takes, stop_ns)
        finally:
            self.state = RunState.IDLE
            self._takes = []

    def halt(self, at_ns: int | None = None) -> int:
        """No data stamped after `at_ns` (default now; never after an earlier halt: one stop across PCs)."""
        stop_ns = min(now_ns() if at_ns is None else at_ns, now_ns(), *(t.stop_ns or now_ns() for _, t in self._takes))
        for _, t in self._takes:
            t.stop_ns = stop_ns
        return stop_ns

    def _finish(self, takes: list[tuple[_StreamRunner, _TakeStream]], stop_ns: int) -> dict[str, Any]:
        assert self.take_dir is not None and self.origin is not None and self._folder is not None
        folder = self._folder
        for _, t in takes:
            t.finish()
        if self._syncer is not None:
            self._syncer.stop()
        if self._reserve is not None:
            self._reserve.release()  # the room kept back is for what follows
        self._syncer = self._reserve = None
        t_stop = stop_ns - self.origin.t0_ns
        for runner, t in takes:
            if (fault := _shortfall(runner, t, stop_ns)) is not None:
                self.event(Event(t_stop, "fault", runner.spec.name, fault))
        self.manifest["streams"] = {r.spec.name: _stream_summary(self.take_dir, r, t) for r, t in takes}
        for event in _final_refit(folder, self.manifest, t_stop) + _jam_sync(self.rig, folder, self.manifest, t_stop):
            self.event(event)
        self.event(Event(t_stop, "stop", "", ""))
        with self._event_lock:
            events, self._events = self._events, None
        try:
            if events is not None:
                events.close()
        except OSError as e:  # the manifest still lists every fault
            self._faults.append({"t_ns": t_stop, "stream": "", "detail": f"events.csv not closed: {e}"})
        _seal_manifest(self.take_dir, self.manifest, folder, (stop_ns - self.origin.t0_ns) / 1e9, self._faults)
        if self.disk_full is None:
            self.room.measured(self.manifest["files"], self.manifest["duration_s"])
        return self.manifest

    def event(self, event: Event) -> None:
        """Log an event of the take being recorded (a fault goes into the manifest too); published to LSL."""
        if event.kind == "fault":
            self._faults.append({"t_ns": event.t_ns, "stream": event.stream, "detail": event.detail})
        self.outlets.event(event)
        with self._event_lock:
            if self._events is not None:
                try:
                    self._events.row((event.t_ns, event.kind, event.stream, event.detail))
                    self._events.flush()
                except OSError:  # a full disk: the row stays buffered until there is room (and the manifest has faults)
                    pass

    # observation ----------------------------------------------------------------------------------
    def status(self) -> Status:
        elapsed = (now_ns() - self.origin.t0_ns) / 1e9 if self.state is RunState.RECORDING and self.origin else 0.0
        streams = tuple(r.status() for r in self.runners)
        return Status(self.state, self.take_dir, elapsed, streams, *self.room.left(self.take_dir or self.out))


def _open_files(take_dir: Path, spec: StreamSpec, info: dict[str, Any], folder: Folder) -> tuple[Writer, CsvLog | None]:
    """A stream's writer and, for a demo stream whose rig asks for `truth`, its ground-truth table (opened on the
    writer's thread)."""
    truth = CsvLog(take_dir / truth_file(spec.name), TRUTH_COLUMNS, folder=folder) if spec.get("truth") else None
    return make_writer(take_dir, spec, info, folder), truth


def _seal_manifest(
    take_dir: Path, manifest: dict[str, Any], folder: Folder, duration_s: float, faults: list[dict[str, Any]]
) -> None:
    """Recorder._finish's last step: the WAVs' iXML stamped, then take.json complete (duration, faults, files)."""
    stamp_take(take_dir, manifest, folder)  # the WAVs' iXML: the take's notes
    manifest.update(
        {
            "status": "complete",
            "duration_s": round(duration_s, 6),
            "faults": faults,
            "files": file_entries(folder.anchored),
        }
    )
    try:
        write_json_atomic(take_dir / MANIFEST, manifest, folder=folder)
    except OSError as e:
        raise TakeError(
            f"{take_dir}: the take's files are kept but its manifest could not be "
            f"finalised ({e.strerror or e}): make room, then `improvcap repair "
            f"{take_dir}`"
        ) from e


def _stream_summary(take_dir: Path, runner: _StreamRunner, t: _TakeStream) -> dict[str, Any]:
    """What the recorder knows of a stream; refit_take adds the final clock, rates and first/last t_ns."""
    spec = runner.spec
    return {
        "kind": spec.kind,
        "driver": spec.driver,
        "device": {k: v for k, v in runner.info.items() if not k.startswith("_")},
        "files": [str(p.relative_to(take_dir)) for p in t.files],
        "nominal_rate": spec.nominal_rate,
        "measured_rate": None,
        "count": t.written,
        "dropped": t.dropped,
        "dropped_in_queue": t.queue_drops,
        "dropped_by_device": t.gaps,
        "dropped_stale": t.stale,
        "dropped_behind_rate": t.short,
        "device_stats": runner.device.stats(),
        "latency_ms": spec["latency_ms"],
        "clock": {"domain": runner.domain, "live_offset_ns": runner.clock.offset_ns},
        "first_t_ns": t.first_t_ns,
        "last_t_ns": t.last_t_ns,
        "state": "failed" if (runner.fault or t.failed) else "ok",
        "fault": runner.fault or t.failed,
    }


def _shortfall(runner: _StreamRunner, t: _TakeStream, stop_ns: int) -> str | None:
    """Count what a stream never delivered at its nominal rate (t.short); a fault's text past BEHIND_FAULT_SHARE."""
    spec = runner.spec
    t.short = t.behind(stop_ns, spec.nominal_rate)
    expected = spec.nominal_rate * (stop_ns - t.t0_ns) / 1e9
    if t.short <= BEHIND_FAULT_SHARE * expected or runner.fault:
        return None
    why = (
        "the sender paused or went away meanwhile (an LSL sender's own stamps say which)"
        if spec.kind == "lsl"
        else "the device or this machine cannot keep up"
    )
    return f"delivered {t.received} of the {expected:.0f} {unit(spec.kind)} expected at {spec.nominal_rate:g}/s: {why}"


def _fire_slate(
    runners: list[_StreamRunner], delay_s: float, origin_ns: int, at_ns: int | None = None
) -> tuple[int, list[Event]]:
    """Recorder.slate's work: the slate's t (host ns minus origin_ns) and the events it makes. At a given
    `at_ns` (a controller's slate on a node) every device renders it then: a box cannot fire at a time."""
    box = next((r for r in runners if isinstance(r.device, FiresSlate) and r.fault is None), None)
    events = []
    if at_ns is not None:
        for runner in runners:
            runner.device.slate(at_ns)
        return at_ns - origin_ns, [Event(at_ns - origin_ns, "slate", "", "from the controller")]
    if box is not None:
        time.sleep(max(0.0, delay_s))
        delay_s = 0.0
        try:
            assert isinstance(box.device, FiresSlate)
            fire = box.device.fire_slate()
        except DeviceError as e:
            events.append(Event(now_ns() - origin_ns, "fault", box.spec.name, f"slate not fired: {e}"))
        else:
            at = fire.host_ns - box.spec.latency_ns
            for runner in runners:
                if runner is not box:
                    runner.device.slate(at)
            return at - origin_ns, [
                Event(at - origin_ns, "slate", box.spec.name, f"box ticks={fire.ticks} id={fire.id}")
            ]
    at = now_ns() + int(delay_s * 1e9)
    for runner in runners:
        runner.device.slate(at)
    return at - origin_ns, events + [Event(at - origin_ns, "slate", "", "requested")]


def _open_take(take_dir: Path, attachments: dict[str, bytes]) -> tuple[Folder, space.Reserve, CsvLog]:
    """The take folder just made, opened for the take's life (every file of the take is made through it: a
    folder renamed and replaced by a link meanwhile is never written through), with its reserve, its
    attachments and events.csv."""
    folder = Folder(take_dir, follow=False)
    try:
        reserve = space.Reserve.in_new_take(take_dir, folder)
        for name, data in attachments.items():
            with open(create_take_file(take_dir / name, folder), "wb") as fh:
                fh.write(data)
                os.fsync(fh.fileno())
        return folder, reserve, CsvLog(take_dir / EVENTS, EVENT_COLUMNS, folder=folder)
    except BaseException:
        folder.close()
        raise


def _writer_info(
    device: dict[str, Any], spec: StreamSpec, manifest: dict[str, Any], origin: TakeOrigin, take_dir: Path
) -> dict[str, Any]:
    """What a stream's writer is told besides its device's description: the take's timecode, and for a
    WAV its time_reference and iXML."""
    info = {**device, "timecode": manifest["timecode"]}
    if spec.kind == "audio":
        info["time_reference"] = origin.samples_since_midnight(spec["samplerate"])
        info["ixml"] = take_document(
            manifest,
            take_dir.name,
            spec.name,
            int(device.get("channels", spec["channels"])),
            int(round(device.get("samplerate", spec["samplerate"]))),
            WAV_FORMATS[device.get("sample_format", spec["sample_format"])][1],
            info["time_reference"],
            spec["channel_names"],
        )
    return info


def _new_manifest(
    rig: Rig,
    calibration: dict[str, Any] | None,
    session: str,
    scene: str,
    number: int,
    origin: TakeOrigin,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """take.json as a take starts (status recording); its stop fills in the streams, faults and files."""
    master = rig.stream(rig.master) if rig.master else None
    rate = TimecodeRate.of(master["fps"] if master else DEFAULT_TIMECODE_FPS)
    return {
        "format": FORMAT,
        "version": VERSION,
        "status": "recording",
        "session": session,
        "scene": scene,
        "take": number,
        "t0_utc": origin.utc.isoformat(),
        "t0_local": origin.utc.astimezone().isoformat(),
        "t0_host_ns": origin.t0_ns,
        "timecode": rate.timecode(rate.frame_at(origin.seconds_since_midnight())),
        "timecode_rate": rate.label(),
        "duration_s": None,
        "rig": rig.snapshot(),
        "rig_sha256": rig.sha256,
        "calibration": calibration,
        "calibration_sha256": (calibration or {}).get("sha256"),
        "performers": [],
        **extra,
        "streams": {},
        "faults": [],
        "files": {},
    }


def _jam_sync(rig: Rig, folder: Folder, manifest: dict[str, Any], t_stop: int) -> list[Event]:
    """With `[rig] timecode = "ltc:…"`: the LTC decoded into the take and its timecode taken from it (after
    the final fit: the frames get their final t_ns); a fault when no LTC could be read."""
    source = ltc_source(rig.timecode)
    if source is None or source[0] not in manifest["streams"]:
        return []
    try:
        entry = decode_take(folder.path, manifest, *source, folder=folder)
    except Exception as e:  # the take is kept on the PC's clock
        return [Event(t_stop, "fault", source[0], f"LTC not read: {type(e).__name__}: {e}")]
    if entry.get("t0_s") is None:
        return [
            Event(
                t_stop,
                "fault",
                source[0],
                f"no LTC on channel {source[1]} ({entry['frames']} frames "
                f"decoded): the take's timecode is this PC's clock",
            )
        ]
    return []


def _final_refit(folder: Folder, manifest: dict[str, Any], t_stop: int) -> list[Event]:
    """The whole take's clock fit replaces the live estimates in every t_ns column, and sync.csv is built;
    the faults of what could not be done (the raw columns stay on disk: `repair --force` can refit later).
    Tables are read through `folder.anchored` and rewritten in `folder`: the take's own, whatever its name holds now."""
    streams = manifest["streams"]
    rows = max((s["count"] for s in streams.values() if s["kind"] != "audio"), default=0)
    take_dir = folder.anchored
    tables = [take_dir / table_file(n, s["kind"]) for n, s in streams.items()]
    if (short := space.refit_room_short(take_dir, tables, rows, len(streams))) is not None:
        return [
            Event(
                t_stop,
                "fault",
                "",
                f"final clock fit not run: {short}; make room, then `improvcap repair --force {folder.path}`",
            )
        ]
    try:
        failed = refit_take(take_dir, manifest, folder)
    except Exception as e:
        failed = {"": f"{type(e).__name__}: {e}"}
    return [Event(t_stop, "fault", name, f"final clock fit failed: {reason}") for name, reason in failed.items()]


def _first_records_ms(takes: dict[str, _TakeStream | None], since_ns: int, timeout: float) -> dict[str, float | None]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(
        t is not None and t.first_written_ns is None and not t.failed for t in takes.values()
    ):
        time.sleep(0.002)
    return {
        name: None if t is None or t.first_written_ns is None else round((t.first_written_ns - since_ns) / 1e6, 2)
        for name, t in takes.items()
    }

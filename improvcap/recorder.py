"""The shared-clock recorder: devices → bounded queues → writers, per-take folders.

Data flow, one way: each device has a pump thread (device.read → clock mapping → Record) and, while a take
is recording, a writer thread fed by a bounded queue (a full queue is a counted drop, never unbounded
memory). Devices stay open between takes; a take only attaches writers to the running pumps. The recorder
knows no screen: the CLI and the dashboard read `status()` snapshots.
"""
from __future__ import annotations

import enum
import math
import queue
import shutil
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import take as takefmt
from .clock import TakeOrigin, now_ns
from .clockfit import LiveClock
from .devices import Device, make_device
from .devices.base import StreamEnded
from .errors import DeviceError, ImprovcapError
from .records import AudioBlock, Event, Record, Sample, full_scale
from .retime import refit_take
from .rig import Rig, StreamSpec
from .writers import make_writer
from .writers.base import CsvLog, Writer

READ_TIMEOUT = 0.2
FLUSH_INTERVAL = 0.5          # writers flush at least twice a second (contract: once a second)
STOP_GRACE_S = 0.3            # data stamped before stop may still be in transport when stop is asked
WARMUP_TIMEOUT_S = 10.0
DEFAULT_QUEUE_S = 2.0         # writer queue depth in seconds of data, unless the rig says `queue`


class RunState(str, enum.Enum):
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

    def __init__(self, spec: StreamSpec, open_files: Callable[[], tuple[Writer, CsvLog | None]], t0_ns: int,
                 depth: int, on_event: Callable[[Event], None]) -> None:
        self.spec = spec
        # Files are opened on the writer thread: the take accepts data from t0 on while the encoder and
        # files are still being set up, so no stream starts late.
        self._open_files = open_files
        self.writer: Writer | None = None
        self.truth: CsvLog | None = None
        self.t0_ns = t0_ns
        self.stop_ns: int | None = None
        self.queue: queue.Queue[Record | None] = queue.Queue(depth)
        self.index = 0                 # frames/rows written so far; for audio, samples
        self.received = 0
        self.queue_drops = 0
        self.gaps = 0                  # frames/samples the device numbered but never delivered
        self.first_t_ns: int | None = None
        self.last_t_ns: int | None = None
        self._next_seq: int | None = None
        self._next_device_ns: int | None = None
        self._last_drop_event = 0
        self.failed: str | None = None
        self.first_written_ns: int | None = None  # host time the first record reached the writer's files
        self._on_event = on_event
        self._thread = threading.Thread(target=self._run, name=f"writer-{spec.name}", daemon=True)
        self._thread.start()

    # pump thread side ---------------------------------------------------------------------------
    def offer(self, sample: Sample, t_host_ns: int) -> bool:
        """Queue one sample mapped to host time `t_host_ns`. False once the take no longer wants data."""
        if t_host_ns < self.t0_ns:
            return True
        if self.stop_ns is not None and t_host_ns > self.stop_ns:
            return False
        self._count_gaps(sample)
        t_ns = t_host_ns - self.t0_ns
        record = Record(self.spec.name, self.index, t_ns, sample.device_ns, sample.host_ns - self.t0_ns,
                        sample.payload, sample.count, sample.seq,
                        None if sample.true_ns is None else sample.true_ns - self.t0_ns)
        self.received += sample.count
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.queue_drops += sample.count
            if sample.host_ns - self._last_drop_event > 1_000_000_000:
                self._last_drop_event = sample.host_ns
                self._on_event(Event(t_ns, "drop", self.spec.name, f"writer queue full; {self.queue_drops} dropped so far"))
            return True
        self.index += sample.count
        if self.first_t_ns is None:
            self.first_t_ns = t_ns
        self.last_t_ns = t_ns
        return True

    def _count_gaps(self, sample: Sample) -> None:
        if sample.seq is not None:
            # counters wrap (mocap frames carry a u32); a backwards jump is a reset, not a loss
            if self._next_seq is not None:
                ahead = (sample.seq - self._next_seq) % (1 << 32)
                if ahead < (1 << 31):
                    self.gaps += ahead
            self._next_seq = (sample.seq + 1) % (1 << 32)
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
            if self.failed is None:
                try:
                    if record:
                        assert self.writer is not None
                        self.writer.write(record)
                        if self.first_written_ns is None:
                            self.first_written_ns = now_ns()
                        if self.truth is not None and record.true_ns is not None:
                            self.truth.row((record.index, record.true_ns))
                    if time.monotonic() - last_flush >= FLUSH_INTERVAL and self.writer is not None:
                        self.writer.flush()
                        if self.truth is not None:
                            self.truth.flush()
                        last_flush = time.monotonic()
                except Exception as e:  # a failing writer marks the take; the other streams go on
                    self._fail(f"writer failed: {type(e).__name__}: {e}", record.t_ns if record else 0)
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

    def finish(self, timeout: float = 30.0) -> None:
        self.queue.put(None)
        self._thread.join(timeout)

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

    def start(self) -> None:
        self.device.start()
        self.info = self.device.describe()
        self._thread.start()

    @property
    def domain(self) -> str:
        """Where device_ns comes from: the device's own clock, the host clock, or arrival (see retime)."""
        return self.info.get("clock", "device")

    def _pump(self) -> None:
        device, clock, latency = self.device, self.clock, self.spec.latency_ns
        own_clock, stamped_on_host = self.domain == "device", self.domain == "host"
        # a sync box maps its own stamps, with the fit of its query round trips
        fitted = getattr(device, "to_host") if self.domain == "roundtrip" else None
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
                continue
            if fitted is not None:
                t_host = fitted(sample.device_ns)
            elif own_clock:
                # Audio blocks arrive after their last sample: pair the arrival with the block's end.
                clock.observe(sample.device_ns + round(sample.count * self._device_period_ns), sample.host_ns)
                t_host = clock.to_host(sample.device_ns)
            else:
                t_host = sample.device_ns if stamped_on_host else sample.host_ns
            peak = None
            if isinstance(sample.payload, AudioBlock):
                data = sample.payload.data
                peak = np.max(np.abs(data), axis=0) / full_scale(data)
            self.meter.add(sample.host_ns, sample.count, peak)
            self.first_sample.set()
            take = self.take
            if take is not None and not take.offer(sample, t_host - latency):
                self.take = None

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
            name=self.spec.name, kind=self.spec.kind, driver=self.spec.driver, rate=self.meter.rate(),
            nominal=self.spec.nominal_rate, count=take.index if take else 0,
            dropped=(take.queue_drops + take.gaps) if take else 0, peak_dbfs=self.meter.peak_dbfs(),
            device=self.device.stats(), fault=self.fault or (take.failed if take else None),
        )


class Recorder:
    """Opens a rig's devices once and records any number of takes from them.

    open() and start_take() raise ImprovcapError subclasses before anything is written when a device
    cannot be opened; faults during a take become events and manifest entries instead.
    """

    def __init__(self, rig: Rig, calibration: dict[str, Any] | None = None) -> None:
        """`calibration`: the take.json entry of the calibration applied to `rig` (calibrate.store.applied)."""
        self.rig = rig
        self.calibration = calibration
        self.state = RunState.CLOSED
        self.runners: list[_StreamRunner] = []
        self.take_dir: Path | None = None
        self.origin: TakeOrigin | None = None
        self.manifest: dict[str, Any] = {}
        self._events: CsvLog | None = None
        self._event_lock = threading.Lock()
        self._faults: list[dict[str, Any]] = []
        self.start_request_ns = 0

    # devices --------------------------------------------------------------------------------------
    def open(self, warmup_timeout: float = WARMUP_TIMEOUT_S) -> None:
        """Open and start every device, then wait until each has delivered data."""
        try:
            for spec in self.rig.streams:
                runner = _StreamRunner(spec, self._event)
                self.runners.append(runner)
                runner.device.open()
            for runner in self.runners:
                runner.start()
            deadline = time.monotonic() + warmup_timeout
            for runner in self.runners:
                if not runner.first_sample.wait(max(0.0, deadline - time.monotonic())):
                    detail = runner.fault or f"no data within {warmup_timeout:g} s"
                    raise DeviceError(f"{runner.spec.name}: {runner.spec.kind} delivers no data: {detail}")
        except BaseException:
            self.close()
            raise
        self.state = RunState.IDLE

    def close(self) -> None:
        if self.state is RunState.RECORDING:
            self.stop_take()
        for runner in self.runners:
            try:
                runner.stop()
            except Exception:
                pass
            try:
                runner.device.close()
            except Exception:
                pass
        self.runners = []
        self.state = RunState.CLOSED

    # takes ----------------------------------------------------------------------------------------
    def start_take(self, out: Path, session: str, scene: str, extra: dict[str, Any] | None = None,
                   attachments: dict[str, bytes] | None = None) -> Path:
        """Start a take in `<out>/<session>/<scene>_tNNN/`. `extra` goes into take.json; `attachments`
        (name → bytes) are written into the take folder first, so that their hashes land in the manifest."""
        if self.state is not RunState.IDLE:
            raise ImprovcapError(f"cannot start a take while {self.state.value}")
        self.start_request_ns = now_ns()
        session_dir = takefmt.session_folder(out, session, self.rig.name)
        take_dir, number = takefmt.next_take_folder(session_dir, scene)
        for name, data in (attachments or {}).items():
            with open(take_dir / name, "xb") as fh:
                fh.write(data)
        self._events = CsvLog(take_dir / "events.csv", ("t_ns", "kind", "stream", "detail"))
        origin = TakeOrigin.now()
        self.take_dir, self.origin, self._faults = take_dir, origin, []
        master = self.rig.stream(self.rig.master) if self.rig.master else None
        self.manifest = {
            "format": takefmt.FORMAT, "version": takefmt.VERSION, "status": "recording",
            "session": session, "scene": scene, "take": number,
            "t0_utc": origin.utc.isoformat(), "t0_host_ns": origin.t0_ns, "timecode": origin.timecode(master["fps"] if master else 30),
            "duration_s": None, "rig": self.rig.snapshot(), "rig_sha256": self.rig.sha256,
            "calibration": self.calibration,
            "calibration_sha256": (self.calibration or {}).get("sha256"), "performers": [],
            **(extra or {}),
            "streams": {}, "faults": [], "files": {},
        }
        # Attach first, then write the manifest: every stream takes data from t0 on.
        for runner in self.runners:
            runner.last_take = None
            runner.take = self._attach(runner, take_dir, origin)
        self.state = RunState.RECORDING
        takefmt.write_json_atomic(take_dir / takefmt.MANIFEST, self.manifest)
        return take_dir

    def _attach(self, runner: _StreamRunner, take_dir: Path, origin: TakeOrigin) -> _TakeStream:
        spec = runner.spec
        info = {k: v for k, v in runner.info.items()}
        info["timecode"] = self.manifest["timecode"]
        if spec.kind == "audio":
            info["time_reference"] = origin.samples_since_midnight(spec["samplerate"])

        def open_files() -> tuple[Writer, CsvLog | None]:
            truth = CsvLog(take_dir / f"{spec.name}.truth.csv", ("index", "true_t_ns")) if spec.get("truth") else None
            return make_writer(take_dir, spec, info), truth

        return _TakeStream(spec, open_files, origin.t0_ns, _queue_depth(spec), self._event)

    def slate(self, delay_s: float = 0.0) -> int:
        """Slate `delay_s` from now; returns its t_ns (or host ns when idle).

        With a sync box in the rig, the box fires its LED and beep (what real cameras and microphones see
        and hear) and the fire time it confirms, mapped by its round-trip fit, is the slate's time: in
        events.csv (stream = the box) and for every other device's slate() (demo twins render it).
        Without a box, or when it does not confirm (a fault), every device renders a slate at that host time.
        """
        box = next((r for r in self.runners if r.spec.kind == "sync" and r.fault is None), None)
        if box is not None:
            time.sleep(max(0.0, delay_s))
            delay_s = 0.0
            try:
                fire = box.device.fire_slate()  # type: ignore[attr-defined]
            except DeviceError as e:
                t = now_ns() - (self.origin.t0_ns if self.state is RunState.RECORDING and self.origin else 0)
                self._event(Event(t, "fault", box.spec.name, f"slate not fired: {e}"))
            else:
                at = fire.host_ns - box.spec.latency_ns
                for runner in self.runners:
                    if runner is not box:
                        runner.device.slate(at)
                t = at - self.origin.t0_ns if self.state is RunState.RECORDING and self.origin else at
                self._event(Event(t, "slate", box.spec.name, f"box ticks={fire.ticks} id={fire.id}"))
                return t
        at = now_ns() + int(delay_s * 1e9)
        for runner in self.runners:
            runner.device.slate(at)
        t = at - self.origin.t0_ns if self.state is RunState.RECORDING and self.origin else at
        self._event(Event(t, "slate", "", "requested"))
        return t

    def annotate(self, kind: str, text: str = "") -> dict[str, Any]:
        """A mark or note: in the take being recorded, else appended to the last take (its manifest's
        hash of events.csv is updated). Returns where it went."""
        if self.take_dir is None or self.origin is None:
            raise ImprovcapError(f"no take to {kind}: record one first")
        event = Event(now_ns() - self.origin.t0_ns, kind, "", text)
        if self.state is RunState.RECORDING:
            self._event(event)
            return {"take": str(self.take_dir.resolve()), "t_ns": event.t_ns, "after_stop": False}
        events = self.take_dir / "events.csv"
        log = CsvLog(events, header=None)
        log.row((event.t_ns, event.kind, event.stream, event.detail))
        log.close()
        self.manifest["files"]["events.csv"] = takefmt.file_entry(events)
        takefmt.write_json_atomic(self.take_dir / takefmt.MANIFEST, self.manifest)
        return {"take": str(self.take_dir.resolve()), "t_ns": event.t_ns, "after_stop": True}

    def wait_live(self, timeout: float = 2.0) -> dict[str, float | None]:
        """Wait until every stream of the take has written its first record; ms from the start request."""
        deadline = time.monotonic() + timeout
        takes = {r.spec.name: r.take or r.last_take for r in self.runners}
        while time.monotonic() < deadline and any(t is not None and t.first_written_ns is None and not t.failed
                                                 for t in takes.values()):
            time.sleep(0.002)
        return {name: None if t is None or t.first_written_ns is None
                else round((t.first_written_ns - self.start_request_ns) / 1e6, 2) for name, t in takes.items()}

    def stop_take(self) -> dict[str, Any]:
        """Finish the take: drain writers, hash files, write the manifest atomically. Returns it."""
        if self.state is not RunState.RECORDING or self.take_dir is None or self.origin is None:
            raise ImprovcapError("no take is recording")
        stop_ns = now_ns()
        takes = [(r, r.take) for r in self.runners if r.take is not None]
        for _, t in takes:
            t.stop_ns = stop_ns
        # Data stamped before the stop may still be on its way; give it the transport grace.
        time.sleep(STOP_GRACE_S)
        for runner, t in takes:
            runner.take = None
            runner.last_take = t
        for _, t in takes:
            t.finish()
        self.manifest["streams"] = {runner.spec.name: self._stream_summary(runner, t) for runner, t in takes}
        try:
            # the whole take's clock fit replaces the live estimates in every t_ns column; sync.csv
            failed = refit_take(self.take_dir, self.manifest)
        except Exception as e:  # the raw columns are on disk: `repair` can refit later
            failed = {"": f"{type(e).__name__}: {e}"}
        for name, reason in failed.items():
            self._event(Event(stop_ns - self.origin.t0_ns, "fault", name, f"final clock fit failed: {reason}"))
        self._event(Event(stop_ns - self.origin.t0_ns, "stop", "", ""))
        assert self._events is not None
        with self._event_lock:
            self._events.close()
            self._events = None
        self.manifest.update({
            "status": "complete", "duration_s": round((stop_ns - self.origin.t0_ns) / 1e9, 6),
            "faults": self._faults, "files": takefmt.file_entries(self.take_dir),
        })
        takefmt.write_json_atomic(self.take_dir / takefmt.MANIFEST, self.manifest)
        self.state = RunState.IDLE
        return self.manifest

    def _stream_summary(self, runner: _StreamRunner, t: _TakeStream) -> dict[str, Any]:
        """What the recorder knows of a stream; refit_take adds the final clock, rates and first/last t_ns."""
        spec = runner.spec
        return {
            "kind": spec.kind, "driver": spec.driver,
            "device": {k: v for k, v in runner.info.items() if not k.startswith("_")},
            "files": [str(p.relative_to(self.take_dir)) for p in t.files if self.take_dir],
            "nominal_rate": spec.nominal_rate, "measured_rate": None,
            "count": t.index, "dropped": t.queue_drops + t.gaps,
            "dropped_in_queue": t.queue_drops, "dropped_by_device": t.gaps,
            "device_stats": runner.device.stats(),
            "latency_ms": spec["latency_ms"],
            "clock": {"domain": runner.domain, "live_offset_ns": runner.clock.offset_ns},
            "first_t_ns": t.first_t_ns, "last_t_ns": t.last_t_ns,
            "state": "failed" if (runner.fault or t.failed) else "ok",
            "fault": runner.fault or t.failed,
        }

    def _event(self, event: Event) -> None:
        if event.kind == "fault":
            self._faults.append({"t_ns": event.t_ns, "stream": event.stream, "detail": event.detail})
        with self._event_lock:
            if self._events is not None:
                self._events.row((event.t_ns, event.kind, event.stream, event.detail))
                self._events.flush()

    # observation ----------------------------------------------------------------------------------
    def status(self) -> Status:
        elapsed = (now_ns() - self.origin.t0_ns) / 1e9 if self.state is RunState.RECORDING and self.origin else 0.0
        try:
            free = shutil.disk_usage(self.take_dir).free if self.take_dir else None
        except OSError:
            free = None
        return Status(self.state, self.take_dir, elapsed, tuple(r.status() for r in self.runners), free)

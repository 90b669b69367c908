"""Verifying takes (`improvcap verify`): integrity, drops, drift, sync and consent, reading only.

`verify_take` never writes: every file is opened read-only, nothing is created in or next to a take, and
no function that rewrites a take (refit_take, build_sync) is called; expected values such as sync.csv are
recomputed in memory. Symlinks are never followed and only regular files are opened, so a hostile take
cannot make verify read outside it or block on a FIFO. Any exception inside a check becomes a FAIL reason.

Verdict rules (every reason is kept, FAIL ones first; the verdict is the worst of them):
- FAIL: take.json unreadable, not an object, too large, another format or an unknown version; status
  `recording`/`interrupted` (run `improvcap repair`) or unknown; a listed file missing, not a regular file,
  of another size or sha256; a listed path that is absolute or has `..`; a symlink or special file
  anywhere in the take; an unlisted .mkv/.wav/.csv; a fault recorded during the take; video packets,
  frames.csv rows and the manifest count disagreeing, or frames.csv pts not the packets' pts; timestamps
  not strictly increasing; a WAV whose header and data disagree (truncated), or whose frames disagree
  with blocks.csv or the manifest; mocap rows not the manifest count; a device clock drifting beyond
  `max_drift_ppm` or with no fit; a slate onset outside its window (video: one frame period after the
  slate, −1 ms … period + 1 ms; audio: ±`slate_tolerance_ms`; mocap: −tolerance … row period +
  tolerance); sync.csv not what the timestamps give; performers.json missing or not the canonical record
  of take.json's performers (or its sha256 not `performers_sha256`); no performers with
  `require_consent`; a performer recorded as revoked.
- WARN: status `repaired` (the loss stated from the repair notes); dropped frames, samples or rows (with
  the manifest's count and what the timestamps/counters show: a disagreement between the two is a WARN
  too, since the media themselves are intact when rows = packets and the hashes match, and gaps at the
  very start or end of a stream, or arrival-stamped jitter, legitimately make them differ); a foreign
  non-media file; residual p99 of the clock fit above `max_residual_ms` (these are arrival delays above
  the fitted envelope: transport jitter, not time error); clock resets; CRC or parse errors on a serial
  line; a measured rate more than RATE_TOLERANCE off nominal; a slate not found in a stream's media; no
  slates at all; start or end skew between streams above `max_skew_ms`; no performers.

Figures in the result are JSON-ready (no NaN): times in ms or s, drift in ppm, and per stream compact
series for plots (at most PLOT_POINTS points, the maximum of each bucket so that gaps stay visible).
"""
from __future__ import annotations

import json
import multiprocessing
import os
import queue as _queue
import stat
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .errors import UsageError
from .take import MANIFEST
from .takecheck import MAX_MANIFEST_BYTES, PLOT_POINTS, PROGRESS_EVERY, TakeCheck, count_packets, hash_file

__all__ = ["PLOT_POINTS", "PROGRESS_EVERY", "Limits", "count_packets", "find_takes", "hash_file", "manifest_bytes",
           "summary_rows", "verify_paths", "verify_take"]


@dataclass(frozen=True)
class Limits:
    """What a take must stay within (the CLI's options)."""

    max_drift_ppm: float = 500.0
    max_residual_ms: float = 100.0
    slate_tolerance_ms: float = 2.0
    max_skew_ms: float = 100.0
    require_consent: bool = False


# --- finding takes ------------------------------------------------------------------------------------

def find_takes(paths: Sequence[Path]) -> list[Path]:
    """Every folder holding a take.json under `paths` (a path may be a take itself), sorted.

    Symlinked folders met on the way are not followed (a path named on the command line is).
    """
    found: set[Path] = set()
    for path in map(Path, paths):
        if not path.exists():
            raise UsageError(f"{path}: no such file or folder")
        if path.is_file():
            if path.name != MANIFEST:
                raise UsageError(f"{path}: not a take folder (name a folder, or a take's {MANIFEST})")
            found.add(path.parent)
            continue
        for folder, _dirs, files in os.walk(path, followlinks=False):
            if MANIFEST in files:
                found.add(Path(folder))
    return sorted(found)


def manifest_bytes(take: Path) -> int:
    """The bytes a take's manifest lists (what verifying it will hash); 0 when it cannot tell."""
    try:
        path = Path(take) / MANIFEST
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_MANIFEST_BYTES:
            return 0
        files = json.loads(path.read_bytes()).get("files")
        sizes = [e.get("bytes") for e in files.values() if isinstance(e, dict)]
        return sum(n for n in sizes if isinstance(n, int) and not isinstance(n, bool) and n > 0)
    except Exception:
        return 0


def verify_take(take: Path, limits: Limits = Limits(), *, on_bytes: Callable[[int], None] | None = None,
                ) -> dict[str, Any]:
    """Check one take folder, reading only; never raises on what it finds (see the module docstring).

    `on_bytes(bytes_hashed_so_far)` is called from a worker thread every PROGRESS_EVERY bytes and at the end.
    """
    check = TakeCheck(Path(take), limits, on_bytes)
    try:
        return check.run()
    except Exception as e:  # a check outside the guarded ones: still a verdict, never a traceback
        return check.failure(f"verify failed: {type(e).__name__}: {e}")


# --- many takes ---------------------------------------------------------------------------------------

_progress_queue: Any = None


def _init_worker(q: Any) -> None:
    global _progress_queue
    _progress_queue = q


def _verify_in_worker(index: int, take: Path, limits: Limits) -> dict[str, Any]:
    """Process-pool entry point (top level: works with the spawn start method)."""
    q = _progress_queue
    return verify_take(take, limits, on_bytes=None if q is None else (lambda n: q.put((index, n))))


def _ready() -> None:
    """A first task that makes a worker process start (and import) before there is work for it."""


def _crashed(take: Path, error: BaseException) -> dict[str, Any]:
    return TakeCheck(Path(take), Limits(), None).failure(f"verify crashed: {type(error).__name__}: {error}")


def verify_paths(paths: Sequence[Path], limits: Limits = Limits(), jobs: int = 1,
                 progress: Callable[[int, int, int, int], None] | None = None) -> list[dict[str, Any]]:
    """Verify every take under `paths`; results in take order (find_takes).

    `jobs` takes are verified at a time: one on a thread of this process (it starts at once) and the others
    in `jobs - 1` worker processes (spawned: safe whatever threads the caller runs), each handed the next
    take as it frees up. `progress(done_takes, total_takes, bytes_done, bytes_total)` is called from the
    caller's thread, at every finished take and while hashing; bytes_total is what the manifests list.
    """
    takes = find_takes(paths)
    processes = max(0, min(int(jobs), len(takes)) - 1)
    remote: ProcessPoolExecutor | None = None
    remote_q: Any = None
    if processes:
        # started first: the workers import while the manifests are read
        ctx = multiprocessing.get_context("spawn")
        remote_q = ctx.Queue()
        remote = ProcessPoolExecutor(processes, mp_context=ctx, initializer=_init_worker, initargs=(remote_q,))
        for _ in range(processes):
            remote.submit(_ready)
    local = ThreadPoolExecutor(1, thread_name_prefix="improvcap-verify")
    local_q: Any = _queue.SimpleQueue()
    try:
        sizes = [manifest_bytes(t) for t in takes]
        total_bytes = sum(sizes)
        results: list[dict[str, Any] | None] = [None] * len(takes)
        partial: dict[int, int] = {}

        def report(done: int) -> None:
            if progress is not None:
                finished = sum(sizes[i] for i, r in enumerate(results) if r is not None)
                running = sum(min(n, sizes[i]) for i, n in partial.items() if results[i] is None)
                progress(done, len(takes), finished + running, total_bytes)

        report(0)
        running: dict[Future, tuple[int, bool]] = {}   # future -> (take index, on a worker process)
        next_take = done = 0
        while done < len(takes):
            # keep every slot busy: one local, `processes` remote
            while next_take < len(takes) and sum(not r for _, r in running.values()) < 1:
                i = next_take
                running[local.submit(verify_take, takes[i], limits,
                                     on_bytes=lambda n, i=i: local_q.put((i, n)))] = (i, False)
                next_take += 1
            while remote is not None and next_take < len(takes) and sum(r for _, r in running.values()) < processes:
                running[remote.submit(_verify_in_worker, next_take, takes[next_take], limits)] = (next_take, True)
                next_take += 1
            finished, _ = wait(running, timeout=0.2, return_when=FIRST_COMPLETED)
            for q in (local_q, remote_q):
                while q is not None:
                    try:
                        i, n = q.get_nowait()
                    except (_queue.Empty, OSError, ValueError):
                        break
                    partial[i] = n
            for fut in finished:
                i, _ = running.pop(fut)
                try:
                    results[i] = fut.result()
                except Exception as e:  # a worker process died (out of memory, killed)
                    results[i] = _crashed(takes[i], e)
                done += 1
            report(done)
    finally:
        local.shutdown(wait=True, cancel_futures=True)
        if remote is not None:
            remote.shutdown(wait=True, cancel_futures=True)
            remote_q.close()
            remote_q.join_thread()
    return [r for r in results if r is not None]


# --- the CLI's table ----------------------------------------------------------------------------------

def summary_rows(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per take for the CLI's table: take, duration_s, streams, drops, worst drift (ppm), worst
    slate offset (ms), verdict, reasons. `drops` is text per stream in its unit ("" when none)."""
    rows = []
    for r in results:
        streams = r.get("streams") or {}
        drops = ", ".join(f"{n} {s['drops']}" + (" samples" if s.get("kind") == "audio" else "")
                          for n, s in streams.items() if s.get("drops"))
        rows.append({
            "take": r.get("take"), "duration_s": r.get("duration_s"), "streams": len(streams),
            "drops": drops, "worst_drift_ppm": r.get("worst_drift_ppm"),
            "worst_slate_offset_ms": r.get("worst_slate_offset_ms"), "verdict": r.get("verdict"),
            "reasons": list(r.get("reasons") or []),
        })
    return rows

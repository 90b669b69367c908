"""Verifying many takes: finding them, hashing every file of a day from one pool, checks in worker processes.

See improvcap.verify for the verdict rules.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import queue as _queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..take.hashing import hash_file
from ..take.layout import MANIFEST
from .files import TakeFiles
from .limits import Limits

# --- finding takes ------------------------------------------------------------------------------------


def find_takes(paths: Sequence[Path]) -> list[Path]:
    """Every folder holding a take.json under `paths` (a path may be a take itself), sorted.

    Symlinked folders met on the way are not followed (a path named on the command line is).
    """
    found: dict[tuple[int, int], Path] = {}  # by device and inode: a take named twice is one take

    def add(folder: Path) -> None:
        try:
            st = folder.stat()
        except OSError:
            return
        found.setdefault((st.st_dev, st.st_ino), folder)

    for path in map(Path, paths):
        if not path.exists():
            raise UsageError(f"{path}: no such file or folder")
        if path.is_file():
            if path.name != MANIFEST:
                raise UsageError(f"{path}: not a take folder (name a folder, or a take's {MANIFEST})")
            add(path.parent)
            continue
        for folder, _dirs, files in os.walk(path, followlinks=False):
            if MANIFEST in files:
                add(Path(folder))
    return sorted(found.values())


def verify_take(
    take: Path, limits: Limits = Limits(), *, on_bytes: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """Check one take folder, reading only; never raises on what it finds (see the module docstring).

    `on_bytes(bytes_hashed_so_far)` is called from a worker thread every PROGRESS_EVERY bytes and at the end.
    """
    from .take_check import TakeCheck

    check = TakeCheck(Path(take), limits, on_bytes)
    try:
        return check.run()
    except Exception as e:  # a check outside the guarded ones: still a verdict, never a traceback
        return check.failure(f"verify failed: {type(e).__name__}: {e}")


# --- many takes ---------------------------------------------------------------------------------------


def _check_without_hashes(take: Path, limits: Limits) -> dict[str, Any]:
    """Everything but hashing (verify_paths hashes every take's files from one pool). Top level: it runs in
    worker processes, forked or spawned."""
    from .take_check import TakeCheck  # numpy and PyAV: imported while the first files are hashed

    check = TakeCheck(Path(take), limits, hashes=False)
    try:
        return check.run()
    except Exception as e:
        return check.failure(f"verify failed: {type(e).__name__}: {e}")


def _ready() -> None:
    """A first task that makes a worker process start and import the checks before there is work for it."""
    importlib.import_module("improvcap.verify.take_check")


def _crashed(take: Path, error: BaseException) -> dict[str, Any]:
    from .take_check import TakeCheck

    return TakeCheck(Path(take), Limits(), hashes=False).failure(f"verify crashed: {type(error).__name__}: {error}")


class _Hashing:
    """Every listed file of every take hashed by `threads` threads of this process, largest file first
    (`in_take_order`: take by take, each take's largest first).

    hashlib and file reads release the GIL, so the threads run on all cores; one queue over all takes keeps
    every core busy to the end (per-take hashing would leave one idle while the last big take finishes).
    A caller that uses each take's result as it comes (export) wants them in take order instead.
    """

    def __init__(
        self, plans: Sequence[TakeFiles], threads: int, on_hashed: Callable[[int], None], in_take_order: bool = False
    ) -> None:
        self.plans = plans
        self.files = [plan.hash_plan() for plan in plans]
        self.pending = [len(files) for files in self.files]
        self.outcomes: list[dict[str, tuple[str, int] | BaseException]] = [{} for _ in plans]
        self.total = sum(size for files in self.files for _, size, _ in files)
        self.read = 0
        self.on_hashed = on_hashed  # called with a take's index after each of its files
        self._lock = threading.Lock()
        jobs = sorted(
            ((size, i, rel) for i, files in enumerate(self.files) for rel, size, _ in files),
            key=(lambda job: (job[1], -job[0])) if in_take_order else (lambda job: -job[0]),
        )
        self.pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="improvcap-hash")
        for _, i, rel in jobs:
            self.pool.submit(self._hash, i, rel)

    def _count(self, n: int) -> None:
        with self._lock:
            self.read += n

    def _hash(self, i: int, rel: str) -> None:
        try:
            outcome: tuple[str, int] | BaseException = hash_file(self.plans[i].take / rel, self._count)
        except Exception as e:  # a reason of that take (the file changed or went away since the walk)
            outcome = e
        with self._lock:
            self.outcomes[i][rel] = outcome
            self.pending[i] -= 1
        self.on_hashed(i)

    def done(self, i: int) -> bool:
        return self.pending[i] == 0

    def merged(self, i: int, checked: dict[str, Any]) -> dict[str, Any]:
        """Take i's result: `checked` (everything but hashing) with its hashing reasons, in file order."""
        plan = self.plans[i]
        for rel, size, digest in self.files[i]:
            plan.hashed(rel, size, digest, self.outcomes[i][rel])
        self.outcomes[i].clear()
        return plan.with_hashes(checked)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def verify_paths(
    paths: Sequence[Path],
    limits: Limits = Limits(),
    jobs: int = 1,
    progress: Callable[[int, int, int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Verify every take under `paths`; results in take order (find_takes). See iter_verified."""
    return list(iter_verified(paths, limits, jobs, progress))


def iter_verified(
    paths: Sequence[Path],
    limits: Limits = Limits(),
    jobs: int = 1,
    progress: Callable[[int, int, int, int], None] | None = None,
    *,
    in_take_order: bool = False,
) -> Iterator[dict[str, Any]]:
    """Verify every take under `paths`, yielding results in take order (find_takes) as they are ready.

    `jobs` threads of this process hash every file from one queue over all takes (_Hashing); the other
    checks of the takes run beside them in `jobs - 1` worker processes (forked when this is the only thread,
    else spawned), or on one more thread when `jobs` is 1. Checks in this process would slow the hashing
    down: each one holds the GIL that every hashed piece briefly needs. `progress(done_takes, total_takes,
    bytes_hashed, bytes_total)` is called from the caller's thread, at every finished take and while hashing.
    """
    takes = find_takes(paths)
    workers = min(int(jobs) - 1, len(takes))
    checks: Executor
    if workers > 0:
        # Started first, so that the workers import the checks while this process starts hashing. Forked
        # (no new interpreter) only while this is the only thread: a lock held by another thread would stay
        # held in the child. The CLI starts its progress bar (a thread) at the first progress call.
        method = (
            "fork" if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods() else "spawn"
        )
        checks = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method))
        for _ in range(workers):
            checks.submit(_ready)  # forks now (3.11 starts every worker of a fork pool at the first task)
    else:
        checks = ThreadPoolExecutor(1, thread_name_prefix="improvcap-verify")
    hashing: _Hashing | None = None
    events: _queue.SimpleQueue = _queue.SimpleQueue()  # finished checks (futures), hashed files (take index)
    try:
        hashing = _Hashing([TakeFiles(t) for t in takes], jobs, events.put, in_take_order)
        running: dict[Future, int] = {}
        for i, take in enumerate(takes):
            future = checks.submit(_check_without_hashes, take, limits)
            running[future] = i
            future.add_done_callback(events.put)
        checked: dict[int, dict[str, Any]] = {}  # checked, waiting for its files' hashes
        results: list[dict[str, Any] | None] = [None] * len(takes)
        done = given = 0
        if progress is not None:
            progress(0, len(takes), 0, hashing.total)
        while done < len(takes):
            news = []
            try:
                news.append(events.get(timeout=0.2))
                while True:
                    news.append(events.get_nowait())
            except _queue.Empty:
                pass  # none (a progress update only), or all there were
            for event in news:
                if isinstance(event, Future):
                    i = running.pop(event)
                    try:
                        checked[i] = event.result()
                    except Exception as e:  # a worker process died (out of memory, killed)
                        checked[i] = _crashed(takes[i], e)
                else:
                    i = event
                if i in checked and hashing.done(i):
                    results[i] = hashing.merged(i, checked.pop(i))
                    done += 1
            if progress is not None:
                progress(done, len(takes), hashing.read, hashing.total)
            while given < len(takes) and (ready := results[given]) is not None:
                results[given] = None
                given += 1
                yield ready
    finally:
        checks.shutdown(wait=True, cancel_futures=True)
        if hashing is not None:
            hashing.close()


# --- the CLI's table ----------------------------------------------------------------------------------


def summary_rows(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per take for the CLI's table: take, duration_s, streams, drops, worst drift (ppm), worst
    slate offset (ms), verdict, reasons. `drops` is text per stream in its unit ("" when none)."""
    rows = []
    for r in results:
        streams = r.get("streams") or {}
        drops = ", ".join(
            f"{n} {s['drops']}" + (" samples" if s.get("kind") == "audio" else "")
            for n, s in streams.items()
            if s.get("drops")
        )
        rows.append(
            {
                "take": r.get("take"),
                "duration_s": r.get("duration_s"),
                "streams": len(streams),
                "drops": drops,
                "worst_drift_ppm": r.get("worst_drift_ppm"),
                "worst_slate_offset_ms": r.get("worst_slate_offset_ms"),
                "verdict": r.get("verdict"),
                "reasons": list(r.get("reasons") or []),
            }
        )
    return rows

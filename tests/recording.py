"""Recording takes in the test's own process, through the library a command drives (the recorder and
take control), where the command line is not what a test checks.

`with open_rig(rig_file, out, session) as control:` opens the rig's devices once; `record(control, scene,
seconds, ...)` then records one take with them, slated as `improvcap record --slate` slates, and returns its
folder. Keeping the devices open across takes is what a `session` does, and it saves their warm-up per take.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from improvcap.cli import SLATE_LEAD_S, SLATE_TAIL_S
from improvcap.recorder import Recorder
from improvcap.rig import load_rig
from improvcap.session import TakeControl


@contextmanager
def open_rig(rig_file: Path, out: Path, session: str, performers_file: Path | None = None) -> Iterator[TakeControl]:
    """The rig's devices open, for takes into `out/session/` (performers looked up in `performers_file`, else
    the session's performers.toml); every device closed at the end."""
    recorder = Recorder(load_rig(str(rig_file)))
    control = TakeControl(recorder, out, session, "scene", performers_file=performers_file)
    try:
        recorder.open()
        yield control
    finally:
        recorder.close()


def _until(deadline: float) -> None:
    """The take runs until `deadline` (monotonic): its length is what is recorded, not a wait for an event."""
    time.sleep(max(0.0, deadline - time.monotonic()))


def record(control: TakeControl, scene: str, seconds: float, *, slate: bool = False, performers: Sequence[str] = (),
           marks: Sequence[float] = ()) -> Path:
    """One take of `seconds` in `scene`: slated like `record --slate` (SLATE_LEAD_S after the start and
    SLATE_TAIL_S before the end), with a mark `beat <i>` at each of `marks` (s from the start)."""
    started = time.monotonic()
    take = Path(control.start(scene=scene, performers=list(performers))["take"])
    if slate:
        control.slate(SLATE_LEAD_S)
    for i, at in enumerate(marks):
        _until(started + at)
        control.annotate("mark", f"beat {i}")
    _until(started + seconds - (SLATE_TAIL_S if slate else 0.0))
    if slate:
        control.slate(0.0)
        _until(started + seconds)
    control.stop()
    return take

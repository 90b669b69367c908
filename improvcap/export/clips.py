"""Cutting a take into clips on its shared clock: the whole take, windows of SECONDS, or between marks.

A clip is a half-open range [start_ns, end_ns) of t_ns; a stream's rows (frames, blocks, samples) belong
to the clip their t_ns falls in, so consecutive clips share no row and miss none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import UsageError

TAKE, MARKS = "take", "marks"


@dataclass(frozen=True)
class Clip:
    index: int
    start_ns: int
    end_ns: int
    label: str = ""  # --clip marks: the text of the mark that opens the clip

    def as_dict(self) -> dict[str, object]:
        return {
            "index": self.index,
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            **({"label": self.label} if self.label else {}),
        }


def parse_clip(value: str) -> str | float:
    """`--clip`: "take", "marks" or a positive number of seconds."""
    if value in (TAKE, MARKS):
        return value
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise UsageError(f"--clip must be 'take', 'marks' or a positive number of seconds, got {value!r}")
    return seconds


def cut(mode: str | float, span: tuple[int, int], marks: Sequence[tuple[int, str]] = ()) -> list[Clip]:
    """The clips of a take whose rows span [span[0], span[1]). `marks`: (t_ns, text) of its marks."""
    start, end = span
    if end <= start:
        return []
    if mode == TAKE:
        return [Clip(0, start, end)]
    if mode == MARKS:
        ordered = sorted(marks)
        return [Clip(i, a[0], b[0], a[1]) for i, (a, b) in enumerate(zip(ordered, ordered[1:])) if b[0] > a[0]]
    step = int(round(float(mode) * 1e9))
    # windows on the take's clock ([0, S), [S, 2S), ...): the first opens at the first row, the last closes
    # after the last one, so that rows a little before t0 or after the end belong to a clip too
    bounds = [start] + [k * step for k in range(max(start // step, 0) + 1, -(-end // step))] + [end]
    return [Clip(i, a, b) for i, (a, b) in enumerate(zip(bounds, bounds[1:])) if b > a]

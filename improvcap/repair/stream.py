"""One stream under repair, the fault that leaves it as found, and the small readers repair shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..clock import ClockDomain
from ..errors import ImprovcapError
from ..take.layout import LSL_KINDS


class StreamFault(Exception):
    """A stream's files cannot be repaired; the stream is left as found and marked with the reason."""


@dataclass
class RepairStream:
    name: str
    kind: str
    spec: dict[str, Any]
    device: dict[str, Any] = field(default_factory=dict)
    rows_dropped: int = 0  # timing rows dropped: torn, or naming data the media never received
    untimed: int = 0  # frames/samples in the media without a timing row (kept in .orig)
    untimed_end_ns: int | None = None
    originals: list[str] = field(default_factory=list)
    fault: str | None = None
    entry: dict[str, Any] = field(default_factory=dict)


def clock_domain(spec: dict[str, Any], old: dict[str, Any]) -> ClockDomain:
    """Where a stream's device_ns came from (see improvcap.take.refit): what the device described, else from
    its driver."""
    described = (old.get("device") or {}).get("clock") if isinstance(old.get("device"), dict) else None
    if (domain := ClockDomain.named(described)) is not None:
        return domain
    if spec["kind"] == "sync":
        return ClockDomain.ROUNDTRIP
    if spec["kind"] in LSL_KINDS:
        return ClockDomain.LSL
    source = str(spec.get("source", ""))
    if spec["kind"] == "camera" and spec["driver"] == "ffmpeg":
        return ClockDomain.HOST if source.startswith("/dev/video") else ClockDomain.DEVICE
    if spec["kind"] == "camera" and spec["driver"] == "opencv":
        is_device = source.strip().isdigit() or isinstance(spec.get("source"), int) or "://" in source
        return ClockDomain.HOST if is_device else ClockDomain.DEVICE
    return ClockDomain.DEVICE


def positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def one_line(e: BaseException | str) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def reason(e: BaseException) -> str:
    """A fault's reason: our own messages as they are, anything else with its type (it is unexpected)."""
    if isinstance(e, (StreamFault, ImprovcapError)):
        return one_line(e)
    return f"{type(e).__name__}: {one_line(e)}"

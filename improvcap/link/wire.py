"""JSON lines as every socket of improvcap reads them: strict, bounded, one object per line."""

from __future__ import annotations

import json
from typing import Any


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object's members, refused when a key repeats: `{"cmd":"status","cmd":"stop"}` must not stop."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def strict_loads(line: bytes | str) -> Any:
    """JSON with no repeated key in any object; ValueError for anything else (nested too deeply too)."""
    try:
        return json.loads(line, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def canonical(value: Any) -> bytes:
    """The one byte string of a JSON value that a signature covers (sorted keys, no spaces, UTF-8)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def dump_line(value: Any) -> bytes:
    return canonical(value) + b"\n"

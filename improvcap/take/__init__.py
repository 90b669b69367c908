"""The take folder contract (DESIGN sections 3-5) in one home.

- `layout`: file names per stream kind, table columns, units, rate keys, the manifest's format;
- `folder`: session and take folders (safe names, exclusive creation, session.json);
- `atomic`, `hashing`, `manifest`: atomic rewrites, safe reads, sha256 of files, take.json reading;
- `counters`: the wrapping-counter rule;
- `tables`, `timeline`, `events`: the timing tables, audio sample ↔ t_ns, events.csv;
- `sync`: sync.csv, the master-timeline alignment; `refit`: the final clock fit of a take;
- `wav`, `mkv`: the media formats, written and read; `reader`: `open_take`, aligned bundles.

Every other module gets those facts from here. This package's top imports nothing heavy: numpy and PyAV
come with the modules that need them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["open_take"]


def __getattr__(name: str) -> Any:
    if name == "open_take":  # the reader pulls in numpy and PyAV: imported when first used
        from .reader import open_take

        return open_take
    raise AttributeError(f"module 'improvcap.take' has no attribute {name!r}")

"""Reading take.json (DESIGN section 5) safely: a bounded size, no symlink, only a regular file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .hashing import read_small

MAX_MANIFEST_BYTES = 16 << 20  # real manifests are tens of kB; anything this big is not one


def load_json(path: Path, limit: int = MAX_MANIFEST_BYTES) -> Any:
    """The JSON document in `path`. Raises OSError (unreadable, a symlink, not a regular file),
    ValueError (more than `limit` bytes, not UTF-8, not JSON) or RecursionError (nested too deep)."""
    return json.loads(read_small(path, limit).decode("utf-8"))


LOAD_ERRORS = (OSError, ValueError, RecursionError)  # what load_json raises on a bad file

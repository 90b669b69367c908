"""Writers subscribe to one stream's records and stream them to disk (DESIGN section 5)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from ..rig import StreamSpec
from ..take.atomic import Folder
from .base import Writer

# kind -> "module:Class"; imported on use, like the device registry
WRITERS = {
    "camera": "improvcap.writers.video:VideoWriter",
    "audio": "improvcap.writers.audio:AudioWriter",
    "mocap": "improvcap.writers.mocap_csv:MocapWriter",
    "sync": "improvcap.writers.sync_csv:SyncWriter",
    "lsl": "improvcap.writers.lsl_csv:LslWriter",
    "markers": "improvcap.writers.lsl_csv:LslWriter",
}


def make_writer(take_dir: Path, spec: StreamSpec, info: dict[str, Any], folder: Folder | None = None) -> Writer:
    """The writer of `spec`'s kind; `folder`: `take_dir` already open, which every file is made in."""
    module, _, cls = WRITERS[spec.kind].partition(":")
    return getattr(importlib.import_module(module), cls)(take_dir, spec, info, folder=folder)

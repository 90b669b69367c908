"""improvcap: shared-clock capture of cameras, microphones and serial motion capture into take folders."""

from __future__ import annotations

from typing import Any

from .errors import ImprovcapError

__version__ = "0.1.0"
__all__ = ["ImprovcapError", "__version__", "open_take"]


def __getattr__(name: str) -> Any:
    # the reader pulls in numpy and PyAV: imported when first used, so that the CLI starts quickly
    if name == "open_take":
        from .take.reader import open_take

        return open_take
    raise AttributeError(f"module 'improvcap' has no attribute {name!r}")

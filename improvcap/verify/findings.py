"""What verify finds in one take: FAIL and WARN reasons, and the helpers that read untrusted values."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def show(text: Any) -> str:
    """A name from disk, safe to print on one line (control characters and odd bytes escaped)."""
    s = str(text)
    return s if s.isprintable() else ascii(s)


def number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def integer(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def mapping(v: Any) -> dict:
    return v if isinstance(v, dict) else {}


def takes(n: int) -> str:
    """ "1 take", "2 takes": how many takes, in the CLI's lines and the report."""
    return f"{n} take" if n == 1 else f"{n} takes"


class Findings:
    """FAIL and WARN reasons of one take; `check` turns an exception inside into a FAIL reason."""

    def __init__(self, take: Path) -> None:
        self.take = take
        self.items: list[tuple[str, str]] = []

    def fail(self, text: str) -> None:
        self.items.append(("FAIL", text))

    def warn(self, text: str) -> None:
        self.items.append(("WARN", text))

    @contextmanager
    def check(self, what: str) -> Iterator[None]:
        try:
            yield
        except Exception as e:  # bad input of any kind is a reason, never a traceback
            message = str(e) or type(e).__name__
            # paths inside the take are named relative to it, as in every other reason
            message = re.sub(r"(?<![\w./-])" + re.escape(f"{self.take}{os.sep}"), "", message)
            self.fail(f"{what}: {show(message)}")

    @property
    def verdict(self) -> str:
        levels = {level for level, _ in self.items}
        return "FAIL" if "FAIL" in levels else "WARN" if "WARN" in levels else "OK"

    def reasons(self) -> list[str]:
        ordered = [i for i in self.items if i[0] == "FAIL"] + [i for i in self.items if i[0] == "WARN"]
        return [f"{level}: {text}" for level, text in ordered]

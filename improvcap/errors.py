"""One domain exception base; the CLI turns any of these into one line and an exit status."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ImprovcapError(Exception):
    """Base of every error improvcap reports to a user. `exit_code` is the CLI's exit status."""

    exit_code = 2


class RigError(ImprovcapError, ValueError):
    """A rig file is missing, malformed or names impossible values."""


class UsageError(ImprovcapError, ValueError):
    """A command-line argument or path is unusable."""


class DeviceError(ImprovcapError, OSError):
    """A device cannot be opened or has failed."""


class PerformersError(ImprovcapError, ValueError):
    """A performers file is missing or malformed, or a performer cannot be recorded (unknown, revoked, changed form)."""


class TakeError(ImprovcapError, OSError):
    """A take folder cannot be created, written or read."""


class AuthError(ImprovcapError, PermissionError):
    """A message between a controller and a capture node is not from a holder of the rig's key, or not fresh."""


class AlignmentError(ImprovcapError, ValueError):
    """A file recorded elsewhere cannot be placed on a take's clock: nothing to align by, or two answers."""

    exit_code = 1


class CheckFailed(ImprovcapError):
    """A check ran and found a problem (exit status 1)."""

    exit_code = 1


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the choice closest to a misspelt `word`, else ``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""

"""What a take must stay within to pass `improvcap verify` (the command's options)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """What a take must stay within (the CLI's options)."""

    max_drift_ppm: float = 500.0
    max_residual_ms: float = 100.0
    slate_tolerance_ms: float = 2.0
    max_skew_ms: float = 100.0
    require_consent: bool = False

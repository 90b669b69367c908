"""`rig check`: what a rig's open devices deliver against what its rig file promises (on this PC, and on
each capture node for its own streams)."""

from __future__ import annotations

import math
from typing import Any

from .recorder import Recorder, Status

MAX_CHECK_S = 60.0  # rig check --seconds at most: a node's link waits for as long


def check_results(recorder: Recorder, status: Status, tolerance: float) -> list[dict[str, Any]]:
    """Each open stream's verdict: its fault, a rate more than `tolerance` off its nominal one, a camera
    format other than the rig's, audio silent on every channel."""
    results = []
    for runner, s in zip(recorder.runners, status.streams):
        problems = []
        if s.fault:
            problems.append(s.fault)
        if s.nominal and abs(s.rate - s.nominal) / s.nominal > tolerance:
            problems.append(f"rate {s.rate:.2f}/s, rig says {s.nominal:g}")
        info = runner.info
        if s.kind == "camera":
            for key in ("width", "height"):
                if key in info and info[key] != runner.spec[key]:
                    problems.append(f"{key} {info[key]}, rig says {runner.spec[key]}")
        if s.kind == "audio" and s.peak_dbfs and all(math.isinf(p) for p in s.peak_dbfs):
            problems.append("silent on every channel")
        results.append(
            {
                "stream": s.name,
                "kind": s.kind,
                "measured_rate": round(s.rate, 3),
                "nominal_rate": s.nominal,
                "peak_dbfs": [p if math.isfinite(p) else None for p in s.peak_dbfs] if s.peak_dbfs else [],
                "device": s.device,
                "ok": not problems,
                "problems": problems,
            }
        )
    return results

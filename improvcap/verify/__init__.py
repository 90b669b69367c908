"""Verifying takes (`improvcap verify`): integrity, drops, drift, sync and consent, reading only.

`verify_take` never writes: every file is opened read-only, nothing is created in or next to a take, and
no function that rewrites a take (refit_take, build_sync) is called; expected values such as sync.csv are
recomputed in memory. Symlinks are never followed and only regular files are opened, so a hostile take
cannot make verify read outside it or block on a FIFO. Any exception inside a check becomes a FAIL reason.

Verdict rules (every reason is kept, FAIL ones first; the verdict is the worst of them):
- FAIL: take.json unreadable, not an object, too large, another format or an unknown version; status
  `recording`/`interrupted` (run `improvcap repair`) or unknown; a listed file missing, not a regular file,
  of another size or sha256; a listed path that is absolute or has `..`; a symlink or special file
  anywhere in the take; an unlisted .mkv/.wav/.csv; a fault recorded during the take; video packets,
  frames.csv rows and the manifest count disagreeing, or frames.csv pts not the packets' pts; timestamps
  not strictly increasing; a WAV whose header and data disagree (truncated), or whose frames disagree
  with blocks.csv or the manifest; mocap rows not the manifest count; a device clock drifting beyond
  `max_drift_ppm` or with no fit; a slate onset outside its window (video: one frame period after the
  slate, −1 ms … period + 1 ms; audio: ±(`slate_tolerance_ms` + a sample); mocap: −tolerance … row
  period + tolerance); sync.csv not what the timestamps give; performers.json missing or not the canonical record
  of take.json's performers (or its sha256 not `performers_sha256`); no performers with
  `require_consent`; a performer recorded as revoked.
- WARN: status `repaired` (the loss stated from the repair notes); dropped frames, samples or rows (with
  the manifest's count and what the timestamps/counters show: a disagreement between the two is a WARN
  too, since the media themselves are intact when rows = packets and the hashes match, and gaps at the
  very start or end of a stream, or arrival-stamped jitter, legitimately make them differ); a foreign
  non-media file; residual p99 of the clock fit above `max_residual_ms` (these are arrival delays above
  the fitted envelope: transport jitter, not time error); clock resets; CRC or parse errors on a serial
  line; a measured rate more than RATE_TOLERANCE off nominal; a slate not found in a stream's media; no
  slates at all; start or end skew between streams above `max_skew_ms`; no performers.

Figures in the result are JSON-ready (no NaN): times in ms or s, drift in ppm, and per stream compact
series for plots (at most PLOT_POINTS points, the maximum of each bucket so that gaps stay visible).
"""

from __future__ import annotations

from .limits import Limits
from .paths import find_takes, summary_rows, verify_paths, verify_take

__all__ = ["Limits", "find_takes", "summary_rows", "verify_paths", "verify_take"]

"""Where calibrations live and which one is current (DESIGN section 6).

`calibration/<rig name>/<kind>-<UTC timestamp>.toml` in the current folder (or `--calibration DIR`), one
file per calibration run, never overwritten: the newest of a kind is the current one, older ones stay as
the history. `applied()` gives what record and session use: the rig with calibrated latencies, the
take.json entry naming the files and their hashes, and warnings for missing or stale calibrations.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import math
import tomllib
from pathlib import Path
from typing import Any

from ..errors import ImprovcapError
from ..rig import Rig
from ..take import sha256_file

KINDS = ("cameras", "sync", "audio")


class CalibrationError(ImprovcapError, ValueError):
    """A calibration cannot be computed or read (exit status 2)."""


def calibration_dir(rig_name: str, override: Path | None = None) -> Path:
    return (override if override is not None else Path.cwd() / "calibration") / rig_name


def current(folder: Path, kind: str) -> Path | None:
    """The newest `<kind>-*.toml` (names sort by their UTC timestamp)."""
    files = sorted(folder.glob(f"{kind}-*.toml")) if folder.is_dir() else []
    return files[-1] if files else None


def load(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise CalibrationError(f"{path}: cannot read the calibration: {e}") from None


def write(folder: Path, kind: str, data: dict[str, Any]) -> Path:
    """A new calibration file `<kind>-<UTC>.toml`; never replaces an existing one."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    text = dump_toml(data)
    for n in range(1, 1000):
        path = folder / (f"{kind}-{stamp}.toml" if n == 1 else f"{kind}-{stamp}-{n}.toml")
        try:
            with open(path, "x", encoding="utf-8") as fh:
                fh.write(text)
            return path
        except FileExistsError:
            continue
    raise CalibrationError(f"{folder}: cannot find a free name for a {kind} calibration")


# --- a small TOML writer for calibration results (tomllib only reads) ----------------------------

def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # JSON string escapes are valid TOML basic strings
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, (_dt.datetime, _dt.date)):
        return v.isoformat()
    if hasattr(v, "tolist"):  # numpy scalars and arrays
        return _value(v.tolist())
    raise CalibrationError(f"cannot write {type(v).__name__} to TOML")


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else json.dumps(k)


def _is_table_list(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and bool(v) and all(isinstance(x, dict) for x in v)


def dump_toml(data: dict[str, Any], prefix: str = "") -> str:
    """Scalars and arrays first, then sub-tables as [dotted.headers] and lists of tables as
    [[dotted.headers]]; None values are left out (TOML has no null)."""
    lines = [f"{_key(k)} = {_value(v)}" for k, v in data.items()
             if v is not None and not isinstance(v, dict) and not _is_table_list(v)]
    out = "\n".join(lines) + ("\n" if lines else "")
    for k, v in data.items():
        name = f"{prefix}.{_key(k)}" if prefix else _key(k)
        if isinstance(v, dict):
            out += f"\n[{name}]\n" + dump_toml(v, name)
        elif _is_table_list(v):
            for item in v:
                out += f"\n[[{name}]]\n" + dump_toml(item, name)
    return out


# --- what record and session apply ---------------------------------------------------------------

def applied(rig: Rig, folder: Path) -> tuple[Rig, dict[str, Any], list[str]]:
    """The rig with calibrated latencies, the take.json `calibration` entry, and warnings."""
    entry: dict[str, Any] = {"folder": str(folder), "files": {}}
    warnings = []
    rig_mtime = rig.path.stat().st_mtime if rig.path.exists() else 0.0
    for kind in ("sync", "cameras"):
        path = current(folder, kind)
        if path is None:
            warnings.append(f"no {kind} calibration for rig {rig.name} in {folder} "
                            f"(improvcap calibrate {kind} {rig.name})")
            continue
        if path.stat().st_mtime < rig_mtime:
            warnings.append(f"the {kind} calibration {path.name} is older than the rig file {rig.path.name}")
        entry["files"][kind] = {"path": str(path), "sha256": sha256_file(path)}
    sync_path = current(folder, "sync")
    if sync_path is not None:
        latency = {name: s.get("latency_ms") for name, s in load(sync_path).get("streams", {}).items()}
        entry["latency_ms"] = {k: v for k, v in latency.items() if isinstance(v, (int, float))}
        rig = with_latencies(rig, entry["latency_ms"])
    digest = hashlib.sha256(json.dumps(entry["files"], sort_keys=True).encode()).hexdigest() if entry["files"] else None
    return rig, {**entry, "sha256": digest}, warnings


def with_latencies(rig: Rig, latency_ms: dict[str, float]) -> Rig:
    """The rig with the calibrated latency of each named stream in place of its rig-file value."""
    streams = tuple(
        dataclasses.replace(s, settings={**s.settings, "latency_ms": float(latency_ms[s.name])})
        if s.name in latency_ms else s for s in rig.streams)
    return dataclasses.replace(rig, streams=streams)

"""Where calibrations live and which one is current (DESIGN section 6).

`calibration/<rig name>/<kind>-<UTC timestamp>.toml` in the current folder (or `--calibration DIR`), one
file per calibration run, never overwritten: the newest of a kind is the current one, older ones stay as
the history. Only names of exactly that form are calibrations: a README or notes beside them are not.
`applied()` gives what record and session use: the rig with calibrated latencies, the take.json entry
naming the files and their hashes, and warnings for missing or stale calibrations.

A calibration is written inside the opened calibration folder (never one that is a symbolic link), under
a name created exclusively: a link planted at that name is never followed.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import math
import re
import tomllib
from pathlib import Path
from typing import Any

from ..errors import ImprovcapError, TakeError
from ..rig import Rig
from ..take.atomic import Folder, pid_tag, rewriting
from ..take.hashing import sha256_file

KINDS = ("cameras", "sync", "audio")


class CalibrationError(ImprovcapError, ValueError):
    """A calibration cannot be computed or read (exit status 2)."""


def calibration_dir(rig_name: str, override: Path | None = None) -> Path:
    return (override if override is not None else Path.cwd() / "calibration") / rig_name


_NAME = re.compile(r"(?P<kind>[a-z]+)-(?P<stamp>\d{8}T\d{6}Z)(?:-(?P<n>\d+))?\.toml")


def history(folder: Path, kind: str) -> list[Path]:
    """The calibrations of a kind, oldest first: `<kind>-<UTC>.toml`, then `-2`, `-3`... within one second."""
    found = []
    for path in folder.iterdir() if folder.is_dir() else ():
        m = _NAME.fullmatch(path.name)
        if m and m["kind"] == kind and path.is_file():
            found.append(((m["stamp"], int(m["n"] or 1)), path))
    return [path for _, path in sorted(found)]


def current(folder: Path, kind: str) -> Path | None:
    """The newest calibration of a kind."""
    files = history(folder, kind)
    return files[-1] if files else None


def made_for(data: dict[str, Any]) -> str | None:
    """The sha256 of the rig file a calibration was made for (None in files that do not say)."""
    value = data.get("rig_sha256", (data.get("metadata") or {}).get("rig_sha256"))
    return value if isinstance(value, str) else None


def stale(path: Path, rig: Rig) -> bool:
    """The rig file changed after the calibration: by its content where the calibration names the rig
    file's sha256 (file times change with every copy and checkout), by modification time otherwise."""
    try:
        sha = made_for(load(path))
    except CalibrationError:
        sha = None
    if sha is not None:
        return sha != rig.sha256
    return rig.path.exists() and path.stat().st_mtime < rig.path.stat().st_mtime


def load(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise CalibrationError(f"{path}: cannot read the calibration: {e}") from None


def write(folder: Path, kind: str, data: dict[str, Any]) -> Path:
    """A new calibration file `<kind>-<UTC>.toml`, written whole or not at all; never replaces an existing
    one. A calibration folder that is a symbolic link is refused (CalibrationError)."""
    text = dump_toml(data).encode("utf-8")
    try:
        if folder.is_symlink():
            raise CalibrationError(f"{folder}: is a symbolic link; a calibration is written only into a real folder")
        folder.mkdir(parents=True, exist_ok=True)
        with Folder(folder, follow=False) as opened:
            return _write_new(opened, kind, text)
    except TakeError as e:  # the folder became a link meanwhile
        raise CalibrationError(str(e)) from None
    except OSError as e:
        raise CalibrationError(f"{folder}: cannot write the {kind} calibration: {e.strerror or e}") from None


def _write_new(folder: Folder, kind: str, text: bytes) -> Path:
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    for n in range(1, 1000):
        path = folder.path / (f"{kind}-{stamp}.toml" if n == 1 else f"{kind}-{stamp}-{n}.toml")
        try:
            # linked into place under a name that must be free (a link there too): never overwritten
            with rewriting(path, pid_tag(), exclusive=True, folder=folder) as fh:
                fh.write(text)
            return path
        except FileExistsError:
            continue
    raise CalibrationError(f"{folder.path}: cannot find a free name for a {kind} calibration")


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
    lines = [
        f"{_key(k)} = {_value(v)}"
        for k, v in data.items()
        if v is not None and not isinstance(v, dict) and not _is_table_list(v)
    ]
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
    for kind in ("sync", "cameras"):
        path = current(folder, kind)
        if path is None:
            warnings.append(
                f"no {kind} calibration for rig {rig.name} in {folder} (improvcap calibrate {kind} {rig.name})"
            )
            continue
        if stale(path, rig):
            warnings.append(
                f"the {kind} calibration {path.name} was made for another version of the rig file {rig.path.name}"
            )
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
        if s.name in latency_ms
        else s
        for s in rig.streams
    )
    return dataclasses.replace(rig, streams=streams)

"""The repository's `calibration/` folder: calibrations of the shipped demo rigs, made by the tool, that
the tool's store reads and that match the rigs; how `record` finds them; what the store takes for one."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from improvcap.calibrate import store
from improvcap.rig import Rig, load_rig

REPO = Path(__file__).resolve().parents[1]
CALIBRATION = REPO / "calibration"
SHIPPED = sorted((REPO / "improvcap" / "rigs").glob("*.toml"))


def kinds_it_can_make(rig: Rig) -> list[str]:
    """What the tool calibrates with no hardware: sync when every device is a demo twin (they render the
    host-timed slates, the demo box fires them), cameras when every camera films the demo board."""
    kinds = ["sync"] if all(s.driver == "demo" for s in rig.streams) else []
    cameras = rig.of_kind("camera")
    if cameras and all(s.driver == "demo" and s.get("board") for s in cameras):
        kinds.append("cameras")
    return kinds


CASES = [(path, kind) for path in SHIPPED for kind in kinds_it_can_make(load_rig(str(path)))]


def test_every_demo_rig_is_covered():
    assert {load_rig(str(path)).name for path, _ in CASES} >= {"demo", "demo-sync", "demo-board", "demo-lsl"}
    assert (CALIBRATION / "README.md").is_file()


@pytest.mark.parametrize("path, kind", CASES, ids=[f"{p.stem}-{k}" for p, k in CASES])
def test_shipped_calibration_loads_and_matches_its_rig(path: Path, kind: str, cli):
    rig = load_rig(str(path))
    show = cli("calibrate", "show", str(path), "--calibration", str(CALIBRATION), "--json")
    assert show.returncode == 0, show.stderr
    entry = json.loads(show.stdout)["kinds"][kind]
    assert entry is not None, f"no {kind} calibration of {rig.name} in {CALIBRATION} (see its README.md)"
    data = store.load(Path(entry["file"]))
    if kind == "sync":
        assert set(data["streams"]) == {s.name for s in rig.streams if s.kind != "sync"}
        assert all(isinstance(s["latency_ms"], float) and s["uncertainty_ms"] < 1 for s in data["streams"].values())
        assert data["rig"] == rig.name and data.get("warnings") == []
    else:
        names = [c["name"] for k, c in data.items() if k.startswith("cam_")]
        assert sorted(names) == sorted(s.name for s in rig.of_kind("camera"))
        assert data["metadata"]["rig"] == rig.name and not data["metadata"].get("flagged")


def test_record_finds_the_calibration_by_the_rig_name_and_its_content(tmp_path: Path, cli):
    (tmp_path / "rigs").mkdir()
    rig = tmp_path / "rigs" / "demo.toml"
    shutil.copy(REPO / "improvcap" / "rigs" / "demo.toml", rig)  # a fresh copy: newer than the calibration
    shutil.copytree(CALIBRATION / "demo", tmp_path / "calibration" / "demo")
    first = cli("record", "demo", "--out", "out", "--duration", "1", "--json")
    assert first.returncode == 0, first.stderr
    assert "sync calibration" not in first.stderr and "another version" not in first.stderr, first.stderr
    manifest = json.loads((Path(json.loads(first.stdout)["take"]) / "take.json").read_text())
    used = Path(manifest["calibration"]["files"]["sync"]["path"])
    assert used.parent == tmp_path / "calibration" / "demo" and used.name.startswith("sync-")

    rig.write_text(rig.read_text() + "# a studio's note\n")
    second = cli("record", "demo", "--out", "out", "--duration", "1")
    assert second.returncode == 0, second.stderr
    assert f"the sync calibration {used.name} was made for another version of the rig file demo.toml" \
        in second.stderr


def test_only_calibration_names_are_calibrations(tmp_path: Path, cli):
    folder = tmp_path / "calibration" / "demo"
    folder.mkdir(parents=True)
    source = store.load(store.current(CALIBRATION / "demo", "sync"))
    for name, latency in (("sync-20240101T000000Z.toml", 1.0), ("sync-20240101T000000Z-2.toml", 2.0),
                          ("sync-notes.toml", 3.0), ("sync-README.toml", 4.0)):
        data = {**source, "streams": {n: {**s, "latency_ms": latency} for n, s in source["streams"].items()}}
        (folder / name).write_text(store.dump_toml(data))
    (tmp_path / "calibration" / "README.md").write_text("# calibrations\n")
    (folder / "README.md").write_text("# demo\n")
    show = cli("calibrate", "show", "demo", "--json")
    assert show.returncode == 0, show.stderr
    sync = json.loads(show.stdout)["kinds"]["sync"]
    # the second of one second is the newest; notes and READMEs are not calibrations
    assert Path(sync["file"]).name == "sync-20240101T000000Z-2.toml" and sync["history"] == 2
    assert json.loads(show.stdout)["kinds"]["cameras"] is None

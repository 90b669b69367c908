"""Take folders: safe names, numbering that never overwrites, atomic manifests."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from improvcap.take import folder as take
from improvcap.take.atomic import write_json_atomic
from improvcap.take.hashing import file_entries
from improvcap.errors import UsageError


@pytest.mark.parametrize("bad", ["", "..", "a/b", "../x", "a\\b", ".hidden", "x..y", "sp ace", "a" * 101])
def test_unsafe_names_refused(bad: str):
    with pytest.raises(UsageError, match="no path separators"):
        take.check_name(bad, "scene")


def test_takes_number_per_scene_and_never_overwrite(tmp_path: Path):
    session = take.session_folder(tmp_path, "day1", "demo")
    meta = json.loads((session / "session.json").read_text())
    assert meta["format"] == "improvcap.session" and meta["rig"] == "demo"
    a1, n1 = take.next_take_folder(session, "alpha")
    a2, n2 = take.next_take_folder(session, "alpha")
    b1, _ = take.next_take_folder(session, "beta")
    assert (a1.name, a2.name, b1.name) == ("alpha_t001", "alpha_t002", "beta_t001")
    # a gap or a foreign folder never makes a number reusable
    (session / "alpha_t007").mkdir()
    (session / "alpha_t007" / "keep.txt").write_text("precious")
    a8, n8 = take.next_take_folder(session, "alpha")
    assert a8.name == "alpha_t008" and (session / "alpha_t007" / "keep.txt").read_text() == "precious"
    # session.json is not rewritten on reuse
    (session / "session.json").write_text('{"edited": true}')
    take.session_folder(tmp_path, "day1", "demo")
    assert json.loads((session / "session.json").read_text()) == {"edited": True}


def test_concurrent_take_creation_gets_distinct_folders(tmp_path: Path):
    session = take.session_folder(tmp_path, "day", "demo")
    got: list[str] = []
    lock = threading.Lock()

    def make() -> None:
        folder, _ = take.next_take_folder(session, "s")
        with lock:
            got.append(folder.name)

    threads = [threading.Thread(target=make) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == [f"s_t{i:03d}" for i in range(1, 9)]


def test_manifest_written_atomically_and_files_hashed(tmp_path: Path):
    (tmp_path / "a.csv").write_text("x\n1\n")
    write_json_atomic(tmp_path / "take.json", {"status": "recording"})
    write_json_atomic(tmp_path / "take.json", {"status": "complete"})
    assert json.loads((tmp_path / "take.json").read_text()) == {"status": "complete"}
    assert not list(tmp_path.glob(".*.tmp"))
    files = file_entries(tmp_path)
    assert list(files) == ["a.csv"]
    assert files["a.csv"]["bytes"] == 4
    assert files["a.csv"]["sha256"] == "daff832f802000e645771a60983c76c963f6ee602a6230e45237bd360e91cc1a"

"""Rig files: lookup, parsing, and one-line errors naming file, key and problem (exit status 2)."""
from __future__ import annotations

from pathlib import Path

import pytest

from improvcap.errors import RigError
from improvcap.rig import find_rig, load_rig, parse_rig

GOOD = """
[rig]
name = "t"
master = "cam0"

[[camera]]
name = "cam0"
driver = "demo"
fps = 30

[[audio]]
name = "mic"
driver = "demo"
channels = 2

[[mocap]]
name = "suit"
driver = "serial"
port = "/dev/ttyUSB0"
"""


NODES = """
[[node]]
name = "pc2"

[[node]]
name = "pc3"
host = "10.0.0.2"
"""


def parse(text: str) -> None:
    parse_rig(text, Path("rigs/t.toml"))


def test_shipped_rigs_parse():
    demo = load_rig("demo")
    assert [s.name for s in demo.streams] == ["cam0", "cam1", "room", "suit"]
    assert demo.master == "cam0"
    assert demo.stream("cam0")["width"] == 1280 and demo.stream("cam0")["fps"] == 30
    assert demo.stream("room")["channels"] == 4 and demo.stream("room")["samplerate"] == 48000
    assert demo.stream("suit")["rate"] == 240 and demo.stream("suit")["channels"] == 24
    hw = load_rig("uvc-studio")
    assert {s.driver for s in hw.streams} == {"ffmpeg", "portaudio", "serial"}
    assert all(s["codec"] == "copy" and s["input_format"] == "mjpeg" for s in hw.of_kind("camera"))


def test_defaults_filled_and_snapshot():
    rig = parse_rig(GOOD, Path("t.toml"))
    assert rig.stream("mic")["samplerate"] == 48000
    assert rig.stream("cam0")["drift_ppm"] == 0.0          # demo-only keys exist for demo devices
    assert "drift_ppm" not in rig.stream("suit").settings   # and not for real ones
    snap = rig.snapshot()
    assert snap["streams"][0] == {**snap["streams"][0], "name": "cam0", "driver": "demo", "kind": "camera"}
    assert len(rig.sha256) == 64


@pytest.mark.parametrize("edit, key, problem", [
    (lambda t: t.replace('name = "t"\n', ""), "rig.name", "missing"),
    (lambda t: t.replace("fps = 30", "fps = -3"), "camera[0].fps", "must be > 0"),
    (lambda t: t.replace("fps = 30", 'fps = "fast"'), "camera[0].fps", "expected a number"),
    (lambda t: t.replace("channels = 2", "channels = 2.5"), "audio[0].channels", "expected an integer"),
    (lambda t: t.replace('driver = "demo"\nfps', 'driver = "webcam"\nfps'), "camera[0].driver", "must be one of"),
    (lambda t: t.replace('name = "mic"', 'name = "cam0"'), "audio[0].name", "duplicate stream name"),
    (lambda t: t.replace('master = "cam0"', 'master = "cam9"'), "rig.master", "not a camera"),
    (lambda t: t.replace('master = "cam0"', 'master = "mic"'), "rig.master", "not a camera"),
    (lambda t: t.replace("fps = 30", "fps = 30\nframerate = 30"), "camera[0].framerate", "unknown key"),
    (lambda t: t.replace("fps = 30", "fsp = 30"), "camera[0].fsp", "unknown key for a demo camera (did you mean 'fps'?)"),
    (lambda t: t.replace('master = "cam0"', 'mastr = "cam0"'), "rig.mastr", "unknown key (did you mean 'master'?)"),
    (lambda t: t.replace("[[audio]]", "[[audios]]"), "audios", "unknown table (did you mean 'audio'?)"),
    (lambda t: t.replace("fps = 30", "fps = 30\nexposure_compensation = 1"), "camera[0].exposure_compensation",
     "unknown key for a demo camera (expected"),
    (lambda t: t.replace('port = "/dev/ttyUSB0"\n', ""), "mocap[0].port", "missing"),
    (lambda t: t.replace("channels = 2", "channels = 0"), "audio[0].channels", "must be >= 1"),
    (lambda t: t.replace('name = "cam0"', 'name = "../x"'), "camera[0].name", "must be letters"),
    (lambda t: t + "\n[[camera]]\nname = 'c2'\n", "camera[1].driver", "missing"),
    (lambda t: t.replace("[rig]", "[rigg]"), "rigg", "unknown table"),
    (lambda t: t + "\nbroken = = 1\n", "not valid TOML", ""),
    (lambda t: t.replace("fps = 30", 'fps = 30\nnode = "pc2"'), "camera[0].node",
     "'pc2' is not a node of this rig (nodes: none: add a [[node]] table)"),
    (lambda t: t + NODES.replace('host = "10.0.0.2"', 'host = "a b"'), "node[1].host", "expected a host name"),
    (lambda t: t + NODES.replace('name = "pc3"', 'name = "pc2"'), "node[1].name", "duplicate node name 'pc2'"),
    (lambda t: t + NODES.replace('host = "10.0.0.2"', 'hots = "x"'), "node[1].hots",
     "unknown key for a node (did you mean 'host'?)"),
    (lambda t: t + "\n[[node]]\nhost = 'x'\n", "node[0].name", "missing"),
    (lambda t: t + "\n[nodes]\n", "nodes", "unknown table (did you mean 'node'?)"),
])
def test_bad_rig_names_file_key_and_problem(edit, key, problem):
    with pytest.raises(RigError) as info:
        parse(edit(GOOD))
    message = str(info.value)
    assert message.startswith("rigs/t.toml: ")
    assert key in message and problem in message
    assert "\n" not in message


def test_rig_lookup_order(tmp_path: Path):
    (tmp_path / "rigs").mkdir()
    (tmp_path / "rigs" / "demo.toml").write_text(GOOD.replace('name = "t"', 'name = "local"'))
    assert load_rig("demo", cwd=tmp_path).name == "local"          # the studio's own rigs/ first
    assert load_rig("demo", cwd=tmp_path / "rigs").name == "demo"  # then the shipped rig
    with pytest.raises(RigError, match="no such rig"):
        find_rig("nosuch", cwd=tmp_path)
    with pytest.raises(RigError, match="rig file not found"):
        find_rig("missing.toml", cwd=tmp_path)


def test_cli_bad_rig_exit_2_one_line(cli, tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace("fps = 30", "fps = 0"))
    result = cli("record", str(bad), "--duration", "1")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "bad.toml: camera[0].fps: must be > 0" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "takes").exists()


def test_square_brackets_in_errors_are_printed_as_they_are(cli, tmp_path: Path):
    folder = tmp_path / "[copy]"
    folder.mkdir()
    bad = folder / "typo.toml"
    bad.write_text(GOOD + "\n[cameras]\nname = 'x'\n")
    result = cli("rig", "check", str(bad))
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip()
    assert "\n" not in line, line
    assert f"{bad}: cameras: unknown table (did you mean 'camera'?) (expected [rig], [[camera]], [[audio]], [[mocap]], [[sync]], [[lsl]], [[node]])" in line, line


def test_nodes_and_the_streams_they_record_are_in_the_snapshot(cli, tmp_path: Path):
    text = GOOD.replace('name = "mic"\ndriver = "demo"', 'name = "mic"\ndriver = "demo"\nnode = "pc3"') + NODES
    rig = parse_rig(text, Path("t.toml"))
    assert [(n.name, n.host) for n in rig.nodes] == [("pc2", None), ("pc3", "10.0.0.2")]
    assert rig.stream("mic").node == "pc3" and rig.stream("cam0").node is None
    snap = rig.snapshot()
    assert snap["nodes"] == [{"name": "pc2"}, {"name": "pc3", "host": "10.0.0.2"}]
    mic = next(s for s in snap["streams"] if s["name"] == "mic")
    assert mic["node"] == "pc3" and "node" not in snap["streams"][0]
    assert "nodes" not in parse_rig(GOOD, Path("t.toml")).snapshot()
    # the nodes are driven with the rig's key only: without it, one line, exit 2, nothing opened or written
    (tmp_path / "nodes.toml").write_text(text)
    result = cli("record", str(tmp_path / "nodes.toml"), "--duration", "1")
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0, result.stderr
    assert "mic (node pc3) are recorded by capture nodes: give the rig's shared key with --key FILE" in result.stderr
    assert not (tmp_path / "takes").exists()
    checked = cli("rig", "check", str(tmp_path / "nodes.toml"))
    assert checked.returncode == 2 and "give the rig's shared key with --key FILE" in checked.stderr, checked.stderr

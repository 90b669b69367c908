"""The package's architecture holds: layers (import-linter), small classes, the take contract in one home."""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "improvcap"
LINT = Path(sys.executable).with_name("lint-imports")
MAX_CLASS_LINES = 250
# what only improvcap/take/ may spell, as a whole string or the end of one (help texts and messages that
# name a file in passing are not paths)
TAKE_NAMES = (".frames.csv", ".blocks.csv", ".truth.csv", ".roundtrips.csv", ".mkv", ".wav", ".orig", "sync.csv",
              "events.csv", "take.json", "performers.json", "session.json", "control.sock")


def _lint(cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    if not LINT.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    return subprocess.run([str(LINT), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_layers_hold():
    run = _lint(ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Contracts: 2 kept, 0 broken." in run.stdout


@pytest.mark.parametrize("module, bad_import", [
    ("take/layout.py", "from ..recorder import Recorder"),              # the take format reaching up
    ("devices/camera_ffmpeg.py", "from .camera_demo import DemoCamera"),  # a real driver using a demo twin
    ("protocols/binary.py", "from ..devices import serial_port"),         # a wire format using a transport
])
def test_a_wrong_import_breaks_the_contract(tmp_path, module, bad_import):
    shutil.copytree(PACKAGE, tmp_path / "improvcap", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "improvcap" / module
    text = target.read_text()
    anchor = "from __future__ import annotations\n"
    assert anchor in text
    target.write_text(text.replace(anchor, anchor + bad_import + "\n", 1))
    run = _lint(tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert run.returncode != 0, run.stdout
    assert "BROKEN" in run.stdout and "broken." in run.stdout


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_class_is_longer_than_a_limit():
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES:
                long.append(f"{path.relative_to(ROOT)}: {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def test_only_the_take_package_spells_take_file_names():
    spelled = []
    for path in _modules():
        if path.is_relative_to(PACKAGE / "take"):
            continue
        tree = ast.parse(path.read_text())
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs \
                    and node.value.endswith(TAKE_NAMES):
                spelled.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not spelled

"""Test-command detection, and running what was detected in the sandbox."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from sandbox_fixtures import TEST_LIMITS, make_repo, needs_bwrap, write_files

from sandbox import Sandbox, Workspace, detect_test_command

PY = shlex.quote(str(Path(sys.executable).absolute()))


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An interpreter without pytest: a fresh venv without pip."""
    venv = tmp_path_factory.mktemp("nopytest") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    return str(venv / "bin/python")


@pytest.mark.parametrize("files", [
    {"pytest.ini": "[pytest]\n"},
    {"pyproject.toml": "[tool.pytest.ini_options]\naddopts = '-q'\n"},
    {"setup.cfg": "[tool:pytest]\ntestpaths = t\n"},
    {"tox.ini": "[pytest]\n"},
    {"conftest.py": ""},
    {"tests/test_a.py": "def test_a(): pass\n"},
    {"src/pkg/a_test.py": "def test_a(): pass\n"},
])
def test_pytest_detected(tmp_path: Path, files: dict[str, str]) -> None:
    write_files(tmp_path, files)
    assert detect_test_command(tmp_path, sys.executable) == f"{PY} -m pytest"


def test_unittest_when_pytest_missing(tmp_path: Path, bare_python: str) -> None:
    write_files(tmp_path, {"pytest.ini": "[pytest]\n", "test_mod.py": "import unittest\n"})
    assert detect_test_command(tmp_path, bare_python) == f"{bare_python} -m unittest discover"
    write_files(tmp_path / "b", {"tests/test_x.py": "import unittest\n"})
    assert detect_test_command(tmp_path / "b", bare_python) == f"{bare_python} -m unittest discover -s tests"


def test_make_test_then_nothing(tmp_path: Path, bare_python: str) -> None:
    write_files(tmp_path, {"Makefile": "X := 1\ntest: build\n\techo ok\n", "README.md": "hi"})
    assert detect_test_command(tmp_path, sys.executable) == "make test"
    (tmp_path / "Makefile").write_text("test_dir := x\nall:\n\techo\n")
    assert detect_test_command(tmp_path, sys.executable) is None
    write_files(tmp_path / ".venv/lib", {"test_ignored.py": ""})  # environments are not the repo's tests
    assert detect_test_command(tmp_path, bare_python) is None


@needs_bwrap
def test_detected_command_runs_in_sandbox(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {
        "calc.py": "def add(a, b):\n    return a - b\n",
        "tests/test_calc.py": "from calc import add\n\ndef test_add():\n    assert add(2, 2) == 4\n",
        "pyproject.toml": "[tool.pytest.ini_options]\npythonpath = ['.']\n",
    })
    with Workspace.create(repo) as ws:
        cmd = detect_test_command(ws.path, sys.executable)
        assert cmd is not None
        box = Sandbox(ws, limits=TEST_LIMITS)
        failing = box.run(cmd + " -q -p no:cacheprovider", timeout=60)
        assert failing.exit_code == 1 and "1 failed" in failing.output, failing.output
        (ws.path / "calc.py").write_text("def add(a, b):\n    return a + b\n")
        passing = box.run(cmd + " -q -p no:cacheprovider", timeout=60)
        assert passing.exit_code == 0 and "1 passed" in passing.output, passing.output
        assert "+    return a + b" in ws.diff()


@needs_bwrap
def test_interpreter_under_tmp_is_visible(tmp_path: Path, bare_python: str) -> None:
    """A venv below /tmp stays visible although /tmp is a private tmpfs."""
    (tmp_path / "ws").mkdir()
    box = Sandbox(tmp_path / "ws", limits=TEST_LIMITS, python=bare_python)
    r = box.run('python -c "import sys; print(sys.prefix)"; ls /tmp', timeout=30)
    prefix = str(Path(bare_python).parent.parent)
    assert r.exit_code == 0 and r.output.splitlines()[0] == prefix, r.output

"""Guessing a repository's test command from its files.

Order: pytest (configured, or test files plus pytest importable by the
chosen interpreter), then ``unittest discover``, then ``make test``. The
command names the interpreter by absolute path so it is the chosen one even
where ``python`` on PATH is another; the sandbox binds it at that path.
"""

from __future__ import annotations

import configparser
import fnmatch
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

from sandbox.interpreter import resolve_executable

_SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", ".tox", ".nox", "build", "dist", "site-packages"}
_MAX_DEPTH = 4
_MAKE_TEST = re.compile(r"^test\s*:(?!=)", re.MULTILINE)


def detect_test_command(workspace: str | os.PathLike[str], python: str = sys.executable) -> str | None:
    """The repo's test command as a shell string, or None if nothing is found."""
    root = Path(getattr(workspace, "path", workspace))
    py = shlex.quote(resolve_executable(python))
    test_files = _find_test_files(root)
    if (_pytest_configured(root) or test_files) and _has_module(python, "pytest"):
        return f"{py} -m pytest"
    unittest_files = [p for p in test_files if fnmatch.fnmatch(p.name, "test*.py")]
    if unittest_files:
        tests = root / "tests"
        if tests.is_dir() and not (tests / "__init__.py").exists() and all(tests in p.parents for p in unittest_files):
            # unittest only walks into packages; start inside a plain tests/ folder.
            return f"{py} -m unittest discover -s tests"
        return f"{py} -m unittest discover"
    if _make_has_test(root):
        return "make test"
    return None


def _pytest_configured(root: Path) -> bool:
    if (root / "pytest.ini").is_file() or (root / "conftest.py").is_file():
        return True
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        try:
            tool = tomllib.loads(pyproject.read_text(errors="replace")).get("tool", {})
        except tomllib.TOMLDecodeError:
            tool = {}
        if isinstance(tool, dict) and "pytest" in tool:
            return True
    for name, section in (("tox.ini", "pytest"), ("setup.cfg", "tool:pytest")):
        if (root / name).is_file():
            parser = configparser.ConfigParser(interpolation=None, strict=False)
            try:
                parser.read(root / name, encoding="utf-8")
            except (configparser.Error, UnicodeDecodeError):
                continue
            if parser.has_section(section):
                return True
    return False


def _find_test_files(root: Path) -> list[Path]:
    """test_*.py / *_test.py files, a few levels deep, skipping envs and VCS."""
    found: list[Path] = []
    base_depth = len(root.parts)
    for folder, dirs, files in os.walk(root):
        depth = len(Path(folder).parts) - base_depth
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS and not d.startswith(".") and depth < _MAX_DEPTH]
        found += [Path(folder) / f for f in files if f.endswith(".py") and (f.startswith("test_") or f.endswith("_test.py"))]
    return sorted(found)


def _has_module(python: str, module: str) -> bool:
    """Whether ``python`` can import ``module`` (found, not imported: no code runs)."""
    probe = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    try:
        proc = subprocess.run(
            [resolve_executable(python), "-I", "-c", probe], capture_output=True, timeout=60,
            stdin=subprocess.DEVNULL, cwd="/",
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def _make_has_test(root: Path) -> bool:
    for name in ("GNUmakefile", "makefile", "Makefile"):
        path = root / name
        if path.is_file():
            return bool(_MAKE_TEST.search(path.read_text(errors="replace")))
    return False

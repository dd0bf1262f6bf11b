"""Helpers for the sandbox tests: throw-away git repos and host-state probes."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox import Limits, Sandbox, bwrap_works

needs_bwrap = pytest.mark.skipif(not bwrap_works(), reason="bubblewrap cannot run on this machine")
# Unconfined commands run as an unprivileged uid when we are root, and this
# interpreter may live where that uid cannot reach (e.g. pyenv under /root).
UNCONFINED_PYTHON = "/usr/bin/python3" if os.geteuid() == 0 and os.path.exists("/usr/bin/python3") else sys.executable

# Small limits so a misbehaving test cannot hurt the host.
TEST_LIMITS = Limits(cpu_seconds=20, address_space_bytes=2 << 30, max_processes=64, tmpfs_bytes=64 << 20)


def git(cwd: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    out = subprocess.run(["git", "-c", "init.defaultBranch=main", *args], cwd=cwd, env=env,
                         capture_output=True, text=True, check=True)
    return out.stdout


def make_repo(path: Path, files: dict[str, str | bytes]) -> Path:
    """A git repo at ``path`` with ``files`` committed on branch main."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q")
    write_files(path, files)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


def write_files(root: Path, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)


def tree_digest(root: Path) -> str:
    """Hash of every path, mode, link target and file content under ``root``."""
    h = hashlib.sha256()
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs + files):
            full = os.path.join(folder, name)
            st = os.lstat(full)
            h.update(f"{os.path.relpath(full, root)}\0{st.st_mode}\0".encode())
            if os.path.islink(full):
                h.update(os.readlink(full).encode())
            elif os.path.isfile(full):
                with open(full, "rb") as fh:
                    h.update(fh.read())
    return h.hexdigest()


def host_pids() -> set[int]:
    return {int(p) for p in os.listdir("/proc") if p.isdigit()}


def processes_matching(marker: str) -> list[int]:
    """Host processes whose command line contains ``marker``."""
    found = []
    for pid in host_pids():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if marker.encode() in cmdline and pid != os.getpid():
            found.append(pid)
    return found


def assert_usable(sb: Sandbox) -> None:
    """The sandbox still runs a plain command after whatever came before."""
    result = sb.run("echo still-ok", timeout=20)
    assert result.exit_code == 0 and result.output.strip() == "still-ok", result


@pytest.fixture
def ws_dir(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    (path / "hello.txt").write_text("hello\n")
    return path


@pytest.fixture
def sb(ws_dir: Path) -> Sandbox:
    return Sandbox(ws_dir, limits=TEST_LIMITS)

"""Workspaces: copies with the user's uncommitted state, diffs, apply, cleanup."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sandbox_fixtures import TEST_LIMITS, git, make_repo, needs_bwrap, processes_matching, tree_digest, write_files

from sandbox import (
    DiffError,
    PatchConflict,
    PatchRefused,
    Sandbox,
    SandboxError,
    SourceNotADirectory,
    SourceNotFound,
    SourceNotReadable,
    Workspace,
)
from sandbox import cleanup as cleanup_mod
from sandbox.workspace import WS_PREFIX

BINARY = bytes(range(256)) * 4


@pytest.fixture
def dirty_repo(tmp_path: Path) -> Path:
    """A repo with every kind of uncommitted change."""
    repo = make_repo(tmp_path / "user", {
        "mod.txt": "one\ntwo\n",
        "gone.txt": "bye\n",
        "staged_mod.txt": "s\n",
        "blob.bin": BINARY,
        "pkg/code.py": "X = 1\n",
        ".gitignore": "*.log\nbuild/\n",
    })
    write_files(repo, {
        "mod.txt": "one\ntwo\nthree\n",
        "staged_mod.txt": "s2\n",
        "staged_new.txt": "new\n",
        "untracked.txt": "u\n",
        "pkg/untracked_mod.py": "Y = 2\n",
        "debug.log": "ignored\n",
        "build/out.o": "ignored\n",
    })
    git(repo, "add", "staged_mod.txt", "staged_new.txt")
    (repo / "gone.txt").unlink()
    (repo / "blob.bin").write_bytes(BINARY[::-1])
    os.chmod(repo / "pkg/code.py", 0o755)
    return repo


def ws_files(ws: Workspace) -> dict[str, bytes]:
    out = {}
    for folder, dirs, files in os.walk(ws.path):
        dirs[:] = [d for d in dirs if d != ".git"]
        for f in files:
            full = Path(folder) / f
            out[str(full.relative_to(ws.path))] = full.read_bytes()
    return out


def test_clone_carries_uncommitted_and_untracked_but_not_ignored(dirty_repo: Path) -> None:
    with Workspace.create(dirty_repo) as ws:
        files = ws_files(ws)
        assert files["mod.txt"] == b"one\ntwo\nthree\n"
        assert files["staged_mod.txt"] == b"s2\n"
        assert files["staged_new.txt"] == b"new\n"
        assert files["untracked.txt"] == b"u\n"
        assert files["pkg/untracked_mod.py"] == b"Y = 2\n"
        assert files["blob.bin"] == BINARY[::-1]
        assert "gone.txt" not in files
        assert "debug.log" not in files and "build/out.o" not in files
        assert os.stat(ws.path / "pkg/code.py").st_mode & 0o111
        assert ws.from_git and ws.diff() == ""
        # The user's state is one commit on top of their HEAD, on their branch.
        assert git(ws.path, "status", "--porcelain") == ""
        assert git(ws.path, "rev-parse", "--abbrev-ref", "HEAD").strip() == "main"
        assert git(ws.path, "rev-parse", "HEAD~1").strip() == git(dirty_repo, "rev-parse", "HEAD").strip()


def test_users_git_dir_and_tree_unchanged(dirty_repo: Path) -> None:
    # Stale stat data in the index is what makes `git status` rewrite it.
    time.sleep(0.01)
    os.utime(dirty_repo / "pkg/code.py")
    before_git, before_tree = tree_digest(dirty_repo / ".git"), tree_digest(dirty_repo)
    with Workspace.create(dirty_repo) as ws:
        (ws.path / "mod.txt").write_text("agent was here\n")
        git(ws.path, "commit", "-qam", "agent commit")
        assert "agent was here" in ws.diff()
    assert tree_digest(dirty_repo / ".git") == before_git
    assert tree_digest(dirty_repo) == before_tree


def test_diff_covers_edit_add_delete_binary_and_mode(dirty_repo: Path) -> None:
    with Workspace.create(dirty_repo) as ws:
        (ws.path / "mod.txt").write_text("one\n2\nthree\n")
        (ws.path / "added.txt").write_text("added\n")
        (ws.path / "untracked.txt").unlink()
        (ws.path / "blob.bin").write_bytes(BINARY)
        (ws.path / "debug2.log").write_text("ignored, not in the patch\n")
        os.chmod(ws.path / "staged_new.txt", 0o755)
        patch = ws.diff()
    assert "-two\n+2\n" in patch
    assert "new file mode 100644" in patch and "+added" in patch
    assert "deleted file mode" in patch and "untracked.txt" in patch
    assert "GIT binary patch" in patch
    assert "old mode 100644\nnew mode 100755" in patch
    assert "debug2.log" not in patch


def test_diff_survives_agent_destroying_its_git_dir(dirty_repo: Path) -> None:
    with Workspace.create(dirty_repo) as ws:
        git(ws.path, "reflog", "expire", "--expire=now", "--all")
        git(ws.path, "gc", "-q", "--prune=now")
        shutil.rmtree(ws.path / ".git")
        (ws.path / "mod.txt").write_text("rewritten\n")
        patch = ws.diff()
        assert "+rewritten" in patch and ".git/" not in patch
        ws.apply_to()
    assert (dirty_repo / "mod.txt").read_text() == "rewritten\n"


def test_shadow_objects_share_no_inode_with_the_workspace(dirty_repo: Path) -> None:
    with Workspace.create(dirty_repo) as ws:
        inodes = {os.stat(os.path.join(d, f)).st_ino for d, _, fs in os.walk(ws.path / ".git" / "objects") for f in fs}
        shadow = ws.root / "shadow.git" / "objects"
        copied = [os.path.join(d, f) for d, _, fs in os.walk(shadow) for f in fs]
        assert copied and not inodes & {os.stat(p).st_ino for p in copied}


def test_failing_diff_is_one_clear_error(dirty_repo: Path) -> None:
    with Workspace.create(dirty_repo) as ws:
        shutil.rmtree(ws.root / "shadow.git" / "objects")  # as if the shadow store were lost
        (ws.root / "shadow.git" / "objects").mkdir()
        with pytest.raises(DiffError) as err:
            ws.diff()
    message = str(err.value)
    assert message.startswith("could not compute the workspace's changes: ") and "\n" not in message


def test_apply_to_clean(dirty_repo: Path) -> None:
    with Workspace.create(dirty_repo) as ws:
        (ws.path / "mod.txt").write_text("one\ntwo\nthree\nfour\n")
        (ws.path / "pkg/new.py").write_text("Z = 3\n")
        (ws.path / "blob.bin").write_bytes(b"\x00new binary\xff")
        (ws.path / "staged_new.txt").unlink()
        expected = ws_files(ws)
        ws.apply_to()
    assert (dirty_repo / "mod.txt").read_text() == "one\ntwo\nthree\nfour\n"
    assert (dirty_repo / "pkg/new.py").read_text() == "Z = 3\n"
    assert (dirty_repo / "blob.bin").read_bytes() == b"\x00new binary\xff"
    assert not (dirty_repo / "staged_new.txt").exists()
    for rel, content in expected.items():
        assert (dirty_repo / rel).read_bytes() == content


def test_apply_to_conflict_is_refused_and_changes_nothing(dirty_repo: Path) -> None:
    with Workspace.create(dirty_repo) as ws:
        (ws.path / "mod.txt").write_text("one\nTWO from agent\nthree\n")
        (ws.path / "other.txt").write_text("would be added\n")
        # Meanwhile the user edits the same line.
        (dirty_repo / "mod.txt").write_text("one\nTWO from user\nthree\n")
        before_git, before_tree = tree_digest(dirty_repo / ".git"), tree_digest(dirty_repo)
        with pytest.raises(PatchConflict, match="mod.txt"):
            ws.apply_to()
    assert tree_digest(dirty_repo / ".git") == before_git
    assert tree_digest(dirty_repo) == before_tree
    assert not (dirty_repo / "other.txt").exists()


def test_non_git_folder_is_copied_and_diffable(tmp_path: Path) -> None:
    src = tmp_path / "plain"
    write_files(src, {
        "main.py": "print('hi')\n",
        "data/blob.bin": BINARY,
        "sub/.git/HEAD": "nested repo data\n",
        ".venv/bin/python": "venv\n",
        "env2/pyvenv.cfg": "home = /usr\n",
        "pkg/__pycache__/x.pyc": "cache\n",
        "node_modules/m/index.js": "js\n",
    })
    (src / "link").symlink_to("/etc/hostname")
    os.mkfifo(src / "fifo")
    with Workspace.create(src) as ws:
        files = ws_files(ws)
        assert set(files) >= {"main.py", "data/blob.bin"}
        assert not any(k.startswith((".venv", "env2", "node_modules", "sub/.git")) or "__pycache__" in k for k in files)
        assert os.readlink(ws.path / "link") == "/etc/hostname"
        assert not os.path.lexists(ws.path / "fifo")
        assert not ws.from_git and ws.diff() == ""
        (ws.path / "main.py").write_text("print('bye')\n")
        assert "+print('bye')" in ws.diff()
        ws.apply_to()
    assert (src / "main.py").read_text() == "print('bye')\n"
    assert not (src / ".git").exists()


def test_apply_to_subfolder_of_a_repo_uses_the_folder_as_root(tmp_path: Path) -> None:
    outer = make_repo(tmp_path / "outer", {"proj/app.py": "A = 1\n", "app.py": "OUTER = 1\n"})
    with Workspace.create(outer / "proj") as ws:
        assert not ws.from_git
        (ws.path / "app.py").write_text("A = 2\n")
        ws.apply_to()
    assert (outer / "proj/app.py").read_text() == "A = 2\n"
    assert (outer / "app.py").read_text() == "OUTER = 1\n"


def test_repo_without_commits(tmp_path: Path) -> None:
    repo = tmp_path / "fresh"
    repo.mkdir()
    git(repo, "init", "-q")
    write_files(repo, {"a.py": "a\n", "x.log": "x\n", ".gitignore": "*.log\n"})
    with Workspace.create(repo) as ws:
        assert set(ws_files(ws)) == {"a.py", ".gitignore"}
        (ws.path / "a.py").write_text("b\n")
        assert "+b" in ws.diff()


def test_git_worktree_source(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "main", {"f.txt": "main\n"})
    git(repo, "branch", "feature")
    wt = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", str(wt), "feature")
    (wt / "f.txt").write_text("feature work\n")
    before = tree_digest(repo / ".git")
    with Workspace.create(wt) as ws:
        assert (ws.path / "f.txt").read_text() == "feature work\n"
        assert git(ws.path, "rev-parse", "--abbrev-ref", "HEAD").strip() == "feature"
    assert tree_digest(repo / ".git") == before


def test_cleanup_on_exception_and_keyboard_interrupt(dirty_repo: Path) -> None:
    for exc in (ValueError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(exc)):
            with Workspace.create(dirty_repo) as ws:
                root = ws.root
                assert root.exists()
                raise exc
        assert not root.exists()
        assert root not in cleanup_mod._live


@needs_bwrap
def test_ctrl_c_during_sandboxed_run_leaves_nothing(dirty_repo: Path) -> None:
    marker = "1000.4242"
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    # Python's own Ctrl-C behaviour, whatever an earlier test in this process left installed
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    with pytest.raises(KeyboardInterrupt):
        with Workspace.create(dirty_repo) as ws:
            root = ws.root
            timer.start()
            Sandbox(ws, limits=TEST_LIMITS).run(f"sleep {marker}", timeout=30)
    timer.join()
    signal.signal(signal.SIGINT, previous)
    assert not root.exists()
    assert processes_matching(f"sleep {marker}") == []


def test_cleanup_is_idempotent_and_closed_workspace_refuses(dirty_repo: Path) -> None:
    ws = Workspace.create(dirty_repo)
    ws.cleanup()
    ws.cleanup()
    assert not ws.root.exists()
    with pytest.raises(SandboxError, match="cleaned up"):
        ws.diff()


_CHILD = """
import sys, time
from sandbox import Workspace
ws = Workspace.create(sys.argv[1])
print(ws.root, flush=True)
time.sleep(60)
"""


def _spawn_holder(repo: Path) -> tuple[subprocess.Popen[str], Path]:
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(repo)], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    assert proc.stdout is not None
    root = Path(proc.stdout.readline().strip())
    assert root.exists()
    return proc, root


def test_sigterm_removes_workspace(dirty_repo: Path) -> None:
    proc, root = _spawn_holder(dirty_repo)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == -signal.SIGTERM
    assert not root.exists()


def test_kill_9_leftovers_are_swept_and_user_repo_untouched(dirty_repo: Path) -> None:
    before = tree_digest(dirty_repo / ".git")
    proc, root = _spawn_holder(dirty_repo)
    proc.kill()
    proc.wait(timeout=20)
    assert root.exists()  # nothing can run on SIGKILL...
    assert root in cleanup_mod.sweep_stale(WS_PREFIX, root.parent)  # ...so the next run sweeps
    assert not root.exists()
    assert tree_digest(dirty_repo / ".git") == before


def test_source_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SourceNotFound, match="does not exist"):
        Workspace.create(tmp_path / "missing")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(SourceNotADirectory, match="not a directory"):
        Workspace.create(tmp_path / "file.txt")
    monkeypatch.setattr(os, "access", lambda *a, **k: False)  # root reads everything
    with pytest.raises(SourceNotReadable, match="not readable"):
        Workspace.create(tmp_path)
    assert issubclass(SourceNotFound, SandboxError) and issubclass(SandboxError, RuntimeError)


def test_no_workspace_dirs_left(tmp_path: Path) -> None:
    """Creation failures (here: git cannot clone a broken repo) clean up too."""
    broken = tmp_path / "broken"
    (broken / ".git").mkdir(parents=True)
    before = {p for p in Path(cleanup_mod.temp_root()).glob(f"{WS_PREFIX}{os.getpid()}-*")}
    with pytest.raises(SandboxError):
        Workspace.create(broken)
    after = {p for p in Path(cleanup_mod.temp_root()).glob(f"{WS_PREFIX}{os.getpid()}-*")}
    assert after == before


@pytest.mark.parametrize("link", ["/etc/passwd", "../outside", "sub/../../x", "via/escape"])
def test_apply_refuses_symlinks_pointing_outside(tmp_path: Path, link: str) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "a\n", "sub/b.txt": "b\n"})
    (repo / "via").symlink_to(tmp_path)  # the user's own link out: a new link through it leaves too
    before = tree_digest(repo)
    with Workspace.create(repo) as ws:
        (ws.path / "a.txt").write_text("changed\n")
        (ws.path / "evil").symlink_to(link)
        with pytest.raises(PatchRefused, match="symlink evil would point outside") as err:
            ws.apply_to()
        assert "\n" not in str(err.value)
    assert tree_digest(repo) == before


def test_apply_keeps_symlinks_inside_the_repo(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "a\n", "sub/b.txt": "b\n"})
    with Workspace.create(repo) as ws:
        (ws.path / "sub" / "link").symlink_to("../a.txt")
        ws.apply_to()
    assert os.readlink(repo / "sub" / "link") == "../a.txt"

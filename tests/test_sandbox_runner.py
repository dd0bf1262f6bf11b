"""Runner behaviour: results, cwd, refusing to run unconfined, the unconfined
fallback, the bwrap command line and the interpreter's bind list."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest
from sandbox_fixtures import TEST_LIMITS, UNCONFINED_PYTHON, needs_bwrap, processes_matching, sb, ws_dir  # noqa: F401

import sandbox.bwrap as bw
from sandbox import CommandResult, Limits, Sandbox, SandboxError, SandboxUnavailable
from sandbox.interpreter import PythonInstall, probe_python


@needs_bwrap
def test_exit_code_output_and_cwd(sb: Sandbox, ws_dir: Path) -> None:
    (ws_dir / "sub").mkdir()
    r = sb.run("echo out; echo err >&2; pwd; exit 3", timeout=20, cwd="sub")
    assert isinstance(r, CommandResult)
    assert (r.exit_code, r.timed_out, r.truncated, r.elided_bytes) == (3, False, False, 0)
    assert r.output == "out\nerr\n/workspace/sub\n"
    assert not r.ok and sb.run("true", timeout=20).ok
    for bad in ("/etc", "../x", "missing"):
        with pytest.raises(SandboxError):
            sb.run("true", timeout=5, cwd=bad)


@needs_bwrap
def test_workspace_is_writable_and_changes_reach_host(sb: Sandbox, ws_dir: Path) -> None:
    r = sb.run("echo made > made.txt && mkdir -p d && echo x > d/y", timeout=20)
    assert r.exit_code == 0
    assert (ws_dir / "made.txt").read_text() == "made\n"
    assert (ws_dir / "d/y").exists()


@needs_bwrap
def test_private_workspace_folders_work(ws_dir: Path) -> None:
    """tempfile.mkdtemp makes 0700 folders; as root they are handed to the command's uid."""
    ws_dir.chmod(0o700)
    box = Sandbox(ws_dir, limits=TEST_LIMITS)
    assert box.run("mkdir -m 700 private && echo x > private/f", timeout=20).exit_code == 0
    r = box.run("cat f; pwd; python -c 'print(1)'", timeout=30, cwd="private")
    assert (r.exit_code, r.output) == (0, "x\n/workspace/private\n1\n"), r.output


@needs_bwrap
def test_extra_env_is_passed(ws_dir: Path) -> None:
    box = Sandbox(ws_dir, limits=TEST_LIMITS, env={"FOO": "bar baz"})
    assert box.run('printf %s "$FOO"', timeout=20).output == "bar baz"


@needs_bwrap
def test_file_size_limit(ws_dir: Path) -> None:
    box = Sandbox(ws_dir, limits=Limits(file_size_bytes=1 << 20))
    r = box.run("head -c 5000000 /dev/zero > big.bin", timeout=20)
    assert r.exit_code != 0
    assert (ws_dir / "big.bin").stat().st_size <= 1 << 20


def test_refuses_without_bwrap(ws_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bw, "find_bwrap", lambda: "/nonexistent/bwrap")
    with pytest.raises(SandboxUnavailable, match="refusing to run commands unconfined"):
        Sandbox(ws_dir)
    monkeypatch.setattr(bw, "find_bwrap", lambda: "/bin/false")  # exists, cannot sandbox
    with pytest.raises(SandboxUnavailable, match="failed"):
        Sandbox(ws_dir)
    monkeypatch.setattr(bw, "find_bwrap", lambda: None)
    with pytest.raises(SandboxUnavailable, match="no bwrap"):
        Sandbox(ws_dir)


def test_unconfined_fallback_warns_and_still_limits(ws_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bw, "find_bwrap", lambda: None)
    with pytest.warns(RuntimeWarning, match="UNCONFINED"):
        box = Sandbox(ws_dir, limits=Limits(address_space_bytes=1 << 30, output_head_bytes=100,
                                            output_tail_bytes=100), allow_unconfined=True,
                      python=UNCONFINED_PYTHON)
    assert not box.confined
    r = box.run("pwd; cat hello.txt; echo $HOME", timeout=20)
    assert r.output.splitlines()[:2] == [str(ws_dir.resolve()), "hello"]
    assert not os.path.exists(r.output.splitlines()[2])  # private HOME removed afterwards
    r = box.run('python -c "bytearray(4 * 1024**3)"', timeout=20)
    assert "MemoryError" in r.output
    r = box.run("while :; do :; done", timeout=0.5)
    assert r.timed_out
    r = box.run("head -c 100000 /dev/zero | tr '\\0' a", timeout=20)
    assert r.truncated and r.elided_bytes == 100000 - 200


def test_unconfined_fallback_kills_leftovers(ws_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bw, "find_bwrap", lambda: None)
    with pytest.warns(RuntimeWarning):
        box = Sandbox(ws_dir, limits=TEST_LIMITS, allow_unconfined=True, python=UNCONFINED_PYTHON)
    tag = uuid.uuid4().int % 10**6
    r = box.run(f"sleep 1000.{tag}1 & (setsid sleep 1000.{tag}2 &); echo started", timeout=20)
    assert r.output.strip() == "started" and r.duration_s < 5
    assert processes_matching(f"1000.{tag}") == []


def test_bwrap_argv_binds_only_what_is_needed(tmp_path: Path) -> None:
    etc = bw.filtered_etc()
    argv = bw.build_argv("bwrap", ["bash", "-c", "true"], workspace=str(tmp_path), ro_binds=["/opt/py"],
                         env={"PATH": "/usr/bin"}, cwd=bw.WORKDIR, tmpfs_bytes=1 << 20, etc_dir=etc)
    binds = [argv[i + 1] for i, a in enumerate(argv) if a in ("--ro-bind", "--ro-bind-try", "--bind")]
    assert "/etc" not in binds and "/" not in binds
    assert not any(b.startswith(("/root", "/home", "/work")) for b in binds)
    assert "/opt/py" in binds and str(tmp_path) in binds and etc in binds
    assert argv[argv.index(etc) + 1] == "/etc"
    copied = set(os.listdir(etc))
    assert "passwd" in copied and "ld.so.cache" in copied
    assert not copied & {"shadow", "gshadow", "ssh", "pip.conf", "npmrc", "machine-id"}
    assert not os.path.exists(os.path.join(etc, "ssl", "private"))
    for flag in ("--unshare-all", "--die-with-parent", "--new-session", "--clearenv", "--cap-drop"):
        assert flag in argv
    assert argv[argv.index("--remount-ro", argv.index("--bind")) + 1] == "/"
    assert argv[-4:] == ["--", "bash", "-c", "true"]


@pytest.mark.parametrize("path", ["/", "/root", "/home", "/etc", str(Path.home())])
def test_dangerous_binds_are_refused(path: str) -> None:
    with pytest.raises(SandboxError, match="refusing"):
        bw.check_bind_safe(path)


def test_home_parent_bind_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/srv/users/alice")
    with pytest.raises(SandboxError, match="contains the home"):
        bw.check_bind_safe("/srv/users")
    bw.check_bind_safe("/srv/users/alice/.pyenv/versions/3.12")


def test_interpreter_mount_paths(tmp_path: Path) -> None:
    venv, base = tmp_path / "proj/.venv", tmp_path / "pyenv/3.11"
    for d in (venv / "bin", venv / "lib/python3.11/site-packages", base / "bin", base / "lib"):
        d.mkdir(parents=True)
    info = PythonInstall(
        executable=str(venv / "bin/python"), real_executable=str(base / "bin/python3.11"),
        prefix=str(venv), base_prefix=str(base), exec_prefix=str(venv), base_exec_prefix=str(base),
        site_packages=(str(venv / "lib/python3.11/site-packages"),), version="3.11.7",
    )
    assert info.is_venv and info.bin_dir == str(venv / "bin")
    assert sorted(info.mount_paths()) == sorted([str(venv), str(base)])  # nested paths folded, project not bound
    assert info.mount_paths(covered=(str(tmp_path / "pyenv"),)) == [str(venv)]


def test_probe_python_reports_this_interpreter() -> None:
    info = probe_python(sys.executable)
    assert info.prefix == sys.prefix and info.base_prefix == sys.base_prefix
    assert info.executable == os.path.abspath(sys.executable)


def test_missing_interpreter_is_a_clear_error(ws_dir: Path) -> None:
    with pytest.raises(SandboxError, match="not found"):
        Sandbox(ws_dir, python="/nonexistent/python3")


def test_limits_validate() -> None:
    with pytest.raises(ValueError, match="cpu_seconds"):
        Limits(cpu_seconds=0)


@needs_bwrap
def test_find_bwrap_skips_a_candidate_that_cannot_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    real = bw.find_bwrap()
    assert real is not None
    monkeypatch.setattr(bw, "bwrap_candidates", lambda: ["/bin/false", real])
    assert bw.find_bwrap() == real
    monkeypatch.setattr(bw, "bwrap_candidates", lambda: ["/bin/false"])
    assert bw.find_bwrap() == "/bin/false" and not bw.bwrap_works("/bin/false")

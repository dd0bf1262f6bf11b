"""Containment through the real bubblewrap sandbox: each test tries to escape,
checks the host is unchanged, and that the sandbox still works afterwards."""

from __future__ import annotations

import os
import socket
import sys
import threading
import tracemalloc
import uuid
from pathlib import Path

import pytest
from sandbox_fixtures import (  # noqa: F401 - fixtures
    TEST_LIMITS,
    assert_usable,
    host_pids,
    make_repo,
    needs_bwrap,
    processes_matching,
    sb,
    ws_dir,
)

from sandbox import Limits, Sandbox, Workspace

pytestmark = needs_bwrap


def test_runs_in_workspace_with_minimal_env(sb: Sandbox, monkeypatch) -> None:
    monkeypatch.setenv("PS_TEST_SECRET_TOKEN", "hunter2")
    r = sb.run("pwd; cat hello.txt; env; echo marker-$HOME", timeout=20)
    assert r.exit_code == 0
    assert r.output.startswith("/workspace\nhello\n")
    assert "hunter2" not in r.output and "PS_TEST_SECRET_TOKEN" not in r.output
    assert "marker-/home/sandbox" in r.output


def test_no_capabilities_and_own_pid_namespace(sb: Sandbox) -> None:
    r = sb.run("grep CapEff /proc/self/status; ls /proc | grep -c '^[0-9]'", timeout=20)
    lines = r.output.split()
    assert lines[:2] == ["CapEff:", "0000000000000000"]
    assert int(lines[2]) < 10  # bwrap init, bash, ls, grep: not the host's processes


@pytest.mark.parametrize("target", ["/work", "/etc", "/root", "/usr", "/", "/work/main/.venv"])
def test_cannot_write_outside_workspace(sb: Sandbox, target: str) -> None:
    name = f"pwned-{uuid.uuid4().hex}"
    r = sb.run(f"echo x > {target}/{name}", timeout=20)
    assert r.exit_code != 0
    assert not os.path.exists(f"{target}/{name}")
    assert_usable(sb)


def test_private_tmp_and_home_are_not_the_hosts(sb: Sandbox) -> None:
    name = f"ps-test-{uuid.uuid4().hex}"
    r = sb.run(f"echo x > /tmp/{name} && echo y > $HOME/{name} && echo written", timeout=20)
    assert r.output.strip() == "written"
    assert not os.path.exists(f"/tmp/{name}") and not (Path.home() / name).exists()
    # ...and they do not survive into the next command.
    assert sb.run(f"cat /tmp/{name}", timeout=20).exit_code != 0


def test_host_home_and_secrets_not_visible(sb: Sandbox, tmp_path: Path) -> None:
    secret = Path.home() / f".ps-secret-test-{uuid.uuid4().hex}"
    planted = tmp_path / "planted-secret.txt"
    secret.write_text("TOPSECRET-home\n")
    planted.write_text("TOPSECRET-tmp\n")
    try:
        for path in (secret, planted, "/etc/shadow", __file__):  # __file__: under /work
            r = sb.run(f"cat {path}", timeout=20)
            assert r.exit_code != 0 and "No such file" in r.output
            assert "TOPSECRET" not in r.output and "Containment through" not in r.output
        listing = sb.run(f"ls -a {Path.home()}", timeout=20).output
        assert secret.name not in listing
    finally:
        secret.unlink()
    assert_usable(sb)


def test_only_the_interpreter_is_visible_of_its_project(sb: Sandbox) -> None:
    """The venv lives in a project folder; only the venv itself is bound."""
    project = Path(sb.python_install.prefix).parent
    r = sb.run(f"ls -a {project}", timeout=20)
    shown = set(r.output.split()) - {".", ".."}
    assert shown <= {Path(sb.python_install.prefix).name}, shown


def test_chosen_interpreter_works_inside(sb: Sandbox) -> None:
    r = sb.run('python -c "import pytest, sys; print(sys.prefix)"', timeout=60)
    assert r.exit_code == 0, r.output
    assert r.output.strip() == sys.prefix
    assert sb.python == os.path.abspath(sys.executable)


def test_network_is_unreachable(sb: Sandbox) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    accepted: list[object] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                accepted.append(server.accept())
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    code = (
        "import socket\n"
        "for host, port in (('1.1.1.1', 53), ('127.0.0.1', {port})):\n"
        "    s = socket.socket(); s.settimeout(3)\n"
        "    try:\n"
        "        s.connect((host, port)); print('CONNECTED', host)\n"
        "    except OSError as e:\n"
        "        print('blocked', host, e.errno)\n"
    ).format(port=port)
    try:
        r = sb.run(f"python -c \"{code}\"", timeout=30)
    finally:
        stop.set()
        thread.join()
        server.close()
    assert "CONNECTED" not in r.output
    assert r.output.count("blocked") == 2, r.output
    assert accepted == []
    assert_usable(sb)


def test_symlink_out_of_repo_cannot_be_read(tmp_path: Path) -> None:
    outside = tmp_path / "outside-secret.txt"
    outside.write_text("TOPSECRET-link\n")
    repo = make_repo(tmp_path / "repo", {"a.txt": "a\n"})
    (repo / "leak").symlink_to(outside)
    (repo / "leak_dir").symlink_to(tmp_path)
    with Workspace.create(repo) as ws:
        assert os.readlink(ws.path / "leak") == str(outside)  # copied as a link
        box = Sandbox(ws.path, limits=TEST_LIMITS)
        for cmd in ("cat leak", "cat leak_dir/outside-secret.txt", "ls leak_dir/"):
            r = box.run(cmd, timeout=20)
            assert r.exit_code != 0 and "No such file" in r.output, (cmd, r)
            assert "TOPSECRET" not in r.output
        assert_usable(box)


def test_memory_hog_is_stopped_by_address_space_limit(ws_dir: Path) -> None:
    box = Sandbox(ws_dir, limits=Limits(address_space_bytes=1 << 30))
    r = box.run('python -c "x = bytearray(8 * 1024**3); print(\'ALLOCATED\')"', timeout=30)
    assert r.exit_code != 0 and not r.timed_out
    assert "MemoryError" in r.output and "ALLOCATED" not in r.output
    assert_usable(box)


def test_infinite_loop_killed_at_timeout(sb: Sandbox) -> None:
    marker = f"loop{uuid.uuid4().hex[:12]}"
    r = sb.run(f"while true; do :; done # {marker}", timeout=1.0)
    assert r.timed_out and r.exit_code == 137
    assert 0.9 < r.duration_s < 4
    assert processes_matching(marker) == []
    assert_usable(sb)


def test_infinite_loop_killed_by_cpu_limit(ws_dir: Path) -> None:
    box = Sandbox(ws_dir, limits=Limits(cpu_seconds=1))
    r = box.run('python -c "while True: pass"', timeout=30)
    assert not r.timed_out
    assert r.exit_code in (128 + 9, 128 + 24)  # SIGKILL or SIGXCPU
    assert r.duration_s < 10
    assert_usable(box)


@pytest.mark.parametrize("cgroup", [True, False], ids=["with-pids-cgroup", "namespace-only"])
def test_processes_outliving_their_command_are_gone(sb: Sandbox, cgroup: bool, monkeypatch) -> None:
    if not cgroup:  # PID-namespace teardown alone must be enough
        monkeypatch.setattr("sandbox.runner.CommandCgroup.create", lambda max_pids, memory_bytes: None)
    tag = uuid.uuid4().int % 10**6
    cmd = (
        f"sleep 1000.{tag}1 & "
        f"setsid sleep 1000.{tag}2 & "
        f"(setsid sleep 1000.{tag}3 &) ; "
        f"nohup sleep 1000.{tag}4 >/dev/null 2>&1 & disown; "
        f"bash -c 'exec >/dev/null 2>&1; sleep 1000.{tag}5' & "
        # Not holding the output pipe: only the namespace teardown removes these.
        f"for i in 1 2 3 4 5 6 7 8; do sleep 1000.{tag}6 >/dev/null 2>&1 & done; "
        "echo started"
    )
    r = sb.run(cmd, timeout=20)
    assert r.output.strip() == "started" and r.exit_code == 0
    assert r.duration_s < 5  # background jobs do not hold run() up
    assert processes_matching(f"1000.{tag}") == []
    assert_usable(sb)


def test_huge_output_is_capped_in_bounded_memory(sb: Sandbox) -> None:
    total = 100_000_000
    tracemalloc.start()
    try:
        r = sb.run(f"yes 0123456789abcdef | head -c {total}", timeout=60)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    kept = TEST_LIMITS.output_head_bytes + TEST_LIMITS.output_tail_bytes
    assert r.exit_code == 0 and r.truncated
    assert r.elided_bytes == total - kept
    assert f"[{total - kept} bytes elided]" in r.output
    assert len(r.output) < kept + 100
    assert peak < 4 * 1024 * 1024, peak
    assert_usable(sb)


def test_tmpfs_size_is_capped(ws_dir: Path) -> None:
    box = Sandbox(ws_dir, limits=Limits(tmpfs_bytes=4 << 20))
    r = box.run("head -c 8000000 /dev/zero > /tmp/big", timeout=20)
    assert r.exit_code != 0 and "No space left" in r.output
    assert_usable(box)

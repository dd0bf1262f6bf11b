"""A throw-away pids cgroup per command: a hard cap on process count.

RLIMIT_NPROC does not bind root and counts per user across the host, so a
fork bomb is capped here instead, when a writable pids controller exists
(cgroup v1 ``pids`` hierarchy, or a delegated v2 subtree with ``pids``
enabled). The cgroup also lists every process a command left behind, even
ones that escaped its process group with setsid, so they can all be killed.
"""

from __future__ import annotations

import functools
import itertools
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from sandbox.cleanup import owner_pid

CG_PREFIX = "parametric-skills-"
_counter = itertools.count(1)  # next() is atomic under the GIL: thread-safe names
_swept = False


@functools.lru_cache(maxsize=1)
def pids_parent() -> Path | None:
    """Our own cgroup folder in a hierarchy with the pids controller, if writable."""
    try:
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
        groups = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    v1: tuple[str, str] | None = None  # (mount root, mount point)
    v2: tuple[str, str] | None = None
    for line in mounts:
        pre, _, post = line.partition(" - ")
        fields, tail = pre.split(), post.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        if tail[0] == "cgroup" and "pids" in tail[2].split(","):
            v1 = (fields[3], fields[4])
        elif tail[0] == "cgroup2":
            v2 = (fields[3], fields[4])
    for line in groups:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if v1 and "pids" in controllers.split(","):
            return _writable(_join(v1, path))
        if v2 and controllers == "" and parts[0] == "0" and not v1:
            folder = _join(v2, path)
            try:
                enabled = (folder / "cgroup.subtree_control").read_text().split()
            except OSError:
                return None
            return _writable(folder) if "pids" in enabled else None
    return None


def _join(mount: tuple[str, str], path: str) -> Path:
    root, point = mount
    rel = os.path.relpath(path, root) if path.startswith(root) else path.lstrip("/")
    return Path(point) / ("" if rel == "." else rel)


def _writable(folder: Path) -> Path | None:
    return folder if os.access(folder, os.W_OK) else None


@dataclass
class PidsCgroup:
    path: Path

    @property
    def procs_file(self) -> str:
        return str(self.path / "cgroup.procs")

    @classmethod
    def create(cls, max_pids: int) -> PidsCgroup | None:
        """A fresh cgroup limited to ``max_pids`` tasks, or None if unsupported."""
        global _swept
        parent = pids_parent()
        if parent is None:
            return None
        if not _swept:
            _swept = True
            sweep_stale(parent)
        path = parent / f"{CG_PREFIX}{os.getpid()}-{next(_counter)}"
        try:
            path.mkdir()
        except OSError:
            return None
        group = cls(path)
        try:
            (path / "pids.max").write_text(str(max_pids))
        except OSError:
            group.close()
            return None
        return group

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in Path(self.procs_file).read_text().split()]
        except (OSError, ValueError):
            return []

    def kill_all(self, deadline_s: float = 5.0) -> bool:
        """SIGKILL every member until none is left; True if it emptied."""
        kill_file = self.path / "cgroup.kill"  # v2 only: atomic, no fork race
        end = time.monotonic() + deadline_s
        while True:
            members = self.pids()
            if not members:
                return True
            if time.monotonic() > end:
                return False
            if kill_file.exists():
                try:
                    kill_file.write_text("1")
                except OSError:
                    pass
            for pid in members:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.005)

    def close(self) -> None:
        """Kill what is left, then remove the cgroup (it must be empty)."""
        self.kill_all()
        end = time.monotonic() + 2.0
        while True:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() > end:
                    return  # left for sweep_stale once this process is gone
                time.sleep(0.01)


def sweep_stale(parent: Path) -> None:
    """Remove cgroups of sandbox owners that died (e.g. kill -9)."""
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return
    for entry in entries:
        pid = owner_pid(entry.name, CG_PREFIX)
        if pid is None or pid == os.getpid() or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            os.kill(pid, 0)
            continue
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        PidsCgroup(Path(entry.path)).close()

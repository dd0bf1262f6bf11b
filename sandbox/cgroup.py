"""A throw-away cgroup per command: hard caps on process count and memory.

RLIMIT_NPROC counts per user across the host and RLIMIT_AS per process, so a
fork bomb or several large processes are capped here instead, where a
writable controller exists: cgroup v1 ``pids``/``memory`` hierarchies (one
folder in each), or a delegated v2 subtree with the controllers enabled (one
folder). The cgroup also lists every process a command left behind, even
ones that escaped its process group with setsid, so they can all be killed.
"""

from __future__ import annotations

import functools
import itertools
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from sandbox.cleanup import owner_pid

CG_PREFIX = "parametric-skills-"
CONTROLLERS = ("pids", "memory")
_counter = itertools.count(1)  # next() is atomic under the GIL: thread-safe names
_swept: set[Path] = set()


@functools.lru_cache(maxsize=4)
def controller_parent(controller: str) -> Path | None:
    """Our own cgroup folder in a hierarchy with ``controller``, if writable."""
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
        if tail[0] == "cgroup" and controller in tail[2].split(","):
            v1 = (fields[3], fields[4])
        elif tail[0] == "cgroup2":
            v2 = (fields[3], fields[4])
    for line in groups:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if v1 and controller in controllers.split(","):
            return _writable(_join(v1, path))
        if v2 and controllers == "" and parts[0] == "0" and not v1:
            folder = _join(v2, path)
            try:
                enabled = (folder / "cgroup.subtree_control").read_text().split()
            except OSError:
                return None
            return _writable(folder) if controller in enabled else None
    return None


def pids_parent() -> Path | None:
    return controller_parent("pids")


def memory_parent() -> Path | None:
    return controller_parent("memory")


def _join(mount: tuple[str, str], path: str) -> Path:
    root, point = mount
    rel = os.path.relpath(path, root) if path.startswith(root) else path.lstrip("/")
    return Path(point) / ("" if rel == "." else rel)


def _writable(folder: Path) -> Path | None:
    return folder if os.access(folder, os.W_OK) else None


def _write(path: Path, value: str) -> bool:
    try:
        path.write_text(value)
        return True
    except OSError:
        return False


@dataclass
class CommandCgroup:
    """One folder per hierarchy that holds a wanted controller (v2: one folder)."""

    paths: list[Path]
    pids_max: int | None = None  # None: no pids controller was available
    memory_max: int | None = None  # None: no memory controller was available
    _memory_path: Path | None = field(default=None, repr=False)

    @property
    def procs_files(self) -> list[str]:
        return [str(p / "cgroup.procs") for p in self.paths]

    @classmethod
    def create(cls, max_pids: int, memory_bytes: int) -> CommandCgroup | None:
        """Fresh cgroup(s) capping pids and memory, or None if neither controller is usable."""
        group = cls(paths=[])
        name = f"{CG_PREFIX}{os.getpid()}-{next(_counter)}"
        made: dict[Path, Path] = {}  # parent -> created folder (v2: shared by both controllers)
        for controller in CONTROLLERS:
            parent = controller_parent(controller)
            if parent is None:
                continue
            if parent not in _swept:
                _swept.add(parent)
                sweep_stale(parent)
            path = made.get(parent)
            if path is None:
                path = parent / name
                try:
                    path.mkdir()
                except OSError:
                    continue
                made[parent] = path
                group.paths.append(path)
            if controller == "pids" and _write(path / "pids.max", str(max_pids)):
                group.pids_max = max_pids
            elif controller == "memory" and _set_memory(path, memory_bytes):
                group.memory_max = memory_bytes
                group._memory_path = path
        if group.pids_max is None and group.memory_max is None:
            group.close()
            return None
        return group

    def pids(self) -> list[int]:
        found: set[int] = set()
        for procs in self.procs_files:
            try:
                found.update(int(p) for p in Path(procs).read_text().split())
            except (OSError, ValueError):
                pass
        return sorted(found)

    def oom_killed(self) -> bool:
        """True if the memory cap made the kernel kill a process of this command."""
        if self._memory_path is None:
            return False
        for name, key in (("memory.events", "oom_kill"), ("memory.oom_control", "oom_kill")):
            try:
                for line in (self._memory_path / name).read_text().splitlines():
                    k, _, v = line.partition(" ")
                    if k == key and v.strip().isdigit() and int(v) > 0:
                        return True
            except OSError:
                continue
        return False

    def kill_all(self, deadline_s: float = 5.0) -> bool:
        """SIGKILL every member until none is left; True if it emptied."""
        end = time.monotonic() + deadline_s
        while True:
            members = self.pids()
            if not members:
                return True
            if time.monotonic() > end:
                return False
            for path in self.paths:
                kill_file = path / "cgroup.kill"  # v2 only: atomic, no fork race
                if kill_file.exists():
                    _write(kill_file, "1")
            for pid in members:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.005)

    def close(self) -> None:
        """Kill what is left, then remove the cgroup folders (they must be empty)."""
        self.kill_all()
        for path in self.paths:
            end = time.monotonic() + 2.0
            while True:
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > end:
                        break  # left for sweep_stale once this process is gone
                    time.sleep(0.01)


def _set_memory(path: Path, limit: int) -> bool:
    if (path / "memory.max").exists():  # v2; no swap, or the cap would only slow a hog down
        ok = _write(path / "memory.max", str(limit))
        _write(path / "memory.swap.max", "0")
        return ok
    ok = _write(path / "memory.limit_in_bytes", str(limit))
    if (path / "memory.memsw.limit_in_bytes").exists():
        _write(path / "memory.memsw.limit_in_bytes", str(limit))
    return ok


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
        CommandCgroup(paths=[Path(entry.path)]).close()

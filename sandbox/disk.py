"""Workspace disk budget: measured after a command, reported when exceeded.

No quota can be set on an arbitrary host folder without privileges, so a
command can overshoot while it runs (each file is still capped by
RLIMIT_FSIZE); the caller checks after every command and ends the run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DiskUsage:
    used_bytes: int
    budget_bytes: int

    @property
    def over(self) -> bool:
        return self.used_bytes > self.budget_bytes

    @property
    def message(self) -> str:
        state = "over" if self.over else "within"
        return f"workspace uses {self.used_bytes} bytes, {state} its disk budget of {self.budget_bytes} bytes"


def tree_bytes(root: str | os.PathLike[str]) -> int:
    """Bytes a tree costs: per file the larger of its length and its allocation.

    A sparse file counts at its length, since diffing or reading it costs
    that much; hard-linked files count once; symlinks are not followed.
    """
    total = 0
    seen: set[tuple[int, int]] = set()
    stack = [os.fspath(root)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue  # removed meanwhile, or unreadable: nothing to count
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            if st.st_nlink > 1 and not entry.is_dir(follow_symlinks=False):
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            total += max(st.st_size, st.st_blocks * 512)
    return total


def check_disk_budget(root: str | os.PathLike[str], budget_bytes: int) -> DiskUsage:
    return DiskUsage(tree_bytes(Path(root)), budget_bytes)

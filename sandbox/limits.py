"""Resource limits for sandboxed commands, and the launcher that applies them.

rlimits are set by a tiny host-side bash launcher that then execs bwrap (or
the unconfined shell). Doing it there rather than in ``preexec_fn`` keeps
spawning safe in threaded programs (preexec_fn can deadlock after fork), and
the same launcher moves itself into the pids cgroup before anything forks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


@dataclass(frozen=True)
class Limits:
    """Per-command limits. rlimits apply to each process in the sandbox."""

    cpu_seconds: int = 300
    address_space_bytes: int = 4 * GiB
    # Enforced by a pids cgroup when one can be created; RLIMIT_NPROC is only
    # a fallback for non-root users (the kernel never applies it to root, and
    # it counts all of the user's processes on the host, not the sandbox's).
    max_processes: int = 256
    file_size_bytes: int = 1 * GiB
    # Size of each private tmpfs (/tmp, HOME, /dev/shm); they live in RAM.
    tmpfs_bytes: int = 512 * MiB
    output_head_bytes: int = 8 * KiB
    output_tail_bytes: int = 8 * KiB

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"Limits.{name} must be a positive int, got {value!r}")


# $1: cgroup.procs file to join ("" for none); $2..$5: cpu s, AS KiB, fsize
# KiB, nproc ("" for none); the rest: the argv to exec.
_LAUNCHER = (
    'if [ -n "$1" ]; then echo $$ > "$1" || exit 125; fi; '
    'ulimit -c 0 -t "$2" -v "$3" -f "$4" || exit 125; '
    'if [ -n "$5" ]; then ulimit -u "$5" || exit 125; fi; '
    'shift 5; exec "$@"'
)


def launcher_argv(limits: Limits, argv: list[str], *, cgroup_procs: str | None, bash: str = "/bin/bash") -> list[str]:
    """argv that applies ``limits`` (and joins the cgroup), then execs ``argv``."""
    use_nproc = cgroup_procs is None and os.geteuid() != 0
    return [
        bash, "-c", _LAUNCHER, "sandbox-launcher",
        cgroup_procs or "",
        str(limits.cpu_seconds),
        str(max(1, limits.address_space_bytes // KiB)),
        str(max(1, limits.file_size_bytes // KiB)),  # bash counts 1024-byte blocks
        str(limits.max_processes) if use_nproc else "",
        *argv,
    ]

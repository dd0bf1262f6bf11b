"""Resource limits for sandboxed commands, and the launcher that applies them.

rlimits are set by a tiny host-side bash launcher that then execs bwrap (or
the unconfined shell). Doing it there rather than in ``preexec_fn`` keeps
spawning safe in threaded programs (preexec_fn can deadlock after fork), and
the same launcher moves itself into the command's cgroups before anything
forks.
"""

from __future__ import annotations

from dataclasses import dataclass

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


@dataclass(frozen=True)
class Limits:
    """Per-command limits. rlimits apply to each process in the sandbox."""

    cpu_seconds: int = 300
    address_space_bytes: int = 4 * GiB
    # The whole command tree's memory (tmpfs pages included), enforced by a
    # memory cgroup where one can be made; without one, address_space_bytes x
    # max_processes is the bound.
    memory_bytes: int = 4 * GiB
    # Enforced by a pids cgroup when one can be created, else by RLIMIT_NPROC
    # (commands never run as root, whom the kernel exempts from it; it counts
    # all of the command uid's processes on the host, not just the sandbox's).
    max_processes: int = 256
    file_size_bytes: int = 1 * GiB
    # How much the workspace may grow over its size when the Sandbox was made;
    # checked after a command (Sandbox.check_disk), not during it.
    disk_bytes: int = 1 * GiB
    # Size of each private tmpfs (/tmp, HOME, /dev/shm); they live in RAM.
    tmpfs_bytes: int = 512 * MiB
    output_head_bytes: int = 8 * KiB
    output_tail_bytes: int = 8 * KiB

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"Limits.{name} must be a positive int, got {value!r}")


# $1: cgroup.procs files to join, space-separated ("" for none); $2..$5: cpu
# s, AS KiB, fsize KiB, nproc ("" for none); the rest: the argv to exec.
_LAUNCHER = (
    'set -f; for f in $1; do echo $$ > "$f" || exit 125; done; '
    'ulimit -c 0 -t "$2" -v "$3" -f "$4" || exit 125; '
    'if [ -n "$5" ]; then ulimit -u "$5" || exit 125; fi; '
    'shift 5; exec "$@"'
)


def launcher_argv(
    limits: Limits, argv: list[str], *, cgroup_procs: list[str], pids_capped: bool, bash: str = "/bin/bash"
) -> list[str]:
    """argv that applies ``limits`` (and joins the cgroups), then execs ``argv``.

    RLIMIT_NPROC is the fallback when no pids cgroup caps the command.
    """
    if any(ch.isspace() for f in cgroup_procs for ch in f):
        raise ValueError(f"cgroup paths with spaces are not supported: {cgroup_procs}")
    return [
        bash, "-c", _LAUNCHER, "sandbox-launcher",
        " ".join(cgroup_procs),
        str(limits.cpu_seconds),
        str(max(1, limits.address_space_bytes // KiB)),
        str(max(1, limits.file_size_bytes // KiB)),  # bash counts 1024-byte blocks
        "" if pids_capped else str(limits.max_processes),
        *argv,
    ]

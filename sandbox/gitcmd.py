"""Running the git CLI on the host with an environment we control."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from sandbox.errors import WorkspaceError

# Inherited variables that would point git at some other repository; they are
# set, for example, when the agent itself runs inside a git hook.
_REDIRECTING_VARS = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
    "GIT_CEILING_DIRECTORIES",
    "GIT_DISCOVERY_ACROSS_FILESYSTEM",
)

# Options that would run user or repository programs, prompt, or sign.
_SAFE_CONFIG = (
    "-c", "core.hooksPath=/dev/null",
    "-c", "core.fsmonitor=false",
    "-c", "commit.gpgsign=false",
    "-c", "advice.detachedHead=false",
    "-c", "init.defaultBranch=main",
)

IDENTITY = {
    "GIT_AUTHOR_NAME": "parametric-skills",
    "GIT_AUTHOR_EMAIL": "sandbox@parametric-skills.invalid",
    "GIT_COMMITTER_NAME": "parametric-skills",
    "GIT_COMMITTER_EMAIL": "sandbox@parametric-skills.invalid",
}


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _REDIRECTING_VARS}
    env.update(
        GIT_TERMINAL_PROMPT="0",
        # No opportunistic index refresh: the user's .git must not change.
        GIT_OPTIONAL_LOCKS="0",
        # No network here, and a pointer file is better than a failed checkout.
        GIT_LFS_SKIP_SMUDGE="1",
    )
    if extra:
        env.update(extra)
    return env


def run_git(
    args: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``git <args>``; raise WorkspaceError with git's message on failure."""
    try:
        proc = subprocess.run(
            ["git", *_SAFE_CONFIG, *args],
            cwd=cwd,
            env=git_env(env),
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
    except FileNotFoundError as exc:
        raise WorkspaceError("git is not installed (needed for workspaces)") from exc
    if check and proc.returncode != 0:
        message = proc.stderr.decode(errors="replace").strip() or proc.stdout.decode(errors="replace").strip()
        raise WorkspaceError(f"git {' '.join(args[:2])} failed in {cwd}: {message}")
    return proc


def git_out(args: Sequence[str], *, cwd: Path, env: Mapping[str, str] | None = None) -> str:
    return run_git(args, cwd=cwd, env=env).stdout.decode(errors="surrogateescape").strip()


def split_z(data: bytes) -> list[str]:
    """Split NUL-terminated path output (-z) into str paths, bytes preserved."""
    return [os.fsdecode(p) for p in data.split(b"\0") if p]

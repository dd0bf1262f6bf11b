"""Re-running a stored trajectory's tests: is its patch still a verified fix? (in the sandbox, fresh clone)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from memory.models import Trajectory

# --- what a trajectory holds, detached from the session ------------------------------------------

@dataclass(frozen=True)
class TrajectoryView:
    id: int
    task: str
    repo: str
    status: str
    verified: bool
    outcome: dict[str, Any]
    actions: list[dict[str, Any]]
    active_skills: list[dict[str, Any]]
    errors: int = 0

    @classmethod
    def from_row(cls, row: Trajectory) -> TrajectoryView:
        actions = [dict(st.action) for st in row.steps if st.role == "assistant" and st.action]
        return cls(row.id, row.task, row.repo, row.status, bool(row.verified), dict(row.outcome or {}), actions,
                   list(row.active_skills or []), int((row.extraction_info or {}).get("errors", 0)))

    @property
    def diff(self) -> str:
        return str(self.outcome.get("diff") or "")


@dataclass(frozen=True)
class Verification:
    ok: bool
    detail: str


def _python_of(test_cmd: str) -> str:
    """The interpreter a recorded test command names (solve writes it as an absolute path), else ours."""
    import os
    import shlex
    import sys

    try:
        first = shlex.split(test_cmd)[0]
    except (ValueError, IndexError):
        return sys.executable
    return first if os.path.isabs(first) and "python" in os.path.basename(first) else sys.executable


def verify_in_sandbox(view: TrajectoryView, allow_unconfined: bool = False, timeout: float = 300.0) -> Verification:
    """Re-run the trajectory's test command in a new workspace of its repo with its diff applied."""
    import tempfile
    from pathlib import Path

    from sandbox.gitcmd import run_git
    from sandbox.runner import Sandbox
    from sandbox.workspace import Workspace

    test_cmd = str(view.outcome.get("test_cmd") or "")
    if not Path(view.repo).is_dir():
        return Verification(False, f"repository {view.repo} is gone")
    with Workspace.create(view.repo) as ws:
        # host git touches the fresh copy before any sandboxed code has run in it, so its config is ours
        env = {"GIT_CEILING_DIRECTORIES": str(ws.root)}
        with tempfile.NamedTemporaryFile("wb", prefix="parametric-skills-", suffix=".patch") as fh:
            fh.write(view.diff.encode("utf-8", errors="surrogateescape"))
            fh.flush()
            args = ["apply", "--binary", "--whitespace=nowarn"]
            if run_git([*args, "--check", fh.name], cwd=ws.path, env=env, check=False).returncode == 0:
                run_git([*args, fh.name], cwd=ws.path, env=env)
            elif run_git([*args, "-R", "--check", fh.name], cwd=ws.path, env=env, check=False).returncode != 0:
                return Verification(False, "the diff no longer applies to the repository")
            # else: the repository already holds the fix (solve --apply): test it as it is
        runner = Sandbox(ws.path, python=_python_of(test_cmd), allow_unconfined=allow_unconfined)
        result = runner.run(test_cmd, timeout=timeout)
    tail = result.output.strip().splitlines()[-1:] or [""]
    return Verification(result.ok, f"exit code {result.exit_code}: {tail[0][:200]}")

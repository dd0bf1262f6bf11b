"""`agent solve`: a workspace, a sandbox, the loop, and the trajectory in the store.

The user's repo is only read (to make the workspace) unless `apply` is set; the
workspace is removed on every exit path.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from agent.runtime import loop
from agent.runtime.actions import Action
from agent.runtime.test_report import compact
from agent.runtime.tools import Observation, Tools
from memory import trajectories
from memory.db import Store

MODES = ("parametric", "icl", "none")


class SolveError(ValueError):
    """Bad input to a solve: empty task, unknown mode, tests that cannot be found."""


@dataclass
class SolveRequest:
    repo: Path
    task: str
    mode: str = "parametric"
    model_name: str = "smollm2-135m-instruct"
    test_cmd: str | None = None
    python: str | None = None
    sandbox: bool = True
    apply: bool = False
    limits: loop.Limits = field(default_factory=loop.Limits)
    command_timeout: float = 60.0

    def validate(self) -> None:
        if not self.task.strip():
            raise SolveError("the task is empty: say what to do, e.g. \"fix the failing test\"")
        if self.mode not in MODES:
            raise SolveError(f"unknown mode {self.mode!r} (one of {', '.join(MODES)})")


@dataclass
class SkillContext:
    """What the retrieved skills contribute: prompt text (icl) and/or nothing visible (parametric)."""

    active: list[dict] = field(default_factory=list)
    prompt: str = ""


@dataclass
class SolveReport:
    trajectory_id: int
    status: str
    verified: bool
    tests_before: dict
    tests_after: dict
    diff: str
    steps: int
    tokens: int
    seconds: float
    active_skills: list[dict]
    applied: bool = False
    attempt: int = 1  # which attempt this is (generate-and-validate: the first verified one wins)
    attempts: list[int] = field(default_factory=list)  # every attempt's trajectory id, in order

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def _tests(obs: Observation) -> dict:
    return {"passed": obs.ok, "exit_code": obs.exit_code, "tail": obs.text[-1500:]}


def task_message(task: str, test_cmd: str, before: Observation) -> str:
    """The task as the model first sees it: the request, the test command and the compacted test report."""
    head, _, output = before.text.partition("\n")
    return f"{task}\n\nTest command: {test_cmd}\nCurrent test result:\n{head}\n{loop.truncate(compact(output, test_cmd), 1500)}"


def solve(request: SolveRequest, store: Store, chat: loop.ChatModel, skills: SkillContext,
          on_step: Callable[[int, Action | None, Observation | str], None] | None = None,
          on_phase: Callable[[str], None] | None = None, attempt: tuple[int, int | None] = (1, None),
          apply_unverified: bool = True) -> SolveReport:
    from sandbox.runner import Sandbox
    from sandbox.testcmd import detect_test_command
    from sandbox.workspace import Workspace

    request.validate()
    phase = on_phase or (lambda text: None)
    with Workspace.create(request.repo) as ws:
        runner = Sandbox(ws.path, python=request.python or sys.executable, allow_unconfined=not request.sandbox)
        test_cmd = request.test_cmd or detect_test_command(ws.path, runner.python)
        if not test_cmd:
            raise SolveError(f"{request.repo}: cannot detect how to run its tests; pass --test-cmd")
        tools = Tools(ws.path, runner, test_cmd, timeout=request.command_timeout)
        phase(f"running the tests before: {test_cmd}")
        before = tools.run_tests()
        with store.session() as s:
            tid = trajectories.start(s, task=request.task, repo=str(request.repo), mode=request.mode,
                                     model=request.model_name, active_skills=skills.active)
        idx = 0

        def record(message: dict, action: dict | None) -> None:
            nonlocal idx
            with store.session() as s:  # one transaction per message: a crash keeps what came before
                trajectories.add_step(s, tid, idx, message["role"], message["content"], action)
            idx += 1

        system = loop.SYSTEM + (f"\n\n{skills.prompt}" if skills.prompt else "")
        task = task_message(request.task, test_cmd, before)
        status, result = "error", None
        try:
            result = loop.run(chat, tools, task, limits=request.limits, system=system, record=record,
                              on_step=on_step)
            status = result.status
        finally:
            # a fresh test run decides the outcome, whatever the model claimed
            phase("running the tests after")
            after = tools.run_tests()
            diff = ws.diff()
            verified = (not before.ok) and after.ok
            outcome = {"tests_before": _tests(before), "tests_after": _tests(after), "diff": diff,
                       "test_cmd": test_cmd, "sandboxed": runner.confined, "attempt": attempt[0]}
            if attempt[1] is not None:
                outcome["first_attempt_trajectory"] = attempt[1]
            with store.session() as s:
                trajectories.finish(s, tid, status=status, outcome=outcome, verified=verified,
                                    tokens=result.tokens if result else 0)
        applied = False
        if request.apply and diff and (verified or apply_unverified):
            ws.apply_to(request.repo)
            applied = True
    return SolveReport(tid, status, verified, _tests(before), _tests(after), diff, result.steps, result.tokens,
                       round(result.seconds, 2), skills.active, applied, attempt[0], [tid])


def solve_attempts(request: SolveRequest, store: Store, open_chat: Callable[[int], Any], skills: SkillContext,
                   attempts: int = 1, on_attempt: Callable[[int], None] | None = None, **kw: Any) -> SolveReport:
    """Generate and validate: up to `attempts` independent runs, each in a fresh workspace with its own
    chat (`open_chat(k)`: another sampling seed), stopping at the first whose fresh test run passes.
    Every attempt's trajectory is stored; each names the first attempt's, and the report says which won."""
    if attempts < 1:
        raise SolveError(f"--attempts must be at least 1 (got {attempts})")
    ids: list[int] = []
    for k in range(1, attempts + 1):
        if on_attempt:
            on_attempt(k)
        with open_chat(k) as chat:
            report = solve(request, store, chat, skills, attempt=(k, ids[0] if ids else None),
                           apply_unverified=k == attempts, **kw)
        ids.append(report.trajectory_id)
        if report.verified:
            break
    report.attempts = ids
    return report

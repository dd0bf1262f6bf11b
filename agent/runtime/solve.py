"""`agent solve`: a workspace, a sandbox, the loop, and the trajectory in the store.

The user's repo is only read (to make the workspace) unless `apply` is set; the
workspace is removed on every exit path.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from agent.runtime import loop
from agent.runtime.actions import Action
from agent.runtime.tools import Observation, Tools
from memory import trajectories
from memory.db import Store

if TYPE_CHECKING:
    from sandbox.limits import Limits as SandboxLimits

MODES = ("parametric", "icl", "none")


# What the store keeps (and `agent solve` prints) of a run: a command can write far more (issue 16).
DIFF_CAP = 200_000  # bytes of the final diff
MESSAGE_CAP = 20_000  # bytes per stored message; the loop shows the model much less (loop.OBS_LIMIT)


class SolveError(ValueError):
    """Bad input to a solve: empty task, unknown mode, tests that cannot be found."""


class RunFailed(RuntimeError):
    """The end of a run failed (tests after, diff, --apply, the store); the trajectory was closed as `error`.
    The message is one line."""


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
    sandbox_limits: SandboxLimits | None = None  # None: the sandbox's defaults (1 GiB disk budget, ...)

    def validate(self) -> None:
        if not self.task.strip():
            raise SolveError("the task is empty: say what to do, e.g. \"fix the failing test\"")
        if self.mode not in MODES:
            raise SolveError(f"unknown mode {self.mode!r} (one of {', '.join(MODES)})")
        for name, value in (("--max-steps", self.limits.steps), ("--max-seconds", self.limits.seconds),
                            ("--max-tokens", self.limits.tokens)):
            if value < 1:
                raise SolveError(f"{name} must be at least 1, got {value:g}")
        if self.limits.resamples < 0:
            raise SolveError(f"--resamples must be 0 or more, got {self.limits.resamples}")


@dataclass
class SkillContext:
    """What the retrieved skills contribute: prompt text (icl) and/or nothing visible (parametric)."""

    active: list[dict] = field(default_factory=list)
    prompt: str = ""
    adapter: dict | None = None  # parametric over an endpoint: the adapter the server ran (served_adapter.record)


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
    message: str = ""  # why a resource_limit run ended
    endpoint_adapter: dict | None = None  # parametric over an endpoint: the adapter the server ran
    resampled: int = 0  # wasted actions replaced by a sampled one (loop.Limits.resamples)

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def _tests(obs: Observation) -> dict:
    return {"passed": obs.ok, "exit_code": obs.exit_code, "tail": obs.text[-1500:]}


def _one_line(exc: BaseException) -> str:
    """What to tell a person: a sandbox error's own first line (PatchConflict carries git's lines after it),
    anything else with its type."""
    from sandbox.errors import SandboxError

    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "").rstrip(":")
    if isinstance(exc, SandboxError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _close_as_error(store: Store, tid: int, outcome: dict, line: str, tokens: int) -> None:
    """Best effort: the store may be what failed; the caller raises with the line either way."""
    try:
        with store.session() as s:
            trajectories.finish(s, tid, status="error", outcome=outcome | {"error": line}, verified=False,
                                tokens=tokens)
    except Exception:  # noqa: BLE001 - reported through the caller's exception
        pass


def task_message(task: str, test_cmd: str, report: str) -> str:
    """The task as the model first sees it: the request, the test command and the test report (Tools.report)."""
    head, _, rest = report.partition("\n")
    return f"{task}\n\nTest command: {test_cmd}\nCurrent test result:\n{head}\n{loop.truncate(rest, 1500)}"


def solve(request: SolveRequest, store: Store, chat: loop.ChatModel, skills: SkillContext,
          on_step: Callable[[int, Action | None, Observation | str], None] | None = None,
          on_phase: Callable[[str], None] | None = None, attempt: tuple[int, int | None] = (1, None),
          apply_unverified: bool = True) -> SolveReport:
    from sandbox.output import cap_text
    from sandbox.runner import Sandbox
    from sandbox.testcmd import detect_test_command
    from sandbox.workspace import Workspace

    request.validate()
    phase = on_phase or (lambda text: None)
    with Workspace.create(request.repo) as ws:
        runner = Sandbox(ws.path, limits=request.sandbox_limits, python=request.python or sys.executable,
                         allow_unconfined=not request.sandbox)
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
            what = "observation" if message["role"] == "user" else "message"
            with store.session() as s:  # one transaction per message: a crash keeps what came before
                trajectories.add_step(s, tid, idx, message["role"], cap_text(message["content"], MESSAGE_CAP, what),
                                      action)
            idx += 1

        system = loop.SYSTEM + (f"\n\n{skills.prompt}" if skills.prompt else "")
        task = task_message(request.task, test_cmd, tools.report(before))
        outcome = {"tests_before": _tests(before), "test_cmd": test_cmd, "sandboxed": runner.confined,
                   "attempt": attempt[0]}
        if attempt[1] is not None:
            outcome["first_attempt_trajectory"] = attempt[1]
        if skills.adapter is not None:
            outcome["endpoint_adapter"] = skills.adapter
        result = None
        try:
            if before.limit:  # the repo's own tests overran the disk budget: no run can follow
                status, message = "resource_limit", before.limit
            else:
                # resampling needs a chat that can sample (the llama.cpp backend); others act greedily as sent
                result = loop.run(chat, tools, task, limits=request.limits, system=system, record=record,
                                  on_step=on_step, sample=getattr(chat, "sample", None))
                status, message = result.status, result.message
        except BaseException as exc:
            # the model or the process gave out (endpoint gone, daemon stopping, Ctrl-C): close, then re-raise
            _close_as_error(store, tid, outcome, f"the run stopped: {_one_line(exc)}", result.tokens if result else 0)
            raise
        tokens = result.tokens if result else 0
        if result is not None and result.resampled:
            outcome["resampled"] = result.resampled
        try:
            if status == "resource_limit":
                # more commands or a diff of an over-budget workspace would only cost the host more
                after, diff = Observation(f"not run: {message}", False), ""
            else:
                # a fresh test run decides the outcome, whatever the model claimed
                phase("running the tests after")
                after = tools.run_tests()
                if after.limit:
                    status, message, diff = "resource_limit", after.limit, ""
                else:
                    diff = ws.diff()
            verified = (not before.ok) and after.ok and status != "resource_limit"
            outcome |= {"tests_after": _tests(after), "diff": cap_text(diff, DIFF_CAP, "diff")}
            if message:
                outcome["limit"] = message
            applied = False
            if request.apply and diff and (verified or apply_unverified):
                ws.apply_to(request.repo)  # refuses conflicts and links leaving the repo, target unchanged
                applied = True
            with store.session() as s:
                trajectories.finish(s, tid, status=status, outcome=outcome, verified=verified, tokens=tokens)
        except Exception as exc:  # noqa: BLE001 - whatever failed, the trajectory must not stay `running`
            line = _one_line(exc)
            _close_as_error(store, tid, outcome, line, tokens)
            raise RunFailed(f"{line} (trajectory {tid} closed as error)") from None
    return SolveReport(tid, status, verified, _tests(before), _tests(after), outcome["diff"],
                       result.steps if result else 0, tokens, round(result.seconds, 2) if result else 0.0,
                       skills.active, applied, attempt=attempt[0], attempts=[tid], message=message,
                       endpoint_adapter=skills.adapter, resampled=result.resampled if result else 0)


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

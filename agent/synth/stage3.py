"""Stage 3: multi-turn tool-use trajectories on bug tasks, verified by running them in the sandbox.

A scripted policy that knows the injected bug (the mutation record in the task's truth)
follows the procedure a bug skill prescribes: read the faulty function, edit the faulty
line (for localization: to confirm the suspect), rerun the tests, then submit with the
report the skill asks for (the checked stage-2 style reference). Every reply is parsed by
the agent's own parser and executed by the agent's own tools in a bubblewrap sandbox, on
a fresh workspace holding the buggy module and its tests; the observations saved are the
real outputs. A trajectory is kept only if the tests failed at the start (the failing test
among them) and pass at the end; anything else is discarded and counted by reason.

Messages have the agent loop's shape (agent/runtime/loop.py and agent/runtime/solve.py): the system
prompt, the task with the test command and the current test result, then assistant
replies (one thought + one action block) and observations as user messages. Outputs are
made deterministic: durations are removed from pytest's summary line, hashing is seeded,
paths inside the sandbox are always /workspace.
"""

from __future__ import annotations

import random
import re
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.runtime import loop
from agent.runtime.actions import FormatError, parse
from agent.runtime.tools import Tools
from agent.synth.common import approx_tokens
from agent.tasks import mutations as mu, pysource, testrun
from agent.tasks.bugs import buggy_source
from agent.tasks.packages import write_package_repo
from agent.tasks.task import Task

BUG_SUBTASKS = ("bug-localization", "bug-fixing")
TEST_CMD = "python -m pytest"
# One summary line per failing test (name and assertion), no tracebacks: trajectories train a model
# with a 768-token window. No cache folder appears in the workspace.
PYTEST_INI = "[pytest]\naddopts = -q -p no:cacheprovider --tb=no -rf\n"
# Plugins of the host environment stay out (they cost a second per run); a fixed width fixes the
# layout of pytest's lines.
SANDBOX_ENV = {"PYTHONHASHSEED": "0", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "COLUMNS": "80"}
TEST_RESULT_CHARS = 320  # the test output quoted in the task message
OBSERVATION_CHARS = 600  # any later observation
READ_LINES = 5  # lines of the faulty function around the faulty line, shown by the read step
# Trained with --max-tokens 768: the report (the last reply) must fit, or it is cut off. Measured on
# 64 trajectories, SmolLM2's chat template gave 0.96-1.07x estimate_tokens; under 730 the longest was
# 724 real tokens.
MAX_TRAJECTORY_TOKENS = 730
MESSAGE_OVERHEAD_TOKENS = 5  # chat-template tokens around each message
COMMAND_TIMEOUT_S = 30.0
_RUN = re.compile(r"([^\w\s])\1{2,}")
_DURATION = re.compile(r" in \d+(?:\.\d+)?s(?: \(\d+:\d\d:\d\d\))?")


@dataclass(frozen=True)
class Step:
    """One planned assistant reply: a short thought and one action block."""

    thought: str
    block: str

    @property
    def reply(self) -> str:
        # one newline: the action grammar admits a single thought line directly before the block
        return f"{self.thought}\n{self.block}" if self.thought else self.block


@dataclass(frozen=True)
class Plan:
    task_text: str  # what the user asks (before the test command and result are appended)
    steps: list[Step]


@dataclass(frozen=True)
class Outcome:
    """A verified trajectory (messages) or why it was discarded (reason)."""

    messages: list[dict[str, str]] | None
    reason: str | None
    before_exit: int | None = None
    after_exit: int | None = None


def normalise(text: str) -> str:
    """Sandbox output without what differs between identical runs (durations)."""
    return _DURATION.sub("", text)


def observation_text(text: str, limit: int = OBSERVATION_CHARS) -> str:
    return loop.truncate(normalise(text), limit)


# --------------------------------------------------------------------------- the scripted policy


def fence(kind: str, body: str = "") -> str:
    return f"```{kind}\n{body}{chr(10) if body else ''}```"


def read_range(truth: dict[str, Any], lines: int = READ_LINES) -> tuple[int, int]:
    """The faulty function, or a window of it around the faulty line when it is long."""
    fn = pysource.find_function(buggy_source(truth), truth["function"])
    if fn.end - fn.start + 1 <= lines:
        return fn.start, fn.end
    start = max(fn.start, min(truth["line"] - lines // 2, fn.end - lines + 1))
    return start, start + lines - 1


def unique_search(source: str, line_no: int) -> tuple[str, int, int]:
    """The faulty line plus the fewest neighbours that make it occur once: (text, first, last)."""
    lines = source.splitlines()
    lo = hi = line_no
    down = True
    while True:
        text = "\n".join(lines[lo - 1:hi])
        if source.count(text) == 1 or (lo == 1 and hi == len(lines)):
            return text, lo, hi
        if (down and hi < len(lines)) or lo == 1:
            hi += 1
        else:
            lo -= 1
        down = not down


def _find_step(steps: list[str]) -> str:
    """The skill's own step for finding the faulty line, if it has one."""
    for step in steps:
        if re.match(r"(Find|Read|Trace|Follow|Identify|Compare|Pick|Collect|Look)\b", step) and "`" not in step[:12]:
            return step
    return "Find the faulty line."


def plan(task: Task, steps: list[str], report: str, rng: random.Random) -> Plan:
    """The replies a careful agent following the skill would send, given the known bug."""
    t = task.truth
    file, name = t["file"], t["name"]
    test = t["failing_tests"][0]
    start, end = read_range(t)
    search, lo, hi = unique_search(buggy_source(t), t["line"])
    fixed = buggy_source(t).splitlines()
    fixed[t["line"] - 1] = t["fixed_line"]
    replace = "\n".join(fixed[lo - 1:hi])
    if task.subtask == "bug-fixing":
        ask = rng.choice(["Fix the bug that makes the tests fail, then report the fix.",
                          "Make the failing tests pass with a minimal fix and report it.",
                          "Please fix this bug and write up the fix when you submit."])
        confirm = "Fix that line."
    else:
        ask = rng.choice(["Find the line that makes the tests fail and report where the bug is.",
                          "Locate the bug behind the failing tests and report it.",
                          "Point to the faulty line and report it when you submit."])
        confirm = "Confirm it: apply the one-line fix and rerun the tests."
    return Plan(
        f"The tests for `{file}` fail. {ask}",
        [Step(f"{_find_step(steps)} `{test}` fails; the bug should be in `{name}`.", fence("read", f"{file}:{start}-{end}")),
         Step(f"{t['cause']} {confirm}",
              fence("edit", f"{file}\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE")),
         Step("Run the tests again.", fence("test")),
         Step("", report.rstrip("\n") + "\n\n" + fence("submit"))],
    )


# --------------------------------------------------------------------------- execution


def write_repo(folder: Path, truth: dict[str, Any], pytest_ini: str = PYTEST_INI) -> None:
    """The buggy module, its tests and the pytest settings: what the agent's workspace holds (for a package
    task, the package's repo tree with the buggy module in it)."""
    if truth.get("package"):
        write_package_repo(folder, truth, buggy_source(truth), pytest_ini)
        return
    mod = mu.corpus_module(truth["module"])
    (folder / mod.file).write_text(buggy_source(truth), encoding="utf-8")
    (folder / mod.test_file).write_text(mod.tests, encoding="utf-8")
    (folder / "pytest.ini").write_text(pytest_ini, encoding="utf-8")


class TaskEnv:
    """A fresh workspace with the buggy repo and a sandbox confined to it."""

    def __init__(self, truth: dict[str, Any], pytest_ini: str = PYTEST_INI):
        from sandbox import Sandbox, Workspace

        self._src = tempfile.TemporaryDirectory(prefix="parametric-skills-s3-")
        write_repo(Path(self._src.name), truth, pytest_ini)
        self.workspace = Workspace.create(self._src.name)
        try:
            self.tools = Tools(self.workspace.path, Sandbox(self.workspace.path, env=SANDBOX_ENV), TEST_CMD,
                               timeout=COMMAND_TIMEOUT_S)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.workspace.cleanup()
        self._src.cleanup()

    def __enter__(self) -> TaskEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def estimate_tokens(text: str) -> int:
    """approx_tokens, except that runs of one punctuation mark (pytest's `=====` rules, progress dots)
    count as a BPE tokenizer counts them: a couple of tokens, not one per character."""
    return approx_tokens(_RUN.sub(r"\1\1", text))


def trajectory_tokens(messages: list[dict[str, str]]) -> int:
    return sum(estimate_tokens(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in messages)


def first_user_message(task_text: str, before: str) -> str:
    """The loop's first user message, with the task as agent/runtime/solve.py words it."""
    task = f"{task_text}\n\nTest command: {TEST_CMD}\nCurrent test result:\n{observation_text(before, TEST_RESULT_CHARS)}"
    return f"Task: {task}\n\nThe repository is your current directory."


def execute(task: Task, the_plan: Plan) -> Outcome:
    """Run the plan in a fresh sandbox; keep it only if it takes the tests from failing to passing."""
    t = task.truth
    test = t["failing_tests"][0]
    with TaskEnv(t) as env:
        before = env.tools.run_tests()
        if before.exit_code in (0, None) or f"::{test.split('[')[0]}" not in before.text or "(timed out)" in before.text:
            return Outcome(None, "start-not-failing", before.exit_code)
        messages = [{"role": "system", "content": loop.SYSTEM},
                    {"role": "user", "content": first_user_message(the_plan.task_text, before.text)}]
        after = None
        for step in the_plan.steps:
            messages.append({"role": "assistant", "content": step.reply})
            try:
                action = parse(step.reply)
            except FormatError:
                return Outcome(None, "format-error", before.exit_code)
            observation = env.tools.execute(action)
            if action.kind == "submit":
                break
            if action.kind == "edit" and not observation.ok:
                return Outcome(None, "edit-failed", before.exit_code)
            if action.kind == "test":
                after = observation
            messages.append({"role": "user", "content": observation_text(observation.text)})
        else:
            return Outcome(None, "no-submit", before.exit_code)
    if after is None or after.exit_code != 0:
        return Outcome(None, "end-not-passing", before.exit_code, None if after is None else after.exit_code)
    if trajectory_tokens(messages) > MAX_TRAJECTORY_TOKENS:
        return Outcome(None, "trajectory-too-long", before.exit_code, after.exit_code)
    return Outcome(messages, None, before.exit_code, after.exit_code)


def hangs(task: Task) -> bool:
    """Mutants whose tests loop forever would only spend the command timeout."""
    return any(e in testrun.TIMEOUT_ERRORS for e in task.truth.get("failing_errors", ()))


def run_all(jobs: list[tuple[Task, Plan]], workers: int = 2,
            run: Callable[[Task, Plan], Outcome] | None = None) -> list[Outcome]:
    """Execute plans concurrently (each in its own sandbox); results in input order."""
    run = run or execute
    if workers <= 1 or len(jobs) <= 1:
        return [run(task, p) for task, p in jobs]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda job: run(*job), jobs))


# --------------------------------------------------------------------------- replay


@dataclass(frozen=True)
class Replay:
    observations_match: bool  # every saved observation equals the one the replay produced
    tests_failed_at_start: bool
    tests_pass_at_end: bool
    mismatches: list[int]  # indexes of messages that differ


def replay(sample: dict[str, Any]) -> Replay:
    """Run a saved trajectory's actions again in a fresh sandbox and compare the observations."""
    messages = sample["messages"]
    truth = sample["reference"]["truth"]
    mismatches: list[int] = []
    with TaskEnv(truth) as env:
        before = env.tools.run_tests()
        task_text = messages[1]["content"].split("\n\nTest command:", 1)[0].removeprefix("Task: ")
        if first_user_message(task_text, before.text) != messages[1]["content"]:
            mismatches.append(1)
        last_test = None
        for i in range(2, len(messages)):
            if messages[i]["role"] != "assistant":
                continue
            action = parse(messages[i]["content"])
            observation = env.tools.execute(action)
            if action.kind == "test":
                last_test = observation
            if action.kind == "submit":
                break
            if i + 1 >= len(messages) or observation_text(observation.text) != messages[i + 1]["content"]:
                mismatches.append(i + 1)
        final = env.tools.run_tests()
    return Replay(not mismatches, before.exit_code not in (0, None), final.exit_code == 0
                  and last_test is not None and last_test.exit_code == 0, mismatches)

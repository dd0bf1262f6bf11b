"""Policy trajectories: a scripted agent that knows the injected bug fixes it through the agent's own
interface, in the sandbox, by several routes, so that a small model learns to act on what it observes.

Each trajectory starts the way `agent solve` does (the system prompt, the task with the test command and
the compacted failing-test report) and is executed action by action with the agent's own parser and
tools in a fresh bubblewrap workspace: every observation is the real one. Routes vary what a model sees
and must do: run the tests first or read first, find the function with grep, read windows of different
sizes, edit by line range or by SEARCH/REPLACE, and sometimes a wrong first edit that the tests refute
before the right one (of the faulty line, or of another line of the function, which is then put back). A trajectory is kept only if the failing test fails at the start, every edit
applies, the tests pass at the end, and it fits the token budget; discards are counted by reason.

Tasks come from `make_tasks("bug-fixing", pool=..., source=...)`: the held-out corpus modules and registry
packages (pool "eval") never appear in training data, and `examples/` is no corpus module at all.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.runtime import loop
from agent.runtime.actions import FormatError, parse
from agent.runtime.solve import task_message
from agent.synth.stage3 import Step, TaskEnv, estimate_tokens, fence, hangs, unique_search
from agent.tasks import mutations as mu, pysource
from agent.tasks.bugs import buggy_source
from agent.tasks.make import make_tasks
from agent.tasks.task import Task

ROUTES = ("test-first", "read-first", "grep-first", "wrong-first", "wrong-line-first")
TEST_CMD = "python -m pytest"
# What a repo without its own settings gives: full tracebacks (the compact report keeps the assertion,
# the line and the frames), no cache folder in the workspace.
PYTEST_INI = "[pytest]\naddopts = -p no:cacheprovider\n"
MAX_TOKENS = 2000  # per trajectory (estimate); the policy LoRA trains with --max-tokens 2048
TASK_TEXTS = ("fix the failing test", "Fix the failing test.", "The tests fail. Fix the bug.",
              "fix the bug that makes the tests fail", "Make the failing tests pass.",
              "Find and fix the bug behind the failing test.")


@dataclass(frozen=True)
class PolicyPlan:
    task_text: str
    route: str
    steps: list[Step]


def _window(truth: dict[str, Any], rng: random.Random) -> tuple[int, int]:
    """A read window from the failing function's first line or just above it (the test report's `defined:`
    line names it, so a model can copy the number), of a size a model might pick; long functions get a
    window that reaches the bug."""
    fn = pysource.find_function(buggy_source(truth), truth["function"])
    size = rng.choice((12, 20, 30))
    start = max(1, fn.start - rng.choice((0, 0, 1, 2)))
    return start, max(start + size - 1, truth["line"] + 2)


def _clip(text: str, limit: int = 190) -> str:
    """A thought line the grammar admits: one line, bounded, never three backticks in a row."""
    text = " ".join(text.split()).replace("`" * 3, "'" * 3)
    return text if len(text) <= limit else text[:limit - 3].rstrip() + "..."


def _locate(truth: dict[str, Any]) -> str:
    """The line as `read` shows it, then why it is wrong: copying the number beside the content is easier
    for a small model than counting lines."""
    return _clip(f"Line {truth['line']} is `{truth['buggy_line'].strip()}`. {truth['cause']}")


def _edit(truth: dict[str, Any], new_line: str, rng: random.Random) -> str:
    """The block that puts `new_line` in place of the faulty line: by line range (mostly) or SEARCH/REPLACE."""
    source = buggy_source(truth)
    line = truth["line"]
    if rng.random() < 0.75:
        return fence("edit", f"{truth['file']}:{line}-{line}\n{new_line}")
    search, lo, hi = unique_search(source, line)
    lines = source.splitlines()
    lines[line - 1] = new_line
    return fence("edit", f"{truth['file']}\n<<<<<<< SEARCH\n{search}\n=======\n" + "\n".join(lines[lo - 1:hi])
                 + "\n>>>>>>> REPLACE")


def wrong_line(truth: dict[str, Any], rng: random.Random) -> str | None:
    """Another single-token change of the faulty line: a plausible fix that is not the fix."""
    source = buggy_source(truth)
    line = truth["line"]
    options = sorted({m.mutated_line for m in mu.candidates(source, truth["module"], within=(line, line))}
                     - {truth["fixed_line"], truth["buggy_line"]})
    return rng.choice(options) if options else None


def other_line(truth: dict[str, Any], rng: random.Random) -> tuple[int, str, str] | None:
    """(line, its text, a single-token change of it) for another line of the faulty function that shares a
    name with the faulty line: the plausible wrong place a small model picks first (it fixates on the first
    line that mentions the suspicious name)."""
    source = buggy_source(truth)
    fn = pysource.find_function(source, truth["function"])
    lines = source.splitlines()
    names = set(re.findall(r"[A-Za-z_]\w*", truth["buggy_line"])) - {"return", "if", "not", "and", "or", "in"}
    options = sorted({(m.line, lines[m.line - 1], m.mutated_line)
                      for m in mu.candidates(source, truth["module"], within=(fn.start + 1, fn.end))
                      if m.line != truth["line"]
                      and names & set(re.findall(r"[A-Za-z_]\w*", lines[m.line - 1]))})
    return rng.choice(options) if options else None


def plan(task: Task, route: str, rng: random.Random) -> PolicyPlan | None:
    t = task.truth
    file, name, test = t["file"], t["name"], t["failing_tests"][0]
    start, end = _window(t, rng)
    evidence = t["evidence"][0] if t.get("evidence") else f"`{test}` fails."
    read = Step(_clip(rng.choice((f"{evidence} Read `{name}` in `{file}`.",
                                        f"{evidence} The failure points at `{name}`; read it."))),
                      fence("read", f"{file}:{start}-{end}"))
    fix = Step(_clip(f"{_locate(t)} Fix line {t['line']}."), _edit(t, t["fixed_line"], rng))
    retest = Step(rng.choice(("Run the tests again.", "Check the fix.", "Rerun the tests.")), fence("test"))
    done = Step(rng.choice(("The tests pass.", "All tests pass now.", "Fixed.")), fence("submit"))
    steps: list[Step]
    if route == "test-first":
        steps = [Step("Run the tests first.", fence("test")), read, fix, retest, done]
    elif route == "read-first":
        steps = [read, fix, retest, done]
    elif route == "grep-first":
        grep = Step(f"Find `{name}`.", fence("bash", f"grep -n \"def {name}\" {file}"))
        steps = [grep, read, fix, retest, done]
    elif route == "wrong-first":
        wrong = wrong_line(t, rng)
        if wrong is None:
            return None
        guess = Step(f"Maybe line {t['line']} is wrong; try another change.", _edit(t, wrong, rng))
        refuted = Step("Run the tests.", fence("test"))
        again = Step(_clip(f"Still failing, so that was not it. {_locate(t)} Fix line {t['line']}."),
                           fence("edit", f"{file}:{t['line']}-{t['line']}\n{t['fixed_line']}"))
        steps = [read, guess, refuted, again, retest, done]
    elif route == "wrong-line-first":
        other = other_line(t, rng)
        if other is None:
            return None
        n, text, changed = other
        guess = Step(_clip(f"Line {n} is `{text.strip()}`. Maybe it is wrong. Fix line {n}."),
                     fence("edit", f"{file}:{n}-{n}\n{changed}"))
        refuted = Step("Run the tests.", fence("test"))
        undo = Step(_clip(f"Still failing, so line {n} was not it. Put line {n} back."),
                    fence("edit", f"{file}:{n}-{n}\n{text}"))
        again = Step(_clip(f"Another line then. {_locate(t)} Fix line {t['line']}."),
                     fence("edit", f"{file}:{t['line']}-{t['line']}\n{t['fixed_line']}"))
        steps = [read, guess, refuted, undo, again, retest, done]
    else:
        raise ValueError(f"unknown route {route!r}")
    return PolicyPlan(rng.choice(TASK_TEXTS), route, steps)


def _with_returned(p: PolicyPlan, truth: dict[str, Any], report: str) -> PolicyPlan:
    """The plan whose first read says where the failing function returned from, when the report says so
    (Tools.report's trace line): the fix step's `Line N` is then a copy of a number the model just wrote."""
    m = re.search(rf"^  {re.escape(truth['name'])} returned .* at {re.escape(truth['file'])}:(\d+)$", report, re.M)
    i = next((i for i, s in enumerate(p.steps) if s.block.startswith("```read")), None)
    if m is None or i is None:
        return p
    evidence = truth["evidence"][0] if truth.get("evidence") else ""
    returned = int(m.group(1))
    thought = _clip(f"{evidence} `{truth['name']}` returned at line {returned}. Read `{truth['name']}`.")
    start, end = map(int, p.steps[i].block.split("\n")[1].rsplit(":", 1)[1].split("-"))
    block = fence("read", f"{truth['file']}:{start}-{max(end, returned + 1)}")  # the window shows that line too
    steps = [*p.steps[:i], Step(thought, block), *p.steps[i + 1:]]
    return PolicyPlan(p.task_text, p.route, steps)


@dataclass(frozen=True)
class PolicyOutcome:
    messages: list[dict[str, str]] | None
    reason: str | None


def execute(task: Task, p: PolicyPlan) -> PolicyOutcome:
    """Run the plan like the agent loop would; keep it only if it takes the tests from failing to passing."""
    t = task.truth
    with TaskEnv(t, PYTEST_INI) as env:
        env.tools.test_cmd = TEST_CMD
        before = env.tools.run_tests()
        if before.exit_code in (0, None) or t["failing_tests"][0] not in before.text or "(timed out)" in before.text:
            return PolicyOutcome(None, "start-not-failing")
        report = env.tools.report(before)
        p = _with_returned(p, t, report)
        messages = [{"role": "system", "content": loop.SYSTEM},
                    {"role": "user", "content": loop.first_message(task_message(p.task_text, TEST_CMD, report))}]
        last_test = None
        for i, step in enumerate(p.steps):
            messages.append({"role": "assistant", "content": step.reply})
            try:
                action = parse(step.reply)
            except FormatError:
                return PolicyOutcome(None, "format-error")
            obs = env.tools.execute(action)
            if action.kind == "submit":
                break
            if action.kind == "edit" and not obs.ok:
                return PolicyOutcome(None, "edit-failed")
            if action.kind == "test":
                last_test = obs
                if p.route in ("wrong-first", "wrong-line-first") and i == 2 and obs.ok:
                    return PolicyOutcome(None, "wrong-edit-passed")
            messages.append({"role": "user", "content": loop.truncate(obs.text)})
        final = env.tools.run_tests()
    if last_test is None or not last_test.ok or not final.ok:
        return PolicyOutcome(None, "end-not-passing")
    if sum(estimate_tokens(m["content"]) + 5 for m in messages) > MAX_TOKENS:
        return PolicyOutcome(None, "too-long")
    return PolicyOutcome(messages, None)


def synth_policy(out: Path, n_tasks: int, seed: int = 0, pool: str = "train", routes: tuple[str, ...] = ROUTES,
                 workers: int = 2, progress: Callable[[int, int], None] | None = None,
                 source: str = "corpus") -> dict[str, Any]:
    """Write `{pool}-policy.jsonl` (one trajectory per line) and `policy-manifest.json` into `out`.

    source: bug tasks from the corpus, the pool's registry packages, or all (make_tasks)."""
    tasks = [t for t in make_tasks("bug-fixing", n_tasks, seed, pool=pool, source=source)
             if not hangs(t)]
    rng = random.Random(seed)
    jobs = []
    for task in tasks:
        for route in routes:
            p = plan(task, route, random.Random(f"{seed}|{task.id}|{route}"))
            if p is not None:
                jobs.append((task, p))
    rng.shuffle(jobs)
    out.mkdir(parents=True, exist_ok=True)
    path, done, reasons = out / f"{pool}-policy.jsonl", 0, Counter()
    kept = 0
    with open(path, "w", encoding="utf-8") as f, ThreadPoolExecutor(max(1, workers)) as ex:
        for (task, p), outcome in zip(jobs, ex.map(lambda job: execute(*job), jobs)):
            done += 1
            if outcome.messages is None:
                reasons[outcome.reason] += 1
            else:
                kept += 1
                f.write(json.dumps({"skill": "", "subtask": "bug-fixing", "stage": 3, "type": "policy",
                                    "route": p.route, "task_id": task.id, "module": task.truth["module"],
                                    "package": task.truth.get("package", ""),
                                    "messages": outcome.messages}, ensure_ascii=False) + "\n")
                f.flush()
            if progress:
                progress(done, len(jobs))
    manifest = {"pool": pool, "source": source, "seed": seed, "tasks": len(tasks), "planned": len(jobs), "kept": kept,
                "discarded": dict(reasons), "modules": sorted({t.truth["module"] for t in tasks}),
                "packages": sorted({t.truth["package"] for t in tasks if t.truth.get("package")}),
                "routes": list(routes)}
    (out / "policy-manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def returned_class(row: dict[str, Any]) -> str:
    """How a trajectory uses the report's returned-from line: "same" (the fixed line is the one the failing
    function returned from: the model copies the number), "other" (the bug is upstream of the return: the
    model must read), "none" (no such line, or the read window does not show it)."""
    said = [m["content"] for m in row["messages"] if m["role"] == "assistant"]
    read = next((a for a in said if "```read" in a), "")
    m = re.search(r"returned at line (\d+)\.", read)
    if m is None or int(read.split("```read\n", 1)[1].split("\n", 1)[0].rsplit("-", 1)[1]) < int(m.group(1)):
        return "none"
    fixes = [int(x.group(1)) for a in said if "Maybe it is wrong" not in a
             for x in [re.search(r"Line (\d+) is `", a)] if x]
    return "same" if fixes and fixes[-1] == int(m.group(1)) else "other"


def focus_returned(path: Path, out: Path, n: int, seed: int = 0) -> dict[str, int]:
    """A short fine-tune's data: up to n trajectories, as many "same" as there are (at most 5/8 of n), then
    "other" (1/4 of n or what "same" left) and the rest "none", shuffled. A CPU fine-tune from the shipped
    policy (`agent policy train --init`) learns the returned-from line from ~150 of them; the whole file would
    take hours."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rng = random.Random(seed)
    by: dict[str, list[dict[str, Any]]] = {"same": [], "other": [], "none": []}
    for row in rows:
        by[returned_class(row)].append(row)
    for group in by.values():
        rng.shuffle(group)
    same = by["same"][:n * 5 // 8]
    other = by["other"][:max(n // 4, n - len(same) - n // 8)][:n - len(same)]
    rest = by["none"][:n - len(same) - len(other)]
    chosen = same + other + rest
    rng.shuffle(chosen)
    with open(out, "w", encoding="utf-8") as f:
        for row in chosen:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return {"same": len(same), "other": len(other), "none": len(rest), "from": len(rows)}

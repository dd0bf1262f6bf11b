"""Which renderer answers which subtask, and which tasks suit a skill's checks spec."""

from __future__ import annotations

from agent import checks as ck
from agent.synth.bug_fixing import render_fix
from agent.synth.bug_localization import render_localization
from agent.synth.code_review import render_review
from agent.synth.commit_message import render_commit
from agent.synth.refactoring import render_refactor
from agent.synth.test_writing import render_tests
from agent.tasks.make import make_tasks
from agent.tasks.task import Task

RENDERERS = {
    "commit-message": render_commit, "bug-localization": render_localization, "bug-fixing": render_fix,
    "test-writing": render_tests, "code-review": render_review, "refactoring": render_refactor,
}


def render_reference(task: Task, spec: str | ck.Spec) -> str | None:
    """The answer a skill with this spec prescribes for a task, or None if the task cannot satisfy it."""
    parsed = spec if isinstance(spec, ck.Spec) else ck.parse_spec(spec)
    return RENDERERS[task.subtask](task, parsed)


# --------------------------------------------------------------------------- which tasks suit a spec

REFACTOR_RULE_KINDS = {
    "min-name-length": "shorten-names", "snake-case": "camel-case", "no-magic-numbers": "inline-constants",
    "type-hints": "strip-hints", "docstrings": "strip-docstring", "f-strings": "percent-format",
    "no-bare-except": "bare-except",
}


def task_kinds(subtask: str, spec: ck.Spec) -> list[str] | None:
    """The task kinds (make_tasks `kinds`) a skill's rules call for."""
    ids = spec.ids()
    if subtask == "refactoring":
        kinds = [REFACTOR_RULE_KINDS[i] for i in ids if i in REFACTOR_RULE_KINDS]
        return sorted(set(kinds))[:2] or None
    if subtask == "test-writing" and "error-case" in ids:
        return ["raises"]
    return None


def tasks_for(subtask: str, spec: ck.Spec, n: int, seed: int, pool: str) -> list[Task]:
    kinds = task_kinds(subtask, spec)
    tasks = make_tasks(subtask, n, seed, pool=pool, kinds=kinds)
    if subtask == "refactoring" and kinds and len(kinds) > 1 and len(tasks) < n:
        # Few functions take every degradation at once; single ones still exercise the rules.
        for kind in kinds:
            tasks += make_tasks(subtask, n, seed, pool=pool, kinds=[kind])
    return tasks

"""A task instance (prompt, inputs, ground truth) and the rendering its prompts share."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

from agent.tasks import testrun

SUBTASKS = ("bug-localization", "bug-fixing", "test-writing", "code-review", "commit-message", "refactoring")


class TaskError(ValueError):
    """A bad request for tasks: unknown subtask, pool or kind."""


@dataclass(frozen=True)
class Task:
    id: str
    subtask: str
    prompt: str  # what the user asks, inputs included
    inputs: dict[str, str] = field(default_factory=dict)  # the raw inputs (code, diff, test output)
    truth: dict[str, Any] = field(default_factory=dict)  # ground truth, JSON-serialisable
    kind: str = ""  # which generator made it: an operator, a diff kind, a degradation set

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_subtask(subtask: str) -> str:
    if subtask not in SUBTASKS:
        raise TaskError(f"unknown subtask {subtask!r} (expected one of {', '.join(SUBTASKS)})")
    return subtask


def task_id(subtask: str, *parts: str) -> str:
    digest = hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()[:10]
    return f"{subtask}/{parts[0]}/{digest}"


# --------------------------------------------------------------------------- shared rendering


def numbered(source: str, start: int, end: int) -> str:
    lines = source.splitlines()
    return "\n".join(f"{n:>4} | {lines[n - 1]}" for n in range(start, end + 1))


def format_failures(run_failures: Sequence[testrun.TestFailure], passed: int, test_file: str, detail: int = 2) -> str:
    """Failing tests as a compact, pytest-like report."""
    out = [f"$ python -m pytest -q {test_file}", "=" * 30 + " FAILURES " + "=" * 30]
    for failure in run_failures[:detail]:
        out.append(f"____ {failure.test} ____")
        for file, line, func, text in failure.frames:
            out.append(f"{file}:{line}: in {func}")
            if text:
                out.append(f"    {text}")
        first, *more = (failure.explain or failure.message).splitlines() or [""]
        out.append(f"E   {failure.error}: {first}" if first else f"E   {failure.error}")
        out.extend(f"E   {line}" for line in more)
    out.append("=" * 24 + " short test summary info " + "=" * 24)
    for failure in run_failures[:5]:
        out.append(f"FAILED {test_file}::{failure.test} - {failure.error}")
    if len(run_failures) > 5:
        out.append(f"... and {len(run_failures) - 5} more")
    out.append(f"{len(run_failures)} failed, {passed} passed")
    return "\n".join(out)


def literal(value: Any) -> str | None:
    """Python source that evaluates back to value (dates as `date(...)`), or None."""
    if isinstance(value, date):
        return f"date({value.year}, {value.month}, {value.day})"
    if isinstance(value, (list, tuple)):
        items = [literal(v) for v in value]
        if any(i is None for i in items):
            return None
        if isinstance(value, tuple):
            return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
        return "[" + ", ".join(items) + "]"
    if isinstance(value, dict):
        pairs = [(literal(k), literal(v)) for k, v in value.items()]
        if any(k is None or v is None for k, v in pairs):
            return None
        return "{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}"
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    return None

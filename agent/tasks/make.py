"""Deterministic task instances for the six subtasks, with their ground truth.

Every task is built from the bundled corpus (and a few standard-library functions):
injected bugs give localization, fixing and review tasks; "degraded" copies of clean code
(short names, inlined constants, stripped hints...) give refactoring tasks whose reference
is the clean original; small diffs between versions give commit-message and review tasks;
call examples in `cases.json` give test-writing tasks. Same (subtask, n, seed, pool,
kinds) -> the same tasks, in the same order."""

from __future__ import annotations

import random
from collections.abc import Sequence

from agent.tasks import mutations as mu
from agent.tasks import packages
from agent.tasks.bugs import balanced, fixing_task, localization_task
from agent.tasks.diffs import diff_tasks
from agent.tasks.refactoring import DEGRADATIONS, refactoring_tasks
from agent.tasks.task import Task, TaskError, check_subtask
from agent.tasks.test_writing import test_writing_tasks


SOURCES = ("corpus", "packages", "all")


def make_tasks(subtask: str, n: int, seed: int = 0, pool: str = "train", kinds: Sequence[str] | None = None,
               source: str = "corpus") -> list[Task]:
    """n tasks for a subtask (fewer if the pool runs out), deterministic in all arguments.

    pool: 'train' (training corpus + stdlib), 'eval' (held-out corpus modules) or 'all'.
    kinds: bug tasks -> mutation operators; diff tasks -> diff kinds (fix, feat, refactor,
    docs, test, bug); refactoring -> degradations applied together; test-writing ->
    'raises' or 'values'.
    source (bug tasks): 'corpus' (the bundled modules), 'packages' (mutants of the pool's registry
    packages, agent/tasks/packages.py; built and cached on first use, which fetches them) or 'all'.
    """
    check_subtask(subtask)
    if n < 0:
        raise TaskError("n must not be negative")
    if pool not in mu.POOLS:
        raise TaskError(f"unknown pool {pool!r} (expected one of {', '.join(mu.POOLS)})")
    if source not in SOURCES:
        raise TaskError(f"unknown task source {source!r} (expected one of {', '.join(SOURCES)})")
    if source != "corpus" and subtask not in ("bug-localization", "bug-fixing"):
        raise TaskError(f"package tasks are bug tasks only, not {subtask!r}")
    # the corpus draw keeps its old seed string: the same tasks as before sources existed
    salt = "" if source == "corpus" else f"|{source}"
    rng = random.Random(f"{subtask}|{seed}|{pool}|{','.join(kinds or ())}{salt}")
    if n == 0:
        return []
    if subtask in ("bug-localization", "bug-fixing"):
        muts = mu.mutants_of_pool(pool) if source in ("corpus", "all") else []
        if source in ("packages", "all"):
            muts += packages.mutants_of_pool(pool)
        if kinds:
            unknown = set(kinds) - set(mu.ALL_OPERATORS)
            if unknown:
                raise TaskError(f"unknown mutation operator(s): {', '.join(sorted(unknown))}")
            muts = [m for m in muts if m.operator in kinds]
        make = localization_task if subtask == "bug-localization" else fixing_task
        return [make(m, rng) for m in balanced(muts, n, rng)]
    if subtask == "test-writing":
        tasks = test_writing_tasks(pool)
        if kinds:
            tasks = [t for t in tasks if t.kind in kinds]
        rng.shuffle(tasks)
        return tasks[:n]
    if subtask == "refactoring":
        if kinds:
            unknown = set(kinds) - set(DEGRADATIONS)
            if unknown:
                raise TaskError(f"unknown degradation(s): {', '.join(sorted(unknown))}")
        return refactoring_tasks(pool, kinds, rng, n)
    return diff_tasks(subtask, pool, kinds, rng, n)

"""Deterministic task instances for every subtask, with consistent ground truth."""

from __future__ import annotations

import ast

import pytest

from agent.tasks import bugs
from agent.tasks import make as T
from agent.tasks import mutations as mu, pysource
from agent.tasks.task import SUBTASKS, TaskError


@pytest.mark.parametrize("subtask", SUBTASKS)
def test_make_tasks_is_deterministic(subtask):
    first = T.make_tasks(subtask, 5, seed=3)
    again = T.make_tasks(subtask, 5, seed=3)
    assert [t.to_dict() for t in first] == [t.to_dict() for t in again]
    assert len(first) == 5 and len({t.id for t in first}) == 5
    assert all(t.subtask == subtask and t.prompt and t.truth for t in first)
    other = T.make_tasks(subtask, 5, seed=4)
    assert [t.id for t in other] != [t.id for t in first]


def test_bad_requests_raise_task_error():
    with pytest.raises(TaskError, match="unknown subtask"):
        T.make_tasks("poetry", 1)
    with pytest.raises(TaskError, match="unknown pool"):
        T.make_tasks("bug-fixing", 1, pool="test")
    with pytest.raises(TaskError, match="unknown mutation operator"):
        T.make_tasks("bug-fixing", 1, kinds=["explode"])
    with pytest.raises(TaskError, match="unknown degradation"):
        T.make_tasks("refactoring", 1, kinds=["explode"])
    with pytest.raises(TaskError, match="unknown diff kind"):
        T.make_tasks("commit-message", 1, kinds=["explode"])
    assert issubclass(TaskError, ValueError)
    assert T.make_tasks("bug-fixing", 0) == []


def test_bug_tasks_ground_truth_is_consistent():
    for task in T.make_tasks("bug-fixing", 8, seed=1):
        t = task.truth
        buggy = bugs.buggy_source(t)
        assert buggy.splitlines()[t["line"] - 1] == t["buggy_line"]
        original = mu.corpus_module(t["module"]).source
        assert pysource.apply_diff(buggy, t["diff"]) == original
        assert pysource.replace_function(buggy, t["function"], t["fixed_function"]) == original
        assert t["failing_tests"] and t["failing_tests"][0] in task.prompt
        assert t["cause"].endswith(".") and f"{t['line']}" in t["cause"]
    for task in T.make_tasks("bug-localization", 8, seed=1):
        t = task.truth
        start, end = t["excerpt"]
        assert start <= t["line"] <= end
        assert f"{t['line']:>4} | {t['buggy_line']}" in task.prompt  # numbered code shows the bug


def test_bug_tasks_spread_over_operators_and_filter_by_kind():
    tasks = T.make_tasks("bug-localization", 18, seed=2)
    assert len({t.kind for t in tasks}) >= 7
    only = T.make_tasks("bug-localization", 4, seed=2, kinds=["cmp-flip"])
    assert {t.truth["operator"] for t in only} == {"cmp-flip"}


def test_eval_pool_uses_held_out_modules_only():
    for subtask in ("bug-fixing", "test-writing", "code-review", "refactoring"):
        for task in T.make_tasks(subtask, 6, seed=0, pool="eval"):
            module = task.truth.get("module") or task.truth.get("scope")
            assert module in mu.EVAL_MODULES, (subtask, module)
    for task in T.make_tasks("bug-fixing", 6, seed=0, pool="train"):
        assert task.truth["module"] not in mu.EVAL_MODULES


def test_test_writing_cases_are_computed_from_the_code():
    tasks = T.make_tasks("test-writing", 40, seed=0)
    assert any(t.kind == "raises" for t in tasks) and any(t.kind == "values" for t in tasks)
    for task in tasks:
        t = task.truth
        assert t["imports"][0] == f"from {t['module']} import {t['function']}"
        for case in t["cases"]:
            assert ("expect" in case) != ("raises" in case)
            if "expect" in case:
                ast.parse(case["expect"], mode="eval")
    assert {t.kind for t in T.make_tasks("test-writing", 5, seed=0, kinds=["raises"])} == {"raises"}


def test_refactoring_tasks_degrade_clean_code():
    tasks = T.make_tasks("refactoring", 20, seed=0)
    assert {t.truth["origin"] for t in tasks} == {"corpus", "stdlib"} or len(tasks) < 20
    for task in tasks:
        t = task.truth
        assert t["degraded_code"] != t["clean_code"] and t["changes"]
        ast.parse(t["degraded_code"])
        ast.parse(t["clean_code"])
        assert t["degraded_code"] in task.prompt
    combined = T.make_tasks("refactoring", 3, seed=0, kinds=["strip-hints", "strip-docstring"])
    for task in combined:
        node = ast.parse(task.truth["degraded_code"]).body[0]
        assert ast.get_docstring(node) is None and node.returns is None
        assert len(task.truth["changes"]) == 2


@pytest.mark.parametrize("kind, check", [
    ("shorten-names", lambda clean, bad: len(bad) < len(clean)),
    ("inline-constants", lambda clean, bad: any(c.isupper() for c in clean.split("\n")[0])),
    ("percent-format", lambda clean, bad: " % (" in bad),
    ("bare-except", lambda clean, bad: "except:" in bad),
    ("camel-case", lambda clean, bad: any(ch.isupper() for ch in bad.split("def ", 1)[1].split("\n", 1)[1])),
])
def test_each_degradation_is_exactly_reversed_by_the_reference(kind, check):
    tasks = T.make_tasks("refactoring", 3, seed=1, kinds=[kind])
    assert tasks, kind
    for task in tasks:
        assert check(task.truth["clean_code"], task.truth["degraded_code"]), task.id


@pytest.mark.parametrize("subtask", ["commit-message", "code-review"])
def test_diff_tasks(subtask):
    tasks = T.make_tasks(subtask, 12, seed=5)
    kinds = {t.kind for t in tasks}
    assert len(kinds) >= 3, kinds
    for task in tasks:
        t = task.truth
        assert task.inputs["diff"].startswith("diff --git ") and task.inputs["diff"] in task.prompt
        assert t["summaries"] and all(s == s.strip() and not s.endswith(".") for s in t["summaries"])
        assert t["has_bug"] == (t["kind"] == "bug")
    if subtask == "code-review":
        assert any(t.truth["has_bug"] for t in tasks) and any(not t.truth["has_bug"] for t in tasks)


def test_failure_report_looks_like_pytest():
    task = T.make_tasks("bug-localization", 1, seed=9)[0]
    report = task.inputs["test_output"]
    assert report.startswith("$ python -m pytest -q test_")
    assert "short test summary info" in report and report.rstrip().endswith("passed")

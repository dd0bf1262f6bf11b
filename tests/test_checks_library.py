"""Every library skill's checker accepts the references built for it and rejects wrong answers.

This is what makes "did the model follow the skill" a number: the reference that follows
skill X passes X's checker, and answers that follow other skills, or broken answers, do not.
"""

from __future__ import annotations

from collections import defaultdict

import pytest

from agent import checks as ck
from agent import synth as sy
N_TASKS = 2
# Static task-aware rules (execution-based ones are covered where references are validated).
CORRECTNESS_RULES = {"location-correct", "flags-bug", "verdict-correct", "type-matches", "scope-is-module",
                     "names-function", "quotes-line", "diff-applies", "imports-unit", "preserves-api", "defines-function"}


@pytest.fixture(scope="module")
def references():
    skills = sy.load_library()
    discards: dict[str, object] = defaultdict(__import__("collections").Counter)
    got = sy.task_candidates(skills, N_TASKS, seed=5, pool="train", discards=discards)
    return skills, got


def test_every_skill_gets_checked_references(references):
    skills, got = references
    missing = [s.name for s in skills if len(got[s.name]) < N_TASKS]
    assert missing == []
    for skill in skills:
        for cand in got[skill.name]:
            result = ck.check(cand.reference, skill.spec, cand.task)
            assert result.passed and result.checked > 0, (skill.name, result.failures)


def test_references_of_other_skills_fail(references):
    """Following skill Y visibly fails skill X's checker, for nearly every pair in a subtask."""
    skills, got = references
    by_subtask = defaultdict(list)
    for skill in skills:
        by_subtask[skill.subtask].append(skill)
    for subtask, group in by_subtask.items():
        pairs = rejected = 0
        for x in group:
            rejected_by_x = 0
            for y in group:
                if x is y:
                    continue
                pairs += 1
                cand = got[y.name][0]
                if not ck.check(cand.reference, x.spec, cand.task, execute=False).passed:
                    rejected += 1
                    rejected_by_x += 1
            # Generic skills (few rules) accept some specialised answers; none accepts most of them.
            assert rejected_by_x >= 0.6 * (len(group) - 1), (x.name, rejected_by_x)
        assert rejected / pairs >= 0.95, (subtask, rejected, pairs)


def _corruptions(text: str) -> list[str]:
    lines = text.rstrip("\n").split("\n")
    keep = [l for l in lines if l.strip()]
    return [
        "",
        "\n".join(lines[:-1]),  # the last line dropped
        "\n".join(lines[1:]),  # the first line dropped
        "\n".join(lines[: max(1, len(lines) // 2)]),  # cut in half
        "\n".join(reversed(keep)),  # parts out of order
    ]


def test_corrupted_references_fail(references):
    skills, got = references
    for skill in skills:
        cand = got[skill.name][0]
        verdicts = [ck.check(bad, skill.spec, cand.task, execute=False).passed for bad in _corruptions(cand.reference)]
        assert verdicts[0] is False, skill.name
        assert sum(not v for v in verdicts) >= 2, (skill.name, verdicts)


def test_answers_for_another_task_fail_correctness_rules(references):
    """A well-formed answer about the wrong bug, diff or function fails the task-aware rules."""
    skills, got = references
    checked = 0
    for skill in skills:
        if not CORRECTNESS_RULES & set(skill.spec.ids()):
            continue
        first, second = got[skill.name][:2]
        if first.task.truth == second.task.truth:
            continue
        if first.task.truth.get("has_bug") is False and second.task.truth.get("has_bug") is False:
            continue  # two clean diffs: approving either is right
        result = ck.check(first.reference, skill.spec, second.task, execute=False)
        checked += 1
        assert not result.passed, skill.name
    assert checked >= 60

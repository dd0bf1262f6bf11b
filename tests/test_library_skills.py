"""The seed skill library: size, balance, held-out split, format and lint."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from agent import checks as ck
from agent.checks.lint import lint, lint_dir
from agent.tasks.task import SUBTASKS
from memory.skillfile import SkillDoc, read_skill_dir

LIBRARY = Path(__file__).resolve().parent.parent / "memory" / "library"
# Rules that appear only in held-out skills: they measure transfer to rules never trained on.
NEW_IN_HELDOUT = {"gitmoji", "json-object", "max-diff-lines", "test-docstrings", "comment-labels", "max-nesting"}


@pytest.fixture(scope="module")
def skills() -> list[SkillDoc]:
    return [read_skill_dir(folder) for folder in sorted(p for p in LIBRARY.iterdir() if (p / "SKILL.md").is_file())]


def test_library_size_and_balance(skills):
    assert len(skills) >= 120
    per_subtask = Counter(s.metadata["subtask"] for s in skills)
    assert set(per_subtask) == set(SUBTASKS)
    assert all(per_subtask[s] >= 15 for s in SUBTASKS), per_subtask


def test_library_heldout_split_spread(skills):
    heldout = [s for s in skills if s.metadata["split"] == "heldout"]
    assert len(heldout) / len(skills) >= 0.20
    per_subtask = Counter(s.metadata["subtask"] for s in heldout)
    assert all(per_subtask[s] >= 3 for s in SUBTASKS), per_subtask
    assert {s.metadata["split"] for s in skills} == {"train", "heldout"}


def test_library_names_unique_and_match_folders(skills):
    names = [s.name for s in skills]
    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", n) for n in names)


def test_library_lints_clean(skills):
    problems = {s.name: lint(s) for s in skills}
    assert {k: v for k, v in problems.items() if v} == {}
    assert all(not v for v in lint_dir(LIBRARY).values())


def test_library_bodies_are_procedures(skills):
    for doc in skills:
        words = len(re.findall(r"\S+", doc.body))
        assert 150 <= words <= 500, (doc.name, words)
        assert "## Steps" in doc.body and "## Rules" in doc.body and "## Example" in doc.body, doc.name
        sentences = [x for x in re.split(r"(?<=[.!?])\s+", doc.description.strip()) if x]
        assert 1 <= len(sentences) <= 3, doc.name


def test_library_rules_stated_in_body(skills):
    """Every checked rule is written out in the body (the model learns from the text alone)."""
    for doc in skills:
        for sentence in ck.describe_spec(doc.metadata["checks"]):
            assert sentence in doc.body, (doc.name, sentence)


def test_heldout_skills_are_new_combinations_with_a_few_new_rules(skills):
    train = [s for s in skills if s.metadata["split"] == "train"]
    heldout = [s for s in skills if s.metadata["split"] == "heldout"]
    train_specs = {frozenset(c.id + "=" + c.raw for c in ck.parse_spec(s.metadata["checks"]).calls) for s in train}
    train_rules = {c.id for s in train for c in ck.parse_spec(s.metadata["checks"]).calls}
    heldout_rules = {c.id for s in heldout for c in ck.parse_spec(s.metadata["checks"]).calls}
    for doc in heldout:
        spec = frozenset(c.id + "=" + c.raw for c in ck.parse_spec(doc.metadata["checks"]).calls)
        assert spec not in train_specs, doc.name
    assert heldout_rules - train_rules == NEW_IN_HELDOUT
    # Most held-out rules were seen in training, in other combinations.
    assert len(heldout_rules & train_rules) >= 4 * len(NEW_IN_HELDOUT)


def test_library_is_shipped_as_package_data():
    import tomllib

    config = tomllib.loads((LIBRARY.parent.parent / "pyproject.toml").read_text())
    patterns = [p for pats in config["tool"]["setuptools"]["package-data"].values() for p in pats]
    assert "library/**/*" in patterns

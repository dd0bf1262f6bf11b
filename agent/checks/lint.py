"""Skill linter: is a SKILL.md usable for training and checking?

A skill must say which subtask it serves, which split it belongs to, and how its output
is checked (a parsable spec of known rules that apply to that subtask); its body must be
a real procedure (numbered steps) with an explicit output format, and must state every
checked parameter, since the model only ever sees the text.
"""

from __future__ import annotations

import re
from pathlib import Path

from agent import checks as ck
from agent.tasks.task import SUBTASKS
from memory.errors import SkillFormatError
from memory.skillfile import SkillDoc, discover, read_skill_dir

SPLITS = ("train", "heldout")
MIN_BODY_WORDS = 80
MIN_STEPS = 3
FORMAT_HEADINGS = ("Rules", "Output format", "Format", "Example")


def _stated_words(rule: ck.Rule, call: ck.RuleCall) -> list[str]:
    """Words the body must contain for a rule to count as stated."""
    if rule.stated is not None:
        return [str(w) for w in rule.stated(call.value)]
    value = call.value
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        flat: list[str] = []
        for item in value:
            flat += [str(x) for x in item] if isinstance(item, list) else [str(item)]
        return flat
    return [str(value)]


def lint(doc: SkillDoc) -> list[str]:
    """Problems that make a skill unusable; an empty list means the skill is fine."""
    problems: list[str] = []
    subtask = doc.metadata.get("subtask")
    if not subtask:
        problems.append("metadata.subtask is missing")
    elif subtask not in SUBTASKS:
        problems.append(f"unknown subtask {subtask!r} (expected one of {', '.join(SUBTASKS)})")
    split = doc.metadata.get("split")
    if not split:
        problems.append("metadata.split is missing")
    elif split not in SPLITS:
        problems.append(f"invalid split {split!r} (expected train or heldout)")
    spec_text = doc.metadata.get("checks")
    if not spec_text or not spec_text.strip():
        problems.append("metadata.checks is missing")
    else:
        try:
            spec = ck.parse_spec(spec_text)
        except ck.SpecError as exc:
            problems.append(f"metadata.checks: {exc}")
        else:
            body = doc.body
            for call in spec.calls:
                rule = ck.RULES[call.id]
                if rule.subtasks and subtask in SUBTASKS and subtask not in rule.subtasks:
                    problems.append(f"rule {call.id!r} does not apply to {subtask} skills")
                missing = [w for w in _stated_words(rule, call) if w not in body]
                if missing:
                    problems.append(f"rule {call.id}{'=' + call.raw if call.raw else ''}: the body never states {missing[0]!r}")
    words = len(re.findall(r"\S+", doc.body))
    if words < MIN_BODY_WORDS:
        problems.append(f"body too short ({words} words, need at least {MIN_BODY_WORDS})")
    steps = re.findall(r"^\d+\. \S", doc.body, re.M)
    if len(steps) < MIN_STEPS:
        problems.append(f"body has no procedure (found {len(steps)} numbered steps, need at least {MIN_STEPS})")
    headings = {m.strip() for m in re.findall(r"^#{1,3} (.+)$", doc.body, re.M)}
    if not headings & set(FORMAT_HEADINGS):
        problems.append("body states no output format (add a `## Rules`, `## Output format` or `## Example` section)")
    return problems


def lint_dir(path: Path | str) -> dict[str, list[str]]:
    """Lint every skill under a folder; unreadable skills are reported, not raised."""
    out: dict[str, list[str]] = {}
    try:
        folders = discover(Path(path))
    except SkillFormatError as exc:
        return {str(path): [str(exc)]}
    for folder in folders:
        try:
            doc = read_skill_dir(folder)
        except SkillFormatError as exc:
            out[folder.name] = [str(exc)]
            continue
        out[doc.name] = lint(doc)
    return out

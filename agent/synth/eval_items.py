"""Held-out evaluation items: a skill plus tasks it can be checked on, for `agent eval`."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from agent.synth.build import select_split
from agent.synth.common import SynthError, load_library
from agent.synth.samples import task_candidates
from agent.tasks.task import SUBTASKS, Task
from memory.skillfile import SkillDoc


@dataclass(frozen=True)
class EvalItem:
    skill: SkillDoc
    task: Task
    reference: str


def make_eval_items(library_dir: Path | str | None = None, split: str = "heldout", subtask: str | None = None,
                    n: int = 4, seed: int = 0) -> list[EvalItem]:
    """(skill, task, checked reference) triples: n per skill of the split, on held-out corpus code."""
    if subtask is not None and subtask not in SUBTASKS:
        raise SynthError(f"unknown subtask {subtask!r} (expected one of {', '.join(SUBTASKS)})")
    if n < 1:
        raise SynthError("n must be at least 1")
    skills = [s for s in select_split(load_library(library_dir), split) if subtask is None or s.subtask == subtask]
    if not skills:
        raise SynthError(f"no {split!r} skills for subtask {subtask!r}")
    discards: dict[str, Counter] = defaultdict(Counter)
    validated = task_candidates(skills, n, seed + 7919, "eval", discards)
    return [EvalItem(s.doc, c.task, c.reference) for s in skills for c in validated[s.name]]

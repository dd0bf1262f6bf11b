"""Stage 1 (from the skill text) and stage 2 (questions; task references checked by the skill's checker) samples."""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

from agent import checks as ck
from agent.synth.common import ACTIVITY, MAX_ASSISTANT_TOKENS, SynthSkill, approx_tokens, skill_parts
from agent.synth.references import render_reference, tasks_for
from agent.tasks import mutations as mu, testrun
from agent.tasks.task import Task


@dataclass(frozen=True)
class Sample:
    skill: str
    subtask: str
    stage: int
    type: str
    messages: list[dict[str, str]]
    reference: Any

    def to_json(self) -> str:
        return json.dumps({"skill": self.skill, "subtask": self.subtask, "stage": self.stage, "type": self.type,
                           "messages": self.messages, "reference": self.reference}, ensure_ascii=False)


def _chat(user: str, assistant: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def _numbered_text(items: list[str]) -> str:
    return "\n".join(f"{i}. {s}" for i, s in enumerate(items, 1))


def _bullet_text(items: list[str]) -> str:
    return "\n".join(f"- {s}" for s in items)


def _fit(items: list[str], render, budget: int) -> list[str]:
    """The longest prefix of items whose rendering stays within the token budget."""
    out: list[str] = []
    for item in items:
        if approx_tokens(render(out + [item])) > budget:
            break
        out.append(item)
    return out


def stage1_samples(skill: SynthSkill, n: int, rng: random.Random) -> tuple[list[Sample], Counter]:
    parts = skill_parts(skill.doc)
    activity = ACTIVITY[skill.subtask]
    out: list[Sample] = []
    discards: Counter = Counter()
    asks_steps = [f"What procedure do you follow when {activity}?", f"Walk me through your steps for {activity}.",
                  f"How do you go about {activity}? List the steps."]
    asks_rules = [f"What rules must your output follow when {activity}?", f"Which format rules apply when {activity}?",
                  f"List the rules you follow for {activity}."]
    candidates: list[tuple[str, str, str, str]] = []  # (type, user, assistant, source section)
    if parts.steps:
        steps = _fit(parts.steps, _numbered_text, MAX_ASSISTANT_TOKENS)
        candidates.append(("reconstruct", rng.choice(asks_steps), _numbered_text(steps), "Steps"))
    if parts.rules:
        rules = _fit(parts.rules, _bullet_text, MAX_ASSISTANT_TOKENS)
        candidates.append(("reconstruct", rng.choice(asks_rules), _bullet_text(rules), "Rules"))
    recon = candidates[:n]
    continues = []
    for section, items, render in (("Steps", parts.steps, _numbered_text), ("Rules", parts.rules, _bullet_text)):
        for cut in range(1, len(items)):
            head = render(items[:cut])
            tail = render(items)[len(head):].lstrip("\n")
            if approx_tokens(tail) > MAX_ASSISTANT_TOKENS:
                discards["too-long"] += 1
                continue
            user = f"Continue this list from your procedure for {activity}:\n\n## {section}\n\n{head}"
            continues.append(("continue", user, tail, section))
    rng.shuffle(continues)
    for kind, user, assistant, section in recon + continues[:n]:
        if not assistant.strip():
            discards["empty"] += 1
            continue
        out.append(Sample(skill.name, skill.subtask, 1, kind, _chat(user, assistant), {"section": section, "answer": assistant}))
    return out, discards


def qa_pairs(skill: SynthSkill) -> list[tuple[str, str, str]]:
    """(source, question, answer) about a skill: its purpose, its steps, its rules."""
    parts = skill_parts(skill.doc)
    activity = ACTIVITY[skill.subtask]
    pairs = [("description", f"When do you use your procedure for {activity}?", skill.doc.description)]
    if parts.steps:
        pairs.append(("steps", f"How many steps does your procedure for {activity} have?", f"{len(parts.steps)}."))
        pairs.append(("steps", f"What is the first step when {activity}?", parts.steps[0]))
        pairs.append(("steps", f"What is the last step when {activity}?", parts.steps[-1]))
        for i, step in enumerate(parts.steps[1:-1], 2):
            pairs.append(("steps", f"What is step {i} when {activity}?", step))
    for rule_id, question, answer in ck.rule_questions(skill.spec):
        pairs.append((f"rule:{rule_id}", f"{question.rstrip('?')} when {activity}?" if not question.endswith(f"{activity}?")
                      else question, answer))
    seen, out = set(), []
    for source, question, answer in pairs:
        if question not in seen:
            seen.add(question)
            out.append((source, question, answer))
    return out


def stage2_qa(skill: SynthSkill, n: int, rng: random.Random) -> list[Sample]:
    pairs = qa_pairs(skill)
    rng.shuffle(pairs)
    return [Sample(skill.name, skill.subtask, 2, "qa", _chat(q, a), {"source": src, "answer": a}) for src, q, a in pairs[:n]]


@dataclass
class Candidate:
    skill: SynthSkill
    task: Task
    reference: str
    by: str = "program"  # who wrote the reference: "program" or "teacher"


def _render_candidates(skill: SynthSkill, tasks: list[Task], discards: Counter) -> list[Candidate]:
    out = []
    seen = set()
    for task in tasks:
        if task.id in seen:
            continue
        seen.add(task.id)
        reference = render_reference(task, skill.spec)
        if reference is None:
            discards["no-reference"] += 1
            continue
        if approx_tokens(reference) > MAX_ASSISTANT_TOKENS:
            discards["too-long"] += 1
            continue
        out.append(Candidate(skill, task, reference))
    return out


def prefetch_exec(candidates: list[Candidate]) -> None:
    """Run the execution-based checks of many candidates in one batch (they are cached)."""
    jobs: list[testrun.TestJob] = []
    for cand in candidates:
        ids = set(cand.skill.spec.ids())
        t = cand.task.truth
        try:
            if "fix-passes-tests" in ids:
                source = ck.fixed_source(cand.reference, t)
                if source is not None:
                    mod = mu.corpus_module(t["module"])
                    jobs.append(testrun.TestJob(mod.name, source, mod.tests))
            if "tests-pass" in ids:
                code = "\n".join(b.code for b in ck.Answer(cand.reference).blocks if b.lang == "python")
                mod = mu.corpus_module(t["module"])
                jobs.append(testrun.TestJob(mod.name, mod.source, code, "test_answer.py"))
            if "behavior-preserved" in ids and t.get("origin") == "corpus":
                source = ck.refactored_module(cand.reference, t)
                if source is not None:
                    mod = mu.corpus_module(t["module"])
                    jobs.append(testrun.TestJob(mod.name, source, mod.tests))
        except (ValueError, SyntaxError):
            continue
    if jobs:
        testrun.run_many(jobs)


def _validated(candidates: list[Candidate], n: int, discards: Counter) -> list[Candidate]:
    kept = []
    for cand in candidates:
        if len(kept) >= n:
            break
        result = ck.check(cand.reference, cand.skill.spec, cand.task)
        if not result.passed:
            rule_id = result.failures[0].split(":", 1)[0]
            discards[f"check-failed:{rule_id}"] += 1
            continue
        kept.append(cand)
    return kept


def compact_truth(task: Task) -> dict[str, Any]:
    drop = {"diff", "buggy_function", "fixed_function", "degraded_code", "clean_code", "failing_test_source"}
    return {k: v for k, v in task.truth.items() if k not in drop}


def task_sample(cand: Candidate) -> Sample:
    reference = {"task_id": cand.task.id, "kind": cand.task.kind, "checks": cand.skill.doc.metadata["checks"],
                 "truth": compact_truth(cand.task)}
    if cand.by != "program":
        reference["answer_by"] = cand.by
    return Sample(cand.skill.name, cand.skill.subtask, 2, "task", _chat(cand.task.prompt, cand.reference), reference)


def skill_seed(seed: int, skill: SynthSkill, salt: str) -> int:
    return int(hashlib.sha256(f"{seed}|{skill.name}|{salt}".encode()).hexdigest()[:12], 16)


def task_candidates(skills: list[SynthSkill], n: int, seed: int, pool: str, discards: dict[str, Counter],
                    oversample: int = 4, salt: str = "") -> dict[str, list[Candidate]]:
    """n validated (task, reference) pairs per skill; failures are counted in discards."""
    rendered: dict[str, list[Candidate]] = {}
    for skill in skills:
        tasks = tasks_for(skill.subtask, skill.spec, n * oversample, skill_seed(seed, skill, salt + "task"), pool)
        rendered[skill.name] = _render_candidates(skill, tasks, discards[skill.name])
        if len(rendered[skill.name]) < n * 2:
            # Skills with long answers (a diff plus a test) need a wider pick of tasks.
            more = tasks_for(skill.subtask, skill.spec, n * oversample * 4, skill_seed(seed, skill, salt + "more"), pool)
            seen = {c.task.id for c in rendered[skill.name]}
            rendered[skill.name] += _render_candidates(skill, [t for t in more if t.id not in seen], discards[skill.name])
    prefetch_exec([c for cands in rendered.values() for c in cands[: n * 2]])
    return {name: _validated(cands, n, discards[name]) for name, cands in rendered.items()}

"""Training data from the skill library: stages 1 and 2 (single-turn) and 3 (multi-turn).

Stage 1 (self-supervised, from the skill text alone): reconstruct the skill's steps or
rules when asked what procedure one follows; continue a section from its first line.
Stage 2: (a) questions about the skill answered from it (rule parameters, steps,
purpose); (b) a task instance solved the way the skill prescribes. The reference answer
of (b) is built programmatically from the task's ground truth and the skill's checks spec
(`render_reference`) and kept only if that skill's checker accepts it. Stage 3: tool-use
trajectories on bug tasks, scripted and verified by execution in the sandbox
(agent/synth/stage3.py). An optional teacher endpoint rewrites the task references
(agent/synth/teacher.py), still filtered by the checkers.

The skill text never appears in the messages: the hypernetwork reads it separately (an
in-context variant is made by the caller adding it as a system message). Output: JSONL
files `{split}-stage{n}.jsonl` and `manifest.json`, written to a temporary folder that is
renamed into place, so a failure leaves nothing half-written. Same inputs and seed -> the
same bytes."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent import checks as ck
from agent.runtime.actions import FormatError, parse
from agent.synth import stage3 as s3
from agent.synth.common import (
    FORMAT_VERSION,
    MAX_ASSISTANT_TOKENS,
    SPLITS,
    STAGES,
    SynthError,
    SynthSkill,
    approx_tokens,
    code_version,
    library_hash,
    load_library,
    require_sandbox,
    skill_parts,
)
from agent.synth.samples import (
    Candidate,
    Sample,
    compact_truth,
    prefetch_exec,
    skill_seed,
    stage1_samples,
    stage2_qa,
    task_candidates,
    task_sample,
)
from agent.synth.teacher import Teacher, TeacherRequest


@dataclass(frozen=True)
class SynthResult:
    out_dir: Path
    files: dict[str, int]  # file name -> samples
    manifest: dict[str, Any]


def select_split(skills: list[SynthSkill], split: str) -> list[SynthSkill]:
    if split not in SPLITS:
        raise SynthError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
    chosen = [s for s in skills if s.split == split]
    if not chosen:
        raise SynthError(f"the library has no {split!r} skills")
    return chosen


def _check_stages(stages: Sequence[int]) -> tuple[int, ...]:
    chosen = tuple(sorted(set(stages)))
    if not chosen or any(s not in STAGES for s in chosen):
        raise SynthError(f"stages must be among 1, 2 and 3 (got {list(stages)})")
    return chosen


def synth(library_dir: Path | str | None, stages: Sequence[int] = STAGES, n_per_skill: int = 4, seed: int = 0,
          out_dir: Path | str = "data/synth", split: str = "train", overwrite: bool = False,
          teacher: Teacher | None = None, workers: int = 2) -> SynthResult:
    """Write `{split}-stage{n}.jsonl` and `manifest.json` for the skills of one split.

    n_per_skill bounds the samples of each type per skill (reconstruct has at most two; stage 3
    makes up to n verified trajectories per bug skill). Training data comes from the 'train' task
    pool; held-out material from the 'eval' pool. A teacher rewrites the task references of
    stages 2 and 3; its answers are kept only where the skill's checker accepts them.
    """
    stages = _check_stages(stages)
    if n_per_skill < 1:
        raise SynthError("n_per_skill must be at least 1")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise SynthError(f"{out}: already exists and is not empty (pass overwrite=True to replace it)")
    skills = select_split(load_library(library_dir), split)
    if 3 in stages and any(s.subtask in s3.BUG_SUBTASKS for s in skills):
        require_sandbox()
    if teacher is not None:
        teacher.probe()
    pool = "train" if split == "train" else "eval"
    samples: dict[int, list[Sample]] = {s: [] for s in stages}
    discards: dict[str, Counter] = defaultdict(Counter)
    teacher_log = TeacherLog()
    stage3_log: dict[str, Any] = {}
    if 1 in stages:
        for skill in skills:
            got, dropped = stage1_samples(skill, n_per_skill, random.Random(skill_seed(seed, skill, "stage1")))
            samples[1] += got
            discards[skill.name].update(dropped)
    if 2 in stages:
        validated = task_candidates(skills, n_per_skill, seed, pool, discards)
        if teacher is not None:
            validated = teacher_rewrite(teacher, validated, teacher_log)
        for skill in skills:
            samples[2] += stage2_qa(skill, n_per_skill, random.Random(skill_seed(seed, skill, "qa")))
            samples[2] += [task_sample(c) for c in validated[skill.name]]
    if 3 in stages:
        samples[3], stage3_log = stage3_samples(skills, n_per_skill, seed, pool, discards, teacher, teacher_log,
                                                workers)
    files = {f"{split}-stage{stage}.jsonl": samples[stage] for stage in stages}
    manifest = _manifest(skills, files, discards, seed, split, stages, n_per_skill, library_dir)
    if 3 in stages:
        manifest["stage3"] = stage3_log
    if teacher is not None:
        manifest["teacher"] = teacher_log.to_dict(teacher)
    _write_atomically(out, files, manifest)
    return SynthResult(out, {name: len(items) for name, items in files.items()}, manifest)


# --------------------------------------------------------------------------- teacher


@dataclass
class TeacherLog:
    kept: int = 0
    rejected: Counter = field(default_factory=Counter)

    def to_dict(self, teacher: Teacher) -> dict[str, Any]:
        return {"url": teacher.url, "model": teacher.model, "kept": self.kept,
                "rejected": sum(self.rejected.values()), "rejected_by_reason": dict(sorted(self.rejected.items()))}


def _teacher_problem(cand: Candidate) -> str | None:
    """Why a teacher answer cannot replace the programmatic one (None: it can)."""
    answer = cand.reference
    if not answer.strip():
        return "empty"
    if approx_tokens(answer) > MAX_ASSISTANT_TOKENS:
        return "too-long"
    try:
        parse(answer)
        return "action-block"  # a fence the agent loop would execute (stage 3 appends its own submit)
    except FormatError:
        pass
    result = ck.check(answer, cand.skill.spec, cand.task)
    return None if result.passed else "check-failed:" + result.failures[0].split(":", 1)[0]


def teacher_rewrite(teacher: Teacher, cands: dict[str, list[Candidate]], log: TeacherLog) -> dict[str, list[Candidate]]:
    """Each reference rewritten by the teacher where its rewrite passes the skill's checker."""
    flat = [c for items in cands.values() for c in items]
    answers = teacher.answers([TeacherRequest(c.skill.doc.text, c.task.prompt, c.reference) for c in flat])
    proposed = [Candidate(c.skill, c.task, a, "teacher") for c, a in zip(flat, answers)]
    prefetch_exec([p for p in proposed if p.reference.strip()])
    chosen = {}
    for cand, alt in zip(flat, proposed):
        problem = _teacher_problem(alt)
        if problem is None:
            log.kept += 1
        else:
            log.rejected[problem] += 1
        chosen[id(cand)] = alt if problem is None else cand
    return {name: [chosen[id(c)] for c in items] for name, items in cands.items()}


# --------------------------------------------------------------------------- stage 3


def _trajectory_sample(cand: Candidate, outcome: s3.Outcome) -> Sample:
    reference = {"task_id": cand.task.id, "kind": cand.task.kind, "checks": cand.skill.doc.metadata["checks"],
                 "truth": compact_truth(cand.task), "answer": cand.reference, "test_cmd": s3.TEST_CMD,
                 "tests_before_exit": outcome.before_exit, "tests_after_exit": outcome.after_exit}
    if cand.by != "program":
        reference["answer_by"] = cand.by
    return Sample(cand.skill.name, cand.skill.subtask, 3, "trajectory", outcome.messages, reference)


def stage3_samples(skills: list[SynthSkill], n: int, seed: int, pool: str, discards: dict[str, Counter],
                   teacher: Teacher | None = None, teacher_log: TeacherLog | None = None,
                   workers: int = 2) -> tuple[list[Sample], dict[str, Any]]:
    """Up to n verified trajectories per bug skill; the unverified are discarded and counted.

    Of 6n checked candidates per skill, the 2n with the shortest scripted replies are tried (long
    reports would not fit the training window): the first n, then replacements for the discarded.
    Reasons go to `discards` as `stage3/<reason>`.
    """
    bug_skills = [s for s in skills if s.subtask in s3.BUG_SUBTASKS]
    local: dict[str, Counter] = defaultdict(Counter)
    picked: dict[str, Counter] = defaultdict(Counter)
    cands = task_candidates(bug_skills, 6 * n, seed, pool, picked, salt="stage3/")
    for name, counter in picked.items():
        local[name].update({f"candidate:{reason}": k for reason, k in counter.items()})

    def plan_of(cand: Candidate) -> s3.Plan:
        rng = random.Random(skill_seed(seed, cand.skill, "stage3/" + cand.task.id))
        return s3.plan(cand.task, skill_parts(cand.skill.doc).steps, cand.reference, rng)

    def length(cand: Candidate) -> int:
        return s3.trajectory_tokens([{"content": step.reply} for step in plan_of(cand).steps])

    chosen: dict[str, list[Candidate]] = {}
    for skill in bug_skills:
        usable = [c for c in cands[skill.name] if not s3.hangs(c.task)]
        if len(usable) < len(cands[skill.name]):
            local[skill.name]["hangs"] += len(cands[skill.name]) - len(usable)
        chosen[skill.name] = sorted(usable, key=length)[:2 * n]
    if teacher is not None:
        chosen = teacher_rewrite(teacher, chosen, teacher_log if teacher_log is not None else TeacherLog())
    queue = {name: [(c, plan_of(c)) for c in items] for name, items in chosen.items()}
    kept: dict[str, list[Sample]] = {s.name: [] for s in bug_skills}
    run: Counter = Counter()
    while True:
        batch: list[tuple[Candidate, s3.Plan]] = []
        for skill in bug_skills:
            missing = max(n - len(kept[skill.name]), 0)
            batch += queue[skill.name][:missing]
            queue[skill.name] = queue[skill.name][missing:]
        if not batch:
            break
        outcomes = s3.run_all([(c.task, p) for c, p in batch], workers)
        for (cand, _), outcome in zip(batch, outcomes):
            run["run"] += 1
            if outcome.messages is None:
                local[cand.skill.name][outcome.reason] += 1
                run[outcome.reason] += 1
            else:
                kept[cand.skill.name].append(_trajectory_sample(cand, outcome))
    for name, counter in local.items():
        discards[name].update({f"stage3/{reason}": k for reason, k in counter.items()})
    samples = [x for s in bug_skills for x in kept[s.name]]
    log = {"bug_skills": len(bug_skills), "trajectories_run": run.pop("run", 0), "kept": len(samples),
           "unverified": dict(sorted(run.items())),
           "skills_short": sorted(name for name, items in kept.items() if len(items) < n)}
    return samples, log


def _manifest(skills: list[SynthSkill], files: dict[str, list[Sample]], discards: dict[str, Counter], seed: int,
              split: str, stages: tuple[int, ...], n_per_skill: int, library_dir: Any) -> dict[str, Any]:
    by = {key: Counter() for key in ("skill", "subtask", "stage", "type")}
    for items in files.values():
        for s in items:
            by["skill"][s.skill] += 1
            by["subtask"][s.subtask] += 1
            by["stage"][str(s.stage)] += 1
            by["type"][s.type] += 1
    reasons: Counter = Counter()
    for counter in discards.values():
        reasons.update(counter)
    return {
        "format_version": FORMAT_VERSION,
        "code_version": code_version(),
        "python": sys.version.split()[0],
        "seed": seed, "split": split, "stages": list(stages), "n_per_skill": n_per_skill,
        "library_hash": library_hash(skills),
        "skills": [s.name for s in skills],
        "files": {name: {"samples": len(items), "sha256": hashlib.sha256(_jsonl(items)).hexdigest()}
                  for name, items in files.items()},
        "counts": {"total": sum(len(v) for v in files.values()),
                   **{f"by_{k}": dict(sorted(v.items())) for k, v in by.items()}},
        "discards": {"total": sum(reasons.values()), "by_reason": dict(sorted(reasons.items())),
                     "by_skill": {k: dict(sorted(v.items())) for k, v in sorted(discards.items()) if v}},
    }


def _jsonl(items: list[Sample]) -> bytes:
    return "".join(s.to_json() + "\n" for s in items).encode("utf-8")


def _write_atomically(out: Path, files: dict[str, list[Sample]], manifest: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        for name, items in files.items():
            (tmp / name).write_bytes(_jsonl(items))
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

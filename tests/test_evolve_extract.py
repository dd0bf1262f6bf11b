"""Skill extraction: verified only, linted, general (no instance details), de-duplicated, stored atomically."""

from __future__ import annotations

import pytest
import torch

from agent.evolve import extract
from agent.evolve.cycle import run_job
from agent.evolve.extract import TrajectoryView, classify_change, instance_details, lint_candidate, template_candidate
from agent.evolve.verify import Verification
from memory import skills as skill_repo
from memory.models import Skill, Trajectory
from memory.skillfile import SkillDoc
from tests.test_evolve_fakes import CMP_DIFF, FIX_ACTIONS, FIX_DIFF, add_trajectory, fake_context

pytestmark = pytest.mark.usefixtures("one_thread")


def view(diff=FIX_DIFF, actions=FIX_ACTIONS, verified=True) -> TrajectoryView:
    outcome = {"diff": diff, "test_cmd": "python -m unittest",
               "tests_before": {"passed": False, "tail": "FAIL: test_clamp_inside_and_outside"}}
    return TrajectoryView(1, "fix the failing test", "/x", "submitted", verified, outcome, actions, [])


def skills(store, **where) -> list[Skill]:
    with store.session() as s:
        q = s.query(Skill)
        for k, v in where.items():
            q = q.filter(getattr(Skill, k) == v)
        return q.order_by(Skill.id).all()


def test_template_is_general_and_passes_the_linter():
    v = view()
    details = instance_details(v)
    assert {"stats.py", "clamp", "test_clamp_inside_and_outside"} <= set(details.files | details.identifiers)
    cand = template_candidate(v, details)
    assert lint_candidate(cand.doc, details) == []
    text = cand.doc.render()
    assert "stats.py" not in text and "clamp" not in text
    assert cand.doc.name == "fix-wrong-return-value" and cand.doc.metadata["subtask"] == "bug-fixing"
    # the procedure is the generalised action sequence
    assert "run tests → read failing module → edit return value → rerun tests" in cand.doc.body
    assert classify_change(CMP_DIFF).key == "comparison"


def test_instance_details_are_refused():
    v = view()
    leaky = SkillDoc("fix-clamp", "Use when clamp in stats.py fails.", template_candidate(v).doc.body,
                     metadata=template_candidate(v).doc.metadata)
    problems = lint_candidate(leaky, instance_details(v))
    assert any("instance details" in p and "stats.py" in p and "clamp" in p for p in problems)


def test_unverified_trajectory_never_becomes_a_skill_but_leaves_a_note(store, tmp_path):
    ctx = fake_context(store, tmp_path)
    add_trajectory(store)  # a verified run gives the library one skill
    run_job(ctx, "extract")
    (skill,) = skills(store, source="extracted")
    failed = add_trajectory(store, verified=False, active=[{"name": skill.name, "weight": 1.0}, {"name": "ema-v1"}])
    report = run_job(ctx, "extract")
    assert report.details["counts"] == {"skipped": 1}
    with store.session() as s:
        row = s.get(Trajectory, failed)
        assert row.extraction == "skipped" and "not verified" in row.extraction_info["reason"]
        sk = skill_repo.current(s, skill.name)
        assert (sk.use_count, sk.win_count) == (1, 0)
        assert sk.provenance["avoid"][0]["trajectory"] == failed
    assert len(skills(store, source="extracted")) == 1


def test_fresh_test_run_must_confirm_the_fix(store, tmp_path):
    ctx = fake_context(store, tmp_path, verifier=lambda v: Verification(False, "exit code 1: FAILED"))
    tid = add_trajectory(store)
    run_job(ctx, "extract")
    with store.session() as s:
        row = s.get(Trajectory, tid)
        assert row.extraction == "skipped" and "does not confirm" in row.extraction_info["reason"]
    assert skills(store, source="extracted") == []


class Writer:
    def __init__(self, reply: str):
        self.reply = reply

    def chat(self, messages):
        assert "Kind of bug" in messages[-1]["content"] and "stats.py" not in messages[-1]["content"]
        return self.reply, 10


GOOD = """---
name: fix-branch-return
description: Use when a unit test fails because one branch returns the wrong value.
---
## When to use

A test fails on one input range while the others pass, which points at a single branch of the function.

## Steps

1. Run the test suite and read the failing assertion, noting the expected and the actual value.
2. Open the module under test and read the function together with its docstring and its branches.
3. Trace the failing input through the branches by hand and find the one that returns the wrong value.
4. Change only the returned expression of that branch, keeping everything else as it is.
5. Rerun the whole suite, check that nothing else broke, and submit once every test passes.
"""


def test_model_candidate_accepted_or_rejected_with_reason(store, tmp_path):
    good = fake_context(store, tmp_path, writer_factory=lambda ctx: (Writer(GOOD), "teacher"))
    add_trajectory(store)
    assert run_job(good, "extract").details["counts"] == {"ADD": 1}
    (row,) = skills(store, source="extracted")
    assert row.name == "fix-branch-return" and row.provenance["origin"] == "teacher"
    assert "## Rules" in row.body  # the extraction's checks are stated for the writer

    bad = fake_context(store, tmp_path, writer_factory=lambda ctx: (Writer("Sure! Edit stats.py: return high."), "model"))
    tid = add_trajectory(store, diff=CMP_DIFF)
    out = run_job(bad, "extract").details
    assert out["counts"]["rejected-candidates"] == 1
    (rejected,) = skills(store, status="rejected")
    assert rejected.name == f"rejected-t{tid}-model" and "frontmatter" in rejected.status_reason
    # the template fallback still gave a skill, and rejected candidates are not in the library
    with store.session() as s:
        assert {r.name for r in skill_repo.list_current(s)} == {"fix-branch-return", "fix-wrong-comparison"}


def test_dedup_add_agree_edit(store, tmp_path):
    ctx = fake_context(store, tmp_path)
    first = add_trajectory(store)
    second = add_trajectory(store)
    third = add_trajectory(store, diff=CMP_DIFF)
    counts = run_job(ctx, "extract").details["counts"]
    assert counts == {"ADD": 2, "AGREE": 1}
    with store.session() as s:
        row = skill_repo.current(s, "fix-wrong-return-value")
        assert row.provenance["support"] == 2 and row.provenance["trajectories"] == [first, second]
        assert [e["action"] for e in row.provenance["events"]] == ["ADD", "AGREE"]
        assert s.get(Trajectory, third).extraction_info["action"] == "ADD"
    # a near-duplicate (similarity between the EDIT and AGREE thresholds) with a new step: EDIT
    with store.session() as s:
        base = skill_repo.to_doc(skill_repo.current(s, "fix-wrong-return-value"))
    variant = base.render().replace("5. Submit only once the suite passes.",
                                    "5. Add a regression test for the case you fixed.\n6. Submit once the suite passes.")

    def near(texts):  # the candidate at cosine 0.88 from that skill, 0.47 from the others
        out = torch.tensor([[1.0, 0.0] if "wrong return value" in t else [0.0, 1.0] for t in texts])
        out[0] = torch.tensor([0.88, (1 - 0.88 ** 2) ** 0.5])
        return out

    edit = fake_context(store, tmp_path, embedder=near, writer_factory=lambda ctx: (Writer(variant), "teacher"))
    add_trajectory(store)
    assert run_job(edit, "extract").details["counts"] == {"EDIT": 1}
    with store.session() as s:
        row = skill_repo.current(s, "fix-wrong-return-value")
        assert row.version == 2 and "## Also seen" in row.body and "regression test" in row.body
        assert [e["action"] for e in row.provenance["events"]] == ["ADD", "AGREE", "EDIT"]
        assert row.ema_version is None  # a new version is folded into the EMA again


def test_apply_is_idempotent(store, tmp_path):
    ctx = fake_context(store, tmp_path)
    tid = add_trajectory(store)
    with store.session() as s:
        v = TrajectoryView.from_row(s.get(Trajectory, tid))
    d = extract.decide(ctx, v)
    with store.session() as s:
        assert extract.apply(s, ctx, v, d)["result"] == "ADD"
    with store.session() as s:  # a second worker with the same decision writes nothing
        assert extract.apply(s, ctx, v, d) is None
    assert len(skills(store, source="extracted")) == 1


def test_crash_inside_the_transaction_leaves_the_trajectory_pending(store, tmp_path):
    def boom(point):
        if point == "extract:before-mark":
            raise KeyboardInterrupt  # like a kill: nothing of this transaction may stay

    ctx = fake_context(store, tmp_path, fault_hook=boom)
    tid = add_trajectory(store)
    with pytest.raises(KeyboardInterrupt):
        run_job(ctx, "extract")
    with store.session() as s:
        assert s.get(Trajectory, tid).extraction == "pending"
    assert skills(store, source="extracted") == []
    assert run_job(fake_context(store, tmp_path), "extract").details["counts"] == {"ADD": 1}


def test_a_run_takes_the_work_present_at_its_start_so_a_steady_stream_cannot_starve_the_other_jobs(store, tmp_path):
    # the verifier stands for the slow part of extraction; a writer adds a trajectory while each one runs
    arrived: list[int] = []

    def verifier(v):
        arrived.append(add_trajectory(store))
        return Verification(True, "ok (fake)")

    ctx = fake_context(store, tmp_path, verifier=verifier)
    first = [add_trajectory(store) for _ in range(3)]
    report = run_job(ctx, "extract")
    assert sum(report.details["counts"].values()) == 3 and len(arrived) == 3
    with store.session() as s:
        assert all(s.get(Trajectory, t).extraction != "pending" for t in first)
        assert all(s.get(Trajectory, t).extraction == "pending" for t in arrived)  # the next run's work

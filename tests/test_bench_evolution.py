"""bench/bench_evolution.py's bookkeeping, without a model: the plan, resuming it, the round and curve
summaries, the retrain verdict, and the refusal of a training stream that touches the held-out set."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bench.bench_evolution import (
    SHARED,
    Arm,
    Step,
    check_disjoint,
    close_orphans,
    curves,
    find,
    is_done,
    mirror_state,
    plan,
    record,
    recorded_trajectories,
    retrain_effects,
    retrain_outcome,
    round_summary,
    settings_mismatch,
    skill_following,
)


def run(task: str, fixed: bool, first: bool | None = None, **kw) -> dict:
    return {"task": task, "verified": fixed, "first_verified": fixed if first is None else first, "steps": 4,
            "seconds": 2.0, "status": "submitted", **kw}


def test_plan_shares_round_zero_and_interleaves_arms():
    steps = plan(["evolving", "accumulate"], rounds=2, batch=2, n_heldout=3)
    assert steps[:3] == [Step(0, SHARED, "heldout", i) for i in range(3)]
    per_arm_round = 2 + 1 + 3
    assert len(steps) == 3 + 2 * 2 * per_arm_round
    # within a round every arm has its turn before the next round starts
    assert [(s.round, s.arm) for s in steps[3::per_arm_round]] == [(1, "evolving"), (1, "accumulate"),
                                                                   (2, "evolving"), (2, "accumulate")]
    assert [s.phase for s in steps[3:3 + per_arm_round]] == ["train", "train", "jobs", "heldout", "heldout", "heldout"]


def test_the_frozen_arm_reuses_round_zero_instead_of_solving():
    steps = plan(["evolving", "frozen"], rounds=2, batch=1, n_heldout=2)
    frozen = [s for s in steps if s.arm == "frozen"]
    assert frozen == [Step(1, "frozen", "reuse"), Step(2, "frozen", "reuse")]
    result = {"rounds": []}
    assert not is_done(result, frozen[0])
    record(result, 1, "frozen")["heldout"] = [run("h0", True), run("h1", False)]
    assert is_done(result, frozen[0]) and not is_done(result, frozen[1])


def test_resume_skips_exactly_what_was_recorded():
    arms = ["evolving"]
    result = {"rounds": []}
    steps = plan(arms, rounds=1, batch=2, n_heldout=2)
    # a run killed after round 0, one training task and nothing more
    for i in range(2):
        record(result, 0, SHARED)["heldout"].append(run(f"h{i}", True))
    record(result, 1, "evolving")["train"].append(run("t0", True, trajectory=7))
    todo = [s for s in steps if not is_done(result, s)]
    assert todo[0] == Step(1, "evolving", "train", 1)
    assert [s.phase for s in todo] == ["train", "jobs", "heldout", "heldout"]
    assert len(result["rounds"]) == 2  # asking never adds records
    assert recorded_trajectories(result, "evolving") == {7}
    record(result, 1, "evolving")["jobs"] = {}
    assert is_done(result, Step(1, "evolving", "jobs")) and not is_done(result, Step(1, "evolving", "heldout", 0))


def test_round_summary_and_curves():
    result = {"rounds": []}
    r0 = record(result, 0, SHARED)
    r0["heldout"] = [run("h0", True), run("h1", False), run("h2", False, first=False)]
    r0["seconds"] = {"heldout": 6.0}
    rec = record(result, 1, "evolving")
    rec["train"] = [run("t0", True, trajectory=1), run("t1", False, trajectory=2)]
    rec["jobs"] = {"extracted": [{"trajectory": 1, "action": "ADD", "skill": "fix-off-by-one"},
                                 {"trajectory": 2, "action": "AGREE", "skill": "seed-skill"}],
                   "ema_version": 1, "retrain": {"outcome": "accepted", "seconds": 30.0}}
    rec["heldout"] = [run("h0", True), run("h1", True, first=False), run("h2", False, status="time_limit")]
    rec["seconds"] = {"train": 4.0, "jobs": 30.0, "heldout": 6.0}
    s = round_summary(rec, attempts=4)
    assert s["train_verified"] == 1 and s["skills_extracted"] == ["fix-off-by-one"] and s["ema_version"] == 1
    assert s["retrain"] == "accepted" and s["retrain_seconds"] == 30.0 and s["wall_seconds"] == 40.0
    assert s["heldout"]["fix_rate_k1"] == 33.3 and s["heldout"]["fix_rate_k4"] == 66.7
    assert s["heldout"]["time_limited"] == 1
    lo, hi = s["heldout"]["ci95_k1"]
    assert lo < 33.3 < hi
    # an arm's curve starts at the shared round 0; a round measured in part is left out
    record(result, 1, "frozen")["heldout"] = [run("h0", True)]
    c = curves(result, ["evolving", "frozen"], n_heldout=3, attempts=1)
    assert [p["round"] for p in c["evolving"]] == [0, 1] and [p["round"] for p in c["frozen"]] == [0]
    assert c["frozen"][0]["fix_rate_k1"] == 33.3


def test_retrain_outcome():
    ok = {"status": "ok", "details": {"gated": [{"candidate": 3, "accepted": False, "reason": "0.4 vs 0.5"}]}}
    assert retrain_outcome(ok)["outcome"] == "rejected"
    ok["details"]["gated"][0]["accepted"] = True
    assert retrain_outcome(ok) == {"outcome": "accepted", "reason": "0.4 vs 0.5", "candidates": [3]}
    assert retrain_outcome({"status": "skipped", "details": {"skipped": "no new training data"}}) == {
        "outcome": "skipped", "reason": "no new training data"}
    assert retrain_outcome({"status": "failed", "details": {"error": "boom"}})["outcome"] == "failed"


def test_retrain_effects_compare_with_the_arm_that_never_retrains():
    result = {"rounds": []}
    record(result, 0, SHARED)["heldout"] = [run("h0", False), run("h1", False)]
    for arm, fixed in (("evolving", [True, False]), ("accumulate", [False, False])):
        rec = record(result, 1, arm)
        rec["jobs"] = {"retrain": {"outcome": "never" if arm == "accumulate" else "not scheduled"}}
        rec["heldout"] = [run("h0", False), run("h1", False)]
        rec = record(result, 2, arm)
        rec["jobs"] = {"retrain": {"outcome": "never"} if arm == "accumulate" else
                       {"outcome": "accepted", "seconds": 41.5, "reason": "-1.2 vs -1.3"}}
        rec["heldout"] = [run(f"h{i}", f) for i, f in enumerate(fixed)]
    rec = record(result, 3, "evolving")
    rec["jobs"] = {"retrain": {"outcome": "rejected", "seconds": 40.0}}
    rec["heldout"] = [run("h0", True)]  # measured in part (the run was cut)
    assert retrain_effects(result, n_heldout=2) == [
        {"round": 2, "outcome": "accepted", "seconds": 41.5, "reason": "-1.2 vs -1.3", "fix_rate_k1": 50.0,
         "vs_accumulate": 50.0, "vs_previous_round": 50.0},
        {"round": 3, "outcome": "rejected", "seconds": 40.0, "reason": "", "fix_rate_k1": None,
         "vs_accumulate": None, "vs_previous_round": None}]


def test_the_accumulate_arm_mirrors_the_evolving_one_until_a_retrain_is_accepted():
    result = {"rounds": []}
    for r, outcome in ((1, "not scheduled"), (2, "rejected"), (3, "not scheduled"), (4, "accepted")):
        rec = record(result, r, "evolving")
        rec["jobs"], rec["heldout"] = {"retrain": {"outcome": outcome}}, [run("h0", r % 2 == 0)]
    assert mirror_state(result, 5) == "solve"  # the evolving arm has not measured round 5 yet
    assert [mirror_state(result, r) for r in (1, 2, 3)] == ["mirror"] * 3  # a rejected retrain changes nothing
    assert mirror_state(result, 4) == "solve"  # diverged, and nothing was mirrored: solve for real
    record(result, 3, "accumulate")["mirrored_from"] = "evolving"
    assert mirror_state(result, 4) == "stale"  # its store lacks round 3's data: solving would measure another agent


def test_skill_following_follows_each_arms_gated_hypernetwork():
    result = {"rounds": []}
    record(result, 0, SHARED)
    for r in (1, 2, 3, 4):
        for arm in ("evolving", "accumulate"):
            record(result, r, arm)["jobs"] = {"retrain": {"outcome": "never"}}
    assert skill_following(result, ["evolving", "accumulate"]) == {}  # no gate has measured anything yet
    gate = {"metric": "check_score", "baseline": 40.0}
    find(result, 2, "evolving")["jobs"]["retrain"]["gate"] = [gate | {"candidate_score": 45.0, "accepted": True}]
    find(result, 4, "evolving")["jobs"]["retrain"]["gate"] = [
        {"metric": "check_score", "baseline": 45.0, "candidate_score": 30.0, "accepted": False}]
    sf = skill_following(result, ["evolving", "accumulate"])
    assert [p["check_score"] for p in sf["evolving"]] == [40.0, 40.0, 45.0, 45.0, 45.0]  # a rejected one changes nothing
    assert [p["check_score"] for p in sf["accumulate"]] == [40.0] * 5  # never retrains: the shipped hypernetwork's


def test_settings_mismatch_names_what_changed():
    old = {"rounds": 5, "batch": 12, "seed": 0}
    assert settings_mismatch(old, dict(old)) == []
    assert settings_mismatch(old, old | {"batch": 8}) == ["batch: 12 then, 8 now"]


def task(tid: str, **truth) -> SimpleNamespace:
    return SimpleNamespace(id=tid, truth=truth)


def test_a_stream_touching_the_held_out_set_is_refused():
    held = ["examples/buggy-stats", "bug-fixing/paginate/abc"]
    check_disjoint([task("bug-fixing/matrix/1", module="matrix")], held)
    for bad in (task("bug-fixing/paginate/abc", module="paginate"), task("bug-fixing/textcase/2", module="textcase"),
                task("bug-fixing/x/3", module="x", package="p", pool="eval")):
        with pytest.raises(SystemExit, match="overlaps"):
            check_disjoint([bad], held)


def test_a_killed_runs_unrecorded_solves_never_reach_extraction(tmp_path):
    from memory import trajectories
    from memory.db import Store
    from memory.models import Trajectory

    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    with store.session() as s:
        ids = [trajectories.start(s, task="t", repo=f"r{i}", mode="parametric", model="m") for i in range(3)]
        for tid in ids[:2]:
            trajectories.finish(s, tid, status="submitted", outcome={}, verified=True, tokens=1)
    # 0: recorded in the JSON; 1: finished but killed before the JSON was written; 2: killed mid-solve
    assert close_orphans(Arm("evolving", tmp_path, store, None), known={ids[0]}) == 2
    with store.session() as s:
        rows = {r.id: (r.status, r.extraction) for r in s.query(Trajectory)}
    assert rows == {ids[0]: ("submitted", "pending"), ids[1]: ("submitted", "skipped"), ids[2]: ("stopped", "skipped")}

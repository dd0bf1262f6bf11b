"""EMA versions: folded atomically, gated on a held-out score, listed, diffed, rolled back (history kept),
compacted."""

from __future__ import annotations

import json

import pytest
import torch

from agent.commands.evolve import _fold_verdict
from agent.evolve import accumulate
from agent.evolve.context import EvolveSettings
from agent.evolve.cycle import run_job
from memory import evolution as evo_repo
from memory import skills as skill_repo
from memory.models import Adapter, EvalResult, Skill
from memory.skillfile import SkillDoc
from tests.test_evolve_fakes import FakeAdapterEvaluator, fake_context

pytestmark = pytest.mark.usefixtures("one_thread")


def add_skills(store, names, source="extracted"):
    with store.session() as s:
        for n in names:
            skill_repo.upsert(s, SkillDoc(n, f"Use when {n.replace('-', ' ')} is needed.", f"1. do {n}\n2. check\n3. done\n"),
                              source=source)


def test_each_skill_is_one_version_with_meta(store, tmp_path):
    ctx = fake_context(store, tmp_path, settings=EvolveSettings(beta=0.7, writer="template"))
    add_skills(store, ["alpha", "beta-skill", "gamma"])
    add_skills(store, ["seed-one"], source="seed")  # seed skills stay out of the persistent adapter
    report = run_job(ctx, "accumulate")
    assert [f["skill"] for f in report.details["folded"]] == ["alpha", "beta-skill", "gamma"]
    with store.session() as s:
        rows = evo_repo.ema_versions(s)
        assert [r.version for r in rows] == [1, 2, 3]
        last = rows[-1].meta
        assert last["beta"] == 0.7 and last["updates"] == 3 and last["skill"] == "gamma"
        weights = {c["name"]: c["weight"] for c in last["contributors"]}
        assert weights == pytest.approx({"alpha": 0.49, "beta-skill": 0.21, "gamma": 0.3})
        assert set(last["norms"]) == {"layers.0.q_proj", "layers.0.v_proj"} and last["total_norm"] > 0
        assert {r.name: r.ema_version for r in s.query(Skill)} == {"alpha": 1, "beta-skill": 2, "gamma": 3,
                                                                    "seed-one": None}
        lora = accumulate.load_version(rows[-1])
        docs = {r.name: (skill_repo.to_doc(r), r.id) for r in s.query(Skill)}
    # the stored adapter is the exact EMA of the skill adapters (ranks are small: no truncation)
    parts = {n: ctx.convert(*docs[n]).lora for n in weights}
    for key in lora.keys:
        expected = sum(weights[n] * parts[n].delta(key) for n in weights)
        assert torch.allclose(lora.delta(key), expected, atol=1e-4)
    assert run_job(ctx, "accumulate").details["folded"] == []  # idempotent: nothing left


def test_diff_and_rollback_keep_history(store, tmp_path, cli):
    ctx = fake_context(store, tmp_path)
    add_skills(store, ["alpha", "beta-skill", "gamma"])
    run_job(ctx, "accumulate")
    d = accumulate.diff(store, 1, 3)
    assert d.added == ["beta-skill@v1", "gamma@v1"] and d.removed == []
    beta = ctx.settings.beta  # alpha's weight after two more folds: beta^2
    assert d.reweighted[0]["skill"] == "alpha@v1" and d.reweighted[0]["new"] == pytest.approx(beta ** 2)
    with store.session() as s:
        v1, v3 = (accumulate.load_version(evo_repo.ema_version(s, v)) for v in (1, 3))
    exact = sum(float(torch.linalg.matrix_norm(v3.delta(k) - v1.delta(k)) ** 2) for k in v1.keys) ** 0.5
    assert d.diff_norm == pytest.approx(exact, rel=1e-5)

    info = accumulate.rollback(store, 1)
    assert info.version == 4 and info.op == "rollback"
    with store.session() as s:
        rows = {r.version: r for r in evo_repo.ema_versions(s)}
        assert rows[4].sha256 == rows[1].sha256 and rows[4].meta["from_version"] == 1
        assert sorted(rows[4].meta["dropped_skills"]) == ["beta-skill", "gamma"]
        assert set(rows) == {1, 2, 3, 4}  # nothing rewritten
    db = store.url
    r = cli("adapters", "diff", "3", "4", "--db", db, "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["removed"] == ["beta-skill@v1", "gamma@v1"]
    r = cli("adapters", "diff", "1", "--db", db)
    assert r.code == 0 and "beta-skill" in r.out
    r = cli("adapters", "rollback", "3", "--db", db, "--json")
    assert r.code == 0 and json.loads(r.out)["version"] == 5
    r = cli("adapters", "rollback", "5", "--db", db)
    assert r.code == 2 and "already the latest" in r.err
    r = cli("adapters", "rollback", "99", "--db", db)
    assert r.code == 2 and "no EMA version 99" in r.err


def crash_accumulate_at(store, tmp_path, point: str, **deps) -> None:
    """Run accumulate and kill it (KeyboardInterrupt, as kill -9 would stop it) at the fault point."""
    def boom(at):
        if at == point:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_job(fake_context(store, tmp_path, fault_hook=boom, **deps), "accumulate")


def test_crash_in_the_version_transaction_writes_nothing(store, tmp_path):
    add_skills(store, ["alpha"])
    crash_accumulate_at(store, tmp_path, "accumulate:before-mark")
    with store.session() as s:
        assert evo_repo.ema_versions(s) == [] and s.query(Skill).one().ema_version is None
        assert s.query(Adapter).filter_by(kind="skill").count() == 1  # the conversion cache may stay
        (run,) = evo_repo.recent_runs(s)
        assert run.status == "interrupted"
    assert [f["version"] for f in run_job(fake_context(store, tmp_path), "accumulate").details["folded"]] == [1]


def test_compact_prunes_caches_and_old_blobs_but_keeps_rows(store, tmp_path):
    settings = EvolveSettings(writer="template", keep_last=2, max_rank=3)
    ctx = fake_context(store, tmp_path, settings=settings)
    add_skills(store, ["alpha", "beta-skill", "gamma"])
    run_job(ctx, "accumulate")  # ranks 2, 3 (capped), 3
    with store.session() as s:  # a new wording of alpha makes its old adapter redundant
        skill_repo.upsert(s, SkillDoc("alpha", "Use when alpha, reworded.", "1. a\n2. b\n3. c\n"), source="extracted")
    run_job(ctx, "accumulate")
    with store.session() as s:
        s.get(Adapter, evo_repo.ema_version(s, 4).id).rank = 9  # pretend the cap was raised, then lowered
    out = run_job(ctx, "compact").details
    assert out["recompressed"] == [5] and out["skill_adapters_deleted"] == 1
    assert out["ema_blobs_pruned"] == [1, 2, 3]
    with store.session() as s:
        rows = evo_repo.ema_versions(s)
        assert [r.version for r in rows] == [1, 2, 3, 4, 5]
        assert rows[0].meta["pruned"]["bytes"] > 0 and rows[0].blob == b"" and rows[0].meta["norms"]
        assert accumulate.load_version(rows[-1]).max_rank <= 3
    with pytest.raises(Exception, match="pruned"):
        accumulate.rollback(store, 1)
    d = accumulate.diff(store, 1, 5)
    assert d.diff_norm is None and d.modules  # stored norms still compare
    assert run_job(ctx, "compact").details == {"recompressed": [], "skill_adapters_deleted": 0,
                                               "ema_blobs_pruned": [], "checkpoint_files_deleted": []}


def gate_rows(store) -> list[tuple[str, str, float]]:
    with store.session() as s:
        return [(e.run_id, e.details["role"], e.value) for e in s.query(EvalResult).order_by(EvalResult.id)]


def test_gate_rolls_back_a_fold_that_lowers_the_held_out_score(store, tmp_path, cli):
    scorer = FakeAdapterEvaluator(bad=("beta-skill",))
    ctx = fake_context(store, tmp_path, adapter_evaluator=scorer)
    add_skills(store, ["alpha", "beta-skill", "gamma"])
    report = run_job(ctx, "accumulate")
    assert [f["version"] for f in report.details["folded"]] == [1, 2, 4]
    assert [(g["version"], g["status"]) for g in report.details["gated"]] == [(1, "kept"), (2, "rolled back"),
                                                                              (4, "kept")]
    assert scorer.seen == [None, 1, 2, 4]  # each version scored once: v3 has v1's bytes
    assert _fold_verdict(report.details["gated"][1]) == (
        "  EMA v2 (beta-skill): rolled back as v3, held-out fake_score 0.4 with it vs 0.5 before")
    with store.session() as s:
        rows = {r.version: r for r in evo_repo.ema_versions(s)}
        back = rows[3].meta
        assert back["op"] == "rollback" and back["parent_version"] == 2 and back["from_version"] == 1
        assert rows[3].sha256 == rows[1].sha256  # the parent's weights, as a new version
        assert back["skill"] == "beta-skill" and back["dropped_skills"] == ["beta-skill"]
        bad = skill_repo.current(s, "beta-skill")
        assert back["gate"] == {"skill": "beta-skill", "skill_id": bad.id, "version": 2, "metric": "fake_score",
                                "baseline": 0.5, "candidate": pytest.approx(0.4), "tolerance": 0.0}
        assert bad.ema_version == 2 and bad.provenance["ema_rollback"]["rollback"] == 3
        assert rows[4].meta["parent_version"] == 3  # the good skills go on from the rolled-back version
        assert [c["name"] for c in rows[4].meta["contributors"]] == ["alpha", "gamma"]
    assert gate_rows(store) == [("ema-gate-v1", "baseline", 0.5), ("ema-gate-v1", "candidate", 0.5),
                                ("ema-gate-v2", "baseline", 0.5), ("ema-gate-v2", "candidate", pytest.approx(0.4)),
                                ("ema-gate-v4", "baseline", 0.5), ("ema-gate-v4", "candidate", 0.5)]

    again = run_job(ctx, "accumulate").details  # the rolled-back skill is never folded again
    assert again["folded"] == [] and again["gated"] == [] and scorer.seen == [None, 1, 2, 4]

    d = accumulate.diff(store, 2, 3)
    assert d.new.op == "rollback" and d.new.gate["skill"] == "beta-skill" and d.removed == ["beta-skill@v1"]
    r = cli("adapters", "diff", "2", "--db", store.url, "--json")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert data["new"]["op"] == "rollback" and data["new"]["skill"] == "beta-skill"
    assert data["new"]["gate"]["baseline"] == 0.5 and data["new"]["gate"]["candidate"] == pytest.approx(0.4)
    r = cli("adapters", "diff", "2", "--db", store.url)
    assert r.code == 0 and "rollback" in r.out
    assert "v3: the gate rolled back beta-skill (folded in v2): held-out fake_score 0.4 with it vs 0.5 before" in r.out


def test_tolerance_keeps_a_small_drop_and_gate_off_evaluates_nothing(store, tmp_path):
    scorer = FakeAdapterEvaluator(bad=("alpha",), penalty=0.05)
    settings = EvolveSettings(writer="template", ema_gate_tolerance=0.05)
    assert [g["status"] for g in run_job(fake_context(store, tmp_path, adapter_evaluator=scorer, settings=settings),
                                         "accumulate").details["gated"]] == []  # nothing to fold yet
    add_skills(store, ["alpha"])
    report = run_job(fake_context(store, tmp_path, adapter_evaluator=scorer, settings=settings), "accumulate")
    assert [g["status"] for g in report.details["gated"]] == ["kept"]

    off = FakeAdapterEvaluator(bad=("beta-skill",))
    add_skills(store, ["beta-skill"])
    ctx = fake_context(store, tmp_path, adapter_evaluator=off, settings=EvolveSettings(writer="template",
                                                                                        ema_gate=False))
    report = run_job(ctx, "accumulate")
    assert [f["version"] for f in report.details["folded"]] == [2] and report.details["gated"] == []
    assert off.seen == [] and [r[0] for r in gate_rows(store)] == ["ema-gate-v1", "ema-gate-v1"]
    assert EvolveSettings.from_mapping({"ema-gate": False, "ema-gate-tolerance": 0}) == EvolveSettings(
        ema_gate=False, ema_gate_tolerance=0.0)


def test_a_first_fold_rolled_back_leaves_a_zero_adapter_to_fold_on(store, tmp_path):
    ctx = fake_context(store, tmp_path, adapter_evaluator=FakeAdapterEvaluator(bad=("alpha",)),
                       settings=EvolveSettings(writer="template", beta=0.8))
    add_skills(store, ["alpha"])
    assert [g["status"] for g in run_job(ctx, "accumulate").details["gated"]] == ["rolled back"]
    add_skills(store, ["gamma"])
    assert [g["status"] for g in run_job(ctx, "accumulate").details["gated"]] == ["kept"]
    with store.session() as s:
        v1, v2, v3 = evo_repo.ema_versions(s)
        zero, last = accumulate.load_version(v2), accumulate.load_version(v3)
        assert v2.meta["from_version"] is None and v2.meta["contributors"] == [] and v2.meta["gate"]["version"] == 1
        assert all(float(zero.delta(k).abs().max()) == 0.0 for k in zero.keys)
        assert [(c["name"], c["weight"]) for c in v3.meta["contributors"]] == [("gamma", pytest.approx(0.2))]
        gamma = skill_repo.current(s, "gamma")
        doc, gamma_id = skill_repo.to_doc(gamma), gamma.id
    part = ctx.convert(doc, gamma_id).lora
    for key in last.keys:  # β·0 + (1−β)·gamma, as the contributors say
        assert torch.allclose(last.delta(key), 0.2 * part.delta(key), atol=1e-5)


@pytest.mark.parametrize("point", ["accumulate:eval", "accumulate:before-verdict"])
def test_a_crash_before_the_verdict_is_judged_by_the_next_run_first(store, tmp_path, point):
    add_skills(store, ["alpha", "beta-skill"])
    scorer = FakeAdapterEvaluator(bad=("alpha",))
    crash_accumulate_at(store, tmp_path, point, adapter_evaluator=scorer)
    with store.session() as s:
        assert [v.version for v in evo_repo.ema_versions(s)] == [1]
        assert skill_repo.current(s, "alpha").ema_version == 1  # folded, not yet judged
    assert gate_rows(store) == []
    report = run_job(fake_context(store, tmp_path, adapter_evaluator=scorer), "accumulate").details
    assert [(g["version"], g["status"]) for g in report["gated"]] == [(1, "rolled back"), (3, "kept")]
    with store.session() as s:
        rows = evo_repo.ema_versions(s)
        assert [(r.version, r.meta["op"], r.meta.get("skill")) for r in rows] == [
            (1, "update", "alpha"), (2, "rollback", "alpha"), (3, "update", "beta-skill")]
        assert [c["name"] for c in rows[-1].meta["contributors"]] == ["beta-skill"]


def test_compaction_leaves_an_unjudged_fold_the_latest(store, tmp_path):
    add_skills(store, ["alpha"])
    crash_accumulate_at(store, tmp_path, "accumulate:eval")
    low = EvolveSettings(writer="template", max_rank=1)  # the cap lowered: compaction would recompress v1
    assert run_job(fake_context(store, tmp_path, settings=low), "compact").details["recompressed"] == []
    report = run_job(fake_context(store, tmp_path, settings=low), "accumulate").details
    assert [g["version"] for g in report["gated"]] == [1]
    assert run_job(fake_context(store, tmp_path, settings=low), "compact").details["recompressed"] == [2]

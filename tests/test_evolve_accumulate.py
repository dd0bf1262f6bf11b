"""EMA versions: folded atomically, listed, diffed, rolled back (history kept), compacted."""

from __future__ import annotations

import json

import pytest
import torch

from agent.evolve import accumulate
from agent.evolve.context import EvolveSettings
from agent.evolve.cycle import run_job
from memory import evolution as evo_repo
from memory import skills as skill_repo
from memory.models import Adapter, Skill
from memory.skillfile import SkillDoc
from tests.test_evolve_fakes import fake_context

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
    assert d.reweighted[0]["skill"] == "alpha@v1" and d.reweighted[0]["new"] == pytest.approx(0.64)
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


def test_crash_in_the_version_transaction_writes_nothing(store, tmp_path):
    def boom(point):
        if point == "accumulate:before-mark":
            raise KeyboardInterrupt

    add_skills(store, ["alpha"])
    with pytest.raises(KeyboardInterrupt):
        run_job(fake_context(store, tmp_path, fault_hook=boom), "accumulate")
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

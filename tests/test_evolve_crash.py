"""kill -9 at many points of extract / accumulate / retrain / compact: the store stays consistent (no half-written
EMA version, no orphan rows, checkpoints intact) and the work resumes.

The job functions run in a child process with fake model work and small random pauses at named points, some
of them inside the transactions that write results. Half the kills are aimed at a named point (the child
stops there and waits), half land at random times. EVOLVE_CRASH_KILLS sets how many (default 30: every point is
aimed at once).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

import pytest

from agent.evolve.accumulate import load_version
from agent.evolve.cycle import run_job
from memory import evolution as evo_repo
from memory import skills as skill_repo
from memory.db import Store
from memory.models import EvalResult, EvolutionRun, HypernetCheckpoint, Skill, Trajectory
from memory.skillfile import SkillDoc
from tests.test_evolve_fakes import CMP_DIFF, CRASH_BAD, add_trajectory, crash_worker, fake_context

POINTS = ["extract:verify", "extract:in-txn", "extract:before-mark", "accumulate:convert", "accumulate:in-txn",
          "accumulate:before-mark", "accumulate:eval", "accumulate:before-verdict", "retrain:train", "retrain:register",
          "retrain:eval", "retrain:before-verdict", "compact:recompress", "compact:prune-skills", "compact:prune-ema"]
KILLS = int(os.environ.get("EVOLVE_CRASH_KILLS", "30"))


pytestmark = pytest.mark.usefixtures("one_thread")


def add_work(store: Store, k: int) -> None:
    add_trajectory(store)
    add_trajectory(store, diff=CMP_DIFF)
    add_trajectory(store, verified=False, active=[{"name": "fix-wrong-comparison"}])
    with store.session() as s:
        skill_repo.upsert(s, SkillDoc(f"imported-{k}", f"Use when case {k} happens.", "1. a\n2. b\n3. c\n"),
                          source="extracted")


def sha(version) -> str:
    """A version's weights' sha256, also once compaction pruned them."""
    return version.meta["pruned"]["sha256"] if version.meta.get("pruned") else version.sha256


def check_consistent(store: Store) -> dict:
    with store.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
        assert c.exec_driver_sql("PRAGMA foreign_key_check").fetchall() == []
    with store.session() as s:
        evo_repo.recover_runs(s)  # what a restarted daemon does first
    with store.session() as s:
        # EMA: contiguous versions, each readable, each update version matched by exactly its skill's mark
        versions = evo_repo.ema_versions(s)
        assert [v.version for v in versions] == list(range(1, len(versions) + 1))
        for prev, v in zip([None] + versions, versions):
            assert v.meta["parent_version"] == (prev.version if prev else None)
            if not v.meta.get("pruned"):
                load_version(v)  # sha256 and format checked
        updates = {v.version: v for v in versions if v.meta["op"] == "update"}
        marked = [sk for sk in s.query(Skill) if sk.ema_version is not None]
        assert sorted(sk.ema_version for sk in marked) == sorted(updates)
        for sk in marked:
            assert updates[sk.ema_version].meta["skills_added"][0]["skill_id"] == sk.id
        # trajectories: pending, or handled with their result recorded in the same transaction
        names = {sk.name for sk in s.query(Skill)}
        for t in s.query(Trajectory):
            assert t.extraction in ("pending", "extracted", "skipped")
            if t.extraction == "extracted":
                assert t.extraction_info["skill"] in names
            if t.extraction == "skipped":
                assert t.extraction_info["reason"]
        # EMA gate: a verdict is its two eval rows (+ the rollback version right after it, if rolled back);
        # only the latest fold may still wait for its verdict (the next accumulate judges it first)
        ema_evals = [e for e in s.query(EvalResult) if e.run_id.startswith("ema-gate-v")]
        judged = {int(e.run_id.removeprefix("ema-gate-v")) for e in ema_evals}
        by_version = {v.version: v for v in versions}
        assert len(ema_evals) == 2 * len(judged) and all(by_version[v].meta["op"] == "update" for v in judged)
        waiting = [v for v in updates if v not in judged]
        assert waiting == [] or waiting == [versions[-1].version], waiting
        for v in versions:
            g = v.meta.get("gate")
            if g is not None:
                assert v.meta["op"] == "rollback" and v.meta["parent_version"] == g["version"] in judged
                assert g["candidate"] < g["baseline"] and g["skill"] in CRASH_BAD
                parent = by_version[g["version"]].meta["parent_version"]
                if parent is not None:  # (the first fold rolls back to an all-zero adapter)
                    assert sha(v) == sha(by_version[parent])
        for sk in marked:
            rb = (sk.provenance or {}).get("ema_rollback")
            if rb is not None:
                assert rb["version"] == sk.ema_version and by_version[rb["rollback"]].meta["gate"]["skill_id"] == sk.id
        latest = versions[-1].meta["contributors"] if versions else []
        assert not [c["name"] for c in latest if c["name"] in CRASH_BAD and versions[-1].version not in waiting]
        # checkpoints: files intact; gated ones have exactly their two eval rows, candidates none
        evals = [e for e in s.query(EvalResult) if e.run_id.startswith("gate-")]
        for c in s.query(HypernetCheckpoint):
            assert c.status in ("candidate", "accepted", "rejected")
            assert hashlib.sha256(Path(c.path).read_bytes()).hexdigest() == c.sha256
            rows = [e for e in evals if e.run_id == f"gate-{c.id}"]
            assert len(rows) == (2 if c.status != "candidate" else 0)
            if c.status != "candidate":
                assert c.metrics["gate"]["verdict"] == c.status
        assert len(evals) == 2 * s.query(HypernetCheckpoint).filter(HypernetCheckpoint.status != "candidate").count()
        assert s.query(EvolutionRun).filter_by(status="running").count() == 0
        return {"versions": len(versions), "checkpoints": s.query(HypernetCheckpoint).count(),
                "rollbacks": sum(1 for v in versions if v.meta.get("gate"))}


def test_kill_9_at_random_points_then_resume(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    store = Store(url)
    mp = multiprocessing.get_context("forkserver")
    mp.set_forkserver_preload(["tests.test_evolve_fakes"])  # children start in milliseconds, imports done
    rng = random.Random(1234)
    reached = []
    for k in range(KILLS):
        add_work(store, k)
        target = POINTS[k // 2 % len(POINTS)] if k % 2 == 0 else None
        flag = mp.Value("i", 0)
        # retrain trains once per batch of new data: its points come once per run of the worker
        hits = 1 if target is None or target.startswith("retrain") else rng.randint(1, 2)
        p = mp.Process(target=crash_worker, args=(url, str(tmp_path), k, target, hits, flag))
        p.start()
        if target:
            deadline = time.time() + 20
            while not flag.value and time.time() < deadline and p.is_alive():
                time.sleep(0.01)
            reached.append(target if flag.value else f"{target} (not reached)")
        else:
            time.sleep(rng.uniform(0.05, 0.8))
        assert p.is_alive(), f"worker died on its own (exit {p.exitcode})"
        os.kill(p.pid, signal.SIGKILL)
        p.join()
        check_consistent(store)
    assert len(reached) >= len(POINTS) // 2 and not [r for r in reached if "not reached" in r], reached
    # restart without faults: everything left over is finished
    ctx = fake_context(store, tmp_path)
    for _ in range(5):
        for name in ("extract", "accumulate", "retrain", "compact"):
            assert run_job(ctx, name).status in ("ok", "skipped")
    stats = check_consistent(store)
    with store.session() as s:
        assert evo_repo.pending_trajectories(s) == []
        assert evo_repo.pending_skills(s, ("extracted",)) == []
        assert evo_repo.candidates(s, "fake-model") == []
        interrupted = s.query(EvolutionRun).filter_by(status="interrupted").count()
    # (a random kill can land between two jobs, when no run is open)
    assert stats["versions"] >= KILLS and stats["checkpoints"] >= 1 and interrupted >= KILLS // 2
    assert stats["rollbacks"] >= KILLS // 3 - 1  # imported-1, -4, -7, ... lower the fake held-out score

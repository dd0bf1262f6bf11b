"""Fakes shared by the evolve tests (no tests here): trajectories, a converter, a trainer, an evaluator.

Also the entry points the crash and concurrency tests start in child processes.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from pathlib import Path

import torch

from agent.evolve.context import (
    EvolveContext,
    EvolveSettings,
    FoldableAdapter,
    GateScore,
    TrainedCandidate,
    lexical_embed,
)
from agent.evolve.verify import Verification
from hypernet.lora import LoraWeights
from hypernet.targets import Target
from memory import trajectories as traj_repo
from memory.db import Store

BASE = "fake-model"
TARGETS = (Target(0, "q_proj", "model.layers.0.self_attn.q_proj", 16, 16),
           Target(0, "v_proj", "model.layers.0.self_attn.v_proj", 16, 8))

FIX_DIFF = ("diff --git a/stats.py b/stats.py\n--- a/stats.py\n+++ b/stats.py\n"
            "@@ -22,7 +22,7 @@ def clamp(value, low, high):\n     if value < low:\n         return low\n"
            "     if value > high:\n-        return low\n+        return high\n     return value\n")
FIX_ACTIONS = [{"kind": "test", "arg": ""}, {"kind": "read", "arg": "stats.py"},
               {"kind": "edit", "arg": "stats.py", "search": "return low", "replace": "return high"},
               {"kind": "test", "arg": ""}, {"kind": "submit", "arg": ""}]
CMP_DIFF = ("diff --git a/ranges.py b/ranges.py\n--- a/ranges.py\n+++ b/ranges.py\n"
            "@@ -3,5 +3,5 @@ def inside(x, lo, hi):\n-    return lo < x and x < hi\n+    return lo <= x and x <= hi\n")


def fake_lora(seed: int, scale: float = 1.0) -> LoraWeights:
    gen = torch.Generator().manual_seed(seed)
    return LoraWeights(BASE, TARGETS, {t.key: (torch.randn(2, t.in_features, generator=gen) * scale,
                                               torch.randn(t.out_features, 2, generator=gen) * scale)
                                       for t in TARGETS})


def add_trajectory(store: Store, *, verified: bool = True, diff: str = FIX_DIFF, actions=None, active=None,
                   status: str | None = None, task: str = "fix the failing test", repo: str = "/nonexistent") -> int:
    actions = FIX_ACTIONS if actions is None else actions
    with store.session() as s:
        tid = traj_repo.start(s, task=task, repo=repo, mode="none", model=BASE, active_skills=active or [])
        traj_repo.add_step(s, tid, 0, "system", "sys")
        traj_repo.add_step(s, tid, 1, "user", "task")
        for i, act in enumerate(actions):
            traj_repo.add_step(s, tid, 2 + i, "assistant", f"```{act['kind']}\n{act['arg']}\n```", act)
        outcome = {"tests_before": {"passed": False, "exit_code": 1, "tail": "FAIL: test_clamp_inside_and_outside"},
                   "tests_after": {"passed": verified, "exit_code": 0 if verified else 1, "tail": ""},
                   "diff": diff, "test_cmd": "python -m unittest", "sandboxed": True}
        traj_repo.finish(s, tid, status=status or ("submitted" if verified else "step_limit"), outcome=outcome,
                         verified=verified, tokens=10)
    return tid


def fake_converter(ctx: EvolveContext, doc, skill_id: int) -> FoldableAdapter:
    """A deterministic small adapter per skill text, stored like a real conversion (cached by content)."""
    from agent.runtime.skill_adapters import store_lora
    from memory import adapters as adapter_repo

    key = f"{doc.content_hash}:fake"
    with ctx.store.session() as s:
        row = adapter_repo.cached(s, key)
        if row is not None:
            return FoldableAdapter(LoraWeights.from_safetensors_bytes(row.blob), row.id, None)
    lora = fake_lora(int(doc.content_hash[:8], 16))
    aid = store_lora(ctx.store, lora, "skill", skill_id=skill_id, cache_key=key, meta={"skill": doc.name})
    return FoldableAdapter(lora, aid, None)


class FakeTrainer:
    """Writes a small checkpoint file (temp + rename, like a real trainer) and reports it."""

    def __init__(self, sleep: float = 0.0) -> None:
        self.calls = 0
        self.sleep = sleep

    def __call__(self, ctx: EvolveContext, req) -> TrainedCandidate:
        self.calls += 1
        time.sleep(self.sleep)
        path = req.out_dir / f"hn-{os.getpid()}-{time.time_ns()}.safetensors"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(hashlib.sha256(repr((req.trajectory_ids, req.skill_ids, time.time_ns())).encode()).digest() * 64)
        tmp.replace(path)
        return TrainedCandidate(str(path), path.stem, config={"fake": True},
                                metrics={"trajectories": len(req.trajectory_ids)})


class FakeEvaluator:
    """Scores: `baseline` for the current hypernetwork, `candidate` for a candidate (or a per-id table)."""

    def __init__(self, baseline: float = 0.5, candidate: float = 0.6, sleep: float = 0.0) -> None:
        self.baseline, self.candidate, self.sleep = baseline, candidate, sleep
        self.seen: list[int | None] = []

    def __call__(self, ctx: EvolveContext, ckpt) -> GateScore:
        time.sleep(self.sleep)
        self.seen.append(ckpt.id if ckpt else None)
        is_candidate = ckpt is not None and ckpt.status == "candidate"
        value = self.candidate if is_candidate else self.baseline
        if callable(value):
            value = value(ckpt)
        return GateScore("adherence", value, 4, {"fake": True})


class FakeAdapterEvaluator:
    """EMA versions' held-out scores: `base`, minus `penalty` for each contributor whose name is in `bad`."""

    def __init__(self, bad: tuple[str, ...] = (), base: float = 0.5, penalty: float = 0.1) -> None:
        self.bad, self.base, self.penalty = bad, base, penalty
        self.seen: list[int | None] = []  # the versions scored (None: no persistent adapter)

    def __call__(self, ctx: EvolveContext, row) -> GateScore:
        self.seen.append(row.version if row is not None else None)
        names = [c["name"] for c in ((row.meta or {}).get("contributors") or [])] if row is not None else []
        return GateScore("fake_score", self.base - self.penalty * sum(n in self.bad for n in names), 3, {"fake": True})


def fake_context(store: Store, tmp: Path, **overrides) -> EvolveContext:
    settings = overrides.pop("settings", None) or EvolveSettings(writer="template", checkpoint_dir=str(tmp / "ckpt"))
    kw = dict(model_name=BASE, verifier=lambda view: Verification(True, "ok (fake)"), embedder=lexical_embed,
              converter=fake_converter, retrain_fn=FakeTrainer(), evaluator=FakeEvaluator(),
              adapter_evaluator=FakeAdapterEvaluator())
    kw.update(overrides)
    return EvolveContext(store, settings, **kw)


# --- child-process entry points --------------------------------------------------------------------------

CRASH_BAD = tuple(f"imported-{k}" for k in range(1, 100, 3))  # skills the EMA gate of the crash test rolls back


def crash_worker(url: str, tmp: str, seed: int, target: str | None = None, hits: int = 1, flag=None) -> None:
    """Run extract / accumulate / retrain / compact over and over with small random pauses at the fault
    points (inside transactions too) until the parent SIGKILLs this process. With `target`, the process
    raises `flag` and waits to be killed when it reaches that point for the `hits`-th time."""
    torch.set_num_threads(1)
    rng = random.Random(seed)
    store = Store(url)
    seen = {"n": 0}

    def pause(point: str) -> None:
        if point == target:
            seen["n"] += 1
            if seen["n"] >= hits:
                flag.value = 1
                time.sleep(3600)
        time.sleep(rng.uniform(0.0, 0.02))

    ctx = fake_context(store, Path(tmp), fault_hook=pause, retrain_fn=FakeTrainer(sleep=0.02),
                       evaluator=FakeEvaluator(baseline=0.5, candidate=lambda c: 0.4 + 0.2 * (c.id % 2), sleep=0.01),
                       adapter_evaluator=FakeAdapterEvaluator(bad=CRASH_BAD),
                       settings=EvolveSettings(writer="template", checkpoint_dir=str(Path(tmp) / "ckpt"), batch=2,
                                               keep_last=3, max_rank=4))
    from agent.evolve.cycle import run_job

    while True:
        for name in ("extract", "accumulate", "retrain", "compact"):
            run_job(ctx, name)


def solve_like(store: Store, steps: int = 8, verified: bool = True, pause: float = 0.0) -> int:
    """Write a trajectory the way `agent solve` does: one transaction per message, then the outcome."""
    with store.session() as s:
        tid = traj_repo.start(s, task="fix the failing test", repo="/nonexistent", mode="none", model=BASE)
    for i, act in enumerate((FIX_ACTIONS * 3)[:steps]):
        with store.session() as s:
            traj_repo.add_step(s, tid, i, "assistant", f"```{act['kind']}\n```", act)
        time.sleep(pause)
    outcome = {"tests_before": {"passed": False, "exit_code": 1, "tail": "FAIL"},
               "tests_after": {"passed": verified, "exit_code": 0, "tail": ""}, "diff": FIX_DIFF,
               "test_cmd": "python -m unittest", "sandboxed": True}
    with store.session() as s:
        traj_repo.finish(s, tid, status="submitted", outcome=outcome, verified=verified, tokens=10)
    return tid


def _dump(path: str, data: dict) -> None:
    import json

    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(data, default=str))
    tmp.replace(path)


def concurrency_daemon(url: str, tmp: str, report: str) -> None:
    """The real Daemon (scheduler thread + queue) with fake model work; stops on SIGTERM."""
    from agent.evolve import scheduler as sched
    from agent.evolve.daemon import Daemon, SolveOutcome

    torch.set_num_threads(1)
    store = Store(url)
    solved: list[int] = []

    def solver(ctx, item):
        tid = solve_like(ctx.store, steps=6, pause=0.01)
        solved.append(item.id)
        return SolveOutcome(tid, "submitted", True)

    cfg = sched.load_config(None, ["extract=1s", "accumulate=1s", "retrain=2s", "compact=3s"])
    cfg.poll_s = 0.1
    said: list[str] = []
    ctx = fake_context(store, Path(tmp), retrain_fn=FakeTrainer(sleep=0.05), evaluator=FakeEvaluator(sleep=0.02))
    daemon = Daemon(ctx, cfg, solver=solver, say=said.append)
    print("ready", flush=True)
    daemon.run(install_signals=True)
    _dump(report, {"solved": solved, "said": said})


def concurrency_writer(url: str, seconds: float, report: str) -> None:
    """`agent solve` and `agent submit` and a skill import, over and over."""
    from memory import queue as queue_repo
    from memory import skills as skill_repo
    from memory.skillfile import SkillDoc

    torch.set_num_threads(1)
    store = Store(url)
    out: dict = {"trajectories": {}, "tasks": [], "skills": [], "errors": []}
    deadline = time.time() + seconds
    i = 0
    while time.time() < deadline:
        i += 1
        try:
            tid = solve_like(store, steps=8, verified=i % 3 != 0)
            out["trajectories"][tid] = 8
            if i % 2 == 0:
                with store.session() as s:
                    out["tasks"].append(queue_repo.submit(s, repo="/nonexistent", task=f"task {i}",
                                                          options={"mode": "none"}))
            if i % 4 == 0:
                name = f"imported-skill-{i}"
                with store.session() as s:
                    skill_repo.upsert(s, SkillDoc(name, f"Use when case {i} happens.", "1. a\n2. b\n3. c\n"),
                                      source="extracted")
                out["skills"].append(name)
        except Exception as exc:  # noqa: BLE001 - reported to the test
            out["errors"].append(f"{type(exc).__name__}: {exc}")
    _dump(report, out)


def concurrency_reader(url: str, seconds: float, report: str) -> None:
    """What the TUI does: list everything, load the newest EMA adapter, read the job store."""
    from agent.evolve import scheduler as sched
    from agent.evolve.accumulate import load_version
    from memory import adapters as adapter_repo
    from memory import evolution as evo_repo
    from memory import queue as queue_repo
    from memory import skills as skill_repo

    torch.set_num_threads(1)
    store = Store(url)
    out: dict = {"reads": 0, "errors": []}
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with store.session() as s:
                skill_repo.list_current(s)
                rows = traj_repo.recent(s, 20)
                traj_repo.step_counts(s, [r.id for r in rows])
                adapter_repo.listing(s)
                evo_repo.recent_runs(s)
                queue_repo.listing(s)
                latest = adapter_repo.latest_ema(s, BASE)
                if latest is not None:
                    load_version(latest)
            if out["reads"] % 5 == 0:
                sched.list_jobs(store)
            out["reads"] += 1
        except Exception as exc:  # noqa: BLE001 - reported to the test
            out["errors"].append(f"{type(exc).__name__}: {exc}")
        time.sleep(0.01)
    _dump(report, out)

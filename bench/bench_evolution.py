"""Curriculum benchmark: does the agent fix more unseen bugs after doing work? (issue 19, item 1)

    python bench/bench_evolution.py [--rounds 5] [--batch 12] [--heldout 24] [--retrain-every 2] [--resume]

Three arms solve the same stream of training tasks, round after round, each with its own store:

    evolving     extracts skills from its verified trajectories, folds them into the persistent (EMA)
                 adapter, and retrains the hypernetwork every --retrain-every rounds (kept only if the gate's
                 held-out skill-following evaluation does not drop: agent/evolve/cycle.py)
    accumulate   extract + accumulate, never retrains. Until a retrain of the evolving arm is accepted the two
                 arms are the same agent (a rejected retrain leaves nothing their solves, extraction or EMA
                 read), so its round is the evolving arm's, recorded with `mirrored_from` rather than solved
                 again; rounds measured for both before this rule existed matched task by task
    frozen       learns nothing (the control): its agent never changes, so its held-out result in every
                 round is round 0's, recorded again rather than re-measured (the first curriculum run did
                 re-measure it each round, 3 x 13 solves: all matched round 0 task by task)

A round, per arm: solve --batch training tasks (parametric mode, K = 1, greedy, the arm's current skills,
EMA adapter and hypernetwork), run the arm's jobs, then measure the fixed held-out set the same way (K = 1;
with --attempts K > 1 also generate-and-validate up to K), fix rates with Wilson 95 % intervals, and the
skill-following score of the hypernetwork each arm converts with (from the retrain gates). Round 0
is the held-out measurement before any learning: the arms' stores start identical, so it is made once and
recorded for all. The arms take turns within a round, so a cut run still compares them at the same round.

Held-out tasks never reach a training step. The stream is `make_tasks("bug-fixing", pool="train")`:
mutants of the training corpus modules (and training registry packages with --train-source), a pool that
excludes the held-out modules (agent/tasks/mutations.EVAL_MODULES) and packages by construction; the run
refuses to start if a training task shares an id, module or package with the held-out set anyway. And the
held-out solves run against a copy of the arm's store made after the round's jobs (heldout-rNN.db beside
it), so their trajectories never enter the store that extract, accumulate and retrain read.

Everything of a run is kept under --run-dir (default $AGENT_HOME/bench-evolution/<run-name>/): the task
repos and, per arm, its store (skills.db: every trajectory, extracted skill and EMA version, the retrain
candidates and gate verdicts, and each round's held-out fix rate as EvalResult rows for the TUI), the
per-round held-out store copies and the retrain checkpoints (checkpoints/). The JSON (default
bench/results/evolution.json, the plot beside it) is rewritten after every task: --resume continues a
killed run (the task it was in is solved again) and refuses if the experiment's settings changed.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_solve import PYTEST_INI, solve_task, task_repos, wilson  # noqa: E402
from bench.machine import label_and_save, machine_info  # noqa: E402

OUT = ROOT / "bench" / "results" / "evolution.json"
ARMS = ("evolving", "accumulate", "frozen")
SHARED = "all"  # the arm of round 0's record: one measurement for every arm
PHASES = ("train", "jobs", "heldout")
# what a resumed run must share with the run it continues (the rest, e.g. --out, may change)
EXPERIMENT = ("rounds", "batch", "heldout", "seed", "source", "train_source", "arms", "retrain_every", "max_steps",
              "attempts", "beta", "writer", "retrain_steps", "gate_skills", "skill_scale", "policy")


# --- the plan and its bookkeeping (pure: tests/test_bench_evolution.py) --------------------------------------

@dataclass(frozen=True)
class Step:
    round: int
    arm: str  # SHARED in round 0
    phase: str  # train | jobs | heldout | reuse (the frozen arm: round 0's held-out runs)
    index: int = 0  # the task's place in its phase


def plan(arms: list[str], rounds: int, batch: int, n_heldout: int) -> list[Step]:
    steps = [Step(0, SHARED, "heldout", i) for i in range(n_heldout)]
    for r in range(1, rounds + 1):
        for arm in arms:
            if arm == "frozen":
                # It learns nothing, so nothing it solves changes what it does: its held-out result in every round
                # is round 0's. (The first curriculum run measured it again each round: all 3 matched task by task.)
                steps.append(Step(r, arm, "reuse"))
                continue
            steps += [Step(r, arm, "train", i) for i in range(batch)]
            steps.append(Step(r, arm, "jobs"))
            steps += [Step(r, arm, "heldout", i) for i in range(n_heldout)]
    return steps


def find(result: dict, round_: int, arm: str) -> dict | None:
    return next((rec for rec in result["rounds"] if rec["round"] == round_ and rec["arm"] == arm), None)


def record(result: dict, round_: int, arm: str) -> dict:
    """The round's record of an arm, added on first use."""
    rec = find(result, round_, arm)
    if rec is None:
        rec = {"round": round_, "arm": arm, "train": [], "jobs": None, "heldout": [], "seconds": {}, "summary": None}
        result["rounds"].append(rec)
    return rec


def is_done(result: dict, step: Step) -> bool:
    rec = find(result, step.round, step.arm)
    if rec is None:
        return False
    if step.phase == "jobs":
        return rec["jobs"] is not None
    if step.phase == "reuse":
        return bool(rec["heldout"])  # written all at once
    return len(rec[step.phase]) > step.index  # tasks are recorded in plan order


def mirror_state(result: dict, round_: int) -> str:
    """Whether the accumulate arm's round can be the evolving arm's: "mirror" while no retrain of the evolving
    arm has been accepted up to this round (the arms then differ only in retrain jobs that changed nothing their
    solves, extraction or EMA read, so their records are the same by construction; rounds both measured check
    it), "stale" once they have diverged after a mirrored round (the accumulate store lacks the mirrored rounds'
    data, so solving on it would measure something else), else "solve"."""
    evolving = [rec for rec in result["rounds"] if rec["arm"] == "evolving" and 0 < rec["round"] <= round_]
    done = find(result, round_, "evolving")
    if done is None or done["jobs"] is None or len(done["heldout"]) == 0:
        return "solve"  # nothing to mirror (an --arms without evolving, or its round not yet measured)
    if not any(((rec["jobs"] or {}).get("retrain") or {}).get("outcome") == "accepted" for rec in evolving):
        return "mirror"
    mirrored = any(rec.get("mirrored_from") for rec in result["rounds"] if rec["arm"] == "accumulate")
    return "stale" if mirrored else "solve"


def recorded_trajectories(result: dict, arm: str) -> set[int]:
    """Training trajectories of an arm the JSON knows (any other pending one in its store is a killed solve's)."""
    return {run["trajectory"] for rec in result["rounds"] if rec["arm"] == arm for run in rec["train"]}


def held_out_summary(runs: list[dict], attempts: int) -> dict:
    n = len(runs)
    if n == 0:
        return {"tasks": 0}
    k1 = sum(r["first_verified"] for r in runs)
    out = {"tasks": n, "fixed_k1": k1, "fix_rate_k1": round(100 * k1 / n, 1), "ci95_k1": wilson(k1, n),
           "mean_steps": round(sum(r["steps"] for r in runs) / n, 2),
           "mean_seconds": round(sum(r["seconds"] for r in runs) / n, 1),
           # runs cut by the wall-clock limit: on a loaded machine these, not learning, move the rate
           "time_limited": sum(r.get("status") == "time_limit" for r in runs)}
    if attempts > 1:
        kk = sum(r["verified"] for r in runs)
        out |= {f"fixed_k{attempts}": kk, f"fix_rate_k{attempts}": round(100 * kk / n, 1),
                f"ci95_k{attempts}": wilson(kk, n)}
    return out


def retrain_outcome(report: dict) -> dict:
    """accepted | rejected | skipped | failed, from a retrain JobReport.to_dict()."""
    d = report.get("details") or {}
    if report["status"] == "skipped":
        return {"outcome": "skipped", "reason": d.get("skipped", "")}
    if report["status"] != "ok":
        return {"outcome": report["status"], "reason": d.get("error", "")}
    gated = d.get("gated") or []
    if not gated:
        return {"outcome": "skipped", "reason": "nothing gated"}
    verdict = "accepted" if any(g.get("accepted") for g in gated) else "rejected"
    return {"outcome": verdict, "reason": "; ".join(g.get("reason", "") for g in gated),
            "candidates": [g.get("candidate") for g in gated]}


def round_summary(rec: dict, attempts: int) -> dict:
    jobs = rec["jobs"] or {}
    retrain = jobs.get("retrain") or {}
    return {"train_tasks": len(rec["train"]), "train_verified": sum(r["verified"] for r in rec["train"]),
            "skills_extracted": [e["skill"] for e in jobs.get("extracted", []) if e.get("action") in ("ADD", "EDIT")],
            "ema_version": jobs.get("ema_version"), "retrain": retrain.get("outcome"),
            "retrain_seconds": retrain.get("seconds"), "heldout": held_out_summary(rec["heldout"], attempts),
            "wall_seconds": round(sum(rec["seconds"].values()), 1), "load_avg_1m": rec.get("load_avg_1m")}


def skill_following(result: dict, arms: list[str]) -> dict[str, list[dict]]:
    """Per arm and round, the retrain gate's skill-following score (check score on held-out skills) of the
    hypernetwork the arm converts with after that round's jobs. Only a gate measures it, so an arm's score is
    the first gate's baseline (the shipped hypernetwork) until one of its own retrains is gated; empty while no
    gate has run. An arm that never retrains keeps the shipped hypernetwork, so its line is flat by construction."""
    gates = [(rec["round"], rec["arm"], g) for rec in sorted(result["rounds"], key=lambda r: r["round"])
             for g in ((rec["jobs"] or {}).get("retrain") or {}).get("gate", [])]
    if not gates:
        return {}
    shipped = gates[0][2]["baseline"]
    rounds = sorted({rec["round"] for rec in result["rounds"] if rec["round"] > 0})
    out: dict[str, list[dict]] = {}
    for arm in arms:
        current, points = shipped, [{"round": 0, "check_score": shipped}]
        for r in rounds:
            for _, _, g in [x for x in gates if x[0] == r and x[1] == arm]:
                current = g["candidate_score"] if g["accepted"] else g["baseline"]
            if find(result, r, arm) is not None:
                points.append({"round": r, "check_score": current})
        out[arm] = points
    return out


def curves(result: dict, arms: list[str], n_heldout: int, attempts: int) -> dict[str, list[dict]]:
    """Per arm, the held-out result of every round measured in full (round 0 is every arm's)."""
    complete = {(rec["round"], rec["arm"]): held_out_summary(rec["heldout"], attempts)
                for rec in result["rounds"] if len(rec["heldout"]) == n_heldout}
    out = {}
    for arm in arms:
        points = [(r, s) for (r, a), s in complete.items() if a == arm or (r == 0 and a == SHARED)]
        out[arm] = [{"round": r, **s} for r, s in sorted(points, key=lambda p: p[0])]
    return out


def retrain_effects(result: dict, n_heldout: int) -> list[dict]:
    """What each retrain of the evolving arm bought (item 4): its verdict and time, and the held-out K = 1
    fix rate beside the accumulate arm's in the same round (they differ only in retraining) and beside the
    evolving arm's previous round. A comparison whose round is not fully measured is None."""
    def rate(round_: int, arm: str) -> float | None:
        rec = find(result, round_, SHARED if round_ == 0 else arm)
        if rec is None or len(rec["heldout"]) != n_heldout:
            return None
        return held_out_summary(rec["heldout"], 1)["fix_rate_k1"]

    def delta(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round(a - b, 1)

    out = []
    for rec in sorted(result["rounds"], key=lambda r: r["round"]):
        retrain = (rec.get("jobs") or {}).get("retrain") or {}
        if rec["arm"] != "evolving" or retrain.get("outcome") in (None, "not scheduled"):
            continue
        r, now = rec["round"], rate(rec["round"], "evolving")
        out.append({"round": r, "outcome": retrain["outcome"], "seconds": retrain.get("seconds"),
                    "reason": retrain.get("reason", ""), "fix_rate_k1": now,
                    "vs_accumulate": delta(now, rate(r, "accumulate")),
                    "vs_previous_round": delta(now, rate(r - 1, "evolving"))})
    return out


def settings_mismatch(old: dict, new: dict) -> list[str]:
    return [f"{k}: {old.get(k)!r} then, {new.get(k)!r} now" for k in EXPERIMENT if old.get(k) != new.get(k)]


def check_disjoint(train: list[Any], heldout_ids: list[str]) -> None:
    """Refuse a stream that shares a task, module or package with the held-out set (by construction it cannot)."""
    from agent.tasks.mutations import EVAL_MODULES
    from agent.tasks.packages import eval_packages

    held_modules = set(EVAL_MODULES) | {t.split("/")[1] for t in heldout_ids if t.startswith("bug-fixing/")}
    bad = [t.id for t in train if t.id in heldout_ids or t.truth.get("module") in held_modules
           or t.truth.get("package") in eval_packages() or t.truth.get("pool", "train") != "train"]
    if bad:
        raise SystemExit(f"training stream overlaps the held-out set: {', '.join(bad[:5])}")


# --- the run ---------------------------------------------------------------------------------------------------

def summarise(result: dict, arms: list[str], n_heldout: int, attempts: int) -> None:
    """What the JSON derives from the rounds recorded so far (rewritten after every task)."""
    result["curves"] = curves(result, arms, n_heldout, attempts)
    result["retrains"] = retrain_effects(result, n_heldout)
    result["skill_following"] = skill_following(result, arms)


@dataclass
class Arm:
    name: str
    folder: Path
    store: Any  # memory.db.Store
    ctx: Any  # agent.evolve.context.EvolveContext


def open_arm(name: str, folder: Path, settings, loaded) -> Arm:
    from agent.evolve.context import EvolveContext
    from memory.db import Store
    from memory.seed import ensure_seeded

    folder.mkdir(parents=True, exist_ok=True)
    store = Store(f"sqlite:///{folder / 'skills.db'}")
    ensure_seeded(store)
    # As `agent evolve` builds it (agent/commands/evolve.py) but from the bench's settings, never ./agent.toml;
    # the loaded model is shared by the arms (one copy in memory).
    ctx = EvolveContext(store, replace(settings, checkpoint_dir=str(folder / "checkpoints")), model_name=loaded.name,
                        _loaded=loaded)
    return Arm(name, folder, store, ctx)


def close_orphans(arm: Arm, known: set[int]) -> int:
    """A killed run's unrecorded solve: closed and kept from extraction (the task is solved again)."""
    from memory import evolution as evo_repo
    from memory.models import Trajectory, utcnow

    with arm.store.session() as s:
        evo_repo.recover_runs(s)  # job runs of the killed process: interrupted (their work is redone)
        rows = [r for r in s.query(Trajectory).filter(Trajectory.extraction == "pending") if r.id not in known]
        for row in rows:
            if row.status == "running":
                row.status, row.finished_at = "stopped", utcnow()
            row.extraction = "skipped"
            row.extraction_info = {"reason": "bench-evolution: the run was killed in this solve; it was solved again"}
    return len(rows)


def snapshot(src: Path, dst: Path) -> None:
    """A consistent copy of a live SQLite store (the backup API reads through WAL), written atomically."""
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.unlink(missing_ok=True)
    with closing(sqlite3.connect(src)) as a, closing(sqlite3.connect(tmp)) as b:
        a.backup(b)
    tmp.replace(dst)


def training_stream(n: int, seed: int, source: str, root: Path) -> list[tuple[Any, Path]]:
    import shutil

    from agent.synth.stage3 import hangs, write_repo
    from agent.tasks.make import make_tasks

    drawn = make_tasks("bug-fixing", 2 * n + 8, seed, pool="train", source=source)
    # as bench_solve: a mutant whose tests time out is a poor task for a step-limited agent
    tasks = [t for t in drawn if not hangs(t)][:n]
    if len(tasks) < n:
        raise SystemExit(f"the training pool has only {len(tasks)} usable tasks; asked for {n} (--rounds x --batch)")
    out = []
    for task in tasks:
        folder = root / task.id.replace("/", "_")
        if not folder.is_dir():
            tmp = root / f".{folder.name}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            write_repo(tmp, task.truth, PYTEST_INI)
            tmp.rename(folder)
        out.append((task, folder))
    return out


def heldout_repos(n: int, seed: int, source: str, root: Path) -> list[tuple[str, Path]]:
    """bench_solve's held-out set, built once into the run folder (task ids in tasks.json)."""
    import shutil

    if not (root / "tasks.json").is_file():
        tmp = root.with_name(root.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        repos = task_repos(n, seed, tmp, source)
        (tmp / "tasks.json").write_text(json.dumps([t for t, _ in repos]))
        shutil.rmtree(root, ignore_errors=True)
        tmp.rename(root)
    return [(t, root / t.replace("/", "_")) for t in json.loads((root / "tasks.json").read_text())]


def run_jobs(arm: Arm, round_: int, retrain_every: int, train_ids: list[int], base_model: str) -> dict:
    from agent.evolve.cycle import run_job
    from memory import adapters as adapter_repo
    from memory import evolution as evo_repo
    from memory.models import HypernetCheckpoint, Trajectory

    if arm.name == "frozen":
        return {"learned": "nothing (control)", "retrain": {"outcome": "never"}}
    jobs: dict[str, Any] = {}
    for name in ("extract", "accumulate"):
        start = time.perf_counter()
        rep = run_job(arm.ctx, name)
        d = rep.details
        jobs[name] = {"status": rep.status, "seconds": round(time.perf_counter() - start, 1), "run_id": rep.run_id,
                      **({"counts": d.get("counts", {})} if name == "extract" else
                         {"folded": [[f["skill"], f["version"]] for f in d.get("folded", [])],
                          "gated": d.get("gated", []), "errors": d.get("errors", [])}),
                      **({"error": d["error"]} if "error" in d else {})}
    if arm.name == "evolving" and round_ % retrain_every == 0:
        start = time.perf_counter()
        rep = run_job(arm.ctx, "retrain")
        jobs["retrain"] = retrain_outcome(rep.to_dict()) | {"seconds": round(time.perf_counter() - start, 1),
                                                            "run_id": rep.run_id}
        with arm.store.session() as s:  # the gate's skill-following scores, kept on each candidate's row
            gates = [(c, (s.get(HypernetCheckpoint, c).metrics or {}).get("gate"))
                     for c in jobs["retrain"].get("candidates") or []]
        jobs["retrain"]["gate"] = [{"candidate": c, "metric": g["metric"], "baseline": g["baseline"],
                                    "candidate_score": g["candidate"], "accepted": g["verdict"] == "accepted"}
                                   for c, g in gates if g and g.get("baseline") is not None]
    else:
        jobs["retrain"] = {"outcome": "never" if arm.name == "accumulate" else "not scheduled"}
    with arm.store.session() as s:
        # what extraction made of this round's solves, from the store: right even if a killed run redid the jobs
        rows = s.query(Trajectory).filter(Trajectory.id.in_(train_ids)).order_by(Trajectory.id).all()
        jobs["extracted"] = [{"trajectory": r.id, "action": (r.extraction_info or {}).get("action"),
                              "skill": (r.extraction_info or {}).get("skill")}
                             for r in rows if (r.extraction_info or {}).get("skill")]
        ema = adapter_repo.latest_ema(s, base_model)
        jobs["ema_version"] = ema.version if ema else None
        hn = evo_repo.latest_accepted(s, base_model)
        jobs["hypernet"] = {"id": hn.id, "name": hn.name} if hn else None
    return jobs


def record_eval(store, run_name: str, round_: int, arm: str, summary: dict, attempts: int, base_model: str,
                hypernet_id: int | None) -> None:
    """The round's held-out fix rate as EvalResult rows (what the TUI's overview reads); once per round."""
    from memory.models import EvalResult

    run_id = f"bench-evolution:{run_name}:r{round_}"[:64]
    metrics = [("fix_rate_k1", "fixed_k1", "ci95_k1")]
    if attempts > 1:
        metrics.append((f"fix_rate_k{attempts}", f"fixed_k{attempts}", f"ci95_k{attempts}"))
    with store.session() as s:
        if s.query(EvalResult).filter_by(run_id=run_id).first() is not None:
            return
        for metric, fixed, ci in metrics:
            s.add(EvalResult(run_id=run_id, mode="parametric", split="heldout", subtask="bug-fixing", metric=metric,
                             value=summary[fixed] / summary["tasks"], n=summary["tasks"], base_model=base_model,
                             hypernet_id=hypernet_id, details={"bench": "evolution", "run": run_name, "arm": arm,
                                                               "round": round_, "ci95": summary[ci]}))


def write_json(path: Path, result: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(path)  # a kill mid-write leaves the previous state, never half a file


def main() -> None:
    from agent.evolve.context import DEFAULT_BETA
    from agent.runtime import skill_context

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=12, help="training tasks solved per round, per arm")
    ap.add_argument("--heldout", type=int, default=24, help="held-out tasks (plus examples/buggy-stats)")
    ap.add_argument("--source", choices=("corpus", "packages", "all"), default="corpus", help="held-out task source")
    ap.add_argument("--train-source", choices=("corpus", "packages", "all"), default="corpus",
                    help="training stream source (make_tasks pool='train')")
    ap.add_argument("--arms", default=",".join(ARMS), help="which arms, of " + ", ".join(ARMS))
    ap.add_argument("--retrain-every", type=int, default=2, help="the evolving arm retrains after rounds r %% N == 0")
    ap.add_argument("--retrain-steps", type=int, default=0,
                    help="optimiser steps of a retrain (0: one epoch over the new samples, batch 4)")
    ap.add_argument("--gate-skills", type=int, default=2, help="held-out skills per subtask in the retrain gate")
    ap.add_argument("--beta", type=float, default=DEFAULT_BETA, help="EMA beta")
    ap.add_argument("--writer", choices=("template", "local"), default="template",
                    help="skill writer: the deterministic template, or the local model (falls back to the template)")
    ap.add_argument("--attempts", type=int, default=1, help="K of generate-and-validate on the held-out set (1: K = 1 only)")
    ap.add_argument("--max-steps", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--policy", default=None, help="policy adapter folder (default: the shipped one)")
    ap.add_argument("--skill-scale", type=float, default=skill_context.SKILL_SCALE_UNDER_POLICY,
                    help="scale of the merged skill + EMA adapter beneath the policy (default: agent solve's)")
    ap.add_argument("--run-name", default="default")
    ap.add_argument("--run-dir", type=Path, default=None,
                    help="where stores, checkpoints and task repos are kept (default $AGENT_HOME/bench-evolution/RUN-NAME)")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--out", type=Path, default=OUT, help="result JSON (the plot goes beside it)")
    args = ap.parse_args()

    from agent.evolve.context import EvolveSettings
    from agent.runtime.base_model import agent_home, load_model
    from agent.runtime.local_chat import load_policy
    from memory.db import Store

    arms = [a for a in args.arms.split(",") if a]
    if not arms or set(arms) - set(ARMS) or args.rounds < 1 or args.batch < 1 or args.retrain_every < 1:
        ap.error(f"--arms must be some of {', '.join(ARMS)}; --rounds, --batch, --retrain-every at least 1")
    run_dir = (args.run_dir or agent_home() / "bench-evolution" / args.run_name).resolve()
    out = args.out
    experiment = {k: getattr(args, k) for k in EXPERIMENT}
    if args.resume and out.is_file():
        result = json.loads(out.read_text())
        diff = settings_mismatch(result["experiment"], experiment)
        if diff or result["run_dir"] != str(run_dir):
            raise SystemExit("--resume: the experiment changed (" + "; ".join(diff or ["--run-dir"]) + ")")
    else:
        if (run_dir / "arms").exists():
            raise SystemExit(f"{run_dir} holds a run already: --resume it (with the same --out) or pick another "
                             "--run-name")
        result = {"experiment": experiment, "run_dir": str(run_dir), "rounds": [], "started": time.time()}
    result.update({"machine": machine_info(), "settings": {k: str(v) if isinstance(v, Path) else v
                                                           for k, v in vars(args).items()}})
    out.parent.mkdir(parents=True, exist_ok=True)

    loaded = load_model()
    policy = load_policy(args.policy, loaded)
    adapters_base = [policy] if policy is not None else []
    stream = training_stream(args.rounds * args.batch, args.seed, args.train_source, run_dir / "tasks" / "train")
    heldout = heldout_repos(args.heldout, args.seed, args.source, run_dir / "tasks" / "heldout")
    check_disjoint([t for t, _ in stream], [t for t, _ in heldout])
    result["tasks"] = {"train": [t.id for t, _ in stream], "heldout": [t for t, _ in heldout]}
    settings = EvolveSettings(beta=args.beta, writer=args.writer, retrain_steps=args.retrain_steps,
                              gate_skills=args.gate_skills).validate()
    by_name = {a: open_arm(a, run_dir / "arms" / a, settings, loaded) for a in arms}
    for arm in by_name.values():
        n = close_orphans(arm, recorded_trajectories(result, arm.name))
        if n:
            print(f"{arm.name}: {n} unrecorded solve(s) of a killed run closed; solving again", flush=True)

    def solve(store, arm: Arm, repo: Path, attempts: int) -> tuple[dict, Any]:
        return solve_task(store, loaded, arm.ctx.handle(), adapters_base, repo, "parametric", attempts, args.seed,
                          args.max_steps, args.skill_scale)

    heldout_store: dict[tuple[int, str], Any] = {}
    for step in plan(arms, args.rounds, args.batch, len(heldout)):
        if is_done(result, step):
            continue
        rec = record(result, step.round, step.arm)
        arm = by_name[arms[0] if step.arm == SHARED else step.arm]
        start = time.perf_counter()
        state = mirror_state(result, step.round) if step.arm == "accumulate" else "solve"
        if state != "solve" and (rec["train"] or rec["jobs"] is not None or rec["heldout"]):
            state = "solve"  # a round begun for real is finished for real
        if state == "stale":  # left unmeasured (the JSON says so), the other arms go on
            rec["stopped"] = "diverged from the evolving arm after mirrored rounds: not measured"
            continue
        if state == "mirror":
            src = find(result, step.round, "evolving")
            rec.update({"train": list(src["train"]), "heldout": list(src["heldout"]), "mirrored_from": "evolving",
                        "jobs": {**src["jobs"], "retrain": {"outcome": "never"}}})
            run = {"mirrored_from": "evolving"}
            step = Step(step.round, step.arm, "heldout", len(heldout) - 1)  # the round's record is complete
        elif step.phase == "train":
            task, repo = stream[(step.round - 1) * args.batch + step.index]
            fields, report = solve(arm.store, arm, repo, 1)
            run = {"task": task.id, "trajectory": report.trajectory_id, **fields}
            rec["train"].append(run)
        elif step.phase == "reuse":
            rec["heldout"] = [dict(r, reused_from_round=0) for r in find(result, 0, SHARED)["heldout"]]
            rec["jobs"] = run = {"learned": "nothing (control)", "retrain": {"outcome": "never"},
                                 "heldout": "round 0's, reused"}
        elif step.phase == "jobs":
            ids = [r["trajectory"] for r in rec["train"]]
            rec["jobs"] = run = run_jobs(arm, step.round, args.retrain_every, ids, loaded.name)
        else:
            key = (step.round, step.arm)
            if key not in heldout_store:
                # round 0: the first arm's store before any training, which every arm's equals
                copy = (run_dir / "round0-heldout.db" if step.round == 0
                        else arm.folder / f"heldout-r{step.round:02d}.db")
                if not copy.is_file():
                    arm.ctx.handle()  # registers its checkpoint row first: the copy's adapters refer to it
                    snapshot(arm.folder / "skills.db", copy)
                heldout_store[key] = Store(f"sqlite:///{copy}")
            task_id, repo = heldout[step.index]
            fields, _ = solve(heldout_store[key], arm, repo, args.attempts)
            run = {"task": task_id, **fields}
            rec["heldout"].append(run)
        rec["seconds"][step.phase] = round(rec["seconds"].get(step.phase, 0.0) + time.perf_counter() - start, 2)
        rec["load_avg_1m"] = round(os.getloadavg()[0], 2)
        rec["summary"] = round_summary(rec, args.attempts)
        print(json.dumps({"round": step.round, "arm": step.arm, "phase": step.phase, **run}), flush=True)
        if step.phase == "reuse" or (step.phase == "heldout" and step.index == len(heldout) - 1):
            if step.phase == "heldout" and (step.round, step.arm) in heldout_store:
                heldout_store.pop((step.round, step.arm)).close()
            summary = rec["summary"]["heldout"]
            targets = by_name.values() if step.arm == SHARED else [arm]
            for a in targets:  # hypernet_id: the one that converted this arm's skills
                record_eval(a.store, args.run_name, step.round, a.name, summary, args.attempts, loaded.name,
                            a.ctx.handle().checkpoint_id)
            print(json.dumps({"round": step.round, "arm": step.arm, "summary": rec["summary"]}), flush=True)
        summarise(result, arms, len(heldout), args.attempts)
        write_json(out, result)
    summarise(result, arms, len(heldout), args.attempts)
    result["machine_after"] = machine_info()
    result["finished"] = time.time()
    write_json(out, result)
    plot(result, out.with_suffix(".png"))


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    arms = list(result["curves"])
    for i, arm in enumerate(arms):
        pts = result["curves"][arm]
        if not pts:
            continue
        x = [p["round"] + (i - (len(arms) - 1) / 2) * 0.06 for p in pts]  # side by side: the bars stay readable
        y = [p["fix_rate_k1"] for p in pts]
        err = [[v - p["ci95_k1"][0] for v, p in zip(y, pts)], [p["ci95_k1"][1] - v for v, p in zip(y, pts)]]
        line = ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=f"{arm} (K = 1)")
        k = result["experiment"]["attempts"]
        if k > 1:
            ax.plot(x, [p[f"fix_rate_k{k}"] for p in pts], linestyle="--", color=line[0].get_color(),
                    label=f"{arm} (K = {k})")
    ax.set_xlabel("round (0: before any learning)")
    ax.set_xticks(range(result["experiment"]["rounds"] + 1))
    n = len(result["tasks"]["heldout"])
    label_and_save(fig, ax, path, "held-out fix rate (%), 95 % Wilson interval",
                   f"bench_evolution: {n} held-out tasks, {result['experiment']['batch']} training tasks per round")


if __name__ == "__main__":
    main()

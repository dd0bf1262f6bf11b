"""Held-out solve benchmark: does the embedded agent fix bugs it has never seen?

    python bench/bench_solve.py [--tasks 24] [--attempts 4] [--max-steps 8] [--source corpus|packages|all] [--resume]

Tasks: mutants of the held-out corpus modules (`make_tasks("bug-fixing", pool="eval")`: stats, paginate,
textcase; no stage of training data is drawn from them, see tests/test_policy.py) as little repos of the
buggy module plus its tests, and `examples/buggy-stats` (no corpus module at all). `--source packages` draws
mutants of the held-out registry packages instead (agent/tasks/packages.py: eval pool, whole package repos;
built and cached in $AGENT_HOME/packages on first use, which fetches the sdists), `--source all` both. Each task is solved
with the real runtime (sandbox, loop, llama.cpp backend, grammar) in each configuration:

    base         --mode none, no policy adapter (the embedded model as it ships)
    none         --mode none with the policy adapter
    icl          the top-3 skills in the prompt, with the policy adapter
    parametric   the top-3 skills as hypernetwork LoRA, with the policy adapter

With --candidate-policy DIR every config but base also runs under that policy (CONFIG+cand), task by task
beside the first, and `candidate_vs_shipped` gives the paired counts. A config named CONFIG+resample (e.g.
parametric+resample) is CONFIG with a wasted action sampled again up to --resamples times before it acts
(loop.Limits.resamples), paired with CONFIG in `resample_vs_as_sent`. parametric+policy-ema is parametric
with the policy as the persistent adapter's start instead of a separate adapter (`agent adapters ema-init`)
and the --ema-folds training-split skills nearest the task folded in after it with the EMA (default β), in a
second store; paired with parametric in `policy_ema_vs_separate`. CONFIG+hn runs with the
--candidate-hypernet checkpoint instead of the shipped one (e.g. a stage-3 file), paired with CONFIG in
`hypernet_vs_shipped`; CONFIG+nopolicy leaves the policy adapter out (the skill adapter then acts at scale 1, as
`agent solve` without a policy), paired with CONFIG in `without_policy`; they combine as parametric+hn+nopolicy
(the hypernetwork alone).

at K = 1 (greedy) for all, and generate-and-validate up to K = --attempts for parametric (attempt 1 is
the greedy one, the others sample at T = 0.7 with seeds 1..K-1). Fix rates carry Wilson 95 % intervals.
Writes bench/results/solve_heldout.json (after every task: --resume continues) and solve_heldout.png.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import label_and_save, machine_info  # noqa: E402

OUT = ROOT / "bench" / "results" / "solve_heldout.json"
CONFIGS = ("base", "none", "icl", "parametric")
CANDIDATE = "+cand"  # suffix of the configs run under --candidate-policy
RESAMPLE = "+resample"  # a config with this suffix samples a wasted action again (--resamples times)
PYTEST_INI = "[pytest]\naddopts = -p no:cacheprovider\n"
POLICY_EMA = "+policy-ema"  # a config with this suffix: the policy starts the EMA (second store), skills folded
HYPERNET = "+hn"  # a config with this suffix converts skills with --candidate-hypernet
NO_POLICY = "+nopolicy"  # ... and with this one runs without the policy adapter
TASK = "fix the failing test"  # what every solve is asked (skill retrieval reads it)


def split_config(name: str) -> tuple[str, set[str]]:
    """'parametric+hn+nopolicy' -> ('parametric', {'+hn', '+nopolicy'}): the suffixes in any order."""
    config, *flags = name.split("+")
    return config, {"+" + f for f in flags}


def wilson(k: int, n: int, z: float = 1.96) -> list[float]:
    if n == 0:
        return [0.0, 0.0]
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(100 * max(0.0, centre - half), 1), round(100 * min(1.0, centre + half), 1)]


def task_repos(n: int, seed: int, root: Path, source: str = "corpus") -> list[tuple[str, Path]]:
    """(task id, repo folder): the bundled example, then held-out mutants (corpus modules and/or registry packages)."""
    import shutil

    from agent.synth.stage3 import hangs, write_repo
    from agent.tasks.make import make_tasks

    out = []
    for task in make_tasks("bug-fixing", n, seed, pool="eval", source=source):
        if hangs(task):
            continue
        folder = root / task.id.replace("/", "_")
        folder.mkdir(parents=True)
        write_repo(folder, task.truth, PYTEST_INI)
        out.append((task.id, folder))
    example = root / "examples_buggy-stats"
    shutil.copytree(ROOT / "examples" / "buggy-stats", example)
    return [("examples/buggy-stats", example)] + out  # first: the demo's task is measured even in a cut run


def turn_counts(store, trajectory_id: int) -> tuple[int, int, int]:
    """(assistant turns, turns that did not parse, read/edit turns on a file that could not be opened) of a
    stored trajectory; a name the tools resolved to a file (`is not a file: this is ...`) is not a miss."""
    from agent.runtime.actions import FormatError, parse
    from memory import trajectories as traj_repo

    with store.session() as s:
        steps = [(st.role, st.content) for st in traj_repo.get(s, trajectory_id).steps]
    bad = 0
    for text in (c for r, c in steps if r == "assistant"):
        try:
            parse(text)
        except FormatError:
            bad += 1
    misses = sum(r == "user" and c.startswith(("cannot read ", "cannot edit ")) for r, c in steps)
    return sum(r == "assistant" for r, _ in steps), bad, misses


def policy_ema_store(store, loaded, handle, policy, source: str, folds: int) -> list[str]:
    """The store as parametric+policy-ema sees it: EMA version 1 = the policy, then the `folds` training-split
    library skills nearest the task folded in by accumulate's own fold (default β, ungated): what the
    accumulate job does with skills it extracts. Returns their names, in folding order."""
    from agent.evolve import accumulate
    from agent.evolve.context import EvolveContext, FoldableAdapter
    from agent.runtime.skill_adapters import convert_skill
    from agent.runtime.skill_context import retrieve
    from agent.synth.build import load_library, select_split

    accumulate.start_from_policy(store, policy, source)
    train = {sk.name for sk in select_split(load_library(None), "train")}
    hits = [(hit, skill_id, doc) for hit, skill_id, doc in retrieve(store, TASK, 10**6) if hit.name in train][:folds]
    ctx = EvolveContext(store)
    for hit, skill_id, doc in hits:
        conv = convert_skill(store, loaded, handle, doc, skill_id)
        with store.session() as s:
            accumulate.fold(s, ctx, skill_id, FoldableAdapter(conv.lora, conv.adapter_id, None),
                            ctx.settings.beta, ctx.settings.max_rank)
    return [hit.name for hit, _, _ in hits]


def solve_task(store, loaded, handle, adapters_base: list, repo: Path, mode: str, attempts: int, seed: int,
               max_steps: int, skill_scale: float, resamples: int = 0):
    """One task in one configuration, as every solve benchmark runs it: (the run's result fields, the
    SolveReport). `handle` is the hypernetwork for parametric mode (else None); attempt 1 is greedy, the
    others sample at T = 0.7 with seeds seed+1.. ; `resamples`: loop.Limits.resamples."""
    from agent.runtime import loop, skill_context
    from agent.runtime.local_chat import open_local_chat
    from agent.runtime.solve import SolveRequest, solve_attempts

    ctx, skill_lora = skill_context.build(store, mode, TASK, 3, loaded, handle, skill_scale)
    adapters = adapters_base + ([skill_lora] if skill_lora is not None else [])

    def open_chat(k: int):
        return open_local_chat(loaded, adapters, backend="llama", seed=seed + k - 1,
                               temperature=0.0 if k == 1 else 0.7)

    request = SolveRequest(repo=repo, task=TASK, mode=mode,
                           limits=loop.Limits(steps=max_steps, seconds=600, resamples=resamples))
    start = time.perf_counter()
    report = solve_attempts(request, store, open_chat, ctx, attempts)
    turns = [turn_counts(store, tid) for tid in report.attempts]
    fields = {"verified": report.verified, "first_verified": bool(report.verified and report.attempt == 1),
              "attempt": report.attempt, "attempts_run": len(report.attempts), "status": report.status,
              "steps": report.steps, "tokens": report.tokens, "seconds": round(time.perf_counter() - start, 2),
              "turns": sum(t for t, _, _ in turns), "format_errors": sum(b for _, b, _ in turns),
              "file_misses": sum(m for _, _, m in turns),
              "resampled": report.resampled, "trajectories": list(report.attempts)}
    return fields, report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=24, help="held-out tasks (plus the example)")
    ap.add_argument("--source", choices=("corpus", "packages", "all"), default="corpus",
                    help="held-out corpus modules, held-out registry packages, or both (make_tasks source)")
    ap.add_argument("--attempts", type=int, default=4, help="K of generate-and-validate for parametric")
    ap.add_argument("--max-steps", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--policy", default=None, help="policy adapter folder (default: the shipped one)")
    ap.add_argument("--candidate-policy", default=None,
                    help="a second policy folder: every config except base also runs under it, named CONFIG+cand, "
                         "task by task beside the first (paired comparison in one run)")
    ap.add_argument("--resamples", type=int, default=3,
                    help=f"loop.Limits.resamples of the CONFIG{RESAMPLE} configs (e.g. parametric{RESAMPLE})")
    ap.add_argument("--skill-scale", type=float, default=None,
                    help="scale of the merged skill adapter beneath the policy (default: agent solve's, "
                         "skill_context.SKILL_SCALE_UNDER_POLICY)")
    ap.add_argument("--db", type=Path, help="keep the run's store (every attempt's trajectory, the rows' "
                    "`trajectories` ids) in this SQLite file, for `agent trajectories show ID --db PATH`; "
                    "default: a temporary one, deleted at the end")
    ap.add_argument("--candidate-hypernet", default=None,
                    help=f"a hypernetwork checkpoint for the CONFIG{HYPERNET} configs (e.g. a stage-3 file)")
    ap.add_argument("--ema-folds", type=int, default=5, help="skills folded after the policy (+policy-ema)")
    ap.add_argument("--out", type=Path, default=OUT, help="result JSON (the plot goes beside it)")
    args = ap.parse_args()

    from agent.runtime import skill_context
    from agent.runtime.base_model import load_model
    from agent.runtime.hypernet_loader import load as load_hypernet
    from agent.runtime.local_chat import load_policy
    from memory.db import Store
    from memory.seed import ensure_seeded

    configs = [c for c in args.configs.split(",") if c]
    for name in configs:
        config, flags = split_config(name)
        if config not in CONFIGS or not flags <= {RESAMPLE, POLICY_EMA, HYPERNET, NO_POLICY}:
            ap.error(f"unknown config {name!r}: one of {', '.join(CONFIGS)}, optionally with "
                     f"{RESAMPLE}, {POLICY_EMA}, {HYPERNET}, {NO_POLICY}")
        if HYPERNET in flags and not args.candidate_hypernet:
            ap.error(f"{name} needs --candidate-hypernet FILE")
    own_scale = args.skill_scale is not None
    skill_scale = skill_context.SKILL_SCALE_UNDER_POLICY if args.skill_scale is None else args.skill_scale
    args.skill_scale = skill_scale  # recorded in the settings
    out = args.out
    result = json.loads(out.read_text()) if args.resume and out.is_file() else {"runs": []}
    done = {(r["task"], r["config"]) for r in result["runs"]}
    settings = {**vars(args), "out": str(out), "db": args.db and str(args.db)}
    # "complete" stays false until every task ran: a cut run says so (--resume continues it)
    result.update({"machine": machine_info(), "settings": settings, "complete": False,
                   "started": result.get("started", time.time())})
    loaded = load_model()
    policy = load_policy(args.policy, loaded)
    policies = {"": policy}
    if args.candidate_policy:
        policies[CANDIDATE] = load_policy(args.candidate_policy, loaded)
    names = [c + suffix for c in configs for suffix in policies if not (c == "base" and suffix)]
    handle = load_hypernet(loaded, None)
    handles = {"": handle}
    if any(HYPERNET in c for c in configs):
        handles[HYPERNET] = load_hypernet(loaded, None, args.candidate_hypernet)
    hypernets = {k or "shipped": {"source": h.source, "ident": h.ident} for k, h in handles.items()}
    changed = [k for k, h in hypernets.items() if k in result.get("hypernets", {})
               and result["hypernets"][k]["ident"] != h["ident"]]
    if changed:  # resuming: the rows so far were converted by other checkpoints
        raise SystemExit(f"--resume: {out} was run with another {' and '.join(changed)} hypernetwork "
                         f"({', '.join(result['hypernets'][k]['source'] for k in changed)}): start a new --out")
    result["hypernets"] = hypernets
    with tempfile.TemporaryDirectory(prefix="bench-solve-") as tmp:
        store = Store(f"sqlite:///{args.db.resolve() if args.db else Path(tmp) / 'bench.db'}")
        ensure_seeded(store)
        stores = {"": store}
        if any(POLICY_EMA in c for c in configs):
            stores[POLICY_EMA] = Store(f"sqlite:///{Path(tmp) / 'policy-ema.db'}")
            ensure_seeded(stores[POLICY_EMA])
            folded = policy_ema_store(stores[POLICY_EMA], loaded, handle, policy, args.policy or "shipped",
                                      args.ema_folds)
            result["policy_ema"] = {"folded": folded, "ema": skill_context.ema_policy(stores[POLICY_EMA],
                                                                                     loaded.name)}
        repos = task_repos(args.tasks, args.seed, Path(tmp) / "repos", args.source)
        drawn = [t for t, _ in repos]
        if result.get("tasks") and result["tasks"] != drawn:  # resuming: the rows must be of the same tasks
            common = len(set(drawn) & set(result["tasks"]))
            raise SystemExit(f"--resume: {out} holds another draw of held-out tasks ({common} of {len(drawn)} in "
                             "common; this machine's task world differs): start a new --out")
        result["tasks"] = drawn
        # task by task, every configuration of a task before the next: a run cut short still compares the
        # configurations on the same tasks
        for task_id, repo in repos:
            for name in names:
                config, flags = split_config(name)
                chosen = policies[CANDIDATE if CANDIDATE in flags else ""]
                resamples = args.resamples if RESAMPLE in flags else 0
                in_ema = POLICY_EMA in flags  # the policy acts from the EMA, not as a separate adapter
                no_policy, own_hn = NO_POLICY in flags, HYPERNET in flags
                mode = {"base": "none", "none": "none"}.get(config, config)
                adapters_base = [] if config == "base" or chosen is None or in_ema or no_policy else [chosen]
                attempts = args.attempts if config == "parametric" else 1
                if (task_id, name) in done:
                    continue
                fields, _ = solve_task(stores[POLICY_EMA if in_ema else ""], loaded,
                                       handles[HYPERNET if own_hn else ""] if mode == "parametric" else None,
                                       adapters_base, repo, mode, attempts, args.seed, args.max_steps,
                                       1.0 if no_policy and not own_scale else skill_scale, resamples)
                run = {"task": task_id, "config": name, **fields}
                result["runs"].append(run)
                print(json.dumps(run), flush=True)
                summarise(result, names, args.attempts)
                out.write_text(json.dumps(result, indent=1) + "\n")
    summarise(result, names, args.attempts)
    result["machine_after"], result["complete"] = machine_info(), True
    out.write_text(json.dumps(result, indent=1) + "\n")
    plot(result, out.with_suffix(".png"))


def summarise(result: dict, configs: list[str], attempts: int) -> None:
    summary = {}
    for config in configs:
        runs = [r for r in result["runs"] if r["config"] == config]
        if not runs:
            continue
        n = len(runs)
        k1 = sum(r["first_verified"] for r in runs)
        row = {"tasks": n, "fix_rate_k1": round(100 * k1 / n, 1), "ci95_k1": wilson(k1, n),
               "mean_steps": round(sum(r["steps"] for r in runs) / n, 2),
               "mean_tokens": round(sum(r["tokens"] for r in runs) / n),
               "mean_seconds": round(sum(r["seconds"] for r in runs) / n, 1),
               "format_error_turns": sum(r["format_errors"] for r in runs), "turns": sum(r["turns"] for r in runs)}
        row["resampled"] = sum(r.get("resampled", 0) for r in runs)
        if all("file_misses" in r for r in runs):  # runs from before the count have none
            row["file_miss_turns"] = sum(r["file_misses"] for r in runs)
        if split_config(config)[0] == "parametric":
            kk = sum(r["verified"] for r in runs)
            row.update({f"fix_rate_k{attempts}": round(100 * kk / n, 1), f"ci95_k{attempts}": wilson(kk, n)})
        row["example_fixed"] = any(r["verified"] for r in runs if r["task"] == "examples/buggy-stats")
        summary[config] = row
    result["summary"] = summary
    result["candidate_vs_shipped"] = paired(result["runs"], [c for c in configs if c.endswith(CANDIDATE)])
    result["resample_vs_as_sent"] = paired(result["runs"], [c for c in configs if c.endswith(RESAMPLE)], RESAMPLE)
    result["policy_ema_vs_separate"] = paired(result["runs"], [c for c in configs if c.endswith(POLICY_EMA)],
                                              POLICY_EMA)
    result["hypernet_vs_shipped"] = paired(result["runs"], [c for c in configs if HYPERNET in c], HYPERNET)
    result["without_policy"] = paired(result["runs"], [c for c in configs if NO_POLICY in c], NO_POLICY)


def paired(runs: list[dict], candidates: list[str], suffix: str = CANDIDATE) -> dict:
    """Per config, the candidate (CONFIG + suffix: another policy, resampling) against CONFIG on the tasks both
    finished: fix counts, the ratio of fix rates, and the discordant pairs (tasks only one of them fixed) that a
    sign test reads."""
    out = {}
    for cand in candidates:
        first = {r["task"]: r for r in runs if r["config"] == cand.replace(suffix, "", 1)}
        both = [(first[r["task"]], r) for r in runs if r["config"] == cand and r["task"] in first]
        if not both:
            continue
        a, b = sum(x["first_verified"] for x, _ in both), sum(y["first_verified"] for _, y in both)
        out[cand] = {"tasks": len(both), "fixed_k1": [a, b], "ratio_k1": round(b / a, 2) if a else None,
                     "fixed_any_attempt": [sum(x["verified"] for x, _ in both), sum(y["verified"] for _, y in both)],
                     "only_first": sum(x["first_verified"] and not y["first_verified"] for x, y in both),
                     "only_candidate": sum(y["first_verified"] and not x["first_verified"] for x, y in both)}
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = result["summary"]
    names = list(summary)
    rates = [summary[c]["fix_rate_k1"] for c in names]
    lo = [r - summary[c]["ci95_k1"][0] for c, r in zip(names, rates)]
    hi = [summary[c]["ci95_k1"][1] - r for c, r in zip(names, rates)]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(names, rates, yerr=[lo, hi], capsize=4, label="K = 1 (greedy)")
    k = result["settings"]["attempts"]
    at_k = [c for c in names if f"fix_rate_k{k}" in summary[c]]  # the parametric configs (CONFIG+resample, ...)
    if at_k and k > 1:
        ax.scatter(at_k, [summary[c][f"fix_rate_k{k}"] for c in at_k], color="black", zorder=3, label=f"K = {k}")
    label_and_save(fig, ax, path, "held-out fix rate (%), 95 % Wilson interval", f"agent solve on {summary[names[0]]['tasks']} held-out tasks (SmolLM2-135M, llama.cpp, 2 cores)")


if __name__ == "__main__":
    main()

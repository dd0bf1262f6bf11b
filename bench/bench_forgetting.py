"""Continual learning in the persistent adapter: how much of each earlier skill survives as skills are added?

N synthetic skill adapters (q/v targets shaped like SmolLM2-135M's, rank 8, built from shared building blocks
plus a private part; see agent.learn.forgetting.synthetic_skills) are added one by one through the EMA for several
β, and merged without EMA (plain sum and mean of all skills so far), all capped at rank 64. After each
addition every skill so far is scored against the persistent adapter.

ADAPTER-SPACE PROXY, not adherence: the score is the cosine between a skill's ΔW and the persistent ΔW
(and the retention coefficient ⟨ΔW_i, ΔW_P⟩/‖ΔW_i‖²), computed from the factors, never dense. It measures
how much of a skill's weight update is still in the adapter, not whether the model still follows it; with a
trained hypernetwork, `agent.learn.forgetting.measure(..., scorers={"adherence": ...})` takes a behavioural score.

β is chosen by `agent.learn.forgetting.balance`: the mean over additions of min(newest skill's cosine, mean cosine
of the 5 skills before it) — the newest skill must be in the adapter, and so must the recent library.

    python bench/bench_forgetting.py [--skills 30] [--layers 4] [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from agent.learn.forgetting import (balance, choose_beta, default_strategies, measure, report,  # noqa: E402
                              synthetic_skills, synthetic_targets)
from bench.machine import machine_info, title_and_save  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BETAS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)
SHARED = (0.0, 0.3, 0.6)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skills", type=int, default=30)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--max-rank", type=int, default=64)
    ap.add_argument("--quick", action="store_true", help="12 skills, 2 layers, one shared level")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.quick:
        args.skills, args.layers = 12, 2
    torch.set_num_threads(1)  # tiny QR/SVDs: extra threads only contend (see bench_hypernet_merge)
    targets = synthetic_targets(layers=args.layers)
    runs = {}
    start = time.perf_counter()
    for shared in (SHARED[1:2] if args.quick else SHARED):
        skills = synthetic_skills(args.skills, targets, rank=args.rank, shared=shared, seed=0)
        curves = measure(skills, default_strategies(BETAS), max_rank=args.max_rank)
        beta, scores = choose_beta(curves)
        runs[f"shared={shared}"] = {"shared": shared, "chosen_beta": beta,
                                    "balance": {k: round(v, 4) for k, v in scores.items()},
                                    "balance_window10": {c.strategy.name: round(balance(c, window=10), 4) for c in curves},
                                    "curves": report(curves), "_curves": curves}
        print(f"shared={shared}: chosen beta {beta}; balance " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    seconds = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    main_run = runs["shared=0.3"]
    data = {
        "bench": "forgetting",
        "proxy": "adapter space: cosine(ΔW_skill, ΔW_persistent) and retention coefficient; not adherence",
        "machine": machine_info(),
        "config": {"skills": args.skills, "layers": args.layers, "targets": len(targets), "rank": args.rank,
                   "max_rank": args.max_rank, "betas": BETAS, "shared": [r["shared"] for r in runs.values()],
                   "quick": args.quick},
        "criterion": "balance = mean over additions of min(newest cosine, mean cosine of the 5 previous skills)",
        "chosen_beta": main_run["chosen_beta"],
        "headline": {k: headline(r["_curves"]) for k, r in runs.items()},
        "seconds": round(seconds, 1),
        "runs": {k: {kk: vv for kk, vv in r.items() if kk != "_curves"} for k, r in runs.items()},
    }
    name = "forgetting_quick" if args.quick else "forgetting"
    (args.out / f"{name}.json").write_text(json.dumps(data, indent=1))
    plot(main_run["_curves"], args, args.out / f"{name}.png", main_run["chosen_beta"])
    print(f"wrote {args.out / (name + '.json')} and .png in {seconds:.0f} s")


def headline(curves) -> dict:
    """After the last addition: newest / mean earlier / oldest cosine, mean retention, persistent norm."""
    out = {}
    for c in curves:
        last = c.steps[-1]
        cos, ret = last.summary("cosine"), last.summary("retention")
        out[c.strategy.name] = {"newest": round(cos["newest"], 3), "mean_earlier": round(cos["mean_earlier"], 3),
                                "oldest": round(cos["oldest"], 3), "retention_mean": round(ret["mean_all"], 3),
                                "norm": round(last.norm, 2), "trunc_error": round(last.trunc_error, 3),
                                "balance": round(balance(c), 3)}
    return out


def plot(curves, args, path: Path, chosen: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    for c in curves:
        style = "--" if c.strategy.kind != "ema" else "-"
        width = 2.6 if c.strategy.beta == chosen else 1.2
        t = [s.t for s in c.steps]
        label = "sum = mean (cosine is scale-free; norms differ)" if c.strategy.kind == "mean" else c.strategy.name
        if c.strategy.kind == "sum":
            continue  # drawn by "mean": identical cosines
        axes[0].plot(t, [s.summary("cosine")["newest"] for s in c.steps], style, lw=width, label=label)
        axes[1].plot(t[1:], [s.summary("cosine")["mean_earlier"] for s in c.steps[1:]], style, lw=width)
        final = c.final("cosine")
        axes[2].plot(range(1, len(final) + 1), final, style, lw=width)
    axes[0].set(title="newest skill kept (plasticity)", xlabel="skills added", ylabel="cosine(ΔW_skill, ΔW_P)")
    axes[1].set(title="earlier skills kept (stability)", xlabel="skills added", ylabel="mean cosine, earlier skills")
    axes[2].set(title=f"after all {args.skills}: each skill by age", xlabel="skill (1 = oldest)", ylabel="cosine")
    axes[0].legend(fontsize=8)
    title_and_save(fig, path, f"Persistent adapter, adapter-space proxy (not adherence): {args.skills} skills, "
                   f"rank {args.rank}, cap {args.max_rank}; EMA β={chosen} chosen (thick)")


if __name__ == "__main__":
    main()
